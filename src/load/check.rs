//! The invariants of `WORKLOAD.md`, checked at the end of a run through the
//! server's own requests, against what the generator counted.
//!
//! | check | how |
//! |---|---|
//! | `stock_balance` | every product's get-stock: `supplied == available + reserved + paid` |
//! | `sold_matches_accepted` | per product, units sold (`reserved + paid`) after the run minus before equals the orders the generator saw accepted for it (within the requests of unknown outcome, if a connection failed), and `supplied` did not change |
//! | `per_user_limit` | limited workloads: no (user, product) pair accepted twice across all threads; and a probe: up to [`LIMIT_PROBES`] accepted pairs are ordered again with new keys, and the server must refuse each (`limit_exceeded`, or `sold_out` once stock is gone) |
//! | `retries_return_original` | every deliberate retry was answered with the order its key first placed |
//! | `keys_read_back` | a sample of accepted keys read back by get-order-by-key gives the same order ids (or `key_expired` for a key older than `--dedup-window-secs` by the server's clock) |
//! | `replies_match_requests` | every order returned answers its own request (key, user, product, quantity) |
//! | `final_states` | `lifecycle`: once the payment window has passed, every order left to expire (or whose follow-up was not answered) is read back: none is still placed, and paid + cancelled + expired = accepted; `sold_matches_accepted` then counts the cancelled and expired units as given back |
//!
//! Before the run, the same get-stock snapshot is taken ([`snapshot`]), so
//! the accounting holds whether the catalogue was just loaded or not.

use orderd_protocol::client::Client;
use orderd_protocol::message::{KeyRef, OrderRef, ProductRef};
use orderd_protocol::{IdempotencyKey, OrderState, PlaceOrder, Reply, Request, Status, StockInfo};
use serde::Serialize;

use super::tally::{Sample, Tally};
use super::LoadError;
use crate::workload::{unit_price_cents, Workload};

/// Requests per batch of the checks' reads.
const READ_BATCH: usize = 1024;

/// Accepted (user, product) pairs ordered again by the limit probe.
pub const LIMIT_PROBES: usize = 100;

/// Failures described in a check's detail (the rest are counted).
const NOTES: usize = 3;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Its name (see the module docs).
    pub name: &'static str,
    /// Whether the invariant holds.
    pub ok: bool,
    /// What was checked and found, in a line.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: String) -> Check {
        Check { name, ok, detail }
    }
}

/// Units held by live orders.
const fn sold(s: &StockInfo) -> u64 {
    s.reserved.saturating_add(s.paid)
}

/// Every product of `workload` as the server reports it, in product order.
///
/// # Errors
/// [`LoadError::NotLoaded`] for a product the server does not have; a
/// transport failure; a reply of another kind.
pub fn snapshot(client: &mut Client, server: &str, workload: Workload) -> Result<Vec<StockInfo>, LoadError> {
    let products: Vec<u64> = workload.products().collect();
    let mut stock = Vec::with_capacity(products.len());
    for chunk in products.chunks(READ_BATCH) {
        let requests: Vec<Request> = chunk.iter().map(|&product| Request::GetStock(ProductRef { product })).collect();
        let what = || format!("get-stock of products {:?}..", chunk.first());
        let replies = client.execute(&requests).map_err(|e| LoadError::client(server, what(), e))?;
        if replies.len() != chunk.len() {
            return Err(LoadError::Unexpected { server: server.into(), what: what(), got: format!("{} replies", replies.len()) });
        }
        for (&product, reply) in chunk.iter().zip(replies) {
            match reply {
                Reply::Stock(s) if s.product == product => stock.push(s),
                Reply::Rejected(r) if r.status() == Some(Status::NoSuchProduct) => {
                    return Err(LoadError::NotLoaded { server: server.into(), workload: workload.name(), product })
                }
                other => {
                    return Err(LoadError::Unexpected {
                        server: server.into(),
                        what: format!("get-stock of product {product}"),
                        got: format!("{other:?}"),
                    })
                }
            }
        }
    }
    Ok(stock)
}

/// `stock_balance`: `supplied == available + reserved + paid` everywhere.
#[must_use]
pub fn stock_balance(after: &[StockInfo]) -> Check {
    let broken: Vec<&StockInfo> =
        after.iter().filter(|s| u128::from(s.supplied) != u128::from(s.available) + u128::from(s.reserved) + u128::from(s.paid)).collect();
    let detail = match broken.first() {
        None => format!("{} products: supplied = available + reserved + paid", after.len()),
        Some(_) => {
            let notes: Vec<String> = broken
                .iter()
                .take(NOTES)
                .map(|s| format!("product {}: supplied {} != {} + {} + {}", s.product, s.supplied, s.available, s.reserved, s.paid))
                .collect();
            format!("{} of {} products out of balance; {}", broken.len(), after.len(), notes.join("; "))
        }
    };
    Check::new("stock_balance", broken.is_empty(), detail)
}

