//! The archived layouts PROTOCOL.md § 5 states: sizes, alignments and field
//! offsets of the `Archived*` structs (repr(C)), and for enums, hand-built
//! byte images (tag, padding, data at its own alignment, zero tail) compared
//! with the encoder's output.

use core::mem::{align_of, offset_of, size_of};

use orderd_protocol::codec::Encoder;
use orderd_protocol::limits::FRAME_HEADER_LEN;
use orderd_protocol::message::*;
use rkyv::vec::ArchivedVec;

/// Assert size and alignment of a type, and the offset of each named field.
macro_rules! layout {
    ($t:ty, size $size:expr, align $align:expr $(, $field:ident @ $off:expr)* $(,)?) => {{
        assert_eq!(size_of::<$t>(), $size, "size of {}", stringify!($t));
        assert_eq!(align_of::<$t>(), $align, "align of {}", stringify!($t));
        $( assert_eq!(offset_of!($t, $field), $off, "offset of {}.{}", stringify!($t), stringify!($field)); )*
    }};
}

#[test]
fn vector_headers_are_8_bytes_4_aligned() {
    layout!(ArchivedVec<u64>, size 8, align 4);
    layout!(ArchivedVec<u16>, size 8, align 4);
    layout!(ArchivedVec<ArchivedCoreAddr>, size 8, align 4);
    layout!(ArchivedVec<ArchivedRequest>, size 8, align 4);
}

#[test]
fn request_types_have_the_documented_layout() {
    layout!(ArchivedIdempotencyKey, size 16, align 8, hi @ 0, lo @ 8);
    layout!(ArchivedPlaceOrder, size 48, align 8, key @ 0, user @ 16, product @ 24, unit_price_cents @ 32, qty @ 40);
    layout!(ArchivedOrderRef, size 8, align 8, order_id @ 0);
    layout!(ArchivedKeyRef, size 24, align 8, key @ 0, product @ 16);
    layout!(ArchivedProductRef, size 8, align 8, product @ 0);
    layout!(ArchivedAdjustStock, size 16, align 8, product @ 0, delta @ 8);
    layout!(ArchivedUpsertProduct, size 40, align 8, product @ 0, unit_price_cents @ 8, stock @ 16, payment_window_ms @ 24, per_user_limit @ 32);
    layout!(ArchivedStreamStart, size 12, align 4);
    layout!(ArchivedSubscribe, size 32, align 8, start @ 0, product @ 16, kinds @ 24);
    layout!(ArchivedAggregatesQuery, size 4, align 4, top @ 0);
    layout!(ArchivedListProducts, size 16, align 8, after @ 0, limit @ 8);
    layout!(ArchivedMoveRange, size 16, align 8, offset @ 0, len @ 8);
    layout!(ArchivedMoveBytes, size 24, align 8, offset @ 0, total @ 8, data @ 16);
    layout!(ArchivedSeedTo, size 12, align 4, node @ 0, core @ 8);
    layout!(ArchivedMoveStep, size 32, align 8);
    layout!(ArchivedReplicate, size 40, align 8, map_version @ 0, through @ 8, leader @ 16, core @ 24, events @ 28);
    layout!(ArchivedMoveShard, size 48, align 8, shard @ 0, move_id @ 8, step @ 16);
    layout!(ArchivedRequest, size 56, align 8);
}

