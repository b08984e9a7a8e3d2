//! The per-core state: the shards this core owns, its log writer and its
//! counters, and the rule that keeps memory and log in step.
//!
//! # The log-room rule
//!
//! The engine changes memory before its events are appended, so every
//! state change is preceded by making room in the log:
//! 1. due expiries are decided first, in steps of as many `OrderExpired`
//!    records as the current segment has room for (after
//!    [`LogWriter::ensure_room`] for at least one);
//! 2. a state-changing command then needs room for [`MAX_RECORD_LEN`]
//!    (with expiries done, a command emits at most one event);
//! 3. only then does the engine decide, and its events are appended, which
//!    cannot fail once the room is there.
//!
//! When the room cannot be made (`--max-log-bytes` reached, disk full), a
//! state-changing command is answered `log_full` with memory untouched, and
//! reads are answered from memory without expiring anything, so the log and
//! memory never diverge and the server keeps serving reads.
//!
//! A [`Core`] lives on its executor's thread only (shared by that core's
//! tasks through `Rc<RefCell<_>>`, borrowed for synchronous stretches and
//! never across an await): no `Arc`, no `Mutex`, no atomics on the order
//! path. Shard `s` belongs to core `s % cores` and sits at local index
//! `s / cores` here.

use std::cell::Cell;
use std::rc::Rc;

use orderd_protocol::message::{Aggregates, CoreStats};
use orderd_protocol::{Reply, Status, StockInfo};

use crate::engine::{Command, Event, Shard};
use crate::log::record::{record_len, MAX_RECORD_LEN};
use crate::log::{LogError, LogWriter};
use crate::runtime::metrics::CoreMetrics;
use crate::runtime::stream_budget::StreamTime;
use crate::runtime::stream_reader::ReadStats;
use crate::stream::aggregates::{self, Windows};
use crate::stream::SubscriberPositions;

/// The first and the longest wait before a log that could not grow is
/// asked to grow again, ms.
const GROW_BACKOFF_MIN_MS: u64 = 10;
const GROW_BACKOFF_MAX_MS: u64 = 1000;

/// Connection-level counters of a core (the shards count the orders).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Requests answered by this core's shards.
    pub requests: u64,
    /// Requests this core's connections forwarded to other cores.
    pub forwarded: u64,
    /// Open client connections.
    pub connections: u32,
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Client connections refused past `--max-connections`.
    pub connections_refused: u64,
    /// State changes refused with `log_full`.
    pub log_full: u64,
    /// Attempts to grow the log (create its next segment) that failed: a
    /// full disk or an I/O error, retried with a backoff.
    pub log_grow_failures: u64,
    /// Subscriptions served by this core's connections.
    pub subscriptions: u32,
    /// Events of other nodes' shards applied to this node's copies
    /// (replication, as a follower).
    pub replicated: u64,
}

/// What the metrics show about a core's checkpoints (`runtime::checkpoints`
/// keeps it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStatus {
    /// Checkpoints published since the start.
    pub taken: u64,
    /// Checkpoints that failed since the start.
    pub failed: u64,
    /// The newest checkpoint's sequence (replay starts there), `0` for none.
    pub sequence: u64,
    /// When it was published, ms since the Unix epoch (`0`: none since the start).
    pub at_ms: u64,
    /// How long it took, from the first shard to the rename, in µs.
    pub duration_us: u64,
    /// Its size.
    pub bytes: u64,
    /// The longest a shard's copy held the core, in µs.
    pub stall_us: u64,
    /// Requests waiting for the next checkpoint (`orderd admin checkpoint`).
    pub requested: u32,
    /// Whether one is being taken now.
    pub running: bool,
}

