//! Each core's next log segment, prepared ahead of need off the core.
//!
//! A task per core asks its [`LogWriter`](crate::log::LogWriter) whether it
//! wants a prepared segment and, if so, hands the job to the core's
//! preparer thread, which makes one (`log::segment::prepare_paced`:
//! created, allocated, with `--prepare-segments zero` (the default) its
//! zeros written, synced); the task then hands the file to the writer,
//! whose next rotation appends to it under its prepared name until the
//! next flush renames it (`log::writer`, "Rotation without I/O"). The core
//! never waits for it: if the segment is not ready when the log fills one,
//! rotation creates it in place as before.
//!
//! Why zeros: ext4 allocates with `fallocate` as "unwritten" extents, and
//! every group commit into them must also convert extents and commit the
//! journal. Into written blocks an fdatasync only writes the data and
//! flushes the device cache: p50 0.11 vs 0.25 ms here (`fio`, 16 KiB
//! append + fdatasync), and `sync` replies at half load p50 0.56 vs 0.80 ms.
//! The zeros are paced (`pace`): written in step with how full the
//! current segment is, ~1.6x the log's own write rate, so the group
//! commits' flushes never queue behind a burst of 64 MiB of zeros (which
//! is what made an earlier, unpaced version cost more than it saved).
//!
//! The same thread drops the segments rotation retired: unmapping 64 MiB of
//! written pages takes milliseconds, which the core should not spend.
//!
//! The preparer is its own thread, not glommio's blocking pool: the pool has
//! one thread per core and it runs the group commit's fdatasync, which must
//! never queue behind tens of ms of zero-filling. It inherits the executor's
//! CPU and runs in the `SCHED_IDLE` class ([`super::threads`]), so it uses
//! only time the core would idle: a saturated core gets no zeros ahead and
//! falls back to creating segments at rotation.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use super::core::Core;
use super::threads;
use crate::log::segment::{self, Pace, Prepare, Segment};
use crate::log::LogError;

/// How often a core looks whether its log wants a prepared segment, and
/// whether the preparer has finished one.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Logged when the helper thread is gone (it only ends if it panicked).
const THREAD_ENDED: &str = "the segment preparer thread ended; rotation will create segments in place";

/// The current segment's fill, in 1/65,536ths, that zeroing starts at and
/// the fill by which the next segment's zeros are all written: the zeros
/// go to disk at ~1.6x the rate the log itself is written, instead of in
/// one burst of 64 MiB that every group commit's flush waited behind
/// (benches/README.md, Durability).
const ZEROS_FROM: u64 = FILL_ONE / 8;
const ZEROS_DONE_BY: u64 = FILL_ONE * 3 / 4;
const FILL_ONE: u64 = 1 << 16;

/// How often the preparer looks again when its zeros are ahead of the log.
const PACE_EVERY: Duration = Duration::from_millis(5);

/// The current segment's fill past which the preparer stops zeroing and
/// hands over what it has: on a saturated core the idle-class thread gets
/// almost no CPU (at 515k req/s open loop it fell behind at every
/// rotation), and a partly zeroed file still spares the core creating,
/// allocating and syncing one at rotation.
const ZEROS_GIVE_UP_AT: u64 = FILL_ONE * 7 / 8;

/// Whether the zeros written so far may grow, given the current segment's
/// fill: blocks until they may ([`Pace::Zero`]), the log is about to need
/// the file ([`Pace::Finish`]) or the core is gone ([`Pace::Abandon`]).
fn pace(written: u64, bytes: u64, fill: &Arc<AtomicU64>) -> Pace {
    loop {
        let now = fill.load(Ordering::Relaxed);
        if now >= ZEROS_GIVE_UP_AT {
            return Pace::Finish;
        }
        let f = now.clamp(ZEROS_FROM, ZEROS_DONE_BY);
        let allowed = u128::from(bytes) * u128::from(f - ZEROS_FROM) / u128::from(ZEROS_DONE_BY - ZEROS_FROM);
        if u128::from(written) < allowed {
            return Pace::Zero;
        }
        if Arc::strong_count(fill) == 1 {
            return Pace::Abandon;
        }
        std::thread::sleep(PACE_EVERY);
    }
}

/// Puts a thread back in the normal scheduling class when dropped.
struct NormalClassOnDrop(libc::pid_t);

impl Drop for NormalClassOnDrop {
    fn drop(&mut self) {
        if let Err(e) = threads::set_normal_class(self.0) {
            tracing::debug!(tid = self.0, error = %e, "cannot put the segment preparer back in the normal class");
        }
    }
}

