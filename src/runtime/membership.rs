//! A node's membership of a cluster (`serve --etcd`): before the log is
//! replayed the start reads the cluster's map from etcd (the cluster must
//! exist with this data directory's shard count), and once the ports
//! listen it registers the node's cores under an etcd lease that a thread
//! keeps alive for as long as the server runs (`cluster::etcd`). If etcd
//! becomes unreachable later the node serves on and the lease thread
//! retries; the node reappears in the map's view once it is back.
//!
//! The node serves only the shards the map gives it ([`OwnedShards`], read
//! by every core per request; a request for another shard is answered
//! `moved` with the map version), and a thread re-reads the map every
//! [`FOLLOW_EVERY`] to follow it ([`Follower`]); with etcd down it keeps
//! the map it holds.
//!
//! A node splits the shards it owns over its cores as a single server does
//! (shard modulo cores); `cluster rebalance` places each shard on the core
//! of its node that rule gives, and the SDK routes by the same rule.
//!
//! Moves (`runtime::handoff`, `cluster::mover`): a shard frozen for a move
//! whose intent is gone from etcd while the map still names this node was
//! abandoned by its command; the thread serves it again. A node that starts
//! while an intent to move one of its shards away exists starts with that
//! shard frozen, until the move finishes or is abandoned. A `Follow` or
//! `Release` step nudges the thread to read the map at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::startup::StartError;
use crate::cluster::{ClusterMap, Coordinator, NodeInfo, NodeLease, OwnedShards};
use crate::config::ClusterConfig;

/// How often a node re-reads the map.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// How often the thread looks for a nudge (a move's `Follow`) between reads.
const NUDGE_EVERY: Duration = Duration::from_millis(2);

/// A node that read its cluster's map and is about to register.
pub struct Joining {
    etcd: Coordinator,
    config: ClusterConfig,
    /// The map as read at the start.
    pub map: ClusterMap,
}

/// Reads `config`'s cluster map and checks it against `shards`.
///
/// # Errors
/// etcd unreachable, no such cluster, or another shard count.
pub fn join(config: &ClusterConfig, shards: u32) -> Result<Joining, StartError> {
    let fail = |e: crate::cluster::ClusterError| StartError::Cluster(e.to_string());
    let etcd = Coordinator::connect(&config.etcd, &config.cluster);
    let map = etcd.map().map_err(fail)?.map;
    if map.shards != shards {
        return Err(StartError::Cluster(format!(
            "cluster `{}` has {} shards, this node {} (--shards; a data directory keeps its count): start it with --shards {}",
            map.cluster, map.shards, shards, map.shards
        )));
    }
    let owned = map.owned_by(&config.node).count();
    tracing::info!(cluster = %map.cluster, node = %config.node, version = map.version, owned, "cluster map read from etcd");
    Ok(Joining { etcd, config: config.clone(), map })
}

impl Joining {
    /// Registers the node with the addresses its cores listen on (the
    /// `--advertise` host instead of their IP, if given). The node stays
    /// registered while the returned lease lives.
    ///
    /// # Errors
    /// etcd failed.
    pub fn register(
        self,
        addrs: &[SocketAddr],
        shards: u32,
        clock: Arc<crate::cluster::lease::LeaseClock>,
    ) -> Result<NodeLease, StartError> {
        let cores = addrs
            .iter()
            .map(|a| match &self.config.advertise {
                Some(host) => format!("{host}:{}", a.port()),
                None => a.to_string(),
            })
            .collect();
        let node = NodeInfo {
            node: self.config.node.clone(),
            cores,
            shards,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            since_ms: super::core::now_ms(),
        };
        let lease = self.etcd.register(&node, clock).map_err(|e| StartError::Cluster(e.to_string()))?;
        tracing::info!(cluster = %self.config.cluster, node = %node.node, cores = ?node.cores, lease = lease.id(), "registered in the cluster (liveness: an etcd lease)");
        Ok(lease)
    }

    /// The ownership view the cores read, from the map read at the start,
    /// with the shards a move under way is handing away frozen.
    ///
    /// # Errors
    /// etcd failed reading the moves under way.
    pub fn owned(&self) -> Result<Arc<OwnedShards>, StartError> {
        let owned = Arc::new(OwnedShards::new(&self.map, &self.config.node));
        // The nodes too, for `ClusterMap` requests (the follower keeps both).
        owned.set_info(&self.map, &self.etcd.live_nodes().unwrap_or_default());
        let intents = self.etcd.intents().map_err(|e| StartError::Cluster(e.to_string()))?;
        for intent in intents.iter().filter(|i| i.from.node == self.config.node) {
            owned.freeze(intent.shard);
            tracing::warn!(shard = intent.shard, to = %intent.to, "a move of this shard is under way: not serving it until the move ends");
        }
        Ok(owned)
    }
}

