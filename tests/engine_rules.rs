//! The engine's rules, one at a time: each rejection reason, each lifecycle
//! transition, expiry at the deadline, the clock, the catalogue admin
//! commands and replay.

use orderd::engine::{Command, Event, EventError, OrderFacts, ReplayError, Shard, ShardConfig, StockRule};
use orderd_protocol::limits::MAX_ORDER_QTY;
use orderd_protocol::shard::{order_id, shard_of_order};
use orderd_protocol::{IdempotencyKey, Order, OrderState, PlaceOrder, Reply, Status, StockInfo, UpsertProduct};

const SHARD: u16 = 7;
const PRODUCT: u64 = 42;
const PRICE: u64 = 1_999;
const WINDOW_MS: u64 = 1_000;
const T0: u64 = 1_700_000_000_000;

struct Fixture {
    shard: Shard,
    events: Vec<Event>,
}

impl Fixture {
    /// A shard with one product: 10 units, limit 3 per user, 1 s window.
    fn new() -> Self {
        Fixture::with_config(ShardConfig::new(SHARD))
    }

    fn with_config(config: ShardConfig) -> Self {
        let mut f = Fixture { shard: Shard::new(config), events: Vec::new() };
        f.upsert(upsert(PRODUCT, PRICE, 10, WINDOW_MS, 3), T0);
        f
    }

    fn apply(&mut self, cmd: Command, now_ms: u64) -> Reply {
        let reply = self.shard.apply(&cmd, now_ms, &mut self.events);
        assert_eq!(self.shard.check_invariants(), Ok(()), "after {cmd:?}");
        reply
    }

    fn upsert(&mut self, u: UpsertProduct, now_ms: u64) -> Reply {
        self.apply(Command::Upsert(u), now_ms)
    }

    fn place(&mut self, request: PlaceOrder, now_ms: u64) -> Reply {
        self.apply(Command::PlaceOrder(request), now_ms)
    }

    fn placed(&mut self, request: PlaceOrder, now_ms: u64) -> Order {
        match self.place(request, now_ms) {
            Reply::Order(order) => order,
            other => panic!("expected an order, got {other:?}"),
        }
    }

    fn stock(&self) -> StockInfo {
        self.shard.stock(PRODUCT).expect("the product exists")
    }

