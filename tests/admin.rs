//! `orderd admin` against the SDK's fake server: what each command sends,
//! what it prints (human and JSON), and how it fails.

#[path = "../protocol/tests/fake_server/mod.rs"]
mod fake_server;

use std::io::Write;
use std::sync::atomic::Ordering;

use fake_server::FakeServer;
use orderd::admin::{self, AdminArgs, AdminCommand, AdminError, LoadOptions};
use orderd::workload::{self, Workload};
use orderd_protocol::client::{Client, ClientConfig};
use orderd_protocol::message::{CoreStats, CoreStorage};
use orderd_protocol::{PlaceOrder, Request, Status};
use serde_json::Value;

const CORES: u16 = 3;

fn args(server: &FakeServer, json: bool, command: AdminCommand) -> AdminArgs {
    AdminArgs { server: server.addrs[0].to_string(), json, command }
}

/// Run `command` and return what it printed.
fn run(args: &AdminArgs) -> Result<String, AdminError> {
    let mut out = Vec::new();
    admin::run(args, &mut out)?;
    Ok(String::from_utf8(out).expect("admin output is UTF-8"))
}

fn run_json(args: &AdminArgs) -> Value {
    let text = run(args).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A fake with a small batch limit, so loads are split into many frames.
fn server() -> FakeServer {
    FakeServer::start(CORES, 64)
}

fn upserts_served(server: &FakeServer) -> usize {
    server.served_by().iter().filter(|(_, r)| matches!(r, Request::UpsertProduct(_))).count()
}

#[test]
fn load_workload_hot_creates_10_products_of_100_000_units_limited_to_1_per_user() {
    let server = server();
    let out = run(&args(&server, false, AdminCommand::LoadWorkload { workload: Workload::Hot, options: LoadOptions::default() })).unwrap();
    assert!(out.starts_with("loaded 10 products (workload hot) into orderd at "), "{out}");
    let book = server.book.lock().unwrap();
    assert_eq!(book.products.len(), 10);
    for p in 1..=10 {
        let s = book.products[&p];
        assert_eq!((s.available, s.per_user_limit, s.payment_window_ms), (100_000, 1, 0), "product {p}");
        assert_eq!(s.unit_price_cents, workload::unit_price_cents(p));
    }
}

#[test]
fn load_workload_uniform_pipelines_10_000_upserts_and_reports_json() {
    let server = server();
    let v = run_json(&args(&server, true, AdminCommand::LoadWorkload { workload: Workload::Uniform, options: LoadOptions::default() }));
    assert_eq!(v["loaded"], 10_000);
    assert_eq!(v["source"], "workload uniform");
    assert!(v["elapsed_ms"].is_u64(), "{v}");
    assert_eq!(server.book.lock().unwrap().products.len(), 10_000);
    assert_eq!(upserts_served(&server), 10_000, "each product sent once");
}

fn catalogue_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn load_catalogue_sets_every_field_of_every_product_in_the_file() {
    let server = server();
    let file = catalogue_file(
        "# spring sale\nproduct,unit_price_cents,stock,per_user_limit,payment_window_ms\n\n1,1999,5000,0,0\n2,4500,100,2,900000\n",
    );
    let out =
        run(&args(&server, false, AdminCommand::LoadCatalogue { file: file.path().to_owned(), options: LoadOptions::default() })).unwrap();
    assert!(out.starts_with("loaded 2 products (file "), "{out}");
    let book = server.book.lock().unwrap();
    let p2 = book.products[&2];
    assert_eq!((p2.unit_price_cents, p2.available, p2.per_user_limit, p2.payment_window_ms), (4500, 100, 2, 900_000));
    assert_eq!(book.products[&1].unit_price_cents, 1999);
}

#[test]
fn a_bad_catalogue_file_is_refused_with_its_line_and_nothing_is_sent() {
    let server = server();
    let file = catalogue_file("product,unit_price_cents,stock,per_user_limit,payment_window_ms\n1,1999,5000,0,0\n2,45.00,100,0,0\n");
    let e = run(&args(&server, false, AdminCommand::LoadCatalogue { file: file.path().to_owned(), options: LoadOptions::default() }))
        .unwrap_err();
    let AdminError::BadCatalogue { ref source, .. } = e else { panic!("{e}") };
    assert_eq!(source.line, 3);
    assert!(matches!(source.problem, admin::catalogue_file::Problem::NotANumber { field: "unit_price_cents", .. }), "{e}");
    assert!(e.to_string().contains(", line 3: unit_price_cents `45.00` is not a whole number"), "{e}");
    assert_eq!(upserts_served(&server), 0, "a bad file loads nothing");
}

#[test]
fn a_missing_catalogue_file_says_which() {
    let server = server();
    let e =
        run(&args(&server, false, AdminCommand::LoadCatalogue { file: "/nonexistent/spring.csv".into(), options: LoadOptions::default() }))
            .unwrap_err();
    assert!(matches!(e, AdminError::OpenCatalogue { .. }), "{e}");
    assert!(e.to_string().starts_with("cannot open catalogue file /nonexistent/spring.csv: "), "{e}");
}

#[test]
fn a_refused_upsert_stops_the_load_and_counts_what_was_loaded() {
    let server = server();
    server.faults.error_code.store(usize::from(Status::InvalidRequest.code()), Ordering::SeqCst);
    // The load reads the catalogue first: one frame per core.
    server.faults.error_after.store(usize::from(CORES), Ordering::SeqCst);
    server.faults.error_frames.store(1, Ordering::SeqCst);
    let e =
        run(&args(&server, false, AdminCommand::LoadWorkload { workload: Workload::Hot, options: LoadOptions::default() })).unwrap_err();
    let AdminError::UpsertRefused { product, rejection, loaded, total, .. } = e else { panic!("{e}") };
    assert!((1..=10).contains(&product));
    assert_eq!(rejection.status(), Some(Status::InvalidRequest));
    assert_eq!(total, 10);
    assert_eq!(loaded, server.book.lock().unwrap().products.len(), "loaded counts exactly the confirmed products");
    assert!(loaded < 10);
}

fn place(server: &FakeServer, product: u64, qty: u32) {
    let mut client = Client::connect(server.addrs[0], ClientConfig::default()).unwrap();
    client.place_order(PlaceOrder::with_new_key(7, product, qty, workload::unit_price_cents(product))).unwrap();
}

#[test]
fn reloading_a_catalogue_during_a_sale_keeps_the_stock_and_says_so() {
    let server = server();
    load_hot(&server);
    place(&server, 1, 1);
    let out = run(&args(&server, false, AdminCommand::LoadWorkload { workload: Workload::Hot, options: LoadOptions::default() })).unwrap();
    assert!(out.contains("0 new, 0 updated, 10 unchanged"), "{out}");
    let s = server.book.lock().unwrap().products[&1];
    assert_eq!((s.available, s.supplied), (99_999, 100_000), "no sold unit went back on sale");
}

#[test]
fn a_dry_run_shows_new_products_changed_settings_and_kept_stock_and_sends_nothing() {
    let server = server();
    let file = catalogue_file("product,unit_price_cents,stock,per_user_limit,payment_window_ms\n1,1999,5000,0,0\n2,4500,100,2,900000\n");
    let load = |options| AdminCommand::LoadCatalogue { file: file.path().to_owned(), options };
    run(&args(&server, false, load(LoadOptions::default()))).unwrap();
    let changed = catalogue_file(
        "product,unit_price_cents,stock,per_user_limit,payment_window_ms\n1,2099,5000,0,0\n2,4500,300,2,900000\n3,100,7,0,0\n",
    );
    let command = AdminCommand::LoadCatalogue { file: changed.path().to_owned(), options: LoadOptions { dry_run: true, set_stock: false } };
    let upserts_before = upserts_served(&server);
    let out = run(&args(&server, false, command.clone())).unwrap();
    assert!(out.starts_with("dry run: loading file "), "{out}");
    assert!(out.contains("1 new, 1 updated, 1 unchanged"), "{out}");
    assert!(out.contains("new      product 3: 7 units"), "{out}");
    assert!(out.contains("update   product 1: unit_price_cents 1999 -> 2099"), "{out}");
    assert!(out.contains("update   product 2: stock kept: 100 available of 100 supplied (the file says 300)"), "{out}");
    let v = run_json(&args(&server, true, command));
    assert_eq!((v["dry_run"].as_bool(), v["new"].as_u64(), v["stock_kept"].as_u64()), (Some(true), Some(1), Some(1)), "{v}");
    assert_eq!(v["changes"][2]["change"], "new");
    assert_eq!(v["changes"][2]["product"], "3");
    assert_eq!(upserts_served(&server), upserts_before, "a dry run sends no upsert");
    assert_eq!(server.book.lock().unwrap().products.len(), 2);
}

#[test]
fn set_stock_makes_the_files_stock_the_total_supplied() {
    let server = server();
    load_hot(&server);
    place(&server, 2, 1);
    let file = catalogue_file("product,unit_price_cents,stock,per_user_limit,payment_window_ms\n2,100,100500,1,0\n");
    let options = LoadOptions { dry_run: false, set_stock: true };
    let out = run(&args(&server, false, AdminCommand::LoadCatalogue { file: file.path().to_owned(), options })).unwrap();
    assert!(out.contains("stock of 1 existing products adjusted"), "{out}");
    let s = server.book.lock().unwrap().products[&2];
    assert_eq!((s.available, s.supplied, s.unit_price_cents), (100_499, 100_500, 100));
}

#[test]
fn adjust_stock_adds_or_removes_units_and_prints_the_product() {
    let server = server();
    load_hot(&server);
    let out = run(&args(&server, false, AdminCommand::AdjustStock { product: 3, delta: -200 })).unwrap();
    assert!(out.starts_with("product 3: 99800 available, 0 reserved, 0 paid, 99800 supplied"), "{out}");
    let e = run(&args(&server, false, AdminCommand::AdjustStock { product: 99, delta: 1 })).unwrap_err();
    assert!(matches!(e, AdminError::NoSuchProduct { product: 99, .. }), "{e}");
}

fn load_hot(server: &FakeServer) {
    run(&args(server, false, AdminCommand::LoadWorkload { workload: Workload::Hot, options: LoadOptions::default() })).unwrap();
}

#[test]
fn stock_prints_a_line_or_json() {
    let server = server();
    load_hot(&server);
    let price = workload::unit_price_cents(3);
    let out = run(&args(&server, false, AdminCommand::Stock { product: 3 })).unwrap();
    assert_eq!(
        out,
        format!(
            "product 3: 100000 available, 0 reserved, 0 paid, 100000 supplied; price {}.{:02} ({price} cents); \
             limit 1 per user; orders never expire\n",
            price / 100,
            price % 100
        )
    );
    let v = run_json(&args(&server, true, AdminCommand::Stock { product: 3 }));
    assert_eq!(v["product"], "3", "ids are strings in JSON");
    assert_eq!(v["available"], 100_000);
    assert_eq!(v["supplied"], 100_000);
    assert_eq!(v["unit_price_cents"], price);
    assert_eq!(v["per_user_limit"], 1);
    assert_eq!(v["payment_window_ms"], 0);
}

#[test]
fn stock_of_an_unknown_product_says_how_to_load_it() {
    let server = server();
    let e = run(&args(&server, true, AdminCommand::Stock { product: 99 })).unwrap_err();
    assert!(matches!(e, AdminError::NoSuchProduct { product: 99, .. }), "{e}");
    assert!(e.to_string().contains("load it with `orderd admin load-catalogue FILE`"), "{e}");
}

#[test]
fn order_prints_a_line_or_json() {
    let server = server();
    load_hot(&server);
    let price = workload::unit_price_cents(4);
    let mut client = Client::connect(server.addrs[1], ClientConfig::default()).unwrap();
    let placed = client.place_order(PlaceOrder::with_new_key(42, 4, 1, price)).unwrap();

    let out = run(&args(&server, false, AdminCommand::Order { id: placed.id })).unwrap();
    assert!(out.starts_with(&format!("order {}: placed — user 42, product 4, 1 x ", placed.id)), "{out}");
    assert!(out.contains("never expires"), "{out}");
    assert!(out.contains(&format!("key {:032x}", placed.key.as_u128())), "{out}");

    let v = run_json(&args(&server, true, AdminCommand::Order { id: placed.id }));
    assert_eq!(v["id"], placed.id.to_string(), "ids are strings in JSON");
    assert_eq!(v["state"], "placed");
    assert_eq!(v["user"], "42");
    assert_eq!(v["product"], "4");
    assert_eq!(v["qty"], 1);
    assert_eq!(v["amount_cents"], price);
    assert_eq!(v["expires_ms"], Value::Null);
    assert_eq!(v["key"], format!("{:032x}", placed.key.as_u128()));

    client.pay_order(placed.id).unwrap();
    assert_eq!(run_json(&args(&server, true, AdminCommand::Order { id: placed.id }))["state"], "paid");
}

#[test]
fn order_of_an_unknown_id_is_a_typed_error() {
    let server = server();
    let e = run(&args(&server, false, AdminCommand::Order { id: 12345 })).unwrap_err();
    assert!(matches!(e, AdminError::NoSuchOrder { order_id: 12345, .. }), "{e}");
}

fn set_stats(server: &FakeServer) {
    let core = |core: u16, requests| CoreStats {
        core,
        requests,
        orders_placed: requests / 2,
        orders_rejected: requests / 4,
        frames: requests / 8,
        gmv_cents: 1999 * requests,
        shards: 4,
        connections: 1,
        ..CoreStats::default()
    };
    let storage = |core, checkpoint_at_ms| CoreStorage {
        core,
        checkpoint_sequence: 4096,
        checkpoint_at_ms,
        checkpoint_duration_us: 250_000,
        checkpoint_bytes: 1 << 20,
        log_oldest_sequence: 1024,
        log_next_sequence: 8192,
        log_file_bytes: 3 << 30,
        log_max_bytes: 64 << 30,
        orders_in_memory: 1000,
        orders_archived: 5000,
        cold_keys: 4000,
        memory_order_records: 64 << 10,
        memory_cold_keys: 32 << 10,
        log_segments: 3,
        ..CoreStorage::default()
    };
    let mut book = server.book.lock().unwrap();
    book.stats = vec![core(0, 800), core(1, 1600)];
    // The fake's clock is 1_790_000_060_000: checkpoints 10 s and 60 s old.
    book.storage = vec![storage(0, 1_790_000_050_000), storage(1, 1_790_000_000_000)];
}

#[test]
fn stats_prints_a_table_with_a_row_per_core_and_a_total() {
    let server = server();
    set_stats(&server);
    let out = run(&args(&server, false, AdminCommand::Stats)).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5 + 6 + 6, "counters, storage, memory: {out}");
    assert!(lines[0].starts_with("orderd at ") && lines[0].ends_with("server id 7, 2 cores"), "{out}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["core", "shards", "conns", "requests", "frames", "forwarded", "placed", "rejected", "live_orders", "gmv_cents", "log_bytes"]
    );
    let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(row(2), ["0", "4", "1", "800", "100", "0", "400", "200", "0", "1599200", "0"]);
    assert_eq!(row(3), ["1", "4", "1", "1600", "200", "0", "800", "400", "0", "3198400", "0"]);
    assert_eq!(row(4), ["total", "8", "2", "2400", "300", "0", "1200", "600", "0", "4797600", "0"]);
    // Then each core's storage: checkpoint, log retained, hot and cold
    // orders; and memory by table.
    assert!(lines[6].starts_with("storage: "), "{out}");
    let cells = |i: usize| lines[i].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>();
    assert_eq!(cells(7)[..5], ["core", "ckpt seq", "ckpt age", "ckpt took", "ckpt size"], "{out}");
    assert_eq!(
        cells(8),
        ["0", "4096", "10.0 s", "250 ms", "1.0 MiB", "7168", "3.0 GiB of 64.0 GiB", "3", "1000", "5000", "4000", "0 B"],
        "{out}"
    );
    assert_eq!(cells(10)[..4], ["total", "60.0 s", "250 ms", "2.0 MiB"], "the oldest checkpoint's age: {out}");
    assert_eq!(lines[12], "memory by table", "{out}");
    assert_eq!(cells(15), ["1", "64.0 KiB", "0 B", "32.0 KiB", "0 B", "0 B", "0 B", "96.0 KiB"], "{out}");
}

