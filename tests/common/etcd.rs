//! A real etcd on loopback for the cluster tests (Debian's `etcd-server`),
//! and `orderd cluster` run against it. Without an `etcd` binary the tests
//! skip, except under CI (`CI` set), where they fail: `.ci/run` installs it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orderd_protocol::client::{ClientConfig, Connection};
use orderd_protocol::message::OrderRef;
use orderd_protocol::{Reply, Request, Status, UpsertProduct};
use serde_json::Value;

use super::Server;

/// A real etcd on loopback, its data in a temp directory; killed on drop.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    peer: String,
    dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
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
    pub fn start() -> Option<Etcd> {
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

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) {
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
pub fn cluster(etcd: &Etcd, name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orderd"))
        .arg("cluster")
        .args(args)
        .args(["--etcd", &etcd.endpoint, "--cluster", name])
        .output()
        .expect("run orderd cluster");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn status(etcd: &Etcd, name: &str) -> Value {
    let (ok, out, err) = cluster(etcd, name, &["status", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Polls `status` until `pred` holds (bounded: leases expire in seconds).
pub fn status_until(etcd: &Etcd, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

pub fn node(etcd: &Etcd, name: &str, id: &str, cores: &str) -> Server {
    Server::start(cores, &["--shards", "8", "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", name, "--node", id])
}

/// Node `id` of cluster `name` (`shards` shards) on data directory `dir`
/// (kept when it stops: a restart recovers it).
pub fn node_in(etcd: &Etcd, name: &str, id: &str, cores: &str, shards: u32, dir: &Path) -> Server {
    let shards = shards.to_string();
    Server::start_in(dir, cores, &["--shards", &shards, "--no-metrics", "--etcd", &etcd.endpoint, "--cluster", name, "--node", id], &[])
}

pub fn product(p: u64) -> UpsertProduct {
    UpsertProduct { product: p, unit_price_cents: 500, stock: 100, payment_window_ms: 0, per_user_limit: 0 }
}

pub fn live(s: &Value, id: &str) -> Option<bool> {
    s["nodes"].as_array()?.iter().find(|n| n["node"] == id).and_then(|n| n["live"].as_bool())
}

/// Polls node `server`'s map (on a raw connection) until it has `version`.
pub fn follows(server: &Server, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = Connection::connect(server.cores[0], &ClientConfig::default()).unwrap();
    loop {
        match raw.call(&[Request::ClusterMap]).unwrap().pop() {
            Some(Reply::Cluster(info)) if info.version >= version => return,
            other => assert!(Instant::now() < deadline, "node at {} does not follow map version {version}: {other:?}", server.seed),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The order `id` as node `server` has it, asked on a raw connection (no
/// redirect followed): `Err(status)` if the node refuses.
pub fn order_on(server: &Server, id: u64) -> Result<u64, Status> {
    let mut raw = Connection::connect(server.cores[0], &ClientConfig::default()).unwrap();
    match raw.call(&[Request::GetOrder(OrderRef { order_id: id })]).unwrap().pop() {
        Some(Reply::Order(o)) => Ok(o.id),
        Some(Reply::Rejected(r)) => Err(Status::from_code(r.code).unwrap()),
        other => panic!("{other:?}"),
    }
}
