//! The server runtime: one pinned glommio executor per selected CPU, each a
//! shared-nothing core that owns a fixed set of shards, accepts connections
//! on its own port and forwards requests for other cores' shards over a
//! channel mesh.
//!
//! glommio is used only inside this module (and its children), so another
//! thread-per-core runtime could replace it without touching the engine or
//! the protocol.
//!
//! # Layout
//! - this file: [`serve`] — runs the checks, recovers the log, binds the
//!   ports, starts one executor per core with its tasks and joins them.
//! - [`startup`]: the checks an operator can fail (CPUs, data directory
//!   lock, locked memory) and [`StartError`].
//! - [`dispatch`]: the frame path's decisions, without I/O.
//! - [`replies`]: which encoded replies may leave (group commit's rule).
//! - [`core`]: the per-core [`core::Core`] (its shards, log writer,
//!   counters) and the log-room rule.
//! - [`commit`]: group commit: the per-core flusher and the replies waiting
//!   for it.
//! - [`checkpoints`]: each core's checkpoints, by themselves and on demand.
//! - [`listener`]: binding (no `SO_REUSEPORT`), accept loop, connection bound.
//! - [`membership`]: a cluster node's map check at start and its
//!   registration under an etcd lease (`serve --etcd`).
//! - [`connection`]: one client connection's I/O; [`subscriber`]: its
//!   order-stream side.
//! - [`mesh`]: cross-core messages ([`dispatch::CoreMsg`]) and their answers.
//! - [`metrics`]: the Prometheus endpoint (per-core counters, merged on scrape).
//! - [`shutdown`]: SIGINT/SIGTERM and the drain sequence.
//! - [`systemd`]: readiness, replay progress and stopping for `Type=notify`.

pub mod archiver;
pub mod checkpoints;
pub mod commit;
pub mod connection;
pub mod core;
pub mod dispatch;
pub mod handoff;
pub mod listener;
pub mod malloc;
pub mod membership;
pub mod mesh;
pub mod metrics;
pub mod replication;
pub mod replies;
pub mod segments;
pub mod shutdown;
pub mod startup;
pub mod stream_budget;
pub mod stream_reader;
pub mod stream_ticker;
pub mod subscriber;
pub mod systemd;
pub mod threads;

use std::cell::RefCell;

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};
use glommio::{Latency, Shares, TaskQueueHandle};
use metrics::render::Recovered;
use orderd_protocol::limits::PROTOCOL_VERSION;
use orderd_protocol::message::{CoreAddr, ServerLimits, Welcome};

use self::commit::Commit;
use self::core::{now_ms, Core};
use self::dispatch::{CoreAnswer, CoreMsg};
use self::mesh::{Envelope, Mesh, Tickets, CHANNEL_CAPACITY};
use self::shutdown::{LocalShutdown, ShutdownFlag};
pub(crate) use self::startup::io_memory_for;
use self::startup::{lock_data_dir, memlock_limit, select_cpus};
pub use self::startup::{StartError, DEFAULT_IO_MEMORY, MIN_IO_MEMORY, RINGS_PER_EXECUTOR};
use self::stream_budget::StreamBudget;
use self::stream_reader::LogReader;
use self::stream_ticker::DurableTicker;
use crate::config::{Durability, FlushThread, ServeConfig};
use crate::engine::{Shard, ShardConfig};
use crate::log::segment::Prepare;
use crate::log::{LogWriter, RecoveryConfig};
use crate::stream::DurablePoints;

/// How often each core expires due orders and looks at the shutdown flag.
const TICK: Duration = Duration::from_millis(10);

/// How often a long recovery logs its progress before the server listens.
const RECOVERY_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The bounds every connection of a core enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections per core.
    pub max_connections: u32,
    /// Largest payload.
    pub max_frame_bytes: u32,
    /// Most requests per frame.
    pub max_batch: u32,
    /// Most unanswered frames.
    pub max_in_flight: u32,
    /// Silence allowed between frames.
    pub idle_timeout: Duration,
    /// Time to finish a started frame or the Hello.
    pub frame_timeout: Duration,
    /// Time a write may block.
    pub write_timeout: Duration,
}