/// One core's shards, log and counters.
pub struct Core {
    index: usize,
    cores: usize,
    shard_count: u32,
    shards: Vec<Shard>,
    /// This core's log; every event of its shards is appended here.
    log: LogWriter,
    /// The events of the latest command, drained into the log at once.
    events: Vec<Event>,
    /// Whether the latest refusal for lack of log room was reported.
    full_reported: bool,
    /// After a failed attempt to grow the log: no new attempt before this
    /// time (ms), and the current backoff (ms).
    grow_retry_at_ms: u64,
    grow_backoff_ms: u64,
    /// Orders placed per second, for the live aggregates.
    windows: Windows,
    /// Counters for the stats request.
    pub counters: Counters,
    /// Where this core's subscriptions are (the subscriber-lag metric).
    pub subscribers: SubscriberPositions,
    /// Counters and histograms for the metrics endpoint (request frames
    /// are counted there).
    pub metrics: CoreMetrics,
    /// Segment files of the log when the core started.
    segments_at_start: u64,
    /// This core's checkpoints (`runtime::checkpoints`).
    pub checkpoint: CheckpointStatus,
    /// The order stream's time on this core (`runtime::stream_budget`).
    pub stream_time: Rc<Cell<StreamTime>>,
    /// What this core's stream reader did (`runtime::stream_reader`).
    pub stream_reads: Rc<Cell<ReadStats>>,
    /// In a cluster, the shards this node owns by the map (`None`: a
    /// single node owns them all).
    pub cluster: Option<std::sync::Arc<crate::cluster::OwnedShards>>,
    /// The bundles of shards moved to this core, removed by the
    /// checkpoints once no kept checkpoint needs them.
    pub bundles: crate::log::handoff::Sweep,
    /// A shard of this core bundled for a move while it serves, and its
    /// events since (`runtime::handoff`).
    pub exporting: Option<Exporting>,
    /// In a cluster that keeps several copies: where this core's events go
    /// (`runtime::replication`).
    pub replication: crate::runtime::replication::Replication,
}

/// Most events a shard being moved may log between its bundle and its
/// freeze (its tail); past it the move is refused at the freeze.
pub const MAX_TAIL_EVENTS: usize = 1 << 20;

/// A shard bundled for a move while it still serves: its events since.
#[derive(Debug)]
pub struct Exporting {
    /// The shard.
    pub shard: u32,
    /// The move.
    pub move_id: u64,
    /// Its events since the bundle's image, in log order.
    pub events: Vec<Event>,
    /// More than [`MAX_TAIL_EVENTS`] came.
    pub overflow: bool,
    /// When the bundle was taken, ms since the Unix epoch.
    pub since_ms: u64,
}

/// A prepared move not frozen within this long was abandoned by its
/// command: its kept events and bundle are dropped.
pub const EXPORT_LIMIT_MS: u64 = 10 * 60 * 1000;

/// The shard an event is about.
fn shard_of_event(event: &Event, shards: u32) -> u32 {
    use orderd_protocol::shard::{shard_of_order, shard_of_product};
    match *event {
        Event::ProductUpserted { upsert, .. } => shard_of_product(upsert.product, shards),
        Event::StockAdjusted { product, .. } => shard_of_product(product, shards),
        Event::OrderPlaced { order_id, .. }
        | Event::OrderPaid { order_id, .. }
        | Event::OrderCancelled { order_id, .. }
        | Event::OrderExpired { order_id, .. } => shard_of_order(order_id),
    }
}

/// The room one `OrderExpired` record takes.
const EXPIRED_RECORD_LEN: usize = record_len(&Event::OrderExpired {
    time_ms: 0,
    order_id: 0,
    facts: crate::engine::OrderFacts { user: 0, product: 0, unit_price_cents: 0, qty: 0 },
});

/// Most expiries decided per step (bounds one step's work).
const EXPIRY_STEP: usize = 1024;

impl Core {
    /// Core `index` of `cores`, owning `shards` (the shards `s` with
    /// `s % cores == index`, in increasing order, recovered from `log`).
    #[must_use]
    pub fn new(index: usize, cores: usize, shard_count: u32, shards: Vec<Shard>, log: LogWriter) -> Self {
        debug_assert!(shards.iter().enumerate().all(|(i, s)| u32::from(s.config().shard_id) as usize == index + i * cores));
        let segments_at_start = count_segments(&log);
        Core {
            index,
            cores,
            shard_count,
            shards,
            log,
            events: Vec::with_capacity(64),
            full_reported: false,
            grow_retry_at_ms: 0,
            grow_backoff_ms: 0,
            windows: Windows::default(),
            counters: Counters::default(),
            subscribers: SubscriberPositions::default(),
            stream_time: Rc::default(),
            stream_reads: Rc::default(),
            metrics: CoreMetrics::default(),
            segments_at_start,
            checkpoint: CheckpointStatus::default(),
            cluster: None,
            bundles: crate::log::handoff::Sweep::default(),
            exporting: None,
            replication: crate::runtime::replication::Replication::default(),
        }
    }

