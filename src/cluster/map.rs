//! The cluster map as it lives in etcd: pure data, its keys and its JSON,
//! and the decisions on it (who owns a shard, an even spread of the shards
//! over the live nodes' cores). No I/O here.
//!
//! Keys, under the cluster's prefix `/orderd/<cluster>/`:
//! - `map`: the [`ClusterMap`] (shard count, version, each shard's owner);
//!   written only by compare-and-swap on its etcd mod revision, and its
//!   `version` grows by one with each write;
//! - `nodes/<id>`: a [`NodeInfo`] (the address of each of the node's
//!   cores), put with the node's lease: it disappears when the node stops
//!   keeping the lease alive, and that is the node's liveness.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most shards a cluster may have (the order id holds the shard in 16 bits).
pub const MAX_CLUSTER_SHARDS: u32 = 1 << 16;

/// A cluster or node name: 1 to 64 of `[A-Za-z0-9_.-]`, as they appear in
/// etcd keys and in metrics.
///
/// # Errors
/// The name, and what is wrong with it.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} name `{name}`: use 1 to 64 letters, digits, `_`, `.` or `-`"))
    }
}

/// The etcd key prefix of cluster `cluster`.
#[must_use]
pub fn prefix(cluster: &str) -> String {
    format!("/orderd/{cluster}/")
}

/// The key of cluster `cluster`'s map.
#[must_use]
pub fn map_key(cluster: &str) -> String {
    format!("{}map", prefix(cluster))
}

/// The prefix of cluster `cluster`'s node keys.
#[must_use]
pub fn nodes_prefix(cluster: &str) -> String {
    format!("{}nodes/", prefix(cluster))
}

/// The key of node `node` of cluster `cluster`.
#[must_use]
pub fn node_key(cluster: &str, node: &str) -> String {
    format!("{}{node}", nodes_prefix(cluster))
}

/// The prefix of cluster `cluster`'s move intents.
#[must_use]
pub fn intents_prefix(cluster: &str) -> String {
    format!("{}moves/", prefix(cluster))
}

/// The key of the intent to move shard `shard` of cluster `cluster`.
#[must_use]
pub fn intent_key(cluster: &str, shard: u32) -> String {
    format!("{}{shard:05}", intents_prefix(cluster))
}

/// A move under way, as `orderd cluster move-shard` writes it in etcd
/// (under its own lease: the intent vanishes if the command dies) before
/// it freezes the shard. The map changes only in the transaction that
/// deletes this intent, and only if it is still the one created: an old
/// owner that finds the intent of a shard it froze gone, with the map
/// still naming it, knows the move can no longer happen and serves the
/// shard again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveIntent {
    /// The shard.
    pub shard: u32,
    /// Its owner when the move began.
    pub from: Owner,
    /// Its owner once moved.
    pub to: Owner,
    /// The map version the move makes (the version it began from + 1).
    pub move_id: u64,
    /// When it began, ms since the Unix epoch.
    pub started_ms: u64,
}

impl MoveIntent {
    /// The intent's JSON as stored in etcd.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An intent read from etcd.
    ///
    /// # Errors
    /// Not JSON of an intent.
    pub fn from_json(bytes: &[u8]) -> Result<MoveIntent, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("a move intent is not valid JSON of one: {e}"))
    }
}

/// Where a shard lives: a node and one of its cores.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The node's id.
    pub node: String,
    /// The core of that node.
    pub core: u16,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.core)
    }
}

/// The map: the cluster's fixed shard count, a version that only grows,
/// and each shard's owner (`None`: not placed on any node yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The cluster's name.
    pub cluster: String,
    /// Shards, fixed at `cluster init`.
    pub shards: u32,
    /// Grows by one with every change.
    pub version: u64,
    /// `owners[s]`: the owner of shard `s` (with replicas: its leader).
    pub owners: Vec<Option<Owner>>,
    /// Copies of every shard the cluster keeps (1: the owner's only; 2 or
    /// 3: the leader's and its followers'). Maps written before replicas
    /// existed read as 1.
    #[serde(default = "one_replica")]
    pub replicas: u8,
    /// `followers[s]`: the in-sync followers of shard `s`, each holding
    /// every state change its leader acknowledged (the leader acknowledges
    /// one only once each of them has it durably). A follower leaves this
    /// list only by a change of the map (`runtime::replication`).
    #[serde(default)]
    pub followers: Vec<Vec<Owner>>,
    /// `epochs[s]`: the map version at which shard `s`'s current leader
    /// took it (only grows; a follower takes the leader's events only from
    /// the leader of the epoch it knows, which fences a deposed one).
    #[serde(default)]
    pub epochs: Vec<u64>,
}

