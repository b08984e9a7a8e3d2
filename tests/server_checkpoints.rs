//! Checkpoints on a real server: taken by themselves as records accrue,
//! used by the next start (which then replays only the log after them),
//! and never in the way of an order acknowledged before a kill -9.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::client::Client;
use orderd_protocol::{Order, PlaceOrder, Request, UpsertProduct};

/// The value of the unlabelled-or-summed metric `name` in `text`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let series_name = series.split('{').next()?;
            (series_name == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// `orderd admin --json stats` against `server`.
fn admin_stats(server: &Server) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["admin", "--json", "--server", &server.seed.to_string(), "stats"])
        .output()
        .expect("run orderd admin stats");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn scrape(server: &Server) -> String {
    let (status, body) = server.scrape();
    assert_eq!(status, "HTTP/1.1 200 OK");
    body
}

/// A 1 MiB log bound of 64 KiB segments (~11,000 records), history kept by
/// bytes only (512 KiB), a checkpoint every 2,000 records, 4 shards.
const SMALL_LOG_FLAGS: [&str; 12] = [
    "--segment-bytes",
    "64KiB",
    "--max-log-bytes",
    "1MiB",
    "--retain-log-bytes",
    "512KiB",
    "--checkpoint-every-records",
    "2000",
    "--checkpoint-every-secs",
    "1",
    "--shards",
    "4",
];

/// Products 1..=4, priced `1000 + id` cents, with stock for any test.
fn load_products(client: &mut Client) {
    for product in 1..=4 {
        let upsert = UpsertProduct { product, unit_price_cents: 1000 + product, stock: 1_000_000, payment_window_ms: 0, per_user_limit: 0 };
        client.upsert_product(upsert).unwrap();
    }
}

/// Places `n` orders of products 1..=4 in pipelined batches; returns them.
fn place(client: &mut Client, n: u64, base: u64) -> Vec<Order> {
    let requests: Vec<Request> =
        (0..n).map(|i| Request::PlaceOrder(PlaceOrder::with_new_key(base + i, 1 + i % 4, 1, 1000 + 1 + i % 4))).collect();
    let mut orders = Vec::new();
    for chunk in requests.chunks(64) {
        for reply in client.execute(chunk).unwrap() {
            match reply {
                orderd_protocol::Reply::Order(o) => orders.push(o),
                other => panic!("expected an order, got {other:?}"),
            }
        }
    }
    orders
}

