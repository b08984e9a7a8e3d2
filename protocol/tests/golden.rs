//! Golden vectors: `protocol/vectors/*.bin`, one frame per file, each with
//! the value it encodes below and described in `vectors/README.md`.
//!
//! Both directions are checked for every vector: encoding the value gives
//! exactly the file's bytes, and decoding the file gives the value. A change
//! to the wire format therefore fails here. The files are rewritten only on
//! request: `ORDERD_BLESS=1 cargo test -p orderd-protocol --test golden`.

mod common;

use std::path::{Path, PathBuf};

use common::{encode, hex, hex_blocks, parse_hex_dump, receive, Outcome, Payload};
use orderd_protocol::codec::Encoder;
use orderd_protocol::frame::FrameLimits;
use orderd_protocol::message::{
    AdjustStock, Aggregates, AggregatesQuery, Checkpointed, ClusterMapInfo, ClusterNode, CoreAddr, CoreStats, CoreStorage, ErrorFrame,
    EventKind, Hello, IdempotencyKey, KeyRef, ListProducts, MoveBytes, MoveShard, MoveStep, Order, OrderRef, OrderState, PlaceOrder,
    ProductPage, ProductRef, ProductSales, Rejection, Replicate, Replicated, Reply, Request, SeedTo, ServerLimits, ShardMoved, Stats,
    StockInfo, StorageStats, StreamEvent, StreamStart, Subscribe, Subscribed, UpsertProduct, Welcome, WindowTotals, NO_OWNER,
};
use orderd_protocol::Status;

/// One golden vector: a file name, the frame's protocol version (the
/// oldest that defines its payload), its correlation id and its payload.
pub struct Vector {
    pub file: &'static str,
    pub version: u16,
    pub correlation: u64,
    pub payload: Payload,
}

const KEY: IdempotencyKey = IdempotencyKey { hi: 0x0102_0304_0506_0708, lo: 0x1112_1314_1516_1718 };

fn place_order() -> PlaceOrder {
    PlaceOrder { key: KEY, user: 0x2a, product: 0x3e8, unit_price_cents: 1999, qty: 2 }
}

fn order() -> Order {
    Order {
        id: 0x0003_0000_0000_0007,
        key: KEY,
        user: 0x2a,
        product: 0x3e8,
        unit_price_cents: 1999,
        created_ms: 1_764_000_000_000,
        expires_ms: 1_764_000_900_000,
        qty: 2,
        state: OrderState::Placed,
    }
}

fn stock() -> StockInfo {
    StockInfo {
        product: 0x3e8,
        unit_price_cents: 1999,
        available: 98,
        reserved: 2,
        paid: 0,
        supplied: 100,
        payment_window_ms: 900_000,
        per_user_limit: 5,
    }
}

fn welcome() -> Welcome {
    Welcome {
        server_id: 0x5eed,
        version: 1,
        core: 1,
        cores: vec![CoreAddr::new(0, "127.0.0.1:7000".parse().unwrap()), CoreAddr::new(1, "[::1]:7001".parse().unwrap())],
        shard_owner: vec![0, 1, 0, 1],
        limits: ServerLimits { max_frame_bytes: 1 << 20, max_batch: 1024, max_in_flight: 64 },
    }
}

fn events() -> Vec<StreamEvent> {
    vec![
        StreamEvent {
            offset: 4096,
            order_id: 0x0003_0000_0000_0007,
            product: 0x3e8,
            user: 0x2a,
            amount_cents: 3998,
            time_ms: 1_764_000_000_000,
            qty: 2,
            core: 1,
            kind: EventKind::Placed,
        },
        StreamEvent {
            offset: 4160,
            order_id: 0,
            product: 0x3e8,
            user: 0,
            amount_cents: 1999,
            time_ms: 1_764_000_000_500,
            qty: (-10i64) as u64,
            core: 1,
            kind: EventKind::StockAdjusted,
        },
    ]
}