fn one_replica() -> u8 {
    1
}

/// Most copies of a shard a cluster keeps.
pub const MAX_REPLICAS: u8 = 3;

impl ClusterMap {
    /// The map `cluster init` writes: every shard without an owner.
    ///
    /// # Errors
    /// A bad name, or a shard count of 0 or over [`MAX_CLUSTER_SHARDS`].
    pub fn new(cluster: &str, shards: u32) -> Result<ClusterMap, String> {
        check_name("cluster", cluster)?;
        if shards == 0 || shards > MAX_CLUSTER_SHARDS {
            return Err(format!("{shards} shards: a cluster has 1 to {MAX_CLUSTER_SHARDS}"));
        }
        Ok(ClusterMap {
            cluster: cluster.to_owned(),
            shards,
            version: 1,
            owners: vec![None; shards as usize],
            replicas: 1,
            followers: vec![Vec::new(); shards as usize],
            epochs: vec![0; shards as usize],
        })
    }

    /// The map `cluster init --replicas` writes.
    ///
    /// # Errors
    /// As [`ClusterMap::new`], or a replica count of 0 or over [`MAX_REPLICAS`].
    pub fn with_replicas(cluster: &str, shards: u32, replicas: u8) -> Result<ClusterMap, String> {
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(format!("{replicas} replicas: a cluster keeps 1 to {MAX_REPLICAS} copies of each shard"));
        }
        let mut map = ClusterMap::new(cluster, shards)?;
        map.replicas = replicas;
        Ok(map)
    }

    /// The fewest in-sync copies (the leader's included) with which a shard
    /// takes state changes: enough that the loss of any one node loses no
    /// acknowledged change — both of 2, a majority (2) of 3; 1 without
    /// replicas. A shard with fewer refuses changes (`replica_unavailable`).
    #[must_use]
    pub fn min_copies(&self) -> usize {
        usize::from(self.replicas) / 2 + 1
    }

    /// The in-sync followers of `shard`.
    #[must_use]
    pub fn followers_of(&self, shard: u32) -> &[Owner] {
        self.followers.get(shard as usize).map_or(&[], Vec::as_slice)
    }

    /// The epoch of `shard`'s leader.
    #[must_use]
    pub fn epoch_of(&self, shard: u32) -> u64 {
        self.epochs.get(shard as usize).copied().unwrap_or(0)
    }

    /// Whether `node` holds an in-sync follower copy of `shard`.
    #[must_use]
    pub fn follows(&self, shard: u32, node: &str) -> bool {
        self.followers_of(shard).iter().any(|f| f.node == node)
    }

    /// The map's JSON as stored in etcd.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A map read from etcd, checked.
    ///
    /// # Errors
    /// Not JSON of a map, or a map that contradicts itself.
    pub fn from_json(bytes: &[u8]) -> Result<ClusterMap, String> {
        let mut map: ClusterMap = serde_json::from_slice(bytes).map_err(|e| format!("the cluster map is not valid JSON of a map: {e}"))?;
        if map.owners.len() != map.shards as usize {
            return Err(format!("the cluster map names {} owners for {} shards", map.owners.len(), map.shards));
        }
        if map.replicas == 0 || map.replicas > MAX_REPLICAS {
            return Err(format!("the cluster map keeps {} replicas (1 to {MAX_REPLICAS})", map.replicas));
        }
        // Maps from before replicas: no followers, every epoch 0.
        if map.followers.is_empty() {
            map.followers = vec![Vec::new(); map.shards as usize];
        }
        if map.epochs.is_empty() {
            map.epochs = vec![0; map.shards as usize];
        }
        if map.followers.len() != map.shards as usize || map.epochs.len() != map.shards as usize {
            return Err(format!(
                "the cluster map names followers or epochs of {}/{} shards for {}",
                map.followers.len(),
                map.epochs.len(),
                map.shards
            ));
        }
        for (shard, followers) in map.followers.iter().enumerate() {
            let leader = map.owners[shard].as_ref();
            if followers.len() >= usize::from(map.replicas) || followers.iter().any(|f| leader.is_some_and(|l| l.node == f.node)) {
                return Err(format!("the cluster map gives shard {shard} followers it cannot have: {followers:?}"));
            }
        }
        Ok(map)
    }

    /// The shards node `node` owns, and on which of its cores.
    pub fn owned_by<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (u32, u16)> + 'a {
        self.owners.iter().enumerate().filter_map(move |(s, o)| o.as_ref().filter(|o| o.node == node).map(|o| (s as u32, o.core)))
    }

    /// Shards owned per node.
    #[must_use]
    pub fn shards_per_node(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for owner in self.owners.iter().flatten() {
            *counts.entry(owner.node.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// A node as it registers itself (under its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id (`serve --node`).
    pub node: String,
    /// The address clients reach each of its cores at, by core.
    pub cores: Vec<String>,
    /// Shards of its data directory (must equal the cluster's).
    pub shards: u32,
    /// The orderd version it runs.
    pub version: String,
    /// When it registered, ms since the Unix epoch.
    pub since_ms: u64,
}

impl NodeInfo {
    /// The node's JSON as stored in etcd.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A node read from etcd.
    ///
    /// # Errors
    /// Not JSON of a node.
    pub fn from_json(bytes: &[u8]) -> Result<NodeInfo, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("a node entry is not valid JSON of a node: {e}"))
    }
}

