//! The events of a shard and their binary encoding.
//!
//! An [`Event`] is a fact the engine decided: the only input that ever
//! mutates a shard ([`crate::engine::Shard::apply_event`]), the record the log
//! will store, and what replay feeds back in. Each carries the engine time it
//! happened at.
//!
//! # Encoding
//!
//! Hand-written, little-endian, fixed size per kind, no padding between
//! fields. The bytes are only the event's body: the log frames each event
//! with its length, its kind byte ([`Event::kind`]), the format version
//! ([`EVENT_FORMAT_VERSION`]) and a CRC32C, so none of those appear here.
//! Reserved bytes are written as zero and a decoder refuses them otherwise,
//! so that a later version can give them a meaning.
//!
//! Kind numbers equal [`orderd_protocol::message::EventKind`], the stream's
//! event kinds. Offsets are in bytes; `u64`/`i64`/`u32` are little-endian.
//!
//! ```text
//! kind 0  OrderPlaced      64 bytes       kind 1  OrderPaid        48 bytes
//!   0  time_ms            u64               0  time_ms            u64
//!   8  order_id           u64               8  order_id           u64
//!  16  key.hi             u64              16  user               u64
//!  24  key.lo             u64              24  product            u64
//!  32  user               u64              32  unit_price_cents   u64
//!  40  product            u64              40  qty                u32
//!  48  unit_price_cents   u64              44  reserved (zero)    u32
//!  56  qty                u32
//!  60  reserved (zero)    u32             kind 2  OrderCancelled, kind 3
//!                                           OrderExpired: layout of OrderPaid
//!
//! kind 4  ProductUpserted  48 bytes       kind 5  StockAdjusted    24 bytes
//!   0  time_ms            u64               0  time_ms            u64
//!   8  product            u64               8  product            u64
//!  16  unit_price_cents   u64              16  delta              i64
//!  24  stock              u64
//!  32  payment_window_ms  u64
//!  40  per_user_limit     u32
//!  44  stock rule         u32 (format 3; reserved, zero, in format 2)
//! ```
//!
//! An order's expiry time is not stored: it is the placement time plus the
//! product's payment window at that moment, which replay knows.
//!
//! A transition (paid, cancelled, expired) repeats its order's
//! [`OrderFacts`]: replay does not need them (it checks they match), but a
//! reader of the log alone, such as the order stream starting at a saved
//! position, can describe the event without the record that placed it.
//! Format 1 (development builds before the stream) stored transitions as
//! 16 bytes without the facts; this build refuses it.
//!
//! # Formats 2 and 3: what an upsert does to stock
//!
//! Format 3 differs from format 2 in one field only: the stock rule of
//! `ProductUpserted` ([`StockRule`]). In format 2 an upsert set the product's
//! available units to `stock`, whatever had been sold; reloading a catalogue
//! during a sale put sold units back on sale. Format 3 records what the engine
//! decided: a new product is created with `stock` available
//! ([`StockRule::Create`]); an existing product keeps its stock counters and
//! `stock` records the units available at that moment ([`StockRule::Keep`]);
//! stock then moves only through `StockAdjusted`. Format 2 records replay as
//! they were acknowledged ([`StockRule::Set`]). This build writes format 3
//! and reads both; an older build refuses format 3 records by their version.

use orderd_protocol::message::EventKind;
use orderd_protocol::{IdempotencyKey, PlaceOrder, UpsertProduct};

/// The version of the encoding above, the one this build writes. A change
/// of any layout or meaning takes a new number.
pub const EVENT_FORMAT_VERSION: u8 = 3;

/// The oldest version this build reads (see the module docs).
pub const OLDEST_EVENT_FORMAT_VERSION: u8 = 2;

/// Kind number of [`Event::OrderPlaced`].
pub const KIND_ORDER_PLACED: u8 = EventKind::Placed as u8;
/// Kind number of [`Event::OrderPaid`].
pub const KIND_ORDER_PAID: u8 = EventKind::Paid as u8;
/// Kind number of [`Event::OrderCancelled`].
pub const KIND_ORDER_CANCELLED: u8 = EventKind::Cancelled as u8;
/// Kind number of [`Event::OrderExpired`].
pub const KIND_ORDER_EXPIRED: u8 = EventKind::Expired as u8;
/// Kind number of [`Event::ProductUpserted`].
pub const KIND_PRODUCT_UPSERTED: u8 = EventKind::ProductUpserted as u8;
/// Kind number of [`Event::StockAdjusted`].
pub const KIND_STOCK_ADJUSTED: u8 = EventKind::StockAdjusted as u8;

