//! Scanning one segment at recovery: verify each record, decode it, replay
//! it into the shard it belongs to (checking that the recovering core owns
//! that shard), and say how the records end (clean, or at a bad record,
//! and whether a verified one follows it). `recovery.rs` decides what an
//! end means (torn tail or corruption).

use orderd_protocol::shard::{shard_of_order, shard_of_product};

use super::error::{LogError, RecoveryError};
use super::handoff::{bundle_file_name, event_kind_of_tail, is_control, moves_dir, replace_archive, Bundle, Control};
use super::record::{read_at, BadRecord, Slot, RECORD_ALIGN};
use super::segment::{Segment, SEGMENT_HEADER_LEN};
use super::storage::Storage;
use crate::engine::archive::OrderArchive;
use crate::engine::{Event, Shard};

/// The shards of one core, for its recovery thread: shard `s` of `count`
/// is `shards[s / cores]` when `s % cores == core`.
pub(super) struct CoreShards<'a> {
    pub(super) core: usize,
    pub(super) cores: usize,
    pub(super) count: u32,
    pub(super) shards: Vec<&'a mut Shard>,
    /// Records of `shards[i]` below `from[i]` are in its checkpoint image:
    /// verified, not replayed.
    pub(super) from: Vec<u64>,
    /// Each shard's order archive (by position in `shards`).
    pub(super) archives: Vec<std::sync::Arc<crate::engine::archive::OrderArchive>>,
    /// The data directory (bundles of installed shards, archives).
    pub(super) data_dir: std::path::PathBuf,
    /// Where syncs go.
    pub(super) storage: super::storage::SharedStorage,
    /// The `ShardInstalled` records read (`RecoveryStats::installs`).
    pub(super) installs: Vec<super::recovery::Installed>,
}

impl CoreShards<'_> {
    /// The lowest sequence any shard replays from: records below it are
    /// verified only, not even decoded.
    pub(super) fn replay_from(&self) -> u64 {
        self.from.iter().copied().min().unwrap_or(0)
    }
}

/// How a segment's records end.
pub(super) enum ScanEnd {
    /// Zeros from `pos` to the end of the segment.
    Clean { pos: usize },
    /// Bytes at `pos` that are not a record; `verified_after` says whether a
    /// verified record follows them in the segment.
    Bad { pos: usize, reason: BadRecord, verified_after: bool },
}

/// Records decoded ahead of their replay: their index slots and order
/// records are touched first, so the cache misses of consecutive records
/// overlap instead of queueing (as for a frame, `Shard::warm`): replay
/// took 4.45-5.07 s instead of 5.76-6.61 s for 21.6 M records on 2 cores
/// (benches/README.md, Durability).
const REPLAY_AHEAD: usize = 16;

/// A record decoded ahead of its replay.
struct Decoded {
    at: usize,
    sequence: u64,
    len: usize,
    item: Item,
}

/// What a record holds.
enum Item {
    Event(Event),
    Control(Control),
}

