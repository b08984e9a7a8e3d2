//! The flags of `orderd serve`, checked once into a [`ServeConfig`].

use std::time::Duration;

use clap::Args;
use orderd_protocol::limits::{
    DEFAULT_MAX_BATCH_REQUESTS, DEFAULT_MAX_FRAME_PAYLOAD_BYTES, DEFAULT_MAX_IN_FLIGHT_FRAMES, MAX_BATCH_REQUESTS, MAX_FRAME_PAYLOAD_BYTES,
    MAX_IN_FLIGHT_FRAMES, MAX_SHARDS,
};

use super::site::{parse_cores, SiteArgs};
use crate::config::{
    ConfigError, CoreSelection, Durability, FlushMethod, FlushThread, PrepareSegments, ServeConfig, TestDelays, DEFAULT_FLUSH_INTERVAL_MS,
    DEFAULT_FRAME_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS_PER_CORE, DEFAULT_MAX_SUBSCRIPTIONS_PER_CORE,
    DEFAULT_SHARDS, DEFAULT_STREAM_SHARE_PERCENT, DEFAULT_WRITE_TIMEOUT_MS,
};
use crate::engine::config::DEFAULT_MAX_ORDERS_PER_SHARD;

/// The flags of `orderd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file of these settings (`data-dir = "/var/lib/orderd"`, one
    /// flag name per key); a flag or an `ORDERD_*` variable overrides it.
    #[arg(long, env = "ORDERD_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Print the settings a start would use, each with where it came from
    /// (command line, environment, configuration file, default), and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Where the server keeps its data and listens.
    #[command(flatten)]
    pub site: SiteArgs,

    /// Durability mode. `sync`: a reply to a state change waits for the
    /// group-commit fdatasync that covers it; nothing acknowledged is lost.
    /// `async`: replies at once, the log is flushed every
    /// --flush-interval-ms; a power loss or kernel crash can lose up to that
    /// window of acknowledged changes (a process crash loses nothing: the
    /// records are in the page cache).
    #[arg(long, env = "ORDERD_DURABILITY", value_enum, default_value = "sync")]
    pub durability: Durability,

    /// Interval of the background log flush (ms): the loss window of
    /// `--durability async`; in `sync` mode it only bounds how long records
    /// no reply waits for (timer expiries) stay unflushed.
    #[arg(long, env = "ORDERD_FLUSH_INTERVAL_MS", default_value_t = DEFAULT_FLUSH_INTERVAL_MS)]
    pub flush_interval_ms: u64,

    /// Size of each log segment file (bytes, or with a unit: `64MiB`; a
    /// multiple of 4096). Segments
    /// are preallocated and memory-mapped; a full one is followed by a new one.
    #[arg(long, env = "ORDERD_SEGMENT_BYTES", default_value_t = crate::log::DEFAULT_SEGMENT_BYTES, value_parser = super::site::parse_bytes)]
    pub segment_bytes: u64,

    /// Bound on the segment files of each core's log (bytes, or with a unit:
    /// `64GiB`). At the bound
    /// (or when the disk is full) every state change is answered `log_full`
    /// (202) and reads go on.
    #[arg(long, env = "ORDERD_MAX_LOG_BYTES", default_value_t = crate::log::DEFAULT_MAX_LOG_BYTES, value_parser = super::site::parse_bytes)]
    pub max_log_bytes: u64,

    /// After recovery stopped on a corrupt record: keep the records before it
    /// and DROP every later one (the error message names the file and
    /// offset). Only for an operator who has no better copy.
    #[arg(long, env = "ORDERD_TRUNCATE_CORRUPT_LOG")]
    pub truncate_corrupt_log: bool,

    /// Each core takes a checkpoint of its shards after this many records of
    /// its log since the last one, so that a restart replays at most about
    /// this many records per core (~2 M/s) after loading the checkpoint.
    #[arg(long, env = "ORDERD_CHECKPOINT_EVERY_RECORDS", default_value_t = crate::config::DEFAULT_CHECKPOINT_EVERY_RECORDS, value_name = "RECORDS")]
    pub checkpoint_every_records: u64,

    /// ... and after this many seconds since the last one, if anything was
    /// logged since.
    #[arg(long, env = "ORDERD_CHECKPOINT_EVERY_SECS", default_value_t = crate::config::DEFAULT_CHECKPOINT_EVERY_SECS, value_name = "SECS")]
    pub checkpoint_every_secs: u64,

    /// Take checkpoints only on demand (`orderd admin checkpoint`): every
    /// restart replays the log since the newest one (to measure what
    /// checkpoints cost and save).
    #[arg(long, env = "ORDERD_NO_CHECKPOINTS")]
    pub no_checkpoints: bool,

    /// Order-stream history kept: log segments whose records are all older
    /// than this many seconds are deleted once every kept checkpoint is past
    /// them (a subscription asking for less gets `position_unavailable`).
    #[arg(long, env = "ORDERD_RETAIN_LOG_SECS", default_value_t = crate::config::DEFAULT_RETAIN_LOG_SECS, value_name = "SECS")]
    pub retain_log_secs: u64,

    /// ... and while a core's segment files exceed this (bytes, or with a
    /// unit; default three quarters of --max-log-bytes), its oldest segments
    /// past every kept checkpoint are deleted whatever their age, so the
    /// log bound never stops a server whose checkpoints keep up.
    #[arg(long, env = "ORDERD_RETAIN_LOG_BYTES", value_parser = super::site::parse_bytes, value_name = "BYTES")]
    pub retain_log_bytes: Option<u64>,

    /// The stream's history as one policy, by age and/or size:
    /// `7d`, `40GiB` or `24h,40GiB` (ages in s, m, h or d; sizes with a
    /// unit); the same as --retain-log-secs and --retain-log-bytes, which
    /// it replaces where it names them.
    #[arg(long, env = "ORDERD_RETAIN_LOG", value_parser = parse_retain_log, value_name = "POLICY", conflicts_with_all = ["retain_log_secs", "retain_log_bytes"])]
    pub retain_log: Option<RetainLog>,

    /// How each core's next log segment is made ahead of need, off the core:
    /// `zero` allocates it and writes its zeros, paced over the current
    /// segment's life, so group commits flush into written blocks (about
    /// half the fdatasync time of `alloc`, at the price of writing the log's
    /// bytes twice; benches/README.md, Durability); `alloc` only allocates it; `off`
    /// creates each segment at rotation, on the core.
    #[arg(long, env = "ORDERD_PREPARE_SEGMENTS", value_enum, default_value = "zero")]
    pub prepare_segments: PrepareSegments,

    /// How long an idle core spins before it sleeps (µs). Spinning answers a
    /// request forwarded from another core ~45 µs sooner, but the spinning
    /// executor holds its CPU against the core's own flush thread (benches/README.md,
    /// Latency): leave it at 0 unless clients are not shard-aware and each
    /// core's flush thread has a CPU of its own.
    #[arg(long, env = "ORDERD_SPIN_BEFORE_PARK_US", default_value_t = 0)]
    pub spin_before_park_us: u64,

    /// Number of shards products and orders are spread over; shard s is owned
    /// by core s % cores.
    #[arg(long, env = "ORDERD_SHARDS", default_value_t = DEFAULT_SHARDS)]
    pub shards: u32,

    /// Most open client connections per core; one more gets a
    /// `too_many_connections` (106) Error frame and is closed.
    #[arg(long, env = "ORDERD_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CORE)]
    pub max_connections: u32,

    /// Most order-stream subscriptions one core serves at once; one more is
    /// answered `too_many_subscriptions` (14). A subscriber that does not
    /// read its events within --write-timeout-ms is disconnected.
    #[arg(long, env = "ORDERD_MAX_SUBSCRIPTIONS", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS_PER_CORE)]
    pub max_subscriptions: u32,

    /// The share of a core, in percent, the order stream may take while
    /// orders are waiting (reading the log, filtering and encoding events
    /// for subscribers); with no orders it takes what it needs. Subscribers
    /// fall behind rather than slow the orders: raise it when their lag
    /// (`orderd_subscriber_lag_records`) matters more than order throughput.
    #[arg(long, env = "ORDERD_STREAM_SHARE", value_name = "PERCENT", default_value_t = DEFAULT_STREAM_SHARE_PERCENT)]
    pub stream_share: u8,

    /// Largest frame payload accepted, in bytes; larger gets
    /// `frame_too_large` (101) and the connection is closed.
    #[arg(long, env = "ORDERD_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_PAYLOAD_BYTES as u32)]
    pub max_frame_bytes: u32,

    /// Most requests per frame; more gets `batch_too_large` (102) and the
    /// connection is closed.
    #[arg(long, env = "ORDERD_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH_REQUESTS as u32)]
    pub max_batch: u32,

    /// Most request frames a connection may have unanswered; more gets
    /// `too_many_in_flight` (103) and the connection is closed.
    #[arg(long, env = "ORDERD_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT_FRAMES as u32)]
    pub max_in_flight: u32,

    /// Most orders (and their idempotency keys) one shard holds in memory:
    /// open orders and final ones of the hot window. Past half of it the
    /// shard's next checkpoint moves every final order to the archive; past
    /// it place order is answered `orders_full` (11).
    #[arg(long, env = "ORDERD_MAX_ORDERS_PER_SHARD", default_value_t = DEFAULT_MAX_ORDERS_PER_SHARD)]
    pub max_orders_per_shard: u32,

    /// How long a final (paid, cancelled, expired) order stays in memory
    /// after it was placed; after that the core's archiver moves it to the
    /// shard's archive on disk (`<data-dir>/archive`, written and synced
    /// before memory lets it go), read back by `get order` and retries with
    /// one 64-byte read. 0: within a second of becoming final.
    #[arg(long, env = "ORDERD_HOT_ORDERS_SECS", default_value_t = crate::engine::config::DEFAULT_HOT_MS / 1000, value_name = "SECS")]
    pub hot_orders_secs: u64,

    /// Most keys of archived orders one shard remembers for retries (about
    /// 10-21 bytes of memory each). Past it the oldest are forgotten early
    /// and their retries are refused with `key_expired` (15), never placed
    /// again: size it as orders per second per shard times the dedup window.
    #[arg(long, env = "ORDERD_MAX_COLD_KEYS_PER_SHARD", default_value_t = crate::engine::config::DEFAULT_MAX_COLD_KEYS_PER_SHARD)]
    pub max_cold_keys_per_shard: u32,

    /// How long a retried place order is answered with its original order:
    /// an idempotency key older than this many seconds (by its own time,
    /// PROTOCOL.md § 9) is refused with `key_expired` (15), never placed.
    #[arg(long, env = "ORDERD_DEDUP_WINDOW_SECS", default_value_t = crate::engine::DEFAULT_DEDUP_WINDOW_MS / 1000, value_name = "SECS")]
    pub dedup_window_secs: u64,

    /// How far ahead of the server's clock a key's time may be (client
    /// clock skew) before it is refused with `key_expired` (15).
    #[arg(long, env = "ORDERD_KEY_MAX_AHEAD_SECS", default_value_t = crate::engine::DEFAULT_KEY_MAX_AHEAD_MS / 1000, value_name = "SECS")]
    pub key_max_ahead_secs: u64,

    /// A connection that sends no frame for this long is closed (ms).
    #[arg(long, env = "ORDERD_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,

    /// A client that starts a frame (or connects) and does not complete it
    /// (or its Hello) within this long is closed (ms).
    #[arg(long, env = "ORDERD_FRAME_TIMEOUT_MS", default_value_t = DEFAULT_FRAME_TIMEOUT_MS)]
    pub frame_timeout_ms: u64,

    /// A client that does not read its replies for this long, so that a
    /// write cannot complete, is closed (ms).
    #[arg(long, env = "ORDERD_WRITE_TIMEOUT_MS", default_value_t = DEFAULT_WRITE_TIMEOUT_MS)]
    pub write_timeout_ms: u64,

    /// How the group commit runs fdatasync: `blocking` (`File::sync_data`
    /// in the core's flush thread, the default) or `io-uring` (glommio's
    /// io_uring fdatasync; measured a tie here, benches/README.md, Durability).
    #[arg(long, env = "ORDERD_FLUSH_METHOD", value_enum, default_value = "blocking")]
    pub flush_method: FlushMethod,

    /// Where each core's flush thread runs: `pinned` to its core's CPU (the
    /// default), or `unbound` (the kernel picks; only with spare CPUs).
    #[arg(long, env = "ORDERD_FLUSH_THREAD", value_enum, default_value = "pinned")]
    pub flush_thread: FlushThread,

    /// Join the cluster whose map is kept in etcd at these endpoints
    /// (comma-separated `host:port`), as node --node of cluster --cluster:
    /// the start reads the map (the cluster must exist, with --shards
    /// shards: `orderd cluster init`) and registers the node's cores under
    /// an etcd lease, its liveness. Without it the server is a single node.
    #[arg(long, env = "ORDERD_ETCD", value_name = "ENDPOINTS", requires_all = ["cluster", "node"])]
    pub etcd: Option<String>,

    /// The cluster to join (with --etcd).
    #[arg(long, env = "ORDERD_CLUSTER", value_name = "NAME", requires = "etcd")]
    pub cluster: Option<String>,

    /// This node's id in the cluster (with --etcd): stable across restarts
    /// of the same data directory.
    #[arg(long, env = "ORDERD_NODE", value_name = "ID", requires = "etcd")]
    pub node: Option<String>,

    /// The host or IP clients reach this node at, in the cluster's node
    /// entry (default: the --listen IP).
    #[arg(long, env = "ORDERD_ADVERTISE", value_name = "HOST", requires = "etcd")]
    pub advertise: Option<String>,

    /// Test seam: wait this long before every group-commit flush (ms), so
    /// tests can see replies wait for it. Not for production.
    #[arg(long, hide = true)]
    pub test_flush_delay_ms: Option<u64>,

    /// Test seam: hold the start this long before the log replay, ports
    /// bound but not listening (ms). Not for production.
    #[arg(long, hide = true)]
    pub test_recovery_delay_ms: Option<u64>,
}

