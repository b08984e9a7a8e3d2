//! What a node's cores know of the cluster's map: its version and which
//! shards this node owns. The membership thread writes it as the map
//! changes; every core reads it per request (relaxed atomics, a load per
//! request). A core that sees a change a moment late answers as the map
//! before it did, which is safe because a shard's owner only changes from
//! none to one node here (`cluster rebalance` places unowned shards; moving
//! an owned shard needs the move protocol, not yet built).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::map::ClusterMap;

/// The node's view of shard ownership.
#[derive(Debug)]
pub struct OwnedShards {
    version: AtomicU64,
    owned: Vec<AtomicBool>,
}

impl OwnedShards {
    /// A view of `map` for node `node`.
    #[must_use]
    pub fn new(map: &ClusterMap, node: &str) -> OwnedShards {
        let view = OwnedShards { version: AtomicU64::new(0), owned: (0..map.shards).map(|_| AtomicBool::new(false)).collect() };
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
}