    /// Events pushed since the last call.
    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

fn upsert(product: u64, unit_price_cents: u64, stock: u64, payment_window_ms: u64, per_user_limit: u32) -> UpsertProduct {
    UpsertProduct { product, unit_price_cents, stock, payment_window_ms, per_user_limit }
}

fn request(key: u128, user: u64, qty: u32) -> PlaceOrder {
    PlaceOrder { key: IdempotencyKey::timed(T0, key), user, product: PRODUCT, unit_price_cents: PRICE, qty }
}

fn rejected(status: Status, detail: u64) -> Reply {
    Reply::rejected(status, detail)
}

fn order_state(reply: &Reply) -> OrderState {
    match reply {
        Reply::Order(order) => order.state,
        other => panic!("expected an order, got {other:?}"),
    }
}

// ---- placing orders -------------------------------------------------------

#[test]
fn placing_an_order_reserves_its_units_and_answers_a_placed_order() {
    let mut f = Fixture::new();
    f.take_events();
    let order = f.placed(request(1, 100, 2), T0 + 5);
    assert_eq!(order.id, order_id(u32::from(SHARD), 1).unwrap());
    assert_eq!(shard_of_order(order.id), u32::from(SHARD));
    assert_eq!(order.state, OrderState::Placed);
    assert_eq!((order.qty, order.unit_price_cents, order.user, order.product), (2, PRICE, 100, PRODUCT));
    assert_eq!((order.created_ms, order.expires_ms), (T0 + 5, T0 + 5 + WINDOW_MS));
    let s = f.stock();
    assert_eq!((s.available, s.reserved, s.paid, s.supplied), (8, 2, 0, 10));
    assert_eq!(f.shard.held_units(100, PRODUCT), 2);
    assert_eq!(f.take_events(), [Event::OrderPlaced { time_ms: T0 + 5, order_id: order.id, request: request(1, 100, 2) }]);
}

#[test]
fn order_ids_start_at_sequence_one_and_count_up() {
    let mut f = Fixture::new();
    let first = f.placed(request(1, 100, 1), T0);
    let second = f.placed(request(2, 101, 1), T0);
    assert_eq!(first.id, (u64::from(SHARD) << 48) | 1);
    assert_eq!(second.id, first.id + 1);
}

#[test]
fn a_retry_with_the_identical_request_answers_the_original_order_and_changes_nothing() {
    let mut f = Fixture::new();
    let original = f.placed(request(1, 100, 2), T0);
    f.take_events();
    let before = f.shard.clone();
    assert_eq!(f.place(request(1, 100, 2), T0 + 10), Reply::Order(original));
    assert_eq!(f.shard, before);
    assert!(f.take_events().is_empty());
    assert_eq!(f.shard.stats().orders_placed, 1);
}

#[test]
fn a_retry_after_the_product_sold_out_still_answers_the_original_order() {
    let mut f = Fixture::new();
    let original = f.placed(request(1, 100, 2), T0);
    f.apply(Command::AdjustStock { product: PRODUCT, delta: -8 }, T0);
    assert_eq!(f.stock().available, 0);
    assert_eq!(f.place(request(1, 100, 2), T0 + 1), Reply::Order(original));
}

#[test]
fn a_retry_of_a_paid_or_cancelled_order_answers_its_current_state() {
    let mut f = Fixture::new();
    let paid = f.placed(request(1, 100, 1), T0);
    let cancelled = f.placed(request(2, 101, 1), T0);
    f.apply(Command::Pay { order_id: paid.id }, T0 + 1);
    f.apply(Command::Cancel { order_id: cancelled.id }, T0 + 1);
    assert_eq!(order_state(&f.place(request(1, 100, 1), T0 + 2)), OrderState::Paid);
    assert_eq!(order_state(&f.place(request(2, 101, 1), T0 + 2)), OrderState::Cancelled);
}

#[test]
fn a_retry_of_an_expired_order_answers_it_as_expired() {
    let mut f = Fixture::new();
    f.placed(request(1, 100, 1), T0);
    assert_eq!(order_state(&f.place(request(1, 100, 1), T0 + WINDOW_MS)), OrderState::Expired);
}

#[test]
fn a_key_reused_for_a_different_request_is_key_reused_with_the_original_order_id() {
    let mut f = Fixture::new();
    let original = f.placed(request(1, 100, 1), T0);
    let before = f.shard.clone();
    for altered in [
        request(1, 101, 1),
        request(1, 100, 2),
        PlaceOrder { unit_price_cents: PRICE + 1, ..request(1, 100, 1) },
        PlaceOrder { product: PRODUCT + 1, ..request(1, 100, 1) },
    ] {
        assert_eq!(f.place(altered, T0), rejected(Status::KeyReused, original.id), "{altered:?}");
    }
    assert_eq!(f.shard, before);
}

#[test]
fn an_unknown_product_is_no_such_product() {
    let mut f = Fixture::new();
    let r = PlaceOrder { product: PRODUCT + 1, ..request(1, 100, 1) };
    assert_eq!(f.place(r, T0), rejected(Status::NoSuchProduct, 0));
    let r = PlaceOrder { product: 0, ..request(2, 100, 1) };
    assert_eq!(f.place(r, T0), rejected(Status::NoSuchProduct, 0));
}

#[test]
fn a_stale_expected_price_is_price_changed_with_the_current_price() {
    let mut f = Fixture::new();
    let r = PlaceOrder { unit_price_cents: PRICE - 1, ..request(1, 100, 1) };
    assert_eq!(f.place(r, T0), rejected(Status::PriceChanged, PRICE));
}

#[test]
fn a_quantity_of_zero_or_above_the_maximum_is_invalid_request_naming_field_five() {
    let mut f = Fixture::new();
    f.apply(Command::AdjustStock { product: PRODUCT, delta: i64::MAX - 10 }, T0);
    f.upsert(upsert(PRODUCT, PRICE, 0, WINDOW_MS, 0), T0);
    assert_eq!(f.place(request(1, 100, 0), T0), rejected(Status::InvalidRequest, 5));
    assert_eq!(f.place(request(2, 100, MAX_ORDER_QTY + 1), T0), rejected(Status::InvalidRequest, 5));
    assert_eq!(order_state(&f.place(request(3, 100, MAX_ORDER_QTY), T0)), OrderState::Placed);
}

#[test]
fn an_order_above_the_stock_is_sold_out_with_the_units_left() {
    let mut f = Fixture::new();
    f.apply(Command::AdjustStock { product: PRODUCT, delta: -8 }, T0);
    f.upsert(upsert(PRODUCT, PRICE, 0, WINDOW_MS, 0), T0);
    assert_eq!(f.place(request(1, 100, 3), T0), rejected(Status::SoldOut, 2));
    f.placed(request(2, 100, 2), T0);
    assert_eq!(f.place(request(3, 101, 1), T0), rejected(Status::SoldOut, 0));
}

#[test]
fn buying_past_the_per_user_limit_is_limit_exceeded_with_the_units_still_allowed() {
    let mut f = Fixture::new();
    f.placed(request(1, 100, 2), T0);
    assert_eq!(f.place(request(2, 100, 2), T0), rejected(Status::LimitExceeded, 1));
    f.placed(request(3, 100, 1), T0);
    assert_eq!(f.place(request(4, 100, 1), T0), rejected(Status::LimitExceeded, 0));
    // Another user is not affected.
    f.placed(request(5, 101, 3), T0);
}

#[test]
fn the_checks_run_in_the_documented_order() {
    let mut f = Fixture::new();
    // Wrong price and zero quantity: the price is checked first.
    let r = PlaceOrder { unit_price_cents: 1, ..request(1, 100, 0) };
    assert_eq!(f.place(r, T0), rejected(Status::PriceChanged, PRICE));
    // Above the stock and above the limit: sold out is checked first.
    assert_eq!(f.place(request(2, 100, 11), T0), rejected(Status::SoldOut, 10));
}

#[test]
fn a_shard_at_its_order_bound_answers_orders_full() {
    let config = ShardConfig { max_orders: 2, ..ShardConfig::new(SHARD) };
    let mut f = Fixture::with_config(config);
    f.placed(request(1, 100, 1), T0);
    f.placed(request(2, 101, 1), T0);
    let before = f.shard.clone();
    assert_eq!(f.place(request(3, 102, 1), T0), rejected(Status::OrdersFull, 0));
    assert_eq!(f.shard, before);
    // A retry of a held order is still answered.
    assert_eq!(order_state(&f.place(request(1, 100, 1), T0)), OrderState::Placed);
}

#[test]
fn a_shard_at_its_idempotency_key_bound_answers_orders_full() {
    let config = ShardConfig { max_idempotency_keys: 1, ..ShardConfig::new(SHARD) };
    let mut f = Fixture::with_config(config);
    f.placed(request(1, 100, 1), T0);
    assert_eq!(f.place(request(2, 101, 1), T0), rejected(Status::OrdersFull, 0));
}

#[test]
fn a_rejection_records_nothing_and_its_retry_is_evaluated_again() {
    let mut f = Fixture::new();
    f.apply(Command::AdjustStock { product: PRODUCT, delta: -10 }, T0);
    f.take_events();
    let before = f.shard.clone();
    assert_eq!(f.place(request(1, 100, 1), T0), rejected(Status::SoldOut, 0));
    assert_eq!(f.shard, before);
    assert!(f.take_events().is_empty());
    assert_eq!(f.shard.stats().orders_rejected, 1);
    f.apply(Command::AdjustStock { product: PRODUCT, delta: 1 }, T0);
    assert_eq!(order_state(&f.place(request(1, 100, 1), T0)), OrderState::Placed);
}

// ---- lifecycle ------------------------------------------------------------

#[test]
fn paying_a_placed_order_moves_its_units_from_reserved_to_paid() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 2), T0);
    f.take_events();
    assert_eq!(order_state(&f.apply(Command::Pay { order_id: order.id }, T0 + 1)), OrderState::Paid);
    let s = f.stock();
    assert_eq!((s.available, s.reserved, s.paid, s.supplied), (8, 0, 2, 10));
    assert_eq!(f.shard.held_units(100, PRODUCT), 2, "paid units still count toward the limit");
    assert_eq!(f.take_events(), [Event::OrderPaid { time_ms: T0 + 1, order_id: order.id, facts: OrderFacts::of_order(&order) }]);
}

