//! The command line of `orderd-load`, fixed because scripts rely on it:
//!
//! ```text
//! orderd-load --server HOST:PORT --workload uniform|hot|zipf|lifecycle
//!     [--requests N | --duration SECS] [--connections C] [--pipeline P]
//!     [--batch B] [--rate R] [--retry-share F] [--cpus LIST] [--json FILE]
//!     [--no-load]
//! ```
//!
//! Extensions (new flags only, never renamed): `--seed`, `--stock`,
//! `--durability-label`, `--quiet`, `--verify-sample`, `--timeout`, `--payment-window-ms`,
//! `--subscribe`, `--stalled-subscribers`, `--slow-log`, `--slow-us`,
//! `--linger-us`, `--no-shard-aware`.
//! [`LoadArgs::validate`] checks what clap cannot; [`LoadArgs::stop`] resolves
//! the default bound.

use std::path::PathBuf;
use std::time::Duration;

use orderd_protocol::limits::{MAX_BATCH_REQUESTS, MAX_IN_FLIGHT_FRAMES};

use super::LoadError;
use crate::workload::Workload;

/// How long a run lasts when neither `--requests` nor `--duration` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The longest run `--duration` accepts: a run always stops by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Accepted keys read back by key at the end of a run, by default.
pub const DEFAULT_VERIFY_SAMPLE: usize = 1000;

/// The longest `--linger-us`: a request never waits longer than this for
/// its frame to fill.
pub const MAX_LINGER: Duration = Duration::from_secs(1);

/// Most connections (one thread each).
pub const MAX_CONNECTIONS: usize = 1024;

