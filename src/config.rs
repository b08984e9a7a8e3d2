//! The validated settings the server runs with: [`ServeConfig`] and the
//! types of its fields, with their defaults. The command line
//! (`crate::cli`) checks the flags once and builds it; the runtime trusts
//! it. Nothing here parses anything, so the runtime, a test or a simulator
//! can build a configuration directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

/// Default shards per server: enough that shards spread evenly over the
/// cores of a large machine, few enough to keep per-shard overhead small.
pub const DEFAULT_SHARDS: u32 = 64;

/// Default open connections per core. Each connection holds a receive buffer
/// (at least 64 KiB, up to one maximal frame) and an output buffer, so the
/// bound keeps a connection storm from exhausting memory: 1024 × ~130 KiB ≈
/// 130 MiB per core at worst with default frame limits.
pub const DEFAULT_MAX_CONNECTIONS_PER_CORE: u32 = 1024;

/// Default subscriptions per core. Each holds one Events frame (at most
/// the frame bound) and a read-only mapping per core's current segment, so
/// 64 × 1 MiB bounds their buffers at 64 MiB per core.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CORE: u32 = 64;

/// Default `--stream-share`: the order stream's share of a core while
/// orders are waiting, percent (`runtime::stream_budget`).
pub const DEFAULT_STREAM_SHARE_PERCENT: u8 = 5;

/// Default time a connection may stay silent between frames.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;

/// Default interval of the background log flush (`--flush-interval-ms`).
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;

/// Default time a client may take to send the rest of a started frame (and
/// its Hello after connecting).
pub const DEFAULT_FRAME_TIMEOUT_MS: u64 = 10_000;

/// Default time a write of replies may block on a client that does not read.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 10_000;

/// How acknowledged orders are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// A reply to a state change leaves only after the fdatasync that covers
    /// it (group commit: one flush covers every change since the last).
    Sync,
    /// Reply at once; flush every --flush-interval-ms. A machine crash (not a
    /// process crash) can lose up to that much acknowledged work.
    Async,
}

/// Default `--data-dir` (shared with `orderd host-check`, which checks the
/// directory `serve` will use).
pub const DEFAULT_DATA_DIR: &str = "./orderd-data";

/// Default `--listen`: core 0's address, loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Default `--cores`: every online CPU.
pub const DEFAULT_CORES: &str = "all";

/// Default `--metrics-listen`: the Prometheus endpoint, loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9070";

/// `--prepare-segments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrepareSegments {
    /// Create each segment at rotation, on the core.
    Off,
    /// Allocate the next segment ahead (`fallocate`).
    #[value(alias = "allocate")]
    Alloc,
    /// Allocate it and write its zeros ahead.
    Zero,
}

impl PrepareSegments {
    /// What the log's preparer does, `None` for nothing.
    #[must_use]
    pub fn preparation(self) -> Option<crate::log::segment::Prepare> {
        match self {
            PrepareSegments::Off => None,
            PrepareSegments::Alloc => Some(crate::log::segment::Prepare::Allocate),
            PrepareSegments::Zero => Some(crate::log::segment::Prepare::Zero),
        }
    }
}

/// Which CPUs to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSelection {
    /// Every online CPU.
    All,
    /// These CPU ids.
    List(Vec<usize>),
}

/// When each core takes a checkpoint by itself (`runtime::checkpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many records of the core's log since the last one.
    pub every_records: u64,
    /// After this long since the last one, if any record was appended.
    pub every: Duration,
}

/// Default `--retain-log-secs`: a day of order-stream history.
pub const DEFAULT_RETAIN_LOG_SECS: u64 = 86_400;

/// Default `--retain-log-bytes`, as a fraction of `--max-log-bytes`
/// (numerator over 4): retention starts freeing room at three quarters of
/// the bound, so the bound never stops a server whose checkpoints keep up.
pub const DEFAULT_RETAIN_LOG_QUARTERS: u64 = 3;

/// Default `--checkpoint-every-records`: replay after a restart stays under
/// about 4 s per core (replay runs at ~2 M records/s per core,
/// benches/README.md, Durability).
pub const DEFAULT_CHECKPOINT_EVERY_RECORDS: u64 = 8_000_000;

/// Default `--checkpoint-every-secs`.
pub const DEFAULT_CHECKPOINT_EVERY_SECS: u64 = 300;

