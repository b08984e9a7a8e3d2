//! Durability through the real binary: a bounded log fills up and answers
//! `log_full` while reads go on; a corrupt record stops the start with the
//! file and offset; a changed core or shard count is refused; async mode;
//! a crash while a rotation waits for its rename; connections refused
//! while the log is replayed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{start_fails, Server};
use orderd_protocol::client::{ClientConfig, Waited};
use orderd_protocol::codec::ServerFrame;
use orderd_protocol::{Order, OrderState, PlaceOrder, Reply, Request, Status, UpsertProduct};

fn product(id: u64) -> UpsertProduct {
    UpsertProduct { product: id, unit_price_cents: 500, stock: 1_000_000, payment_window_ms: 0, per_user_limit: 0 }
}

fn segment(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core:04}")).join("segment-00000000000000000000.log")
}

/// File offsets of the records of a segment, walking the length fields.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut pos = 64;
    while pos + 24 <= bytes.len() && bytes[pos..pos + 8].iter().any(|&b| b != 0) {
        offsets.push(pos);
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += (24 + len + 7) & !7;
    }
    offsets
}

fn place_until_full(server: &Server) -> Vec<(PlaceOrder, Order)> {
    let mut client = server.client();
    client.upsert_product(product(1)).unwrap();
    let mut placed = Vec::new();
    loop {
        let request = PlaceOrder::with_new_key(placed.len() as u64, 1, 1, 500);
        match client.place_order(request) {
            Ok(order) => placed.push((request, order)),
            Err(e) => {
                assert_eq!(e.status(), Some(Status::LogFull), "{e}");
                return placed;
            }
        }
        assert!(placed.len() < 10_000, "the bound never filled");
    }
}

#[test]
fn log_full_refuses_state_changes_serves_reads_and_recovers_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // No checkpoints: with them, one taken moments after the bound is
    // reached lets retention delete the first segment and make room again
    // (by design), and a slow machine saw the pay below succeed.
    let flags = ["--shards", "1", "--segment-bytes", "4096", "--max-log-bytes", "8192", "--no-checkpoints"];
    let mut server = Server::start_in(dir.path(), "0", &flags, &[]);
    let placed = place_until_full(&server);
    assert!(placed.len() > 60, "two 4 KiB segments hold more than {} orders", placed.len());
    let mut client = server.client();
    // Reads work; every state change is refused with log_full (202).
    assert_eq!(client.stock(1).unwrap().reserved, placed.len() as u64);
    assert_eq!(client.get_order(placed[0].1.id).unwrap(), placed[0].1);
    assert_eq!(client.pay_order(placed[0].1.id).unwrap_err().status(), Some(Status::LogFull));
    assert_eq!(client.adjust_stock(1, 5).unwrap_err().status(), Some(Status::LogFull));
    assert_eq!(Status::LogFull.code(), 202);
    // A retry of an acknowledged order still answers it (no state change).
    assert_eq!(client.place_order(placed[3].0).unwrap(), placed[3].1);
    let stats = client.stats().unwrap();
    assert!(stats.cores[0].log_bytes > 7000, "log_bytes {}", stats.cores[0].log_bytes);

    server.kill();
    let server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    for (_, order) in &placed {
        assert_eq!(&client.get_order(order.id).unwrap(), order);
    }
    assert_eq!(client.place_order(PlaceOrder::with_new_key(1, 1, 1, 500)).unwrap_err().status(), Some(Status::LogFull));
    drop(server);

    // A larger bound makes room again.
    let server = Server::start_in(dir.path(), "0", &["--shards", "1", "--segment-bytes", "4096", "--max-log-bytes", "16384"], &[]);
    let mut client = server.client();
    let paid = client.pay_order(placed[0].1.id).unwrap();
    assert_eq!(paid.state, OrderState::Paid);
    assert_eq!(client.stock(1).unwrap().reserved + client.stock(1).unwrap().paid, placed.len() as u64);
}

