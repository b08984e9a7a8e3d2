//! `orderd-load` against the fake server: closed and open loops, retries,
//! the accounting when the catalogue is already there, the JSON report,
//! and a server that breaks an invariant (caught, reported, exit code 1).

#[path = "../protocol/tests/fake_server/mod.rs"]
mod fake_server;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use fake_server::FakeServer;
use orderd::load::{self, LoadArgs, LoadError, Report};
use orderd::workload::{self, Workload};
use orderd_protocol::client::{Client, ClientConfig};
use orderd_protocol::{PlaceOrder, Request};
use serde_json::Value;

const CORES: u16 = 2;

fn server() -> FakeServer {
    FakeServer::start(CORES, 64)
}

/// Short timeouts: a fake that stops answering fails a test quickly.
fn config() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_secs(3), retry_backoff: Duration::from_millis(5), ..ClientConfig::default() }
}

/// The command line `orderd-load --server <fake> <flags>`, parsed.
fn args(server: &FakeServer, flags: &[&str]) -> LoadArgs {
    let addr = server.addrs[0].to_string();
    let argv = ["orderd-load", "--server", addr.as_str(), "--quiet", "--seed", "7"].into_iter().chain(flags.iter().copied());
    LoadArgs::try_parse_from(argv).unwrap_or_else(|e| panic!("{flags:?}: {e}"))
}

/// Run and return the report and the table printed.
fn run(args: &LoadArgs) -> (Report, String) {
    let mut out = Vec::new();
    let report = load::run_with(args, config(), &mut out).unwrap_or_else(|e| panic!("run failed: {e}"));
    let table = String::from_utf8(out).expect("the table is UTF-8");
    (report, table)
}

fn check<'a>(report: &'a Report, name: &str) -> &'a load::check::Check {
    report.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}: {:?}", report.checks))
}

#[test]
fn a_closed_loop_hot_run_sells_out_and_the_invariants_hold() {
    let server = server();
    let a = args(
        &server,
        &["--workload", "hot", "--stock", "20", "--requests", "600", "--connections", "2", "--pipeline", "4", "--batch", "8"],
    );
    let (report, table) = run(&a);
    eprintln!("{table}");
    assert!(report.invariants_ok, "{table}");
    assert!(report.errors.is_empty(), "{table}");
    assert_eq!(report.completed, 600);
    assert_eq!(report.accepted, 200, "10 products x 20 units, all sold: {table}");
    assert_eq!(report.rejected.values().sum::<u64>(), 400);
    assert!(report.rejected.get("sold_out").is_some_and(|&n| n > 0), "{:?}", report.rejected);
    for name in ["stock_balance", "sold_matches_accepted", "per_user_limit", "keys_read_back", "replies_match_requests"] {
        assert!(check(&report, name).ok, "{name}: {table}");
    }
    assert!(check(&report, "per_user_limit").detail.starts_with("200 (user, product) pairs accepted, 0 accepted twice"), "{table}");
    let book = server.book.lock().unwrap();
    assert!(book.products.values().all(|s| s.available == 0 && s.reserved == 20), "sold out");
    assert!(table.contains("[ ok ] stock_balance") && table.contains("invariants hold"), "{table}");
}

#[test]
fn a_second_run_on_the_same_server_starts_from_the_workloads_stock_again() {
    // An upsert keeps an existing product's stock, so the generator tops
    // every product up to the run's stock itself.
    let server = server();
    let flags = ["--workload", "hot", "--stock", "20", "--requests", "600", "--connections", "2"];
    for run_number in 1..=2 {
        let (report, table) = run(&args(&server, &flags));
        assert!(report.invariants_ok, "run {run_number}: {table}");
        assert_eq!(report.accepted, 200, "run {run_number} sold all 10 x 20 units: {table}");
    }
    let book = server.book.lock().unwrap();
    assert!(book.products.values().all(|s| s.available == 0 && s.reserved == 40 && s.supplied == 40), "both runs sold out");
}

