//! Hostile and broken clients are cut off, each alone: every case gets its
//! documented Error frame (PROTOCOL.md § 2.3, § 3) or is closed, and a
//! well-behaved client on the same (only) core keeps getting correct
//! answers during and after. The memory and connection floods are in
//! `server_flood.rs`.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::raw::{
    frames_until_closed, header, hello_bytes, is_closed, last_error, read_frame, requests_bytes, welcomed, GoodClient, CLOSE_LIMIT,
};
use common::Server;
use orderd_protocol::client::{ClientConfig, ClientError, Connection};
use orderd_protocol::codec::ServerFrame;
use orderd_protocol::frame::FrameKind;
use orderd_protocol::message::ProductRef;
use orderd_protocol::{Reply, Request, Status, UpsertProduct};

/// The server's bounds in these tests: small, so the cases are quick.
const FRAME_TIMEOUT_MS: &str = "600";
const MAX_FRAME_BYTES: u64 = 65_536;

const BAD_FRAME: u16 = Status::BadFrame.code();

fn start() -> (Server, GoodClient) {
    let server = Server::start(
        "0",
        &[
            "--frame-timeout-ms",
            FRAME_TIMEOUT_MS,
            "--idle-timeout-ms",
            "3000",
            "--write-timeout-ms",
            "1000",
            "--max-frame-bytes",
            &MAX_FRAME_BYTES.to_string(),
            "--max-batch",
            "256",
        ],
    );
    let mut setup = server.client();
    setup
        .upsert_product(UpsertProduct { product: 1, unit_price_cents: 10, stock: 1_000_000, payment_window_ms: 0, per_user_limit: 0 })
        .expect("create the product");
    let good = GoodClient::start(server.seed, 1, 10);
    good.assert_still_served(5, "start-up");
    (server, good)
}

/// Send `bytes` on a fresh connection (after a handshake if `welcome`) and
/// return the frames the server sent before it closed.
fn exchange(server: &Server, welcome: bool, bytes: &[u8]) -> Vec<ServerFrame> {
    let mut s = if welcome { welcomed(server.seed) } else { TcpStream::connect(server.seed).expect("connect") };
    // The server may close before reading it all: a failed write is fine.
    let _ = s.write_all(bytes);
    frames_until_closed(&mut s)
}

/// The case gets exactly one frame, an Error with `code` (and `correlation`).
fn assert_refused(frames: &[ServerFrame], correlation: u64, code: u16, case: &str) -> u64 {
    match last_error(frames) {
        Some((c, got, detail)) => {
            assert_eq!((c, got), (correlation, code), "{case}: correlation and code of the Error frame");
            assert_eq!(frames.len(), 1, "{case}: the Error frame is the only frame: {frames:?}");
            detail
        }
        None => panic!("{case}: expected an Error frame {code}, got {frames:?}"),
    }
}

/// A stock read of product 1: its Replies frame is easy to check.
fn probe() -> Vec<Request> {
    vec![Request::GetStock(ProductRef { product: 1 }), Request::Stats]
}

fn assert_probe_answered(frame: &ServerFrame, correlation: u64, case: &str) {
    match frame {
        ServerFrame::Replies(c, replies) => {
            assert_eq!((*c, replies.len()), (correlation, 2), "{case}");
            assert!(matches!(&replies[0], Reply::Stock(s) if s.product == 1 && s.unit_price_cents == 10), "{case}: {replies:?}");
            assert!(matches!(&replies[1], Reply::Stats(_)), "{case}: {replies:?}");
        }
        other => panic!("{case}: expected the replies, got {other:?}"),
    }
}

