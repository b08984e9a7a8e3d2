//! One client connection: the frame path.
//!
//! Read into the protocol crate's aligned [`FrameBuffer`], judge each frame
//! with `frame::check`, validate a Requests payload once with
//! `codec::access_requests`, turn each request into an engine [`Command`],
//! apply it to the local shard or batch it for the owning core, then encode
//! every reply with one reused [`Encoder`] into one reused output buffer. All
//! the frames a read brought in are answered with one write.
//!
//! In `sync` durability mode those replies wait until the log is durable up
//! to the last state change any of those frames made (group commit,
//! [`super::commit`]); frames that changed nothing (reads, rejections) do
//! not wait, unless replies before them do (replies leave in frame order).
//! An idempotent answer about a state change (a retried place order, a
//! second pay) waits too: the change it reports may still be in flight to
//! the disk. While replies wait, the connection goes on reading and
//! applying the frames behind them (`Pending`), so the core's next flush
//! starts as soon as the current one ends, covering them: a cycle lasts the
//! longer of a flush and the work between flushes, not their sum (when the
//! disk slowed to 1.7 ms flushes the sum made cycles of 3 ms and p99 of
//! 5-8 ms at 470k req/s; README, Latency).
//!
//! Bounds (PROTOCOL.md § 2.3, § 3): frame size and batch size are checked on
//! the header; frames in flight are the complete frames the server holds
//! unanswered (a client that pipelines more than `max_in_flight` frames is
//! caught when they arrive together). Each broken bound, bad frame or
//! out-of-place frame kind gets one Error frame, then the connection closes.
//! A client that is silent too long, leaves a frame unfinished or does not
//! read its replies is closed by a timeout. None of it touches any other
//! connection.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::codec::{self, Encoder};
use orderd_protocol::frame::{FrameCheck, FrameHeader, FrameKind, FrameLimits, MAGIC};
use orderd_protocol::limits::{MAX_BATCH_REQUESTS, MAX_FRAME_PAYLOAD_BYTES, PROTOCOL_VERSION};
use orderd_protocol::message::{Aggregates, ArchivedRequest, ArchivedSubscribe, CoreStats, ErrorFrame, Stats, StreamEvent};
use orderd_protocol::{FrameError, Reply, Status};

use super::aggregates;
use super::core::{now_ms, route, Route};
use super::mesh::ForwardBatch;
use super::CoreCtx;
use crate::engine::Command;
use crate::stream::{Filter, Subscription};

/// Bytes asked of the socket per read (more when a frame needs more).
const READ_CHUNK: usize = 64 * 1024;

/// How often a subscriber that is caught up looks for new durable events.
const STREAM_POLL: Duration = Duration::from_millis(1);

/// Records a subscription may read per frame, per event the frame can
/// hold (a filter that matches little still hands the core back).
const STREAM_SCAN_FACTOR: usize = 16;

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, so the kernel does not reset the connection before
/// the client has read the Error frame.
const LINGER: Duration = Duration::from_millis(500);

/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// Why a frame ends the connection: the Error frame to send.
struct Refusal {
    status: Status,
    detail: u64,
    correlation: u64,
}

impl Refusal {
    fn frame(error: &FrameError, correlation: u64) -> Self {
        Refusal { status: error.status(), detail: error.detail(), correlation }
    }
}

/// Per-connection buffers, reused for every frame.
struct Scratch {
    replies: Vec<Reply>,
    /// Each request's route and, for a shard's, its engine command.
    routed: Vec<(Route, Option<Command>)>,
    /// Per destination core: the commands to forward and their reply slots.
    outbox: Vec<Vec<(u32, Command)>>,
    slots: Vec<Vec<u32>>,
    stats_slots: Vec<u32>,
    stats: Vec<CoreStats>,
    /// `(slot, top)` of each aggregates request of the frame.
    aggregates_slots: Vec<(u32, u32)>,
    /// Slots of the frame's subscribe requests (answered after the shards').
    subscribe_slots: Vec<u32>,
    /// Per core, its part of the aggregates.
    aggregates: Vec<Aggregates>,
    waits: Vec<(usize, u32)>,
}

