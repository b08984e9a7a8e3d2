//! SIGTERM under load: answered orders are as answered, the frames in
//! flight are finished, the process exits 0. Under systemd (`Type=notify`)
//! the server says when it is ready and when it stops.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use orderd_protocol::client::{new_key, Client, ClientConfig};
use orderd_protocol::{Order, OrderState, PlaceOrder, Reply, Request, UpsertProduct};

/// Place (and pay every other) order in batches until told to stop or the
/// server goes away; return every order as the server answered it.
fn load(seed: std::net::SocketAddr, thread: u64, stop: Arc<AtomicBool>) -> Vec<Order> {
    let mut client = Client::connect(seed, ClientConfig { retries: 0, ..ClientConfig::default() }).expect("connect");
    let mut answered = Vec::new();
    let mut user = thread * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        let requests: Vec<Request> = (0..16)
            .map(|i| {
                user += 1;
                Request::PlaceOrder(PlaceOrder { key: new_key(), user, product: 1 + (user + i) % 8, unit_price_cents: 100, qty: 1 })
            })
            .collect();
        let Ok(replies) = client.execute(&requests) else { break };
        let mut pays = Vec::new();
        for reply in replies {
            match reply {
                Reply::Order(o) if o.id.is_multiple_of(2) => {
                    pays.push(Request::PayOrder(orderd_protocol::message::OrderRef { order_id: o.id }))
                }
                Reply::Order(o) => answered.push(o),
                other => panic!("unexpected reply {other:?}"),
            }
        }
        let Ok(paid) = client.execute(&pays) else { break };
        for reply in paid {
            match reply {
                Reply::Order(o) => {
                    assert_eq!(o.state, OrderState::Paid);
                    answered.push(o);
                }
                other => panic!("unexpected reply {other:?}"),
            }
        }
    }
    answered
}

#[test]
fn sigterm_under_load_finishes_in_flight_frames_and_exits_zero() {
    let mut server = Server::start("0,1", &[]);
    let mut admin = server.client();
    for product in 1..=8 {
        admin
            .upsert_product(UpsertProduct { product, unit_price_cents: 100, stock: 10_000_000, payment_window_ms: 0, per_user_limit: 0 })
            .unwrap();
    }

    // Phase 1: load, then check every answered order is held as answered.
    let stop = Arc::new(AtomicBool::new(false));
    let seed = server.seed;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || load(seed, t, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<Order> = threads.into_iter().flat_map(|t| t.join().expect("load thread")).collect();
    assert!(!answered.is_empty());
    for chunk in answered.chunks(512) {
        let gets: Vec<Request> = chunk.iter().map(|o| Request::GetOrder(orderd_protocol::message::OrderRef { order_id: o.id })).collect();
        for (order, reply) in chunk.iter().zip(admin.execute(&gets).unwrap()) {
            assert_eq!(reply, Reply::Order(*order), "the server holds the order as it answered");
        }
    }

    // Phase 2: SIGTERM while the load runs. Every reply that arrives is
    // whole and consistent (checked in `load`), and the process exits 0.
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (10..14)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || load(seed, t, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let status = server.terminate();
    let during: usize = threads.into_iter().map(|t| t.join().expect("load thread").len()).sum();
    assert!(during > 0);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    assert!(std::net::TcpStream::connect(server.seed).is_err(), "nothing listens after shutdown");
}

#[test]
fn under_systemd_the_server_says_ready_once_it_listens_and_stopping_on_sigterm() {
    use std::os::unix::net::UnixDatagram;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut server = Server::start_with_env("0", &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let next = || {
        let mut buf = [0u8; 4096];
        let n = manager.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains(&format!("STATUS=serving on {}", server.seed)), "{ready:?}");
    // Ready means served: a client gets its answer at once.
    let mut client = server.client();
    client.upsert_product(UpsertProduct { product: 1, unit_price_cents: 100, stock: 1, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    drop(client);
    assert!(server.terminate().success());
    let stopping = next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

/// Issue 21: SIGTERM while the log is replayed stops the server then, not
/// once the replay is over (no core polls the signal before it runs; a
/// watch thread does). The replay is held 60 s by a test seam; the server
/// must be gone well before, with status 0 and a line saying why.
#[test]
fn sigterm_during_the_replay_stops_the_server_at_once() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::serve_command(dir.path(), "0", &["--no-metrics", "--test-recovery-delay-ms", "60000"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orderd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the replay never started: {seen:?}")
        });
        let holding = line.contains("holding the log's replay");
        seen.push(line);
        if holding {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM during the replay was not taken until the replay's end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The rest of its stderr, up to the end of the pipe.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    assert!(status.success(), "{status:?}: {seen:?}");
    assert!(seen.iter().any(|l| l.contains("stop signal during the start")), "{seen:?}");
}