/// The thread that follows the map into an [`OwnedShards`]; stops on drop.
#[derive(Debug)]
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts following `config`'s cluster map into `owned`.
///
/// # Errors
/// The thread cannot start.
pub fn follow(config: &ClusterConfig, owned: Arc<OwnedShards>) -> Result<Follower, StartError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (config, flag) = (config.clone(), Arc::clone(&stop));
    let thread = std::thread::Builder::new()
        .name("orderd-cluster-map".into())
        .spawn(move || {
            let etcd = Coordinator::connect(&config.etcd, &config.cluster);
            let mut healthy = true;
            while !flag.load(Ordering::Relaxed) {
                // Before any read: a freeze seen here began after its
                // move's intent was written, so the reads below see the
                // intent unless the move has ended; likewise an install.
                let frozen = owned.frozen_shards();
                let installs: Vec<u64> = (0..owned.shard_count()).map(|s| owned.installs(s)).collect();
                match etcd.map().and_then(|read| etcd.live_nodes().map(|live| (read, live))) {
                    Ok((read, live)) => {
                        owned.set_info(&read.map, &live);
                        if owned.update(&read.map, &config.node) {
                            tracing::info!(version = read.map.version, owned = owned.count(), "cluster map changed: following it");
                        }
                        if read.map.replicas > 1 {
                            match take_over(&etcd, &read, &live, &config.node) {
                                Ok(Some((map, taken))) => {
                                    owned.failovers.fetch_add(taken, Ordering::Relaxed);
                                    owned.set_info(&map, &live);
                                    owned.update(&map, &config.node);
                                }
                                Ok(None) => {}
                                Err(e) => tracing::warn!(error = %e, "cannot take over the shards of a dead leader; retrying"),
                            }
                        }
                        if !healthy {
                            tracing::info!("cluster map readable again");
                        }
                        healthy = true;
                    }
                    Err(e) => {
                        if healthy {
                            tracing::warn!(error = %e, version = owned.version(), "cannot read the cluster map; serving on with the map held, retrying");
                        }
                        healthy = false;
                    }
                }
                if let Err(e) = settle_frozen(&etcd, &owned, &config.node, &frozen, &installs) {
                    tracing::warn!(error = %e, "cannot read the moves under way; frozen shards stay frozen, retrying");
                }
                let mut slept = Duration::ZERO;
                while slept < FOLLOW_EVERY && !flag.load(Ordering::Relaxed) && !owned.take_nudge() {
                    std::thread::sleep(NUDGE_EVERY);
                    slept += NUDGE_EVERY;
                }
            }
        })
        .map_err(|e| StartError::Cluster(format!("cannot start the map thread: {e}")))?;
    Ok(Follower { stop, thread: Some(thread) })
}

/// Serves again each shard of `frozen` (seen frozen before the reads here)
/// whose move was abandoned: its intent is gone from etcd and the map still
/// names this node. Flags for release every copy of a shard this node
/// neither owns nor is being given (`installs`: each shard's install count
/// read before the reads here).
fn settle_frozen(
    etcd: &Coordinator,
    owned: &OwnedShards,
    node: &str,
    frozen: &[(u32, u64)],
    installs: &[u64],
) -> Result<(), crate::cluster::ClusterError> {
    let intents = etcd.intents()?;
    // Read after the intents: a move that ended by switching the map shows
    // in this map.
    let map = etcd.map()?.map;
    for &(shard, generation) in frozen {
        if intents.iter().any(|i| i.shard == shard && i.from.node == node) {
            continue;
        }
        let mine = map.owners.get(shard as usize).and_then(Option::as_ref).is_some_and(|o| o.node == node);
        if mine && owned.unfreeze_if(shard, generation) {
            tracing::warn!(
                shard,
                "the move of this shard was abandoned (its intent is gone, the map still names this node): serving it again"
            );
        }
    }
    // Copies of shards this node does not own and is not being given (no
    // move names it as destination): handed away without their release,
    // or installed for a move that was abandoned. Their cores drop them
    // (an empty shard is left alone), unless an install came since.
    for shard in 0..map.shards {
        let mine = map.owners.get(shard as usize).and_then(Option::as_ref).is_some_and(|o| o.node == node);
        let coming = intents.iter().any(|i| i.shard == shard && i.to.node == node);
        // A follower's copy stays: it is one of the shard's copies.
        let copy = map.follows(shard, node) || owned.accepts_copy(shard, map.epoch_of(shard));
        if !mine && !coming && !copy && !owned.owns(shard) {
            owned.want_release(shard, installs.get(shard as usize).copied().unwrap_or(0));
        }
    }
    Ok(())
}

