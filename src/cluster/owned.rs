//! What a node's cores know of the cluster's map: its version and which
//! shards this node owns. The membership thread writes it as the map
//! changes; every core reads it per request (relaxed atomics, a load per
//! request). A core that sees a change a moment late answers as the map
//! before it did, which is safe because a shard's owner only changes from
//! none to one node here (`cluster rebalance` places unowned shards; moving
//! an owned shard needs the move protocol, not yet built).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use orderd_protocol::message::{ClusterMapInfo, ClusterNode, NO_OWNER};

use super::map::{ClusterMap, NodeInfo};

/// The node's view of shard ownership, and the map it hands clients.
#[derive(Debug)]
pub struct OwnedShards {
    version: AtomicU64,
    owned: Vec<AtomicBool>,
    /// The map as `ClusterMap` requests get it (the live nodes' cores
    /// included), replaced whole by the membership thread.
    info: Mutex<Arc<ClusterMapInfo>>,
}

impl OwnedShards {
    /// A view of `map` for node `node`.
    #[must_use]
    pub fn new(map: &ClusterMap, node: &str) -> OwnedShards {
        let view = OwnedShards {
            version: AtomicU64::new(0),
            owned: (0..map.shards).map(|_| AtomicBool::new(false)).collect(),
            info: Mutex::new(Arc::new(ClusterMapInfo::default())),
        };
        view.update(map, node);
        view
    }

    /// Takes `map` as the current one (a version not newer than the one
    /// held is ignored). Returns whether it was taken.
    pub fn update(&self, map: &ClusterMap, node: &str) -> bool {
        if map.version <= self.version.load(Ordering::Acquire) {
            return false;
        }
        for (shard, owner) in map.owners.iter().enumerate() {
            if let Some(flag) = self.owned.get(shard) {
                flag.store(owner.as_ref().is_some_and(|o| o.node == node), Ordering::Relaxed);
            }
        }
        self.version.store(map.version, Ordering::Release);
        true
    }

    /// Whether this node owns `shard`.
    #[must_use]
    pub fn owns(&self, shard: u32) -> bool {
        self.owned.get(shard as usize).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// The map version held.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Shards this node owns.
    #[must_use]
    pub fn count(&self) -> usize {
        self.owned.iter().filter(|f| f.load(Ordering::Relaxed)).count()
    }

    /// Keeps `map` with the `live` nodes' addresses for `ClusterMap`
    /// requests (a map older than the one held is ignored).
    pub fn set_info(&self, map: &ClusterMap, live: &[NodeInfo]) {
        let info = map_info(map, live);
        if let Ok(mut held) = self.info.lock() {
            if info.version >= held.version {
                *held = Arc::new(info);
            }
        }
    }

    /// The map for a `ClusterMap` request.
    #[must_use]
    pub fn info(&self) -> Arc<ClusterMapInfo> {
        self.info.lock().map_or_else(|_| Arc::new(ClusterMapInfo::default()), |held| Arc::clone(&held))
    }
}

/// `map` as the protocol carries it: the nodes (live ones with their
/// cores, then owners that are down, without), by id; owners by index.
#[must_use]
pub fn map_info(map: &ClusterMap, live: &[NodeInfo]) -> ClusterMapInfo {
    let mut nodes: Vec<ClusterNode> = live.iter().map(|n| ClusterNode { node: n.node.clone(), cores: n.cores.clone() }).collect();
    for owner in map.owners.iter().flatten() {
        if !nodes.iter().any(|n| n.node == owner.node) {
            nodes.push(ClusterNode { node: owner.node.clone(), cores: Vec::new() });
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let index = |node: &str| nodes.iter().position(|n| n.node == node).map_or(NO_OWNER, |i| i as u32);
    let owners = map.owners.iter().map(|o| o.as_ref().map_or(NO_OWNER, |o| index(&o.node))).collect();
    let owner_cores = map.owners.iter().map(|o| o.as_ref().map_or(0, |o| o.core)).collect();
    ClusterMapInfo { version: map.version, nodes, owners, owner_cores }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::Owner;

    #[test]
    fn a_node_owns_what_the_map_gives_it_and_ignores_an_older_map() {
        let mut map = ClusterMap::new("eu", 4).unwrap();
        let view = OwnedShards::new(&map, "a");
        assert_eq!((view.count(), view.version()), (0, 1));
        let older = map.clone();
        map.owners[1] = Some(Owner { node: "a".into(), core: 0 });
        map.owners[2] = Some(Owner { node: "b".into(), core: 0 });
        map.version = 2;
        assert!(view.update(&map, "a"));
        assert!(view.owns(1) && !view.owns(2) && !view.owns(0) && !view.owns(99));
        assert!(!view.update(&older, "a"), "an older map is ignored");
        assert!(view.owns(1));
        assert_eq!(view.version(), 2);
    }

    #[test]
    fn the_map_for_clients_names_live_nodes_with_cores_and_down_owners_without() {
        let mut map = ClusterMap::new("eu", 3).unwrap();
        map.owners[0] = Some(Owner { node: "b".into(), core: 1 });
        map.owners[1] = Some(Owner { node: "a".into(), core: 0 });
        let live = [NodeInfo { node: "a".into(), cores: vec!["h:1".into()], shards: 3, version: "t".into(), since_ms: 0 }];
        let info = map_info(&map, &live);
        assert_eq!(info.nodes.iter().map(|n| (n.node.as_str(), n.cores.len())).collect::<Vec<_>>(), [("a", 1), ("b", 0)]);
        assert_eq!((info.owners, info.owner_cores, info.version), (vec![1, 0, NO_OWNER], vec![1, 0, 0], 1));
    }
}
