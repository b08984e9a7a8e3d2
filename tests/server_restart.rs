//! A server killed while clients are connected starts again at once on the
//! same ports and the same data directory: its dead sockets outlive it by
//! some milliseconds (io_uring teardown after the process is reaped), and
//! a supervisor, a script or an operator restarts it without waiting.
//! A port a live process holds is still refused at once, naming it.

mod common;

use std::net::{SocketAddr, TcpListener};

use common::{start_fails, Server};
use orderd_protocol::{PlaceOrder, UpsertProduct};

/// A loopback port free at the time of the call.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("its address").port()
}

#[test]
fn a_server_killed_with_clients_connected_restarts_at_once_on_the_same_ports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let flags = ["--listen", listen.as_str(), "--metrics-listen", metrics.as_str(), "--shards", "4"];
    let mut server = Server::start_in(dir.path(), "0", &flags, &[]);
    let product = UpsertProduct { product: 1, unit_price_cents: 100, stock: 1_000_000, payment_window_ms: 0, per_user_limit: 0 };
    server.client().upsert_product(product).expect("upsert");
    for round in 0..5u64 {
        // Clients connected and busy when the server dies.
        let mut clients: Vec<_> = (0..3).map(|_| server.client()).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            client.place_order(PlaceOrder::with_new_key(round * 10 + i as u64, 1, 1, 100)).expect("place");
        }
        server.kill();
        // At once: no pause between the kill and the restart.
        server = Server::start_in(dir.path(), "0", &flags, &[]);
        assert_eq!(server.seed, listen.parse::<SocketAddr>().expect("address"), "round {round}: same port");
        drop(clients);
    }
    let stock = server.client().stock(1).expect("stock");
    assert_eq!(stock.reserved, 15, "every acknowledged order survived the restarts");
}

#[test]
fn a_port_a_live_process_holds_is_refused_at_once_naming_it() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = holder.local_addr().expect("its address").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let (status, stderr) = start_fails(dir.path(), "0", &["--listen", addr.as_str(), "--no-metrics"]);
    assert!(!status.success());
    assert!(stderr.contains("already in use by pid") && stderr.contains(&std::process::id().to_string()), "{stderr}");
    drop(holder);
}

/// Issue 21: a second server on a data directory in use is refused, naming
/// the holder, even when every file that looks like a lock was deleted
/// first (`rm orderd.lock` used to let a second server in, and the two then
/// wrote the same logs). The first server keeps serving.
#[test]
fn a_second_server_on_a_data_directory_in_use_is_refused_even_after_rm_of_its_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in(dir.path(), "0", &["--no-metrics"], &[]);
    let mut client = server.client();
    client
        .upsert_product(orderd_protocol::UpsertProduct {
            product: 1,
            unit_price_cents: 100,
            stock: 5,
            payment_window_ms: 0,
            per_user_limit: 0,
        })
        .expect("upsert");
    // Whatever an operator might delete to "unlock" it: the old lock file
    // (made here in case this build does not make one) and the server id.
    std::fs::write(dir.path().join("orderd.lock"), b"").expect("a lock file");
    for name in ["orderd.lock", "server-id"] {
        std::fs::remove_file(dir.path().join(name)).expect("rm");
    }
    let (status, stderr) = start_fails(dir.path(), "0", &["--listen", "127.0.0.1:0", "--no-metrics"]);
    assert!(!status.success());
    assert!(stderr.contains("in use by another orderd") && stderr.contains(&format!("pid {}", server.child.id())), "{stderr}");
    client.place_order(PlaceOrder::with_new_key(1, 1, 1, 100)).expect("the first server still serves");
}

/// Issue 21: a data directory whose log manifest was deleted is refused,
/// naming the core logs it holds, whatever `--cores` and `--shards` say,
/// and nothing is rewritten: with `--cores 0` the second core's log used to
/// be ignored (its orders gone) and the manifest rewritten for one core.
#[test]
fn core_logs_without_their_manifest_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_in(dir.path(), "0,1", &["--no-metrics"], &[]);
    let mut client = server.client();
    for product in 1..=4 {
        client
            .upsert_product(orderd_protocol::UpsertProduct {
                product,
                unit_price_cents: 100,
                stock: 5,
                payment_window_ms: 0,
                per_user_limit: 0,
            })
            .expect("upsert");
        client.place_order(PlaceOrder::with_new_key(1, product, 1, 100)).expect("place");
    }
    drop(client);
    assert!(server.terminate().success());
    let manifest = dir.path().join("log-manifest");
    let written = std::fs::read_to_string(&manifest).expect("the manifest");
    std::fs::remove_file(&manifest).expect("rm log-manifest");
    for (cores, extra) in [("0", &[][..]), ("0", &["--shards", "32"][..]), ("0,1", &[][..])] {
        let flags: Vec<&str> = ["--no-metrics", "--listen", "127.0.0.1:0"].iter().chain(extra).copied().collect();
        let (status, stderr) = start_fails(dir.path(), cores, &flags);
        assert!(!status.success());
        assert!(
            stderr.contains("log-manifest is missing") && stderr.contains("core-0000, core-0001"),
            "--cores {cores} {extra:?}: {stderr}"
        );
        assert!(!manifest.exists(), "--cores {cores} {extra:?}: a refused start wrote a manifest");
    }
    // Restored as the message says, the directory starts with every order.
    std::fs::write(&manifest, written).expect("restore the manifest");
    let server = Server::start_in(dir.path(), "0,1", &["--no-metrics"], &[]);
    let mut client = server.client();
    for product in 1..=4 {
        assert_eq!(client.stock(product).expect("stock").reserved, 1, "product {product}");
    }
}
