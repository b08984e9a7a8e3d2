//! Place-order throughput of one shard's engine, on the reference
//! catalogues of `WORKLOAD.md`, with one million orders already in the shard.
//!
//! # Results
//!
//! Median ns per request (criterion's median of 100 samples, 95% interval),
//! measured 2026-11-24 on the 2-core KVM VM of this project (lscpu: "Intel(R)
//! Xeon(R) Processor", 4 MiB L2 per core), other builds idle, with
//!
//! ```text
//! cargo bench --bench engine
//! ```
//!
//! | bench | median ns / request | 95% interval |
//! |---|---|---|
//! | `place_order/uniform/accepted` | 184.9 | 182.0 – 187.9 |
//! | `place_order/hot/accepted` | 281.9 | 279.9 – 285.7 |
//! | `place_order/hot/rejected_sold_out` | 30.8 | 30.0 – 31.1 |
//! | `place_order/hot/rejected_limit` | 73.9 | 71.7 – 76.1 |
//!
//! The `_frames64` cases (added 2026-11-25) apply the same requests in
//! frames of 64, each frame warmed first with `Shard::warm`, as the server
//! does. One run, 2026-11-25 04:50 UTC (median ns, without / with frames):
//! `uniform/accepted` 196.4 / 240.4, `hot/accepted` 295.7 / 329.5,
//! `hot/rejected_sold_out` 27.1 / 29.9, `hot/rejected_limit` 118.9 / 83.3.
//! Here warming is mostly a second probe of the same slot: the shard holds
//! 1.0-1.5 M orders (~100-150 MB of index and records), which can sit in
//! this VM's 480 MiB last-level cache. A server core's shards grow to 8-9 M
//! orders in an 8 s closed-loop run (~0.9 GB, with the log's writes
//! streaming through the same cache), and there warming raised throughput
//! 12-23% (benches/README.md, Performance).
//!
//! An accepted order costs mostly cache misses on tables far larger than
//! the caches: the idempotency index (2^22 buckets here) for every order,
//! and for `hot` also the per-user holdings (1 M+ entries), whose insert of
//! a new buyer was 22% of a `perf` profile before it took a single probe;
//! first touches of the reserved memory (page faults) were another 9%.
//!
//! # What is measured
//!
//! `Shard::apply(PlaceOrder)` alone: requests are generated (and, for `hot`,
//! stock is topped up) outside the timed region, in chunks of 4096; each
//! timed request clears the event buffer, applies the command and checks
//! the reply. Every product has a 15-minute payment window, so each accepted
//! order also pushes a deadline; the engine clock advances 1 ms per chunk,
//! so nothing expires during a run.
//!
//! The shard starts from a pristine prefilled copy and is restored to it
//! (untimed) every 2^19 accepted orders, so it always holds between 1.0 M and
//! 1.5 M orders and memory stays bounded however many iterations criterion
//! asks for. Capacity is reserved up front, as the runtime does.
//!
//! - `uniform/accepted`: 10,000 products, stock 1,000,000 each, prices
//!   1..=100,000 cents, no per-user limit; users 1..=1,000,000 and products
//!   uniform. Every measured order is accepted (asserted).
//! - `hot/accepted`: 10 products, limit 1 per user. The prefill is 1,000,000
//!   orders by users 1..=1,000,000 (user `u` buys product `u % 10 + 1`), so
//!   every product is sold out. To measure *accepted* orders on that shard,
//!   each chunk first adds 4096 units to every product (untimed) and the
//!   measured orders come from users never seen before (above 1,000,000),
//!   so neither the stock nor the limit rejects them (asserted).
//! - `hot/rejected_sold_out`: the sold-out prefilled shard, users
//!   1..=1,000,000 uniform: every request is `sold_out` (asserted), which
//!   is what most requests of a flash sale get.
//! - `hot/rejected_limit`: stock is available but every user already holds
//!   their one unit: every request is `limit_exceeded` (asserted).
//!
//! Under `cargo test --benches` (no `--bench` argument) the prefill shrinks
//! to 1,000 orders and criterion runs each routine once, so the bench keeps
//! compiling and running without the cost of a real run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use orderd::engine::{Command, Event, Shard, ShardConfig};
use orderd_protocol::shard::mix64;
use orderd_protocol::{IdempotencyKey, PlaceOrder, Reply, Status, UpsertProduct};

