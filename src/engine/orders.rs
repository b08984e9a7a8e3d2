//! The orders of one shard: the order records, the idempotency index and the
//! payment deadlines.
//!
//! Orders live in a `Vec` indexed by their *slot*, `sequence - 1`: ids are
//! issued densely (`order_id(shard, 1)`, `order_id(shard, 2)`, ...), so the
//! id itself locates the record and needs no index. The idempotency index is
//! a `hashbrown::HashTable` of `Indexed` entries, 8 bytes per bucket: the
//! slot and the low 32 bits of the key's hash (the key itself lives in the
//! record). The stored hash bits are the table's hash (`table_hash`), so
//! growing a table moves entries without reading their records, and a
//! probe reads a record only when those 32 bits match: with slots alone,
//! every entry moved by a rehash was a cache miss into the records, and
//! growth was 5-9% of a core at 500k orders/s (benches/README.md, Performance). It is
//! split into [`INDEX_PARTS`] tables by other hash bits, so that growing it
//! rehashes one part, not the whole index: one table of 458,752 keys
//! stalled its core for 15.8 ms when it doubled. Payment deadlines are a min-heap of
//! `(expires_ms, slot)` with lazy deletion: paying or cancelling an order
//! leaves its entry in place, and entries whose order is no longer placed are
//! dropped when they reach the top. The top is always live (or the heap
//! empty), so [`OrderBook::next_deadline`] is exact.
//!
//! Every order stays in memory (closed ones too) until the tiering issue
//! ages closed orders out to the log.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use orderd_protocol::limits::ORDER_ID_SEQUENCE_BITS;
use orderd_protocol::shard::{order_id, sequence_of_order, shard_of_order};
use orderd_protocol::{IdempotencyKey, Order, OrderState, PlaceOrder};

use crate::engine::event::OrderFacts;
use crate::engine::{index_part, per_part_reserve, FixedHasher, INDEX_PARTS};

/// One order as the shard stores it: the protocol [`Order`] without its id
/// (the slot gives it). 64 bytes, one cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRecord {
    /// The key that placed it.
    pub key: IdempotencyKey,
    /// The buyer.
    pub user: u64,
    /// The product.
    pub product: u64,
    /// The unit price charged.
    pub unit_price_cents: u64,
    /// Engine time it was placed at.
    pub created_ms: u64,
    /// Engine time it expires at if unpaid; `u64::MAX` for never.
    pub expires_ms: u64,
    /// Units.
    pub qty: u32,
    /// Its state.
    pub state: OrderState,
}

const _: () = assert!(std::mem::size_of::<OrderRecord>() == 64);
// A slot (`u32`) plus one always fits the sequence bits of an order id.
const _: () = assert!(ORDER_ID_SEQUENCE_BITS > u32::BITS);

impl OrderRecord {
    /// What a transition event repeats about this order.
    #[must_use]
    pub const fn facts(&self) -> OrderFacts {
        OrderFacts { user: self.user, product: self.product, unit_price_cents: self.unit_price_cents, qty: self.qty }
    }

    /// The protocol view of this record.
    #[must_use]
    pub const fn to_order(&self, id: u64) -> Order {
        Order {
            id,
            key: self.key,
            user: self.user,
            product: self.product,
            unit_price_cents: self.unit_price_cents,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            qty: self.qty,
            state: self.state,
        }
    }

    /// Whether `request` is the request that placed this order (a retry).
    #[must_use]
    pub fn placed_by(&self, request: &PlaceOrder) -> bool {
        self.key == request.key
            && self.user == request.user
            && self.product == request.product
            && self.unit_price_cents == request.unit_price_cents
            && self.qty == request.qty
    }

    /// Whether the order's payment window has passed at `now_ms`. An order
    /// whose `expires_ms` is `u64::MAX` never expires.
    #[must_use]
    pub const fn is_due(&self, now_ms: u64) -> bool {
        self.expires_ms != u64::MAX && now_ms >= self.expires_ms
    }
}

/// A payment deadline in the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    expires_ms: u64,
    slot: u32,
}

/// The orders of one shard and their indexes.
#[derive(Debug, Clone)]
pub struct OrderBook {
    shard: u16,
    records: Vec<OrderRecord>,
    /// The idempotency index, in [`INDEX_PARTS`] parts by hash.
    by_key: Box<[HashTable<Indexed>]>,
    /// Keys in all parts.
    keys: usize,
    deadlines: BinaryHeap<Reverse<Deadline>>,
    hasher: FixedHasher,
}

