//! [`Subscription`]: the order stream as an iterator that remembers its
//! position and resumes by itself after a broken connection or a server
//! restart (PROTOCOL.md § 3, Events).
//!
//! The position is one offset per core: the offset after the last event
//! handed to the caller on that core. Reconnecting subscribes again from
//! exactly there, so the caller sees every event once, in log order per
//! core, whatever happens to the connection. Save [`Subscription::positions`]
//! (e.g. as [`format_positions`] text) to resume in another process.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::blocking::{resolve, Connection};
use super::error::{ClientError, Result};
use super::ClientConfig;
use crate::codec::ServerFrame;
use crate::message::{Reply, Request, StreamEvent, StreamStart, Subscribe};

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Where the stream starts the first time (later reconnects resume
    /// from the position reached).
    pub start: StreamStart,
    /// Only events of this product; `0` for all.
    pub product: u64,
    /// Bit `1 << kind` selects an [`EventKind`](crate::message::EventKind); `0` for all.
    pub kinds: u32,
    /// How long to keep trying to reconnect after the connection breaks
    /// (a server restart takes a few seconds) before giving up.
    pub reconnect_for: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions { start: StreamStart::Beginning, product: 0, kinds: 0, reconnect_for: Duration::from_secs(30) }
    }
}

/// A live subscription to the order stream. See the module docs.
///
/// ```no_run
/// use orderd_protocol::client::{ClientConfig, SubscribeOptions, Subscription};
///
/// # fn main() -> orderd_protocol::client::Result<()> {
/// let mut stream = Subscription::connect("127.0.0.1:7070", ClientConfig::default(), SubscribeOptions::default())?;
/// for event in stream.by_ref().take(10) {
///     let event = event?;
///     println!("core {} offset {}: {:?} order {}", event.core, event.offset, event.kind, event.order_id);
/// }
/// println!("resume from {}", orderd_protocol::client::format_positions(stream.positions()));
/// # Ok(())
/// # }
/// ```
pub struct Subscription {
    seed: SocketAddr,
    config: ClientConfig,
    options: SubscribeOptions,
    conn: Option<Connection>,
    /// The correlation of the current subscription's frame.
    correlation: u64,
    /// Per core, the offset after the last event handed out.
    positions: Vec<u64>,
    /// Events received and not yet handed out.
    pending: VecDeque<StreamEvent>,
    reconnects: u64,
}

