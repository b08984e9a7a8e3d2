//! The run's [`Report`]: every setting, the machine, the measurements and
//! the checks; printed as a table for people and written as JSON for
//! scripts (`--json FILE`). Field names carry their units (`p99_us`,
//! `elapsed_s`); settings not given are `null`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::check::Check;
use super::LoadError;

/// The machine the generator ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs online.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// This machine, from `/proc` (`unknown` where it cannot be read).
    #[must_use]
    pub fn this() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_owned()).ok().filter(|s| !s.is_empty());
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "model name").map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| "unknown".into());
        let listed = cpuinfo.lines().filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor")).count();
        let cores = if listed > 0 { listed } else { std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get) };
        Machine {
            hostname: read("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
            cpu_model,
            cores,
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// What `--slow-log` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlowLog {
    /// The file.
    pub path: String,
    /// `--slow-us`.
    pub threshold_us: u64,
    /// Requests written (one line each).
    pub requests: u64,
    /// Slow requests beyond the per-thread cap, not written.
    pub not_kept: u64,
}

/// Everything a run reports. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `orderd-load`.
    pub tool: &'static str,
    /// The generator's version.
    pub version: &'static str,
    /// The server address given.
    pub server: String,
    /// The workload.
    pub workload: &'static str,
    /// `closed` (no `--rate`) or `open`.
    pub mode: &'static str,
    /// `--connections`.
    pub connections: u64,
    /// `--pipeline`.
    pub pipeline: u64,
    /// `--batch`.
    pub batch: u64,
    /// `--rate` (requests/s offered), open loop only.
    pub rate: Option<f64>,
    /// `--linger-us`: how long a due request may wait for its frame to fill
    /// (open loop; 0 sends what is due at once).
    pub linger_us: u64,
    /// Whether requests went straight to their shard's core (`false` with
    /// `--no-shard-aware`: the server forwarded them).
    pub shard_aware: bool,
    /// `--requests`, if the run was bounded by a request count.
    pub requests: Option<u64>,
    /// `--duration` in seconds, if the run was bounded by time.
    pub duration_s: Option<f64>,
    /// `--retry-share`.
    pub retry_share: f64,
    /// `--cpus`, the generator's CPUs.
    pub cpus: Option<Vec<usize>>,
    /// The seed of the draws.
    pub seed: u64,
    /// Whether the catalogue was loaded by this run (`false` with `--no-load`).
    pub loaded: bool,
    /// `--stock`, if the catalogue was loaded with another stock.
    pub stock_per_product: Option<u64>,
    /// `--durability-label`: the server's durability mode, if told.
    pub durability: Option<String>,
    /// Cores the server announced in its handshake.
    pub server_cores: usize,
    /// The generator's machine.
    pub machine: Machine,
    /// From the start to the last reply, seconds.
    pub elapsed_s: f64,
    /// CPU seconds the generator's threads used, less their spin-waits for
    /// intended send times.
    pub generator_cpu_s: f64,
    /// `generator_cpu_s / (elapsed_s × connections)`: near 1, the generator
    /// was the limit and its figures say more about it than the server.
    pub generator_busy: f64,
    /// Replies received (accepted, rejected, retries).
    pub completed: u64,
    /// `completed / elapsed_s`.
    pub completed_per_s: f64,
    /// New orders accepted.
    pub accepted: u64,
    /// `accepted / elapsed_s`.
    pub accepted_per_s: f64,
    /// Sum of the accepted orders' amounts in cents (the server's
    /// `orderd_gmv_cents_total` adds the same up).
    pub gmv_cents: u64,
    /// Rejections by status name.
    pub rejected: BTreeMap<String, u64>,
    /// Deliberate retries answered.
    pub retries: u64,
    /// Retries answered with the original order.
    pub retries_verified: u64,
    /// Requests whose outcome is unknown (a connection failed).
    pub unknown: u64,
    /// Latency percentiles and maximum, µs (send, or intended send in the
    /// open loop, to reply).
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Open loop: 99th percentile of how late frames were sent, µs.
    pub send_lag_p99_us: Option<u64>,
    /// Open loop: the latest a frame was sent, µs.
    pub send_lag_max_us: Option<u64>,
    /// Open loop: 99th percentile of how long a request waited in the
    /// generator before its frame left (part of its latency), µs.
    pub send_delay_p99_us: Option<u64>,
    /// Open loop: 99.9th percentile of the same, µs.
    pub send_delay_p999_us: Option<u64>,
    /// `--slow-log`: where the slow requests went and how many.
    pub slow_log: Option<SlowLog>,
    /// Every invariant check.
    pub checks: Vec<Check>,
    /// Whether every check holds.
    pub invariants_ok: bool,
    /// Failures that stopped generator threads.
    pub errors: Vec<String>,
    /// `--subscribe`: what the subscriber saw.
    pub stream: Option<super::stream::StreamReport>,
    /// `--stalled-subscribers`.
    pub stalled_subscribers: usize,
    /// `--readers`: what they received during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<super::stream::ReadersReport>,
    /// `--read-probe-ms`: how long reads took beside the load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_probe: Option<super::probe::ReadProbeReport>,
}

impl Report {
    /// Print the human table.
    ///
    /// # Errors
    /// The output cannot be written.
    pub fn render(&self, out: &mut impl Write) -> std::io::Result<()> {
        self.render_table(out, if self.invariants_ok { "hold" } else { "BROKEN" })
    }

