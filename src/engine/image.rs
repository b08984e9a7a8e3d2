//! A shard's state as plain data, for checkpoints: [`Shard::image`] takes
//! it, [`Shard::from_image`] rebuilds a shard from it.
//!
//! The image holds what the events determine and nothing derived: the
//! catalogue, the orders in memory, the clock and the counters, and of the
//! archived orders their totals and per-user holdings (which the archived
//! orders no longer give without reading the archive). The idempotency
//! index and the payment deadlines follow from the orders in memory and
//! are rebuilt; the cold key index is rebuilt from the archive. So an image
//! is about 64 bytes per order in memory and 64 per product. Taking an
//! image copies the records of the orders in memory: the only part of a
//! checkpoint that runs on the core.
//! Orders below the ring that are not pinned were durable in the archive
//! before they left memory (`engine::evict`), so an image never names an
//! order that only memory held.

use crate::engine::catalogue::Product;
use crate::engine::check::InvariantViolation;
use crate::engine::cold::ArchivedTotals;
use crate::engine::orders::OrderRecord;
use crate::engine::shard::Shard;
use crate::engine::stats::ShardStats;
use crate::engine::ShardConfig;

/// A shard's state as plain data (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardImage {
    /// The shard's id.
    pub shard_id: u16,
    /// The engine's clock.
    pub clock_ms: u64,
    /// Orders placed, all time.
    pub orders_placed: u64,
    /// Gross amount placed, in cents.
    pub gmv_cents: u64,
    /// Orders holding units.
    pub live_orders: u64,
    /// The catalogue, by product id (sorted).
    pub products: Vec<(u64, Product)>,
    /// The slot of `orders[0]`: slots below it are archived or pinned.
    pub base: u32,
    /// The orders of slots `base..`, by slot (`sequence - 1`).
    pub orders: Vec<OrderRecord>,
    /// Orders below `base` still in memory (open when their slot's
    /// neighbours were archived), by slot.
    pub pinned: Vec<(u32, OrderRecord)>,
    /// The per-user holdings `(user, product, units)`; `None`: rebuild them
    /// from the orders (an image from before orders were archived).
    pub holdings: Option<Vec<(u64, u64, u64)>>,
    /// The archived orders' totals.
    pub archived: ArchivedTotals,
    /// The lowest slot a key of the dedup window may be in (recovery reads
    /// the archive from there to rebuild the cold keys).
    pub keys_from: u32,
    /// Keys made before this time may have left the cold key index (past
    /// the window, or the bound): after a restart they are refused as
    /// expired even if the recovered clock is earlier than the one that
    /// dropped them (`0`: none left).
    pub keys_complete_from_ms: u64,
    /// Events applied to the shard since it was created
    /// ([`Shard::position`]; `0` in images from before it was kept).
    pub position: u64,
}

/// Why an image is not a state a shard can be in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image is of another shard.
    #[error("the image is of shard {found}, not {expected}")]
    WrongShard {
        /// The shard being rebuilt.
        expected: u16,
        /// The image's shard.
        found: u16,
    },
    /// More orders than a shard's ids can number.
    #[error("{orders} orders, more than a shard's ids can number ({bound})")]
    TooManyOrders {
        /// Orders in the image.
        orders: usize,
        /// The shard's bound.
        bound: u32,
    },
    /// Two orders share an idempotency key (or a pinned order is not below
    /// the ring: both slots are its own).
    #[error("orders in slots {first} and {second} share an idempotency key")]
    DuplicateKey {
        /// The first.
        first: u32,
        /// The second.
        second: u32,
    },
    /// A product appears twice.
    #[error("product {product} appears twice")]
    DuplicateProduct {
        /// The product.
        product: u64,
    },
    /// The state breaks an invariant (stock, clock, an orphan order).
    #[error("the state breaks an invariant: {0}")]
    Invariant(#[from] InvariantViolation),
}

impl Shard {
    /// This shard's state as plain data (copies every order record).
    #[must_use]
    pub fn image(&self) -> ShardImage {
        self.image_reusing(Vec::new())
    }

    /// [`Shard::image`] into `orders`' allocation (cleared first): a buffer
    /// kept from the last checkpoint has its pages mapped already, and
    /// faulting in a fresh one's pages took most of a copy's time (27-38
    /// ms for 8-16 MB on the project's VM, against ~2 ms for the copy).
    #[must_use]
    pub fn image_reusing(&self, mut orders: Vec<OrderRecord>) -> ShardImage {
        orders.clear();
        let (base, ring) = self.orders.ring();
        let mut pinned: Vec<(u32, OrderRecord)> = self.orders.pinned().map(|(slot, r)| (slot, *r)).collect();
        pinned.sort_unstable_by_key(|&(slot, _)| slot);
        if orders.capacity() < ring.len() {
            // Room for the shard to grow by a quarter before the buffer
            // must grow (and fault in new pages) again.
            orders.reserve_exact(ring.len() + ring.len() / 4);
        }
        let (a, b) = ring.as_slices();
        orders.extend_from_slice(a);
        orders.extend_from_slice(b);
        let mut products: Vec<(u64, Product)> = self.products.iter().map(|(&id, &p)| (id, p)).collect();
        products.sort_unstable_by_key(|&(id, _)| id);
        let mut holdings: Vec<(u64, u64, u64)> = self.holdings.iter().map(|((user, product), units)| (user, product, units)).collect();
        holdings.sort_unstable();
        ShardImage {
            shard_id: self.config.shard_id,
            clock_ms: self.clock_ms,
            orders_placed: self.stats.orders_placed,
            gmv_cents: self.stats.gmv_cents,
            live_orders: self.stats.live_orders,
            products,
            base,
            orders,
            pinned,
            holdings: Some(holdings),
            archived: self.orders.archived().clone(),
            keys_from: self.orders.cold_keys_from(),
            keys_complete_from_ms: self.orders.cold_keys_complete_from_ms(),
            position: self.position,
        }
    }

