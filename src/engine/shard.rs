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

use crate::engine::archive::ArchiveError;
use crate::engine::catalogue::Catalogue;
use crate::engine::command::Command;
use crate::engine::config::ShardConfig;
use crate::engine::event::{Event, StockRule};
use crate::engine::holdings::Holdings;
use crate::engine::orders::{KeyFound, OrderBook, OrderRecord};
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
    /// Events applied to this shard since it was created: its position in
    /// its own history, the same on every node that holds a copy (a
    /// replica applies the leader's events in the leader's order), so a
    /// replica's position says which of the leader's events it has.
    pub(crate) position: u64,
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
            && self.position == other.position
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
            orders: OrderBook::new(config.shard_id, hasher, config.dedup_window_ms, config.max_cold_keys as usize),
            holdings: Holdings::new(hasher),
            clock_ms: 0,
            decided_ms: 0,
            stats: ShardStats::default(),
            position: 0,
        }
    }

    /// Events applied to this shard since it was created (replication's
    /// per-shard position; see the field).
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reserves room for `additional` more orders (records, key index and
    /// deadlines), so that placing them allocates nothing. Capped at the
    /// configured bound.
    pub fn reserve(&mut self, additional: usize) {
        let room = (self.config.effective_max_orders() as usize).saturating_sub(self.orders.in_memory());
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
            cold_keys: self.orders.cold_keys_bytes(),
            holdings: self.holdings.allocated_bytes(),
            catalogue: self.products.allocation_size() as u64,
        }
    }

    /// Orders placed, all time (in memory and archived).
    #[must_use]
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Orders in memory: open ones, pinned ones and the hot window.
    #[must_use]
    pub fn orders_in_memory(&self) -> usize {
        self.orders.in_memory()
    }

    /// Orders moved to the archive.
    #[must_use]
    pub fn orders_archived(&self) -> u64 {
        self.orders.archived().orders
    }

    /// Whether the shard holds nothing: no product, no order ever placed.
    #[must_use]
    pub fn is_blank(&self) -> bool {
        self.products.is_empty() && self.orders.is_empty()
    }

    /// The shard's order archive, if attached.
    #[must_use]
    pub fn archive(&self) -> Option<&std::sync::Arc<crate::engine::archive::OrderArchive>> {
        self.orders.archive()
    }

    /// Bytes of the archive file (`None` without one, or when it cannot be
    /// read).
    #[must_use]
    pub fn archive_bytes(&self) -> Option<u64> {
        self.orders.archive().and_then(|a| a.file_bytes().ok())
    }

    /// Keys of archived orders remembered (the dedup window's).
    #[must_use]
    pub fn cold_keys(&self) -> usize {
        self.orders.cold_keys()
    }

    /// Order `id`, from memory or the archive (`None` as well when the
    /// archive cannot be read).
    #[must_use]
    pub fn order(&self, id: u64) -> Option<Order> {
        self.orders.find(id).ok().flatten().map(|r| r.to_order(id))
    }

    /// The order placed with `key`, from memory or the archive.
    #[must_use]
    pub fn order_by_key(&self, key: &IdempotencyKey) -> Option<Order> {
        match self.orders.lookup_key(key) {
            KeyFound::Order(slot, record) => Some(record.to_order(self.orders.id_of(slot))),
            KeyFound::Absent | KeyFound::Forgotten | KeyFound::Unreadable(_) => None,
        }
    }

    /// Every order, archived ones included, by id (reads the archive:
    /// checks and admin tools only).
    ///
    /// # Errors
    /// The archive could not be read.
    pub fn all_orders(&self) -> Result<Vec<Order>, ArchiveError> {
        let mut all = Vec::with_capacity(self.orders.len());
        self.orders.for_each_order(|slot, record| all.push(record.to_order(self.orders.id_of(slot))))?;
        all.sort_unstable_by_key(|o| o.id);
        Ok(all)
    }

    /// Every order in memory (pinned ones, then the ring by id).
    pub fn orders(&self) -> impl Iterator<Item = Order> + '_ {
        self.orders.iter().map(|(id, record)| record.to_order(id))
    }

    /// Order `id` as a lookup needs it: from memory, else from the archive;
    /// `Err` is the reply (`no_such_order`, or `internal` when the archive
    /// cannot be read).
    fn lookup_order(&self, id: u64) -> Result<OrderRecord, Reply> {
        if let Some(record) = self.orders.get(id) {
            return Ok(*record);
        }
        match self.orders.find(id) {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(Reply::rejected(Status::NoSuchOrder, 0)),
            Err(e) => Err(unreadable(&e)),
        }
    }

    /// The order a key placed, in memory or archived, as place order and
    /// get order by key need it: `Ok(None)` for a key that placed nothing.
    fn lookup_key(&self, key: &IdempotencyKey, now: u64) -> Result<Option<(u64, OrderRecord)>, Rejection> {
        match self.orders.lookup_key(key) {
            KeyFound::Order(slot, record) => Ok(Some((self.orders.id_of(slot), record))),
            KeyFound::Absent => Ok(None),
            KeyFound::Forgotten => Err(Rejection::new(Status::KeyExpired, now)),
            KeyFound::Unreadable(e) => {
                unreadable(&e);
                Err(Rejection::new(Status::Internal, 0))
            }
        }
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
    pub(crate) const fn decision_time(&self, now_ms: u64) -> u64 {
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
            self.orders.warm_key(&request.key);
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
            Command::GetOrder { order_id } => {
                self.lookup_order(order_id).map_or_else(|reply| reply, |r| Reply::Order(r.to_order(order_id)))
            }
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
        match *cmd {
            Command::GetOrder { order_id } => {
                self.lookup_order(order_id).map_or_else(|reply| reply, |r| Reply::Order(r.to_order(order_id)))
            }
            Command::GetOrderByKey { key } => self.get_by_key(&key, now),
            Command::GetStock { product } => self.stock(product).map_or(Reply::rejected(Status::NoSuchProduct, 0), Reply::Stock),
            Command::PlaceOrder(ref request) => match self.config.check_key(&request.key, now) {
                Err(rejection) => Reply::Rejected(rejection),
                Ok(()) => self.answer_retry_without_change(request, now, refuse),
            },
            Command::Pay { order_id } => match self.lookup_order(order_id) {
                Ok(record) if record.state == OrderState::Paid => Reply::Order(record.to_order(order_id)),
                _ => Reply::rejected(refuse, 0),
            },
            Command::Cancel { order_id } => match self.lookup_order(order_id) {
                Ok(record) if record.state == OrderState::Cancelled => Reply::Order(record.to_order(order_id)),
                _ => Reply::rejected(refuse, 0),
            },
            Command::Upsert(_) | Command::AdjustStock { .. } => Reply::rejected(refuse, 0),
        }
    }

    /// A retried place order answered from memory: the order its key placed,
    /// `key_reused`, or `refuse` for a key not seen (a new order).
    fn answer_retry_without_change(&self, request: &PlaceOrder, now: u64, refuse: Status) -> Reply {
        match self.lookup_key(&request.key, now) {
            Ok(Some((id, record))) if record.placed_by(request) => Reply::Order(record.to_order(id)),
            Ok(Some((id, _))) => Reply::rejected(Status::KeyReused, id),
            Ok(None) => Reply::rejected(refuse, 0),
            Err(rejection) => Reply::Rejected(rejection),
        }
    }

    /// Get order by key at engine time `now`: the key's window first, then
    /// the order it placed.
    fn get_by_key(&self, key: &IdempotencyKey, now: u64) -> Reply {
        if let Err(rejection) = self.config.check_key(key, now) {
            return Reply::Rejected(rejection);
        }
        match self.lookup_key(key, now) {
            Ok(Some((id, record))) => Reply::Order(record.to_order(id)),
            Ok(None) => Reply::rejected(Status::NoSuchOrder, 0),
            Err(rejection) => Reply::Rejected(rejection),
        }
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
        match self.orders.get(order_id) {
            Some(record) => Reply::Order(record.to_order(order_id)),
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
        if let Some((id, record)) = self.lookup_key(&request.key, now)? {
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
        if self.orders.in_memory() >= max || self.orders.keys() >= max {
            return Err(Rejection::new(Status::OrdersFull, 0));
        }
        let order_id = self.orders.next_id().ok_or(Rejection::new(Status::OrdersFull, 0))?;
        Ok(Placement::New(Event::OrderPlaced { time_ms: now, order_id, request: *request }))
    }

    fn pay(&mut self, order_id: u64, now: u64, events: &mut Vec<Event>) -> Reply {
        let record = match self.lookup_order(order_id) {
            Ok(record) => record,
            Err(reply) => return reply,
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
        let record = match self.lookup_order(order_id) {
            Ok(record) => record,
            Err(reply) => return reply,
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

/// An archive that cannot be read: said in the server log, answered
/// `internal` (never a new order, never a guess).
fn unreadable(error: &ArchiveError) -> Reply {
    tracing::error!(error = %error, "an archived order cannot be read; the request is answered internal");
    Reply::rejected(Status::Internal, 0)
}
