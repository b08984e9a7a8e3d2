//! The cluster's map in a real etcd (Debian's `etcd-server`, 3.4 here),
//! started by the test on loopback: `orderd cluster init`, nodes joining
//! with `serve --etcd`, liveness through their leases, `cluster rebalance`
//! and `status`, a node that does not fit refused, and a node that keeps
//! serving while etcd is down and registers again when it is back.
//!
//! Without an `etcd` binary the tests skip, except under CI (`CI` set),
//! where they fail: `.ci/run` installs it.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::client::ClientError;
use orderd_protocol::shard::shard_of_product;
use orderd_protocol::{PlaceOrder, Status, UpsertProduct};
use serde_json::Value;

/// A real etcd on loopback, its data in a temp directory; killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    peer: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn etcd_binary() -> Option<&'static str> {
    if Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return Some("etcd");
    }
    assert!(std::env::var_os("CI").is_none(), "etcd is not installed but CI is set: install it (Debian: apt-get install etcd-server)");
    println!("SKIPPED: etcd not found (Debian: apt-get install etcd-server)");
    None
}

impl Etcd {
    fn start() -> Option<Etcd> {
        etcd_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let mut etcd = Etcd {
            child: spawn_etcd(dir.path(), client, peer),
            endpoint: format!("127.0.0.1:{client}"),
            peer: format!("127.0.0.1:{peer}"),
            dir,
        };
        etcd.wait_ready();
        Some(etcd)
    }

    /// Blocks until etcd answers (bounded).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.endpoint).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen on {} within 20 s", self.endpoint);
            assert!(self.child.try_wait().expect("wait").is_none(), "etcd exited at start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same data and ports.
    fn restart(&mut self) {
        let client: u16 = self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let peer: u16 = self.peer.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        self.child = spawn_etcd(self.dir.path(), client, peer);
        self.wait_ready();
    }
}

fn spawn_etcd(dir: &Path, client: u16, peer: u16) -> Child {
    let client = format!("http://127.0.0.1:{client}");
    let peer = format!("http://127.0.0.1:{peer}");
    Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--name", "test", "--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("test={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `orderd cluster ARGS...` against `etcd`: (success, stdout, stderr).
fn cluster(etcd: &Etcd, name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orderd"))
        .arg("cluster")
        .args(args)
        .args(["--etcd", &etcd.endpoint, "--cluster", name])
        .output()
        .expect("run orderd cluster");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn status(etcd: &Etcd, name: &str) -> Value {
    let (ok, out, err) = cluster(etcd, name, &["status", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Polls `status` until `pred` holds (bounded: leases expire in seconds).
fn status_until(etcd: &Etcd, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(etcd, name);
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node(etcd: &Etcd, name: &str, id: &str, cores: &str) -> Server {
    Server::start(cores, &["--shards", "8", "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", name, "--node", id])
}

/// The detail of a per-request refusal.
fn detail(e: &ClientError) -> Option<u64> {
    match e {
        ClientError::Rejected(r) => Some(r.detail),
        _ => None,
    }
}

fn product(p: u64) -> UpsertProduct {
    UpsertProduct { product: p, unit_price_cents: 500, stock: 100, payment_window_ms: 0, per_user_limit: 0 }
}

fn live(s: &Value, id: &str) -> Option<bool> {
    s["nodes"].as_array()?.iter().find(|n| n["node"] == id).and_then(|n| n["live"].as_bool())
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
    // map version for the others.
    let owners: Vec<String> = s["owners"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_owned()).collect();
    for p in 1..=24u64 {
        let mine = owners[shard_of_product(p, 8) as usize].starts_with("a:");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client.upsert_product(product(p)) {
                Ok(_) if mine => break,
                Err(e) if !mine && e.status() == Some(Status::Moved) && detail(&e) == Some(2) => break,
                // Not yet following the new map (version 1 still).
                Err(e) if e.status() == Some(Status::Moved) && detail(&e) == Some(1) && Instant::now() < deadline => {
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
