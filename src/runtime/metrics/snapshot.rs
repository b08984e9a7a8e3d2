//! A core's metrics at one moment, [`CoreSnapshot`], taken on the core that
//! owns them (at scrape time only) and sent to the scraping core.
//!
//! Per-core values that are one number each are read through one table,
//! [`SCALARS`]: adding a per-core counter or gauge is one line there (its
//! name, type, help and how to read it from the core), and rendering picks
//! it up.

use orderd_protocol::message::CoreStats;

use super::counters::CoreMetrics;
use crate::runtime::commit::Commit;
use crate::runtime::core::Core;

/// What a scalar is read from: the core, its stats summed over its shards,
/// its group commit and its messages waiting for other cores.
pub struct Probe<'a> {
    /// The core.
    pub core: &'a Core,
    /// [`Core::stats`], computed once per snapshot.
    pub stats: CoreStats,
    /// The core's group commit (absent where no reply waits for it).
    pub commit: Option<&'a Commit>,
    /// The core's messages waiting for answers from other cores.
    pub waiting_for_cores: u64,
    /// [`Core::table_bytes`], computed once per snapshot.
    pub tables: crate::engine::TableBytes,
}

/// The Prometheus type of a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Only goes up (while the process runs); the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Type {
    /// The word of the `# TYPE` line.
    #[must_use]
    pub const fn word(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        }
    }
}

