//! Property tests of the codec: round trips, and no panic and no silently
//! wrong value whatever the bytes (arbitrary, truncated, lying lengths,
//! bit flips); each bound yields its own error and status.

mod common;

use common::{decode_payload, encode, receive, Outcome, Payload};
use orderd_protocol::codec::{
    access_events, access_replies, access_requests, decode_error, decode_events, decode_hello, decode_replies, decode_requests,
    decode_server_frame, decode_welcome, Encoder,
};
use orderd_protocol::frame::{check, FrameCheck, FrameHeader, FrameKind, FrameLimits};
use orderd_protocol::limits::{
    padded_len, FRAME_HEADER_LEN, MAX_BATCH_REQUESTS, MAX_FRAME_PAYLOAD_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use orderd_protocol::message::*;
use orderd_protocol::{EncodeError, FrameError, Status};
use proptest::collection::vec;
use proptest::prelude::*;

// ---- strategies -----------------------------------------------------------

fn u64_edge() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u64::MAX - 1), Just(1 << 63), any::<u64>()]
}

fn u32_edge() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()]
}

fn u16_edge() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>()]
}

fn key() -> impl Strategy<Value = IdempotencyKey> {
    (u64_edge(), u64_edge()).prop_map(|(hi, lo)| IdempotencyKey { hi, lo })
}

fn stream_start() -> impl Strategy<Value = StreamStart> {
    prop_oneof![Just(StreamStart::Beginning), Just(StreamStart::Now), vec(u64_edge(), 0..4).prop_map(StreamStart::Positions)]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (key(), u64_edge(), u64_edge(), u64_edge(), u32_edge()).prop_map(
            |(key, user, product, unit_price_cents, qty)| Request::PlaceOrder(PlaceOrder { key, user, product, unit_price_cents, qty })
        ),
        u64_edge().prop_map(|order_id| Request::PayOrder(OrderRef { order_id })),
        u64_edge().prop_map(|order_id| Request::CancelOrder(OrderRef { order_id })),
        u64_edge().prop_map(|order_id| Request::GetOrder(OrderRef { order_id })),
        (key(), u64_edge()).prop_map(|(key, product)| Request::GetOrderByKey(KeyRef { key, product })),
        u64_edge().prop_map(|product| Request::GetStock(ProductRef { product })),
        (u64_edge(), u64_edge(), u64_edge(), u64_edge(), u32_edge()).prop_map(
            |(product, unit_price_cents, stock, payment_window_ms, per_user_limit)| {
                Request::UpsertProduct(UpsertProduct { product, unit_price_cents, stock, payment_window_ms, per_user_limit })
            }
        ),
        (u64_edge(), any::<i64>()).prop_map(|(product, delta)| Request::AdjustStock(AdjustStock { product, delta })),
        (stream_start(), u64_edge(), u32_edge()).prop_map(|(start, product, kinds)| Request::Subscribe(Subscribe {
            start,
            product,
            kinds
        })),
        Just(Request::Stats),
    ]
}

fn order_state() -> impl Strategy<Value = OrderState> {
    prop_oneof![Just(OrderState::Placed), Just(OrderState::Paid), Just(OrderState::Cancelled), Just(OrderState::Expired)]
}

fn order() -> impl Strategy<Value = Order> {
    (u64_edge(), key(), u64_edge(), u64_edge(), u64_edge(), (u64_edge(), u64_edge()), u32_edge(), order_state()).prop_map(
        |(id, key, user, product, unit_price_cents, (created_ms, expires_ms), qty, state)| Order {
            id,
            key,
            user,
            product,
            unit_price_cents,
            created_ms,
            expires_ms,
            qty,
            state,
        },
    )
}

