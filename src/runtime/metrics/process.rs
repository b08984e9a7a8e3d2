//! The process metrics every Prometheus client library exports
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...),
//! read from `/proc/self` at scrape time, so dashboards and alerts written
//! for any service work for orderd too.

use std::fmt::{self, Write};

/// The process's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory.
    pub resident_bytes: u64,
    /// Virtual memory.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Threads.
    pub threads: u64,
}

impl Process {
    /// Reads `/proc/self`; `None` where it cannot be read (not Linux).
    #[must_use]
    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| max_open_files(&l)).unwrap_or(0);
        // SAFETY: sysconf(3) takes no pointers and only reads configuration.
        #[allow(unsafe_code)]
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        parse_stat(&stat, boot_time, u64::try_from(ticks).ok()?, u64::try_from(page).ok()?).map(|p| Process { open_fds, max_fds, ..p })
    }

    /// Writes the families in the exposition format.
    ///
    /// # Errors
    /// Only if writing to the `String` fails, which it does not.
    pub fn render(&self, out: &mut String) -> fmt::Result {
        let mut family = |name: &str, kind: &str, help: &str, value: &dyn fmt::Display| {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} {kind}")?;
            writeln!(out, "{name} {value}")
        };
        family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", &self.cpu_seconds)?;
        family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", &self.resident_bytes)?;
        family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", &self.virtual_bytes)?;
        family("process_open_fds", "gauge", "Number of open file descriptors.", &self.open_fds)?;
        family("process_max_fds", "gauge", "Maximum number of open file descriptors.", &self.max_fds)?;
        family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", &self.start_time_seconds)?;
        family("process_threads", "gauge", "Number of OS threads in the process.", &self.threads)
    }
}

/// The figures `/proc/self/stat` gives (`stat`), with the boot time,
/// clock ticks per second and page size.
fn parse_stat(stat: &str, boot_time: u64, ticks: u64, page: u64) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // the fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = ticks.max(1) as f64;
    Some(Process {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page),
        open_fds: 0,
        max_fds: 0,
    })
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name_whatever_it_holds() {
        // pid (comm) state ppid ... utime=14 stime=15 ... threads=20 ... starttime=22 vsize=23 rss=24
        let stat = "42 (orderd (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 1000 123456789 300 18446744073709551615";
        let p = parse_stat(stat, 1_700_000_000, 100, 4096).unwrap();
        assert_eq!(p.cpu_seconds, 4.0);
        assert_eq!(p.threads, 7);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
        assert_eq!(p.virtual_bytes, 123_456_789);
        assert_eq!(p.resident_bytes, 300 * 4096);
        assert_eq!(parse_stat("garbage", 0, 100, 4096), None);
    }

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_can_be_read() {
        let p = Process::read().expect("/proc/self is readable on Linux");
        assert!(p.resident_bytes > 0 && p.open_fds > 0 && p.threads >= 1, "{p:?}");
    }
}