#[test]
fn reply_types_have_the_documented_layout() {
    layout!(ArchivedOrderState, size 1, align 1);
    layout!(ArchivedOrder, size 72, align 8, id @ 0, key @ 8, user @ 24, product @ 32, unit_price_cents @ 40, created_ms @ 48, expires_ms @ 56, qty @ 64, state @ 68);
    layout!(ArchivedStockInfo, size 64, align 8, product @ 0, unit_price_cents @ 8, available @ 16, reserved @ 24, paid @ 32, supplied @ 40, payment_window_ms @ 48, per_user_limit @ 56);
    layout!(ArchivedRejection, size 16, align 8, code @ 0, detail @ 8);
    layout!(ArchivedSubscribed, size 8, align 4, positions @ 0);
    layout!(ArchivedCoreStats, size 80, align 8,
        requests @ 0, orders_placed @ 8, orders_rejected @ 16, frames @ 24, forwarded @ 32, live_orders @ 40, gmv_cents @ 48, log_bytes @ 56,
        core @ 64, connections @ 68, shards @ 72);
    layout!(ArchivedStats, size 16, align 8, server_id @ 0, cores @ 8);
    layout!(ArchivedWindowTotals, size 24, align 8, orders @ 0, gmv_cents @ 8, seconds @ 16);
    layout!(ArchivedProductSales, size 24, align 8, product @ 0, units_sold @ 8, available @ 16);
    layout!(ArchivedAggregates, size 72, align 8,
        now_ms @ 0, windows @ 8, top @ 16, sold_out @ 24, sold_out_count @ 32, products @ 40, units_sold @ 48, orders_placed @ 56, gmv_cents @ 64);
    layout!(ArchivedProductPage, size 12, align 4, products @ 0, more @ 8);
    layout!(ArchivedCheckpointed, size 8, align 4, sequences @ 0);
    layout!(ArchivedCoreStorage, size 152, align 8,
        checkpoint_sequence @ 0, checkpoint_at_ms @ 8, checkpoint_duration_us @ 16, checkpoint_bytes @ 24,
        log_oldest_sequence @ 32, log_next_sequence @ 40, log_file_bytes @ 48, log_max_bytes @ 56,
        orders_in_memory @ 64, orders_archived @ 72, cold_keys @ 80, archive_bytes @ 88,
        memory_order_records @ 96, memory_key_index @ 104, memory_cold_keys @ 112, memory_deadlines @ 120,
        memory_holdings @ 128, memory_catalogue @ 136, core @ 144, log_segments @ 148);
    layout!(ArchivedStorageStats, size 16, align 8, now_ms @ 0, cores @ 8);
    layout!(ArchivedClusterNode, size 16, align 4, node @ 0, cores @ 8);
    layout!(ArchivedClusterMapInfo, size 32, align 8, version @ 0, nodes @ 8, owners @ 16, owner_cores @ 24);
    layout!(ArchivedShardMoved, size 48, align 8, shard @ 0, move_id @ 8, offset @ 16, total @ 24, orders @ 32, data @ 40);
    layout!(ArchivedReplicated, size 16, align 8, through @ 0, applied @ 8);
    layout!(ArchivedReply, size 80, align 8);
}

#[test]
fn handshake_error_and_stream_types_have_the_documented_layout() {
    layout!(ArchivedHello, size 16, align 8, client_id @ 0, min_version @ 8, max_version @ 10);
    layout!(ArchivedCoreAddr, size 22, align 2, ip @ 0, core @ 16, port @ 18, family @ 20);
    layout!(ArchivedServerLimits, size 12, align 4, max_frame_bytes @ 0, max_batch @ 4, max_in_flight @ 8);
    layout!(ArchivedWelcome, size 40, align 8, server_id @ 0, version @ 8, core @ 10, cores @ 12, shard_owner @ 20, limits @ 28);
    layout!(ArchivedErrorFrame, size 16, align 8, code @ 0, detail @ 8);
    layout!(ArchivedEventKind, size 1, align 1);
    layout!(ArchivedStreamEvent, size 64, align 8,
        offset @ 0, order_id @ 8, product @ 16, user @ 24, amount_cents @ 32, time_ms @ 40, qty @ 48, core @ 56, kind @ 58);
}

#[test]
fn root_vector_elements_are_a_multiple_of_8_so_the_root_follows_them() {
    // PROTOCOL.md § 4.5: the root header immediately follows the last element.
    for size in [size_of::<ArchivedRequest>(), size_of::<ArchivedReply>(), size_of::<ArchivedStreamEvent>()] {
        assert_eq!(size % 8, 0);
    }
}

// ---- enums: hand-built images against the encoder ----------------------

/// A little-endian byte image under construction.
struct Image(Vec<u8>);

