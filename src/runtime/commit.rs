//! Group commit: one flusher task per core makes the core's log durable,
//! and replies to state changes wait for the flush that covers them.
//!
//! A connection that applied state changes notes the log sequence its
//! replies depend on ([`Core::apply`](super::core::Core::apply)) and awaits
//! [`Commit::durable`] before writing them. The first waiter wakes the
//! flusher; the flusher takes the log's end at that moment
//! ([`LogWriter::flush_target`](crate::log::LogWriter::flush_target)) and
//! runs `fdatasync` on the segment file in glommio's blocking thread pool
//! (or through io_uring, `--flush-method io-uring`), so the executor keeps reading, applying and appending for every
//! connection meanwhile. When it completes, every waiter at or below that
//! sequence is released; whatever was appended during the flush is covered
//! by the next one. One flush so covers every record appended since the
//! previous one, from any number of frames and connections.
//!
//! In `async` mode nothing waits: the flusher runs every
//! `--flush-interval-ms` (in `sync` mode too, for records no reply waits
//! for, such as the timer's expiries).
//!
//! A failed fdatasync cannot be retried safely (the kernel may have dropped
//! the dirty pages and cleared the error: "fsyncgate"), so the process
//! aborts and recovery decides from what is on disk.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::core::Core;
use super::replication::ReplicaPoint;
use crate::config::FlushMethod;
use crate::stream::DurablePoints;

/// One core's durable point and the tasks waiting on it.
///
/// In a cluster that keeps several copies of each shard, a state change is
/// acknowledged once it is durable here *and* on the followers of its
/// shard: the acknowledged point is the lower of this log's durable point
/// and the replication point (`runtime::replication`: below it every event
/// sent to a follower is durable there; `u64::MAX` without followers).
/// Replies and the order stream go by the acknowledged point; a follower's
/// answer to a batch of replicated events waits only for this log.
pub struct Commit {
    /// Where the acknowledged point is published for the order stream.
    points: Arc<DurablePoints>,
    /// This core's index in `points`.
    core: usize,
    /// Every record below this sequence is durable in this log.
    durable: Cell<u64>,
    /// Every event below this sequence sent to a follower is durable
    /// there (`runtime::replication` lowers and raises it).
    replica: Rc<ReplicaPoint>,
    /// Replies waiting for a flush.
    waiters: RefCell<Vec<Waker>>,
    /// A waiter asked for a flush.
    wanted: Cell<bool>,
    /// The flusher, when it sleeps.
    flusher: RefCell<Option<Waker>>,
}

impl Commit {
    /// A watch whose durable point starts at `durable` (what recovery
    /// found); each advance is published as core `core`'s point in `points`.
    #[must_use]
    pub fn new(durable: u64, points: Arc<DurablePoints>, core: usize) -> Commit {
        points.publish(core, durable);
        Commit {
            points,
            core,
            durable: Cell::new(durable),
            replica: Rc::new(ReplicaPoint::default()),
            waiters: RefCell::new(Vec::new()),
            wanted: Cell::new(false),
            flusher: RefCell::new(None),
        }
    }

    /// Every record below this sequence is acknowledged: durable here and,
    /// for events sent to followers, there.
    #[must_use]
    pub fn point(&self) -> u64 {
        self.durable.get().min(self.replica.point.get())
    }

    /// Every record below this sequence is durable in this core's log.
    #[must_use]
    pub fn local_point(&self) -> u64 {
        self.durable.get()
    }

    /// The replication point this core's followers' links move
    /// (`runtime::replication`).
    #[must_use]
    pub fn replica_point(&self) -> Rc<ReplicaPoint> {
        Rc::clone(&self.replica)
    }

    /// Whether a reply waiting for `wait` must never be acknowledged (see
    /// [`ReplicaPoint`]).
    #[must_use]
    pub fn unacknowledged(&self, wait: u64) -> bool {
        self.replica.unacknowledged(wait)
    }

    /// Resolves once every record below `sequence` is acknowledged.
    pub fn durable(&self, sequence: u64) -> WaitDurable<'_> {
        WaitDurable { commit: self, sequence, local: false }
    }

    /// Resolves once every record below `sequence` is durable in this log
    /// (a follower's answer to replicated events: waiting for its own
    /// followers too could make two nodes wait on each other).
    pub fn local(&self, sequence: u64) -> WaitDurable<'_> {
        WaitDurable { commit: self, sequence, local: true }
    }

    fn advance(&self, sequence: u64) {
        if sequence > self.durable.get() {
            self.durable.set(sequence);
        }
        self.release();
    }

    /// The replication point moved: publishes the acknowledged point and
    /// wakes the waiters.
    pub fn release(&self) {
        self.points.publish(self.core, self.point());
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    fn want_flush(&self) {
        self.wanted.set(true);
        if let Some(w) = self.flusher.borrow_mut().take() {
            w.wake();
        }
    }

    /// Wakers waiting for a flush: about one per connection or forwarded
    /// batch whose replies wait (a metrics gauge, read at scrape time).
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// The future of [`Commit::durable`] and [`Commit::local`].
pub struct WaitDurable<'a> {
    commit: &'a Commit,
    sequence: u64,
    local: bool,
}

