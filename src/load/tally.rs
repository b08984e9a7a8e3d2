//! [`Tally`]: what one generator thread saw, merged across threads at the
//! end — latencies, outcomes, per-product accepted counts, the (user,
//! product) pairs of limited workloads, retries and a sample of keys.
//!
//! Every reply is classified here ([`Tally::record`]); this is where the
//! client-side half of the invariants is kept.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use hdrhistogram::Histogram;
use orderd_protocol::{IdempotencyKey, OrderState, Reply};

use super::draw::{Drawer, Slot};

/// Largest latency the histograms hold (longer ones are recorded as this).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Significant digits of the histograms.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Mismatches described in full (the rest are only counted).
const MISMATCH_NOTES: usize = 8;

/// An accepted order kept to be read back by its key at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The key.
    pub key: IdempotencyKey,
    /// Its product (routes the lookup).
    pub product: u64,
    /// The order id the server answered with.
    pub order_id: u64,
}

/// Slow requests one thread keeps for `--slow-log` (16 bytes each).
pub const SLOW_LOG_CAP: usize = 1 << 20;

/// One thread's observations (and, merged, the run's).
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every completed request, µs.
    pub latency_us: Histogram<u64>,
    /// `--slow-log`: `(µs from the run's start to the request's start,
    /// latency µs)` of requests over the threshold, at most
    /// [`SLOW_LOG_CAP`] per thread.
    pub slow: Vec<(u64, u64)>,
    /// Slow requests beyond the cap, not kept.
    pub slow_dropped: u64,
    /// Open loop: how late each frame was sent after its first request's
    /// intended time, µs (the generator's own lag).
    pub send_lag_us: Histogram<u64>,
    /// Open loop: how long each request waited in the generator, from its
    /// intended time to the send of its frame, µs (linger, a full pipeline
    /// and the generator's own stalls; part of its latency).
    pub send_delay_us: Histogram<u64>,
    /// CPU time the thread used for the run, less its spin-waits for
    /// intended send times: how busy the generator was.
    pub busy: Duration,
    /// Replies received (accepted, rejected, retries, mismatches).
    pub completed: u64,
    /// New orders accepted.
    pub accepted: u64,
    /// Sum of the accepted orders' amounts (unit price × quantity), cents.
    pub gmv_cents: u64,
    /// Rejections by wire code.
    pub rejected: BTreeMap<u16, u64>,
    /// `accepted_per_product[p]`: orders accepted for product `p`.
    pub accepted_per_product: Vec<u64>,
    /// `unknown_per_product[p]`: requests for `p` whose outcome is unknown
    /// (their connection failed).
    pub unknown_per_product: Vec<u64>,
    /// Accepted (user, product) pairs, kept for limited workloads only.
    pub pairs: Option<HashSet<(u64, u64)>>,
    /// Accepted orders whose (user, product) pair was already accepted.
    pub duplicate_pairs: u64,
    /// Retries sent and answered.
    pub retries: u64,
    /// Retries answered with the original order.
    pub retries_verified: u64,
    /// Retries answered with another order or a rejection.
    pub retries_failed: u64,
    /// Replies to new requests that do not answer them (an order for
    /// another request, a reply of the wrong kind).
    pub mismatches: u64,
    /// The first mismatches and failed retries, described.
    pub mismatch_notes: Vec<String>,
    /// A uniform sample (reservoir) of accepted orders.
    pub samples: Vec<Sample>,
    sample_cap: usize,
    /// Transport failures that stopped a thread.
    pub errors: Vec<String>,
    /// `lifecycle`: orders paid by their follow-up.
    pub paid: u64,
    /// `lifecycle`: orders cancelled by their follow-up.
    pub cancelled: u64,
    /// `cancelled_per_product[p]`: of those, orders of product `p`.
    pub cancelled_per_product: Vec<u64>,
    /// `lifecycle`: follow-ups refused (an order expired before its
    /// payment, say), by wire code.
    pub follow_ups_refused: BTreeMap<u16, u64>,
    /// `lifecycle`: orders left to expire, unsent follow-ups and follow-ups
    /// of unknown outcome: read back at the end for their final state.
    pub left: Vec<u64>,
}

