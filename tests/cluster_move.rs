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

/// The nodes' addresses, as they are now (a restarted node has new ports).
type Seeds = Arc<Mutex<Vec<std::net::SocketAddr>>>;

/// Places orders (paying every third, cancelling every fifth) through the
/// SDK until `stop`; failures are expected while nodes die and are not
/// recorded as acknowledged.
fn load(seeds: Seeds, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let config = ClientConfig { request_timeout: Duration::from_secs(2), retries: 2, ..ClientConfig::default() };
        let mut client: Option<Client> = None;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Some(c) = client.as_mut() else {
                // Any node will do (one may be down, or back on new ports).
                let seed = {
                    let seeds = seeds.lock().unwrap();
                    seeds[i as usize % seeds.len()]
                };
                i += 1;
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
    let mut per_node = vec![0u64; nodes.len()];
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
                per_node[owner] += 1;
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
    // A retry of an acknowledged key gets its original order, wherever the
    // shard went since.
    for (id, (placed, _)) in ledger.acked.iter().take(100) {
        assert_eq!(client.place_order(*placed).unwrap().id, *id, "a retry of order {id}'s key");
    }
    // Nothing is held twice: each node keeps the orders of the shards it
    // owns and none of the copies it handed away (their release came, or
    // the node dropped them by itself), within a few of its looks at the map.
    for (i, (id, n)) in nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let storage = n.client().storage_stats().unwrap();
            let kept: u64 = storage.cores.iter().map(|c| c.orders_in_memory + c.orders_archived).sum();
            if kept == per_node[i] {
                break;
            }
            assert!(Instant::now() < deadline, "node {id} keeps {kept} orders; it owns {}", per_node[i]);
            std::thread::sleep(Duration::from_millis(100));
        }
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
    let seeds: Seeds = Arc::new(Mutex::new(vec![a.seed, b.seed]));
    let loader = load(seeds, Arc::clone(&ledger), Arc::clone(&stop));
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

    // `orderd admin stats` and `aggregates`, given one node, cover every
    // node: the orders placed add up to those found, each counted once
    // although their shards moved.
    let admin = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderd"))
            .args(["admin", "--json", "--server", &b.seed.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let stats = admin(&["stats"]);
    let placed_total: u64 = ["a", "b"].iter().map(|n| stats["nodes"][n]["totals"]["orders_placed"].as_u64().unwrap()).sum();
    let found = {
        let mut client = a.client();
        ledger.sent.iter().filter(|(p, k)| client.get_order_by_key(*p, *k).is_ok()).count() as u64
    };
    assert_eq!(placed_total, found, "{stats:#}");
    let aggregates = admin(&["aggregates"]);
    assert_eq!(aggregates["orders_placed"].as_u64(), Some(found), "{aggregates:#}");
    // `orderd top` polls every node: both cores, the orders merged.
    let polled = orderd::top::poll::poll_once(&a.seed.to_string(), 10).unwrap();
    assert_eq!((polled.cores, polled.aggregates.orders_placed), (2, found));
    // The catalogue: every product once, from the node that owns it.
    let catalogue = admin(&["export-catalogue"]);
    let id = |v: &serde_json::Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).expect("a product id");
    let listed: Vec<u64> = catalogue.as_array().expect("a JSON list").iter().map(|p| id(&p["product"])).collect();
    assert_eq!(listed, (1..=PRODUCTS).collect::<Vec<_>>(), "{catalogue:#}");

    // `orderd tail`, given one node, streams every node: each acknowledged
    // order's placement exactly once, though its shard moved (twice).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["tail", "--server", &a.seed.to_string(), "--from", "beginning", "--json", "--idle-exit", "2", "--kind", "placed"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut placed: HashMap<u64, u32> = HashMap::new();
    let mut position = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(p) = v["position"].as_str() {
            position = Some(p.to_owned());
            continue;
        }
        assert!(v["node"] == "a" || v["node"] == "b", "{line}");
        *placed.entry(v["order_id"].as_str().unwrap().parse().unwrap()).or_insert(0) += 1;
    }
    for id in ledger.acked.keys() {
        assert_eq!(placed.get(id), Some(&1), "order {id}'s placement streamed {:?} times", placed.get(id));
    }
    assert!(placed.values().all(|&n| n == 1), "a placement streamed twice");
    // The position names every node and resumes after the last event.
    let position = position.expect("a position line");
    assert!(position.starts_with("a=") && position.contains(";b="), "{position}");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["tail", "--server", &b.seed.to_string(), "--from", &position, "--json", "--idle-exit", "1", "--kind", "placed"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success() && text.lines().count() == 1 && text.contains("\"events\":0"), "{text}");

    // The moved shards' bundles stay until every kept checkpoint (the
    // newest two) starts after their install: two checkpoints later, none.
    for (n, dir) in [(&a, &dirs[0]), (&b, &dirs[1])] {
        let bundles = || std::fs::read_dir(dir.path().join("moves")).map_or(0, |d| d.filter(|e| e.is_ok()).count());
        assert!(bundles() > 0, "each node took shards in");
        let mut client = n.client();
        client.checkpoint().unwrap();
        client.checkpoint().unwrap();
        assert_eq!(bundles(), 0, "bundles left after two checkpoints");
    }
    // A checkpoint of the cluster is one per node.
    let taken = admin(&["checkpoint"]);
    assert!(taken["nodes"]["a"].is_object() && taken["nodes"]["b"].is_object(), "{taken:#}");
    // A restart replays from those checkpoints, without the bundles.
    drop((a, b));
    let a = node_in(&etcd, "move", "a", "0", SHARDS, dirs[0].path());
    let b = node_in(&etcd, "move", "b", "1", SHARDS, dirs[1].path());
    status_until(&etcd, "move", "both nodes back", |s| live(s, "a") == Some(true) && live(s, "b") == Some(true));
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

/// The first product of `shard`.
fn product_of(shard: u32) -> u64 {
    (1..=PRODUCTS).find(|&p| orderd_protocol::shard::shard_of_product(p, SHARDS) == shard).expect("every shard has a product")
}

#[test]
fn moves_killed_at_any_point_leave_one_owner_and_lose_nothing() {
    let Some(etcd) = Etcd::start() else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [a, b] = start_cluster(&etcd, "crash", &dirs);
    let seeds: Seeds = Arc::new(Mutex::new(vec![a.seed, b.seed]));
    let mut nodes = [a, b];
    let ids = ["a", "b"];
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(Arc::clone(&seeds), Arc::clone(&ledger), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    let (mut moved, mut failed) = (0, 0);
    // A fixed sequence of kill delays over the move's life (intent, freeze,
    // copy, install, switch, release), the old owner killed in even runs
    // and the new one in odd runs.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for run in 0..20u32 {
        let shard = run % SHARDS;
        let from = usize::from(owner(&etcd, "crash", shard) == "b");
        let to = 1 - from;
        let victim = if run % 2 == 0 { from } else { to };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(x % 90);
        let mover = std::process::Command::new(env!("CARGO_BIN_EXE_orderd"))
            .args(["cluster", "move-shard", &shard.to_string(), "--to", ids[to], "--etcd", &etcd.endpoint, "--cluster", "crash"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        nodes[victim].kill();
        let out = mover.wait_with_output().unwrap();
        // The surviving node serves its other shards throughout: orders for
        // them are still acknowledged while the victim is down.
        let survivor = ids[1 - victim];
        let theirs: Vec<u32> = (0..SHARDS).filter(|&s| s != shard && owner(&etcd, "crash", s) == survivor).collect();
        let acked = |l: &Ledger| theirs.iter().map(|s| l.acked_per_shard.get(s).copied().unwrap_or(0)).sum::<u64>();
        let before = acked(&ledger.lock().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !theirs.is_empty() && acked(&ledger.lock().unwrap()) <= before {
            assert!(Instant::now() < deadline, "run {run}: node {survivor} stopped serving shards {theirs:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            moved += 1;
        } else {
            failed += 1;
            assert!(said.contains("failed") || said.contains("map changed"), "run {run}: {said}");
        }
        // The victim comes back on its data directory.
        nodes[victim] = node_in(&etcd, "crash", ids[victim], &victim.to_string(), SHARDS, dirs[victim].path());
        seeds.lock().unwrap()[victim] = nodes[victim].seed;
        status_until(&etcd, "crash", "both nodes live", |s| live(s, "a") == Some(true) && live(s, "b") == Some(true));
        // No move is left under way (a dead command's intent goes with its lease).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Coordinator::connect(&etcd.endpoint, "crash").intents().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "run {run}: an intent outlived its move: {said}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // One owner, which serves the shard.
        let now = owner(&etcd, "crash", shard);
        assert!(now == ids[from] || now == ids[to], "run {run}: shard {shard} is on {now}");
        assert_eq!(now == ids[to], out.status.success(), "run {run}: the command's word and the map disagree: {said}");
        let mut client = Client::connect(nodes[1 - victim].seed, ClientConfig::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // One key, retried: the check counts its order once.
        let probe = PlaceOrder::with_new_key(u64::from(run) + 1_000_000, product_of(shard), 1, 500);
        ledger.lock().unwrap().sent.push((probe.product, probe.key));
        loop {
            match client.place_order(probe) {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "run {run}: shard {shard} is not served on {now}: {e} ({said})"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "run {run}: shard {shard} {} -> {}, {} killed after {delay:?}: {}",
            ids[from],
            ids[to],
            ids[victim],
            if out.status.success() { "moved" } else { "stayed" }
        );
    }
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    println!("{moved} moves done, {failed} abandoned");
    let ledger = ledger.lock().unwrap();
    assert!(ledger.acked.len() > 100, "the load placed {} orders", ledger.acked.len());
    check(&etcd, "crash", &[("a", &nodes[0]), ("b", &nodes[1])], &ledger);
}

#[test]
fn a_node_added_to_a_running_cluster_takes_its_share_by_rebalance() {
    let Some(etcd) = Etcd::start() else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [a, b] = start_cluster(&etcd, "grow", &dirs);
    let seeds: Seeds = Arc::new(Mutex::new(vec![a.seed, b.seed]));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(Arc::clone(&seeds), Arc::clone(&ledger), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    // Every shard is owned: a rebalance with two nodes has nothing to do.
    let (ok, out, err) = cluster(&etcd, "grow", &["rebalance"]);
    assert!(ok && out.contains("nothing to move"), "{out}{err}");
    let dir_c = tempfile::tempdir().unwrap();
    let c = node_in(&etcd, "grow", "c", "0", SHARDS, dir_c.path());
    status_until(&etcd, "grow", "node c live", |s| live(s, "c") == Some(true));
    let (ok, out, err) = cluster(&etcd, "grow", &["rebalance", "--dry-run"]);
    assert!(ok && out.contains("would move 1 shard(s)") && out.contains("-> c:0"), "{out}{err}");
    let (ok, out, err) = cluster(&etcd, "grow", &["rebalance"]);
    assert!(ok && out.contains("moved shard") && out.contains("to c:0"), "{out}{err}");
    let s = status(&etcd, "grow");
    let owned: Vec<u64> = s["nodes"].as_array().unwrap().iter().map(|n| n["shards_owned"].as_u64().unwrap()).collect();
    assert_eq!(owned.iter().sum::<u64>(), u64::from(SHARDS));
    assert!(owned.iter().all(|&n| n >= 1), "every node has shards: {s:#}");
    seeds.lock().unwrap().push(c.seed);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let ledger = ledger.lock().unwrap();
    check(&etcd, "grow", &[("a", &a), ("b", &b), ("c", &c)], &ledger);
}

#[test]
fn limits_keys_open_orders_and_their_deadlines_move_with_the_shard() {
    let Some(etcd) = Etcd::start() else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [a, b] = start_cluster(&etcd, "holds", &dirs);
    let mut client = a.client();
    // Two more products on one shard: one limited to 2 per user, one
    // whose orders must be paid within 1.5 s.
    let limited = 100;
    let shard = orderd_protocol::shard::shard_of_product(limited, SHARDS);
    let windowed = (101..).find(|&p| orderd_protocol::shard::shard_of_product(p, SHARDS) == shard).unwrap();
    client
        .upsert_product(UpsertProduct { product: limited, unit_price_cents: 500, stock: 100, payment_window_ms: 0, per_user_limit: 2 })
        .unwrap();
    client
        .upsert_product(UpsertProduct { product: windowed, unit_price_cents: 900, stock: 10, payment_window_ms: 1500, per_user_limit: 0 })
        .unwrap();
    let first = PlaceOrder::with_new_key(7, limited, 2, 500);
    let original = client.place_order(first).unwrap();
    let over = client.place_order(PlaceOrder::with_new_key(7, limited, 1, 500)).unwrap_err();
    assert_eq!(over.status(), Some(Status::LimitExceeded));
    let open: Vec<u64> = (1..=3).map(|user| client.place_order(PlaceOrder::with_new_key(user, windowed, 1, 900)).unwrap().id).collect();

    let from = owner(&etcd, "holds", shard);
    let to = if from == "a" { "b" } else { "a" };
    let (ok, out, err) = cluster(&etcd, "holds", &["move-shard", &shard.to_string(), "--to", to]);
    assert!(ok, "{out}{err}");

    // On the new owner: the user's holding (the limit still refuses), the
    // key (a retry gets the original order), the open orders (one is paid)...
    let over = client.place_order(PlaceOrder::with_new_key(7, limited, 1, 500)).unwrap_err();
    assert_eq!(over.status(), Some(Status::LimitExceeded), "the holding moved");
    assert_eq!(client.place_order(first).unwrap().id, original.id, "the key moved");
    assert_eq!(client.pay_order(open[0]).unwrap().state, OrderState::Paid);
    // ...and the deadlines of the others, which the new owner expires.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get_order(open[2]).unwrap().state != OrderState::Expired {
        assert!(Instant::now() < deadline, "the moved open orders never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(client.get_order(open[1]).unwrap().state, OrderState::Expired);
    let stock = client.stock(windowed).unwrap();
    assert_eq!((stock.available, stock.reserved, stock.paid), (9, 0, 1), "expired units went back to stock");
    // The expiries are the new owner's events, streamed once.
    let tail = std::process::Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["tail", "--server", &a.seed.to_string(), "--from", "beginning", "--json", "--idle-exit", "1", "--kind", "expired"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tail.stdout);
    let expired: Vec<&str> = text.lines().filter(|l| l.contains("\"kind\":\"expired\"")).collect();
    assert_eq!(expired.len(), 2, "{text}");
    assert!(expired.iter().all(|l| l.contains(&format!("\"node\":\"{to}\""))), "{text}");
    drop(b);
}
