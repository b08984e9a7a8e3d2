//! [`Shard::apply_event`]: the only code that mutates a shard.
//!
//! Live commands reach it through `Shard::apply` with events the engine has
//! just decided; recovery reaches it through [`Shard::replay`] with events
//! read back from the log. Either way it first checks that the event is a
//! legal step from the current state and only then changes anything: an
//! event that is not (a corrupt or foreign log) leaves the shard untouched
//! and comes back as an [`EventError`], never a panic.

use orderd_protocol::limits::{MAX_ORDER_QTY, MAX_UNIT_PRICE_CENTS};
use orderd_protocol::{OrderState, PlaceOrder, UpsertProduct};

use crate::engine::catalogue::Product;
use crate::engine::event::{Event, OrderFacts, StockRule};
use crate::engine::holdings::Holdings;
use crate::engine::orders::OrderRecord;
use crate::engine::shard::Shard;

/// Why an event is not a legal step from a shard's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event is older than the shard's clock.
    #[error("event time {time_ms} is before the shard clock {clock_ms}")]
    TimeWentBackwards {
        /// The event's time.
        time_ms: u64,
        /// The shard's clock.
        clock_ms: u64,
    },
    /// An order was placed with an id other than the next one.
    #[error("order placed as {found}, but the next id is {expected:?}")]
    WrongOrderId {
        /// The next id (`None`: sequence exhausted).
        expected: Option<u64>,
        /// The id in the event.
        found: u64,
    },
    /// The product does not exist.
    #[error("no product {product}")]
    NoSuchProduct {
        /// The product.
        product: u64,
    },
    /// The order does not exist.
    #[error("no order {order_id}")]
    NoSuchOrder {
        /// The order.
        order_id: u64,
    },
    /// A field is out of its range (quantity, price, product 0).
    #[error("a field of the event is out of range")]
    InvalidField,
    /// The order's price is not the catalogue price.
    #[error("order price {found} is not the catalogue price {catalogue}")]
    PriceMismatch {
        /// The catalogue price.
        catalogue: u64,
        /// The price in the event.
        found: u64,
    },
    /// Stock does not cover the order.
    #[error("order of {qty} units but {available} available")]
    InsufficientStock {
        /// Units ordered.
        qty: u64,
        /// Units available.
        available: u64,
    },
    /// The key is already bound to an order.
    #[error("idempotency key already bound to order {order_id}")]
    KeyBound {
        /// The order holding the key.
        order_id: u64,
    },
    /// The order would take the user past the per-user limit.
    #[error("user would hold {would_hold} units, limit {limit}")]
    OverLimit {
        /// Units after the order.
        would_hold: u64,
        /// The limit.
        limit: u64,
    },
    /// The order is not placed, so it cannot be paid, cancelled or expired.
    #[error("order {order_id} is {state:?}, not placed")]
    NotPlaced {
        /// The order.
        order_id: u64,
        /// Its state.
        state: OrderState,
    },
    /// Paid at or after its deadline, or expired before it.
    #[error("order {order_id} expires at {expires_ms}, event at {time_ms}")]
    WrongSideOfDeadline {
        /// The order.
        order_id: u64,
        /// Its deadline.
        expires_ms: u64,
        /// The event's time.
        time_ms: u64,
    },
    /// The per-user holdings do not cover a release (an inconsistent state).
    #[error("user {user} holds fewer units of product {product} than the order releases")]
    HoldingsMismatch {
        /// The user.
        user: u64,
        /// The product.
        product: u64,
    },
    /// A transition repeats facts (user, product, price, quantity) that are
    /// not its order's.
    #[error("the event's facts about order {order_id} are not the order's")]
    FactsMismatch {
        /// The order.
        order_id: u64,
    },
    /// A product gained a per-user limit and the archived orders to count
    /// could not be read (the server log says why).
    #[error("the order archive could not be read to count the holdings of product {product}")]
    ArchiveUnreadable {
        /// The product.
        product: u64,
    },
    /// The stock would leave `0..=u64::MAX`.
    #[error("stock of product {product} would leave its range")]
    StockOutOfRange {
        /// The product.
        product: u64,
    },
    /// An upsert that creates a product names one that exists, or one that
    /// keeps stock records an available count that is not the product's.
    #[error("the upsert of product {product} does not match the catalogue ({rule:?})")]
    UpsertMismatch {
        /// The product.
        product: u64,
        /// The event's stock rule.
        rule: StockRule,
    },
}