fn histogram() -> Histogram<u64> {
    #[expect(clippy::expect_used, reason = "constant bounds, no input reaches them; checked by the tests")]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS).expect("1 µs..1 h at 3 digits is a valid histogram")
}

/// Microseconds of `d`, at least 1 (the histogram's floor).
#[must_use]
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Tally {
    /// An empty tally for a catalogue of `products` products; `limited`
    /// keeps the accepted (user, product) pairs; up to `sample_cap`
    /// accepted orders are sampled.
    #[must_use]
    pub fn new(products: u64, limited: bool, sample_cap: usize) -> Tally {
        let len = usize::try_from(products).unwrap_or(0).saturating_add(1);
        Tally {
            latency_us: histogram(),
            slow: Vec::new(),
            slow_dropped: 0,
            send_lag_us: histogram(),
            send_delay_us: histogram(),
            busy: Duration::ZERO,
            completed: 0,
            accepted: 0,
            gmv_cents: 0,
            rejected: BTreeMap::new(),
            accepted_per_product: vec![0; len],
            unknown_per_product: vec![0; len],
            pairs: limited.then(HashSet::new),
            duplicate_pairs: 0,
            retries: 0,
            retries_verified: 0,
            retries_failed: 0,
            mismatches: 0,
            mismatch_notes: Vec::new(),
            samples: Vec::new(),
            sample_cap,
            errors: Vec::new(),
            paid: 0,
            cancelled: 0,
            cancelled_per_product: vec![0; len],
            follow_ups_refused: BTreeMap::new(),
            left: Vec::new(),
        }
    }

    /// Notes a slow request for `--slow-log`.
    pub fn slow(&mut self, since_start_us: u64, latency_us: u64) {
        if self.slow.len() < SLOW_LOG_CAP {
            self.slow.push((since_start_us, latency_us));
        } else {
            self.slow_dropped += 1;
        }
    }

    fn mismatch(&mut self, what: impl FnOnce() -> String) {
        self.mismatches += 1;
        self.note(what);
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.mismatch_notes.len() < MISMATCH_NOTES {
            self.mismatch_notes.push(what());
        }
    }

    /// Classify the reply to `slot`, which took `latency`.
    pub fn record(&mut self, slot: &Slot, reply: &Reply, latency: Duration, drawer: &mut Drawer) {
        self.completed += 1;
        self.latency_us.saturating_record(micros(latency));
        match (slot, reply) {
            (Slot::Fresh(p), Reply::Order(o)) => {
                if o.key != p.key || o.user != p.user || o.product != p.product || o.qty != p.qty {
                    return self.mismatch(|| format!("request {p:?} answered with order {o:?}"));
                }
                self.accepted += 1;
                self.gmv_cents = self.gmv_cents.saturating_add(p.unit_price_cents.saturating_mul(u64::from(p.qty)));
                if let Some(n) = usize::try_from(p.product).ok().and_then(|i| self.accepted_per_product.get_mut(i)) {
                    *n += 1;
                }
                if let Some(pairs) = &mut self.pairs {
                    if !pairs.insert((p.user, p.product)) {
                        self.duplicate_pairs += 1;
                    }
                }
                drawer.accepted(*p, o.id);
                self.sample(Sample { key: p.key, product: p.product, order_id: o.id }, drawer);
            }
            (Slot::Fresh(_), Reply::Rejected(r)) => *self.rejected.entry(r.code).or_insert(0) += 1,
            (Slot::Fresh(p), other) => self.mismatch(|| format!("request {p:?} answered with {other:?}")),
            (Slot::Retry { order_id, .. }, Reply::Order(o)) if o.id == *order_id => {
                self.retries += 1;
                self.retries_verified += 1;
            }
            (Slot::Retry { order, order_id }, other) => {
                self.retries += 1;
                self.retries_failed += 1;
                self.note(|| format!("retry of {order:?} (order {order_id}) answered with {other:?}"));
            }
            (Slot::Pay { order_id }, Reply::Order(o)) if o.id == *order_id && o.state == OrderState::Paid => self.paid += 1,
            (Slot::Cancel { order_id }, Reply::Order(o)) if o.id == *order_id && o.state == OrderState::Cancelled => {
                self.cancelled += 1;
                if let Some(n) = usize::try_from(o.product).ok().and_then(|i| self.cancelled_per_product.get_mut(i)) {
                    *n += 1;
                }
            }
            (Slot::Pay { order_id } | Slot::Cancel { order_id }, Reply::Rejected(r)) => {
                *self.follow_ups_refused.entry(r.code).or_insert(0) += 1;
                // Its final state is read back at the end.
                self.left.push(*order_id);
            }
            (Slot::Pay { order_id } | Slot::Cancel { order_id }, other) => {
                let what = if matches!(slot, Slot::Pay { .. }) { "payment" } else { "cancellation" };
                self.mismatch(|| format!("{what} of order {order_id} answered with {other:?}"));
                self.left.push(*order_id);
            }
        }
    }

    /// The outcome of `slot` is unknown: its connection failed.
    pub fn unknown(&mut self, slot: &Slot) {
        match *slot {
            Slot::Fresh(p) => {
                if let Some(n) = usize::try_from(p.product).ok().and_then(|i| self.unknown_per_product.get_mut(i)) {
                    *n += 1;
                }
            }
            // Its final state is read back at the end.
            Slot::Pay { order_id } | Slot::Cancel { order_id } => self.left.push(order_id),
            Slot::Retry { .. } => {}
        }
    }

    /// Algorithm R: every accepted order has the same chance to be sampled.
    fn sample(&mut self, s: Sample, drawer: &mut Drawer) {
        if self.samples.len() < self.sample_cap {
            self.samples.push(s);
        } else if self.sample_cap > 0 {
            let i = drawer.below(self.accepted);
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| self.samples.get_mut(i)) {
                *slot = s;
            }
        }
    }

    /// Requests whose outcome is unknown.
    #[must_use]
    pub fn unknown_total(&self) -> u64 {
        self.unknown_per_product.iter().sum()
    }

    /// Add `other` into `self`. Pairs accepted by both count as duplicates.
    pub fn merge(&mut self, other: Tally) {
        self.slow.extend_from_slice(&other.slow);
        self.slow_dropped += other.slow_dropped;
        // Same bounds on both sides: addition cannot fail; saturate if it did.
        if self.latency_us.add(&other.latency_us).is_err() {
            self.latency_us.saturating_record(other.latency_us.max());
        }
        if self.send_lag_us.add(&other.send_lag_us).is_err() {
            self.send_lag_us.saturating_record(other.send_lag_us.max());
        }
        if self.send_delay_us.add(&other.send_delay_us).is_err() {
            self.send_delay_us.saturating_record(other.send_delay_us.max());
        }
        self.busy += other.busy;
        self.completed += other.completed;
        self.accepted += other.accepted;
        self.gmv_cents = self.gmv_cents.saturating_add(other.gmv_cents);
        for (code, n) in other.rejected {
            *self.rejected.entry(code).or_insert(0) += n;
        }
        add(&mut self.accepted_per_product, &other.accepted_per_product);
        add(&mut self.unknown_per_product, &other.unknown_per_product);
        self.duplicate_pairs += other.duplicate_pairs;
        if let (Some(mine), Some(theirs)) = (&mut self.pairs, other.pairs) {
            for pair in theirs {
                if !mine.insert(pair) {
                    self.duplicate_pairs += 1;
                }
            }
        }
        self.retries += other.retries;
        self.retries_verified += other.retries_verified;
        self.retries_failed += other.retries_failed;
        self.mismatches += other.mismatches;
        let room = MISMATCH_NOTES.saturating_sub(self.mismatch_notes.len());
        self.mismatch_notes.extend(other.mismatch_notes.into_iter().take(room));
        self.samples.extend(other.samples);
        self.errors.extend(other.errors);
        self.paid += other.paid;
        self.cancelled += other.cancelled;
        add(&mut self.cancelled_per_product, &other.cancelled_per_product);
        for (code, n) in other.follow_ups_refused {
            *self.follow_ups_refused.entry(code).or_insert(0) += n;
        }
        self.left.extend(other.left);
    }
}

