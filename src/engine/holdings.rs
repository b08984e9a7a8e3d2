//! Per-user holdings: the units each user holds in live (placed or paid)
//! orders of each product that has a per-user limit.
//!
//! Only limited products are tracked, so that an unlimited catalogue (the
//! common case) pays nothing for it. When a product gains a limit its
//! holdings are rebuilt from the orders (a scan of the shard's orders: an
//! admin operation, not a hot path); when it loses its limit they are
//! dropped. Entries that reach zero are removed, so the map holds only
//! users with live units. The map is split into
//! [`INDEX_PARTS`] parts by hash, so that its
//! growth during a sale rehashes one part at a time (one table of 458,752
//! buyers stalled its core for 12.5 ms when it doubled).

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::engine::archive::ArchiveError;
use crate::engine::orders::OrderBook;
use crate::engine::{index_part, per_part_reserve, FixedHasher, INDEX_PARTS};

/// One tracked pair and the units its user holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    user: u64,
    product: u64,
    units: u64,
}

/// `(user, product) -> units held`, for products with a limit.
#[derive(Debug, Clone)]
pub struct Holdings {
    /// The map, in parts by hash. Tables of entries with the hash computed
    /// once per probe: it picks the part and the bucket both.
    parts: Box<[HashTable<Held>]>,
    hasher: FixedHasher,
    /// Pairs in all parts.
    pairs: usize,
}

impl Holdings {
    /// No holdings.
    #[must_use]
    pub fn new(hasher: FixedHasher) -> Self {
        Holdings { parts: (0..INDEX_PARTS).map(|_| HashTable::new()).collect(), hasher, pairs: 0 }
    }

    /// Bytes allocated for the map (every part's table).
    #[must_use]
    pub fn allocated_bytes(&self) -> u64 {
        self.parts.iter().map(HashTable::allocation_size).sum::<usize>() as u64
    }

    fn hash(&self, user: u64, product: u64) -> u64 {
        self.hasher.hash_one((user, product))
    }

    /// Reserves room for `additional` more (user, product) pairs.
    pub fn reserve(&mut self, additional: usize) {
        let per_part = per_part_reserve(additional);
        let hasher = self.hasher;
        for part in &mut self.parts[..] {
            part.reserve(per_part, |h| hasher.hash_one((h.user, h.product)));
        }
    }

    /// Units `user` holds of `product`.
    #[must_use]
    pub fn held(&self, user: u64, product: u64) -> u64 {
        let hash = self.hash(user, product);
        self.parts[index_part(hash)].find(hash, |h| h.user == user && h.product == product).map_or(0, |h| h.units)
    }

    /// Pairs tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// Whether no pair is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// `user`'s holding of `product`, to read and then add to with one
    /// probe of the table. Taking it changes no holding (it may grow the
    /// table's capacity).
    pub fn entry(&mut self, user: u64, product: u64) -> Holding<'_> {
        let hash = self.hash(user, product);
        let hasher = self.hasher;
        let entry =
            self.parts[index_part(hash)].entry(hash, |h| h.user == user && h.product == product, |h| hasher.hash_one((h.user, h.product)));
        Holding { entry, user, product, pairs: &mut self.pairs }
    }

    /// Adds `qty` units to `user`'s holding of `product`.
    pub fn add(&mut self, user: u64, product: u64, qty: u64) {
        self.entry(user, product).add(qty);
    }

    /// Removes `qty` units; the caller checked that the user holds them.
    pub fn remove(&mut self, user: u64, product: u64, qty: u64) {
        let hash = self.hash(user, product);
        match self.parts[index_part(hash)].find_entry(hash, |h| h.user == user && h.product == product) {
            Ok(mut found) => {
                let held = found.get_mut();
                debug_assert!(held.units >= qty);
                held.units = held.units.saturating_sub(qty);
                if held.units == 0 {
                    found.remove();
                    self.pairs -= 1;
                }
            }
            Err(_) => debug_assert!(qty == 0, "removing units that are not held"),
        }
    }

    /// The units each user holds in live orders of `product`, archived
    /// ones included (an archive scan: for a product gaining a limit, an
    /// admin operation).
    ///
    /// # Errors
    /// The archive could not be read.
    pub fn count_product(product: u64, orders: &OrderBook) -> Result<Vec<(u64, u64)>, ArchiveError> {
        let mut held: hashbrown::HashMap<u64, u64> = hashbrown::HashMap::new();
        orders.for_each_order(|_, record| {
            if record.product == product && record.state.holds_units() {
                *held.entry(record.user).or_default() += u64::from(record.qty);
            }
        })?;
        Ok(held.into_iter().collect())
    }

    /// Sets the holdings of `product` (which just gained a limit) to
    /// `counted` ([`Holdings::count_product`]).
    pub fn set_product(&mut self, product: u64, counted: &[(u64, u64)]) {
        self.drop_product(product);
        for &(user, units) in counted {
            self.add(user, product, units);
        }
    }

    /// Counts the live orders in memory of `product` (rebuilding a shard
    /// from an image that holds every order).
    pub fn rebuild_product(&mut self, product: u64, orders: &OrderBook) {
        self.drop_product(product);
        for (_, record) in orders.iter() {
            if record.product == product && record.state.holds_units() {
                self.add(record.user, product, u64::from(record.qty));
            }
        }
    }

    /// Forgets `product` (which just lost its limit).
    pub fn drop_product(&mut self, product: u64) {
        for part in &mut self.parts[..] {
            part.retain(|h| h.product != product);
        }
        self.pairs = self.parts.iter().map(HashTable::len).sum();
    }

    /// Every entry, in no particular order (for the invariant check).
    pub fn iter(&self) -> impl Iterator<Item = ((u64, u64), u64)> + '_ {
        self.parts.iter().flat_map(|part| part.iter().map(|h| ((h.user, h.product), h.units)))
    }
}

/// The same pairs with the same units (however they are split in parts).
impl PartialEq for Holdings {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs && self.iter().all(|((user, product), units)| other.held(user, product) == units)
    }
}

impl Eq for Holdings {}

/// One user's holding of one product, found but not yet changed.
pub struct Holding<'a> {
    entry: Entry<'a, Held>,
    user: u64,
    product: u64,
    /// The map's pair count, for an insert.
    pairs: &'a mut usize,
}

impl Holding<'_> {
    /// Units held.
    #[must_use]
    pub fn held(&self) -> u64 {
        match &self.entry {
            Entry::Occupied(entry) => entry.get().units,
            Entry::Vacant(_) => 0,
        }
    }

    /// Adds `qty` units.
    pub fn add(self, qty: u64) {
        match self.entry {
            Entry::Occupied(mut entry) => {
                let held = entry.get_mut();
                held.units = held.units.saturating_add(qty);
            }
            Entry::Vacant(entry) => {
                entry.insert(Held { user: self.user, product: self.product, units: qty });
                *self.pairs += 1;
            }
        }
    }
}
