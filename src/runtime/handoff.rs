//! The steps of a shard move as a node carries them out (`MoveShard`
//! requests from `orderd cluster move-shard`, PROTOCOL.md § 8.1), on the
//! core that holds the shard:
//!
//! - `Prepare` (old owner): take the shard's image on the core and, in the
//!   same step, start keeping its events (`Core::exporting`); bundle the
//!   image with its order archive off the core (`log::handoff`); the
//!   bundle waits in memory for `Read`s.
//! - `Stage` (new owner): gather the bundle's chunks; the last one writes
//!   the bundle file (synced), puts its archive in place and builds the
//!   shard off the core, kept aside.
//! - `Freeze` (old owner): stop serving the shard (its requests, local or
//!   forwarded, are answered `moved`; its orders expire nothing) and hand
//!   over its tail: the events kept since `Prepare`.
//! - `WriteTail` (new owner): apply the tail to the staged shard, record
//!   `ShardInstalled` and the tail's events, swap the shard in. The reply
//!   waits until those records are durable: only then may the map name
//!   this node. The shard is not served until it does.
//! - `Follow` (any node): read the map now; answers once it is followed.
//! - `Release` (old owner, once the map names the new one): record
//!   `ShardReleased` and empty the shard.
//! - `Abort` (old owner, after a failed move whose intent is gone): serve
//!   the shard again.
//! - `Freeze` without `Prepare` bundles the whole frozen shard, and `Write`
//!   installs such a bundle on its last chunk (no tail): a longer pause.
//!
//! The map changes in between, in etcd, by the command (`cluster::mover`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd_protocol::limits::MAX_MOVE_CHUNK;
use orderd_protocol::message::{MoveBytes, MoveRange, MoveShard, MoveStep, ShardMoved};
use orderd_protocol::{Reply, Status};

use super::core::{now_ms, Exporting, MAX_TAIL_EVENTS};
use super::CoreCtx;
use crate::cluster::OwnedShards;
use crate::engine::archive::{file_name, OrderArchive};
use crate::engine::Shard;
use crate::log::handoff::{moves_dir, replace_archive, write_bundle, Bundle};
use crate::log::recovery::archive_dir;

/// The largest bundle a node accepts (64 GiB: a shard of a billion orders).
pub const MAX_BUNDLE_BYTES: u64 = 64 << 30;

/// How long `Follow` and `Release` wait for the node to follow the map.
const FOLLOW_LIMIT: Duration = Duration::from_secs(5);

/// How often a step looks for off-core work's answer.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// The reply to a move step and the log sequence it must wait for.
type Answer = (Reply, Option<u64>);

fn refuse(status: Status, detail: u64) -> Answer {
    (Reply::rejected(status, detail), None)
}

fn moved(m: &MoveShard, offset: u64, total: u64, orders: u64, data: Vec<u8>) -> Reply {
    Reply::ShardMoved(ShardMoved { shard: m.shard, move_id: m.move_id, offset, total, orders, data })
}

/// Carries out step `m` on this connection's core.
pub async fn step(ctx: &CoreCtx, m: MoveShard) -> Answer {
    let (cluster, me, owner, shards) = {
        let core = ctx.core.borrow();
        (core.cluster.clone(), core.index(), core.owner_of(m.shard), core.shard_count())
    };
    let Some(cluster) = cluster else { return refuse(Status::Unsupported, 0) };
    if m.shard >= shards {
        return refuse(Status::InvalidRequest, u64::from(shards));
    }
    if owner != me && m.step != MoveStep::Follow {
        return refuse(Status::NotOwner, owner as u64);
    }
    match m.step {
        MoveStep::Freeze => freeze(ctx, &cluster, &m).await,
        MoveStep::Read(range) => read(&cluster, &m, range),
        MoveStep::Write(ref bytes) => write(ctx, &cluster, &m, bytes, false).await,
        MoveStep::Stage(ref bytes) => write(ctx, &cluster, &m, bytes, true).await,
        MoveStep::WriteTail(ref bytes) => write_tail(ctx, &cluster, &m, bytes).await,
        MoveStep::Prepare => prepare(ctx, &cluster, &m).await,
        MoveStep::Follow => {
            let version = follow(&cluster, m.move_id).await;
            (moved(&m, 0, version, 0, Vec::new()), None)
        }
        MoveStep::Release => release(ctx, &cluster, &m).await,
        MoveStep::Seed(ref to) => seed(ctx, &cluster, &m, to).await,
        MoveStep::Accept => {
            let (map, _) = cluster.map();
            if cluster.owns(m.shard) || map.follows(m.shard, cluster.node()) {
                // Never over this node's own in-sync copy or the leader's.
                return refuse(Status::InvalidRequest, 6);
            }
            cluster.accept_copy(m.shard, map.epoch_of(m.shard));
            tracing::info!(shard = m.shard, epoch = map.epoch_of(m.shard), "a copy of the shard is being made here");
            (moved(&m, 0, map.epoch_of(m.shard), 0, Vec::new()), None)
        }
        MoveStep::Attach(ref to) => {
            let dest = crate::cluster::map::Owner { node: to.node.clone(), core: to.core };
            match ctx.core.borrow_mut().replication.attach(m.shard, &dest) {
                Some(lag) => (moved(&m, lag, 0, 0, Vec::new()), None),
                None => refuse(Status::InvalidRequest, 7),
            }
        }
        MoveStep::Abort => {
            cluster.unfreeze(m.shard);
            lock(&cluster).out.remove(&m.shard);
            ctx.core.borrow_mut().exporting = None;
            tracing::warn!(shard = m.shard, move_id = m.move_id, "shard move abandoned: serving the shard again");
            (moved(&m, 0, 0, 0, Vec::new()), None)
        }
    }
}