/// What a core's tasks share (on that core's thread only).
pub struct CoreCtx {
    /// The core's shards and counters.
    pub core: Rc<RefCell<Core>>,
    /// The other cores (none when there is one core).
    pub mesh: Option<Rc<Mesh>>,
    /// The handshake this core answers with.
    pub welcome: Welcome,
    /// The server id.
    pub server_id: u64,
    /// What the start's log recovery did (for the metrics).
    pub recovered: Recovered,
    /// Connection bounds.
    pub limits: ConnLimits,
    /// Fires when the server is shutting down.
    pub shutdown: LocalShutdown,
    /// The core's durable point (group commit).
    pub commit: Rc<Commit>,
    /// Whether replies to state changes wait for the flush (`--durability sync`).
    pub sync: bool,
    /// The order stream's share of the core.
    pub streams: StreamCtx,
    /// Checkpoints on demand across cores.
    pub checkpoints: Arc<checkpoints::CheckpointBoard>,
}

/// What a core's subscribers need.
pub struct StreamCtx {
    /// The data directory, whose logs they read.
    pub data_dir: std::path::PathBuf,
    /// Every core's durable point.
    pub durable: Arc<DurablePoints>,
    /// The task queue subscribed connections run in.
    pub queue: TaskQueueHandle,
    /// Most subscriptions this core serves at once (`--max-subscriptions`).
    pub max_subscriptions: u32,
    /// Most events in one Events frame (within the frame bounds).
    pub max_events_per_frame: usize,
    /// The stream's share of the core while orders run (`--stream-share`).
    pub budget: Rc<StreamBudget>,
    /// Wakes caught-up subscribers when a durable point moves.
    pub ticker: Rc<DurableTicker>,
    /// Reads the logs for this core's subscriptions, blocks shared.
    pub reader: Rc<LogReader>,
}

/// What recovery hands each core: its shards and its log writer.
type CoreState = (Vec<Shard>, LogWriter);

/// What every core is started with.
struct Shared {
    config: ServeConfig,
    listeners: Vec<StdListener>,
    addrs: Vec<SocketAddr>,
    /// The metrics endpoint's socket, served by core 0 (`None`: `--no-metrics`).
    metrics: Option<(StdListener, SocketAddr)>,
    server_id: u64,
    recovered: Recovered,
    /// The shard installs the replay read (`RecoveryStats::installs`).
    installs: Vec<crate::log::recovery::Installed>,
    flag: Arc<ShutdownFlag>,
    /// Per core, taken once by that core's executor.
    states: Mutex<Vec<Option<CoreState>>>,
    /// Every core's durable log point, for the order stream.
    durable: Arc<DurablePoints>,
    /// Checkpoints on demand across cores.
    checkpoints: Arc<checkpoints::CheckpointBoard>,
    /// In a cluster, the shards this node owns (`None`: a single node).
    cluster: Option<Arc<crate::cluster::OwnedShards>>,
}

/// The stream task queue's shares; the order path's default queue has
/// 1000, so under contention subscribers get about 1/11 of a core and the
/// orders the rest (all of it is theirs when the other is idle).
const STREAM_SHARES: usize = 100;

/// Events that fit one Events frame within the frame bounds (an archived
/// `StreamEvent` is 64 bytes, the vector's root 8).
fn events_per_frame(max_frame_bytes: u32, max_batch: u32) -> usize {
    ((max_frame_bytes as usize).saturating_sub(8) / 64).min(max_batch as usize).max(1)
}