/// `sold_matches_accepted`: the server sold, per product, exactly what the
/// generator saw accepted, less what was given back (`released[p]`:
/// cancelled and expired orders, `lifecycle` only), give or take the
/// requests of unknown outcome.
#[must_use]
pub fn sold_matches_accepted(before: &[StockInfo], after: &[StockInfo], tally: &Tally, released: &[u64]) -> Check {
    let mut notes = Vec::new();
    let mut broken = 0usize;
    let (mut sold_total, mut unknown_total) = (0i128, 0u64);
    for (b, a) in before.iter().zip(after) {
        let delta = i128::from(sold(a)) - i128::from(sold(b));
        sold_total += delta;
        let at = |v: &[u64]| usize::try_from(a.product).ok().and_then(|i| v.get(i)).copied().unwrap_or(0);
        let (accepted, given_back, unknown) = (at(&tally.accepted_per_product), at(released), at(&tally.unknown_per_product));
        unknown_total += unknown;
        let expected = i128::from(accepted) - i128::from(given_back);
        let in_bounds = expected <= delta && delta <= expected + i128::from(unknown);
        if !in_bounds || a.supplied != b.supplied || a.product != b.product {
            broken += 1;
            if notes.len() < NOTES {
                notes.push(format!(
                    "product {}: sold {delta} during the run, generator saw {accepted} accepted, {given_back} given back ({unknown} unknown), supplied {} -> {}",
                    a.product, b.supplied, a.supplied
                ));
            }
        }
    }
    let detail = if broken == 0 {
        let unknown = if unknown_total > 0 { format!(" (+ up to {unknown_total} of unknown outcome)") } else { String::new() };
        format!("{} products: {sold_total} units sold = {} orders accepted{unknown}", after.len(), tally.accepted)
    } else {
        format!("{broken} of {} products disagree; {}", after.len(), notes.join("; "))
    };
    Check::new("sold_matches_accepted", broken == 0 && before.len() == after.len(), detail)
}

/// What the limit probe found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// Probes sent.
    pub sent: usize,
    /// Refused with `limit_exceeded`.
    pub limit_exceeded: usize,
    /// Refused with `sold_out` (inconclusive about the limit).
    pub sold_out: usize,
    /// Accepted: the user now holds more than the limit.
    pub accepted: usize,
    /// Any other answer.
    pub other: usize,
}

/// Order up to [`LIMIT_PROBES`] accepted pairs again, with keys no request
/// of the run used (stream `connections` of [`run_key`](super::draw::run_key)).
///
/// # Errors
/// A transport failure.
pub fn limit_probe(
    client: &mut Client,
    server: &str,
    tally: &Tally,
    run_key: IdempotencyKey,
    connections: u64,
) -> Result<Probe, LoadError> {
    let mut pairs: Vec<(u64, u64)> = tally.pairs.iter().flatten().copied().collect();
    pairs.sort_unstable();
    pairs.truncate(LIMIT_PROBES);
    let now = orderd_protocol::client::unix_now_ms();
    let requests: Vec<Request> = pairs
        .iter()
        .zip(0u64..)
        .map(|(&(user, product), i)| {
            let key = crate::load::draw::run_key(run_key, connections, i, now);
            Request::PlaceOrder(PlaceOrder { key, user, product, unit_price_cents: unit_price_cents(product), qty: 1 })
        })
        .collect();
    let mut probe = Probe { sent: requests.len(), ..Probe::default() };
    if requests.is_empty() {
        return Ok(probe);
    }
    let replies = client.execute(&requests).map_err(|e| LoadError::client(server, "the per-user limit probe", e))?;
    for reply in replies {
        match reply {
            Reply::Rejected(r) if r.status() == Some(Status::LimitExceeded) => probe.limit_exceeded += 1,
            Reply::Rejected(r) if r.status() == Some(Status::SoldOut) => probe.sold_out += 1,
            Reply::Order(_) => probe.accepted += 1,
            _ => probe.other += 1,
        }
    }
    Ok(probe)
}

