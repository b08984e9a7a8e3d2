//! Simulated clients: what they send (random requests of a flash sale,
//! retries with the same key, pipelined frames) and what they were told
//! (the [`Ledger`] of acknowledged state changes that every check holds
//! the server to).

use std::collections::BTreeMap;

use orderd_protocol::message::{AdjustStock, AggregatesQuery, KeyRef, OrderRef, ProductRef};
use orderd_protocol::{IdempotencyKey, Order, OrderState, PlaceOrder, Reply, Request, Status, UpsertProduct};
use rand::rngs::SmallRng;
use rand::RngExt;

/// The catalogue the simulation sells.
#[derive(Debug, Clone, Copy)]
pub struct ProductSpec {
    /// Its id.
    pub product: u64,
    /// Its unit price.
    pub price: u64,
    /// Units supplied at first.
    pub stock: u64,
    /// Per-user limit (0: none).
    pub limit: u32,
    /// Payment window (0: orders never expire).
    pub window_ms: u64,
}

impl ProductSpec {
    /// The upsert that creates it.
    #[must_use]
    pub fn upsert(&self) -> Request {
        Request::UpsertProduct(UpsertProduct {
            product: self.product,
            unit_price_cents: self.price,
            stock: self.stock,
            payment_window_ms: self.window_ms,
            per_user_limit: self.limit,
        })
    }
}

/// A random catalogue: few products and little stock, so that sales sell
/// out, limits bite and orders expire.
#[must_use]
pub fn catalogue(rng: &mut SmallRng, products: u64) -> Vec<ProductSpec> {
    (1..=products)
        .map(|product| ProductSpec {
            product,
            price: rng.random_range(1..=10_000),
            stock: rng.random_range(5..=60),
            limit: if rng.random_bool(0.5) { rng.random_range(1..=3) } else { 0 },
            window_ms: if rng.random_bool(0.5) { rng.random_range(50..=2_000) } else { 0 },
        })
        .collect()
}

/// One simulated client: its users, what it placed and what it must retry.
#[derive(Debug, Default)]
pub struct Client {
    /// Its index (the high random bits of its keys).
    pub index: u64,
    /// Keys issued so far.
    next_key: u64,
    /// Orders it was told about: id and the request that placed it.
    pub orders: Vec<(u64, PlaceOrder)>,
    /// Place-order requests whose outcome it never learned (a crash took
    /// the reply): retried with the same key.
    pub unknown: Vec<PlaceOrder>,
}

impl Client {
    /// A client.
    #[must_use]
    pub fn new(index: u64) -> Client {
        Client { index, ..Client::default() }
    }

    /// A new time-ordered key made at simulated time `now_ms`: the client's
    /// index and a counter are its random bits, so keys are unique.
    fn fresh_key(&mut self, now_ms: u64) -> IdempotencyKey {
        self.next_key += 1;
        IdempotencyKey::timed(now_ms, (u128::from(self.index + 1) << 64) | u128::from(self.next_key))
    }

    /// A frame's worth of requests, made at simulated time `now_ms`.
    pub fn frame(&mut self, rng: &mut SmallRng, catalogue: &[ProductSpec], users: u64, now_ms: u64) -> Vec<Request> {
        let n = rng.random_range(1..=6);
        (0..n).map(|_| self.request(rng, catalogue, users, now_ms)).collect()
    }

    fn request(&mut self, rng: &mut SmallRng, catalogue: &[ProductSpec], users: u64, now_ms: u64) -> Request {
        let spec = catalogue[rng.random_range(0..catalogue.len())];
        let known = (!self.orders.is_empty()).then(|| self.orders[rng.random_range(0..self.orders.len())]);
        let roll = rng.random_range(0..100);
        match (roll, known) {
            (0..=9, _) if !self.unknown.is_empty() => {
                // A retry after a lost reply: the same request, same key.
                let i = rng.random_range(0..self.unknown.len());
                Request::PlaceOrder(self.unknown.swap_remove(i))
            }
            (10..=14, Some((_, placed))) => {
                // A retry of an answered request (idempotent: same order),
                // or, now and then, the key reused for another request.
                let mut again = placed;
                if rng.random_bool(0.3) {
                    again.qty = placed.qty % 3 + 1;
                    again.user = placed.user + 1;
                }
                Request::PlaceOrder(again)
            }
            (0..=49, _) => Request::PlaceOrder(PlaceOrder {
                key: self.fresh_key(now_ms),
                user: rng.random_range(1..=users),
                product: spec.product,
                unit_price_cents: if rng.random_bool(0.05) { spec.price + 1 } else { spec.price },
                qty: rng.random_range(1..=2),
            }),
            (50..=64, Some((id, _))) => Request::PayOrder(OrderRef { order_id: id }),
            (65..=72, Some((id, _))) => Request::CancelOrder(OrderRef { order_id: id }),
            (73..=76, Some((id, _))) => Request::GetOrder(OrderRef { order_id: id }),
            (77..=79, Some((_, placed))) => Request::GetOrderByKey(KeyRef { key: placed.key, product: placed.product }),
            (80..=84, _) => Request::AdjustStock(AdjustStock { product: spec.product, delta: rng.random_range(-3..=8) }),
            (85..=86, _) => spec.upsert(),
            (87, _) => Request::Stats,
            (88, _) => Request::StorageStats,
            (89, _) => Request::Aggregates(AggregatesQuery { top: 3 }),
            _ => Request::GetStock(ProductRef { product: spec.product }),
        }
    }
}

