//! What a catalogue load would change: read the server's products first,
//! compare each with the file, and say it before anything is sent
//! (`--dry-run`), or carry out the stock part (`--set-stock`).
//!
//! An upsert never moves the stock of an existing product (PROTOCOL.md
//! § 4.5): it sets the price, the payment window and the per-user limit, and
//! stock moves only by adjustments. With `--set-stock` the file's `stock`
//! becomes the product's total supplied: the load adjusts each existing
//! product by `stock - supplied`, which is refused before anything is sent
//! when more units than the file supplies are already sold or held.
//!
//! Reads and adjustments are pipelined like the load itself
//! ([`super::load`]). Between the read and the adjustment orders keep
//! coming, which changes `available` but never `supplied`, so the delta
//! stays right; only another operator adjusting the same product at the
//! same time could make it wrong, and the adjustment's reply shows it.

use std::collections::VecDeque;

use orderd_protocol::client::{Client, Ticket};
use orderd_protocol::message::{AdjustStock, ProductRef};
use orderd_protocol::{Reply, Request, Status, StockInfo, UpsertProduct};
use serde::Serialize;

use super::load::{BATCH, WINDOW};
use super::AdminError;

/// What a load does to one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// The server has no such product: it is created with the file's stock.
    New {
        /// The product.
        #[serde(serialize_with = "crate::json_id::id")]
        product: u64,
        /// Units it starts with.
        stock: u64,
    },
    /// The product exists: its settings change where the file differs, and
    /// its stock moves by `stock_delta` (only with `--set-stock`).
    Update {
        /// The product.
        #[serde(serialize_with = "crate::json_id::id")]
        product: u64,
        /// Settings that differ: `(field, now, in the file)`.
        settings: Vec<(&'static str, u64, u64)>,
        /// Units supplied now.
        supplied: u64,
        /// Units available now.
        available: u64,
        /// The file's stock.
        file_stock: u64,
        /// Units the load adds (negative: removes); `0` without `--set-stock`.
        stock_delta: i64,
    },
    /// The product exists and the file changes nothing about it.
    Unchanged {
        /// The product.
        #[serde(serialize_with = "crate::json_id::id")]
        product: u64,
    },
}

impl Change {
    /// Whether the change is worth a line in the human output: it changes
    /// something, or its stock differs from the file and is kept.
    #[must_use]
    pub fn is_notable(&self) -> bool {
        match self {
            Change::New { .. } => true,
            Change::Update { settings, supplied, file_stock, stock_delta, .. } => {
                !settings.is_empty() || *stock_delta != 0 || supplied != file_stock
            }
            Change::Unchanged { .. } => false,
        }
    }
}

/// Every product's change, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Products created.
    pub new: usize,
    /// Existing products whose settings or stock change.
    pub updated: usize,
    /// Existing products the load does not change.
    pub unchanged: usize,
    /// Existing products whose stock differs from the file and is kept
    /// (without `--set-stock`).
    pub stock_kept: usize,
    /// Existing products whose stock the load adjusts (`--set-stock`).
    pub stock_adjusted: usize,
    /// Per product.
    pub changes: Vec<Change>,
}

impl Plan {
    /// The plan for loading `products` over `current` (the server's
    /// products, `None` where it has none), with or without `--set-stock`.
    ///
    /// # Errors
    /// [`AdminError::StockBelowTaken`] for the first product whose file
    /// stock is below the units already sold or held (`--set-stock` only).
    pub fn new(products: &[UpsertProduct], current: &[Option<StockInfo>], set_stock: bool) -> Result<Plan, AdminError> {
        let mut plan =
            Plan { new: 0, updated: 0, unchanged: 0, stock_kept: 0, stock_adjusted: 0, changes: Vec::with_capacity(products.len()) };
        for (u, now) in products.iter().zip(current) {
            let change = match now {
                None => Change::New { product: u.product, stock: u.stock },
                Some(s) => {
                    let settings: Vec<(&'static str, u64, u64)> = [
                        ("unit_price_cents", s.unit_price_cents, u.unit_price_cents),
                        ("payment_window_ms", s.payment_window_ms, u.payment_window_ms),
                        ("per_user_limit", u64::from(s.per_user_limit), u64::from(u.per_user_limit)),
                    ]
                    .into_iter()
                    .filter(|(_, a, b)| a != b)
                    .collect();
                    let stock_delta = if set_stock { stock_delta(s, u.stock)? } else { 0 };
                    if settings.is_empty() && stock_delta == 0 && (set_stock || s.supplied == u.stock) {
                        Change::Unchanged { product: u.product }
                    } else {
                        Change::Update {
                            product: u.product,
                            settings,
                            supplied: s.supplied,
                            available: s.available,
                            file_stock: u.stock,
                            stock_delta,
                        }
                    }
                }
            };
            match &change {
                Change::New { .. } => plan.new += 1,
                Change::Update { settings, supplied, file_stock, stock_delta, .. } => {
                    plan.stock_kept += usize::from(!set_stock && supplied != file_stock);
                    plan.stock_adjusted += usize::from(*stock_delta != 0);
                    if settings.is_empty() && *stock_delta == 0 {
                        plan.unchanged += 1;
                    } else {
                        plan.updated += 1;
                    }
                }
                Change::Unchanged { .. } => plan.unchanged += 1,
            }
            plan.changes.push(change);
        }
        Ok(plan)
    }

