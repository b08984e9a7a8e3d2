//! `orderd cluster move-shard`: hands one shard from its owner to another
//! node while orders keep coming, and says how long the shard paused.
//!
//! 1. Record the move's intent in etcd, under a lease this command keeps
//!    alive (if the command dies, the intent goes with the lease), only if
//!    the map is unchanged and no other move of the shard is under way.
//! 2. `Prepare` on the old owner: it bundles the shard while it serves and
//!    keeps its events from there; the bundle is copied (`Read`) to the new
//!    node (`Stage`), which builds the shard off its core.
//! 3. `Freeze` on the old owner (the pause starts here): it answers with
//!    the shard's events since the bundle (its tail), which the new node
//!    applies and installs durably (`WriteTail`), not serving it yet.
//! 4. One etcd transaction writes the map naming the new owner and deletes
//!    the intent, if the intent is still the one of step 1.
//! 5. `Follow` on the new owner: it serves the shard once it reads the map
//!    (the pause ends here); `Release` on the old owner empties its copy.
//!
//! A failure before step 4 deletes the intent first (the map can then no
//! longer change by this move) and tells the old owner to serve the shard
//! again (`Abort`); an old owner that cannot be told sees the intent gone
//! and does it itself (`runtime::membership`). A failure at step 4 whose
//! outcome is unknown is settled by reading the map back. So a move that
//! fails anywhere leaves the shard with exactly one owner, and nothing an
//! owner acknowledged is lost: the new owner has every acknowledged change
//! (the old one changed nothing after the freeze) before the map names it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd_protocol::client::{ClientConfig, Connection};
use orderd_protocol::limits::MAX_MOVE_CHUNK;
use orderd_protocol::message::{MoveBytes, MoveRange, MoveShard, MoveStep};
use serde::Serialize;

use super::etcd::Coordinator;
use super::map::{core_of_shard, MoveIntent, NodeInfo, Owner};

/// The lease a move's intent lives under: it outlives a stalled command by
/// this long at most.
pub const INTENT_TTL_SECS: u64 = 10;

/// What a move did, and how long the shard paused.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    /// The shard.
    pub shard: u32,
    /// Its owner before.
    pub from: String,
    /// Its owner now.
    pub to: String,
    /// The map version the move made.
    pub version: u64,
    /// Orders of the shard (in memory and archived).
    pub orders: u64,
    /// Bytes copied: its bundle and its tail.
    pub bytes: u64,
    /// Changes the shard took while its bundle was copied (its tail).
    pub tail_events: u64,
    /// Frozen: the tail bundled, copied, applied and installed durably on
    /// the new owner, ms.
    pub freeze_ms: u64,
    /// The bundle taken, copied and staged while the shard served, ms.
    pub copy_ms: u64,
    /// The map switch in etcd until the new owner followed it, ms.
    pub switch_ms: u64,
    /// The shard served by neither node: freeze to new owner serving, ms.
    pub paused_ms: u64,
}

