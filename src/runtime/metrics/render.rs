//! The Prometheus text exposition format (version 0.0.4) of a scrape: every
//! family once, with `# HELP` and `# TYPE`, then its series for every core
//! (`core="N"`); histograms as cumulative `_bucket{le=...}`, `_sum`,
//! `_count`. Rendered into a `String` with `std::fmt::Write`.

use std::fmt::{self, Write};

use orderd_protocol::Status;

use super::counters::KINDS;
use super::histogram::Histogram;
use super::snapshot::{CoreSnapshot, SCALARS};

/// The `Content-Type` of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one scrape gathered.
pub struct Scrape<'a> {
    /// The server's id (from the data directory).
    pub server_id: u64,
    /// One entry per core; `None` for a core that did not answer in time.
    pub cores: &'a [Option<CoreSnapshot>],
    /// What the start's log recovery did.
    pub recovered: Recovered,
    /// The process's figures (`None` where `/proc` cannot be read).
    pub process: Option<super::process::Process>,
}

/// What the start's log recovery did, for the `orderd_recovery_*` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recovered {
    /// Records replayed.
    pub records: u64,
    /// Seconds from the start of recovery until every core's log was replayed.
    pub seconds: f64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

fn histogram<const N: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    cores: &[&CoreSnapshot],
    pick: impl Fn(&CoreSnapshot) -> &Histogram<N>,
) -> fmt::Result {
    family(out, name, "histogram", help)?;
    for s in cores {
        let (h, core) = (pick(s), s.core);
        for (le, n) in h.cumulative() {
            writeln!(out, "{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {n}")?;
        }
        writeln!(out, "{name}_bucket{{core=\"{core}\",le=\"+Inf\"}} {}", h.count())?;
        let scale = h.buckets().scale;
        if scale == 1 {
            writeln!(out, "{name}_sum{{core=\"{core}\"}} {}", h.sum())?;
        } else {
            writeln!(out, "{name}_sum{{core=\"{core}\"}} {}", h.sum() as f64 / scale as f64)?;
        }
        writeln!(out, "{name}_count{{core=\"{core}\"}} {}", h.count())?;
    }
    Ok(())
}