#[test]
fn uniform_retries_get_their_original_order_back() {
    let server = server();
    let a = args(&server, &["--workload", "uniform", "--requests", "400", "--retry-share", "0.1", "--connections", "2", "--batch", "4"]);
    let (report, table) = run(&a);
    assert!(report.invariants_ok, "{table}");
    assert!(report.retries > 10, "about 10 % of 400 requests are retries: {table}");
    assert_eq!(report.retries_verified, report.retries);
    assert_eq!(report.accepted + report.retries, 400, "uniform never rejects: {table}");
    assert!(report.rejected.is_empty());
    assert!(check(&report, "retries_return_original").ok);
    // The retries reached the server with their original keys: each key placed one order.
    let book = server.book.lock().unwrap();
    assert_eq!(book.orders.len() as u64, report.accepted);
}

/// CLOCK_MONOTONIC now, µs: the clock the slow log must be on (the one
/// `perf` stamps its events with).
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec through a pointer to a live local.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[test]
fn the_slow_log_has_one_line_per_request_over_the_threshold_on_the_monotonic_clock() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.txt");
    let before = monotonic_us();
    // A threshold of 0 µs: every request is "slow".
    let a = args(&server, &["--workload", "uniform", "--requests", "500", "--slow-log", path.to_str().unwrap(), "--slow-us", "0"]);
    let (report, table) = run(&a);
    let after = monotonic_us();
    assert!(report.invariants_ok, "{table}");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with('#')), "{text}");
    let rows: Vec<(u64, u64)> = lines
        .map(|l| {
            let mut f = l.split(' ').map(|x| x.parse::<u64>().unwrap_or_else(|e| panic!("{l}: {e}")));
            (f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    assert_eq!(rows.len() as u64, report.completed, "{table}");
    assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "sorted by start time");
    assert!(rows.iter().all(|&(t, latency)| before <= t && t + latency <= after), "inside the run, on CLOCK_MONOTONIC");
    let slow = report.slow_log.as_ref().expect("the report says where the log went");
    assert_eq!((slow.requests, slow.threshold_us, slow.not_kept), (report.completed, 0, 0));
    assert!(table.contains("slow log"), "{table}");
    // A threshold no request reaches: an empty log with its header.
    let a = args(&server, &["--workload", "uniform", "--requests", "100", "--slow-log", path.to_str().unwrap(), "--slow-us", "60000000"]);
    let (report, _) = run(&a);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    assert_eq!(report.slow_log.map(|s| s.requests), Some(0));
}

#[test]
fn an_open_loop_run_at_a_low_rate_sends_every_request_on_schedule() {
    let server = server();
    let a = args(&server, &["--workload", "hot", "--rate", "200", "--requests", "60", "--connections", "2", "--pipeline", "2"]);
    let (report, table) = run(&a);
    assert!(report.invariants_ok, "{table}");
    assert_eq!((report.mode, report.completed, report.rate), ("open", 60, Some(200.0)));
    // 60 requests at 200/s are spread over 0.3 s, not sent at once.
    assert!(report.elapsed_s >= 0.28, "{table}");
    assert!(report.completed_per_s < 230.0, "{table}");
    assert!(report.send_lag_max_us.is_some() && report.send_lag_p99_us.is_some(), "{table}");
    assert!(report.p50_us >= 1 && report.max_us >= report.p99_us);
}

#[test]
fn with_a_linger_open_loop_frames_wait_to_fill_and_the_wait_counts_as_latency() {
    let server = server();
    // 1000/s and frames of 8: the 8th request of a frame is due 7 ms after
    // the first, well within the 50 ms linger, so every full frame waits
    // for it; the last 4 requests (20 is not a multiple of 8) wait out the
    // linger instead and still go.
    let flags = ["--workload", "hot", "--rate", "1000", "--requests", "20", "--connections", "1", "--batch", "8", "--linger-us", "50000"];
    let (report, table) = run(&args(&server, &flags));
    assert!(report.invariants_ok, "{table}");
    assert_eq!((report.completed, report.linger_us), (20, 50_000), "{table}");
    assert!(table.contains("frames linger up to 50000 us"), "{table}");
    // Latency runs from each request's intended time: the first of a frame
    // waited at least 7 ms in the generator, and that wait is charged.
    assert!(report.send_delay_p99_us.is_some_and(|d| d >= 6_900), "{table}");
    assert!(report.p99_us >= 6_900, "{table}");
    // Without a linger nothing waits for a frame to fill.
    let (report, table) =
        run(&args(&server, &["--workload", "hot", "--rate", "1000", "--requests", "20", "--connections", "1", "--batch", "8"]));
    assert_eq!((report.completed, report.linger_us), (20, 0), "{table}");
    assert!(!table.contains("linger"), "{table}");
}

#[test]
fn without_shard_awareness_every_request_goes_to_the_core_first_reached() {
    let flags = ["--workload", "uniform", "--requests", "200", "--connections", "1", "--batch", "8"];
    let requests_by_core = |server: &FakeServer| {
        let mut n = [0usize; CORES as usize];
        for (core, r) in server.served_by() {
            if matches!(r, Request::PlaceOrder(_)) {
                n[usize::from(core)] += 1;
            }
        }
        n
    };
    let aware = server();
    let (report, table) = run(&args(&aware, &flags));
    assert!(report.invariants_ok && report.shard_aware, "{table}");
    let n = requests_by_core(&aware);
    assert!(n.iter().all(|&k| k > 0), "a shard-aware run reaches every core: {n:?}");

    let naive = server();
    let (report, table) = run(&args(&naive, &[&flags[..], &["--no-shard-aware"]].concat()));
    assert!(report.invariants_ok && !report.shard_aware, "{table}");
    assert!(table.contains("not shard-aware"), "{table}");
    let n = requests_by_core(&naive);
    assert_eq!(n[1..].iter().sum::<usize>(), 0, "orders went past the core first reached: {n:?}");
    assert!(n[0] >= 200, "{n:?}");
}

#[test]
fn a_linger_without_a_rate_is_refused() {
    let server = server();
    let err = load::run_with(&args(&server, &["--workload", "hot", "--requests", "10", "--linger-us", "100"]), config(), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(&err, LoadError::Setting(m) if m.contains("--linger-us")), "{err}");
}

#[test]
fn the_json_report_has_every_setting_figure_and_check() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let cpu = core_affinity::get_core_ids().and_then(|ids| ids.first().map(|c| c.id.to_string())).unwrap_or_else(|| "0".into());
    let a = args(
        &server,
        &[
            "--workload",
            "hot",
            "--stock",
            "5",
            "--duration",
            "0.3",
            "--connections",
            "2",
            "--cpus",
            "0",
            "--durability-label",
            "fsync",
            "--json",
            path.to_str().unwrap(),
        ],
    );
    let (report, _) = run(&a);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for field in [
        "completed_per_s",
        "accepted",
        "gmv_cents",
        "rejected",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "invariants_ok",
        "workload",
        "connections",
        "pipeline",
        "batch",
        "rate",
        "linger_us",
        "shard_aware",
        "generator_cpu_s",
        "generator_busy",
        "requests",
        "duration_s",
        "retry_share",
        "cpus",
        "machine",
        "durability",
        "server_cores",
        "checks",
    ] {
        assert!(v.get(field).is_some(), "no field {field} in {v}");
    }
    assert_eq!(v["workload"], "hot");
    let (gen_cpu, busy) = (v["generator_cpu_s"].as_f64().unwrap(), v["generator_busy"].as_f64().unwrap());
    assert!(gen_cpu > 0.0 && busy > 0.0 && busy <= 1.5, "generator cpu {gen_cpu} s, busy {busy}");
    assert_eq!((v["connections"].as_u64(), v["pipeline"].as_u64(), v["batch"].as_u64()), (Some(2), Some(8), Some(16)));
    assert_eq!((v["rate"].is_null(), v["requests"].is_null(), v["duration_s"].as_f64()), (true, true, Some(0.3)));
    assert_eq!(v["cpus"], serde_json::json!([cpu.parse::<usize>().unwrap()]));
    assert_eq!(v["durability"], "fsync");
    assert_eq!(v["server_cores"], u64::from(CORES));
    assert_eq!(v["invariants_ok"], true);
    assert!(v["rejected"].is_object() && v["completed_per_s"].as_f64().is_some_and(|r| r > 0.0), "{v}");
    for field in ["hostname", "cpu_model", "cores", "kernel"] {
        assert!(v["machine"].get(field).is_some(), "no machine.{field} in {v}");
    }
    assert_eq!(v["accepted"].as_u64(), Some(report.accepted));
    assert_eq!(v["accepted"], 50, "a 0.3 s closed loop sells 10 x 5 units");
    let gmv: u64 = (1..=10).map(|p| 5 * orderd::workload::unit_price_cents(p)).sum();
    assert_eq!(v["gmv_cents"].as_u64(), Some(gmv), "5 units of each product at its catalogue price");
}