#[test]
fn a_restart_loads_the_newest_checkpoint_and_replays_only_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--checkpoint-every-records", "200", "--checkpoint-every-secs", "1", "--shards", "8"];
    let mut server = Server::start_in(dir.path(), "0,1", &flags, &[]);
    let mut client = server.client();
    load_products(&mut client);
    let mut orders = place(&mut client, 1000, 0);
    // Wait for a checkpoint on every core that covers most of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&server);
        if metric(&text, "orderd_checkpoints_total") >= 2.0 && metric(&text, "orderd_checkpoint_records_behind") < 400.0 {
            assert!(metric(&text, "orderd_checkpoint_bytes") > 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint within 30 s:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Orders after the checkpoint, some paid, then a crash.
    orders.extend(place(&mut client, 30, 5000));
    let paid = client.pay_order(orders[1020].id).unwrap();
    orders[1020] = paid;
    let records = 4 + 1030 + 1;
    drop(client);
    server.kill();

    let server = Server::start_in(dir.path(), "0,1", &flags, &[]);
    let text = scrape(&server);
    let replayed = metric(&text, "orderd_recovery_records");
    eprintln!("replayed {replayed} of {records} records after the checkpoint");
    assert!(replayed < f64::from(records) / 2.0, "replayed {replayed} of {records} records: the checkpoint was not used");
    let mut client = server.client();
    for order in &orders {
        assert_eq!(&client.get_order(order.id).unwrap(), order);
        assert_eq!(&client.get_order_by_key(order.product, order.key).unwrap(), order);
    }
    let sold: u64 = (1..=4).map(|p| client.stock(p).unwrap().reserved + client.stock(p).unwrap().paid).sum();
    assert_eq!(sold, orders.len() as u64);
    // New ids continue after the recovered ones.
    let more = place(&mut client, 8, 9000);
    assert!(more.iter().all(|m| orders.iter().all(|o| o.id != m.id)));
}

/// Places `n` orders as [`place`] does, retrying any refused with
/// `log_full` (the log bound, until retention frees room) a little later.
fn place_retrying_log_full(client: &mut Client, n: u64, base: u64) -> (Vec<Order>, u64) {
    let (mut orders, mut refused) = (Vec::new(), 0);
    for chunk_start in (0..n).step_by(500) {
        let mut pending: Vec<Request> = (chunk_start..(chunk_start + 500).min(n))
            .map(|i| Request::PlaceOrder(PlaceOrder::with_new_key(base + i, 1 + i % 4, 1, 1000 + 1 + i % 4)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pending.is_empty() {
            let replies = client.execute(&pending).unwrap();
            let mut again = Vec::new();
            for (request, reply) in pending.into_iter().zip(replies) {
                match reply {
                    orderd_protocol::Reply::Order(o) => orders.push(o),
                    orderd_protocol::Reply::Rejected(r) if r.status() == Some(orderd_protocol::Status::LogFull) => {
                        refused += 1;
                        again.push(request);
                    }
                    other => panic!("expected an order, got {other:?}"),
                }
            }
            pending = again;
            if !pending.is_empty() {
                assert!(Instant::now() < deadline, "the log stayed full for 30 s: retention never freed room");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    (orders, refused)
}

#[test]
fn retention_deletes_segments_past_the_checkpoints_so_the_log_bound_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // A 1 MiB bound of 64 KiB segments holds ~11,000 records; 40,000 orders
    // go through it. History is kept by bytes only (512 KiB).
    let flags = SMALL_LOG_FLAGS;
    let mut server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    load_products(&mut client);
    let (orders, refused) = place_retrying_log_full(&mut client, 40_000, 0);
    assert_eq!(orders.len(), 40_000);
    let text = scrape(&server);
    let removed = metric(&text, "orderd_log_segments_removed_total");
    let oldest = metric(&text, "orderd_log_oldest_sequence");
    eprintln!("retention removed {removed} segments; oldest record {oldest}; {refused} log_full refusals retried");
    assert!(removed > 0.0 && oldest > 0.0, "nothing was deleted:\n{text}");
    assert!(metric(&text, "orderd_log_file_bytes") <= f64::from(1u32 << 20));

    // A subscription from the beginning starts at the oldest record kept;
    // one asking for record 0 is told where the history starts.
    let options = orderd_protocol::client::SubscribeOptions {
        start: orderd_protocol::message::StreamStart::Positions(vec![0]),
        ..Default::default()
    };
    let err = orderd_protocol::client::Subscription::connect(server.seed, orderd_protocol::client::ClientConfig::default(), options).err();
    assert_eq!(err.and_then(|e| e.status()), Some(orderd_protocol::Status::PositionUnavailable));

    // Every order survives a crash: the checkpoints hold what the deleted
    // segments held.
    drop(client);
    server.kill();
    let server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    for order in orders.iter().step_by(97) {
        assert_eq!(&client.get_order(order.id).unwrap(), order);
        assert_eq!(&client.get_order_by_key(order.product, order.key).unwrap(), order);
    }
    let held: u64 = (1..=4).map(|p| client.stock(p).unwrap().reserved).sum();
    assert_eq!(held, 40_000);
}

#[test]
fn a_subscriber_whose_next_segments_retention_deletes_gets_each_event_once_then_position_unavailable() {
    use common::raw;
    use orderd_protocol::codec::ServerFrame;
    use orderd_protocol::message::{StreamStart, Subscribe};
    use orderd_protocol::Status;
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let flags = SMALL_LOG_FLAGS;
    let server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    load_products(&mut client);
    // The log fills up to its bound here before a second checkpoint: the
    // one checkpoint must then be enough for retention to free room.
    place_retrying_log_full(&mut client, 10_000, 0);
    // The subscriber (a raw connection with a small receive buffer) stops
    // reading after its first frame: the server's cursor stops where the
    // socket is full, well inside the log.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.seed.into()).unwrap();
    let mut sub: std::net::TcpStream = socket.into();
    sub.write_all(&raw::hello_bytes(1, 1)).unwrap();
    assert!(matches!(raw::read_frame(&mut sub), ServerFrame::Welcome(_)));
    let subscribe = Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 };
    sub.write_all(&raw::requests_bytes(7, &[Request::Subscribe(subscribe)])).unwrap();
    // Its first events (or, if retention already deleted where it
    // started, the refusal).
    let mut frames = vec![raw::read_frame(&mut sub)];
    while !matches!(frames.last(), Some(ServerFrame::Events(..) | ServerFrame::Error(..))) {
        frames.push(raw::read_frame(&mut sub));
    }
    // Retention then deletes the segments ahead of it.
    place_retrying_log_full(&mut client, 60_000, 10_000);
    assert!(metric(&scrape(&server), "orderd_log_oldest_sequence") > 20_000.0, "retention went past the subscriber");
    if !matches!(frames.last(), Some(ServerFrame::Error(..))) {
        frames.extend(raw::frames_until_closed(&mut sub));
    }
    let offsets: Vec<u64> =
        frames.iter().flat_map(|f| if let ServerFrame::Events(_, e) = f { e.iter().map(|e| e.offset).collect() } else { vec![] }).collect();
    // From the oldest record kept when it subscribed (retention may have
    // begun before), every later one once, in order, none skipped; no
    // empty Events frame.
    assert!(frames.iter().all(|f| !matches!(f, ServerFrame::Events(_, e) if e.is_empty())), "an empty Events frame");
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "every event up to there once, in order, none skipped");
    let (_, code, detail) = raw::last_error(&frames).expect("an Error frame ends the stream");
    assert_eq!(code, Status::PositionUnavailable.code(), "the subscriber is told its history is gone");
    assert!(offsets.last().is_none_or(|&last| detail & 0xffff_ffff_ffff > last), "the oldest offset kept ({detail}) is past what it read");
}

#[test]
fn a_subscriber_reads_correct_events_from_segments_not_in_the_page_cache() {
    use orderd_protocol::client::{ClientConfig, SubscribeOptions, Subscription};
    use orderd_protocol::message::{EventKind, StreamStart};

    let dir = tempfile::tempdir().unwrap();
    let flags = ["--segment-bytes", "256KiB", "--shards", "4"];
    let mut server = Server::start_in(dir.path(), "0", &flags, &[]);
    let mut client = server.client();
    load_products(&mut client);
    let orders = place(&mut client, 8_000, 0);
    drop(client);
    // The log's pages leave the page cache where root allows it; otherwise
    // a fresh server process reads them (nothing of them in its memory).
    if std::fs::write("/proc/sys/vm/drop_caches", "1").is_err() {
        server.kill();
        server = Server::start_in(dir.path(), "0", &flags, &[]);
    }
    let options = SubscribeOptions { start: StreamStart::Beginning, ..SubscribeOptions::default() };
    let mut sub = Subscription::connect(server.seed, ClientConfig::default(), options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut placed = std::collections::HashMap::new();
    let mut last = None;
    while placed.len() < orders.len() {
        assert!(Instant::now() < deadline, "only {} of {} orders arrived", placed.len(), orders.len());
        if let Some(e) = sub.next_event(Duration::from_millis(200)).unwrap() {
            assert!(last.is_none_or(|l| e.offset == l + 1), "offset {} after {last:?}", e.offset);
            last = Some(e.offset);
            if e.kind == EventKind::Placed {
                assert!(placed.insert(e.order_id, e).is_none(), "order {} twice", e.order_id);
            }
        }
    }
    for o in &orders {
        let e = placed[&o.id];
        assert_eq!((e.product, e.user, e.qty), (o.product, o.user, u64::from(o.qty)), "order {}", o.id);
    }
}

/// `orderd admin checkpoint` (issue 22), on a server that takes none by
/// itself: every core takes one now and the answer comes once each is
/// durable, naming the sequence each covers; a crash after it replays only
/// the records logged since.
#[test]
fn a_checkpoint_on_demand_is_durable_on_every_core_when_answered() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--no-checkpoints", "--shards", "8"];
    let mut server = Server::start_in(dir.path(), "0,1", &flags, &[]);
    let mut client = server.client();
    load_products(&mut client);
    let mut orders = place(&mut client, 500, 0);
    assert_eq!(metric(&scrape(&server), "orderd_checkpoints_total"), 0.0, "none taken by itself");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["admin", "--json", "--server", &server.seed.to_string(), "checkpoint"])
        .output()
        .expect("run orderd admin checkpoint");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let sequences: Vec<u64> =
        answer["sequences"].as_array().expect("sequences").iter().map(|s| s.as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(sequences.len(), 2, "one per core: {answer}");
    // The 4 upserts and 500 orders, every one in a checkpoint now.
    assert_eq!(sequences.iter().sum::<u64>(), 504, "{answer}");
    // Durable when answered: the files are there, and the metrics agree.
    for core in 0..2 {
        let found = std::fs::read_dir(dir.path().join(format!("core-{core:04}")))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-") && e.file_name().to_string_lossy().ends_with(".ckpt"));
        assert!(found, "core {core} has a checkpoint file");
    }
    assert_eq!(metric(&scrape(&server), "orderd_checkpoints_total"), 2.0);
    // `admin stats` shows each core's checkpoint, log and orders.
    let stats = admin_stats(&server);
    let storage = &stats["storage"];
    for (core, &sequence) in sequences.iter().enumerate() {
        let c = &storage["cores"][core];
        assert_eq!(c["core"], core, "{stats}");
        assert_eq!(c["checkpoint_sequence"], sequence, "{stats}");
        assert!(c["checkpoint_bytes"].as_u64().unwrap() > 0, "{stats}");
        let age = c["checkpoint_age_s"].as_f64().expect("a checkpoint was taken");
        assert!((0.0..3600.0).contains(&age), "{stats}");
        assert_eq!(c["log_retained_records"], sequence, "nothing logged since, nothing deleted: {stats}");
        assert!(c["log_retained_bytes"].as_u64().unwrap() > 0 && c["log_segments"].as_u64().unwrap() >= 1, "{stats}");
        assert!(c["memory"]["order_records"].as_u64().unwrap() > 0 || c["hot_orders"] == 0, "{stats}");
    }
    assert_eq!(storage["totals"]["hot_orders"], 500, "every order in memory: {stats}");
    assert_eq!(storage["totals"]["cold_orders"], 0, "{stats}");
    // A single server is in no cluster: an empty map of version 0.
    let map = client.cluster_map().unwrap();
    assert_eq!((map.version, map.nodes.len(), map.owners.len()), (0, 0, 0));
    assert!(client.routes().cluster_version().is_none());

    orders.extend(place(&mut client, 10, 5000));
    drop(client);
    server.kill();
    let server = Server::start_in(dir.path(), "0,1", &flags, &[]);
    assert_eq!(metric(&scrape(&server), "orderd_recovery_records"), 10.0, "only the records after the checkpoint");
    let mut client = server.client();
    for order in &orders {
        assert_eq!(&client.get_order(order.id).unwrap(), order);
    }
}