    /// Follows the cluster map's followers if it changed since the last
    /// look (before any state change: a shard this node just took over
    /// must not take one before its events go to its followers).
    pub fn follow_replication(&mut self) {
        let Some(cluster) = &self.cluster else { return };
        if cluster.version() <= self.replication.version() {
            return;
        }
        let (map, _) = cluster.map();
        if self.replication.follow(&map, cluster.node(), self.index, self.cores, self.shards.len(), now_ms()) {
            tracing::debug!(core = self.index, version = map.version, links = self.replication.links.len(), "replication follows the map");
        }
    }

    /// Applies a leader's replicated `event` of `shard` at `position` to
    /// this node's copy, and logs it as a tail event (replayed at
    /// recovery, not streamed). `Ok(false)`: the copy had it already.
    ///
    /// # Errors
    /// The status to answer and its detail: `not_owner` (another core's
    /// shard), `replica_gap` (the event does not follow the copy, or does
    /// not apply to it: the copy must be made again), `log_full`.
    pub fn apply_replicated(&mut self, shard: u32, position: u64, event: &Event, now_ms: u64) -> Result<bool, (Status, u64)> {
        let local = self.local_of(shard).ok_or((Status::NotOwner, self.owner_of(shard) as u64))?;
        let have = self.shards[local].position();
        let gap = (Status::ReplicaGap, (u64::from(shard) << 48) | (have & ((1 << 48) - 1)));
        if position <= have {
            return Ok(false);
        }
        if position != have + 1 || shard_of_event(event, self.shard_count) != shard {
            return Err(gap);
        }
        if !self.room_for(record_len(event), now_ms) {
            return Err((Status::LogFull, 0));
        }
        if let Err(e) = self.shards[local].apply_event(event) {
            tracing::error!(shard, position, error = %e, "a replicated event does not apply to this copy: it must be made again");
            return Err(gap);
        }
        if let Err(e) = self.log.append_tail_event(event) {
            panic!(
                "core {}: appending a replicated event after making room failed ({e}); stopping so that memory and log cannot diverge",
                self.index
            );
        }
        Ok(true)
    }