/// `--retain-log`: an age and/or a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetainLog {
    /// Seconds, if named.
    pub secs: Option<u64>,
    /// Bytes, if named.
    pub bytes: Option<u64>,
}

/// Parses `--retain-log`: comma-separated, at most one age (a number with
/// `s`, `m`, `h` or `d`) and one size (a number with a byte unit).
///
/// # Errors
/// What is wrong, in words.
pub fn parse_retain_log(s: &str) -> Result<RetainLog, String> {
    let mut policy = RetainLog::default();
    for part in s.split(',').map(str::trim) {
        let split = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
        let (number, unit) = part.split_at(split);
        let age = match unit.trim() {
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            _ => None,
        };
        match age {
            Some(scale) => {
                let n: u64 = number.parse().map_err(|_| format!("`{part}` is not an age (e.g. 24h, 7d)"))?;
                if policy.secs.replace(n.saturating_mul(scale)).is_some() {
                    return Err(format!("`{s}` names two ages"));
                }
            }
            None if unit.trim().is_empty() => {
                return Err(format!("`{part}` in `{s}` has no unit: an age takes s, m, h or d; a size a byte unit (GiB, GB)"))
            }
            None => {
                let bytes = super::site::parse_bytes(part)?;
                if policy.bytes.replace(bytes).is_some() {
                    return Err(format!("`{s}` names two sizes"));
                }
            }
        }
    }
    Ok(policy)
}