fn lock(cluster: &OwnedShards) -> std::sync::MutexGuard<'_, crate::cluster::owned::MoveBuffers> {
    cluster.moves.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `work` on a thread of its own (file I/O, encoding, index builds:
/// never on the core) and waits for it without blocking the core.
async fn off_core<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    loop {
        match rx.try_recv() {
            Ok(value) => return Ok(value),
            Err(std::sync::mpsc::TryRecvError::Empty) => glommio::timer::sleep(POLL_EVERY).await,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err("the thread died".into()),
        }
    }
}

async fn freeze(ctx: &CoreCtx, cluster: &Arc<OwnedShards>, m: &MoveShard) -> Answer {
    if !cluster.owns(m.shard) {
        return refuse(Status::Moved, cluster.version());
    }
    if cluster.frozen(m.shard) {
        // A retried Freeze of the same move gets the same bundle.
        if let Some((id, bundle)) = lock(cluster).out.get(&m.shard) {
            if *id == m.move_id {
                return (moved(m, 0, bundle.len() as u64, 0, Vec::new()), None);
            }
        }
    }
    let started = Instant::now();
    let prepared = ctx.core.borrow().exporting.as_ref().is_some_and(|e| e.shard == m.shard && e.move_id == m.move_id);
    if prepared {
        // Bundled while serving: freeze, and hand over only the events since.
        cluster.freeze(m.shard);
        let Some(export) = ctx.core.borrow_mut().exporting.take() else { return refuse(Status::Internal, 0) };
        if export.overflow {
            cluster.unfreeze(m.shard);
            tracing::warn!(shard = m.shard, "the shard took too many changes while it was copied; serving it again");
            return refuse(Status::Overloaded, MAX_TAIL_EVENTS as u64);
        }
        let tail = crate::log::handoff::encode_tail(&export.events);
        let total = tail.len() as u64;
        lock(cluster).out.insert(m.shard, (m.move_id, Arc::new(tail)));
        tracing::info!(
            shard = m.shard,
            move_id = m.move_id,
            events = export.events.len(),
            bytes = total,
            freeze_us = started.elapsed().as_micros() as u64,
            "prepared shard frozen: its tail is ready"
        );
        return (moved(m, 0, total, export.events.len() as u64, Vec::new()), None);
    }
    cluster.freeze(m.shard);
    // From here no request changes the shard: the image is its last state here.
    let Some((image, orders)) = ctx.core.borrow().shard(m.shard).map(|s| (s.image(), s.order_count() as u64)) else {
        cluster.unfreeze(m.shard);
        return refuse(Status::Internal, 0);
    };
    let image_us = started.elapsed().as_micros() as u64;
    match bundle_out(ctx, cluster, m, image).await {
        Ok(total) => {
            tracing::info!(
                shard = m.shard,
                move_id = m.move_id,
                orders,
                bytes = total,
                image_us,
                bundle_ms = started.elapsed().as_millis() as u64,
                "shard frozen and bundled for its move"
            );
            (moved(m, 0, total, orders, Vec::new()), None)
        }
        Err(e) => {
            cluster.unfreeze(m.shard);
            tracing::error!(shard = m.shard, error = %e, "cannot bundle the shard for its move; serving it again");
            refuse(Status::Internal, 0)
        }
    }
}

