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
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use orderd_protocol::limits::ORDER_ID_SEQUENCE_BITS;
use orderd_protocol::shard::{order_id, sequence_of_order, shard_of_order};
use orderd_protocol::{IdempotencyKey, OrderState};

use crate::engine::archive::{ArchiveError, OrderArchive};
use crate::engine::cold::{ArchivedTotals, ColdOrders};
pub use crate::engine::record::OrderRecord;
use crate::engine::{index_part, per_part_reserve, FixedHasher, INDEX_PARTS};

/// The most ring slots one [`OrderBook::take_eviction`] looks at (the
/// core's time for it stays a few ms; the next round goes on from there).
const MAX_EVICTION_SCAN: usize = 1 << 20;

/// A payment deadline in the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    expires_ms: u64,
    slot: u32,
}

/// A key lookup's outcome.
#[derive(Debug)]
pub enum KeyFound {
    /// The order the key placed, in its slot.
    Order(u32, OrderRecord),
    /// No order holds the key.
    Absent,
    /// The key may have placed an order that left memory and whose key was
    /// forgotten early (the cold key bound): refuse it as expired.
    Forgotten,
    /// The archive could not be read: neither a new order nor an answer.
    Unreadable(ArchiveError),
}

/// Orders leaving memory: decided on the core ([`OrderBook::take_eviction`]),
/// written to the archive and synced off it, then done on the core
/// ([`OrderBook::evict`]).
#[derive(Debug, Default)]
pub struct Eviction {
    /// The new `base`: slots below it leave the ring.
    pub cut: u32,
    /// The final orders to archive, by slot (ring slots below `cut` and
    /// pinned orders that became final).
    pub archived: Vec<(u32, OrderRecord)>,
    /// The time it was decided at: keys made before `now_ms - window` are
    /// past the dedup window and are not kept.
    pub now_ms: u64,
    /// How many of `archived` [`OrderBook::evict`] has done.
    done: usize,
}

impl Eviction {
    /// Whether nothing leaves memory.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.archived.is_empty()
    }

    /// Whether every order of it has left memory.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done >= self.archived.len()
    }
}

/// The orders of one shard and their indexes.
#[derive(Debug, Clone)]
pub struct OrderBook {
    shard: u16,
    /// The slot of `records[0]`.
    base: u32,
    /// The orders of slots `base..`, in memory.
    records: VecDeque<OrderRecord>,
    /// Orders below `base` still in memory (open when their slot left the
    /// ring).
    pinned: hashbrown::HashMap<u32, OrderRecord, FixedHasher>,
    /// The idempotency index of the orders in memory, in [`INDEX_PARTS`]
    /// parts by hash.
    by_key: Box<[HashTable<Indexed>]>,
    /// Keys in all parts.
    keys: usize,
    deadlines: BinaryHeap<Reverse<Deadline>>,
    hasher: FixedHasher,
    /// The archived orders: file, keys, totals.
    cold: ColdOrders,
    /// Final orders in memory: none, and there is nothing to archive (the
    /// archiver does not even look).
    finals: usize,
}

impl OrderBook {
    /// An empty book for `shard` whose cold keys cover a dedup window of
    /// `window_ms`, at most `max_cold_keys` of them.
    #[must_use]
    pub fn new(shard: u16, hasher: FixedHasher, window_ms: u64, max_cold_keys: usize) -> Self {
        let by_key = (0..INDEX_PARTS).map(|_| HashTable::new()).collect();
        OrderBook {
            shard,
            base: 0,
            records: VecDeque::new(),
            pinned: hashbrown::HashMap::with_hasher(hasher),
            by_key,
            keys: 0,
            deadlines: BinaryHeap::new(),
            hasher,
            cold: ColdOrders::new(window_ms, max_cold_keys),
            finals: 0,
        }
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

    /// Bytes allocated for the order records in memory (by capacity:
    /// reserved room counts, as it is memory the shard holds).
    #[must_use]
    pub fn records_bytes(&self) -> u64 {
        (self.records.capacity() * std::mem::size_of::<OrderRecord>() + self.pinned.allocation_size()) as u64
    }

    /// Bytes allocated for the idempotency index of the orders in memory.
    #[must_use]
    pub fn key_index_bytes(&self) -> u64 {
        self.by_key.iter().map(HashTable::allocation_size).sum::<usize>() as u64
    }

    /// Bytes allocated for the cold key index.
    #[must_use]
    pub fn cold_keys_bytes(&self) -> u64 {
        self.cold.keys.allocated_bytes()
    }

    /// Bytes allocated for the payment deadlines' heap.
    #[must_use]
    pub fn deadlines_bytes(&self) -> u64 {
        (self.deadlines.capacity() * std::mem::size_of::<Reverse<Deadline>>()) as u64
    }

    /// The first slot of the ring and its records.
    #[must_use]
    pub fn ring(&self) -> (u32, &VecDeque<OrderRecord>) {
        (self.base, &self.records)
    }

    /// The orders pinned below the ring, by slot, in no particular order.
    pub fn pinned(&self) -> impl Iterator<Item = (u32, &OrderRecord)> + '_ {
        self.pinned.iter().map(|(&slot, record)| (slot, record))
    }