/// `orderd-load`: drive a reference workload against orderd and check its
/// invariants afterwards.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(
    name = "orderd-load",
    version,
    about = "Drive a reference workload (benches/WORKLOAD.md) against orderd, then check its invariants"
)]
pub struct LoadArgs {
    /// The orderd server (any of its cores); also `ORDERD_SERVER`, as for
    /// `orderd admin`.
    #[arg(long, value_name = "HOST:PORT", env = "ORDERD_SERVER")]
    pub server: String,
    /// The reference workload of benches/WORKLOAD.md.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Stop after this many requests in all (retries included).
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Stop issuing requests after this many seconds (default 10).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Connections, one generator thread (and one shard-aware client) each.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=MAX_CONNECTIONS as u64))]
    pub connections: u64,
    /// Frames each connection keeps in flight.
    #[arg(long, value_name = "P", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=MAX_IN_FLIGHT_FRAMES as u64))]
    pub pipeline: u64,
    /// Requests per frame (open loop: at most; a frame carries the requests due).
    #[arg(long, value_name = "B", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH_REQUESTS as u64))]
    pub batch: u64,
    /// Open loop: offered load in requests per second, all connections
    /// together; latency is measured from each request's intended send time.
    /// Without it the run is closed-loop.
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open loop: let due requests wait up to this many µs for their frame
    /// to fill to `--batch` before it leaves (a client batching the way the
    /// closed loop does; like Kafka's `linger.ms`). The wait counts in their
    /// latency, which still runs from each request's intended send time.
    /// 0 (the default) sends whatever is due at once.
    #[arg(long, value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_LINGER.as_micros() as u64))]
    pub linger_us: u64,
    /// Share of requests that resend an accepted request's key (a deliberate
    /// retry); each must get the original order back.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_share)]
    pub retry_share: f64,
    /// CPUs to pin the generator's threads to, e.g. `1` or `2-3,6`
    /// (thread i on the i-th CPU of the list, cycling).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
    /// Write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Do not load the catalogue (it must be on the server already); stock
    /// is read before the run so the accounting check uses differences.
    #[arg(long)]
    pub no_load: bool,
    /// Seed of the user and product draws (default: random; printed in the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start with this many units of each product available instead of the
    /// workload's (e.g. to reach the sold-out regime of `hot` sooner);
    /// recorded in the report.
    #[arg(long, value_name = "UNITS", conflicts_with = "no_load")]
    pub stock: Option<u64>,
    /// Load the products with this payment window instead of the
    /// workload's (`lifecycle`: 60,000 ms; shorter for tests). A
    /// `lifecycle` run waits it out before its checks, so that every order
    /// left open has expired.
    #[arg(long, value_name = "MS", conflicts_with = "no_load")]
    pub payment_window_ms: Option<u64>,
    /// The server's durability mode, for the report (e.g. `fsync`, `none`).
    #[arg(long, value_name = "LABEL")]
    pub durability_label: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Accepted orders read back by key at the end.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VERIFY_SAMPLE)]
    pub verify_sample: usize,
    /// The server's `--dedup-window-secs`: a sampled key older than it by
    /// the server's clock may be read back as `key_expired` (the documented
    /// answer past the window) instead of its order.
    #[arg(long, value_name = "SECS", default_value_t = crate::engine::DEFAULT_DEDUP_WINDOW_MS / 1000)]
    pub dedup_window_secs: u64,
    /// Also subscribe to the order stream (from now) for the run and report
    /// the events/s it delivered and how long it trailed the load.
    #[arg(long)]
    pub subscribe: bool,
    /// Hold this many subscribers that never read (from the beginning)
    /// during the run: the order path must not notice them.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub stalled_subscribers: usize,
    /// Hold this many subscribers on every server core that read as fast
    /// as the server sends (at nice 19, so they take only the CPU the load
    /// leaves), and report the events they received during the run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub readers: usize,
    /// Where `--readers` start: `beginning` (consumers catching up) or `now`.
    #[arg(long, value_name = "beginning|now", default_value = "now", value_parser = ["beginning", "now"])]
    pub readers_from: String,
    /// `--readers` only receive events of this product (`0`: all). A product
    /// never sold makes the server read and filter every record and send nothing.
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub readers_product: u64,
    /// Also read, on a connection of its own, product 1's stock and the
    /// server's stats in turn, one read each this many ms, for the run, and
    /// report their latency (reads beside the load: an operator's `orderd
    /// admin stock` during a sale, or during a full disk).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub read_probe_ms: Option<u64>,
    /// Write every request slower than `--slow-us` to this file, one line
    /// each: the time its latency runs from (intended send in the open
    /// loop, send in the closed loop) on CLOCK_MONOTONIC in µs, the clock
    /// `perf` stamps its events with, and its latency in µs. For finding
    /// what the slow requests have in common (a period, a stall).
    #[arg(long, value_name = "FILE")]
    pub slow_log: Option<PathBuf>,
    /// The latency in µs above which `--slow-log` records a request.
    #[arg(long, value_name = "US", default_value_t = 1000)]
    pub slow_us: u64,
    /// Send every request to the core each connection first reached and let
    /// the server forward it to its shard's core, as a client that does not
    /// follow the shard map would (measures the cross-core path; the SDK is
    /// shard-aware by default).
    #[arg(long)]
    pub no_shard_aware: bool,
    /// Seconds a reply may take before the request fails.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub timeout: Duration,
}

/// When a run stops issuing requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests in all.
    Requests(u64),
    /// After this long.
    Duration(Duration),
}

/// A list of CPU ids, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl std::fmt::Display for CpuList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&ids.join(","))
    }
}

impl LoadArgs {
    /// When the run stops.
    #[must_use]
    pub fn stop(&self) -> Stop {
        match (self.requests, self.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Duration(DEFAULT_DURATION),
        }
    }

