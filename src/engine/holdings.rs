//! Per-user holdings: the units each user holds in live (placed or paid)
//! orders of each product that has a per-user limit.
//!
//! Only limited products are tracked, so that an unlimited catalogue (the
//! common case) pays nothing for it. When a product gains a limit its
//! holdings are rebuilt from the orders (a scan of the shard's orders: an
//! admin operation, not a hot path); when it loses its limit they are
//! dropped. Entries that reach zero are removed, so the map holds only
//! users with live units.

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;

use crate::engine::orders::OrderBook;
use crate::engine::FixedHasher;

/// `(user, product) -> units held`, for products with a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    units: HashMap<(u64, u64), u64, FixedHasher>,
}

impl Holdings {
    /// No holdings.
    #[must_use]
    pub fn new(hasher: FixedHasher) -> Self {
        Holdings { units: HashMap::with_hasher(hasher) }
    }

    /// Reserves room for `additional` more (user, product) pairs.
    pub fn reserve(&mut self, additional: usize) {
        self.units.reserve(additional);
    }

    /// Units `user` holds of `product`.
    #[must_use]
    pub fn held(&self, user: u64, product: u64) -> u64 {
        self.units.get(&(user, product)).copied().unwrap_or(0)
    }

    /// Pairs tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether no pair is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// `user`'s holding of `product`, to read and then add to with one
    /// probe of the table. Taking it changes no holding (it may grow the
    /// table's capacity).
    pub fn entry(&mut self, user: u64, product: u64) -> Holding<'_> {
        Holding(self.units.entry((user, product)))
    }

    /// Adds `qty` units to `user`'s holding of `product`.
    pub fn add(&mut self, user: u64, product: u64, qty: u64) {
        let held = self.units.entry((user, product)).or_insert(0);
        *held = held.saturating_add(qty);
    }

    /// Removes `qty` units; the caller checked that the user holds them.
    pub fn remove(&mut self, user: u64, product: u64, qty: u64) {
        if let Some(held) = self.units.get_mut(&(user, product)) {
            debug_assert!(*held >= qty);
            *held = held.saturating_sub(qty);
            if *held == 0 {
                self.units.remove(&(user, product));
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
        self.units.retain(|&(_, p), _| p != product);
    }

    /// Every entry, in no particular order (for the invariant check).
    pub fn iter(&self) -> impl Iterator<Item = ((u64, u64), u64)> + '_ {
        self.units.iter().map(|(&k, &v)| (k, v))
    }
}

/// One user's holding of one product, found but not yet changed.
pub struct Holding<'a>(Entry<'a, (u64, u64), u64, FixedHasher>);

impl Holding<'_> {
    /// Units held.
    #[must_use]
    pub fn held(&self) -> u64 {
        match &self.0 {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(_) => 0,
        }
    }

    /// Adds `qty` units.
    pub fn add(self, qty: u64) {
        match self.0 {
            Entry::Occupied(mut entry) => *entry.get_mut() = entry.get().saturating_add(qty),
            Entry::Vacant(entry) => {
                entry.insert(qty);
            }
        }
    }
}
