//! One generator thread: one shard-aware [`Client`], `P` frames of up to
//! `B` requests in flight, every reply classified into a [`Tally`].
//!
//! - **Closed loop**: as soon as a frame's replies are in, the next frame
//!   is sent; latency runs from the moment a frame is submitted to the
//!   moment its replies are read.
//! - **Open loop** (`--rate`): request `k` of thread `t` has the intended
//!   send time `start + (k + t / C) / (R / C)`, so the C threads together
//!   offer `R` requests per second evenly spaced. A frame is due when `B`
//!   requests are due, or when the oldest due request has waited the
//!   linger (`--linger-us`, 0 by default: a frame is due as soon as one
//!   request is). Whenever a frame is due (and fewer than `P` frames are in
//!   flight) the requests due are sent together, up to `B` per frame;
//!   otherwise the thread reads the oldest frame's replies until the next
//!   frame is due (never past it while the pipeline has room, so a slow
//!   reply does not delay a send) or sleeps until then. Latency runs from
//!   each request's *intended* time, so a server (or generator) that falls
//!   behind is charged for the queueing it causes instead of silently
//!   sending later (coordinated omission), and so is the linger. How late
//!   frames left after they were due is recorded apart as the send lag.
//!
//! A failure the SDK could not recover from (after its own reconnects and
//! idempotent resends) stops the thread: the requests it had in flight are
//! counted as of unknown outcome, which the accounting check allows for.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd_protocol::client::{Client, ClientError, Ticket, Waited};
use orderd_protocol::Request;

use super::draw::{Drawer, Slot};
use super::tally::{micros, Tally};

/// Below this much time left, waiting threads spin instead of sleeping
/// (a sleep may overshoot by tens of µs, which would be charged as latency).
pub const SPIN: Duration = Duration::from_micros(100);

/// When a thread stops issuing requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// After this many requests (this thread's share).
    Requests(u64),
    /// Closed loop: no frame is sent after this instant. Open loop: no
    /// request is intended at or after it.
    Until(Instant),
}

/// What one thread does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The thread's index (`0..C`).
    pub index: usize,
    /// Its budget.
    pub budget: Budget,
    /// Frames in flight.
    pub pipeline: usize,
    /// Requests per frame (at most).
    pub batch: usize,
    /// Open loop: time between this thread's intended sends, and the
    /// offset of its first one in units of that interval (`t / C`).
    pub open: Option<(Duration, f64)>,
    /// Open loop: how long due requests may wait for their frame to fill.
    pub linger: Duration,
    /// When the run starts (every thread waits for it).
    pub start: Instant,
    /// The CPU to pin the thread to.
    pub cpu: Option<usize>,
    /// Replies received, all threads together (for the progress bar).
    pub progress: Arc<AtomicU64>,
    /// `--slow-log`: the latency above which a request is noted, µs.
    pub slow_us: Option<u64>,
}

/// A frame in flight: its ticket, and each request with the instant its
/// latency runs from.
struct Frame {
    ticket: Ticket,
    slots: Vec<(Slot, Instant)>,
}

/// One thread's run.
struct Worker {
    plan: Plan,
    client: Client,
    drawer: Drawer,
    tally: Tally,
    in_flight: VecDeque<Frame>,
    /// Intended sends so far (open loop) or requests sent (closed loop).
    issued: u64,
    /// Time spent spinning for an intended send time (CPU time, not work).
    spun: Duration,
}

/// Run `plan` through `client`, drawing requests from `drawer`; returns
/// what was seen.
#[must_use]
pub fn run(plan: Plan, client: Client, drawer: Drawer, tally: Tally) -> Tally {
    if let Some(cpu) = plan.cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            let mut tally = tally;
            tally.errors.push(format!("thread {}: cannot pin to CPU {cpu}", plan.index));
            return tally;
        }
    }
    let capacity = plan.pipeline;
    let mut w = Worker { plan, client, drawer, tally, in_flight: VecDeque::with_capacity(capacity), issued: 0, spun: Duration::ZERO };
    sleep_until(w.plan.start);
    let cpu_at_start = thread_cpu_time();
    let outcome = match w.plan.open {
        Some((interval, phase)) => w.open(interval, phase),
        None => w.closed(),
    };
    if let Err(e) = outcome {
        w.fail(&e);
    }
    let left = w.drawer.take_left();
    w.tally.left.extend(left);
    w.tally.busy = thread_cpu_time().saturating_sub(cpu_at_start).saturating_sub(w.spun);
    w.tally
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes one `timespec` into `ts`, a valid,
    // exclusively borrowed local; it reads no other memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

impl Worker {
    fn closed(&mut self) -> Result<(), ClientError> {
        loop {
            while self.in_flight.len() < self.plan.pipeline {
                let n = match self.plan.budget {
                    Budget::Requests(total) => total.saturating_sub(self.issued).min(self.plan.batch as u64),
                    Budget::Until(end) if Instant::now() < end => self.plan.batch as u64,
                    Budget::Until(_) => 0,
                };
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                let slots = (0..n).map(|_| (self.drawer.next_slot(), now)).collect();
                self.issued += n;
                self.submit(slots)?;
            }
            if !self.collect_oldest()? {
                return Ok(());
            }
        }
    }