impl OrderBook {
    /// An empty book for `shard`.
    #[must_use]
    pub fn new(shard: u16, hasher: FixedHasher) -> Self {
        let by_key = (0..INDEX_PARTS).map(|_| HashTable::new()).collect();
        OrderBook { shard, records: Vec::new(), by_key, keys: 0, deadlines: BinaryHeap::new(), hasher }
    }

    /// Reserves room for `additional` more orders in every structure, so that
    /// placing them does not allocate.
    pub fn reserve(&mut self, additional: usize) {
        self.records.reserve(additional);
        let per_part = per_part_reserve(additional);
        for part in &mut self.by_key[..] {
            part.reserve(per_part, Indexed::table_hash);
        }
        self.deadlines.reserve(additional);
    }

    /// Bytes allocated for the order records (by capacity: reserved room
    /// counts, as it is memory the shard holds).
    #[must_use]
    pub fn records_bytes(&self) -> u64 {
        (self.records.capacity() * std::mem::size_of::<OrderRecord>()) as u64
    }

    /// Bytes allocated for the idempotency index (every part's table).
    #[must_use]
    pub fn key_index_bytes(&self) -> u64 {
        self.by_key.iter().map(HashTable::allocation_size).sum::<usize>() as u64
    }

    /// Bytes allocated for the payment deadlines' heap.
    #[must_use]
    pub fn deadlines_bytes(&self) -> u64 {
        (self.deadlines.capacity() * std::mem::size_of::<Reverse<Deadline>>()) as u64
    }

    /// Every order record, by slot.
    #[must_use]
    pub fn records(&self) -> &[OrderRecord] {
        &self.records
    }

    /// Orders held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no order was ever placed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Idempotency keys held.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// The id the next order will get, `None` when the sequence is exhausted.
    #[must_use]
    pub fn next_id(&self) -> Option<u64> {
        let slot = u32::try_from(self.records.len()).ok()?;
        order_id(u32::from(self.shard), u64::from(slot) + 1)
    }

    /// The id of the order in `slot`.
    #[must_use]
    pub fn id_of(&self, slot: u32) -> u64 {
        (u64::from(self.shard) << ORDER_ID_SEQUENCE_BITS) | (u64::from(slot) + 1)
    }

    /// The slot of order `id`, if this shard issued it.
    #[must_use]
    pub fn slot_of(&self, id: u64) -> Option<u32> {
        if shard_of_order(id) != u32::from(self.shard) {
            return None;
        }
        let slot = sequence_of_order(id).checked_sub(1)?;
        if slot >= self.records.len() as u64 {
            return None;
        }
        u32::try_from(slot).ok()
    }