/// `per_user_limit`: no pair accepted twice, and the server refuses more.
#[must_use]
pub fn per_user_limit(tally: &Tally, probe: &Probe) -> Check {
    let pairs = tally.pairs.as_ref().map_or(0, std::collections::HashSet::len);
    let ok = tally.duplicate_pairs == 0 && probe.accepted == 0 && probe.other == 0;
    let detail = format!(
        "{pairs} (user, product) pairs accepted, {} accepted twice; probe of {}: {} limit_exceeded, {} sold_out, {} accepted, {} other",
        tally.duplicate_pairs, probe.sent, probe.limit_exceeded, probe.sold_out, probe.accepted, probe.other
    );
    Check::new("per_user_limit", ok, detail)
}

/// `retries_return_original`.
#[must_use]
pub fn retries_return_original(tally: &Tally) -> Check {
    let detail =
        format!("{} retries: {} returned the original order, {} did not", tally.retries, tally.retries_verified, tally.retries_failed);
    Check::new("retries_return_original", tally.retries_failed == 0, detail)
}

/// `replies_match_requests`.
#[must_use]
pub fn replies_match_requests(tally: &Tally) -> Check {
    let detail = if tally.mismatches == 0 {
        format!("{} orders each answered their own request", tally.accepted)
    } else {
        format!("{} replies did not answer their request; {}", tally.mismatches, tally.mismatch_notes.join("; "))
    };
    Check::new("replies_match_requests", tally.mismatches == 0, detail)
}

/// `keys_read_back`: each sampled key still names the order it placed, or
/// (a key older than `dedup_window_ms` by the server's clock, which a
/// `key_expired` refusal carries) is refused as expired.
///
/// # Errors
/// A transport failure.
pub fn keys_read_back(client: &mut Client, server: &str, samples: &[Sample], dedup_window_ms: u64) -> Result<Check, LoadError> {
    let (mut same, mut expired, mut notes, mut broken) = (0usize, 0usize, Vec::new(), 0usize);
    let past_window = |key: &IdempotencyKey, server_ms: u64| key.time_ms().is_some_and(|t| t.saturating_add(dedup_window_ms) < server_ms);
    for chunk in samples.chunks(READ_BATCH) {
        let requests: Vec<Request> = chunk.iter().map(|s| Request::GetOrderByKey(KeyRef { key: s.key, product: s.product })).collect();
        let replies = client.execute(&requests).map_err(|e| LoadError::client(server, "get-order-by-key of the sampled keys", e))?;
        for (i, s) in chunk.iter().enumerate() {
            match replies.get(i) {
                Some(Reply::Order(o)) if o.id == s.order_id && o.key == s.key => same += 1,
                Some(Reply::Rejected(r)) if r.status() == Some(Status::KeyExpired) && past_window(&s.key, r.detail) => expired += 1,
                other => {
                    broken += 1;
                    if notes.len() < NOTES {
                        notes.push(format!("key {:032x} placed order {}, read back {other:?}", s.key.as_u128(), s.order_id));
                    }
                }
            }
        }
    }
    let detail = if broken == 0 && expired > 0 {
        format!(
            "{same} sampled keys read back with their order ids, {expired} past the {} s dedup window refused as expired",
            dedup_window_ms / 1000
        )
    } else if broken == 0 {
        format!("{same} sampled keys read back with their order ids")
    } else {
        format!("{broken} of {} sampled keys read back differently; {}", samples.len(), notes.join("; "))
    };
    Ok(Check::new("keys_read_back", broken == 0, detail))
}

/// `lifecycle`: the final states of the orders the follow-ups left open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FinalStates {
    /// Orders paid (acknowledged payments, and read back).
    pub paid: u64,
    /// Orders cancelled.
    pub cancelled: u64,
    /// Orders expired.
    pub expired: u64,
    /// Orders still placed after the window (should be none).
    pub placed: u64,
    /// Orders that could not be read back.
    pub unread: u64,
    /// Per product, units given back (cancelled or expired).
    #[serde(skip)]
    pub released_per_product: Vec<u64>,
}

/// Reads back every order of `tally.left` and counts the final states
/// (with the follow-ups the tally saw acknowledged).
///
/// # Errors
/// A transport failure.
pub fn final_states(client: &mut Client, server: &str, tally: &Tally) -> Result<FinalStates, LoadError> {
    let mut left = tally.left.clone();
    left.sort_unstable();
    left.dedup();
    let mut states = FinalStates {
        paid: tally.paid,
        cancelled: tally.cancelled,
        released_per_product: tally.cancelled_per_product.clone(),
        ..FinalStates::default()
    };
    for chunk in left.chunks(READ_BATCH) {
        let requests: Vec<Request> = chunk.iter().map(|&order_id| Request::GetOrder(OrderRef { order_id })).collect();
        let replies = client.execute(&requests).map_err(|e| LoadError::client(server, "get-order of the orders left open", e))?;
        for (i, _) in chunk.iter().enumerate() {
            let Some(Reply::Order(o)) = replies.get(i) else {
                states.unread += 1;
                continue;
            };
            match o.state {
                OrderState::Paid => states.paid += 1,
                OrderState::Placed => states.placed += 1,
                OrderState::Cancelled | OrderState::Expired => {
                    if o.state == OrderState::Cancelled {
                        states.cancelled += 1;
                    } else {
                        states.expired += 1;
                    }
                    let p = usize::try_from(o.product).unwrap_or(usize::MAX);
                    if states.released_per_product.len() <= p && p < usize::MAX {
                        states.released_per_product.resize(p + 1, 0);
                    }
                    if let Some(n) = states.released_per_product.get_mut(p) {
                        *n += 1;
                    }
                }
            }
        }
    }
    Ok(states)
}