/// What [`place_unowned`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `(shard, owner)` for each shard given an owner.
    pub placed: Vec<(u32, Owner)>,
    /// The spread is uneven after placing: owned shards must move to even
    /// it out ([`plan_moves`]).
    pub uneven: bool,
}

/// Gives every shard without an owner one. A node splits the shards it
/// owns over its cores as a single server does (shard `s` on core `s %
/// cores`), so placing shard `s` on a node places it on that core: the
/// node chosen is the one whose core for `s` has the fewest shards, ties
/// to the node with the fewest shards, then the lowest id, so the spread
/// over every live core is as even as the owned shards and that rule
/// allow (within one shard per core for most shapes; `uneven` says when not). An owned
/// shard never changes owner here, not even one of a node that is down:
/// its orders, stock and keys are on that node's disk, and a new owner
/// starting it empty would sell its stock again (only a move that ships
/// the state may change an owner). Changes `map` (not its version).
pub fn place_unowned(map: &mut ClusterMap, live: &[NodeInfo]) -> Placement {
    let mut load: BTreeMap<(String, u16), usize> = BTreeMap::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for node in live.iter().filter(|n| !n.cores.is_empty()) {
        for core in 0..node.cores.len() {
            load.insert((node.node.clone(), core as u16), 0);
        }
        per_node.insert(node.node.clone(), 0);
    }
    for owner in map.owners.iter().flatten() {
        if let Some(n) = load.get_mut(&(owner.node.clone(), owner.core)) {
            *n += 1;
        }
        if let Some(n) = per_node.get_mut(&owner.node) {
            *n += 1;
        }
    }
    let mut placed = Vec::new();
    for (shard, owner) in map.owners.iter_mut().enumerate() {
        if owner.is_some() {
            continue;
        }
        let best =
            live.iter().filter(|n| !n.cores.is_empty()).map(|n| (n.node.as_str(), core_of_shard(shard as u32, n.cores.len()))).min_by_key(
                |&(node, core)| (load.get(&(node.to_owned(), core)).copied().unwrap_or(0), per_node.get(node).copied().unwrap_or(0), node),
            );
        let Some((node, core)) = best else { break };
        let new = Owner { node: node.to_owned(), core };
        *load.entry((new.node.clone(), core)).or_insert(0) += 1;
        *per_node.entry(new.node.clone()).or_insert(0) += 1;
        placed.push((shard as u32, new.clone()));
        *owner = Some(new);
    }
    // A shard placed now is empty on every node: its followers start
    // with it, in sync (a shard that holds data gets a follower only by
    // a copy of its state, `runtime::replication`).
    for (shard, leader) in &placed {
        let followers = followers_for(map.replicas, *shard, &leader.node, live);
        if let Some(slot) = map.followers.get_mut(*shard as usize) {
            *slot = followers;
        }
        if let Some(epoch) = map.epochs.get_mut(*shard as usize) {
            *epoch = map.version + 1;
        }
    }
    let (min, max) = (load.values().min().copied().unwrap_or(0), load.values().max().copied().unwrap_or(0));
    Placement { placed, uneven: max > min + 1 }
}

