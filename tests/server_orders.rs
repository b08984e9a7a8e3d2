//! Orders through the SDK against a real server: place, retry, cancel, pay,
//! expire; and shard-aware and naive clients agreeing over two cores.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::client::{new_key, ClientConfig};
use orderd_protocol::{OrderState, PlaceOrder, Status, UpsertProduct};

fn product(id: u64, stock: u64, payment_window_ms: u64) -> UpsertProduct {
    UpsertProduct { product: id, unit_price_cents: 1000 + id, stock, payment_window_ms, per_user_limit: 0 }
}

#[test]
fn place_retry_cancel_pay_and_expire_through_the_sdk() {
    let server = Server::start("0", &[]);
    let mut client = server.client();
    client.upsert_product(product(1, 10, 0)).unwrap();
    client.upsert_product(product(2, 10, 300)).unwrap();

    // place, and a retry with the same key is the same order
    let request = PlaceOrder::with_new_key(7, 1, 2, 1001);
    let placed = client.place_order(request).unwrap();
    assert_eq!(placed.state, OrderState::Placed);
    assert_eq!(client.place_order(request).unwrap(), placed, "retry with the same key");
    assert_eq!(client.stock(1).unwrap().reserved, 2);

    // cancel returns the units; pay a second order
    let cancelled = client.cancel_order(placed.id).unwrap();
    assert_eq!(cancelled.state, OrderState::Cancelled);
    let second = client.place_order(PlaceOrder::with_new_key(8, 1, 3, 1001)).unwrap();
    assert_eq!(client.pay_order(second.id).unwrap().state, OrderState::Paid);
    let stock = client.stock(1).unwrap();
    assert_eq!((stock.available, stock.reserved, stock.paid), (7, 0, 3));
    let err = client.pay_order(placed.id).unwrap_err();
    assert_eq!(err.status(), Some(Status::OrderCancelled));

    // expire: a short payment window, then the timer returns the units
    let expiring = client.place_order(PlaceOrder::with_new_key(9, 2, 4, 1002)).unwrap();
    assert_eq!(client.stock(2).unwrap().reserved, 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Stats touch no shard: only the core's timer can have expired it.
        let live: u64 = client.stats().unwrap().cores.iter().map(|c| c.live_orders).sum();
        if live == 1 {
            break; // only the paid order of product 1 is left
        }
        assert!(Instant::now() < deadline, "the timer never expired the order");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.get_order(expiring.id).unwrap().state, OrderState::Expired);
    let stock = client.stock(2).unwrap();
    assert_eq!((stock.available, stock.reserved), (10, 0));
    assert_eq!(client.pay_order(expiring.id).unwrap_err().status(), Some(Status::OrderExpired));
}

#[test]
fn shard_aware_and_naive_clients_get_identical_answers_on_two_cores() {
    let server = Server::start("0,1", &[]);
    assert_eq!(server.cores.len(), 2);
    let mut aware = server.client();
    // The naive client talks to core 1 only: half the shards are forwarded
    // from 1 to 0, while the aware client forwards nothing.
    let mut naive = server.client_on(1, ClientConfig { shard_aware: false, ..ClientConfig::default() });
    for p in 1..=20 {
        aware.upsert_product(product(p, 100, 0)).unwrap();
    }
    let owners: std::collections::HashSet<u16> = (1..=20u64)
        .map(|p| aware.shard_map().core_for(&orderd_protocol::Request::GetStock(orderd_protocol::message::ProductRef { product: p })))
        .collect();
    assert_eq!(owners.len(), 2, "the products must live on both cores");
    for p in 1..=20u64 {
        let request = PlaceOrder { key: new_key(), user: p, product: p, unit_price_cents: 1000 + p, qty: 1 };
        let a = aware.place_order(request).unwrap();
        let n = naive.place_order(request).unwrap();
        assert_eq!(a, n, "the same key through either path is the same order");
        assert_eq!(aware.get_order(a.id).unwrap(), naive.get_order(a.id).unwrap());
        assert_eq!(aware.get_order_by_key(p, request.key).unwrap(), naive.get_order_by_key(p, request.key).unwrap());
        assert_eq!(aware.stock(p).unwrap(), naive.stock(p).unwrap());
        if p.is_multiple_of(2) {
            assert_eq!(naive.pay_order(a.id).unwrap().state, OrderState::Paid);
        } else {
            assert_eq!(naive.cancel_order(a.id).unwrap().state, OrderState::Cancelled);
        }
        assert_eq!(aware.get_order(a.id).unwrap(), naive.get_order(a.id).unwrap());
    }
    let (sa, sn) = (aware.stats().unwrap(), naive.stats().unwrap());
    assert_eq!(sa.cores.len(), 2);
    assert_eq!(sa.server_id, sn.server_id);
    assert_eq!(sa.cores.iter().map(|c| c.orders_placed).sum::<u64>(), 20);
    assert_eq!(sa.cores.iter().map(|c| c.shards).sum::<u32>(), 64);
    assert!(sn.cores[1].forwarded > 0, "core 1 forwarded the naive client's requests: {sn:?}");
    // An order id of a shard that does not exist is answered, not crashed on.
    let bogus = orderd_protocol::shard::order_id(999, 1).unwrap();
    assert_eq!(naive.get_order(bogus).unwrap_err().status(), Some(Status::NoSuchOrder));
}

