//! [`StreamBudget`]: the share of its core the order stream may take while
//! orders are waiting (`--stream-share`), enforced in turns.
//!
//! glommio's task-queue shares alone do not bound the stream. A queue that
//! goes idle and wakes again (the order path, between a client's round
//! trips) re-enters the scheduler with the virtual runtime of the queue
//! that ran meanwhile, plus one, and a running queue keeps the core until
//! the next preemption point (100 ms by default): a stream that always has
//! work (a subscriber catching up) is picked first and runs a whole slice
//! before every order wake-up. Measured on the 2-core VM, eight
//! catching-up subscribers took half the core that way (`benches/README.md`,
//! "The order stream must not starve the order path").
//!
//! So stream work runs in **turns**, and the order path decides when the
//! next turn starts. Every unit of stream work (one Events frame: read,
//! filter, encode, send) passes [`StreamBudget::admit`], and the time of
//! every poll of a stream task is charged ([`StreamBudget::charge`]). When a turn has used [`TURN`], the
//! gate closes (every stream task waits, not runnable) and a pacer task is
//! queued **in the order path's task queue**, behind every order task that
//! is runnable then. When it runs:
//! - if the order path answered requests since the turn ended (orders are
//!   waiting), it keeps the gate closed for `turn × (1 − share) / share`,
//!   so the stream's time stays within `share` of the core's while orders
//!   run;
//! - if not (no orders), it opens the gate at once: with no orders the
//!   stream runs at full speed, one scheduler round between turns.
//!
//! The time is measured around every poll of a subscribed connection's
//! task ([`Charged`], two clock reads per poll), so it is the core time the
//! stream takes: reading the log, decoding, filtering, encoding, and the
//! socket sends (glommio sends with a direct system call inside the poll,
//! and on loopback that includes the receiver's side); time spent waiting
//! is not in it. The metrics expose it per core
//! (`orderd_stream_busy_seconds_total`, `orderd_stream_paused_seconds_total`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::TaskQueueHandle;

/// Stream time per turn: also the longest the order path waits behind the
/// stream (plus one unit in flight).
pub const TURN: Duration = Duration::from_millis(1);

/// The gap between turns when no orders ran: one timer, so the executor
/// polls its I/O (and runs any order it brings) before the next turn.
const MIN_GAP: Duration = Duration::from_micros(1);

/// What the budget has measured, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTime {
    /// Time spent on stream units, µs.
    pub busy_us: u64,
    /// Time the gate was closed to keep the stream within its share, µs.
    pub paused_us: u64,
    /// Turns that ended with a pause.
    pub pauses: u64,
}

/// The gate every unit of stream work on one core passes.
pub struct StreamBudget {
    /// The stream's share of the core while orders run, in (0, 1].
    share: f64,
    /// The order path's task queue, where the pacer runs.
    orders_queue: TaskQueueHandle,
    /// The order path's count of answered requests: whether orders ran.
    orders: Box<dyn Fn() -> u64>,
    /// What it measured: the core's own counters (`Core::stream_time`),
    /// which the metrics read.
    time: Rc<Cell<StreamTime>>,
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    closed: bool,
    /// Stream time of the current turn.
    used: Duration,
    /// The order path's answered-requests count when the last turn ended.
    orders_at_turn_end: u64,
    /// Pause the pacer still owes before it opens the gate.
    debt: Duration,
    /// Whether a pacer is running.
    pacing: bool,
    /// Stream tasks waiting for the gate to open.
    waiters: Vec<Waker>,
}

impl StreamBudget {
    /// A budget of `share_percent` (1-100) of the core while orders run.
    /// `orders_queue`: the task queue the order path's connections run in;
    /// `orders`: the order path's running count of answered requests;
    /// `time`: where it counts what it measures.
    #[must_use]
    pub fn new(
        share_percent: u8,
        orders_queue: TaskQueueHandle,
        orders: Box<dyn Fn() -> u64>,
        time: Rc<Cell<StreamTime>>,
    ) -> Rc<StreamBudget> {
        let share = f64::from(share_percent.clamp(1, 100)) / 100.0;
        Rc::new(StreamBudget { share, orders_queue, orders, time, state: RefCell::new(State::default()) })
    }

    fn count(&self, f: impl FnOnce(&mut StreamTime)) {
        let mut time = self.time.get();
        f(&mut time);
        self.time.set(time);
    }