#[test]
fn paying_a_paid_order_again_answers_the_paid_order_and_records_nothing() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    let first = f.apply(Command::Pay { order_id: order.id }, T0 + 1);
    f.take_events();
    assert_eq!(f.apply(Command::Pay { order_id: order.id }, T0 + 2), first);
    assert!(f.take_events().is_empty());
}

#[test]
fn paying_a_cancelled_order_is_order_cancelled() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    f.apply(Command::Cancel { order_id: order.id }, T0 + 1);
    assert_eq!(f.apply(Command::Pay { order_id: order.id }, T0 + 2), rejected(Status::OrderCancelled, 0));
}

#[test]
fn paying_an_expired_order_is_order_expired() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    assert_eq!(f.apply(Command::Pay { order_id: order.id }, T0 + 5 * WINDOW_MS), rejected(Status::OrderExpired, 0));
}

#[test]
fn cancelling_returns_the_units_to_stock_and_to_the_users_limit() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 3), T0);
    assert_eq!(f.place(request(2, 100, 1), T0), rejected(Status::LimitExceeded, 0));
    f.take_events();
    assert_eq!(order_state(&f.apply(Command::Cancel { order_id: order.id }, T0 + 1)), OrderState::Cancelled);
    assert_eq!(f.take_events(), [Event::OrderCancelled { time_ms: T0 + 1, order_id: order.id, facts: OrderFacts::of_order(&order) }]);
    let s = f.stock();
    assert_eq!((s.available, s.reserved, s.paid, s.supplied), (10, 0, 0, 10));
    assert_eq!(f.shard.held_units(100, PRODUCT), 0);
    f.placed(request(2, 100, 3), T0 + 2);
}