/// Failover: for each shard whose leader's node is not live (its lease
/// lapsed) and whose first live in-sync follower is this node, makes this
/// node the leader in one compare-and-swap of the map (a new epoch). An
/// in-sync follower holds every state change its leader acknowledged (the
/// leader acknowledges one only once each in-sync follower has it durably),
/// so none is lost. The old leader's copy and the other followers' leave
/// the in-sync set: the old leader may hold changes it never got to send
/// (never acknowledged), and another follower's copy may be ahead of or
/// behind this one; each must be made again from the new leader before it
/// counts as a copy (until then the shard has fewer copies than the
/// cluster keeps, and refuses state changes rather than acknowledge them
/// with fewer). Returns the map written, if any.
///
/// # Errors
/// etcd failed (a conflict is not an error: another change came first, the
/// next look decides again).
fn take_over(
    etcd: &Coordinator,
    read: &crate::cluster::etcd::ReadMap,
    live: &[NodeInfo],
    node: &str,
) -> Result<Option<(ClusterMap, u64)>, crate::cluster::ClusterError> {
    let is_live = |n: &str| live.iter().any(|l| l.node == n);
    let mut map = read.map.clone();
    let mut taken = Vec::new();
    for shard in 0..map.shards {
        let s = shard as usize;
        let Some(leader) = map.owners[s].as_ref() else { continue };
        if is_live(&leader.node) {
            continue;
        }
        let Some(first) = map.followers[s].iter().find(|f| is_live(&f.node)).cloned() else { continue };
        if first.node != node {
            continue;
        }
        tracing::warn!(shard, from = %leader, to = %first, epoch = read.map.version + 1, "the shard's leader is down (its lease lapsed): this node's copy takes over");
        map.owners[s] = Some(first);
        map.followers[s].clear();
        map.epochs[s] = read.map.version + 1;
        taken.push(shard);
    }
    if taken.is_empty() {
        return Ok(None);
    }
    match etcd.swap_map(read, &map) {
        Ok(()) => {
            map.version = read.map.version + 1;
            tracing::warn!(shards = ?taken, version = map.version, "took over the shards of a dead leader");
            Ok(Some((map, taken.len() as u64)))
        }
        Err(crate::cluster::ClusterError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file that ties a data directory to its node of a cluster.
pub const CLAIM_FILE: &str = "cluster.json";

/// Which node of which cluster a data directory is (`cluster.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Claim {
    cluster: String,
    node: String,
}

fn read_claim(data_dir: &std::path::Path) -> Result<Option<Claim>, StartError> {
    let path = data_dir.join(CLAIM_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StartError::Cluster(format!("{} is not a cluster claim ({e}): restore it from a backup", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StartError::Cluster(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Before the replay: a data directory that belongs to a node of a cluster
/// starts only as that node (as a single server it would serve shards other
/// nodes own, and under another name it would take another node's place).
///
/// # Errors
/// The directory belongs to another node, or to a node started without
/// `--etcd`.
pub fn check_claim(data_dir: &std::path::Path, cluster: Option<&ClusterConfig>) -> Result<(), StartError> {
    match (read_claim(data_dir)?, cluster) {
        (Some(claim), None) => Err(StartError::Cluster(format!(
            "this data directory belongs to node `{}` of cluster `{}`: start it with --etcd ENDPOINTS --cluster {} --node {} \
             (as a single server it would serve shards other nodes own)",
            claim.node, claim.cluster, claim.cluster, claim.node
        ))),
        (Some(claim), Some(c)) if claim.cluster != c.cluster || claim.node != c.node => Err(StartError::Cluster(format!(
            "this data directory belongs to node `{}` of cluster `{}`, not `{}` of `{}`: start it as --cluster {} --node {}, \
             or give node `{}` an empty --data-dir",
            claim.node, claim.cluster, c.node, c.cluster, claim.cluster, claim.node, c.node
        ))),
        _ => Ok(()),
    }
}

/// After the replay: a node starting on a data directory that is not yet
/// claimed must find it empty (`holds_data`: some shard holds a product or
/// an order), then claims it (the file synced) before it registers.
///
/// # Errors
/// The directory holds another server's data, or the claim cannot be written.
pub fn claim(data_dir: &std::path::Path, cluster: &ClusterConfig, holds_data: bool) -> Result<(), StartError> {
    if read_claim(data_dir)?.is_some() {
        return Ok(());
    }
    if holds_data {
        return Err(StartError::Cluster(format!(
            "node `{}` is joining cluster `{}` with a data directory that holds another server's orders: a node starts on an \
             empty --data-dir (its shards come to it by `orderd cluster rebalance` or `move-shard`)",
            cluster.node, cluster.cluster
        )));
    }
    let claim = Claim { cluster: cluster.cluster.clone(), node: cluster.node.clone() };
    let path = data_dir.join(CLAIM_FILE);
    let tmp = data_dir.join(format!("{CLAIM_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &file, serde_json::to_string(&claim).unwrap_or_default().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| StartError::Cluster(format!("cannot write {}: {e}", path.display())))
}
