//! `orderd host-check`: read the host and say, one line per check, whether
//! it is ready to run `orderd serve` with the same options, and how to fix
//! what is not.
//!
//! Every check yields a [`Check`] with a [`Status`]: `PASS`, `WARN` (orderd
//! runs, but slower or less safely than it could), `FAIL` (orderd will not
//! start, or will not keep its promises) or `SKIP` (the host did not let us
//! read what the check needs; the line says what). The exit code is
//! non-zero when any check FAILs. Nothing here needs root: whatever cannot
//! be read becomes a SKIP or WARN line, never a crash.
//!
//! # Layout
//! - this file: the flags ([`HostCheckArgs`]), the report and its text and
//!   JSON renderings, [`run`].
//! - [`kernel`]: kernel version, `io_uring_disabled`, a real `io_uring_setup`.
//! - [`memlock`]: `RLIMIT_MEMLOCK` against glommio's locked io_memory.
//! - [`cpu`]: the selected CPUs, SMT siblings, frequency governor, a KVM
//!   guest's halt polling, THP.
//! - [`irq`]: NIC interrupts landing on orderd's cores.
//! - [`disk`]: the data directory's filesystem, fdatasync latency, free space.
//! - [`net`]: `somaxconn`, the ephemeral port range, the listen ports and
//!   the metrics port.
//! - [`sysfs`]: small readers shared by the checks (CPU lists, one-line files).

pub mod cpu;
pub mod disk;
pub mod irq;
pub mod kernel;
pub mod memlock;
pub mod net;
pub mod sysfs;

use std::io::Write;

use clap::Args;
use serde::Serialize;

use crate::cli::site::parse_cores;
use crate::config::{CoreSelection, Durability};

/// The flags of `orderd host-check`: the options of `orderd serve` that the
/// host has to satisfy, read from the same `ORDERD_*` environment variables,
/// so that `host-check` run with the service's environment file checks the
/// configuration the service will start with.
#[derive(Debug, Clone, Args)]
pub struct HostCheckArgs {
    /// The server's data directory, CPUs and addresses, as for `serve`: the
    /// data directory's filesystem, flush latency and free space are
    /// measured (in a temp file that is removed afterwards), the CPUs'
    /// IRQs and the ports checked.
    #[command(flatten)]
    pub site: crate::cli::site::SiteArgs,

    /// Durability mode, as for `serve`: `sync` makes a RAM-backed data
    /// directory a FAIL, `async` a WARN.
    #[arg(long, env = "ORDERD_DURABILITY", value_enum, default_value = "sync")]
    pub durability: Durability,

    /// Bound of each core's log, in bytes (as `orderd serve --max-log-bytes`,
    /// default 64 GiB): the free space of the data directory is compared
    /// with cores × this bound.
    #[arg(long, env = "ORDERD_MAX_LOG_BYTES", default_value_t = crate::log::DEFAULT_MAX_LOG_BYTES)]
    pub max_log_bytes: u64,

    /// Print the report as one JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// The host is fine for this.
    Pass,
    /// orderd runs, but slower or less safely than it could.
    Warn,
    /// orderd will not start, or will not keep its promises.
    Fail,
    /// What the check needs could not be read.
    Skip,
}

impl Status {
    /// The word printed at the start of the line.
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short stable name, e.g. `memlock`.
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it (empty when there is nothing to fix).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Check {
    /// A check with no fix.
    pub fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check { name, status, detail: detail.into(), fix: String::new() }
    }

    /// Attach how to fix it.
    pub fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = fix.into();
        self
    }
}

/// `1 core`, `2 cores`.
pub fn cores_word(n: usize) -> String {
    if n == 1 {
        "1 core".to_owned()
    } else {
        format!("{n} cores")
    }
}

/// What the checks are run against, resolved from the flags.
#[derive(Debug, Clone)]
pub struct Target {
    /// The orderd serving the data directory now (its lock's holder), if
    /// one does: its ports are not a conflict, and the flush probe goes
    /// beside the directory, not into it.
    pub live: Option<u32>,
    /// The CPU ids orderd will run on (for `all`: every online CPU).
    pub cpus: Vec<usize>,
    /// The online CPUs, when readable.
    pub online: Option<Vec<usize>>,
    /// The flags.
    pub args: HostCheckArgs,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every check, in the order run.
    pub checks: Vec<Check>,
    /// How many of each status.
    pub pass: usize,
    /// WARN count.
    pub warn: usize,
    /// FAIL count.
    pub fail: usize,
    /// SKIP count.
    pub skip: usize,
    /// True when no check failed (the exit code is then 0).
    pub ok: bool,
}

impl Report {
    fn new(checks: Vec<Check>) -> Report {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        let (pass, warn, fail, skip) = (count(Status::Pass), count(Status::Warn), count(Status::Fail), count(Status::Skip));
        Report { checks, pass, warn, fail, skip, ok: fail == 0 }
    }

    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.ok
    }

    /// One line per check: `STATUS name: detail — fix: ...`, then a summary.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        for c in &self.checks {
            write!(out, "{} {:<15} {}", c.status.word(), c.name, c.detail)?;
            if !c.fix.is_empty() {
                write!(out, " — fix: {}", c.fix)?;
            }
            writeln!(out)?;
        }
        writeln!(out, "host-check: {} PASS, {} WARN, {} FAIL, {} SKIP", self.pass, self.warn, self.fail, self.skip)
    }
}

/// Run every check against the host.
pub fn check(args: &HostCheckArgs) -> Report {
    let mut checks = Vec::new();
    let online = sysfs::read_cpu_list("/sys/devices/system/cpu/online").ok();
    let cpus = match parse_cores(&args.site.cores) {
        Ok(CoreSelection::All) => match &online {
            Some(list) => list.clone(),
            None => {
                let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                (0..n).collect()
            }
        },
        Ok(CoreSelection::List(list)) => list,
        Err(e) => {
            checks.push(Check::new("cores", Status::Fail, e.to_string()).fix("pass --cores all or a list of online CPU ids such as 0,1"));
            Vec::new()
        }
    };
    let live = match crate::procfs::lock_holder(&args.site.data_dir) {
        crate::procfs::Holder::Live { pid, .. } => Some(pid),
        _ => None,
    };
    if let Some(pid) = live {
        checks.push(Check::new(
            "live_server",
            Status::Pass,
            format!(
                "an orderd (pid {pid}) serves {} now: its own ports count as free, and the disk is probed beside the directory",
                args.site.data_dir.display()
            ),
        ));
    }
    let target = Target { live, cpus, online, args: args.clone() };
    checks.extend(kernel::checks());
    if !target.cpus.is_empty() {
        checks.extend(memlock::checks(&target));
        checks.extend(cpu::checks(&target));
        checks.extend(irq::checks(&target));
    }
    checks.extend(disk::checks(&target));
    checks.extend(net::checks(&target));
    Report::new(checks)
}

/// `orderd host-check`: print the report; true when nothing failed.
pub fn run(args: &HostCheckArgs, out: &mut impl Write) -> std::io::Result<bool> {
    let report = check(args);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        report.write_text(out)?;
    }
    Ok(report.ok())
}