#[test]
fn cancelling_a_cancelled_order_again_answers_the_cancelled_order() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    let first = f.apply(Command::Cancel { order_id: order.id }, T0 + 1);
    f.take_events();
    assert_eq!(f.apply(Command::Cancel { order_id: order.id }, T0 + 2), first);
    assert!(f.take_events().is_empty());
}

#[test]
fn cancelling_a_paid_order_is_order_paid() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    f.apply(Command::Pay { order_id: order.id }, T0 + 1);
    assert_eq!(f.apply(Command::Cancel { order_id: order.id }, T0 + 2), rejected(Status::OrderPaid, 0));
}

#[test]
fn cancelling_an_expired_order_is_order_expired() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    assert_eq!(f.apply(Command::Cancel { order_id: order.id }, T0 + WINDOW_MS), rejected(Status::OrderExpired, 0));
}

#[test]
fn an_unknown_order_id_is_no_such_order_for_every_order_command() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    let other_shard = order_id(u32::from(SHARD) + 1, 1).unwrap();
    for id in [0, order.id + 1, other_shard, u64::MAX] {
        for cmd in [Command::Pay { order_id: id }, Command::Cancel { order_id: id }, Command::GetOrder { order_id: id }] {
            assert_eq!(f.apply(cmd, T0), rejected(Status::NoSuchOrder, 0), "{cmd:?}");
        }
    }
    assert_eq!(f.apply(Command::GetOrderByKey { key: IdempotencyKey::timed(T0, 2) }, T0), rejected(Status::NoSuchOrder, 0));
}

#[test]
fn an_order_is_still_payable_one_ms_before_its_deadline() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    assert_eq!(order_state(&f.apply(Command::Pay { order_id: order.id }, order.expires_ms - 1)), OrderState::Paid);
}

#[test]
fn an_order_expires_at_exactly_its_deadline() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 2), T0);
    f.take_events();
    assert_eq!(f.apply(Command::Pay { order_id: order.id }, order.expires_ms), rejected(Status::OrderExpired, 0));
    assert_eq!(
        f.take_events(),
        [Event::OrderExpired { time_ms: order.expires_ms, order_id: order.id, facts: OrderFacts::of_order(&order) }]
    );
    let s = f.stock();
    assert_eq!((s.available, s.reserved), (10, 0));
    assert_eq!(f.shard.held_units(100, PRODUCT), 0);
}