fn core_stats() -> impl Strategy<Value = CoreStats> {
    (vec(u64_edge(), 8), u16_edge(), u32_edge(), u32_edge()).prop_map(|(c, core, connections, shards)| CoreStats {
        requests: c[0],
        orders_placed: c[1],
        orders_rejected: c[2],
        frames: c[3],
        forwarded: c[4],
        live_orders: c[5],
        gmv_cents: c[6],
        log_bytes: c[7],
        core,
        connections,
        shards,
    })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        order().prop_map(Reply::Order),
        (vec(u64_edge(), 7), u32_edge()).prop_map(|(c, per_user_limit)| Reply::Stock(StockInfo {
            product: c[0],
            unit_price_cents: c[1],
            available: c[2],
            reserved: c[3],
            paid: c[4],
            supplied: c[5],
            payment_window_ms: c[6],
            per_user_limit,
        })),
        (u16_edge(), u64_edge()).prop_map(|(code, detail)| Reply::Rejected(Rejection { code, detail })),
        vec(u64_edge(), 0..4).prop_map(|positions| Reply::Subscribed(Subscribed { positions })),
        (u64_edge(), vec(core_stats(), 0..3)).prop_map(|(server_id, cores)| Reply::Stats(Stats { server_id, cores })),
    ]
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    (0u8..6).prop_map(|k| match k {
        0 => EventKind::Placed,
        1 => EventKind::Paid,
        2 => EventKind::Cancelled,
        3 => EventKind::Expired,
        4 => EventKind::ProductUpserted,
        _ => EventKind::StockAdjusted,
    })
}

fn event() -> impl Strategy<Value = StreamEvent> {
    (vec(u64_edge(), 7), u16_edge(), event_kind()).prop_map(|(c, core, kind)| StreamEvent {
        offset: c[0],
        order_id: c[1],
        product: c[2],
        user: c[3],
        amount_cents: c[4],
        time_ms: c[5],
        qty: c[6],
        core,
        kind,
    })
}

fn welcome() -> impl Strategy<Value = Welcome> {
    let core_addr =
        (any::<[u8; 16]>(), u16_edge(), u16_edge(), any::<u8>()).prop_map(|(ip, core, port, family)| CoreAddr { ip, core, port, family });
    (u64_edge(), u16_edge(), u16_edge(), vec(core_addr, 0..4), vec(u16_edge(), 0..9), (u32_edge(), u32_edge(), u32_edge())).prop_map(
        |(server_id, version, core, cores, shard_owner, (max_frame_bytes, max_batch, max_in_flight))| Welcome {
            server_id,
            version,
            core,
            cores,
            shard_owner,
            limits: ServerLimits { max_frame_bytes, max_batch, max_in_flight },
        },
    )
}

/// Any frame's content.
fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (u64_edge(), u16_edge(), u16_edge()).prop_map(|(client_id, min_version, max_version)| Payload::Hello(Hello {
            client_id,
            min_version,
            max_version
        })),
        welcome().prop_map(Payload::Welcome),
        vec(request(), 0..8).prop_map(Payload::Requests),
        vec(reply(), 0..8).prop_map(Payload::Replies),
        (u16_edge(), u64_edge()).prop_map(|(code, detail)| Payload::Error(ErrorFrame { code, detail })),
        vec(event(), 0..8).prop_map(Payload::Events),
    ]
}

fn frame(correlation: u64, p: &Payload) -> Vec<u8> {
    encode(&mut Encoder::default(), correlation, p).unwrap()
}

fn header_of(bytes: &[u8]) -> FrameHeader {
    match check(bytes, &FrameLimits::WIRE_MAX) {
        FrameCheck::Complete(h) => h,
        v => panic!("not a complete frame: {v:?}"),
    }
}

/// Call every decoding entry point on `payload` under `header`; none may panic.
fn decode_everything(payload: &[u8], header: &FrameHeader) {
    let _ = access_requests(payload, header);
    let _ = access_replies(payload, header);
    let _ = access_events(payload, header);
    let _ = decode_requests(payload, header);
    let _ = decode_replies(payload, header);
    let _ = decode_events(payload, header);
    let _ = decode_hello(payload, header);
    let _ = decode_welcome(payload, header);
    let _ = decode_error(payload, header);
    let _ = decode_server_frame(payload, header);
}

fn any_kind() -> impl Strategy<Value = FrameKind> {
    (1u8..=6).prop_map(|k| FrameKind::from_u8(k).unwrap())
}