/// Render `scrape` into `out`.
///
/// # Errors
/// Only if writing to the `String` fails, which it does not.
pub fn render(out: &mut String, scrape: &Scrape<'_>) -> fmt::Result {
    let cores: Vec<&CoreSnapshot> = scrape.cores.iter().flatten().collect();
    family(out, "orderd_info", "gauge", "The server: version and id (the value is always 1).")?;
    writeln!(out, "orderd_info{{version=\"{}\",server_id=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), scrape.server_id)?;
    family(out, "orderd_cores", "gauge", "Cores (pinned executors) of the server.")?;
    writeln!(out, "orderd_cores {}", scrape.cores.len())?;
    family(out, "orderd_scrape_cores_missing", "gauge", "Cores that did not answer this scrape in time; their series are absent from it.")?;
    writeln!(out, "orderd_scrape_cores_missing {}", scrape.cores.len() - cores.len())?;
    family(out, "orderd_recovery_records", "gauge", "Log records replayed when this process started.")?;
    writeln!(out, "orderd_recovery_records {}", scrape.recovered.records)?;
    family(out, "orderd_recovery_seconds", "gauge", "Seconds this process spent replaying the log before it listened.")?;
    writeln!(out, "orderd_recovery_seconds {:.3}", scrape.recovered.seconds)?;
    if let Some(process) = &scrape.process {
        process.render(out)?;
    }

    family(out, "orderd_requests_total", "counter", "Requests read by this core's connections, by kind (answered here or forwarded).")?;
    for s in &cores {
        for (kind, n) in KINDS.iter().zip(s.metrics.requests) {
            writeln!(out, "orderd_requests_total{{core=\"{}\",kind=\"{kind}\"}} {n}", s.core)?;
        }
    }
    family(
        out,
        "orderd_rejections_total",
        "counter",
        "Requests read by this core's connections that were answered with a rejection, by kind and reason (status name); only non-zero series.",
    )?;
    for s in &cores {
        for (kind, by_reason) in KINDS.iter().zip(&s.metrics.rejections) {
            for (status, &n) in Status::ALL.iter().zip(by_reason).filter(|(_, &n)| n > 0) {
                writeln!(out, "orderd_rejections_total{{core=\"{}\",kind=\"{kind}\",reason=\"{}\"}} {n}", s.core, status.name())?;
            }
        }
    }

    for (i, scalar) in SCALARS.iter().enumerate() {
        family(out, scalar.name, scalar.kind.word(), scalar.help)?;
        for s in &cores {
            if scalar.scale == 1 {
                writeln!(out, "{}{{core=\"{}\"}} {}", scalar.name, s.core, s.scalars[i])?;
            } else {
                writeln!(out, "{}{{core=\"{}\"}} {}", scalar.name, s.core, s.scalars[i] as f64 / scalar.scale as f64)?;
            }
        }
    }

    histogram(out, "orderd_frame_requests", "Requests per Requests frame read by this core's connections (batch sizes).", &cores, |s| {
        &s.metrics.frame_requests
    })?;
    histogram(out, "orderd_flush_duration_seconds", "Time of each group-commit fdatasync of this core's log.", &cores, |s| {
        &s.metrics.flush_seconds
    })?;
    histogram(out, "orderd_flush_records", "Records each group-commit flush of this core's log made durable.", &cores, |s| {
        &s.metrics.flush_records
    })?;
    histogram(
        out,
        "orderd_reply_seconds",
        "Per Requests frame, time from the read that completed it to the write of its replies (the server's part of request latency; in sync mode it includes the wait for the flush).",
        &cores,
        |s| &s.metrics.reply_seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::counters::{reason_of, CoreMetrics};

    fn snapshot(core: usize) -> CoreSnapshot {
        let mut metrics = CoreMetrics::default();
        metrics.requests[0] = 10;
        metrics.rejections[0][reason_of(Status::SoldOut.code())] = 3;
        metrics.frame_requests.observe(10);
        metrics.flushed(700, 7);
        metrics.flushed(2_000_000, 1);
        let mut scalars = [0; SCALARS.len()];
        scalars[0] = 7;
        CoreSnapshot { core, scalars, metrics }
    }

    fn rendered(cores: &[Option<CoreSnapshot>]) -> String {
        let mut out = String::new();
        render(&mut out, &Scrape { server_id: 42, cores, recovered: Recovered { records: 1234, seconds: 0.5 }, process: None }).unwrap();
        out
    }

    /// The value of the series `series` (name and labels, exactly).
    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn every_family_has_help_and_type_once_before_its_samples() {
        let text = rendered(&[Some(snapshot(0)), Some(snapshot(1))]);
        let mut seen = std::collections::HashMap::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty() && !help.contains('\\'), "{line}");
                assert!(seen.insert(name.to_owned(), false).is_none(), "{name} described twice");
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(name, current, "TYPE must follow its HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind));
                assert_eq!(name.ends_with("_total"), kind == "counter", "{name}: counters, and only counters, end in _total");
                seen.insert(name.to_owned(), true);
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert!(name.starts_with("orderd_") && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s).filter(|b| *b == current));
                assert!(name == current || base.is_some(), "sample {name} outside its family {current}");
                assert!(value.parse::<f64>().is_ok(), "{line}");
                if let Some(labels) = series.strip_prefix(name) {
                    assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
                }
            }
        }
        assert!(seen.values().all(|&typed| typed));
        for scalar in SCALARS {
            assert!(seen.contains_key(scalar.name), "{} not rendered", scalar.name);
        }
    }

    #[test]
    fn series_carry_core_labels_and_the_values_given() {
        let text = rendered(&[Some(snapshot(0)), Some(snapshot(1))]);
        assert_eq!(value(&text, "orderd_cores"), Some("2"));
        assert_eq!(value(&text, "orderd_scrape_cores_missing"), Some("0"));
        assert_eq!(value(&text, "orderd_requests_total{core=\"1\",kind=\"place_order\"}"), Some("10"));
        assert_eq!(value(&text, "orderd_requests_total{core=\"1\",kind=\"stats\"}"), Some("0"));
        assert_eq!(value(&text, "orderd_rejections_total{core=\"0\",kind=\"place_order\",reason=\"sold_out\"}"), Some("3"));
        assert!(!text.contains("reason=\"price_changed\""), "zero rejection series are left out");
        assert_eq!(value(&text, &format!("{}{{core=\"0\"}}", SCALARS[0].name)), Some("7"));
        assert_eq!(value(&text, "orderd_info{version=\"0.1.0\",server_id=\"42\"}"), Some("1"));
        assert_eq!((value(&text, "orderd_recovery_records"), value(&text, "orderd_recovery_seconds")), (Some("1234"), Some("0.500")));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count_in_the_exposed_unit() {
        let text = rendered(&[Some(snapshot(0))]);
        let h = "orderd_flush_duration_seconds";
        assert_eq!(value(&text, &format!("{h}_bucket{{core=\"0\",le=\"0.0005\"}}")), Some("0"));
        assert_eq!(value(&text, &format!("{h}_bucket{{core=\"0\",le=\"0.001\"}}")), Some("1"));
        assert_eq!(value(&text, &format!("{h}_bucket{{core=\"0\",le=\"1\"}}")), Some("1"));
        assert_eq!(value(&text, &format!("{h}_bucket{{core=\"0\",le=\"+Inf\"}}")), Some("2"));
        assert_eq!(value(&text, &format!("{h}_sum{{core=\"0\"}}")), Some("2.0007"));
        assert_eq!(value(&text, &format!("{h}_count{{core=\"0\"}}")), Some("2"));
        assert_eq!(value(&text, "orderd_flush_records_sum{core=\"0\"}"), Some("8"));
        assert_eq!(value(&text, "orderd_frame_requests_bucket{core=\"0\",le=\"8\"}"), Some("0"));
        assert_eq!(value(&text, "orderd_frame_requests_bucket{core=\"0\",le=\"16\"}"), Some("1"));
    }

    #[test]
    fn a_missing_core_is_counted_and_its_series_left_out() {
        let text = rendered(&[Some(snapshot(0)), None]);
        assert_eq!(value(&text, "orderd_cores"), Some("2"));
        assert_eq!(value(&text, "orderd_scrape_cores_missing"), Some("1"));
        assert!(!text.contains("core=\"1\""));
    }
}