const ORDER_PLACED_LEN: usize = 64;
const ORDER_TRANSITION_LEN: usize = 48;
const PRODUCT_UPSERTED_LEN: usize = 48;
const STOCK_ADJUSTED_LEN: usize = 24;

/// The largest encoded event, for callers that encode into a stack buffer.
pub const MAX_EVENT_LEN: usize = ORDER_PLACED_LEN;

const _: () = assert!(KIND_ORDER_PLACED == 0 && KIND_STOCK_ADJUSTED == 5);
const _: () = assert!(ORDER_PLACED_LEN >= PRODUCT_UPSERTED_LEN && ORDER_PLACED_LEN >= STOCK_ADJUSTED_LEN);
const _: () = assert!(ORDER_PLACED_LEN == 7 * 8 + 4 + 4);
const _: () = assert!(PRODUCT_UPSERTED_LEN == 5 * 8 + 4 + 4);
const _: () = assert!(ORDER_TRANSITION_LEN == 5 * 8 + 4 + 4 && ORDER_PLACED_LEN >= ORDER_TRANSITION_LEN);

/// What a transition event repeats about its order (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OrderFacts {
    /// The buyer.
    pub user: u64,
    /// The product.
    pub product: u64,
    /// The unit price charged.
    pub unit_price_cents: u64,
    /// Units.
    pub qty: u32,
}

impl OrderFacts {
    /// The facts of a protocol [`Order`](orderd_protocol::Order).
    #[must_use]
    pub const fn of_order(order: &orderd_protocol::Order) -> Self {
        OrderFacts { user: order.user, product: order.product, unit_price_cents: order.unit_price_cents, qty: order.qty }
    }

    /// The order's amount in cents.
    #[must_use]
    pub const fn amount_cents(&self) -> u64 {
        self.unit_price_cents.saturating_mul(self.qty as u64)
    }
}

/// What a `ProductUpserted` event did to the product's stock (see the
/// module docs). Its wire code is the `u32` at offset 44.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StockRule {
    /// Format 2: available units were set to `stock`, the product created
    /// if new. Only replay of old logs produces it.
    Set = 0,
    /// The product was new: created with `stock` available units.
    Create = 1,
    /// The product existed: its settings changed, its stock counters did
    /// not; `stock` is the units available at that moment.
    Keep = 2,
}

impl StockRule {
    const fn from_code(code: u32) -> Option<StockRule> {
        match code {
            0 => Some(StockRule::Set),
            1 => Some(StockRule::Create),
            2 => Some(StockRule::Keep),
            _ => None,
        }
    }
}

/// A fact about one shard, with the engine time (ms since the Unix epoch)
/// it happened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// An order was placed: stock reserved, key bound to the order.
    OrderPlaced {
        /// When (also the order's `created_ms`).
        time_ms: u64,
        /// The id issued to it.
        order_id: u64,
        /// The request that placed it (its price is the price charged).
        request: PlaceOrder,
    },
    /// A placed order was paid.
    OrderPaid {
        /// When.
        time_ms: u64,
        /// The order.
        order_id: u64,
        /// What it repeats about the order.
        facts: OrderFacts,
    },
    /// A placed order was cancelled; its units went back to stock.
    OrderCancelled {
        /// When.
        time_ms: u64,
        /// The order.
        order_id: u64,
        /// What it repeats about the order.
        facts: OrderFacts,
    },
    /// A placed order's payment window passed; its units went back to stock.
    OrderExpired {
        /// When the engine expired it (at or after its deadline).
        time_ms: u64,
        /// The order.
        order_id: u64,
        /// What it repeats about the order.
        facts: OrderFacts,
    },
    /// A product was created, or its settings were set.
    ProductUpserted {
        /// When.
        time_ms: u64,
        /// The new settings; `stock` as [`StockRule`] says.
        upsert: UpsertProduct,
        /// What happened to the stock counters.
        rule: StockRule,
    },
    /// Units were added to (or removed from) a product's available stock.
    StockAdjusted {
        /// When.
        time_ms: u64,
        /// The product.
        product: u64,
        /// Units added (negative: removed).
        delta: i64,
    },
}