// ---- round trips ------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_frame_round_trips(correlation in u64_edge(), p in payload()) {
        let bytes = frame(correlation, &p);
        prop_assert_eq!(bytes.len() % 8, 0);
        match receive(&bytes, &FrameLimits::WIRE_MAX) {
            Outcome::Decoded(h, got) => {
                prop_assert_eq!(h.correlation, correlation);
                prop_assert_eq!(h.frame_len(), bytes.len());
                prop_assert_eq!(got, p);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn large_request_batches_round_trip(requests in vec(request(), 0..200)) {
        let p = Payload::Requests(requests);
        prop_assert_eq!(receive(&frame(1, &p), &FrameLimits::WIRE_MAX), Outcome::Decoded(header_of(&frame(1, &p)), p.clone()));
    }

    // ---- arbitrary and damaged bytes never panic -------------------------------

    #[test]
    fn check_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..160), max_payload in 0usize..256, max_items in 0usize..8) {
        let limits = FrameLimits { max_payload_bytes: max_payload, max_items };
        let _ = check(&bytes, &limits);
        let _ = receive(&bytes, &limits);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_payloads(
        bytes in vec(any::<u8>(), 0..200),
        kind in any_kind(),
        items in prop_oneof![Just(0u32), Just(1), 0u32..8, any::<u32>()],
        misalign in 0usize..8,
    ) {
        let header = FrameHeader { version: 1, kind, flags: 0, correlation: 0, payload_len: bytes.len() as u32, items };
        // Aligned, and deliberately misaligned, copies of the payload.
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&[0u8; 8][..misalign]);
        aligned.extend_from_slice(&bytes);
        decode_everything(&aligned[misalign..], &header);
    }

    #[test]
    fn every_prefix_of_a_valid_frame_is_incomplete(p in payload()) {
        let bytes = frame(3, &p);
        for n in 0..bytes.len() {
            match check(&bytes[..n], &FrameLimits::WIRE_MAX) {
                FrameCheck::Incomplete { need } => prop_assert!(need > n && need <= bytes.len()),
                other => prop_assert!(false, "prefix of {} bytes: {:?}", n, other),
            }
        }
    }

    #[test]
    fn bit_flips_in_valid_frames_never_panic(p in payload(), flips in vec(any::<prop::sample::Index>(), 1..4)) {
        let mut bytes = frame(4, &p);
        for f in &flips {
            let bit = f.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        if let Outcome::Refused(h, _) | Outcome::Decoded(h, _) = receive(&bytes, &FrameLimits::WIRE_MAX) {
            decode_everything(&bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + h.payload_len as usize], &h);
        }
    }

    // ---- lying lengths ------------------------------------------------------------

    /// The frame is followed by another frame, as on a real stream. Whatever
    /// payload_len says, the receiver waits, refuses, or decodes the value
    /// that was sent: never another one (the root is read from the end of
    /// the payload, so a lie moves it).
    #[test]
    fn a_lying_payload_len_never_yields_another_value(
        p in payload(),
        next in payload(),
        lie in prop_oneof![
            (-64i64..=64).prop_map(|d| (d, 0u32)),
            any::<u32>().prop_map(|v| (0, v)),
            Just((0, u32::MAX)),
        ],
    ) {
        let mut bytes = frame(5, &p);
        bytes.extend_from_slice(&frame(6, &next));
        let honest = header_of(&bytes).payload_len;
        let lying = if lie.1 != 0 { lie.1 } else { (i64::from(honest) + lie.0).clamp(0, i64::from(u32::MAX)) as u32 };
        prop_assume!(lying != honest);
        bytes[16..20].copy_from_slice(&lying.to_le_bytes());
        match receive(&bytes, &FrameLimits::WIRE_MAX) {
            Outcome::Decoded(_, got) => prop_assert_eq!(got, p, "payload_len {} (honest {}) decoded", lying, honest),
            Outcome::Invalid(FrameError::TooLarge { len, max }) => {
                prop_assert!(len > max);
                prop_assert_eq!(FrameError::TooLarge { len, max }.status(), Status::FrameTooLarge);
            }
            Outcome::Incomplete { need } => prop_assert_eq!(need, FRAME_HEADER_LEN + padded_len(lying as usize)),
            Outcome::Invalid(_) | Outcome::Refused(..) => {}
        }
    }

    /// Any `items` other than the true count is refused.
    #[test]
    fn a_lying_items_count_is_always_refused(p in payload(), items in prop_oneof![0u32..10, any::<u32>()]) {
        let mut bytes = frame(7, &p);
        let honest = header_of(&bytes).items;
        prop_assume!(items != honest);
        bytes[20..24].copy_from_slice(&items.to_le_bytes());
        match receive(&bytes, &FrameLimits::WIRE_MAX) {
            Outcome::Refused(_, FrameError::ItemCountMismatch { header, .. }) => prop_assert_eq!(header, items),
            Outcome::Invalid(FrameError::TooManyItems { items: i, max }) => {
                prop_assert_eq!(i, items as usize);
                prop_assert_eq!(max, MAX_BATCH_REQUESTS);
            }
            other => prop_assert!(false, "items {} (honest {}): {:?}", items, honest, other),
        }
    }

    // ---- each bound has its own error and status ----------------------------------

    #[test]
    fn a_payload_over_the_limit_is_too_large(p in payload()) {
        let bytes = frame(8, &p);
        let len = header_of(&bytes).payload_len as usize;
        prop_assume!(len > 0);
        let limits = FrameLimits { max_payload_bytes: len - 1, max_items: MAX_BATCH_REQUESTS };
        let e = match check(&bytes[..FRAME_HEADER_LEN], &limits) {
            FrameCheck::Invalid(e) => e,
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(&e, &FrameError::TooLarge { len, max: len - 1 });
        prop_assert_eq!(e.status(), Status::FrameTooLarge);
        prop_assert_eq!(e.detail(), (len - 1) as u64);
    }

    #[test]
    fn more_items_than_the_limit_is_a_batch_too_large(requests in vec(request(), 1..8)) {
        let n = requests.len();
        let bytes = frame(9, &Payload::Requests(requests));
        let limits = FrameLimits { max_payload_bytes: MAX_FRAME_PAYLOAD_BYTES, max_items: n - 1 };
        let e = match check(&bytes[..FRAME_HEADER_LEN], &limits) {
            FrameCheck::Invalid(e) => e,
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(&e, &FrameError::TooManyItems { items: n, max: n - 1 });
        prop_assert_eq!(e.status(), Status::BatchTooLarge);
    }

    #[test]
    fn a_wrong_version_is_unsupported(
        p in payload(),
        version in any::<u16>().prop_filter("not spoken", |v| !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(v)),
    ) {
        let mut bytes = frame(10, &p);
        bytes[4..6].copy_from_slice(&version.to_le_bytes());
        let e = FrameError::UnsupportedVersion { found: version };
        prop_assert_eq!(check(&bytes, &FrameLimits::WIRE_MAX), FrameCheck::Invalid(e.clone()));
        prop_assert_eq!(e.status(), Status::UnsupportedVersion);
        prop_assert_eq!(e.detail(), u64::from(PROTOCOL_VERSION));
    }

    #[test]
    fn every_spoken_version_is_accepted(p in payload(), version in MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION) {
        let mut bytes = frame(10, &p);
        bytes[4..6].copy_from_slice(&version.to_le_bytes());
        prop_assert!(matches!(check(&bytes, &FrameLimits::WIRE_MAX), FrameCheck::Complete(_)), "version {}", version);
    }

    #[test]
    fn an_unknown_kind_is_refused(p in payload(), kind in prop_oneof![Just(0u8), 7u8..=255]) {
        let mut bytes = frame(11, &p);
        bytes[6] = kind;
        let e = FrameError::UnknownKind { found: kind };
        prop_assert_eq!(check(&bytes[..FRAME_HEADER_LEN], &FrameLimits::WIRE_MAX), FrameCheck::Invalid(e.clone()));
        prop_assert_eq!(e.status(), Status::UnknownFrameKind);
    }

    #[test]
    fn a_payload_decoded_as_another_kind_fails_validation_or_is_valid_there(p in payload(), kind in any_kind()) {
        let bytes = frame(12, &p);
        let h = header_of(&bytes);
        prop_assume!(kind != h.kind);
        let other = FrameHeader { kind, ..h };
        // The kind byte decides how the payload is read; a wrong kind is like
        // any other damaged byte: refused, or (e.g. an all-zero tail read as
        // an empty vector) a valid archive of that kind. Never a panic, and
        // never an error other than a validation failure.
        match decode_payload(&bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + h.payload_len as usize], &other) {
            Ok(_) | Err(FrameError::BadArchive { .. } | FrameError::ItemCountMismatch { .. }) => {}
            Err(e) => prop_assert!(false, "{:?}", e),
        }
    }
}

