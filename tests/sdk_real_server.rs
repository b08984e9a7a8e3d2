//! The SDK against the real server (the protocol crate's own SDK tests use a
//! fake that can inject faults; these check the same paths end to end):
//! pipelined tickets, transparent batch splitting under a server bound set
//! through its environment variable, and the async client under concurrency.

mod common;

use common::Server;
use orderd_protocol::client::{AsyncClient, ClientConfig};
use orderd_protocol::message::{ProductRef, UpsertProduct};
use orderd_protocol::{PlaceOrder, Reply, Request, Status};

fn upsert(product: u64, stock: u64, per_user_limit: u32) -> Request {
    Request::UpsertProduct(UpsertProduct { product, unit_price_cents: 100 + product, stock, payment_window_ms: 0, per_user_limit })
}

#[test]
fn pipelined_tickets_across_cores_come_back_in_request_order() {
    let server = Server::start("0,1", &[]);
    let mut client = server.client();
    let catalogue: Vec<Request> = (1..=16).map(|p| upsert(p, 1_000, 0)).collect();
    assert!(client.execute(&catalogue).unwrap().iter().all(|r| matches!(r, Reply::Stock(_))));
    // 100 tickets of 8 orders over 16 products: more frames than the
    // in-flight bound, each ticket spread over both cores.
    let tickets: Vec<_> = (0..100u64)
        .map(|t| {
            let reqs: Vec<Request> = (0..8u64)
                .map(|j| {
                    let product = 1 + (t + j) % 16;
                    Request::PlaceOrder(PlaceOrder::with_new_key(t * 8 + j, product, 1, 100 + product))
                })
                .collect();
            (t, client.submit(&reqs).unwrap())
        })
        .collect();
    for (t, ticket) in tickets.into_iter().rev() {
        let replies = client.wait(ticket).unwrap();
        assert_eq!(replies.len(), 8);
        for (j, reply) in replies.iter().enumerate() {
            let Reply::Order(order) = reply else { panic!("{reply:?}") };
            assert_eq!(order.user, t * 8 + j as u64);
        }
    }
    let sold: u64 = (1..=16).map(|p| client.stock(p).unwrap().reserved).sum();
    assert_eq!(sold, 800);
}

#[test]
fn batches_over_the_server_bound_are_split_by_the_sdk() {
    let server = Server::start_with_env("0", &[], &[("ORDERD_MAX_BATCH", "16")]);
    let mut client = server.client();
    assert_eq!(client.execute(&[upsert(1, 5, 0)]).unwrap().len(), 1);
    let reads: Vec<Request> = (0..100).map(|_| Request::GetStock(ProductRef { product: 1 })).collect();
    let replies = client.execute(&reads).unwrap();
    assert_eq!(replies.len(), 100);
    assert!(replies.iter().all(|r| matches!(r, Reply::Stock(s) if s.available == 5)));
}

#[test]
fn the_async_client_never_oversells_under_concurrent_tasks() {
    let server = Server::start("0,1", &[]);
    let seed = server.seed.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let client = AsyncClient::connect(&seed, ClientConfig::default()).await.unwrap();
        for p in 1..=4 {
            client
                .upsert_product(UpsertProduct { product: p, unit_price_cents: 500, stock: 100, payment_window_ms: 0, per_user_limit: 1 })
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for user in 0..200u64 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0u64;
                for product in 1..=4 {
                    let order = PlaceOrder::with_new_key(user, product, 1, 500);
                    match c.place_order(order).await {
                        Ok(o) => {
                            // A retry with the same key returns the same order.
                            assert_eq!(c.place_order(order).await.unwrap().id, o.id);
                            accepted += 1;
                        }
                        Err(e) => assert_eq!(e.status(), Some(Status::SoldOut), "{e}"),
                    }
                }
                accepted
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            accepted += t.await.unwrap();
        }
        assert_eq!(accepted, 400, "4 products x 100 units, 200 users");
        for p in 1..=4 {
            let s = client.stock(p).await.unwrap();
            assert_eq!((s.available, s.reserved, s.supplied), (0, 100, 100));
        }
    });
}