#[test]
fn expire_due_expires_earliest_deadline_first_and_next_expiry_follows() {
    let mut f = Fixture::new();
    let a = f.placed(request(1, 100, 1), T0 + 20);
    let b = f.placed(request(2, 101, 1), T0 + 20);
    let c = f.placed(request(3, 102, 1), T0 + 30);
    f.take_events();
    assert_eq!(f.shard.next_expiry(), Some(T0 + 20 + WINDOW_MS));
    assert_eq!(f.shard.expire_due(T0 + 20 + WINDOW_MS - 1, &mut f.events), 0);
    assert_eq!(f.shard.expire_due(T0 + 20 + WINDOW_MS, &mut f.events), 2);
    let expired: Vec<u64> = f.take_events().iter().filter_map(Event::order_id).collect();
    assert_eq!(expired, [a.id, b.id]);
    assert_eq!(f.shard.next_expiry(), Some(c.expires_ms));
    f.apply(Command::Pay { order_id: c.id }, T0 + 40);
    assert_eq!(f.shard.next_expiry(), None, "a paid order has no deadline");
}

#[test]
fn an_order_of_a_product_without_a_window_never_expires() {
    let mut f = Fixture::new();
    f.upsert(upsert(PRODUCT, PRICE, 10, 0, 0), T0);
    let order = f.placed(request(1, 100, 1), T0);
    assert_eq!(order.expires_ms, u64::MAX);
    assert_eq!(f.shard.next_expiry(), None);
    assert_eq!(f.shard.expire_due(u64::MAX, &mut f.events), 0);
    assert_eq!(order_state(&f.apply(Command::Pay { order_id: order.id }, u64::MAX)), OrderState::Paid);
}

#[test]
fn a_new_window_applies_to_new_orders_only() {
    let mut f = Fixture::new();
    let old = f.placed(request(1, 100, 1), T0);
    f.upsert(upsert(PRODUCT, PRICE, 10, 5 * WINDOW_MS, 3), T0);
    let new = f.placed(request(2, 101, 1), T0);
    assert_eq!((old.expires_ms, new.expires_ms), (T0 + WINDOW_MS, T0 + 5 * WINDOW_MS));
}

#[test]
fn a_clock_that_steps_back_changes_nothing() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0 + 500);
    // The clock steps back: the order is decided at the engine's time.
    let later = f.placed(request(2, 101, 1), T0);
    assert_eq!(later.created_ms, T0 + 500);
    // Expiry at the deadline, then a step back: still expired.
    f.apply(Command::GetStock { product: PRODUCT }, order.expires_ms);
    assert_eq!(f.apply(Command::Pay { order_id: order.id }, T0), rejected(Status::OrderExpired, 0));
    assert_eq!(f.shard.clock_ms(), order.expires_ms);
}

// ---- reads and the catalogue ------------------------------------------------

#[test]
fn an_order_can_be_read_by_id_and_by_key() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    assert_eq!(f.apply(Command::GetOrder { order_id: order.id }, T0), Reply::Order(order));
    assert_eq!(f.apply(Command::GetOrderByKey { key: order.key }, T0), Reply::Order(order));
}

#[test]
fn get_stock_answers_the_counters_and_unknown_products_are_no_such_product() {
    let mut f = Fixture::new();
    assert_eq!(f.apply(Command::GetStock { product: PRODUCT }, T0), Reply::Stock(f.stock()));
    assert_eq!(f.apply(Command::GetStock { product: 9 }, T0), rejected(Status::NoSuchProduct, 0));
}

#[test]
fn an_upsert_of_an_existing_product_changes_its_settings_and_keeps_its_stock() {
    let mut f = Fixture::new();
    let a = f.placed(request(1, 100, 2), T0);
    f.placed(request(2, 101, 3), T0);
    f.apply(Command::Pay { order_id: a.id }, T0);
    f.take_events();
    let reply = f.upsert(upsert(PRODUCT, PRICE + 1, 4, WINDOW_MS, 3), T0);
    let expected = StockInfo {
        product: PRODUCT,
        unit_price_cents: PRICE + 1,
        available: 5,
        reserved: 3,
        paid: 2,
        supplied: 10,
        payment_window_ms: WINDOW_MS,
        per_user_limit: 3,
    };
    assert_eq!(reply, Reply::Stock(expected));
    // The event records the units available at that moment, not the request's.
    let events = f.take_events();
    assert!(matches!(events[..], [Event::ProductUpserted { upsert: UpsertProduct { stock: 5, .. }, rule: StockRule::Keep, .. }]));
}

