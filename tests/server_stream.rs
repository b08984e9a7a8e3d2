//! The order stream against the real server: every accepted order once,
//! with the fields of get order; resuming from a saved position after the
//! subscriber dies, after a reconnect, and after the server is SIGKILLed
//! (blocking and tokio subscriptions); filters; refusals; stalled subscribers within their memory bound; the
//! aggregates recounted from the stream; `orderd tail`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::GoodClient;
use common::Server;
use orderd_protocol::client::{format_positions, AsyncSubscription, ClientConfig, ClientError, Connection, SubscribeOptions, Subscription};
use orderd_protocol::message::{EventKind, ProductRef, StreamEvent, StreamStart, Subscribe};
use orderd_protocol::{Order, PlaceOrder, Reply, Request, Status, UpsertProduct};

/// How long a test waits for events it expects before failing.
const PATIENCE: Duration = Duration::from_secs(30);

fn upsert(product: u64, stock: u64) -> UpsertProduct {
    UpsertProduct { product, unit_price_cents: 100 + product, stock, payment_window_ms: 0, per_user_limit: 0 }
}

fn subscribe(server: &Server, start: StreamStart) -> Subscription {
    let options = SubscribeOptions { start, ..SubscribeOptions::default() };
    Subscription::connect(server.seed, ClientConfig::default(), options).expect("subscribe")
}

/// Reads events until `done` holds of what was read, within [`PATIENCE`].
fn read_until(sub: &mut Subscription, mut done: impl FnMut(&[StreamEvent]) -> bool) -> Vec<StreamEvent> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(Instant::now() < deadline, "only {} events arrived within {PATIENCE:?}", seen.len());
        if let Some(e) = sub.next_event(Duration::from_millis(200)).expect("stream") {
            seen.push(e);
        }
    }
    seen
}

fn placed_count(n: usize) -> impl FnMut(&[StreamEvent]) -> bool {
    move |seen| seen.iter().filter(|e| e.kind == EventKind::Placed).count() >= n
}

/// A server on two cores (8 shards) with products `1..=products`, each with
/// `stock(product)` units, and a client.
fn two_cores_with(products: u64, stock: impl Fn(u64) -> u64) -> (Server, orderd_protocol::client::Client) {
    let server = Server::start("0,1", &["--shards", "8"]);
    let mut client = server.client();
    for p in 1..=products {
        client.upsert_product(upsert(p, stock(p))).expect("upsert");
    }
    (server, client)
}

