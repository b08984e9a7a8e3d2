//! The configuration of one shard: its id and its memory bounds.
//!
//! A shard holds every order it ever placed in memory (until the tiering
//! issue ages closed orders out to the log), so the bounds here are what keep
//! a flash sale from exhausting the machine: at a bound, place order answers
//! `orders_full` instead of allocating. `ShardConfig` is plain data; the
//! runtime fills it from its own validated settings.

/// Default bound on the orders one shard holds (`--max-orders-per-shard`).
///
/// About 200 MiB per shard when full (see the memory figures in
/// [`crate::engine`]).
pub const DEFAULT_MAX_ORDERS_PER_SHARD: u32 = 1 << 21;

/// Default bound on the idempotency keys one shard remembers.
pub const DEFAULT_MAX_IDEMPOTENCY_KEYS_PER_SHARD: u32 = DEFAULT_MAX_ORDERS_PER_SHARD;

/// The settings of one shard's engine.
///
/// The bounds are `u32` because an order's slot and an index entry are
/// stored as `u32` (half the memory of a `u64` per index bucket); four
/// billion orders per shard is far beyond any memory a shard gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardConfig {
    /// The shard's id: the high 16 bits of every order id it issues.
    pub shard_id: u16,
    /// Orders the shard may hold; at the bound place order is refused
    /// with `orders_full`.
    pub max_orders: u32,
    /// Idempotency keys the shard may remember; at the bound place order is
    /// refused with `orders_full`. Every placed order holds exactly one key,
    /// so today the smaller of the two bounds is the effective one; they part
    /// ways once closed orders age out of memory but their keys must not.
    pub max_idempotency_keys: u32,
    /// Seed of the hash function of every table in the shard. The runtime
    /// should pick it at random (hash flooding): no result of the engine
    /// depends on it, because no result depends on a table's iteration order.
    pub hash_seed: u64,
}

impl ShardConfig {
    /// The default bounds for shard `shard_id`, hash seed `0`.
    #[must_use]
    pub const fn new(shard_id: u16) -> Self {
        ShardConfig {
            shard_id,
            max_orders: DEFAULT_MAX_ORDERS_PER_SHARD,
            max_idempotency_keys: DEFAULT_MAX_IDEMPOTENCY_KEYS_PER_SHARD,
            hash_seed: 0,
        }
    }

    /// The bound that place order meets first.
    #[must_use]
    pub const fn effective_max_orders(&self) -> u32 {
        if self.max_orders < self.max_idempotency_keys {
            self.max_orders
        } else {
            self.max_idempotency_keys
        }
    }
}
