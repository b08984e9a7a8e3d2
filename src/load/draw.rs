//! What each request is: users and products drawn as `WORKLOAD.md` says,
//! idempotency keys unique per request, retries of earlier accepted orders.
//!
//! - Users: uniform over [`Workload::users`]; products: uniform over the
//!   catalogue, or Zipf with [`Workload::zipf_exponent`] (product 1 the most
//!   popular); quantity 1; the expected price is the catalogue's
//!   ([`unit_price_cents`]), so no request is rejected for its price.
//! - Keys: time-ordered ([`IdempotencyKey::timed`]) at the moment they are
//!   drawn, their random bits the run's random key with the thread in bits
//!   46..62 plus a per-thread counter ([`run_key`]): unique within a run by
//!   construction, and unlike keys derived from `--seed` alone, they never
//!   collide with an earlier run against the same server.
//! - Retries: a slot is a retry with probability `--retry-share` once some
//!   order was accepted; it resends one of the last [`RETRY_WINDOW`]
//!   accepted requests unchanged.
//! - Follow-ups (`lifecycle`): each accepted order is, after a delay drawn
//!   uniformly from `0..=`[`FOLLOW_UP_MAX_DELAY`], paid
//!   ([`PAY_PERCENT`]%), cancelled ([`CANCEL_PERCENT`]%) or left to expire
//!   (the rest); a slot is a due follow-up whenever one is due, else a new
//!   request.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use orderd_protocol::client::unix_now_ms;
use orderd_protocol::message::OrderRef;
use orderd_protocol::shard::mix64;
use orderd_protocol::{IdempotencyKey, PlaceOrder, Request};

use super::LoadError;
use crate::workload::{unit_price_cents, Workload};

/// Accepted requests a thread remembers as candidates for retries.
pub const RETRY_WINDOW: usize = 1024;

/// `lifecycle`: the longest delay before an accepted order is followed up.
pub const FOLLOW_UP_MAX_DELAY: Duration = Duration::from_secs(2);

/// `lifecycle`: the share of accepted orders paid, in percent.
pub const PAY_PERCENT: u32 = 90;

/// `lifecycle`: the share of accepted orders cancelled, in percent (the
/// rest are left to expire).
pub const CANCEL_PERCENT: u32 = 5;

/// How products are drawn.
#[derive(Debug, Clone)]
enum Products {
    Uniform(u64),
    Zipf(Zipf<f64>),
}

/// One request slot: a new request, or a retry of an accepted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A request with a new key.
    Fresh(PlaceOrder),
    /// The same request again; the server must answer with order `order_id`.
    Retry {
        /// The request as first sent.
        order: PlaceOrder,
        /// The order it placed.
        order_id: u64,
    },
    /// `lifecycle`: pay an accepted order.
    Pay {
        /// The order.
        order_id: u64,
    },
    /// `lifecycle`: cancel an accepted order.
    Cancel {
        /// The order.
        order_id: u64,
    },
}

impl Slot {
    /// The request to send.
    #[must_use]
    pub const fn request(&self) -> Request {
        match *self {
            Slot::Fresh(p) | Slot::Retry { order: p, .. } => Request::PlaceOrder(p),
            Slot::Pay { order_id } => Request::PayOrder(OrderRef { order_id }),
            Slot::Cancel { order_id } => Request::CancelOrder(OrderRef { order_id }),
        }
    }
}

/// `lifecycle`: the accepted orders waiting for their follow-up, and those
/// left to expire.
#[derive(Debug, Clone, Default)]
struct FollowUps {
    /// `(due, order id, pay)`, earliest first.
    due: BinaryHeap<Reverse<(Instant, u64, bool)>>,
    /// Orders left to expire.
    left: Vec<u64>,
}

/// Keys stamped with one reading of the clock: the clock is read once per
/// this many keys, not per request. A key's time only has to lie inside the
/// server's dedup window (a day by default); at one request a second a
/// stamp is at most 256 s old.
const KEY_CLOCK_EVERY: u64 = 256;