/// Moves `shard` to `to` (`NODE` or `NODE:CORE`), calling `note` with a
/// line per step.
///
/// # Errors
/// Why the move did not happen (the shard then stays with its owner).
pub fn move_shard(etcd: &Coordinator, shard: u32, to: &str, mut note: impl FnMut(&str)) -> anyhow::Result<MoveReport> {
    let read = etcd.map()?;
    let map = &read.map;
    anyhow::ensure!(shard < map.shards, "shard {shard}: cluster `{}` has shards 0 to {}", map.cluster, map.shards - 1);
    anyhow::ensure!(
        map.replicas == 1,
        "cluster `{}` keeps {} copies of each shard: moving a leader is not supported yet (its followers would have to follow it); \
         `orderd cluster set-replicas 1`, move, then set the copies back",
        map.cluster,
        map.replicas
    );
    let Some(from) = map.owners[shard as usize].clone() else {
        anyhow::bail!("shard {shard} has no owner yet: `orderd cluster rebalance` places it (nothing to move)");
    };
    let live = etcd.live_nodes()?;
    let (to_node, to_core) = match to.split_once(':') {
        Some((node, core)) => (node, Some(core.parse::<u16>().map_err(|_| anyhow::anyhow!("--to {to}: the core must be a number"))?)),
        None => (to, None),
    };
    let find = |id: &str| live.iter().find(|n| n.node == id);
    let Some(dest) = find(to_node) else {
        anyhow::bail!("node `{to_node}` is not live in cluster `{}` (`orderd cluster status` lists the nodes)", map.cluster);
    };
    let Some(source) = find(&from.node) else {
        anyhow::bail!("shard {shard}'s owner `{}` is down: its state is on its disk; start it again, then move the shard", from.node);
    };
    anyhow::ensure!(from.node != dest.node, "shard {shard} is on node `{}` already", from.node);
    let core = core_of_shard(shard, dest.cores.len());
    if let Some(asked) = to_core.filter(|&c| c != core) {
        anyhow::bail!(
            "node `{}` serves shard {shard} on its core {core} (a node splits its shards over its cores by shard mod cores), not {asked}",
            dest.node
        );
    }
    let to = Owner { node: dest.node.clone(), core };
    let (source_addr, dest_addr) = (core_addr(source, shard)?, core_addr(dest, shard)?);
    let move_id = map.version + 1;

    let lease = etcd.grant_lease(INTENT_TTL_SECS)?;
    let keeper = LeaseKeeper::start(etcd.clone(), lease);
    let intent = MoveIntent { shard, from: from.clone(), to: to.clone(), move_id, started_ms: unix_ms() };
    let Some(intent_revision) = etcd.begin_move(&read, &intent, lease)? else {
        let _ = etcd.revoke_lease(lease);
        anyhow::bail!("the map changed, or another move of shard {shard} is under way: look at `orderd cluster status`, then retry");
    };
    note(&format!("moving shard {shard} from {from} to {to} (map version {} -> {move_id})", map.version));

    let config = ClientConfig { request_timeout: Duration::from_secs(120), ..ClientConfig::default() };
    let step = |step: MoveStep| MoveShard { shard, move_id, step };
    let mut copied = None;
    let mut frozen_at = None;
    let outcome = (|| -> anyhow::Result<(u64, u64, u64, u64, u64)> {
        let started = Instant::now();
        let mut old = Connection::connect(source_addr, &config)?;
        let mut new = Connection::connect(dest_addr, &config)?;
        // While the shard serves: its bundle, staged on the new owner.
        let prepared = old.move_shard(step(MoveStep::Prepare))?;
        note(&format!("bundled on {from} while it serves: {} orders, {} bytes", prepared.orders, prepared.total));
        copy(&mut old, &mut new, prepared.total, &from, &to, &step, MoveStep::Stage)?;
        let copy_ms = started.elapsed().as_millis() as u64;
        note(&format!("staged on {to} in {copy_ms} ms"));
        // Frozen: only the shard's changes since the bundle travel.
        let pause = Instant::now();
        frozen_at = Some(pause);
        let frozen = old.move_shard(step(MoveStep::Freeze))?;
        let installed = copy(&mut old, &mut new, frozen.total, &from, &to, &step, MoveStep::WriteTail)?;
        copied = Some(());
        let freeze_ms = pause.elapsed().as_millis() as u64;
        note(&format!("frozen on {from}; {} change(s) since the bundle installed on {to} (durable) in {freeze_ms} ms", frozen.orders));
        Ok((freeze_ms, copy_ms, installed.orders, prepared.total + frozen.total, frozen.orders))
    })();
    let (freeze_ms, copy_ms, orders, bytes, tail_events) = match outcome {
        Ok(done) => done,
        Err(e) => {
            abandon(etcd, shard, source_addr, &config, step(MoveStep::Abort), &mut note);
            drop(keeper);
            let _ = etcd.revoke_lease(lease);
            let stage = if copied.is_some() { "after the copy" } else { "before the switch" };
            return Err(e.context(format!("moving shard {shard} failed {stage}; it stays with {from}")));
        }
    };
    let frozen_at = frozen_at.unwrap_or_else(Instant::now);

    let mut switched = read.map.clone();
    switched.owners[shard as usize] = Some(to.clone());
    let switching = Instant::now();
    let flipped = match etcd.finish_move(&read, &switched, shard, intent_revision) {
        Ok(flipped) => flipped,
        // The outcome is unknown: the map says which.
        Err(e) => {
            note(&format!("the switch's outcome is unknown ({e}): reading the map back"));
            settle(etcd, shard, &to)?
        }
    };
    drop(keeper);
    let _ = etcd.revoke_lease(lease);
    if !flipped {
        abandon(etcd, shard, source_addr, &config, step(MoveStep::Abort), &mut note);
        anyhow::bail!("moving shard {shard}: the map changed during the move (or its intent expired); it stays with {from}");
    }
    let followed = Connection::connect(dest_addr, &config).and_then(|mut c| c.move_shard(step(MoveStep::Follow)));
    let switch_ms = switching.elapsed().as_millis() as u64;
    let paused_ms = frozen_at.elapsed().as_millis() as u64;
    match followed {
        Ok(f) if f.total >= move_id => note(&format!("{to} serves shard {shard} (map version {move_id})")),
        Ok(f) => note(&format!("{to} still follows map version {}: it serves the shard once it reads {move_id}", f.total)),
        Err(e) => note(&format!("{to} could not be told of the new map ({e}): it serves the shard once it reads it")),
    }
    match Connection::connect(source_addr, &config).and_then(|mut c| c.move_shard(step(MoveStep::Release))) {
        Ok(_) => note(&format!("{from} released its copy")),
        Err(e) => note(&format!(
            "{from} did not release its copy ({e}); it serves nothing of the shard, and releases the copy once it sees the switch"
        )),
    }
    // The other nodes read the map now rather than at their next look, so
    // that clients asking them for the map find the new owner at once.
    for node in live.iter().filter(|n| n.node != from.node && n.node != to.node) {
        if let Ok(addr) = core_addr(node, shard) {
            let _ = Connection::connect(addr, &config).and_then(|mut c| c.move_shard(step(MoveStep::Follow)));
        }
    }
    Ok(MoveReport {
        shard,
        from: from.to_string(),
        to: to.to_string(),
        version: move_id,
        orders,
        bytes,
        tail_events,
        freeze_ms,
        copy_ms,
        switch_ms,
        paused_ms,
    })
}