#[test]
fn every_malformed_frame_gets_its_error_code_and_a_good_client_is_served_throughout() {
    let (server, good) = start();

    // Random bytes: bad_frame (100), correlation 0, then close.
    let mut x: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8 | 0x80 // never 'O': not the magic
        })
        .collect();
    assert_refused(&exchange(&server, false, &garbage), 0, BAD_FRAME, "random bytes");
    // A stream that starts like the magic and then is not: refused at once.
    assert_refused(&exchange(&server, false, b"ORD!"), 0, BAD_FRAME, "almost the magic");
    good.assert_still_served(3, "random bytes");

    // A valid header whose length lies.
    let frame = requests_bytes(41, &probe());
    let real = u32::from_le_bytes([frame[16], frame[17], frame[18], frame[19]]);
    for (case, lie) in [
        ("a huge length", 0xFFFF_FFF0u32),
        ("a negative-looking length", 0x8000_0000),
        ("a length of 1 GiB", 1 << 30),
        ("a length one past the bound", MAX_FRAME_BYTES as u32 + 1),
    ] {
        let mut bytes = frame.clone();
        bytes[16..20].copy_from_slice(&lie.to_le_bytes());
        let frames = exchange(&server, true, &bytes);
        let detail = assert_refused(&frames, 41, Status::FrameTooLarge.code(), case);
        assert_eq!(detail, MAX_FRAME_BYTES, "{case}: the detail is the bound");
    }
    // Too small: the frame ends inside the archive; what follows is not a frame.
    let mut short = frame.clone();
    short[16..20].copy_from_slice(&(real - 8).to_le_bytes());
    assert_eq!(last_error(&exchange(&server, true, &short)).map(|e| e.1), Some(BAD_FRAME), "a length 8 bytes short");
    // Too long, with the next frame behind it: the frame swallows its bytes.
    let mut long = frame.clone();
    long[16..20].copy_from_slice(&(real + 64).to_le_bytes());
    long.extend_from_slice(&requests_bytes(42, &probe()));
    assert_refused(&exchange(&server, true, &long), 41, BAD_FRAME, "a length 64 bytes long");
    // Too many items declared: batch_too_large (102) with the bound.
    let mut items = frame.clone();
    items[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(assert_refused(&exchange(&server, true, &items), 41, Status::BatchTooLarge.code(), "u32::MAX items"), 256);
    good.assert_still_served(3, "lying lengths");

    // A valid header, and a payload that is not a valid archive.
    let mut bytes = header(FrameKind::Requests, 43, 16, 1).to_vec();
    bytes.extend_from_slice(&[0xAB; 16]);
    assert_refused(&exchange(&server, true, &bytes), 43, BAD_FRAME, "an invalid archive");
    // A valid archive whose item count differs from the header's.
    let mut bytes = requests_bytes(44, &probe());
    bytes[20..24].copy_from_slice(&1u32.to_le_bytes());
    assert_refused(&exchange(&server, true, &bytes), 44, BAD_FRAME, "items differ from the archive");
    // Non-zero padding and reserved flags.
    let mut bytes = requests_bytes(45, &[Request::Stats]);
    *bytes.last_mut().expect("a padded frame") = 1;
    assert_refused(&exchange(&server, true, &bytes), 45, BAD_FRAME, "non-zero padding");
    let mut bytes = requests_bytes(46, &[Request::Stats]);
    bytes[7] = 0x01;
    assert_refused(&exchange(&server, true, &bytes), 46, BAD_FRAME, "reserved flags");
    good.assert_still_served(3, "invalid archives");

    // Unknown message kinds: an unknown frame kind, a server-to-client kind,
    // Requests before the Hello, a second Hello, and an unknown request tag.
    let mut bytes = requests_bytes(47, &[Request::Stats]);
    bytes[6] = 9;
    assert_refused(&exchange(&server, true, &bytes), 47, Status::UnknownFrameKind.code(), "frame kind 9");
    bytes[6] = FrameKind::Replies as u8;
    assert_refused(&exchange(&server, true, &bytes), 47, Status::UnknownFrameKind.code(), "a Replies frame from a client");
    let bytes = requests_bytes(48, &probe());
    assert_refused(&exchange(&server, false, &bytes), 48, Status::UnknownFrameKind.code(), "Requests before the Hello");
    assert_refused(&exchange(&server, true, &hello_bytes(1, 1)), 0, Status::UnknownFrameKind.code(), "a second Hello");
    let mut bytes = requests_bytes(49, &[Request::Stats]);
    // The payload starts with the element array: the first byte is the tag.
    bytes[24] = 0xEE;
    assert_refused(&exchange(&server, true, &bytes), 49, BAD_FRAME, "request tag 0xEE");
    good.assert_still_served(3, "unknown kinds");

    // Unsupported protocol versions: in the header, and in the Hello's range.
    let newest = u64::from(orderd_protocol::limits::PROTOCOL_VERSION);
    for version in [0u16, orderd_protocol::limits::PROTOCOL_VERSION + 1, u16::MAX] {
        let mut bytes = hello_bytes(1, 1);
        bytes[4..6].copy_from_slice(&version.to_le_bytes());
        let detail = assert_refused(&exchange(&server, false, &bytes), 0, Status::UnsupportedVersion.code(), "header version");
        assert_eq!(detail, newest, "the detail is the newest version the server speaks");
    }
    for (min, max) in [(3, 7), (0, 0), (1, 0), (u16::MAX, u16::MAX)] {
        let detail = assert_refused(&exchange(&server, false, &hello_bytes(min, max)), 0, Status::UnsupportedVersion.code(), "range");
        assert_eq!(detail, newest, "Hello {min}..={max}");
    }
    good.assert_still_served(3, "unsupported versions");

    // Truncated frames: closed without a frame, by the client's EOF or by
    // the frame timeout.
    let frame = requests_bytes(50, &probe());
    let mut s = welcomed(server.seed);
    s.write_all(&frame[..frame.len() - 9]).expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(frames_until_closed(&mut s), vec![], "a frame cut by the client's EOF");
    let mut s = welcomed(server.seed);
    s.write_all(&frame[..30]).expect("write");
    assert_eq!(frames_until_closed(&mut s), vec![], "a frame cut and left unfinished");
    let mut s = TcpStream::connect(server.seed).expect("connect");
    assert_eq!(frames_until_closed(&mut s), vec![], "no Hello at all");

    let placed = good.finish();
    assert!(placed > 20);
    let mut check = server.client();
    assert_eq!(check.stock(1).expect("stock").reserved, placed, "every order of the good client, and only those");
}

