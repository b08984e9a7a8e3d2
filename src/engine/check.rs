//! The full invariant check of a shard, in O(orders + products).
//!
//! For tests, fuzzing and a check after recovery; never on the hot path
//! (there, `debug_assert!`s state the local invariants).

use hashbrown::HashMap;
use orderd_protocol::OrderState;

use crate::engine::shard::Shard;

/// An invariant that does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvariantViolation {
    /// `supplied != available + reserved + paid`, or the reserved or paid
    /// counter differs from the units in placed or paid orders.
    #[error("stock counters of product {product} disagree with each other or with its orders")]
    Stock {
        /// The product.
        product: u64,
    },
    /// An order names a product that does not exist.
    #[error("order {order_id} names no existing product")]
    OrphanOrder {
        /// The order.
        order_id: u64,
    },
    /// An order's key does not lead back to it, or the index has extra keys.
    #[error("the idempotency index disagrees with order {order_id}")]
    KeyIndex {
        /// The order (`0`: the index size is wrong).
        order_id: u64,
    },
    /// Per-user holdings disagree with the live orders.
    #[error("holdings of user {user} in product {product} disagree with the orders")]
    Holdings {
        /// The user.
        user: u64,
        /// The product.
        product: u64,
    },
    /// A placed order with a deadline is missing from the deadline heap, or
    /// is in it twice.
    #[error("the deadline heap disagrees with order {order_id}")]
    Deadlines {
        /// The order (`0`: a count mismatch).
        order_id: u64,
    },
    /// The counters disagree with the orders.
    #[error("the shard counters disagree with the orders")]
    Stats,
    /// An order was created after the shard clock.
    #[error("order {order_id} was created after the shard clock")]
    Clock {
        /// The order.
        order_id: u64,
    },
}

#[derive(Default)]
struct Units {
    reserved: u64,
    paid: u64,
}

