//! The cold store, measured against an embedded key-value store: the
//! slot-addressed archive orderd uses (`engine::archive`) and redb (a
//! well-kept embedded B-tree store), on what tiering needs of them.
//!
//! ```text
//! cargo bench --bench cold_store            # 2,000,000 orders (~128 MB)
//! ORDERD_COLD_DIR=/path cargo bench --bench cold_store   # on another disk
//! ```
//!
//! - **write**: archiving a batch of 16,384 final orders (what one
//!   archiver round of a busy shard writes), made durable: the archive's
//!   `pwrite`s of consecutive slots + `fsync`; redb's one write
//!   transaction (`u64` order slot -> 64-byte record) committed with its
//!   default (immediate, durable) commit. Per order and per batch.
//! - **lookup by id**: one random archived order, page cache warm: the
//!   archive's one 64-byte `pread` at `64 * (slot + 1)`; redb's read
//!   transaction and B-tree `get`. p50 / p99 / max over 200,000 lookups.
//! - **lookup by key**: redb with a second table `key -> slot` (keys on
//!   disk, no memory per key) against the archive plus orderd's in-memory
//!   cold key index (`engine::cold`, 10-21 bytes of memory per key).
//! - **recovery**: what a restart reads: reopen, and rebuild the cold key
//!   index from every record (the archive's sequential scan) or open redb
//!   (its tables need no rebuild; its key lookups go to disk instead).
//! - bytes on disk per order.
//!
//! Results are in `benches/README.md` ("The cold store").

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd::engine::archive::{encode_record, OrderArchive};
use orderd::engine::cold::ColdKeys;
use orderd::engine::orders::OrderRecord;
use orderd::log::RealStorage;
use orderd_protocol::{IdempotencyKey, OrderState};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const ORDERS_BY_SLOT: TableDefinition<u64, &[u8]> = TableDefinition::new("orders");
const SLOTS_BY_KEY: TableDefinition<u128, u64> = TableDefinition::new("keys");
const BATCH: usize = 16_384;