#[test]
fn a_frame_written_one_byte_at_a_time_is_answered_correctly() {
    let (server, good) = start();
    let mut s = TcpStream::connect(server.seed).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut bytes = hello_bytes(1, 1);
    bytes.extend_from_slice(&requests_bytes(7, &probe()));
    bytes.extend_from_slice(&requests_bytes(8, &probe()));
    for b in &bytes {
        s.write_all(std::slice::from_ref(b)).expect("write one byte");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(read_frame(&mut s), ServerFrame::Welcome(_)));
    assert_probe_answered(&read_frame(&mut s), 7, "the first frame written bytewise");
    assert_probe_answered(&read_frame(&mut s), 8, "the second frame written bytewise");
    // And the connection is in order afterwards.
    s.write_all(&requests_bytes(9, &probe())).expect("write");
    assert_probe_answered(&read_frame(&mut s), 9, "a frame after the bytewise ones");
    good.assert_still_served(3, "bytewise frames");
    good.finish();
}

/// Trickle `bytes` one byte per `gap`; returns how many were written before
/// the server closed the connection (panics if it never did).
fn trickle_until_closed(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
    let deadline = Instant::now() + CLOSE_LIMIT;
    for (i, b) in bytes.iter().enumerate() {
        if is_closed(s) {
            return i;
        }
        if s.write_all(std::slice::from_ref(b)).is_err() {
            return i;
        }
        assert!(Instant::now() < deadline, "a slow client was never cut off");
        std::thread::sleep(gap);
    }
    panic!("the server took a whole frame at one byte per {gap:?}: {} bytes", bytes.len());
}

#[test]
fn slowloris_is_cut_by_the_frame_timeout_even_when_each_byte_comes_in_time() {
    let (server, good) = start();
    let frame = requests_bytes(3, &probe());
    // One byte per second: every gap is longer than the frame timeout.
    let mut s = welcomed(server.seed);
    let sent = trickle_until_closed(&mut s, &frame, Duration::from_secs(1));
    assert!(sent < frame.len());
    // One byte per 150 ms: every gap is shorter than the 600 ms frame
    // timeout, but the frame as a whole is not finished within it.
    let mut s = welcomed(server.seed);
    let sent = trickle_until_closed(&mut s, &frame, Duration::from_millis(150));
    assert!(sent < frame.len());
    // The same for a Hello trickled on a new connection.
    let mut s = TcpStream::connect(server.seed).expect("connect");
    let sent = trickle_until_closed(&mut s, &hello_bytes(1, 1), Duration::from_millis(150));
    assert!(sent < hello_bytes(1, 1).len());
    good.assert_still_served(3, "slowloris");
    good.finish();
}

#[test]
fn a_client_that_never_reads_is_no_longer_read_from_and_is_closed() {
    let (server, good) = start();
    let mut s = welcomed(server.seed);
    s.set_write_timeout(Some(Duration::from_secs(3))).expect("write timeout");
    let batch: Vec<Request> = (0..256).map(|p| Request::GetStock(ProductRef { product: p })).collect();
    let frame = requests_bytes(1, &batch);
    // Sends succeed (or time out) until the server gives up on the client:
    // the server stops reading once its replies back up, so what the client
    // can push is bounded by the sockets' buffers, not by the server.
    let mut written: u64 = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match s.write_all(&frame) {
            Ok(()) => written += frame.len() as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "a client that never reads was never cut off ({written} bytes written)");
        assert!(written < 64 << 20, "the server kept reading from a client that reads nothing ({written} bytes)");
    }
    good.assert_still_served(3, "a client that does not read");

    // The SDK's view of the same: sends fail once the server closed.
    let mut stalled =
        Connection::connect(server.seed, &ClientConfig { request_timeout: Duration::from_secs(2), ..ClientConfig::default() })
            .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(40);
    while let Ok(_) | Err(ClientError::Timeout { .. }) = stalled.send(&batch) {
        assert!(Instant::now() < deadline, "a client that never reads was never cut off");
    }
    good.assert_still_served(3, "after the stalled clients");
    good.finish();
}
