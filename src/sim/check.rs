//! What the simulator holds a server to, after every recovery and at the
//! end of a run:
//! - nothing durable is lost: each core's log holds at least the records
//!   its durable point covered before the crash, and they are the same
//!   records (the replayed state is the pre-crash state for everything
//!   durable);
//! - every acknowledged state change is there: each order a client was
//!   told about exists with its request's fields, each acknowledged key
//!   leads to its order, an acknowledged payment or cancellation holds;
//! - no oversell and consistent books: every shard's invariants
//!   (`Shard::check_invariants`: stock = available + reserved + paid,
//!   holdings and key index match the orders);
//! - no user above a product's limit;
//! - a recovery that started from a checkpoint gives the state a replay of
//!   the whole log gives ([`replay_matches`]).

use std::collections::BTreeMap;
use std::path::Path;

use orderd_protocol::shard::shard_of_order;
use orderd_protocol::OrderState;

use super::client::Ledger;
use super::node::Node;
use crate::engine::Event;
use crate::log::record::{read_at, Slot};
use crate::log::segment::{core_dir, parse_segment_file_name, SegmentHeader, PREPARED_FILE_NAME, SEGMENT_HEADER_LEN};

/// Where a record of a core's log sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAt {
    /// Its file.
    pub path: std::path::PathBuf,
    /// Its byte offset in the file.
    pub offset: u64,
    /// Its length.
    pub len: usize,
    /// Its sequence.
    pub sequence: u64,
    /// Its event.
    pub event: Event,
}

/// Every record of core `core`'s log as the files hold it now (segments in
/// order, then a prepared file that continues them), by sequence from the
/// oldest segment's first (retention deletes the oldest ones), up to the
/// first gap or unverified record.
///
/// # Errors
/// A file that cannot be read, or a verified record that does not decode.
pub fn log_records(data_dir: &Path, core: usize) -> Result<Vec<RecordAt>, String> {
    let dir = core_dir(data_dir, core);
    let mut files: Vec<(u64, std::path::PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(first) = parse_segment_file_name(&name) {
            files.push((first, entry.path()));
        } else if name == PREPARED_FILE_NAME {
            files.push((u64::MAX, entry.path()));
        }
    }
    files.sort();
    let mut records: Vec<RecordAt> = Vec::new();
    let mut next: Option<u64> = None;
    for (_, path) in files {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(header) = bytes.get(..SEGMENT_HEADER_LEN).and_then(|h| SegmentHeader::decode(h).ok()) else { continue };
        let expected = *next.get_or_insert(header.first_sequence);
        if header.first_sequence != expected {
            continue;
        }
        let mut pos = SEGMENT_HEADER_LEN;
        while let Slot::Record(record) = read_at(&bytes, pos) {
            if Some(record.sequence) != next {
                break;
            }
            let event = record.event().map_err(|e| format!("{} at {pos}: {e}", path.display()))?;
            records.push(RecordAt { path: path.clone(), offset: pos as u64, len: record.len, sequence: record.sequence, event });
            next = Some(record.sequence + 1);
            pos += record.len;
        }
    }
    Ok(records)
}

/// Every event core `core`'s log ever held, from sequence 0: `history`
/// (the events of the segments retention deleted, as the simulator kept
/// them before each deletion) then the files' records from where it ends.
/// Where both hold a record (a crash brought back a segment whose deletion
/// was not durable) they must agree.
///
/// # Errors
/// As [`log_records`]; a gap between the history and the files; a record
/// that differs from its kept copy.
pub fn log_events(data_dir: &Path, core: usize, history: &[Event]) -> Result<Vec<Event>, String> {
    let records = log_records(data_dir, core)?;
    let mut events = history.to_vec();
    if let Some(first) = records.first() {
        if first.sequence > history.len() as u64 {
            return Err(format!(
                "core {core}: the log files start at record {}, but only records below {} were deleted by retention",
                first.sequence,
                history.len()
            ));
        }
    }
    for record in records {
        match history.get(record.sequence as usize) {
            Some(kept) if *kept != record.event => {
                return Err(format!(
                    "core {core}: record {} is {:?} in {}, but was {kept:?} when retention deleted its segment",
                    record.sequence,
                    record.event,
                    record.path.display()
                ))
            }
            Some(_) => {}
            None => events.push(record.event),
        }
    }
    Ok(events)
}

/// The log held to what it was before a crash: at least `durable[core]`
/// records, each equal to the record of that sequence before.
///
/// # Errors
/// The first difference, in words.
pub fn log_kept(node: &Node, before: &[Vec<Event>], durable: &[u64], history: &[Vec<Event>]) -> Result<(), String> {
    let data_dir = &node.shape().data_dir;
    for (core, state) in node.cores.iter().enumerate() {
        let recovered = state.log().next_sequence();
        let floor = durable.get(core).copied().unwrap_or(0);
        if recovered < floor {
            return Err(format!("core {core}: recovery kept {recovered} records, but {floor} were durable before the crash"));
        }
        let after = log_events(data_dir, core, history.get(core).map_or(&[][..], Vec::as_slice))?;
        if after.len() as u64 != recovered {
            return Err(format!("core {core}: recovery says {recovered} records, the files hold {}", after.len()));
        }
        let old = before.get(core).map_or(&[][..], Vec::as_slice);
        if let Some(at) = (0..after.len()).find(|&i| old.get(i) != after.get(i)) {
            return Err(format!(
                "core {core}: record {at} after recovery is {:?}, before the crash it was {:?}",
                after.get(at),
                old.get(at)
            ));
        }
    }
    Ok(())
}