/// Counts a connection open for as long as it lives.
struct ConnectionGuard(Rc<RefCell<super::core::Core>>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut core = self.0.borrow_mut();
        core.counters.connections = core.counters.connections.saturating_sub(1);
    }
}

/// Serve one accepted connection until it closes. The caller has counted
/// it in `core.counters.connections`; this releases it.
pub async fn serve(stream: TcpStream, ctx: Rc<CoreCtx>) {
    let _guard = ConnectionGuard(Rc::clone(&ctx.core));
    let peer = stream.peer_addr().ok();
    let mut result = Connection::new(stream, &ctx).run(&ctx).await;
    if let Ok(Outcome::Subscribed(mut conn)) = result {
        // Stream work gets the stream queue's small share of the core, so
        // subscribers catching up cannot starve the order path.
        conn.in_stream_queue = true;
        let task_ctx = Rc::clone(&ctx);
        result = match glommio::spawn_local_into(async move { conn.run(&task_ctx).await }, ctx.streams.queue) {
            Ok(task) => task.await,
            Err(e) => Err(std::io::Error::other(format!("cannot run the subscription in the stream task queue: {e}"))),
        };
    }
    match result {
        Ok(_) => tracing::debug!(?peer, "connection closed"),
        Err(e) => tracing::debug!(?peer, error = %e, "connection ended"),
    }
}

/// Refuse a connection past the per-core bound: one Error frame, then close.
pub async fn refuse(mut stream: TcpStream, ctx: Rc<CoreCtx>) {
    let mut out = Vec::with_capacity(64);
    let error = ErrorFrame { code: Status::TooManyConnections.code(), detail: u64::from(ctx.limits.max_connections) };
    if Encoder::default().error(&mut out, 0, &error).is_ok() {
        let _ = stream.set_write_timeout(Some(ctx.limits.write_timeout));
        if stream.write_all(&out).await.is_ok() {
            linger_close(&mut stream).await;
        }
    }
}

struct Connection {
    stream: TcpStream,
    rx: FrameBuffer,
    out: Vec<u8>,
    encoder: Encoder,
    scratch: Scratch,
    welcomed: bool,
    /// The log sequence the replies being encoded wait for (sync mode).
    wait_for: Option<u64>,
    /// Replies in `out` not yet written, oldest first.
    pending: std::collections::VecDeque<Pending>,
    /// Frames taken off the receive buffer so far.
    answered: u64,
    /// Of those, the Requests frames answered (not refused).
    request_frames: u64,
    /// When the last read completed (the frames it completed are answered
    /// from then on: the start of their server-side latency).
    read_at: Instant,
    /// The order stream this connection carries, if it subscribed.
    subscription: Option<Subscribed>,
    /// Whether this task runs in the core's stream task queue.
    in_stream_queue: bool,
}

/// A connection's subscription: the stream it sends and the frame it fills.
struct Subscribed {
    /// The correlation of the frame that held the Subscribe.
    correlation: u64,
    stream: Subscription,
    events: Vec<StreamEvent>,
    /// Releases the core's subscription count and position.
    guard: SubscriptionGuard,
}

/// Counts a subscription on its core, and keeps its position there for the
/// lag metric, for as long as it lives.
struct SubscriptionGuard {
    core: Rc<RefCell<super::core::Core>>,
    /// Its slot in the core's `subscribers`, once it started.
    slot: Option<usize>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let mut core = self.core.borrow_mut();
        core.counters.subscriptions = core.counters.subscriptions.saturating_sub(1);
        if let Some(slot) = self.slot {
            core.subscribers.remove(slot);
        }
    }
}

/// Replies encoded but not yet written: the bytes of `Connection::out` up
/// to `end`, which may leave once the log is durable below `wait`.
struct Pending {
    end: usize,
    /// Log sequence the replies wait for; 0 waits for nothing.
    wait: u64,
    /// Request frames these replies answer (for the in-flight bound).
    frames: usize,
    /// When the read that completed those frames returned.
    read_at: Instant,
}