    /// Print the table of a run whose invariants could not be checked (the
    /// server went away): the figures, and no verdict.
    ///
    /// # Errors
    /// The output cannot be written.
    pub fn render_figures(&self, out: &mut impl Write) -> std::io::Result<()> {
        self.render_table(out, "NOT CHECKED")
    }

    fn render_table(&self, out: &mut impl Write, verdict: &str) -> std::io::Result<()> {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let stop = match (self.requests, self.duration_s) {
            (Some(n), _) => format!("{n} requests"),
            (None, Some(d)) => format!("{d} s"),
            (None, None) => "-".into(),
        };
        let offered = match self.rate {
            Some(r) if self.linger_us > 0 => format!("open loop, {r} req/s offered, frames linger up to {} us", self.linger_us),
            Some(r) => format!("open loop, {r} req/s offered"),
            None => "closed loop".into(),
        };
        writeln!(out, "orderd-load {} — workload {} against {} ({} cores)", self.version, self.workload, self.server, self.server_cores)?;
        writeln!(
            out,
            "  {offered}; {stop}; {} connections x {} frames x {} requests{}; retry share {}; cpus {}; durability {}",
            self.connections,
            self.pipeline,
            self.batch,
            if self.shard_aware { "" } else { " (not shard-aware: the server forwards)" },
            self.retry_share,
            opt(self.cpus.as_ref().map(|c| format!("{c:?}"))),
            opt(self.durability.clone())
        )?;
        writeln!(
            out,
            "  machine {} ({}, {} cores, Linux {}); seed {}",
            self.machine.hostname, self.machine.cpu_model, self.machine.cores, self.machine.kernel, self.seed
        )?;
        writeln!(out)?;
        writeln!(out, "  {:<22} {:>14}", "elapsed", format!("{:.3} s", self.elapsed_s))?;
        writeln!(
            out,
            "  {:<22} {:>14}   (CPU of its {} thread(s), spin-waits excluded{})",
            "generator busy",
            format!("{:.2}", self.generator_busy),
            self.connections,
            if self.generator_busy >= 0.9 { "; the generator was the limit" } else { "" }
        )?;
        writeln!(out, "  {:<22} {:>14}   ({:.0}/s)", "completed", self.completed, self.completed_per_s)?;
        writeln!(out, "  {:<22} {:>14}   ({:.0}/s)", "accepted", self.accepted, self.accepted_per_s)?;
        writeln!(out, "  {:<22} {:>14}", "gmv cents", self.gmv_cents)?;
        for (reason, n) in &self.rejected {
            writeln!(out, "  {:<22} {:>14}", format!("rejected {reason}"), n)?;
        }
        if self.retries > 0 || self.retry_share > 0.0 {
            writeln!(out, "  {:<22} {:>14}   ({} verified)", "retries", self.retries, self.retries_verified)?;
        }
        if self.unknown > 0 {
            writeln!(out, "  {:<22} {:>14}", "unknown outcome", self.unknown)?;
        }
        writeln!(
            out,
            "  latency µs             p50 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.mean_us
        )?;
        if let (Some(p99), Some(max)) = (self.send_lag_p99_us, self.send_lag_max_us) {
            writeln!(out, "  send lag µs            p99 {p99}  max {max}")?;
        }
        if let (Some(p99), Some(p999)) = (self.send_delay_p99_us, self.send_delay_p999_us) {
            writeln!(out, "  send delay µs          p99 {p99}  p99.9 {p999}   (per request, intended -> sent)")?;
        }
        if let Some(slow) = &self.slow_log {
            writeln!(out, "  slow log               {} requests over {} µs in {}", slow.requests, slow.threshold_us, slow.path)?;
            if slow.not_kept > 0 {
                writeln!(out, "                         {} more not kept (per-thread cap)", slow.not_kept)?;
            }
        }
        writeln!(out)?;
        for c in &self.checks {
            writeln!(out, "  [{}] {:<24} {}", if c.ok { " ok " } else { "FAIL" }, c.name, c.detail)?;
        }
        if let Some(s) = &self.stream {
            writeln!(
                out,
                "  {:<22} {:>14}   ({:.0}/s; trailed the load by {:.0} ms; {} reconnects)",
                "stream events", s.events, s.events_per_s, s.drain_ms, s.reconnects
            )?;
        }
        if let Some(r) = &self.readers {
            writeln!(
                out,
                "  {:<22} {:>14} events ({:.0}/s) to {} per core from {}{}",
                "readers",
                r.events,
                r.events_per_s,
                r.per_core,
                r.from,
                if r.product == 0 { String::new() } else { format!(", product {}", r.product) }
            )?;
        }
        if let Some(p) = &self.read_probe {
            writeln!(
                out,
                "  {:<22} {:>14} reads ({} failed), p50 {} us, p99 {} us, max {} us (one each {} ms)",
                "read probe", p.reads, p.failed, p.p50_us, p.p99_us, p.max_us, p.every_ms
            )?;
        }
        if self.stalled_subscribers > 0 {
            writeln!(out, "  {:<22} {:>14}", "stalled subscribers", self.stalled_subscribers)?;
        }
        for e in &self.errors {
            writeln!(out, "  error: {e}")?;
        }
        writeln!(out, "  invariants {verdict}")
    }

    /// Write the JSON report to `path`.
    ///
    /// # Errors
    /// [`LoadError::Report`] naming the file.
    pub fn write_json(&self, path: &Path) -> Result<(), LoadError> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| LoadError::Report { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_described_from_proc() {
        let m = Machine::this();
        assert!(m.cores >= 1);
        assert!(!m.hostname.is_empty() && !m.kernel.is_empty() && !m.cpu_model.is_empty());
    }
}
