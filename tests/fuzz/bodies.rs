//! The bodies of the fuzz targets, as plain functions.
//!
//! Shared by the cargo-fuzz targets (`tests/fuzz/fuzz_targets/*.rs`, nightly,
//! coverage guided) and by `tests/fuzz_smoke.rs` (stable `cargo test`, which
//! replays the committed corpus through the very same functions). Each body
//! must never panic on any input except when a property of orderd breaks:
//! a panic here is a bug found.
//!
//! - [`frames`]: `frame::check`, then `codec::access_requests` /
//!   `decode_requests` / `decode_hello` (the server's path) on every complete
//!   frame, once over the whole input and once through a [`FrameBuffer`]
//!   fed in chunks the first byte chooses; both must agree exactly.
//! - [`server_frames`]: the SDK's reply decoder, `codec::decode_server_frame`,
//!   as the clients call it; whatever decodes must re-encode and decode to
//!   the same value.
//! - [`engine`]: bytes decoded into a sequence of engine commands and clock
//!   moves over a small id space; the shard's invariants hold after every
//!   step and a replay of the events (through their binary encoding) rebuilds
//!   an equal shard.
//! - [`events`]: `Event::decode` on arbitrary bytes, and the decoded events
//!   applied as recovery would (`Shard::apply_event`): an accepted event
//!   re-encodes to its bytes and an applied one keeps the invariants.
#![allow(dead_code)]

use orderd::engine::event::MAX_EVENT_LEN;
use orderd::engine::{Command, Event, Shard, ShardConfig, EVENT_FORMAT_VERSION};
use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::codec::{self, Encoder, ServerFrame};
use orderd_protocol::frame::{self, FrameCheck, FrameHeader, FrameKind, FrameLimits};
use orderd_protocol::limits::{MAX_ORDER_QTY, MAX_UNIT_PRICE_CENTS};
use orderd_protocol::message::Hello;
use orderd_protocol::{FrameError, IdempotencyKey, PlaceOrder, Reply, Request, UpsertProduct};
use rkyv::util::AlignedVec;

/// The names of the targets, as their corpus directories are named.
pub const TARGETS: [&str; 4] = ["frames", "server_frames", "engine", "events"];

/// Runs the target called `name` on `data`. `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "frames" => frames(data),
        "server_frames" => server_frames(data),
        "engine" => engine(data),
        "events" => events(data),
        _ => return false,
    }
    true
}

// ---- (1) the server's frame path -----------------------------------------------

/// What the server's path made of one position in the stream.
#[derive(Debug, PartialEq)]
enum Outcome {
    Frame(FrameHeader, Result<Decoded, FrameError>),
    Incomplete(usize),
    Invalid(FrameError),
}

#[derive(Debug, PartialEq)]
enum Decoded {
    Requests(Vec<Request>),
    Hello(Hello),
    /// A server-to-client kind: the server refuses it, the SDK would decode it.
    Server(ServerFrame),
}

/// Input: one byte choosing the limits and the chunking, then the stream.
pub fn frames(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let limits = if seed & 0x80 == 0 { FrameLimits::WIRE_MAX } else { FrameLimits { max_payload_bytes: 256, max_items: 4 } };

    // The whole stream at once, from an aligned copy.
    let mut whole = AlignedVec::<16>::new();
    whole.extend_from_slice(stream);
    let mut contiguous = Vec::new();
    let mut at = 0;
    loop {
        let rest = &whole[at..];
        match frame::check(rest, &limits) {
            FrameCheck::Complete(h) => {
                assert!(h.frame_len() <= rest.len(), "Complete beyond the bytes held: {h:?}");
                assert!(h.payload_len as usize <= limits.max_payload_bytes && h.items as usize <= limits.max_items);
                contiguous.push(Outcome::Frame(h, judge(frame::payload(rest, &h), &h, true)));
                at += h.frame_len();
            }
            FrameCheck::Incomplete { need } => {
                assert!(need > rest.len(), "Incomplete with {} bytes held but {need} needed", rest.len());
                contiguous.push(Outcome::Incomplete(need));
                break;
            }
            FrameCheck::Invalid(e) => {
                contiguous.push(Outcome::Invalid(e));
                break;
            }
        }
    }

    // The same stream through a FrameBuffer, in chunks.
    let mut chunks = Chunks::new(seed);
    let mut rx = FrameBuffer::new(0, limits);
    let mut fed = 0;
    let mut chunked = Vec::new();
    loop {
        let verdict = rx.check();
        match verdict {
            FrameCheck::Complete(h) => {
                let payload = rx.payload(&h);
                assert_eq!(payload.as_ptr() as usize % 8, 0, "a payload in the FrameBuffer is not 8-aligned");
                assert_eq!(payload.len(), h.payload_len as usize);
                chunked.push(Outcome::Frame(h, judge(payload, &h, true)));
                rx.consume(&h);
            }
            FrameCheck::Incomplete { need } => {
                if fed == stream.len() {
                    chunked.push(Outcome::Incomplete(need));
                    break;
                }
                assert!(rx.want(&verdict, 1) >= 1);
                let n = chunks.next().min(stream.len() - fed);
                let spare = rx.spare(n);
                assert!(spare.len() >= n);
                spare[..n].copy_from_slice(&stream[fed..fed + n]);
                rx.commit(n);
                fed += n;
            }
            FrameCheck::Invalid(e) => {
                chunked.push(Outcome::Invalid(e));
                break;
            }
        }
    }
    assert_eq!(contiguous, chunked, "the chunking changed the outcome");
}