#[test]
fn with_no_load_the_accounting_counts_from_the_stock_found_before_the_run() {
    let server = server();
    let mut client = Client::connect(server.addrs[0], config()).unwrap();
    for u in Workload::Hot.catalogue() {
        client.upsert_product(orderd_protocol::UpsertProduct { stock: 30, ..u }).unwrap();
    }
    // Orders placed before the run: the generator must not count them as its own.
    for user in 1..=4 {
        client.place_order(PlaceOrder::with_new_key(user, 3, 1, workload::unit_price_cents(3))).unwrap();
    }
    let a = args(&server, &["--workload", "hot", "--no-load", "--requests", "200", "--connections", "1"]);
    let (report, table) = run(&a);
    assert!(report.invariants_ok, "{table}");
    assert!(!report.loaded);
    assert_eq!(report.accepted, 200);
    // Nothing sold out: the server refuses every probe for the limit's sake.
    let limit = check(&report, "per_user_limit");
    assert!(limit.detail.ends_with("probe of 100: 100 limit_exceeded, 0 sold_out, 0 accepted, 0 other"), "{table}");
    assert_eq!(server.book.lock().unwrap().orders.len(), 204);
}

#[test]
fn with_no_load_and_no_catalogue_the_run_is_refused_with_a_hint() {
    let server = server();
    let a = args(&server, &["--workload", "hot", "--no-load", "--requests", "10"]);
    let err = load::run_with(&a, config(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, LoadError::NotLoaded { product: 1, workload: "hot", .. }), "{err}");
    assert!(err.to_string().contains("orderd admin load-workload hot"), "{err}");
}