    /// Whether this node serves `shard`: always for a single node; in a
    /// cluster, when its map makes this node the shard's owner.
    #[must_use]
    pub fn serves(&self, shard: u32) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.serves(shard))
    }

    /// The reply to a `ClusterMap` request: the map this node follows, or
    /// on a server that is not in a cluster an empty map of version 0 (an
    /// answer, not a refusal: the SDK asks at every connect, and a refusal
    /// would count in the rejection metrics and their alert).
    #[must_use]
    pub fn cluster_map_reply(&self) -> orderd_protocol::Reply {
        match &self.cluster {
            Some(c) => orderd_protocol::Reply::Cluster((*c.info()).clone()),
            None => orderd_protocol::Reply::Cluster(orderd_protocol::message::ClusterMapInfo::default()),
        }
    }

    /// Shards of this core in a move: frozen to be handed away, or whose
    /// bundle is arriving.
    #[must_use]
    pub fn moves_in_progress(&self) -> u64 {
        let Some(cluster) = &self.cluster else { return 0 };
        let mine = |shard: u32| shard as usize % self.cores == self.index;
        let frozen = cluster.frozen_shards().into_iter().filter(|&(s, _)| mine(s)).count();
        let incoming = cluster.moves.lock().map_or(0, |m| m.incoming.keys().filter(|&&s| mine(s)).count());
        (frozen + incoming) as u64
    }

    /// The highest epoch among the shards this core leads (`0`: none, or
    /// not in a cluster).
    #[must_use]
    pub fn leader_epoch(&self) -> u64 {
        let Some(cluster) = &self.cluster else { return 0 };
        let (map, _) = cluster.map();
        (0..self.shards.len())
            .map(|local| (self.index + local * self.cores) as u32)
            .filter(|&s| cluster.owns(s))
            .map(|s| map.epoch_of(s))
            .max()
            .unwrap_or(0)
    }

    /// The cluster map version this node holds (`0`: not in a cluster).
    #[must_use]
    pub fn map_version(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.version())
    }

    /// This core's index.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of cores.
    #[must_use]
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Number of shards in the server.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The core that owns shard `shard`.
    #[must_use]
    pub fn owner_of(&self, shard: u32) -> usize {
        shard as usize % self.cores
    }

    /// Shard `shard`, if this core owns it (read only: checks, tests).
    #[must_use]
    pub fn shard(&self, shard: u32) -> Option<&Shard> {
        if self.owner_of(shard) != self.index {
            return None;
        }
        self.shards.get(shard as usize / self.cores)
    }

    /// The shard at local index `local` (shard `index + local * cores`).
    #[must_use]
    pub fn shard_at(&self, local: usize) -> Option<&Shard> {
        self.shards.get(local)
    }

    /// Number of shards this core owns.
    #[must_use]
    pub fn local_shards(&self) -> usize {
        self.shards.len()
    }

    /// The log writer.
    #[must_use]
    pub fn log(&self) -> &LogWriter {
        &self.log
    }

    /// Segment files of this core's log: those found at start plus those
    /// created since.
    #[must_use]
    pub fn log_segments(&self) -> u64 {
        (self.segments_at_start + self.log.segments_created()).saturating_sub(self.log.segments_removed())
    }

    /// The log writer, mutably (the flusher marks what is durable).
    pub fn log_mut(&mut self) -> &mut LogWriter {
        &mut self.log
    }

    /// Warms the cache for `cmd` on shard `shard` if this core owns it
    /// ([`Shard::warm`](crate::engine::Shard::warm)); changes nothing.
    pub fn warm(&self, shard: u32, cmd: &Command) {
        if self.owner_of(shard) == self.index {
            if let Some(s) = self.shards.get(shard as usize / self.cores) {
                s.warm(cmd);
            }
        }
    }

    /// Apply `cmd` to shard `shard`, which this core must own. Returns the
    /// reply and, for a successful state change (or an idempotent answer
    /// about one), the log sequence the reply must wait for: it may leave
    /// once every record below it is durable.
    pub fn apply(&mut self, shard: u32, cmd: &Command, now_ms: u64) -> (Reply, Option<u64>) {
        if self.owner_of(shard) != self.index {
            return (Reply::rejected(Status::NotOwner, self.owner_of(shard) as u64), None);
        }
        let local = shard as usize / self.cores;
        if local >= self.shards.len() {
            return (Reply::rejected(Status::Internal, 0), None);
        }
        if !self.serves(shard) {
            // Forwarded by another core before a move froze the shard, or
            // before this node followed a map that gave it away.
            return (Reply::rejected(Status::Moved, self.map_version()), None);
        }
        self.counters.requests += 1;
        let writes = cmd.changes_state();
        if self.cluster.is_some() {
            self.follow_replication();
            if writes && self.replication.refuses(local, now_ms) {
                // Fewer copies than promised: refused, not acknowledged
                // with fewer (a retry of a change made before gets its
                // answer, which waits for the copies like the change).
                let reply = self.shards[local].answer_without_change(cmd, now_ms, Status::ReplicaUnavailable);
                let reply = match reply {
                    Reply::Rejected(r) if r.code == Status::ReplicaUnavailable.code() => {
                        Reply::rejected(Status::ReplicaUnavailable, crate::runtime::replication::RETRY_AFTER_MS)
                    }
                    other => other,
                };
                let wait = (!matches!(reply, Reply::Rejected(_))).then(|| self.log.next_sequence());
                return (reply, wait);
            }
        }
        let caught_up = self.expire_shard(local, now_ms);
        if !caught_up || (writes && !self.room_for(MAX_RECORD_LEN, now_ms)) {
            let reply = self.shards[local].answer_without_change(cmd, now_ms, Status::LogFull);
            if matches!(reply, Reply::Rejected(r) if r.code == Status::LogFull.code()) {
                self.counters.log_full += 1;
            }
            // An idempotent answer about a state change waits like the change.
            let wait = (writes && !matches!(reply, Reply::Rejected(_))).then(|| self.log.next_sequence());
            return (reply, wait);
        }
        let reply = self.shards[local].apply(cmd, now_ms, &mut self.events);
        self.append_events(local, now_ms);
        let wait = (writes && !matches!(reply, Reply::Rejected(_))).then(|| self.log.next_sequence());
        (reply, wait)
    }

    /// The local index of `shard` if this core holds it.
    fn local_of(&self, shard: u32) -> Option<usize> {
        let local = shard as usize / self.cores;
        (shard as usize % self.cores == self.index && local < self.shards.len()).then_some(local)
    }

    /// Replaces shard `shard` by `installed` (a moved shard, built from its
    /// bundle, with its archive attached, and `tail` — the changes it took
    /// after its bundle, if any — applied already), recorded in the log
    /// first: `ShardInstalled`, then the tail's events (recovery replays
    /// them on the bundle). Returns the log sequence to wait for before the
    /// install may be relied on. If the log runs out of room midway, the
    /// shard is not swapped in (the records written describe a copy the map
    /// never names).
    ///
    /// # Errors
    /// The status to answer: `not_owner` (another core's shard),
    /// `log_full` (no room for the records).
    pub fn install_shard(&mut self, shard: u32, installed: Shard, move_id: u64, tail: &[Event], now_ms: u64) -> Result<u64, Status> {
        let local = self.local_of(shard).ok_or(Status::NotOwner)?;
        let control = crate::log::handoff::Control::ShardInstalled { time_ms: now_ms, shard: shard as u16, move_id };
        if !self.room_for(crate::log::record::control_record_len(), now_ms) {
            return Err(Status::LogFull);
        }
        let sequence = self.log.append_control(&control).map_err(|_| Status::LogFull)?;
        for event in tail {
            if !self.room_for(record_len(event), now_ms) {
                return Err(Status::LogFull);
            }
            self.log.append_tail_event(event).map_err(|_| Status::LogFull)?;
        }
        self.shards[local] = installed;
        self.bundles.tracked.push((shard as u16, move_id, sequence));
        Ok(self.log.next_sequence())
    }

    /// Empties shard `shard` (handed to another node), recorded in the log
    /// first (`ShardReleased`); its archive stays attached. Returns the log
    /// sequence to wait for.
    ///
    /// # Errors
    /// As [`Core::install_shard`].
    pub fn release_shard(&mut self, shard: u32, move_id: u64, now_ms: u64) -> Result<u64, Status> {
        let local = self.local_of(shard).ok_or(Status::NotOwner)?;
        let control = crate::log::handoff::Control::ShardReleased { time_ms: now_ms, shard: shard as u16, move_id };
        if !self.room_for(crate::log::record::control_record_len(), now_ms) {
            return Err(Status::LogFull);
        }
        self.log.append_control(&control).map_err(|_| Status::LogFull)?;
        let old = &self.shards[local];
        let archive = old.archive().cloned();
        let mut empty = Shard::new(*old.config());
        if let Some(archive) = archive {
            // An empty shard reads nothing from its archive.
            let _ = empty.attach_archive(archive);
        }
        self.shards[local] = empty;
        Ok(self.log.next_sequence())
    }

    /// Releases the copies of shards this node neither owns nor is being
    /// given (the membership thread flags them: handed away without their
    /// release, or installed for an abandoned move): the log records
    /// `ShardReleased` (no reply waits on it: if it is lost in a crash,
    /// the flag comes again). Returns how many it released.
    pub fn release_handed_away(&mut self, now_ms: u64) -> usize {
        let Some(cluster) = self.cluster.clone() else { return 0 };
        if let Some(export) = self.exporting.as_ref().filter(|e| now_ms.saturating_sub(e.since_ms) > EXPORT_LIMIT_MS) {
            tracing::warn!(shard = export.shard, move_id = export.move_id, "a prepared move was never frozen: dropping its bundle");
            if let Ok(mut moves) = cluster.moves.lock() {
                moves.out.remove(&export.shard);
            }
            self.exporting = None;
        }
        let mut released = 0;
        for local in 0..self.shards.len() {
            let shard = (self.index + local * self.cores) as u32;
            // A flag decided before the map made this node a follower of
            // the shard (or before a copy of it was accepted here) is stale.
            if cluster.take_release(shard) && !cluster.owns(shard) && !cluster.keeps_copy(shard) && !self.shards[local].is_blank() {
                match self.release_shard(shard, cluster.version(), now_ms) {
                    Ok(_) => {
                        cluster.unfreeze(shard);
                        released += 1;
                        tracing::info!(shard, "released the copy of a shard this node does not own");
                    }
                    Err(status) => {
                        // The next look of the membership thread flags it again.
                        tracing::warn!(shard, status = %status, "cannot release a shard handed away; retrying");
                    }
                }
            }
        }
        released
    }

    /// Expire the placed orders whose payment window has passed, as far as
    /// the log has room. Returns how many expired.
    pub fn expire_due(&mut self, now_ms: u64) -> usize {
        let before = self.log.next_sequence();
        for local in 0..self.shards.len() {
            // In a cluster, a shard this node does not serve (another's, one
            // being moved away or installed here) expires nothing: its
            // owner's log decides its expiries.
            if !self.serves((self.index + local * self.cores) as u32) {
                continue;
            }
            if self.shards[local].next_expiry().is_some_and(|t| t <= now_ms) {
                self.expire_shard(local, now_ms);
            }
        }
        (self.log.next_sequence() - before) as usize
    }

    /// Expires what is due on local shard `local`, one log-room step at a
    /// time. `false` when the log has no room and something may still be due.
    fn expire_shard(&mut self, local: usize, now_ms: u64) -> bool {
        loop {
            let Some(shard) = self.shards.get_mut(local) else { return true };
            let now = now_ms.max(shard.clock_ms());
            if shard.next_expiry().is_none_or(|t| t > now) {
                return true;
            }
            if !self.room_for(EXPIRED_RECORD_LEN, now) {
                return false;
            }
            let room = self.log.room() / EXPIRED_RECORD_LEN;
            let step = room.min(EXPIRY_STEP);
            let expired = self.shards[local].expire_due_at_most(now_ms, step, &mut self.events);
            self.append_events(local, now_ms);
            if expired < step {
                return true;
            }
        }
    }

    /// Makes room for `bytes` of records at time `now_ms`; reports the
    /// first refusal. A log that could not grow (a full disk, an I/O error
    /// creating its next segment) is not asked again before a backoff
    /// (10 ms doubling to 1 s): each attempt is a flush and a file creation
    /// on the core, and retrying them for every refused change made a full
    /// disk a near-outage (issue 21). Refusals meanwhile cost what the
    /// `--max-log-bytes` bound's do.
    fn room_for(&mut self, bytes: usize, now_ms: u64) -> bool {
        if now_ms < self.grow_retry_at_ms && !self.log.fits(bytes) {
            return false;
        }
        match self.log.ensure_room(bytes) {
            Ok(()) => {
                self.full_reported = false;
                self.grow_backoff_ms = 0;
                self.grow_retry_at_ms = 0;
                true
            }
            Err(e) => {
                let cannot_grow = !e.is_sync_failure() && !matches!(e, LogError::BoundReached { .. });
                if cannot_grow {
                    self.counters.log_grow_failures += 1;
                    self.grow_backoff_ms = (self.grow_backoff_ms * 2).clamp(GROW_BACKOFF_MIN_MS, GROW_BACKOFF_MAX_MS);
                    self.grow_retry_at_ms = now_ms.saturating_add(self.grow_backoff_ms);
                }
                if !self.full_reported {
                    self.full_reported = true;
                    if e.is_sync_failure() {
                        tracing::error!(core = self.index, error = %e, "a sync of the log failed: state changes are answered log_full until the server stops");
                    } else if e.is_full() {
                        tracing::warn!(core = self.index, error = %e, "log full: state changes are answered log_full, reads go on");
                    } else {
                        tracing::error!(core = self.index, error = %e, "log cannot grow: state changes are answered log_full, reads go on");
                    }
                }
                false
            }
        }
    }

    /// Appends the events of the latest decision. Room was made before the
    /// decision, so this cannot fail; if it did, memory would hold a change
    /// the log does not, and stopping is the only safe answer (recovery
    /// then rebuilds memory from the log).
    fn append_events(&mut self, local: usize, now_ms: u64) {
        // The events are local shard `local`'s, the last at its position now.
        let replicates = self.replication.replicates(local);
        let shard = (self.index + local * self.cores) as u32;
        let first_position = (self.shards[local].position() + 1).saturating_sub(self.events.len() as u64);
        for (i, event) in self.events.drain(..).enumerate() {
            if let Event::OrderPlaced { time_ms, request, .. } = event {
                self.windows.record(time_ms, request.unit_price_cents.saturating_mul(u64::from(request.qty)));
            }
            if let Some(export) = self.exporting.as_mut() {
                if shard_of_event(&event, self.shard_count) == export.shard {
                    if export.events.len() < MAX_TAIL_EVENTS {
                        export.events.push(event);
                    } else {
                        export.overflow = true;
                    }
                }
            }
            match self.log.append(&event) {
                Ok(sequence) => {
                    if replicates {
                        self.replication.push(local, shard, first_position + i as u64, sequence, &event, now_ms);
                    }
                }
                Err(e) => panic!(
                    "core {}: appending an event after making room failed ({e}); stopping so that memory and log cannot diverge",
                    self.index
                ),
            }
        }
    }

    /// This core's part of the live aggregates at `now_ms`.
    #[must_use]
    pub fn aggregates(&self, now_ms: u64, top: u32) -> Aggregates {
        aggregates::core_part(&self.shards, &self.windows, now_ms, top)
    }

    /// The memory this core's shards' tables hold, by table.
    #[must_use]
    pub fn table_bytes(&self) -> crate::engine::TableBytes {
        let mut total = crate::engine::TableBytes::default();
        for shard in &self.shards {
            total += shard.table_bytes();
        }
        total
    }

    /// This core's products with an id above `after`, by id, at most `limit`.
    #[must_use]
    pub fn products_after(&self, after: u64, limit: usize) -> Vec<StockInfo> {
        let mut products = Vec::new();
        for shard in &self.shards {
            shard.for_each_product(|id, product| {
                if id > after {
                    products.push(product.stock_info(id));
                }
            });
        }
        products.sort_unstable_by_key(|p| p.product);
        products.truncate(limit);
        products
    }

    /// Orders this core's shards hold in memory.
    #[must_use]
    pub fn orders_in_memory(&self) -> u64 {
        self.shards.iter().map(|s| s.orders_in_memory() as u64).sum()
    }

    /// Orders this core's shards moved to their archives.
    #[must_use]
    pub fn orders_archived(&self) -> u64 {
        self.shards.iter().map(Shard::orders_archived).sum()
    }

    /// Bytes of this core's shards' archive files.
    #[must_use]
    pub fn archive_bytes(&self) -> u64 {
        self.shards.iter().filter_map(|s| s.archive_bytes()).sum()
    }

    /// Keys of archived orders this core's shards remember.
    #[must_use]
    pub fn cold_keys(&self) -> u64 {
        self.shards.iter().map(|s| s.cold_keys() as u64).sum()
    }

    /// Whether a shard holds more than half of its in-memory order bound:
    /// a checkpoint is due, to move its cold orders out before the bound
    /// refuses new ones.
    #[must_use]
    pub fn memory_pressed(&self) -> bool {
        self.shards.iter().any(|s| s.orders_in_memory() > s.config().effective_max_orders() as usize / 2)
    }

    /// The shard at local position `local`, to change (evictions).
    pub fn shard_at_mut(&mut self, local: usize) -> Option<&mut Shard> {
        self.shards.get_mut(local)
    }

    /// This core's storage: its newest checkpoint, the log it retains, its
    /// orders in memory and archived, the memory of its tables (the
    /// numbers of the metrics of the same names).
    #[must_use]
    pub fn storage(&self) -> orderd_protocol::message::CoreStorage {
        let log = self.log();
        let tables = self.table_bytes();
        orderd_protocol::message::CoreStorage {
            checkpoint_sequence: self.checkpoint.sequence,
            checkpoint_at_ms: self.checkpoint.at_ms,
            checkpoint_duration_us: self.checkpoint.duration_us,
            checkpoint_bytes: self.checkpoint.bytes,
            log_oldest_sequence: log.oldest_sequence(),
            log_next_sequence: log.next_sequence(),
            log_file_bytes: log.files_bytes(),
            log_max_bytes: log.max_log_bytes(),
            orders_in_memory: self.orders_in_memory(),
            orders_archived: self.orders_archived(),
            cold_keys: self.cold_keys(),
            archive_bytes: self.archive_bytes(),
            memory_order_records: tables.order_records,
            memory_key_index: tables.key_index,
            memory_cold_keys: tables.cold_keys,
            memory_deadlines: tables.deadlines,
            memory_holdings: tables.holdings,
            memory_catalogue: tables.catalogue,
            core: self.index as u16,
            log_segments: u32::try_from(self.log_segments()).unwrap_or(u32::MAX),
        }
    }

    /// This core's counters, summed over its shards.
    #[must_use]
    pub fn stats(&self) -> CoreStats {
        let mut s = CoreStats {
            requests: self.counters.requests,
            frames: self.metrics.frames(),
            forwarded: self.counters.forwarded,
            core: self.index as u16,
            connections: self.counters.connections,
            shards: self.shards.len() as u32,
            log_bytes: self.log.record_bytes(),
            ..CoreStats::default()
        };
        for shard in &self.shards {
            let st = shard.stats();
            s.orders_placed += st.orders_placed;
            s.orders_rejected += st.orders_rejected;
            s.live_orders += st.live_orders;
            s.gmv_cents += st.gmv_cents;
        }
        s
    }
}