#[test]
fn reloading_the_catalogue_during_a_sale_puts_no_sold_unit_back_on_sale() {
    // The defect: a reload set `available` to the catalogue's stock again.
    let mut f = Fixture::new();
    for key in 1..=3 {
        f.placed(request(key, 100 + key as u64, 2), T0);
    }
    let before = f.stock();
    assert_eq!((before.available, before.supplied), (4, 10));
    f.upsert(upsert(PRODUCT, PRICE, 10, WINDOW_MS, 3), T0);
    assert_eq!(f.stock(), before);
    // Stock moves through adjustments.
    f.apply(Command::AdjustStock { product: PRODUCT, delta: 5 }, T0);
    assert_eq!((f.stock().available, f.stock().supplied), (9, 15));
}

#[test]
fn a_format_2_upsert_replays_setting_available_stock_as_it_did_when_acknowledged() {
    // A log written before format 3 replays to the state its clients saw.
    let mut f = Fixture::new();
    f.placed(request(1, 100, 2), T0);
    let mut events = f.take_events();
    let old = upsert(PRODUCT, PRICE, 10, WINDOW_MS, 3);
    events.push(Event::ProductUpserted { time_ms: T0, upsert: old, rule: StockRule::Set });
    let replayed = Shard::replay(ShardConfig::new(SHARD), &events).expect("a legal history");
    let s = replayed.stock(PRODUCT).expect("the product exists");
    assert_eq!((s.available, s.reserved, s.supplied), (10, 2, 12));
}

#[test]
fn an_upsert_with_product_zero_or_a_price_out_of_range_is_invalid_request() {
    let mut f = Fixture::new();
    assert_eq!(f.upsert(upsert(0, PRICE, 1, 0, 0), T0), rejected(Status::InvalidRequest, 1));
    assert_eq!(f.upsert(upsert(9, 0, 1, 0, 0), T0), rejected(Status::InvalidRequest, 2));
    assert_eq!(f.upsert(upsert(9, 1_000_000_001, 1, 0, 0), T0), rejected(Status::InvalidRequest, 2));
    assert_eq!(f.shard.stock(9), None);
}

#[test]
fn an_upsert_ignores_the_stock_of_an_existing_product_however_large() {
    let mut f = Fixture::new();
    f.placed(request(1, 100, 1), T0);
    let before = f.stock();
    assert_eq!(f.upsert(upsert(PRODUCT, PRICE, u64::MAX, WINDOW_MS, 3), T0), Reply::Stock(before));
}

#[test]
fn adjusting_stock_adds_and_removes_available_units() {
    let mut f = Fixture::new();
    f.take_events();
    let reply = f.apply(Command::AdjustStock { product: PRODUCT, delta: -4 }, T0);
    assert!(matches!(reply, Reply::Stock(StockInfo { available: 6, supplied: 6, .. })), "{reply:?}");
    assert_eq!(f.take_events(), [Event::StockAdjusted { time_ms: T0, product: PRODUCT, delta: -4 }]);
}

#[test]
fn adjusting_stock_below_zero_or_past_the_maximum_is_stock_out_of_range_with_the_current_stock() {
    let mut f = Fixture::new();
    assert_eq!(f.apply(Command::AdjustStock { product: PRODUCT, delta: -11 }, T0), rejected(Status::StockOutOfRange, 10));
    assert_eq!(f.apply(Command::AdjustStock { product: PRODUCT, delta: i64::MAX }, T0), Reply::Stock(f.stock()));
    assert_eq!(
        f.apply(Command::AdjustStock { product: PRODUCT, delta: i64::MAX }, T0),
        rejected(Status::StockOutOfRange, 10 + i64::MAX as u64)
    );
    assert_eq!(f.apply(Command::AdjustStock { product: 9, delta: 1 }, T0), rejected(Status::NoSuchProduct, 0));
}

#[test]
fn a_limit_set_later_counts_the_orders_already_held() {
    let mut f = Fixture::new();
    f.upsert(upsert(PRODUCT, PRICE, 10, WINDOW_MS, 0), T0);
    f.placed(request(1, 100, 4), T0);
    assert_eq!(f.shard.held_units(100, PRODUCT), 0, "no limit: nothing tracked");
    f.upsert(upsert(PRODUCT, PRICE, 6, WINDOW_MS, 5), T0);
    assert_eq!(f.shard.held_units(100, PRODUCT), 4);
    assert_eq!(f.place(request(2, 100, 2), T0), rejected(Status::LimitExceeded, 1));
    f.upsert(upsert(PRODUCT, PRICE, 6, WINDOW_MS, 0), T0);
    assert_eq!(f.shard.held_units(100, PRODUCT), 0);
    f.placed(request(3, 100, 2), T0);
}

