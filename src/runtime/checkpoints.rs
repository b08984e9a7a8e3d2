//! Each core's checkpoints, taken by themselves (every
//! `--checkpoint-every-records` records or `--checkpoint-every-secs`) and
//! on demand (`orderd admin checkpoint`), so that a restart replays a
//! bounded tail of the log instead of everything since the first order.
//!
//! A task per core decides when, and takes each of its shards in turn on
//! the core ([`Shard::image`](crate::engine::Shard::image): a copy of the
//! shard's records, the only stall a checkpoint puts on the order path,
//! measured as `orderd_checkpoint_stall_microseconds`), noting the log's
//! next sequence for each. The images go one at a time to the core's
//! checkpoint thread, which encodes and writes them
//! ([`crate::log::checkpoint`]), so no more than one shard's copy is held
//! at once. Once every shard is written and the file synced, the task waits
//! until the log is durable up to the checkpoint's end, then the thread
//! renames it into place and removes older ones.
//!
//! The thread inherits the core's CPU (shared-nothing) at nice
//! [`THREAD_NICE`]: when the core is saturated it gets about a tenth of the
//! CPU, and all the CPU the core leaves idle. It is not glommio's blocking
//! pool, whose one thread runs the group commit's fdatasync and must never
//! queue behind a checkpoint.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use super::commit::Commit;
use super::core::{now_ms, Core};
use crate::config::CheckpointPolicy;
use crate::engine::orders::OrderRecord;
use crate::log::checkpoint::{self, CheckpointHeader, CheckpointWriter, ShardEntry, Written};
use crate::log::retention::{self, Removed, Retention};
use crate::log::{LogError, SharedStorage};

/// How often the task looks whether a checkpoint is due.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// How often it looks for the thread's answer while a checkpoint runs.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// How often retention looks for segments past their age between checkpoints.
const RETAIN_EVERY: Duration = Duration::from_secs(60);

/// Pause after a failed checkpoint (a full disk, say) before the next try.
const AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The checkpoint thread's nice value: CFS weight 110 against the core's
/// 1024, about a tenth of a saturated CPU.
pub const THREAD_NICE: i32 = 10;

/// Checkpoints on demand across cores (`orderd admin checkpoint`): the
/// connection that takes the request raises every core's `requested`; each
/// core's checkpointer sees it at its next look (every 100 ms),
/// takes a checkpoint and counts it `done` (or `failed`). Atomics read off
/// the order path only (the checkpointers, the waiting connection).
#[derive(Debug)]
pub struct CheckpointBoard {
    cores: Vec<CoreBoard>,
}

#[derive(Debug, Default)]
struct CoreBoard {
    /// Demands made (each a number: the count after it).
    requested: AtomicU64,
    /// The highest demand a completed checkpoint began after.
    served: AtomicU64,
    /// The highest demand a failed checkpoint began after.
    failed: AtomicU64,
    /// The sequence the latest completed checkpoint covers.
    sequence: AtomicU64,
}

/// Why a checkpoint on demand did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OnDemandError {
    /// A core's checkpoint failed (its log says why).
    #[error("core {core}'s checkpoint failed; see its log")]
    Failed {
        /// The core.
        core: usize,
    },
    /// A core did not answer in time (its checkpoint thread is gone).
    #[error("core {core} took no checkpoint within {} s", ON_DEMAND_LIMIT.as_secs())]
    TimedOut {
        /// The core.
        core: usize,
    },
}

/// The longest a checkpoint on demand is waited for.
pub const ON_DEMAND_LIMIT: Duration = Duration::from_secs(600);

impl CheckpointBoard {
    /// A board for `cores` cores.
    #[must_use]
    pub fn new(cores: usize) -> Self {
        CheckpointBoard { cores: (0..cores).map(|_| CoreBoard::default()).collect() }
    }

