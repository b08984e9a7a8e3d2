//! Graceful shutdown: SIGINT/SIGTERM set a process-wide flag (signal-hook, no
//! code runs in the handler), each core polls it on its timer — never on the
//! order path — and wakes its own tasks through a [`LocalShutdown`].
//!
//! Sequence: the flag is seen -> the core stops accepting and tells its
//! connections -> each connection finishes the frames it has read, writes
//! their replies and closes -> when every core has no connection left (a
//! process-wide countdown, again polled on the timer) the cores stop serving
//! forwarded requests and exit.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// The process-wide shutdown state shared by every core.
#[derive(Debug)]
pub struct ShutdownFlag {
    requested: Arc<AtomicBool>,
    /// Cores that still have open connections (or have not yet drained).
    cores_busy: AtomicUsize,
}

impl ShutdownFlag {
    /// A flag set by SIGINT and SIGTERM, for `cores` cores.
    pub fn install(cores: usize) -> std::io::Result<Arc<ShutdownFlag>> {
        let requested = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&requested))?;
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&requested))?;
        Ok(Arc::new(ShutdownFlag { requested, cores_busy: AtomicUsize::new(cores) }))
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