    /// The adjustments `--set-stock` sends: `(product, delta)`.
    pub fn adjustments(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.changes.iter().filter_map(|c| match *c {
            Change::Update { product, stock_delta, .. } if stock_delta != 0 => Some((product, stock_delta)),
            _ => None,
        })
    }
}

/// The adjustment that makes `file_stock` the product's total supplied.
fn stock_delta(now: &StockInfo, file_stock: u64) -> Result<i64, AdminError> {
    let taken = now.reserved.saturating_add(now.paid);
    if file_stock < taken {
        return Err(AdminError::StockBelowTaken { product: now.product, file_stock, taken });
    }
    let delta = i128::from(file_stock) - i128::from(now.supplied);
    i64::try_from(delta).map_err(|_| AdminError::StockBelowTaken { product: now.product, file_stock, taken })
}

/// The server's current state of each of `products` (`None`: no such
/// product), read in pipelined batches.
///
/// # Errors
/// A transport failure, or a reply that is neither the product nor
/// `no_such_product`.
pub fn read_current(client: &mut Client, server: &str, products: &[UpsertProduct]) -> Result<Vec<Option<StockInfo>>, AdminError> {
    let requests: Vec<Request> = products.iter().map(|u| Request::GetStock(ProductRef { product: u.product })).collect();
    let replies = pipelined(client, server, &requests, "reading the current catalogue")?;
    replies
        .into_iter()
        .zip(products)
        .map(|(reply, u)| match reply {
            Reply::Stock(s) => Ok(Some(s)),
            Reply::Rejected(r) if r.status() == Some(Status::NoSuchProduct) => Ok(None),
            other => Err(AdminError::UpsertMismatch {
                server: server.to_owned(),
                product: u.product,
                what: format!("reading it answered {other:?}"),
            }),
        })
        .collect()
}

/// Sends the plan's adjustments; answers how many the server applied.
///
/// # Errors
/// The first adjustment the server refused (with how many were applied),
/// or a transport failure.
pub fn adjust(client: &mut Client, server: &str, plan: &Plan) -> Result<usize, AdminError> {
    send_adjustments(client, server, &plan.adjustments().collect::<Vec<_>>())
}

/// Adjusts every product of `products` so that exactly its `stock` is
/// available: how a load generator starts each run from the workload's
/// stock on a server that sold some before. Not for a live shop: it moves
/// stock whatever was sold. Answers how many products were adjusted.
///
/// # Errors
/// As [`adjust`], or [`read_current`] for a product the server lacks.
pub fn refill(client: &mut Client, server: &str, products: &[UpsertProduct]) -> Result<usize, AdminError> {
    let current = read_current(client, server, products)?;
    let mut wanted = Vec::new();
    for (u, now) in products.iter().zip(&current) {
        let Some(now) = now else {
            return Err(AdminError::NoSuchProduct { server: server.to_owned(), product: u.product });
        };
        let delta = i128::from(u.stock) - i128::from(now.available);
        if delta != 0 {
            let delta =
                i64::try_from(delta).map_err(|_| AdminError::StockBelowTaken { product: u.product, file_stock: u.stock, taken: 0 })?;
            wanted.push((u.product, delta));
        }
    }
    send_adjustments(client, server, &wanted)
}

fn send_adjustments(client: &mut Client, server: &str, wanted: &[(u64, i64)]) -> Result<usize, AdminError> {
    let requests: Vec<Request> = wanted.iter().map(|&(product, delta)| Request::AdjustStock(AdjustStock { product, delta })).collect();
    let replies = pipelined(client, server, &requests, "adjusting stock")?;
    let mut applied = 0;
    for ((product, delta), reply) in wanted.iter().zip(replies) {
        match reply {
            Reply::Stock(_) => applied += 1,
            Reply::Rejected(rejection) => {
                return Err(AdminError::AdjustRefused { server: server.to_owned(), product: *product, delta: *delta, rejection, applied })
            }
            other => {
                return Err(AdminError::UpsertMismatch {
                    server: server.to_owned(),
                    product: *product,
                    what: format!("adjusting its stock answered {other:?}"),
                })
            }
        }
    }
    Ok(applied)
}

