//! One simulated server process: its cores (shards, log writers) and its
//! client connections, each running the server's own frame path
//! ([`Dispatch`]) and reply rule ([`ReplyQueue`]); the cores' group commit
//! as the flusher runs it (flush target, run, flushed); segment
//! preparation; expiries. Everything a crash takes away lives here.
//!
//! What the runtime does with glommio (reading sockets, waking tasks,
//! carrying [`CoreMsg`]s over the mesh) the simulator does by hand, in an
//! order its dice choose: a message for another core is answered at once
//! ([`answer`]), but its answer reaches the frame only once that core's log
//! is durable past what it applied, as `runtime::mesh` does.

use std::sync::Arc;

use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::codec::{self, Encoder};
use orderd_protocol::frame::{self, FrameCheck, FrameHeader, FrameKind, FrameLimits};
use orderd_protocol::limits::PROTOCOL_VERSION;
use orderd_protocol::message::{CoreAddr, Hello, ServerLimits, Welcome};
use orderd_protocol::{Reply, Request};

use crate::engine::{Shard, ShardConfig};
use crate::log::checkpoint::{CheckpointWriter, Written};
use crate::log::retention::{Plan, Retention};
use crate::log::segment::Prepare;
use crate::log::{recover, RecoveryConfig, RecoveryError, SharedStorage};
use crate::runtime::archiver::ToArchive;
use crate::runtime::checkpoints::Taking;
use crate::runtime::core::{cores_from_recovery, Core};
use crate::runtime::dispatch::{answer, Admitted, CoreAnswer, CoreMsg, Dispatch};
use crate::runtime::replies::ReplyQueue;

/// Frames a simulated client keeps unanswered on one connection.
pub const MAX_IN_FLIGHT: u32 = 4;

/// The server's shape in a simulation.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Cores.
    pub cores: usize,
    /// Shards.
    pub shards: u32,
    /// Segment size (small: rotations happen often).
    pub segment_bytes: u64,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// The shards' dedup window (`--dedup-window-secs`, in ms): a day, or
    /// for a third of the seeds a few simulated seconds, so that retries
    /// outlive their keys.
    pub dedup_window_ms: u64,
    /// The shards' hot window (`--hot-orders-secs`, in ms): final orders
    /// older than this leave memory for the archive at a checkpoint.
    pub hot_ms: u64,
    /// The log's retention (`--retain-log-bytes`, `--retain-log-secs`):
    /// tight, so that segments below the recovery floor go often.
    pub retention: Retention,
}

impl Shape {
    /// The engine settings of shard `shard`.
    #[must_use]
    pub fn shard_config(&self, shard: u16) -> ShardConfig {
        ShardConfig { dedup_window_ms: self.dedup_window_ms, hot_ms: self.hot_ms, ..ShardConfig::new(shard) }
    }
}

/// A frame waiting for the answers of other cores.
struct InProgress {
    header: FrameHeader,
    now_ms: u64,
    /// Per message: the core, its answer, the sequence of that core's log
    /// the answer waits for.
    answers: Vec<(usize, CoreAnswer, Option<u64>)>,
}

/// A frame a client sent, until its replies arrive.
pub struct Sent {
    /// Its correlation.
    pub correlation: u64,
    /// Its requests.
    pub requests: Vec<Request>,
}

/// A frame's requests and the replies that answered them.
pub type Answered = (Vec<Request>, Vec<Reply>);

/// One client connection to one core.
pub struct Conn {
    /// The client.
    pub client: usize,
    /// The core it is connected to.
    pub core: usize,
    dispatch: Dispatch,
    rx: FrameBuffer,
    out: Vec<u8>,
    replies: ReplyQueue<()>,
    in_progress: Option<InProgress>,
    /// Frames sent and not yet answered, oldest first.
    pub sent: std::collections::VecDeque<Sent>,
    next_correlation: u64,
}

/// A checkpoint a core is taking: the runtime's steps, one at a time.
struct Checkpointing {
    taking: Taking,
    writer: Option<CheckpointWriter>,
    written: Option<(Written, u64)>,
}