/// Pause after a failed preparation (disk full, say) before trying again.
const AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Runs until its task is dropped; the preparer thread ends after its
/// current job once the task is gone.
pub async fn preparer(core: Rc<RefCell<Core>>, how: Option<Prepare>) {
    let (index, storage) = {
        let core = core.borrow();
        (core.index(), std::sync::Arc::clone(core.log().storage()))
    };
    let (jobs, job_rx) = mpsc::sync_channel::<(PathBuf, u64, Prepare)>(1);
    let (retire, retired_rx) = mpsc::channel::<Vec<Segment>>();
    let (done_tx, done) = mpsc::sync_channel::<Result<PathBuf, LogError>>(1);
    let fill = Arc::new(AtomicU64::new(0));
    let thread_fill = Arc::clone(&fill);
    let (tid_tx, tid_rx) = mpsc::sync_channel::<libc::pid_t>(1);
    let spawned = std::thread::Builder::new().name(format!("orderd-prep-{index}")).spawn(move || {
        // The thread inherited the executor's CPU binding; only the class changes.
        let _ = tid_tx.send(threads::current_tid());
        if let Err(e) = threads::become_idle_class() {
            tracing::warn!(core = index, error = %e, "segment preparer runs in the normal class (SCHED_IDLE refused)");
        }
        loop {
            match job_rx.recv_timeout(CHECK_EVERY) {
                Ok((dir, bytes, how)) => {
                    let prepared = segment::prepare_paced(&*storage, &dir, bytes, how, &mut |written| pace(written, bytes, &thread_fill));
                    if done_tx.send(prepared).is_err() {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            // Unmap and close retired segments here, not on the core.
            while let Ok(segments) = retired_rx.try_recv() {
                drop(segments);
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(core = index, error = %e, "cannot start the segment preparer thread; rotation will create segments in place");
        return;
    }
    // When this task is dropped (the core stops), the thread goes back to
    // the normal class: starved in SCHED_IDLE on a busy CPU it held the
    // process's exit for seconds (benches/start-stop.sh).
    let _restore = tid_rx.recv().ok().map(NormalClassOnDrop);
    let mut busy = false;
    loop {
        glommio::timer::sleep(CHECK_EVERY).await;
        fill.store(core.borrow().log().fill(FILL_ONE), Ordering::Relaxed);
        let retired = core.borrow_mut().log_mut().take_retired();
        if !retired.is_empty() {
            // If the thread is gone the send fails and they drop here.
            let _ = retire.send(retired);
        }
        if busy {
            match done.try_recv() {
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Disconnected) => {
                    tracing::warn!(core = index, "{THREAD_ENDED}");
                    return;
                }
                Ok(Ok(path)) => {
                    tracing::debug!(core = index, file = %path.display(), "next log segment prepared");
                    core.borrow_mut().log_mut().set_prepared(path);
                    busy = false;
                }
                Ok(Err(e)) => {
                    tracing::warn!(core = index, error = %e, "cannot prepare the next log segment ahead of need; rotation will create it in place");
                    busy = false;
                    glommio::timer::sleep(AFTER_FAILURE).await;
                }
            }
        } else if let Some(((dir, bytes), how)) = core.borrow().log().wants_prepared().zip(how) {
            if jobs.send((dir, bytes, how)).is_err() {
                tracing::warn!(core = index, "{THREAD_ENDED}");
                return;
            }
            busy = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_follow_the_current_segments_fill_and_stop_when_the_core_is_gone() {
        let bytes = 64 << 20;
        let fill = Arc::new(AtomicU64::new(0));
        // Below ZEROS_FROM nothing is welcome; halfway to ZEROS_DONE_BY,
        // half the zeros are.
        fill.store(ZEROS_FROM + (ZEROS_DONE_BY - ZEROS_FROM) / 2, Ordering::Relaxed);
        assert_eq!(pace(0, bytes, &fill), Pace::Zero);
        assert_eq!(pace(bytes / 2 - 1, bytes, &fill), Pace::Zero);
        // At ZEROS_DONE_BY every zero is welcome.
        fill.store(ZEROS_DONE_BY, Ordering::Relaxed);
        assert_eq!(pace(bytes - 1, bytes, &fill), Pace::Zero);
        // Past ZEROS_GIVE_UP_AT the log needs the file soon: hand it over.
        fill.store(ZEROS_GIVE_UP_AT, Ordering::Relaxed);
        assert_eq!(pace(0, bytes, &fill), Pace::Finish);
        // Ahead of the fill, the preparer waits: until the fill grows ...
        fill.store(ZEROS_FROM, Ordering::Relaxed);
        let core = Arc::clone(&fill);
        let waiter = std::thread::spawn(move || pace(1, bytes, &fill));
        std::thread::sleep(PACE_EVERY * 4);
        assert!(!waiter.is_finished(), "zeros ran ahead of the log");
        core.store(ZEROS_DONE_BY, Ordering::Relaxed);
        assert_eq!(waiter.join().unwrap(), Pace::Zero);
        // ... or until the core is gone (its handle dropped): then it gives up.
        let fill = Arc::new(AtomicU64::new(0));
        let core = Arc::clone(&fill);
        let waiter = std::thread::spawn(move || pace(0, bytes, &fill));
        std::thread::sleep(PACE_EVERY * 4);
        assert!(!waiter.is_finished());
        drop(core);
        assert_eq!(waiter.join().unwrap(), Pace::Abandon);
    }
}