/// Why bytes are not an event of this format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventDecodeError {
    /// The format version is not one this build reads.
    #[error("event format version {version} is not supported (this build reads {OLDEST_EVENT_FORMAT_VERSION} to {EVENT_FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The kind byte names no event.
    #[error("unknown event kind {kind}")]
    UnknownKind {
        /// The kind found.
        kind: u8,
    },
    /// The body is not the size of its kind.
    #[error("event kind {kind} is {expected} bytes, got {actual}")]
    WrongLength {
        /// The kind.
        kind: u8,
        /// Its size.
        expected: usize,
        /// The size given.
        actual: usize,
    },
    /// A reserved field is not zero.
    #[error("event kind {kind} has non-zero reserved bytes")]
    ReservedNotZero {
        /// The kind.
        kind: u8,
    },
    /// A `ProductUpserted` names no [`StockRule`].
    #[error("product upsert with unknown stock rule {code}")]
    UnknownStockRule {
        /// The code found.
        code: u32,
    },
}

/// The output buffer is too small for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event of {needed} bytes does not fit a buffer of {available}")]
pub struct BufferTooSmall {
    /// Bytes the event needs.
    pub needed: usize,
    /// Bytes the buffer has.
    pub available: usize,
}

impl Event {
    /// The kind number (see the module docs).
    #[must_use]
    pub const fn kind(&self) -> u8 {
        match self {
            Event::OrderPlaced { .. } => KIND_ORDER_PLACED,
            Event::OrderPaid { .. } => KIND_ORDER_PAID,
            Event::OrderCancelled { .. } => KIND_ORDER_CANCELLED,
            Event::OrderExpired { .. } => KIND_ORDER_EXPIRED,
            Event::ProductUpserted { .. } => KIND_PRODUCT_UPSERTED,
            Event::StockAdjusted { .. } => KIND_STOCK_ADJUSTED,
        }
    }

    /// The engine time of the event.
    #[must_use]
    pub const fn time_ms(&self) -> u64 {
        match *self {
            Event::OrderPlaced { time_ms, .. }
            | Event::OrderPaid { time_ms, .. }
            | Event::OrderCancelled { time_ms, .. }
            | Event::OrderExpired { time_ms, .. }
            | Event::ProductUpserted { time_ms, .. }
            | Event::StockAdjusted { time_ms, .. } => time_ms,
        }
    }

    /// The order the event is about, if it is about one.
    #[must_use]
    pub const fn order_id(&self) -> Option<u64> {
        match *self {
            Event::OrderPlaced { order_id, .. }
            | Event::OrderPaid { order_id, .. }
            | Event::OrderCancelled { order_id, .. }
            | Event::OrderExpired { order_id, .. } => Some(order_id),
            Event::ProductUpserted { .. } | Event::StockAdjusted { .. } => None,
        }
    }

    /// The size of the encoded body of an event of `kind`, `None` for an
    /// unknown kind.
    #[must_use]
    pub const fn encoded_len_of_kind(kind: u8) -> Option<usize> {
        match kind {
            KIND_ORDER_PLACED => Some(ORDER_PLACED_LEN),
            KIND_ORDER_PAID | KIND_ORDER_CANCELLED | KIND_ORDER_EXPIRED => Some(ORDER_TRANSITION_LEN),
            KIND_PRODUCT_UPSERTED => Some(PRODUCT_UPSERTED_LEN),
            KIND_STOCK_ADJUSTED => Some(STOCK_ADJUSTED_LEN),
            _ => None,
        }
    }