#[test]
fn stats_as_json_has_every_core_and_the_totals() {
    let server = server();
    set_stats(&server);
    let v = run_json(&args(&server, true, AdminCommand::Stats));
    assert_eq!(v["server_id"], "7");
    let cores = v["cores"].as_array().unwrap();
    assert_eq!(cores.len(), 2);
    assert_eq!(cores[1]["core"], 1);
    assert_eq!(cores[1]["requests"], 1600);
    assert_eq!(v["totals"]["requests"], 2400);
    assert_eq!(v["totals"]["orders_placed"], 1200);
    assert_eq!(v["totals"]["gmv_cents"], 4_797_600);
    assert!(v["totals"].get("core").is_none(), "totals name no core: {v}");
    let storage = &v["storage"];
    assert_eq!(storage["cores"][1]["checkpoint_age_s"], 60.0, "{v}");
    assert_eq!(storage["cores"][0]["log_retained_records"], 7168, "{v}");
    assert_eq!(storage["totals"]["cold_orders"], 10_000, "{v}");
    assert_eq!(storage["totals"]["memory"]["total"], 2 * (96 << 10), "{v}");
}

#[test]
fn an_unreachable_server_is_named_with_a_hint_and_nothing_is_printed() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let args = AdminArgs { server: addr.to_string(), json: false, command: AdminCommand::Stats };
    let mut out = Vec::new();
    let e = admin::run(&args, &mut out).unwrap_err();
    assert!(matches!(e, AdminError::Unreachable { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("cannot reach orderd at {addr}: connection refused — is `orderd serve` running")), "{e}");
    assert!(out.is_empty());
}

