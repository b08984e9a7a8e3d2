//! The frame path without a socket: crafted frames through [`Dispatch`],
//! cores built from a recovered log in a temp directory, and the messages
//! for other cores delivered by hand through [`answer`].

use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::codec::{self, Encoder};
use orderd_protocol::frame::{self, FrameCheck, FrameHeader, FrameKind, FrameLimits};
use orderd_protocol::limits::PROTOCOL_VERSION;
use orderd_protocol::message::{
    AggregatesQuery, CoreAddr, Hello, KeyRef, OrderRef, ProductRef, ServerLimits, StreamStart, Subscribe, Welcome,
};
use orderd_protocol::shard::{order_id, shard_of_product};
use orderd_protocol::{IdempotencyKey, PlaceOrder, Reply, Request, Status, UpsertProduct};

use super::*;
use crate::engine::{Shard, ShardConfig};
use crate::log::{recover, RecoveryConfig};
use crate::runtime::core::cores_from_recovery;

const SHARDS: u32 = 8;
const MAX_IN_FLIGHT: u32 = 4;

/// A server's cores, recovered from (empty) logs in a temp directory.
struct Node {
    _dir: tempfile::TempDir,
    cores: Vec<Core>,
    welcome: Welcome,
}

fn node(n: usize) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<Shard> = (0..SHARDS).map(|s| Shard::new(ShardConfig::new(s as u16))).collect();
    let config = RecoveryConfig::new(dir.path().to_path_buf(), n, 1 << 20, crate::log::RealStorage::shared());
    let (writers, _) = recover(&config, &mut all).unwrap();
    let cores = cores_from_recovery(all, writers);
    let addr = "127.0.0.1:7070".parse().unwrap();
    let welcome = Welcome {
        server_id: 42,
        version: PROTOCOL_VERSION,
        core: 0,
        cores: (0..n).map(|i| CoreAddr::new(i as u16, addr)).collect(),
        shard_owner: (0..SHARDS).map(|s| (s as usize % n) as u16).collect(),
        limits: ServerLimits { max_frame_bytes: 1 << 20, max_batch: 1024, max_in_flight: MAX_IN_FLIGHT },
    };
    Node { _dir: dir, cores, welcome }
}

/// A product whose shard core `core` of `cores` owns.
fn product_on(core: usize, cores: usize, nth: u64) -> u64 {
    (1..).filter(|&p| shard_of_product(p, SHARDS) as usize % cores == core).nth(nth as usize).unwrap()
}

fn upsert(product: u64) -> Request {
    Request::UpsertProduct(UpsertProduct { product, unit_price_cents: 100, stock: 10, payment_window_ms: 0, per_user_limit: 1 })
}

fn place(key: u64, user: u64, product: u64) -> Request {
    Request::PlaceOrder(PlaceOrder {
        key: IdempotencyKey::timed(0, (7 << 32) | u128::from(key)),
        user,
        product,
        unit_price_cents: 100,
        qty: 1,
    })
}

fn requests_frame(correlation: u64, requests: &[Request]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::default().requests(&mut out, correlation, requests).unwrap();
    out
}

fn hello_frame(correlation: u64, min_version: u16, max_version: u16) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::default().hello(&mut out, correlation, &Hello { client_id: 1, min_version, max_version }).unwrap();
    out
}

/// One client connection's frame path on core `me`, fed crafted bytes.
struct Conn {
    me: usize,
    rx: FrameBuffer,
    dispatch: Dispatch,
    out: Vec<u8>,
}

impl Conn {
    fn new(me: usize, cores: usize) -> Conn {
        let limits = FrameLimits { max_payload_bytes: 1 << 20, max_items: 1024 };
        Conn { me, rx: FrameBuffer::new(64 * 1024, limits), dispatch: Dispatch::new(me, cores, MAX_IN_FLIGHT), out: Vec::new() }
    }

    /// Puts `bytes` into the receive buffer and returns the complete frame's header.
    fn feed(&mut self, bytes: &[u8]) -> FrameHeader {
        self.rx.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.rx.commit(bytes.len());
        match self.rx.check() {
            FrameCheck::Complete(header) => header,
            other => panic!("not a complete frame: {other:?}"),
        }
    }

    fn admit(&mut self, node: &Node, bytes: &[u8], in_flight: usize) -> Result<Admitted, Refusal> {
        let header = self.feed(bytes);
        let result = self.dispatch.admit(&header, self.rx.payload(&header), in_flight, &node.welcome, &mut self.out);
        self.rx.consume(&header);
        result
    }

