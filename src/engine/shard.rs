//! The shard: its state and [`Shard::apply`], the *decide* half of the
//! engine.
//!
//! `apply` validates a command against the state with pure reads, builds the
//! event that records the decision, and hands it to
//! [`Shard::apply_event`](crate::engine::Shard::apply_event) (in
//! `apply.rs`), the only code that mutates a shard. Replay calls the same
//! function, so a replayed shard equals the original by construction.

use orderd_protocol::limits::{MAX_ORDER_QTY, MAX_UNIT_PRICE_CENTS};
use orderd_protocol::{IdempotencyKey, Order, OrderState, PlaceOrder, Rejection, Reply, Status, StockInfo, UpsertProduct};

use crate::engine::catalogue::Catalogue;
use crate::engine::command::Command;
use crate::engine::config::ShardConfig;
use crate::engine::event::{Event, StockRule};
use crate::engine::holdings::Holdings;
use crate::engine::orders::{OrderBook, OrderRecord};
use crate::engine::stats::{ShardStats, TableBytes};
use crate::engine::FixedHasher;

/// `invalid_request` detail: the 1-based position of the offending field in
/// its request struct ([`PlaceOrder::qty`] is field 5).
pub const FIELD_PLACE_ORDER_QTY: u64 = 5;
/// `invalid_request` detail for [`UpsertProduct::product`] (field 1).
pub const FIELD_UPSERT_PRODUCT: u64 = 1;
/// `invalid_request` detail for [`UpsertProduct::unit_price_cents`] (field 2).
pub const FIELD_UPSERT_UNIT_PRICE: u64 = 2;

/// The state of one shard: its catalogue, its orders and their indexes.
///
/// Equality ([`PartialEq`]) compares the canonical state: what the events
/// determine. Left out are the configured bounds and hash seed (they change
/// no content), the stale entries of the deadline heap, the time of the
/// latest decision and [`ShardStats::orders_rejected`] (rejections record
/// no event).
#[derive(Debug, Clone)]
pub struct Shard {
    pub(crate) config: ShardConfig,
    pub(crate) products: Catalogue,
    pub(crate) orders: OrderBook,
    pub(crate) holdings: Holdings,
    /// The engine's time: the time of the latest event. Time never runs
    /// backwards inside the engine: a command is decided at
    /// `max(now_ms, clock_ms, decided_ms)`.
    pub(crate) clock_ms: u64,
    /// The time of the latest decision, event or not (a refusal records no
    /// event). Not part of the state: a restart starts it at `clock_ms`.
    pub(crate) decided_ms: u64,
    pub(crate) stats: ShardStats,
}

impl PartialEq for Shard {
    fn eq(&self, other: &Self) -> bool {
        let stats = |s: &ShardStats| (s.orders_placed, s.gmv_cents, s.live_orders);
        self.config.shard_id == other.config.shard_id
            && self.clock_ms == other.clock_ms
            && self.products == other.products
            && self.orders == other.orders
            && self.holdings == other.holdings
            && stats(&self.stats) == stats(&other.stats)
    }
}

impl Eq for Shard {}

/// The outcome of deciding a place-order request.
enum Placement {
    /// A retry of a placed order: answer with it as it is now.
    Existing(Order),
    /// A new order: this event places it.
    New(Event),
}

impl Shard {
    /// An empty shard.
    #[must_use]
    pub fn new(config: ShardConfig) -> Self {
        let hasher = FixedHasher::with_seed(config.hash_seed);
        Shard {
            config,
            products: Catalogue::with_hasher(hasher),
            orders: OrderBook::new(config.shard_id, hasher),
            holdings: Holdings::new(hasher),
            clock_ms: 0,
            decided_ms: 0,
            stats: ShardStats::default(),
        }
    }

    /// Reserves room for `additional` more orders (records, key index and
    /// deadlines), so that placing them allocates nothing. Capped at the
    /// configured bound.
    pub fn reserve(&mut self, additional: usize) {
        let room = (self.config.effective_max_orders() as usize).saturating_sub(self.orders.len());
        self.orders.reserve(additional.min(room));
    }

