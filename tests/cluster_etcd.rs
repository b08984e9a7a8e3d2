//! The cluster's map in a real etcd (Debian's `etcd-server`, 3.4 here),
//! started by the test on loopback: `orderd cluster init`, nodes joining
//! with `serve --etcd`, liveness through their leases, `cluster rebalance`
//! and `status`, a node that does not fit refused, and a node that keeps
//! serving while etcd is down and registers again when it is back.
//!
//! Without an `etcd` binary the tests skip, except under CI (`CI` set),
//! where they fail: `.ci/run` installs it.

mod common;

use std::time::{Duration, Instant};

use common::etcd::{cluster, follows, live, node, order_on, product, status, status_until, Etcd};
use common::Server;
use orderd::cluster::{Coordinator, Owner};
use orderd_protocol::client::{AsyncClient, Client, ClientConfig, ClientError, Connection};
use orderd_protocol::message::Rejection;
use orderd_protocol::shard::{shard_of_order, shard_of_product};
use orderd_protocol::{PlaceOrder, Reply, Request, Status};

/// The detail of a per-request refusal.
fn detail(e: &ClientError) -> Option<u64> {
    match e {
        ClientError::Rejected(r) => Some(r.detail),
        _ => None,
    }
}

#[test]
fn nodes_join_under_leases_rebalance_places_every_shard_and_a_killed_node_goes_down() {
    let Some(etcd) = Etcd::start() else { return };
    let (ok, out, err) = cluster(&etcd, "sale", &["init", "--shards", "8"]);
    assert!(ok && out.contains("created"), "{out}{err}");
    // A second init changes nothing and says so.
    let (ok, _, err) = cluster(&etcd, "sale", &["init", "--shards", "16"]);
    assert!(!ok && err.contains("already exists with 8 shards"), "{err}");
    // A node whose shard count differs is refused before it replays.
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = common::start_fails(
        dir.path(),
        "0",
        &["--shards", "16", "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", "sale", "--node", "x"],
    );
    assert!(!code.success() && err.contains("cluster `sale` has 8 shards, this node 16"), "{err}");
    // So is one of a cluster that does not exist.
    let (code, err) = common::start_fails(
        dir.path(),
        "0",
        &["--shards", "8", "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", "nope", "--node", "x"],
    );
    assert!(!code.success() && err.contains("`orderd cluster init"), "{err}");

    let a = node(&etcd, "sale", "a", "0");
    let mut b = node(&etcd, "sale", "b", "1");
    let s = status_until(&etcd, "sale", "both nodes live", |s| live(s, "a") == Some(true) && live(s, "b") == Some(true));
    assert_eq!(s["unowned"], 8, "{s:#}");
    let a_addr = a.cores[0].to_string();
    assert!(s["nodes"][0]["cores"].as_array().unwrap().iter().any(|c| c == a_addr.as_str()), "{s:#}");
    // No shard has an owner yet: a node serves none of them.
    let mut client = a.client();
    let refused = client.upsert_product(product(1)).unwrap_err();
    assert_eq!((refused.status(), detail(&refused)), (Some(Status::Moved), Some(1)), "{refused}");

    let (ok, out, err) = cluster(&etcd, "sale", &["rebalance"]);
    assert!(ok && out.contains("placed 8 shard(s); map version 2"), "{out}{err}");
    let s = status(&etcd, "sale");
    assert_eq!((s["version"].as_u64(), s["unowned"].as_u64()), (Some(2), Some(0)), "{s:#}");
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["shards_owned"], 4, "an even spread: {s:#}");
    }
    // Each node serves exactly the shards the map gives it (once it has
    // followed the map: within a second), and answers `moved` with the
    // map version for the others (asked on a raw connection: the SDK
    // would follow the `moved` to the owner).
    let owners: Vec<String> = s["owners"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_owned()).collect();
    let mut raw = Connection::connect(a.cores[0], &ClientConfig::default()).unwrap();
    for p in 1..=24u64 {
        let mine = owners[shard_of_product(p, 8) as usize].starts_with("a:");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match raw.call(&[Request::UpsertProduct(product(p))]).unwrap().pop() {
                Some(Reply::Stock(_)) if mine => break,
                Some(Reply::Rejected(r)) if !mine && r == Rejection::new(Status::Moved, 2) => break,
                // Not yet following the new map (version 1 still).
                Some(Reply::Rejected(r)) if r == Rejection::new(Status::Moved, 1) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => panic!("product {p} (node a's: {mine}): {other:?}"),
            }
        }
    }
    // Any node hands a client the map it follows: the nodes, their cores'
    // addresses, each shard's owner (what the SDK will route by).
    let info = client.cluster_map().unwrap();
    assert_eq!(info.version, 2);
    assert_eq!(info.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(info.nodes[0].cores, std::slice::from_ref(&a_addr));
    for (shard, owner) in owners.iter().enumerate() {
        let node = &info.nodes[info.owners[shard] as usize].node;
        assert_eq!(format!("{node}:{}", info.owner_cores[shard]), *owner, "shard {shard}");
    }
    // Nothing left to place: the map is not written again.
    let (ok, out, _) = cluster(&etcd, "sale", &["rebalance"]);
    assert!(ok && out.contains("nothing placed (map version 2)"), "{out}");

    // kill -9: the node's lease runs out and it shows as down, its shards
    // still its own (their state is on its disk).
    b.kill();
    let s = status_until(&etcd, "sale", "node b down", |s| live(s, "b") == Some(false));
    assert_eq!(live(&s, "a"), Some(true));
    assert_eq!(s["nodes"][1]["shards_owned"], 4, "{s:#}");
    assert_eq!(s["version"], 2, "{s:#}");
}