/// What one checkpoint step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStep {
    /// A step of a checkpoint in progress.
    Progress,
    /// It waits for the log to be durable up to its end.
    Waiting,
    /// It was published.
    Published,
    /// A write or sync failed: it is abandoned (the server goes on).
    Failed,
}

/// What one archiver step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveStep {
    /// The chosen shard had no cold order.
    Nothing,
    /// Cold orders were written (not yet synced).
    Written,
    /// The archive was synced and this many orders left memory.
    Evicted(usize),
    /// A write or the sync failed: the orders stay in memory.
    Failed,
}

/// What one retention step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainStep {
    /// Nothing may go (no recovery floor yet, or the log is within its
    /// retention).
    Nothing,
    /// Some of the segments below the floor were deleted, not yet durably.
    Removed(usize),
    /// The directory was synced: this many segments are gone for good and
    /// the log writer knows its new oldest sequence.
    Finished(u64),
    /// A removal or the sync failed (the runtime logs it and tries again).
    Failed,
}

/// The simulated server process.
pub struct Node {
    /// Its cores.
    pub cores: Vec<Core>,
    /// Each core's checkpoint in progress.
    checkpoints: Vec<Option<Checkpointing>>,
    /// Each core's archive written and not yet synced.
    archiving: Vec<Option<ToArchive>>,
    /// Each core's retention pass in progress.
    retaining: Vec<Option<Plan>>,
    /// Whether recovery started from a checkpoint.
    pub from_checkpoint: bool,
    /// Its connections.
    pub conns: Vec<Conn>,
    welcome: Welcome,
    storage: SharedStorage,
    shape: Shape,
}

