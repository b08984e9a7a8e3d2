//! A deterministic simulator of a whole server (after TigerBeetle's VOPR
//! and FoundationDB's simulation): one process, one seed, several cores
//! with the server's own dispatch, engines, logs and group commit, on a
//! simulated disk that drops what no sync covered when it crashes, driven
//! by simulated clients that pipeline frames, retry with the same keys,
//! forward through the wrong core and let orders expire as time advances.
//!
//! Each step the seed's dice pick one thing to happen: a client sends a
//! frame, a connection goes on with a frame that waited for another core,
//! a client receives the replies the group commit let go, a core flushes
//! its log, a core prepares its next segment, time passes (expiries), a
//! sync fails, or the process crashes; and now and then a core's
//! checkpoint task takes one step (start, one shard, finish and sync,
//! publish once the log is durable up to its end), so crashes land in
//! every phase of a checkpoint; a core's archiver writes a shard's cold
//! orders or syncs them and lets them leave memory; and its log retention
//! deletes some of the segments below the recovery floor, then the rest,
//! then syncs the directory (a crash in between brings back what no
//! directory sync covered). The simulator keeps the events of every
//! segment before retention deletes it, so each recovery is still held to
//! a replay of the whole history. After a crash (and a failed flush,
//! which stops the process as the runtime does) the simulator recovers
//! the server from the simulated disk and checks it ([`check`]): nothing
//! durable lost, every acknowledged change present, no oversell, no user
//! over a limit, no key with two orders, and a recovery that started from
//! a checkpoint equal to a replay of the whole log. A failing seed is printed and
//! reproduces exactly: `orderd-sim --seed N`.
//!
//! # Layout
//! - [`disk`]: the simulated disk behind the log's storage seam.
//! - [`node`]: one server process: cores, connections, the frame path.
//! - [`client`]: the simulated clients and the ledger of what they were told.
//! - [`check`]: what a recovered server is held to.
//!
//! A bit may also rot in a durable record after a crash: the start must
//! refuse it, naming the record's file and offset, and after the byte is
//! restored (as from a backup) the server starts and is checked as usual.
//!
//! Not simulated (yet): the order stream's subscribers, the metrics
//! endpoint, hostile bytes (tests/fuzz_smoke.rs and the dispatch unit
//! tests cover those), a full disk, `--truncate-corrupt-log`
//! (tests/log_recovery.rs), a rotted bit in the last record of a segment
//! (it looks exactly like a torn write: documented in `log::recovery`).

pub mod check;
pub mod client;
pub mod disk;
pub mod node;

use std::fmt;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use self::client::{catalogue, Client, Ledger, ProductSpec};
use self::disk::SimDisk;
use self::node::{Node, Shape};
use crate::engine::Event;
use crate::log::{RecoveryError, SharedStorage};

/// What one seed runs.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// The seed: everything follows from it.
    pub seed: u64,
    /// Client requests to send before the run ends.
    pub requests: u64,
    /// Whether to inject faults (crashes, torn tails, failed syncs).
    pub faults: bool,
}

/// What a seed did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Cores and shards of the simulated server.
    pub cores: usize,
    /// Shards.
    pub shards: u32,
    /// Requests the clients sent.
    pub requests: u64,
    /// State changes acknowledged to clients.
    pub acks: u64,
    /// Orders acknowledged.
    pub orders: u64,
    /// Crashes (including stops after a failed sync).
    pub crashes: u32,
    /// Syncs of a log that failed (in the flusher or in a rotation on the
    /// core): each stopped the process, as the runtime does.
    pub failed_flushes: u32,
    /// Syncs that failed in the segment preparer (the server goes on).
    pub failed_syncs: u32,
    /// Files a crash left with a torn tail.
    pub torn_files: u32,
    /// Torn tails with a flipped bit.
    pub flipped: u32,
    /// Bits flipped in durable records, each refused by recovery at the
    /// right file and offset (then repaired, as from a backup).
    pub rotted: u32,
    /// Checkpoints published.
    pub checkpoints: u32,
    /// Checkpoints abandoned after a failed write or sync.
    pub failed_checkpoints: u32,
    /// Restarts that recovered from a checkpoint (and the log after it).
    pub from_checkpoint: u32,
    /// Log records at the end, all cores.
    pub records: u64,
    /// Steps taken.
    pub steps: u64,
    /// The shards' dedup window, ms.
    pub dedup_window_ms: u64,
    /// Place orders and reads by key refused `key_expired` (each checked
    /// to be past its window, and never placed afterwards).
    pub keys_expired: u64,
    /// Orders in the archives at the end (every one still checked against
    /// the ledger).
    pub orders_archived: u64,
    /// Orders the archivers moved out of memory (counted again when a
    /// crash brought them back and they left again).
    pub orders_evicted: u64,
    /// Log segments retention deleted durably (below the recovery floor;
    /// the checks replay the whole history all the same).
    pub segments_removed: u64,
}