impl Future for WaitDurable<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let point = if self.local { self.commit.local_point() } else { self.commit.point() };
        if point >= self.sequence {
            return Poll::Ready(());
        }
        {
            // A connection that reads more while it waits polls again before
            // the flush; when nobody else queued meanwhile it is not queued
            // twice. (Only the last entry is compared: a full scan would be
            // quadratic in the waiting connections.)
            let mut waiters = self.commit.waiters.borrow_mut();
            if !waiters.last().is_some_and(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        // Only this log's flush can help; a wait for followers alone must
        // not start empty flushes over and over.
        if self.commit.local_point() < self.sequence {
            self.commit.want_flush();
        }
        Poll::Pending
    }
}

/// Resolves when a flush is wanted.
struct Wanted<'a>(&'a Commit);

impl Future for Wanted<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.wanted.replace(false) {
            return Poll::Ready(());
        }
        *self.0.flusher.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Unflushed records that start a flush without waiting for the interval.
/// Bounds each flush, and so the stalls a large one causes: the rotation of
/// a segment syncs the old one on the core, and with `--durability async`
/// and a 1 s interval that was up to a second of records (tens of MB), a
/// stall of tens of ms (benches/README.md, Latency). It also bounds the async loss
/// window by size: ~1.4 MB of records at most.
pub const FLUSH_EVERY_RECORDS: u64 = 16_384;

/// How often the flusher looks at the unflushed count between flushes.
const CHECK_EVERY: Duration = Duration::from_millis(2);

/// The flusher of one core: flush when a reply waits (sync mode), every
/// `interval`, or once [`FLUSH_EVERY_RECORDS`] records are unflushed. Runs
/// until its task is dropped; the core flushes once more itself after its
/// connections have drained. `delay` (a test seam, `--test-flush-delay-ms`)
/// lengthens every flush, so tests can see that replies wait for it (sync)
/// or not (async), and that concurrent frames share one.
pub async fn flusher(core: Rc<RefCell<Core>>, commit: Rc<Commit>, interval: Duration, method: FlushMethod, delay: Option<Duration>) {
    let mut uring: Option<(PathBuf, glommio::io::BufferedFile)> = None;
    let mut last = Instant::now();
    loop {
        let wanted = futures_lite::future::or(
            async {
                Wanted(&commit).await;
                true
            },
            async {
                glommio::timer::sleep(interval.min(CHECK_EVERY)).await;
                false
            },
        )
        .await;
        let unflushed = {
            let core = core.borrow();
            if let Some(reason) = core.log().stopped() {
                tracing::error!(core = core.index(), reason, "a sync of the log failed on the core; aborting (a failed sync cannot be retried safely; recovery will read what reached the disk)");
                std::process::abort();
            }
            core.log().next_sequence() - core.log().durable()
        };
        if !wanted && last.elapsed() < interval && unflushed < FLUSH_EVERY_RECORDS {
            continue;
        }
        last = Instant::now();
        if let Some(delay) = delay {
            glommio::timer::sleep(delay).await;
        }
        flush_once(&core, &commit, method, &mut uring).await;
    }
}

/// Flushes everything appended so far and releases the waiters it covers.
async fn flush_once(
    core: &Rc<RefCell<Core>>,
    commit: &Commit,
    method: FlushMethod,
    uring: &mut Option<(PathBuf, glommio::io::BufferedFile)>,
) {
    let Some(plan) = core.borrow().log().flush_target() else {
        commit.advance(core.borrow().log().durable());
        return;
    };
    let path = core.borrow().log().current().path.clone();
    let started = Instant::now();
    // io_uring fdatasync covers the plain flush only; a flush that
    // completes a rotation's rename runs in the blocking pool.
    let file = match method {
        FlushMethod::IoUring if plan.rename.is_none() => uring_file(uring, &path).await,
        _ => None,
    };
    let result = match file {
        Some(f) => f.fdatasync().await.map_err(|source| crate::log::LogError::Io { op: "fdatasync", path, source: source.into() }),
        None => {
            let plan = plan.clone();
            glommio::executor().spawn_blocking(move || plan.run(&path)).await
        }
    };
    if let Err(e) = result {
        let index = core.borrow().index();
        tracing::error!(core = index, error = %e, "flushing the log failed; aborting (a failed fdatasync cannot be retried safely; recovery will read what reached the disk)");
        std::process::abort();
    }
    let target = plan.target;
    {
        let mut core = core.borrow_mut();
        let before = core.log().durable();
        core.log_mut().flushed(&plan);
        let covered = core.log().durable() - before;
        core.metrics.flushed(started.elapsed().as_micros() as u64, covered);
    }
    commit.advance(target);
}

/// The segment at `path` opened through glommio (`--flush-method io-uring`),
/// kept open across flushes; `None` if it cannot be opened.
async fn uring_file<'a>(
    uring: &'a mut Option<(PathBuf, glommio::io::BufferedFile)>,
    path: &std::path::Path,
) -> Option<&'a glommio::io::BufferedFile> {
    if uring.as_ref().is_none_or(|(p, _)| p != path) {
        if let Some((_, old)) = uring.take() {
            let _ = old.close().await;
        }
        match glommio::io::BufferedFile::open(path).await {
            Ok(f) => *uring = Some((path.to_path_buf(), f)),
            Err(e) => tracing::warn!(error = %e, "cannot open the segment through glommio; flushing in the blocking pool"),
        }
    }
    uring.as_ref().map(|(_, f)| f)
}