/// What the server does with a complete frame's payload (plus the SDK's
/// decoding of server kinds, which share the validation code). With
/// `round_trip`, what decodes is also re-encoded and must decode the same.
fn judge(payload: &[u8], h: &FrameHeader, round_trip: bool) -> Result<Decoded, FrameError> {
    match h.kind {
        FrameKind::Requests => {
            let view = codec::access_requests(payload, h);
            let owned = codec::decode_requests(payload, h);
            match (view, owned) {
                (Ok(view), Ok(owned)) => {
                    assert_eq!(view.len(), owned.len());
                    assert_eq!(view.len(), h.items as usize);
                    for (archived, request) in view.iter().zip(&owned) {
                        // The conversion the server makes, equal to the owned value's.
                        let command = Command::from_archived(archived);
                        assert_eq!(command, command_of(request), "{request:?}");
                    }
                    // What validated re-encodes and decodes to the same requests.
                    let mut out = Vec::new();
                    if round_trip && Encoder::default().requests(&mut out, h.correlation, &owned).is_ok() {
                        assert_eq!(reencoded(&out), Ok(Decoded::Requests(owned.clone())));
                    }
                    Ok(Decoded::Requests(owned))
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a, b);
                    Err(a)
                }
                (view, owned) => panic!("zero-copy and owned decoding disagree: {view:?} vs {owned:?}"),
            }
        }
        FrameKind::Hello => codec::decode_hello(payload, h).map(Decoded::Hello),
        _ => codec::decode_server_frame(payload, h).map(Decoded::Server),
    }
}

/// Decode the single frame `bytes` (as written by the encoder).
fn reencoded(bytes: &[u8]) -> Result<Decoded, FrameError> {
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    match frame::check(&aligned, &FrameLimits::WIRE_MAX) {
        FrameCheck::Complete(h) => {
            assert_eq!(h.frame_len(), bytes.len());
            judge(frame::payload(&aligned, &h), &h, false)
        }
        other => panic!("the encoder wrote a frame that does not check: {other:?}"),
    }
}

/// The engine command of an owned request (the reference for `from_archived`).
fn command_of(request: &Request) -> Option<Command> {
    Some(match request {
        Request::PlaceOrder(p) => Command::PlaceOrder(*p),
        Request::PayOrder(r) => Command::Pay { order_id: r.order_id },
        Request::CancelOrder(r) => Command::Cancel { order_id: r.order_id },
        Request::GetOrder(r) => Command::GetOrder { order_id: r.order_id },
        Request::GetOrderByKey(r) => Command::GetOrderByKey { key: r.key },
        Request::GetStock(r) => Command::GetStock { product: r.product },
        Request::UpsertProduct(u) => Command::Upsert(*u),
        Request::AdjustStock(a) => Command::AdjustStock { product: a.product, delta: a.delta },
        Request::Subscribe(_)
        | Request::Stats
        | Request::Aggregates(_)
        | Request::ListProducts(_)
        | Request::Checkpoint
        | Request::StorageStats
        | Request::ClusterMap
        | Request::MoveShard(_)
        | Request::Replicate(_) => return None,
    })
}

/// Chunk sizes for feeding a [`FrameBuffer`]: mode 0 is everything at once,
/// mode 1 one byte at a time, others pseudo-random sizes up to a bound.
struct Chunks {
    mode: u8,
    x: u32,
}

impl Chunks {
    fn new(seed: u8) -> Self {
        Chunks { mode: seed & 7, x: 0x9E37_79B9 ^ u32::from(seed) }
    }

    fn next(&mut self) -> usize {
        match self.mode {
            0 => usize::MAX,
            1 => 1,
            m => {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 17;
                self.x ^= self.x << 5;
                1 + (self.x as usize) % (3usize << m)
            }
        }
    }
}

// ---- (2) the SDK's reply decoder -------------------------------------------------