    /// Orders ever placed (the next slot).
    #[must_use]
    pub fn len(&self) -> usize {
        self.base as usize + self.records.len()
    }

    /// Whether no order was ever placed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Orders in memory (the ring and the pinned ones): what the
    /// `max_orders` bound counts.
    #[must_use]
    pub fn in_memory(&self) -> usize {
        self.records.len() + self.pinned.len()
    }

    /// Idempotency keys in the in-memory index (one per order in memory).
    #[must_use]
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Final orders in memory.
    #[must_use]
    pub fn finals(&self) -> usize {
        self.finals
    }

    /// Keys in the cold key index.
    #[must_use]
    pub fn cold_keys(&self) -> usize {
        self.cold.keys.len()
    }

    /// Keys of archived orders made before this time may have left the
    /// cold key index (past the window, or the bound).
    #[must_use]
    pub fn cold_keys_complete_from_ms(&self) -> u64 {
        self.cold.keys.complete_from_ms()
    }

    /// The archived orders' totals.
    #[must_use]
    pub fn archived(&self) -> &ArchivedTotals {
        &self.cold.totals
    }

    /// The lowest slot a cold key may be in (recovery's start).
    #[must_use]
    pub fn cold_keys_from(&self) -> u32 {
        self.cold.keys.min_slot().unwrap_or(self.cold.keys_from.min(self.base))
    }

    /// The archive file, once attached.
    #[must_use]
    pub fn archive(&self) -> Option<&Arc<OrderArchive>> {
        self.cold.archive.as_ref()
    }

    /// The id the next order will get, `None` when the sequence is exhausted.
    #[must_use]
    pub fn next_id(&self) -> Option<u64> {
        let slot = u32::try_from(self.len()).ok()?;
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
        if slot >= self.len() as u64 {
            return None;
        }
        u32::try_from(slot).ok()
    }

    /// The record of `slot` if it is in memory.
    #[must_use]
    pub fn record(&self, slot: u32) -> Option<&OrderRecord> {
        match slot.checked_sub(self.base) {
            Some(i) => self.records.get(i as usize),
            None => self.pinned.get(&slot),
        }
    }

    fn record_mut(&mut self, slot: u32) -> Option<&mut OrderRecord> {
        match slot.checked_sub(self.base) {
            Some(i) => self.records.get_mut(i as usize),
            None => self.pinned.get_mut(&slot),
        }
    }

    /// Order `id` if it is in memory (every open order is).
    #[must_use]
    pub fn get(&self, id: u64) -> Option<&OrderRecord> {
        self.record(self.slot_of(id)?)
    }

    /// Order `id`, from memory or the archive.
    ///
    /// # Errors
    /// The archive could not be read.
    pub fn find(&self, id: u64) -> Result<Option<OrderRecord>, ArchiveError> {
        let Some(slot) = self.slot_of(id) else { return Ok(None) };
        if let Some(record) = self.record(slot) {
            return Ok(Some(*record));
        }
        match &self.cold.archive {
            Some(archive) => archive.read(slot),
            None => Ok(None),
        }
    }

    /// Order `id`, to change (only orders in memory change).
    pub fn get_mut(&mut self, id: u64) -> Option<&mut OrderRecord> {
        let slot = self.slot_of(id)?;
        self.record_mut(slot)
    }

    /// The slot of the order in memory placed with `key`.
    #[must_use]
    pub fn find_key(&self, key: &IdempotencyKey) -> Option<u32> {
        self.find_hashed(key, hash_key(&self.hasher, key))
    }

    /// [`OrderBook::find_key`] with the key's hash already computed.
    fn find_hashed(&self, key: &IdempotencyKey, hash: u64) -> Option<u32> {
        let low = hash as u32;
        let (records, pinned, base) = (&self.records, &self.pinned, self.base);
        self.by_key[index_part(hash)]
            .find(table_hash(low), |e| e.hash == low && slot_record(records, pinned, base, e.slot).key == *key)
            .map(|e| e.slot)
    }