    /// The size of this event's encoded body.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        match self {
            Event::OrderPlaced { .. } => ORDER_PLACED_LEN,
            Event::OrderPaid { .. } | Event::OrderCancelled { .. } | Event::OrderExpired { .. } => ORDER_TRANSITION_LEN,
            Event::ProductUpserted { .. } => PRODUCT_UPSERTED_LEN,
            Event::StockAdjusted { .. } => STOCK_ADJUSTED_LEN,
        }
    }

    /// Writes the body into the front of `out` and returns its length
    /// ([`Event::encoded_len`]). Bytes of `out` past it are untouched.
    ///
    /// # Errors
    /// [`BufferTooSmall`] if `out` is shorter than the body; nothing is written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.encoded_len();
        let Some(body) = out.get_mut(..len) else {
            return Err(BufferTooSmall { needed: len, available: out.len() });
        };
        let mut w = Writer { out: body, at: 0 };
        w.u64(self.time_ms());
        match *self {
            Event::OrderPlaced { order_id, request, .. } => {
                w.u64(order_id);
                w.u64(request.key.hi);
                w.u64(request.key.lo);
                w.u64(request.user);
                w.u64(request.product);
                w.u64(request.unit_price_cents);
                w.u32(request.qty);
                w.u32(0);
            }
            Event::OrderPaid { order_id, facts, .. }
            | Event::OrderCancelled { order_id, facts, .. }
            | Event::OrderExpired { order_id, facts, .. } => {
                w.u64(order_id);
                w.u64(facts.user);
                w.u64(facts.product);
                w.u64(facts.unit_price_cents);
                w.u32(facts.qty);
                w.u32(0);
            }
            Event::ProductUpserted { upsert, rule, .. } => {
                w.u64(upsert.product);
                w.u64(upsert.unit_price_cents);
                w.u64(upsert.stock);
                w.u64(upsert.payment_window_ms);
                w.u32(upsert.per_user_limit);
                w.u32(rule as u32);
            }
            Event::StockAdjusted { product, delta, .. } => {
                w.u64(product);
                w.u64(delta.cast_unsigned());
            }
        }
        debug_assert_eq!(w.at, len, "the layout of kind {} and its length disagree", self.kind());
        Ok(len)
    }

    /// Appends the body to `out`.
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; MAX_EVENT_LEN];
        // `buf` has room for every kind, so this cannot fail.
        if let Ok(len) = self.encode(&mut buf) {
            out.extend_from_slice(&buf[..len]);
        }
    }

    /// Decodes the body of an event of `kind` written in format `version`
    /// (any from [`OLDEST_EVENT_FORMAT_VERSION`] to [`EVENT_FORMAT_VERSION`]).
    /// Never panics, whatever the bytes.
    ///
    /// # Errors
    /// See [`EventDecodeError`].
    pub fn decode(kind: u8, version: u8, bytes: &[u8]) -> Result<Event, EventDecodeError> {
        if !(OLDEST_EVENT_FORMAT_VERSION..=EVENT_FORMAT_VERSION).contains(&version) {
            return Err(EventDecodeError::UnsupportedVersion { version });
        }
        let expected = Event::encoded_len_of_kind(kind).ok_or(EventDecodeError::UnknownKind { kind })?;
        if bytes.len() != expected {
            return Err(EventDecodeError::WrongLength { kind, expected, actual: bytes.len() });
        }
        let mut r = Reader { bytes, at: 0, kind };
        let time_ms = r.u64()?;
        let event = match kind {
            KIND_ORDER_PLACED => {
                let order_id = r.u64()?;
                let key = IdempotencyKey { hi: r.u64()?, lo: r.u64()? };
                let user = r.u64()?;
                let product = r.u64()?;
                let unit_price_cents = r.u64()?;
                let qty = r.u32()?;
                r.reserved_u32()?;
                Event::OrderPlaced { time_ms, order_id, request: PlaceOrder { key, user, product, unit_price_cents, qty } }
            }
            KIND_ORDER_PAID | KIND_ORDER_CANCELLED | KIND_ORDER_EXPIRED => {
                let order_id = r.u64()?;
                let facts = OrderFacts { user: r.u64()?, product: r.u64()?, unit_price_cents: r.u64()?, qty: r.u32()? };
                r.reserved_u32()?;
                match kind {
                    KIND_ORDER_PAID => Event::OrderPaid { time_ms, order_id, facts },
                    KIND_ORDER_CANCELLED => Event::OrderCancelled { time_ms, order_id, facts },
                    _ => Event::OrderExpired { time_ms, order_id, facts },
                }
            }
            KIND_PRODUCT_UPSERTED => {
                let product = r.u64()?;
                let unit_price_cents = r.u64()?;
                let stock = r.u64()?;
                let payment_window_ms = r.u64()?;
                let per_user_limit = r.u32()?;
                let rule = if version == 2 {
                    r.reserved_u32()?;
                    StockRule::Set
                } else {
                    let code = r.u32()?;
                    StockRule::from_code(code).ok_or(EventDecodeError::UnknownStockRule { code })?
                };
                Event::ProductUpserted {
                    time_ms,
                    upsert: UpsertProduct { product, unit_price_cents, stock, payment_window_ms, per_user_limit },
                    rule,
                }
            }
            KIND_STOCK_ADJUSTED => Event::StockAdjusted { time_ms, product: r.u64()?, delta: r.u64()?.cast_signed() },
            _ => return Err(EventDecodeError::UnknownKind { kind }),
        };
        debug_assert_eq!(r.at, expected, "the layout of kind {kind} and its length disagree");
        Ok(event)
    }
}

