//! Re-replication: a thread of each node that gives the shards it leads
//! the copies the cluster keeps. For a shard with fewer in-sync followers
//! than that (after a failover, a follower's loss, or a copy that broke),
//! it picks a live node that holds no copy (the next ones after this node
//! by id, as placement does) and makes one while the shard serves:
//!
//! 1. `Seed` to this node's core: the shard's image is bundled, and its
//!    events from that instant on are kept for the new copy (held);
//! 2. `Accept` to the new node: it takes the shard's events from its
//!    leader from now on;
//! 3. `Read`/`Write`: the bundle goes over; its last chunk installs the
//!    copy there, durably;
//! 4. `Attach` to this node's core: the kept events go, then the live ones;
//!    repeated until the copy has caught up;
//! 5. the map names the node a follower (compare-and-swap): from then on
//!    this core's replies wait for it too.
//!
//! One copy at a time per node; a failed attempt is tried again at the
//! next look.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd_protocol::client::{ClientConfig, Connection};
use orderd_protocol::message::{MoveShard, MoveStep, SeedTo};

use crate::cluster::map::{core_of_shard, ClusterMap, NodeInfo, Owner};
use crate::cluster::{Coordinator, OwnedShards};
use crate::config::ClusterConfig;

/// How often the thread looks for shards short of copies.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// A copy whose follower acknowledged all but this many events counts as
/// caught up (the rest follow within a batch or two).
const CAUGHT_UP_EVENTS: u64 = 4096;

/// How long a new copy may take to catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// The thread; stops on drop.
#[derive(Debug)]
pub struct Seeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Seeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the thread for node `config.node`.
///
/// # Errors
/// The thread cannot start.
pub fn start(config: &ClusterConfig, owned: Arc<OwnedShards>) -> std::io::Result<Seeder> {
    let stop = Arc::new(AtomicBool::new(false));
    let (config, flag) = (config.clone(), Arc::clone(&stop));
    let thread = std::thread::Builder::new().name("orderd-seeder".into()).spawn(move || {
        let etcd = Coordinator::connect(&config.etcd, &config.cluster);
        while !flag.load(Ordering::Relaxed) {
            let (map, live) = owned.map();
            if map.replicas > 1 {
                match drop_dead_followers(&etcd, &live, &config.node) {
                    Ok(Some(version)) => {
                        tracing::warn!(version, "dropped followers on nodes that are down from the shards this node leads (enough copies remain)");
                        owned.nudge();
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot drop the followers of nodes that are down; retrying"),
                }
                if let Some((shard, to)) = next_copy(&map, &live, &config.node) {
                    let started = Instant::now();
                    match make_copy(&etcd, &map, &live, &config.node, shard, &to) {
                        Ok(version) => {
                            tracing::info!(shard, to = %to, version, ms = started.elapsed().as_millis() as u64, "a new copy of the shard is in sync");
                            owned.nudge();
                        }
                        Err(e) => tracing::warn!(shard, to = %to, error = %e, "making a copy of the shard failed; trying again"),
                    }
                }
            }
            let mut slept = Duration::ZERO;
            while slept < LOOK_EVERY && !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                slept += Duration::from_millis(10);
            }
        }
    })?;
    Ok(Seeder { stop, thread: Some(thread) })
}

/// The first shard `node` leads with fewer live copies than the cluster
/// keeps (a follower whose node is down counts as none: it is replaced),
/// and the follower core to give it: the first live node after `node` in
/// the order of ids that holds no copy of it.
#[must_use]
pub fn next_copy(map: &ClusterMap, live: &[NodeInfo], node: &str) -> Option<(u32, Owner)> {
    let mut nodes: Vec<&NodeInfo> = live.iter().filter(|n| !n.cores.is_empty()).collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let at = nodes.iter().position(|n| n.node == node)?;
    for shard in 0..map.shards {
        let leads = map.owners[shard as usize].as_ref().is_some_and(|o| o.node == node);
        let live_followers = map.followers_of(shard).iter().filter(|f| nodes.iter().any(|n| n.node == f.node)).count();
        if !leads || live_followers + 1 >= usize::from(map.replicas) {
            continue;
        }
        let candidate = (1..nodes.len()).map(|i| nodes[(at + i) % nodes.len()]).find(|n| n.node != node && !map.follows(shard, &n.node));
        if let Some(n) = candidate {
            return Some((shard, Owner { node: n.node.clone(), core: core_of_shard(shard, n.cores.len()) }));
        }
    }
    None
}

