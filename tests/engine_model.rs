//! Model-based test of the engine: random command sequences, with random
//! clock advances (and steps back) and retries of earlier requests (exact
//! and altered), run against the engine and against a small reference model
//! made of plain `Vec`s and linear scans. Replies and events must match
//! exactly, and after every step the shard's invariants must hold and a
//! replay of every event so far (through the binary encoding) must rebuild
//! an equal shard.

use orderd::engine::{Command, Event, OrderFacts, Shard, ShardConfig, StockRule, EVENT_FORMAT_VERSION};
use orderd_protocol::limits::{MAX_ORDER_QTY, MAX_UNIT_PRICE_CENTS};
use orderd_protocol::shard::order_id;
use orderd_protocol::{IdempotencyKey, Order, OrderState, PlaceOrder, Reply, Status, StockInfo, UpsertProduct};
use proptest::prelude::*;

const SHARD: u16 = 3;
const T0: u64 = 10_000;

// ---- the reference model -------------------------------------------------------

#[derive(Debug, Clone)]
struct MProduct {
    id: u64,
    price: u64,
    available: u64,
    window: u64,
    limit: u32,
    /// Units supplied by upserts and adjustments, tracked on its own.
    ledger: u64,
    /// The limit was lowered or introduced after orders existed: users may
    /// legitimately hold more than it.
    limit_relaxed: bool,
}

#[derive(Debug, Default)]
struct Model {
    max_orders: usize,
    clock: u64,
    /// The latest decision's time: no decision is made before it.
    decided: u64,
    products: Vec<MProduct>,
    orders: Vec<Order>,
    placed: u64,
    rejected: u64,
    gmv: u64,
}

impl Model {
    fn product(&self, id: u64) -> Option<&MProduct> {
        self.products.iter().find(|p| p.id == id)
    }

    fn product_mut(&mut self, id: u64) -> Option<&mut MProduct> {
        self.products.iter_mut().find(|p| p.id == id)
    }

    fn units(&self, product: u64, state: OrderState) -> u64 {
        self.orders.iter().filter(|o| o.product == product && o.state == state).map(|o| u64::from(o.qty)).sum()
    }

    fn held(&self, user: u64, product: u64) -> u64 {
        self.orders.iter().filter(|o| o.user == user && o.product == product && o.state.holds_units()).map(|o| u64::from(o.qty)).sum()
    }

    fn stock(&self, id: u64) -> Option<StockInfo> {
        let p = self.product(id)?;
        let (reserved, paid) = (self.units(id, OrderState::Placed), self.units(id, OrderState::Paid));
        Some(StockInfo {
            product: id,
            unit_price_cents: p.price,
            available: p.available,
            reserved,
            paid,
            supplied: p.available + reserved + paid,
            payment_window_ms: p.window,
            per_user_limit: p.limit,
        })
    }

    fn order_index(&self, id: u64) -> Option<usize> {
        self.orders.iter().position(|o| o.id == id)
    }

    fn next_expiry(&self) -> Option<u64> {
        self.orders.iter().filter(|o| o.state == OrderState::Placed && o.expires_ms != u64::MAX).map(|o| o.expires_ms).min()
    }

    fn close(&mut self, index: usize, state: OrderState) {
        let order = self.orders[index];
        self.orders[index].state = state;
        if state != OrderState::Paid {
            self.product_mut(order.product).unwrap().available += u64::from(order.qty);
        }
    }

    fn expire(&mut self, now: u64, events: &mut Vec<Event>) -> usize {
        let mut due: Vec<usize> = (0..self.orders.len())
            .filter(|&i| {
                let o = &self.orders[i];
                o.state == OrderState::Placed && o.expires_ms != u64::MAX && now >= o.expires_ms
            })
            .collect();
        due.sort_by_key(|&i| (self.orders[i].expires_ms, self.orders[i].id));
        for &i in &due {
            self.close(i, OrderState::Expired);
            events.push(Event::OrderExpired { time_ms: now, order_id: self.orders[i].id, facts: OrderFacts::of_order(&self.orders[i]) });
            self.clock = now;
        }
        due.len()
    }