#[test]
fn a_server_address_that_does_not_resolve_says_what_is_expected() {
    let args = AdminArgs { server: "orderd-without-port".into(), json: false, command: AdminCommand::Stats };
    let e = run(&args).unwrap_err();
    assert!(matches!(e, AdminError::BadAddress { .. }), "{e}");
    assert!(e.to_string().contains("expected HOST:PORT"), "{e}");
}

#[test]
fn place_prints_the_order_and_a_repeated_key_places_nothing_new() {
    let server = server();
    load_hot(&server);
    let timed = orderd_protocol::IdempotencyKey::timed(1_790_000_000_000, 0xaa);
    let key = Some(timed);
    let first = run(&args(&server, false, AdminCommand::Place { product: 2, user: 5, qty: 1, key })).unwrap();
    assert!(first.starts_with("order ") && first.contains(": placed — user 5, product 2, 1 x "), "{first}");
    assert!(first.contains(&format!("key {:032x}", timed.as_u128())), "{first}");
    let v = run_json(&args(&server, true, AdminCommand::Place { product: 2, user: 5, qty: 1, key }));
    let id: u64 = v["id"].as_str().unwrap().parse().unwrap();
    assert!(first.starts_with(&format!("order {id}: ")), "the same key answers the same order: {first} / {v}");
    assert_eq!(server.book.lock().unwrap().orders.len(), 1);
    let e = run(&args(&server, false, AdminCommand::Place { product: 99, user: 5, qty: 1, key: None })).unwrap_err();
    assert!(matches!(e, AdminError::NoSuchProduct { product: 99, .. }), "{e}");
}