/// A seed that broke a promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// The step it failed at.
    pub step: u64,
    /// What broke.
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {} (reproduce: cargo run --release --bin orderd-sim -- --seed {})",
            self.seed, self.step, self.message, self.seed
        )
    }
}

/// The simulated world of one seed.
struct World {
    rng: SmallRng,
    /// The dice of rotting bits in durable records: a stream of their own,
    /// so that adding this fault left every other seed's run as it was
    /// (seed 23 still replays the failed rotation it found).
    rot_rng: SmallRng,
    /// The dice of checkpoint steps: a stream of their own, as `rot_rng`.
    checkpoint_rng: SmallRng,
    /// The archivers' dice.
    archive_rng: SmallRng,
    /// Log retention's dice.
    retain_rng: SmallRng,
    /// Per core, the events of the records retention deleted (from
    /// sequence 0), kept before each deletion: the checks replay the whole
    /// history.
    history: Vec<Vec<Event>>,
    config: SimConfig,
    shape: Shape,
    disk: Arc<SimDisk>,
    storage: SharedStorage,
    node: Node,
    clients: Vec<Client>,
    catalogue: Vec<ProductSpec>,
    users: u64,
    ledger: Ledger,
    now_ms: u64,
    report: SimReport,
    step: u64,
    /// Whether the disk's current failure was counted.
    failure_seen: bool,
    _dir: tempfile::TempDir,
}

/// Runs one seed.
///
/// # Errors
/// The [`SimFailure`] of a broken promise (or of a simulator that could not
/// run: a temp directory it could not make).
pub fn run(config: SimConfig) -> Result<SimReport, SimFailure> {
    let fail = |step, message: String| SimFailure { seed: config.seed, step, message };
    let mut world = World::new(config).map_err(|m| fail(0, m))?;
    match world.run() {
        Ok(()) => Ok(world.report),
        Err(message) => Err(fail(world.step, message)),
    }
}

impl World {
    fn new(config: SimConfig) -> Result<World, String> {
        let mut rng = SmallRng::seed_from_u64(orderd_protocol::shard::mix64(config.seed));
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let cores = rng.random_range(1..=4);
        let shards = cores as u32 * rng.random_range(1..=3);
        // The dedup window from a stream of its own, like `rot_rng`: the
        // draws above and below are those of the seeds before it existed.
        let mut window_rng = SmallRng::seed_from_u64(orderd_protocol::shard::mix64(config.seed ^ 0x6b65_7973));
        let dedup_window_ms = if window_rng.random_bool(1.0 / 3.0) {
            window_rng.random_range(2_000..=20_000)
        } else {
            crate::engine::DEFAULT_DEDUP_WINDOW_MS
        };
        // The hot window too: from none (every final order leaves at the
        // next checkpoint) to longer than most runs.
        let hot_ms = window_rng.random_range(0..=3_000);
        // Retention: a stream of its own again. Tight, so that segments
        // below the recovery floor go often: a few segments' bytes, and for
        // half the seeds an age of a few simulated seconds.
        let mut retain_rng = SmallRng::seed_from_u64(orderd_protocol::shard::mix64(config.seed ^ 0x7265_7461_696e));
        let segment_bytes = 4096 * rng.random_range(2..=8);
        let retention = crate::log::retention::Retention {
            max_bytes: segment_bytes * retain_rng.random_range(1..=6),
            max_age: if retain_rng.random_bool(0.5) {
                std::time::Duration::from_millis(retain_rng.random_range(0..=5_000))
            } else {
                std::time::Duration::from_secs(86_400)
            },
        };
        let shape = Shape { cores, shards, segment_bytes, data_dir: dir.path().join("data"), dedup_window_ms, hot_ms, retention };
        let disk = Arc::new(SimDisk::new(&shape.data_dir).map_err(|e| format!("simulated disk: {e}"))?);
        let storage: SharedStorage = disk.clone();
        let node = Node::start(&shape, &storage, false).map_err(|e| format!("first start: {e}"))?;
        let products = rng.random_range(2..=12);
        let catalogue = catalogue(&mut rng, products);
        let clients = (0..rng.random_range(1..=5)).map(Client::new).collect();
        let users = rng.random_range(3..=40);
        let report = SimReport { seed: config.seed, cores, shards, dedup_window_ms, ..SimReport::default() };
        let mut world = World {
            rng,
            rot_rng: SmallRng::seed_from_u64(orderd_protocol::shard::mix64(config.seed ^ 0x726f_7474_6564)),
            checkpoint_rng: SmallRng::seed_from_u64(orderd_protocol::shard::mix64(config.seed ^ 0x636b_7074)),
            archive_rng: SmallRng::seed_from_u64(orderd_protocol::shard::mix64(config.seed ^ 0x6172_6368)),
            retain_rng,
            history: vec![Vec::new(); cores],
            config,
            shape,
            disk,
            storage,
            node,
            clients,
            catalogue,
            users,
            ledger: Ledger { dedup_window_ms, ..Ledger::default() },
            now_ms: 1_790_000_000_000,
            report,
            step: 0,
            failure_seen: false,
            _dir: dir,
        };
        world.connect_all();
        world.load_catalogue()?;
        Ok(world)
    }

