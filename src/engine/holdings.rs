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

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;

use crate::engine::orders::OrderBook;
use crate::engine::{index_part, FixedHasher, INDEX_PARTS};

type Part = HashMap<(u64, u64), u64, FixedHasher>;

/// `(user, product) -> units held`, for products with a limit.
#[derive(Debug, Clone)]
pub struct Holdings {
    /// The map, in parts by hash (each part uses the same hasher).
    parts: Box<[Part]>,
    hasher: FixedHasher,
    /// Pairs in all parts.
    pairs: usize,
}

impl Holdings {
    /// No holdings.
    #[must_use]
    pub fn new(hasher: FixedHasher) -> Self {
        Holdings { parts: (0..INDEX_PARTS).map(|_| HashMap::with_hasher(hasher)).collect(), hasher, pairs: 0 }
    }

    /// The part that holds `(user, product)`.
    fn part(&self, user: u64, product: u64) -> usize {
        index_part(self.hasher.hash_one((user, product)))
    }

    /// Reserves room for `additional` more (user, product) pairs.
    pub fn reserve(&mut self, additional: usize) {
        // Pairs spread evenly; a little slack per part, as for the key index.
        let per_part = additional.div_ceil(INDEX_PARTS) + additional.div_ceil(INDEX_PARTS * 16);
        for part in &mut self.parts[..] {
            part.reserve(per_part);
        }
    }

    /// Units `user` holds of `product`.
    #[must_use]
    pub fn held(&self, user: u64, product: u64) -> u64 {
        self.parts[self.part(user, product)].get(&(user, product)).copied().unwrap_or(0)
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
        let part = self.part(user, product);
        Holding { entry: self.parts[part].entry((user, product)), pairs: &mut self.pairs }
    }

    /// Adds `qty` units to `user`'s holding of `product`.
    pub fn add(&mut self, user: u64, product: u64, qty: u64) {
        self.entry(user, product).add(qty);
    }

    /// Removes `qty` units; the caller checked that the user holds them.
    pub fn remove(&mut self, user: u64, product: u64, qty: u64) {
        let part = &mut self.parts[self.part(user, product)];
        if let Some(held) = part.get_mut(&(user, product)) {
            debug_assert!(*held >= qty);
            *held = held.saturating_sub(qty);
            if *held == 0 {
                part.remove(&(user, product));
                self.pairs -= 1;
            }
        } else {
            debug_assert!(qty == 0, "removing units that are not held");
        }
    }

    /// Counts the live orders of `product` (which just gained a limit).
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
            part.retain(|&(_, p), _| p != product);
        }
        self.pairs = self.parts.iter().map(HashMap::len).sum();
    }

    /// Every entry, in no particular order (for the invariant check).
    pub fn iter(&self) -> impl Iterator<Item = ((u64, u64), u64)> + '_ {
        self.parts.iter().flat_map(|part| part.iter().map(|(&k, &v)| (k, v)))
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
    entry: Entry<'a, (u64, u64), u64, FixedHasher>,
    /// The map's pair count, for an insert.
    pairs: &'a mut usize,
}

impl Holding<'_> {
    /// Units held.
    #[must_use]
    pub fn held(&self) -> u64 {
        match &self.entry {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(_) => 0,
        }
    }

    /// Adds `qty` units.
    pub fn add(self, qty: u64) {
        match self.entry {
            Entry::Occupied(mut entry) => *entry.get_mut() = entry.get().saturating_add(qty),
            Entry::Vacant(entry) => {
                entry.insert(qty);
                *self.pairs += 1;
            }
        }
    }
}