/// Input: bytes as a server might send them, read the way the SDK reads them.
pub fn server_frames(data: &[u8]) {
    let mut rx = FrameBuffer::new(data.len(), FrameLimits::WIRE_MAX);
    rx.spare(data.len())[..data.len()].copy_from_slice(data);
    rx.commit(data.len());
    while let FrameCheck::Complete(h) = rx.check() {
        let payload = rx.payload(&h);
        // The SDK drops the connection on the first frame that fails.
        let Ok(frame) = codec::decode_server_frame(payload, &h) else { break };
        let mut out = Vec::new();
        let mut enc = Encoder::default();
        let written = match &frame {
            ServerFrame::Welcome(w) => enc.welcome(&mut out, h.correlation, w),
            ServerFrame::Replies(c, r) => enc.replies(&mut out, *c, r),
            ServerFrame::Error(c, e) => enc.error(&mut out, *c, e),
            ServerFrame::Events(c, e) => enc.events(&mut out, *c, e),
        };
        if written.is_ok() {
            let mut aligned = AlignedVec::<16>::new();
            aligned.extend_from_slice(&out);
            let FrameCheck::Complete(h2) = frame::check(&aligned, &FrameLimits::WIRE_MAX) else {
                panic!("the encoder wrote a frame that does not check")
            };
            let again = codec::decode_server_frame(frame::payload(&aligned, &h2), &h2);
            assert_eq!(again.as_ref(), Ok(&frame), "a decoded server frame does not survive re-encoding");
            if matches!(frame, ServerFrame::Welcome(_) | ServerFrame::Error(..)) {
                // Struct frames are only accepted in their canonical encoding.
                assert_eq!(frame::payload(&aligned, &h2), payload);
            }
        }
        rx.consume(&h);
    }
}

// ---- (3) the engine ----------------------------------------------------------------

/// The shard the engine target drives: few orders, so that `orders_full` is reached.
const ENGINE_SHARD: u16 = 3;
const ENGINE_MAX_ORDERS: u32 = 24;
const ENGINE_T0: u64 = 1_000_000;

/// A cursor over the fuzz input; past its end every byte reads as 0.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn pick<T: Copy, const N: usize>(&mut self, table: [T; N]) -> T {
        table[usize::from(self.u8().unwrap_or(0)) % N]
    }
}

/// The engine target's dedup window: short, so that scripts reach keys
/// past it.
const ENGINE_DEDUP_WINDOW_MS: u64 = 1_000_000;

/// One of 14 keys: twelve time-ordered keys made at the start (known again
/// when reused), one without a time and one made far ahead of the clock.
fn engine_key(b: &mut Bytes<'_>) -> IdempotencyKey {
    match b.u8().unwrap_or(0) % 14 {
        12 => IdempotencyKey { hi: 0, lo: 12 },
        13 => IdempotencyKey::timed(ENGINE_T0 + 100 * ENGINE_DEDUP_WINDOW_MS, 13),
        n => IdempotencyKey::timed(ENGINE_T0, u128::from(n)),
    }
}

/// The engine target's shard settings.
const fn engine_config(shard_id: u16, hash_seed: u64) -> ShardConfig {
    ShardConfig {
        shard_id,
        max_orders: ENGINE_MAX_ORDERS,
        max_idempotency_keys: ENGINE_MAX_ORDERS,
        hash_seed,
        dedup_window_ms: ENGINE_DEDUP_WINDOW_MS,
        key_max_ahead_ms: 1000,
        ..ShardConfig::new(shard_id)
    }
}

fn engine_order_id(b: &mut Bytes<'_>) -> u64 {
    let x = b.u8().unwrap_or(0);
    match x {
        0..=0xEF => ((u64::from(ENGINE_SHARD)) << 48) | u64::from(x % 32),
        0xF0..=0xF7 => (4 << 48) | u64::from(x & 7),
        0xF8 => 0,
        _ => u64::MAX,
    }
}

fn engine_command(op: u8, b: &mut Bytes<'_>) -> Command {
    let product = |b: &mut Bytes<'_>| b.pick([1u64, 2, 3, 0, 1, 2, u64::MAX, 1]);
    let price = |b: &mut Bytes<'_>| b.pick([10u64, 10, 20, 0, 1, MAX_UNIT_PRICE_CENTS, MAX_UNIT_PRICE_CENTS + 1, u64::MAX]);
    match op % 8 {
        0 => Command::PlaceOrder(PlaceOrder {
            key: engine_key(b),
            user: u64::from(b.u8().unwrap_or(0) % 4),
            product: product(b),
            unit_price_cents: price(b),
            qty: b.pick([1u32, 1, 2, 3, 7, 0, MAX_ORDER_QTY, MAX_ORDER_QTY + 1]),
        }),
        1 => Command::Pay { order_id: engine_order_id(b) },
        2 => Command::Cancel { order_id: engine_order_id(b) },
        3 => Command::GetOrder { order_id: engine_order_id(b) },
        4 => Command::GetOrderByKey { key: engine_key(b) },
        5 => Command::GetStock { product: product(b) },
        6 => Command::Upsert(UpsertProduct {
            product: product(b),
            unit_price_cents: price(b),
            stock: b.pick([0u64, 1, 2, 5, 10, 100, 1 << 40, u64::MAX]),
            payment_window_ms: b.pick([0u64, 0, 1, 10, 1000, 60_000, 1 << 50, u64::MAX]),
            per_user_limit: b.pick([0u32, 0, 1, 2, 3, 5, 100, u32::MAX]),
        }),
        _ => Command::AdjustStock { product: product(b), delta: b.pick([1i64, -1, 5, -5, 100, -100, i64::MIN, i64::MAX]) },
    }
}

