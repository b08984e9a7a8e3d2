//! The blocking SDK against the fake server: routing, pipelining, batching,
//! typed rejections, retries with the same idempotency key, timeouts.

mod fake_server;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fake_server::{owner_of_order, owner_of_product, FakeServer};
use orderd_protocol::client::{Client, ClientConfig, ClientError, Waited};
use orderd_protocol::message::{ProductRef, UpsertProduct};
use orderd_protocol::{OrderState, PlaceOrder, Reply, Request, Status};

const CORES: u16 = 3;

fn config() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_millis(500), retry_backoff: Duration::from_millis(5), ..ClientConfig::default() }
}

fn catalogue(client: &mut Client, products: u64, stock: u64) {
    let reqs: Vec<Request> = (1..=products)
        .map(|p| {
            Request::UpsertProduct(UpsertProduct { product: p, unit_price_cents: 100 * p, stock, payment_window_ms: 0, per_user_limit: 0 })
        })
        .collect();
    for r in client.execute(&reqs).unwrap() {
        assert!(matches!(r, Reply::Stock(_)), "{r:?}");
    }
}

#[test]
fn handshake_learns_every_core_and_the_shard_map() {
    let server = FakeServer::start(CORES, 64);
    let client = Client::connect(server.addrs[1], config()).unwrap();
    let map = client.shard_map();
    assert_eq!(map.core_count(), 3);
    assert_eq!(map.shard_count(), fake_server::SHARDS);
    assert_eq!(map.seed_core(), 1);
}

#[test]
fn shard_aware_client_sends_each_request_to_the_owning_core() {
    let server = FakeServer::start(CORES, 64);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    catalogue(&mut client, 20, 10);
    let mut ids = Vec::new();
    for p in 1..=20 {
        ids.push(client.place_order(PlaceOrder::with_new_key(7, p, 1, 100 * p)).unwrap().id);
    }
    for id in &ids {
        client.pay_order(*id).unwrap();
    }
    let served = server.served_by();
    assert_eq!(served.len(), 60);
    for (core, req) in served {
        let owner = match &req {
            Request::UpsertProduct(u) => owner_of_product(u.product, CORES),
            Request::PlaceOrder(p) => owner_of_product(p.product, CORES),
            Request::PayOrder(o) => owner_of_order(o.order_id, CORES),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(core, owner, "{req:?} served by core {core}, owner {owner}");
    }
}

#[test]
fn naive_client_sends_everything_to_its_seed_and_gets_the_same_answers() {
    let server = FakeServer::start(CORES, 64);
    let mut naive = Client::connect(server.addrs[2], ClientConfig { shard_aware: false, ..config() }).unwrap();
    catalogue(&mut naive, 5, 3);
    let order = naive.place_order(PlaceOrder::with_new_key(1, 4, 2, 400)).unwrap();
    assert_eq!((order.product, order.qty, order.state), (4, 2, OrderState::Placed));
    assert_eq!(naive.stock(4).unwrap().available, 1);
    assert!(server.served_by().iter().all(|(core, _)| *core == 2));
}

#[test]
fn pipelined_tickets_can_be_redeemed_in_any_order() {
    let server = FakeServer::start(CORES, 64);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    catalogue(&mut client, 10, 1000);
    // More tickets than the in-flight bound (8): submit must pump replies.
    let tickets: Vec<_> = (0..40u64)
        .map(|i| {
            let reqs: Vec<Request> = (0..5)
                .map(|j| Request::PlaceOrder(PlaceOrder::with_new_key(i * 10 + j, 1 + (i + j) % 10, 1, 100 * (1 + (i + j) % 10))))
                .collect();
            (i, client.submit(&reqs).unwrap())
        })
        .collect();
    for (i, t) in tickets.into_iter().rev() {
        let replies = client.wait(t).unwrap();
        assert_eq!(replies.len(), 5);
        for (j, r) in replies.iter().enumerate() {
            let Reply::Order(o) = r else { panic!("{r:?}") };
            assert_eq!(o.user, i * 10 + j as u64, "reply order within a ticket is request order");
        }
    }
}

#[test]
fn batches_larger_than_the_server_limit_are_split_transparently() {
    let server = FakeServer::start(CORES, 16);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    catalogue(&mut client, 100, 5);
    let reqs: Vec<Request> = (1..=100).map(|p| Request::GetStock(ProductRef { product: p })).collect();
    let replies = client.execute(&reqs).unwrap();
    for (p, r) in (1..=100).zip(replies) {
        let Reply::Stock(s) = r else { panic!("{r:?}") };
        assert_eq!(s.product, p);
    }
}

#[test]
fn rejections_are_typed_with_their_detail() {
    let server = FakeServer::start(CORES, 64);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    catalogue(&mut client, 2, 1);
    let e = client.place_order(PlaceOrder::with_new_key(1, 2, 1, 150)).unwrap_err();
    assert_eq!(e.status(), Some(Status::PriceChanged));
    assert!(matches!(e, ClientError::Rejected(r) if r.detail == 200));
    client.place_order(PlaceOrder::with_new_key(1, 2, 1, 200)).unwrap();
    let e = client.place_order(PlaceOrder::with_new_key(2, 2, 1, 200)).unwrap_err();
    assert_eq!(e.status(), Some(Status::SoldOut));
    assert_eq!(client.place_order(PlaceOrder::with_new_key(2, 99, 1, 1)).unwrap_err().status(), Some(Status::NoSuchProduct));
}

#[test]
fn a_lost_reply_is_retried_with_the_same_key_and_buys_once() {
    let server = FakeServer::start(CORES, 64);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    catalogue(&mut client, 1, 10);
    server.faults.drop_after_apply.store(1, Ordering::SeqCst);
    let order = PlaceOrder::with_new_key(5, 1, 3, 100);
    let placed = client.place_order(order).unwrap();
    // The fake applied the first attempt and dropped the reply; the retry
    // carried the same key and got the original order back.
    assert_eq!(client.stock(1).unwrap().available, 7, "bought once, not twice");
    assert_eq!(client.get_order_by_key(1, order.key).unwrap().id, placed.id);
    let attempts = server.served_by().iter().filter(|(_, r)| matches!(r, Request::PlaceOrder(p) if p.key == order.key)).count();
    assert_eq!(attempts, 2);
}

#[test]
fn a_lost_reply_to_a_stock_adjustment_is_reported_as_indeterminate() {
    let server = FakeServer::start(CORES, 64);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    catalogue(&mut client, 1, 10);
    server.faults.drop_after_apply.store(1, Ordering::SeqCst);
    let e = client.adjust_stock(1, 5).unwrap_err();
    assert!(matches!(e, ClientError::Indeterminate { .. }), "{e}");
    // Not resent: applied exactly once.
    assert_eq!(client.stock(1).unwrap().available, 15);
}

#[test]
fn a_stalled_server_times_out_after_the_configured_retries() {
    let server = FakeServer::start(1, 64);
    let cfg = ClientConfig { request_timeout: Duration::from_millis(100), retries: 2, ..config() };
    let mut client = Client::connect(server.addrs[0], cfg).unwrap();
    server.faults.stall.store(true, Ordering::SeqCst);
    let e = client.stock(1).unwrap_err();
    match e {
        ClientError::RetriesExhausted { attempts, last } => {
            assert_eq!(attempts, 3);
            assert!(matches!(*last, ClientError::Timeout { .. }), "{last}");
        }
        other => panic!("{other}"),
    }
    server.faults.stall.store(false, Ordering::SeqCst);
    assert_eq!(client.stock(1).unwrap_err().status(), Some(Status::NoSuchProduct), "the client recovers afterwards");
}

#[test]
fn a_frame_refused_by_the_server_yields_its_code_for_each_request() {
    let server = FakeServer::start(1, 64);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    server.faults.error_code.store(usize::from(Status::TooManyInFlight.code()), Ordering::SeqCst);
    server.faults.error_frames.store(1, Ordering::SeqCst);
    let replies = client.execute(&[Request::Stats, Request::Stats]).unwrap();
    assert_eq!(replies.len(), 2);
    for r in replies {
        let Reply::Rejected(r) = r else { panic!("{r:?}") };
        assert_eq!(r.status(), Some(Status::TooManyInFlight));
    }
}

#[test]
fn a_refused_handshake_is_a_typed_error() {
    let server = FakeServer::start(1, 64);
    server.faults.refuse_hello.store(true, Ordering::SeqCst);
    let e = Client::connect(server.addrs[0], config()).err().unwrap();
    assert_eq!(e.status(), Some(Status::UnsupportedVersion));
}

#[test]
fn connecting_to_a_closed_port_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let e = Client::connect(port, config()).err().unwrap();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
}

