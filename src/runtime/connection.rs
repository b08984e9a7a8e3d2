//! One client connection: its I/O. What to answer is decided by
//! [`Dispatch`] (no I/O there); this module reads into the protocol crate's
//! aligned [`FrameBuffer`], hands each complete frame (`frame::check`) to
//! it, carries the messages it queues for other cores over the mesh, waits
//! for durability, and writes every reply the frames of a read produced in
//! one write. The stream's side is `super::subscriber`.
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
//! 5-8 ms at 470k req/s; benches/README.md, Latency).
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
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::codec::Encoder;
use orderd_protocol::frame::{FrameCheck, FrameHeader, FrameLimits, MAGIC};
use orderd_protocol::message::{ArchivedRequest, Checkpointed, ErrorFrame, MoveShard, Replicate};
use orderd_protocol::{Reply, Status};

use super::core::now_ms;
use super::dispatch::{Admitted, Dispatch, Refusal};
use super::replies::ReplyQueue;
use super::stream_budget::Charged;
use super::subscriber::{self, NextFrame, Subscribed};
use super::CoreCtx;
use super::{handoff, replication};

/// Bytes asked of the socket per read (more when a frame needs more).
const READ_CHUNK: usize = 64 * 1024;

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, so the kernel does not reset the connection before
/// the client has read the Error frame.
const LINGER: Duration = Duration::from_millis(500);