/// Input: steps of `[op, time, fields...]`. The op's high bit makes the step
/// a timer tick (`expire_due`) instead of a command.
pub fn engine(data: &[u8]) {
    let config = engine_config(ENGINE_SHARD, 7);
    let mut shard = Shard::new(config);
    let mut log: Vec<Event> = Vec::new();
    let mut step = Vec::new();
    let mut now = ENGINE_T0;
    let mut b = Bytes(data);
    let mut index = 0usize;
    while let Some(op) = b.u8() {
        let t = b.u8().unwrap_or(0);
        now = match t % 8 {
            0..=2 => now,
            3 => now + 1,
            4 => now + u64::from(t),
            5 => now + 1000 * u64::from(t),
            6 => now.saturating_sub(u64::from(t) * 10),
            _ => now + 100_000,
        };
        let clock_before = shard.clock_ms();
        step.clear();
        let (what, eventless) = if op & 0x80 != 0 {
            shard.expire_due(now, &mut step);
            (None, false)
        } else {
            let cmd = engine_command(op, &mut b);
            let reply = shard.apply(&cmd, now, &mut step);
            // Reads and refusals record nothing but the expiries they trigger.
            let eventless = !cmd.is_write() || matches!(reply, Reply::Rejected(_));
            (Some((cmd, reply)), eventless)
        };
        if let Err(v) = shard.check_invariants() {
            panic!("step {index} at {now}: {what:?}: invariant broken: {v:?}");
        }
        assert!(shard.clock_ms() >= clock_before, "step {index}: the engine clock went back");
        if eventless {
            assert!(step.iter().all(|e| matches!(e, Event::OrderExpired { .. })), "step {index}: {what:?} recorded {step:?}");
        }
        for event in &step {
            log.push(through_encoding(event));
        }
        index += 1;
    }
    match Shard::replay(config, &log) {
        Ok(replayed) => assert!(replayed == shard, "the replayed shard differs from the original"),
        Err(e) => panic!("the shard's own events do not replay: {e}"),
    }
}

/// `event` encoded and decoded again; panics if that is not the identity.
fn through_encoding(event: &Event) -> Event {
    let mut buf = [0u8; MAX_EVENT_LEN];
    let Ok(len) = event.encode(&mut buf) else { panic!("MAX_EVENT_LEN does not fit {event:?}") };
    let decoded = Event::decode(event.kind(), EVENT_FORMAT_VERSION, &buf[..len]);
    assert_eq!(decoded, Ok(*event));
    *event
}

// ---- (4) event decoding and recovery ---------------------------------------------

/// Input: records of `[kind, body...]`, each body as long as its kind's
/// encoding (16 bytes for an unknown kind). A kind byte with its high bit
/// set is read with the wrong format version. Events that decode are
/// applied to a shard as recovery would apply them.
pub fn events(data: &[u8]) {
    let config = engine_config(0, 1);
    let mut shard = Shard::new(config);
    let mut rest = data;
    while let Some((&tag, tail)) = rest.split_first() {
        let kind = tag & 0x7F;
        let version = if tag & 0x80 == 0 { EVENT_FORMAT_VERSION } else { EVENT_FORMAT_VERSION.wrapping_add(tag & 3) };
        let len = Event::encoded_len_of_kind(kind).unwrap_or(16).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let Ok(event) = Event::decode(kind, version, body) else { continue };
        assert_eq!(version, EVENT_FORMAT_VERSION);
        assert_eq!(event.kind(), kind);
        let mut again = Vec::new();
        event.encode_to_vec(&mut again);
        assert_eq!(again, body, "an accepted body re-encodes to other bytes");
        let before = shard.clone();
        match shard.apply_event(&event) {
            Ok(()) => {
                if let Err(v) = shard.check_invariants() {
                    panic!("an accepted event broke an invariant: {event:?}: {v:?}");
                }
            }
            Err(_) => assert!(shard == before, "a refused event changed the shard: {event:?}"),
        }
    }
}