/// Drops from the map the followers on nodes that are down of the shards
/// `me` leads, where the live copies left are still enough to take state
/// changes (`ClusterMap::min_copies`): with 3 copies and one node down,
/// the shard goes on with two instead of refusing until the node is back.
/// Returns the map version written, if one was.
///
/// # Errors
/// etcd failed (a conflict is not an error: the next look tries again).
fn drop_dead_followers(etcd: &Coordinator, live: &[NodeInfo], me: &str) -> anyhow::Result<Option<u64>> {
    let is_live = |n: &str| live.iter().any(|l| l.node == n);
    let read = etcd.map()?;
    let mut next = read.map.clone();
    let mut changed = false;
    for s in 0..next.shards as usize {
        if next.owners[s].as_ref().is_none_or(|o| o.node != me) {
            continue;
        }
        let live_followers = next.followers[s].iter().filter(|f| is_live(&f.node)).count();
        if live_followers < next.followers[s].len() && live_followers + 1 >= next.min_copies() {
            next.followers[s].retain(|f| is_live(&f.node));
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    match etcd.swap_map(&read, &next) {
        Ok(()) => Ok(Some(read.map.version + 1)),
        Err(crate::cluster::ClusterError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes a copy of `shard` on `to` and names it in the map; the map
/// version written.
fn make_copy(etcd: &Coordinator, map: &ClusterMap, live: &[NodeInfo], me: &str, shard: u32, to: &Owner) -> anyhow::Result<u64> {
    let find = |id: &str| live.iter().find(|n| n.node == id).ok_or_else(|| anyhow::anyhow!("node `{id}` is not live"));
    let (leader_addr, copy_addr) =
        (crate::cluster::mover::core_addr(find(me)?, shard)?, crate::cluster::mover::core_addr(find(&to.node)?, shard)?);
    let config = ClientConfig { request_timeout: Duration::from_secs(30), ..ClientConfig::default() };
    let mut leader = Connection::connect(leader_addr, &config)?;
    let mut copy = Connection::connect(copy_addr, &config)?;
    let seed_id = super::super::core::now_ms();
    let step = |step: MoveStep| MoveShard { shard, move_id: seed_id, step };
    let target = SeedTo { node: to.node.clone(), core: to.core };
    // The new node must know the shard's leader of this epoch before it
    // accepts: the map this copy is made by, or a newer one.
    copy.move_shard(MoveShard { shard, move_id: map.version, step: MoveStep::Follow })?;
    let bundled = leader.move_shard(step(MoveStep::Seed(target.clone())))?;
    copy.move_shard(step(MoveStep::Accept))?;
    let from = Owner { node: me.to_owned(), core: core_of_shard(shard, find(me)?.cores.len()) };
    crate::cluster::mover::copy(&mut leader, &mut copy, bundled.total, &from, to, &step, MoveStep::Write)?;
    let started = Instant::now();
    loop {
        let lag = leader.move_shard(step(MoveStep::Attach(target.clone())))?.offset;
        if lag <= CAUGHT_UP_EVENTS {
            break;
        }
        anyhow::ensure!(started.elapsed() < CATCH_UP_LIMIT, "the copy on {to} is still {lag} events behind after {CATCH_UP_LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Name it in the map, unless the shard changed hands meanwhile.
    for _ in 0..10 {
        let read = etcd.map()?;
        let s = shard as usize;
        anyhow::ensure!(
            read.map.owners[s].as_ref().is_some_and(|o| o.node == me) && read.map.epoch_of(shard) == map.epoch_of(shard),
            "the shard changed leader while its copy was made"
        );
        if read.map.follows(shard, &to.node) {
            return Ok(read.map.version);
        }
        // A follower on a node that is down is replaced: the new copy holds
        // everything it held (the bundle was taken after every change it
        // acknowledged), and the leader's replies stop waiting for it.
        let mut next = read.map.clone();
        next.followers[s].retain(|f| live.iter().any(|n| n.node == f.node));
        anyhow::ensure!(next.followers[s].len() + 1 < usize::from(read.map.replicas), "the shard has its copies already");
        next.followers[s].push(to.clone());
        match etcd.swap_map(&read, &next) {
            Ok(()) => return Ok(read.map.version + 1),
            Err(crate::cluster::ClusterError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the map kept changing; the copy is not named yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeInfo {
        NodeInfo { node: id.into(), cores: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()], shards: 4, version: "t".into(), since_ms: 0 }
    }

    #[test]
    fn a_leader_copies_its_short_shards_to_the_next_node_without_one_replacing_dead_followers() {
        let mut map = ClusterMap::with_replicas("t", 4, 2).unwrap();
        for s in 0..4u32 {
            map.owners[s as usize] = Some(Owner { node: if s < 2 { "b" } else { "c" }.into(), core: core_of_shard(s, 2) });
        }
        let live = [node("a"), node("b"), node("c")];
        // b leads 0 and 1: the next node after b by id is c.
        assert_eq!(next_copy(&map, &live, "b"), Some((0, Owner { node: "c".into(), core: 0 })));
        map.followers[0] = vec![Owner { node: "c".into(), core: 0 }];
        assert_eq!(next_copy(&map, &live, "b"), Some((1, Owner { node: "c".into(), core: 1 })));
        // Past the last id the ring wraps: c's copies go to a.
        assert_eq!(next_copy(&map, &live, "c"), Some((2, Owner { node: "a".into(), core: 0 })));
        // A follower on a node that is down counts as none: replaced on the
        // other live node.
        map.followers[1] = vec![Owner { node: "a".into(), core: 1 }];
        let without_c = [node("a"), node("b")];
        assert_eq!(next_copy(&map, &without_c, "b"), Some((0, Owner { node: "a".into(), core: 0 })));
        // Nothing short: nothing to do; a node that leads nothing does nothing.
        map.followers[2] = vec![Owner { node: "a".into(), core: 0 }];
        map.followers[3] = vec![Owner { node: "a".into(), core: 1 }];
        assert_eq!(next_copy(&map, &live, "b"), None);
        assert_eq!(next_copy(&map, &live, "c"), None);
        assert_eq!(next_copy(&map, &live, "a"), None);
    }
}