/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 1 << 20;

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
        // Stream work runs in the stream queue, within the core's stream
        // budget (every poll charged to it), so subscribers catching up
        // cannot starve the order path.
        conn.in_stream_queue = true;
        let task_ctx = Rc::clone(&ctx);
        let task = Charged::new(async move { conn.run(&task_ctx).await }, Rc::clone(&ctx.streams.budget));
        result = match glommio::spawn_local_into(task, ctx.streams.queue) {
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
    /// This connection's core.
    me: usize,
    /// The frame path's decisions and their buffers.
    dispatch: Dispatch,
    /// The cores a frame's messages went to, and their tickets.
    waits: Vec<(usize, Option<u32>)>,
    /// Replies in `out` not yet written, oldest first.
    unwritten: ReplyQueue<Instant>,
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
    /// The durable ticker's generation when the stream was last read: a
    /// caught-up subscriber waits for a newer one.
    stream_generation: u64,
    /// A connection between nodes (it sent only `Replicate` and
    /// `MoveShard` requests so far): its replies wait for this core's log
    /// only, not for this core's own followers.
    link: bool,
    /// It sent a request of another kind: its replies wait for every copy.
    client: bool,
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
        let (me, cores) = {
            let core = ctx.core.borrow();
            (core.index(), core.cores())
        };
        let limits = FrameLimits { max_payload_bytes: ctx.limits.max_frame_bytes as usize, max_items: ctx.limits.max_batch as usize };
        Connection {
            stream,
            rx: FrameBuffer::new(READ_CHUNK, limits),
            out: Vec::with_capacity(READ_CHUNK),
            me,
            dispatch: Dispatch::new(me, cores, ctx.limits.max_in_flight),
            waits: Vec::with_capacity(cores),
            subscription: None,
            in_stream_queue: false,
            stream_generation: 0,
            link: false,
            client: false,
            unwritten: ReplyQueue::default(),
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
                if self.dispatch.encoder().error(&mut self.out, refusal.correlation, &refusal.error_frame()).is_err() {
                    tracing::error!("cannot encode an Error frame");
                }
            }
            let wait = self.dispatch.take_wait().filter(|_| ctx.sync).unwrap_or(0);
            let frames = usize::try_from(self.request_frames - request_frames).unwrap_or(usize::MAX);
            self.unwritten.push(self.out.len(), wait, frames, self.read_at);
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
            let more_events = if self.unwritten.is_empty() { self.send_events(ctx).await? } else { false };
            // Then wait for more bytes, within the right timeout (none for
            // a subscriber between frames: it may never send another), or
            // for the flush the oldest waiting replies need.
            let timeout = if self.rx.is_empty() && self.dispatch.welcomed() {
                frame_started = None;
                (self.subscription.is_none() && self.unwritten.is_empty()).then_some(ctx.limits.idle_timeout)
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
            let oldest_wait = self.unwritten.oldest_wait();
            let want = self.rx.want(&FrameCheck::Incomplete { need }, READ_CHUNK);
            let spare = self.rx.spare(want);
            let stream = &mut self.stream;
            let subscribed = self.subscription.is_some();
            let stream_generation = self.stream_generation;
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
                        if self.link {
                            ctx.commit.local(sequence).await;
                        } else {
                            ctx.commit.durable(sequence).await;
                        }
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
                            ctx.streams.ticker.changed(stream_generation).await;
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
        self.unwritten.frames()
    }

    /// Writes the oldest pending replies whose records are durable, in one
    /// write. The write timeout bounds the whole write, not each system
    /// call: a client reading a byte now and then cannot hold the
    /// connection (and this buffer) forever.
    async fn write_durable(&mut self, ctx: &CoreCtx) -> std::io::Result<()> {
        let now = Instant::now();
        let point = if self.link { ctx.commit.local_point() } else { ctx.commit.point() };
        if !self.link && self.unwritten.waits().any(|w| w <= point && ctx.commit.unacknowledged(w)) {
            // Changes a follower never acknowledged (this node lost the
            // shard, or the follower was replaced): their replies must not
            // go out. The connection closes; the client asks again with the
            // same keys and gets its answers from whoever leads then.
            return Err(std::io::Error::other("replies a follower never acknowledged are withdrawn"));
        }
        let upto = self.unwritten.release(point, |b| {
            if b.frames > 0 {
                ctx.core.borrow_mut().metrics.replied(now.saturating_duration_since(b.stamp).as_micros() as u64, b.frames as u64);
            }
        });
        if upto > 0 {
            write_all_within(&mut self.stream, &self.out[..upto], ctx.limits.write_timeout).await?;
            self.out.drain(..upto);
            self.unwritten.written(upto);
        }
        Ok(())
    }

    /// Waits until every pending reply may leave, and writes them all.
    async fn write_all_pending(&mut self, ctx: &CoreCtx) -> std::io::Result<()> {
        if let Some(last) = self.unwritten.last_wait() {
            if self.link {
                ctx.commit.local(last).await;
            } else if ctx.shutdown.is_triggered() {
                // At a stop, replies that still wait for a follower after
                // the log is durable here are dropped when it does not
                // answer in time: not acknowledged, the client asks again
                // (with the same key) and gets its answer from whoever
                // leads the shard then.
                futures_lite::future::or(ctx.commit.durable(last), async {
                    ctx.commit.local(last).await;
                    glommio::timer::sleep(STOP_REPLICA_WAIT).await;
                })
                .await;
            } else {
                ctx.commit.durable(last).await;
            }
        }
        self.write_durable(ctx).await
    }

    /// Sends the subscription's next frame of events, if it has one.
    /// Returns whether more events may be ready at once.
    async fn send_events(&mut self, ctx: &CoreCtx) -> std::io::Result<bool> {
        let Some(sub) = &mut self.subscription else { return Ok(false) };
        // Every frame passes the stream budget (the task's polls are charged to it).
        ctx.streams.budget.admit().await;
        self.stream_generation = ctx.streams.ticker.generation();
        let next = sub
            .next_frame(
                &ctx.core,
                &ctx.streams.reader,
                &ctx.streams.budget,
                ctx.streams.max_events_per_frame,
                self.dispatch.encoder(),
                &mut self.out,
            )
            .await;
        if !self.out.is_empty() {
            write_all_within(&mut self.stream, &self.out, ctx.limits.write_timeout).await?;
            self.out.clear();
        }
        match next {
            NextFrame::Nothing { more } | NextFrame::Events { more } => Ok(more),
            NextFrame::Failed(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Answer the complete frames at the front of the buffer. Returns the
    /// bytes the next frame needs and, if a frame ends the connection, why.
    async fn answer_buffered(&mut self, ctx: &CoreCtx) -> (usize, Option<Refusal>) {
        let mut frames = 0usize;
        loop {
            let header = match self.rx.check() {
                FrameCheck::Complete(header) => header,
                FrameCheck::Incomplete { need } => return (need, None),
                FrameCheck::Invalid(error) => {
                    let correlation = correlation_hint(self.rx.data());
                    return (0, Some(Refusal::frame(&error, correlation)));
                }
            };
            let in_flight = self.pending_frames() + frames;
            let refusal = match self.dispatch.admit(&header, self.rx.payload(&header), in_flight, &ctx.welcome, &mut self.out) {
                Ok(Admitted::Welcomed) => None,
                Ok(Admitted::Requests) => {
                    frames += 1;
                    self.request_frames += 1;
                    self.requests(&header, ctx).await.err()
                }
                Err(refusal) => Some(refusal),
            };
            self.rx.consume(&header);
            self.answered += 1;
            if refusal.is_some() {
                return (0, refusal);
            }
        }
    }

    /// One Requests frame: dispatch decides and applies the local part; the
    /// other cores' parts travel over the mesh; then its replies are encoded.
    async fn requests(&mut self, header: &FrameHeader, ctx: &CoreCtx) -> Result<(), Refusal> {
        let now = now_ms();
        let me = self.me;
        let requests = self.dispatch.begin(header, self.rx.payload(header), &mut ctx.core.borrow_mut(), now)?;
        let mut i = 0;
        while let Some((slot, request)) = self.dispatch.subscribe(requests, i) {
            i += 1;
            let reply = subscriber::start(&mut self.subscription, request, header.correlation, &ctx.core, &ctx.streams);
            self.dispatch.set_reply(slot, reply);
        }
        if !self.dispatch.checkpoint_slots().is_empty() {
            // `orderd admin checkpoint`: every core takes one; the frame's
            // replies wait for all of them (an admin request, not a sale's).
            let reply = match ctx.checkpoints.take_all().await {
                Ok(sequences) => Reply::Checkpointed(Checkpointed { sequences }),
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint on demand failed");
                    Reply::rejected(Status::Internal, 0)
                }
            };
            for slot in self.dispatch.checkpoint_slots().to_vec() {
                self.dispatch.set_reply(slot, reply.clone());
            }
        }
        // A connection that only ever sent requests between nodes (a
        // leader's replication link, the re-replication thread's or a
        // move's steps) waits for this core's log only: its answers are
        // about this node's own state, and waiting for this node's
        // followers could make two nodes wait on each other (each one's
        // install waiting for a follower the other is replacing).
        let node_only = !self.dispatch.node_slots().is_empty() && self.dispatch.node_slots().len() == requests.len();
        if !node_only {
            self.client = true;
        }
        self.link = node_only && !self.client;
        for slot in self.dispatch.node_slots().to_vec() {
            // A step of a shard move (admin, `orderd cluster move-shard`),
            // or a leader's batch of replicated events.
            let (reply, wait) = match requests.get(slot as usize) {
                Some(ArchivedRequest::MoveShard(archived)) => match rkyv::deserialize::<MoveShard, rkyv::rancor::Error>(archived) {
                    Ok(step) => handoff::step(ctx, step).await,
                    Err(_) => (Reply::rejected(Status::InvalidRequest, 0), None),
                },
                Some(ArchivedRequest::Replicate(archived)) => match rkyv::deserialize::<Replicate, rkyv::rancor::Error>(archived) {
                    Ok(batch) => replication::receive(ctx, batch).await,
                    Err(_) => (Reply::rejected(Status::InvalidRequest, 0), None),
                },
                _ => continue,
            };
            if let Some(wait) = wait {
                self.dispatch.wait_also(wait);
            }
            self.dispatch.set_reply(slot, reply);
        }
        if let Some(mesh) = &ctx.mesh {
            // Every message first, then wait for each answer.
            self.waits.clear();
            for (to, msg) in self.dispatch.outgoing() {
                self.waits.push((to, mesh.send(me, to, msg).await));
            }
            for &(to, ticket) in &self.waits {
                match ticket {
                    Some(ticket) => self.dispatch.arrived(to, mesh.tickets.wait(ticket).await),
                    None => self.dispatch.undeliverable(to),
                }
            }
        }
        self.dispatch.finish(header, requests, &mut ctx.core.borrow_mut(), ctx.server_id, now, &mut self.out)
    }
}

/// How long a stopping server waits for followers to acknowledge the
/// replies still pending.
const STOP_REPLICA_WAIT: Duration = Duration::from_secs(1);

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