fn record(slot: u64) -> OrderRecord {
    OrderRecord {
        key: IdempotencyKey::timed(1_790_000_000_000 + slot / 100, u128::from(slot) * 0x9e37_79b9_7f4a_7c15),
        user: slot % 100_000,
        product: 1 + slot % 10_000,
        unit_price_cents: 1_000 + slot % 5_000,
        created_ms: 1_790_000_000_000 + slot / 100,
        expires_ms: u64::MAX,
        qty: 1,
        state: if slot.is_multiple_of(20) { OrderState::Cancelled } else { OrderState::Paid },
    }
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn line(mut self, what: &str) {
        self.0.sort_unstable();
        let at = |q: f64| self.0[((self.0.len() - 1) as f64 * q) as usize].as_nanos();
        println!("{what:<44} p50 {:>7} ns  p99 {:>7} ns  max {:>9} ns", at(0.5), at(0.99), at(1.0));
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let orders: u64 = if full { 2_000_000 } else { 40_000 };
    let lookups = if full { 200_000 } else { 2_000 };
    let base = std::env::var_os("ORDERD_COLD_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    println!("{orders} orders in {}", dir.path().display());

    // Write.
    let archive = Arc::new(OrderArchive::open(dir.path(), 0, &RealStorage).expect("archive"));
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for first in (0..orders).step_by(BATCH) {
        let batch: Vec<(u32, OrderRecord)> = (first..(first + BATCH as u64).min(orders)).map(|s| (s as u32, record(s))).collect();
        let t = Instant::now();
        archive.write(&batch).expect("write");
        archive.sync(&RealStorage).expect("sync");
        worst = worst.max(t.elapsed());
    }
    let archive_write = started.elapsed();
    let db = Database::create(dir.path().join("orders.redb")).expect("redb");
    let started = Instant::now();
    let mut redb_worst = Duration::ZERO;
    for first in (0..orders).step_by(BATCH) {
        let t = Instant::now();
        let tx = db.begin_write().expect("tx");
        {
            let mut by_slot = tx.open_table(ORDERS_BY_SLOT).expect("table");
            let mut by_key = tx.open_table(SLOTS_BY_KEY).expect("table");
            for s in first..(first + BATCH as u64).min(orders) {
                let r = record(s);
                by_slot.insert(s, &encode_record(&r)[..]).expect("insert");
                by_key.insert(r.key.as_u128(), s).expect("insert");
            }
        }
        tx.commit().expect("commit");
        redb_worst = redb_worst.max(t.elapsed());
    }
    let redb_write = started.elapsed();
    let per = |d: Duration| d.as_nanos() as f64 / orders as f64;
    println!(
        "write, durable per batch of {BATCH}: archive {:.0} ns/order (worst batch {:.1} ms); redb (both tables) {:.0} ns/order (worst batch {:.1} ms)",
        per(archive_write),
        worst.as_secs_f64() * 1e3,
        per(redb_write),
        redb_worst.as_secs_f64() * 1e3
    );
    let redb_bytes = std::fs::metadata(dir.path().join("orders.redb")).map(|m| m.len()).unwrap_or(0);
    let archive_bytes = archive.file_bytes().expect("len");
    println!("bytes on disk per order: archive {:.1}, redb {:.1}", archive_bytes as f64 / orders as f64, redb_bytes as f64 / orders as f64);

    // Recovery: reopen; the archive rebuilds the in-memory key index.
    drop(archive);
    let started = Instant::now();
    let archive = OrderArchive::open(dir.path(), 0, &RealStorage).expect("archive");
    let hasher = foldhash::fast::FixedState::with_seed(7);
    let mut keys = ColdKeys::new(24 * 3600 * 1000, usize::MAX);
    archive
        .scan(
            0,
            orders as u32,
            |_| false,
            |slot, r| {
                keys.insert(r.key.time_ms().unwrap_or(0), std::hash::BuildHasher::hash_one(&hasher, r.key), slot);
            },
        )
        .expect("scan");
    let archive_recovery = started.elapsed();
    drop(db);
    let started = Instant::now();
    let db = Database::open(dir.path().join("orders.redb")).expect("redb");
    let redb_recovery = started.elapsed();
    println!(
        "recovery (reopen; the archive rebuilds its key index of {} keys, {} KiB): archive {:.0} ms, redb {:.1} ms",
        keys.len(),
        keys.allocated_bytes() / 1024,
        archive_recovery.as_secs_f64() * 1e3,
        redb_recovery.as_secs_f64() * 1e3
    );

    // Lookups, page cache warm (one pass over both files first).
    let mut sink = [0u8; 64];
    let file = std::fs::File::open(archive.path()).expect("open");
    for s in 0..orders {
        file.read_exact_at(&mut sink, (s + 1) * 64).expect("read");
    }
    let mut rng = SmallRng::seed_from_u64(1);
    let slots: Vec<u64> = (0..lookups).map(|_| rng.random_range(0..orders)).collect();
    let mut lat = Vec::with_capacity(slots.len());
    for &s in &slots {
        let t = Instant::now();
        let r = archive.read(s as u32).expect("read");
        lat.push(t.elapsed());
        assert_eq!(r, Some(record(s)));
    }
    Latencies(lat).line("lookup by id: archive pread");
    let rtx = db.begin_read().expect("read tx");
    let by_slot = rtx.open_table(ORDERS_BY_SLOT).expect("table");
    let by_key = rtx.open_table(SLOTS_BY_KEY).expect("table");
    for &s in &slots {
        std::hint::black_box(by_slot.get(s).expect("get").map(|v| v.value().len()));
    }
    let mut lat = Vec::with_capacity(slots.len());
    for &s in &slots {
        let t = Instant::now();
        let got = by_slot.get(s).expect("get").map(|v| v.value().to_vec());
        lat.push(t.elapsed());
        assert_eq!(got.as_deref(), Some(&encode_record(&record(s))[..]));
    }
    Latencies(lat).line("lookup by id: redb get (one read transaction)");
    // orderd's lookup by key: the cold key bucket, then the archive.
    let by_memory_index = |key: IdempotencyKey| {
        let hash = std::hash::BuildHasher::hash_one(&hasher, key);
        keys.candidates(key.time_ms().unwrap_or(0), hash).find_map(|slot| archive.read(slot).ok().flatten().filter(|r| r.key == key))
    };
    let mut lat = Vec::with_capacity(slots.len());
    for &s in &slots {
        let key = record(s).key;
        let t = Instant::now();
        let found = by_memory_index(key);
        lat.push(t.elapsed());
        assert!(found.is_some());
    }
    Latencies(lat).line("lookup by key: memory index + archive pread");
    let mut lat = Vec::with_capacity(slots.len());
    for &s in &slots {
        let key = record(s).key;
        let t = Instant::now();
        let slot = by_key.get(key.as_u128()).expect("get").map(|v| v.value());
        let got = slot.and_then(|slot| by_slot.get(slot).expect("get").map(|v| v.value().to_vec()));
        lat.push(t.elapsed());
        assert!(got.is_some());
    }
    Latencies(lat).line("lookup by key: redb key table + get");
    // A key that placed nothing (every new order asks this).
    let mut lat = Vec::with_capacity(slots.len());
    for i in 0..lookups {
        let key = IdempotencyKey::timed(1_790_000_000_000 + (i as u64 % orders) / 100, rng.random::<u128>());
        let t = Instant::now();
        let found = by_memory_index(key);
        lat.push(t.elapsed());
        assert!(found.is_none());
    }
    Latencies(lat).line("new key (absent): memory index");
    let mut lat = Vec::with_capacity(slots.len());
    for i in 0..lookups {
        let key = IdempotencyKey::timed(1_790_000_000_000 + (i as u64 % orders) / 100, rng.random::<u128>());
        let t = Instant::now();
        let found = by_key.get(key.as_u128()).expect("get").is_some();
        lat.push(t.elapsed());
        assert!(!found);
    }
    Latencies(lat).line("new key (absent): redb key table");
}