#[test]
fn reloading_the_catalogue_during_a_sale_keeps_sold_units_sold_across_a_restart() {
    // The defect: `orderd admin load-workload hot` run again during a sale
    // set product 1 back to 100,000 available with 1,970 units sold.
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), "0", &[], &[]);
    let mut client = server.client();
    client.upsert_product(product(1, 100, 0)).unwrap();
    for user in 0..3 {
        client.place_order(PlaceOrder::with_new_key(user, 1, 2, 1001)).unwrap();
    }
    let before = client.stock(1).unwrap();
    assert_eq!((before.available, before.reserved, before.supplied), (94, 6, 100));

    // The same catalogue again, and once more with a new price.
    assert_eq!(client.upsert_product(product(1, 100, 0)).unwrap(), before);
    let repriced = client.upsert_product(UpsertProduct { unit_price_cents: 1500, ..product(1, 100, 0) }).unwrap();
    assert_eq!((repriced.available, repriced.supplied, repriced.unit_price_cents), (94, 100, 1500));
    // Stock moves by adjustment.
    let adjusted = client.adjust_stock(1, 10).unwrap();
    assert_eq!((adjusted.available, adjusted.supplied), (104, 110));

    // Replay gives back exactly what was acknowledged.
    server.terminate();
    let server = Server::start_in(dir.path(), "0", &[], &[]);
    let after = server.client().stock(1).unwrap();
    assert_eq!(after, adjusted);
}