    fn handshake(&mut self, node: &Node) {
        assert_eq!(self.admit(node, &hello_frame(1, 1, PROTOCOL_VERSION), 0), Ok(Admitted::Welcomed));
        self.out.clear();
    }

    /// One Requests frame through the whole path, the other cores' parts
    /// delivered through [`answer`] (or lost, for the cores in `lost`).
    /// Returns the replies and the log sequence they wait for.
    fn frame(&mut self, node: &mut Node, requests: &[Request], now_ms: u64, lost: &[usize]) -> Result<(Vec<Reply>, Option<u64>), Refusal> {
        let header = self.feed(&requests_frame(9, requests));
        assert_eq!(self.dispatch.admit(&header, self.rx.payload(&header), 0, &node.welcome, &mut self.out), Ok(Admitted::Requests));
        let result = self.frame_body(node, &header, now_ms, lost);
        self.rx.consume(&header);
        result
    }

    fn frame_body(
        &mut self,
        node: &mut Node,
        header: &FrameHeader,
        now_ms: u64,
        lost: &[usize],
    ) -> Result<(Vec<Reply>, Option<u64>), Refusal> {
        let me = self.me;
        let requests = self.dispatch.begin(header, self.rx.payload(header), &mut node.cores[me], now_ms)?;
        let outgoing: Vec<(usize, CoreMsg)> = self.dispatch.outgoing().collect();
        for (to, msg) in outgoing {
            assert_ne!(to, me, "a core never sends itself a message");
            if lost.contains(&to) {
                self.dispatch.undeliverable(to);
                continue;
            }
            let (answered, _wait) = answer(&mut node.cores[to], &msg).expect("a frame-path message");
            self.dispatch.arrived(to, answered);
        }
        self.out.clear();
        self.dispatch.finish(header, requests, &mut node.cores[me], 42, now_ms, &mut self.out)?;
        let reply_header = match frame::check(&self.out, &FrameLimits::WIRE_MAX) {
            FrameCheck::Complete(h) => h,
            other => panic!("replies are not a frame: {other:?}"),
        };
        assert_eq!(reply_header.kind, FrameKind::Replies);
        assert_eq!(reply_header.correlation, header.correlation);
        let replies = codec::decode_replies(frame::payload(&self.out, &reply_header), &reply_header).unwrap();
        Ok((replies, self.dispatch.take_wait()))
    }
}

fn order_of(reply: &Reply) -> orderd_protocol::Order {
    match reply {
        Reply::Order(o) => *o,
        other => panic!("not an order: {other:?}"),
    }
}

#[test]
fn dispatch_refuses_a_requests_frame_before_the_hello() {
    let node = node(1);
    let mut conn = Conn::new(0, 1);
    let refusal = conn.admit(&node, &requests_frame(5, &[Request::Stats]), 0).unwrap_err();
    assert_eq!((refusal.status, refusal.correlation), (Status::UnknownFrameKind, 5));
    assert!(!conn.dispatch.welcomed());
}

