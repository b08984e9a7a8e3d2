//! The configuration of one shard: its id and its memory bounds.
//!
//! A shard holds its open orders and its recent final ones in memory (older
//! final orders go to its archive at checkpoints), so the bounds here are
//! what keep a flash sale from exhausting the machine: at a bound, place
//! order answers `orders_full` instead of allocating. `ShardConfig` is plain data; the
//! runtime fills it from its own validated settings.

use orderd_protocol::{IdempotencyKey, Rejection, Status};

/// `invalid_request` detail for a key that is not time-ordered: the key is
/// field 1 of both `PlaceOrder` and `GetOrderByKey`'s `KeyRef`.
pub const FIELD_KEY: u64 = 1;

/// Default bound on the orders one shard holds (`--max-orders-per-shard`).
///
/// About 200 MiB per shard when full (see the memory figures in
/// [`crate::engine`]).
pub const DEFAULT_MAX_ORDERS_PER_SHARD: u32 = 1 << 21;

/// Default bound on the idempotency keys one shard remembers.
pub const DEFAULT_MAX_IDEMPOTENCY_KEYS_PER_SHARD: u32 = DEFAULT_MAX_ORDERS_PER_SHARD;

/// Default bound on the keys of archived orders a shard remembers
/// (`--max-cold-keys-per-shard`): about 10-21 bytes each, so at most about
/// 150 MiB per shard.
pub const DEFAULT_MAX_COLD_KEYS_PER_SHARD: u32 = 1 << 23;

/// Default hot window (`--hot-orders-secs`): a final order stays in memory
/// this long after it was placed, then leaves for the archive at the next
/// checkpoint.
pub const DEFAULT_HOT_MS: u64 = 120 * 1000;

/// Default dedup window (`--dedup-window-secs`): a retried request is
/// answered with its original order for a day after its key was made.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// Default tolerance for keys made ahead of the server's clock
/// (`--key-max-ahead-secs`): five minutes of clock skew between a client and
/// the server.
pub const DEFAULT_KEY_MAX_AHEAD_MS: u64 = 5 * 60 * 1000;

/// The settings of one shard's engine.
///
/// The bounds are `u32` because an order's slot and an index entry are
/// stored as `u32` (half the memory of a `u64` per index bucket); four
/// billion orders per shard is far beyond any memory a shard gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardConfig {
    /// The shard's id: the high 16 bits of every order id it issues.
    pub shard_id: u16,
    /// Orders the shard may hold in memory (open ones and final ones of the
    /// hot window); at the bound place order is refused with `orders_full`.
    pub max_orders: u32,
    /// Keys of orders in memory the shard may index; at the bound place
    /// order is refused with `orders_full`. Every order in memory holds
    /// exactly one, so the smaller of the two bounds is the effective one
    /// (keys of archived orders have their own bound, `max_cold_keys`).
    pub max_idempotency_keys: u32,
    /// Seed of the hash function of every table in the shard. The runtime
    /// should pick it at random (hash flooding): no result of the engine
    /// depends on it, because no result depends on a table's iteration order.
    pub hash_seed: u64,
    /// Keys of archived orders the shard remembers (the dedup window's);
    /// past the bound the oldest are forgotten early and refused with
    /// `key_expired` (never placed again).
    pub max_cold_keys: u32,
    /// How long after it was placed a final order stays in memory before a
    /// checkpoint may move it to the archive.
    pub hot_ms: u64,
    /// How long after its time an idempotency key is answered: a key older
    /// than this (by the engine's clock) is refused with `key_expired`.
    pub dedup_window_ms: u64,
    /// How far ahead of the engine's clock a key's time may be before it is
    /// refused with `key_expired` (client clock skew).
    pub key_max_ahead_ms: u64,
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
            max_cold_keys: DEFAULT_MAX_COLD_KEYS_PER_SHARD,
            hot_ms: DEFAULT_HOT_MS,
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
            key_max_ahead_ms: DEFAULT_KEY_MAX_AHEAD_MS,
        }
    }

    /// Whether `key` may be answered at engine time `now_ms`: `Ok` when it
    /// is a time-ordered key whose time lies within
    /// `[now_ms - dedup_window_ms, now_ms + key_max_ahead_ms]`, else the
    /// refusal (`invalid_request` with the key's field number for a key
    /// without a time, `key_expired` with the engine's clock otherwise).
    /// The same for a first request and a retry, whether or not the key is
    /// known: the answer depends on the key and the clock alone.
    pub fn check_key(&self, key: &IdempotencyKey, now_ms: u64) -> Result<(), Rejection> {
        let Some(time) = key.time_ms() else {
            return Err(Rejection::new(Status::InvalidRequest, FIELD_KEY));
        };
        if time.saturating_add(self.dedup_window_ms) < now_ms || time > now_ms.saturating_add(self.key_max_ahead_ms) {
            return Err(Rejection::new(Status::KeyExpired, now_ms));
        }
        Ok(())
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