    /// Every client connects to every core (a new process has no connections).
    fn connect_all(&mut self) {
        for client in 0..self.clients.len() {
            for core in 0..self.shape.cores {
                self.node.connect(client, core);
            }
        }
    }

    /// The catalogue, through the frame path, made durable before the sale.
    fn load_catalogue(&mut self) -> Result<(), String> {
        let upserts = self.catalogue.iter().map(ProductSpec::upsert).collect();
        self.node.send(0, upserts, self.now_ms)?;
        for _ in 0..4 {
            for core in 0..self.shape.cores {
                self.node.flush(core)?;
            }
            for c in 0..self.node.conns.len() {
                self.node.serve(c, self.now_ms)?;
            }
        }
        self.receive(0)
    }

    fn run(&mut self) -> Result<(), String> {
        while self.report.requests < self.config.requests {
            self.step += 1;
            self.report.steps = self.step;
            if self.step > self.config.requests.saturating_mul(200).max(10_000) {
                return Err("the run stopped making progress".into());
            }
            self.one_step()?;
        }
        // Settle: everything flushed and answered, then the final checks,
        // and one last crash and recovery to see the durable end state.
        self.drain()?;
        check::state_holds(&self.node, &self.ledger, self.now_ms)?;
        self.crash()?;
        self.report.orders_archived = self.node.cores.iter().map(crate::runtime::core::Core::orders_archived).sum();
        self.report.records = self.node.cores.iter().map(|c| c.log().next_sequence()).sum();
        self.report.acks = self.ledger.acks;
        self.report.orders = self.ledger.orders.len() as u64;
        Ok(())
    }