/// Key `counter` of stream `stream` (a thread, or the limit probe) of the
/// run whose random key is `run`, made at `unix_ms`: the run's random bits
/// with the stream in bits 46..62 and the counter added below them, so two
/// streams' keys differ for the first 2^46 of each (and their times apart).
#[must_use]
pub fn run_key(run: IdempotencyKey, stream: u64, counter: u64, unix_ms: u64) -> IdempotencyKey {
    let rand_b = (run.lo ^ ((stream & 0xffff) << 46)).wrapping_add(counter);
    IdempotencyKey::timed(unix_ms, (u128::from(run.hi) << 64) | u128::from(rand_b))
}

/// One thread's source of requests. Deterministic given the seed, the
/// thread index and the run key, apart from which accepted orders exist
/// when a retry is drawn.
#[derive(Debug, Clone)]
pub struct Drawer {
    rng: SmallRng,
    workload: Workload,
    products: Products,
    run_key: IdempotencyKey,
    thread: u64,
    counter: u64,
    /// The time new keys are stamped with, read every [`KEY_CLOCK_EVERY`] keys.
    key_ms: u64,
    retry_share: f64,
    accepted: Vec<(PlaceOrder, u64)>,
    next_accepted: usize,
    follow_ups: Option<FollowUps>,
}

impl Drawer {
    /// The drawer of thread `thread`.
    ///
    /// # Errors
    /// [`LoadError::Setting`] if the workload's Zipf parameters are invalid.
    pub fn new(workload: Workload, seed: u64, thread: u64, run_key: IdempotencyKey, retry_share: f64) -> Result<Drawer, LoadError> {
        let n = workload.product_count();
        let products = match workload.zipf_exponent() {
            Some(s) => Products::Zipf(Zipf::new(n as f64, s).map_err(|e| LoadError::Setting(format!("zipf({n}, {s}): {e}")))?),
            None => Products::Uniform(n),
        };
        Ok(Drawer {
            rng: SmallRng::seed_from_u64(mix64(seed ^ mix64(thread.wrapping_add(1)))),
            workload,
            products,
            run_key,
            thread,
            key_ms: unix_now_ms(),
            counter: 0,
            retry_share,
            accepted: Vec::new(),
            next_accepted: 0,
            follow_ups: workload.follows_up().then(FollowUps::default),
        })
    }

    /// A product id of the catalogue.
    pub fn product(&mut self) -> u64 {
        match &self.products {
            Products::Uniform(n) => self.rng.random_range(1..=*n),
            // Samples are whole numbers in 1..=n stored as floats.
            Products::Zipf(z) => (z.sample(&mut self.rng) as u64).clamp(1, self.workload.product_count()),
        }
    }

    /// A request with a new key.
    pub fn fresh(&mut self) -> PlaceOrder {
        let product = self.product();
        let user = self.rng.random_range(self.workload.users());
        if self.counter.is_multiple_of(KEY_CLOCK_EVERY) {
            self.key_ms = unix_now_ms();
        }
        let key = run_key(self.run_key, self.thread, self.counter, self.key_ms);
        self.counter += 1;
        PlaceOrder { key, user, product, unit_price_cents: unit_price_cents(product), qty: 1 }
    }

    /// The next slot.
    pub fn next_slot(&mut self) -> Slot {
        if let Some(f) = &mut self.follow_ups {
            if f.due.peek().is_some_and(|Reverse((due, _, _))| *due <= Instant::now()) {
                if let Some(Reverse((_, order_id, pay))) = f.due.pop() {
                    return if pay { Slot::Pay { order_id } } else { Slot::Cancel { order_id } };
                }
            }
        }
        if self.retry_share > 0.0 && !self.accepted.is_empty() && self.rng.random_bool(self.retry_share) {
            let (order, order_id) = self.accepted[self.rng.random_range(0..self.accepted.len())];
            return Slot::Retry { order, order_id };
        }
        Slot::Fresh(self.fresh())
    }