    fn open(&mut self, interval: Duration, phase: f64) -> Result<(), ClientError> {
        let (start, step, budget) = (self.plan.start, interval.as_secs_f64(), self.plan.budget);
        let (linger, batch) = (self.plan.linger, self.plan.batch as u64);
        let intended = |k: u64| start + Duration::from_secs_f64((k as f64 + phase) * step);
        let more = |k: u64| match budget {
            Budget::Requests(total) => k < total,
            Budget::Until(end) => intended(k) < end,
        };
        // The frame whose first request is `k` is due when it is full or
        // when `k` has lingered long enough, whichever comes first (a frame
        // the budget's end leaves short waits out the linger).
        let due = |k: u64| {
            let lingered = intended(k) + linger;
            let last = k + batch.max(1) - 1;
            if linger.is_zero() || !more(last) {
                lingered
            } else {
                lingered.min(intended(last))
            }
        };
        loop {
            let mut now = Instant::now();
            while self.in_flight.len() < self.plan.pipeline && more(self.issued) && due(self.issued) <= now {
                let frame_due = due(self.issued);
                let mut slots = Vec::with_capacity(self.plan.batch);
                while slots.len() < self.plan.batch && more(self.issued) && intended(self.issued) <= now {
                    slots.push((self.drawer.next_slot(), intended(self.issued)));
                    self.issued += 1;
                }
                self.tally.send_lag_us.saturating_record(micros(now.saturating_duration_since(frame_due)));
                for (_, intended) in &slots {
                    self.tally.send_delay_us.saturating_record(micros(now.saturating_duration_since(*intended)));
                }
                self.submit(slots)?;
                now = Instant::now();
            }
            if self.in_flight.is_empty() {
                if !more(self.issued) {
                    return Ok(());
                }
                self.spun += sleep_until(due(self.issued));
            } else if self.in_flight.len() < self.plan.pipeline && more(self.issued) {
                // Read replies only until the next frame is due, so that
                // waiting for a slow reply never delays a send.
                self.collect_oldest_until(due(self.issued))?;
            } else {
                self.collect_oldest()?;
            }
        }
    }

    /// Read the oldest frame's replies if they are in by `deadline` (the
    /// next intended send); otherwise leave it in flight.
    fn collect_oldest_until(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let Some(frame) = self.in_flight.pop_front() else { return Ok(()) };
        match self.client.wait_until(frame.ticket, deadline) {
            Ok(Waited::Ready(replies)) => {
                self.file(&frame.slots, &replies);
                Ok(())
            }
            Ok(Waited::Pending(ticket)) => {
                self.in_flight.push_front(Frame { ticket, slots: frame.slots });
                Ok(())
            }
            Err(e) => {
                for (slot, _) in &frame.slots {
                    self.tally.unknown(slot);
                }
                Err(e)
            }
        }
    }

    fn submit(&mut self, slots: Vec<(Slot, Instant)>) -> Result<(), ClientError> {
        let requests: Vec<Request> = slots.iter().map(|(s, _)| s.request()).collect();
        match self.client.submit(&requests) {
            Ok(ticket) => {
                self.in_flight.push_back(Frame { ticket, slots });
                Ok(())
            }
            Err(e) => {
                for (slot, _) in &slots {
                    self.tally.unknown(slot);
                }
                Err(e)
            }
        }
    }

    /// Read the oldest frame's replies into the tally; `false` if none was in flight.
    fn collect_oldest(&mut self) -> Result<bool, ClientError> {
        let Some(frame) = self.in_flight.pop_front() else { return Ok(false) };
        let replies = match self.client.wait(frame.ticket) {
            Ok(r) => r,
            Err(e) => {
                for (slot, _) in &frame.slots {
                    self.tally.unknown(slot);
                }
                return Err(e);
            }
        };
        self.file(&frame.slots, &replies);
        Ok(true)
    }

    /// Record a frame's replies, now.
    fn file(&mut self, slots: &[(Slot, Instant)], replies: &[orderd_protocol::Reply]) {
        let now = Instant::now();
        self.plan.progress.fetch_add(replies.len() as u64, Ordering::Relaxed);
        let answered = replies.len();
        for ((slot, since), reply) in slots.iter().zip(replies) {
            let latency = now.saturating_duration_since(*since);
            if let Some(threshold) = self.plan.slow_us {
                if micros(latency) > threshold {
                    self.tally.slow(micros(since.saturating_duration_since(self.plan.start)), micros(latency));
                }
            }
            self.tally.record(slot, reply, latency, &mut self.drawer);
        }
        if answered < slots.len() {
            for (slot, _) in slots.iter().skip(answered) {
                self.tally.unknown(slot);
            }
            let what = format!("thread {}: {answered} replies for {} requests", self.plan.index, slots.len());
            self.tally.errors.push(what);
        }
    }

    /// Stop after `e`: whatever is still in flight has an unknown outcome.
    fn fail(&mut self, e: &ClientError) {
        self.tally.errors.push(format!("thread {}: {e}", self.plan.index));
        for frame in self.in_flight.drain(..) {
            for (slot, _) in &frame.slots {
                self.tally.unknown(slot);
            }
        }
    }
}

/// Sleep until `t`, spinning for the last [`SPIN`]; returns the time spent
/// spinning.
pub fn sleep_until(t: Instant) -> Duration {
    let mut spinning_since = None;
    loop {
        let now = Instant::now();
        if now >= t {
            return spinning_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        }
        let left = t - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            spinning_since.get_or_insert(now);
            std::hint::spin_loop();
        }
    }
}