#[test]
fn a_flipped_byte_before_the_tail_stops_the_start_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), "0", &["--shards", "1"], &[]);
    let mut client = server.client();
    client.upsert_product(product(1)).unwrap();
    let orders: Vec<Order> = (0..20).map(|u| client.place_order(PlaceOrder::with_new_key(u, 1, 1, 500)).unwrap()).collect();
    assert_eq!(server.terminate().code(), Some(0));

    let path = segment(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 21);
    let victim = offsets[10];
    bytes[victim + 40] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();

    let (status, stderr) = start_fails(dir.path(), "0", &["--shards", "1"]);
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains(&path.display().to_string()), "the message names the file: {stderr}");
    assert!(stderr.contains(&format!("byte offset {victim}")), "the message names the offset: {stderr}");
    assert!(stderr.contains("--truncate-corrupt-log"), "the message says what to do: {stderr}");

    // The operator's way out keeps the records before the bad one.
    let server = Server::start_in(dir.path(), "0", &["--shards", "1", "--truncate-corrupt-log"], &[]);
    let mut client = server.client();
    assert_eq!(client.get_order(orders[8].id).unwrap(), orders[8]);
    assert_eq!(client.get_order(orders[9].id).unwrap_err().status(), Some(Status::NoSuchOrder));
}

#[test]
fn another_core_or_shard_count_is_refused_with_both_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), "0,1", &["--shards", "8"], &[]);
    server.client().upsert_product(product(1)).unwrap();
    assert_eq!(server.terminate().code(), Some(0));
    let (status, stderr) = start_fails(dir.path(), "0", &["--shards", "8"]);
    assert!(!status.success());
    assert!(stderr.contains("2 cores and 8 shards") && stderr.contains("1 core and 8 shards"), "{stderr}");
    assert_eq!(stderr.matches("this data directory was written by").count(), 1, "said once: {stderr}");
    let (status, stderr) = start_fails(dir.path(), "0,1", &["--shards", "16"]);
    assert!(!status.success());
    assert!(stderr.contains("2 cores and 8 shards") && stderr.contains("2 cores and 16 shards"), "{stderr}");
    let server = Server::start_in(dir.path(), "0,1", &["--shards", "8"], &[]);
    assert_eq!(server.client().stock(1).unwrap().supplied, 1_000_000);
}

#[test]
fn async_mode_replies_before_the_flush_and_a_process_crash_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--durability", "async", "--flush-interval-ms", "50", "--shards", "4"];
    let mut server = Server::start_in(dir.path(), "0,1", &flags, &[]);
    let mut client = server.client_on(0, ClientConfig::default());
    client.upsert_product(product(1)).unwrap();
    client.upsert_product(product(2)).unwrap();
    let orders: Vec<Order> = (0..200).map(|u| client.place_order(PlaceOrder::with_new_key(u, 1 + u % 2, 1, 500)).unwrap()).collect();
    server.kill();
    let server = Server::start_in(dir.path(), "0,1", &flags, &[]);
    let mut client = server.client();
    for order in &orders {
        assert_eq!(&client.get_order(order.id).unwrap(), order);
    }
}

/// Each flush is stretched to this by the test seam `--test-flush-delay-ms`.
const FLUSH_DELAY_MS: u64 = 400;