/// `orderd admin shell` read from a pipe (a script): every line runs as the
/// command would, `--json` per line, a mistake prints its error and the
/// shell goes on, `quit` ends it with status 0.
#[test]
fn the_shell_runs_a_script_of_commands_and_goes_on_after_a_mistake() {
    use std::process::{Command, Stdio};
    let server = server();
    let history = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderd"))
        .args(["admin", "--server", &server.addrs[0].to_string(), "shell", "--history"])
        .arg(history.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orderd admin shell");
    let script = "load-workload hot\nstock 1\nstok 1\nplace 1 --user 5\nstock 1 --json\nquit\nstats\n";
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("product 1"), "stock 1: {text}");
    assert!(text.contains("unrecognized subcommand 'stok'"), "the mistake is named: {text}");
    assert!(text.contains(": placed — user 5, product 1"), "place ran after the mistake: {text}");
    let start = text.find("\n{").unwrap_or_else(|| panic!("no JSON: {text}")) + 1;
    let stock: Value = serde_json::Deserializer::from_str(&text[start..]).into_iter().next().expect("a JSON value").expect("valid JSON");
    assert_eq!(stock["product"], "1", "{stock}");
    assert!(!text.contains("core 0"), "nothing after quit ran (stats): {text}");
    assert_eq!(server.book.lock().unwrap().orders.len(), 1);
}