fn read(cluster: &OwnedShards, m: &MoveShard, range: MoveRange) -> Answer {
    let moves = lock(cluster);
    let Some((id, bundle)) = moves.out.get(&m.shard).filter(|(id, _)| *id == m.move_id) else {
        // No bundle of this move here (never frozen, or abandoned).
        return refuse(Status::InvalidRequest, 0);
    };
    let total = bundle.len() as u64;
    let from = range.offset.min(total) as usize;
    let to = (range.offset.saturating_add(u64::from(range.len.min(MAX_MOVE_CHUNK as u32)))).min(total) as usize;
    let _ = id;
    (moved(m, from as u64, total, 0, bundle[from..to].to_vec()), None)
}

/// Gathers the chunk `bytes` of move `m` into `buffers` (the bundle's or
/// the tail's); the whole once its last chunk came, or the answer to give.
fn gather(
    cluster: &OwnedShards,
    m: &MoveShard,
    bytes: &MoveBytes,
    buffers: impl FnOnce(&mut crate::cluster::owned::MoveBuffers) -> &mut std::collections::HashMap<u32, (u64, Vec<u8>)>,
) -> Result<Vec<u8>, Box<Answer>> {
    if cluster.owns(m.shard) {
        // Never install over a shard this node owns by its map.
        return Err(Box::new(refuse(Status::InvalidRequest, 1)));
    }
    if bytes.total > MAX_BUNDLE_BYTES || bytes.data.len() > MAX_MOVE_CHUNK {
        return Err(Box::new(refuse(Status::InvalidRequest, MAX_BUNDLE_BYTES)));
    }
    let mut moves = lock(cluster);
    let map = buffers(&mut moves);
    let entry = map.entry(m.shard).or_insert_with(|| (m.move_id, Vec::new()));
    if entry.0 != m.move_id || bytes.offset == 0 {
        *entry = (m.move_id, Vec::with_capacity(bytes.total.min(1 << 30) as usize));
    }
    let received = entry.1.len() as u64;
    if bytes.offset != received || received + bytes.data.len() as u64 > bytes.total {
        return Err(Box::new(refuse(Status::InvalidRequest, received)));
    }
    entry.1.extend_from_slice(&bytes.data);
    if (entry.1.len() as u64) < bytes.total {
        return Err(Box::new((moved(m, entry.1.len() as u64, 0, 0, Vec::new()), None)));
    }
    Ok(map.remove(&m.shard).map(|(_, b)| b).unwrap_or_default())
}

/// `Write` (the bundle of a frozen shard: installed on its last chunk) or
/// `Stage` (a bundle prepared while the shard served: built on its last
/// chunk and kept for its tail).
async fn write(ctx: &CoreCtx, cluster: &Arc<OwnedShards>, m: &MoveShard, bytes: &MoveBytes, stage: bool) -> Answer {
    let complete = match gather(cluster, m, bytes, |moves| &mut moves.incoming) {
        Ok(complete) => complete,
        Err(answer) => return *answer,
    };
    let started = Instant::now();
    let Some(config) = ctx.core.borrow().shard(m.shard).map(|s| *s.config()) else { return refuse(Status::Internal, 0) };
    let storage = ctx.core.borrow().log().storage().clone();
    let (data_dir, shard, move_id) = (ctx.streams.data_dir.clone(), m.shard as u16, m.move_id);
    let built = off_core("orderd-move-in", move || -> Result<(Shard, u64), String> {
        let (found, id) = Bundle::verify(&complete)?;
        if (found, id) != (shard, move_id) {
            return Err(format!("the bundle is of shard {found}, move {id}; not shard {shard}, move {move_id}"));
        }
        write_bundle(&moves_dir(&data_dir), shard, move_id, &complete, &*storage).map_err(|e| format!("writing the bundle: {e}"))?;
        let bundle = Bundle::decode(&complete)?;
        let archives = archive_dir(&data_dir);
        replace_archive(&archives, shard, &bundle.archive, &*storage).map_err(|e| format!("placing its archive: {e}"))?;
        let archive = OrderArchive::open(&archives, shard, &*storage).map_err(|e| e.to_string())?;
        let mut built = Shard::from_image(config, bundle.image).map_err(|e| e.to_string())?;
        built.attach_archive(Arc::new(archive)).map_err(|e| e.to_string())?;
        let orders = built.order_count() as u64;
        Ok((built, orders))
    })
    .await
    .and_then(|r| r);
    let (built, orders) = match built {
        Ok(built) => built,
        Err(e) => {
            tracing::error!(shard = m.shard, move_id = m.move_id, error = %e, "cannot install the moved shard");
            return refuse(Status::InvalidRequest, 2);
        }
    };
    if stage {
        lock(cluster).staged.insert(m.shard, (m.move_id, built));
        tracing::info!(
            shard = m.shard,
            move_id = m.move_id,
            orders,
            stage_ms = started.elapsed().as_millis() as u64,
            "moved shard staged; its tail installs it"
        );
        return (moved(m, bytes.total, bytes.total, orders, Vec::new()), None);
    }
    install(ctx, cluster, m, bytes.total, built, &[], started)
}