    /// Check what the parser cannot: relations between settings.
    ///
    /// # Errors
    /// [`LoadError::Setting`] naming the setting.
    pub fn validate(&self) -> Result<(), LoadError> {
        if let (Some(rate), Stop::Requests(n)) = (self.rate, self.stop()) {
            // An open-loop run of N requests lasts N / R seconds: bound it.
            let secs = n as f64 / rate;
            if secs > MAX_DURATION.as_secs_f64() {
                return Err(LoadError::Setting(format!("--requests {n} at --rate {rate} would last {secs:.0} s, over the 24 h bound")));
            }
        }
        if self.linger_us > 0 && self.rate.is_none() {
            return Err(LoadError::Setting("--linger-us applies to the open loop only: give --rate too".into()));
        }
        if self.stock == Some(0) {
            return Err(LoadError::Setting("--stock must be at least 1".into()));
        }
        if let Some(rate) = self.rate {
            if rate / (self.connections as f64) < 1e-3 {
                return Err(LoadError::Setting(format!(
                    "--rate {rate} over {} connections is under one request per 1000 s each",
                    self.connections
                )));
            }
        }
        Ok(())
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("not a number of seconds: {e}"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("must be above 0 and at most {} seconds", MAX_DURATION.as_secs()));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("not a number of requests per second: {e}"))?;
    if !rate.is_finite() || rate <= 0.0 || rate > 1e9 {
        return Err("must be above 0 and at most 1e9 requests per second".into());
    }
    Ok(rate)
}

fn parse_share(s: &str) -> Result<f64, String> {
    let share: f64 = s.parse().map_err(|e| format!("not a share: {e}"))?;
    if !(0.0..=1.0).contains(&share) {
        return Err("must be between 0 and 1".into());
    }
    Ok(share)
}

/// `1`, `0,2`, `2-3,6`: the CPU-list parser every command shares.
fn parse_cpus(s: &str) -> Result<CpuList, String> {
    crate::cli::site::parse_cpu_list(s).map(CpuList)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Result<LoadArgs, clap::Error> {
        LoadArgs::try_parse_from(["orderd-load", "--server", "127.0.0.1:7070"].into_iter().chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        LoadArgs::command().debug_assert();
    }

    #[test]
    fn every_fixed_flag_parses() {
        let a = parse(&[
            "--workload",
            "hot",
            "--requests",
            "1000",
            "--connections",
            "2",
            "--pipeline",
            "4",
            "--batch",
            "8",
            "--rate",
            "500.5",
            "--retry-share",
            "0.1",
            "--cpus",
            "0,2-3",
            "--json",
            "r.json",
            "--no-load",
        ])
        .unwrap();
        assert_eq!(a.workload, Workload::Hot);
        assert_eq!(a.stop(), Stop::Requests(1000));
        assert_eq!((a.connections, a.pipeline, a.batch), (2, 4, 8));
        assert_eq!(a.rate, Some(500.5));
        assert_eq!(a.retry_share, 0.1);
        assert_eq!(a.cpus, Some(CpuList(vec![0, 2, 3])));
        assert_eq!(a.json, Some("r.json".into()));
        assert!(a.no_load);
        a.validate().unwrap();
    }

    #[test]
    fn a_run_lasts_ten_seconds_unless_told_otherwise() {
        assert_eq!(parse(&["--workload", "uniform"]).unwrap().stop(), Stop::Duration(DEFAULT_DURATION));
        assert_eq!(parse(&["--workload", "zipf", "--duration", "0.5"]).unwrap().stop(), Stop::Duration(Duration::from_millis(500)));
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        for bad in [
            &["--workload", "flash"][..],
            &["--workload", "hot", "--requests", "0"],
            &["--workload", "hot", "--requests", "5", "--duration", "1"],
            &["--workload", "hot", "--duration", "0"],
            &["--workload", "hot", "--duration", "-1"],
            &["--workload", "hot", "--connections", "0"],
            &["--workload", "hot", "--batch", "5000"],
            &["--workload", "hot", "--rate", "0"],
            &["--workload", "hot", "--rate", "inf"],
            &["--workload", "hot", "--retry-share", "1.5"],
            &["--workload", "hot", "--cpus", "3-1"],
            &["--workload", "hot", "--cpus", "a"],
            &["--workload", "hot", "--stock", "5", "--no-load"],
            &["--server2", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let slow = parse(&["--workload", "hot", "--requests", "1000000", "--rate", "1"]).unwrap();
        assert!(matches!(slow.validate(), Err(LoadError::Setting(_))));
    }
}