/// The core of `replies_storage.bin`.
fn core_storage() -> CoreStorage {
    CoreStorage {
        checkpoint_sequence: 4096,
        checkpoint_at_ms: 1_790_000_000_000,
        checkpoint_duration_us: 250_000,
        checkpoint_bytes: 1 << 20,
        log_oldest_sequence: 1024,
        log_next_sequence: 8192,
        log_file_bytes: 3 << 30,
        log_max_bytes: 64 << 30,
        orders_in_memory: 1000,
        orders_archived: 5000,
        cold_keys: 4000,
        archive_bytes: 320_064,
        memory_order_records: 65_536,
        memory_key_index: 32_768,
        memory_cold_keys: 16_384,
        memory_deadlines: 8192,
        memory_holdings: 4096,
        memory_catalogue: 2048,
        core: 1,
        log_segments: 3,
    }
}

/// The map of `replies_cluster.bin`: two nodes, four shards, one unowned.
fn cluster_map() -> ClusterMapInfo {
    ClusterMapInfo {
        version: 2,
        nodes: vec![
            ClusterNode { node: "a".into(), cores: vec!["10.0.0.1:7070".into(), "10.0.0.1:7071".into()] },
            ClusterNode { node: "b".into(), cores: vec![] },
        ],
        owners: vec![0, 1, 0, NO_OWNER],
        owner_cores: vec![0, 0, 1, 0],
    }
}