    /// Order `id`.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<&OrderRecord> {
        self.records.get(self.slot_of(id)? as usize)
    }

    /// Order `id`, to change.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut OrderRecord> {
        let slot = self.slot_of(id)?;
        self.records.get_mut(slot as usize)
    }

    /// The slot of the order placed with `key`.
    #[must_use]
    pub fn find_key(&self, key: &IdempotencyKey) -> Option<u32> {
        let records = &self.records;
        let hash = hash_key(&self.hasher, key);
        let low = hash as u32;
        self.by_key[index_part(hash)].find(table_hash(low), |e| e.hash == low && slot_record(records, e.slot).key == *key).map(|e| e.slot)
    }

    /// The record in `slot`.
    #[must_use]
    pub fn record(&self, slot: u32) -> Option<&OrderRecord> {
        self.records.get(slot as usize)
    }

    /// Every order with its id, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &OrderRecord)> + '_ {
        // Slots fit a u32: `next_id` refuses to issue more.
        self.records.iter().enumerate().map(|(slot, record)| (self.id_of(slot as u32), record))
    }

    /// Appends a new order and indexes it, returning its slot; or, if its
    /// key is already bound, changes nothing and returns the slot of the
    /// order that holds the key. One probe of the index does both (the
    /// caller checked that `next_id` is `Some`).
    pub fn try_insert(&mut self, record: OrderRecord) -> Result<u32, u32> {
        debug_assert!(self.next_id().is_some());
        let slot = self.records.len() as u32;
        let records = &self.records;
        let hash = hash_key(&self.hasher, &record.key);
        let low = hash as u32;
        let eq = |e: &Indexed| e.hash == low && slot_record(records, e.slot).key == record.key;
        match self.by_key[index_part(hash)].entry(table_hash(low), eq, Indexed::table_hash) {
            Entry::Occupied(bound) => return Err(bound.get().slot),
            Entry::Vacant(vacant) => {
                vacant.insert(Indexed { slot, hash: low });
            }
        }
        self.keys += 1;
        self.records.push(record);
        // A new order is placed; an order restored from an image may not be.
        if record.expires_ms != u64::MAX && record.state == OrderState::Placed {
            self.deadlines.push(Reverse(Deadline { expires_ms: record.expires_ms, slot }));
        }
        Ok(slot)
    }

    /// The earliest deadline of a placed order.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        let Reverse(top) = self.deadlines.peek()?;
        debug_assert!(self.is_live(top), "the top of the deadline heap is always live");
        Some(top.expires_ms)
    }

    /// Removes and returns the id of the placed order with the earliest
    /// deadline, if that deadline is at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<u64> {
        self.prune();
        let Reverse(top) = *self.deadlines.peek()?;
        if top.expires_ms > now_ms {
            return None;
        }
        self.deadlines.pop();
        Some(self.id_of(top.slot))
    }

    /// Drops deadline entries from the top whose order is no longer placed.
    /// Called after every change of an order's state.
    pub fn prune(&mut self) {
        while let Some(Reverse(top)) = self.deadlines.peek() {
            if self.is_live(top) {
                break;
            }
            self.deadlines.pop();
        }
    }

    fn is_live(&self, deadline: &Deadline) -> bool {
        self.records.get(deadline.slot as usize).is_some_and(|r| r.state == OrderState::Placed && r.expires_ms == deadline.expires_ms)
    }

    /// The live deadline entries, in no particular order (for the invariant
    /// check).
    pub fn live_deadlines(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.deadlines.iter().map(|Reverse(d)| *d).filter(|d| self.is_live(d)).map(|d| (d.expires_ms, d.slot))
    }
}

/// Canonical equality: the same orders with the same key bindings. The
/// deadline heap is not compared: its stale entries depend on history, and
/// its live entries are determined by the orders.
impl PartialEq for OrderBook {
    fn eq(&self, other: &Self) -> bool {
        self.shard == other.shard
            && self.records == other.records
            && self.keys == other.keys
            && self.records.iter().enumerate().all(|(slot, record)| {
                let slot = Some(slot as u32);
                self.find_key(&record.key) == slot && other.find_key(&record.key) == slot
            })
    }
}

impl Eq for OrderBook {}

fn hash_key(hasher: &FixedHasher, key: &IdempotencyKey) -> u64 {
    hasher.hash_one(key)
}

/// An entry of the idempotency index.
#[derive(Debug, Clone, Copy)]
struct Indexed {
    /// The order's slot.
    slot: u32,
    /// The low 32 bits of its key's hash.
    hash: u32,
}

impl Indexed {
    fn table_hash(&self) -> u64 {
        table_hash(self.hash)
    }
}

/// The hash a part's table files a key under, from the low 32 bits of the
/// key's hash alone, so that an entry carries it: the low bits are the
/// bucket index (fewer than 21 for any part a shard can fill) and the copy
/// in the top half gives hashbrown's control byte bits 25-31, which no
/// bucket index uses. The part itself is chosen by bits 32-39 of the full
/// hash ([`index_part`]), independent of both.
const fn table_hash(low: u32) -> u64 {
    (low as u64) | ((low as u64) << 32)
}

/// The record of an indexed slot. Every slot in the index names a record
/// (the index only ever gets slots of pushed records), so the fallback is
/// never taken; it only keeps a broken index from panicking.
fn slot_record(records: &[OrderRecord], slot: u32) -> &OrderRecord {
    const MISSING: OrderRecord = OrderRecord {
        key: IdempotencyKey { hi: 0, lo: 0 },
        user: 0,
        product: 0,
        unit_price_cents: 0,
        created_ms: 0,
        expires_ms: 0,
        qty: 0,
        state: OrderState::Cancelled,
    };
    debug_assert!((slot as usize) < records.len());
    records.get(slot as usize).unwrap_or(&MISSING)
}