    /// The time a command or a tick at `now` is decided at, remembered.
    fn decide_at(&mut self, now: u64) -> u64 {
        self.decided = now.max(self.clock).max(self.decided);
        self.decided
    }

    fn apply(&mut self, cmd: &Command, now: u64, events: &mut Vec<Event>) -> Reply {
        let now = self.decide_at(now);
        self.expire(now, events);
        let reply = match *cmd {
            Command::PlaceOrder(r) => self.place(r, now, events),
            Command::Pay { order_id } => match self.order_index(order_id) {
                None => Reply::rejected(Status::NoSuchOrder, 0),
                Some(i) => match self.orders[i].state {
                    OrderState::Placed => {
                        self.close(i, OrderState::Paid);
                        events.push(Event::OrderPaid { time_ms: now, order_id, facts: OrderFacts::of_order(&self.orders[i]) });
                        Reply::Order(self.orders[i])
                    }
                    OrderState::Paid => Reply::Order(self.orders[i]),
                    OrderState::Cancelled => Reply::rejected(Status::OrderCancelled, 0),
                    OrderState::Expired => Reply::rejected(Status::OrderExpired, 0),
                },
            },
            Command::Cancel { order_id } => match self.order_index(order_id) {
                None => Reply::rejected(Status::NoSuchOrder, 0),
                Some(i) => match self.orders[i].state {
                    OrderState::Placed => {
                        self.close(i, OrderState::Cancelled);
                        events.push(Event::OrderCancelled { time_ms: now, order_id, facts: OrderFacts::of_order(&self.orders[i]) });
                        Reply::Order(self.orders[i])
                    }
                    OrderState::Cancelled => Reply::Order(self.orders[i]),
                    OrderState::Paid => Reply::rejected(Status::OrderPaid, 0),
                    OrderState::Expired => Reply::rejected(Status::OrderExpired, 0),
                },
            },
            Command::GetOrder { order_id } => match self.order_index(order_id) {
                Some(i) => Reply::Order(self.orders[i]),
                None => Reply::rejected(Status::NoSuchOrder, 0),
            },
            Command::GetOrderByKey { key } => match (Self::key_refusal(key, now), self.orders.iter().find(|o| o.key == key)) {
                (Some((status, detail)), _) => Reply::rejected(status, detail),
                (None, Some(o)) => Reply::Order(*o),
                (None, None) => Reply::rejected(Status::NoSuchOrder, 0),
            },
            Command::GetStock { product } => match self.stock(product) {
                Some(s) => Reply::Stock(s),
                None => Reply::rejected(Status::NoSuchProduct, 0),
            },
            Command::Upsert(u) => self.upsert(u, now, events),
            Command::AdjustStock { product, delta } => match self.stock(product) {
                None => Reply::rejected(Status::NoSuchProduct, 0),
                Some(s) => {
                    let available = i128::from(s.available) + i128::from(delta);
                    let supplied = i128::from(s.supplied) + i128::from(delta);
                    if available < 0 || supplied > i128::from(u64::MAX) {
                        Reply::rejected(Status::StockOutOfRange, s.available)
                    } else {
                        let p = self.product_mut(product).unwrap();
                        p.available = available as u64;
                        p.ledger = (i128::from(p.ledger) + i128::from(delta)) as u64;
                        events.push(Event::StockAdjusted { time_ms: now, product, delta });
                        Reply::Stock(self.stock(product).unwrap())
                    }
                }
            },
        };
        if let Some(last) = events.last() {
            self.clock = self.clock.max(last.time_ms());
        }
        reply
    }

    /// The key window: a key without a time is `invalid_request` (field 1);
    /// one made more than `DEDUP_WINDOW_MS` before `now` or more than
    /// `KEY_MAX_AHEAD_MS` after it is `key_expired` with the clock.
    fn key_refusal(key: IdempotencyKey, now: u64) -> Option<(Status, u64)> {
        match key.time_ms() {
            None => Some((Status::InvalidRequest, 1)),
            Some(t) if t + DEDUP_WINDOW_MS < now || t > now + KEY_MAX_AHEAD_MS => Some((Status::KeyExpired, now)),
            Some(_) => None,
        }
    }