/// Every golden vector.
pub fn vectors() -> Vec<Vector> {
    use Payload as P;
    let one = |file, correlation, r: Request| Vector { file, version: r.since_version(), correlation, payload: P::Requests(vec![r]) };
    let reply = |file, version, r: Reply| Vector { file, version, correlation: 9, payload: P::Replies(vec![r]) };
    vec![
        Vector {
            file: "hello.bin",
            version: 1,
            correlation: 0,
            payload: P::Hello(Hello { client_id: 0x0123_4567_89ab_cdef, min_version: 1, max_version: 1 }),
        },
        Vector { file: "welcome_2_cores.bin", version: 1, correlation: 0, payload: P::Welcome(welcome()) },
        Vector {
            file: "error_frame_too_large.bin",
            version: 1,
            correlation: 5,
            payload: P::Error(ErrorFrame { code: Status::FrameTooLarge.code(), detail: 1 << 20 }),
        },
        Vector { file: "requests_empty.bin", version: 1, correlation: 1, payload: P::Requests(vec![]) },
        one("requests_place_order.bin", 1, Request::PlaceOrder(place_order())),
        one("requests_pay_order.bin", 2, Request::PayOrder(OrderRef { order_id: 0x0003_0000_0000_0007 })),
        one("requests_cancel_order.bin", 3, Request::CancelOrder(OrderRef { order_id: 0x0003_0000_0000_0007 })),
        one("requests_get_order.bin", 4, Request::GetOrder(OrderRef { order_id: 0x0003_0000_0000_0007 })),
        one("requests_get_order_by_key.bin", 5, Request::GetOrderByKey(KeyRef { key: KEY, product: 0x3e8 })),
        one("requests_get_stock.bin", 6, Request::GetStock(ProductRef { product: 0x3e8 })),
        one(
            "requests_upsert_product.bin",
            7,
            Request::UpsertProduct(UpsertProduct {
                product: 0x3e8,
                unit_price_cents: 1999,
                stock: 100,
                payment_window_ms: 900_000,
                per_user_limit: 5,
            }),
        ),
        one("requests_adjust_stock.bin", 8, Request::AdjustStock(AdjustStock { product: 0x3e8, delta: -10 })),
        one("requests_subscribe_beginning.bin", 9, Request::Subscribe(Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 })),
        one("requests_subscribe_now.bin", 10, Request::Subscribe(Subscribe { start: StreamStart::Now, product: 0x3e8, kinds: 0b11 })),
        one(
            "requests_subscribe_positions.bin",
            11,
            Request::Subscribe(Subscribe { start: StreamStart::Positions(vec![4096, 8192]), product: 0, kinds: 1 << 5 }),
        ),
        one("requests_stats.bin", 12, Request::Stats),
        one("requests_aggregates.bin", 14, Request::Aggregates(AggregatesQuery { top: 10 })),
        one("requests_list_products.bin", 15, Request::ListProducts(ListProducts { after: 0x3e8, limit: 100 })),
        one("requests_checkpoint.bin", 16, Request::Checkpoint),
        one("requests_storage_stats.bin", 17, Request::StorageStats),
        one("requests_cluster_map.bin", 18, Request::ClusterMap),
        one(
            "requests_move_shard_write.bin",
            19,
            Request::MoveShard(MoveShard {
                shard: 3,
                move_id: 12,
                step: MoveStep::Write(MoveBytes { offset: 0x40000, total: 0x40004, data: vec![0xde, 0xad, 0xbe, 0xef] }),
            }),
        ),
        one("requests_move_shard_freeze.bin", 20, Request::MoveShard(MoveShard { shard: 3, move_id: 12, step: MoveStep::Freeze })),
        one(
            "requests_move_shard_seed.bin",
            21,
            Request::MoveShard(MoveShard {
                shard: 3,
                move_id: 1_790_000_000_000,
                step: MoveStep::Seed(SeedTo { node: "b".into(), core: 1 }),
            }),
        ),
        one(
            "requests_replicate.bin",
            22,
            Request::Replicate(Replicate {
                map_version: 5,
                through: 4096,
                leader: "a".into(),
                core: 1,
                events: vec![3, 0, 0, 0, 0, 0, 0, 0, 41, 0, 0, 0, 0, 0, 0, 0],
            }),
        ),
        Vector {
            file: "requests_batch.bin",
            version: 1,
            correlation: 13,
            payload: P::Requests(vec![
                Request::PlaceOrder(place_order()),
                Request::Subscribe(Subscribe { start: StreamStart::Positions(vec![7]), product: 0, kinds: 0 }),
                Request::GetStock(ProductRef { product: 0x3e8 }),
                Request::Stats,
            ]),
        },
        reply("replies_order.bin", 1, Reply::Order(order())),
        reply("replies_stock.bin", 1, Reply::Stock(stock())),
        reply("replies_rejected.bin", 1, Reply::Rejected(Rejection::new(Status::SoldOut, 1))),
        reply("replies_subscribed.bin", 1, Reply::Subscribed(Subscribed { positions: vec![4096, 8192] })),
        reply(
            "replies_stats.bin",
            1,
            Reply::Stats(Stats {
                server_id: 0x5eed,
                cores: vec![CoreStats {
                    requests: 10,
                    orders_placed: 4,
                    orders_rejected: 1,
                    frames: 3,
                    forwarded: 2,
                    live_orders: 4,
                    gmv_cents: 7996,
                    log_bytes: 512,
                    core: 0,
                    connections: 2,
                    shards: 2,
                }],
            }),
        ),
        reply(
            "replies_aggregates.bin",
            1,
            Reply::Aggregates(Aggregates {
                now_ms: 1_790_000_000_500,
                windows: vec![
                    WindowTotals { orders: 3, gmv_cents: 5997, seconds: 1 },
                    WindowTotals { orders: 20, gmv_cents: 39980, seconds: 10 },
                    WindowTotals { orders: 90, gmv_cents: 179_910, seconds: 60 },
                ],
                top: vec![ProductSales { product: 0x3e8, units_sold: 90, available: 10 }],
                sold_out: vec![0x3e9],
                sold_out_count: 1,
                products: 2,
                units_sold: 95,
                orders_placed: 90,
                gmv_cents: 179_910,
            }),
        ),
        Vector {
            file: "replies_batch.bin",
            version: 1,
            correlation: 13,
            payload: P::Replies(vec![
                Reply::Order(order()),
                Reply::Subscribed(Subscribed { positions: vec![7] }),
                Reply::Rejected(Rejection::new(Status::NoSuchProduct, 0)),
            ]),
        },
        reply("replies_products.bin", 2, Reply::Products(ProductPage { products: vec![stock()], more: 1 })),
        reply("replies_checkpointed.bin", 2, Reply::Checkpointed(Checkpointed { sequences: vec![4096, 81920] })),
        reply("replies_moved.bin", 1, Reply::rejected(Status::Moved, 7)),
        reply("replies_cluster.bin", 2, Reply::Cluster(cluster_map())),
        reply(
            "replies_shard_moved.bin",
            2,
            Reply::ShardMoved(ShardMoved { shard: 3, move_id: 12, offset: 0, total: 0x40004, orders: 175, data: vec![] }),
        ),
        reply("replies_replicated.bin", 2, Reply::Replicated(Replicated { through: 4096, applied: 17 })),
        reply("replies_storage.bin", 2, Reply::Storage(StorageStats { now_ms: 1_790_000_060_000, cores: vec![core_storage()] })),
        Vector { file: "events.bin", version: 1, correlation: 9, payload: P::Events(events()) },
    ]
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn blessing() -> bool {
    std::env::var_os("ORDERD_BLESS").is_some_and(|v| v == "1")
}