#[test]
fn admin_place_pay_cancel_and_aggregates_against_a_real_server() {
    use orderd::admin::{self, AdminArgs, AdminCommand, AdminError};
    let server = Server::start("0", &[]);
    let mut client = server.client();
    client.upsert_product(product(1, 10, 0)).unwrap();
    let run = |json: bool, command: AdminCommand| -> Result<String, AdminError> {
        let mut out = Vec::new();
        admin::run(&AdminArgs { server: server.seed.to_string(), json, command }, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    };
    let v: serde_json::Value =
        serde_json::from_str(&run(true, AdminCommand::Place { product: 1, user: 3, qty: 2, key: None }).unwrap()).unwrap();
    let id: u64 = v["id"].as_str().unwrap().parse().unwrap();
    assert_eq!((v["state"].as_str(), v["qty"].as_u64(), v["unit_price_cents"].as_u64()), (Some("placed"), Some(2), Some(1001)));
    assert!(run(false, AdminCommand::Pay { id }).unwrap().contains(": paid"));
    let e = run(false, AdminCommand::Cancel { id }).unwrap_err();
    assert!(matches!(e, AdminError::Refused { ref rejection, .. } if rejection.status() == Some(Status::OrderPaid)), "{e}");
    assert!(e.to_string().contains("refused cancelling order"), "{e}");
    let out = run(false, AdminCommand::Aggregates { top: 3 }).unwrap();
    assert!(out.contains("1 orders placed since the start") && out.contains("product        1:          2 sold"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&run(true, AdminCommand::Aggregates { top: 3 }).unwrap()).unwrap();
    assert_eq!((v["orders_placed"].as_u64(), v["top"][0]["product"].as_str()), (Some(1), Some("1")));
}

/// The dedup window (PROTOCOL.md § 9) on a real server: a retry within it is
/// the original order, after it `key_expired`, never a second order; keys
/// from before it, too far ahead of the clock or without a time are refused
/// before anything is placed.
#[test]
fn keys_are_answered_within_the_dedup_window_and_refused_after_it() {
    use orderd_protocol::client::unix_now_ms;
    use orderd_protocol::IdempotencyKey;
    let server = Server::start("0", &["--dedup-window-secs", "2", "--key-max-ahead-secs", "60"]);
    let mut client = server.client();
    client.upsert_product(product(1, 100, 0)).unwrap();
    let expired = |e: &orderd_protocol::client::ClientError| match e {
        orderd_protocol::client::ClientError::Rejected(r) => r.status() == Some(Status::KeyExpired),
        _ => false,
    };

    // Made a second ago: inside the two-second window, placed once.
    let before = unix_now_ms();
    let request = PlaceOrder { key: IdempotencyKey::timed(before - 1000, 1), ..PlaceOrder::with_new_key(5, 1, 1, 1001) };
    let placed = client.place_order(request).unwrap();
    assert_eq!(client.place_order(request).unwrap(), placed, "a retry inside the window");
    assert_eq!(client.get_order_by_key(1, request.key).unwrap(), placed);

    // Past the window the retry is refused, not placed again; the id still answers.
    std::thread::sleep(Duration::from_millis(1500));
    let err = client.place_order(request).unwrap_err();
    assert!(expired(&err), "{err}");
    let orderd_protocol::client::ClientError::Rejected(r) = err else { unreachable!() };
    assert!(r.detail >= before + 1500, "the detail is the server's clock: {} < {}", r.detail, before + 1500);
    assert!(expired(&client.get_order_by_key(1, request.key).unwrap_err()));
    assert_eq!(client.get_order(placed.id).unwrap(), placed);
    assert_eq!(client.stock(1).unwrap().reserved, 1, "nothing placed twice");

    // Made long ago, or far ahead of the server's clock: refused unplaced.
    let now = unix_now_ms();
    for time in [now - 10_000, now + 3_600_000] {
        let late = PlaceOrder { key: IdempotencyKey::timed(time, 2), ..request };
        assert!(expired(&client.place_order(late).unwrap_err()), "key made at {time}, now {now}");
    }
    // A key without a time (a random, version-4 UUID): invalid, field 1.
    let untimed = PlaceOrder { key: IdempotencyKey { hi: 0x0123_4567_89ab_4def, lo: 0x8123_4567_89ab_cdef }, ..request };
    match client.place_order(untimed).unwrap_err() {
        orderd_protocol::client::ClientError::Rejected(r) => assert_eq!((r.status(), r.detail), (Some(Status::InvalidRequest), 1)),
        other => panic!("{other}"),
    }
    assert_eq!(client.stock(1).unwrap().reserved, 1);
    // A key made now is placed.
    assert!(client.place_order(PlaceOrder { key: new_key(), ..request }).is_ok());
}

/// Protocol version 2's `ListProducts` over two cores: the SDK negotiates
/// version 2, pages come merged by id from both cores, `more` says when to
/// ask again, and paging yields every product exactly once.
#[test]
fn list_products_pages_the_catalogue_of_every_core_by_id() {
    let server = Server::start("0,1", &[]);
    let mut client = server.client();
    assert_eq!(client.shard_map().version(), orderd_protocol::limits::PROTOCOL_VERSION);
    let ids: Vec<u64> = (1..=30).map(|i| i * 7).collect();
    for &id in &ids {
        client.upsert_product(product(id, id, 0)).unwrap();
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = client.list_products(after, 7).unwrap();
        assert!(page.products.len() <= 7);
        assert!(page.products.windows(2).all(|w| w[0].product < w[1].product), "by id");
        seen.extend(page.products.iter().map(|p| p.product));
        if page.more == 0 {
            break;
        }
        after = page.products.last().unwrap().product;
    }
    assert_eq!(seen, ids, "every product once, in order");
    let stock = client.list_products(20, 1).unwrap();
    assert_eq!((stock.products[0].product, stock.products[0].available, stock.more), (21, 21, 1));
    assert_eq!(client.list_products(ids[29], 0).unwrap().products.len(), 0);
}