#[test]
fn dispatch_welcomes_a_hello_and_refuses_a_second_one() {
    let node = node(2);
    let mut conn = Conn::new(0, 2);
    assert_eq!(conn.admit(&node, &hello_frame(3, 1, PROTOCOL_VERSION), 0), Ok(Admitted::Welcomed));
    let header = match frame::check(&conn.out, &FrameLimits::WIRE_MAX) {
        FrameCheck::Complete(h) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!((header.kind, header.correlation), (FrameKind::Welcome, 3));
    let welcome = codec::decode_welcome(frame::payload(&conn.out, &header), &header).unwrap();
    assert_eq!(welcome, node.welcome);
    let refusal = conn.admit(&node, &hello_frame(4, 1, PROTOCOL_VERSION), 0).unwrap_err();
    assert_eq!((refusal.status, refusal.correlation), (Status::UnknownFrameKind, 4));
}

#[test]
fn dispatch_refuses_a_hello_without_a_common_version() {
    let node = node(1);
    let mut conn = Conn::new(0, 1);
    let refusal = conn.admit(&node, &hello_frame(6, PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3), 0).unwrap_err();
    assert_eq!(refusal, Refusal { status: Status::UnsupportedVersion, detail: PROTOCOL_VERSION.into(), correlation: 6 });
    assert!(conn.out.is_empty(), "no Welcome");
}

/// A version-1 client gets version 1, and a version-2 tag on its
/// connection is refused `unsupported` in its slot (the rest of the frame is
/// answered); a version-2 client gets version 2 and a merged product page.
#[test]
fn dispatch_chooses_the_newest_common_version_and_gates_version_2_tags() {
    use orderd_protocol::limits::MIN_PROTOCOL_VERSION;
    use orderd_protocol::message::ListProducts;
    let mut node = node(2);
    let welcome_version = |conn: &Conn| {
        let header = match frame::check(&conn.out, &FrameLimits::WIRE_MAX) {
            FrameCheck::Complete(h) => h,
            other => panic!("{other:?}"),
        };
        codec::decode_welcome(frame::payload(&conn.out, &header), &header).unwrap().version
    };
    let list = Request::ListProducts(ListProducts { after: 0, limit: 10 });
    let (a, b) = (product_on(0, 2, 0), product_on(1, 2, 0));

    let mut old = Conn::new(0, 2);
    assert_eq!(old.admit(&node, &hello_frame(1, 1, 1), 0), Ok(Admitted::Welcomed));
    assert_eq!(welcome_version(&old), MIN_PROTOCOL_VERSION);
    let (replies, _) = old.frame(&mut node, &[upsert(a), list.clone(), upsert(b)], 5, &[]).unwrap();
    assert!(matches!(replies[0], Reply::Stock(_)) && matches!(replies[2], Reply::Stock(_)), "{replies:?}");
    assert_eq!(replies[1], Reply::rejected(Status::Unsupported, 0));

    let mut new = Conn::new(1, 2);
    assert_eq!(new.admit(&node, &hello_frame(1, 1, PROTOCOL_VERSION), 0), Ok(Admitted::Welcomed));
    assert_eq!(welcome_version(&new), PROTOCOL_VERSION);
    new.out.clear();
    let (replies, _) = new.frame(&mut node, std::slice::from_ref(&list), 6, &[]).unwrap();
    let Reply::Products(page) = &replies[0] else { panic!("{replies:?}") };
    let mut both = [a, b];
    both.sort_unstable();
    assert_eq!(page.products.iter().map(|p| p.product).collect::<Vec<_>>(), both, "both cores' products, by id");
    assert_eq!(page.more, 0);
    // A core that cannot answer: no page that looks complete without it.
    let (replies, _) = new.frame(&mut node, &[list], 7, &[0]).unwrap();
    assert_eq!(replies[0], Reply::rejected(Status::ShuttingDown, 0));
}

#[test]
fn dispatch_refuses_a_frame_past_the_in_flight_bound() {
    let node = node(1);
    let mut conn = Conn::new(0, 1);
    conn.handshake(&node);
    let frame = requests_frame(8, &[Request::Stats]);
    assert_eq!(conn.admit(&node, &frame, MAX_IN_FLIGHT as usize - 1), Ok(Admitted::Requests));
    let refusal = conn.admit(&node, &frame, MAX_IN_FLIGHT as usize).unwrap_err();
    assert_eq!(refusal, Refusal { status: Status::TooManyInFlight, detail: MAX_IN_FLIGHT.into(), correlation: 8 });
}

#[test]
fn dispatch_refuses_a_payload_that_does_not_validate() {
    let mut node = node(1);
    let mut conn = Conn::new(0, 1);
    conn.handshake(&node);
    // A well-formed header announcing 2 requests over 32 bytes of junk.
    let header = FrameHeader { version: PROTOCOL_VERSION, kind: FrameKind::Requests, flags: 0, correlation: 11, payload_len: 32, items: 2 };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(&[0xA5; 32]);
    let header = conn.feed(&bytes);
    let refusal = conn.frame_body(&mut node, &header, 0, &[]).unwrap_err();
    assert_eq!((refusal.status, refusal.correlation), (Status::BadFrame, 11));
}

#[test]
fn dispatch_applies_local_requests_in_frame_order_and_waits_only_for_changes() {
    let mut node = node(1);
    let mut conn = Conn::new(0, 1);
    conn.handshake(&node);
    let p = product_on(0, 1, 0);
    let (replies, wait) = conn.frame(&mut node, &[upsert(p), place(1, 10, p), place(2, 10, p)], 1_000, &[]).unwrap();
    assert!(matches!(replies[0], Reply::Stock(s) if s.available == 10));
    assert_eq!(order_of(&replies[1]).product, p);
    assert_eq!(replies[2], Reply::rejected(Status::LimitExceeded, 0), "the per-user limit is 1");
    assert_eq!(wait, Some(node.cores[0].log().next_sequence()), "replies wait for the frame's last record");
    // Reads and rejections wait for nothing.
    let (replies, wait) = conn.frame(&mut node, &[Request::GetStock(ProductRef { product: p }), place(3, 10, p)], 1_001, &[]).unwrap();
    assert!(matches!(replies[0], Reply::Stock(s) if s.reserved == 1));
    assert!(matches!(replies[1], Reply::Rejected(_)));
    assert_eq!(wait, None);
    // A retry of a placed order is an idempotent answer about a change: it waits.
    let (replies, wait) = conn.frame(&mut node, &[place(1, 10, p)], 1_002, &[]).unwrap();
    assert_eq!(order_of(&replies[0]).user, 10);
    assert!(wait.is_some());
}

#[test]
fn dispatch_forwards_other_cores_requests_one_message_per_core() {
    let mut node = node(3);
    let mut conn = Conn::new(0, 3);
    conn.handshake(&node);
    let (a, b, c) = (product_on(0, 3, 0), product_on(1, 3, 0), product_on(2, 3, 0));
    let b2 = product_on(1, 3, 1);
    let frame = [upsert(a), upsert(b), upsert(c), upsert(b2)];
    let header = conn.feed(&requests_frame(9, &frame));
    let requests = conn.dispatch.begin(&header, conn.rx.payload(&header), &mut node.cores[0], 5).unwrap();
    let outgoing: Vec<(usize, CoreMsg)> = conn.dispatch.outgoing().collect();
    assert_eq!(outgoing.len(), 2, "one Apply for core 1, one for core 2: {outgoing:?}");
    match &outgoing[0] {
        (1, CoreMsg::Apply { now_ms: 5, commands }) => {
            let products: Vec<u64> = commands.iter().map(|(_, c)| if let Command::Upsert(u) = c { u.product } else { 0 }).collect();
            assert_eq!(products, vec![b, b2], "in frame order");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&outgoing[1], (2, CoreMsg::Apply { commands, .. }) if commands.len() == 1));
    assert_eq!(node.cores[0].counters.forwarded, 3);
    for (to, msg) in outgoing {
        let (answered, wait) = answer(&mut node.cores[to], &msg).unwrap();
        assert!(wait.is_some(), "a forwarded change waits on its own core");
        conn.dispatch.arrived(to, answered);
    }
    conn.out.clear();
    conn.dispatch.finish(&header, requests, &mut node.cores[0], 42, 5, &mut conn.out).unwrap();
    let reply_header = match frame::check(&conn.out, &FrameLimits::WIRE_MAX) {
        FrameCheck::Complete(h) => h,
        other => panic!("{other:?}"),
    };
    let replies = codec::decode_replies(frame::payload(&conn.out, &reply_header), &reply_header).unwrap();
    let products: Vec<u64> = replies.iter().map(|r| if let Reply::Stock(s) = r { s.product } else { 0 }).collect();
    assert_eq!(products, vec![a, b, c, b2], "each reply in its request's slot");
    // The other cores' shards hold their products; core 0 applied only its own.
    assert!(
        node.cores[1].apply(shard_of_product(b, SHARDS), &Command::GetStock { product: b }, 6).0
            != Reply::rejected(Status::NoSuchProduct, 0)
    );
}

#[test]
fn dispatch_answers_shutting_down_for_a_core_that_cannot_be_reached() {
    let mut node = node(2);
    let mut conn = Conn::new(0, 2);
    conn.handshake(&node);
    let (a, b) = (product_on(0, 2, 0), product_on(1, 2, 0));
    let (replies, _) = conn.frame(&mut node, &[upsert(a), upsert(b), Request::Stats], 1, &[1]).unwrap();
    assert!(matches!(replies[0], Reply::Stock(_)));
    assert_eq!(replies[1], Reply::rejected(Status::ShuttingDown, 0));
    match &replies[2] {
        Reply::Stats(stats) => assert_eq!(stats.cores[1].requests, 0, "a lost core's part is empty"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dispatch_merges_every_cores_stats_and_aggregates() {
    let mut node = node(2);
    let mut conn = Conn::new(1, 2);
    conn.handshake(&node);
    let (a, b) = (product_on(0, 2, 0), product_on(1, 2, 0));
    conn.frame(&mut node, &[upsert(a), upsert(b), place(1, 1, a), place(2, 2, b), place(3, 3, b)], 10_000, &[]).unwrap();
    let frame = [Request::Stats, Request::Aggregates(AggregatesQuery { top: 1 }), Request::Aggregates(AggregatesQuery { top: 5 })];
    let (replies, wait) = conn.frame(&mut node, &frame, 10_500, &[]).unwrap();
    assert_eq!(wait, None);
    match &replies[0] {
        Reply::Stats(stats) => {
            assert_eq!(stats.server_id, 42);
            assert_eq!(stats.cores.iter().map(|c| c.orders_placed).collect::<Vec<_>>(), vec![1, 2]);
        }
        other => panic!("{other:?}"),
    }
    match (&replies[1], &replies[2]) {
        (Reply::Aggregates(one), Reply::Aggregates(five)) => {
            assert_eq!(one.top.iter().map(|p| p.product).collect::<Vec<_>>(), vec![b], "b sold most");
            assert_eq!(five.top.len(), 2, "two products sold, each on its own core");
            assert_eq!(five.products, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dispatch_refuses_an_order_id_of_a_shard_the_server_does_not_have() {
    let mut node = node(1);
    let mut conn = Conn::new(0, 1);
    conn.handshake(&node);
    let unknown = order_id(SHARDS, 1).unwrap();
    let known = order_id(0, 12345).unwrap();
    let frame = [
        Request::PayOrder(OrderRef { order_id: unknown }),
        Request::GetOrder(OrderRef { order_id: known }),
        Request::GetOrderByKey(KeyRef { key: IdempotencyKey::timed(0, 1), product: 3 }),
    ];
    let (replies, wait) = conn.frame(&mut node, &frame, 1, &[]).unwrap();
    assert_eq!(replies, vec![Reply::rejected(Status::NoSuchOrder, 0); 3]);
    assert_eq!(wait, None);
}

#[test]
fn dispatch_lists_subscribe_requests_for_the_connection() {
    let mut node = node(1);
    let mut conn = Conn::new(0, 1);
    conn.handshake(&node);
    let sub = Request::Subscribe(Subscribe { start: StreamStart::Now, product: 9, kinds: 0 });
    let header = conn.feed(&requests_frame(2, &[Request::Stats, sub.clone(), sub]));
    let requests = conn.dispatch.begin(&header, conn.rx.payload(&header), &mut node.cores[0], 1).unwrap();
    let slots: Vec<(u32, u64)> =
        (0..).map_while(|i| conn.dispatch.subscribe(requests, i)).map(|(slot, s)| (slot, s.product.to_native())).collect();
    assert_eq!(slots, vec![(1, 9), (2, 9)]);
    conn.dispatch.set_reply(2, Reply::rejected(Status::TooManySubscriptions, 0));
    conn.dispatch.finish(&header, requests, &mut node.cores[0], 42, 1, &mut conn.out).unwrap();
}

#[test]
fn route_follows_the_shard_map() {
    let count = SHARDS;
    let shard = |p| Route::Shard(shard_of_product(p, count));
    let archive = |r: Request| {
        let bytes = requests_frame(1, &[r]);
        let header = match frame::check(&bytes, &FrameLimits::WIRE_MAX) {
            FrameCheck::Complete(h) => h,
            other => panic!("{other:?}"),
        };
        let mut rx = FrameBuffer::new(4096, FrameLimits::WIRE_MAX);
        rx.spare(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
        rx.commit(bytes.len());
        let requests = codec::access_requests(rx.payload(&header), &header).unwrap();
        route(&requests[0], count)
    };
    assert_eq!(archive(place(1, 1, 77)), shard(77));
    assert_eq!(archive(upsert(78)), shard(78));
    assert_eq!(archive(Request::GetStock(ProductRef { product: 79 })), shard(79));
    assert_eq!(archive(Request::GetOrder(OrderRef { order_id: order_id(3, 5).unwrap() })), Route::Shard(3));
    assert_eq!(archive(Request::CancelOrder(OrderRef { order_id: order_id(count + 1, 5).unwrap() })), Route::Refuse(Status::NoSuchOrder));
    assert_eq!(archive(Request::Stats), Route::Stats);
    assert_eq!(archive(Request::Aggregates(AggregatesQuery { top: 3 })), Route::Aggregates(3));
    assert_eq!(archive(Request::Subscribe(Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 })), Route::Subscribe);
}

#[test]
fn answer_leaves_metrics_to_the_runtime() {
    let mut node = node(1);
    assert!(answer(&mut node.cores[0], &CoreMsg::Metrics).is_none());
    assert!(matches!(answer(&mut node.cores[0], &CoreMsg::Stats), Some((CoreAnswer::Stats(_), None))));
}
