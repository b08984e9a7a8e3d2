//! The metrics endpoint of a real server: after a known sequence of orders
//! through the SDK, a scrape's counters equal what the test did; promtool
//! accepts a real scrape; a restart reports what it replayed; `--no-metrics`
//! listens nowhere; bad HTTP gets a 4xx (or 503 past the connection bound)
//! and hurts nothing else.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Server;
use orderd_protocol::client::{Client, ClientConfig};
use orderd_protocol::{PlaceOrder, Status, UpsertProduct};

/// `name{labels} value` lines of `text`: (name, labels, value).
fn samples(text: &str) -> impl Iterator<Item = (&str, BTreeMap<&str, &str>, f64)> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| {
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {l:?}"));
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let labels = labels
            .strip_suffix('}')
            .unwrap_or_else(|| panic!("bad labels in {l:?}"))
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("bad label in {l:?}"));
                (k, v.trim_matches('"'))
            })
            .collect();
        (name, labels, value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
    })
}

/// The sum of the series `name` whose labels include every pair of `with`.
fn sum(text: &str, name: &str, with: &[(&str, &str)]) -> u64 {
    let matching: Vec<f64> = samples(text)
        .filter(|(n, labels, _)| *n == name && with.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .map(|(_, _, v)| v)
        .collect();
    assert!(!matching.is_empty(), "no series {name} with {with:?}");
    matching.iter().sum::<f64>() as u64
}

fn scrape_ok(server: &Server) -> String {
    let (status, body) = server.scrape();
    assert_eq!(status, "HTTP/1.1 200 OK");
    body
}

/// What the test did, counted from the SDK's own answers.
#[derive(Default, Debug)]
struct Did {
    accepted: u64,
    gmv_cents: u64,
    rejected: BTreeMap<&'static str, u64>,
    place_orders: u64,
}

impl Did {
    fn place(&mut self, client: &mut Client, order: PlaceOrder) {
        self.place_orders += 1;
        match client.place_order(order) {
            Ok(placed) => {
                self.accepted += 1;
                self.gmv_cents += placed.unit_price_cents * u64::from(placed.qty);
            }
            Err(e) => *self.rejected.entry(e.status().expect("a rejection with a status").name()).or_insert(0) += 1,
        }
    }
}

#[test]
fn a_scrape_counts_exactly_what_the_clients_did_over_two_cores() {
    let server = Server::start("0,1", &[]);
    // Odd products through a naive client on core 0 (core 1's shards are
    // forwarded), even ones through a shard-aware client.
    let mut aware = server.client();
    let mut naive = server.client_on(0, ClientConfig { shard_aware: false, ..ClientConfig::default() });
    let mut did = Did::default();
    for p in 1..=8u64 {
        let client = if p % 2 == 1 { &mut naive } else { &mut aware };
        let price = 1000 + p;
        client
            .upsert_product(UpsertProduct { product: p, unit_price_cents: price, stock: 5, payment_window_ms: 0, per_user_limit: 2 })
            .unwrap();
        did.place(client, PlaceOrder::with_new_key(9, p, 1, 1)); // price_changed
        did.place(client, PlaceOrder::with_new_key(10, p, 3, price)); // limit_exceeded
        for user in 1..=4 {
            for _ in 0..2 {
                did.place(client, PlaceOrder::with_new_key(user, p, 1, price)); // 5 accepted, then sold_out
            }
        }
        assert_eq!(client.stock(p).unwrap().available, 0);
    }
    let stats = aware.stats().unwrap();
    println!("{did:?}");
    assert_eq!((did.accepted, did.gmv_cents, did.place_orders), (40, 5 * (8 * 1000 + 36), 80));
    let expected: BTreeMap<&str, u64> = [("limit_exceeded", 8), ("price_changed", 8), ("sold_out", 24)].into();
    assert_eq!(did.rejected, expected);

    let text = scrape_ok(&server);
    println!("{text}");
    assert_eq!(sum(&text, "orderd_cores", &[]), 2);
    assert_eq!(sum(&text, "orderd_scrape_cores_missing", &[]), 0);
    assert_eq!(sum(&text, "orderd_orders_accepted_total", &[]), did.accepted);
    assert_eq!(sum(&text, "orderd_gmv_cents_total", &[]), did.gmv_cents);
    for (reason, n) in &did.rejected {
        assert_eq!(sum(&text, "orderd_rejections_total", &[("kind", "place_order"), ("reason", reason)]), *n, "{reason}");
    }
    assert_eq!(sum(&text, "orderd_rejections_total", &[]), did.rejected.values().sum::<u64>(), "no other rejection");
    assert_eq!(sum(&text, "orderd_requests_total", &[("kind", "place_order")]), did.place_orders);
    assert_eq!(sum(&text, "orderd_requests_total", &[("kind", "upsert_product")]), 8);
    assert_eq!(sum(&text, "orderd_requests_total", &[("kind", "get_stock")]), 8);
    assert_eq!(sum(&text, "orderd_requests_total", &[("kind", "stats")]), 1);
    // Each SDK client asks at connect whether the server is in a cluster.
    assert_eq!(sum(&text, "orderd_requests_total", &[("kind", "cluster_map")]), 2);
    assert_eq!(sum(&text, "orderd_requests_total", &[]), did.place_orders + 8 + 8 + 1 + 2);
    // Every request but the stats one reached a shard, forwarded or not.
    assert_eq!(sum(&text, "orderd_shard_requests_total", &[]), did.place_orders + 8 + 8);
    assert!(sum(&text, "orderd_forwarded_requests_total", &[("core", "0")]) > 0, "the naive client's requests for core 1 were forwarded");
    assert_eq!(
        sum(&text, "orderd_frame_requests_count", &[]),
        sum(&text, "orderd_requests_total", &[]),
        "the SDK sent one request per frame"
    );
    // The scrape agrees with the wire's own Stats reply (taken before it).
    assert_eq!(sum(&text, "orderd_orders_accepted_total", &[]), stats.cores.iter().map(|c| c.orders_placed).sum::<u64>());
    assert_eq!(sum(&text, "orderd_gmv_cents_total", &[]), stats.cores.iter().map(|c| c.gmv_cents).sum::<u64>());
    // 8 upserts and 40 orders are 48 records; each reply waited for its
    // flush (sync), so every one of them is durable and was counted by one.
    assert_eq!(sum(&text, "orderd_log_next_sequence", &[]), 48);
    assert_eq!(sum(&text, "orderd_flush_records_sum", &[]), 48);
    assert_eq!(sum(&text, "orderd_log_unflushed_records", &[]), 0);
    assert!(sum(&text, "orderd_flush_duration_seconds_count", &[]) > 0);
    assert_eq!(
        sum(&text, "orderd_flush_duration_seconds_bucket", &[("le", "+Inf")]),
        sum(&text, "orderd_flush_duration_seconds_count", &[])
    );
    // Every Requests frame's replies were written, each counted once in
    // the server-side latency histogram (by the core that read it).
    assert_eq!(sum(&text, "orderd_reply_seconds_count", &[]), sum(&text, "orderd_frame_requests_count", &[]));
    assert_eq!(sum(&text, "orderd_reply_seconds_bucket", &[("le", "+Inf")]), sum(&text, "orderd_reply_seconds_count", &[]));
    assert!(sum(&text, "orderd_log_bytes", &[]) > 0);
    assert_eq!(sum(&text, "orderd_log_segments", &[]), 2, "one segment per core");
    assert_eq!(sum(&text, "orderd_shards", &[]), 64);
    // Every order is in memory, and the tables hold at least their bytes
    // (the runtime reserves room ahead, so more).
    assert_eq!(sum(&text, "orderd_orders_in_memory", &[]), did.accepted);
    assert!(sum(&text, "orderd_memory_order_records_bytes", &[]) >= 64 * did.accepted);
    assert!(sum(&text, "orderd_memory_key_index_bytes", &[]) >= 8 * did.accepted);
    assert!(sum(&text, "orderd_memory_holdings_bytes", &[]) > 0, "the products have a per-user limit");
    assert!(sum(&text, "orderd_memory_catalogue_bytes", &[]) >= 8 * 64);
    let open = sum(&text, "orderd_connections", &[]);
    assert!(open >= 2 && sum(&text, "orderd_connections_accepted_total", &[]) >= open, "{open} open");
    assert_eq!(sum(&text, "orderd_connections_refused_total", &[]), 0);
    assert_eq!(sum(&text, "orderd_flush_waiters", &[]) + sum(&text, "orderd_forward_frames_waiting", &[]), 0, "nothing is in flight");

    // Scraping changes no counter of the order path.
    let again = scrape_ok(&server);
    for name in ["orderd_requests_total", "orderd_shard_requests_total", "orderd_connections_accepted_total"] {
        assert_eq!(sum(&text, name, &[]), sum(&again, name, &[]), "{name}");
    }
}

#[test]
fn one_core_serves_metrics_without_a_mesh() {
    let server = Server::start("0", &[]);
    let mut client = server.client();
    client.upsert_product(UpsertProduct { product: 1, unit_price_cents: 250, stock: 3, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    for user in 0..4 {
        let _ = client.place_order(PlaceOrder::with_new_key(user, 1, 1, 250));
    }
    let text = scrape_ok(&server);
    assert_eq!(sum(&text, "orderd_cores", &[]), 1);
    assert_eq!(sum(&text, "orderd_orders_accepted_total", &[("core", "0")]), 3);
    assert_eq!(sum(&text, "orderd_gmv_cents_total", &[("core", "0")]), 750);
    assert_eq!(sum(&text, "orderd_rejections_total", &[("kind", "place_order"), ("reason", "sold_out")]), 1);
    assert_eq!(sum(&text, "orderd_forwarded_requests_total", &[]), 0);
}

#[test]
fn a_restart_reports_the_records_it_replayed_and_how_long_that_took() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), "0", &[], &[]);
    let mut client = server.client();
    client.upsert_product(UpsertProduct { product: 1, unit_price_cents: 250, stock: 3, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    for user in 0..4 {
        let _ = client.place_order(PlaceOrder::with_new_key(user, 1, 1, 250));
    }
    let text = scrape_ok(&server);
    assert_eq!(sum(&text, "orderd_recovery_records", &[]), 0, "a new data directory has nothing to replay");
    drop(client);
    assert!(server.terminate().success());

    let server = Server::start_in(dir.path(), "0", &[], &[]);
    let text = scrape_ok(&server);
    // The product and the three accepted orders (a sold-out rejection logs nothing).
    assert_eq!(sum(&text, "orderd_recovery_records", &[]), 4);
    let seconds = samples(&text).find(|(name, _, _)| *name == "orderd_recovery_seconds").map(|(_, _, v)| v);
    assert!(seconds.is_some_and(|s| s > 0.0 && s < 60.0), "{seconds:?}");
}

/// `promtool check metrics` on a real scrape. Skipped where promtool is
/// not installed, except in CI (`CI` set), where that is a failure.
/// `PROMTOOL` names another binary.
#[test]
fn promtool_accepts_a_real_scrape() {
    let Some(promtool) = common::promtool() else { return };
    let server = Server::start("0,1", &[]);
    let mut client = server.client();
    client.upsert_product(UpsertProduct { product: 3, unit_price_cents: 100, stock: 1, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    for user in 0..3 {
        let _ = client.place_order(PlaceOrder::with_new_key(user, 3, 1, 100));
    }
    let _ = client.place_order(PlaceOrder::with_new_key(7, 3, 1, 99));
    let text = scrape_ok(&server);
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics refused the scrape ({}):\n{said}\n--- scrape ---\n{text}", out.status);
    assert!(said.trim().is_empty(), "promtool had remarks:\n{said}");
}

#[test]
fn no_metrics_listens_nowhere() {
    // A port that was free a moment ago, given to a server told not to use it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = Server::start("0", &["--no-metrics", "--metrics-listen", &port.to_string()]);
    assert_eq!(server.metrics, None);
    let refused = TcpStream::connect_timeout(&port, Duration::from_secs(2));
    assert!(refused.is_err(), "something listens on {port} although metrics are off");
    // The server itself serves orders as usual.
    let mut client = server.client();
    assert_eq!(client.stock(1).unwrap_err().status(), Some(Status::NoSuchProduct));
}

/// A connection to `addr` that sends `bytes` and reads the status line of
/// the answer.
fn status_of(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).lines().next().unwrap_or_default().to_owned()
}

/// Whether the server has answered (or closed) `stream` already.
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let pending = matches!(stream.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    !pending
}

#[test]
fn bad_http_gets_an_error_status_and_hurts_nothing_else() {
    let server = Server::start("0", &[]);
    let addr = server.metrics.unwrap();
    assert_eq!(status_of(addr, b"GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(status_of(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(status_of(addr, b"hello there\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    assert_eq!(status_of(addr, b"\x00\xff\xfe\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    assert_eq!(status_of(addr, &[b'A'; 20_000]), "HTTP/1.1 431 Request Header Fields Too Large");
    let head = server.http(b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "HEAD: headers only:\n{head}");

    // Silent clients hold the scrape slots (until their request timeout);
    // while they hold all four, a scrape is turned away at once with 503.
    // A silent client that came while an earlier connection still closed
    // was itself turned away: it is replaced until four are held.
    let mut silent: Vec<TcpStream> = Vec::new();
    let mut tries = 0;
    loop {
        // Earlier connections (and the last probe) finish closing, then the
        // silent clients the server turned away are replaced.
        std::thread::sleep(Duration::from_millis(300));
        silent.retain(|s| !answered(s));
        while silent.len() < 4 {
            silent.push(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
        let status = status_of(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        if status == "HTTP/1.1 503 Service Unavailable" {
            break;
        }
        assert_eq!(status, "HTTP/1.1 200 OK");
        tries += 1;
        assert!(tries < 20, "four silent clients never filled the scrape slots");
    }
    // The order path does not notice.
    let mut client = server.client();
    client.upsert_product(UpsertProduct { product: 5, unit_price_cents: 10, stock: 1, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    client.place_order(PlaceOrder::with_new_key(1, 5, 1, 10)).unwrap();
    // A silent client gets 408 once its request timeout passes (or 503 if
    // it came when the slots were already taken).
    let mut timed_out = 0;
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 408 Request Timeout") || reply.starts_with("HTTP/1.1 503 "), "{reply:?}");
        timed_out += usize::from(reply.starts_with("HTTP/1.1 408 "));
    }
    assert!(timed_out >= 3, "only {timed_out} silent clients held a slot until their timeout");
    // And the endpoint serves again (once the closing connections are
    // gone), with the order counted.
    let mut tries = 0;
    let text = loop {
        let (status, body) = server.scrape();
        if status == "HTTP/1.1 200 OK" {
            break body;
        }
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        tries += 1;
        assert!(tries < 50, "the endpoint stays busy after its clients left");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sum(&text, "orderd_orders_accepted_total", &[]), 1);
}

#[test]
fn a_taken_metrics_port_stops_the_start_with_the_flag_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = common::start_fails(dir.path(), "0", &["--metrics-listen", &addr]);
    assert!(!status.success());
    assert!(stderr.contains(&addr) && stderr.contains("--metrics-listen") && stderr.contains("--no-metrics"), "{stderr}");
}

#[test]
fn subscribers_and_their_lag_are_exported_and_a_stalled_ones_lag_grows() {
    use orderd_protocol::client::Connection;
    use orderd_protocol::message::{AdjustStock, StreamStart, Subscribe};
    use orderd_protocol::Request;
    let server = Server::start("0", &["--write-timeout-ms", "600000"]);
    let mut client = server.client();
    client.upsert_product(UpsertProduct { product: 1, unit_price_cents: 250, stock: 3, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    let text = scrape_ok(&server);
    assert_eq!((sum(&text, "orderd_subscribers", &[]), sum(&text, "orderd_subscriber_lag_records", &[])), (0, 0));
    // A subscriber from now that never reads: every later event is its lag
    // once the socket buffers between it and the server are full.
    let mut stalled = Connection::connect(server.seed, &ClientConfig::default()).unwrap();
    stalled.send(&[Request::Subscribe(Subscribe { start: StreamStart::Now, product: 0, kinds: 0 })]).unwrap();
    let adjust: Vec<Request> = (0..1000).map(|_| Request::AdjustStock(AdjustStock { product: 1, delta: 1 })).collect();
    for _ in 0..200 {
        client.execute(&adjust).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let lag = loop {
        let text = scrape_ok(&server);
        assert_eq!(sum(&text, "orderd_subscribers", &[]), 1);
        let lag = sum(&text, "orderd_subscriber_lag_records", &[]);
        if lag > 0 || std::time::Instant::now() > deadline {
            break lag;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // 200,000 events of 64 bytes are more than both sockets' buffers hold.
    assert!(lag > 0 && lag <= 200_000, "lag {lag}");
    drop(stalled);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sum(&scrape_ok(&server), "orderd_subscribers", &[]) != 0 {
        assert!(std::time::Instant::now() < deadline, "the closed subscription is still counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sum(&scrape_ok(&server), "orderd_subscriber_lag_records", &[]), 0);
}

#[test]
fn health_and_readiness_answer_beside_the_metrics_with_the_process_figures() {
    let server = Server::start("0", &[]);
    let healthz = server.http(b"GET /healthz HTTP/1.1\r\nHost: orderd\r\n\r\n");
    assert!(healthz.starts_with("HTTP/1.1 200 OK\r\n") && healthz.ends_with("\r\n\r\nok\n"), "{healthz}");
    // The endpoint listens only once the log is replayed: reachable is ready.
    let readyz = server.http(b"GET /readyz HTTP/1.1\r\nHost: orderd\r\n\r\n");
    assert!(readyz.starts_with("HTTP/1.1 200 OK\r\n") && readyz.ends_with("\r\n\r\nready\n"), "{readyz}");
    let text = scrape_ok(&server);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_open_fds") >= 3.0 && value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_threads") >= 2.0);
    let started = value("process_start_time_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started > now - 600.0 && started <= now + 1.0, "started {started}, now {now}");
    assert!(value("process_cpu_seconds_total") >= 0.0);
}