/// Splits recovered shards (indexed by shard id) by the core that owns
/// them: shard `s` goes to core `s % cores`, in increasing order.
#[must_use]
pub fn split_by_core(all: Vec<Shard>, cores: usize) -> Vec<Vec<Shard>> {
    let mut by_core: Vec<Vec<Shard>> = (0..cores.max(1)).map(|_| Vec::new()).collect();
    for (s, shard) in all.into_iter().enumerate() {
        by_core[s % cores.max(1)].push(shard);
    }
    by_core
}

/// The cores of a server built from what recovery handed back: the shards
/// (indexed by shard id) and one log writer per core.
#[must_use]
pub fn cores_from_recovery(all: Vec<Shard>, writers: Vec<LogWriter>) -> Vec<Core> {
    let cores = writers.len();
    let shard_count = all.len() as u32;
    split_by_core(all, cores)
        .into_iter()
        .zip(writers)
        .enumerate()
        .map(|(i, (shards, log))| Core::new(i, cores, shard_count, shards, log))
        .collect()
}

/// The segment files in the directory of `log`'s current segment (read
/// once, at start, off the order path; at least the current one).
fn count_segments(log: &LogWriter) -> u64 {
    let Some(dir) = log.current().path.parent() else { return 1 };
    let counted = std::fs::read_dir(dir).map_or(0, |entries| {
        entries.flatten().filter(|e| e.file_name().to_str().and_then(crate::log::segment::parse_segment_file_name).is_some()).count()
    });
    (counted as u64).max(1)
}