/// Writes little-endian fields into a slice sized for them.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes<const N: usize>(&mut self, value: [u8; N]) {
        // The caller sized `out` for the kind's layout; a miss is a layout
        // bug, caught by the debug assertion in `encode` and by the tests.
        if let Some(slot) = self.out.get_mut(self.at..self.at + N) {
            slot.copy_from_slice(&value);
        }
        self.at += N;
    }

    fn u64(&mut self, value: u64) {
        self.bytes(value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.bytes(value.to_le_bytes());
    }
}

/// Reads little-endian fields from a slice, failing instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    kind: u8,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], EventDecodeError> {
        let field =
            self.bytes.get(self.at..self.at + N).and_then(|s| <[u8; N]>::try_from(s).ok()).ok_or(EventDecodeError::WrongLength {
                kind: self.kind,
                expected: Event::encoded_len_of_kind(self.kind).unwrap_or(0),
                actual: self.bytes.len(),
            })?;
        self.at += N;
        Ok(field)
    }

    fn u64(&mut self) -> Result<u64, EventDecodeError> {
        self.bytes().map(u64::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, EventDecodeError> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn reserved_u32(&mut self) -> Result<(), EventDecodeError> {
        match self.u32()? {
            0 => Ok(()),
            _ => Err(EventDecodeError::ReservedNotZero { kind: self.kind }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed() -> Event {
        Event::OrderPlaced {
            time_ms: 0x0102_0304_0506_0708,
            order_id: 9,
            request: PlaceOrder { key: IdempotencyKey { hi: 10, lo: 11 }, user: 12, product: 13, unit_price_cents: 14, qty: 15 },
        }
    }

    #[test]
    fn order_placed_is_64_bytes_little_endian_in_documented_order() {
        let mut buf = [0xAAu8; 80];
        assert_eq!(placed().encode(&mut buf), Ok(64));
        assert_eq!(&buf[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        let words: Vec<u64> = buf[8..56].chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(words, [9, 10, 11, 12, 13, 14]);
        assert_eq!(&buf[56..60], &15u32.to_le_bytes());
        assert_eq!(&buf[60..64], &[0, 0, 0, 0], "reserved bytes are zero");
        assert!(buf[64..].iter().all(|&b| b == 0xAA), "bytes past the body are untouched");
    }

    #[test]
    fn a_transition_repeats_its_orders_facts_in_48_bytes() {
        let facts = OrderFacts { user: 3, product: 4, unit_price_cents: 5, qty: 6 };
        let event = Event::OrderCancelled { time_ms: 1, order_id: 2, facts };
        let mut buf = Vec::new();
        event.encode_to_vec(&mut buf);
        assert_eq!(buf.len(), 48);
        let words: Vec<u64> = buf[..40].chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(words, [1, 2, 3, 4, 5]);
        assert_eq!(&buf[40..44], &6u32.to_le_bytes());
        assert_eq!(&buf[44..48], &[0, 0, 0, 0]);
        assert_eq!(Event::decode(event.kind(), EVENT_FORMAT_VERSION, &buf), Ok(event));
        assert_eq!(facts.amount_cents(), 30);
    }

    #[test]
    fn stock_adjusted_stores_a_negative_delta_as_twos_complement() {
        let event = Event::StockAdjusted { time_ms: 1, product: 2, delta: -3 };
        let mut buf = Vec::new();
        event.encode_to_vec(&mut buf);
        assert_eq!(buf.len(), 24);
        assert_eq!(&buf[16..24], &(-3i64).to_le_bytes());
        assert_eq!(Event::decode(event.kind(), EVENT_FORMAT_VERSION, &buf), Ok(event));
    }

    #[test]
    fn encode_into_a_short_buffer_fails_and_writes_nothing() {
        let mut buf = [0u8; 63];
        assert_eq!(placed().encode(&mut buf), Err(BufferTooSmall { needed: 64, available: 63 }));
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn decode_refuses_other_versions_kinds_lengths_and_reserved_bits() {
        let mut buf = Vec::new();
        placed().encode_to_vec(&mut buf);
        assert_eq!(Event::decode(0, 4, &buf), Err(EventDecodeError::UnsupportedVersion { version: 4 }));
        assert_eq!(Event::decode(0, 1, &buf), Err(EventDecodeError::UnsupportedVersion { version: 1 }), "format 1 is refused");
        assert_eq!(Event::decode(6, EVENT_FORMAT_VERSION, &buf), Err(EventDecodeError::UnknownKind { kind: 6 }));
        assert_eq!(
            Event::decode(0, EVENT_FORMAT_VERSION, &buf[..63]),
            Err(EventDecodeError::WrongLength { kind: 0, expected: 64, actual: 63 })
        );
        buf[61] = 1;
        assert_eq!(Event::decode(0, EVENT_FORMAT_VERSION, &buf), Err(EventDecodeError::ReservedNotZero { kind: 0 }));
    }

    fn upserted(rule: StockRule) -> Event {
        let upsert = UpsertProduct { product: 1, unit_price_cents: 2, stock: 3, payment_window_ms: 4, per_user_limit: 5 };
        Event::ProductUpserted { time_ms: 6, upsert, rule }
    }

    #[test]
    fn an_upsert_stores_its_stock_rule_at_offset_44() {
        for (rule, code) in [(StockRule::Set, 0u32), (StockRule::Create, 1), (StockRule::Keep, 2)] {
            let mut buf = Vec::new();
            upserted(rule).encode_to_vec(&mut buf);
            assert_eq!(&buf[44..48], &code.to_le_bytes());
            assert_eq!(Event::decode(KIND_PRODUCT_UPSERTED, EVENT_FORMAT_VERSION, &buf), Ok(upserted(rule)));
        }
        let mut buf = Vec::new();
        upserted(StockRule::Keep).encode_to_vec(&mut buf);
        buf[44] = 3;
        assert_eq!(Event::decode(KIND_PRODUCT_UPSERTED, EVENT_FORMAT_VERSION, &buf), Err(EventDecodeError::UnknownStockRule { code: 3 }));
    }

    #[test]
    fn a_format_2_upsert_replays_as_it_was_acknowledged_setting_available_stock() {
        let mut buf = Vec::new();
        upserted(StockRule::Set).encode_to_vec(&mut buf);
        assert_eq!(Event::decode(KIND_PRODUCT_UPSERTED, 2, &buf), Ok(upserted(StockRule::Set)));
        // Format 2 had no rule: the field was reserved and must be zero.
        buf[44] = 2;
        assert_eq!(Event::decode(KIND_PRODUCT_UPSERTED, 2, &buf), Err(EventDecodeError::ReservedNotZero { kind: KIND_PRODUCT_UPSERTED }));
        // Every other kind reads the same in both formats.
        let mut placed_bytes = Vec::new();
        placed().encode_to_vec(&mut placed_bytes);
        assert_eq!(Event::decode(KIND_ORDER_PLACED, 2, &placed_bytes), Ok(placed()));
    }
}
