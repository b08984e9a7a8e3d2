//! Where a core's helper threads run, and in which scheduling class.
//!
//! A core is one glommio executor thread pinned to one CPU, plus two
//! helpers: glommio's blocking-pool thread, which runs the group commit's
//! fdatasync ([`super::commit`]), and the thread that prepares the next log
//! segment ([`super::segments`]). Both belong on the core's own CPU
//! (shared-nothing: a core's disk work must not land on another core), and
//! the preparer must never take the CPU from the executor.
//!
//! glommio's pool builder binds every executor's blocking thread to the
//! *first* executor's CPU (it shrinks the pool placement to one entry), so
//! on a 64-core server every core's fdatasync would run on CPU 0. Each core
//! therefore re-pins its blocking thread to its own CPUs as its first
//! blocking job ([`pin_blocking_thread_here`]).

use std::io;

/// The CPUs the calling thread may run on.
///
/// # Errors
/// What `sched_getaffinity(2)` returns.
pub fn affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is a valid (empty) set.
    #[allow(unsafe_code)]
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the pointer and size describe the
    // set above, which outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) };
    if rc == 0 {
        Ok(set)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds the calling thread to `set`.
///
/// # Errors
/// What `sched_setaffinity(2)` returns.
pub fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; the pointer and size describe a
    // live cpu_set_t that the call only reads.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class: it runs only when its
/// CPU has nothing else to run, and any waking normal thread (the core's
/// executor) preempts it at once. Any thread may do this to itself.
///
/// # Errors
/// What `sched_setscheduler(2)` returns.
pub fn become_idle_class() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a live sched_param
    // the call only reads.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's id (`gettid(2)`), for [`set_normal_class`].
#[must_use]
pub fn current_tid() -> libc::pid_t {
    // SAFETY: gettid(2) has no arguments and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::gettid()
    }
}

/// Puts thread `tid` of this process back in the normal class
/// (`SCHED_OTHER`), from any thread. A `SCHED_IDLE` thread on a CPU that
/// other processes keep busy may not run for seconds, and a process exits
/// only once every one of its threads has: the server calls this for its
/// idle-class threads as it stops.
///
/// # Errors
/// What `sched_setscheduler(2)` returns.
pub fn set_normal_class(tid: libc::pid_t) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `tid` names a thread of this process (or no thread: the call
    // then fails with ESRCH); `param` is a live sched_param it only reads.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Lowers the calling thread's priority to `nice` (Linux applies
/// `setpriority(PRIO_PROCESS, tid)` to the one thread).
///
/// # Errors
/// What `setpriority(2)` returns.
pub fn lower_priority(nice: i32) -> io::Result<()> {
    // SAFETY: gettid(2) has no arguments and cannot fail.
    #[allow(unsafe_code)]
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority(2) on this thread's id; no pointers.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Run on a core's executor thread: pins glommio's blocking-pool thread of
/// this executor to the executor's own CPUs (see the module docs;
/// `--flush-thread unbound` skips it, to compare).
pub async fn pin_blocking_thread_here(core: usize) {
    let result = match affinity() {
        Ok(set) => glommio::executor().spawn_blocking(move || set_affinity(&set)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(core, error = %e, "cannot pin the core's flush thread to its CPU; it may run on another core's CPU");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_round_trips_and_a_thread_can_make_itself_idle_class() {
        let set = affinity().unwrap();
        set_affinity(&set).unwrap();
        // SAFETY: a libc macro-function over a live cpu_set_t.
        #[allow(unsafe_code)]
        let cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).count();
        assert!(cpus >= 1);
        std::thread::spawn(|| {
            become_idle_class().unwrap();
            // SAFETY: pid 0 is the calling thread.
            #[allow(unsafe_code)]
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy, libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }
}
