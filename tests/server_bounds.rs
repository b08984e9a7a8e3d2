//! Every bound answers with its protocol status code.

mod common;

use common::Server;
use orderd_protocol::client::{ClientConfig, ClientError, Connection};
use orderd_protocol::codec::{Encoder, ServerFrame};
use orderd_protocol::message::ProductRef;
use orderd_protocol::{PlaceOrder, Request, Status, UpsertProduct};

fn refused_with(result: orderd_protocol::client::Result<ServerFrame>) -> (u64, u16, u64) {
    match result {
        Ok(ServerFrame::Error(c, e)) => (c, e.code, e.detail),
        other => panic!("expected an Error frame, got {other:?}"),
    }
}

fn stock_request(product: u64) -> Request {
    Request::GetStock(ProductRef { product })
}

#[test]
fn frame_batch_and_in_flight_bounds_answer_their_codes() {
    let server = Server::start("0", &["--max-frame-bytes", "1024", "--max-batch", "4", "--max-in-flight", "2"]);
    let config = ClientConfig::default();

    // The Welcome announces the bounds.
    let mut conn = Connection::connect(server.seed, &config).unwrap();
    let limits = conn.welcome().limits;
    assert_eq!((limits.max_frame_bytes, limits.max_batch, limits.max_in_flight), (1024, 4, 2));

    // frame_too_large: 20 requests are 1128 payload bytes.
    let big: Vec<Request> = (0..20).map(|i| Request::PlaceOrder(PlaceOrder::with_new_key(i, 1, 1, 1))).collect();
    let c = conn.send(&big).unwrap();
    assert_eq!(refused_with(conn.recv()), (c, Status::FrameTooLarge.code(), 1024));
    assert!(conn.recv().is_err(), "the connection is closed after the Error frame");

    // batch_too_large: 5 small requests.
    let mut conn = Connection::connect(server.seed, &config).unwrap();
    let c = conn.send(&[Request::Stats, Request::Stats, Request::Stats, Request::Stats, Request::Stats]).unwrap();
    assert_eq!(refused_with(conn.recv()), (c, Status::BatchTooLarge.code(), 4));

    // too_many_in_flight: three frames arrive together, the third is refused
    // after the first two are answered.
    let mut conn = Connection::connect(server.seed, &config).unwrap();
    let mut bytes = Vec::new();
    let mut encoder = Encoder::default();
    for correlation in [11, 12, 13] {
        encoder.requests(&mut bytes, correlation, &[stock_request(correlation)]).unwrap();
    }
    conn.send_raw(&bytes).unwrap();
    for correlation in [11, 12] {
        match conn.recv().unwrap() {
            ServerFrame::Replies(c, replies) => assert_eq!((c, replies.len()), (correlation, 1)),
            other => panic!("expected replies, got {other:?}"),
        }
    }
    assert_eq!(refused_with(conn.recv()), (13, Status::TooManyInFlight.code(), 2));

    // A client inside the bounds is served as usual.
    let mut client = server.client();
    assert_eq!(client.execute(&[Request::Stats, stock_request(1)]).unwrap().len(), 2);
}

#[test]
fn connections_past_the_per_core_bound_are_refused() {
    let server = Server::start("0", &["--max-connections", "3"]);
    let config = ClientConfig::default();
    let held: Vec<Connection> = (0..3).map(|_| Connection::connect(server.seed, &config).unwrap()).collect();
    match Connection::connect(server.seed, &config) {
        Err(ClientError::Refused { code, detail, .. }) => assert_eq!((code, detail), (Status::TooManyConnections.code(), 3)),
        Err(e) => panic!("expected too_many_connections, got {e}"),
        Ok(_) => panic!("a fourth connection was admitted"),
    }
    drop(held);
    // Room again once they close (the server notices asynchronously).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Connection::connect(server.seed, &config).is_err() {
        assert!(std::time::Instant::now() < deadline, "closed connections were never released");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_full_shard_answers_orders_full() {
    let server = Server::start("0", &["--shards", "1", "--max-orders-per-shard", "2"]);
    let mut client = server.client_on(0, ClientConfig { retries: 0, ..ClientConfig::default() });
    client.upsert_product(UpsertProduct { product: 1, unit_price_cents: 5, stock: 100, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    client.place_order(PlaceOrder::with_new_key(1, 1, 1, 5)).unwrap();
    client.place_order(PlaceOrder::with_new_key(2, 1, 1, 5)).unwrap();
    let err = client.place_order(PlaceOrder::with_new_key(3, 1, 1, 5)).unwrap_err();
    assert_eq!(err.status(), Some(Status::OrdersFull), "{err}");
    assert_eq!(client.stock(1).unwrap().reserved, 2, "the refused order reserved nothing");
}
