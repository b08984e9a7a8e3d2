//! A raw TCP client that speaks the protocol badly on purpose, a
//! well-behaved client running beside it, and the server's memory as the
//! kernel reports it. Shared by the hostile-client tests.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::client::{Client, ClientConfig, ClientError};
use orderd_protocol::codec::{decode_server_frame, Encoder, ServerFrame};
use orderd_protocol::frame::{FrameCheck, FrameHeader, FrameKind, FrameLimits};
use orderd_protocol::message::Hello;
use orderd_protocol::{OrderState, PlaceOrder, Request};

/// How long a test waits for the server to close a hostile connection
/// before failing (the timeouts under test are far shorter).
pub const CLOSE_LIMIT: Duration = Duration::from_secs(15);

/// A frame header with every field given.
pub fn header(kind: FrameKind, correlation: u64, payload_len: u32, items: u32) -> [u8; 24] {
    FrameHeader { version: 1, kind, flags: 0, correlation, payload_len, items }.to_bytes()
}

/// The bytes of a Hello frame with this version range.
pub fn hello_bytes(min_version: u16, max_version: u16) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::default().hello(&mut out, 0, &Hello { client_id: 9, min_version, max_version }).expect("a Hello encodes");
    out
}

/// The bytes of a Requests frame.
pub fn requests_bytes(correlation: u64, requests: &[Request]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::default().requests(&mut out, correlation, requests).expect("requests encode");
    out
}

/// Read until the server closes (bounded by [`CLOSE_LIMIT`]); return the
/// frames it sent, decoded (the server must only ever send valid frames).
pub fn frames_until_closed(stream: &mut TcpStream) -> Vec<ServerFrame> {
    stream.set_read_timeout(Some(CLOSE_LIMIT)).expect("set a read timeout");
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection within {CLOSE_LIMIT:?}: {e}"),
        }
    }
    decode_all(&bytes)
}

/// Every frame in `bytes`; panics on an invalid or unfinished one.
pub fn decode_all(bytes: &[u8]) -> Vec<ServerFrame> {
    let mut buf = FrameBuffer::new(bytes.len(), FrameLimits::WIRE_MAX);
    buf.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
    buf.commit(bytes.len());
    let mut frames = Vec::new();
    loop {
        match buf.check() {
            FrameCheck::Complete(h) => {
                frames.push(decode_server_frame(buf.payload(&h), &h).expect("the server sent an invalid frame"));
                buf.consume(&h);
            }
            FrameCheck::Incomplete { .. } if buf.is_empty() => return frames,
            other => panic!("the server's bytes end in {other:?}"),
        }
    }
}

/// The last frame as `(correlation, code, detail)` if it is an Error frame.
pub fn last_error(frames: &[ServerFrame]) -> Option<(u64, u16, u64)> {
    match frames.last() {
        Some(ServerFrame::Error(c, e)) => Some((*c, e.code, e.detail)),
        _ => None,
    }
}

/// Read exactly one frame (bounded by [`CLOSE_LIMIT`]).
pub fn read_frame(stream: &mut TcpStream) -> ServerFrame {
    stream.set_read_timeout(Some(CLOSE_LIMIT)).expect("set a read timeout");
    let mut head = [0u8; 24];
    stream.read_exact(&mut head).expect("a frame header");
    let len = u32::from_le_bytes([head[16], head[17], head[18], head[19]]) as usize;
    let mut frame = head.to_vec();
    frame.resize(24 + ((len + 7) & !7), 0);
    stream.read_exact(&mut frame[24..]).expect("a frame payload");
    let mut frames = decode_all(&frame);
    assert_eq!(frames.len(), 1);
    frames.remove(0)
}

/// A raw connection that has done the handshake.
pub fn welcomed(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.write_all(&hello_bytes(1, 1)).expect("send a Hello");
    match read_frame(&mut stream) {
        ServerFrame::Welcome(_) => stream,
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

/// Whether the server has closed `stream` (without blocking).
pub fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut one = [0u8; 1];
    let closed = match stream.read(&mut one) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

/// The server's resident memory, KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
}

/// A well-behaved client placing one order after another on product
/// `product` (which must exist with enough stock at `unit_price_cents`),
/// checking every answer, until stopped.
pub struct GoodClient {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: JoinHandle<Result<u64, ClientError>>,
}

impl GoodClient {
    pub fn start(addr: SocketAddr, product: u64, unit_price_cents: u64) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            std::thread::spawn(move || {
                let mut client = Client::connect(addr, ClientConfig { retries: 0, ..ClientConfig::default() })?;
                let mut user = 0;
                while !stop.load(Ordering::Relaxed) {
                    user += 1;
                    let order = client.place_order(PlaceOrder::with_new_key(user, product, 1, unit_price_cents))?;
                    assert_eq!((order.user, order.product, order.qty, order.state), (user, product, 1, OrderState::Placed));
                    assert_eq!(client.get_order(order.id)?, order, "a read after a write sees it");
                    served.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(user)
            })
        };
        GoodClient { stop, served, thread }
    }

    /// Orders placed so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Wait (bounded) until `more` orders beyond now were placed: the client
    /// is still being served.
    pub fn assert_still_served(&self, more: u64, during: &str) {
        let target = self.served() + more;
        let deadline = Instant::now() + CLOSE_LIMIT;
        while self.served() < target {
            assert!(!self.thread.is_finished(), "the good client failed during {during}");
            assert!(Instant::now() < deadline, "the good client was not served during {during}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stop; the orders placed. Panics if any request of the client failed.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(Ok(placed)) => placed,
            Ok(Err(e)) => panic!("the good client got an error: {e}"),
            Err(_) => panic!("the good client panicked"),
        }
    }
}
