//! `orderd host-check` as an operator runs it: the real binary against
//! this host, then with one requirement broken at a time (a low
//! `RLIMIT_MEMLOCK`, a RAM-backed data directory with `--durability sync`,
//! a listen port already taken), each time expecting a FAIL line with its
//! fix and a non-zero exit. Nothing here needs root.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A host-check run takes ~1 s (mostly the fdatasync sampling, itself
/// capped at 5 s); past this the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

fn host_check(args: &[&str], data_dir: &std::path::Path, cmd: impl FnOnce(&mut Command)) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orderd"));
    c.arg("host-check").args(["--cores", "0", "--data-dir"]).arg(data_dir).args(args);
    if !args.contains(&"--listen") {
        c.args(["--listen", "127.0.0.1:0"]);
    }
    if !args.contains(&"--metrics-listen") && !args.contains(&"--no-metrics") {
        c.args(["--metrics-listen", "127.0.0.1:0"]);
    }
    // The service's environment must not leak into the test's flags.
    for var in [
        "ORDERD_DATA_DIR",
        "ORDERD_CORES",
        "ORDERD_LISTEN",
        "ORDERD_DURABILITY",
        "ORDERD_MAX_LOG_BYTES",
        "ORDERD_METRICS_LISTEN",
        "ORDERD_NO_METRICS",
    ] {
        c.env_remove(var);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd(&mut c);
    let mut child = c.spawn().expect("spawn orderd host-check");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("orderd host-check did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child.stdout.take().expect("stdout").read_to_end(&mut stdout).expect("read stdout");
    child.stderr.take().expect("stderr").read_to_end(&mut stderr).expect("read stderr");
    let out = Output { status, stdout, stderr };
    println!("{}", String::from_utf8_lossy(&out.stdout));
    out
}

fn line<'a>(text: &'a str, status: &str, name: &str) -> Option<&'a str> {
    text.lines().find(|l| l.split_whitespace().take(2).eq([status, name]))
}

#[test]
fn this_host_is_reported_one_line_per_check_and_json_agrees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = host_check(&[], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let fails = text.lines().filter(|l| l.starts_with("FAIL ")).count();
    assert_eq!(out.status.success(), fails == 0, "exit code must be non-zero exactly when a check fails:\n{text}");
    for l in text.lines().filter(|l| l.starts_with("WARN ") || l.starts_with("FAIL ")) {
        assert!(l.contains(" — fix: "), "a WARN or FAIL line without its fix: {l}");
    }
    for name in [
        "kernel",
        "io_uring_setup",
        "memlock",
        "cpus",
        "smt",
        "governor",
        "halt_poll",
        "thp",
        "nic_irqs",
        "data_fs",
        "fdatasync",
        "free_space",
        "somaxconn",
        "port_range",
        "listen_ports",
        "metrics_port",
    ] {
        assert!(text.lines().any(|l| l.split_whitespace().nth(1) == Some(name)), "no {name} line:\n{text}");
    }
    assert!(text.lines().last().unwrap_or("").starts_with("host-check: "), "no summary line:\n{text}");
    // The temp file of the fdatasync sampling is gone.
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 0, "host-check left files behind");

    let json = host_check(&["--json"], dir.path(), |_| {});
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json prints one JSON object");
    let checks = report["checks"].as_array().expect("checks array");
    assert!(checks.len() >= 15);
    for c in checks {
        assert!(["PASS", "WARN", "FAIL", "SKIP"].contains(&c["status"].as_str().unwrap_or("")), "{c}");
        assert!(!c["detail"].as_str().unwrap_or("").is_empty(), "{c}");
    }
    assert_eq!(report["ok"].as_bool(), Some(json.status.success()));
}

#[test]
fn a_low_memlock_limit_fails_with_the_ulimit_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = host_check(&[], dir.path(), |c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setrlimit, which is async-signal-safe, on a local struct;
        // lowering a limit needs no privilege.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let l = line(&text, "FAIL", "memlock").unwrap_or_else(|| panic!("no FAIL memlock line:\n{text}"));
    assert!(l.contains("64 KiB") && l.contains("1536 KiB"), "limit and minimum (3 rings × 512 KiB × 1 core) are named: {l}");
    assert!(l.contains("ulimit -l 30720") && l.contains("LimitMEMLOCK="), "the fix is given: {l}");
    assert!(!out.status.success(), "a FAIL must give a non-zero exit code");
}