/// Places `n` orders over `products` products and returns them.
fn place(client: &mut orderd_protocol::client::Client, n: u64, products: u64, user0: u64) -> Vec<Order> {
    let requests: Vec<Request> = (0..n)
        .map(|i| {
            let product = 1 + i % products;
            Request::PlaceOrder(PlaceOrder::with_new_key(user0 + i, product, 1 + (i % 3) as u32, 100 + product))
        })
        .collect();
    let mut orders = Vec::new();
    for chunk in requests.chunks(500) {
        for reply in client.execute(chunk).expect("place") {
            match reply {
                Reply::Order(o) => orders.push(o),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    orders
}

/// Every (core, offset) at most once; events in increasing offset per core.
fn assert_once_in_order(events: &[StreamEvent]) {
    let mut last: HashMap<u16, u64> = HashMap::new();
    for e in events {
        if let Some(&prev) = last.get(&e.core) {
            assert!(e.offset > prev, "core {} offset {} after {prev}: repeated or out of order", e.core, e.offset);
        }
        last.insert(e.core, e.offset);
    }
}

#[test]
fn a_subscriber_from_the_beginning_sees_every_accepted_order_once_with_the_fields_of_get_order() {
    let (server, mut client) = two_cores_with(6, |_| 1_000_000);
    let orders = place(&mut client, 600, 6, 1);
    // Pay a third and cancel a third, so transitions carry their facts.
    for o in orders.iter().step_by(3) {
        client.pay_order(o.id).expect("pay");
    }
    for o in orders.iter().skip(1).step_by(3) {
        client.cancel_order(o.id).expect("cancel");
    }
    let mut sub = subscribe(&server, StreamStart::Beginning);
    let transitions = orders.len().div_ceil(3) + (orders.len() - 1).div_ceil(3);
    let events = read_until(&mut sub, |seen| seen.iter().filter(|e| e.order_id != 0).count() >= orders.len() + transitions);
    assert_once_in_order(&events);

    let placed: HashMap<u64, &StreamEvent> = events.iter().filter(|e| e.kind == EventKind::Placed).map(|e| (e.order_id, e)).collect();
    assert_eq!(placed.len(), orders.len(), "each accepted order exactly once");
    for o in &orders {
        let e = placed[&o.id];
        let read = client.get_order(o.id).expect("get order");
        assert_eq!(
            (e.product, e.user, e.qty, e.amount_cents, e.time_ms),
            (read.product, read.user, u64::from(read.qty), read.unit_price_cents * u64::from(read.qty), read.created_ms),
            "order {}",
            o.id
        );
        assert_eq!(usize::from(e.core), (o.id >> 48) as usize % 2, "an order's events come from its shard's core");
    }
    for e in events.iter().filter(|e| matches!(e.kind, EventKind::Paid | EventKind::Cancelled)) {
        let p = placed[&e.order_id];
        assert_eq!((e.product, e.user, e.qty, e.amount_cents, e.core), (p.product, p.user, p.qty, p.amount_cents, p.core));
    }
    let products = events.iter().filter(|e| e.kind == EventKind::ProductUpserted).count();
    assert_eq!(products, 6);
}

#[test]
fn a_subscriber_killed_mid_stream_resumes_from_its_saved_position_without_gap_or_duplicate() {
    let (server, mut client) = two_cores_with(4, |_| 1_000_000);
    let first = place(&mut client, 300, 4, 1);
    let mut sub = subscribe(&server, StreamStart::Beginning);
    let part_one = read_until(&mut sub, placed_count(120));
    let saved = sub.positions().to_vec();
    drop(sub); // the subscriber dies

    let second = place(&mut client, 300, 4, 10_000);
    let mut sub = subscribe(&server, StreamStart::Positions(saved));
    let part_two = read_until(&mut sub, |seen| part_one.len() + seen.len() >= 4 + first.len() + second.len());

    let all: Vec<StreamEvent> = part_one.iter().chain(&part_two).copied().collect();
    assert_once_in_order(&all);
    let mut ids: Vec<u64> = all.iter().filter(|e| e.kind == EventKind::Placed).map(|e| e.order_id).collect();
    ids.sort_unstable();
    let mut want: Vec<u64> = first.iter().chain(&second).map(|o| o.id).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "the union of both parts is every order once");
}

/// A TCP proxy on a port of its own that forwards each connection to the
/// server of the moment: a client keeps one address while the server
/// behind it restarts on new ephemeral ports (reusing the old port would
/// race with other processes that take ephemeral ports).
struct Proxy {
    addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
}

impl Proxy {
    fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let to = std::sync::Arc::clone(&target);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let to = *to.lock().expect("target");
                let Ok(server) = std::net::TcpStream::connect(to) else { continue };
                for (mut from, mut into) in [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, target }
    }

    fn retarget(&self, to: std::net::SocketAddr) {
        *self.target.lock().expect("target") = to;
    }
}

/// Subscribes (through a proxy) from the beginning, SIGKILLs and restarts
/// the server mid-stream, and checks that the subscription resumed by
/// itself and saw every order once: the blocking and the async SDK alike
/// (`subscribe` makes one, `read` reads it until its condition holds).
fn resumes_by_itself_across_a_sigkill<S>(
    subscribe: impl FnOnce(std::net::SocketAddr, SubscribeOptions) -> S,
    mut read: impl FnMut(&mut S, &mut dyn FnMut(&[StreamEvent]) -> bool) -> Vec<StreamEvent>,
    reconnects: impl Fn(&S) -> u64,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(dir.path(), "0", &[], &[]);
    let proxy = Proxy::start(server.seed);
    let mut client = server.client();
    client.upsert_product(upsert(1, 1_000_000)).expect("upsert");
    let before = place(&mut client, 200, 1, 1);
    let options = SubscribeOptions { start: StreamStart::Beginning, reconnect_for: Duration::from_secs(60), ..SubscribeOptions::default() };
    let mut sub = subscribe(proxy.addr, options);
    let mut events = read(&mut sub, &mut placed_count(100));

    server.kill();
    drop(client);
    // Same data directory; the subscription object reconnects through the
    // proxy and resumes on its own.
    let server = Server::start_in(dir.path(), "0", &[], &[]);
    proxy.retarget(server.seed);
    let mut client = server.client();
    let after = place(&mut client, 200, 1, 5000);
    let total = before.len() + after.len();
    let so_far = events_placed(&events);
    events.extend(read(&mut sub, &mut |seen| so_far + events_placed(seen) >= total));
    assert!(reconnects(&sub) >= 1, "the subscription reconnected");
    assert_once_in_order(&events);
    let mut ids: Vec<u64> = events.iter().filter(|e| e.kind == EventKind::Placed).map(|e| e.order_id).collect();
    ids.sort_unstable();
    let mut want: Vec<u64> = before.iter().chain(&after).map(|o| o.id).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
}

#[test]
fn the_sdk_resumes_by_itself_across_a_sigkill_and_restart_of_the_server() {
    resumes_by_itself_across_a_sigkill(
        |addr, options| Subscription::connect(addr, ClientConfig::default(), options).expect("subscribe"),
        |sub, done| read_until(sub, done),
        Subscription::reconnects,
    );
}

/// A current-thread tokio runtime for the async subscription's tests.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Reads events from the async subscription until `done` holds of what was
/// read, within [`PATIENCE`].
async fn read_until_async(sub: &mut AsyncSubscription, mut done: impl FnMut(&[StreamEvent]) -> bool) -> Vec<StreamEvent> {
    let mut seen = Vec::new();
    let reading = async {
        while !done(&seen) {
            seen.push(sub.next_event().await.expect("stream"));
        }
    };
    tokio::time::timeout(PATIENCE, reading).await.unwrap_or_else(|_| panic!("the events expected did not arrive within {PATIENCE:?}"));
    seen
}

#[test]
fn the_async_subscription_resumes_by_itself_across_a_sigkill_and_restart_of_the_server() {
    let rt = runtime();
    resumes_by_itself_across_a_sigkill(
        |addr, options| rt.block_on(AsyncSubscription::connect(&addr.to_string(), ClientConfig::default(), options)).expect("subscribe"),
        |sub, done| rt.block_on(read_until_async(sub, done)),
        AsyncSubscription::reconnects,
    );
}

#[test]
fn the_async_stream_delivers_what_the_blocking_subscription_does_and_its_position_resumes_exactly() {
    use futures_lite::StreamExt;

    let (server, mut client) = two_cores_with(3, |_| 1_000_000);
    let orders = place(&mut client, 150, 3, 1);
    let mut blocking = subscribe(&server, StreamStart::Beginning);
    let want = read_until(&mut blocking, placed_count(orders.len()));

    let rt = runtime();
    let options = SubscribeOptions { start: StreamStart::Beginning, ..SubscribeOptions::default() };
    let got: Vec<StreamEvent> = rt.block_on(async {
        let sub = AsyncSubscription::connect(&server.seed.to_string(), ClientConfig::default(), options).await.expect("subscribe");
        let stream = sub.into_stream().take(want.len()).map(|e| e.expect("stream"));
        tokio::time::timeout(PATIENCE, stream.collect()).await.expect("events within the patience")
    });
    assert_eq!(got, want, "the same events, in the same order per core, as the blocking subscription");

    // A position taken part-way resumes with the next event.
    let (first, rest) = rt.block_on(async {
        let mut sub = AsyncSubscription::connect(&server.seed.to_string(), ClientConfig::default(), SubscribeOptions::default())
            .await
            .expect("subscribe");
        let first = read_until_async(&mut sub, |seen| seen.len() >= 40).await;
        let saved = sub.positions().to_vec();
        drop(sub);
        let options = SubscribeOptions { start: StreamStart::Positions(saved), ..SubscribeOptions::default() };
        let mut sub = AsyncSubscription::connect(&server.seed.to_string(), ClientConfig::default(), options).await.expect("resume");
        let rest = read_until_async(&mut sub, |seen| first.len() + seen.len() >= want.len()).await;
        (first, rest)
    });
    let mut all: Vec<StreamEvent> = first.into_iter().chain(rest).collect();
    assert_once_in_order(&all);
    let key = |e: &StreamEvent| (e.core, e.offset);
    all.sort_by_key(key);
    let mut want_sorted = want.clone();
    want_sorted.sort_by_key(key);
    assert_eq!(all, want_sorted, "the two parts are every event once");
}

fn events_placed(events: &[StreamEvent]) -> usize {
    events.iter().filter(|e| e.kind == EventKind::Placed).count()
}

#[test]
fn filters_by_product_and_kind_are_applied_by_the_server() {
    let (server, mut client) = two_cores_with(3, |_| 1_000_000);
    let orders = place(&mut client, 90, 3, 1);
    for o in orders.iter().filter(|o| o.product == 2).take(5) {
        client.pay_order(o.id).expect("pay");
    }
    let options =
        SubscribeOptions { start: StreamStart::Beginning, product: 2, kinds: EventKind::Paid.bit(), ..SubscribeOptions::default() };
    let mut sub = Subscription::connect(server.seed, ClientConfig::default(), options).expect("subscribe");
    let events = read_until(&mut sub, |seen| seen.len() >= 5);
    assert!(events.iter().all(|e| e.product == 2 && e.kind == EventKind::Paid), "{events:?}");
    // Nothing else arrives: the other 85 orders and 3 upserts were filtered.
    assert_eq!(sub.next_event(Duration::from_millis(500)).expect("stream"), None);
    // The position moved past what the filter skipped on both cores' logs.
    assert!(sub.positions().iter().sum::<u64>() >= 5);
}

#[test]
fn positions_that_do_not_fit_the_log_and_extra_subscriptions_are_refused_with_their_codes() {
    let server = Server::start("0,1", &["--shards", "8", "--max-subscriptions", "1"]);
    let config = ClientConfig::default();
    let refused = |start: StreamStart| match Subscription::connect(
        server.seed,
        config.clone(),
        SubscribeOptions { start, ..SubscribeOptions::default() },
    ) {
        Err(ClientError::Rejected(r)) => (r.status(), r.detail),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("subscription accepted"),
    };
    assert_eq!(refused(StreamStart::Positions(vec![0])), (Some(Status::InvalidRequest), 1), "one position per core");
    assert_eq!(refused(StreamStart::Positions(vec![0, 50])), (Some(Status::PositionUnavailable), (1 << 48)), "core 1 past its end");

    // One subscription per connection, and at most --max-subscriptions per core.
    let mut conn = Connection::connect(server.cores[0], &config).expect("connect");
    let sub = Request::Subscribe(Subscribe { start: StreamStart::Now, product: 0, kinds: 0 });
    let replies = conn.call(&[sub.clone(), sub.clone()]).expect("call");
    assert!(matches!(replies[0], Reply::Subscribed(_)), "{:?}", replies[0]);
    assert_eq!(replies[1], Reply::rejected(Status::TooManySubscriptions, 0));
    let mut other = Connection::connect(server.cores[0], &config).expect("connect");
    assert_eq!(other.call(std::slice::from_ref(&sub)).expect("call"), [Reply::rejected(Status::TooManySubscriptions, 1)]);
    // Another core has its own bound; the subscribed connection still answers requests.
    let mut on_core_1 = Connection::connect(server.cores[1], &config).expect("connect");
    assert!(matches!(on_core_1.call(&[sub]).expect("call")[0], Reply::Subscribed(_)));
    let stock = conn.call(&[Request::GetStock(ProductRef { product: 9 })]).expect("call");
    assert_eq!(stock, [Reply::rejected(Status::NoSuchProduct, 0)]);
}

/// `RssAnon` of a process, KiB: the heap and buffers, without the mapped log
/// pages (which the page cache owns and counts once per mapping).
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("an RssAnon line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("RssAnon in kB")
}

#[test]
fn stalled_subscribers_hold_no_more_than_their_bound_and_orders_go_on() {
    // Long write timeout: the stalled subscribers stay connected throughout.
    let server = Server::start("0", &["--write-timeout-ms", "600000"]);
    let pid = server.child.id();
    let mut client = server.client();
    client.upsert_product(upsert(1, 1_000_000_000)).expect("upsert");
    client.upsert_product(upsert(2, 1_000_000)).expect("upsert");
    let good = GoodClient::start(server.seed, 2, 102);
    // Warm up, then stall: subscribers that never read a byte.
    client.adjust_stock(1, 1).expect("adjust");
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut conn = Connection::connect(server.seed, &ClientConfig::default()).expect("connect");
        conn.send(&[Request::Subscribe(Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 })]).expect("send");
        stalled.push(conn);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_anon_kib(pid);
    // 8 × 100k events (~6 MiB each on the wire) the subscribers cannot take;
    // stock adjustments add no per-order memory to the engine.
    let adjust: Vec<Request> =
        (0..1000).map(|_| Request::AdjustStock(orderd_protocol::message::AdjustStock { product: 1, delta: 1 })).collect();
    for _ in 0..100 {
        assert!(client.execute(&adjust).expect("adjust").iter().all(|r| matches!(r, Reply::Stock(_))));
    }
    good.assert_still_served(20, "the stalled subscribers");
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_anon_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!("server RssAnon {before} KiB before, {after} KiB after 100k events with 8 stalled subscribers");
    // Buffering the events for 8 subscribers would be ~50 MiB; each may hold
    // one Events frame (~64 KiB) plus what the allocator keeps.
    assert!(grown < 16 * 1024, "anonymous memory grew by {grown} KiB with stalled subscribers");
    assert!(good.finish() > 20);
    drop(stalled);
}