/// Run the server until SIGINT/SIGTERM. Everything an operator can get wrong
/// is checked before any executor starts.
pub fn serve(config: ServeConfig) -> Result<(), StartError> {
    malloc::map_large_allocations();
    let cpus = select_cpus(&config.cores)?;
    let cores = cpus.len();
    let (_lock, server_id) = lock_data_dir(&config.data_dir)?;
    // Bound now (a taken port fails the start before a long replay), but
    // listening only once the log is replayed.
    let reserved = listener::bind_all(config.listen, cores, listener::BIND_RETRY_FOR)?;
    let addrs: Vec<SocketAddr> = reserved.iter().map(listener::Reserved::addr).collect();
    let metrics_reserved = config.metrics_listen.map(metrics::http::bind).transpose()?;
    let io_memory = io_memory_for(cores, memlock_limit())?;
    let flag = ShutdownFlag::install(cores).map_err(StartError::Signals)?;
    shutdown::watch(&flag).map_err(StartError::Signals)?;

    if let Some(delay) = config.test_delays.recovery {
        // Test seam: a replay that takes a while (tests/server_durability.rs,
        // tests/server_shutdown.rs).
        tracing::info!(ms = delay.as_millis() as u64, "test seam: holding the log's replay");
        std::thread::sleep(delay);
    }
    // A cluster's node reads the map before the replay: a wrong cluster
    // or shard count fails the start at once.
    membership::check_claim(&config.data_dir, config.cluster.as_ref())?;
    let joining = config.cluster.as_ref().map(|c| membership::join(c, config.shards)).transpose()?;
    let (states, recovered, installs) = recover(&config, &cpus)?;
    if let Some(c) = &config.cluster {
        let holds_data = states.iter().any(|(shards, _)| shards.iter().any(|s| !s.is_blank()));
        membership::claim(&config.data_dir, c, holds_data)?;
    }
    let listeners = listener::listen_all(reserved)?;
    // Listening: the node may now be found by the cluster (kept while the
    // server runs; revoked when `serve` returns).
    let owned = joining.as_ref().map(membership::Joining::owned).transpose()?;
    let _follower = match (&config.cluster, &owned) {
        (Some(c), Some(o)) => Some(membership::follow(c, Arc::clone(o))?),
        _ => None,
    };
    let clock = owned.as_ref().map_or_else(Default::default, |o| Arc::clone(&o.lease));
    let _lease = joining.map(|j| j.register(&addrs, config.shards, clock)).transpose()?;
    // Re-replication: the shards this node leads get the copies the
    // cluster keeps (`replication::seeder`).
    let _seeder = match (&config.cluster, &owned) {
        (Some(c), Some(o)) => Some(
            replication::seeder::start(c, Arc::clone(o))
                .map_err(|e| StartError::Cluster(format!("cannot start the re-replication thread: {e}")))?,
        ),
        _ => None,
    };
    let metrics = match metrics_reserved {
        Some(reserved) => {
            let addr = reserved.addr();
            Some((metrics::http::listen(reserved)?, addr))
        }
        None => None,
    };

    let shards_per_core = config.shards as usize / cores;
    let durability = match config.durability {
        Durability::Sync => "sync (replies to state changes wait for the group-commit fdatasync that covers them)".to_string(),
        Durability::Async => format!(
            "async (replies at once, log flushed every {} ms: a power loss or kernel crash can lose that window of acknowledged changes)",
            config.flush_interval.as_millis()
        ),
    };
    tracing::info!(
        cores,
        ?cpus,
        shards = config.shards,
        shards_per_core = format_args!("{shards_per_core}..={}", config.shards.div_ceil(cores as u32)),
        ports = ?addrs.iter().map(SocketAddr::port).collect::<Vec<_>>(),
        metrics = %metrics.as_ref().map_or_else(|| "off".to_string(), |(_, a)| format!("http://{a}/metrics")),
        segment_bytes = config.segment_bytes,
        max_log_bytes_per_core = config.max_log_bytes,
        "orderd starting; durability = {durability}; logs in {}",
        config.data_dir.display(),
    );
    tracing::info!(
        max_connections_per_core = config.max_connections,
        max_frame_bytes = config.max_frame_bytes,
        max_batch = config.max_batch,
        max_in_flight = config.max_in_flight,
        max_orders_per_shard = config.max_orders_per_shard,
        idle_timeout_ms = config.idle_timeout.as_millis() as u64,
        frame_timeout_ms = config.frame_timeout.as_millis() as u64,
        write_timeout_ms = config.write_timeout.as_millis() as u64,
        io_memory,
        data_dir = %config.data_dir.display(),
        server_id,
        "limits"
    );

    let durable = Arc::new(DurablePoints::new(&states.iter().map(|(_, log)| log.durable()).collect::<Vec<_>>()));
    let states = Mutex::new(states.into_iter().map(Some).collect());
    let checkpoints = Arc::new(checkpoints::CheckpointBoard::new(cores));
    let shared = Arc::new(Shared {
        config,
        listeners,
        addrs,
        metrics,
        server_id,
        recovered,
        installs,
        flag,
        states,
        durable,
        checkpoints,
        cluster: owned,
    });
    let online = CpuSet::online().map_err(|e| StartError::Topology(e.to_string()))?;
    let placement = PoolPlacement::Custom(cpus.iter().map(|&cpu| online.clone().filter(|l| l.cpu == cpu)).collect());
    let requests_mesh = MeshBuilder::<Envelope<CoreMsg>, _>::full(cores, CHANNEL_CAPACITY);
    let replies_mesh = MeshBuilder::<Envelope<CoreAnswer>, _>::full(cores, CHANNEL_CAPACITY);
    let spin_before_park = shared.config.spin_before_park;
    let mut builder = LocalExecutorPoolBuilder::new(placement);
    if shared.config.flush_thread == FlushThread::Unbound {
        builder = builder.blocking_thread_pool_placement(PoolPlacement::Unbound(1));
    }
    let handles = builder
        .name("orderd-core")
        .io_memory(io_memory)
        .spin_before_park(spin_before_park)
        .on_all_shards(move || async move { run_core(shared, requests_mesh, replies_mesh).await })
        .map_err(|e| StartError::Executors(e.to_string()))?;
    let mut failure = None;
    for result in handles.join_all() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    match failure {
        None => {
            tracing::info!("orderd stopped");
            Ok(())
        }
        Some(e) => Err(StartError::CoreFailed(e)),
    }
}

