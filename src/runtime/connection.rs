//! One client connection: the frame path.
//!
//! Read into the protocol crate's aligned [`FrameBuffer`], judge each frame
//! with `frame::check`, validate a Requests payload once with
//! `codec::access_requests`, turn each request into an engine [`Command`],
//! apply it to the local shard or batch it for the owning core, then encode
//! every reply with one reused [`Encoder`] into one reused output buffer. All
//! the frames a read brought in are answered with one write.
//!
//! In `sync` durability mode that write waits until the log is durable up to
//! the last state change any of those frames made (group commit,
//! [`super::commit`]); frames that changed nothing (reads, rejections) do
//! not wait. An idempotent answer about a state change (a retried place
//! order, a second pay) waits too: the change it reports may still be in
//! flight to the disk.
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
use orderd_protocol::codec::{self, Encoder};
use orderd_protocol::frame::{FrameCheck, FrameHeader, FrameKind, FrameLimits, MAGIC};
use orderd_protocol::limits::{MAX_BATCH_REQUESTS, MAX_FRAME_PAYLOAD_BYTES, PROTOCOL_VERSION};
use orderd_protocol::message::{CoreStats, ErrorFrame, Stats};
use orderd_protocol::{FrameError, Reply, Status};

use super::core::{now_ms, route, Route};
use super::mesh::ForwardBatch;
use super::CoreCtx;
use crate::engine::Command;

/// Bytes asked of the socket per read (more when a frame needs more).
const READ_CHUNK: usize = 64 * 1024;

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
    /// Per destination core: the commands to forward and their reply slots.
    outbox: Vec<Vec<(u32, Command)>>,
    slots: Vec<Vec<u32>>,
    stats_slots: Vec<u32>,
    stats: Vec<CoreStats>,
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
    match Connection::new(stream, &ctx).run(&ctx).await {
        Ok(()) => tracing::debug!(?peer, "connection closed"),
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
    /// The log sequence the buffered replies wait for (sync mode).
    wait_for: Option<u64>,
    /// Frames taken off the receive buffer so far.
    answered: u64,
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
                outbox: (0..cores).map(|_| Vec::new()).collect(),
                slots: (0..cores).map(|_| Vec::new()).collect(),
                stats_slots: Vec::new(),
                stats: vec![CoreStats::default(); cores],
                waits: Vec::with_capacity(cores),
            },
            welcomed: false,
            wait_for: None,
            answered: 0,
        }
    }

    async fn run(mut self, ctx: &CoreCtx) -> std::io::Result<()> {
        self.stream.set_nodelay(true)?;
        self.stream.set_write_timeout(Some(ctx.limits.write_timeout))?;
        // When the frame now being received began (the connection's start
        // for the Hello): the frame timeout is a deadline from there, not a
        // bound on each read, so a client trickling one byte per almost
        // `frame_timeout` (slowloris) is still cut off.
        let mut frame_started = Some(Instant::now());
        loop {
            // Answer every complete frame the buffer holds, then write once.
            let answered = self.answered;
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
            if let Some(sequence) = self.wait_for.take() {
                if ctx.sync {
                    ctx.commit.durable(sequence).await;
                }
            }
            if !self.out.is_empty() {
                // The write timeout bounds the whole write, not each system
                // call: a client reading a byte now and then cannot hold
                // the connection (and this buffer) forever.
                write_all_within(&mut self.stream, &self.out, ctx.limits.write_timeout).await?;
                self.out.clear();
            }
            if let Some(r) = refusal {
                tracing::debug!(status = %r.status, "closing after an Error frame");
                linger_close(&mut self.stream).await;
                return Ok(());
            }
            if ctx.shutdown.is_triggered() {
                return Ok(());
            }
            // Then wait for more bytes, within the right timeout.
            let timeout = if self.rx.is_empty() && self.welcomed {
                frame_started = None;
                ctx.limits.idle_timeout
            } else {
                let started = *frame_started.get_or_insert_with(Instant::now);
                ctx.limits.frame_timeout.saturating_sub(started.elapsed())
            };
            if timeout.is_zero() {
                return Err(std::io::Error::new(ErrorKind::TimedOut, "frame not completed within the frame timeout"));
            }
            self.stream.set_read_timeout(Some(timeout))?;
            let want = self.rx.want(&FrameCheck::Incomplete { need }, READ_CHUNK);
            let spare = self.rx.spare(want);
            let stream = &mut self.stream;
            let read = futures_lite::future::or(async { Some(stream.read(spare).await) }, async {
                ctx.shutdown.wait().await;
                None
            })
            .await;
            match read {
                None => return Ok(()),
                Some(Ok(0)) => return Ok(()),
                Some(Ok(n)) => self.rx.commit(n),
                Some(Err(e)) => return Err(e),
            }
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
            } else if frames >= ctx.limits.max_in_flight {
                Some(Refusal { status: Status::TooManyInFlight, detail: ctx.limits.max_in_flight.into(), correlation: header.correlation })
            } else {
                frames += 1;
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
        let now = now_ms();
        let me;
        {
            let mut core = ctx.core.borrow_mut();
            me = core.index();
            let shard_count = core.shard_count();
            for (i, request) in requests.iter().enumerate() {
                match route(request, shard_count) {
                    Route::Shard(shard) => {
                        let Some(cmd) = Command::from_archived(request) else { continue };
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
                    Route::Refuse(status) => s.replies[i] = Reply::rejected(status, 0),
                }
            }
        }
        let want_stats = !s.stats_slots.is_empty();
        if let Some(mesh) = &ctx.mesh {
            // One message per destination core, then wait for each answer.
            s.waits.clear();
            for core in 0..s.outbox.len() {
                if core == me || (s.outbox[core].is_empty() && !want_stats) {
                    continue;
                }
                let commands = std::mem::take(&mut s.outbox[core]);
                ctx.core.borrow_mut().counters.forwarded += commands.len() as u64;
                let ticket = mesh.pending.register();
                let batch = ForwardBatch { from: me, ticket, now_ms: now, commands, want_stats, want_metrics: false };
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
            }
        }
        if want_stats {
            s.stats[me] = ctx.core.borrow().stats();
            let stats = Reply::Stats(Stats { server_id: ctx.server_id, cores: s.stats.clone() });
            for &slot in &s.stats_slots {
                s.replies[slot as usize] = stats.clone();
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