/// How [`Connection::run`] ended.
enum Outcome {
    /// The connection is closed.
    Closed,
    /// The connection subscribed: run it on in the stream task queue.
    Subscribed(Box<Connection>),
}

/// What waiting for bytes brought.
enum Wake {
    Read(std::io::Result<usize>),
    /// The log became durable far enough for the oldest waiting replies.
    Durable,
    /// Time to look for new stream events.
    Tick,
    Shutdown,
}

impl Connection {
    fn new(stream: TcpStream, ctx: &CoreCtx) -> Self {
        let cores = ctx.core.borrow().cores();
        let limits = FrameLimits { max_payload_bytes: ctx.limits.max_frame_bytes as usize, max_items: ctx.limits.max_batch as usize };
        Connection {
            stream,
            rx: FrameBuffer::new(READ_CHUNK, limits),
            out: Vec::with_capacity(READ_CHUNK),
            encoder: Encoder::new(MAX_FRAME_PAYLOAD_BYTES, MAX_BATCH_REQUESTS),
            scratch: Scratch {
                replies: Vec::new(),
                routed: Vec::new(),
                outbox: (0..cores).map(|_| Vec::new()).collect(),
                slots: (0..cores).map(|_| Vec::new()).collect(),
                stats_slots: Vec::new(),
                stats: vec![CoreStats::default(); cores],
                aggregates_slots: Vec::new(),
                subscribe_slots: Vec::new(),
                aggregates: vec![Aggregates::default(); cores],
                waits: Vec::with_capacity(cores),
            },
            subscription: None,
            in_stream_queue: false,
            welcomed: false,
            wait_for: None,
            pending: std::collections::VecDeque::new(),
            answered: 0,
            request_frames: 0,
            read_at: Instant::now(),
        }
    }

