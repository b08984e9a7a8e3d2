//! [`OrderRecord`]: one order as a shard stores it, 64 bytes, in memory
//! (`engine::orders`), in checkpoints and in the archive
//! (`engine::archive`).

use orderd_protocol::limits::ORDER_ID_SEQUENCE_BITS;
use orderd_protocol::{IdempotencyKey, Order, OrderState, PlaceOrder};

use crate::engine::event::OrderFacts;

/// One order as the shard stores it: the protocol [`Order`] without its id
/// (the slot gives it). 64 bytes, one cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRecord {
    /// The key that placed it.
    pub key: IdempotencyKey,
    /// The buyer.
    pub user: u64,
    /// The product.
    pub product: u64,
    /// The unit price charged.
    pub unit_price_cents: u64,
    /// Engine time it was placed at.
    pub created_ms: u64,
    /// Engine time it expires at if unpaid; `u64::MAX` for never.
    pub expires_ms: u64,
    /// Units.
    pub qty: u32,
    /// Its state.
    pub state: OrderState,
}

const _: () = assert!(std::mem::size_of::<OrderRecord>() == 64);
// A slot (`u32`) plus one always fits the sequence bits of an order id.
const _: () = assert!(ORDER_ID_SEQUENCE_BITS > u32::BITS);

impl OrderRecord {
    /// What a transition event repeats about this order.
    #[must_use]
    pub const fn facts(&self) -> OrderFacts {
        OrderFacts { user: self.user, product: self.product, unit_price_cents: self.unit_price_cents, qty: self.qty }
    }

    /// The protocol view of this record.
    #[must_use]
    pub const fn to_order(&self, id: u64) -> Order {
        Order {
            id,
            key: self.key,
            user: self.user,
            product: self.product,
            unit_price_cents: self.unit_price_cents,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            qty: self.qty,
            state: self.state,
        }
    }

    /// Whether `request` is the request that placed this order (a retry).
    #[must_use]
    pub fn placed_by(&self, request: &PlaceOrder) -> bool {
        self.key == request.key
            && self.user == request.user
            && self.product == request.product
            && self.unit_price_cents == request.unit_price_cents
            && self.qty == request.qty
    }

    /// Whether the order's payment window has passed at `now_ms`. An order
    /// whose `expires_ms` is `u64::MAX` never expires.
    #[must_use]
    pub const fn is_due(&self, now_ms: u64) -> bool {
        self.expires_ms != u64::MAX && now_ms >= self.expires_ms
    }
}