    /// Asks every core for a checkpoint and waits until each took one that
    /// began after the ask (one already running when it came does not
    /// count): the log sequence each covers, by core.
    ///
    /// # Errors
    /// The first core whose checkpoint failed or that did not answer.
    pub async fn take_all(&self) -> Result<Vec<u64>, OnDemandError> {
        let asks: Vec<u64> = self.cores.iter().map(|c| c.requested.fetch_add(1, Ordering::AcqRel) + 1).collect();
        let started = Instant::now();
        let mut sequences = vec![0; self.cores.len()];
        let mut pending: Vec<usize> = (0..self.cores.len()).collect();
        while !pending.is_empty() {
            glommio::timer::sleep(POLL_EVERY * 5).await;
            let mut still = Vec::with_capacity(pending.len());
            for core in pending {
                let c = &self.cores[core];
                if c.served.load(Ordering::Acquire) >= asks[core] {
                    sequences[core] = c.sequence.load(Ordering::Acquire);
                } else if c.failed.load(Ordering::Acquire) >= asks[core] {
                    return Err(OnDemandError::Failed { core });
                } else {
                    still.push(core);
                }
            }
            if !still.is_empty() && started.elapsed() >= ON_DEMAND_LIMIT {
                return Err(OnDemandError::TimedOut { core: still[0] });
            }
            pending = still;
        }
        Ok(sequences)
    }

    fn requested(&self, core: usize) -> u64 {
        self.cores.get(core).map_or(0, |c| c.requested.load(Ordering::Acquire))
    }

    /// Core `core`'s checkpoint that began when `wants` demands were made
    /// ended with `result` (the sequence it covers).
    fn finished(&self, core: usize, wants: u64, result: Result<u64, ()>) {
        if let Some(c) = self.cores.get(core) {
            match result {
                Ok(sequence) => {
                    c.sequence.store(sequence, Ordering::Release);
                    c.served.fetch_max(wants, Ordering::AcqRel);
                }
                Err(()) => {
                    c.failed.fetch_max(wants, Ordering::AcqRel);
                }
            }
        }
    }
}

/// A job for the checkpoint thread.
enum Job {
    Start(PathBuf),
    Add(Box<ShardEntry>),
    Finish(CheckpointHeader),
    Publish,
    /// Remove the moved shards' bundles no kept checkpoint of the core in
    /// `dir` needs (`log::handoff::sweep_bundles`).
    Sweep(PathBuf, Box<crate::log::handoff::Sweep>),
    /// Delete what retention allows (`log::retention`).
    Retain(PathBuf, Retention),
}

/// The thread's answer to a job: a number (bytes written) and, for an
/// added shard, its order buffer back; what retention deleted.
enum Done {
    Ok(u64, Vec<OrderRecord>),
    Removed(Removed),
    Failed(LogError),
}

/// The thread's side: one checkpoint at a time.
fn thread_main(storage: SharedStorage, jobs: mpsc::Receiver<Job>, done: mpsc::SyncSender<Done>, index: usize) {
    if let Err(e) = super::threads::lower_priority(THREAD_NICE) {
        tracing::warn!(core = index, error = %e, "checkpoint thread runs at the core's priority (setpriority refused)");
    }
    let mut writing: Option<CheckpointWriter> = None;
    let mut written: Option<Written> = None;
    for job in jobs {
        let out_of_order =
            |what: &str| LogError::Io { op: "checkpoint", path: PathBuf::new(), source: std::io::Error::other(what.to_owned()) };
        let mut buffer = Vec::new();
        let answer = match job {
            Job::Start(dir) => CheckpointWriter::create(&dir, std::sync::Arc::clone(&storage)).map(|w| {
                writing = Some(w);
                0
            }),
            Job::Add(entry) => match writing.as_mut() {
                Some(w) => {
                    let added = w.add(&entry).map(|()| w.bytes());
                    buffer = entry.image.orders;
                    added
                }
                None => Err(out_of_order("no checkpoint started")),
            },
            Job::Finish(header) => match writing.take() {
                Some(w) => w.finish(header).map(|done| {
                    let bytes = done.bytes();
                    written = Some(done);
                    bytes
                }),
                None => Err(out_of_order("no checkpoint started")),
            },
            Job::Publish => match written.take() {
                Some(w) => w.publish().map(|_| 0),
                None => Err(out_of_order("no checkpoint written")),
            },
            Job::Sweep(dir, sweep) => checkpoint::list(&dir).and_then(|kept| {
                let oldest = kept.iter().map(|&(sequence, _)| sequence).min().unwrap_or(0);
                crate::log::handoff::sweep_bundles(&sweep, oldest, &*storage).map(|n| n as u64).map_err(|source| LogError::Io {
                    op: "remove a moved shard's bundle",
                    path: sweep.moves_dir.clone(),
                    source,
                })
            }),
            Job::Retain(dir, retention) => {
                let reply = match retention::enforce(&dir, &storage, retention, now_ms()) {
                    Ok(removed) => Done::Removed(removed),
                    Err(e) => Done::Failed(e),
                };
                if done.send(reply).is_err() {
                    return;
                }
                continue;
            }
        };
        let reply = match answer {
            Ok(n) => Done::Ok(n, buffer),
            Err(e) => Done::Failed(e),
        };
        if done.send(reply).is_err() {
            return;
        }
    }
}