/// `export-catalogue` (issue 23): every product, by id, in the columns
/// `load-catalogue` reads (`stock` = supplied), the units for the record
/// after them; the file reads back as the same catalogue; `--json` too.
#[test]
fn export_catalogue_writes_every_product_as_load_catalogue_reads_it() {
    let server = server();
    load_hot(&server);
    run(&args(&server, false, AdminCommand::Place { product: 3, user: 9, qty: 1, key: None })).unwrap();
    let text = run(&args(&server, false, AdminCommand::ExportCatalogue { out: None })).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("product,unit_price_cents,stock,per_user_limit,payment_window_ms,available,reserved,paid"));
    let book = server.book.lock().unwrap().products.clone();
    let mut ids: Vec<u64> = book.keys().copied().collect();
    ids.sort_unstable();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), ids.len(), "{text}");
    for (row, id) in rows.iter().zip(&ids) {
        let s = &book[id];
        let want = format!(
            "{},{},{},{},{},{},{},{}",
            s.product, s.unit_price_cents, s.supplied, s.per_user_limit, s.payment_window_ms, s.available, s.reserved, s.paid
        );
        assert_eq!(*row, want);
    }
    assert!(rows.iter().any(|r| r.starts_with("3,") && r.ends_with(",1,0")), "product 3's reserved unit: {text}");
    // The file is a catalogue `load-catalogue` reads: the same products.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exported.csv");
    let said = run(&args(&server, false, AdminCommand::ExportCatalogue { out: Some(file.clone()) })).unwrap();
    assert_eq!(said.trim(), format!("exported {} products to {}", ids.len(), file.display()));
    let read = orderd::admin::catalogue_file::parse(std::fs::File::open(&file).unwrap()).unwrap();
    assert_eq!(
        read.iter().map(|u| (u.product, u.unit_price_cents, u.stock)).collect::<Vec<_>>(),
        ids.iter().map(|id| (*id, book[id].unit_price_cents, book[id].supplied)).collect::<Vec<_>>()
    );
    let json = run_json(&args(&server, true, AdminCommand::ExportCatalogue { out: None }));
    assert_eq!(json.as_array().map(Vec::len), Some(ids.len()));
}
