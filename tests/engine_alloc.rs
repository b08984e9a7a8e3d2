//! Allocation and memory of the engine, measured with a counting global
//! allocator: the request path allocates nothing once capacity is reserved,
//! and the bytes per order held are what `engine`'s module docs say.
//!
//! The allocator counts only on a thread that switched counting on, so the
//! test harness's own allocations (other threads, output capture) do not
//! disturb the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use orderd::engine::{Command, Event, Shard, ShardConfig};
use orderd_protocol::{IdempotencyKey, PlaceOrder, Reply, Status, UpsertProduct};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn note(allocations: u64, bytes: i64) {
    // `try_with`: the allocator may run while thread locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + allocations));
            let _ = LIVE_BYTES.try_with(|b| b.set(b.get() + bytes));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counting touches only const-initialised thread locals,
// which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as i64));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns `(allocations, net bytes still allocated)` it made
/// on this thread, with its result.
fn counted<T>(f: impl FnOnce() -> T) -> (u64, i64, T) {
    ALLOCATIONS.with(|a| a.set(0));
    LIVE_BYTES.with(|b| b.set(0));
    COUNTING.with(|on| on.set(true));
    let result = f();
    COUNTING.with(|on| on.set(false));
    (ALLOCATIONS.with(Cell::get), LIVE_BYTES.with(Cell::get), result)
}

/// SplitMix64 as a counter-based generator: deterministic, no allocation.
fn mix(x: u64) -> u64 {
    orderd_protocol::shard::mix64(x.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

const PRODUCTS: u64 = 10_000;
const LIMITED: u64 = PRODUCTS + 1;
const WINDOW_MS: u64 = 15 * 60 * 1000;
const T0: u64 = 1_700_000_000_000;

fn price_of(product: u64) -> u64 {
    mix(product) % 100_000 + 1
}

/// The `uniform` catalogue of WORKLOAD.md with a 15-minute payment window,
/// plus one limited product (limit 2) for the holdings path.
fn uniform_shard(config: ShardConfig) -> Shard {
    let mut shard = Shard::new(config);
    let mut events = Vec::new();
    for product in 1..=PRODUCTS {
        let upsert = UpsertProduct {
            product,
            unit_price_cents: price_of(product),
            stock: 1_000_000,
            payment_window_ms: WINDOW_MS,
            per_user_limit: 0,
        };
        shard.apply(&Command::Upsert(upsert), T0, &mut events);
    }
    let limited =
        UpsertProduct { product: LIMITED, unit_price_cents: 500, stock: 1 << 40, payment_window_ms: WINDOW_MS, per_user_limit: 2 };
    shard.apply(&Command::Upsert(limited), T0, &mut events);
    shard
}

fn uniform_order(i: u64) -> PlaceOrder {
    let product = mix(i) % PRODUCTS + 1;
    PlaceOrder {
        key: IdempotencyKey::timed(T0, (u128::from(i) << 64) | u128::from(mix(!i))),
        user: mix(i ^ 0xABCD) % 1_000_000 + 1,
        product,
        unit_price_cents: price_of(product),
        qty: 1,
    }
}

#[test]
fn the_request_path_allocates_nothing_once_capacity_is_reserved() {
    const N: u64 = 20_000;
    let mut shard = uniform_shard(ShardConfig::new(1));
    let mut events: Vec<Event> = Vec::with_capacity(64);
    // Room for every order the loop below places.
    shard.reserve(3 * N as usize + 16);
    shard.reserve_holdings(N as usize + 16);
    let mut now = T0;
    let mut next_key = 0u64;
    let mut place = |shard: &mut Shard, events: &mut Vec<Event>, now: u64, mut r: PlaceOrder| {
        next_key += 1;
        r.key = IdempotencyKey::timed(T0, (0xfff << 64) | u128::from(next_key));
        events.clear();
        shard.apply(&Command::PlaceOrder(r), now, events)
    };
    // Warm up one request of every kind.
    place(&mut shard, &mut events, now, uniform_order(0));

    let (allocations, _, accepted) = counted(|| {
        let mut accepted = 0u64;
        for i in 1..=N {
            now += 1;
            // Accepted, unlimited product.
            let reply = place(&mut shard, &mut events, now, uniform_order(i));
            let Reply::Order(order) = reply else { panic!("accepted: {reply:?}") };
            accepted += 1;
            // Pay every other order, cancel the rest: a transition each.
            let cmd = if i % 2 == 0 { Command::Pay { order_id: order.id } } else { Command::Cancel { order_id: order.id } };
            events.clear();
            assert!(matches!(shard.apply(&cmd, now, &mut events), Reply::Order(_)));
            // Limited product: new holdings entries, then limit_exceeded.
            let limited = PlaceOrder { key: IdempotencyKey::default(), user: i, product: LIMITED, unit_price_cents: 500, qty: 2 };
            assert!(matches!(place(&mut shard, &mut events, now, limited), Reply::Order(_)));
            accepted += 1;
            let again = PlaceOrder { qty: 1, ..limited };
            assert_eq!(place(&mut shard, &mut events, now, again), Reply::rejected(Status::LimitExceeded, 0));
            // Rejections: stale price, unknown product.
            let stale = PlaceOrder { unit_price_cents: 0, ..uniform_order(i) };
            assert!(matches!(place(&mut shard, &mut events, now, stale), Reply::Rejected(_)));
            let unknown = PlaceOrder { product: PRODUCTS + 7, ..uniform_order(i) };
            assert_eq!(place(&mut shard, &mut events, now, unknown), Reply::rejected(Status::NoSuchProduct, 0));
        }
        accepted
    });
    assert_eq!(accepted, 2 * N);
    assert_eq!(allocations, 0, "allocations over {N} rounds of place/pay/cancel/limit/reject");

    // Expiry of every placed order (the limited ones) in one timer tick:
    // one event each, so the caller's buffer needs room for the burst (else
    // it grows by doubling, its only allocation).
    events.clear();
    events.reserve(N as usize + 1);
    let (allocations, _, expired) = counted(|| shard.expire_due(now + WINDOW_MS, &mut events));
    assert_eq!(expired as u64, N + 1, "the limited orders and the warm-up order");
    assert_eq!(allocations, 0, "allocations over {expired} expiries");
}

#[test]
fn a_million_orders_take_about_99_bytes_each() {
    const N: u64 = 1_000_000;
    let base = uniform_shard(ShardConfig::new(1));
    for reserve in [true, false] {
        let mut shard = base.clone();
        let mut events = Vec::with_capacity(16);
        let (_, bytes, ()) = counted(|| {
            if reserve {
                shard.reserve(N as usize);
            }
            for i in 0..N {
                events.clear();
                let reply = shard.apply(&Command::PlaceOrder(uniform_order(i)), T0 + i / 64, &mut events);
                debug_assert!(matches!(reply, Reply::Order(_)));
            }
        });
        assert_eq!(shard.order_count() as u64, N);
        let per_order = bytes as f64 / N as f64;
        eprintln!("reserve={reserve}: {bytes} bytes for {N} orders = {per_order:.1} bytes per order");
        // Record 64 + deadline 16 + index: 2^21 buckets (the first power
        // of two with N <= 7/8 of it) of an 8-byte entry (slot and 32 bits
        // of hash) and a control byte.
        let index = (1u64 << 21) as f64 * 9.0 / N as f64;
        let expected = 64.0 + 16.0 + index;
        if reserve {
            assert!((per_order - expected).abs() < 0.1, "{per_order} vs {expected}");
        } else {
            // Growth by doubling: the Vecs end at capacity 2^20.
            let expected = (64.0 + 16.0) * (1u64 << 20) as f64 / N as f64 + index;
            assert!((per_order - expected).abs() < 0.1, "{per_order} vs {expected}");
        }
    }
}