/// `final_states`: every order reached a final state, and they add up.
#[must_use]
pub fn final_states_check(states: &FinalStates, tally: &Tally) -> Check {
    let total = states.paid + states.cancelled + states.expired + states.placed + states.unread;
    let ok = states.placed == 0 && states.unread == 0 && total == tally.accepted;
    let detail = format!(
        "{} orders accepted: {} paid, {} cancelled, {} expired, {} still placed, {} not read back{}",
        tally.accepted,
        states.paid,
        states.cancelled,
        states.expired,
        states.placed,
        states.unread,
        if total == tally.accepted { String::new() } else { format!(" (the states add up to {total})") }
    ) + if states.placed > 0 { " — do the products have a payment window? (load the lifecycle catalogue)" } else { "" };
    Check::new("final_states", ok, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(product: u64, supplied: u64, available: u64, reserved: u64) -> StockInfo {
        StockInfo { product, unit_price_cents: 1, available, reserved, paid: 0, supplied, payment_window_ms: 0, per_user_limit: 0 }
    }

    #[test]
    fn a_product_out_of_balance_fails_the_stock_check() {
        assert!(stock_balance(&[stock(1, 10, 7, 3), stock(2, 5, 5, 0)]).ok);
        let c = stock_balance(&[stock(1, 10, 7, 3), stock(2, 5, 3, 1)]);
        assert!(!c.ok);
        assert!(c.detail.starts_with("1 of 2 products out of balance; product 2: supplied 5 != 3 + 1 + 0"), "{}", c.detail);
    }

    #[test]
    fn units_sold_must_equal_orders_accepted_per_product() {
        let before = [stock(1, 10, 10, 0), stock(2, 10, 8, 2)];
        let mut tally = Tally::new(2, false, 0);
        tally.accepted_per_product[1] = 3;
        tally.accepted_per_product[2] = 1;
        tally.accepted = 4;
        assert!(sold_matches_accepted(&before, &[stock(1, 10, 7, 3), stock(2, 10, 7, 3)], &tally, &[]).ok);
        // One unit too many sold for product 2.
        let c = sold_matches_accepted(&before, &[stock(1, 10, 7, 3), stock(2, 10, 6, 4)], &tally, &[]);
        assert!(!c.ok && c.detail.contains("product 2: sold 2 during the run, generator saw 1 accepted"), "{}", c.detail);
        // Unless one request for it had an unknown outcome.
        tally.unknown_per_product[2] = 1;
        assert!(sold_matches_accepted(&before, &[stock(1, 10, 7, 3), stock(2, 10, 6, 4)], &tally, &[]).ok);
        // Stock supplied during the run breaks the accounting.
        assert!(!sold_matches_accepted(&before, &[stock(1, 11, 8, 3), stock(2, 10, 7, 3)], &tally, &[]).ok);
    }

    #[test]
    fn a_pair_accepted_twice_or_a_probe_accepted_breaks_the_limit() {
        let mut tally = Tally::new(10, true, 0);
        assert!(per_user_limit(&tally, &Probe { sent: 3, limit_exceeded: 2, sold_out: 1, ..Probe::default() }).ok);
        assert!(!per_user_limit(&tally, &Probe { sent: 1, accepted: 1, ..Probe::default() }).ok);
        tally.duplicate_pairs = 1;
        assert!(!per_user_limit(&tally, &Probe::default()).ok);
    }

    #[test]
    fn a_failed_retry_or_a_mismatch_fails_its_check() {
        let mut tally = Tally::new(10, false, 0);
        assert!(retries_return_original(&tally).ok && replies_match_requests(&tally).ok);
        tally.retries_failed = 1;
        tally.mismatches = 1;
        assert!(!retries_return_original(&tally).ok && !replies_match_requests(&tally).ok);
    }
}