#[test]
fn wait_until_hands_the_ticket_back_while_replies_are_late_and_redeems_it_later() {
    let server = FakeServer::start(1, 64);
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    catalogue(&mut client, 1, 10);
    let ready = client.submit(&[Request::GetStock(ProductRef { product: 1 })]).unwrap();
    match client.wait_until(ready, std::time::Instant::now() + Duration::from_secs(5)).unwrap() {
        Waited::Ready(replies) => assert!(matches!(replies[..], [Reply::Stock(_)])),
        Waited::Pending(_) => panic!("a prompt reply came back as pending"),
    }
    server.faults.stall.store(true, Ordering::SeqCst);
    let late = client.submit(&[Request::GetStock(ProductRef { product: 1 })]).unwrap();
    let late = match client.wait_until(late, std::time::Instant::now() + Duration::from_millis(50)).unwrap() {
        Waited::Pending(ticket) => ticket,
        Waited::Ready(r) => panic!("a stalled frame was answered: {r:?}"),
    };
    // Still pending, and nothing was resent: the deadline is not the request timeout.
    let late = match client.wait_until(late, std::time::Instant::now() + Duration::from_millis(50)).unwrap() {
        Waited::Pending(ticket) => ticket,
        Waited::Ready(r) => panic!("a stalled frame was answered: {r:?}"),
    };
    server.faults.stall.store(false, Ordering::SeqCst);
    // The blocking wait applies the request timeout, then resends (idempotent).
    assert!(matches!(client.wait(late).unwrap()[..], [Reply::Stock(_)]));
}