    /// The order placed with `key`, in memory or archived: memory first,
    /// then the cold keys of the key's time (each candidate confirmed by
    /// reading its archived record).
    pub fn lookup_key(&self, key: &IdempotencyKey) -> KeyFound {
        let hash = hash_key(&self.hasher, key);
        if let Some(slot) = self.find_hashed(key, hash) {
            return match self.record(slot) {
                Some(record) => KeyFound::Order(slot, *record),
                None => KeyFound::Absent,
            };
        }
        if self.base == 0 && self.pinned.is_empty() {
            return KeyFound::Absent;
        }
        let key_ms = key_ms(key);
        if key_ms < self.cold.keys.complete_from_ms() {
            return KeyFound::Forgotten;
        }
        let Some(archive) = &self.cold.archive else { return KeyFound::Absent };
        for slot in self.cold.keys.candidates(key_ms, hash) {
            match archive.read(slot) {
                Ok(Some(record)) if record.key == *key => return KeyFound::Order(slot, record),
                Ok(_) => {}
                Err(e) => return KeyFound::Unreadable(e),
            }
        }
        KeyFound::Absent
    }

    /// Touches what a lookup of `key` reads first (the in-memory index
    /// bucket and the cold bucket), changing nothing: a prefetch.
    pub fn warm_key(&self, key: &IdempotencyKey) {
        let hash = hash_key(&self.hasher, key);
        std::hint::black_box(self.find_hashed(key, hash));
        if !self.cold.keys.is_empty() {
            self.cold.keys.touch(key_ms(key), hash);
        }
    }

