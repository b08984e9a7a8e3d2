//! From a log record to a wire [`StreamEvent`].

use orderd_protocol::message::{EventKind, StreamEvent};

use crate::engine::Event;

/// The stream event of record `offset` of core `core`'s log.
///
/// Order events carry the order's user, product, quantity and amount (a
/// transition repeats them, `engine::event`); product events carry no
/// order and no user, `amount_cents` is the unit price, and `qty` is the
/// units available after it (`ProductUpserted`: a new product's stock, an
/// existing product's unchanged count) or the change as a two's-complement
/// i64 (`StockAdjusted`).
#[must_use]
pub fn stream_event(core: u16, offset: u64, event: &Event) -> StreamEvent {
    let (kind, order_id, product, user, amount_cents, qty) = match *event {
        Event::OrderPlaced { order_id, request, .. } => (
            EventKind::Placed,
            order_id,
            request.product,
            request.user,
            request.unit_price_cents.saturating_mul(u64::from(request.qty)),
            u64::from(request.qty),
        ),
        Event::OrderPaid { order_id, facts, .. } => {
            (EventKind::Paid, order_id, facts.product, facts.user, facts.amount_cents(), u64::from(facts.qty))
        }
        Event::OrderCancelled { order_id, facts, .. } => {
            (EventKind::Cancelled, order_id, facts.product, facts.user, facts.amount_cents(), u64::from(facts.qty))
        }
        Event::OrderExpired { order_id, facts, .. } => {
            (EventKind::Expired, order_id, facts.product, facts.user, facts.amount_cents(), u64::from(facts.qty))
        }
        Event::ProductUpserted { upsert, .. } => (EventKind::ProductUpserted, 0, upsert.product, 0, upsert.unit_price_cents, upsert.stock),
        Event::StockAdjusted { product, delta, .. } => (EventKind::StockAdjusted, 0, product, 0, 0, delta.cast_unsigned()),
    };
    StreamEvent { offset, order_id, product, user, amount_cents, time_ms: event.time_ms(), qty, core, kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OrderFacts;
    use orderd_protocol::{IdempotencyKey, PlaceOrder};

    #[test]
    fn an_order_and_its_transition_describe_the_same_order() {
        let request = PlaceOrder { key: IdempotencyKey { hi: 1, lo: 2 }, user: 7, product: 9, unit_price_cents: 250, qty: 3 };
        let placed = stream_event(2, 10, &Event::OrderPlaced { time_ms: 5, order_id: 42, request });
        let facts = OrderFacts { user: 7, product: 9, unit_price_cents: 250, qty: 3 };
        let paid = stream_event(2, 11, &Event::OrderPaid { time_ms: 6, order_id: 42, facts });
        assert_eq!(
            (placed.kind, placed.order_id, placed.user, placed.product, placed.qty, placed.amount_cents),
            (EventKind::Placed, 42, 7, 9, 3, 750)
        );
        assert_eq!((paid.kind, paid.order_id, paid.user, paid.product, paid.qty, paid.amount_cents), (EventKind::Paid, 42, 7, 9, 3, 750));
        assert_eq!((paid.core, paid.offset, paid.time_ms), (2, 11, 6));
        let adjusted = stream_event(0, 1, &Event::StockAdjusted { time_ms: 1, product: 9, delta: -4 });
        assert_eq!(adjusted.qty.cast_signed(), -4);
    }
}