    fn one_step(&mut self) -> Result<(), String> {
        // A core's checkpoint task takes a step now and then, between
        // whatever else happens (so crashes land in every phase of it).
        if self.checkpoint_rng.random_bool(0.05) {
            let core = self.checkpoint_rng.random_range(0..self.shape.cores);
            match self.node.checkpoint(core) {
                node::CheckpointStep::Published => self.report.checkpoints += 1,
                node::CheckpointStep::Failed => self.report.failed_checkpoints += 1,
                node::CheckpointStep::Progress | node::CheckpointStep::Waiting => {}
            }
        }
        // So does its archiver (its own dice, like the checkpoints'):
        // write a shard's cold orders, or sync them and let them go.
        if self.archive_rng.random_bool(0.05) {
            let core = self.archive_rng.random_range(0..self.shape.cores);
            let pick = self.archive_rng.random_range(0..16);
            if let node::ArchiveStep::Evicted(n) = self.node.archive(core, self.now_ms, pick) {
                self.report.orders_evicted += n as u64;
            }
        }
        // And its log retention: delete some of the segments below the
        // recovery floor, the rest, then sync the directory.
        if self.retain_rng.random_bool(0.03) {
            let core = self.retain_rng.random_range(0..self.shape.cores);
            let pick = self.retain_rng.random_range(0..8);
            let (data_dir, history) = (&self.shape.data_dir, &mut self.history[core]);
            let mut kept = Ok(());
            let step = self.node.retain(core, self.now_ms, pick, |plan| kept = keep_history(data_dir, core, plan, history));
            kept?;
            if let node::RetainStep::Finished(n) = step {
                self.report.segments_removed += n;
            }
        }
        let conns = self.node.conns.len();
        match self.rng.random_range(0..1000) {
            0..=399 => {
                let c = self.rng.random_range(0..conns);
                if self.node.may_send(c) {
                    self.send(c)?;
                }
            }
            400..=549 => {
                let c = self.rng.random_range(0..conns);
                self.node.serve(c, self.now_ms)?;
            }
            550..=749 => {
                let c = self.rng.random_range(0..conns);
                self.receive(c)?;
            }
            750..=899 => {
                let core = self.rng.random_range(0..self.shape.cores);
                if let Err(e) = self.node.flush(core) {
                    if !self.disk.failed() {
                        return Err(e);
                    }
                    // The runtime aborts on a failed flush: the process stops.
                    self.report.failed_flushes += 1;
                    self.failure_seen = true;
                    self.crash()?;
                }
            }
            900..=949 => {
                let core = self.rng.random_range(0..self.shape.cores);
                self.node.prepare(core);
            }
            950..=989 => {
                self.now_ms += self.rng.random_range(1..=300);
                self.node.tick(self.now_ms);
            }
            990..=994 if self.config.faults && !self.disk.failed() => {
                let n = self.rng.random_range(1..=30);
                self.disk.fail_sync_after(n);
            }
            995..=999 if self.config.faults => self.crash()?,
            _ => {}
        }
        // A sync that failed in a rotation on the core stopped that core's
        // log; the runtime's flusher then stops the process.
        if self.node.cores.iter().any(|c| c.log().stopped().is_some()) {
            self.report.failed_flushes += 1;
            self.failure_seen = true;
            return self.crash();
        }
        // One that failed in the segment preparer: the runtime goes on, and
        // so does the simulation (counted once; a crash clears the flag).
        if self.disk.failed() && !self.failure_seen {
            self.failure_seen = true;
            self.report.failed_syncs += 1;
        }
        Ok(())
    }

    fn send(&mut self, c: usize) -> Result<(), String> {
        let client = self.node.conns[c].client;
        let requests = self.clients[client].frame(&mut self.rng, &self.catalogue, self.users, self.now_ms);
        self.report.requests += requests.len() as u64;
        self.node.send(c, requests, self.now_ms)
    }

    /// Connection `c`'s client takes in the replies that may leave.
    fn receive(&mut self, c: usize) -> Result<(), String> {
        let client = self.node.conns[c].client;
        for (requests, replies) in self.node.receive(c)? {
            if requests.len() != replies.len() {
                return Err(format!("{} requests got {} replies", requests.len(), replies.len()));
            }
            for (request, reply) in requests.iter().zip(&replies) {
                self.ledger.record(request, reply)?;
                if matches!(reply, orderd_protocol::Reply::Rejected(r) if r.status() == Some(orderd_protocol::Status::KeyExpired)) {
                    self.report.keys_expired += 1;
                }
                if let (orderd_protocol::Request::PlaceOrder(p), orderd_protocol::Reply::Order(o)) = (request, reply) {
                    let known = &mut self.clients[client].orders;
                    if !known.iter().any(|(id, _)| *id == o.id) {
                        known.push((o.id, *p));
                    }
                }
            }
        }
        Ok(())
    }

    /// Flushes every core and answers everything (no more faults).
    fn drain(&mut self) -> Result<(), String> {
        self.disk.disarm();
        for _ in 0..8 {
            for core in 0..self.shape.cores {
                self.node.flush(core)?;
            }
            for c in 0..self.node.conns.len() {
                self.node.serve(c, self.now_ms)?;
                self.receive(c)?;
            }
        }
        if let Some(c) = self.node.conns.iter().position(|c| !c.sent.is_empty()) {
            return Err(format!("connection {c} still waits for replies after every core flushed"));
        }
        Ok(())
    }

