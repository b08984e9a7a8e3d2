//! Moving a shard's cold orders out of memory: the shard-level steps the
//! runtime's archiver takes (see [`crate::engine::orders`] for the book's
//! side and [`crate::engine::archive`] for the file).
//!
//! 1. [`Shard::take_eviction`], on the core: which final orders leave
//!    (created before `now - hot_ms`, or every final one when the shard
//!    holds more than half its bound);
//! 2. a thread off the core writes them to the archive and syncs it;
//! 3. [`Shard::evict`], on the core, in bounded steps: they leave memory
//!    and their keys join the cold key index.
//!
//! Until step 3 every evicted order is still in memory, and a final order
//! never changes, so a read between the steps gets the same answer from
//! either place. No checkpoint is involved: recovery from an older
//! checkpoint replays the log, which places those orders in memory again
//! (to be archived again, over the same bytes), and a checkpoint taken
//! after step 3 names the archive for them.

use std::sync::Arc;

use crate::engine::archive::{ArchiveError, OrderArchive};
use crate::engine::orders::Eviction;
use crate::engine::shard::Shard;

/// An open order younger than this (or than the hot window, if longer) is
/// not pinned: the final orders after it wait in memory until it closes or
/// ages. Pinning an order about to be paid moves it to a hash map for the
/// rest of its short life (measured: 20% of a `lifecycle` core with a hot
/// window of 0 and every order pinned before its payment).
pub const PIN_AFTER_MS: u64 = 10_000;

impl Shard {
    /// Keys made before this (engine) time are past the dedup window, for
    /// a decision at `now_ms`.
    #[must_use]
    pub fn oldest_key_ms(&self, now_ms: u64) -> u64 {
        self.decision_time(now_ms).saturating_sub(self.config.dedup_window_ms)
    }

    /// The final orders whose hot window has passed at `now_ms`, to leave
    /// memory (`None` without an archive, or when none would); every final order when the shard holds more than half its
    /// bound (the hot window is a cache: it gives way before `orders_full`
    /// would). Which orders leave changes no answer, so the time is the
    /// caller's clock, not an event's.
    #[must_use]
    pub fn take_eviction(&self, now_ms: u64) -> Option<Eviction> {
        let now = self.decision_time(now_ms);
        let pressed = self.orders.in_memory() > self.config.effective_max_orders() as usize / 2;
        let (cutoff, pin_cutoff) = if pressed {
            (u64::MAX, u64::MAX)
        } else {
            (now.saturating_sub(self.config.hot_ms), now.saturating_sub(self.config.hot_ms.max(PIN_AFTER_MS)))
        };
        self.orders.take_eviction(cutoff, pin_cutoff, now).filter(|e| !e.is_empty())
    }

    /// Moves up to `max` more orders of `eviction` out of memory; returns
    /// whether it is done. Call only once the archive holding them is
    /// durable.
    pub fn evict(&mut self, eviction: &mut Eviction, max: usize) -> bool {
        let oldest = self.oldest_key_ms(eviction.now_ms);
        self.orders.evict(eviction, max, oldest)
    }

    /// Attaches the shard's archive (recovery, once the shard is restored)
    /// and rebuilds its cold key index from it.
    ///
    /// # Errors
    /// The archive cannot be read or is damaged.
    pub fn attach_archive(&mut self, archive: Arc<OrderArchive>) -> Result<(), ArchiveError> {
        let oldest = self.oldest_key_ms(0);
        self.orders.attach_archive(archive, oldest)
    }
}

#[cfg(test)]
mod tests {
    use orderd_protocol::{IdempotencyKey, OrderState, PlaceOrder, Reply, Status, UpsertProduct};

    use super::*;
    use crate::engine::{Command, ShardConfig};
    use crate::log::RealStorage;

    const T0: u64 = 1_000_000;

    fn place(shard: &mut Shard, n: u64, now: u64) -> Reply {
        let request = PlaceOrder { key: IdempotencyKey::timed(now, u128::from(n)), user: n, product: 1, unit_price_cents: 100, qty: 1 };
        shard.apply(&Command::PlaceOrder(request), now, &mut Vec::new())
    }

