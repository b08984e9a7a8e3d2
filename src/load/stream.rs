//! `--subscribe` and `--stalled-subscribers`: the order stream during a
//! load run.
//!
//! A [`Watcher`] is one subscriber, from `now`, on a thread of its own,
//! counting the events it receives; after the load it drains what the log
//! still holds and reports events/s and how long the stream trailed the
//! load. [`Stalled`] subscribers subscribe from the beginning and never
//! read: the server must hold them without slowing the order path or
//! growing its memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderd_protocol::client::{ClientConfig, ClientError, Connection, SubscribeOptions, Subscription};
use orderd_protocol::message::{StreamStart, Subscribe};
use orderd_protocol::Request;
use serde::Serialize;

/// What the watching subscriber saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    /// Events received, from the subscription to the drain.
    pub events: u64,
    /// `events` over the time from the first to the last event.
    pub events_per_s: f64,
    /// From the end of the load to the last event received, ms: how far
    /// the stream trailed the orders.
    pub drain_ms: f64,
    /// Times the subscription reconnected.
    pub reconnects: u64,
}

/// Quiet time after the load that ends the drain.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// What the subscriber thread counted.
struct Counted {
    events: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    reconnects: u64,
}

/// One subscriber counting events on its own thread.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Counted, ClientError>>,
}

impl Watcher {
    /// Subscribes from now (before the load starts) and counts.
    ///
    /// # Errors
    /// The subscription was refused or could not connect.
    pub fn start(server: &str, config: ClientConfig) -> Result<Watcher, ClientError> {
        let options = SubscribeOptions { start: StreamStart::Now, ..SubscribeOptions::default() };
        let mut sub = Subscription::connect(server, config, options)?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("load-subscriber".into())
            .spawn(move || {
                let (mut events, mut first, mut last) = (0u64, None, None);
                loop {
                    match sub.next_event(Duration::from_millis(100))? {
                        Some(_) => {
                            let now = Instant::now();
                            events += 1;
                            first.get_or_insert(now);
                            last = Some(now);
                        }
                        None if done.load(Ordering::Relaxed) && last.is_none_or(|t: Instant| t.elapsed() >= DRAIN_IDLE) => break,
                        None => {}
                    }
                }
                Ok(Counted { events, first, last, reconnects: sub.reconnects() })
            })
            .map_err(|e| ClientError::Protocol {
                addr: ([127, 0, 0, 1], 0).into(),
                what: format!("cannot start the subscriber thread: {e}"),
            })?;
        Ok(Watcher { stop, thread })
    }

    /// The load ended at `load_end`: drain, stop, report.
    ///
    /// # Errors
    /// The stream failed.
    pub fn finish(self, load_end: Instant) -> Result<StreamReport, ClientError> {
        self.stop.store(true, Ordering::Relaxed);
        let Counted { events, first, last, reconnects } = self
            .thread
            .join()
            .map_err(|_| ClientError::Protocol { addr: ([127, 0, 0, 1], 0).into(), what: "the subscriber thread panicked".into() })??;
        let span = match (first, last) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Ok(StreamReport {
            events,
            events_per_s: if span > 0.0 { events as f64 / span } else { 0.0 },
            drain_ms: last.map_or(0.0, |t| t.saturating_duration_since(load_end).as_secs_f64() * 1e3),
            reconnects,
        })
    }
}

/// Subscribers that never read; dropped at the end of the run.
pub struct Stalled(#[allow(dead_code, reason = "held open, never read")] Vec<Connection>);

impl Stalled {
    /// `n` subscriptions from the beginning on `server`'s core 0 address.
    ///
    /// # Errors
    /// A connection or the subscribe request failed.
    pub fn start(server: &str, config: &ClientConfig, n: usize) -> Result<Stalled, ClientError> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(server)
            .map_err(|e| ClientError::Resolve { given: server.to_owned(), detail: e.to_string() })?
            .next()
            .ok_or(ClientError::Resolve { given: server.to_owned(), detail: "no address".into() })?;
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = Connection::connect(addr, config)?;
            conn.send(&[Request::Subscribe(Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 })])?;
            all.push(conn);
        }
        Ok(Stalled(all))
    }
}