impl Subscription {
    /// Connects to the server at `addr` (any core) and subscribes.
    ///
    /// # Errors
    /// A transport error, or the server's rejection (`position_unavailable`,
    /// `too_many_subscriptions`, `invalid_request` for a position list of
    /// the wrong length).
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug, config: ClientConfig, options: SubscribeOptions) -> Result<Subscription> {
        let seed = resolve(addr)?;
        let mut sub = Subscription {
            seed,
            config,
            options,
            conn: None,
            correlation: 0,
            positions: Vec::new(),
            pending: VecDeque::new(),
            reconnects: 0,
        };
        sub.subscribe()?;
        Ok(sub)
    }

    /// For each core, the offset of the next event this subscription will
    /// hand out: the position to resume from.
    #[must_use]
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }

    /// Times the subscription reconnected and resumed.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next event, waiting at most `wait` for one (`None` if none came).
    /// A broken connection is repaired (for up to
    /// [`SubscribeOptions::reconnect_for`]) without losing or repeating an
    /// event.
    ///
    /// # Errors
    /// The server refused the subscription or closed it with an error, or
    /// reconnecting failed for longer than `reconnect_for`.
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<StreamEvent>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(event) = self.pending.pop_front() {
                if let Some(p) = self.positions.get_mut(usize::from(event.core)) {
                    *p = (*p).max(event.offset + 1);
                }
                return Ok(Some(event));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.receive(left) {
                Ok(()) => {}
                Err(ClientError::Timeout { .. }) => return Ok(None),
                Err(e) if e.is_transport() => self.resume(e)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one frame into `pending`.
    fn receive(&mut self, wait: Duration) -> Result<()> {
        let addr = self.seed;
        let conn = self.conn.as_mut().ok_or(ClientError::Closed { addr })?;
        conn.set_read_timeout(wait)?;
        match conn.recv()? {
            ServerFrame::Events(c, events) if c == self.correlation => {
                // Only events past the position: a server never repeats one,
                // but a client must not hand one out twice either way.
                let positions = &self.positions;
                self.pending.extend(events.into_iter().filter(|e| positions.get(usize::from(e.core)).is_none_or(|&p| e.offset >= p)));
                Ok(())
            }
            ServerFrame::Error(_, e) => Err(ClientError::Refused { addr: conn.addr(), code: e.code, detail: e.detail }),
            ServerFrame::Events(..) | ServerFrame::Replies(..) => Ok(()),
            ServerFrame::Welcome(_) => Err(ClientError::Protocol { addr: conn.addr(), what: "a second Welcome".into() }),
        }
    }

    /// Reconnects and subscribes from the saved positions, for up to
    /// `reconnect_for` after `cause`.
    fn resume(&mut self, cause: ClientError) -> Result<()> {
        self.conn = None;
        let started = Instant::now();
        let mut pause = self.config.retry_backoff.max(Duration::from_millis(10));
        let mut last = cause;
        let mut attempts = 0;
        while started.elapsed() < self.options.reconnect_for {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
            attempts += 1;
            match self.subscribe() {
                Ok(()) => {
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(e) if e.is_transport() => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::RetriesExhausted { attempts, last: Box::new(last) })
    }

    /// Connects and sends the Subscribe: from the options' start the first
    /// time, from the saved positions after that.
    fn subscribe(&mut self) -> Result<()> {
        let mut conn = Connection::connect(self.seed, &self.config)?;
        let start = if self.positions.is_empty() { self.options.start.clone() } else { StreamStart::Positions(self.positions.clone()) };
        let request = Request::Subscribe(Subscribe { start, product: self.options.product, kinds: self.options.kinds });
        let correlation = conn.send(std::slice::from_ref(&request))?;
        // Events may follow the reply at once; they wait in the buffer.
        loop {
            match conn.recv()? {
                ServerFrame::Replies(c, replies) if c == correlation => {
                    match replies.into_iter().next() {
                        Some(Reply::Subscribed(s)) => {
                            if self.positions.is_empty() {
                                self.positions = s.positions;
                            } else if s.positions != self.positions {
                                return Err(ClientError::Protocol {
                                    addr: conn.addr(),
                                    what: format!("resumed at {:?}, asked for {:?}", s.positions, self.positions),
                                });
                            }
                        }
                        Some(Reply::Rejected(r)) => return Err(ClientError::Rejected(r)),
                        other => return Err(ClientError::UnexpectedReply { expected: "Subscribed", got: format!("{other:?}") }),
                    }
                    self.correlation = correlation;
                    self.pending.clear();
                    self.conn = Some(conn);
                    return Ok(());
                }
                ServerFrame::Error(_, e) => return Err(ClientError::Refused { addr: conn.addr(), code: e.code, detail: e.detail }),
                _ => {}
            }
        }
    }
}

impl Iterator for Subscription {
    type Item = Result<StreamEvent>;

    /// Blocks until the next event (or an error the subscription cannot
    /// repair).
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_event(Duration::from_secs(3600)) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A position as text: the offsets of every core, comma separated
/// (`"1200,1187"`), as `orderd tail` prints and reads it.
#[must_use]
pub fn format_positions(positions: &[u64]) -> String {
    positions.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Parses [`format_positions`] text; `None` if it is not a comma-separated
/// list of offsets.
#[must_use]
pub fn parse_positions(text: &str) -> Option<Vec<u64>> {
    let list: Option<Vec<u64>> = text.split(',').map(|p| p.trim().parse().ok()).collect();
    list.filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_as_text() {
        assert_eq!(format_positions(&[12, 0, 7]), "12,0,7");
        assert_eq!(parse_positions("12, 0,7"), Some(vec![12, 0, 7]));
        assert_eq!(parse_positions(""), None);
        assert_eq!(parse_positions("1,x"), None);
    }
}