    fn place(&mut self, r: PlaceOrder, now: u64, events: &mut Vec<Event>) -> Reply {
        if let Some((status, detail)) = Self::key_refusal(r.key, now) {
            return self.reject(status, detail);
        }
        if let Some(o) = self.orders.iter().find(|o| o.key == r.key) {
            let same = o.user == r.user && o.product == r.product && o.unit_price_cents == r.unit_price_cents && o.qty == r.qty;
            return if same { Reply::Order(*o) } else { self.reject(Status::KeyReused, o.id) };
        }
        let Some(p) = self.product(r.product).cloned() else {
            return self.reject(Status::NoSuchProduct, 0);
        };
        if r.unit_price_cents != p.price {
            return self.reject(Status::PriceChanged, p.price);
        }
        if r.qty == 0 || r.qty > MAX_ORDER_QTY {
            return self.reject(Status::InvalidRequest, 5);
        }
        let qty = u64::from(r.qty);
        if p.available < qty {
            return self.reject(Status::SoldOut, p.available);
        }
        let held = self.held(r.user, r.product);
        if p.limit > 0 && held + qty > u64::from(p.limit) {
            return self.reject(Status::LimitExceeded, u64::from(p.limit).saturating_sub(held));
        }
        if self.orders.len() >= self.max_orders {
            return self.reject(Status::OrdersFull, 0);
        }
        let id = order_id(u32::from(SHARD), self.orders.len() as u64 + 1).unwrap();
        let order = Order {
            id,
            key: r.key,
            user: r.user,
            product: r.product,
            unit_price_cents: r.unit_price_cents,
            created_ms: now,
            expires_ms: if p.window == 0 { u64::MAX } else { now.saturating_add(p.window) },
            qty: r.qty,
            state: OrderState::Placed,
        };
        self.orders.push(order);
        self.product_mut(r.product).unwrap().available -= qty;
        self.placed += 1;
        self.gmv += order.amount_cents();
        events.push(Event::OrderPlaced { time_ms: now, order_id: id, request: r });
        Reply::Order(order)
    }

    fn reject(&mut self, status: Status, detail: u64) -> Reply {
        self.rejected += 1;
        Reply::rejected(status, detail)
    }

    fn upsert(&mut self, u: UpsertProduct, now: u64, events: &mut Vec<Event>) -> Reply {
        if u.product == 0 {
            return Reply::rejected(Status::InvalidRequest, 1);
        }
        if u.unit_price_cents == 0 || u.unit_price_cents > MAX_UNIT_PRICE_CENTS {
            return Reply::rejected(Status::InvalidRequest, 2);
        }
        let any_orders = self.orders.iter().any(|o| o.product == u.product && o.state.holds_units());
        // An existing product keeps its stock whatever the upsert says;
        // the event records the units available at that moment.
        let (rule, stock) = match self.product_mut(u.product) {
            Some(p) => {
                let lowered = u.per_user_limit != 0 && (p.limit == 0 || u.per_user_limit < p.limit);
                p.limit_relaxed |= lowered && any_orders;
                p.price = u.unit_price_cents;
                p.window = u.payment_window_ms;
                p.limit = u.per_user_limit;
                (StockRule::Keep, p.available)
            }
            None => {
                self.products.push(MProduct {
                    id: u.product,
                    price: u.unit_price_cents,
                    available: u.stock,
                    window: u.payment_window_ms,
                    limit: u.per_user_limit,
                    ledger: u.stock,
                    limit_relaxed: false,
                });
                (StockRule::Create, u.stock)
            }
        };
        events.push(Event::ProductUpserted { time_ms: now, upsert: UpsertProduct { stock, ..u }, rule });
        Reply::Stock(self.stock(u.product).unwrap())
    }
}

// ---- generated operations ------------------------------------------------------

#[derive(Debug, Clone)]
enum Price {
    Current,
    Fixed(u64),
}

#[derive(Debug, Clone)]
enum Pick {
    /// The n-th order issued so far (modulo their count).
    Issued(usize),
    Zero,
    NotYetIssued,
    OtherShard,
}

