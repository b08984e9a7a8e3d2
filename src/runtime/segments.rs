//! Each core's next log segment, prepared ahead of need off the core.
//!
//! A task per core asks its [`LogWriter`](crate::log::LogWriter) whether it
//! wants a prepared segment and, if so, hands the job to the core's
//! preparer thread, which makes one (`log::segment::prepare`: created,
//! allocated, its zeros written a page at a time, synced); the task then
//! hands the file to the writer, which renames it into place at the next
//! rotation. The core never waits for it: if the segment is not ready when
//! the log fills one, rotation creates it in place as before.
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
use std::sync::mpsc::{self, TryRecvError};
use std::time::Duration;

use super::core::Core;
use super::threads;
use crate::log::segment::{self, Prepare, Segment};
use crate::log::LogError;

/// How often a core looks whether its log wants a prepared segment, and
/// whether the preparer has finished one.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Logged when the helper thread is gone (it only ends if it panicked).
const THREAD_ENDED: &str = "the segment preparer thread ended; rotation will create segments in place";

/// Pause after a failed preparation (disk full, say) before trying again.
const AFTER_FAILURE: Duration = Duration::from_secs(10);

/// How the next segment is prepared: `ORDERD_PREPARE_SEGMENTS` chooses, for
/// before/after measurements (README, Durability): `off` (create at
/// rotation; retired segments are still dropped off the core), `zero` (also write the zeros ahead), anything else allocate
/// ahead only.
fn mode() -> Option<Prepare> {
    match std::env::var("ORDERD_PREPARE_SEGMENTS").as_deref() {
        Ok("off") => None,
        Ok("zero") => Some(Prepare::Zero),
        _ => Some(Prepare::Allocate),
    }
}

/// Runs until its task is dropped; the preparer thread ends after its
/// current job once the task is gone.
pub async fn preparer(core: Rc<RefCell<Core>>) {
    let how = mode();
    let index = core.borrow().index();
    let (jobs, job_rx) = mpsc::sync_channel::<(PathBuf, u64, Prepare)>(1);
    let (retire, retired_rx) = mpsc::channel::<Vec<Segment>>();
    let (done_tx, done) = mpsc::sync_channel::<Result<PathBuf, LogError>>(1);
    let spawned = std::thread::Builder::new().name(format!("orderd-prep-{index}")).spawn(move || {
        // The thread inherited the executor's CPU binding; only the class changes.
        if let Err(e) = threads::become_idle_class() {
            tracing::warn!(core = index, error = %e, "segment preparer runs in the normal class (SCHED_IDLE refused)");
        }
        loop {
            match job_rx.recv_timeout(CHECK_EVERY) {
                Ok((dir, bytes, how)) => {
                    if done_tx.send(segment::prepare(&dir, bytes, how)).is_err() {
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
    let mut busy = false;
    loop {
        glommio::timer::sleep(CHECK_EVERY).await;
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