    async fn run(mut self, ctx: &CoreCtx) -> std::io::Result<Outcome> {
        self.stream.set_nodelay(true)?;
        self.stream.set_write_timeout(Some(ctx.limits.write_timeout))?;
        // When the frame now being received began (the connection's start
        // for the Hello): the frame timeout is a deadline from there, not a
        // bound on each read, so a client trickling one byte per almost
        // `frame_timeout` (slowloris) is still cut off.
        let mut frame_started = Some(Instant::now());
        loop {
            // Answer every complete frame the buffer holds; their replies
            // join the pending ones, and whatever may leave is written.
            let (answered, request_frames) = (self.answered, self.request_frames);
            let (need, refusal) = self.answer_buffered(ctx).await;
            if self.answered != answered {
                frame_started = None;
            }
            if let Some(refusal) = &refusal {
                let error = ErrorFrame { code: refusal.status.code(), detail: refusal.detail };
                if self.encoder.error(&mut self.out, refusal.correlation, &error).is_err() {
                    tracing::error!("cannot encode an Error frame");
                }
            }
            let wait = self.wait_for.take().filter(|_| ctx.sync).unwrap_or(0);
            let frames = usize::try_from(self.request_frames - request_frames).unwrap_or(usize::MAX);
            if self.out.len() > self.pending.back().map_or(0, |p| p.end) {
                self.pending.push_back(Pending { end: self.out.len(), wait, frames, read_at: self.read_at });
            }
            if let Some(r) = refusal {
                self.write_all_pending(ctx).await?;
                tracing::debug!(status = %r.status, "closing after an Error frame");
                linger_close(&mut self.stream).await;
                return Ok(Outcome::Closed);
            }
            self.write_durable(ctx).await?;
            if ctx.shutdown.is_triggered() {
                self.write_all_pending(ctx).await?;
                return Ok(Outcome::Closed);
            }
            if self.subscription.is_some() && !self.in_stream_queue {
                self.write_all_pending(ctx).await?;
                return Ok(Outcome::Subscribed(Box::new(self)));
            }
            // Send the stream's next events, if it has any (after every reply).
            let more_events = if self.pending.is_empty() { self.send_events(ctx).await? } else { false };
            // Then wait for more bytes, within the right timeout (none for
            // a subscriber between frames: it may never send another), or
            // for the flush the oldest waiting replies need.
            let timeout = if self.rx.is_empty() && self.welcomed {
                frame_started = None;
                (self.subscription.is_none() && self.pending.is_empty()).then_some(ctx.limits.idle_timeout)
            } else {
                let started = *frame_started.get_or_insert_with(Instant::now);
                Some(ctx.limits.frame_timeout.saturating_sub(started.elapsed()))
            };
            if timeout.is_some_and(|t| t.is_zero()) {
                return Err(std::io::Error::new(ErrorKind::TimedOut, "frame not completed within the frame timeout"));
            }
            self.stream.set_read_timeout(timeout)?;
            // A client within the in-flight bound cannot have more frames
            // unanswered than the bound: stop reading until replies leave.
            let room = self.pending_frames() < ctx.limits.max_in_flight as usize;
            let oldest_wait = self.pending.front().map(|p| p.wait);
            let want = self.rx.want(&FrameCheck::Incomplete { need }, READ_CHUNK);
            let spare = self.rx.spare(want);
            let stream = &mut self.stream;
            let subscribed = self.subscription.is_some();
            // Dropping a pending read loses nothing: glommio reads the socket
            // only inside a poll that returns the bytes.
            let read = async {
                if room {
                    Wake::Read(stream.read(spare).await)
                } else {
                    futures_lite::future::pending().await
                }
            };
            let durable = async {
                match oldest_wait {
                    Some(sequence) => {
                        ctx.commit.durable(sequence).await;
                        Wake::Durable
                    }
                    None => futures_lite::future::pending().await,
                }
            };
            let wake = futures_lite::future::or(futures_lite::future::or(read, durable), async {
                if more_events {
                    // More events are ready: let the core's other tasks run, then send them.
                    futures_lite::future::yield_now().await;
                    return Wake::Tick;
                }
                if subscribed {
                    return futures_lite::future::or(
                        async {
                            glommio::timer::sleep(STREAM_POLL).await;
                            Wake::Tick
                        },
                        async {
                            ctx.shutdown.wait().await;
                            Wake::Shutdown
                        },
                    )
                    .await;
                }
                ctx.shutdown.wait().await;
                Wake::Shutdown
            })
            .await;
            match wake {
                Wake::Shutdown => {
                    self.write_all_pending(ctx).await?;
                    return Ok(Outcome::Closed);
                }
                Wake::Read(Ok(0)) => {
                    // The client is done sending (it may still read: a
                    // half-close): its waiting replies still go out.
                    self.write_all_pending(ctx).await?;
                    return Ok(Outcome::Closed);
                }
                Wake::Read(Ok(n)) => {
                    self.rx.commit(n);
                    self.read_at = Instant::now();
                }
                Wake::Read(Err(e)) => {
                    // A timeout on an unfinished frame: the replies to the
                    // finished ones still go out if the client can take them.
                    let _ = self.write_all_pending(ctx).await;
                    return Err(e);
                }
                Wake::Durable | Wake::Tick => {}
            }
        }
    }

    /// Request frames answered but not yet written.
    fn pending_frames(&self) -> usize {
        self.pending.iter().map(|p| p.frames).sum()
    }

    /// Writes the oldest pending replies whose records are durable, in one
    /// write. The write timeout bounds the whole write, not each system
    /// call: a client reading a byte now and then cannot hold the
    /// connection (and this buffer) forever.
    async fn write_durable(&mut self, ctx: &CoreCtx) -> std::io::Result<()> {
        let durable = ctx.commit.point();
        let mut upto = 0;
        let now = Instant::now();
        while let Some(p) = self.pending.front() {
            if p.wait > durable {
                break;
            }
            upto = p.end;
            if p.frames > 0 {
                ctx.core.borrow_mut().metrics.replied(now.saturating_duration_since(p.read_at).as_micros() as u64, p.frames as u64);
            }
            self.pending.pop_front();
        }
        if upto > 0 {
            write_all_within(&mut self.stream, &self.out[..upto], ctx.limits.write_timeout).await?;
            self.out.drain(..upto);
            for p in &mut self.pending {
                p.end -= upto;
            }
        }
        Ok(())
    }