    /// Every order in memory with its id (pinned ones first, then the ring
    /// by id).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &OrderRecord)> + '_ {
        // Slots fit a u32: `next_id` refuses to issue more.
        let ring = self.records.iter().enumerate().map(|(i, record)| (self.id_of(self.base + i as u32), record));
        self.pinned.iter().map(|(&slot, record)| (self.id_of(slot), record)).chain(ring)
    }

    /// Calls `f` with every order, archived ones included, archived first
    /// (an archive scan: admin operations and checks only).
    ///
    /// # Errors
    /// The archive could not be read.
    pub fn for_each_order(&self, mut f: impl FnMut(u32, &OrderRecord)) -> Result<(), ArchiveError> {
        if let Some(archive) = &self.cold.archive {
            archive.scan(0, self.base, |slot| self.pinned.contains_key(&slot), |slot, record| f(slot, &record))?;
        }
        for (&slot, record) in &self.pinned {
            f(slot, record);
        }
        for (i, record) in self.records.iter().enumerate() {
            f(self.base + i as u32, record);
        }
        Ok(())
    }

    /// Appends a new order and indexes it, returning its slot; or, if its
    /// key is already bound in memory, changes nothing and returns the slot
    /// of the order that holds the key. One probe of the index does both
    /// (the caller checked that `next_id` is `Some`, and the cold keys).
    pub fn try_insert(&mut self, record: OrderRecord) -> Result<u32, u32> {
        debug_assert!(self.next_id().is_some());
        let slot = self.len() as u32;
        let (records, pinned, base) = (&self.records, &self.pinned, self.base);
        let hash = hash_key(&self.hasher, &record.key);
        let low = hash as u32;
        let eq = |e: &Indexed| e.hash == low && slot_record(records, pinned, base, e.slot).key == record.key;
        match self.by_key[index_part(hash)].entry(table_hash(low), eq, Indexed::table_hash) {
            Entry::Occupied(bound) => return Err(bound.get().slot),
            Entry::Vacant(vacant) => {
                vacant.insert(Indexed { slot, hash: low });
            }
        }
        self.keys += 1;
        self.records.push_back(record);
        if record.state != OrderState::Placed {
            self.finals += 1;
        }
        // A new order is placed; an order restored from an image may not be.
        self.push_deadline(slot, &record);
        Ok(slot)
    }

    fn push_deadline(&mut self, slot: u32, record: &OrderRecord) {
        if record.expires_ms != u64::MAX && record.state == OrderState::Placed {
            self.deadlines.push(Reverse(Deadline { expires_ms: record.expires_ms, slot }));
        }
    }

    /// Restores an image's memory: the ring starts at `base`, and `pinned`
    /// (open orders below it) and the ring's records are indexed. Called on
    /// an empty book.
    ///
    /// # Errors
    /// The slot of an order whose key another order in memory holds (with
    /// that order's slot), or of a pinned order not below `base`.
    pub fn restore(&mut self, base: u32, pinned: Vec<(u32, OrderRecord)>, ring: Vec<OrderRecord>) -> Result<(), (u32, u32)> {
        debug_assert!(self.is_empty());
        self.base = base;
        self.reserve(ring.len() + pinned.len());
        for (slot, record) in pinned {
            if slot >= base || self.pinned.insert(slot, record).is_some() {
                return Err((slot, slot));
            }
            let hash = hash_key(&self.hasher, &record.key);
            let low = hash as u32;
            let (records, pinned, base) = (&self.records, &self.pinned, self.base);
            let eq = |e: &Indexed| e.hash == low && slot_record(records, pinned, base, e.slot).key == record.key;
            match self.by_key[index_part(hash)].entry(table_hash(low), eq, Indexed::table_hash) {
                Entry::Occupied(bound) => return Err((bound.get().slot, slot)),
                Entry::Vacant(vacant) => {
                    vacant.insert(Indexed { slot, hash: low });
                }
            }
            self.keys += 1;
            self.push_deadline(slot, &record);
            if record.state != OrderState::Placed {
                self.finals += 1;
            }
        }
        for record in ring {
            if self.next_id().is_none() {
                return Err((u32::MAX, u32::MAX));
            }
            if let Err(first) = self.try_insert(record) {
                return Err((first, self.len() as u32));
            }
        }
        Ok(())
    }

    /// Restores what an image says of the archive: its totals, the lowest
    /// slot a cold key of the window may be in, and the time before which
    /// keys may have left the cold index (refused as expired from now on).
    pub fn restore_cold(&mut self, totals: ArchivedTotals, keys_from: u32, keys_complete_from_ms: u64) {
        self.cold.totals = totals;
        self.cold.keys_from = keys_from;
        self.cold.keys.forget_before(keys_complete_from_ms);
    }

    /// Attaches the shard's archive and rebuilds the cold key index from it:
    /// the keys of archived orders made at or after `oldest_key_ms` (the
    /// dedup window), read from slot `keys_from` up to `base`.
    ///
    /// # Errors
    /// The archive could not be read or is damaged.
    pub fn attach_archive(&mut self, archive: Arc<OrderArchive>, oldest_key_ms: u64) -> Result<(), ArchiveError> {
        let (from, to) = (self.cold.keys_from, self.base);
        let mut found = Vec::new();
        archive.scan(
            from,
            to,
            |slot| self.pinned.contains_key(&slot),
            |slot, record| {
                if key_ms(&record.key) >= oldest_key_ms {
                    found.push((slot, record.key));
                }
            },
        )?;
        for (slot, key) in found {
            self.cold.keys.insert(key_ms(&key), hash_key(&self.hasher, &key), slot);
        }
        self.cold.archive = Some(archive);
        Ok(())
    }

    /// Decides which orders leave memory: the final orders of the ring
    /// created before `cutoff_ms` (the ring is in creation order, so they
    /// are a prefix, up to the new `base`, which stops early at an open
    /// order created at or after `pin_cutoff_ms`), and pinned orders that
    /// have become final. Open orders of that prefix will be pinned. Changes
    /// nothing: the orders leave only by [`OrderBook::evict`], once the
    /// archive holding them is durable. `None` without an archive.
    #[must_use]
    pub fn take_eviction(&self, cutoff_ms: u64, pin_cutoff_ms: u64, now_ms: u64) -> Option<Eviction> {
        self.cold.archive.as_ref()?;
        if self.finals == 0 {
            return None;
        }
        let mut archived: Vec<(u32, OrderRecord)> =
            self.pinned.iter().filter(|(_, r)| r.state != OrderState::Placed).map(|(&slot, r)| (slot, *r)).collect();
        archived.sort_unstable_by_key(|&(slot, _)| slot);
        let mut cut = self.base;
        for record in self.records.iter().take(MAX_EVICTION_SCAN) {
            // An open order young enough to be paid soon stops the cut:
            // pinned, every later access to it would be a hash lookup.
            if record.created_ms >= cutoff_ms || (record.state == OrderState::Placed && record.created_ms >= pin_cutoff_ms) {
                break;
            }
            if record.state != OrderState::Placed {
                archived.push((cut, *record));
            }
            cut += 1;
        }
        Some(Eviction { cut, archived, now_ms, done: 0 })
    }

    /// Moves up to `max` more orders of `eviction` out of memory (their
    /// keys to the cold index when made at or after `oldest_key_ms`), and
    /// once all are out, moves the ring's start to the eviction's cut
    /// (pinning what is left below it). The caller made the archive holding
    /// them durable. Returns whether the eviction is done.
    pub fn evict(&mut self, eviction: &mut Eviction, max: usize, oldest_key_ms: u64) -> bool {
        let end = eviction.archived.len().min(eviction.done.saturating_add(max));
        while eviction.done < end {
            let (slot, archived) = eviction.archived[eviction.done];
            eviction.done += 1;
            while self.base < slot && self.base < eviction.cut {
                self.pin_front();
            }
            let record = if slot < self.base {
                self.pinned.remove(&slot)
            } else {
                self.base += 1;
                self.records.pop_front()
            };
            let Some(record) = record else { continue };
            debug_assert_eq!(record, archived, "a final order does not change");
            self.finals -= 1;
            self.unindex(slot, &record);
            add_to_totals(&mut self.cold.totals, &record);
            if key_ms(&record.key) >= oldest_key_ms {
                self.cold.keys.insert(key_ms(&record.key), hash_key(&self.hasher, &record.key), slot);
            }
        }
        if !eviction.is_done() {
            return false;
        }
        while self.base < eviction.cut {
            self.pin_front();
        }
        self.cold.keys.drop_before(oldest_key_ms);
        self.cold.keys_from = self.cold.keys.min_slot().unwrap_or(self.base);
        true
    }

    /// Moves the ring's first order to the pinned ones.
    fn pin_front(&mut self) {
        if let Some(record) = self.records.pop_front() {
            self.pinned.insert(self.base, record);
        }
        self.base += 1;
    }

    fn unindex(&mut self, slot: u32, record: &OrderRecord) {
        let hash = hash_key(&self.hasher, &record.key);
        if let Ok(found) = self.by_key[index_part(hash)].find_entry(table_hash(hash as u32), |e| e.slot == slot) {
            found.remove();
            self.keys -= 1;
        }
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

    /// An order in memory reached a final state (paid, cancelled, expired).
    pub fn closed(&mut self) {
        self.finals += 1;
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
        self.record(deadline.slot).is_some_and(|r| r.state == OrderState::Placed && r.expires_ms == deadline.expires_ms)
    }

    /// The live deadline entries, in no particular order (for the invariant
    /// check).
    pub fn live_deadlines(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.deadlines.iter().map(|Reverse(d)| *d).filter(|d| self.is_live(d)).map(|d| (d.expires_ms, d.slot))
    }
}