#[derive(Debug, Clone)]
enum Alter {
    User,
    Qty,
    Price,
    Product,
}

#[derive(Debug, Clone)]
enum Op {
    Place { key: u8, user: u8, product: u8, qty: u32, price: Price },
    RetryExact(usize),
    RetryAltered(usize, Alter),
    Pay(Pick),
    Cancel(Pick),
    GetOrder(Pick),
    GetByKey(u8),
    GetStock(u8),
    Upsert { product: u8, price: u64, stock: u64, window: u64, limit: u32 },
    Adjust { product: u8, delta: i64 },
    ExpireDue,
}

#[derive(Debug, Clone)]
struct Step {
    /// Milliseconds to move the caller's clock (negative: a step back).
    dt: i64,
    op: Op,
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        8 => any::<usize>().prop_map(Pick::Issued),
        1 => Just(Pick::Zero),
        1 => Just(Pick::NotYetIssued),
        1 => Just(Pick::OtherShard),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let qty = prop_oneof![10 => 0u32..=4, 1 => Just(MAX_ORDER_QTY + 1)];
    let price = prop_oneof![8 => Just(Price::Current), 1 => prop::sample::select(vec![1u64, 100, 250]).prop_map(Price::Fixed)];
    let product = prop_oneof![10 => 1u8..=3, 1 => Just(0u8), 1 => Just(4u8)];
    let place =
        (0u8..14, 1u8..=4, product, qty, price).prop_map(|(key, user, product, qty, price)| Op::Place { key, user, product, qty, price });
    let alter = prop_oneof![Just(Alter::User), Just(Alter::Qty), Just(Alter::Price), Just(Alter::Product)];
    let upsert = (
        0u8..=4,
        prop::sample::select(vec![0u64, 100, 250, MAX_UNIT_PRICE_CENTS + 1]),
        prop_oneof![10 => 0u64..=8, 1 => Just(u64::MAX)],
        prop::sample::select(vec![0u64, 5, 20, 100]),
        0u32..=3,
    )
        .prop_map(|(product, price, stock, window, limit)| Op::Upsert { product, price, stock, window, limit });
    let delta = prop_oneof![10 => -4i64..=4, 1 => Just(i64::MIN), 1 => Just(i64::MAX)];
    prop_oneof![
        12 => place,
        3 => any::<usize>().prop_map(Op::RetryExact),
        2 => (any::<usize>(), alter).prop_map(|(i, a)| Op::RetryAltered(i, a)),
        4 => pick().prop_map(Op::Pay),
        3 => pick().prop_map(Op::Cancel),
        1 => pick().prop_map(Op::GetOrder),
        1 => (0u8..14).prop_map(Op::GetByKey),
        1 => (0u8..=4).prop_map(Op::GetStock),
        3 => upsert,
        2 => (0u8..=4, delta).prop_map(|(product, delta)| Op::Adjust { product, delta }),
        1 => Just(Op::ExpireDue),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let dt = prop_oneof![8 => 0i64..10, 2 => 10i64..150, 1 => -50i64..0];
    (dt, op()).prop_map(|(dt, op)| Step { dt, op })
}

/// The model's dedup window: short enough that runs reach keys past it.
const DEDUP_WINDOW_MS: u64 = 1500;
/// How far ahead of the clock a key may be made.
const KEY_MAX_AHEAD_MS: u64 = 200;

/// Key `k` of 14: twelve time-ordered keys made 100 ms apart from `T0`
/// (the later ones ahead of the clock at first, the early ones past the
/// window later), one without a time, one made far ahead.
fn key(k: u8) -> IdempotencyKey {
    match k {
        12 => IdempotencyKey { hi: u64::from(k), lo: u64::from(k) * 7 },
        13 => IdempotencyKey::timed(T0 + 100 * DEDUP_WINDOW_MS, 13),
        _ => IdempotencyKey::timed(T0 + 100 * u64::from(k), u128::from(k) * 7),
    }
}

// ---- the runner ------------------------------------------------------------------

struct Run {
    shard: Shard,
    model: Model,
    now: u64,
    history: Vec<PlaceOrder>,
    /// Every event so far, encoded: `(kind, body)`.
    log: Vec<(u8, Vec<u8>)>,
}

impl Run {
    fn new(max_orders: u32, max_keys: u32, seed: u64) -> Self {
        let config = ShardConfig {
            shard_id: SHARD,
            max_orders,
            max_idempotency_keys: max_keys,
            hash_seed: seed,
            dedup_window_ms: DEDUP_WINDOW_MS,
            key_max_ahead_ms: KEY_MAX_AHEAD_MS,
            ..ShardConfig::new(SHARD)
        };
        let model = Model { max_orders: max_orders.min(max_keys) as usize, ..Model::default() };
        Run { shard: Shard::new(config), model, now: T0, history: Vec::new(), log: Vec::new() }
    }

