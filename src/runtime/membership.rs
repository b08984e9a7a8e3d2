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
//! Not yet here (issue 24, next steps): moves of owned shards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::startup::StartError;
use crate::cluster::{ClusterMap, Coordinator, NodeInfo, NodeLease, OwnedShards};
use crate::config::ClusterConfig;

/// How often a node re-reads the map.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

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
    pub fn register(self, addrs: &[SocketAddr], shards: u32) -> Result<NodeLease, StartError> {
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
        let lease = self.etcd.register(&node).map_err(|e| StartError::Cluster(e.to_string()))?;
        tracing::info!(cluster = %self.config.cluster, node = %node.node, cores = ?node.cores, lease = lease.id(), "registered in the cluster (liveness: an etcd lease)");
        Ok(lease)
    }

    /// The ownership view the cores read, from the map read at the start.
    #[must_use]
    pub fn owned(&self) -> Arc<OwnedShards> {
        let owned = Arc::new(OwnedShards::new(&self.map, &self.config.node));
        // The nodes too, for `ClusterMap` requests (the follower keeps both).
        owned.set_info(&self.map, &self.etcd.live_nodes().unwrap_or_default());
        owned
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
                match etcd.map().and_then(|read| etcd.live_nodes().map(|live| (read, live))) {
                    Ok((read, live)) => {
                        owned.set_info(&read.map, &live);
                        if owned.update(&read.map, &config.node) {
                            tracing::info!(version = read.map.version, owned = owned.count(), "cluster map changed: following it");
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
                let mut slept = Duration::ZERO;
                while slept < FOLLOW_EVERY && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    slept += Duration::from_millis(50);
                }
            }
        })
        .map_err(|e| StartError::Cluster(format!("cannot start the map thread: {e}")))?;
    Ok(Follower { stop, thread: Some(thread) })
}
