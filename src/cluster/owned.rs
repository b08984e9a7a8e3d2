//! What a node's cores know of the cluster's map: its version, which
//! shards this node owns, and which of them are frozen by a move under way.
//! The membership thread writes it as the map changes; every core reads it
//! per request (relaxed atomics, a load per request). A core that sees a
//! change a moment late answers as the map before it did, which is safe:
//! an owned shard changes owner only by a move (`runtime::handoff`), which
//! freezes it on the old owner before the map changes, so the old owner
//! serves nothing of it however late it learns the new map, and the new
//! owner serves it only once it reads the map that names it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use orderd_protocol::message::{ClusterMapInfo, ClusterNode, NO_OWNER};

use super::map::{ClusterMap, NodeInfo};

/// The node's view of shard ownership, and the map it hands clients.
#[derive(Debug)]
pub struct OwnedShards {
    version: AtomicU64,
    owned: Vec<AtomicBool>,
    /// Shards this node owns but does not serve: a move is handing them
    /// away (set by the move's `Freeze` step or, at a start, by a move's
    /// intent in etcd; cleared when the move is abandoned). The value is
    /// the freeze's generation (`0`: not frozen), so that a thread that
    /// decided to unfreeze an abandoned move's freeze never undoes a newer
    /// one.
    frozen: Vec<AtomicU64>,
    /// The last freeze generation given.
    generations: AtomicU64,
    /// Shards this node does not own whose copy here should go (handed
    /// away and the release never came, or a copy installed for a move
    /// that was abandoned): the membership thread flags them with the
    /// install count it saw plus one, and the core that holds the shard
    /// releases it at its next tick only if no install came since (an
    /// install for a new move makes the flag stale).
    release_wanted: Vec<AtomicU64>,
    /// Installs of each shard on this node (moves in), counted by its core.
    installs: Vec<AtomicU64>,
    /// Asks the membership thread to read the map now.
    nudged: AtomicBool,
    /// The bundles of shards being moved, out and in (`runtime::handoff`).
    pub moves: Mutex<MoveBuffers>,
    /// The map as `ClusterMap` requests get it (the live nodes' cores
    /// included), replaced whole by the membership thread.
    info: Mutex<Arc<ClusterMapInfo>>,
    /// The map itself (leaders, followers, epochs) and the live nodes, for
    /// replication (`runtime::replication`), replaced whole.
    map: Mutex<(Arc<ClusterMap>, Arc<Vec<NodeInfo>>)>,
    /// This node's id.
    node: String,
    /// The node's lease renewals (`serve` hands it to the lease thread).
    pub lease: Arc<super::lease::LeaseClock>,
    /// The map keeps several copies: a node whose lease may lapse serves
    /// nothing (fencing before availability).
    fence: AtomicBool,
    /// Shards this node took over from a dead leader, all told.
    pub failovers: AtomicU64,
    /// `seeded[s]`: the epoch of shard `s`'s leader for which a copy is
    /// being made here (`Accept`; `0`: none): its events are taken before
    /// the map names this node a follower.
    seeded: Vec<AtomicU64>,
}