/// How a placed order leaves the placed state.
#[derive(Clone, Copy)]
enum Close {
    Pay,
    Cancel,
    Expire,
}

impl Shard {
    /// Applies one event: checks that it is a legal step from the current
    /// state, then changes the state. On error nothing has changed.
    ///
    /// # Errors
    /// See [`EventError`].
    pub fn apply_event(&mut self, event: &Event) -> Result<(), EventError> {
        let time_ms = event.time_ms();
        if time_ms < self.clock_ms {
            return Err(EventError::TimeWentBackwards { time_ms, clock_ms: self.clock_ms });
        }
        match *event {
            Event::OrderPlaced { time_ms, order_id, ref request } => self.apply_placed(time_ms, order_id, request)?,
            Event::OrderPaid { time_ms, order_id, ref facts } => self.apply_close(time_ms, order_id, facts, Close::Pay)?,
            Event::OrderCancelled { time_ms, order_id, ref facts } => self.apply_close(time_ms, order_id, facts, Close::Cancel)?,
            Event::OrderExpired { time_ms, order_id, ref facts } => self.apply_close(time_ms, order_id, facts, Close::Expire)?,
            Event::ProductUpserted { ref upsert, rule, .. } => self.apply_upserted(upsert, rule)?,
            Event::StockAdjusted { product, delta, .. } => self.apply_adjusted(product, delta)?,
        }
        self.clock_ms = time_ms;
        self.position += 1;
        Ok(())
    }

    fn apply_placed(&mut self, time_ms: u64, order_id: u64, request: &PlaceOrder) -> Result<(), EventError> {
        let expected = self.orders.next_id();
        if expected != Some(order_id) {
            return Err(EventError::WrongOrderId { expected, found: order_id });
        }
        if request.qty == 0 || request.qty > MAX_ORDER_QTY {
            return Err(EventError::InvalidField);
        }
        let qty = u64::from(request.qty);
        let product = self.products.get_mut(&request.product).ok_or(EventError::NoSuchProduct { product: request.product })?;
        if request.unit_price_cents != product.unit_price_cents {
            return Err(EventError::PriceMismatch { catalogue: product.unit_price_cents, found: request.unit_price_cents });
        }
        if qty > product.available {
            return Err(EventError::InsufficientStock { qty, available: product.available });
        }
        let holding = match product.per_user_limit {
            0 => None,
            limit => {
                let holding = self.holdings.entry(request.user, request.product);
                let (would_hold, limit) = (holding.held().saturating_add(qty), u64::from(limit));
                if would_hold > limit {
                    return Err(EventError::OverLimit { would_hold, limit });
                }
                Some(holding)
            }
        };
        let expires_ms = match product.payment_window_ms {
            0 => u64::MAX,
            window => time_ms.saturating_add(window),
        };
        let record = OrderRecord {
            key: request.key,
            user: request.user,
            product: request.product,
            unit_price_cents: request.unit_price_cents,
            created_ms: time_ms,
            expires_ms,
            qty: request.qty,
            state: OrderState::Placed,
        };
        // The last check (key not bound) and the first change in one probe.
        if let Err(bound) = self.orders.try_insert(record) {
            return Err(EventError::KeyBound { order_id: self.orders.id_of(bound) });
        }

        // Checked: from here on nothing fails.
        product.reserve(qty);
        if let Some(holding) = holding {
            holding.add(qty);
        }
        self.stats.orders_placed += 1;
        self.stats.live_orders += 1;
        self.stats.gmv_cents = self.stats.gmv_cents.saturating_add(qty * request.unit_price_cents);
        Ok(())
    }