#[test]
fn sync_replies_wait_for_the_flush_reads_do_not_and_concurrent_frames_share_one() {
    let delay = FLUSH_DELAY_MS.to_string();
    let server = Server::start("0", &["--shards", "4", "--test-flush-delay-ms", delay.as_str()]);
    let mut client = server.client();
    client.upsert_product(product(1)).unwrap();
    let delay = Duration::from_millis(FLUSH_DELAY_MS);

    let started = Instant::now();
    let order = client.place_order(PlaceOrder::with_new_key(1, 1, 1, 500)).unwrap();
    assert!(started.elapsed() >= delay, "a placed order was acknowledged after {:?}, before its flush", started.elapsed());
    let started = Instant::now();
    assert_eq!(client.get_order(order.id).unwrap(), order);
    assert_eq!(client.stock(1).unwrap().reserved, 1);
    assert!(started.elapsed() < delay, "reads waited {:?}", started.elapsed());
    let started = Instant::now();
    assert_eq!(client.place_order(PlaceOrder::with_new_key(1, 1, 0, 500)).unwrap_err().status(), Some(Status::InvalidRequest));
    assert!(started.elapsed() < delay, "a rejection waited {:?}", started.elapsed());

    // Eight connections place at once: one or two flushes cover them all.
    let seed = server.seed;
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|u| {
            std::thread::spawn(move || {
                let mut c = orderd_protocol::client::Client::connect(seed, ClientConfig::default()).unwrap();
                c.place_order(PlaceOrder::with_new_key(100 + u, 1, 1, 500)).unwrap()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    assert!(elapsed < delay * 4, "8 concurrent orders took {elapsed:?}: flushes were not shared");
}

/// While a reply waits for its flush, the connection goes on applying the
/// frames behind it (their records join the next flush) instead of
/// reading nothing until the flush is done.
#[test]
fn a_connection_applies_the_frames_behind_replies_that_wait_for_a_flush() {
    // Long enough that the checks below happen well inside one flush.
    const LONG_FLUSH_MS: u64 = 3000;
    let delay = LONG_FLUSH_MS.to_string();
    let server = Server::start("0", &["--shards", "4", "--test-flush-delay-ms", delay.as_str()]);
    let mut reader = server.client();
    reader.upsert_product(product(1)).unwrap();
    let reserved_becomes = |reader: &mut orderd_protocol::client::Client, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while reader.stock(1).unwrap().reserved != n {
            assert!(Instant::now() < deadline, "stock never showed {n} reserved");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut client = server.client();
    let first = client.submit(&[Request::PlaceOrder(PlaceOrder::with_new_key(1, 1, 1, 500))]).unwrap();
    reserved_becomes(&mut reader, 1);
    // The first order is applied and its reply waits for the flush: a
    // second frame on the same connection is applied meanwhile.
    let second = client.submit(&[Request::PlaceOrder(PlaceOrder::with_new_key(2, 1, 1, 500))]).unwrap();
    reserved_becomes(&mut reader, 2);
    let first = match client.wait_until(first, Instant::now() + Duration::from_millis(100)).unwrap() {
        Waited::Pending(ticket) => ticket,
        Waited::Ready(_) => panic!("the first reply left before its flush ended (the seam stretches it to {LONG_FLUSH_MS} ms)"),
    };
    // Both replies come, in order, once their records are durable.
    assert!(matches!(client.wait(first).unwrap().as_slice(), [Reply::Order(o)] if o.user == 1));
    assert!(matches!(client.wait(second).unwrap().as_slice(), [Reply::Order(o)] if o.user == 2));
}

/// A client that sends its frames and then half-closes the connection
/// still gets the replies that were waiting for a flush when its end of
/// the stream arrived.
#[test]
fn a_half_closed_connection_still_gets_the_replies_waiting_for_a_flush() {
    let delay = FLUSH_DELAY_MS.to_string();
    let server = Server::start("0", &["--shards", "4", "--test-flush-delay-ms", delay.as_str()]);
    server.client().upsert_product(product(1)).unwrap();
    let mut s = common::raw::welcomed(server.seed);
    s.write_all(&common::raw::requests_bytes(7, &[Request::PlaceOrder(PlaceOrder::with_new_key(1, 1, 1, 500))])).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let frames = common::raw::frames_until_closed(&mut s);
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Replies(7, replies)] if matches!(replies.as_slice(), [Reply::Order(o)] if o.user == 1)),
        "{frames:?}"
    );
}

#[test]
fn async_replies_do_not_wait_for_the_flush() {
    let delay = FLUSH_DELAY_MS.to_string();
    let server = Server::start(
        "0",
        &["--shards", "4", "--durability", "async", "--flush-interval-ms", "50", "--test-flush-delay-ms", delay.as_str()],
    );
    let mut client = server.client();
    client.upsert_product(product(1)).unwrap();
    let started = Instant::now();
    for u in 0..5 {
        client.place_order(PlaceOrder::with_new_key(u, 1, 1, 500)).unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(FLUSH_DELAY_MS), "async replies waited {:?}", started.elapsed());
}

/// A SIGKILL while a rotation's new segment still waits for its rename
/// (the core appends to `prepared-segment.tmp` until the next flush
/// renames it) loses no acknowledged order: the restart adopts the file.
/// Every flush is held back by the test seam, so the rename is certainly
/// pending when the server dies; nothing of the log was ever flushed, and
/// a process crash must lose nothing in `async` mode all the same.
#[test]
fn a_crash_while_a_rotation_waits_for_its_rename_loses_no_acknowledged_order() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--shards", "1", "--segment-bytes", "262144", "--durability", "async", "--test-flush-delay-ms", "600000"];
    let mut server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    client.upsert_product(product(1)).unwrap();
    let core_dir = dir.path().join("core-0000");
    let prepared = core_dir.join("prepared-segment.tmp");
    // A prepared file in use starts with a segment header (its magic);
    // one that only waits holds zeros.
    let in_use = || std::fs::read(&prepared).is_ok_and(|b| b.starts_with(b"ORDDLOG\0"));
    let mut orders = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !in_use() {
        assert!(Instant::now() < deadline, "no rotation into a prepared segment after {} orders", orders.len());
        let requests: Vec<Request> =
            (0..64).map(|i| Request::PlaceOrder(PlaceOrder::with_new_key(orders.len() as u64 + i, 1, 1, 500))).collect();
        let ticket = client.submit(&requests).unwrap();
        for reply in client.wait(ticket).unwrap() {
            match reply {
                Reply::Order(order) => orders.push(order),
                other => panic!("{other:?}"),
            }
        }
    }
    for u in 0..10 {
        orders.push(client.place_order(PlaceOrder::with_new_key(u, 1, 1, 500)).unwrap());
    }
    server.kill();
    let header = std::fs::read(&prepared).unwrap();
    let first = u64::from_le_bytes(header[16..24].try_into().unwrap());
    let named = core_dir.join(format!("segment-{first:020}.log"));
    assert!(!named.exists(), "the rotation's rename was still pending");
    let server = Server::start_in(dir.path(), "0", &flags, &[]);
    assert!(named.exists(), "the restart adopted the prepared file under its segment name");
    let mut client = server.client();
    for order in &orders {
        assert_eq!(&client.get_order(order.id).unwrap(), order);
    }
}