/// Installs `built` (with `tail` applied already) on the core: the log
/// records it, the shard is swapped in, and the reply waits until that is
/// durable.
fn install(
    ctx: &CoreCtx,
    cluster: &OwnedShards,
    m: &MoveShard,
    total: u64,
    built: Shard,
    tail: &[crate::engine::Event],
    started: Instant,
) -> Answer {
    let orders = built.order_count() as u64;
    let installed = ctx.core.borrow_mut().install_shard(m.shard, built, m.move_id, tail, now_ms());
    match installed {
        Ok(wait) => {
            // A copy this node froze for an earlier move away is replaced,
            // and a release decided before this install no longer holds.
            cluster.unfreeze(m.shard);
            cluster.installed(m.shard);
            tracing::info!(
                shard = m.shard,
                move_id = m.move_id,
                orders,
                tail = tail.len(),
                install_us = started.elapsed().as_micros() as u64,
                "moved shard installed; served once the map names this node"
            );
            (moved(m, total, total, orders, Vec::new()), Some(wait))
        }
        Err(status) => refuse(status, 0),
    }
}

/// `WriteTail`: the tail's chunks; the last applies them to the staged
/// shard and installs it (the install record, then the tail's events, in
/// the log; the reply waits until they are durable).
async fn write_tail(ctx: &CoreCtx, cluster: &Arc<OwnedShards>, m: &MoveShard, bytes: &MoveBytes) -> Answer {
    let complete = match gather(cluster, m, bytes, |moves| &mut moves.incoming_tail) {
        Ok(complete) => complete,
        Err(answer) => return *answer,
    };
    let started = Instant::now();
    let tail = match crate::log::handoff::decode_tail(&complete) {
        Ok(tail) => tail,
        Err(e) => {
            tracing::error!(shard = m.shard, move_id = m.move_id, error = %e, "the moved shard's tail does not decode");
            return refuse(Status::InvalidRequest, 3);
        }
    };
    let Some((_, mut shard)) = lock(cluster).staged.remove(&m.shard).filter(|(id, _)| *id == m.move_id) else {
        // Nothing staged for this move (a restart lost it): start again.
        return refuse(Status::InvalidRequest, 4);
    };
    for (i, event) in tail.iter().enumerate() {
        if let Err(e) = shard.apply_event(event) {
            tracing::error!(shard = m.shard, move_id = m.move_id, event = i, error = %e, "the moved shard's tail does not apply to its bundle");
            return refuse(Status::InvalidRequest, 5);
        }
    }
    install(ctx, cluster, m, bytes.total, shard, &tail, started)
}

/// `Prepare`: bundles the shard while it serves and keeps its events from
/// the image on (the image and the start of the keeping are one step on
/// the core, so no event falls between them).
async fn prepare(ctx: &CoreCtx, cluster: &Arc<OwnedShards>, m: &MoveShard) -> Answer {
    if !cluster.serves(m.shard) {
        return refuse(Status::Moved, cluster.version());
    }
    let (shard, move_id) = (m.shard, m.move_id);
    bundle_serving(
        ctx,
        cluster,
        m,
        "its move",
        move |core| {
            core.exporting = Some(Exporting { shard, move_id, events: Vec::new(), overflow: false, since_ms: now_ms() });
        },
        |core| core.exporting = None,
    )
    .await
}