#[test]
fn replies_lost_on_the_way_are_resent_with_their_keys_and_counted_once() {
    let server = server();
    let a = args(&server, &["--workload", "hot", "--stock", "50", "--requests", "300", "--connections", "2", "--batch", "4"]);
    // Connections drop after applying a frame: the SDK reconnects and
    // resends the same keys, which the server answers from idempotency.
    server.faults.drop_after_apply.store(3, Ordering::SeqCst);
    let (report, table) = run(&a);
    assert!(report.invariants_ok, "{table}");
    assert_eq!((report.completed, report.unknown), (300, 0), "{table}");
    let placed = server.served_by().iter().filter(|(_, r)| matches!(r, Request::PlaceOrder(_))).count();
    assert!(placed > 300, "some frames were resent: {placed} place-order requests served");
}

#[test]
fn a_server_that_stops_answering_mid_run_gets_the_figures_printed_and_no_verdict() {
    let server = server();
    let a = args(&server, &["--workload", "uniform", "--duration", "1", "--connections", "1", "--pipeline", "2", "--batch", "4"]);
    let faults = std::sync::Arc::clone(&server.faults);
    let staller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        faults.stall.store(true, Ordering::SeqCst);
    });
    let quick = ClientConfig { request_timeout: Duration::from_millis(300), retries: 0, ..config() };
    let mut out = Vec::new();
    let err = load::run_with(&a, quick, &mut out).expect_err("the checks cannot be made");
    staller.join().unwrap();
    let table = String::from_utf8(out).expect("the table is UTF-8");
    assert!(matches!(err, LoadError::NotChecked { .. }), "{err}");
    assert!(err.to_string().contains("could not be checked after the run"), "{err}");
    assert!(table.contains("invariants NOT CHECKED") && !table.contains("invariants hold"), "{table}");
    let completed: u64 = table
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("completed")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no completed line: {table}"));
    assert!(completed > 0, "what was answered before the stall is reported: {table}");
    assert!(table.contains("error: thread 0"), "the thread's failure is shown: {table}");
}

#[test]
fn a_server_that_sells_two_units_per_order_fails_the_accounting() {
    let server = server();
    server.faults.double_count.store(true, Ordering::SeqCst);
    let a = args(&server, &["--workload", "hot", "--stock", "1000", "--requests", "100", "--connections", "2"]);
    let (report, table) = run(&a);
    assert!(!report.invariants_ok, "{table}");
    assert!(check(&report, "stock_balance").ok, "the stock still balances");
    let accounting = check(&report, "sold_matches_accepted");
    assert!(!accounting.ok && accounting.detail.contains("sold"), "{table}");
    assert!(table.contains("[FAIL] sold_matches_accepted") && table.contains("invariants BROKEN"), "{table}");
}

