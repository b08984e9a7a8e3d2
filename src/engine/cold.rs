//! What a shard keeps in memory about its cold orders (those moved to the
//! [`archive`](crate::engine::archive)): the keys that may still be retried,
//! and the totals the stock and counter invariants need.
//!
//! **Cold keys.** A retry of a key must find its order however long ago it
//! was placed, within the dedup window (`ShardConfig::dedup_window_ms`;
//! older keys are refused with `key_expired` before any lookup). Keys are
//! time-ordered, so the index is split into buckets by the key's time
//! (`window / 16` wide): a lookup probes the one bucket its key's time
//! names, and a bucket whose keys have all left the window is dropped
//! whole, without touching its entries. An entry is 8 bytes (the slot and
//! 32 bits of the key's hash, as in the in-memory index), so a cold key
//! costs about 10-21 bytes of memory (hashbrown buckets, load at most 7/8,
//! a power of two); a match is confirmed by reading the archived record.
//! The entries are bounded (`max_keys`): past the bound the oldest bucket
//! is forgotten early and keys older than its end are refused with
//! `key_expired` (the window shrinks; a retry never becomes a second
//! order). Not part of a checkpoint: recovery rebuilds it by reading the
//! archive from the lowest slot a key in the window can be in.
//!
//! **Totals.** Archived orders, archived paid orders, their gross amount
//! and the paid units per product: with the orders in memory they give the
//! shard's counters, so the invariant check holds without reading the
//! archive.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::engine::archive::OrderArchive;

/// The number of time buckets the dedup window is split into.
pub const KEY_BUCKETS_PER_WINDOW: u64 = 16;

/// Counts of the orders in the archive (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivedTotals {
    /// Orders archived.
    pub orders: u64,
    /// Of which paid (they still hold their units: `live_orders`).
    pub paid_orders: u64,
    /// Their gross amount in cents (saturating).
    pub gmv_cents: u64,
    /// Paid units per product.
    pub paid_units: BTreeMap<u64, u64>,
}

/// An entry of the cold key index.
#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: u32,
    hash: u32,
}

/// Parts each bucket's table is split into by hash bits, so that growing it
/// rehashes a part, not the whole bucket (a bucket of 16 M keys doubling at
/// once would stall its core for 100 ms or more).
const PARTS: usize = 64;

#[derive(Debug, Clone)]
struct Bucket {
    parts: Box<[HashTable<Entry>]>,
    /// The lowest slot in the bucket.
    min_slot: u32,
    /// The newest key time in the bucket: a key made later (every new
    /// order's key, made now, while archived keys are older than the hot
    /// window) cannot be in it, and is not even probed for.
    max_key_ms: u64,
}

/// The cold key index (see the module docs).
#[derive(Debug, Clone)]
pub struct ColdKeys {
    width_ms: u64,
    buckets: BTreeMap<u64, Bucket>,
    entries: usize,
    max: usize,
    /// Keys older than this were forgotten early (the bound).
    forgotten_before_ms: u64,
    /// Keys older than this may have been dropped with their bucket (past
    /// the window as of the latest drop).
    dropped_before_ms: u64,
}

impl Bucket {
    fn len(&self) -> usize {
        self.parts.iter().map(HashTable::len).sum()
    }
}

/// The part of a bucket a key's 64-bit hash belongs to: bits the entry's
/// low 32 do not hold.
const fn part(hash: u64) -> usize {
    (hash >> 40) as usize % PARTS
}

const fn table_hash(low: u32) -> u64 {
    (low as u64) | ((low as u64) << 32)
}

impl ColdKeys {
    /// An empty index for a dedup window of `window_ms`, holding at most
    /// `max` keys.
    #[must_use]
    pub fn new(window_ms: u64, max: usize) -> ColdKeys {
        ColdKeys {
            width_ms: (window_ms / KEY_BUCKETS_PER_WINDOW).max(1),
            buckets: BTreeMap::new(),
            entries: 0,
            max,
            forgotten_before_ms: 0,
            dropped_before_ms: 0,
        }
    }

    /// Keys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Keys made before this time were dropped by the bound, not by the
    /// window (see [`ColdKeys::complete_from_ms`]).
    #[must_use]
    pub const fn forgotten_before_ms(&self) -> u64 {
        self.forgotten_before_ms
    }

    /// Keys made before this time may be missing: dropped as past the
    /// window or forgotten by the bound. A lookup of one answers that it
    /// was forgotten (`key_expired`), never that it is unknown: with a
    /// clock that moved back (a restart that lost unsynced records, a
    /// wall clock stepped back) the window alone would let such a key place
    /// a second order.
    #[must_use]
    pub const fn complete_from_ms(&self) -> u64 {
        if self.forgotten_before_ms > self.dropped_before_ms {
            self.forgotten_before_ms
        } else {
            self.dropped_before_ms
        }
    }

    /// Bytes allocated by the buckets' tables.
    #[must_use]
    pub fn allocated_bytes(&self) -> u64 {
        self.buckets.values().flat_map(|b| b.parts.iter()).map(|t| t.allocation_size() as u64).sum()
    }

    /// The lowest slot any held key is in, if any.
    #[must_use]
    pub fn min_slot(&self) -> Option<u32> {
        self.buckets.values().map(|b| b.min_slot).min()
    }