/// Bundles shard `m.shard` while it serves (for `what`, in the logs): its
/// image is taken and `keep` starts keeping its events in one step on the
/// core; the bundle is made off the core and waits for `Read`s. `undo`
/// stops the keeping if the bundle cannot be made.
async fn bundle_serving(
    ctx: &CoreCtx,
    cluster: &Arc<OwnedShards>,
    m: &MoveShard,
    what: &str,
    keep: impl FnOnce(&mut super::core::Core),
    undo: impl FnOnce(&mut super::core::Core),
) -> Answer {
    let started = Instant::now();
    let taken = {
        let mut core = ctx.core.borrow_mut();
        let taken = core.shard(m.shard).map(|s| (s.image(), s.order_count() as u64));
        if taken.is_some() {
            keep(&mut core);
        }
        taken
    };
    let Some((image, orders)) = taken else { return refuse(Status::Internal, 0) };
    let position = image.position;
    match bundle_out(ctx, cluster, m, image).await {
        Ok(total) => {
            tracing::info!(
                shard = m.shard,
                move_id = m.move_id,
                orders,
                position,
                bytes = total,
                bundle_ms = started.elapsed().as_millis() as u64,
                "shard bundled for {what} while it serves"
            );
            (moved(m, 0, total, orders, Vec::new()), None)
        }
        Err(e) => {
            undo(&mut ctx.core.borrow_mut());
            tracing::error!(shard = m.shard, error = %e, "cannot bundle the shard for {what}");
            refuse(Status::Internal, 0)
        }
    }
}

/// `Seed`: bundles the shard while it serves, as `Prepare` does, and in the
/// same step on the core starts keeping its events for the new copy on
/// `to` (`runtime::replication`), held until `Attach`.
async fn seed(ctx: &CoreCtx, cluster: &Arc<OwnedShards>, m: &MoveShard, to: &orderd_protocol::message::SeedTo) -> Answer {
    let (map, _) = cluster.map();
    if !cluster.serves(m.shard) || map.replicas <= 1 {
        return refuse(Status::Moved, cluster.version());
    }
    if to.node == cluster.node() || map.follows(m.shard, &to.node) {
        return refuse(Status::InvalidRequest, 8);
    }
    let dest = crate::cluster::map::Owner { node: to.node.clone(), core: to.core };
    let shard = m.shard;
    bundle_serving(
        ctx,
        cluster,
        m,
        "a new copy",
        move |core| {
            core.follow_replication();
            let local = shard as usize / core.cores();
            core.replication.start_seed(local, shard, dest, now_ms());
        },
        // The held link expires unattached (`replication::SEED_LIMIT_MS`).
        |_| {},
    )
    .await
}

/// Bundles `image` with the shard's archive file, encoded off the core, and
/// keeps the bundle for the `Read`s of move `m`; its size.
async fn bundle_out(ctx: &CoreCtx, cluster: &OwnedShards, m: &MoveShard, image: crate::engine::ShardImage) -> Result<u64, String> {
    let path = archive_dir(&ctx.streams.data_dir).join(file_name(m.shard as u16));
    let move_id = m.move_id;
    let bytes = off_core("orderd-move-out", move || {
        let archive = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(Bundle { move_id, image, archive }.encode())
    })
    .await
    .and_then(|r| r)?;
    let total = bytes.len() as u64;
    lock(cluster).out.insert(m.shard, (m.move_id, Arc::new(bytes)));
    Ok(total)
}

/// Nudges the membership thread and waits (bounded) until the node follows
/// map version `version` or later; returns the version it follows.
pub(crate) async fn follow(cluster: &OwnedShards, version: u64) -> u64 {
    cluster.nudge();
    let started = Instant::now();
    while cluster.version() < version && started.elapsed() < FOLLOW_LIMIT {
        glommio::timer::sleep(POLL_EVERY).await;
    }
    cluster.version()
}

async fn release(ctx: &CoreCtx, cluster: &Arc<OwnedShards>, m: &MoveShard) -> Answer {
    follow(cluster, m.move_id).await;
    if cluster.owns(m.shard) {
        // The map still names this node: releasing would lose the shard.
        return refuse(Status::InvalidRequest, cluster.version());
    }
    let released = ctx.core.borrow_mut().release_shard(m.shard, m.move_id, now_ms());
    match released {
        Ok(wait) => {
            cluster.unfreeze(m.shard);
            lock(cluster).out.remove(&m.shard);
            tracing::info!(shard = m.shard, move_id = m.move_id, "moved shard released");
            (moved(m, 0, 0, 0, Vec::new()), Some(wait))
        }
        Err(status) => refuse(status, 0),
    }
}