    /// Reserves room for `additional` more (user, product) holdings of
    /// products with a per-user limit: one per distinct buyer of a limited
    /// product. Kept apart from [`Shard::reserve`] because an unlimited
    /// catalogue needs none (25 bytes per bucket saved per order).
    pub fn reserve_holdings(&mut self, additional: usize) {
        self.holdings.reserve(additional);
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The engine's time: the time of the latest event (0 before any).
    #[must_use]
    pub const fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The counters.
    #[must_use]
    pub const fn stats(&self) -> ShardStats {
        self.stats
    }

    /// The memory this shard's tables hold, by table.
    #[must_use]
    pub fn table_bytes(&self) -> TableBytes {
        TableBytes {
            order_records: self.orders.records_bytes(),
            key_index: self.orders.key_index_bytes(),
            deadlines: self.orders.deadlines_bytes(),
            holdings: self.holdings.allocated_bytes(),
            catalogue: self.products.allocation_size() as u64,
        }
    }

    /// Orders held.
    #[must_use]
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Order `id`.
    #[must_use]
    pub fn order(&self, id: u64) -> Option<Order> {
        self.orders.get(id).map(|r| r.to_order(id))
    }

    /// The order placed with `key`.
    #[must_use]
    pub fn order_by_key(&self, key: &IdempotencyKey) -> Option<Order> {
        let slot = self.orders.find_key(key)?;
        self.orders.record(slot).map(|r| r.to_order(self.orders.id_of(slot)))
    }

    /// Every order, by id.
    pub fn orders(&self) -> impl Iterator<Item = Order> + '_ {
        self.orders.iter().map(|(id, record)| record.to_order(id))
    }

    /// Product `product`'s stock.
    #[must_use]
    pub fn stock(&self, product: u64) -> Option<StockInfo> {
        self.products.get(&product).map(|p| p.stock_info(product))
    }

    /// Every product, by id.
    #[must_use]
    pub fn products_sorted(&self) -> Vec<StockInfo> {
        let mut all: Vec<StockInfo> = self.products.iter().map(|(&id, p)| p.stock_info(id)).collect();
        all.sort_unstable_by_key(|s| s.product);
        all
    }

    /// Calls `f` with every product (in no particular order), without
    /// allocating: the live aggregates read units sold and stock this way.
    pub fn for_each_product(&self, mut f: impl FnMut(u64, &crate::engine::catalogue::Product)) {
        for (&id, product) in &self.products {
            f(id, product);
        }
    }

    /// Units `user` holds in live orders of `product`, as the limit check
    /// counts them (always 0 for a product without a limit).
    #[must_use]
    pub fn held_units(&self, user: u64, product: u64) -> u64 {
        self.holdings.held(user, product)
    }

    /// The earliest payment deadline of a placed order: when the runtime's
    /// timer should next call [`Shard::expire_due`].
    #[must_use]
    pub fn next_expiry(&self) -> Option<u64> {
        self.orders.next_deadline()
    }

    /// The time a command arriving at `now_ms` is decided at: never before
    /// the latest event, nor before any decision already made (a refusal
    /// records no event, yet a frame forwarded with an older time must not
    /// be decided before it: a key refused as past its dedup window stays
    /// refused).
    const fn decision_time(&self, now_ms: u64) -> u64 {
        let floor = if self.decided_ms > self.clock_ms { self.decided_ms } else { self.clock_ms };
        if now_ms > floor {
            now_ms
        } else {
            floor
        }
    }

    /// [`Shard::decision_time`], remembered as the latest decision.
    fn decide_at(&mut self, now_ms: u64) -> u64 {
        let now = self.decision_time(now_ms);
        self.decided_ms = now;
        now
    }

    /// Expires every placed order whose deadline is at or before `now_ms`,
    /// earliest deadline first (ties by id), pushing one `OrderExpired` each.
    /// Returns how many expired.
    pub fn expire_due(&mut self, now_ms: u64, events: &mut Vec<Event>) -> usize {
        self.expire_due_at_most(now_ms, usize::MAX, events)
    }

    /// As [`Shard::expire_due`], but expires at most `max` orders: a caller
    /// that must make room for each event before it is decided (the log)
    /// expires in bounded steps. Fewer than `max` expired means none is due
    /// any more.
    pub fn expire_due_at_most(&mut self, now_ms: u64, max: usize, events: &mut Vec<Event>) -> usize {
        let now = self.decide_at(now_ms);
        let mut expired = 0;
        while expired < max {
            let Some(order_id) = self.orders.pop_due(now) else { break };
            let Some(facts) = self.orders.get(order_id).map(OrderRecord::facts) else { continue };
            if self.commit(Event::OrderExpired { time_ms: now, order_id, facts }, events).is_ok() {
                expired += 1;
            }
        }
        expired
    }