fn range(flag: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { flag, value, min, max })
    }
}

impl ServeArgs {
    /// Check every flag and build the configuration.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let cores = parse_cores(&self.site.cores)?;
        range("shards", self.shards.into(), 1, MAX_SHARDS as u64)?;
        range("max-connections", self.max_connections.into(), 1, 1 << 20)?;
        range("max-subscriptions", self.max_subscriptions.into(), 0, 1 << 20)?;
        range("stream-share", self.stream_share.into(), 1, 100)?;
        range("max-frame-bytes", self.max_frame_bytes.into(), 64, MAX_FRAME_PAYLOAD_BYTES as u64)?;
        range("max-batch", self.max_batch.into(), 1, MAX_BATCH_REQUESTS as u64)?;
        range("max-in-flight", self.max_in_flight.into(), 1, MAX_IN_FLIGHT_FRAMES as u64)?;
        range("max-orders-per-shard", self.max_orders_per_shard.into(), 1, u64::from(u32::MAX))?;
        range("dedup-window-secs", self.dedup_window_secs, 1, 3650 * 86_400)?;
        range("hot-orders-secs", self.hot_orders_secs, 0, 3650 * 86_400)?;
        range("max-cold-keys-per-shard", self.max_cold_keys_per_shard.into(), 0, u64::from(u32::MAX))?;
        range("key-max-ahead-secs", self.key_max_ahead_secs, 0, 86_400)?;
        let day = 86_400_000;
        range("idle-timeout-ms", self.idle_timeout_ms, 1, day)?;
        range("frame-timeout-ms", self.frame_timeout_ms, 1, day)?;
        range("write-timeout-ms", self.write_timeout_ms, 1, day)?;
        range("flush-interval-ms", self.flush_interval_ms, 1, 60_000)?;
        range("segment-bytes", self.segment_bytes, crate::log::MIN_SEGMENT_BYTES, crate::log::MAX_SEGMENT_BYTES)?;
        if !self.segment_bytes.is_multiple_of(4096) {
            return Err(ConfigError::NotPageMultiple { flag: "segment-bytes", value: self.segment_bytes });
        }
        range("max-log-bytes", self.max_log_bytes, self.segment_bytes, u64::MAX)?;
        range("spin-before-park-us", self.spin_before_park_us, 0, 10_000)?;
        range("checkpoint-every-records", self.checkpoint_every_records, 1, u64::MAX)?;
        range("checkpoint-every-secs", self.checkpoint_every_secs, 1, 30 * 86_400)?;
        let policy = self.retain_log.unwrap_or_default();
        let retain_log_secs = policy.secs.unwrap_or(self.retain_log_secs);
        range("retain-log-secs", retain_log_secs, 0, 3650 * 86_400)?;
        let retain_log_bytes =
            policy.bytes.or(self.retain_log_bytes).unwrap_or(self.max_log_bytes / 4 * crate::config::DEFAULT_RETAIN_LOG_QUARTERS);
        range("retain-log-bytes", retain_log_bytes, 0, self.max_log_bytes)?;
        if let CoreSelection::List(cpus) = &cores {
            let port = self.site.listen.port();
            if port != 0 && usize::from(port) + cpus.len() - 1 > usize::from(u16::MAX) {
                return Err(ConfigError::PortRange { port, cores: cpus.len() });
            }
        }
        let cluster = match (&self.etcd, &self.cluster, &self.node) {
            (Some(etcd), Some(cluster), Some(node)) => {
                crate::cluster::map::check_name("--cluster", cluster).map_err(ConfigError::Cluster)?;
                crate::cluster::map::check_name("--node", node).map_err(ConfigError::Cluster)?;
                Some(crate::config::ClusterConfig {
                    etcd: etcd.clone(),
                    cluster: cluster.clone(),
                    node: node.clone(),
                    advertise: self.advertise.clone(),
                })
            }
            _ => None,
        };
        Ok(ServeConfig {
            cluster,
            data_dir: self.site.data_dir.clone(),
            cores,
            listen: self.site.listen,
            durability: self.durability,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            segment_bytes: self.segment_bytes,
            max_log_bytes: self.max_log_bytes,
            truncate_corrupt_log: self.truncate_corrupt_log,
            retention: crate::log::retention::Retention { max_bytes: retain_log_bytes, max_age: Duration::from_secs(retain_log_secs) },
            checkpoints: (!self.no_checkpoints).then_some(crate::config::CheckpointPolicy {
                every_records: self.checkpoint_every_records,
                every: Duration::from_secs(self.checkpoint_every_secs),
            }),
            prepare_segments: self.prepare_segments.preparation(),
            spin_before_park: Duration::from_micros(self.spin_before_park_us),
            shards: self.shards,
            max_connections: self.max_connections,
            max_subscriptions: self.max_subscriptions,
            stream_share: self.stream_share,
            max_frame_bytes: self.max_frame_bytes,
            max_batch: self.max_batch,
            max_in_flight: self.max_in_flight,
            max_orders_per_shard: self.max_orders_per_shard,
            hot_orders: Duration::from_secs(self.hot_orders_secs),
            max_cold_keys_per_shard: self.max_cold_keys_per_shard,
            dedup_window: Duration::from_secs(self.dedup_window_secs),
            key_max_ahead: Duration::from_secs(self.key_max_ahead_secs),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            metrics_listen: (!self.site.no_metrics).then_some(self.site.metrics_listen),
            flush_method: self.flush_method,
            flush_thread: self.flush_thread,
            test_delays: TestDelays {
                flush: self.test_flush_delay_ms.map(Duration::from_millis),
                recovery: self.test_recovery_delay_ms.map(Duration::from_millis),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `orderd serve`'s flags alone, as the binary's tree parses them.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(extra: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut argv = vec!["orderd-serve"];
        argv.extend_from_slice(extra);
        let parsed = Serve::try_parse_from(argv).map_err(|e| ConfigError::BadCores { given: e.to_string() })?;
        parsed.args.validate()
    }

    #[test]
    fn defaults_are_valid() {
        let c = args(&[]).unwrap();
        assert_eq!(c.cores, CoreSelection::All);
        assert_eq!(c.shards, DEFAULT_SHARDS);
        assert_eq!(c.max_batch as usize, DEFAULT_MAX_BATCH_REQUESTS);
        assert_eq!(c.metrics_listen, Some(crate::config::DEFAULT_METRICS_LISTEN.parse().unwrap()));
        assert_eq!(c.prepare_segments, Some(crate::log::segment::Prepare::Zero));
        assert_eq!(c.spin_before_park, Duration::ZERO);
        assert_eq!((c.flush_method, c.flush_thread, c.test_delays), (FlushMethod::Blocking, FlushThread::Pinned, TestDelays::default()));
    }

    #[test]
    fn sizes_ranges_and_host_names_are_taken() {
        let c = args(&["--segment-bytes", "64KiB", "--max-log-bytes", "1 MiB", "--cores", "0-1", "--listen", "localhost:7070"]).unwrap();
        assert_eq!((c.segment_bytes, c.max_log_bytes), (64 << 10, 1 << 20));
        assert_eq!(c.cores, CoreSelection::List(vec![0, 1]));
        assert!(c.listen.ip().is_loopback() && c.listen.port() == 7070, "{}", c.listen);
        assert!(args(&["--segment-bytes", "64 parsecs"]).is_err());
    }

    #[test]
    fn flush_method_thread_and_test_delays_can_be_chosen() {
        assert_eq!(args(&["--flush-method", "io-uring"]).unwrap().flush_method, FlushMethod::IoUring);
        assert_eq!(args(&["--flush-method", "io_uring"]).unwrap().flush_method, FlushMethod::IoUring);
        assert!(args(&["--flush-method", "fast"]).is_err());
        assert_eq!(args(&["--flush-thread", "unbound"]).unwrap().flush_thread, FlushThread::Unbound);
        let c = args(&["--test-flush-delay-ms", "30", "--test-recovery-delay-ms", "5"]).unwrap();
        assert_eq!(c.test_delays, TestDelays { flush: Some(Duration::from_millis(30)), recovery: Some(Duration::from_millis(5)) });
    }

    #[test]
    fn segment_preparation_and_spinning_can_be_chosen() {
        assert_eq!(args(&["--prepare-segments", "off"]).unwrap().prepare_segments, None);
        for alloc in ["alloc", "allocate"] {
            assert_eq!(args(&["--prepare-segments", alloc]).unwrap().prepare_segments, Some(crate::log::segment::Prepare::Allocate));
        }
        assert!(args(&["--prepare-segments", "fast"]).is_err());
        assert_eq!(args(&["--spin-before-park-us", "100"]).unwrap().spin_before_park, Duration::from_micros(100));
        assert!(matches!(args(&["--spin-before-park-us", "20000"]), Err(ConfigError::OutOfRange { flag: "spin-before-park-us", .. })));
    }

    #[test]
    fn metrics_can_move_or_be_turned_off() {
        assert_eq!(args(&["--metrics-listen", "127.0.0.1:0"]).unwrap().metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(args(&["--no-metrics"]).unwrap().metrics_listen, None);
        assert_eq!(args(&["--no-metrics", "--metrics-listen", "127.0.0.1:9"]).unwrap().metrics_listen, None);
    }

    #[test]
    fn cores_parse_as_all_or_a_list() {
        assert_eq!(parse_cores("0,1").unwrap(), CoreSelection::List(vec![0, 1]));
        assert_eq!(parse_cores(" 3 ").unwrap(), CoreSelection::List(vec![3]));
        assert!(matches!(parse_cores("0,0"), Err(ConfigError::DuplicateCore { cpu: 0 })));
        assert!(matches!(parse_cores("x"), Err(ConfigError::BadCores { .. })));
        assert!(matches!(parse_cores(""), Err(ConfigError::BadCores { .. })));
    }

    #[test]
    fn bounds_past_the_wire_maxima_are_refused() {
        assert!(matches!(args(&["--max-batch", "5000"]), Err(ConfigError::OutOfRange { flag: "max-batch", .. })));
        assert!(matches!(args(&["--shards", "0"]), Err(ConfigError::OutOfRange { flag: "shards", .. })));
        assert!(matches!(args(&["--max-in-flight", "0"]), Err(ConfigError::OutOfRange { flag: "max-in-flight", .. })));
        assert!(matches!(args(&["--listen", "127.0.0.1:65535", "--cores", "0,1"]), Err(ConfigError::PortRange { port: 65535, cores: 2 })));
    }

    #[test]
    fn retain_log_names_an_age_a_size_or_both() {
        let both = args(&["--retain-log", "24h,20GiB"]).unwrap().retention;
        assert_eq!((both.max_age, both.max_bytes), (Duration::from_secs(86_400), 20 << 30));
        // A size past --max-log-bytes (64 GiB by default) is refused by name.
        assert!(matches!(args(&["--retain-log", "200GiB"]), Err(ConfigError::OutOfRange { flag: "retain-log-bytes", .. })));
        let age = args(&["--retain-log", "7d"]).unwrap().retention;
        assert_eq!(age.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(age.max_bytes, args(&[]).unwrap().retention.max_bytes, "the size keeps its default");
        assert_eq!(args(&["--retain-log", "10GB"]).unwrap().retention.max_bytes, 10_000_000_000);
        assert!(parse_retain_log("24").unwrap_err().contains("has no unit"));
        assert!(parse_retain_log("1h,2h").unwrap_err().contains("two ages"));
        assert!(parse_retain_log("1GiB,2GiB").unwrap_err().contains("two sizes"));
        assert!(args(&["--retain-log", "1h", "--retain-log-secs", "60"]).is_err(), "one or the other");
    }
}