#[test]
fn bad_magic_and_flags_are_bad_frames() {
    let bytes = frame(1, &Payload::Requests(vec![Request::Stats]));
    let mut m = bytes.clone();
    m[0] = b'X';
    assert_eq!(check(&m[..1], &FrameLimits::WIRE_MAX), FrameCheck::Invalid(FrameError::BadMagic));
    assert_eq!(FrameError::BadMagic.status(), Status::BadFrame);
    let mut f = bytes.clone();
    f[7] = 0x80;
    assert_eq!(check(&f, &FrameLimits::WIRE_MAX), FrameCheck::Invalid(FrameError::BadFlags { found: 0x80 }));
    assert_eq!(FrameError::BadFlags { found: 0x80 }.status(), Status::BadFrame);
    // A payload that does not fill its padded length: non-zero padding is refused.
    let mut e = frame(2, &Payload::Error(ErrorFrame { code: 100, detail: u64::MAX }));
    e[16..20].copy_from_slice(&12u32.to_le_bytes());
    assert_eq!(check(&e, &FrameLimits::WIRE_MAX), FrameCheck::Invalid(FrameError::NonZeroPadding));
}

#[test]
fn a_decoder_refuses_a_payload_of_the_wrong_kind() {
    let bytes = frame(1, &Payload::Requests(vec![Request::Stats]));
    let h = header_of(&bytes);
    let payload = &bytes[FRAME_HEADER_LEN..];
    assert_eq!(decode_replies(payload, &h), Err(FrameError::UnexpectedKind { found: FrameKind::Requests }));
    assert_eq!(decode_server_frame(payload, &h), Err(FrameError::UnexpectedKind { found: FrameKind::Requests }));
    assert_eq!(FrameError::UnexpectedKind { found: FrameKind::Requests }.status(), Status::UnknownFrameKind);
}