/// Replays the records of `segment` from its first, advancing `expected`.
pub(super) fn scan(
    segment: &Segment,
    shards: &mut CoreShards<'_>,
    expected: &mut u64,
    record_bytes: &mut u64,
) -> Result<ScanEnd, RecoveryError> {
    let bytes = &segment.map[..];
    let mut at = SEGMENT_HEADER_LEN;
    let replay_from = shards.replay_from();
    let mut ahead: Vec<Decoded> = Vec::with_capacity(REPLAY_AHEAD);
    loop {
        // Decode up to REPLAY_AHEAD records; how the records end, if they
        // do, is returned once the ones before are replayed.
        let mut end = None;
        while ahead.len() < REPLAY_AHEAD && end.is_none() {
            match read_at(bytes, at) {
                Slot::Record(r) => {
                    let sequence = *expected + ahead.len() as u64;
                    if r.sequence != sequence {
                        return Err(RecoveryError::Inconsistent {
                            path: segment.path.clone(),
                            offset: at as u64,
                            reason: format!("record sequence {} where {sequence} was expected", r.sequence),
                        });
                    }
                    if sequence < replay_from {
                        // In every shard's checkpoint. Records below the
                        // lowest start all come before any replayed one, so
                        // nothing is ahead yet.
                        debug_assert!(ahead.is_empty());
                        *expected += 1;
                        at += r.len;
                        continue;
                    }
                    let item = if let Some(kind) = event_kind_of_tail(r.kind) {
                        // A moved shard's tail event: replayed as the event.
                        Item::Event(Event::decode(kind, r.version, r.payload).map_err(|source| RecoveryError::Decode {
                            path: segment.path.clone(),
                            offset: at as u64,
                            sequence,
                            source,
                        })?)
                    } else if is_control(r.kind) {
                        Item::Control(Control::decode(r.kind, r.version, r.payload).map_err(|reason| RecoveryError::Inconsistent {
                            path: segment.path.clone(),
                            offset: at as u64,
                            reason,
                        })?)
                    } else {
                        Item::Event(r.event().map_err(|source| RecoveryError::Decode {
                            path: segment.path.clone(),
                            offset: at as u64,
                            sequence,
                            source,
                        })?)
                    };
                    ahead.push(Decoded { at, sequence, len: r.len, item });
                    at += r.len;
                }
                Slot::End => {
                    end = Some(match bytes[at..].iter().position(|&b| b != 0) {
                        None => ScanEnd::Clean { pos: at },
                        Some(_) => ScanEnd::Bad { pos: at, reason: BadRecord::TrailingBytes, verified_after: verified_after(bytes, at) },
                    });
                }
                Slot::Bad(reason) => end = Some(ScanEnd::Bad { pos: at, reason, verified_after: verified_after(bytes, at) }),
            }
        }
        for d in &ahead {
            let Item::Event(event) = &d.item else { continue };
            if let Ok((_, local)) = route(event, shards) {
                if d.sequence >= shards.from[local] {
                    shards.shards[local].warm_event(event);
                }
            }
        }
        for d in ahead.drain(..) {
            let replayed = match &d.item {
                Item::Event(event) => replay_one(event, d.sequence, shards),
                Item::Control(control) => replay_control(control, d.sequence, shards),
            };
            replayed.map_err(|e| match e {
                Misroute::Replay(shard, source) => {
                    RecoveryError::Replay { path: segment.path.clone(), offset: d.at as u64, sequence: d.sequence, shard, source }
                }
                Misroute::Foreign(reason) => RecoveryError::Inconsistent { path: segment.path.clone(), offset: d.at as u64, reason },
            })?;
            *expected += 1;
            *record_bytes += d.len as u64;
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// The records that still verify in `bytes` after `pos`: what truncating
/// there drops, for the operator's record of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Dropped {
    /// Records that verify.
    pub records: u64,
    /// The lowest and highest of their sequences.
    pub sequences: Option<(u64, u64)>,
}

impl Dropped {
    /// Adds the records that verify in `bytes` from `from` on (a record is
    /// skipped whole; other bytes are stepped over 8 at a time).
    pub(super) fn count(&mut self, bytes: &[u8], from: usize) {
        let mut at = from;
        while at < bytes.len() {
            match read_at(bytes, at) {
                Slot::Record(record) => {
                    self.records += 1;
                    let (lo, hi) = self.sequences.unwrap_or((record.sequence, record.sequence));
                    self.sequences = Some((lo.min(record.sequence), hi.max(record.sequence)));
                    at += record.len.max(RECORD_ALIGN);
                }
                Slot::End | Slot::Bad(_) => at += RECORD_ALIGN,
            }
        }
    }
}

/// Whether a verified record starts anywhere after `pos`.
fn verified_after(bytes: &[u8], pos: usize) -> bool {
    (pos + RECORD_ALIGN..bytes.len()).step_by(RECORD_ALIGN).any(|at| matches!(read_at(bytes, at), Slot::Record(_)))
}

enum Misroute {
    Replay(u32, crate::engine::EventError),
    Foreign(String),
}

/// The shard of `event` and its place in the recovering core's list,
/// checking that the core owns it.
fn route(event: &Event, shards: &CoreShards<'_>) -> Result<(u32, usize), Misroute> {
    let (core, cores, count) = (shards.core, shards.cores, shards.count);
    let shard = match *event {
        Event::ProductUpserted { upsert, .. } => shard_of_product(upsert.product, count),
        Event::StockAdjusted { product, .. } => shard_of_product(product, count),
        Event::OrderPlaced { order_id, request, .. } => {
            let shard = shard_of_order(order_id);
            if shard != shard_of_product(request.product, count) {
                return Err(Misroute::Foreign(format!(
                    "order {order_id} names shard {shard} but its product {} is on shard {}",
                    request.product,
                    shard_of_product(request.product, count)
                )));
            }
            shard
        }
        Event::OrderPaid { order_id, .. } | Event::OrderCancelled { order_id, .. } | Event::OrderExpired { order_id, .. } => {
            shard_of_order(order_id)
        }
    };
    if shard as usize % cores != core {
        return Err(Misroute::Foreign(format!("event for shard {shard}, which core {core} of {cores} does not own")));
    }
    let local = shard as usize / cores;
    if local >= shards.shards.len() {
        return Err(Misroute::Foreign(format!("event for shard {shard}, but there are {count} shards")));
    }
    Ok((shard, local))
}

/// Applies a control record (`log::handoff`) to its shard, unless the
/// shard's checkpoint already holds record `sequence`: an install replaces
/// the shard by its bundle's (and its archive by the bundle's archive, as
/// the install did), a release empties it.
fn replay_control(control: &Control, sequence: u64, shards: &mut CoreShards<'_>) -> Result<u32, Misroute> {
    let shard = u32::from(control.shard());
    let (core, cores) = (shards.core, shards.cores);
    let local = shard as usize / cores;
    if shard as usize % cores != core || local >= shards.shards.len() {
        return Err(Misroute::Foreign(format!("a control record for shard {shard}, which core {core} of {cores} does not own")));
    }
    if let Control::ShardInstalled { move_id, .. } = *control {
        shards.installs.push((control.shard(), move_id, sequence));
    }
    if sequence < shards.from[local] {
        return Ok(shard);
    }
    let config = *shards.shards[local].config();
    let archive_dir = super::recovery::archive_dir(&shards.data_dir);
    let fail = |what: String| Misroute::Foreign(format!("shard {shard}: {what}"));
    let (fresh, archive) = match *control {
        Control::ShardInstalled { move_id, .. } => {
            let path = moves_dir(&shards.data_dir).join(bundle_file_name(control.shard(), move_id));
            let bytes = std::fs::read(&path)
                .map_err(|e| fail(format!("its bundle {} cannot be read ({e}); the install it names needs it", path.display())))?;
            let bundle = Bundle::decode(&bytes).map_err(|e| fail(format!("bundle {}: {e}", path.display())))?;
            replace_archive(&archive_dir, control.shard(), &bundle.archive, &*shards.storage)
                .map_err(|e| fail(format!("cannot restore its archive: {e}")))?;
            let shard = Shard::from_image(config, bundle.image).map_err(|e| fail(format!("bundle {}: {e}", path.display())))?;
            (shard, Some(()))
        }
        Control::ShardReleased { .. } => (Shard::new(config), None),
    };
    let archive = match archive {
        Some(()) => OrderArchive::open(&archive_dir, control.shard(), &*shards.storage)
            .map(std::sync::Arc::new)
            .map_err(|e| fail(format!("its archive: {e}")))?,
        None => std::sync::Arc::clone(&shards.archives[local]),
    };
    *shards.shards[local] = fresh;
    shards.shards[local].attach_archive(std::sync::Arc::clone(&archive)).map_err(|e| fail(format!("its archive: {e}")))?;
    shards.archives[local] = archive;
    Ok(shard)
}

/// Routes `event` to its shard ([`route`]) and applies it, unless the
/// shard's checkpoint already holds record `sequence`.
fn replay_one(event: &Event, sequence: u64, shards: &mut CoreShards<'_>) -> Result<u32, Misroute> {
    let (shard, local) = route(event, shards)?;
    if sequence >= shards.from[local] {
        shards.shards[local].apply_event(event).map_err(|source| Misroute::Replay(shard, source))?;
    }
    Ok(shard)
}

/// Zeroes `segment` from `pos` to its last non-zero byte and syncs it.
pub(super) fn zero_from(storage: &dyn Storage, segment: &mut Segment, pos: usize) -> Result<(), LogError> {
    let Some(tail) = segment.map.get_mut(pos..) else { return Ok(()) };
    if let Some(last) = tail.iter().rposition(|&b| b != 0) {
        tail[..=last].fill(0);
    }
    storage.sync_data(&segment.file).map_err(LogError::sync("fdatasync", &segment.path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Event;
    use crate::log::record::{record_len, write};

    fn stock_event(product: u64) -> Event {
        Event::StockAdjusted { time_ms: 1, product, delta: 1 }
    }

    #[test]
    fn dropped_counts_the_records_that_verify_after_a_bad_one_with_their_sequences() {
        let len = record_len(&stock_event(1));
        let mut bytes = vec![0u8; 8 * len + 64];
        for (i, sequence) in (10..16u64).enumerate() {
            assert!(write(&mut bytes[i * len..], sequence, &stock_event(sequence)).is_some());
        }
        // The third record goes bad; the three after it still verify.
        bytes[2 * len + 20] ^= 0xff;
        let mut dropped = Dropped::default();
        dropped.count(&bytes, 2 * len + RECORD_ALIGN);
        assert_eq!(dropped, Dropped { records: 3, sequences: Some((13, 15)) });
        // More bytes (a later segment) add to the count.
        dropped.count(&bytes, 0);
        assert_eq!(dropped, Dropped { records: 8, sequences: Some((10, 15)) });
    }
}
