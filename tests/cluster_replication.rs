//! Replication (`cluster init --replicas 2`) against a real etcd on
//! loopback: every state change acknowledged by a leader is durable on its
//! follower, a follower takes over when its leader's node dies (its lease
//! lapses), and no acknowledged order is lost; a shard left with fewer
//! copies than the cluster keeps refuses state changes (`replica_unavailable`)
//! rather than acknowledge them with fewer; a follower refuses events from a
//! node that does not lead the shard by its map (fencing) and events that do
//! not follow its copy.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::etcd::{cluster, live, node, product, status, status_until, Etcd};
use common::Server;
use orderd_protocol::client::{new_key, ClientConfig, Connection};
use orderd_protocol::message::{OrderState, Replicate};
use orderd_protocol::shard::shard_of_product;
use orderd_protocol::{PlaceOrder, Reply, Request, Status};

fn owner_node(s: &serde_json::Value, shard: u32) -> String {
    s["owners"][shard as usize].as_str().unwrap_or_default().split(':').next().unwrap_or_default().to_owned()
}

fn followers(s: &serde_json::Value, shard: u32) -> Vec<String> {
    s["followers"][shard as usize].as_array().map(|f| f.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The reply of node `server` (core 0) to `request`, asked on a raw
/// connection (no redirect or retry).
fn raw_call(server: &Server, request: Request) -> Reply {
    let mut raw = Connection::connect(server.cores[0], &ClientConfig::default()).unwrap();
    raw.call(&[request]).unwrap().pop().unwrap()
}

fn place(p: u64) -> PlaceOrder {
    PlaceOrder { key: new_key(), user: p * 7 + 1, product: p, unit_price_cents: 500, qty: 1 }
}

#[test]
fn acknowledged_orders_survive_the_loss_of_their_leaders_node() {
    let Some(etcd) = Etcd::start() else { return };
    let (ok, out, err) = cluster(&etcd, "ha", &["init", "--shards", "8", "--replicas", "2"]);
    assert!(ok && out.contains("2 copies of each"), "{out}{err}");
    let mut nodes: BTreeMap<&str, Server> =
        [("a", node(&etcd, "ha", "a", "0")), ("b", node(&etcd, "ha", "b", "1")), ("c", node(&etcd, "ha", "c", "0"))].into_iter().collect();
    status_until(&etcd, "ha", "three nodes live", |s| ["a", "b", "c"].iter().all(|n| live(s, n) == Some(true)));
    let (ok, out, err) = cluster(&etcd, "ha", &["rebalance"]);
    assert!(ok && out.contains("placed 8 shard(s)"), "{out}{err}");
    let s = status(&etcd, "ha");
    assert_eq!((s["replicas"].as_u64(), s["under_replicated"].as_u64()), (Some(2), Some(0)), "{s:#}");
    for shard in 0..8 {
        let f = followers(&s, shard);
        assert_eq!(f.len(), 1, "shard {shard}: one follower: {s:#}");
        assert!(!f[0].starts_with(&format!("{}:", owner_node(&s, shard))), "shard {shard}: a follower on another node: {s:#}");
    }
    for server in nodes.values() {
        common::etcd::follows(server, 2);
    }

    // A catalogue and orders through the SDK; every acknowledged order is
    // kept with the state it was acknowledged in.
    let mut client = nodes["a"].client();
    for p in 1..=16 {
        client.upsert_product(product(p)).unwrap();
    }
    let mut acked = Vec::new();
    for i in 0..240u64 {
        let p = 1 + i % 16;
        let order = client.place_order(place(p)).unwrap();
        let order = if i % 3 == 0 { client.pay_order(order.id).unwrap() } else { order };
        acked.push((order.id, p, order.state));
    }

    // The leader of product 1's shard dies (kill -9): its follower takes
    // over once the node's lease lapses (2 s).
    let shard = shard_of_product(1, 8);
    let victim = owner_node(&s, shard);
    let heir = followers(&s, shard)[0].split(':').next().unwrap().to_owned();
    let led: Vec<u32> = (0..8).filter(|&sh| owner_node(&s, sh) == victim).collect();
    let killed_at = Instant::now();
    nodes.get_mut(victim.as_str()).unwrap().kill();
    let after = status_until(&etcd, "ha", "the dead leader's shards taken over", |s| (0..8).all(|sh| owner_node(s, sh) != victim));
    println!("failover of {} shard(s) of node {victim}: {} ms", led.len(), killed_at.elapsed().as_millis());
    for &sh in &led {
        let new = owner_node(&after, sh);
        assert!(followers(&s, sh).iter().any(|f| f.starts_with(&format!("{new}:"))), "shard {sh} went to its follower: {after:#}");
        assert!(after["epochs"][sh as usize].as_u64() > s["epochs"][sh as usize].as_u64(), "a new epoch: {after:#}");
    }
    assert_eq!(owner_node(&after, shard), heir);

    // Every acknowledged order is there, in the state acknowledged, and no
    // product sold more than its stock.
    let survivor = nodes.keys().copied().find(|&n| n != victim).unwrap();
    let mut client = nodes[survivor].client();
    let deadline = Instant::now() + Duration::from_secs(20);
    for &(id, p, state) in &acked {
        let order = loop {
            match client.get_order(id) {
                Ok(o) => break o,
                Err(e) if Instant::now() < deadline => {
                    println!("order {id}: {e}; again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("acknowledged order {id} (product {p}) lost after the failover: {e}"),
            }
        };
        assert_eq!((order.product, order.state), (p, state), "order {id}");
    }
    for p in 1..=16 {
        let stock = client.stock(p).unwrap();
        let sold = acked.iter().filter(|&&(_, q, _)| q == p).count() as u64;
        assert_eq!((stock.reserved + stock.paid, stock.available + stock.reserved + stock.paid), (sold, 100), "product {p}: {stock:?}");
    }

    // Product 1's shard has one copy now: state changes are refused, not
    // acknowledged with fewer copies than promised, until its new leader
    // has made a copy on the other live node (re-replication); reads are
    // served meanwhile.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match raw_call(&nodes[heir.as_str()], Request::PlaceOrder(place(1))) {
            Reply::Rejected(r) if Status::from_code(r.code) == Some(Status::ReplicaUnavailable) => refused += 1,
            Reply::Order(o) => {
                acked.push((o.id, 1, o.state));
                break;
            }
            // The node's lease renewal ran late (a loaded machine): it
            // serves nothing for a moment.
            Reply::Rejected(r) if Status::from_code(r.code) == Some(Status::Moved) => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "no new copy of shard {shard} within 30 s: {:#}", status(&etcd, "ha"));
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("writes to shard {shard} refused {refused} time(s) until its new copy was made");
    // Every shard has two live copies again: the dead node's copies were
    // replaced by new ones on the live nodes.
    let healed = status_until(&etcd, "ha", "every shard with two live copies again", |s| {
        s["under_replicated"] == 0 && (0..8).all(|sh| followers(s, sh).iter().all(|f| !f.starts_with(&format!("{victim}:"))))
    });
    for sh in 0..8 {
        assert_ne!(owner_node(&healed, sh), victim, "{healed:#}");
    }
    assert!(matches!(
        raw_call(&nodes[heir.as_str()], Request::GetStock(orderd_protocol::message::ProductRef { product: 1 })),
        Reply::Stock(_)
    ));

    // More orders, then the heir dies too: the copies made since hold them.
    let mut client = nodes[survivor].client();
    for i in 0..120u64 {
        let p = 1 + i % 16;
        let order = client.place_order(place(p)).unwrap();
        acked.push((order.id, p, order.state));
    }
    let before = status(&etcd, "ha");
    nodes.get_mut(heir.as_str()).unwrap().kill();
    let last = nodes.keys().copied().find(|&n| n != victim && n != heir).unwrap();
    status_until(&etcd, "ha", "the second dead leader's shards taken over", |s| (0..8).all(|sh| owner_node(s, sh) == last));
    let mut client = nodes[last].client();
    for &(id, p, state) in &acked {
        let order =
            client.get_order(id).unwrap_or_else(|e| panic!("acknowledged order {id} (product {p}) lost after the second failover: {e}"));
        assert_eq!((order.product, order.state), (p, state), "order {id}");
    }
    for p in 1..=16 {
        let stock = client.stock(p).unwrap();
        let sold = acked.iter().filter(|&&(_, q, _)| q == p).count() as u64;
        assert_eq!((stock.reserved + stock.paid, stock.available + stock.reserved + stock.paid), (sold, 100), "product {p}: {stock:?}");
    }
    let _ = before;
}

#[test]
fn a_follower_refuses_events_from_a_node_that_does_not_lead_the_shard_and_events_that_skip() {
    let Some(etcd) = Etcd::start() else { return };
    let (ok, out, err) = cluster(&etcd, "fence", &["init", "--shards", "2", "--replicas", "2"]);
    assert!(ok, "{out}{err}");
    let start = |id: &str, cpu: &str| {
        Server::start(cpu, &["--shards", "2", "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", "fence", "--node", id])
    };
    let nodes: BTreeMap<&str, Server> = [("a", start("a", "0")), ("b", start("b", "1"))].into_iter().collect();
    status_until(&etcd, "fence", "two nodes live", |s| live(s, "a") == Some(true) && live(s, "b") == Some(true));
    let (ok, out, err) = cluster(&etcd, "fence", &["rebalance"]);
    assert!(ok, "{out}{err}");
    let s = status(&etcd, "fence");
    for server in nodes.values() {
        common::etcd::follows(server, 2);
    }
    let leader = owner_node(&s, 0);
    let follower = if leader == "a" { "b" } else { "a" };
    // One real change, so the follower's copy of shard 0 is at position 1.
    let p = (1..100).find(|&p| shard_of_product(p, 2) == 0).unwrap();
    let mut client = nodes[leader.as_str()].client();
    client.upsert_product(product(p)).unwrap();

    // An event for shard 0 at the next position, encoded as a leader would.
    let events = {
        let mut out = Vec::new();
        let event = orderd::engine::Event::StockAdjusted { time_ms: u64::MAX / 2, product: p, delta: 1 };
        orderd::runtime::replication::batch::push(&mut out, 0, 2, &event);
        out
    };
    let batch = |from: &str, events: Vec<u8>| {
        Request::Replicate(Replicate { map_version: 2, through: 1, leader: from.to_owned(), core: 0, events })
    };
    // From a node that does not lead shard 0 by the follower's map: fenced.
    match raw_call(&nodes[follower], batch(follower, events.clone())) {
        Reply::Rejected(r) => assert_eq!(Status::from_code(r.code), Some(Status::Moved), "{r:?}"),
        other => panic!("{other:?}"),
    }
    // From the leader but skipping a position: a gap, the copy untouched.
    let skipping = {
        let mut out = Vec::new();
        let event = orderd::engine::Event::StockAdjusted { time_ms: u64::MAX / 2, product: p, delta: 1 };
        orderd::runtime::replication::batch::push(&mut out, 0, 5, &event);
        out
    };
    match raw_call(&nodes[follower], batch(&leader, skipping)) {
        Reply::Rejected(r) => {
            assert_eq!(Status::from_code(r.code), Some(Status::ReplicaGap), "{r:?}");
            assert_eq!(r.detail & 0xffff, 1, "the copy is at position 1: {r:?}");
        }
        other => panic!("{other:?}"),
    }
    // Garbage: refused as invalid, nothing applied.
    match raw_call(&nodes[follower], batch(&leader, vec![1, 2, 3])) {
        Reply::Rejected(r) => assert_eq!(Status::from_code(r.code), Some(Status::InvalidRequest), "{r:?}"),
        other => panic!("{other:?}"),
    }
    // The leader's own changes still flow and are acknowledged.
    let stock = client.adjust_stock(p, 5).unwrap();
    assert_eq!(stock.supplied, 105);
    let order = client.place_order(place(p)).unwrap();
    assert_eq!(order.state, OrderState::Placed);
}

#[test]
fn nodes_of_two_cores_replicate_each_shard_to_the_followers_core_for_it() {
    let Some(etcd) = Etcd::start() else { return };
    let (ok, out, err) = cluster(&etcd, "wide", &["init", "--shards", "8", "--replicas", "2"]);
    assert!(ok, "{out}{err}");
    let mut nodes: BTreeMap<&str, Server> =
        [("a", node(&etcd, "wide", "a", "0,1")), ("b", node(&etcd, "wide", "b", "0,1"))].into_iter().collect();
    status_until(&etcd, "wide", "two nodes live", |s| live(s, "a") == Some(true) && live(s, "b") == Some(true));
    let (ok, out, err) = cluster(&etcd, "wide", &["rebalance"]);
    assert!(ok, "{out}{err}");
    let s = status(&etcd, "wide");
    for shard in 0..8u32 {
        let f = followers(&s, shard);
        assert_eq!(f.len(), 1, "{s:#}");
        assert!(f[0].ends_with(&format!(":{}", shard % 2)), "shard {shard}'s copy on the follower's core for it: {s:#}");
    }
    for server in nodes.values() {
        common::etcd::follows(server, 2);
    }
    let mut client = nodes["a"].client();
    for p in 1..=16 {
        client.upsert_product(product(p)).unwrap();
    }
    let acked: Vec<(u64, u64)> = (0..160u64).map(|i| (client.place_order(place(1 + i % 16)).unwrap().id, 1 + i % 16)).collect();
    // Node a dies: b holds every acknowledged order of a's shards, on both
    // of its cores, and serves them (changes are refused: one copy left).
    nodes.get_mut("a").unwrap().kill();
    status_until(&etcd, "wide", "b leads every shard", |s| (0..8).all(|sh| owner_node(s, sh) == "b"));
    let mut client = nodes["b"].client();
    for &(id, p) in &acked {
        let deadline = Instant::now() + Duration::from_secs(10);
        let order = loop {
            match client.get_order(id) {
                Ok(o) => break o,
                Err(e) => {
                    assert!(Instant::now() < deadline, "acknowledged order {id} lost: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(order.product, p);
    }
    let mut raw = Connection::connect(nodes["b"].cores[1], &ClientConfig::default()).unwrap();
    let p = (1..=16).find(|&p| shard_of_product(p, 8) % 2 == 1).unwrap();
    match raw.call(&[Request::PlaceOrder(place(p))]).unwrap().pop().unwrap() {
        Reply::Rejected(r) => assert!(matches!(Status::from_code(r.code), Some(Status::ReplicaUnavailable | Status::Moved)), "{r:?}"),
        other => panic!("a change acknowledged with one copy of two: {other:?}"),
    }
}