/// The core's side of the thread.
struct Helper {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
}

impl Helper {
    /// Sends `job` and waits (polling, off the order path) for its answer.
    async fn run(&self, job: Job) -> Result<u64, LogError> {
        self.run_giving_back(job).await.map(|(n, _)| n)
    }

    /// Runs retention on the thread; answers what it deleted.
    async fn retain(&self, dir: &std::path::Path, retention: Retention) -> Result<Removed, LogError> {
        let gone = || LogError::Io { op: "retention", path: PathBuf::new(), source: std::io::Error::other("the checkpoint thread ended") };
        self.jobs.send(Job::Retain(dir.to_path_buf(), retention)).map_err(|_| gone())?;
        loop {
            match self.done.try_recv() {
                Ok(Done::Removed(removed)) => return Ok(removed),
                Ok(Done::Failed(e)) => return Err(e),
                Ok(Done::Ok(..)) => return Err(gone()),
                Err(TryRecvError::Empty) => glommio::timer::sleep(POLL_EVERY).await,
                Err(TryRecvError::Disconnected) => return Err(gone()),
            }
        }
    }

    /// [`Helper::run`], with the order buffer an added shard gives back.
    async fn run_giving_back(&self, job: Job) -> Result<(u64, Vec<OrderRecord>), LogError> {
        let gone = || LogError::Io { op: "checkpoint", path: PathBuf::new(), source: std::io::Error::other("the checkpoint thread ended") };
        self.jobs.send(job).map_err(|_| gone())?;
        loop {
            match self.done.try_recv() {
                Ok(Done::Ok(n, buffer)) => return Ok((n, buffer)),
                Ok(Done::Removed(_)) => return Err(gone()),
                Ok(Done::Failed(e)) => return Err(e),
                Err(TryRecvError::Empty) => glommio::timer::sleep(POLL_EVERY).await,
                Err(TryRecvError::Disconnected) => return Err(gone()),
            }
        }
    }
}

