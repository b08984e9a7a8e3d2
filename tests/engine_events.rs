//! The event encoding: every event survives a round trip, and no bytes, kind
//! or version make the decoder panic.

use orderd::engine::event::MAX_EVENT_LEN;
use orderd::engine::{Event, EventDecodeError, OrderFacts, StockRule, EVENT_FORMAT_VERSION};
use orderd_protocol::{IdempotencyKey, PlaceOrder, UpsertProduct};
use proptest::prelude::*;

fn facts() -> impl Strategy<Value = OrderFacts> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(user, product, unit_price_cents, qty)| OrderFacts {
        user,
        product,
        unit_price_cents,
        qty,
    })
}

fn event() -> impl Strategy<Value = Event> {
    let placed = (any::<u64>(), any::<u64>(), any::<u128>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
        |(time_ms, order_id, key, user, product, unit_price_cents, qty)| Event::OrderPlaced {
            time_ms,
            order_id,
            request: PlaceOrder { key: IdempotencyKey::from(key), user, product, unit_price_cents, qty },
        },
    );
    let rule = prop_oneof![Just(StockRule::Set), Just(StockRule::Create), Just(StockRule::Keep)];
    let upserted = (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), rule).prop_map(
        |(time_ms, product, unit_price_cents, stock, payment_window_ms, per_user_limit, rule)| Event::ProductUpserted {
            time_ms,
            upsert: UpsertProduct { product, unit_price_cents, stock, payment_window_ms, per_user_limit },
            rule,
        },
    );
    prop_oneof![
        placed,
        (any::<u64>(), any::<u64>(), facts()).prop_map(|(time_ms, order_id, facts)| Event::OrderPaid { time_ms, order_id, facts }),
        (any::<u64>(), any::<u64>(), facts()).prop_map(|(time_ms, order_id, facts)| Event::OrderCancelled { time_ms, order_id, facts }),
        (any::<u64>(), any::<u64>(), facts()).prop_map(|(time_ms, order_id, facts)| Event::OrderExpired { time_ms, order_id, facts }),
        upserted,
        (any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(time_ms, product, delta)| Event::StockAdjusted { time_ms, product, delta }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_event_decodes_to_itself(event in event()) {
        let mut buf = [0u8; MAX_EVENT_LEN];
        let len = event.encode(&mut buf).expect("MAX_EVENT_LEN fits every event");
        prop_assert_eq!(len, event.encoded_len());
        prop_assert_eq!(Event::encoded_len_of_kind(event.kind()), Some(len));
        prop_assert_eq!(Event::decode(event.kind(), EVENT_FORMAT_VERSION, &buf[..len]), Ok(event));
        let mut vec = Vec::new();
        event.encode_to_vec(&mut vec);
        prop_assert_eq!(&vec[..], &buf[..len]);
    }

    #[test]
    fn a_truncated_or_extended_event_is_a_length_error(event in event(), cut in 0usize..MAX_EVENT_LEN, extra in 1usize..8) {
        let mut buf = Vec::new();
        event.encode_to_vec(&mut buf);
        let cut = cut % buf.len();
        let expected = event.encoded_len();
        prop_assert_eq!(
            Event::decode(event.kind(), EVENT_FORMAT_VERSION, &buf[..cut]),
            Err(EventDecodeError::WrongLength { kind: event.kind(), expected, actual: cut })
        );
        buf.extend(std::iter::repeat_n(0, extra));
        prop_assert_eq!(
            Event::decode(event.kind(), EVENT_FORMAT_VERSION, &buf),
            Err(EventDecodeError::WrongLength { kind: event.kind(), expected, actual: expected + extra })
        );
    }

    #[test]
    fn garbage_never_panics_the_decoder(kind in any::<u8>(), version in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        // Whatever comes out, it must come out: a value or an error.
        if let Ok(event) = Event::decode(kind, version, &bytes) {
            prop_assert_eq!(version, EVENT_FORMAT_VERSION);
            prop_assert_eq!(event.kind(), kind);
            let mut again = Vec::new();
            event.encode_to_vec(&mut again);
            prop_assert_eq!(again, bytes, "an accepted body re-encodes to the same bytes");
        }
    }

    #[test]
    fn garbage_of_the_right_length_decodes_or_is_refused_for_its_reserved_bytes(
        kind in 0u8..6,
        version in 2u8..=EVENT_FORMAT_VERSION,
        bytes in prop::collection::vec(any::<u8>(), 64),
    ) {
        let len = Event::encoded_len_of_kind(kind).unwrap();
        match Event::decode(kind, version, &bytes[..len]) {
            Ok(event) => prop_assert_eq!(event.kind(), kind),
            Err(EventDecodeError::UnknownStockRule { code }) => {
                prop_assert!(kind == 4 && version == 3 && code > 2, "kind {kind} version {version} code {code}");
            }
            Err(error) => prop_assert_eq!(error, EventDecodeError::ReservedNotZero { kind }),
        }
    }
}