/// The recovered shards equal a replay of every record of every core's
/// log from the first (`history` holds those of the segments retention
/// deleted), whether the recovery started from a checkpoint or not.
///
/// # Errors
/// The first shard that differs, or a log that does not replay.
pub fn replay_matches(node: &Node, history: &[Vec<Event>]) -> Result<(), String> {
    let shape = node.shape();
    let cores = shape.cores;
    let mut shards: Vec<crate::engine::Shard> =
        (0..shape.shards).map(|s| crate::engine::Shard::new(shape.shard_config(s as u16))).collect();
    for core in 0..cores {
        for event in log_events(&shape.data_dir, core, history.get(core).map_or(&[][..], Vec::as_slice))? {
            let shard = match event {
                Event::ProductUpserted { upsert, .. } => orderd_protocol::shard::shard_of_product(upsert.product, shape.shards),
                Event::StockAdjusted { product, .. } => orderd_protocol::shard::shard_of_product(product, shape.shards),
                _ => event.order_id().map_or(0, shard_of_order),
            };
            let target = shards.get_mut(shard as usize).ok_or(format!("record for shard {shard}, which does not exist"))?;
            target.apply_event(&event).map_err(|e| format!("replaying core {core}'s whole log: {e}"))?;
        }
    }
    for (id, replayed) in shards.iter().enumerate() {
        let recovered = node.cores.get(id % cores).and_then(|c| c.shard(id as u32)).ok_or(format!("shard {id} is missing"))?;
        if recovered != replayed {
            return Err(format!(
                "shard {id} as recovered ({}) differs from a replay of the whole log: {} orders vs {}, clock {} vs {}",
                if node.from_checkpoint { "from a checkpoint" } else { "from the log" },
                recovered.order_count(),
                replayed.order_count(),
                recovered.clock_ms(),
                replayed.clock_ms()
            ));
        }
    }
    Ok(())
}

/// The server's state held to the ledger and to the engine's invariants.
///
/// # Errors
/// The first broken promise, in words.
pub fn state_holds(node: &Node, ledger: &Ledger, now_ms: u64) -> Result<(), String> {
    let cores = node.cores.len();
    let shard = |id: u32| node.cores.get(id as usize % cores).and_then(|c| c.shard(id));
    let shards = node.shape().shards;
    let mut held: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut limits: BTreeMap<u64, u32> = BTreeMap::new();
    for id in 0..shards {
        let s = shard(id).ok_or(format!("shard {id} is missing"))?;
        s.check_invariants().map_err(|v| format!("shard {id}: {v}"))?;
        for p in s.products_sorted() {
            limits.insert(p.product, p.per_user_limit);
        }
        let all = s.all_orders().map_err(|e| format!("shard {id}: {e}"))?;
        for order in all {
            if order.state.holds_units() {
                *held.entry((order.user, order.product)).or_default() += u64::from(order.qty);
            }
        }
    }
    for ((user, product), units) in &held {
        let limit = limits.get(product).copied().unwrap_or(0);
        if limit != 0 && *units > u64::from(limit) {
            return Err(format!("user {user} holds {units} units of product {product}, whose limit is {limit}"));
        }
    }
    for (&id, acked) in &ledger.orders {
        let s = shard(shard_of_order(id)).ok_or(format!("acknowledged order {id} names a shard that does not exist"))?;
        let Some(order) = s.order(id) else {
            return Err(format!("acknowledged order {id} ({:?}) is gone", acked.placed));
        };
        let p = acked.placed;
        if (order.user, order.product, order.qty, order.unit_price_cents) != (p.user, p.product, p.qty, p.unit_price_cents) {
            return Err(format!("order {id} is {order:?}, but was acknowledged as {p:?}"));
        }
        if matches!(acked.state, OrderState::Paid | OrderState::Cancelled) && order.state != acked.state {
            return Err(format!("order {id} is {:?}, but {:?} was acknowledged", order.state, acked.state));
        }
    }
    for (&(hi, lo), &id) in &ledger.keys {
        let key = orderd_protocol::IdempotencyKey { hi, lo };
        let Some(acked) = ledger.orders.get(&id) else { continue };
        let s = shard(shard_of_order(id)).ok_or(format!("order {id} names a shard that does not exist"))?;
        // A key past its window may have left the cold key index with its
        // bucket (the server refuses it as expired before any lookup).
        let expired = key.time_ms().is_none_or(|t| t.saturating_add(s.config().dedup_window_ms) < now_ms);
        match s.order_by_key(&key) {
            Some(order) if order.id == id => {}
            None if expired => {}
            other => return Err(format!("key {key:?} of acknowledged order {id} ({:?}) leads to {other:?}", acked.placed)),
        }
    }
    Ok(())
}