/// Adds an archived order to the totals.
fn add_to_totals(totals: &mut ArchivedTotals, record: &OrderRecord) {
    totals.orders += 1;
    totals.gmv_cents = totals.gmv_cents.saturating_add(u64::from(record.qty) * record.unit_price_cents);
    if record.state == OrderState::Paid {
        totals.paid_orders += 1;
        *totals.paid_units.entry(record.product).or_default() += u64::from(record.qty);
    }
}

/// Canonical equality: the same orders (read from the archive where one
/// side has archived what the other holds in memory) and, for the orders
/// in memory, the same key bindings. Reads the archive: for tests and the
/// simulator's checks.
impl PartialEq for OrderBook {
    fn eq(&self, other: &Self) -> bool {
        if self.shard != other.shard || self.len() != other.len() {
            return false;
        }
        let all = |book: &OrderBook| {
            let mut all = Vec::with_capacity(book.len());
            book.for_each_order(|slot, record| all.push((slot, *record))).map(|()| {
                all.sort_unstable_by_key(|&(slot, _)| slot);
                all
            })
        };
        let keys_hold = |book: &OrderBook| book.iter().all(|(id, record)| book.find_key(&record.key).map(|s| book.id_of(s)) == Some(id));
        matches!((all(self), all(other)), (Ok(a), Ok(b)) if a == b) && keys_hold(self) && keys_hold(other)
    }
}

impl Eq for OrderBook {}

/// The time a key was made at; 0 for a key that is not time-ordered
/// (placed before keys carried their time: outside any window).
fn key_ms(key: &IdempotencyKey) -> u64 {
    key.time_ms().unwrap_or(0)
}

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
/// in memory (the index only ever gets slots of records in memory, and
/// loses them as they leave), so the fallback is never taken; it only keeps
/// a broken index from panicking.
fn slot_record<'a>(
    records: &'a VecDeque<OrderRecord>,
    pinned: &'a hashbrown::HashMap<u32, OrderRecord, FixedHasher>,
    base: u32,
    slot: u32,
) -> &'a OrderRecord {
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
    let found = match slot.checked_sub(base) {
        Some(i) => records.get(i as usize),
        None => pinned.get(&slot),
    };
    debug_assert!(found.is_some());
    found.unwrap_or(&MISSING)
}