fn add(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use orderd_protocol::{Order, OrderState, PlaceOrder, Status};

    use super::*;
    use crate::workload::Workload;

    fn placed(p: &PlaceOrder, id: u64) -> Reply {
        Reply::Order(Order {
            id,
            key: p.key,
            user: p.user,
            product: p.product,
            unit_price_cents: p.unit_price_cents,
            created_ms: 1,
            expires_ms: u64::MAX,
            qty: p.qty,
            state: OrderState::Placed,
        })
    }

    fn drawer() -> Drawer {
        Drawer::new(Workload::Hot, 1, 0, IdempotencyKey { hi: 1, lo: 2 }, 0.5).unwrap()
    }

    #[test]
    fn accepted_rejected_and_retried_replies_are_counted_apart() {
        let mut d = drawer();
        let mut t = Tally::new(10, true, 4);
        let p = d.fresh();
        let ms = Duration::from_millis(1);
        t.record(&Slot::Fresh(p), &placed(&p, 9), ms, &mut d);
        t.record(&Slot::Fresh(d.fresh()), &Reply::rejected(Status::SoldOut, 0), ms, &mut d);
        t.record(&Slot::Retry { order: p, order_id: 9 }, &placed(&p, 9), ms, &mut d);
        assert_eq!((t.completed, t.accepted, t.retries, t.retries_verified, t.mismatches), (3, 1, 1, 1, 0));
        assert_eq!(t.rejected.get(&Status::SoldOut.code()), Some(&1));
        assert_eq!(t.accepted_per_product[p.product as usize], 1);
        assert_eq!(t.gmv_cents, p.unit_price_cents * u64::from(p.qty), "only the accepted order counts");
        assert_eq!(t.samples, vec![Sample { key: p.key, product: p.product, order_id: 9 }]);
        assert_eq!(t.latency_us.len(), 3);
    }

    #[test]
    fn a_retry_answered_with_another_order_or_a_rejection_is_a_mismatch() {
        let mut d = drawer();
        let mut t = Tally::new(10, false, 0);
        let p = d.fresh();
        t.record(&Slot::Retry { order: p, order_id: 9 }, &placed(&p, 10), Duration::ZERO, &mut d);
        t.record(&Slot::Retry { order: p, order_id: 9 }, &Reply::rejected(Status::SoldOut, 0), Duration::ZERO, &mut d);
        assert_eq!((t.retries, t.retries_verified, t.retries_failed, t.mismatches, t.mismatch_notes.len()), (2, 0, 2, 0, 2));
    }

    #[test]
    fn an_order_for_another_request_is_a_mismatch_not_an_acceptance() {
        let mut d = drawer();
        let mut t = Tally::new(10, false, 0);
        let (p, q) = (d.fresh(), d.fresh());
        t.record(&Slot::Fresh(p), &placed(&q, 3), Duration::ZERO, &mut d);
        assert_eq!((t.accepted, t.mismatches), (0, 1));
    }

    #[test]
    fn pairs_accepted_twice_across_threads_are_duplicates() {
        let mut d = drawer();
        let p = d.fresh();
        let (mut a, mut b) = (Tally::new(10, true, 0), Tally::new(10, true, 0));
        a.record(&Slot::Fresh(p), &placed(&p, 1), Duration::ZERO, &mut d);
        let again = PlaceOrder { key: IdempotencyKey { hi: 0, lo: 0 }, ..p };
        b.record(&Slot::Fresh(again), &placed(&again, 2), Duration::ZERO, &mut d);
        assert_eq!(b.duplicate_pairs, 0);
        a.merge(b);
        assert_eq!((a.accepted, a.duplicate_pairs), (2, 1));
        assert_eq!(a.accepted_per_product[p.product as usize], 2);
    }
}