    /// Resolves once stream work may run.
    pub fn admit(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut state = self.state.borrow_mut();
            if !state.closed {
                return Poll::Ready(());
            }
            if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }

    /// A unit of stream work took `spent`. Ends the turn once it used
    /// [`TURN`]: the gate closes, and a pacer on the order path's task
    /// queue opens it after a timer, so the executor polls its I/O and
    /// runs the order tasks it wakes before the next turn. Stream time
    /// charged while the gate is closed (tasks finishing a frame they began)
    /// lengthens the pause the pacer serves.
    pub fn charge(self: &Rc<Self>, spent: Duration) {
        {
            let mut state = self.state.borrow_mut();
            state.used += spent;
            self.count(|t| t.busy_us += spent.as_micros() as u64);
            if state.used < TURN || self.share >= 1.0 {
                return;
            }
            let used = std::mem::take(&mut state.used);
            let orders = (self.orders)();
            let orders_ran = orders != std::mem::replace(&mut state.orders_at_turn_end, orders);
            state.closed = true;
            let pause = self.pause_after(used, orders_ran);
            state.debt += pause;
            if state.pacing {
                return;
            }
            state.pacing = true;
        }
        let budget = Rc::clone(self);
        let pacer = async move {
            loop {
                let debt = std::mem::take(&mut budget.state.borrow_mut().debt);
                if debt.is_zero() {
                    break;
                }
                glommio::timer::sleep(debt).await;
            }
            budget.open();
        };
        match glommio::spawn_local_into(pacer, self.orders_queue) {
            Ok(task) => drop(task.detach()),
            // The queue is gone (the core is stopping): never leave the gate shut.
            Err(_) => self.open(),
        }
    }

    /// The gap before the next turn, after one that used `used`: the rest
    /// of the share's period if orders ran since the previous turn ended,
    /// else the shortest timer (one round of the executor's I/O).
    fn pause_after(&self, used: Duration, orders_ran: bool) -> Duration {
        if !orders_ran {
            return MIN_GAP;
        }
        let pause = used.mul_f64((1.0 - self.share) / self.share);
        self.count(|t| {
            t.paused_us += pause.as_micros() as u64;
            t.pauses += 1;
        });
        pause
    }

    fn open(&self) {
        let waiters = {
            let mut state = self.state.borrow_mut();
            state.closed = false;
            state.pacing = false;
            state.debt = Duration::ZERO;
            std::mem::take(&mut state.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// What the budget measured so far.
    #[must_use]
    pub fn time(&self) -> StreamTime {
        self.time.get()
    }
}

/// A stream task whose every poll is charged to its core's budget.
pub struct Charged<F> {
    inner: Pin<Box<F>>,
    budget: Rc<StreamBudget>,
}

impl<F: Future> Charged<F> {
    /// `task`, charged to `budget`.
    pub fn new(task: F, budget: Rc<StreamBudget>) -> Charged<F> {
        Charged { inner: Box::pin(task), budget }
    }
}

impl<F: Future> Future for Charged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let result = self.inner.as_mut().poll(cx);
        self.budget.charge(started.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(share: u8) -> Rc<StreamBudget> {
        StreamBudget::new(share, TaskQueueHandle::default(), Box::new(|| 0), Rc::default())
    }

    #[test]
    fn a_turn_while_orders_ran_pauses_for_the_rest_of_the_share() {
        let budget = budget(10);
        assert_eq!(budget.pause_after(TURN, false), MIN_GAP, "no orders ran: the stream goes on at full speed");
        // 10%: nine times the stream's time goes to the orders.
        assert_eq!(budget.pause_after(TURN * 2, true), (TURN * 2).mul_f64(9.0));
        assert_eq!((budget.time().pauses, budget.time().paused_us), (1, (TURN * 18).as_micros() as u64));
    }

    #[test]
    fn a_turn_not_used_up_keeps_the_gate_open() {
        let budget = budget(5);
        budget.charge(TURN / 2);
        assert!(!budget.state.borrow().closed);
        assert_eq!(budget.time().busy_us, (TURN / 2).as_micros() as u64);
    }

    #[test]
    fn a_whole_core_never_closes_the_gate() {
        let budget = budget(100);
        budget.charge(TURN * 4);
        assert!(!budget.state.borrow().closed);
    }
}
