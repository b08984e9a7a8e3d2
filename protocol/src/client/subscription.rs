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
    conn: Option<Connection>,
    cursor: Cursor,
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
        let mut sub = Subscription { seed, config, conn: None, cursor: Cursor::new(options) };
        sub.subscribe()?;
        Ok(sub)
    }

    /// For each core, the offset of the next event this subscription will
    /// hand out: the position to resume from.
    #[must_use]
    pub fn positions(&self) -> &[u64] {
        &self.cursor.positions
    }

    /// Times the subscription reconnected and resumed.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.cursor.reconnects
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
            if let Some(event) = self.cursor.hand_out() {
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

    /// Reads one frame into the cursor.
    fn receive(&mut self, wait: Duration) -> Result<()> {
        let addr = self.seed;
        let conn = self.conn.as_mut().ok_or(ClientError::Closed { addr })?;
        conn.set_read_timeout(wait)?;
        let frame = conn.recv()?;
        self.cursor.take(frame, conn.addr())
    }

    /// Reconnects and subscribes from the saved positions, for up to
    /// `reconnect_for` after `cause`.
    fn resume(&mut self, cause: ClientError) -> Result<()> {
        self.conn = None;
        let mut backoff = Backoff::new(&self.config, &self.cursor.options, cause);
        while let Some(pause) = backoff.next_pause() {
            std::thread::sleep(pause);
            match self.subscribe() {
                Ok(()) => {
                    self.cursor.reconnects += 1;
                    return Ok(());
                }
                Err(e) if e.is_transport() => backoff.failed(e),
                Err(e) => return Err(e),
            }
        }
        Err(backoff.exhausted())
    }

    /// Connects and sends the Subscribe: from the options' start the first
    /// time, from the saved positions after that.
    fn subscribe(&mut self) -> Result<()> {
        let mut conn = Connection::connect(self.seed, &self.config)?;
        let correlation = conn.send(std::slice::from_ref(&self.cursor.request()))?;
        // Events may follow the reply at once; they wait in the buffer.
        loop {
            match conn.recv()? {
                ServerFrame::Replies(c, replies) if c == correlation => {
                    self.cursor.subscribed(replies, correlation, conn.addr())?;
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

/// A subscription's state whatever its I/O (blocking [`Subscription`] or
/// the tokio `AsyncSubscription`): where it is, what it received and has not
/// handed out, and which frame the current subscription answers.
pub(super) struct Cursor {
    pub(super) options: SubscribeOptions,
    /// The correlation of the current subscription's frame.
    correlation: u64,
    /// Per core, the offset after the last event handed out.
    pub(super) positions: Vec<u64>,
    /// Events received and not yet handed out.
    pending: VecDeque<StreamEvent>,
    /// Times the subscription reconnected and resumed.
    pub(super) reconnects: u64,
}

impl Cursor {
    pub(super) fn new(options: SubscribeOptions) -> Cursor {
        Cursor { options, correlation: 0, positions: Vec::new(), pending: VecDeque::new(), reconnects: 0 }
    }

    /// The next event received, moving the position past it.
    pub(super) fn hand_out(&mut self) -> Option<StreamEvent> {
        let event = self.pending.pop_front()?;
        if let Some(p) = self.positions.get_mut(usize::from(event.core)) {
            *p = (*p).max(event.offset + 1);
        }
        Some(event)
    }

    /// The Subscribe to send: from the options' start the first time, from
    /// the position reached on every reconnect.
    pub(super) fn request(&self) -> Request {
        let start = if self.positions.is_empty() { self.options.start.clone() } else { StreamStart::Positions(self.positions.clone()) };
        Request::Subscribe(Subscribe { start, product: self.options.product, kinds: self.options.kinds })
    }

    /// Takes the reply to the Subscribe sent as `correlation`: the first
    /// time it sets where the stream starts; on a resume the server must
    /// start exactly at the position reached.
    pub(super) fn subscribed(&mut self, replies: Vec<Reply>, correlation: u64, addr: SocketAddr) -> Result<()> {
        match replies.into_iter().next() {
            Some(Reply::Subscribed(s)) => {
                if self.positions.is_empty() {
                    self.positions = s.positions;
                } else if s.positions != self.positions {
                    return Err(ClientError::Protocol {
                        addr,
                        what: format!("resumed at {:?}, asked for {:?}", s.positions, self.positions),
                    });
                }
            }
            Some(Reply::Rejected(r)) => return Err(ClientError::Rejected(r)),
            other => return Err(ClientError::UnexpectedReply { expected: "Subscribed", got: format!("{other:?}") }),
        }
        self.correlation = correlation;
        self.pending.clear();
        Ok(())
    }

    /// Takes a frame read from the subscription's connection: its events
    /// past the position are queued (a server never repeats one, but a
    /// client must not hand one out twice either way).
    pub(super) fn take(&mut self, frame: ServerFrame, addr: SocketAddr) -> Result<()> {
        match frame {
            ServerFrame::Events(c, events) if c == self.correlation => {
                let positions = &self.positions;
                self.pending.extend(events.into_iter().filter(|e| positions.get(usize::from(e.core)).is_none_or(|&p| e.offset >= p)));
                Ok(())
            }
            ServerFrame::Error(_, e) => Err(ClientError::Refused { addr, code: e.code, detail: e.detail }),
            ServerFrame::Events(..) | ServerFrame::Replies(..) => Ok(()),
            ServerFrame::Welcome(_) => Err(ClientError::Protocol { addr, what: "a second Welcome".into() }),
        }
    }
}

/// The pauses between reconnect attempts: doubling from the client's retry
/// backoff (at least 10 ms) up to a second, for up to
/// [`SubscribeOptions::reconnect_for`].
pub(super) struct Backoff {
    started: Instant,
    limit: Duration,
    pause: Duration,
    attempts: u32,
    last: ClientError,
}

impl Backoff {
    /// Reconnecting after `cause`.
    pub(super) fn new(config: &ClientConfig, options: &SubscribeOptions, cause: ClientError) -> Backoff {
        let pause = config.retry_backoff.max(Duration::from_millis(10));
        Backoff { started: Instant::now(), limit: options.reconnect_for, pause, attempts: 0, last: cause }
    }

    /// The pause before the next attempt, or `None` once time is up.
    pub(super) fn next_pause(&mut self) -> Option<Duration> {
        if self.started.elapsed() >= self.limit {
            return None;
        }
        let pause = self.pause;
        self.pause = (pause * 2).min(Duration::from_secs(1));
        self.attempts += 1;
        Some(pause)
    }

    /// An attempt failed with `e`.
    pub(super) fn failed(&mut self, e: ClientError) {
        self.last = e;
    }

    /// The error once time is up.
    pub(super) fn exhausted(self) -> ClientError {
        ClientError::RetriesExhausted { attempts: self.attempts, last: Box::new(self.last) }
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