/// One core: join the meshes, adopt its listener, serve until shutdown.
async fn run_core(
    shared: Arc<Shared>,
    requests_mesh: MeshBuilder<Envelope<CoreMsg>, Full>,
    replies_mesh: MeshBuilder<Envelope<CoreAnswer>, Full>,
) -> Result<(), String> {
    let cores = shared.listeners.len();
    let (index, mesh) = if cores > 1 {
        let (requests_tx, requests_rx) = requests_mesh.join().await.map_err(|e| format!("joining the request mesh: {e}"))?;
        let (replies_tx, replies_rx) = replies_mesh.join().await.map_err(|e| format!("joining the reply mesh: {e}"))?;
        let index = requests_tx.peer_id();
        if replies_tx.peer_id() != index {
            return Err("the two meshes numbered this core differently".into());
        }
        (index, Some(Rc::new(Mesh { requests_tx, requests_rx, replies_tx, replies_rx, tickets: Tickets::default() })))
    } else {
        (0, None)
    };
    let config = &shared.config;
    let state = shared.states.lock().map_err(|_| "the recovered state is poisoned".to_string())?.get_mut(index).and_then(Option::take);
    let Some((shards, log)) = state else {
        return Err(format!("no recovered state for core {index}"));
    };
    if config.flush_thread == FlushThread::Pinned {
        threads::pin_blocking_thread_here(index).await;
    }
    let commit = Rc::new(Commit::new(log.durable(), Arc::clone(&shared.durable), index));
    let core = Rc::new(RefCell::new(Core::new(index, cores, config.shards, shards, log)));
    core.borrow_mut().subscribers = crate::stream::SubscriberPositions::new(Arc::clone(&shared.durable));
    core.borrow_mut().cluster = shared.cluster.clone();
    core.borrow_mut().replication.set_point(commit.replica_point());
    {
        // The bundles of shards moved to this core (`log::handoff`), for the
        // checkpoints to remove once none is needed.
        let moves_dir = crate::log::handoff::moves_dir(&shared.config.data_dir);
        let mine = |shard: u16| usize::from(shard) % cores == index;
        let tracked: Vec<_> = shared.installs.iter().copied().filter(|&(shard, _, _)| mine(shard)).collect();
        let stale = crate::log::handoff::stale_bundles(&moves_dir, mine, &tracked).unwrap_or_else(|e| {
            tracing::warn!(error = %e, dir = %moves_dir.display(), "cannot list the moved shards' bundles; they stay");
            Vec::new()
        });
        core.borrow_mut().bundles = crate::log::handoff::Sweep { moves_dir, tracked, stale };
    }
    let listener = listener::adopt(&shared.listeners[index]).map_err(|e| format!("adopting listener {index}: {e}"))?;
    let welcome = Welcome {
        server_id: shared.server_id,
        version: PROTOCOL_VERSION,
        core: index as u16,
        cores: shared.addrs.iter().enumerate().map(|(i, a)| CoreAddr::new(i as u16, *a)).collect(),
        shard_owner: (0..config.shards).map(|s| (s as usize % cores) as u16).collect(),
        limits: ServerLimits { max_frame_bytes: config.max_frame_bytes, max_batch: config.max_batch, max_in_flight: config.max_in_flight },
    };
    let ctx = Rc::new(CoreCtx {
        core: Rc::clone(&core),
        mesh: mesh.clone(),
        welcome,
        server_id: shared.server_id,
        recovered: shared.recovered,
        limits: ConnLimits {
            max_connections: config.max_connections,
            max_frame_bytes: config.max_frame_bytes,
            max_batch: config.max_batch,
            max_in_flight: config.max_in_flight,
            idle_timeout: config.idle_timeout,
            frame_timeout: config.frame_timeout,
            write_timeout: config.write_timeout,
        },
        shutdown: LocalShutdown::default(),
        commit: Rc::clone(&commit),
        sync: config.durability == Durability::Sync,
        streams: StreamCtx {
            data_dir: config.data_dir.clone(),
            durable: Arc::clone(&shared.durable),
            queue: glommio::executor().create_task_queue(Shares::Static(STREAM_SHARES), Latency::NotImportant, "streams"),
            max_subscriptions: config.max_subscriptions,
            max_events_per_frame: events_per_frame(config.max_frame_bytes, config.max_batch),
            budget: StreamBudget::new(
                config.stream_share,
                glommio::executor().current_task_queue(),
                {
                    let core = Rc::clone(&core);
                    Box::new(move || {
                        let core = core.borrow();
                        core.counters.requests + core.counters.forwarded
                    })
                },
                Rc::clone(&core.borrow().stream_time),
            ),
            ticker: DurableTicker::new(Arc::clone(&shared.durable)),
            reader: LogReader::new(&config.data_dir, Rc::clone(&core.borrow().stream_reads)),
        },
        checkpoints: Arc::clone(&shared.checkpoints),
    });
    let flusher = glommio::spawn_local(commit::flusher(
        Rc::clone(&core),
        Rc::clone(&commit),
        config.flush_interval,
        config.flush_method,
        config.test_delays.flush,
    ));
    let preparer = glommio::spawn_local(segments::preparer(Rc::clone(&core), config.prepare_segments));
    let checkpointer = glommio::spawn_local(checkpoints::checkpointer(
        Rc::clone(&core),
        Rc::clone(&commit),
        config.checkpoints,
        config.retention,
        Arc::clone(&shared.checkpoints),
    ));
    let archiver = glommio::spawn_local(archiver::archiver(Rc::clone(&core)));
    let sync = ctx.sync.then(|| Rc::clone(&commit));
    if let Some(mesh) = &mesh {
        for peer in (0..cores).filter(|&p| p != index) {
            glommio::spawn_local(mesh::serve_forwarded(peer, Rc::clone(mesh), Rc::clone(&core), sync.clone())).detach();
            glommio::spawn_local(mesh::collect_replies(peer, Rc::clone(mesh))).detach();
        }
    }
    if shared.cluster.is_some() {
        glommio::spawn_local(replication::link::supervise(Rc::clone(&core), Rc::clone(&commit))).detach();
    }
    // The timer: expiries, and the shutdown flag (never on the order path).
    let ticker = {
        let (core, shutdown, flag) = (Rc::clone(&core), ctx.shutdown.clone(), Arc::clone(&shared.flag));
        glommio::spawn_local(async move {
            // From here this core sees the stop signal: the watch thread
            // hands over (`shutdown::watch`).
            flag.core_started();
            loop {
                glommio::timer::sleep(TICK).await;
                core.borrow_mut().expire_due(now_ms());
                core.borrow_mut().release_handed_away(now_ms());
                if flag.requested() && !shutdown.is_triggered() {
                    if index == 0 {
                        systemd::stopping();
                    }
                    flag.core_stopping();
                    shutdown.trigger();
                }
            }
        })
    };
    tracing::info!(core = index, addr = %shared.addrs[index], shards = core.borrow().local_shards(), "core serving");
    if index == 0 {
        // Every core's socket is bound and listening (bound before the
        // executors started): announce them for scripts and tests.
        let all = shared.addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "orderd listening {} cores={all}", shared.addrs[0]);
        // The second line: the metrics endpoint (served from here, core 0).
        match &shared.metrics {
            Some((listener, addr)) => {
                metrics::http::start(listener, Rc::clone(&ctx))?;
                tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
                let _ = writeln!(out, "orderd metrics listening {addr}");
            }
            None => {
                let _ = writeln!(out, "orderd metrics off");
            }
        }
        let _ = out.flush();
        systemd::ready(&shared.addrs);
    }
    listener::accept_loop(listener, Rc::clone(&ctx)).await;
    // Drain: let this core's connections finish their frames.
    while core.borrow().counters.connections > 0 {
        glommio::timer::sleep(TICK).await;
    }
    shared.flag.core_drained();
    // Keep serving forwarded requests until every core has drained.
    while !shared.flag.all_drained() {
        glommio::timer::sleep(TICK).await;
    }
    drop(ticker);
    drop(preparer);
    drop(checkpointer);
    drop(archiver);
    if let Some(mesh) = &mesh {
        mesh.requests_tx.close();
        mesh.replies_tx.close();
    }
    // Every frame is answered: flush what the flusher has not, then stop it.
    drop(flusher);
    core.borrow_mut().log_mut().flush_now().map_err(|e| format!("final log flush of core {index}: {e}"))?;
    let (flush_us, flush_records) = {
        let m = core.borrow().metrics;
        (m.flush_seconds, m.flush_records)
    };
    tracing::info!(
        core = index,
        flushes = flush_us.count(),
        records = flush_records.sum(),
        records_per_flush = format_args!("{:.1}", flush_records.sum() as f64 / flush_us.count().max(1) as f64),
        avg_flush_us = flush_us.sum() / flush_us.count().max(1),
        log_bytes = core.borrow().log().record_bytes(),
        "log flushed"
    );
    tracing::info!(core = index, "core stopped");
    Ok(())
}

