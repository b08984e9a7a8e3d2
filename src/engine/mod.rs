//! The order engine: a pure, deterministic state machine for one shard.
//!
//! `(state, command, time) -> (state', events, reply)`, with no I/O, no
//! clock reads and no randomness: the runtime hands in the time, the log
//! stores the events, and recovery replays them. That makes the engine
//! testable against a model, fuzzable and simulatable.
//!
//! # Decide, then apply
//!
//! [`Shard::apply`] *decides*: it validates the [`Command`] with pure reads
//! and either answers at once (reads, rejections, idempotent retries) or
//! builds the [`Event`] that records the decision. The event then goes
//! through [`Shard::apply_event`], the only code that changes a shard, and
//! is pushed onto the caller's buffer. [`Shard::replay`] calls the same
//! function with events read back from the log, so a replayed shard equals
//! the original by construction. A rejection records nothing: a retried
//! rejected request is evaluated afresh.
//!
//! # Time
//!
//! The engine's clock is the time of its latest event. A command is decided
//! at `max(now_ms, clock, latest decision)`, so a clock that steps back (or
//! a frame forwarded with an older time) changes nothing, and the clock is
//! part of the replayed state (the latest decision is not: a refusal
//! records nothing, and a restart starts it at the clock). Every command first expires the
//! placed orders whose deadline (`created_ms + payment_window_ms`) is at or
//! before that time, so an order is expired *at* its deadline: paying it
//! then answers `order_expired`. The runtime's timer calls
//! [`Shard::expire_due`] at [`Shard::next_expiry`] so that units return to
//! stock without waiting for the next command.
//!
//! # Memory
//!
//! A shard holds its open orders and its final orders of the hot window
//! (`ShardConfig::hot_ms`); older final orders leave for the shard's
//! [`archive`] on disk, their keys for the [`cold`] key index (10-21 bytes
//! each, while inside the dedup window). [`ShardConfig`] bounds the orders
//! in memory and place order answers `orders_full` at the bound. Per order
//! in memory:
//!
//! | structure | bytes |
//! |---|---|
//! | order record (a ring by slot, slot = sequence − 1, so no id index) | 64 |
//! | idempotency index (`HashTable` of a 4-byte slot and 32 bits of the key's hash, plus a control byte, per bucket; buckets a power of two, load ≤ 7/8) | 10.3 – 20.6 |
//! | payment deadline (`(u64, u32)` heap entry; orders of products with a window) | 16 |
//! | per-user holding (`(user, product) -> u64`: 24 bytes + a control byte per bucket; one per distinct buyer of a limited product) | 0 – 29 |
//!
//! Measured by `tests/engine_alloc.rs` (a counting global allocator, net
//! bytes allocated while placing): 1,000,000 orders of the `uniform`
//! catalogue with a payment window take **98.9 bytes per order** with
//! capacity reserved up front ([`Shard::reserve`]: 64 + 16 + 2^21 index
//! buckets × 9 bytes / 10^6), and 102.8 bytes per order when the structures
//! grow by doubling (the `Vec`s end at capacity 2^20). Growth by doubling
//! costs up to about twice the record and deadline bytes just past a power
//! of two, which is why the runtime should reserve. A shard full at
//! [`config::DEFAULT_MAX_ORDERS_PER_SHARD`] (2^21 orders) holds about
//! 200 MiB.
//!
//! # Allocation
//!
//! Once [`Shard::reserve`] (and, for limited products,
//! [`Shard::reserve_holdings`]) has made room, no request allocates: place
//! (accepted or rejected), pay, cancel and expiry were counted at zero
//! allocations (`tests/engine_alloc.rs`). The one remaining growth is the
//! caller's event buffer: a timer tick that expires many orders at once
//! pushes one event each and grows the buffer to the burst's size.
//!
//! # Layout
//! - [`command`]: the engine's [`Command`] and its conversion from a wire request.
//! - [`config`]: [`ShardConfig`], the shard id and memory bounds.
//! - [`shard`]: the [`Shard`] state and `apply`, the decide half.
//! - [`apply`]: `apply_event`, the only mutation, and [`EventError`].
//! - [`replay`]: rebuilding a shard from events.
//! - [`image`]: a shard's state as plain data, for checkpoints.
//! - [`event`]: [`Event`] and its binary encoding (byte layout documented there).
//! - [`catalogue`]: products and the stock invariant.
//! - [`record`]: [`orders::OrderRecord`], one order in 64 bytes.
//! - [`orders`]: the orders in memory, the idempotency index, payment deadlines.
//! - [`archive`]: the file of cold (final, aged) orders, by slot.
//! - [`cold`]: the cold key index and the archived orders' totals.
//! - [`evict`]: moving cold orders out of memory at a checkpoint.
//! - [`holdings`]: per-user units of limited products.
//! - [`stats`]: the shard's counters.
//! - [`check`]: the full invariant check.

pub mod apply;
pub mod archive;
pub mod catalogue;
pub mod check;
pub mod cold;
pub mod command;
pub mod config;
pub mod event;
pub mod evict;
pub mod holdings;
pub mod image;
pub mod orders;
pub mod record;
pub mod replay;
pub mod shard;
pub mod stats;

pub use apply::EventError;
pub use check::InvariantViolation;
pub use command::Command;
pub use config::{ShardConfig, DEFAULT_DEDUP_WINDOW_MS, DEFAULT_KEY_MAX_AHEAD_MS, FIELD_KEY};
pub use event::{Event, EventDecodeError, OrderFacts, StockRule, EVENT_FORMAT_VERSION, OLDEST_EVENT_FORMAT_VERSION};
pub use image::{ImageError, ShardImage};
pub use replay::ReplayError;
pub use shard::Shard;
pub use stats::{ShardStats, TableBytes};

/// The hasher of every table in the engine: foldhash, seeded from
/// [`ShardConfig::hash_seed`]. Fast and deterministic for a given seed; no
/// result of the engine depends on table iteration order.
pub type FixedHasher = foldhash::fast::FixedState;

/// Parts each growing index of a shard (the idempotency keys, the per-user
/// holdings) is split into, by hash bits: a hashbrown table rehashes all its
/// entries at once when it doubles, and one table of 458,752 entries
/// stalled its core for 12-16 ms doing so; a part doubles alone, holding
/// 1/256 of the entries (`tests/engine_growth.rs` measures the worst single
/// request). A power of two; an unused part costs an empty table header.
pub const INDEX_PARTS: usize = 256;

/// The part of an index a 64-bit table hash belongs to: bits that hashbrown
/// uses for neither the bucket index (the low bits: fewer than 32 for any
/// part a shard can fill) nor the control byte (the top 7 bits).
#[must_use]
pub const fn index_part(hash: u64) -> usize {
    (hash >> 32) as usize & (INDEX_PARTS - 1)
}

/// Room to reserve in each part of an index for `additional` more entries:
/// they spread evenly over the parts, plus 1/16 slack so that an unlucky
/// part does not grow before the others are full.
#[must_use]
pub const fn per_part_reserve(additional: usize) -> usize {
    additional.div_ceil(INDEX_PARTS) + additional.div_ceil(INDEX_PARTS * 16)
}