    /// Touches what applying `cmd` will read first and is likely not in
    /// the cache: the idempotency index slot of a new order's key and, for a
    /// product with a per-user limit and stock left, the buyer's holding
    /// (a sold-out product never reads it). Changes nothing.
    /// Called for every request of a frame before any is applied, these
    /// independent loads overlap in the CPU (one probe of a large table is
    /// a cache and TLB miss; applied one by one, they do not overlap).
    pub fn warm(&self, cmd: &Command) {
        if let Command::PlaceOrder(request) = cmd {
            std::hint::black_box(self.orders.find_key(&request.key));
            if self.products.get(&request.product).is_some_and(|p| p.per_user_limit != 0 && p.available >= u64::from(request.qty)) {
                std::hint::black_box(self.holdings.held(request.user, request.product));
            }
        }
    }

    /// What [`Shard::warm`] is to a frame, for a logged event about to be
    /// replayed: touches the index slot an `OrderPlaced` inserts into, or
    /// the record a later event of an order changes. No effect on the state.
    pub fn warm_event(&self, event: &Event) {
        match *event {
            Event::OrderPlaced { ref request, .. } => {
                std::hint::black_box(self.orders.find_key(&request.key));
            }
            Event::OrderPaid { order_id, .. } | Event::OrderCancelled { order_id, .. } | Event::OrderExpired { order_id, .. } => {
                std::hint::black_box(self.orders.get(order_id).is_some());
            }
            Event::ProductUpserted { .. } | Event::StockAdjusted { .. } => {}
        }
    }

    /// Applies `cmd` at time `now_ms` and answers it. Events that record the
    /// changes are pushed onto `events` (first the expiries that were due,
    /// then the command's own); the caller owns and clears the buffer.
    ///
    /// Deterministic: the reply and the events depend only on the state,
    /// the command and the time.
    pub fn apply(&mut self, cmd: &Command, now_ms: u64, events: &mut Vec<Event>) -> Reply {
        let now = self.decide_at(now_ms);
        self.expire_due(now, events);
        match *cmd {
            Command::PlaceOrder(ref request) => self.place_order(request, now, events),
            Command::Pay { order_id } => self.pay(order_id, now, events),
            Command::Cancel { order_id } => self.cancel(order_id, now, events),
            Command::GetOrder { order_id } => match self.order(order_id) {
                Some(order) => Reply::Order(order),
                None => Reply::rejected(Status::NoSuchOrder, 0),
            },
            Command::GetOrderByKey { key } => self.get_by_key(&key, now),
            Command::GetStock { product } => match self.stock(product) {
                Some(stock) => Reply::Stock(stock),
                None => Reply::rejected(Status::NoSuchProduct, 0),
            },
            Command::Upsert(ref upsert) => self.upsert(upsert, now, events),
            Command::AdjustStock { product, delta } => self.adjust_stock(product, delta, now, events),
        }
    }

    /// The answer from memory alone, changing nothing, for when the caller
    /// cannot record a change (its log has no room): reads, and the
    /// idempotent answers about changes already made (a retried place
    /// order, paying a paid order, cancelling a cancelled one), by the same
    /// rules [`Shard::apply`] uses. Anything that would change state is
    /// answered `refuse` (the runtime's `log_full`).
    #[must_use]
    pub fn answer_without_change(&self, cmd: &Command, now_ms: u64, refuse: Status) -> Reply {
        let now = self.decision_time(now_ms);
        let or_missing = |order: Option<Order>| order.map_or(Reply::rejected(Status::NoSuchOrder, 0), Reply::Order);
        match *cmd {
            Command::GetOrder { order_id } => or_missing(self.order(order_id)),
            Command::GetOrderByKey { key } => self.get_by_key(&key, now),
            Command::GetStock { product } => self.stock(product).map_or(Reply::rejected(Status::NoSuchProduct, 0), Reply::Stock),
            Command::PlaceOrder(ref request) => match self.config.check_key(&request.key, now) {
                Err(rejection) => Reply::Rejected(rejection),
                Ok(()) => self.answer_retry_without_change(request, refuse),
            },
            Command::Pay { order_id } => match self.orders.get(order_id) {
                Some(record) if record.state == OrderState::Paid => Reply::Order(record.to_order(order_id)),
                _ => Reply::rejected(refuse, 0),
            },
            Command::Cancel { order_id } => match self.orders.get(order_id) {
                Some(record) if record.state == OrderState::Cancelled => Reply::Order(record.to_order(order_id)),
                _ => Reply::rejected(refuse, 0),
            },
            Command::Upsert(_) | Command::AdjustStock { .. } => Reply::rejected(refuse, 0),
        }
    }