    fn id(reply: &Reply) -> u64 {
        match reply {
            Reply::Order(o) => o.id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn final_orders_leave_memory_open_ones_stay_and_every_order_still_answers() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig { hot_ms: 1000, max_orders: 4, ..ShardConfig::new(2) };
        let mut shard = Shard::new(config);
        shard.attach_archive(Arc::new(OrderArchive::open(dir.path(), 2, &RealStorage).unwrap())).unwrap();
        let upsert = UpsertProduct { product: 1, unit_price_cents: 100, stock: 100, payment_window_ms: 60_000, per_user_limit: 3 };
        shard.apply(&Command::Upsert(upsert), T0, &mut Vec::new());
        let placed: Vec<Reply> = (1..=4).map(|n| place(&mut shard, n, T0 + n)).collect();
        let ids: Vec<u64> = placed.iter().map(id).collect();
        assert_eq!(place(&mut shard, 5, T0 + 5), Reply::rejected(Status::OrdersFull, 0));
        for &order_id in &[ids[0], ids[2], ids[3]] {
            shard.apply(&Command::Pay { order_id }, T0 + 10, &mut Vec::new());
        }
        // Past half its bound, a shard lets its final orders go before
        // their hot window ends.
        let mut eviction = shard.take_eviction(T0 + 20).unwrap();
        assert_eq!(eviction.archived.len(), 3, "paid orders leave, the placed one is pinned");
        let archive = Arc::clone(shard.orders.archive().unwrap());
        archive.write(&eviction.archived).unwrap();
        assert!(!shard.evict(&mut eviction, 2));
        assert!(shard.evict(&mut eviction, 2));
        let image = shard.image();
        assert_eq!((image.base, image.orders.len(), image.pinned.len()), (4, 0, 1));
        assert_eq!((shard.orders_in_memory(), shard.orders_archived(), shard.cold_keys()), (1, 3, 3));
        shard.check_invariants().unwrap();
        // Cold orders answer by id and by key; paying one again answers it.
        let now = T0 + 3000;
        for (n, &order_id) in ids.iter().enumerate() {
            let order = shard.order(order_id).unwrap();
            let by_key = shard.apply(&Command::GetOrderByKey { key: order.key }, now, &mut Vec::new());
            assert_eq!(by_key, Reply::Order(order), "order {n}");
        }
        let retry = place(&mut shard, 1, T0 + 1);
        assert!(matches!(retry, Reply::Order(o) if o.id == ids[0] && o.state == OrderState::Paid));
        assert!(matches!(shard.apply(&Command::Pay { order_id: ids[0] }, now, &mut Vec::new()), Reply::Order(_)));
        assert_eq!(shard.apply(&Command::Cancel { order_id: ids[2] }, now, &mut Vec::new()), Reply::rejected(Status::OrderPaid, 0));
        // Room again: the bound counts orders in memory.
        assert!(matches!(place(&mut shard, 6, now), Reply::Order(_)));
        // The per-user limit still counts archived paid units.
        assert_eq!(shard.held_units(1, 1), 1);
        // An image of the evicted shard rebuilds an equal shard.
        let mut rebuilt = Shard::from_image(config, shard.image()).unwrap();
        rebuilt.attach_archive(archive).unwrap();
        assert_eq!(rebuilt, shard);
        assert_eq!(rebuilt.cold_keys(), 3);
        rebuilt.check_invariants().unwrap();
    }

    #[test]
    fn final_orders_stay_for_the_hot_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut shard = Shard::new(ShardConfig { hot_ms: 1000, ..ShardConfig::new(1) });
        shard.attach_archive(Arc::new(OrderArchive::open(dir.path(), 1, &RealStorage).unwrap())).unwrap();
        let upsert = UpsertProduct { product: 1, unit_price_cents: 100, stock: 100, payment_window_ms: 0, per_user_limit: 0 };
        shard.apply(&Command::Upsert(upsert), T0, &mut Vec::new());
        let first = id(&place(&mut shard, 1, T0 + 1));
        let second = id(&place(&mut shard, 2, T0 + 500));
        for order_id in [first, second] {
            shard.apply(&Command::Cancel { order_id }, T0 + 600, &mut Vec::new());
        }
        assert!(shard.take_eviction(T0 + 1000).is_none(), "both younger than the hot window");
        let eviction = shard.take_eviction(T0 + 1200).unwrap();
        assert_eq!(eviction.archived.iter().map(|(slot, _)| *slot).collect::<Vec<_>>(), vec![0], "only the first is older");
        assert_eq!(eviction.cut, 1);
    }

    #[test]
    fn a_key_dropped_past_the_window_stays_expired_when_a_restart_brings_the_clock_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig { hot_ms: 0, dedup_window_ms: 10_000, ..ShardConfig::new(3) };
        let mut shard = Shard::new(config);
        let archive = Arc::new(OrderArchive::open(dir.path(), 3, &RealStorage).unwrap());
        shard.attach_archive(Arc::clone(&archive)).unwrap();
        let upsert = UpsertProduct { product: 1, unit_price_cents: 100, stock: 100, payment_window_ms: 0, per_user_limit: 0 };
        shard.apply(&Command::Upsert(upsert), T0, &mut Vec::new());
        let order_id = id(&place(&mut shard, 1, T0 + 1));
        shard.apply(&Command::Cancel { order_id }, T0 + 2, &mut Vec::new());
        // Archived 20 s later: its key is past the window and not kept.
        let mut eviction = shard.take_eviction(T0 + 20_000).unwrap();
        archive.write(&eviction.archived).unwrap();
        assert!(shard.evict(&mut eviction, usize::MAX));
        assert_eq!(shard.cold_keys(), 0);
        // A restart from this image whose clock is earlier (the records
        // that moved it were never synced, or the wall clock stepped back):
        // the key is inside the window again by that clock, and must be
        // refused as expired, never place a second order.
        let mut rebuilt = Shard::from_image(config, shard.image()).unwrap();
        rebuilt.attach_archive(archive).unwrap();
        assert_eq!(place(&mut rebuilt, 1, T0 + 5_000), Reply::rejected(Status::KeyExpired, T0 + 5_000));
        rebuilt.check_invariants().unwrap();
    }
}