/// Recovers every core's log into fresh shards and splits them by core.
fn recover(config: &ServeConfig, cpus: &[usize]) -> Result<(Vec<CoreState>, Recovered, Vec<crate::log::recovery::Installed>), StartError> {
    let started = std::time::Instant::now();
    let cores = cpus.len();
    let mut all: Vec<Shard> = (0..config.shards)
        .map(|s| {
            let mut shard = ShardConfig::new(s as u16);
            shard.max_orders = config.max_orders_per_shard;
            shard.max_idempotency_keys = config.max_orders_per_shard;
            shard.dedup_window_ms = config.dedup_window.as_millis() as u64;
            shard.hot_ms = config.hot_orders.as_millis() as u64;
            shard.max_cold_keys = config.max_cold_keys_per_shard;
            shard.key_max_ahead_ms = config.key_max_ahead.as_millis() as u64;
            Shard::new(shard)
        })
        .collect();
    let recovery = RecoveryConfig {
        data_dir: config.data_dir.clone(),
        cores,
        segment_bytes: config.segment_bytes,
        max_log_bytes: config.max_log_bytes,
        truncate_corrupt: config.truncate_corrupt_log,
        cpus: cpus.to_vec(),
        progress_every: Some(RECOVERY_PROGRESS_EVERY),
        on_progress: Some(systemd::replaying),
        first_segment: config.prepare_segments.unwrap_or(Prepare::Allocate),
        storage: crate::log::RealStorage::shared(),
    };
    let (writers, stats) = crate::log::recover(&recovery, &mut all)?;
    let recovered = Recovered { records: stats.records, seconds: started.elapsed().as_secs_f64() };
    Ok((core::split_by_core(all, cores).into_iter().zip(writers).collect(), recovered, stats.installs))
}