#[test]
fn every_vector_encodes_to_its_file_and_decodes_to_its_value() {
    let mut enc = Encoder::default();
    let mut failures = Vec::new();
    for v in vectors() {
        let path = dir().join(v.file);
        enc.set_version(v.version);
        let encoded = encode(&mut enc, v.correlation, &v.payload).unwrap();
        if blessing() {
            std::fs::write(&path, &encoded).unwrap();
        }
        let file = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{}: {e} (regenerate with ORDERD_BLESS=1 only if the wire format is meant to change)", v.file));
                continue;
            }
        };
        if encoded != file {
            failures.push(format!("{}: encoding differs from the file\n  file:    {}\n  encoded: {}", v.file, hex(&file), hex(&encoded)));
        }
        match receive(&file, &FrameLimits::WIRE_MAX) {
            Outcome::Decoded(h, payload) => {
                if h.correlation != v.correlation || h.version != v.version || h.frame_len() != file.len() || payload != v.payload {
                    failures.push(format!("{}: decodes to {h:?} {payload:?}", v.file));
                }
            }
            other => failures.push(format!("{}: does not decode: {other:?}", v.file)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_vectors_directory_holds_exactly_the_listed_vectors() {
    let mut on_disk: Vec<String> =
        std::fs::read_dir(dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".bin")).collect();
    on_disk.sort();
    let mut listed: Vec<String> = vectors().iter().map(|v| v.file.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn every_frame_kind_request_and_reply_variant_has_a_vector() {
    use std::collections::{BTreeSet, HashSet};
    let (mut kinds, mut requests, mut replies) = (BTreeSet::new(), HashSet::new(), HashSet::new());
    for v in vectors() {
        let kind = match &v.payload {
            Payload::Hello(_) => 1,
            Payload::Welcome(_) => 2,
            Payload::Requests(rs) => {
                requests.extend(rs.iter().map(std::mem::discriminant));
                3
            }
            Payload::Replies(rs) => {
                replies.extend(rs.iter().map(std::mem::discriminant));
                4
            }
            Payload::Error(_) => 5,
            Payload::Events(_) => 6,
        };
        kinds.insert(kind);
    }
    assert_eq!(kinds.len(), 6);
    // Request has 17 variants and Reply 12 (tags 0..=16 and 0..=11).
    assert_eq!(requests.len(), 17);
    assert_eq!(replies.len(), 12);
}

/// `vectors/README.md` shows the bytes of vectors in ```hex <file>``` blocks;
/// they must be the file's bytes, and every vector must be described.
#[test]
fn the_readme_dumps_match_the_files() {
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    let blocks = hex_blocks(&readme);
    assert!(blocks.len() >= 8, "README shows only {} dumps", blocks.len());
    for (name, body) in &blocks {
        let file = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("README dumps {name}: {e}"));
        assert_eq!(hex(&parse_hex_dump(body)), hex(&file), "README dump of {name}");
    }
    for v in vectors() {
        assert!(readme.contains(&format!("`{}`", v.file)), "README does not describe {}", v.file);
    }
}