#[test]
fn a_subscriber_that_does_not_read_within_the_write_timeout_is_disconnected_and_can_resume() {
    let server = Server::start("0", &["--write-timeout-ms", "300"]);
    let mut client = server.client();
    client.upsert_product(upsert(1, 1_000_000)).expect("upsert");
    let mut conn = Connection::connect(server.seed, &ClientConfig::default()).expect("connect");
    let correlation = conn.send(&[Request::Subscribe(Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 })]).expect("send");
    let adjust: Vec<Request> =
        (0..1000).map(|_| Request::AdjustStock(orderd_protocol::message::AdjustStock { product: 1, delta: 1 })).collect();
    // 200k events, 12.8 MB: more than the socket buffers of both ends hold.
    for _ in 0..200 {
        client.execute(&adjust).expect("adjust");
    }
    std::thread::sleep(Duration::from_secs(2));
    // Now read: the events the socket held, then the end of the connection.
    let deadline = Instant::now() + PATIENCE;
    let mut last_offset = None;
    let closed = loop {
        assert!(Instant::now() < deadline, "the stalled subscriber was never disconnected");
        match conn.recv() {
            Ok(orderd_protocol::codec::ServerFrame::Events(c, events)) if c == correlation => last_offset = events.last().map(|e| e.offset),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(closed, ClientError::Closed { .. } | ClientError::Io { .. }), "{closed}");
    let resume_at = last_offset.map_or(0, |o| o + 1);
    assert!(resume_at <= 200_000, "the server stopped sending before the end");
    let mut sub = subscribe(&server, StreamStart::Positions(vec![resume_at]));
    let rest = read_until(&mut sub, |seen| seen.last().is_some_and(|e| e.offset == 200_000));
    assert_eq!(rest.first().map(|e| e.offset), Some(resume_at));
    assert_once_in_order(&rest);
}

