//! Hostile and broken clients are cut off, each alone: another client on
//! the same core keeps being served throughout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::client::{ClientConfig, ClientError, Connection};
use orderd_protocol::codec::{decode_server_frame, ServerFrame};
use orderd_protocol::frame::{FrameCheck, FrameHeader, FrameKind, FrameLimits};
use orderd_protocol::message::ProductRef;
use orderd_protocol::{PlaceOrder, Request, Status, UpsertProduct};

/// Read until the server closes (bounded); return the frames it sent.
fn frames_until_closed(stream: &mut TcpStream) -> Vec<ServerFrame> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    let mut buf = FrameBuffer::new(bytes.len(), FrameLimits::WIRE_MAX);
    buf.spare(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
    buf.commit(bytes.len());
    let mut frames = Vec::new();
    while let FrameCheck::Complete(h) = buf.check() {
        frames.push(decode_server_frame(buf.payload(&h), &h).expect("a valid frame"));
        buf.consume(&h);
    }
    frames
}

fn error_code(frames: &[ServerFrame]) -> Option<u16> {
    match frames.last() {
        Some(ServerFrame::Error(_, e)) => Some(e.code),
        _ => None,
    }
}

/// A raw connection that has done the handshake.
fn welcomed(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.seed).unwrap();
    let mut hello = Vec::new();
    orderd_protocol::codec::Encoder::default()
        .hello(&mut hello, 0, &orderd_protocol::message::Hello { client_id: 9, min_version: 1, max_version: 1 })
        .unwrap();
    stream.write_all(&hello).unwrap();
    let mut header = [0u8; 24];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header[6], FrameKind::Welcome as u8);
    let len = u32::from_le_bytes([header[16], header[17], header[18], header[19]]) as usize;
    let mut rest = vec![0u8; (len + 7) & !7];
    stream.read_exact(&mut rest).unwrap();
    stream
}

#[test]
fn garbage_huge_lengths_truncation_and_stalls_only_hurt_their_own_connection() {
    let server = Server::start("0", &["--frame-timeout-ms", "500", "--idle-timeout-ms", "1500", "--write-timeout-ms", "1000"]);
    let mut setup = server.client();
    setup
        .upsert_product(UpsertProduct { product: 1, unit_price_cents: 10, stock: 1_000_000, payment_window_ms: 0, per_user_limit: 0 })
        .unwrap();

    // A well-behaved client keeps ordering on the same (only) core.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let good = {
        let (stop, served, seed) = (Arc::clone(&stop), Arc::clone(&served), server.seed);
        std::thread::spawn(move || {
            let mut client = orderd_protocol::client::Client::connect(seed, ClientConfig { retries: 0, ..ClientConfig::default() })?;
            let mut user = 0;
            while !stop.load(Ordering::Relaxed) {
                user += 1;
                client.place_order(PlaceOrder::with_new_key(user, 1, 1, 10))?;
                served.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok::<u64, ClientError>(user)
        })
    };

    // Random bytes: bad_frame, then close.
    let mut s = TcpStream::connect(server.seed).unwrap();
    let mut x: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8 | 0x80 // never 'O': not the magic
        })
        .collect();
    s.write_all(&garbage).unwrap();
    assert_eq!(error_code(&frames_until_closed(&mut s)), Some(Status::BadFrame.code()));

    // A huge declared length: frame_too_large before any payload is read.
    let mut s = welcomed(&server);
    let header = FrameHeader { version: 1, kind: FrameKind::Requests, flags: 0, correlation: 77, payload_len: 0xFFFF_FFF0, items: 1 };
    s.write_all(&header.to_bytes()).unwrap();
    let frames = frames_until_closed(&mut s);
    assert_eq!(error_code(&frames), Some(Status::FrameTooLarge.code()));
    assert!(matches!(frames.last(), Some(ServerFrame::Error(77, _))), "the Error carries the frame's correlation");

    // A truncated frame, then silence: closed by the frame timeout.
    let mut s = welcomed(&server);
    let header = FrameHeader { version: 1, kind: FrameKind::Requests, flags: 0, correlation: 5, payload_len: 64, items: 1 };
    s.write_all(&header.to_bytes()).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    assert!(frames_until_closed(&mut s).is_empty());

    // Nothing at all, not even a Hello: closed by the frame timeout.
    let mut s = TcpStream::connect(server.seed).unwrap();
    assert!(frames_until_closed(&mut s).is_empty());

    // Hello, then idle: closed by the idle timeout.
    let mut s = welcomed(&server);
    assert!(frames_until_closed(&mut s).is_empty());

    // A client that sends and never reads: closed by the write timeout.
    let mut stalled =
        Connection::connect(server.seed, &ClientConfig { request_timeout: Duration::from_secs(2), ..ClientConfig::default() }).unwrap();
    let batch: Vec<Request> = (0..1024).map(|p| Request::GetStock(ProductRef { product: p })).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Sends succeed or time out until the server gives up on the client;
    // then they fail with a reset or a broken pipe.
    while let Ok(_) | Err(ClientError::Timeout { .. }) = stalled.send(&batch) {
        assert!(Instant::now() < deadline, "a client that never reads was never cut off");
    }

    // The good client was served all along, and still is.
    let before = served.load(Ordering::Relaxed);
    let wait = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::Relaxed) < before + 10 {
        assert!(Instant::now() < wait, "the good client stopped being served");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let placed = good.join().unwrap().expect("the good client never failed");
    assert!(placed > 10);
    assert_eq!(setup.stock(1).unwrap().reserved, placed);
}