impl OwnedShards {
    /// A view of `map` for node `node`.
    #[must_use]
    pub fn new(map: &ClusterMap, node: &str) -> OwnedShards {
        let view = OwnedShards {
            version: AtomicU64::new(0),
            owned: (0..map.shards).map(|_| AtomicBool::new(false)).collect(),
            frozen: (0..map.shards).map(|_| AtomicU64::new(0)).collect(),
            generations: AtomicU64::new(0),
            release_wanted: (0..map.shards).map(|_| AtomicU64::new(0)).collect(),
            installs: (0..map.shards).map(|_| AtomicU64::new(0)).collect(),
            nudged: AtomicBool::new(false),
            moves: Mutex::new(MoveBuffers::default()),
            info: Mutex::new(Arc::new(ClusterMapInfo::default())),
            map: Mutex::new((Arc::new(map.clone()), Arc::new(Vec::new()))),
            node: node.to_owned(),
            lease: Arc::new(super::lease::LeaseClock::default()),
            fence: AtomicBool::new(false),
            failovers: AtomicU64::new(0),
            seeded: (0..map.shards).map(|_| AtomicU64::new(0)).collect(),
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
        if let Ok(mut held) = self.map.lock() {
            held.0 = Arc::new(map.clone());
        }
        self.fence.store(map.replicas > 1, Ordering::Release);
        for (shard, owner) in map.owners.iter().enumerate() {
            if let Some(flag) = self.owned.get(shard) {
                flag.store(owner.as_ref().is_some_and(|o| o.node == node), Ordering::Relaxed);
            }
        }
        self.version.store(map.version, Ordering::Release);
        true
    }

    /// A copy of `shard` is being made here for its leader of `epoch`.
    pub fn accept_copy(&self, shard: u32, epoch: u64) {
        if let Some(e) = self.seeded.get(shard as usize) {
            e.store(epoch, Ordering::Release);
        }
    }

    /// Whether a copy of `shard` is being made here for its leader of
    /// `epoch` (one the map does not name yet).
    #[must_use]
    pub fn accepts_copy(&self, shard: u32, epoch: u64) -> bool {
        epoch != 0 && self.seeded.get(shard as usize).is_some_and(|e| e.load(Ordering::Acquire) == epoch)
    }

    /// Whether this node keeps a copy of `shard` by the map it holds: an
    /// in-sync follower's, or one being made (never released).
    #[must_use]
    pub fn keeps_copy(&self, shard: u32) -> bool {
        let (map, _) = self.map();
        map.follows(shard, &self.node) || self.accepts_copy(shard, map.epoch_of(shard))
    }

    /// This node's id.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The map held (with leaders, followers and epochs) and the live
    /// nodes last read.
    #[must_use]
    pub fn map(&self) -> (Arc<ClusterMap>, Arc<Vec<NodeInfo>>) {
        self.map.lock().map_or_else(|p| p.into_inner().clone(), |held| held.clone())
    }

    /// Whether this node owns `shard`.
    #[must_use]
    pub fn owns(&self, shard: u32) -> bool {
        self.owned.get(shard as usize).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Whether this node serves `shard`: it owns it, no move froze it and,
    /// in a cluster that keeps several copies, its lease surely still runs
    /// (a node paused or cut off from etcd stops before a follower can take
    /// over: it answers `moved`, and the client finds the new leader).
    #[must_use]
    pub fn serves(&self, shard: u32) -> bool {
        self.owns(shard) && !self.frozen(shard) && !self.fenced()
    }

    /// Whether this node serves nothing now: its cluster keeps several
    /// copies and its lease may be about to lapse.
    #[must_use]
    pub fn fenced(&self) -> bool {
        self.fence.load(Ordering::Relaxed) && !self.lease.fresh()
    }

    /// Whether a move froze `shard` here.
    #[must_use]
    pub fn frozen(&self, shard: u32) -> bool {
        self.frozen.get(shard as usize).is_some_and(|f| f.load(Ordering::Acquire) != 0)
    }

    /// Freezes `shard` (again), with a new generation.
    pub fn freeze(&self, shard: u32) {
        if let Some(f) = self.frozen.get(shard as usize) {
            f.store(self.generations.fetch_add(1, Ordering::AcqRel) + 1, Ordering::Release);
        }
    }

    /// Unfreezes `shard`, whatever froze it.
    pub fn unfreeze(&self, shard: u32) {
        if let Some(f) = self.frozen.get(shard as usize) {
            f.store(0, Ordering::Release);
        }
    }

    /// Unfreezes `shard` if it is still frozen by generation `generation`;
    /// whether it did.
    pub fn unfreeze_if(&self, shard: u32, generation: u64) -> bool {
        self.frozen
            .get(shard as usize)
            .is_some_and(|f| generation != 0 && f.compare_exchange(generation, 0, Ordering::AcqRel, Ordering::Acquire).is_ok())
    }

    /// The shards frozen now, with their freeze's generation.
    #[must_use]
    pub fn frozen_shards(&self) -> Vec<(u32, u64)> {
        self.frozen
            .iter()
            .enumerate()
            .filter_map(|(s, f)| match f.load(Ordering::Acquire) {
                0 => None,
                generation => Some((s as u32, generation)),
            })
            .collect()
    }

    /// Installs of `shard` on this node so far.
    #[must_use]
    pub fn installs(&self, shard: u32) -> u64 {
        self.installs.get(shard as usize).map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Counts an install of `shard` (its core, as it swaps the shard in).
    pub fn installed(&self, shard: u32) {
        if let Some(n) = self.installs.get(shard as usize) {
            n.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Asks the core that holds `shard` to release its copy, decided with
    /// `installs_seen` installs of it done (read before the decision).
    pub fn want_release(&self, shard: u32, installs_seen: u64) {
        if let Some(f) = self.release_wanted.get(shard as usize) {
            f.store(installs_seen + 1, Ordering::Release);
        }
    }

    /// Whether a release of `shard` is wanted and still holds (no install
    /// since it was decided); clears the wish.
    pub fn take_release(&self, shard: u32) -> bool {
        match self.release_wanted.get(shard as usize).map(|f| f.swap(0, Ordering::AcqRel)) {
            Some(0) | None => false,
            Some(wanted) => wanted == self.installs(shard) + 1,
        }
    }

    /// Asks the membership thread to read the map at once.
    pub fn nudge(&self) {
        self.nudged.store(true, Ordering::Release);
    }

    /// Whether a nudge came since the last call.
    pub fn take_nudge(&self) -> bool {
        self.nudged.swap(false, Ordering::AcqRel)
    }

    /// The map version held.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Shards of the cluster.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.owned.len() as u32
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
        if let Ok(mut held) = self.map.lock() {
            held.1 = Arc::new(live.to_vec());
        }
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

/// The bundles of the moves under way on this node: one going out per
/// shard (the old owner keeps it while the new one reads it) and one
/// coming in (the new owner gathers its chunks). Touched off the order
/// path only.
#[derive(Debug, Default)]
pub struct MoveBuffers {
    /// `shard -> (move id, bundle bytes)` being read by the new owner.
    pub out: std::collections::HashMap<u32, (u64, Arc<Vec<u8>>)>,
    /// `shard -> (move id, bytes received)` from the old owner.
    pub incoming: std::collections::HashMap<u32, (u64, Vec<u8>)>,
    /// `shard -> (move id, tail bytes received)` from the old owner.
    pub incoming_tail: std::collections::HashMap<u32, (u64, Vec<u8>)>,
    /// `shard -> (move id, the shard built from its bundle)`, staged for
    /// its tail (`Stage`, then `WriteTail`).
    pub staged: std::collections::HashMap<u32, (u64, crate::engine::Shard)>,
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
    fn a_frozen_shard_is_owned_but_not_served_and_only_its_own_freeze_is_undone() {
        let mut map = ClusterMap::new("eu", 2).unwrap();
        map.owners[0] = Some(Owner { node: "a".into(), core: 0 });
        map.version = 2;
        let view = OwnedShards::new(&map, "a");
        assert!(view.serves(0) && !view.serves(1));
        view.freeze(0);
        assert!(view.owns(0) && !view.serves(0));
        let seen = view.frozen_shards();
        assert_eq!(seen.len(), 1);
        // A newer freeze (another move) is not undone by a decision about
        // the older one.
        view.freeze(0);
        assert!(!view.unfreeze_if(0, seen[0].1));
        assert!(!view.serves(0));
        let newer = view.frozen_shards()[0].1;
        assert!(view.unfreeze_if(0, newer));
        assert!(view.serves(0) && view.frozen_shards().is_empty());
        assert!(!view.take_nudge());
        view.nudge();
        assert!(view.take_nudge() && !view.take_nudge());
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
