//! The CPUs: that the selected ones are online, whether two of them are
//! SMT siblings of one physical core (two executors would then share one
//! core's execution units), the frequency governor, a KVM guest's halt
//! polling, and transparent huge pages.

use super::sysfs::{format_cpu_list, read_cpu_list, read_line, unreadable};
use super::{cores_word, Check, Status, Target};

/// The CPU checks.
pub fn checks(target: &Target) -> Vec<Check> {
    vec![cpus(target), smt(target), governor(target), halt_poll(), thp()]
}

fn cpus(target: &Target) -> Check {
    let selected = format_cpu_list(&target.cpus);
    let Some(online) = &target.online else {
        return Check::new("cpus", Status::Skip, format!("cannot read /sys/devices/system/cpu/online; orderd would use CPUs {selected}"));
    };
    let missing: Vec<usize> = target.cpus.iter().copied().filter(|c| !online.contains(c)).collect();
    if !missing.is_empty() {
        return Check::new(
            "cpus",
            Status::Fail,
            format!("--cores names CPUs {} that are not online (online: {})", format_cpu_list(&missing), format_cpu_list(online)),
        )
        .fix("pass --cores with online CPU ids only");
    }
    let status = if target.cpus.len() == online.len() && online.len() > 1 { Status::Warn } else { Status::Pass };
    let check = Check::new(
        "cpus",
        status,
        format!(
            "{} online CPUs ({}); orderd will run {} on CPUs {selected}",
            online.len(),
            format_cpu_list(online),
            cores_word(target.cpus.len())
        ),
    );
    if status == Status::Warn {
        check.fix("orderd takes every CPU, so interrupts, the kernel and other processes share its cores; on a dedicated host leave one CPU out of --cores (CPUAffinity in the unit) for them")
    } else {
        check
    }
}

fn smt(target: &Target) -> Check {
    let mut shared = Vec::new();
    let mut any_smt = false;
    for &cpu in &target.cpus {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
        let siblings = match read_cpu_list(&path) {
            Ok(s) => s,
            Err(e) => return Check::new("smt", Status::Skip, unreadable(&path, &e)),
        };
        if siblings.len() > 1 {
            any_smt = true;
        }
        let others: Vec<usize> = siblings.iter().copied().filter(|&s| s != cpu && target.cpus.contains(&s)).collect();
        if !others.is_empty() && others.iter().all(|&o| o > cpu) {
            shared.push(format!("{cpu}+{}", format_cpu_list(&others)));
        }
    }
    if !shared.is_empty() {
        Check::new("smt", Status::Warn, format!("selected CPUs are SMT siblings of one physical core: {}", shared.join(", ")))
            .fix("pass --cores with one CPU per physical core (see thread_siblings_list), or disable SMT (echo off > /sys/devices/system/cpu/smt/control)")
    } else if any_smt {
        Check::new("smt", Status::Pass, "SMT is on, but no two selected CPUs share a physical core (keep their siblings idle)")
    } else {
        Check::new("smt", Status::Pass, "no SMT siblings among the selected CPUs (one thread per core)")
    }
}

fn governor(target: &Target) -> Check {
    let mut slow = Vec::new();
    let mut seen = Vec::new();
    for &cpu in &target.cpus {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
        match read_line(&path) {
            Ok(g) => {
                if g != "performance" {
                    slow.push(format!("cpu{cpu}={g}"));
                }
                seen.push(g);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Check::new(
                    "governor",
                    Status::Skip,
                    format!("no {path}: this host exposes no cpufreq (usual on a VM, where the hypervisor owns CPU frequency)"),
                );
            }
            Err(e) => return Check::new("governor", Status::Skip, unreadable(&path, &e)),
        }
    }
    if slow.is_empty() {
        Check::new("governor", Status::Pass, "frequency governor is `performance` on every selected CPU")
    } else {
        Check::new("governor", Status::Warn, format!("governor is not `performance`: {}", slow.join(" ")))
            .fix("cpupower frequency-set -g performance (or echo performance > /sys/devices/system/cpu/cpuN/cpufreq/scaling_governor)")
    }
}

/// Where a KVM guest's `haltpoll` cpuidle driver reads how long an idle
/// vCPU polls before it halts.
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