/// The moves that spread the owned shards evenly over the live nodes'
/// cores (after [`place_unowned`]): each `(shard, new owner)`, in the order
/// to make them. While the most loaded core has two shards more than the
/// least loaded one, a shard of the most loaded core goes to the node
/// whose core for it has the fewest shards, if that makes the spread
/// better. Shards of nodes that are down stay (their state is on their
/// disk). Pure: the caller moves them one at a time (`cluster::mover`).
#[must_use]
pub fn plan_moves(map: &ClusterMap, live: &[NodeInfo]) -> Vec<(u32, Owner)> {
    let live: Vec<&NodeInfo> = live.iter().filter(|n| !n.cores.is_empty()).collect();
    let mut load: BTreeMap<(String, u16), Vec<u32>> = BTreeMap::new();
    for node in &live {
        for core in 0..node.cores.len() {
            load.insert((node.node.clone(), core as u16), Vec::new());
        }
    }
    for (shard, owner) in map.owners.iter().enumerate() {
        if let Some(shards) = owner.as_ref().and_then(|o| load.get_mut(&(o.node.clone(), o.core))) {
            shards.push(shard as u32);
        }
    }
    let mut moves = Vec::new();
    for _ in 0..map.shards {
        let Some((from, max)) = load.iter().max_by_key(|(_, s)| s.len()).map(|(k, s)| (k.clone(), s.len())) else { break };
        let min = load.values().map(Vec::len).min().unwrap_or(0);
        if max <= min + 1 {
            break;
        }
        // The shard of the busiest core whose best destination is the
        // least loaded.
        let best = load[&from]
            .iter()
            .flat_map(|&shard| {
                live.iter().filter(|n| n.node != from.0).map(move |n| (shard, (n.node.clone(), core_of_shard(shard, n.cores.len()))))
            })
            .min_by_key(|(shard, to)| (load.get(to).map_or(usize::MAX, Vec::len), *shard));
        let Some((shard, to)) = best else { break };
        if load.get(&to).map_or(usize::MAX, Vec::len) + 1 >= max {
            break;
        }
        if let Some(shards) = load.get_mut(&from) {
            shards.retain(|&s| s != shard);
        }
        if let Some(shards) = load.get_mut(&to) {
            shards.push(shard);
        }
        moves.push((shard, Owner { node: to.0, core: to.1 }));
    }
    moves
}

/// The followers a shard led by `leader` gets: the `replicas - 1` live
/// nodes after the leader in the order of their ids (a ring), each on its
/// core for the shard. Every shard of one leader core so has the same
/// followers, and the copies spread evenly over the nodes.
#[must_use]
pub fn followers_for(replicas: u8, shard: u32, leader: &str, live: &[NodeInfo]) -> Vec<Owner> {
    let mut nodes: Vec<&NodeInfo> = live.iter().filter(|n| !n.cores.is_empty()).collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let at = nodes.iter().position(|n| n.node == leader).unwrap_or(0);
    (1..nodes.len())
        .map(|i| nodes[(at + i) % nodes.len()])
        .filter(|n| n.node != leader)
        .take(usize::from(replicas.saturating_sub(1)))
        .map(|n| Owner { node: n.node.clone(), core: core_of_shard(shard, n.cores.len()) })
        .collect()
}

