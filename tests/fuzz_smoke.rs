//! The fuzz smoke test: every committed seed of `tests/fuzz/corpus/<target>/`
//! and a few thousand deterministic mutations of them run through the fuzz
//! target bodies (`tests/fuzz/bodies.rs`, the same functions the cargo-fuzz
//! targets call), under stable `cargo test`, in a few seconds. A crash the
//! fuzzers found is committed as a seed here, so it stays fixed.
//!
//! `ORDERD_BLESS=1 cargo test --test fuzz_smoke` rewrites the generated seeds
//! (`seed-*`) from the golden vectors and the scripts below.

#[path = "fuzz/bodies.rs"]
mod bodies;

use std::path::{Path, PathBuf};

use orderd::engine::event::MAX_EVENT_LEN;
use orderd::engine::{Command, Event, Shard, ShardConfig};

/// Mutations of each seed run here (the real fuzzers run millions).
const MUTATIONS_PER_SEED: usize = 1000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))))
        .collect()
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One libFuzzer-like mutation of `input`.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 0xFF, 0x7F, 0x80, 1][rng.below(5)];
            }
            2 => {
                let cut = rng.below(v.len() + 1);
                v.truncate(cut);
            }
            3 if !v.is_empty() => {
                let from = rng.below(v.len());
                let len = rng.below(v.len() - from + 1);
                let at = rng.below(v.len() + 1);
                let piece = v[from..from + len].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let at = rng.below(v.len() + 1);
                let bytes = rng.next().to_le_bytes();
                v.splice(at..at, bytes[..1 + rng.below(8)].iter().copied());
            }
            _ if v.len() >= 4 => {
                // Overwrite a little-endian u32 (lengths, counts, offsets).
                let i = rng.below(v.len() - 3);
                let x = [0u32, 1, 8, 0xFFFF_FFF0, u32::MAX, 1 << 20, rng.next() as u32][rng.below(7)];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn smoke(target: &str) {
    if std::env::var_os("ORDERD_BLESS").is_some() {
        bless(target);
    }
    let seeds = seeds(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let mut rng = Rng(0x0DDE_12F0_0000_0001 ^ target.len() as u64);
    for (name, seed) in &seeds {
        assert!(bodies::run(target, seed), "no target {target}");
        for _ in 0..MUTATIONS_PER_SEED {
            let input = mutate(&mut rng, seed);
            // A failure names the input, so it can be saved as a seed.
            let outcome = std::panic::catch_unwind(|| bodies::run(target, &input));
            assert!(outcome.is_ok(), "{target}: a mutation of {name} crashed: {input:02x?}");
        }
    }
}

#[test]
fn fuzz_frames_corpus_replays_clean() {
    smoke("frames");
}

#[test]
fn fuzz_server_frames_corpus_replays_clean() {
    smoke("server_frames");
}

#[test]
fn fuzz_engine_corpus_replays_clean() {
    smoke("engine");
}

#[test]
fn fuzz_events_corpus_replays_clean() {
    smoke("events");
}

#[test]
fn every_target_has_a_corpus_and_the_corpus_no_stray_target() {
    let mut dirs: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus"))
        .expect("tests/fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut targets = bodies::TARGETS.map(String::from).to_vec();
    targets.sort();
    assert_eq!(dirs, targets);
}

// ---- the generated seeds -----------------------------------------------------------

const VECTORS_CLIENT: [&str; 17] = [
    "hello",
    "requests_adjust_stock",
    "requests_batch",
    "requests_cancel_order",
    "requests_empty",
    "requests_get_order",
    "requests_get_order_by_key",
    "requests_get_stock",
    "requests_pay_order",
    "requests_place_order",
    "requests_stats",
    "requests_subscribe_beginning",
    "requests_subscribe_now",
    "requests_subscribe_positions",
    "requests_upsert_product",
    "error_frame_too_large",
    "replies_order",
];

const VECTORS_SERVER: [&str; 9] = [
    "welcome_2_cores",
    "error_frame_too_large",
    "events",
    "replies_batch",
    "replies_order",
    "replies_rejected",
    "replies_stats",
    "replies_stock",
    "replies_subscribed",
];

fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/vectors").join(format!("{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Engine scripts: `[op, time, fields...]` steps (see `bodies::engine`).
const ENGINE_SCRIPTS: [(&str, &[u8]); 4] = [
    // Upsert product 1 (price 10, stock 100, window 1000 ms), place, pay, get.
    ("place_pay", &[6, 0, 0, 0, 5, 4, 0, 0, 0, 1, 1, 0, 0, 0, 1, 3, 1, 3, 0, 1, 4, 0, 1, 5, 0, 0]),
    // Place then let the window pass: expiry by the timer tick and by a pay.
    ("expire", &[6, 0, 0, 0, 5, 4, 0, 0, 0, 2, 2, 0, 0, 1, 0x80, 5, 0, 0, 3, 3, 0, 1, 5, 1, 5, 0, 0]),
    // A limited product (limit 1): the second unit for the same user is refused; cancel; retry the key.
    ("limit_cancel_retry", &[6, 0, 1, 0, 4, 3, 2, 0, 0, 4, 2, 1, 0, 0, 0, 0, 5, 2, 1, 0, 0, 2, 0, 1, 0, 0, 4, 2, 1, 0, 0, 7, 0, 1, 1]),
    // Adjustments at the edges and a step back in time.
    ("adjust_edges", &[6, 0, 2, 1, 7, 0, 0, 7, 0, 2, 6, 7, 6, 2, 7, 7, 0, 0, 3, 2, 2, 2, 0, 6, 2]),
];

/// The events of an engine script, as `events` target records `[kind, body]`.
fn events_of(script: &[u8]) -> Vec<u8> {
    // Replays the script on shard 0 with the engine target's decoding, via
    // the public engine API only.
    let mut shard = Shard::new(ShardConfig { max_orders: 24, max_idempotency_keys: 24, hash_seed: 1, ..ShardConfig::new(0) });
    let mut events = Vec::new();
    let mut now = 1_000_000;
    for step in script.chunks(2) {
        now += 1000;
        let cmd = match step {
            [0, n] => Command::PlaceOrder(orderd_protocol::PlaceOrder {
                key: orderd_protocol::IdempotencyKey::timed(1_000_000, u128::from(*n)),
                user: u64::from(*n % 3),
                product: 1,
                unit_price_cents: 10,
                qty: 1,
            }),
            [1, n] => Command::Pay { order_id: u64::from(*n) },
            [2, n] => Command::Cancel { order_id: u64::from(*n) },
            [5, d] => Command::AdjustStock { product: 1, delta: i64::from(*d) - 2 },
            _ => Command::Upsert(orderd_protocol::UpsertProduct {
                product: 1,
                unit_price_cents: 10,
                stock: 5,
                payment_window_ms: 1500,
                per_user_limit: 2,
            }),
        };
        shard.apply(&cmd, now, &mut events);
    }
    shard.expire_due(now + 10_000, &mut events);
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_EVENT_LEN];
    for event in &events {
        let len = event.encode(&mut buf).expect("an event fits MAX_EVENT_LEN");
        out.push(event.kind());
        out.extend_from_slice(&buf[..len]);
    }
    out
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn bless(target: &str) {
    match target {
        "frames" => {
            let mut all = Vec::new();
            for name in VECTORS_CLIENT {
                let v = vector(name);
                // Whole, one byte at a time, and small limits with random chunks.
                for (mode, tag) in [(0u8, "whole"), (1, "bytewise"), (0x85, "small")] {
                    let mut seed = vec![mode];
                    seed.extend_from_slice(&v);
                    write_seed(target, &format!("{name}-{tag}"), &seed);
                }
                if name != "hello" && name.starts_with("requests") {
                    all.extend_from_slice(&v);
                }
            }
            let mut pipelined = vector("hello");
            pipelined.extend_from_slice(&all);
            write_seed(target, "pipelined", &[[4u8].as_slice(), &pipelined].concat());
        }
        "server_frames" => {
            let mut all = Vec::new();
            for name in VECTORS_SERVER {
                let v = vector(name);
                write_seed(target, name, &v);
                all.extend_from_slice(&v);
            }
            write_seed(target, "all", &all);
        }
        "engine" => {
            for (name, script) in ENGINE_SCRIPTS {
                write_seed(target, name, script);
            }
        }
        "events" => {
            let scripts: [(&str, &[u8]); 3] = [
                ("place_pay_cancel", &[6, 0, 0, 1, 0, 2, 1, 1, 2, 2, 5, 9]),
                ("expiries", &[6, 0, 0, 1, 0, 2, 0, 3, 0, 4]),
                ("adjust", &[6, 0, 5, 0, 5, 4, 0, 1, 5, 200]),
            ];
            for (name, script) in scripts {
                let mut ids = script.to_vec();
                // Order ids on shard 0 are the sequence numbers themselves.
                for step in ids.chunks_mut(2) {
                    if matches!(step[0], 1 | 2) {
                        step[1] = step[1].min(3);
                    }
                }
                write_seed(target, name, &events_of(&ids));
            }
        }
        other => panic!("no target {other}"),
    }
}

#[test]
fn the_engine_seeds_produce_events() {
    // The event seeds are only useful if their scripts do something.
    assert!(events_of(&[6, 0, 0, 1, 1, 1]).len() > 3 * 16);
    let _ = Event::encoded_len_of_kind(0);
}