#[test]
fn the_binary_exits_0_when_the_invariants_hold_1_when_broken_and_2_when_it_cannot_run() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let binary = |extra: &[&str]| {
        let addr = server.addrs[0].to_string();
        let mut argv = vec!["--server", addr.as_str(), "--workload", "hot", "--stock", "100", "--requests", "50"];
        argv.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_orderd-load")).args(&argv).output().unwrap()
    };
    let ok = binary(&["--json", json.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("invariants hold"));
    server.faults.double_count.store(true, Ordering::SeqCst);
    let broken = binary(&["--json", json.to_str().unwrap()]);
    assert_eq!(broken.status.code(), Some(1), "{}", String::from_utf8_lossy(&broken.stdout));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("invariants broken"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["invariants_ok"], false);
    let refused = binary(&["--retry-share", "2"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn a_zipf_run_sells_most_of_the_first_products() {
    let server = server();
    let a = args(&server, &["--workload", "zipf", "--requests", "2000", "--connections", "2", "--pipeline", "4", "--batch", "32"]);
    let (report, table) = run(&a);
    assert!(report.invariants_ok, "{table}");
    assert_eq!(report.accepted, 2000);
    let book = server.book.lock().unwrap();
    let sold = |p: u64| book.products[&p].reserved;
    // Zipf(10,000, 0.99): product 1 draws ~10 % of requests, product 5,000 almost none.
    assert!(sold(1) > 100 && sold(1) > sold(2) && sold(5000) < 5, "sold {} / {} / {}", sold(1), sold(2), sold(5000));
}

/// `orderd-load` takes the server from `ORDERD_SERVER` as `orderd admin`
/// does (its own error message suggested it, and it was refused).
#[test]
fn the_server_can_come_from_orderd_server() {
    let server = server();
    let out = Command::new(env!("CARGO_BIN_EXE_orderd-load"))
        .args(["--workload", "hot", "--stock", "100", "--requests", "50"])
        .env("ORDERD_SERVER", server.addrs[0].to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invariants hold"));
}

#[test]
fn the_read_probe_reads_stock_and_stats_beside_the_load_and_reports_their_latency() {
    let server = server();
    let a = args(&server, &["--workload", "uniform", "--duration", "1", "--connections", "1", "--read-probe-ms", "5"]);
    let (report, table) = run(&a);
    let probe = report.read_probe.as_ref().unwrap_or_else(|| panic!("no read probe: {table}"));
    assert!(probe.reads >= 2, "one read each 5 ms for a second: {probe:?}");
    assert_eq!((probe.failed, probe.every_ms), (0, 5), "{probe:?}");
    assert!(probe.p50_us <= probe.p99_us && probe.p99_us <= probe.max_us, "{probe:?}");
    assert!(table.contains("read probe") && table.contains(&format!("{} reads", probe.reads)), "{table}");
    let json = serde_json::to_value(&report).expect("the report serialises");
    assert_eq!(json["read_probe"]["reads"], probe.reads, "{json}");
}

/// A server past its dedup window answers a sampled key `key_expired`:
/// the documented answer when the generator knows the window, a broken
/// check when it does not.
#[test]
fn keys_past_the_servers_dedup_window_read_back_as_expired_only_if_the_window_says_so() {
    let flags = ["--workload", "uniform", "--requests", "200", "--connections", "1", "--pipeline", "2", "--batch", "8"];
    let server = server();
    server.book.lock().unwrap().key_window_ms = Some(0);
    std::thread::sleep(Duration::from_millis(2));
    let (report, table) = run(&args(&server, &[&flags[..], &["--dedup-window-secs", "0"]].concat()));
    let keys = check(&report, "keys_read_back");
    assert!(keys.ok && keys.detail.contains("past the 0 s dedup window refused as expired"), "{table}");
    let server = self::server();
    server.book.lock().unwrap().key_window_ms = Some(0);
    let (report, table) = run(&args(&server, &flags));
    let keys = check(&report, "keys_read_back");
    assert!(!keys.ok && keys.detail.contains("read back differently"), "{table}");
}