#[test]
fn aggregates_match_a_recount_from_the_stream() {
    let (server, mut client) = two_cores_with(5, |p| if p == 5 { 30 } else { 1_000_000 });
    let orders = place(&mut client, 400, 4, 1);
    for o in orders.iter().step_by(7) {
        client.cancel_order(o.id).expect("cancel");
    }
    // Product 5 sells out: 10 orders of 3 units.
    for i in 0..10 {
        client.place_order(PlaceOrder::with_new_key(900 + i, 5, 3, 105)).expect("place");
    }
    let mut sub = subscribe(&server, StreamStart::Beginning);
    let transitions = orders.len().div_ceil(7);
    let events = read_until(&mut sub, |seen| seen.iter().filter(|e| e.order_id != 0).count() >= orders.len() + 10 + transitions);
    let agg = client.aggregates(100).expect("aggregates");

    let mut units: BTreeMap<u64, i64> = BTreeMap::new();
    let (mut placed, mut gmv) = (0u64, 0u64);
    for e in &events {
        match e.kind {
            EventKind::Placed => {
                *units.entry(e.product).or_default() += e.qty as i64;
                placed += 1;
                gmv += e.amount_cents;
            }
            EventKind::Cancelled | EventKind::Expired => *units.entry(e.product).or_default() -= e.qty as i64,
            _ => {}
        }
    }
    assert_eq!((agg.orders_placed, agg.gmv_cents), (placed, gmv));
    assert_eq!(agg.units_sold, units.values().sum::<i64>() as u64);
    let top: BTreeMap<u64, i64> = agg.top.iter().map(|p| (p.product, p.units_sold as i64)).collect();
    assert_eq!(top, units, "units sold per product");
    assert!(agg.top.windows(2).all(|w| w[0].units_sold >= w[1].units_sold), "top is sorted");
    assert_eq!((agg.sold_out.clone(), agg.sold_out_count, agg.products), (vec![5], 1, 5));
    let now_s = agg.now_ms / 1000;
    for w in &agg.windows {
        let from = now_s + 1 - u64::from(w.seconds);
        let inside: Vec<&StreamEvent> =
            events.iter().filter(|e| e.kind == EventKind::Placed && (from..=now_s).contains(&(e.time_ms / 1000))).collect();
        assert_eq!((w.orders, w.gmv_cents), (inside.len() as u64, inside.iter().map(|e| e.amount_cents).sum()), "{}s window", w.seconds);
    }
    assert_eq!(agg.windows.iter().map(|w| w.seconds).collect::<Vec<_>>(), [1, 10, 60]);
}

