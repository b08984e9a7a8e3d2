//! Each core's archiver: moves its shards' cold orders (final, older than
//! `--hot-orders-secs`) out of memory into the shards' archive files, so
//! that memory is bounded by the open orders and the hot window, not by
//! uptime (`engine::evict` has the shard's steps).
//!
//! A task per core looks every [`LOOK_EVERY`]; a shard is archived when
//! [`ARCHIVE_EVERY`] has passed since its last archive and it has cold
//! orders, or at once when it holds more than half its in-memory bound
//! (then every final order goes, hot window or not: the bound must not
//! refuse orders while final ones could leave). The core decides which
//! orders leave ([`ToArchive::take`], a scan of the ring's old end and the
//! pinned orders); the core's archiver thread writes them and syncs the
//! file (a 64-byte record each, runs of consecutive slots in one `pwrite`);
//! then the core lets them go in steps of [`EVICT_STEP`], serving requests
//! between steps. A failed write or sync leaves them in memory, and the
//! next round writes them again.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{now_ms, Core};
use crate::engine::archive::OrderArchive;
use crate::engine::orders::Eviction;
use crate::engine::Shard;
use crate::log::{LogError, SharedStorage, Storage};

/// How often the task looks at its shards.
pub const LOOK_EVERY: Duration = Duration::from_millis(20);

/// The least time between two archives of a shard outside memory pressure:
/// one `fdatasync` of its archive a second at most.
pub const ARCHIVE_EVERY: Duration = Duration::from_secs(1);

/// Orders an eviction moves out of memory per step on the core.
pub const EVICT_STEP: usize = 16 * 1024;

/// How often the task looks for the thread's answer.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// A shard's cold orders on their way to its archive.
#[derive(Debug)]
pub struct ToArchive {
    /// The shard's position on its core.
    pub shard: usize,
    /// Its archive.
    pub archive: Arc<OrderArchive>,
    /// What leaves memory.
    pub eviction: Eviction,
}

impl ToArchive {
    /// The cold orders of `shard` (position `local` on its core) at
    /// `now_ms`, if it has an archive and any order would leave.
    #[must_use]
    pub fn take(local: usize, shard: &Shard, now_ms: u64) -> Option<ToArchive> {
        let archive = Arc::clone(shard.orders.archive()?);
        let eviction = shard.take_eviction(now_ms)?;
        Some(ToArchive { shard: local, archive, eviction })
    }

    /// Writes the orders to the archive and makes them durable (blocking:
    /// off the core).
    ///
    /// # Errors
    /// A write or the sync failed: the orders must stay in memory.
    pub fn write(&self, storage: &dyn Storage) -> Result<(), LogError> {
        self.archive.write(&self.eviction.archived)?;
        self.archive.sync(storage)?;
        Ok(())
    }
}

/// Whether shard `shard` should be archived now: it holds more than half
/// its bound, or its last archive was [`ARCHIVE_EVERY`] ago.
fn due(shard: &Shard, last: Option<Instant>) -> bool {
    shard.orders_in_memory() > shard.config().effective_max_orders() as usize / 2 || last.is_none_or(|at| at.elapsed() >= ARCHIVE_EVERY)
}

/// Runs until its task is dropped.
pub async fn archiver(core: Rc<RefCell<Core>>) {
    let (index, storage, shards) = {
        let core = core.borrow();
        (core.index(), Arc::clone(core.log().storage()), core.local_shards())
    };
    let (jobs, job_rx) = mpsc::channel::<ToArchive>();
    let (done_tx, done) = mpsc::sync_channel::<(ToArchive, Result<(), LogError>)>(1);
    let spawned = std::thread::Builder::new().name(format!("orderd-arch-{index}")).spawn(move || thread_main(&storage, &job_rx, &done_tx));
    if let Err(e) = spawned {
        tracing::error!(core = index, error = %e, "cannot start the archiver thread; final orders stay in memory (the bound will refuse new ones)");
        return;
    }
    let mut last: Vec<Option<Instant>> = vec![None; shards];
    loop {
        glommio::timer::sleep(LOOK_EVERY).await;
        for (local, last) in last.iter_mut().enumerate() {
            let job = {
                let core = core.borrow();
                let Some(shard) = core.shard_at(local) else { continue };
                if !due(shard, *last) {
                    continue;
                }
                ToArchive::take(local, shard, now_ms())
            };
            let Some(job) = job else { continue };
            *last = Some(Instant::now());
            if jobs.send(job).is_err() {
                return;
            }
            let (mut job, result) = loop {
                match done.try_recv() {
                    Ok(answer) => break answer,
                    Err(TryRecvError::Empty) => glommio::timer::sleep(POLL_EVERY).await,
                    Err(TryRecvError::Disconnected) => return,
                }
            };
            if let Err(e) = result {
                tracing::error!(core = index, error = %e, "archiving final orders failed; they stay in memory and are written again next time");
                continue;
            }
            loop {
                let done = core.borrow_mut().shard_at_mut(job.shard).is_none_or(|shard| shard.evict(&mut job.eviction, EVICT_STEP));
                if done {
                    break;
                }
                glommio::yield_if_needed().await;
            }
        }
    }
}

fn thread_main(storage: &SharedStorage, jobs: &mpsc::Receiver<ToArchive>, done: &mpsc::SyncSender<(ToArchive, Result<(), LogError>)>) {
    if let Err(e) = super::threads::lower_priority(super::checkpoints::THREAD_NICE) {
        tracing::warn!(error = %e, "the archiver thread runs at the core's priority (setpriority refused)");
    }
    for job in jobs {
        let result = job.write(&**storage);
        if done.send((job, result)).is_err() {
            return;
        }
    }
}