/// Runs until its task is dropped. `policy`: `None` takes checkpoints only
/// on demand.
pub async fn checkpointer(
    core: Rc<RefCell<Core>>,
    commit: Rc<Commit>,
    policy: Option<CheckpointPolicy>,
    retention: Retention,
    board: std::sync::Arc<CheckpointBoard>,
) {
    let (index, storage, dir) = {
        let core = core.borrow();
        (core.index(), std::sync::Arc::clone(core.log().storage()), core.log().dir().to_path_buf())
    };
    let (jobs, job_rx) = mpsc::channel::<Job>();
    let (done_tx, done) = mpsc::sync_channel::<Done>(1);
    let spawned =
        std::thread::Builder::new().name(format!("orderd-ckpt-{index}")).spawn(move || thread_main(storage, job_rx, done_tx, index));
    if let Err(e) = spawned {
        tracing::error!(core = index, error = %e, "cannot start the checkpoint thread; no checkpoint will be taken (restarts replay the whole log)");
        return;
    }
    let helper = Helper { jobs, done };
    // The newest checkpoint on disk is where the count starts.
    let mut last = match checkpoint::list(&dir) {
        Ok(found) => found.last().map_or(0, |(sequence, _)| *sequence),
        Err(e) => {
            tracing::warn!(core = index, error = %e, "cannot list the checkpoints; counting from the start");
            0
        }
    };
    core.borrow_mut().checkpoint.sequence = last;
    let mut last_at = Instant::now();
    // The order buffer images are copied into, kept between checkpoints.
    let mut spare = Vec::new();
    // Retention runs after each checkpoint and every RETAIN_EVERY (age).
    let mut retained_at = Instant::now();
    // Demands from the board answered so far.
    let mut board_seen = board.requested(index);
    loop {
        glommio::timer::sleep(CHECK_EVERY).await;
        if retained_at.elapsed() >= RETAIN_EVERY {
            retained_at = Instant::now();
            retain(&core, &helper, &dir, retention).await;
        }
        let (next, requested, over_retention) = {
            let core = core.borrow();
            (core.log().next_sequence(), core.checkpoint.requested, core.log().files_bytes() > retention.max_bytes)
        };
        // A log over its retention bytes gets checkpoints sooner: each one
        // moves the recovery floor, which is what lets retention free room
        // before the log bound refuses state changes.
        let due = policy.is_some_and(|p| {
            next.saturating_sub(last) >= p.every_records || (next > last && (last_at.elapsed() >= p.every || over_retention))
        });
        let board_wants = board.requested(index);
        if !due && requested == 0 && board_wants == board_seen {
            continue;
        }
        core.borrow_mut().checkpoint.running = true;
        let result = take(&core, &commit, &helper, &dir, &mut spare).await;
        last_at = Instant::now();
        let failed = {
            let mut core = core.borrow_mut();
            let status = &mut core.checkpoint;
            status.running = false;
            status.requested = status.requested.saturating_sub(requested);
            board_seen = board_wants;
            board.finished(index, board_wants, result.as_ref().map(|t| t.sequence).map_err(|_| ()));
            match result {
                Ok(taken) => {
                    last = taken.sequence;
                    status.taken += 1;
                    status.sequence = taken.sequence;
                    status.at_ms = now_ms();
                    status.duration_us = taken.duration.as_micros() as u64;
                    status.bytes = taken.bytes;
                    status.stall_us = taken.stall.as_micros() as u64;
                    tracing::info!(
                        core = index,
                        sequence = taken.sequence,
                        bytes = taken.bytes,
                        ms = taken.duration.as_millis() as u64,
                        stall_us = taken.stall.as_micros() as u64,
                        "checkpoint taken"
                    );
                    false
                }
                Err(e) => {
                    status.failed += 1;
                    tracing::error!(core = index, error = %e, "checkpoint failed; the previous one stays in use (restarts replay more log); retrying in 10 s");
                    true
                }
            }
        };
        if failed {
            glommio::timer::sleep(AFTER_FAILURE).await;
        } else {
            retained_at = Instant::now();
            retain(&core, &helper, &dir, retention).await;
        }
    }
}

/// Deletes what retention allows of the core's log and tells the writer.
async fn retain(core: &Rc<RefCell<Core>>, helper: &Helper, dir: &std::path::Path, retention: Retention) {
    match helper.retain(dir, retention).await {
        Ok(removed) => {
            if removed.segments > 0 {
                core.borrow_mut().log_mut().removed(removed.segments, removed.bytes, removed.oldest);
            }
        }
        Err(e) => {
            let index = core.borrow().index();
            tracing::warn!(core = index, error = %e, "log retention failed; old segments stay (the log bound may be reached)");
        }
    }
}

/// What one checkpoint did.
struct Taken {
    sequence: u64,
    bytes: u64,
    duration: Duration,
    stall: Duration,
}