#[test]
fn orderd_tail_prints_json_lines_and_a_position_that_resumes_exactly() {
    let (server, mut client) = two_cores_with(2, |_| 1_000_000);
    let orders = place(&mut client, 40, 2, 1);
    let tail = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_orderd"))
            .args(["tail", "--server", &server.seed.to_string(), "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .expect("run orderd tail");
        assert!(out.status.success(), "orderd tail failed: {:?}", out.status);
        BufReader::new(&out.stdout[..]).lines().map(|l| serde_json::from_str(&l.expect("line")).expect("a JSON line")).collect()
    };
    // First 20 events (2 upserts, then orders), then the rest from the position.
    let first = tail(&["--from", "beginning", "--max", "20"]);
    assert_eq!(first.len(), 21, "20 events and the position line");
    let position = first[20]["position"].as_str().expect("position").to_string();
    let rest = tail(&["--from", &position, "--idle-exit", "1"]);
    let events: Vec<&serde_json::Value> = first[..20].iter().chain(&rest[..rest.len() - 1]).collect();
    for e in &events {
        for field in ["kind", "order_id", "product", "user", "qty", "amount_cents", "core", "offset"] {
            assert!(!e[field].is_null(), "{field} missing in {e}");
        }
    }
    let mut ids: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "placed")
        .map(|e| e["order_id"].as_str().and_then(|id| id.parse().ok()).expect("an id as a decimal string"))
        .collect();
    ids.sort_unstable();
    let mut want: Vec<u64> = orders.iter().map(|o| o.id).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    // Filters from the command line.
    let only = tail(&["--from", "beginning", "--product", "2", "--kind", "placed", "--idle-exit", "1"]);
    assert_eq!(only.len() - 1, orders.iter().filter(|o| o.product == 2).count());
    assert_eq!(
        rest.last().expect("position line")["position"].as_str().map(str::to_string),
        Some(format_positions(&[
            events.iter().filter(|e| e["core"] == 0).count() as u64,
            events.iter().filter(|e| e["core"] == 1).count() as u64,
        ]))
    );
}