    fn price(&self, product: u64, price: &Price) -> u64 {
        match *price {
            Price::Current => self.model.product(product).map_or(100, |p| p.price),
            Price::Fixed(p) => p,
        }
    }

    fn order_id(&self, pick: &Pick) -> u64 {
        let issued = self.model.orders.len();
        match *pick {
            Pick::Issued(i) if issued > 0 => self.model.orders[i % issued].id,
            Pick::Issued(_) | Pick::NotYetIssued => order_id(u32::from(SHARD), issued as u64 + 1).unwrap(),
            Pick::Zero => 0,
            Pick::OtherShard => order_id(u32::from(SHARD) + 1, 1).unwrap(),
        }
    }

    fn command(&mut self, op: &Op) -> Option<Command> {
        let place = |r: PlaceOrder| Some(Command::PlaceOrder(r));
        match *op {
            Op::Place { key: k, user, product, qty, ref price } => {
                let product = u64::from(product);
                let r = PlaceOrder { key: key(k), user: u64::from(user), product, unit_price_cents: self.price(product, price), qty };
                self.history.push(r);
                place(r)
            }
            Op::RetryExact(i) if !self.history.is_empty() => place(self.history[i % self.history.len()]),
            Op::RetryAltered(i, ref alter) if !self.history.is_empty() => {
                let mut r = self.history[i % self.history.len()];
                match alter {
                    Alter::User => r.user += 1,
                    Alter::Qty => r.qty += 1,
                    Alter::Price => r.unit_price_cents += 1,
                    Alter::Product => r.product = r.product % 4 + 1,
                }
                place(r)
            }
            Op::RetryExact(_) | Op::RetryAltered(..) => None,
            Op::Pay(ref p) => Some(Command::Pay { order_id: self.order_id(p) }),
            Op::Cancel(ref p) => Some(Command::Cancel { order_id: self.order_id(p) }),
            Op::GetOrder(ref p) => Some(Command::GetOrder { order_id: self.order_id(p) }),
            Op::GetByKey(k) => Some(Command::GetOrderByKey { key: key(k) }),
            Op::GetStock(p) => Some(Command::GetStock { product: u64::from(p) }),
            Op::Upsert { product, price, stock, window, limit } => Some(Command::Upsert(UpsertProduct {
                product: u64::from(product),
                unit_price_cents: price,
                stock,
                payment_window_ms: window,
                per_user_limit: limit,
            })),
            Op::Adjust { product, delta } => Some(Command::AdjustStock { product: u64::from(product), delta }),
            Op::ExpireDue => None,
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        self.now = self.now.saturating_add_signed(step.dt);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        if let Op::ExpireDue = step.op {
            let n = self.shard.expire_due(self.now, &mut got);
            let now = self.model.decide_at(self.now);
            prop_assert_eq!(n, self.model.expire(now, &mut want));
        } else if let Some(cmd) = self.command(&step.op) {
            let reply = self.shard.apply(&cmd, self.now, &mut got);
            let expected = self.model.apply(&cmd, self.now, &mut want);
            prop_assert_eq!(reply, expected, "reply to {:?} at {}", cmd, self.now);
        }
        prop_assert_eq!(&got, &want, "events");
        for event in &got {
            let mut body = Vec::new();
            event.encode_to_vec(&mut body);
            prop_assert_eq!(body.len(), event.encoded_len());
            self.log.push((event.kind(), body));
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let (shard, model) = (&self.shard, &self.model);
        prop_assert_eq!(shard.check_invariants(), Ok(()));
        prop_assert_eq!(shard.clock_ms(), model.clock);
        let orders: Vec<Order> = shard.orders().collect();
        prop_assert_eq!(&orders, &model.orders);
        prop_assert_eq!(shard.next_expiry(), model.next_expiry());
        let stats = shard.stats();
        prop_assert_eq!((stats.orders_placed, stats.orders_rejected, stats.gmv_cents), (model.placed, model.rejected, model.gmv));
        prop_assert_eq!(stats.live_orders, orders.iter().filter(|o| o.state.holds_units()).count() as u64);

        // Stock: supplied = available + units in placed and paid orders, and
        // equals what upserts and adjustments supplied.
        let products = shard.products_sorted();
        prop_assert_eq!(products.len(), model.products.len());
        for s in &products {
            let m = model.product(s.product).unwrap();
            let live: u64 = orders.iter().filter(|o| o.product == s.product && o.state.holds_units()).map(|o| u64::from(o.qty)).sum();
            prop_assert_eq!(s.supplied, s.available + live);
            prop_assert_eq!(s.supplied, m.ledger);
            prop_assert_eq!(Some(*s), model.stock(s.product));
            // No user over the limit (unless the limit was lowered or
            // introduced under existing orders).
            if s.per_user_limit > 0 && !m.limit_relaxed {
                for user in orders.iter().map(|o| o.user) {
                    prop_assert!(model.held(user, s.product) <= u64::from(s.per_user_limit));
                    prop_assert_eq!(shard.held_units(user, s.product), model.held(user, s.product));
                }
            }
        }

        // No idempotency key with two orders.
        let mut keys: Vec<IdempotencyKey> = orders.iter().map(|o| o.key).collect();
        keys.sort_unstable();
        keys.dedup();
        prop_assert_eq!(keys.len(), orders.len());

        // Replay of every event so far, through the encoding.
        let events: Vec<Event> = self
            .log
            .iter()
            .map(|(kind, body)| Event::decode(*kind, EVENT_FORMAT_VERSION, body))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
        let replayed = Shard::replay(*shard.config(), &events).map_err(|e| TestCaseError::fail(format!("replay: {e}")))?;
        prop_assert!(replayed == *shard, "replay differs");
        prop_assert_eq!(replayed.next_expiry(), shard.next_expiry());

        // A checkpoint: the image of the state after the first half of the
        // events, rebuilt, then the second half replayed, is the same state.
        let half = events.len() / 2;
        let early = Shard::replay(*shard.config(), &events[..half]).map_err(|e| TestCaseError::fail(format!("replay: {e}")))?;
        let mut resumed = Shard::from_image(*shard.config(), early.image()).map_err(|e| TestCaseError::fail(format!("image: {e}")))?;
        prop_assert!(resumed == early, "an image rebuilds its shard");
        for event in &events[half..] {
            resumed.apply_event(event).map_err(|e| TestCaseError::fail(format!("after the image: {e}")))?;
        }
        prop_assert!(resumed == *shard, "image + later events differs");
        prop_assert_eq!(resumed.next_expiry(), shard.next_expiry());
        Ok(())
    }
}

/// Two products to start from, so that most orders have something to hit.
fn opening() -> Vec<Step> {
    [(1, 100, 6, 20, 2), (2, 250, 8, 0, 0)]
        .into_iter()
        .map(|(product, price, stock, window, limit)| Step { dt: 0, op: Op::Upsert { product, price, stock, window, limit } })
        .collect()
}

proptest! {
    // About 3 s in a debug build on the 2-core VM.
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_answers_like_the_model_and_replays_to_an_equal_state(
        steps in prop::collection::vec(step(), 1..90),
        max_orders in 2u32..24,
        max_keys in 2u32..24,
        seed in any::<u64>(),
    ) {
        let mut run = Run::new(max_orders, max_keys, seed);
        for step in opening().iter().chain(&steps) {
            run.step(step)?;
        }
    }
}