    /// A retried place order answered from memory: the order its key placed,
    /// `key_reused`, or `refuse` for a key not seen (a new order).
    fn answer_retry_without_change(&self, request: &PlaceOrder, refuse: Status) -> Reply {
        match self.orders.find_key(&request.key) {
            Some(slot) => match self.orders.record(slot) {
                Some(record) if record.placed_by(request) => Reply::Order(record.to_order(self.orders.id_of(slot))),
                Some(_) => Reply::rejected(Status::KeyReused, self.orders.id_of(slot)),
                None => Reply::rejected(Status::Internal, 0),
            },
            None => Reply::rejected(refuse, 0),
        }
    }

    /// Get order by key at engine time `now`: the key's window first, then
    /// the order it placed.
    fn get_by_key(&self, key: &IdempotencyKey, now: u64) -> Reply {
        if let Err(rejection) = self.config.check_key(key, now) {
            return Reply::Rejected(rejection);
        }
        self.order_by_key(key).map_or(Reply::rejected(Status::NoSuchOrder, 0), Reply::Order)
    }

    /// Applies a decided event and records it. An error means decide and
    /// apply disagree: a bug, reported as `internal` without a state change.
    fn commit(&mut self, event: Event, events: &mut Vec<Event>) -> Result<(), Rejection> {
        match self.apply_event(&event) {
            Ok(()) => {
                events.push(event);
                Ok(())
            }
            Err(error) => {
                debug_assert!(false, "decided event {event:?} does not apply: {error}");
                Err(Rejection::new(Status::Internal, 0))
            }
        }
    }

    /// Commits `event` about order `order_id` and answers with the order.
    fn commit_order(&mut self, event: Event, order_id: u64, events: &mut Vec<Event>) -> Reply {
        if let Err(rejection) = self.commit(event, events) {
            return Reply::Rejected(rejection);
        }
        match self.order(order_id) {
            Some(order) => Reply::Order(order),
            None => Reply::rejected(Status::Internal, 0),
        }
    }

    /// Commits `event` about `product` and answers with its stock.
    fn commit_stock(&mut self, event: Event, product: u64, events: &mut Vec<Event>) -> Reply {
        if let Err(rejection) = self.commit(event, events) {
            return Reply::Rejected(rejection);
        }
        match self.stock(product) {
            Some(stock) => Reply::Stock(stock),
            None => Reply::rejected(Status::Internal, 0),
        }
    }

    fn place_order(&mut self, request: &PlaceOrder, now: u64, events: &mut Vec<Event>) -> Reply {
        match self.decide_placement(request, now) {
            Ok(Placement::Existing(order)) => Reply::Order(order),
            Ok(Placement::New(event)) => {
                let Some(order_id) = event.order_id() else {
                    return Reply::rejected(Status::Internal, 0);
                };
                self.commit_order(event, order_id, events)
            }
            Err(rejection) => {
                self.stats.orders_rejected += 1;
                Reply::Rejected(rejection)
            }
        }
    }