/// Milliseconds since the Unix epoch: the coarse clock the runtime reads
/// once per frame (or timer tick) and hands to the engine; the same clock
/// the SDK stamps idempotency keys with, so a key made on this machine is
/// never ahead of the engine.
#[must_use]
pub fn now_ms() -> u64 {
    orderd_protocol::client::unix_now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ShardConfig;
    use crate::log::{recover, RecoveryConfig};

    fn cores(n: usize, shards: u32, dir: &std::path::Path, max_log_bytes: u64) -> Vec<Core> {
        let mut all: Vec<Shard> = (0..shards).map(|s| Shard::new(ShardConfig::new(s as u16))).collect();
        let config = RecoveryConfig { max_log_bytes, ..RecoveryConfig::new(dir.to_path_buf(), n, 4096, crate::log::RealStorage::shared()) };
        let (writers, _) = recover(&config, &mut all).unwrap();
        cores_from_recovery(all, writers)
    }

    #[test]
    fn each_shard_has_exactly_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let cores = cores(3, 64, dir.path(), 1 << 20);
        assert_eq!(cores.iter().map(Core::local_shards).sum::<usize>(), 64);
        for s in 0..64 {
            assert_eq!(cores[0].owner_of(s), s as usize % 3);
        }
    }

    #[test]
    fn a_shard_of_another_core_is_refused_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut cores = cores(2, 4, dir.path(), 1 << 20);
        let reply = cores[0].apply(1, &Command::GetStock { product: 1 }, 0);
        assert_eq!(reply, (Reply::rejected(Status::NotOwner, 1), None));
    }

    #[test]
    fn a_full_log_refuses_state_changes_and_keeps_answering_reads() {
        use orderd_protocol::{IdempotencyKey, PlaceOrder, UpsertProduct};
        let dir = tempfile::tempdir().unwrap();
        let mut core = cores(1, 1, dir.path(), 4096).pop().unwrap();
        let upsert = UpsertProduct { product: 1, unit_price_cents: 5, stock: 1_000_000, payment_window_ms: 10, per_user_limit: 0 };
        assert!(matches!(core.apply(0, &Command::Upsert(upsert), 1), (Reply::Stock(_), Some(1))));
        let mut placed = 0u64;
        let full = loop {
            let order = PlaceOrder { key: IdempotencyKey::timed(0, u128::from(placed)), user: 1, product: 1, unit_price_cents: 5, qty: 1 };
            match core.apply(0, &Command::PlaceOrder(order), 2) {
                (Reply::Order(_), Some(_)) => placed += 1,
                other => break other,
            }
        };
        assert_eq!(full, (Reply::rejected(Status::LogFull, 0), None));
        let stock = core.apply(0, &Command::GetStock { product: 1 }, 3).0;
        assert!(matches!(stock, Reply::Stock(s) if s.reserved == placed));
        // Every order is past its window at t = 100, but the log has no room
        // for the expiries: nothing expires, reads still answer.
        assert_eq!(core.expire_due(100), 0);
        let stock = core.apply(0, &Command::GetStock { product: 1 }, 100).0;
        assert!(matches!(stock, Reply::Stock(s) if s.reserved == placed));
        assert_eq!(core.log().next_sequence(), 1 + placed);
    }
}