/// What the server acknowledged about one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedOrder {
    /// The request that placed it.
    pub placed: PlaceOrder,
    /// The strongest state a reply reported: `Paid` or `Cancelled` once
    /// acknowledged (they are final), else `Placed`.
    pub state: OrderState,
}

/// Every state change the server acknowledged, and what it said.
#[derive(Debug, Default)]
pub struct Ledger {
    /// By order id.
    pub orders: BTreeMap<u64, AckedOrder>,
    /// Each acknowledged key and the order it placed.
    pub keys: BTreeMap<(u64, u64), u64>,
    /// Acknowledged replies in all.
    pub acks: u64,
    /// The server's dedup window (ms): a `key_expired` must be past it.
    pub dedup_window_ms: u64,
    /// Keys refused as expired, with the server time of the first refusal:
    /// none may place an order at or after it.
    pub expired: BTreeMap<(u64, u64), u64>,
}

impl Ledger {
    /// Takes in the reply to `request`; an error says how the reply breaks
    /// a promise (a key with two orders, an order that does not match its
    /// request).
    ///
    /// # Errors
    /// The broken promise, in words.
    pub fn record(&mut self, request: &Request, reply: &Reply) -> Result<(), String> {
        if let (Request::PlaceOrder(PlaceOrder { key, .. }) | Request::GetOrderByKey(KeyRef { key, .. }), Reply::Rejected(r)) =
            (request, reply)
        {
            if r.status() == Some(Status::KeyExpired) {
                // The detail is the server's clock: the key must be past the
                // window by it (clients here make no keys ahead of it).
                let time = key.time_ms().ok_or(format!("key {key:?} without a time was refused as expired, not invalid"))?;
                if time.saturating_add(self.dedup_window_ms) >= r.detail {
                    return Err(format!(
                        "key {key:?} made at {time} refused as expired at server time {} inside its {} ms window",
                        r.detail, self.dedup_window_ms
                    ));
                }
                self.expired.entry((key.hi, key.lo)).or_insert(r.detail);
            }
            return Ok(());
        }
        let Reply::Order(order) = reply else { return Ok(()) };
        match request {
            Request::PlaceOrder(p) => {
                if (order.user, order.product, order.qty, order.unit_price_cents) != (p.user, p.product, p.qty, p.unit_price_cents) {
                    return Err(format!("place order {p:?} answered with another order {order:?}"));
                }
                let key = (p.key.hi, p.key.lo);
                // A reply decided before the refusal may arrive after it
                // (a retry answered with its order waits for the flush, a
                // refusal does not): only an order created at or after
                // the refusal breaks the promise.
                if let Some(&refused_at) = self.expired.get(&key).filter(|&&at| order.created_ms >= at) {
                    return Err(format!(
                        "key {key:?} made at {:?} was refused as expired at server time {refused_at}, then answered with order {} created at {} (window {} ms)",
                        p.key.time_ms(),
                        order.id,
                        order.created_ms,
                        self.dedup_window_ms
                    ));
                }
                if let Some(&id) = self.keys.get(&key) {
                    if id != order.id {
                        return Err(format!("key {key:?} placed two orders: {id} and {}", order.id));
                    }
                }
                self.keys.insert(key, order.id);
                self.note(order, Some(*p));
            }
            Request::PayOrder(_) | Request::CancelOrder(_) => self.note(order, None),
            _ => {}
        }
        self.acks += 1;
        Ok(())
    }

    fn note(&mut self, order: &Order, placed: Option<PlaceOrder>) {
        let final_state = matches!(order.state, OrderState::Paid | OrderState::Cancelled);
        match self.orders.get_mut(&order.id) {
            Some(known) => {
                if final_state {
                    known.state = order.state;
                }
            }
            None => {
                let placed = placed.unwrap_or(PlaceOrder {
                    key: IdempotencyKey { hi: 0, lo: 0 },
                    user: order.user,
                    product: order.product,
                    unit_price_cents: order.unit_price_cents,
                    qty: order.qty,
                });
                let state = if final_state { order.state } else { OrderState::Placed };
                self.orders.insert(order.id, AckedOrder { placed, state });
            }
        }
    }
}