#[test]
fn the_encoder_refuses_oversize_batches_and_leaves_the_output_as_it_was() {
    let mut out = Vec::new();
    let mut enc = Encoder::new(1024, 4);
    enc.requests(&mut out, 1, &[Request::Stats]).unwrap();
    let before = out.clone();

    let five = vec![Request::Stats; 5];
    assert_eq!(enc.requests(&mut out, 2, &five), Err(EncodeError::TooManyItems { items: 5, max: 4 }));
    assert_eq!(out, before);

    // 4 subscriptions with 40 positions each: 4 * (320 + 56) + 8 = 1512 bytes > 1024.
    let big = vec![Request::Subscribe(Subscribe { start: StreamStart::Positions(vec![1; 40]), product: 0, kinds: 0 }); 4];
    assert_eq!(enc.requests(&mut out, 3, &big), Err(EncodeError::TooLarge { len: 1512, max: 1024 }));
    assert_eq!(out, before);

    // The hard maxima of the default encoder.
    let mut enc = Encoder::default();
    let too_many = vec![Request::Stats; MAX_BATCH_REQUESTS + 1];
    assert_eq!(
        enc.requests(&mut out, 4, &too_many),
        Err(EncodeError::TooManyItems { items: MAX_BATCH_REQUESTS + 1, max: MAX_BATCH_REQUESTS })
    );
    let huge =
        [Request::Subscribe(Subscribe { start: StreamStart::Positions(vec![0; MAX_FRAME_PAYLOAD_BYTES / 8]), product: 0, kinds: 0 })];
    assert!(matches!(enc.requests(&mut out, 5, &huge), Err(EncodeError::TooLarge { max: MAX_FRAME_PAYLOAD_BYTES, .. })));
    assert_eq!(out, before);
    // And the largest batch fits.
    enc.requests(&mut out, 6, &vec![Request::Stats; MAX_BATCH_REQUESTS]).unwrap();
}