impl Shard {
    /// Checks every invariant of the shard against its orders.
    ///
    /// # Errors
    /// The first violation found.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.check(true)
    }

    /// [`Shard::check_invariants`] of a shard whose key index was just
    /// built from its records (an image's): every check but looking each
    /// key up again, which doubled the time of loading a checkpoint, and
    /// reading the archive (the archived totals stand for it).
    pub(crate) fn check_rebuilt(&self) -> Result<(), InvariantViolation> {
        self.check(false)
    }

    fn check(&self, full: bool) -> Result<(), InvariantViolation> {
        let mut units: HashMap<u64, Units> = HashMap::new();
        let mut held: HashMap<(u64, u64), u64> = HashMap::new();
        let (mut live, mut gmv, mut with_deadline, mut finals) = (0u64, 0u64, 0usize, 0usize);
        let mut earliest = None;
        for (order_id, record) in self.orders.iter() {
            let Some(product) = self.products.get(&record.product) else {
                return Err(InvariantViolation::OrphanOrder { order_id });
            };
            if record.created_ms > self.clock_ms {
                return Err(InvariantViolation::Clock { order_id });
            }
            if full && self.orders.find_key(&record.key).map(|slot| self.orders.id_of(slot)) != Some(order_id) {
                return Err(InvariantViolation::KeyIndex { order_id });
            }
            let qty = u64::from(record.qty);
            let entry = units.entry(record.product).or_default();
            match record.state {
                OrderState::Placed => entry.reserved += qty,
                OrderState::Paid => entry.paid += qty,
                OrderState::Cancelled | OrderState::Expired => {}
            }
            if record.state != OrderState::Placed {
                finals += 1;
            }
            if record.state.holds_units() {
                live += 1;
                if product.per_user_limit != 0 {
                    *held.entry((record.user, record.product)).or_default() += qty;
                }
            }
            if record.state == OrderState::Placed && record.expires_ms != u64::MAX {
                with_deadline += 1;
                earliest = Some(earliest.map_or(record.expires_ms, |e: u64| e.min(record.expires_ms)));
            }
            gmv = gmv.saturating_add(qty * record.unit_price_cents);
        }
        if finals != self.orders.finals() {
            return Err(InvariantViolation::Stats);
        }
        if self.orders.keys() != self.orders.in_memory() {
            return Err(InvariantViolation::KeyIndex { order_id: 0 });
        }
        // The archived orders: their totals stand for them; a full check
        // reads them and holds the totals and the holdings to what it reads.
        let archived = self.orders.archived();
        let read_archive = full && archived.orders > 0 && self.orders.archive().is_some();
        if read_archive {
            self.check_archive(&mut held)?;
        }
        for (&product, &paid) in &archived.paid_units {
            units.entry(product).or_default().paid += paid;
        }
        live += archived.paid_orders;
        gmv = gmv.saturating_add(archived.gmv_cents);
        for (&product, p) in &self.products {
            let counted = units.remove(&product).unwrap_or_default();
            if !p.check() || p.reserved != counted.reserved || p.paid != counted.paid {
                return Err(InvariantViolation::Stock { product });
            }
        }
        if let Some((&product, _)) = units.iter().next() {
            return Err(InvariantViolation::Stock { product });
        }
        // Without reading the archive, archived paid orders may hold units
        // the orders in memory do not show: holdings are at least what
        // memory shows.
        let exact = archived.paid_orders == 0 || read_archive;
        for ((user, product), units) in self.holdings.iter() {
            let shown = held.remove(&(user, product));
            let agrees = if exact { shown == Some(units) } else { shown.unwrap_or(0) <= units };
            if !agrees {
                return Err(InvariantViolation::Holdings { user, product });
            }
        }
        if let Some(&(user, product)) = held.keys().next() {
            return Err(InvariantViolation::Holdings { user, product });
        }
        let mut seen: hashbrown::HashSet<u32> = hashbrown::HashSet::new();
        let mut live_deadlines = 0usize;
        for (expires_ms, slot) in self.orders.live_deadlines() {
            let order_id = self.orders.id_of(slot);
            if !seen.insert(slot) || self.orders.record(slot).map(|r| r.expires_ms) != Some(expires_ms) {
                return Err(InvariantViolation::Deadlines { order_id });
            }
            live_deadlines += 1;
        }
        if live_deadlines != with_deadline || self.next_expiry() != earliest {
            return Err(InvariantViolation::Deadlines { order_id: 0 });
        }
        let stats = self.stats;
        let counted = self.orders.in_memory() as u64 + archived.orders;
        if stats.orders_placed != self.orders.len() as u64
            || counted != stats.orders_placed
            || stats.live_orders != live
            || stats.gmv_cents != gmv
        {
            return Err(InvariantViolation::Stats);
        }
        Ok(())
    }

    /// Reads every archived order: each final, of an existing product,
    /// not after the clock, its key found again while inside the dedup
    /// window; together they make the archived totals. Adds the units of
    /// limited products they hold to `held`.
    fn check_archive(&self, held: &mut HashMap<(u64, u64), u64>) -> Result<(), InvariantViolation> {
        let mut totals = crate::engine::cold::ArchivedTotals::default();
        let mut bad = None;
        let oldest_key = self.oldest_key_ms(0);
        let (base, _) = self.orders.ring();
        let scanned = self.orders.for_each_order(|slot, record| {
            if slot >= base || self.orders.record(slot).is_some() || bad.is_some() {
                return;
            }
            let order_id = self.orders.id_of(slot);
            let Some(product) = self.products.get(&record.product) else {
                bad = Some(InvariantViolation::OrphanOrder { order_id });
                return;
            };
            if record.state == OrderState::Placed || record.created_ms > self.clock_ms {
                bad = Some(InvariantViolation::Clock { order_id });
                return;
            }
            let in_window = record.key.time_ms().is_some_and(|t| t >= oldest_key && t >= self.orders.cold_keys_complete_from_ms());
            if in_window && !matches!(self.orders.lookup_key(&record.key), crate::engine::orders::KeyFound::Order(s, _) if s == slot) {
                bad = Some(InvariantViolation::KeyIndex { order_id });
                return;
            }
            let qty = u64::from(record.qty);
            totals.orders += 1;
            totals.gmv_cents = totals.gmv_cents.saturating_add(qty * record.unit_price_cents);
            if record.state == OrderState::Paid {
                totals.paid_orders += 1;
                *totals.paid_units.entry(record.product).or_default() += qty;
                if product.per_user_limit != 0 {
                    *held.entry((record.user, record.product)).or_default() += qty;
                }
            }
        });
        if scanned.is_err() {
            return Err(InvariantViolation::Stats);
        }
        if let Some(violation) = bad {
            return Err(violation);
        }
        if totals != *self.orders.archived() {
            return Err(InvariantViolation::Stats);
        }
        Ok(())
    }
}
