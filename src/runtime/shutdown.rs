//! Graceful shutdown: SIGINT/SIGTERM set a process-wide flag (signal-hook, no
//! code runs in the handler), each core polls it on its timer — never on the
//! order path — and wakes its own tasks through a [`LocalShutdown`].
//!
//! Sequence: the flag is seen -> the core stops accepting and tells its
//! connections -> each connection finishes the frames it has read, writes
//! their replies and closes -> when every core has no connection left (a
//! process-wide countdown, again polled on the timer) the cores stop serving
//! forwarded requests and exit.
//!
//! Before every core's timer runs (the log's replay, the executors'
//! start) no core can see the flag: a watch thread ([`watch`]) does, and
//! stops the process at once. The log is crash-safe at every point of a
//! start (the crash tests kill it there), so the next start simply begins
//! again. Once the cores run, the watch gives a core [`STUCK_AFTER`] to
//! take the signal; a core that does not (an executor that parked with
//! work pending) is reported and the process exits without the drain.
//! Acknowledged changes are in the log's shared mappings either way: a
//! process exit loses none of them.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the watch thread looks at the flag.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// How long a running core may take to see the flag before the watch
/// stops the process without it.
pub const STUCK_AFTER: Duration = Duration::from_secs(2);

/// The process-wide shutdown state shared by every core.
#[derive(Debug)]
pub struct ShutdownFlag {
    requested: Arc<AtomicBool>,
    /// Cores that still have open connections (or have not yet drained).
    cores_busy: AtomicUsize,
    /// Cores whose timer runs (it polls the flag from then on).
    cores_started: AtomicUsize,
    /// Cores that saw the flag and began to stop.
    cores_stopping: AtomicUsize,
    cores: usize,
}

impl ShutdownFlag {
    /// A flag set by SIGINT and SIGTERM, for `cores` cores.
    pub fn install(cores: usize) -> std::io::Result<Arc<ShutdownFlag>> {
        let requested = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&requested))?;
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&requested))?;
        Ok(Arc::new(ShutdownFlag {
            requested,
            cores_busy: AtomicUsize::new(cores),
            cores_started: AtomicUsize::new(0),
            cores_stopping: AtomicUsize::new(0),
            cores,
        }))
    }

    /// Called once by each core when its timer runs.
    pub fn core_started(&self) {
        self.cores_started.fetch_add(1, Ordering::AcqRel);
    }

    /// Called once by each core when it sees the flag.
    pub fn core_stopping(&self) {
        self.cores_stopping.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a signal asked the server to stop.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Called once by each core when it has no connection left.
    pub fn core_drained(&self) {
        self.cores_busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether every core has drained, so no forwarded request can arrive.
    pub fn all_drained(&self) -> bool {
        self.cores_busy.load(Ordering::Acquire) == 0
    }
}

/// Starts the watch thread (see the module docs): it stops the process on
/// SIGINT/SIGTERM while the server starts, and when a running core does not
/// take the signal within [`STUCK_AFTER`].
///
/// # Errors
/// The thread cannot be started.
pub fn watch(flag: &Arc<ShutdownFlag>) -> std::io::Result<()> {
    let flag = Arc::clone(flag);
    std::thread::Builder::new().name("orderd-signal-watch".into()).spawn(move || {
        while !flag.requested() {
            std::thread::sleep(WATCH_EVERY);
        }
        let started = flag.cores_started.load(Ordering::Acquire);
        if started < flag.cores {
            tracing::warn!(cores_started = started, cores = flag.cores, "stop signal during the start (log replay or executors starting): stopping now; the log is crash-safe, the next start replays it");
            std::process::exit(0);
        }
        let seen = Instant::now();
        while flag.cores_stopping.load(Ordering::Acquire) < flag.cores {
            if seen.elapsed() >= STUCK_AFTER {
                let stopping = flag.cores_stopping.load(Ordering::Acquire);
                tracing::error!(
                    cores_stopping = stopping,
                    cores = flag.cores,
                    "a core did not take the stop signal within {} s (its executor is stuck): exiting without draining connections; every acknowledged change is in the log",
                    STUCK_AFTER.as_secs()
                );
                std::process::exit(1);
            }
            std::thread::sleep(WATCH_EVERY);
        }
    })?;
    Ok(())
}

#[derive(Default)]
struct LocalState {
    triggered: bool,
    /// Waiters' wakers by slot; a dropped waiter frees its slot, so a
    /// long-running core does not collect the wakers of closed connections.
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

/// A core-local, single-threaded shutdown notice its tasks can await.
#[derive(Clone, Default)]
pub struct LocalShutdown(Rc<RefCell<LocalState>>);

impl LocalShutdown {
    /// Tell every waiter.
    pub fn trigger(&self) {
        let wakers = {
            let mut s = self.0.borrow_mut();
            s.triggered = true;
            std::mem::take(&mut s.wakers)
        };
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.borrow().triggered
    }

    /// Completes once triggered.
    pub fn wait(&self) -> Wait {
        Wait { shutdown: self.clone(), slot: None }
    }
}

/// The future of [`LocalShutdown::wait`].
pub struct Wait {
    shutdown: LocalShutdown,
    slot: Option<usize>,
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shutdown = self.shutdown.clone();
        let mut s = shutdown.0.borrow_mut();
        if s.triggered {
            return Poll::Ready(());
        }
        match self.slot {
            Some(slot) if slot < s.wakers.len() => s.wakers[slot] = Some(cx.waker().clone()),
            _ => {
                let slot = match s.free.pop() {
                    Some(slot) => {
                        s.wakers[slot] = Some(cx.waker().clone());
                        slot
                    }
                    None => {
                        s.wakers.push(Some(cx.waker().clone()));
                        s.wakers.len() - 1
                    }
                };
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut s = self.shutdown.0.borrow_mut();
            if !s.triggered && slot < s.wakers.len() {
                s.wakers[slot] = None;
                s.free.push(slot);
            }
        }
    }
}