impl Node {
    /// Starts a server on the data directory: recovers its logs through
    /// `storage`.
    ///
    /// # Errors
    /// What recovery refused.
    pub fn start(shape: &Shape, storage: &SharedStorage, truncate_corrupt: bool) -> Result<Node, RecoveryError> {
        let mut all: Vec<Shard> = (0..shape.shards).map(|s| Shard::new(shape.shard_config(s as u16))).collect();
        let config = RecoveryConfig {
            truncate_corrupt,
            ..RecoveryConfig::new(shape.data_dir.clone(), shape.cores, shape.segment_bytes, Arc::clone(storage))
        };
        let (writers, stats) = recover(&config, &mut all)?;
        let cores = cores_from_recovery(all, writers);
        let checkpoints = (0..cores.len()).map(|_| None).collect();
        let archiving = (0..cores.len()).map(|_| None).collect();
        let retaining = (0..cores.len()).map(|_| None).collect();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 7070));
        let welcome = Welcome {
            server_id: 1,
            version: PROTOCOL_VERSION,
            core: 0,
            cores: (0..shape.cores).map(|i| CoreAddr::new(i as u16, addr)).collect(),
            shard_owner: (0..shape.shards).map(|s| (s as usize % shape.cores) as u16).collect(),
            limits: ServerLimits { max_frame_bytes: 1 << 20, max_batch: 1024, max_in_flight: MAX_IN_FLIGHT },
        };
        Ok(Node {
            cores,
            checkpoints,
            archiving,
            retaining,
            from_checkpoint: stats.checkpoint_sequence.is_some(),
            conns: Vec::new(),
            welcome,
            storage: Arc::clone(storage),
            shape: shape.clone(),
        })
    }

    /// Opens a connection of `client` to `core`, handshake done.
    pub fn connect(&mut self, client: usize, core: usize) -> usize {
        let limits = FrameLimits { max_payload_bytes: 1 << 20, max_items: 1024 };
        let mut conn = Conn {
            client,
            core,
            dispatch: Dispatch::new(core, self.cores.len(), MAX_IN_FLIGHT),
            rx: FrameBuffer::new(64 * 1024, limits),
            out: Vec::new(),
            replies: ReplyQueue::default(),
            in_progress: None,
            sent: std::collections::VecDeque::new(),
            next_correlation: 1,
        };
        let mut hello = Vec::new();
        let encoded =
            Encoder::default().hello(&mut hello, 0, &Hello { client_id: client as u64, min_version: 1, max_version: PROTOCOL_VERSION });
        debug_assert!(encoded.is_ok());
        conn.receive(&hello);
        if let FrameCheck::Complete(header) = conn.rx.check() {
            let admitted = conn.dispatch.admit(&header, conn.rx.payload(&header), 0, &self.welcome, &mut conn.out);
            debug_assert_eq!(admitted, Ok(Admitted::Welcomed));
            conn.rx.consume(&header);
        }
        conn.out.clear();
        self.conns.push(conn);
        self.conns.len() - 1
    }

    /// Client of connection `c` sends a frame of `requests`.
    ///
    /// # Errors
    /// A frame the server refused (the simulator only sends good ones).
    pub fn send(&mut self, c: usize, requests: Vec<Request>, now_ms: u64) -> Result<(), String> {
        let conn = &mut self.conns[c];
        let correlation = conn.next_correlation;
        conn.next_correlation += 1;
        let mut bytes = Vec::new();
        Encoder::default().requests(&mut bytes, correlation, &requests).map_err(|e| format!("cannot encode a frame: {e}"))?;
        conn.receive(&bytes);
        conn.sent.push_back(Sent { correlation, requests });
        self.serve(c, now_ms)
    }

    /// Whether connection `c` may send another frame.
    #[must_use]
    pub fn may_send(&self, c: usize) -> bool {
        self.conns[c].sent.len() < MAX_IN_FLIGHT as usize
    }

    /// Answers what connection `c` has received, as far as it can: a frame
    /// waiting for other cores goes on once their logs are durable far
    /// enough.
    ///
    /// # Errors
    /// A frame the server refused.
    pub fn serve(&mut self, c: usize, now_ms: u64) -> Result<(), String> {
        loop {
            if let Some(progress) = &self.conns[c].in_progress {
                let ready = progress.answers.iter().all(|(core, _, wait)| wait.is_none_or(|w| self.cores[*core].log().durable() >= w));
                if !ready {
                    return Ok(());
                }
                self.finish(c)?;
                continue;
            }
            let conn = &mut self.conns[c];
            let header = match conn.rx.check() {
                FrameCheck::Complete(header) => header,
                FrameCheck::Incomplete { .. } => return Ok(()),
                FrameCheck::Invalid(e) => return Err(format!("the simulator sent an invalid frame: {e}")),
            };
            let in_flight = conn.replies.frames();
            let me = conn.core;
            match conn.dispatch.admit(&header, conn.rx.payload(&header), in_flight, &self.welcome, &mut conn.out) {
                Ok(Admitted::Requests) => {}
                other => return Err(format!("frame {} refused: {other:?}", header.correlation)),
            }
            let now = now_ms;
            conn.dispatch
                .begin(&header, conn.rx.payload(&header), &mut self.cores[me], now)
                .map_err(|r| format!("frame refused: {r:?}"))?;
            let outgoing: Vec<(usize, CoreMsg)> = conn.dispatch.outgoing().collect();
            let mut answers = Vec::with_capacity(outgoing.len());
            for (to, msg) in outgoing {
                let (answered, wait) = answer(&mut self.cores[to], &msg).ok_or("a frame sent a metrics message")?;
                answers.push((to, answered, wait));
            }
            self.conns[c].in_progress = Some(InProgress { header, now_ms: now, answers });
        }
    }

    /// The frame of connection `c` in progress has every answer: encode its
    /// replies and queue them behind the log sequence they wait for.
    fn finish(&mut self, c: usize) -> Result<(), String> {
        let conn = &mut self.conns[c];
        let Some(progress) = conn.in_progress.take() else { return Ok(()) };
        for (from, answered, _) in progress.answers {
            conn.dispatch.arrived(from, answered);
        }
        let header = progress.header;
        let requests = codec::access_requests(conn.rx.payload(&header), &header).map_err(|e| format!("re-reading a frame: {e}"))?;
        let me = conn.core;
        conn.dispatch
            .finish(&header, requests, &mut self.cores[me], 1, progress.now_ms, &mut conn.out)
            .map_err(|r| format!("frame refused at the end: {r:?}"))?;
        conn.rx.consume(&header);
        let wait = conn.dispatch.take_wait().unwrap_or(0);
        conn.replies.push(conn.out.len(), wait, 1, ());
        Ok(())
    }

    /// The replies connection `c` may receive now (durable far enough), as
    /// `(requests, replies)` per frame.
    ///
    /// # Errors
    /// Replies that do not decode or answer no frame sent.
    pub fn receive(&mut self, c: usize) -> Result<Vec<Answered>, String> {
        let conn = &mut self.conns[c];
        let durable = self.cores[conn.core].log().durable();
        let upto = conn.replies.release(durable, |_| {});
        let mut answered = Vec::new();
        let mut at = 0;
        while at < upto {
            let header = match frame::check(&conn.out[at..upto], &FrameLimits::WIRE_MAX) {
                FrameCheck::Complete(h) => h,
                other => return Err(format!("replies are not a frame: {other:?}")),
            };
            if header.kind != FrameKind::Replies {
                return Err(format!("a {:?} frame where replies were expected", header.kind));
            }
            let replies = codec::decode_replies(frame::payload(&conn.out[at..upto], &header), &header).map_err(|e| e.to_string())?;
            let sent = conn.sent.pop_front().ok_or("replies to a frame never sent")?;
            if sent.correlation != header.correlation {
                return Err(format!("replies to frame {} where {} was next", header.correlation, sent.correlation));
            }
            answered.push((sent.requests, replies));
            at += header.frame_len();
        }
        if upto > 0 {
            conn.out.drain(..upto);
            conn.replies.written(upto);
        }
        Ok(answered)
    }

    /// Core `core`'s flusher runs once: everything appended so far becomes
    /// durable. `Err` when the flush failed (the runtime aborts then).
    ///
    /// # Errors
    /// The failed flush.
    pub fn flush(&mut self, core: usize) -> Result<(), String> {
        let log = self.cores[core].log_mut();
        if let Some(plan) = log.flush_target() {
            let path = log.current().path.clone();
            plan.run(&path).map_err(|e| format!("flush of core {core} failed: {e}"))?;
            log.flushed(&plan);
        }
        Ok(())
    }

    /// Core `core`'s segment preparer runs once, if its log wants a segment.
    pub fn prepare(&mut self, core: usize) {
        let log = self.cores[core].log_mut();
        drop(log.take_retired());
        if let Some((dir, bytes)) = log.wants_prepared() {
            if let Ok(path) = crate::log::segment::prepare(&*self.storage, &dir, bytes, Prepare::Allocate) {
                log.set_prepared(path);
            }
        }
    }

    /// Core `core`'s checkpoint task takes one step, as the runtime's does
    /// between the core's other work: start a checkpoint, write one shard,
    /// finish and sync the file, or (once the log is durable up to its
    /// end) publish it.
    pub fn checkpoint(&mut self, core: usize) -> CheckpointStep {
        let Some(slot) = self.checkpoints.get_mut(core) else { return CheckpointStep::Failed };
        let c = &self.cores[core];
        let state = slot.get_or_insert_with(|| Checkpointing { taking: Taking::new(Vec::new()), writer: None, written: None });
        let step = if let Some((_, end)) = &state.written {
            if c.log().durable() < *end {
                return CheckpointStep::Waiting;
            }
            match state.written.take().map(|(w, _)| w.publish()) {
                Some(Ok(_)) => CheckpointStep::Published,
                _ => CheckpointStep::Failed,
            }
        } else if let Some(writer) = &mut state.writer {
            match state.taking.next_entry(c) {
                Some(entry) => match writer.add(&entry) {
                    Ok(()) => {
                        state.taking.give_back(entry.image.orders);
                        return CheckpointStep::Progress;
                    }
                    Err(_) => CheckpointStep::Failed,
                },
                None => {
                    let header = state.taking.header(c, 0);
                    match state.writer.take().map(|w| w.finish(header)) {
                        Some(Ok(written)) => {
                            state.written = Some((written, header.end_sequence));
                            return CheckpointStep::Progress;
                        }
                        _ => CheckpointStep::Failed,
                    }
                }
            }
        } else {
            match CheckpointWriter::create(c.log().dir(), Arc::clone(&self.storage)) {
                Ok(writer) => {
                    state.writer = Some(writer);
                    return CheckpointStep::Progress;
                }
                Err(_) => CheckpointStep::Failed,
            }
        };
        *slot = None;
        step
    }

    /// Core `core`'s archiver takes one step, as the runtime's does: with
    /// nothing written, it takes the cold orders of one shard (`pick`
    /// chooses which) at `now_ms` and writes them to its archive, without a
    /// sync; with a write pending, it syncs the archive and, if that
    /// succeeds, lets the orders leave memory. A crash between the steps
    /// drops the unsynced records (and memory with them).
    pub fn archive(&mut self, core: usize, now_ms: u64, pick: usize) -> ArchiveStep {
        let Some(c) = self.cores.get_mut(core) else { return ArchiveStep::Failed };
        let Some(slot) = self.archiving.get_mut(core) else { return ArchiveStep::Failed };
        match slot.take() {
            None => {
                let local = pick % c.local_shards().max(1);
                let Some(job) = c.shard_at(local).and_then(|shard| ToArchive::take(local, shard, now_ms)) else {
                    return ArchiveStep::Nothing;
                };
                if job.archive.write(&job.eviction.archived).is_err() {
                    return ArchiveStep::Failed;
                }
                *slot = Some(job);
                ArchiveStep::Written
            }
            Some(mut job) => {
                if job.archive.sync(&*self.storage).is_err() {
                    return ArchiveStep::Failed;
                }
                if let Some(shard) = c.shard_at_mut(job.shard) {
                    shard.evict(&mut job.eviction, usize::MAX);
                }
                ArchiveStep::Evicted(job.eviction.archived.len())
            }
        }
    }

    /// Core `core`'s retention takes one step, as the runtime's pass does
    /// on its helper thread but cut in pieces: with no pass in progress, it
    /// plans one at `now_ms` (the segments below the recovery floor that the
    /// shape's retention lets go) and deletes the first `1 + pick % n` of
    /// them; then it deletes the rest, and once all are gone it syncs the
    /// directory and tells the log writer. A crash in between brings back
    /// whatever no directory sync covered (a segment rotation syncs the
    /// same directory, so a prefix of the deletions may stay).
    ///
    /// `before_removal` sees the plan before its first deletion (the
    /// simulator keeps the records that will go, to check a replay of the
    /// whole history later).
    pub fn retain(&mut self, core: usize, now_ms: u64, pick: usize, before_removal: impl FnOnce(&Plan)) -> RetainStep {
        let Some(c) = self.cores.get_mut(core) else { return RetainStep::Failed };
        let Some(slot) = self.retaining.get_mut(core) else { return RetainStep::Failed };
        match slot.take() {
            None => {
                let Ok(mut plan) = Plan::new(c.log().dir(), self.shape.retention, now_ms) else { return RetainStep::Failed };
                if plan.doomed.is_empty() {
                    return RetainStep::Nothing;
                }
                before_removal(&plan);
                let n = 1 + pick % plan.doomed.len();
                match plan.remove(n) {
                    Ok(n) => {
                        *slot = Some(plan);
                        RetainStep::Removed(n)
                    }
                    Err(_) => RetainStep::Failed,
                }
            }
            Some(mut plan) if !plan.all_removed() => match plan.remove(usize::MAX) {
                Ok(n) => {
                    *slot = Some(plan);
                    RetainStep::Removed(n)
                }
                Err(_) => RetainStep::Failed,
            },
            Some(plan) => match plan.finish(&self.storage) {
                Ok(removed) => {
                    c.log_mut().removed(removed.segments, removed.bytes, removed.oldest);
                    RetainStep::Finished(removed.segments)
                }
                Err(_) => RetainStep::Failed,
            },
        }
    }

    /// Expires what is due at `now_ms` on every core.
    pub fn tick(&mut self, now_ms: u64) {
        for core in &mut self.cores {
            core.expire_due(now_ms);
        }
    }

    /// The process dies: its cores (memory, mappings, open files) and
    /// connections are gone.
    pub fn halt(&mut self) {
        self.checkpoints.clear();
        self.archiving.clear();
        self.retaining.clear();
        self.conns.clear();
        self.cores.clear();
    }

    /// The shape this node runs.
    #[must_use]
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

impl Conn {
    fn receive(&mut self, bytes: &[u8]) {
        let spare = self.rx.spare(bytes.len());
        spare[..bytes.len()].copy_from_slice(bytes);
        self.rx.commit(bytes.len());
    }
}
