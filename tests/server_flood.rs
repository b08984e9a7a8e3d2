//! Floods of hostile connections stay within the server's bounds: past
//! `--max-connections` a connection gets `too_many_connections` and is
//! closed, and hundreds of hostile connections (garbage, lying lengths,
//! half-sent maximal frames, clients that never read) leave the server's
//! resident memory within a stated bound, while a well-behaved client on the
//! same core is served throughout.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::raw::{frames_until_closed, header, hello_bytes, last_error, read_frame, requests_bytes, rss_kib, welcomed, GoodClient};
use common::Server;
use orderd_protocol::codec::ServerFrame;
use orderd_protocol::frame::FrameKind;
use orderd_protocol::message::ProductRef;
use orderd_protocol::{Request, Status, UpsertProduct};

const MAX_CONNECTIONS: u32 = 64;
const MAX_FRAME_BYTES: u32 = 65_536;

/// How much the server's resident memory may grow over the flood, KiB. Its
/// own bound is about `MAX_CONNECTIONS` × (a receive buffer of up to twice a
/// maximal frame + 64 KiB of replies) ≈ 16 MiB; the rest is slack for the
/// allocator's and the kernel's accounting.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

fn start() -> (Server, GoodClient) {
    let server = Server::start(
        "0",
        &[
            "--max-connections",
            &MAX_CONNECTIONS.to_string(),
            "--max-frame-bytes",
            &MAX_FRAME_BYTES.to_string(),
            "--frame-timeout-ms",
            "800",
            "--write-timeout-ms",
            "800",
        ],
    );
    let mut setup = server.client();
    setup
        .upsert_product(UpsertProduct { product: 1, unit_price_cents: 10, stock: 1_000_000, payment_window_ms: 0, per_user_limit: 0 })
        .expect("create the product");
    drop(setup);
    let good = GoodClient::start(server.seed, 1, 10);
    good.assert_still_served(5, "start-up");
    (server, good)
}

#[test]
fn connections_past_the_bound_get_too_many_connections_and_the_good_client_keeps_its_own() {
    let (server, good) = start();
    let total = MAX_CONNECTIONS as usize + 16;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..total {
        let mut s = TcpStream::connect(server.seed).expect("connect");
        // The server may already have refused and closed: ignore the write.
        let _ = s.write_all(&hello_bytes(1, 1));
        match read_frame(&mut s) {
            ServerFrame::Welcome(_) => admitted.push(s),
            ServerFrame::Error(0, e) => {
                assert_eq!((e.code, e.detail), (Status::TooManyConnections.code(), u64::from(MAX_CONNECTIONS)));
                assert!(frames_until_closed(&mut s).is_empty(), "the Error frame is the last one");
                refused += 1;
            }
            other => panic!("expected a Welcome or too_many_connections, got {other:?}"),
        }
    }
    // The good client holds one connection of the bound.
    assert!(admitted.len() < MAX_CONNECTIONS as usize, "{} admitted past the bound", admitted.len());
    assert_eq!(admitted.len() + refused, total);
    assert!(refused > 16);
    good.assert_still_served(5, "a connection flood");
    // The admitted ones are served.
    for (i, s) in admitted.iter_mut().enumerate().take(8) {
        s.write_all(&requests_bytes(i as u64, &[Request::Stats])).expect("write");
        assert!(matches!(read_frame(s), ServerFrame::Replies(c, r) if c == i as u64 && r.len() == 1));
    }
    drop(admitted);
    // Room again once they close (the server notices asynchronously).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut s = TcpStream::connect(server.seed).expect("connect");
        let _ = s.write_all(&hello_bytes(1, 1));
        if matches!(read_frame(&mut s), ServerFrame::Welcome(_)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "closed connections were never released");
        std::thread::sleep(Duration::from_millis(50));
    }
    good.finish();
}

#[test]
fn a_flood_of_hostile_connections_stays_within_the_memory_bound() {
    let (server, good) = start();
    let pid = server.child.id();
    // Warm up: a connection of each kind once, so that allocator pools that
    // stay are in the baseline.
    hostile_round(&server, 4);
    let before = rss_kib(pid);

    for _ in 0..5 {
        hostile_round(&server, 40);
    }
    good.assert_still_served(5, "the flood");

    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!("server VmRSS {before} KiB before the flood, {after} KiB after");
    assert!(
        grown < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {grown} KiB over the flood ({before} -> {after} KiB), bound {RSS_GROWTH_BOUND_KIB} KiB"
    );
    let placed = good.finish();
    assert!(placed > 10);
}

/// `n` connections at once of every hostile kind, each until the server
/// closes it.
fn hostile_round(server: &Server, n: usize) {
    let addr = server.seed;
    let mut threads = Vec::new();
    for i in 0..n {
        threads.push(std::thread::spawn(move || {
            let mut s = welcomed(addr);
            match i % 5 {
                // Garbage.
                0 => {
                    let _ = s.write_all(&[0xA5; 4096]);
                }
                // A lying, huge length.
                1 => {
                    let _ = s.write_all(&header(FrameKind::Requests, 1, 0xFFFF_FFF0, 1));
                }
                // A maximal frame, all but its last bytes: buffered, then cut
                // by the frame timeout.
                2 => {
                    let mut bytes = header(FrameKind::Requests, 1, MAX_FRAME_BYTES, 1).to_vec();
                    bytes.resize(24 + MAX_FRAME_BYTES as usize - 8, 0x5A);
                    let _ = s.write_all(&bytes);
                }
                // A maximal frame that is not a valid archive.
                3 => {
                    let mut bytes = header(FrameKind::Requests, 1, MAX_FRAME_BYTES, 1).to_vec();
                    bytes.resize(24 + MAX_FRAME_BYTES as usize, 0x5A);
                    let _ = s.write_all(&bytes);
                }
                // Requests whose replies it never reads, until cut off.
                _ => {
                    s.set_write_timeout(Some(Duration::from_secs(2))).expect("write timeout");
                    let batch: Vec<Request> = (0..1000).map(|p| Request::GetStock(ProductRef { product: p })).collect();
                    let frame = requests_bytes(1, &batch);
                    for _ in 0..2000 {
                        if s.write_all(&frame).is_err() {
                            break;
                        }
                    }
                    return;
                }
            }
            let frames = frames_until_closed(&mut s);
            if let Some((_, code, _)) = last_error(&frames) {
                assert!([Status::BadFrame.code(), Status::FrameTooLarge.code()].contains(&code), "{frames:?}");
            }
        }));
    }
    for t in threads {
        t.join().expect("a hostile connection thread");
    }
}