#[test]
fn the_counters_follow_placements_rejections_and_closures() {
    let mut f = Fixture::new();
    let a = f.placed(request(1, 100, 2), T0);
    f.placed(request(2, 101, 1), T0);
    f.place(request(3, 102, 11), T0);
    f.apply(Command::Cancel { order_id: a.id }, T0);
    let stats = f.shard.stats();
    assert_eq!((stats.orders_placed, stats.orders_rejected, stats.live_orders, stats.gmv_cents), (2, 1, 1, 3 * PRICE));
}

// ---- replay ------------------------------------------------------------------

#[test]
fn replaying_the_events_rebuilds_an_equal_shard() {
    let mut f = Fixture::new();
    let a = f.placed(request(1, 100, 2), T0);
    let b = f.placed(request(2, 101, 1), T0 + 1);
    f.placed(request(3, 102, 1), T0 + 2);
    f.apply(Command::Pay { order_id: a.id }, T0 + 3);
    f.apply(Command::Cancel { order_id: b.id }, T0 + 4);
    f.apply(Command::AdjustStock { product: PRODUCT, delta: 5 }, T0 + 5);
    f.apply(Command::GetStock { product: PRODUCT }, T0 + 10 * WINDOW_MS);
    let replayed = Shard::replay(*f.shard.config(), &f.events).expect("the shard's own events replay");
    assert_eq!(replayed.check_invariants(), Ok(()));
    assert_eq!(replayed, f.shard);
    assert_eq!(replayed.next_expiry(), f.shard.next_expiry());
}

#[test]
fn replay_stops_at_an_event_that_does_not_fit_the_state() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0);
    let mut events = f.take_events();
    events.push(Event::OrderPaid { time_ms: T0, order_id: order.id + 1, facts: OrderFacts::of_order(&order) });
    let error = Shard::replay(ShardConfig::new(SHARD), &events).unwrap_err();
    assert_eq!(error, ReplayError { index: 2, kind: 1, source: EventError::NoSuchOrder { order_id: order.id + 1 } });
    // Another shard's events do not replay into this shard.
    let error = Shard::replay(ShardConfig::new(SHARD + 1), &events[..2]).unwrap_err();
    assert!(matches!(error.source, EventError::WrongOrderId { .. }), "{error:?}");
}

#[test]
fn apply_event_refuses_an_illegal_step_and_leaves_the_shard_untouched() {
    let mut f = Fixture::new();
    let order = f.placed(request(1, 100, 1), T0 + 10);
    let before = f.shard.clone();
    let illegal = [
        Event::OrderPaid { time_ms: T0, order_id: order.id, facts: OrderFacts::of_order(&order) },
        Event::OrderExpired { time_ms: T0 + 11, order_id: order.id, facts: OrderFacts::of_order(&order) },
        Event::OrderPaid { time_ms: order.expires_ms, order_id: order.id, facts: OrderFacts::of_order(&order) },
        Event::OrderCancelled { time_ms: T0 + 11, order_id: order.id, facts: OrderFacts { qty: 2, ..OrderFacts::of_order(&order) } },
        Event::OrderPaid { time_ms: T0 + 11, order_id: order.id, facts: OrderFacts { user: 7, ..OrderFacts::of_order(&order) } },
        Event::OrderPlaced { time_ms: T0 + 20, order_id: order.id + 1, request: request(1, 101, 1) },
        Event::OrderPlaced { time_ms: T0 + 20, order_id: order.id + 1, request: request(2, 100, 3) },
        Event::OrderPlaced { time_ms: T0 + 20, order_id: order.id + 2, request: request(2, 101, 1) },
        Event::StockAdjusted { time_ms: T0 + 20, product: PRODUCT, delta: -10 },
    ];
    for event in illegal {
        assert!(f.shard.apply_event(&event).is_err(), "{event:?}");
        assert_eq!(f.shard, before);
    }
}