/// Copies `total` bytes from the old owner (`Read`) to the new one, each
/// chunk sent as `as_step` (`Stage` or `WriteTail`); the new owner's answer
/// to the last chunk.
pub(crate) fn copy(
    old: &mut Connection,
    new: &mut Connection,
    total: u64,
    from: &Owner,
    to: &Owner,
    step: &impl Fn(MoveStep) -> MoveShard,
    as_step: fn(MoveBytes) -> MoveStep,
) -> anyhow::Result<orderd_protocol::message::ShardMoved> {
    let mut offset = 0u64;
    loop {
        let chunk = old.move_shard(step(MoveStep::Read(MoveRange { offset, len: MAX_MOVE_CHUNK as u32 })))?;
        anyhow::ensure!(chunk.offset == offset && (!chunk.data.is_empty() || total == 0), "{from} sent no bytes at offset {offset}");
        let len = chunk.data.len() as u64;
        let wrote = new.move_shard(step(as_step(MoveBytes { offset, total, data: chunk.data })))?;
        offset += len;
        anyhow::ensure!(wrote.offset == offset, "{to} has {} bytes where {offset} were sent", wrote.offset);
        if offset >= total {
            anyhow::ensure!(wrote.total == total, "{to} did not take the {total} bytes whole");
            return Ok(wrote);
        }
    }
}

/// The address of the core of `node` that serves `shard`.
pub(crate) fn core_addr(node: &NodeInfo, shard: u32) -> anyhow::Result<SocketAddr> {
    let core = core_of_shard(shard, node.cores.len()) as usize;
    let announced = node.cores.get(core).ok_or_else(|| anyhow::anyhow!("node `{}` announces no cores", node.node))?;
    announced
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| anyhow::anyhow!("node `{}` announces core {core} at `{announced}`, which does not resolve", node.node))
}

/// After a failure before the switch: delete the intent (the map can then
/// no longer change by this move), then tell the old owner to serve the
/// shard again. If either fails, the old owner finds the intent gone (its
/// lease runs out) and serves the shard again by itself.
fn abandon(etcd: &Coordinator, shard: u32, source: SocketAddr, config: &ClientConfig, abort: MoveShard, note: &mut impl FnMut(&str)) {
    match etcd.cancel_move(shard) {
        Ok(()) => match Connection::connect(source, config).and_then(|mut c| c.move_shard(abort)) {
            Ok(_) => note(&format!("move abandoned: the owner serves shard {shard} again")),
            Err(e) => {
                note(&format!("move abandoned; the owner could not be told ({e}): it serves the shard again once it sees the intent gone"))
            }
        },
        Err(e) => note(&format!(
            "could not delete the move's intent ({e}): the owner serves the shard again once its lease runs out ({INTENT_TTL_SECS} s)"
        )),
    }
}

/// Reads the map until it says whether `shard` went to `to` (bounded).
fn settle(etcd: &Coordinator, shard: u32, to: &Owner) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match etcd.map() {
            Ok(read) => return Ok(read.map.owners[shard as usize].as_ref() == Some(to)),
            Err(e) if Instant::now() >= deadline => {
                anyhow::bail!("etcd did not say whether shard {shard} moved ({e}); `orderd cluster status` shows its owner")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Keeps a lease alive from a thread until dropped.
struct LeaseKeeper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LeaseKeeper {
    fn start(etcd: Coordinator, lease: i64) -> LeaseKeeper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("orderd-move-lease".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    if last.elapsed() >= Duration::from_secs(1) {
                        let _ = etcd.renew_lease(lease);
                        last = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .ok();
        LeaseKeeper { stop, thread }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