/// A tmpfs directory this user can write to, or why there is none.
fn tmpfs_dir() -> Result<tempfile::TempDir, String> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| format!("cannot read /proc/mounts: {e}"))?;
    let shm_is_tmpfs = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "/dev/shm" && f[2] == "tmpfs"
    });
    if !shm_is_tmpfs {
        return Err("/dev/shm is not a tmpfs on this host".into());
    }
    tempfile::tempdir_in("/dev/shm").map_err(|e| format!("cannot create a directory in /dev/shm: {e}"))
}

#[test]
fn a_tmpfs_data_dir_fails_for_sync_and_warns_for_async() {
    let dir = match tmpfs_dir() {
        Ok(d) => d,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let out = host_check(&["--durability", "sync"], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let l = line(&text, "FAIL", "data_fs").unwrap_or_else(|| panic!("no FAIL data_fs line:\n{text}"));
    assert!(l.contains("tmpfs") && l.contains("fix: point --data-dir at a disk filesystem"), "{l}");
    assert!(!out.status.success());

    let out = host_check(&["--durability", "async"], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(line(&text, "WARN", "data_fs").is_some(), "async on tmpfs is a WARN:\n{text}");
}

#[test]
fn a_taken_listen_port_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = host_check(&["--listen", &addr], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let l = line(&text, "FAIL", "listen_ports").unwrap_or_else(|| panic!("no FAIL listen_ports line:\n{text}"));
    assert!(l.contains(&addr) && l.contains("fix: stop the process holding it"), "{l}");
    assert!(!out.status.success());
}

#[test]
fn a_taken_metrics_port_fails_and_so_does_one_inside_the_order_ports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = host_check(&["--metrics-listen", &addr], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let l = line(&text, "FAIL", "metrics_port").unwrap_or_else(|| panic!("no FAIL metrics_port line:\n{text}"));
    assert!(l.contains(&addr) && l.contains("--no-metrics"), "{l}");
    assert!(!out.status.success());

    // Core 0 listens on the port the metrics would take.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let out = host_check(&["--listen", &free, "--metrics-listen", &free], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let l = line(&text, "FAIL", "metrics_port").unwrap_or_else(|| panic!("no FAIL metrics_port line:\n{text}"));
    assert!(l.contains("order port of core 0"), "{l}");

    let out = host_check(&["--no-metrics"], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(line(&text, "PASS", "metrics_port").is_some_and(|l| l.contains("--no-metrics")), "{text}");
}

#[test]
fn beside_a_live_server_its_own_ports_pass_and_the_probe_stays_out_of_its_directory() {
    // The defect: host-check FAILed on the ports its own server holds and
    // wrote its flush probe into the live data directory.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = common::Server::start_in(dir.path(), "0", &[], &[]);
    let (listen, metrics) = (server.seed.to_string(), server.metrics.expect("metrics on").to_string());
    let out = host_check(&["--listen", &listen, "--metrics-listen", &metrics], dir.path(), |_| {});
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let pid = server.child.id();
    let live = line(&text, "PASS", "live_server").unwrap_or_else(|| panic!("no live_server line:\n{text}"));
    assert!(live.contains(&format!("pid {pid}")), "{live}");
    let ports = line(&text, "PASS", "listen_ports").unwrap_or_else(|| panic!("listen_ports did not pass:\n{text}"));
    assert!(ports.contains("served by the orderd of this data directory"), "{ports}");
    assert!(line(&text, "PASS", "metrics_port").is_some_and(|l| l.contains("metrics endpoint of the orderd")), "{text}");
    let probe =
        text.lines().find(|l| l.split_whitespace().nth(1) == Some("fdatasync")).unwrap_or_else(|| panic!("no fdatasync line:\n{text}"));
    assert!(probe.contains("beside the live server"), "{probe}");
}