#[test]
fn a_node_serves_on_while_etcd_is_down_and_registers_again_when_it_is_back() {
    let Some(mut etcd) = Etcd::start() else { return };
    assert!(cluster(&etcd, "outage", &["init", "--shards", "8"]).0);
    let server = node(&etcd, "outage", "a", "0");
    status_until(&etcd, "outage", "node a live", |s| live(s, "a") == Some(true));
    assert!(cluster(&etcd, "outage", &["rebalance"]).0);
    let mut client = server.client();
    // Once the node follows the map (version 2), it serves every shard.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = client.upsert_product(product(1)) {
        assert!(e.status() == Some(Status::Moved) && Instant::now() < deadline, "{e}");
        std::thread::sleep(Duration::from_millis(50));
    }

    etcd.stop();
    // Map changes are refused with a clear message...
    let (ok, _, err) = cluster(&etcd, "outage", &["status"]);
    assert!(!ok && err.contains(&format!("etcd at http://{}", etcd.endpoint)) && err.contains("is etcd running there?"), "{err}");
    // ...and the node keeps taking orders (the map it holds is still right).
    for user in 1..=5 {
        client.place_order(PlaceOrder::with_new_key(user, 1, 1, 500)).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    client.place_order(PlaceOrder::with_new_key(6, 1, 1, 500)).unwrap();
    assert_eq!(client.stock(1).unwrap().reserved, 6);

    etcd.restart();
    status_until(&etcd, "outage", "node a live again", |s| live(s, "a") == Some(true));
}

/// Gives `shard` (which must hold nothing yet: no state moves here) to
/// `node` in etcd, as a finished move would; returns the new version.
fn give_empty_shard(etcd: &Etcd, cluster: &str, shard: u32, node: &str) -> u64 {
    let coordinator = Coordinator::connect(&etcd.endpoint, cluster);
    let read = coordinator.map().unwrap();
    let mut map = read.map.clone();
    map.owners[shard as usize] = Some(Owner { node: node.to_owned(), core: 0 });
    map.version += 1;
    coordinator.swap_map(&read, &map).unwrap();
    map.version
}