/// Every reply to `requests`, in order, sent [`BATCH`] at a time with up to
/// [`WINDOW`] batches in flight.
fn pipelined(client: &mut Client, server: &str, requests: &[Request], what: &str) -> Result<Vec<Reply>, AdminError> {
    let mut replies = Vec::with_capacity(requests.len());
    let mut batches = requests.chunks(BATCH);
    let mut in_flight: VecDeque<Ticket> = VecDeque::with_capacity(WINDOW);
    loop {
        while in_flight.len() < WINDOW {
            let Some(batch) = batches.next() else { break };
            in_flight.push_back(client.submit(batch).map_err(|e| AdminError::from_client(server, what, e))?);
        }
        let Some(ticket) = in_flight.pop_front() else { break };
        replies.extend(client.wait(ticket).map_err(|e| AdminError::from_client(server, what, e))?);
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(product: u64, price: u64, stock: u64) -> UpsertProduct {
        UpsertProduct { product, unit_price_cents: price, stock, payment_window_ms: 0, per_user_limit: 1 }
    }

    fn stock(product: u64, price: u64, available: u64, reserved: u64, paid: u64) -> StockInfo {
        StockInfo {
            product,
            unit_price_cents: price,
            available,
            reserved,
            paid,
            supplied: available + reserved + paid,
            payment_window_ms: 0,
            per_user_limit: 1,
        }
    }

    #[test]
    fn a_reload_of_the_same_file_during_a_sale_changes_nothing() {
        let file = [upsert(1, 100, 1000), upsert(2, 200, 50)];
        let now = [Some(stock(1, 100, 900, 60, 40)), Some(stock(2, 200, 50, 0, 0))];
        let plan = Plan::new(&file, &now, false).unwrap();
        assert_eq!((plan.new, plan.updated, plan.unchanged, plan.stock_kept), (0, 0, 2, 0));
        assert!(plan.changes.iter().all(|c| !c.is_notable()));
        assert_eq!(Plan::new(&file, &now, true).unwrap().adjustments().count(), 0);
    }

    #[test]
    fn a_price_change_updates_settings_and_keeps_the_stock() {
        let file = [upsert(1, 150, 1000), upsert(3, 10, 7)];
        let now = [Some(stock(1, 100, 900, 60, 40)), None];
        let plan = Plan::new(&file, &now, false).unwrap();
        assert_eq!((plan.new, plan.updated, plan.unchanged), (1, 1, 0));
        assert_eq!(plan.changes[1], Change::New { product: 3, stock: 7 });
        assert!(
            matches!(&plan.changes[0], Change::Update { settings, stock_delta: 0, .. } if settings == &[("unit_price_cents", 100, 150)])
        );
    }

    #[test]
    fn a_different_stock_is_kept_unless_set_stock_makes_it_the_total_supplied() {
        let file = [upsert(1, 100, 1200)];
        let now = [Some(stock(1, 100, 900, 60, 40))];
        let kept = Plan::new(&file, &now, false).unwrap();
        assert_eq!((kept.updated, kept.unchanged, kept.stock_kept, kept.stock_adjusted), (0, 1, 1, 0));
        assert!(kept.changes[0].is_notable(), "a kept difference is shown");
        let set = Plan::new(&file, &now, true).unwrap();
        assert_eq!((set.updated, set.stock_adjusted), (1, 1));
        assert_eq!(set.adjustments().collect::<Vec<_>>(), [(1, 200)]);
        let lower = Plan::new(&[upsert(1, 100, 500)], &now, true).unwrap();
        assert_eq!(lower.adjustments().collect::<Vec<_>>(), [(1, -500)]);
    }

    #[test]
    fn set_stock_below_the_units_sold_or_held_is_refused_before_anything_is_sent() {
        let now = [Some(stock(1, 100, 900, 60, 40))];
        let err = Plan::new(&[upsert(1, 100, 99)], &now, true).unwrap_err();
        assert!(matches!(err, AdminError::StockBelowTaken { product: 1, file_stock: 99, taken: 100 }), "{err}");
        assert_eq!(Plan::new(&[upsert(1, 100, 100)], &now, true).unwrap().adjustments().collect::<Vec<_>>(), [(1, -900)]);
    }
}
