//! Locked memory: each glommio executor registers `io_memory` (10 MiB by
//! default) in three io_uring rings, all counted against `RLIMIT_MEMLOCK`.
//! `orderd serve` sizes `io_memory` to fit the limit
//! (`runtime::io_memory_for`, called here so host-check and serve
//! never disagree): a WARN here means serve would shrink its buffers, a
//! FAIL means serve refuses to start (glommio fails below 512 KiB a ring).

use super::{cores_word, Check, Status, Target};
use crate::runtime::{io_memory_for, DEFAULT_IO_MEMORY, MIN_IO_MEMORY, RINGS_PER_EXECUTOR};

/// The soft and hard `RLIMIT_MEMLOCK` (`None` = unlimited), or the errno.
pub fn memlock_limits() -> std::io::Result<(Option<u64>, Option<u64>)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` through a valid, exclusive
    // pointer to a live local and reads nothing else.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((finite(limit.rlim_cur), finite(limit.rlim_max)))
}

/// Locked memory orderd would like for `cores` executors (full io_memory).
pub fn wanted_bytes(cores: usize) -> u64 {
    (DEFAULT_IO_MEMORY * RINGS_PER_EXECUTOR * cores) as u64
}

/// Locked memory below which orderd refuses to start.
pub fn minimum_bytes(cores: usize) -> u64 {
    (MIN_IO_MEMORY * RINGS_PER_EXECUTOR * cores) as u64
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// Judge a soft/hard limit pair for `cores` executors.
pub fn judge(cores: usize, soft: Option<u64>, hard: Option<u64>) -> Check {
    let wanted = wanted_bytes(cores);
    let raise = format!(
        "raise RLIMIT_MEMLOCK to {} ({} KiB) for {}: `ulimit -l {}` in the starting shell, LimitMEMLOCK={} in the systemd unit{}",
        mib(wanted),
        wanted / 1024,
        cores_word(cores),
        wanted / 1024,
        wanted,
        match hard {
            Some(h) if h < wanted => format!(" (the hard limit is {}: raise it too, e.g. in /etc/security/limits.d/ or the unit)", mib(h)),
            _ => String::new(),
        }
    );
    let Some(limit) = soft else {
        return Check::new(
            "memlock",
            Status::Pass,
            format!("RLIMIT_MEMLOCK unlimited: full io_memory ({}) for each of {}", mib(DEFAULT_IO_MEMORY as u64), cores_word(cores)),
        );
    };
    match io_memory_for(cores, Some(limit)) {
        Ok(io) if io >= DEFAULT_IO_MEMORY => Check::new(
            "memlock",
            Status::Pass,
            format!("RLIMIT_MEMLOCK {} covers {RINGS_PER_EXECUTOR} rings × {} io_memory × {}", mib(limit), mib(DEFAULT_IO_MEMORY as u64), cores_word(cores)),
        ),
        Ok(io) => Check::new(
            "memlock",
            Status::Warn,
            format!(
                "RLIMIT_MEMLOCK {} < {} wanted: orderd would shrink io_memory from {} to {} per core (smaller registered io_uring buffers)",
                mib(limit),
                mib(wanted),
                mib(DEFAULT_IO_MEMORY as u64),
                mib(io as u64)
            ),
        )
        .fix(raise),
        Err(_) => Check::new(
            "memlock",
            Status::Fail,
            format!(
                "RLIMIT_MEMLOCK {} < {} needed at least ({RINGS_PER_EXECUTOR} rings × {} × {}): orderd serve refuses to start (glommio MemLockLimit)",
                mib(limit),
                mib(minimum_bytes(cores)),
                mib(MIN_IO_MEMORY as u64),
                cores_word(cores)
            ),
        )
        .fix(raise),
    }
}

/// The memlock check for the selected cores.
pub fn checks(target: &Target) -> Vec<Check> {
    match memlock_limits() {
        Ok((soft, hard)) => vec![judge(target.cpus.len(), soft, hard)],
        Err(e) => vec![Check::new("memlock", Status::Skip, format!("cannot read RLIMIT_MEMLOCK: {e}"))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_judged_like_serve_sizes_io_memory() {
        assert_eq!(judge(2, None, None).status, Status::Pass);
        assert_eq!(judge(2, Some(60 << 20), None).status, Status::Pass);
        let warn = judge(2, Some(8 << 20), Some(8 << 20));
        assert_eq!(warn.status, Status::Warn);
        assert!(warn.fix.contains("LimitMEMLOCK=62914560"), "{}", warn.fix);
        assert!(warn.fix.contains("hard limit"), "{}", warn.fix);
        let fail = judge(2, Some(1 << 20), None);
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.fix.contains("ulimit -l 61440"), "{}", fail.fix);
    }
}