/// The decisions of one checkpoint, without I/O (the runtime and the
/// simulator both take checkpoints through it): each shard's image and
/// sequence in turn, then the header.
#[derive(Debug, Default)]
pub struct Taking {
    next: usize,
    sequence: u64,
    record_bytes: u64,
    stall: Duration,
    /// The order buffer the next image is copied into.
    spare: Vec<OrderRecord>,
}

impl Taking {
    /// A checkpoint about to take its first shard, copying images into
    /// `spare` (a buffer from an earlier checkpoint, its pages mapped).
    #[must_use]
    pub fn new(spare: Vec<OrderRecord>) -> Taking {
        Taking { spare, ..Taking::default() }
    }

    /// Takes back an image's order buffer once it is written, for the next
    /// shard (the larger of the two is kept).
    pub fn give_back(&mut self, orders: Vec<OrderRecord>) {
        if orders.capacity() > self.spare.capacity() {
            self.spare = orders;
        }
    }

    /// The buffer to keep for the next checkpoint.
    #[must_use]
    pub fn into_spare(self) -> Vec<OrderRecord> {
        self.spare
    }

    /// The next shard's entry, taken now on `core` (its image copied, the
    /// log's next sequence noted); `None` once every shard is taken.
    pub fn next_entry(&mut self, core: &Core) -> Option<ShardEntry> {
        let copying = Instant::now();
        let shard = core.shard_at(self.next)?;
        let image = shard.image_reusing(std::mem::take(&mut self.spare));
        self.stall = self.stall.max(copying.elapsed());
        let at = core.log().next_sequence();
        if self.next == 0 {
            (self.sequence, self.record_bytes) = (at, core.log().record_bytes());
        }
        self.next += 1;
        Some(ShardEntry { sequence: at, image })
    }

    /// The header, once every shard is taken; its `end_sequence` must be
    /// durable before the checkpoint is published.
    #[must_use]
    pub fn header(&self, core: &Core, taken_s: u32) -> CheckpointHeader {
        CheckpointHeader {
            core: core.index() as u32,
            cores: core.cores() as u32,
            shard_count: core.shard_count(),
            shards: 0,
            sequence: self.sequence,
            end_sequence: core.log().next_sequence(),
            record_bytes: self.record_bytes,
            taken_s,
        }
    }

    /// The longest a shard's copy held the core.
    #[must_use]
    pub fn stall(&self) -> Duration {
        self.stall
    }
}

/// Takes one checkpoint of every shard of `core`.
async fn take(
    core: &Rc<RefCell<Core>>,
    commit: &Commit,
    helper: &Helper,
    dir: &std::path::Path,
    spare: &mut Vec<OrderRecord>,
) -> Result<Taken, LogError> {
    let started = Instant::now();
    helper.run(Job::Start(dir.to_path_buf())).await?;
    let mut taking = Taking::new(std::mem::take(spare));
    loop {
        let Some(entry) = taking.next_entry(&core.borrow()) else { break };
        let (_, buffer) = helper.run_giving_back(Job::Add(Box::new(entry))).await?;
        taking.give_back(buffer);
    }
    let stall = taking.stall();
    let header = taking.header(&core.borrow(), (now_ms() / 1000) as u32);
    *spare = taking.into_spare();
    let bytes = helper.run(Job::Finish(header)).await?;
    // A checkpoint may only be used once the log holds every record its
    // images include.
    commit.local(header.end_sequence).await;
    helper.run(Job::Publish).await?;
    let sweep = core.borrow().bundles.clone();
    if !sweep.tracked.is_empty() || !sweep.stale.is_empty() {
        match helper.run(Job::Sweep(dir.to_path_buf(), Box::new(sweep))).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "moved shards' bundles no checkpoint needs were removed"),
            // They stay; the next checkpoint tries again.
            Err(e) => tracing::warn!(error = %e, "cannot remove the moved shards' bundles"),
        }
    }
    Ok(Taken { sequence: header.sequence, bytes, duration: started.elapsed(), stall })
}