    /// Files the key of `slot` (made at `key_ms`, hashing to `hash`).
    pub fn insert(&mut self, key_ms: u64, hash: u64, slot: u32) {
        let low = hash as u32;
        let bucket = self.buckets.entry(key_ms / self.width_ms).or_insert_with(|| Bucket {
            parts: (0..PARTS).map(|_| HashTable::new()).collect(),
            min_slot: slot,
            max_key_ms: key_ms,
        });
        bucket.min_slot = bucket.min_slot.min(slot);
        bucket.max_key_ms = bucket.max_key_ms.max(key_ms);
        bucket.parts[part(hash)].insert_unique(table_hash(low), Entry { slot, hash: low }, |e| table_hash(e.hash));
        self.entries += 1;
        while self.entries > self.max {
            let Some((first, dropped)) = self.buckets.pop_first() else { break };
            self.entries -= dropped.len();
            self.forgotten_before_ms = self.forgotten_before_ms.max((first + 1).saturating_mul(self.width_ms));
        }
    }

    /// The slots whose key may be the key made at `key_ms` hashing to
    /// `hash` (32 bits of hash agree; the archived record decides).
    pub fn candidates(&self, key_ms: u64, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let low = hash as u32;
        self.buckets
            .get(&(key_ms / self.width_ms))
            .filter(|b| key_ms <= b.max_key_ms)
            .into_iter()
            .flat_map(move |b| b.parts[part(hash)].iter_hash(table_hash(low)).filter(move |e| e.hash == low).map(|e| e.slot))
    }

    /// Touches the bucket a lookup of this key would probe (a prefetch).
    pub fn touch(&self, key_ms: u64, hash: u64) {
        if let Some(b) = self.buckets.get(&(key_ms / self.width_ms)).filter(|b| key_ms <= b.max_key_ms) {
            std::hint::black_box(b.parts[part(hash)].find(table_hash(hash as u32), |_| false));
        }
    }

    /// Takes as forgotten every key made before `ms` (what a checkpoint
    /// says of the index it was taken from: its keys before that time are
    /// not in the archive's rebuild).
    pub fn forget_before(&mut self, ms: u64) {
        self.forgotten_before_ms = self.forgotten_before_ms.max(ms);
    }

    /// Drops every bucket whose keys are all older than `oldest_ms` (past
    /// the dedup window).
    pub fn drop_before(&mut self, oldest_ms: u64) {
        self.dropped_before_ms = self.dropped_before_ms.max(oldest_ms);
        while let Some((&first, _)) = self.buckets.first_key_value() {
            if (first + 1).saturating_mul(self.width_ms) > oldest_ms {
                break;
            }
            if let Some(dropped) = self.buckets.remove(&first) {
                self.entries -= dropped.len();
            }
        }
    }
}

/// The cold side of a shard's orders: the archive, the cold keys and the
/// totals.
#[derive(Debug, Clone)]
pub struct ColdOrders {
    /// The archive file (`None`: nothing was ever archived by this shard
    /// in this process: tests, the simulator's reference replay).
    pub archive: Option<Arc<OrderArchive>>,
    /// The cold key index.
    pub keys: ColdKeys,
    /// The totals.
    pub totals: ArchivedTotals,
    /// The lowest slot a key of the dedup window may be in, below `base`:
    /// where recovery starts reading the archive to rebuild `keys`.
    pub keys_from: u32,
}

impl ColdOrders {
    /// Nothing archived.
    #[must_use]
    pub fn new(window_ms: u64, max_keys: usize) -> ColdOrders {
        ColdOrders { archive: None, keys: ColdKeys::new(window_ms, max_keys), totals: ArchivedTotals::default(), keys_from: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_in_its_time_bucket_and_buckets_leave_whole() {
        let mut keys = ColdKeys::new(1600, 100);
        keys.insert(50, 7, 1);
        keys.insert(150, 8, 2);
        keys.insert(150, 8 | (1 << 33), 3);
        assert_eq!(keys.candidates(50, 7).collect::<Vec<_>>(), vec![1]);
        assert_eq!(keys.candidates(150, 7).count(), 0, "another bucket");
        assert_eq!(keys.candidates(160, 8).count(), 0, "newer than every key of its bucket: not probed");
        let mut both: Vec<u32> = keys.candidates(150, 8).collect();
        both.sort_unstable();
        assert_eq!(both, vec![2, 3], "the same low 32 bits: both are candidates");
        assert_eq!(keys.min_slot(), Some(1));
        keys.drop_before(100);
        assert_eq!((keys.len(), keys.candidates(50, 7).count()), (2, 0));
        keys.drop_before(199);
        assert_eq!(keys.len(), 2, "a bucket with a key inside the window stays");
        assert_eq!(keys.forgotten_before_ms(), 0);
    }

    #[test]
    fn past_the_bound_the_oldest_bucket_is_forgotten_and_said() {
        let mut keys = ColdKeys::new(1600, 2);
        keys.insert(10, 1, 1);
        keys.insert(120, 2, 2);
        keys.insert(250, 3, 3);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.forgotten_before_ms(), 100);
        assert_eq!(keys.candidates(10, 1).count(), 0);
        assert_eq!(keys.candidates(250, 3).count(), 1);
    }
}