/// One per-core number: exposed as `name{core="N"} value`.
pub struct Scalar {
    /// The metric name (`orderd_...`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Type,
    /// The `# HELP` text.
    pub help: &'static str,
    /// How to read it on the owning core.
    pub read: fn(&Probe<'_>) -> u64,
    /// The exposed value is `read / scale` (`1`: an integer; `1_000_000`
    /// for a duration read in µs and exposed in seconds).
    pub scale: u64,
}

const fn counter(name: &'static str, help: &'static str, read: fn(&Probe<'_>) -> u64) -> Scalar {
    Scalar { name, kind: Type::Counter, help, read, scale: 1 }
}

const fn gauge(name: &'static str, help: &'static str, read: fn(&Probe<'_>) -> u64) -> Scalar {
    Scalar { name, kind: Type::Gauge, help, read, scale: 1 }
}

/// A gauge of seconds, read in µs.
const fn gauge_us_as_seconds(name: &'static str, help: &'static str, read: fn(&Probe<'_>) -> u64) -> Scalar {
    Scalar { name, kind: Type::Gauge, help, read, scale: 1_000_000 }
}

/// A counter of seconds, read in µs.
const fn counter_us_as_seconds(name: &'static str, help: &'static str, read: fn(&Probe<'_>) -> u64) -> Scalar {
    Scalar { name, kind: Type::Counter, help, read, scale: 1_000_000 }
}

/// Every per-core scalar, in exposition order. One line per metric.
pub const SCALARS: &[Scalar] = &[
    counter(
        "orderd_orders_accepted_total",
        "New orders accepted by this core's shards (idempotent retries not counted; orders recovered from the log at start included).",
        |p| p.stats.orders_placed,
    ),
    counter(
        "orderd_gmv_cents_total",
        "Gross merchandise value of the accepted orders in cents, not reduced by cancellations or expiries (recovered orders included).",
        |p| p.stats.gmv_cents,
    ),
    gauge("orderd_live_orders", "Orders placed or paid, holding stock, in this core's shards.", |p| p.stats.live_orders),
    gauge(
        "orderd_orders_in_memory",
        "Orders this core's shards hold in memory: open ones and final ones of the hot window (at --max-orders-per-shard per shard, orders_full).",
        |p| p.core.orders_in_memory(),
    ),
    gauge(
        "orderd_orders_archived",
        "Final orders this core's shards moved out of memory to their archives (read back from disk by get order and retries).",
        |p| p.core.orders_archived(),
    ),
    gauge("orderd_cold_keys", "Keys of archived orders this core's shards remember for retries (the dedup window's).", |p| p.core.cold_keys()),
    gauge("orderd_archive_bytes", "Bytes of this core's shards' order archives (64 per archived order).", |p| p.core.archive_bytes()),
    gauge("orderd_memory_order_records_bytes", "Bytes allocated for this core's order records (64 each; reserved room included).", |p| {
        p.tables.order_records
    }),
    gauge("orderd_memory_key_index_bytes", "Bytes allocated for this core's idempotency indexes of the orders in memory.", |p| p.tables.key_index),
    gauge("orderd_memory_cold_keys_bytes", "Bytes allocated for this core's indexes of the keys of archived orders.", |p| p.tables.cold_keys),
    gauge("orderd_memory_deadlines_bytes", "Bytes allocated for this core's payment-deadline heaps.", |p| p.tables.deadlines),
    gauge("orderd_memory_holdings_bytes", "Bytes allocated for this core's per-user holdings of limited products.", |p| p.tables.holdings),
    gauge("orderd_memory_catalogue_bytes", "Bytes allocated for this core's catalogue tables.", |p| p.tables.catalogue),
    counter("orderd_shard_requests_total", "Requests applied by this core's shards, including those forwarded from other cores.", |p| {
        p.stats.requests
    }),
    counter("orderd_forwarded_requests_total", "Requests this core's connections forwarded to the core owning their shard.", |p| {
        p.stats.forwarded
    }),
    gauge(
        "orderd_forward_frames_waiting",
        "Messages of this core's frames waiting for answers from other cores (queue depth of the forward path).",
        |p| p.waiting_for_cores,
    ),
    gauge(
        "orderd_flush_waiters",
        "Tasks (connections, forwarded batches) whose replies wait for a group-commit flush (queue depth of the sync path).",
        |p| p.commit.map_or(0, |c| c.waiting() as u64),
    ),
    gauge("orderd_log_unflushed_records", "Records appended to this core's log and not yet made durable by a flush.", |p| {
        p.core.log().next_sequence().saturating_sub(p.core.log().durable())
    }),
    gauge("orderd_log_next_sequence", "Sequence the next record of this core's log gets (records ever appended to it).", |p| {
        p.core.log().next_sequence()
    }),
    gauge("orderd_log_bytes", "Bytes of records ever appended to this core's log (segments retention deleted included).", |p| {
        p.core.log().record_bytes()
    }),
    gauge("orderd_log_oldest_sequence", "The oldest record this core's log still holds (the order stream's history starts here).", |p| {
        p.core.log().oldest_sequence()
    }),
    gauge("orderd_log_retained_records", "Records this core's log holds on disk (from the oldest retained to the newest).", |p| {
        p.core.log().next_sequence().saturating_sub(p.core.log().oldest_sequence())
    }),
    counter("orderd_log_segments_removed_total", "Segment files of this core's log that retention deleted since the start.", |p| {
        p.core.log().segments_removed()
    }),
    gauge("orderd_log_file_bytes", "Bytes of this core's segment files (what --max-log-bytes bounds).", |p| p.core.log().files_bytes()),
    gauge(
        "orderd_log_max_bytes",
        "The bound on this core's segment files (--max-log-bytes): at it, state changes are refused with log_full.",
        |p| p.core.log().max_log_bytes(),
    ),
    gauge("orderd_log_segments", "Segment files of this core's log.", |p| p.core.log_segments()),
    counter("orderd_log_full_total", "State changes refused with log_full (the log bound or the disk is full).", |p| {
        p.core.counters.log_full
    }),
    counter(
        "orderd_log_grow_failures_total",
        "Failed attempts to create this core's next log segment (a full disk or an I/O error); retried after 10 ms doubling to 1 s.",
        |p| p.core.counters.log_grow_failures,
    ),
    gauge("orderd_connections", "Open client connections on this core's port.", |p| u64::from(p.core.counters.connections)),
    counter("orderd_connections_accepted_total", "Client connections accepted on this core's port.", |p| {
        p.core.counters.connections_accepted
    }),
    counter("orderd_connections_refused_total", "Client connections refused with too_many_connections (past --max-connections).", |p| {
        p.core.counters.connections_refused
    }),
    gauge("orderd_shards", "Shards this core owns.", |p| u64::from(p.stats.shards)),
    gauge(
        "orderd_cluster_map_version",
        "In a cluster, the version of the cluster map this node follows (0: not in a cluster); the same on every core.",
        |p| p.core.map_version(),
    ),
    gauge(
        "orderd_cluster_shards_served",
        "Shards of this core that the node serves: all of them for a single node, in a cluster those the map gives the node (requests for the others are answered moved, counted in orderd_rejections_total).",
        |p| (0..p.core.local_shards()).filter_map(|i| p.core.shard_at(i)).filter(|s| p.core.serves(u32::from(s.config().shard_id))).count() as u64,
    ),
    gauge(
        "orderd_cluster_moves_in_progress",
        "Shards of this core in a move: frozen to be handed away, or being received (their bundle's chunks arriving).",
        |p| p.core.moves_in_progress(),
    ),
    gauge(
        "orderd_replication_followers",
        "In a cluster that keeps several copies: the in-sync follower cores this core's shards send their events to (their replies wait for each).",
        |p| p.core.replication.in_sync(),
    ),
    gauge(
        "orderd_replication_lag_events",
        "The most events of this core's shards one in-sync follower has not acknowledged yet.",
        |p| p.core.replication.lag_events(),
    ),
    gauge_us_as_seconds(
        "orderd_replication_lag_seconds",
        "How long the oldest event of this core's shards that an in-sync follower has not acknowledged has waited.",
        |p| p.core.replication.lag_ms(crate::runtime::core::now_ms()).saturating_mul(1000),
    ),
    counter(
        "orderd_replication_acked_events_total",
        "Events of this core's shards that followers acknowledged (durable there).",
        |p| p.core.replication.acked_events(),
    ),
    counter(
        "orderd_replication_applied_events_total",
        "Events of other nodes' shards this core applied to its copies, as a follower.",
        |p| p.core.counters.replicated,
    ),
    gauge(
        "orderd_replication_leader_epoch",
        "The highest epoch (the map version at which a leader took a shard) among the shards this core leads; 0 for none.",
        |p| p.core.leader_epoch(),
    ),
    counter(
        "orderd_cluster_failovers_total",
        "Shards this node took over from a leader whose lease lapsed; the same on every core.",
        |p| p.core.cluster.as_ref().map_or(0, |c| c.failovers.load(std::sync::atomic::Ordering::Relaxed)),
    ),
    counter("orderd_checkpoints_total", "Checkpoints this core published since the start.", |p| p.core.checkpoint.taken),
    counter(
        "orderd_checkpoint_failures_total",
        "Checkpoints of this core that failed since the start (the previous one stays in use).",
        |p| p.core.checkpoint.failed,
    ),
    gauge(
        "orderd_checkpoint_sequence",
        "Log sequence of this core's newest checkpoint: a restart replays the records from here (0: none).",
        |p| p.core.checkpoint.sequence,
    ),
    gauge(
        "orderd_checkpoint_records_behind",
        "Records of this core's log since its newest checkpoint: what a restart would replay.",
        |p| p.core.log().next_sequence().saturating_sub(p.core.checkpoint.sequence),
    ),
    gauge("orderd_checkpoint_age_seconds", "Seconds since this core's newest checkpoint was published (0: none since the start).", |p| {
        match p.core.checkpoint.at_ms {
            0 => 0,
            at => crate::runtime::core::now_ms().saturating_sub(at) / 1000,
        }
    }),
    gauge_us_as_seconds("orderd_checkpoint_duration_seconds", "How long this core's newest checkpoint took, first shard to rename.", |p| {
        p.core.checkpoint.duration_us
    }),
    gauge("orderd_checkpoint_bytes", "Size of this core's newest checkpoint file.", |p| p.core.checkpoint.bytes),
    gauge_us_as_seconds(
        "orderd_checkpoint_stall_seconds",
        "The longest one shard's copy held this core during its newest checkpoint (the order path's stall).",
        |p| p.core.checkpoint.stall_us,
    ),
    gauge("orderd_subscribers", "Order-stream subscriptions served by this core's connections.", |p| {
        u64::from(p.core.counters.subscriptions)
    }),
    gauge("orderd_subscriber_lag_records", "Durable log records (all cores) this core's subscriptions have not read yet, summed.", |p| {
        p.core.subscribers.lag()
    }),
    counter_us_as_seconds(
        "orderd_stream_busy_seconds_total",
        "Time this core spent reading, filtering and encoding order-stream events (bounded by --stream-share while orders run).",
        |p| p.core.stream_time.get().busy_us,
    ),
    counter_us_as_seconds(
        "orderd_stream_paused_seconds_total",
        "Time this core's order stream waited so that orders kept the core (the stream was over its --stream-share).",
        |p| p.core.stream_time.get().paused_us,
    ),
    counter("orderd_stream_log_reads_total", "Chunks of log segments this core read (io_uring) for its subscriptions.", |p| {
        p.core.stream_reads.get().reads
    }),
    counter("orderd_stream_read_bytes_total", "Bytes of log segments this core read for its subscriptions.", |p| {
        p.core.stream_reads.get().read_bytes
    }),
    counter(
        "orderd_stream_blocks_shared_total",
        "Decoded blocks of events one of this core's subscriptions took from another's read instead of reading again.",
        |p| p.core.stream_reads.get().shared,
    ),
];

/// One core's metrics at one moment.
#[derive(Debug, Clone)]
pub struct CoreSnapshot {
    /// The core's index.
    pub core: usize,
    /// `scalars[i]` is the value of `SCALARS[i]`.
    pub scalars: [u64; SCALARS.len()],
    /// The counters and histograms.
    pub metrics: CoreMetrics,
}

/// Take `core`'s snapshot (on its own thread).
/// `waiting_for_cores`: the core's messages waiting for other cores
/// (`runtime::mesh::Tickets::in_use`).
#[must_use]
pub fn take(core: &Core, commit: Option<&Commit>, waiting_for_cores: u64) -> CoreSnapshot {
    let probe = Probe { core, stats: core.stats(), commit, waiting_for_cores, tables: core.table_bytes() };
    CoreSnapshot { core: core.index(), scalars: std::array::from_fn(|i| (SCALARS[i].read)(&probe)), metrics: core.metrics }
}