/// While the log is replayed the server's ports are bound but do not
/// listen: a client (or a health check) is refused at once instead of
/// waiting for a handshake, and the same port serves once the replay is
/// done.
#[test]
fn connections_are_refused_while_the_log_is_replayed_then_served_on_the_same_port() {
    use std::io::{BufRead, BufReader, ErrorKind};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["serve", "--cores", "0", "--no-metrics", "--test-recovery-delay-ms", "1500", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn orderd");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut lines = BufReader::new(stdout);
        let _ = lines.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });

    // The replay (held 1.5 s by the test seam) is under way from shortly
    // after the start; probe well inside it.
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused += 1,
            other => {
                let _ = child.kill();
                panic!("a connection during the replay got {other:?}, not a refusal");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused > 0);

    let line = rx.recv_timeout(Duration::from_secs(60)).expect("orderd announces its ports");
    assert!(line.starts_with(&format!("orderd listening {addr}")), "{line:?}");
    let mut client = orderd_protocol::client::Client::connect(addr, ClientConfig::default()).expect("served once replayed");
    client.upsert_product(product(1)).unwrap();
    let placed = client.place_order(PlaceOrder::with_new_key(1, 1, 1, 500)).unwrap();
    assert_eq!(placed.state, OrderState::Placed);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_data_dir_that_is_a_file_is_refused_as_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let (status, stderr) = start_fails(&file, "0", &[]);
    assert!(!status.success());
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert!(!stderr.contains("File exists"), "{stderr}");
}
