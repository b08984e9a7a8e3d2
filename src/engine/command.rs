//! What a shard can be asked to do: the engine's own [`Command`] type, and
//! its conversion from a validated zero-copy wire request.
//!
//! The engine does not take [`orderd_protocol::Request`] directly: that type
//! also carries connection-level requests (subscribe, stats) that no shard
//! serves, and routing fields (the product of a by-key lookup) that the
//! shard does not need. A `Command` is small, `Copy` and allocation free.

use orderd_protocol::message::ArchivedRequest;
use orderd_protocol::{IdempotencyKey, PlaceOrder, UpsertProduct};

/// One request to one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Place an order (reserve stock).
    PlaceOrder(PlaceOrder),
    /// Confirm payment of a placed order.
    Pay {
        /// The order.
        order_id: u64,
    },
    /// Cancel a placed order; its units return to stock.
    Cancel {
        /// The order.
        order_id: u64,
    },
    /// Read an order by id.
    GetOrder {
        /// The order.
        order_id: u64,
    },
    /// Read an order by the idempotency key that placed it.
    GetOrderByKey {
        /// The key.
        key: IdempotencyKey,
    },
    /// Read a product's catalogue entry and stock counters.
    GetStock {
        /// The product.
        product: u64,
    },
    /// Create a product or set all of its fields.
    Upsert(UpsertProduct),
    /// Add (or, negative, remove) available units of a product.
    AdjustStock {
        /// The product.
        product: u64,
        /// Units to add; negative to remove.
        delta: i64,
    },
}

impl Command {
    /// Whether the command asks for a state change (and so needs log room,
    /// and its success waits for the flush that covers it).
    #[must_use]
    pub const fn changes_state(&self) -> bool {
        matches!(
            self,
            Command::PlaceOrder(_) | Command::Pay { .. } | Command::Cancel { .. } | Command::Upsert(_) | Command::AdjustStock { .. }
        )
    }

    /// The command a validated wire request asks of its shard, or `None` for
    /// a request that is not a shard command (subscribe, stats): the server
    /// answers those itself.
    ///
    /// Copies the plain fields out of the archive; allocates nothing.
    #[must_use]
    pub fn from_archived(request: &ArchivedRequest) -> Option<Command> {
        let command = match request {
            ArchivedRequest::PlaceOrder(p) => Command::PlaceOrder(PlaceOrder {
                key: p.key.to_native(),
                user: p.user.to_native(),
                product: p.product.to_native(),
                unit_price_cents: p.unit_price_cents.to_native(),
                qty: p.qty.to_native(),
            }),
            ArchivedRequest::PayOrder(r) => Command::Pay { order_id: r.order_id.to_native() },
            ArchivedRequest::CancelOrder(r) => Command::Cancel { order_id: r.order_id.to_native() },
            ArchivedRequest::GetOrder(r) => Command::GetOrder { order_id: r.order_id.to_native() },
            ArchivedRequest::GetOrderByKey(r) => Command::GetOrderByKey { key: r.key.to_native() },
            ArchivedRequest::GetStock(r) => Command::GetStock { product: r.product.to_native() },
            ArchivedRequest::UpsertProduct(u) => Command::Upsert(UpsertProduct {
                product: u.product.to_native(),
                unit_price_cents: u.unit_price_cents.to_native(),
                stock: u.stock.to_native(),
                payment_window_ms: u.payment_window_ms.to_native(),
                per_user_limit: u.per_user_limit.to_native(),
            }),
            ArchivedRequest::AdjustStock(a) => Command::AdjustStock { product: a.product.to_native(), delta: a.delta.to_native() },
            ArchivedRequest::Subscribe(_)
            | ArchivedRequest::Stats
            | ArchivedRequest::Aggregates(_)
            | ArchivedRequest::ListProducts(_)
            | ArchivedRequest::Checkpoint
            | ArchivedRequest::StorageStats
            | ArchivedRequest::ClusterMap
            | ArchivedRequest::MoveShard(_)
            | ArchivedRequest::Replicate(_) => return None,
        };
        Some(command)
    }

    /// Whether the command may change the shard's state (and so produce
    /// events). Reads never do, except that any command first expires the
    /// orders whose payment window has passed.
    #[must_use]
    pub const fn is_write(&self) -> bool {
        matches!(
            self,
            Command::PlaceOrder(_) | Command::Pay { .. } | Command::Cancel { .. } | Command::Upsert(_) | Command::AdjustStock { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_protocol::message::{AdjustStock, KeyRef, OrderRef, ProductRef, StreamStart, Subscribe};
    use orderd_protocol::Request;

    fn through_archive(request: &Request) -> Option<Command> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(request).expect("a request serialises");
        let archived = rkyv::access::<ArchivedRequest, rkyv::rancor::Error>(&bytes).expect("a request validates");
        Command::from_archived(archived)
    }

    #[test]
    fn every_shard_request_converts_field_for_field() {
        let place = PlaceOrder { key: IdempotencyKey { hi: 1, lo: 2 }, user: 3, product: 4, unit_price_cents: 5, qty: 6 };
        let upsert = UpsertProduct { product: 7, unit_price_cents: 8, stock: 9, payment_window_ms: 10, per_user_limit: 11 };
        let key = IdempotencyKey { hi: u64::MAX, lo: 12 };
        let cases = [
            (Request::PlaceOrder(place), Command::PlaceOrder(place)),
            (Request::PayOrder(OrderRef { order_id: 13 }), Command::Pay { order_id: 13 }),
            (Request::CancelOrder(OrderRef { order_id: 14 }), Command::Cancel { order_id: 14 }),
            (Request::GetOrder(OrderRef { order_id: 15 }), Command::GetOrder { order_id: 15 }),
            (Request::GetOrderByKey(KeyRef { key, product: 16 }), Command::GetOrderByKey { key }),
            (Request::GetStock(ProductRef { product: 17 }), Command::GetStock { product: 17 }),
            (Request::UpsertProduct(upsert), Command::Upsert(upsert)),
            (Request::AdjustStock(AdjustStock { product: 18, delta: -19 }), Command::AdjustStock { product: 18, delta: -19 }),
        ];
        for (request, command) in cases {
            assert_eq!(through_archive(&request), Some(command), "{request:?}");
        }
    }

    #[test]
    fn subscribe_and_stats_are_not_shard_commands() {
        let subscribe = Request::Subscribe(Subscribe { start: StreamStart::Now, product: 0, kinds: 0 });
        assert_eq!(through_archive(&subscribe), None);
        assert_eq!(through_archive(&Request::Stats), None);
    }
}
