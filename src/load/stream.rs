//! `--subscribe`, `--stalled-subscribers` and `--readers`: the order
//! stream during a load run.
//!
//! A [`Watcher`] is one subscriber, from `now`, on a thread of its own,
//! counting the events it receives; after the load it drains what the log
//! still holds and reports events/s and how long the stream trailed the
//! load. [`Stalled`] subscribers subscribe from the beginning and never
//! read: the server must hold them without slowing the order path or
//! growing its memory. [`Readers`] are many subscribers on every core that
//! read as fast as the server sends (from the beginning: consumers catching
//! up; from now: caught-up ones), on threads at the lowest priority so they
//! take only the CPU the load leaves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
        let addr = resolve(server)?;
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = Connection::connect(addr, config)?;
            conn.send(&[Request::Subscribe(Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 })])?;
            all.push(conn);
        }
        Ok(Stalled(all))
    }
}

/// What `--readers` delivered during the load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadersReport {
    /// Subscribers per server core.
    pub per_core: usize,
    /// Where they started: `beginning` or `now`.
    pub from: String,
    /// Their product filter (`0`: every event).
    pub product: u64,
    /// Events they received, all together, while the load ran.
    pub events: u64,
    /// `events` over the load's duration.
    pub events_per_s: f64,
}

/// `--readers`: subscribers on every core counting what they receive.
pub struct Readers {
    per_core: usize,
    from: StreamStart,
    product: u64,
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Result<(), ClientError>>>,
    /// Events counted when the load started, and when.
    mark: Option<(u64, Instant)>,
}

impl Readers {
    /// `per_core` subscriptions on each core of `server`, from `from`,
    /// filtered to `product` (`0`: all), each read on its own thread.
    ///
    /// # Errors
    /// A connection or a subscribe request failed.
    pub fn start(server: &str, config: &ClientConfig, per_core: usize, from: StreamStart, product: u64) -> Result<Readers, ClientError> {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicU64::new(0));
        let mut readers = Readers { per_core, from: from.clone(), product, stop, events, threads: Vec::new(), mark: None };
        if per_core == 0 {
            return Ok(readers);
        }
        let seed = Connection::connect(resolve(server)?, config)?;
        let map = orderd_protocol::client::ShardMap::from_welcome(seed.welcome());
        for core in 0..map.core_count() as u16 {
            let addr = map.addr_of(core, seed.addr()).ok_or_else(|| ClientError::Protocol {
                addr: seed.addr(),
                what: format!("the server announced no address for core {core}"),
            })?;
            for _ in 0..per_core {
                let options = SubscribeOptions { start: from.clone(), product, ..SubscribeOptions::default() };
                let mut sub = Subscription::connect(addr, config.clone(), options)?;
                let (stop, events) = (Arc::clone(&readers.stop), Arc::clone(&readers.events));
                let thread = std::thread::Builder::new()
                    .name("load-reader".into())
                    .spawn(move || {
                        lowest_priority();
                        while !stop.load(Ordering::Relaxed) {
                            if sub.next_event(Duration::from_millis(100))?.is_some() {
                                events.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(())
                    })
                    .map_err(|e| ClientError::Protocol { addr, what: format!("cannot start a reader thread: {e}") })?;
                readers.threads.push(thread);
            }
        }
        Ok(readers)
    }

    /// The load starts now.
    pub fn load_started(&mut self) {
        self.mark = Some((self.events.load(Ordering::Relaxed), Instant::now()));
    }

    /// The load ended: what the readers received meanwhile. Stops them.
    ///
    /// # Errors
    /// A reader's stream failed.
    pub fn finish(self) -> Result<Option<ReadersReport>, ClientError> {
        let end = (self.events.load(Ordering::Relaxed), Instant::now());
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| ClientError::Protocol { addr: ([127, 0, 0, 1], 0).into(), what: "a reader thread panicked".into() })??;
        }
        if self.per_core == 0 {
            return Ok(None);
        }
        let (start_events, start) = self.mark.unwrap_or(end);
        let events = end.0.saturating_sub(start_events);
        let secs = end.1.saturating_duration_since(start).as_secs_f64();
        let from = match self.from {
            StreamStart::Beginning => "beginning".to_owned(),
            StreamStart::Now => "now".to_owned(),
            StreamStart::Positions(_) => "positions".to_owned(),
        };
        Ok(Some(ReadersReport {
            per_core: self.per_core,
            from,
            product: self.product,
            events,
            events_per_s: if secs > 0.0 { events as f64 / secs } else { 0.0 },
        }))
    }
}

/// Puts the calling thread at nice 19: readers take the CPU the load leaves.
fn lowest_priority() {
    // SAFETY: setpriority only reads its integer arguments; `who` 0 with
    // PRIO_PROCESS names the calling thread on Linux.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

fn resolve(server: &str) -> Result<std::net::SocketAddr, ClientError> {
    std::net::ToSocketAddrs::to_socket_addrs(server)
        .map_err(|e| ClientError::Resolve { given: server.to_owned(), detail: e.to_string() })?
        .next()
        .ok_or(ClientError::Resolve { given: server.to_owned(), detail: "no address".into() })
}