    /// The checks of place order, in their documented order.
    fn decide_placement(&self, request: &PlaceOrder, now: u64) -> Result<Placement, Rejection> {
        self.config.check_key(&request.key, now)?;
        if let Some(slot) = self.orders.find_key(&request.key) {
            let id = self.orders.id_of(slot);
            let record = self.orders.record(slot).ok_or(Rejection::new(Status::Internal, 0))?;
            if record.placed_by(request) {
                return Ok(Placement::Existing(record.to_order(id)));
            }
            return Err(Rejection::new(Status::KeyReused, id));
        }
        let product = self.products.get(&request.product).ok_or(Rejection::new(Status::NoSuchProduct, 0))?;
        if request.unit_price_cents != product.unit_price_cents {
            return Err(Rejection::new(Status::PriceChanged, product.unit_price_cents));
        }
        if request.qty == 0 || request.qty > MAX_ORDER_QTY {
            return Err(Rejection::new(Status::InvalidRequest, FIELD_PLACE_ORDER_QTY));
        }
        let qty = u64::from(request.qty);
        if product.available < qty {
            return Err(Rejection::new(Status::SoldOut, product.available));
        }
        if product.per_user_limit != 0 {
            let limit = u64::from(product.per_user_limit);
            let held = self.holdings.held(request.user, request.product);
            if held.saturating_add(qty) > limit {
                return Err(Rejection::new(Status::LimitExceeded, limit.saturating_sub(held)));
            }
        }
        let max = self.config.effective_max_orders() as usize;
        if self.orders.len() >= max || self.orders.keys() >= max {
            return Err(Rejection::new(Status::OrdersFull, 0));
        }
        let order_id = self.orders.next_id().ok_or(Rejection::new(Status::OrdersFull, 0))?;
        Ok(Placement::New(Event::OrderPlaced { time_ms: now, order_id, request: *request }))
    }

    fn pay(&mut self, order_id: u64, now: u64, events: &mut Vec<Event>) -> Reply {
        let Some(record) = self.orders.get(order_id) else {
            return Reply::rejected(Status::NoSuchOrder, 0);
        };
        match record.state {
            OrderState::Placed => {
                debug_assert!(!record.is_due(now), "due orders expire before a command is decided");
                let facts = record.facts();
                self.commit_order(Event::OrderPaid { time_ms: now, order_id, facts }, order_id, events)
            }
            OrderState::Paid => Reply::Order(record.to_order(order_id)),
            OrderState::Cancelled => Reply::rejected(Status::OrderCancelled, 0),
            OrderState::Expired => Reply::rejected(Status::OrderExpired, 0),
        }
    }

    fn cancel(&mut self, order_id: u64, now: u64, events: &mut Vec<Event>) -> Reply {
        let Some(record) = self.orders.get(order_id) else {
            return Reply::rejected(Status::NoSuchOrder, 0);
        };
        match record.state {
            OrderState::Placed => {
                let facts = record.facts();
                self.commit_order(Event::OrderCancelled { time_ms: now, order_id, facts }, order_id, events)
            }
            OrderState::Cancelled => Reply::Order(record.to_order(order_id)),
            OrderState::Paid => Reply::rejected(Status::OrderPaid, 0),
            OrderState::Expired => Reply::rejected(Status::OrderExpired, 0),
        }
    }

    fn upsert(&mut self, upsert: &UpsertProduct, now: u64, events: &mut Vec<Event>) -> Reply {
        if upsert.product == 0 {
            return Reply::rejected(Status::InvalidRequest, FIELD_UPSERT_PRODUCT);
        }
        if upsert.unit_price_cents == 0 || upsert.unit_price_cents > MAX_UNIT_PRICE_CENTS {
            return Reply::rejected(Status::InvalidRequest, FIELD_UPSERT_UNIT_PRICE);
        }
        // An existing product keeps its stock: reloading a catalogue during a
        // sale must not put sold units back on sale (stock moves by
        // adjustments). The event records the units available now.
        let (rule, stock) = match self.products.get(&upsert.product) {
            Some(product) => (StockRule::Keep, product.available),
            None => (StockRule::Create, upsert.stock),
        };
        let upsert = UpsertProduct { stock, ..*upsert };
        self.commit_stock(Event::ProductUpserted { time_ms: now, upsert, rule }, upsert.product, events)
    }

    fn adjust_stock(&mut self, product_id: u64, delta: i64, now: u64, events: &mut Vec<Event>) -> Reply {
        let Some(product) = self.products.get(&product_id) else {
            return Reply::rejected(Status::NoSuchProduct, 0);
        };
        if product.adjusted(delta).is_none() {
            return Reply::rejected(Status::StockOutOfRange, product.available);
        }
        self.commit_stock(Event::StockAdjusted { time_ms: now, product: product_id, delta }, product_id, events)
    }
}