    /// Remember an accepted request as a candidate for retries, and (in
    /// `lifecycle`) decide its follow-up.
    pub fn accepted(&mut self, order: PlaceOrder, order_id: u64) {
        if let Some(f) = &mut self.follow_ups {
            let roll = self.rng.random_range(0..100u32);
            if roll < PAY_PERCENT + CANCEL_PERCENT {
                let delay = Duration::from_millis(self.rng.random_range(0..=FOLLOW_UP_MAX_DELAY.as_millis() as u64));
                f.due.push(Reverse((Instant::now() + delay, order_id, roll < PAY_PERCENT)));
            } else {
                f.left.push(order_id);
            }
        }
        if self.retry_share <= 0.0 {
            return;
        }
        if self.accepted.len() < RETRY_WINDOW {
            self.accepted.push((order, order_id));
        } else {
            self.accepted[self.next_accepted] = (order, order_id);
            self.next_accepted = (self.next_accepted + 1) % RETRY_WINDOW;
        }
    }

    /// `lifecycle`: the orders left to expire, and those whose follow-up
    /// was not sent before the run ended (they expire too).
    pub fn take_left(&mut self) -> Vec<u64> {
        let Some(f) = &mut self.follow_ups else { return Vec::new() };
        let mut left = std::mem::take(&mut f.left);
        left.extend(f.due.drain().map(|Reverse((_, order_id, _))| order_id));
        left
    }

    /// A uniform draw in `0..n` (for reservoir sampling); `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n.max(1))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const RUN: IdempotencyKey = IdempotencyKey { hi: 7, lo: u64::MAX - 3 };

    #[test]
    fn requests_are_one_unit_of_a_catalogue_product_at_its_price_for_a_known_user() {
        for w in Workload::ALL {
            let mut d = Drawer::new(w, 1, 0, RUN, 0.0).unwrap();
            for _ in 0..2000 {
                let p = d.fresh();
                assert!(w.products().contains(&p.product) && w.users().contains(&p.user), "{p:?}");
                assert_eq!((p.qty, p.unit_price_cents), (1, unit_price_cents(p.product)));
            }
        }
    }

    #[test]
    fn keys_are_unique_across_threads_and_counters_even_when_they_wrap() {
        let mut keys = HashSet::new();
        for t in 0..4 {
            let mut d = Drawer::new(Workload::Hot, 1, t, RUN, 0.0).unwrap();
            for _ in 0..1000 {
                assert!(keys.insert(d.fresh().key));
            }
        }
    }

    #[test]
    fn the_seed_fixes_the_draws() {
        let draw = |seed| {
            let mut d = Drawer::new(Workload::Uniform, seed, 3, RUN, 0.0).unwrap();
            (0..50).map(|_| (d.fresh().user, d.product())).collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }

    #[test]
    fn zipf_favours_the_first_products_and_uniform_does_not() {
        let top_share = |w| {
            let mut d = Drawer::new(w, 5, 0, RUN, 0.0).unwrap();
            (0..20_000).filter(|_| d.product() <= 10).count() as f64 / 20_000.0
        };
        // Zipf(10,000, 0.99): the first 10 products draw about 30 % of requests.
        assert!(top_share(Workload::Zipf) > 0.2, "{}", top_share(Workload::Zipf));
        assert!(top_share(Workload::Uniform) < 0.01);
    }

    #[test]
    fn retries_resend_an_accepted_request_at_about_the_share_asked() {
        let mut d = Drawer::new(Workload::Uniform, 2, 0, RUN, 0.25).unwrap();
        assert!(matches!(d.next_slot(), Slot::Fresh(_)), "nothing to retry yet");
        let first = d.fresh();
        d.accepted(first, 42);
        let retries = (0..4000).filter(|_| matches!(d.next_slot(), Slot::Retry { order, order_id: 42 } if order == first)).count();
        assert!((800..1200).contains(&retries), "{retries} of 4000");
    }
}