    /// The process dies; the disk keeps what was synced (and a torn tail);
    /// the server recovers and is checked; clients reconnect and will retry
    /// what they never heard back about.
    fn crash(&mut self) -> Result<(), String> {
        self.report.crashes += 1;
        let before: Vec<Vec<Event>> = (0..self.shape.cores)
            .map(|core| check::log_events(&self.shape.data_dir, core, &self.history[core]))
            .collect::<Result<_, _>>()?;
        let durable: Vec<u64> = self.node.cores.iter().map(|c| c.log().durable()).collect();
        for conn in &mut self.node.conns {
            let client = &mut self.clients[conn.client];
            for sent in conn.sent.drain(..) {
                for request in sent.requests {
                    if let orderd_protocol::Request::PlaceOrder(p) = request {
                        client.unknown.push(p);
                    }
                }
            }
        }
        // The process's memory, mappings and files go first.
        self.node.halt();
        let torn = self.config.faults;
        // Recovery runs a thread per core: a sync armed to fail there would
        // fail wherever the threads' order put it, not where the seed did.
        self.disk.disarm();
        let crash = self.disk.crash(&mut self.rng, torn).map_err(|e| format!("crashing the simulated disk: {e}"))?;
        self.report.torn_files += crash.torn_files;
        self.report.flipped += u32::from(crash.flipped);
        self.failure_seen = false;
        if torn && self.rot_rng.random_bool(0.15) {
            self.rot_a_durable_record()?;
        }
        self.node = Node::start(&self.shape, &self.storage, false).map_err(|e| format!("recovery after a crash ({crash:?}): {e}"))?;
        self.report.from_checkpoint += u32::from(self.node.from_checkpoint);
        check::log_kept(&self.node, &before, &durable, &self.history)?;
        check::state_holds(&self.node, &self.ledger, self.now_ms)?;
        check::replay_matches(&self.node, &self.history)?;
        self.connect_all();
        Ok(())
    }

    /// A bit rots in a durable record that another record of its file
    /// follows (the last record of a segment, torn or rotted, looks the
    /// same to recovery: documented). The start must refuse, naming that
    /// record's file and offset; the operator then restores the byte (from
    /// a backup) and the caller starts the server again.
    fn rot_a_durable_record(&mut self) -> Result<(), String> {
        let core = self.rot_rng.random_range(0..self.shape.cores);
        let records = check::log_records(&self.shape.data_dir, core)?;
        let followed: Vec<&check::RecordAt> = records.windows(2).filter(|w| w[0].path == w[1].path).map(|w| &w[0]).collect();
        if followed.is_empty() {
            return Ok(());
        }
        let victim = followed[self.rot_rng.random_range(0..followed.len())].clone();
        let at = victim.offset + self.rot_rng.random_range(0..victim.len as u64);
        let bit = 1u8 << self.rot_rng.random_range(0..8u32);
        let flip = |b: u8| b ^ bit;
        self.disk.alter_durable(&victim.path, at, flip).map_err(|e| format!("rotting a bit: {e}"))?;
        let what = format!(
            "bit {bit:#04x} of byte {at} in durable record {} of core {core} ({} at {})",
            victim.sequence,
            victim.path.display(),
            victim.offset
        );
        match Node::start(&self.shape, &self.storage, false) {
            Err(
                RecoveryError::Corrupt { path, offset, .. }
                | RecoveryError::Inconsistent { path, offset, .. }
                | RecoveryError::Decode { path, offset, .. },
            ) if path == victim.path && offset == victim.offset => self.report.rotted += 1,
            // Bytes no check covers (a record's padding): the records are
            // intact, which the checks after the restart verify.
            Ok(mut node) => node.halt(),
            Err(e) => return Err(format!("{what}: recovery said {e}")),
        }
        self.disk.alter_durable(&victim.path, at, flip).map_err(|e| format!("repairing a bit: {e}"))
    }
}

/// Before retention deletes `plan`'s segments of core `core`, keep their
/// records' events in `history` (which holds every event below its length).
fn keep_history(
    data_dir: &std::path::Path,
    core: usize,
    plan: &crate::log::retention::Plan,
    history: &mut Vec<Event>,
) -> Result<(), String> {
    for record in check::log_records(data_dir, core)? {
        if record.sequence >= plan.oldest_after {
            break;
        }
        if record.sequence == history.len() as u64 {
            history.push(record.event);
        } else if record.sequence > history.len() as u64 {
            return Err(format!(
                "core {core}: retention is about to delete record {}, but the files start after record {} (a hole in the log)",
                record.sequence,
                history.len()
            ));
        }
    }
    if (history.len() as u64) < plan.oldest_after {
        return Err(format!(
            "core {core}: retention would delete records up to {}, but the files hold only up to {} (below its floor {})",
            plan.oldest_after,
            history.len(),
            plan.floor
        ));
    }
    Ok(())
}
