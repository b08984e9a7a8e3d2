//! The async (tokio) SDK against the fake server.
#![cfg(feature = "tokio")]

mod fake_server;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fake_server::{owner_of_product, FakeServer};
use orderd_protocol::client::{AsyncClient, ClientConfig, ClientError};
use orderd_protocol::message::UpsertProduct;
use orderd_protocol::{PlaceOrder, Request, Status};

fn config() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_millis(500), retry_backoff: Duration::from_millis(5), ..ClientConfig::default() }
}

async fn connect(server: &FakeServer) -> AsyncClient {
    AsyncClient::connect(&server.addrs[0].to_string(), config()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_share_connections_and_never_oversell() {
    let server = FakeServer::start(3, 64);
    let client = connect(&server).await;
    for p in 1..=4 {
        client
            .upsert_product(UpsertProduct { product: p, unit_price_cents: 10, stock: 50, payment_window_ms: 0, per_user_limit: 0 })
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for user in 0..100u64 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..4 {
                match c.place_order(PlaceOrder::with_new_key(user, 1 + (user + i) % 4, 1, 10)).await {
                    Ok(_) => ok += 1,
                    Err(e) => assert_eq!(e.status(), Some(Status::SoldOut), "{e}"),
                }
            }
            ok
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 200, "4 products x 50 units");
    for p in 1..=4 {
        assert_eq!(client.stock(p).await.unwrap().available, 0);
    }
    for (core, req) in server.served_by() {
        if let Request::PlaceOrder(p) = req {
            assert_eq!(core, owner_of_product(p.product, 3));
        }
    }
}

#[tokio::test]
async fn a_lost_reply_is_retried_with_the_same_key() {
    let server = FakeServer::start(2, 64);
    let client = connect(&server).await;
    client
        .upsert_product(UpsertProduct { product: 1, unit_price_cents: 10, stock: 5, payment_window_ms: 0, per_user_limit: 0 })
        .await
        .unwrap();
    server.faults.drop_after_apply.store(1, Ordering::SeqCst);
    let order = PlaceOrder::with_new_key(1, 1, 2, 10);
    let placed = client.place_order(order).await.unwrap();
    assert_eq!(client.stock(1).await.unwrap().available, 3);
    assert_eq!(client.get_order_by_key(1, order.key).await.unwrap().id, placed.id);
}

#[tokio::test]
async fn a_lost_adjustment_is_indeterminate_and_a_stall_times_out() {
    let server = FakeServer::start(1, 64);
    let client = connect(&server).await;
    client
        .upsert_product(UpsertProduct { product: 1, unit_price_cents: 10, stock: 5, payment_window_ms: 0, per_user_limit: 0 })
        .await
        .unwrap();
    server.faults.drop_after_apply.store(1, Ordering::SeqCst);
    let e = client.adjust_stock(1, 1).await.unwrap_err();
    assert!(matches!(e, ClientError::Indeterminate { .. }), "{e}");
    server.faults.stall.store(true, Ordering::SeqCst);
    let e = client.stock(1).await.unwrap_err();
    assert!(matches!(e, ClientError::RetriesExhausted { .. }), "{e}");
    server.faults.stall.store(false, Ordering::SeqCst);
    assert_eq!(client.stock(1).await.unwrap().available, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_mid_write_leaves_the_connection_whole() {
    // The defect: a call dropped while it wrote its frame (a timeout, an
    // aborted task) left half a frame on the connection every clone shares;
    // the server then read garbage and closed it under every other caller.
    let server = FakeServer::start_small_buffers(1, 1024);
    // Patient calls: the fake applies 65,536 orders after the pause (slow in
    // a debug build on a busy machine), and a request timeout would replace
    // the connection for a reason this test is not about.
    let patient = ClientConfig { request_timeout: Duration::from_secs(60), call_timeout: Duration::from_secs(120), ..config() };
    let client = AsyncClient::connect(&server.addrs[0].to_string(), patient).await.unwrap();
    client
        .upsert_product(UpsertProduct { product: 1, unit_price_cents: 10, stock: 1_000_000, payment_window_ms: 0, per_user_limit: 0 })
        .await
        .unwrap();
    server.faults.pause_reading.store(true, Ordering::SeqCst);
    // 64 frames of ~60 KiB, up to the in-flight bound: more than the
    // sockets between client and paused server take (~2.8 MiB here), so a
    // write blocks mid-frame; then every call is cancelled.
    let mut calls = Vec::new();
    for t in 0..64u64 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            let big: Vec<Request> = (0..1024u64).map(|u| Request::PlaceOrder(PlaceOrder::with_new_key(t * 10_000 + u, 1, 1, 10))).collect();
            tokio::time::timeout(Duration::from_millis(300), c.execute(&big)).await.is_err()
        }));
    }
    for call in calls {
        assert!(call.await.unwrap(), "a call answered while the server did not read");
    }
    server.faults.pause_reading.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(client.stock(1).await.unwrap().product, 1);
    }
    assert_eq!(server.faults.connections.load(Ordering::SeqCst), 1, "the first connection still serves: nothing was cut");
}

#[tokio::test]
async fn a_call_gives_up_at_its_call_timeout_whatever_the_retries() {
    let server = FakeServer::start(1, 64);
    let config = ClientConfig {
        request_timeout: Duration::from_millis(200),
        retries: 10,
        retry_backoff: Duration::from_millis(100),
        call_timeout: Duration::from_millis(600),
        ..ClientConfig::default()
    };
    let client = AsyncClient::connect(&server.addrs[0].to_string(), config).await.unwrap();
    server.faults.stall.store(true, Ordering::SeqCst);
    // Eleven tries of 200 ms plus the backoff would end in RetriesExhausted;
    // the call's own deadline ends it first.
    let err = client.stock(1).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { after, .. } if after == Duration::from_millis(600)), "{err}");
    let err = client.adjust_stock(1, 5).await.unwrap_err();
    assert!(matches!(err, ClientError::Indeterminate { .. }), "a stock adjustment that may have happened: {err}");
}