const CHUNK: u64 = 4096;
/// Requests per frame of the `_frames64` cases (the load generator's batch).
const FRAME: usize = 64;
const RESET_AFTER: u64 = 1 << 19;
const WINDOW_MS: u64 = 15 * 60 * 1000;
const T0: u64 = 1_700_000_000_000;
const USERS: u64 = 1_000_000;

/// A deterministic stream of pseudo-random numbers: SplitMix64 of a counter.
fn rand(stream: u64, i: u64) -> u64 {
    mix64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream)
}

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Catalogue {
    Uniform,
    Hot,
}

impl Catalogue {
    const fn products(self) -> u64 {
        match self {
            Catalogue::Uniform => 10_000,
            Catalogue::Hot => 10,
        }
    }

    fn price(self, product: u64) -> u64 {
        match self {
            Catalogue::Uniform => rand(1, product) % 100_000 + 1,
            Catalogue::Hot => 9_900,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Measure {
    Accepted,
    RejectedSoldOut,
    RejectedLimit,
}

struct Bench {
    catalogue: Catalogue,
    measure: Measure,
    /// Apply in frames of [`FRAME`], each warmed first (`Shard::warm` on
    /// every request), as the runtime does.
    frames: bool,
    prefill: u64,
    pristine: Shard,
    shard: Shard,
    requests: Vec<Command>,
    events: Vec<Event>,
    /// Requests generated so far (keys and fresh users come from it).
    issued: u64,
    now: u64,
}

impl Bench {
    fn new(catalogue: Catalogue, measure: Measure, frames: bool, prefill: u64) -> Self {
        let config = ShardConfig { max_orders: u32::MAX, max_idempotency_keys: u32::MAX, ..ShardConfig::new(1) };
        let mut shard = Shard::new(config);
        let mut events = Vec::with_capacity(16);
        let stock = match catalogue {
            Catalogue::Uniform => 1_000_000,
            Catalogue::Hot => prefill / 10,
        };
        let limit = if catalogue == Catalogue::Hot { 1 } else { 0 };
        for product in 1..=catalogue.products() {
            let upsert = UpsertProduct {
                product,
                unit_price_cents: catalogue.price(product),
                stock,
                payment_window_ms: WINDOW_MS,
                per_user_limit: limit,
            };
            shard.apply(&Command::Upsert(upsert), T0, &mut events);
        }
        shard.reserve(prefill as usize);
        if catalogue == Catalogue::Hot {
            shard.reserve_holdings(prefill as usize);
        }
        for i in 0..prefill {
            let (user, product) = match catalogue {
                Catalogue::Uniform => (rand(2, i) % USERS + 1, rand(3, i) % catalogue.products() + 1),
                Catalogue::Hot => (i + 1, (i + 1) % 10 + 1),
            };
            let request =
                PlaceOrder { key: IdempotencyKey::timed(T0, i.into()), user, product, unit_price_cents: catalogue.price(product), qty: 1 };
            events.clear();
            let reply = shard.apply(&Command::PlaceOrder(request), T0, &mut events);
            assert!(matches!(reply, Reply::Order(_)), "prefill order {i}: {reply:?}");
        }
        if catalogue == Catalogue::Hot {
            for product in 1..=10 {
                assert_eq!(shard.stock(product).map(|s| s.available), Some(0), "the prefill sells out the hot products");
            }
        }
        let mut bench = Bench {
            catalogue,
            measure,
            frames,
            prefill,
            pristine: shard.clone(),
            shard,
            requests: Vec::with_capacity(CHUNK as usize),
            events,
            issued: 0,
            now: T0,
        };
        bench.restore();
        bench
    }

    /// Back to the prefilled shard, with room for the orders placed until
    /// the next restore (untimed).
    fn restore(&mut self) {
        self.shard = self.pristine.clone();
        self.shard.reserve((RESET_AFTER + CHUNK) as usize);
        self.shard.reserve_holdings((RESET_AFTER + CHUNK) as usize);
    }

    /// Generates the next chunk of requests (untimed).
    fn prepare(&mut self, n: u64) {
        if self.shard.order_count() as u64 + n > self.prefill + RESET_AFTER {
            self.restore();
        }
        self.now += 1;
        if self.catalogue == Catalogue::Hot && self.measure != Measure::RejectedSoldOut {
            for product in 1..=10 {
                self.events.clear();
                let top_up = Command::AdjustStock { product, delta: n as i64 };
                self.shard.apply(&top_up, self.now, &mut self.events);
            }
        }
        self.requests.clear();
        for _ in 0..n {
            let i = self.issued;
            self.issued += 1;
            let products = self.catalogue.products();
            let (user, product) = match (self.catalogue, self.measure) {
                (Catalogue::Uniform, _) => (rand(4, i) % USERS + 1, rand(5, i) % products + 1),
                (Catalogue::Hot, Measure::Accepted) => (USERS + 1 + i, rand(5, i) % products + 1),
                (Catalogue::Hot, Measure::RejectedSoldOut) => (rand(4, i) % USERS + 1, rand(5, i) % products + 1),
                // User `u` holds product `u % 10 + 1` from the prefill.
                (Catalogue::Hot, Measure::RejectedLimit) => {
                    let user = rand(4, i) % self.prefill + 1;
                    (user, user % 10 + 1)
                }
            };
            self.requests.push(Command::PlaceOrder(PlaceOrder {
                key: IdempotencyKey::timed(T0, (u128::from(1 + i) << 64) | u128::from(rand(6, i) ^ (i << 40))),
                user,
                product,
                unit_price_cents: self.catalogue.price(product),
                qty: 1,
            }));
        }
    }

    /// Applies `iters` place-order requests and returns the time spent in
    /// `apply` alone.
    fn run(&mut self, iters: u64) -> Duration {
        let mut timed = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = CHUNK.min(iters - done);
            self.prepare(n);
            let mut expected = 0u64;
            let frame = if self.frames { FRAME } else { usize::MAX };
            let start = Instant::now();
            for requests in self.requests.chunks(frame) {
                if self.frames {
                    for request in requests {
                        self.shard.warm(request);
                    }
                }
                for request in requests {
                    self.events.clear();
                    let reply = self.shard.apply(request, self.now, &mut self.events);
                    expected += u64::from(self.expected(&reply));
                    black_box(reply);
                }
            }
            timed += start.elapsed();
            assert_eq!(expected, n, "every measured request gets the outcome this bench measures");
            done += n;
        }
        timed
    }

    fn expected(&self, reply: &Reply) -> bool {
        match (self.measure, reply) {
            (Measure::Accepted, Reply::Order(_)) => true,
            (Measure::RejectedSoldOut, Reply::Rejected(r)) => r.status() == Some(Status::SoldOut),
            (Measure::RejectedLimit, Reply::Rejected(r)) => r.status() == Some(Status::LimitExceeded),
            _ => false,
        }
    }
}

fn place_order(c: &mut Criterion) {
    let prefill = if full_run() { 1_000_000 } else { 1_000 };
    let cases = [
        ("uniform", "accepted", Catalogue::Uniform, Measure::Accepted, false),
        ("uniform", "accepted_frames64", Catalogue::Uniform, Measure::Accepted, true),
        ("hot", "accepted", Catalogue::Hot, Measure::Accepted, false),
        ("hot", "accepted_frames64", Catalogue::Hot, Measure::Accepted, true),
        ("hot", "rejected_sold_out", Catalogue::Hot, Measure::RejectedSoldOut, false),
        ("hot", "rejected_sold_out_frames64", Catalogue::Hot, Measure::RejectedSoldOut, true),
        ("hot", "rejected_limit", Catalogue::Hot, Measure::RejectedLimit, false),
        ("hot", "rejected_limit_frames64", Catalogue::Hot, Measure::RejectedLimit, true),
    ];
    for (group, name, catalogue, measure, frames) in cases {
        let mut bench = Bench::new(catalogue, measure, frames, prefill);
        let mut g = c.benchmark_group(format!("place_order/{group}"));
        g.measurement_time(Duration::from_secs(5));
        g.bench_function(name, |b| b.iter_custom(|iters| bench.run(iters)));
        g.finish();
    }
}

criterion_group!(benches, place_order);
criterion_main!(benches);