/// The core of a node with `cores` cores that serves `shard` (the rule of
/// a single server, which a node keeps).
#[must_use]
pub fn core_of_shard(shard: u32, cores: usize) -> u16 {
    (shard as usize % cores.max(1)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cores: usize) -> NodeInfo {
        NodeInfo {
            node: id.to_owned(),
            cores: (0..cores).map(|c| format!("127.0.0.1:{}", 7000 + c)).collect(),
            shards: 8,
            version: "test".into(),
            since_ms: 0,
        }
    }

    #[test]
    fn names_are_what_etcd_keys_and_metrics_take() {
        assert!(check_name("cluster", "sale-2026.eu_1").is_ok());
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(check_name("cluster", bad).is_err(), "{bad}");
        }
        assert_eq!(map_key("eu"), "/orderd/eu/map");
        assert_eq!(node_key("eu", "n1"), "/orderd/eu/nodes/n1");
        assert!(ClusterMap::new("eu", 0).is_err());
        assert!(ClusterMap::new("eu", MAX_CLUSTER_SHARDS + 1).is_err());
    }

    #[test]
    fn the_map_round_trips_through_its_json_and_a_wrong_one_is_refused() {
        let mut map = ClusterMap::new("eu", 4).unwrap();
        map.owners[2] = Some(Owner { node: "n1".into(), core: 1 });
        assert_eq!(ClusterMap::from_json(map.to_json().as_bytes()).unwrap(), map);
        let mut short = map.clone();
        short.owners.pop();
        assert!(ClusterMap::from_json(short.to_json().as_bytes()).unwrap_err().contains("3 owners for 4 shards"));
        assert!(ClusterMap::from_json(b"{").is_err());
        let n = node("n1", 2);
        assert_eq!(NodeInfo::from_json(n.to_json().as_bytes()).unwrap(), n);
    }

    #[test]
    fn unowned_shards_spread_evenly_over_the_live_cores() {
        let mut map = ClusterMap::new("eu", 8).unwrap();
        let placement = place_unowned(&mut map, &[node("a", 2), node("b", 2)]);
        assert_eq!(placement.placed.len(), 8);
        assert!(!placement.uneven);
        assert_eq!(map.shards_per_node().into_iter().collect::<Vec<_>>(), [("a", 4), ("b", 4)]);
        assert_eq!(map.owned_by("a").filter(|&(_, core)| core == 1).count(), 2);
        // Each shard on the core its node serves it on.
        assert!(map.owned_by("a").chain(map.owned_by("b")).all(|(s, core)| core == core_of_shard(s, 2)));
        // Nothing to do the second time.
        assert!(place_unowned(&mut map, &[node("a", 2), node("b", 2)]).placed.is_empty());
    }

    #[test]
    fn nodes_of_different_sizes_share_the_shards_by_their_cores() {
        let mut map = ClusterMap::new("eu", 24).unwrap();
        let placement = place_unowned(&mut map, &[node("a", 1), node("b", 2), node("c", 3)]);
        assert_eq!(placement.placed.len(), 24);
        let per_node = map.shards_per_node();
        // Six cores, 24 shards: four per core.
        assert_eq!((per_node["a"], per_node["b"], per_node["c"]), (4, 8, 12), "{per_node:?}");
        assert!(!placement.uneven);
        for (name, cores) in [("a", 1), ("b", 2), ("c", 3)] {
            assert!(map.owned_by(name).all(|(s, core)| core == core_of_shard(s, cores)));
        }
    }

    #[test]
    fn a_node_that_joins_a_full_cluster_takes_its_share_by_moves() {
        let mut map = ClusterMap::new("eu", 12).unwrap();
        place_unowned(&mut map, &[node("a", 2), node("b", 2)]);
        assert!(plan_moves(&map, &[node("a", 2), node("b", 2)]).is_empty(), "already even");
        let live = [node("a", 2), node("b", 2), node("c", 2)];
        let moves = plan_moves(&map, &live);
        for (shard, to) in &moves {
            assert_eq!(to.node, "c");
            assert_eq!(to.core, core_of_shard(*shard, 2));
            map.owners[*shard as usize] = Some(to.clone());
        }
        // Twelve shards over six cores: two each, by four moves.
        assert_eq!(moves.len(), 4, "{moves:?}");
        assert_eq!(map.shards_per_node().into_iter().collect::<Vec<_>>(), [("a", 4), ("b", 4), ("c", 4)]);
        assert!(plan_moves(&map, &live).is_empty());
        // A node that is down keeps its shards: nothing of it moves.
        let moves = plan_moves(&map, &[node("a", 2), node("b", 2)]);
        assert!(moves.iter().all(|(s, _)| map.owners[*s as usize].as_ref().unwrap().node != "c"));
    }

    #[test]
    fn owned_shards_stay_even_on_a_node_that_is_down() {
        let mut map = ClusterMap::new("eu", 6).unwrap();
        place_unowned(&mut map, &[node("a", 1), node("b", 1), node("c", 1)]);
        let before = map.clone();
        // c is down: its shards keep it as owner (their state is on its disk).
        let placement = place_unowned(&mut map, &[node("a", 1), node("b", 1)]);
        assert!(placement.placed.is_empty());
        assert_eq!(map, before);
        // A new node takes nothing owned here: the spread is reported
        // uneven (`plan_moves` evens it out).
        let placement = place_unowned(&mut map, &[node("a", 1), node("b", 1), node("c", 1), node("d", 1)]);
        assert!(placement.placed.is_empty() && placement.uneven);
    }
}