fn halt_poll() -> Check {
    const DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
    let driver = match read_line(DRIVER) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::new("halt_poll", Status::Pass, "no cpuidle driver (not a KVM guest's haltpoll)");
        }
        Err(e) => return Check::new("halt_poll", Status::Skip, unreadable(DRIVER, &e)),
    };
    let poll_ns = if driver == "haltpoll" {
        match read_line(HALT_POLL_NS).map(|v| v.parse::<u64>()) {
            Ok(Ok(ns)) => Some(ns),
            Ok(Err(_)) => return Check::new("halt_poll", Status::Skip, format!("cannot parse {HALT_POLL_NS}")),
            Err(e) => return Check::new("halt_poll", Status::Skip, unreadable(HALT_POLL_NS, &e)),
        }
    } else {
        None
    };
    halt_poll_verdict(&driver, poll_ns)
}

/// The `halt_poll` verdict for cpuidle driver `driver` and, for `haltpoll`,
/// its `guest_halt_poll_ns`.
///
/// A vCPU that halts exits to the hypervisor, and waking it takes the host
/// a scheduling round trip. A `sync` flush sleeps and wakes two or three
/// times (data written, cache flushed), so on a guest with polling off each
/// flush pays those round trips: on the project's 2-vCPU Firecracker VM,
/// fio 16 KiB write + fdatasync took p50/p99 0.34/0.82-1.19 ms with
/// `guest_halt_poll_ns=0` and 0.11/0.22 ms with 200 µs (benches/README.md, Latency).
pub fn halt_poll_verdict(driver: &str, poll_ns: Option<u64>) -> Check {
    match (driver, poll_ns) {
        ("haltpoll", Some(0)) => Check::new(
            "halt_poll",
            Status::Warn,
            "KVM guest with halt polling off (guest_halt_poll_ns=0): every wakeup of an idle vCPU goes through the host, which slows each sync flush (measured 3x at the median on a VM)",
        )
        .fix(format!(
            "echo 200000 > {HALT_POLL_NS} (persist: haltpoll.guest_halt_poll_ns=200000 on the kernel command line); idle vCPUs then poll up to 200 us before halting, which the host sees as busy"
        )),
        ("haltpoll", Some(ns)) => Check::new("halt_poll", Status::Pass, format!("KVM guest halt polling: an idle vCPU polls up to {} us before halting", ns / 1000)),
        (other, _) => Check::new("halt_poll", Status::Pass, format!("cpuidle driver `{other}` (not a KVM guest's haltpoll)")),
    }
}

/// The bracketed choice of a sysfs selector such as `always [madvise] never`.
pub fn selected_choice(line: &str) -> Option<&str> {
    let start = line.find('[')?;
    let end = line[start..].find(']')? + start;
    Some(&line[start + 1..end])
}

fn thp() -> Check {
    const PATH: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
    let line = match read_line(PATH) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::new("thp", Status::Pass, "no transparent huge pages on this kernel");
        }
        Err(e) => return Check::new("thp", Status::Skip, unreadable(PATH, &e)),
    };
    match selected_choice(&line) {
        Some("always") => Check::new(
            "thp",
            Status::Warn,
            "transparent huge pages = always: khugepaged collapses and page-fault compaction can stall a core for milliseconds (latency tail, not throughput)",
        )
        .fix(format!("echo madvise > {PATH} (and persist it: transparent_hugepage=madvise on the kernel command line)")),
        Some(choice @ ("madvise" | "never")) => Check::new("thp", Status::Pass, format!("transparent huge pages = {choice}")),
        _ => Check::new("thp", Status::Skip, format!("cannot parse {PATH}: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_polling_off_in_a_guest_is_a_warning_with_its_fix() {
        let off = halt_poll_verdict("haltpoll", Some(0));
        assert_eq!(off.status, Status::Warn);
        assert!(off.fix.contains("guest_halt_poll_ns"), "{}", off.fix);
        let on = halt_poll_verdict("haltpoll", Some(200_000));
        assert_eq!((on.status, on.detail.contains("200 us")), (Status::Pass, true), "{}", on.detail);
        assert_eq!(halt_poll_verdict("intel_idle", None).status, Status::Pass);
    }

    #[test]
    fn sysfs_selectors_parse() {
        assert_eq!(selected_choice("always [madvise] never"), Some("madvise"));
        assert_eq!(selected_choice("[always] madvise never"), Some("always"));
        assert_eq!(selected_choice("always"), None);
    }
}
