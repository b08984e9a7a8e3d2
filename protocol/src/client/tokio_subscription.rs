//! [`AsyncSubscription`]: the order stream on tokio (cargo feature `tokio`),
//! with the guarantees of the blocking [`Subscription`](super::Subscription):
//! it remembers its position (one offset per core, past the last event
//! handed out) and, after a broken connection or a server restart,
//! subscribes again from exactly there, so every event arrives once, in log
//! order per core. [`AsyncSubscription::into_stream`] makes it a
//! `futures_core::Stream` for `StreamExt` combinators (futures, tokio-stream).
//!
//! The state (position, received events, the Subscribe and the check of
//! its reply, the de-duplication) and the reconnect pauses are the blocking
//! subscription's own `Cursor` and `Backoff`; only the I/O differs.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::error::{ClientError, Result};
use super::subscription::{Backoff, Cursor, SubscribeOptions};
use super::tokio::{encode_requests, handshake, lookup, read_frame};
use super::ClientConfig;
use crate::buffer::FrameBuffer;
use crate::codec::ServerFrame;
use crate::message::StreamEvent;

/// A live subscription to the order stream, for async code. See the module
/// docs.
///
/// ```no_run
/// # async fn demo() -> orderd_protocol::client::Result<()> {
/// use futures_lite::StreamExt;
/// use orderd_protocol::client::{AsyncSubscription, ClientConfig, SubscribeOptions};
///
/// let mut sub = AsyncSubscription::connect("127.0.0.1:7070", ClientConfig::default(), SubscribeOptions::default()).await?;
/// let first = sub.next_event().await?;
/// println!("core {} offset {}: {:?} order {}", first.core, first.offset, first.kind, first.order_id);
/// let resume_from = sub.positions().to_vec(); // StreamStart::Positions(resume_from) continues after `first`
///
/// let mut events = sub.into_stream();
/// while let Some(event) = events.next().await {
///     let event = event?;
///     println!("{:?} order {}", event.kind, event.order_id);
/// }
/// # Ok(())
/// # }
/// ```
pub struct AsyncSubscription {
    seed: SocketAddr,
    config: ClientConfig,
    /// The connection and its receive buffer, while connected.
    conn: Option<(TcpStream, FrameBuffer)>,
    cursor: Cursor,
}

impl AsyncSubscription {
    /// Connects to the server at `addr` (any core) and subscribes.
    ///
    /// # Errors
    /// A transport error, or the server's rejection (`position_unavailable`,
    /// `too_many_subscriptions`, `invalid_request` for a position list of
    /// the wrong length).
    pub async fn connect(addr: &str, config: ClientConfig, options: SubscribeOptions) -> Result<AsyncSubscription> {
        let seed = lookup(addr).await?;
        let mut sub = AsyncSubscription { seed, config, conn: None, cursor: Cursor::new(options) };
        sub.subscribe().await?;
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

    /// The next event, waiting as long as it takes. A broken connection is
    /// repaired (for up to [`SubscribeOptions::reconnect_for`]) without
    /// losing or repeating an event. Cancel-safe: an event leaves the
    /// subscription only when this returns it, so dropping the future loses
    /// none.
    ///
    /// # Errors
    /// The server refused the subscription or closed it with an error, or
    /// reconnecting failed for longer than `reconnect_for`.
    pub async fn next_event(&mut self) -> Result<StreamEvent> {
        loop {
            if let Some(event) = self.cursor.hand_out() {
                return Ok(event);
            }
            match self.receive().await {
                Ok(()) => {}
                Err(e) if e.is_transport() => self.resume(e).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// The subscription as a stream of events; it ends after the first
    /// error (which it yields). Boxed, so it is `Unpin` and `next()` can be
    /// called on it directly.
    pub fn into_stream(self) -> std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<StreamEvent>> + Send>> {
        Box::pin(futures_lite::stream::unfold(Some(self), |state| async move {
            let mut sub = state?;
            match sub.next_event().await {
                Ok(event) => Some((Ok(event), Some(sub))),
                Err(e) => Some((Err(e), None)),
            }
        }))
    }

    /// Reads one frame into the cursor.
    async fn receive(&mut self) -> Result<()> {
        let addr = self.seed;
        let (stream, rx) = self.conn.as_mut().ok_or(ClientError::Closed { addr })?;
        match read_frame(stream, rx, addr).await {
            Ok(frame) => self.cursor.take(frame, addr),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Reconnects and subscribes from the saved positions, for up to
    /// `reconnect_for` after `cause`.
    async fn resume(&mut self, cause: ClientError) -> Result<()> {
        self.conn = None;
        let mut backoff = Backoff::new(&self.config, &self.cursor.options, cause);
        while let Some(pause) = backoff.next_pause() {
            tokio::time::sleep(pause).await;
            match self.subscribe().await {
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
    async fn subscribe(&mut self) -> Result<()> {
        let addr = self.seed;
        let (mut stream, mut rx, welcome) = handshake(addr, &self.config).await?;
        let correlation = 1;
        let bytes = encode_requests(welcome.version, correlation, std::slice::from_ref(&self.cursor.request()))?;
        stream.write_all(&bytes).await.map_err(|source| ClientError::Io { addr, source })?;
        // Events may follow the reply at once; they stay in `rx`.
        let reply = async {
            loop {
                match read_frame(&mut stream, &mut rx, addr).await? {
                    ServerFrame::Replies(c, replies) if c == correlation => return Ok(replies),
                    ServerFrame::Error(_, e) => return Err(ClientError::Refused { addr, code: e.code, detail: e.detail }),
                    _ => {}
                }
            }
        };
        let replies = tokio::time::timeout(self.config.request_timeout, reply)
            .await
            .map_err(|_| ClientError::Timeout { addr, after: self.config.request_timeout })??;
        self.cursor.subscribed(replies, correlation, addr)?;
        self.conn = Some((stream, rx));
        Ok(())
    }
}
