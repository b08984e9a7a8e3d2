//! A follower's side of replication: a leader's batch of events, applied
//! to this node's copies on the core that holds them.

use orderd_protocol::message::{Replicate, Replicated};
use orderd_protocol::{Reply, Status};

use super::batch;
use crate::runtime::core::now_ms;
use crate::runtime::CoreCtx;

/// How long a batch from a leader on a newer map waits for this node to
/// read that map.
const MAP_WAIT_MS: u64 = 1_000;

/// Applies batch `r` on this connection's core. The reply waits (the
/// returned sequence) until this core's log holds the events durably.
pub async fn receive(ctx: &CoreCtx, r: Replicate) -> (Reply, Option<u64>) {
    let Some(cluster) = ctx.core.borrow().cluster.clone() else { return (Reply::rejected(Status::Unsupported, 0), None) };
    if r.map_version > cluster.version() {
        // The leader read a map this node has not read yet (one that made
        // this node a follower, say): read it before judging.
        let started = std::time::Instant::now();
        cluster.nudge();
        while cluster.version() < r.map_version && started.elapsed().as_millis() < u128::from(MAP_WAIT_MS) {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let events = match batch::decode(&r.events) {
        Ok(events) => events,
        Err(reason) => {
            tracing::warn!(leader = %r.leader, reason, "a batch of replicated events does not decode: refused");
            return (Reply::rejected(Status::InvalidRequest, 0), None);
        }
    };
    let (map, _) = cluster.map();
    let me = cluster.node().to_owned();
    let mut core = ctx.core.borrow_mut();
    let now = now_ms();
    let mut applied = 0;
    for e in &events {
        let leader = map.owners.get(e.shard as usize).and_then(Option::as_ref);
        if leader.is_none_or(|l| l.node != r.leader) {
            // Not this shard's leader by this node's map: a deposed leader
            // is fenced here.
            if r.map_version >= map.version {
                tracing::warn!(shard = e.shard, leader = %r.leader, version = map.version, "replicated events from a node that does not lead the shard by this node's map: refused");
            }
            return (Reply::rejected(Status::Moved, map.version), Some(core.log().next_sequence()));
        }
        if !map.follows(e.shard, &me) && !cluster.accepts_copy(e.shard, map.epoch_of(e.shard)) {
            if map.version >= r.map_version {
                // No copy of this shard here by a map at least as new as
                // the leader's: the leader dropped this follower (its
                // events were queued before), and counts on it no longer.
                continue;
            }
            return (Reply::rejected(Status::Moved, map.version), Some(core.log().next_sequence()));
        }
        match core.apply_replicated(e.shard, e.position, &e.event, now) {
            Ok(true) => applied += 1,
            Ok(false) => {}
            Err((status, detail)) => return (Reply::rejected(status, detail), Some(core.log().next_sequence())),
        }
    }
    core.counters.replicated += applied;
    (Reply::Replicated(Replicated { through: r.through, applied }), Some(core.log().next_sequence()))
}
