//! [`DurableTicker`]: wakes a core's caught-up subscribers when any core's
//! durable point moves, one timer for all of them.
//!
//! A subscriber that has read everything durable waits in
//! [`DurableTicker::changed`]. While at least one waits, one task per core
//! looks at every core's durable point each [`TICK`] (the points are
//! atomics the flushers publish once per flush, `stream::DurablePoints`)
//! and, when one moved, wakes every waiting subscriber at once. So a core
//! with 64 caught-up subscribers takes one timer wake-up per tick, not 64,
//! and none at all while the logs do not grow; with no subscriber waiting
//! the task is not running.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::stream::DurablePoints;

/// How often the durable points are looked at while a subscriber waits:
/// the most a caught-up subscriber's events wait after their flush.
pub const TICK: Duration = Duration::from_millis(1);

/// One core's watcher of every core's durable point.
#[derive(Debug)]
pub struct DurableTicker {
    durable: Arc<DurablePoints>,
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped whenever a durable point moved.
    generation: u64,
    /// The points at the last look.
    last: Vec<u64>,
    waiters: Vec<Waker>,
    /// Whether the watching task runs.
    running: bool,
    /// Ticks that found a point moved.
    wakeups: u64,
}

impl DurableTicker {
    /// A ticker over `durable`.
    #[must_use]
    pub fn new(durable: Arc<DurablePoints>) -> Rc<DurableTicker> {
        let last = (0..durable.cores()).map(|c| durable.get(c)).collect();
        Rc::new(DurableTicker { durable, state: RefCell::new(State { last, ..State::default() }) })
    }

    /// The current generation: take it before reading, then wait with
    /// [`DurableTicker::changed`] so that a move during the read is not missed.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.state.borrow().generation
    }

    /// Ticks that found a durable point moved (one wake-up of all waiters each).
    #[must_use]
    pub fn wakeups(&self) -> u64 {
        self.state.borrow().wakeups
    }

    /// Resolves once a durable point moved after generation `seen`. Runs
    /// the watching task (in the caller's task queue) while anyone waits.
    pub fn changed(self: &Rc<Self>, seen: u64) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut state = self.state.borrow_mut();
            if state.generation > seen {
                return Poll::Ready(());
            }
            if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiters.push(cx.waker().clone());
            }
            if !state.running {
                state.running = true;
                glommio::spawn_local(Rc::clone(self).watch()).detach();
            }
            Poll::Pending
        })
    }

    /// Looks every tick while anyone waits.
    async fn watch(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(TICK).await;
            let waiters = {
                let mut state = self.state.borrow_mut();
                if state.waiters.is_empty() {
                    state.running = false;
                    return;
                }
                if !self.moved(&mut state) {
                    continue;
                }
                state.generation += 1;
                state.wakeups += 1;
                std::mem::take(&mut state.waiters)
            };
            waiters.into_iter().for_each(Waker::wake);
        }
    }

    /// Whether any point moved since the last look (and remembers them).
    fn moved(&self, state: &mut State) -> bool {
        let mut moved = false;
        for (core, last) in state.last.iter_mut().enumerate() {
            let now = self.durable.get(core);
            if now != *last {
                *last = now;
                moved = true;
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_point_is_seen_once() {
        let durable = Arc::new(DurablePoints::new(&[3, 4]));
        let ticker = DurableTicker::new(Arc::clone(&durable));
        let mut state = State { last: vec![3, 4], ..State::default() };
        assert!(!ticker.moved(&mut state));
        durable.publish(1, 9);
        assert!(ticker.moved(&mut state));
        assert!(!ticker.moved(&mut state), "remembered");
        assert_eq!(state.last, vec![3, 9]);
    }
}