    /// The shard `image` describes, with `config`'s bounds and hash seed:
    /// its indexes rebuilt and every invariant checked.
    ///
    /// # Errors
    /// [`ImageError`]: the image is not a state a shard can be in (a
    /// damaged or foreign checkpoint); nothing is built.
    pub fn from_image(config: ShardConfig, image: ShardImage) -> Result<Shard, ImageError> {
        if image.shard_id != config.shard_id {
            return Err(ImageError::WrongShard { expected: config.shard_id, found: image.shard_id });
        }
        // Like replay, a rebuilt shard keeps every order it had even past a
        // bound lowered since (`--max-orders-per-shard`): the bound refuses
        // new orders, it does not drop old ones.
        let mut shard = Shard::new(config);
        shard.clock_ms = image.clock_ms;
        shard.position = image.position;
        shard.stats = ShardStats {
            orders_placed: image.orders_placed,
            orders_rejected: 0,
            gmv_cents: image.gmv_cents,
            live_orders: image.live_orders,
        };
        shard.products.reserve(image.products.len());
        for (id, product) in image.products {
            if shard.products.insert(id, product).is_some() {
                return Err(ImageError::DuplicateProduct { product: id });
            }
        }
        let orders = image.base as usize + image.orders.len();
        match shard.orders.restore(image.base, image.pinned, image.orders) {
            Ok(()) => {}
            Err((u32::MAX, u32::MAX)) => return Err(ImageError::TooManyOrders { orders, bound: u32::MAX }),
            Err((first, second)) => return Err(ImageError::DuplicateKey { first, second }),
        }
        shard.orders.restore_cold(image.archived, image.keys_from, image.keys_complete_from_ms);
        match image.holdings {
            Some(holdings) => {
                for (user, product, units) in holdings {
                    shard.holdings.add(user, product, units);
                }
            }
            None => {
                let limited: Vec<u64> = shard.products.iter().filter(|(_, p)| p.per_user_limit != 0).map(|(&id, _)| id).collect();
                for product in limited {
                    shard.holdings.rebuild_product(product, &shard.orders);
                }
            }
        }
        // Stock, counters, clock, orphans, holdings, deadlines: all checked
        // here (each key was indexed by `try_insert`, which refused a
        // duplicate).
        shard.check_rebuilt()?;
        Ok(shard)
    }
}

#[cfg(test)]
mod tests {
    use orderd_protocol::{IdempotencyKey, PlaceOrder, UpsertProduct};

    use super::*;
    use crate::engine::Command;

    fn shard_with_orders() -> Shard {
        let mut shard = Shard::new(ShardConfig::new(3));
        let mut events = Vec::new();
        let upsert = UpsertProduct { product: 1, unit_price_cents: 100, stock: 10, payment_window_ms: 1000, per_user_limit: 2 };
        shard.apply(&Command::Upsert(upsert), 1, &mut events);
        for key in 1..=3u64 {
            let request =
                PlaceOrder { key: IdempotencyKey::timed(0, u128::from(key)), user: key, product: 1, unit_price_cents: 100, qty: 1 };
            shard.apply(&Command::PlaceOrder(request), 2, &mut events);
        }
        shard
    }

    #[test]
    fn an_image_rebuilds_an_equal_shard_with_its_indexes() {
        let shard = shard_with_orders();
        let rebuilt = Shard::from_image(*shard.config(), shard.image()).unwrap();
        assert_eq!(rebuilt, shard);
        assert_eq!(rebuilt.next_expiry(), Some(1002));
        assert_eq!(rebuilt.held_units(2, 1), 1);
    }

    #[test]
    fn a_damaged_image_is_refused_and_says_why() {
        let shard = shard_with_orders();
        let other = ShardConfig::new(4);
        assert_eq!(Shard::from_image(other, shard.image()), Err(ImageError::WrongShard { expected: 4, found: 3 }));
        let mut twice = shard.image();
        twice.orders[2].key = twice.orders[0].key;
        assert_eq!(Shard::from_image(*shard.config(), twice), Err(ImageError::DuplicateKey { first: 0, second: 2 }));
        let mut oversold = shard.image();
        oversold.products[0].1.available += 1;
        assert!(matches!(Shard::from_image(*shard.config(), oversold), Err(ImageError::Invariant(_))));
        // A bound lowered since the image was taken refuses new orders, as
        // after a replay, and drops none.
        let small = ShardConfig { max_orders: 2, ..*shard.config() };
        assert_eq!(Shard::from_image(small, shard.image()).map(|s| s.order_count()), Ok(3));
    }
}