impl Image {
    fn new() -> Self {
        Image(Vec::new())
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Zero bytes up to offset `to`.
    fn zeros_to(mut self, to: usize) -> Self {
        assert!(to >= self.0.len(), "image already past {to}");
        self.0.resize(to, 0);
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

fn requests_payload(requests: &[Request]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::default().requests(&mut out, 0, requests).unwrap();
    out[FRAME_HEADER_LEN..].to_vec()
}

fn replies_payload(replies: &[Reply]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::default().replies(&mut out, 0, replies).unwrap();
    out[FRAME_HEADER_LEN..].to_vec()
}

/// One request: element at 0 (56 bytes), then the root { -56, 1 }.
fn one_request(element: Image) -> Vec<u8> {
    element.zeros_to(56).i32(-56).u32(1).0
}

fn one_reply(element: Image) -> Vec<u8> {
    element.zeros_to(80).i32(-80).u32(1).0
}

const KEY: IdempotencyKey = IdempotencyKey { hi: 0x0102_0304_0506_0708, lo: 0x1112_1314_1516_1718 };

#[test]
fn every_request_variant_is_tag_then_data_at_its_alignment() {
    let cases: Vec<(Request, Image)> = vec![
        (
            Request::PlaceOrder(PlaceOrder { key: KEY, user: 3, product: 4, unit_price_cents: 5, qty: 6 }),
            Image::new().u8(0).zeros_to(8).u64(KEY.hi).u64(KEY.lo).u64(3).u64(4).u64(5).u32(6),
        ),
        (Request::PayOrder(OrderRef { order_id: 7 }), Image::new().u8(1).zeros_to(8).u64(7)),
        (Request::CancelOrder(OrderRef { order_id: 8 }), Image::new().u8(2).zeros_to(8).u64(8)),
        (Request::GetOrder(OrderRef { order_id: 9 }), Image::new().u8(3).zeros_to(8).u64(9)),
        (Request::GetOrderByKey(KeyRef { key: KEY, product: 10 }), Image::new().u8(4).zeros_to(8).u64(KEY.hi).u64(KEY.lo).u64(10)),
        (Request::GetStock(ProductRef { product: 11 }), Image::new().u8(5).zeros_to(8).u64(11)),
        (
            Request::UpsertProduct(UpsertProduct {
                product: 12,
                unit_price_cents: 13,
                stock: 14,
                payment_window_ms: 15,
                per_user_limit: 16,
            }),
            Image::new().u8(6).zeros_to(8).u64(12).u64(13).u64(14).u64(15).u32(16),
        ),
        (Request::AdjustStock(AdjustStock { product: 17, delta: -18 }), Image::new().u8(7).zeros_to(8).u64(17).u64((-18i64) as u64)),
        (
            // StreamStart::Now is the tag alone; Subscribe.product at 16 within Subscribe.
            Request::Subscribe(Subscribe { start: StreamStart::Now, product: 19, kinds: 20 }),
            Image::new().u8(8).zeros_to(8).u8(1).zeros_to(8 + 16).u64(19).u32(20),
        ),
        (Request::Subscribe(Subscribe { start: StreamStart::Beginning, product: 0, kinds: 0 }), Image::new().u8(8).zeros_to(8).u8(0)),
        (Request::Stats, Image::new().u8(9)),
        (Request::Aggregates(AggregatesQuery { top: 21 }), Image::new().u8(10).zeros_to(4).u32(21)),
    ];
    for (request, image) in cases {
        assert_eq!(requests_payload(std::slice::from_ref(&request)), one_request(image), "{request:?}");
    }
}

#[test]
fn stream_start_positions_puts_its_vector_at_offset_4_and_its_data_first() {
    // Payload: positions [21, 22] at 0..16, the element at 16..72, the root at 72.
    let request = Request::Subscribe(Subscribe { start: StreamStart::Positions(vec![21, 22]), product: 23, kinds: 24 });
    let image = Image::new()
        .u64(21)
        .u64(22)
        .u8(8) // Request tag at 16
        .zeros_to(24)
        .u8(2) // StreamStart tag at 24 (Subscribe at 24, start at +0)
        .zeros_to(28)
        .i32(-28) // the vector header at 28 points to 0
        .u32(2)
        .zeros_to(24 + 16)
        .u64(23)
        .u32(24)
        .zeros_to(16 + 56)
        .i32(-56) // root at 72 points to the element at 16
        .u32(1);
    assert_eq!(requests_payload(&[request]), image.0);
}

#[test]
fn every_reply_variant_is_tag_then_data_at_its_alignment() {
    let order = Order {
        id: 1,
        key: KEY,
        user: 2,
        product: 3,
        unit_price_cents: 4,
        created_ms: 5,
        expires_ms: u64::MAX,
        qty: 6,
        state: OrderState::Expired,
    };
    let stock = StockInfo {
        product: 1,
        unit_price_cents: 2,
        available: 3,
        reserved: 4,
        paid: 5,
        supplied: 12,
        payment_window_ms: 7,
        per_user_limit: 8,
    };
    let cases: Vec<(Reply, Image)> = vec![
        (
            Reply::Order(order),
            Image::new().u8(0).zeros_to(8).u64(1).u64(KEY.hi).u64(KEY.lo).u64(2).u64(3).u64(4).u64(5).u64(u64::MAX).u32(6).u8(3),
        ),
        (Reply::Stock(stock), Image::new().u8(1).zeros_to(8).u64(1).u64(2).u64(3).u64(4).u64(5).u64(12).u64(7).u32(8)),
        (Reply::rejected(orderd_protocol::Status::PriceChanged, 1999), Image::new().u8(2).zeros_to(8).u16(4).zeros_to(16).u64(1999)),
    ];
    for (reply, image) in cases {
        assert_eq!(replies_payload(std::slice::from_ref(&reply)), one_reply(image), "{reply:?}");
    }
    // Subscribed: data 4-aligned at offset 4; positions [5] written before the element.
    let image = Image::new().u64(5).u8(3).zeros_to(12).i32(-12).u32(1).zeros_to(8 + 80).i32(-80).u32(1);
    assert_eq!(replies_payload(&[Reply::Subscribed(Subscribed { positions: vec![5] })]), image.0);
    // Stats: cores (one CoreStats, 80 bytes) first, then the element at 80.
    let core = CoreStats {
        requests: 1,
        orders_placed: 2,
        orders_rejected: 3,
        frames: 4,
        forwarded: 5,
        live_orders: 6,
        gmv_cents: 7,
        log_bytes: 8,
        core: 9,
        connections: 10,
        shards: 11,
    };
    let image = Image::new()
        .u64(1)
        .u64(2)
        .u64(3)
        .u64(4)
        .u64(5)
        .u64(6)
        .u64(7)
        .u64(8)
        .u16(9)
        .zeros_to(68)
        .u32(10)
        .u32(11)
        .zeros_to(80)
        .u8(4)
        .zeros_to(88)
        .u64(77) // Stats.server_id at 88
        .i32(-96)
        .u32(1) // Stats.cores at 96 points to 0
        .zeros_to(160)
        .i32(-80)
        .u32(1);
    assert_eq!(replies_payload(&[Reply::Stats(Stats { server_id: 77, cores: vec![core] })]), image.0);
}

#[test]
fn welcome_hello_error_and_events_match_hand_built_images() {
    let mut out = Vec::new();
    let mut enc = Encoder::default();
    enc.hello(&mut out, 0, &Hello { client_id: 1, min_version: 1, max_version: 2 }).unwrap();
    assert_eq!(out[FRAME_HEADER_LEN..], Image::new().u64(1).u16(1).u16(2).zeros_to(16).0);

    out.clear();
    enc.error(&mut out, 0, &ErrorFrame { code: 104, detail: 1 }).unwrap();
    assert_eq!(out[FRAME_HEADER_LEN..], Image::new().u16(104).zeros_to(8).u64(1).0);

    out.clear();
    let welcome = Welcome {
        server_id: 2,
        version: 1,
        core: 1,
        cores: vec![CoreAddr::new(1, "10.0.0.1:9000".parse().unwrap())],
        shard_owner: vec![1, 1, 1],
        limits: ServerLimits { max_frame_bytes: 3, max_batch: 4, max_in_flight: 5 },
    };
    enc.welcome(&mut out, 0, &welcome).unwrap();
    // cores at 0..22, shard_owner at 22..28, root (8-aligned) at 32..72.
    let image = Image::new()
        .bytes(&[10, 0, 0, 1])
        .zeros_to(16)
        .u16(1)
        .u16(9000)
        .u8(4)
        .zeros_to(22)
        .u16(1)
        .u16(1)
        .u16(1)
        .zeros_to(32)
        .u64(2)
        .u16(1)
        .u16(1)
        .i32(-44) // cores header at 44 -> 0
        .u32(1)
        .i32(-30) // shard_owner header at 52 -> 22
        .u32(3)
        .u32(3)
        .u32(4)
        .u32(5);
    assert_eq!(out[FRAME_HEADER_LEN..], image.0);

    out.clear();
    let event = StreamEvent {
        offset: 1,
        order_id: 2,
        product: 3,
        user: 4,
        amount_cents: 5,
        time_ms: 6,
        qty: 7,
        core: 8,
        kind: EventKind::StockAdjusted,
    };
    enc.events(&mut out, 0, &[event]).unwrap();
    let image = Image::new().u64(1).u64(2).u64(3).u64(4).u64(5).u64(6).u64(7).u16(8).u8(5).zeros_to(64).i32(-64).u32(1);
    assert_eq!(out[FRAME_HEADER_LEN..], image.0);
}

#[test]
fn unit_enums_are_one_byte_holding_their_variant_number() {
    let states = [OrderState::Placed, OrderState::Paid, OrderState::Cancelled, OrderState::Expired];
    for (n, state) in states.into_iter().enumerate() {
        let order = Order { id: 0, key: KEY, user: 0, product: 0, unit_price_cents: 0, created_ms: 0, expires_ms: 0, qty: 0, state };
        // Order at 8 in the Reply element, state at 68 in the Order.
        assert_eq!(replies_payload(&[Reply::Order(order)])[8 + 68..8 + 72], [n as u8, 0, 0, 0], "{state:?}");
    }
    let kinds = [
        EventKind::Placed,
        EventKind::Paid,
        EventKind::Cancelled,
        EventKind::Expired,
        EventKind::ProductUpserted,
        EventKind::StockAdjusted,
    ];
    for (n, kind) in kinds.into_iter().enumerate() {
        let event = StreamEvent { offset: 0, order_id: 0, product: 0, user: 0, amount_cents: 0, time_ms: 0, qty: 0, core: 0, kind };
        let mut out = Vec::new();
        Encoder::default().events(&mut out, 0, &[event]).unwrap();
        assert_eq!(out[FRAME_HEADER_LEN + 58..FRAME_HEADER_LEN + 64], [n as u8, 0, 0, 0, 0, 0], "{kind:?}");
    }
}