/// A validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// CPUs to run on.
    pub cores: CoreSelection,
    /// Address of core 0 (core i: port + i, or ephemeral with port 0).
    pub listen: SocketAddr,
    /// Durability mode.
    pub durability: Durability,
    /// Background flush interval.
    pub flush_interval: Duration,
    /// Size of a new segment.
    pub segment_bytes: u64,
    /// Bound on each core's segment files.
    pub max_log_bytes: u64,
    /// Truncate at a corrupt record instead of refusing to start.
    pub truncate_corrupt_log: bool,
    /// When checkpoints are taken by themselves (`None`: only on demand).
    pub checkpoints: Option<CheckpointPolicy>,
    /// How much log below the oldest kept checkpoint stays (the stream's history).
    pub retention: crate::log::retention::Retention,
    /// How the next segment is made ahead of need (`None`: at rotation).
    pub prepare_segments: Option<crate::log::segment::Prepare>,
    /// How long an idle executor spins before it parks.
    pub spin_before_park: Duration,
    /// Shard count.
    pub shards: u32,
    /// Connection bound per core.
    pub max_connections: u32,
    /// Subscription bound per core.
    pub max_subscriptions: u32,
    /// The stream's share of a core while orders run, percent (1-100).
    pub stream_share: u8,
    /// Largest payload accepted.
    pub max_frame_bytes: u32,
    /// Most requests per frame.
    pub max_batch: u32,
    /// Most unanswered frames per connection.
    pub max_in_flight: u32,
    /// Most orders per shard in memory.
    pub max_orders_per_shard: u32,
    /// How long a final order stays in memory before a checkpoint may
    /// archive it.
    pub hot_orders: Duration,
    /// Most keys of archived orders per shard.
    pub max_cold_keys_per_shard: u32,
    /// How long after its time an idempotency key is answered.
    pub dedup_window: Duration,
    /// How far ahead of the server's clock a key's time may be.
    pub key_max_ahead: Duration,
    /// Silence allowed between frames.
    pub idle_timeout: Duration,
    /// Time allowed to complete a started frame or the Hello.
    pub frame_timeout: Duration,
    /// Time a write may block.
    pub write_timeout: Duration,
    /// The metrics endpoint's address, `None` with `--no-metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// How the group commit runs fdatasync.
    pub flush_method: FlushMethod,
    /// Where each core's flush thread runs.
    pub flush_thread: FlushThread,
    /// Test seams: stretch every group-commit flush by this much, and hold
    /// the start this long before the log replay (hidden flags, `None` in
    /// production).
    pub test_delays: TestDelays,
    /// The cluster this node joins (`--etcd`, `--cluster`, `--node`), or
    /// `None`: a single node.
    pub cluster: Option<ClusterConfig>,
}

/// A node's place in a cluster (`serve --etcd ENDPOINTS --cluster NAME
/// --node ID [--advertise HOST]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd endpoints, comma-separated.
    pub etcd: String,
    /// The cluster's name.
    pub cluster: String,
    /// This node's id.
    pub node: String,
    /// The host clients reach this node's cores at (`None`: the listen IP).
    pub advertise: Option<String>,
}

/// `--flush-method`: how the group commit runs fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FlushMethod {
    /// `File::sync_data` in the core's blocking thread (the default: it
    /// measured faster here, benches/README.md, Durability).
    #[default]
    Blocking,
    /// glommio's io_uring fdatasync on the same file.
    #[value(name = "io-uring", alias = "io_uring")]
    IoUring,
}

/// `--flush-thread`: where each core's flush thread (glommio's blocking
/// pool, where fdatasync and segment preparation run) may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FlushThread {
    /// On its core's own CPU (the default: a flush thread elsewhere takes
    /// another core's CPU; benches/README.md, Latency).
    #[default]
    Pinned,
    /// Wherever the kernel schedules it (to compare, or with spare CPUs).
    Unbound,
}

/// Delays that tests set to see behaviour that is otherwise too quick to
/// catch (hidden `--test-*` flags of `orderd serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestDelays {
    /// Added before every group-commit flush.
    pub flush: Option<Duration>,
    /// Waited before the log replay, ports bound but not listening.
    pub recovery: Option<Duration>,
}

/// A flag value the server refuses to start with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--cores` is neither `all` nor a list of CPU ids.
    #[error("--cores {given:?}: expected `all`, or CPU ids and ranges such as `0,1` or `2-5`")]
    BadCores {
        /// What was given.
        given: String,
    },
    /// A CPU id appears twice in `--cores`.
    #[error("--cores: CPU {cpu} is listed twice")]
    DuplicateCore {
        /// The repeated id.
        cpu: usize,
    },
    /// A cluster flag is wrong (a bad name).
    #[error("{0}")]
    Cluster(String),
    /// A numeric flag is outside its range.
    #[error("--{flag} {value} is out of range: it must be within {min}..={max}")]
    OutOfRange {
        /// The flag name, without dashes.
        flag: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A size that must be a multiple of the page size is not.
    #[error("--{flag} {value} is not a multiple of 4096")]
    NotPageMultiple {
        /// The flag name, without dashes.
        flag: &'static str,
        /// The value given.
        value: u64,
    },
    /// The listen port plus the core count would pass 65535.
    #[error("--listen port {port} + {cores} cores passes 65535: choose a lower port")]
    PortRange {
        /// The port.
        port: u16,
        /// The core count.
        cores: usize,
    },
}