    fn apply_close(&mut self, time_ms: u64, order_id: u64, facts: &OrderFacts, close: Close) -> Result<(), EventError> {
        let record = self.orders.get_mut(order_id).ok_or(EventError::NoSuchOrder { order_id })?;
        if record.facts() != *facts {
            return Err(EventError::FactsMismatch { order_id });
        }
        if record.state != OrderState::Placed {
            return Err(EventError::NotPlaced { order_id, state: record.state });
        }
        let due = record.is_due(time_ms);
        let on_time = match close {
            Close::Pay => !due,
            Close::Cancel => true,
            Close::Expire => due,
        };
        if !on_time {
            return Err(EventError::WrongSideOfDeadline { order_id, expires_ms: record.expires_ms, time_ms });
        }
        let product = self.products.get_mut(&record.product).ok_or(EventError::NoSuchProduct { product: record.product })?;
        let qty = u64::from(record.qty);
        let releases_holding = product.per_user_limit != 0 && !matches!(close, Close::Pay);
        if releases_holding && self.holdings.held(record.user, record.product) < qty {
            return Err(EventError::HoldingsMismatch { user: record.user, product: record.product });
        }
        // A placed order's units are in `reserved` (the stock invariant).
        debug_assert!(product.reserved >= qty);

        // Checked: from here on nothing fails.
        match close {
            Close::Pay => {
                product.settle(qty);
                record.state = OrderState::Paid;
            }
            Close::Cancel | Close::Expire => {
                product.release(qty);
                record.state = if matches!(close, Close::Cancel) { OrderState::Cancelled } else { OrderState::Expired };
                if releases_holding {
                    self.holdings.remove(record.user, record.product, qty);
                }
                self.stats.live_orders -= 1;
            }
        }
        self.orders.closed();
        self.orders.prune();
        Ok(())
    }

    fn apply_upserted(&mut self, upsert: &UpsertProduct, rule: StockRule) -> Result<(), EventError> {
        if upsert.product == 0 || upsert.unit_price_cents == 0 || upsert.unit_price_cents > MAX_UNIT_PRICE_CENTS {
            return Err(EventError::InvalidField);
        }
        let new_limit = upsert.per_user_limit;
        // A product gaining a limit counts what each buyer holds, archived
        // orders included: read before anything changes.
        let gains_limit = new_limit != 0 && self.products.get(&upsert.product).is_some_and(|p| p.per_user_limit == 0);
        let counted = if gains_limit {
            Some(Holdings::count_product(upsert.product, &self.orders).map_err(|e| {
                tracing::error!(error = %e, product = upsert.product, "cannot count the holdings of a product gaining a limit");
                EventError::ArchiveUnreadable { product: upsert.product }
            })?)
        } else {
            None
        };
        let mismatch = EventError::UpsertMismatch { product: upsert.product, rule };
        let old_limit = match self.products.get_mut(&upsert.product) {
            Some(product) => {
                match rule {
                    StockRule::Create => return Err(mismatch),
                    StockRule::Keep if product.available != upsert.stock => return Err(mismatch),
                    StockRule::Keep => {}
                    StockRule::Set => {
                        let supplied =
                            product.supplied_with_stock(upsert.stock).ok_or(EventError::StockOutOfRange { product: upsert.product })?;
                        // Checked: from here on nothing fails.
                        product.available = upsert.stock;
                        product.supplied = supplied;
                    }
                }
                let old_limit = product.per_user_limit;
                product.unit_price_cents = upsert.unit_price_cents;
                product.payment_window_ms = upsert.payment_window_ms;
                product.per_user_limit = new_limit;
                debug_assert!(product.check());
                old_limit
            }
            None => {
                if rule == StockRule::Keep {
                    return Err(EventError::NoSuchProduct { product: upsert.product });
                }
                let product = Product::new(upsert.unit_price_cents, upsert.stock, upsert.payment_window_ms, new_limit);
                self.products.insert(upsert.product, product);
                // A new product has no orders: nothing to count.
                return Ok(());
            }
        };
        match (old_limit, new_limit) {
            (0, 1..) => self.holdings.set_product(upsert.product, counted.as_deref().unwrap_or_default()),
            (1.., 0) => self.holdings.drop_product(upsert.product),
            _ => {}
        }
        Ok(())
    }

    fn apply_adjusted(&mut self, product_id: u64, delta: i64) -> Result<(), EventError> {
        let product = self.products.get_mut(&product_id).ok_or(EventError::NoSuchProduct { product: product_id })?;
        let (available, supplied) = product.adjusted(delta).ok_or(EventError::StockOutOfRange { product: product_id })?;
        product.available = available;
        product.supplied = supplied;
        debug_assert!(product.check());
        Ok(())
    }
}
