//! Every bound of the wire protocol, in one place.
//!
//! Two kinds of numbers live here: hard wire maxima (no conforming peer may
//! exceed them, whatever it is configured to) and the defaults a server
//! starts with. A server may lower a bound by configuration, never raise it
//! past the hard maximum. Relations between bounds are checked at compile
//! time below; `PROTOCOL.md` § Limits repeats every value.

/// The newest protocol version this crate speaks. Carried in every frame
/// header of a connection that chose it (PROTOCOL.md § 10): version 2 adds
/// `ListProducts` and its `Products` reply to version 1.
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest protocol version this crate speaks. A Hello goes out in a
/// frame of this version, so that a server of any version reads it.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Bytes in a frame header. A multiple of [`FRAME_ALIGN`] so that the payload
/// that follows it starts aligned.
pub const FRAME_HEADER_LEN: usize = 24;

/// Every frame starts, and every payload starts, at a multiple of this many
/// bytes from the start of the stream: payloads are zero-padded to it.
pub const FRAME_ALIGN: usize = 8;

/// Hard maximum of a frame's payload (the rkyv archive), in bytes.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 4 << 20;

/// Default maximum payload a server accepts (`--max-frame-bytes`).
pub const DEFAULT_MAX_FRAME_PAYLOAD_BYTES: usize = 1 << 20;

/// Hard maximum number of requests in one request frame (and so of replies
/// in one reply frame, and events in one event frame).
pub const MAX_BATCH_REQUESTS: usize = 4096;

/// Default maximum requests per frame a server accepts (`--max-batch`).
pub const DEFAULT_MAX_BATCH_REQUESTS: usize = 1024;

/// Hard maximum of request frames a client may have sent on one connection
/// without having read their replies.
pub const MAX_IN_FLIGHT_FRAMES: usize = 1024;

/// Default in-flight request frames per connection (`--max-in-flight`).
pub const DEFAULT_MAX_IN_FLIGHT_FRAMES: usize = 64;

/// Hard maximum number of cores a server may announce in its handshake.
pub const MAX_CORES: usize = 1024;

/// Hard maximum number of shards. Shard ids fit the top 16 bits of an order id.
pub const MAX_SHARDS: usize = 1 << ORDER_ID_SHARD_BITS;

/// Bits of an order id that hold the per-shard sequence; the bits above hold
/// the shard id (see [`crate::shard`]).
pub const ORDER_ID_SEQUENCE_BITS: u32 = 48;

/// Bits of an order id that hold the shard id.
pub const ORDER_ID_SHARD_BITS: u32 = 64 - ORDER_ID_SEQUENCE_BITS;

/// Hard maximum number of positions (one per core) in a subscribe request.
pub const MAX_SUBSCRIBE_POSITIONS: usize = MAX_CORES;

/// Hard maximum of products in one `Products` reply (a `ListProducts`
/// asking for more gets this many).
pub const MAX_LIST_PRODUCTS: usize = 1000;

/// Hard maximum of products in the top list of an aggregates request.
pub const MAX_TOP_PRODUCTS: usize = 1000;

/// Most sold-out products an aggregates reply lists (it also counts them all).
pub const MAX_SOLD_OUT_LISTED: usize = 1024;

/// Hard maximum quantity of one order line. Keeps `qty * unit_price_cents`
/// far from overflowing a u64.
pub const MAX_ORDER_QTY: u32 = 100_000;

/// Hard maximum unit price, in cents (10^9 cents = 10 million currency units).
pub const MAX_UNIT_PRICE_CENTS: u64 = 1_000_000_000;

/// Round `len` up to the next multiple of [`FRAME_ALIGN`].
#[must_use]
pub const fn padded_len(len: usize) -> usize {
    (len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

// Relations between the bounds, checked when the crate compiles.
const _: () = assert!(FRAME_HEADER_LEN.is_multiple_of(FRAME_ALIGN));
const _: () = assert!(FRAME_ALIGN.is_power_of_two());
const _: () = assert!(DEFAULT_MAX_FRAME_PAYLOAD_BYTES <= MAX_FRAME_PAYLOAD_BYTES);
const _: () = assert!(MAX_FRAME_PAYLOAD_BYTES.is_multiple_of(FRAME_ALIGN));
// A payload length must fit the header's u32 field.
const _: () = assert!(MAX_FRAME_PAYLOAD_BYTES <= u32::MAX as usize);
const _: () = assert!(DEFAULT_MAX_BATCH_REQUESTS <= MAX_BATCH_REQUESTS);
const _: () = assert!(DEFAULT_MAX_IN_FLIGHT_FRAMES <= MAX_IN_FLIGHT_FRAMES);
// A core id and a shard id each fit a u16 on the wire.
const _: () = assert!(MAX_CORES <= u16::MAX as usize + 1);
const _: () = assert!(MAX_SHARDS <= u16::MAX as usize + 1);
// The largest order amount fits 48 bits: sums of 65536 of them fit a u64.
const _: () = assert!((MAX_ORDER_QTY as u128) * (MAX_UNIT_PRICE_CENTS as u128) < (u64::MAX as u128) >> 16);

/// Most bytes of a shard bundle in one `MoveShard` step (`Read`, `Write`):
/// a quarter of the default frame payload bound.
pub const MAX_MOVE_CHUNK: usize = 256 << 10;

/// Most bytes of events in one `Replicate` request (a leader's batch for a
/// follower; more waits for the next batch).
pub const MAX_REPLICATE_BYTES: usize = 512 << 10;
