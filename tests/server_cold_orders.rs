//! Cold orders on a real server: final orders leave memory for the shards'
//! archives at checkpoints, so a server takes many times its in-memory
//! order bound without `orders_full`, its anonymous memory stays flat, and
//! every order it ever acknowledged is still answered by id, by key and to
//! a retry, before and after a kill -9.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::client::Client;
use orderd_protocol::message::{KeyRef, OrderRef};
use orderd_protocol::{Order, OrderState, PlaceOrder, Reply, Request, Status, UpsertProduct};

/// Two shards of 5,000 orders in memory each: 10,000 in all.
const SHARDS: &str = "2";
const MAX_ORDERS_PER_SHARD: u64 = 5_000;
/// Twenty times the memory bound.
const ORDERS: u64 = 20 * 2 * MAX_ORDERS_PER_SHARD;
/// The test's buyers are `BUYERS_FROM..BUYERS_FROM + 1000`.
const BUYERS_FROM: u64 = 1_000;
/// The payment window: orders left unpaid expire after it.
const WINDOW_MS: u64 = 1_000;

fn flags() -> Vec<String> {
    [
        "--shards",
        SHARDS,
        "--max-orders-per-shard",
        &MAX_ORDERS_PER_SHARD.to_string(),
        "--hot-orders-secs",
        "0",
        "--checkpoint-every-records",
        "2000",
        "--checkpoint-every-secs",
        "1",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = server.scrape();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series.split('{').next()? == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Anonymous resident memory of the process, in KiB (`RssAnon`): the
/// heap the shards' tables live in. File-backed pages (the mapped log
/// segments) are page cache and are not counted.
fn rss_anon_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What the test acknowledged of one order.
struct Acked {
    placed: PlaceOrder,
    order: Order,
    /// The state the client made it reach (`Placed`: left to expire).
    state: OrderState,
}

fn load_products(client: &mut Client) {
    let upsert = UpsertProduct { product: 1, unit_price_cents: 500, stock: 10_000_000, payment_window_ms: WINDOW_MS, per_user_limit: 0 };
    client.upsert_product(upsert).unwrap();
    let limited =
        UpsertProduct { product: 2, unit_price_cents: 700, stock: 10_000_000, payment_window_ms: WINDOW_MS, per_user_limit: 1_000 };
    client.upsert_product(limited).unwrap();
}

/// Places `n` orders in batches of 250 (of 1,000 buyers, a product each:
/// one with a per-user limit), then pays 90%, cancels 5% and leaves 5% to
/// expire of each batch. Panics on anything but an order.
fn run_lifecycle(client: &mut Client, from: u64, n: u64, acked: &mut Vec<Acked>) {
    for batch in (from..from + n).collect::<Vec<u64>>().chunks(250) {
        let placed: Vec<PlaceOrder> = batch
            .iter()
            .map(|&i| {
                let product = 1 + i % 2;
                PlaceOrder::with_new_key(BUYERS_FROM + i % 1_000, product, 1, if product == 1 { 500 } else { 700 })
            })
            .collect();
        let requests: Vec<Request> = placed.iter().map(|p| Request::PlaceOrder(*p)).collect();
        let replies = client.execute(&requests).unwrap();
        let mut closes = Vec::new();
        for ((&i, p), reply) in batch.iter().zip(&placed).zip(replies) {
            let Reply::Order(order) = reply else { panic!("order {i} was answered {reply:?}") };
            let state = match i % 20 {
                0 => OrderState::Cancelled,
                1 => OrderState::Placed,
                _ => OrderState::Paid,
            };
            match state {
                OrderState::Paid => closes.push(Request::PayOrder(OrderRef { order_id: order.id })),
                OrderState::Cancelled => closes.push(Request::CancelOrder(OrderRef { order_id: order.id })),
                _ => {}
            }
            acked.push(Acked { placed: *p, order, state });
        }
        for reply in client.execute(&closes).unwrap() {
            assert!(matches!(reply, Reply::Order(_)), "a close was answered {reply:?}");
        }
    }
}

/// Every acknowledged order, by id and by key, in its final state; and a
/// retry of each tenth place order returns the original.
fn check_every_order(client: &mut Client, acked: &[Acked]) {
    for chunk in acked.chunks(500) {
        let by_id: Vec<Request> = chunk.iter().map(|a| Request::GetOrder(OrderRef { order_id: a.order.id })).collect();
        let by_key: Vec<Request> =
            chunk.iter().map(|a| Request::GetOrderByKey(KeyRef { key: a.placed.key, product: a.placed.product })).collect();
        let retries: Vec<Request> = chunk.iter().step_by(10).map(|a| Request::PlaceOrder(a.placed)).collect();
        let (ids, keys) = (client.execute(&by_id).unwrap(), client.execute(&by_key).unwrap());
        for ((a, id_reply), key_reply) in chunk.iter().zip(ids).zip(keys) {
            let Reply::Order(order) = id_reply else { panic!("order {} by id: {id_reply:?}", a.order.id) };
            assert_eq!(key_reply, Reply::Order(order), "order {} by key", a.order.id);
            let expected = if a.state == OrderState::Placed { OrderState::Expired } else { a.state };
            assert_eq!(order.state, expected, "order {}", a.order.id);
            assert_eq!(
                (order.key, order.user, order.product, order.created_ms),
                (a.order.key, a.order.user, a.order.product, a.order.created_ms)
            );
        }
        for (a, reply) in chunk.iter().step_by(10).zip(client.execute(&retries).unwrap()) {
            assert!(matches!(reply, Reply::Order(o) if o.id == a.order.id), "a retry of order {} was answered {reply:?}", a.order.id);
        }
    }
}

/// Waits until no order is open any more: every one left unpaid expired.
fn wait_for_expiries(client: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (1..=2).map(|p| client.stock(p).unwrap().reserved).sum::<u64>() > 0 {
        assert!(Instant::now() < deadline, "orders left unpaid did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn twenty_times_the_memory_bound_in_orders_with_flat_memory_and_every_order_answered() {
    let dir = tempfile::tempdir().unwrap();
    let flags = flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    load_products(&mut client);
    let mut acked = Vec::new();
    // Warm-up: the first quarter fills the hot tables to their working size.
    run_lifecycle(&mut client, 0, ORDERS / 4, &mut acked);
    let warm_kib = rss_anon_kib(&server);
    let tables = |server: &Server| {
        ["order_records", "key_index", "cold_keys", "deadlines", "holdings", "catalogue"]
            .map(|t| metric(server, &format!("orderd_memory_{t}_bytes")) as u64 / 1024)
    };
    eprintln!("tables at warm-up (KiB): {:?}", tables(&server));
    let mut peak_in_memory = 0.0f64;
    for part in 1..4 {
        run_lifecycle(&mut client, part * ORDERS / 4, ORDERS / 4, &mut acked);
        peak_in_memory = peak_in_memory.max(metric(&server, "orderd_orders_in_memory"));
    }
    let end_kib = rss_anon_kib(&server);
    eprintln!("tables at the end (KiB): {:?}", tables(&server));
    assert_eq!(acked.len() as u64, ORDERS, "every order was placed: none answered orders_full");
    assert!(peak_in_memory <= (2 * MAX_ORDERS_PER_SHARD) as f64, "{peak_in_memory} orders in memory");
    let archived = metric(&server, "orderd_orders_archived");
    assert!(archived >= (ORDERS / 2) as f64, "only {archived} of {ORDERS} orders archived");
    // The bound: after warm-up, anonymous memory grows by at most 1 MiB
    // of allocator and buffer noise plus the cold key index (about 10-21
    // bytes per key at hashbrown's load; 24 allowed). An order kept in
    // memory would cost 64 bytes of record and 8-16 of index: 75 bytes
    // per order after warm-up, about 5.5 MiB here.
    let after_warm_up = ORDERS - ORDERS / 4;
    let bound_kib = 1024 + after_warm_up * 24 / 1024;
    eprintln!(
        "RssAnon {warm_kib} KiB after warm-up, {end_kib} KiB after {ORDERS} orders (bound +{bound_kib} KiB); {archived} archived, peak {peak_in_memory} in memory"
    );
    assert!(end_kib <= warm_kib + bound_kib, "anonymous memory grew from {warm_kib} to {end_kib} KiB (bound +{bound_kib})");
    // The SDK's storage statistics: every order is hot or cold.
    let storage = client.storage_stats().unwrap();
    assert_eq!(storage.cores.len(), 1);
    let core = storage.cores[0];
    assert!(core.orders_in_memory + core.orders_archived == ORDERS && core.cold_keys > 0, "{core:?}");
    assert!(core.checkpoint_sequence > 0 && core.checkpoint_at_ms > 0 && core.checkpoint_at_ms <= storage.now_ms, "{core:?}");
    assert!(core.log_next_sequence >= core.checkpoint_sequence && core.log_file_bytes > 0, "{core:?}");
    assert!(core.archive_bytes >= 64 * core.orders_archived && core.memory_cold_keys > 0, "{core:?}");

    wait_for_expiries(&mut client);
    check_every_order(&mut client, &acked);
    // The limited product's paid units, archived ones included.
    assert_eq!(client.stock(2).unwrap().paid, acked.iter().filter(|a| a.placed.product == 2 && a.state == OrderState::Paid).count() as u64);

    // kill -9: the restart recovers from a checkpoint and the archives.
    drop(client);
    server.kill();
    let server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    check_every_order(&mut client, &acked);
    let fresh = client.execute(&[Request::PlaceOrder(PlaceOrder::with_new_key(1, 1, 1, 500))]).unwrap();
    assert!(matches!(&fresh[0], Reply::Order(o) if acked.iter().all(|a| a.order.id != o.id)), "{fresh:?}");
}

#[test]
fn a_retry_of_an_archived_order_never_places_a_second_one_and_its_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let flags = flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    load_products(&mut client);
    // User 7 buys the 1,000 units of product 2 its limit allows (one of
    // 997 and three of 1), and pays.
    let mut bought: Vec<PlaceOrder> = (0..3).map(|_| PlaceOrder::with_new_key(7, 2, 1, 700)).collect();
    bought.push(PlaceOrder::with_new_key(7, 2, 997, 700));
    let mut orders = Vec::new();
    for p in &bought {
        let order = client.place_order(*p).unwrap();
        orders.push(client.pay_order(order.id).unwrap());
    }
    // Enough other orders, paid, for checkpoints to archive user 7's.
    let mut acked = Vec::new();
    run_lifecycle(&mut client, 100, 6_000, &mut acked);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "orderd_orders_archived") < 5_000.0 {
        assert!(Instant::now() < deadline, "nothing archived within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Archived (hot window 0): a retry answers the original, paying again
    // answers it paid, cancelling is refused, and the limit still counts
    // the units.
    for (p, order) in bought.iter().zip(&orders) {
        assert_eq!(&client.place_order(*p).unwrap(), order);
        assert_eq!(&client.pay_order(order.id).unwrap(), order);
        assert_eq!(client.cancel_order(order.id).unwrap_err().status(), Some(Status::OrderPaid));
    }
    let another = client.place_order(PlaceOrder::with_new_key(7, 2, 1, 700)).unwrap_err();
    assert_eq!(another.status(), Some(Status::LimitExceeded), "{another}");
    // A key reused for another request is still refused as reused.
    let reused = PlaceOrder { qty: 2, ..bought[0] };
    assert_eq!(client.place_order(reused).unwrap_err().status(), Some(Status::KeyReused));
}

#[test]
fn kill_9_while_orders_are_archived_loses_none_and_never_places_a_key_twice() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    // Small checkpoints and a hot window of 0: archives, checkpoints and
    // log segment retention all run all the time, so kills land in them.
    let mut flags = flags();
    flags.extend(["--segment-bytes", "1MiB", "--max-log-bytes", "16MiB", "--retain-log-bytes", "4MiB"].map(str::to_owned));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut acked: Vec<Acked> = Vec::new();
    let mut server = Server::start_in(dir.path(), "0", &flags, &[]);
    load_products(&mut server.client());
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for round in 0..4u64 {
        // A client places and closes orders until the kill breaks its
        // connection; what it saw acknowledged is kept.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            let mut client = server.client();
            std::thread::spawn(move || {
                let mut i = round * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = Vec::new();
                    // Ends at the first error: the kill.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_lifecycle(&mut client, i, 250, &mut batch)));
                    let failed = result.is_err();
                    // After a failure the closes of this batch may not
                    // have been acknowledged: only the placements were.
                    let batch = batch.into_iter().map(|a| if failed { Acked { state: OrderState::Placed, ..a } } else { a });
                    seen.lock().unwrap().extend(batch);
                    if failed {
                        break;
                    }
                    i += 250;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300 + next() % 900));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        let _ = worker.join();
        let round_acked = std::mem::take(&mut *seen.lock().unwrap());
        eprintln!("round {round}: {} orders acknowledged before the kill", round_acked.len());
        acked.extend(round_acked);
        server = Server::start_in(dir.path(), "0", &flags, &[]);
        let mut client = server.client();
        wait_for_expiries(&mut client);
        // Every order acknowledged in any round: by id, by key, retried.
        for chunk in acked.chunks(500) {
            let by_id: Vec<Request> = chunk.iter().map(|a| Request::GetOrder(OrderRef { order_id: a.order.id })).collect();
            let retries: Vec<Request> = chunk.iter().map(|a| Request::PlaceOrder(a.placed)).collect();
            for ((a, got), retry) in chunk.iter().zip(client.execute(&by_id).unwrap()).zip(client.execute(&retries).unwrap()) {
                let Reply::Order(order) = got else { panic!("round {round}: acknowledged order {} is {got:?}", a.order.id) };
                assert_eq!((order.key, order.user, order.product), (a.order.key, a.order.user, a.order.product));
                if a.state != OrderState::Placed {
                    assert_eq!(order.state, a.state, "round {round}: order {}", order.id);
                }
                assert!(matches!(retry, Reply::Order(o) if o.id == order.id), "round {round}: a retry of order {} got {retry:?}", order.id);
            }
        }
    }
    // Retention ran between the kills: the log no longer starts at record 0.
    let oldest = std::fs::read_dir(dir.path().join("core-0000"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("segment-")?.strip_suffix(".log")?.parse::<u64>().ok())
        .min();
    assert!(oldest.is_some_and(|first| first > 0), "no segment was deleted: the oldest starts at {oldest:?}");
}