/// The README's resume example on a server that has no such position:
/// a sentence that says which core, which offsets it keeps and what to do,
/// not the status code's raw detail.
#[test]
fn orderd_tail_from_a_position_the_server_does_not_have_says_so_in_words() {
    let server = Server::start("0", &["--shards", "2"]);
    let out = Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["tail", "--server", &server.seed.to_string(), "--from", "1200", "--kind", "paid"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run orderd tail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("core 0 cannot start at offset 1200") && stderr.contains("--from beginning"), "{stderr}");
    assert!(!stderr.contains("detail"), "{stderr}");
}

/// Places `n` orders on its own client while the caller reads.
fn place_in_background(server: &Server, n: u64, products: u64, user0: u64) -> std::thread::JoinHandle<Vec<Order>> {
    let mut client = server.client();
    std::thread::spawn(move || place(&mut client, n, products, user0))
}

#[test]
fn at_the_smallest_stream_share_catching_up_and_caught_up_subscribers_get_every_event_once_across_segments() {
    // 1% of a core for the stream: its turns pause while orders run; small
    // segments: the readers cross many of them.
    let server = Server::start("0,1", &["--shards", "8", "--stream-share", "1", "--segment-bytes", "65536"]);
    let mut client = server.client();
    for p in 1..=4 {
        client.upsert_product(upsert(p, 1_000_000)).expect("upsert");
    }
    let before = place(&mut client, 3_000, 4, 1);
    let mut caught_up = subscribe(&server, StreamStart::Now);
    let mut catching_up = subscribe(&server, StreamStart::Beginning);
    let placing = place_in_background(&server, 6_000, 4, 10_000);
    let during = read_until(&mut caught_up, placed_count(6_000));
    let orders = placing.join().expect("placing thread");
    let all = read_until(&mut catching_up, placed_count(9_000));
    for (events, expected) in [(&during, orders.clone()), (&all, before.into_iter().chain(orders).collect())] {
        assert_once_in_order(events);
        let placed: std::collections::HashSet<u64> = events.iter().filter(|e| e.kind == EventKind::Placed).map(|e| e.order_id).collect();
        assert_eq!(placed.len(), expected.len(), "each placed order exactly once");
        assert!(expected.iter().all(|o| placed.contains(&o.id)), "every acknowledged order is in the stream");
    }
    let (_, metrics) = server.scrape();
    assert!(metrics.contains("orderd_stream_busy_seconds_total{core=\"0\"}"), "the stream's time is exposed per core");
}
