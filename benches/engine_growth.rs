//! The worst single place order while one shard grows from empty, as the
//! server's shards do: no capacity reserved, every table growing by itself.
//! A closed-loop throughput figure hides these stalls; an open-loop p99
//! does not (a stall of one shard holds up its whole core).
//!
//! ```text
//! cargo bench --bench engine_growth                      # as the server runs
//! ORDERD_GROWTH_DYNAMIC_MMAP=1 cargo bench --bench engine_growth   # glibc's default allocator threshold
//! ```
//!
//! - `uniform`: 10,000 products, no per-user limit, users and products
//!   uniform (`WORKLOAD.md`): grows the order records, the deadline heap and
//!   the idempotency index.
//! - `hot`: 10 products with a limit of 1 per user, every order by a new
//!   user: also grows the per-user holdings by one pair per order.
//!
//! Each request is timed alone (`Instant` around `Shard::apply`); the
//! report gives the mean, the p99.9 and the max of those times and the
//! five longest, with the order count at which they happened.
//!
//! # Results
//!
//! 1,000,000 orders per case, the project's 2-core KVM VM, 2026-11-24.
//! Before: commit `c9c2987` (one hashbrown table per index, glibc's dynamic
//! mmap threshold), this bench copied into that tree. After: the indexes in
//! 256 parts (`engine::INDEX_PARTS`) and the threshold fixed at 256 KiB
//! (`runtime::malloc`), as the server runs. Both measured in one run.
//!
//! | case | mean ns, before / after | max µs, before | max µs, after (dynamic threshold) | max µs, after |
//! |---|---:|---:|---:|---:|
//! | `uniform` | 239 / 210 | 35,540 (at 917,504 orders) | 459 | 252 |
//! | `hot` | 387 / 343 | 58,149 (at 917,504) | 8,054 (at 262,144) | 274 |
//!
//! (Second run: 36,001 / 486 / 361 and 61,812 / 8,363 / 433 µs. With the
//! holdings as hash tables probed once, commit `4a3386b`: `uniform` mean
//! 211 ns, max 436 µs; `hot` mean 327 ns, max 259 µs.) Before,
//! the idempotency index and the holdings rehashed whole at 7/8 load
//! (1.4, 2.8, 7.3, 15.9, 35.5 ms at 57 k ... 917 k orders) and the order
//! records were copied at 262,144 orders (8 ms); after, the worst single
//! order is a part's rehash or a page fault, a quarter of a millisecond.
//! The p99.9 rises from 2-3 µs to 9-39 µs: the same rehash work, in 256
//! small pieces. Reproduce the "before" column by copying this file into a
//! checkout of `c9c2987` (and its `[[bench]]` entry into `Cargo.toml`).
//!
//! Under `cargo test --benches` (no `--bench` argument) each case places
//! 20,000 orders, so the bench keeps compiling and running cheaply.

use std::time::{Duration, Instant};

use orderd::engine::{Command, Event, Shard, ShardConfig};
use orderd_protocol::shard::mix64;
use orderd_protocol::{IdempotencyKey, PlaceOrder, Reply, UpsertProduct};

const T0: u64 = 1_700_000_000_000;
const WINDOW_MS: u64 = 15 * 60 * 1000;

#[derive(Clone, Copy)]
enum Case {
    Uniform,
    Hot,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Uniform => "uniform",
            Case::Hot => "hot",
        }
    }

    fn shard(self) -> Shard {
        let config = ShardConfig { max_orders: u32::MAX, max_idempotency_keys: u32::MAX, ..ShardConfig::new(1) };
        let mut shard = Shard::new(config);
        let mut events = Vec::new();
        let (products, limit) = match self {
            Case::Uniform => (10_000, 0),
            Case::Hot => (10, 1),
        };
        for product in 1..=products {
            let upsert =
                UpsertProduct { product, unit_price_cents: 100, stock: 100_000_000, payment_window_ms: WINDOW_MS, per_user_limit: limit };
            shard.apply(&Command::Upsert(upsert), T0, &mut events);
        }
        shard
    }

    fn order(self, i: u64) -> Command {
        let (user, product) = match self {
            Case::Uniform => (mix64(i ^ 0x5555) % 1_000_000 + 1, mix64(i ^ 0xaaaa) % 10_000 + 1),
            Case::Hot => (i + 1, i % 10 + 1),
        };
        Command::PlaceOrder(PlaceOrder {
            key: IdempotencyKey::timed(T0, (u128::from(1 + i) << 64) | u128::from(mix64(i))),
            user,
            product,
            unit_price_cents: 100,
            qty: 1,
        })
    }
}

fn run(case: Case, orders: u64) {
    let mut shard = case.shard();
    let mut events: Vec<Event> = Vec::with_capacity(16);
    let requests: Vec<Command> = (0..orders).map(|i| case.order(i)).collect();
    let mut times: Vec<(Duration, u64)> = Vec::with_capacity(orders as usize);
    for (i, request) in requests.iter().enumerate() {
        events.clear();
        let start = Instant::now();
        let reply = shard.apply(request, T0, &mut events);
        times.push((start.elapsed(), i as u64));
        assert!(matches!(reply, Reply::Order(_)), "order {i}: {reply:?}");
    }
    let total: Duration = times.iter().map(|(d, _)| *d).sum();
    let mut sorted: Vec<Duration> = times.iter().map(|(d, _)| *d).collect();
    sorted.sort_unstable();
    let quantile = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    times.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
    let worst: Vec<String> = times.iter().take(5).map(|(d, at)| format!("{} µs at {at}", d.as_micros())).collect();
    println!(
        "{:8} {orders} orders: mean {:.0} ns, p99.9 {:.1} µs, max {} µs; longest: {}",
        case.name(),
        total.as_nanos() as f64 / orders as f64,
        quantile(0.999).as_nanos() as f64 / 1000.0,
        sorted.last().map_or(0, Duration::as_micros),
        worst.join(", ")
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if std::env::var("ORDERD_GROWTH_DYNAMIC_MMAP").is_ok_and(|v| v == "1") {
        println!("allocator: glibc's dynamic mmap threshold (the default)");
    } else {
        orderd::runtime::malloc::map_large_allocations();
        println!("allocator: mmap threshold fixed, as `orderd serve` sets it");
    }
    let orders = if full { 1_000_000 } else { 20_000 };
    for case in [Case::Uniform, Case::Hot] {
        run(case, orders);
    }
}
