//! A full disk (not the `--max-log-bytes` bound): state changes are
//! refused with `log_full` without retrying the log's growth for each of
//! them (issue 21: that made a full disk a near-outage), and service
//! comes back once space returns. The disk is a small tmpfs mounted for
//! the test; where mounting is not allowed (not root) the test says so
//! and does nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::{PlaceOrder, Reply, Request, Status, UpsertProduct};

/// A 24 MiB tmpfs mounted on a temp directory, with an empty `data`
/// directory in it; unmounted (and removed) on drop.
struct SmallDisk {
    /// The mount point (the file system's root).
    root: tempfile::TempDir,
    /// The data directory on it.
    data: PathBuf,
}

impl SmallDisk {
    /// The disk, or `None` (with a line saying why) where mounting is not
    /// allowed (not root).
    fn mount() -> Option<SmallDisk> {
        let root = tempfile::tempdir().unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(root.path()).status();
        match ok {
            Ok(s) if s.success() => {
                let data = root.path().join("data");
                std::fs::create_dir(&data).unwrap();
                Some(SmallDisk { root, data })
            }
            other => {
                eprintln!("SKIPPED: cannot mount a tmpfs on {} ({other:?}); run as root to test a full disk", root.path().display());
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.root.path()).status();
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter_map(|l| l.strip_prefix(name).and_then(|rest| rest.rsplit_once(' ')).and_then(|(_, v)| v.parse::<f64>().ok())).sum()
}

/// Fills the file system of `dir` with a file of zeros until it is full.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn a_full_disk_refuses_changes_without_retrying_for_each_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount() else { return };
    let (outer, data) = (disk.root.path(), disk.data.clone());
    let flags = ["--segment-bytes", "1MiB", "--shards", "4", "--no-checkpoints", "--prepare-segments", "alloc"];
    let server = Server::start_in(&data, "0", &flags, &[]);
    let mut client = server.client();
    let upsert = UpsertProduct { product: 1, unit_price_cents: 100, stock: 10_000_000, payment_window_ms: 0, per_user_limit: 0 };
    client.upsert_product(upsert).unwrap();
    let filler = fill(outer);

    // Orders until the current segment is full and the next cannot be made,
    // then 20,000 more, all refused.
    let started = Instant::now();
    let (mut refused, mut accepted, mut user) = (0u64, 0u64, 0u64);
    while refused < 20_000 {
        assert!(started.elapsed() < Duration::from_secs(120), "the disk never filled ({accepted} accepted)");
        let batch: Vec<Request> = (0..500)
            .map(|_| {
                user += 1;
                Request::PlaceOrder(PlaceOrder::with_new_key(user, 1, 1, 100))
            })
            .collect();
        for reply in client.execute(&batch).unwrap() {
            match reply {
                Reply::Order(_) => accepted += 1,
                Reply::Rejected(r) if r.status() == Some(Status::LogFull) => refused += 1,
                other => panic!("expected an order or log_full, got {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (_, text) = server.scrape();
    let failures = metric(&text, "orderd_log_grow_failures_total");
    // One attempt per backoff (10 ms doubling to 1 s) at most: 7 to reach
    // 1 s, then one a second. Retrying per refused change made 20,000.
    let bound = 8.0 + elapsed.ceil();
    eprintln!("{accepted} accepted, {refused} refused in {elapsed:.1} s; {failures} failed attempts to grow (bound {bound})");
    assert!(failures >= 1.0, "the disk filled: at least one attempt failed");
    assert!(failures <= bound, "{failures} attempts to grow the log for {refused} refusals");
    // Reads go on.
    assert_eq!(client.stock(1).unwrap().product, 1);

    // Space returns: orders are accepted again within the backoff.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        user += 1;
        match client.execute(&[Request::PlaceOrder(PlaceOrder::with_new_key(user, 1, 1, 100))]).unwrap().pop() {
            Some(Reply::Order(_)) => break,
            Some(Reply::Rejected(r)) if r.status() == Some(Status::LogFull) => {
                assert!(Instant::now() < deadline, "orders still refused 10 s after space returned");
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("expected an order or log_full, got {other:?}"),
        }
    }
}

/// Issue 21: a last segment found cut short on a full disk, the operator
/// accepting the loss (`--truncate-corrupt-log`). Recovery used to extend
/// it back to its size as a sparse hole; the first order written into the
/// hole then killed the server with SIGBUS, on every restart. Now the
/// extension is allocated, and on a full disk the start is refused saying
/// how much room is needed, with the file left as it was; once room is
/// made, the server starts with every order before the cut.
#[test]
fn a_cut_short_last_segment_on_a_full_disk_refuses_the_start_instead_of_crashing() {
    let Some(disk) = SmallDisk::mount() else { return };
    let (outer, data) = (disk.root.path(), disk.data.clone());
    let flags = ["--segment-bytes", "4MiB", "--shards", "4", "--no-checkpoints", "--prepare-segments", "alloc", "--no-metrics"];
    let mut server = Server::start_in(&data, "0", &flags, &[]);
    let mut client = server.client();
    let upsert = UpsertProduct { product: 1, unit_price_cents: 100, stock: 1000, payment_window_ms: 0, per_user_limit: 0 };
    client.upsert_product(upsert).unwrap();
    for user in 1..=50 {
        client.place_order(PlaceOrder::with_new_key(user, 1, 1, 100)).unwrap();
    }
    drop(client);
    server.kill();

    // The last segment loses its end (its records are in the first KiB),
    // and the disk fills up.
    let core = data.join("core-0000");
    let mut segments: Vec<_> =
        std::fs::read_dir(&core).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
    segments.sort();
    let last = segments.pop().expect("a segment");
    std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(64 * 1024).unwrap();
    let filler = fill(outer);

    // Without the flag the cut is refused as damage; with it, for want of room.
    let (status, stderr) = common::start_fails(&data, "0", &flags);
    assert!(!status.success() && stderr.contains("cut short"), "{stderr}");
    let truncating: Vec<&str> = flags.iter().copied().chain(["--truncate-corrupt-log"]).collect();
    let (status, stderr) = common::start_fails(&data, "0", &truncating);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("no room to allocate") && stderr.contains(&last.display().to_string()), "{stderr}");
    assert_eq!(std::fs::metadata(&last).unwrap().len(), 64 * 1024, "the refused start left the file as it was");

    std::fs::remove_file(filler).unwrap();
    let server = Server::start_in(&data, "0", &truncating, &[]);
    let mut client = server.client();
    assert_eq!(client.stock(1).unwrap().reserved, 50, "every acknowledged order is back");
    client.place_order(PlaceOrder::with_new_key(51, 1, 1, 100)).expect("and the tail takes new orders");
}