    /// Waits until every pending reply may leave, and writes them all.
    async fn write_all_pending(&mut self, ctx: &CoreCtx) -> std::io::Result<()> {
        if let Some(last) = self.pending.iter().map(|p| p.wait).max() {
            ctx.commit.durable(last).await;
        }
        self.write_durable(ctx).await
    }

    /// Sends the subscription's next frame of events, if it has one.
    /// Returns whether more events may be ready at once.
    async fn send_events(&mut self, ctx: &CoreCtx) -> std::io::Result<bool> {
        let Some(sub) = &mut self.subscription else { return Ok(false) };
        let max = ctx.streams.max_events_per_frame;
        sub.events.clear();
        let scanned = match sub.stream.fill(&mut sub.events, max, max * STREAM_SCAN_FACTOR) {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!(error = %e, "the order stream cannot read the log; closing the subscriber's connection");
                let error = ErrorFrame { code: Status::Internal.code(), detail: 0 };
                if self.encoder.events(&mut self.out, sub.correlation, &sub.events).is_ok()
                    && self.encoder.error(&mut self.out, sub.correlation, &error).is_ok()
                {
                    write_all_within(&mut self.stream, &self.out, ctx.limits.write_timeout).await?;
                }
                self.out.clear();
                return Err(std::io::Error::other(e.to_string()));
            }
        };
        let more = sub.events.len() >= max || scanned >= max * STREAM_SCAN_FACTOR;
        if scanned > 0 {
            if let Some(slot) = sub.guard.slot {
                ctx.core.borrow_mut().subscribers.set(slot, &sub.stream.positions());
            }
        }
        if sub.events.is_empty() {
            return Ok(more);
        }
        if let Err(e) = self.encoder.events(&mut self.out, sub.correlation, &sub.events) {
            tracing::error!(error = %e, "cannot encode stream events");
            return Err(std::io::Error::other(e.to_string()));
        }
        write_all_within(&mut self.stream, &self.out, ctx.limits.write_timeout).await?;
        self.out.clear();
        Ok(more)
    }

    /// A Subscribe request: the connection becomes a subscriber.
    fn subscribe(slot: &mut Option<Subscribed>, request: &ArchivedSubscribe, correlation: u64, ctx: &CoreCtx) -> Reply {
        if slot.is_some() {
            return Reply::rejected(Status::TooManySubscriptions, 0);
        }
        let max = ctx.streams.max_subscriptions;
        {
            let mut core = ctx.core.borrow_mut();
            if core.counters.subscriptions >= max {
                return Reply::rejected(Status::TooManySubscriptions, u64::from(max));
            }
            core.counters.subscriptions += 1;
        }
        let mut guard = SubscriptionGuard { core: Rc::clone(&ctx.core), slot: None };
        let filter = Filter { product: request.product.to_native(), kinds: request.kinds.to_native() };
        match Subscription::start(&ctx.streams.data_dir, Arc::clone(&ctx.streams.durable), &request.start, filter) {
            Ok(stream) => {
                let positions = stream.positions();
                guard.slot = Some(ctx.core.borrow_mut().subscribers.add(positions.clone()));
                tracing::debug!(?positions, product = filter.product, kinds = filter.kinds, "subscribed");
                let events = Vec::with_capacity(ctx.streams.max_events_per_frame);
                *slot = Some(Subscribed { correlation, stream, events, guard });
                Reply::Subscribed(orderd_protocol::message::Subscribed { positions })
            }
            Err(rejection) => Reply::Rejected(rejection),
        }
    }

    /// Answer the complete frames at the front of the buffer. Returns the
    /// bytes the next frame needs and, if a frame ends the connection, why.
    async fn answer_buffered(&mut self, ctx: &CoreCtx) -> (usize, Option<Refusal>) {
        let mut frames = 0u32;
        loop {
            let header = match self.rx.check() {
                FrameCheck::Complete(header) => header,
                FrameCheck::Incomplete { need } => return (need, None),
                FrameCheck::Invalid(error) => {
                    let correlation = correlation_hint(self.rx.data());
                    return (0, Some(Refusal::frame(&error, correlation)));
                }
            };
            let refusal = if !self.welcomed {
                self.hello(&header, ctx)
            } else if header.kind != FrameKind::Requests {
                Some(Refusal::frame(&FrameError::UnexpectedKind { found: header.kind }, header.correlation))
            } else if self.pending_frames() + frames as usize >= ctx.limits.max_in_flight as usize {
                Some(Refusal { status: Status::TooManyInFlight, detail: ctx.limits.max_in_flight.into(), correlation: header.correlation })
            } else {
                frames += 1;
                self.request_frames += 1;
                self.requests(&header, ctx).await
            };
            self.rx.consume(&header);
            self.answered += 1;
            if refusal.is_some() {
                return (0, refusal);
            }
        }
    }

    /// The handshake: a Hello gets the Welcome; anything else is refused.
    fn hello(&mut self, header: &FrameHeader, ctx: &CoreCtx) -> Option<Refusal> {
        if header.kind != FrameKind::Hello {
            return Some(Refusal::frame(&FrameError::UnexpectedKind { found: header.kind }, header.correlation));
        }
        let hello = match codec::decode_hello(self.rx.payload(header), header) {
            Ok(h) => h,
            Err(e) => return Some(Refusal::frame(&e, header.correlation)),
        };
        if !(hello.min_version..=hello.max_version).contains(&PROTOCOL_VERSION) {
            return Some(Refusal { status: Status::UnsupportedVersion, detail: PROTOCOL_VERSION.into(), correlation: header.correlation });
        }
        tracing::debug!(client_id = hello.client_id, "hello");
        if let Err(e) = self.encoder.welcome(&mut self.out, header.correlation, &ctx.welcome) {
            tracing::error!(error = %e, "cannot encode the Welcome");
            return Some(Refusal { status: Status::Internal, detail: 0, correlation: header.correlation });
        }
        self.welcomed = true;
        None
    }

    /// One Requests frame: validate, apply or forward, encode the replies.
    async fn requests(&mut self, header: &FrameHeader, ctx: &CoreCtx) -> Option<Refusal> {
        let requests = match codec::access_requests(self.rx.payload(header), header) {
            Ok(r) => r,
            Err(e) => return Some(Refusal::frame(&e, header.correlation)),
        };
        let s = &mut self.scratch;
        s.replies.clear();
        s.replies.resize(requests.len(), Reply::rejected(Status::Internal, 0));
        s.stats_slots.clear();
        s.aggregates_slots.clear();
        s.subscribe_slots.clear();
        let now = now_ms();
        let me;
        {
            let mut core = ctx.core.borrow_mut();
            me = core.index();
            let shard_count = core.shard_count();
            s.routed.clear();
            s.routed.extend(requests.iter().map(|request| {
                let to = route(request, shard_count);
                (to, matches!(to, Route::Shard(_)).then(|| Command::from_archived(request)).flatten())
            }));
            // First touch what every request will read, so the cache misses
            // of the frame's requests overlap (README, Performance).
            if s.routed.len() > 1 {
                for (to, cmd) in &s.routed {
                    if let (Route::Shard(shard), Some(cmd)) = (to, cmd) {
                        core.warm(*shard, cmd);
                    }
                }
            }
            for (i, &(to, cmd)) in s.routed.iter().enumerate() {
                match to {
                    Route::Shard(shard) => {
                        let Some(cmd) = cmd else { continue };
                        let owner = core.owner_of(shard);
                        if owner == me {
                            let (reply, wait) = core.apply(shard, &cmd, now);
                            s.replies[i] = reply;
                            self.wait_for = self.wait_for.max(wait);
                        } else if let Some(outbox) = s.outbox.get_mut(owner) {
                            outbox.push((shard, cmd));
                            s.slots[owner].push(i as u32);
                        }
                    }
                    Route::Stats => s.stats_slots.push(i as u32),
                    Route::Aggregates(top) => s.aggregates_slots.push((i as u32, top)),
                    Route::Subscribe => s.subscribe_slots.push(i as u32),
                    Route::Refuse(status) => s.replies[i] = Reply::rejected(status, 0),
                }
            }
        }
        for &i in &self.scratch.subscribe_slots {
            if let Some(ArchivedRequest::Subscribe(sub)) = requests.get(i as usize) {
                self.scratch.replies[i as usize] = Self::subscribe(&mut self.subscription, sub, header.correlation, ctx);
            }
        }
        let s = &mut self.scratch;
        let want_stats = !s.stats_slots.is_empty();
        let want_aggregates = s.aggregates_slots.iter().map(|&(_, top)| top).max();
        if let Some(mesh) = &ctx.mesh {
            // One message per destination core, then wait for each answer.
            s.waits.clear();
            for core in 0..s.outbox.len() {
                if core == me || (s.outbox[core].is_empty() && !want_stats && want_aggregates.is_none()) {
                    continue;
                }
                let commands = std::mem::take(&mut s.outbox[core]);
                ctx.core.borrow_mut().counters.forwarded += commands.len() as u64;
                let ticket = mesh.pending.register();
                let batch = ForwardBatch { from: me, ticket, now_ms: now, commands, want_stats, want_aggregates, want_metrics: false };
                if mesh.requests_tx.send_to(core, batch).await.is_err() {
                    mesh.pending.cancel(ticket);
                    for &slot in &s.slots[core] {
                        s.replies[slot as usize] = Reply::rejected(Status::ShuttingDown, 0);
                    }
                    s.slots[core].clear();
                    continue;
                }
                s.waits.push((core, ticket));
            }
            for &(core, ticket) in &s.waits {
                let done = mesh.pending.wait(ticket).await;
                for (slot, reply) in s.slots[core].iter().zip(done.replies) {
                    s.replies[*slot as usize] = reply;
                }
                s.slots[core].clear();
                if let Some(stats) = done.stats {
                    s.stats[core] = stats;
                }
                if let Some(part) = done.aggregates {
                    s.aggregates[core] = part;
                }
            }
        }
        if want_stats {
            s.stats[me] = ctx.core.borrow().stats();
            let stats = Reply::Stats(Stats { server_id: ctx.server_id, cores: s.stats.clone() });
            for &slot in &s.stats_slots {
                s.replies[slot as usize] = stats.clone();
            }
        }
        if let Some(top) = want_aggregates {
            s.aggregates[me] = ctx.core.borrow().aggregates(now, top);
            for &(slot, top) in &s.aggregates_slots {
                s.replies[slot as usize] = Reply::Aggregates(aggregates::merge(s.aggregates.iter().cloned(), top));
            }
        }
        ctx.core.borrow_mut().metrics.frame(requests.iter(), &s.replies);
        match self.encoder.replies(&mut self.out, header.correlation, &s.replies) {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode replies");
                Some(Refusal { status: Status::Internal, detail: 0, correlation: header.correlation })
            }
        }
    }
}

/// `write_all` that gives up (`TimedOut`) once `limit` has passed since it began.
async fn write_all_within(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    futures_lite::future::or(stream.write_all(bytes), async {
        glommio::timer::sleep(limit).await;
        Err(std::io::Error::new(ErrorKind::TimedOut, "the client did not read its replies within the write timeout"))
    })
    .await
}

/// The correlation of the frame at the front of `data`, if its header got
/// far enough to carry one (0 otherwise, as PROTOCOL.md § 3 says).
fn correlation_hint(data: &[u8]) -> u64 {
    match data.get(..16) {
        Some(h) if h[..4] == MAGIC => u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        _ => 0,
    }
}

/// Close after an Error frame: send FIN, then read and discard for a moment
/// so that unread client bytes do not make the kernel reset the connection
/// (which could destroy the Error frame before the client reads it).
async fn linger_close(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).await.is_err() {
        return;
    }
    if stream.set_read_timeout(Some(LINGER)).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES && std::time::Instant::now() < deadline {
        match stream.read(&mut sink).await {
            Ok(0) => return,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