#[test]
fn the_sdk_routes_to_every_nodes_shards_and_follows_a_changed_map() {
    let Some(etcd) = Etcd::start() else { return };
    assert!(cluster(&etcd, "route", &["init", "--shards", "8"]).0);
    let mut nodes: Vec<Server> = ["a", "b", "c"].iter().enumerate().map(|(i, id)| node(&etcd, "route", id, &(i % 2).to_string())).collect();
    status_until(&etcd, "route", "three nodes live", |s| ["a", "b", "c"].iter().all(|id| live(s, id) == Some(true)));
    let (ok, out, err) = cluster(&etcd, "route", &["rebalance"]);
    assert!(ok && out.contains("placed 8 shard(s); map version 2"), "{out}{err}");
    for n in &nodes {
        follows(n, 2);
    }
    let owner_of = |shard: u32| -> usize {
        let s = status(&etcd, "route");
        let owner = s["owners"][shard as usize].as_str().unwrap().to_owned();
        ["a", "b", "c"].iter().position(|id| owner.starts_with(&format!("{id}:"))).unwrap()
    };

    // The SDK, given one node, reaches every node's shards: an order lands
    // on (and only on) its shard's owner.
    let spare = 1000u64;
    let spare_shard = shard_of_product(spare, 8);
    let products: Vec<u64> = (1..=40).filter(|&p| shard_of_product(p, 8) != spare_shard).collect();
    let mut client = nodes[1].client();
    assert_eq!(client.routes().cluster_version(), Some(2));
    assert_eq!(client.routes().len(), 3, "one endpoint per node's core");
    for &p in &products {
        client.upsert_product(product(p)).unwrap();
    }
    let mut placed = Vec::new();
    for (user, &p) in products.iter().enumerate() {
        let order = PlaceOrder::with_new_key(user as u64 + 1, p, 1, 500);
        let got = client.place_order(order).unwrap();
        // A retry of the key returns the original.
        assert_eq!(client.place_order(order).unwrap().id, got.id);
        placed.push(got.id);
    }
    for &id in &placed {
        let owner = owner_of(shard_of_order(id));
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(order_on(n, id), if i == owner { Ok(id) } else { Err(Status::Moved) }, "order {id} on node {i} (owner {owner})");
        }
        assert_eq!(client.get_order(id).unwrap().id, id);
    }
    for &p in &products {
        assert_eq!(client.stock(p).unwrap().reserved, 1);
    }

    // The spare shard changes hands (it holds nothing, so nothing needs to
    // move): the client, still on the older map, is answered `moved` by
    // the old owner, reads the map again and resends to the new one.
    let from = owner_of(spare_shard);
    let to = (from + 1) % 3;
    let version = give_empty_shard(&etcd, "route", spare_shard, ["a", "b", "c"][to]);
    for n in &nodes {
        follows(n, version);
    }
    assert_eq!(client.routes().cluster_version(), Some(2));
    client.upsert_product(product(spare)).unwrap();
    let order = client.place_order(PlaceOrder::with_new_key(99, spare, 1, 500)).unwrap();
    assert_eq!(client.routes().cluster_version(), Some(version));
    assert_eq!(order_on(&nodes[to], order.id), Ok(order.id));
    assert_eq!(order_on(&nodes[from], order.id), Err(Status::Moved));

    // The async client routes the same way and follows the same changes.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = AsyncClient::connect(&nodes[2].seed.to_string(), ClientConfig::default()).await.unwrap();
        for &id in &placed {
            assert_eq!(client.get_order(id).await.unwrap().id, id);
        }
        assert_eq!(client.get_order(order.id).await.unwrap().id, order.id);
        // The spare shard goes back (its product and order stay on `to`:
        // the state does not move here), and the async client follows.
        let back = give_empty_shard(&etcd, "route", spare_shard, ["a", "b", "c"][from]);
        for n in &nodes {
            follows(n, back);
        }
        let refused = client.get_order(order.id).await.unwrap_err();
        assert_eq!(refused.status(), Some(Status::NoSuchOrder), "the new owner answers (it never had the order): {refused}");
    });

    // A client that sends everything to its seed (not shard-aware) gets
    // every answer too: the node redirects, the SDK follows.
    let mut plain = Client::connect(nodes[0].seed, ClientConfig { shard_aware: false, ..ClientConfig::default() }).unwrap();
    for &id in &placed {
        assert_eq!(plain.get_order(id).unwrap().id, id);
    }

    // A node that comes back on other ports: clients made before find it
    // again by the map (a connection refused there is resent by a fresh one).
    let async_client = runtime.block_on(AsyncClient::connect(&nodes[0].seed.to_string(), ClientConfig::default())).unwrap();
    let on_b: Vec<u64> = placed.iter().copied().filter(|&id| owner_of(shard_of_order(id)) == 1).collect();
    assert!(!on_b.is_empty());
    for &id in &on_b {
        assert_eq!(plain.get_order(id).unwrap().id, id);
        assert_eq!(runtime.block_on(async_client.get_order(id)).unwrap().id, id);
    }
    let dir = nodes[1].dir.clone();
    nodes[1].kill();
    let flags = ["--shards", "8", "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", "route", "--node", "b"];
    // The old handle owns the data directory: kept until the test ends.
    let _old_b = std::mem::replace(&mut nodes[1], Server::start_in(&dir, "1", &flags, &[]));
    for &id in &on_b {
        assert_eq!(plain.get_order(id).unwrap().id, id, "the blocking client");
        assert_eq!(runtime.block_on(async_client.get_order(id)).unwrap().id, id, "the async client");
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_data_directory_starts_only_as_the_node_it_belongs_to() {
    let Some(etcd) = Etcd::start() else { return };
    assert!(cluster(&etcd, "claim", &["init", "--shards", "8"]).0);
    let node_flags = |id: &'static str| -> Vec<String> {
        ["--shards", "8", "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", "claim", "--node", id]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    // A node's directory, once it has run.
    let dir = tempfile::tempdir().unwrap();
    let mut a = Server::start_in(dir.path(), "0", &as_strs(&node_flags("a")), &[]);
    a.terminate();
    assert!(dir.path().join("cluster.json").exists());
    // Not as a single server (it would serve shards other nodes own)...
    let (code, err) = common::start_fails(dir.path(), "0", &["--shards", "8", "--no-metrics"]);
    assert!(!code.success() && err.contains("belongs to node `a` of cluster `claim`"), "{err}");
    // ...nor as another node.
    let (code, err) = common::start_fails(dir.path(), "0", &as_strs(&node_flags("b")));
    assert!(!code.success() && err.contains("not `b` of `claim`"), "{err}");
    // As itself, it starts.
    drop(Server::start_in(dir.path(), "0", &as_strs(&node_flags("a")), &[]));
    // A single server's directory with orders does not join a cluster.
    let used = tempfile::tempdir().unwrap();
    let mut single = Server::start_in(used.path(), "0", &["--shards", "8", "--no-metrics"], &[]);
    single.client().upsert_product(product(1)).unwrap();
    single.terminate();
    let (code, err) = common::start_fails(used.path(), "0", &as_strs(&node_flags("c")));
    assert!(!code.success() && err.contains("holds another server's orders"), "{err}");
}
