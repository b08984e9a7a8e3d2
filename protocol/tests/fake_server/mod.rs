//! A fake orderd for SDK tests: speaks the real codec on loopback with
//! several "cores" (one listener each), keeps a tiny in-memory order book
//! behind a mutex, records which core served each request, and can be told
//! to misbehave (drop a connection after applying a frame, stall, refuse).
//! It is a test double for the client, not a model of the engine. The
//! server crate's admin and load-generator tests use this same file
//! (`#[path]`): it enforces per-user limits (the `hot` workload needs them),
//! can sell two units per accepted order (`Faults::double_count`, an
//! invariant break the load generator must catch), and sends without
//! Nagle's delay so test latencies are not delayed-ACK stalls.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use orderd_protocol::buffer::FrameBuffer;
use orderd_protocol::codec::{decode_hello, decode_requests, Encoder};
use orderd_protocol::frame::{FrameCheck, FrameKind, FrameLimits};
use orderd_protocol::message::*;
use orderd_protocol::shard::{order_id, shard_of_order, shard_of_product};
use orderd_protocol::Status;

pub const SHARDS: u32 = 8;

#[derive(Default)]
pub struct Book {
    pub products: HashMap<u64, StockInfo>,
    pub orders: HashMap<u64, Order>,
    pub keys: HashMap<(u64, IdempotencyKey), (PlaceOrder, u64)>,
    pub next_seq: HashMap<u32, u64>,
    /// (core that served, request) for every request.
    pub served: Vec<(u16, Request)>,
    /// What `Stats` answers, per core (admin tests set it).
    pub stats: Vec<CoreStats>,
    /// What `StorageStats` answers, per core (admin tests set it).
    pub storage: Vec<CoreStorage>,
    /// Units each (user, product) holds, for per-user limits.
    pub holdings: HashMap<(u64, u64), u64>,
    /// Sell two units per accepted order (`Faults::double_count`, copied here).
    pub double_count: bool,
    /// Answer `GetOrderByKey` of a key older than this many ms with
    /// `key_expired` (detail = the clock), as a server past its dedup
    /// window does (`None`: never).
    pub key_window_ms: Option<u64>,
}

impl Book {
    fn apply(&mut self, core: u16, req: &Request) -> Reply {
        self.served.push((core, req.clone()));
        match req {
            Request::PlaceOrder(p) => {
                if let Some((orig, id)) = self.keys.get(&(p.product, p.key)) {
                    return if orig == p { Reply::Order(self.orders[id]) } else { Reply::rejected(Status::KeyReused, *id) };
                }
                let Some(s) = self.products.get_mut(&p.product) else { return Reply::rejected(Status::NoSuchProduct, 0) };
                if s.unit_price_cents != p.unit_price_cents {
                    return Reply::rejected(Status::PriceChanged, s.unit_price_cents);
                }
                if s.available < u64::from(p.qty) {
                    return Reply::rejected(Status::SoldOut, s.available);
                }
                let held = self.holdings.entry((p.user, p.product)).or_insert(0);
                if s.per_user_limit > 0 && *held + u64::from(p.qty) > u64::from(s.per_user_limit) {
                    return Reply::rejected(Status::LimitExceeded, u64::from(s.per_user_limit).saturating_sub(*held));
                }
                *held += u64::from(p.qty);
                let units = if self.double_count { 2 * u64::from(p.qty) } else { u64::from(p.qty) };
                s.available = s.available.saturating_sub(units);
                s.reserved += units;
                let shard = shard_of_product(p.product, SHARDS);
                let seq = self.next_seq.entry(shard).or_insert(0);
                *seq += 1;
                let id = order_id(shard, *seq).unwrap();
                let o = Order {
                    id,
                    key: p.key,
                    user: p.user,
                    product: p.product,
                    unit_price_cents: p.unit_price_cents,
                    created_ms: 1,
                    expires_ms: u64::MAX,
                    qty: p.qty,
                    state: OrderState::Placed,
                };
                self.orders.insert(id, o);
                self.keys.insert((p.product, p.key), (*p, id));
                Reply::Order(o)
            }
            Request::PayOrder(r) | Request::CancelOrder(r) | Request::GetOrder(r) => {
                let Some(o) = self.orders.get_mut(&r.order_id) else { return Reply::rejected(Status::NoSuchOrder, 0) };
                match req {
                    Request::PayOrder(_) => o.state = OrderState::Paid,
                    Request::CancelOrder(_) => o.state = OrderState::Cancelled,
                    _ => {}
                }
                Reply::Order(*o)
            }
            Request::GetOrderByKey(k)
                if self.key_window_ms.is_some_and(|w| k.key.time_ms().is_some_and(|t| t.saturating_add(w) < now_ms())) =>
            {
                Reply::rejected(Status::KeyExpired, now_ms())
            }
            Request::GetOrderByKey(k) => match self.keys.get(&(k.product, k.key)) {
                Some((_, id)) => Reply::Order(self.orders[id]),
                None => Reply::rejected(Status::NoSuchOrder, 0),
            },
            Request::GetStock(p) => match self.products.get(&p.product) {
                Some(s) => Reply::Stock(*s),
                None => Reply::rejected(Status::NoSuchProduct, 0),
            },
            Request::UpsertProduct(u) => {
                // As the server: an existing product keeps its stock.
                let s = match self.products.get(&u.product) {
                    Some(old) => StockInfo {
                        unit_price_cents: u.unit_price_cents,
                        payment_window_ms: u.payment_window_ms,
                        per_user_limit: u.per_user_limit,
                        ..*old
                    },
                    None => StockInfo {
                        product: u.product,
                        unit_price_cents: u.unit_price_cents,
                        available: u.stock,
                        reserved: 0,
                        paid: 0,
                        supplied: u.stock,
                        payment_window_ms: u.payment_window_ms,
                        per_user_limit: u.per_user_limit,
                    },
                };
                self.products.insert(u.product, s);
                Reply::Stock(s)
            }
            Request::AdjustStock(a) => match self.products.get_mut(&a.product) {
                Some(s) => {
                    s.available = s.available.saturating_add_signed(a.delta);
                    s.supplied = s.supplied.saturating_add_signed(a.delta);
                    Reply::Stock(*s)
                }
                None => Reply::rejected(Status::NoSuchProduct, 0),
            },
            Request::Subscribe(_)
            | Request::Aggregates(_)
            | Request::Checkpoint
            | Request::ClusterMap
            | Request::MoveShard(_)
            | Request::Replicate(_) => Reply::rejected(Status::Unsupported, 0),
            Request::StorageStats => Reply::Storage(StorageStats { now_ms: 1_790_000_060_000, cores: self.storage.clone() }),
            Request::ListProducts(l) => {
                let limit = if l.limit == 0 { orderd_protocol::limits::MAX_LIST_PRODUCTS } else { l.limit as usize };
                let mut products: Vec<StockInfo> = self.products.values().filter(|s| s.product > l.after).copied().collect();
                products.sort_unstable_by_key(|s| s.product);
                let more = u32::from(products.len() > limit);
                products.truncate(limit);
                Reply::Products(orderd_protocol::message::ProductPage { products, more })
            }
            Request::Stats => Reply::Stats(Stats { server_id: 7, cores: self.stats.clone() }),
        }
    }
}

/// Ways the fake misbehaves, each armed for a count of frames.
#[derive(Default)]
pub struct Faults {
    /// Apply the next N request frames, then close instead of replying.
    pub drop_after_apply: AtomicUsize,
    /// Answer the next N request frames with an Error frame of `error_code`
    /// (after letting `error_after` frames through).
    pub error_frames: AtomicUsize,
    pub error_after: AtomicUsize,
    pub error_code: AtomicUsize,
    /// Never answer request frames (stall) while set.
    pub stall: AtomicBool,
    /// Do not read the socket while set (with small receive buffers the
    /// client's writes then block mid-frame).
    pub pause_reading: AtomicBool,
    /// Connections accepted, all cores.
    pub connections: AtomicUsize,
    /// Refuse the handshake with `unsupported_version`.
    pub refuse_hello: AtomicBool,
    /// Sell two units for every accepted order while set (the stock still
    /// balances, but units sold no longer match orders accepted).
    pub double_count: AtomicBool,
}

pub struct FakeServer {
    pub addrs: Vec<SocketAddr>,
    pub book: Arc<Mutex<Book>>,
    pub faults: Arc<Faults>,
    pub max_batch: u32,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeServer {
    /// As [`FakeServer::start`], with receive buffers of a few KiB, so that
    /// a client's write of a large frame blocks while the fake does not read.
    pub fn start_small_buffers(cores: u16, max_batch: u32) -> FakeServer {
        FakeServer::start_with(cores, max_batch, true)
    }

    pub fn start(cores: u16, max_batch: u32) -> FakeServer {
        FakeServer::start_with(cores, max_batch, false)
    }

    fn start_with(cores: u16, max_batch: u32, small_buffers: bool) -> FakeServer {
        let listeners: Vec<TcpListener> = (0..cores).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        if small_buffers {
            for l in &listeners {
                // Accepted sockets inherit it, from their handshake on.
                let size: libc::c_int = 4096;
                // SAFETY: setsockopt on a live socket with a pointer to an int
                // and its size, both valid for the call.
                let rc = unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(l),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUF,
                        (&raw const size).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "SO_RCVBUF");
            }
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let welcome = Welcome {
            server_id: 7,
            version: orderd_protocol::limits::PROTOCOL_VERSION,
            core: 0,
            cores: addrs.iter().enumerate().map(|(i, a)| CoreAddr::new(i as u16, *a)).collect(),
            shard_owner: (0..SHARDS).map(|s| (s % u32::from(cores)) as u16).collect(),
            // With small buffers, room for enough frames to fill the client's
            // socket (several MiB on loopback).
            limits: ServerLimits { max_frame_bytes: 1 << 20, max_batch, max_in_flight: if small_buffers { 64 } else { 8 } },
        };
        let book = Arc::new(Mutex::new(Book::default()));
        let faults = Arc::new(Faults::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (core, listener) in listeners.into_iter().enumerate() {
            let (book, faults, stop) = (Arc::clone(&book), Arc::clone(&faults), Arc::clone(&stop));
            let mut welcome = welcome.clone();
            welcome.core = core as u16;
            threads.push(std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    faults.connections.fetch_add(1, Ordering::SeqCst);
                    let (book, faults, stop, welcome) = (Arc::clone(&book), Arc::clone(&faults), Arc::clone(&stop), welcome.clone());
                    std::thread::spawn(move || serve(stream, core as u16, &welcome, &book, &faults, &stop));
                }
            }));
        }
        FakeServer { addrs, book, faults, max_batch, stop, threads }
    }

    pub fn served_by(&self) -> Vec<(u16, Request)> {
        self.book.lock().unwrap().served.clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for a in &self.addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_millis(200));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, core: u16, welcome: &Welcome, book: &Mutex<Book>, faults: &Faults, stop: &AtomicBool) {
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    stream.set_nodelay(true).unwrap(); // no Nagle delay in the latencies tests see
    let mut rx = FrameBuffer::new(4096, FrameLimits::WIRE_MAX);
    let mut enc = Encoder::default();
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match rx.check() {
            FrameCheck::Complete(h) => {
                let payload = rx.payload(&h).to_vec();
                rx.consume(&h);
                match h.kind {
                    FrameKind::Hello => {
                        decode_hello(&payload, &h).unwrap();
                        if faults.refuse_hello.load(Ordering::SeqCst) {
                            enc.error(&mut out, h.correlation, &ErrorFrame { code: Status::UnsupportedVersion.code(), detail: 1 }).unwrap();
                        } else {
                            enc.welcome(&mut out, h.correlation, welcome).unwrap();
                        }
                    }
                    FrameKind::Requests => {
                        let reqs = decode_requests(&payload, &h).unwrap();
                        if reqs == [Request::ClusterMap] {
                            // The SDK asks at connect whether this is a
                            // cluster node: answered outside the faults,
                            // which count the frames of the test's calls.
                            enc.replies(&mut out, h.correlation, &[Reply::rejected(Status::Unsupported, 0)]).unwrap();
                        } else if faults.stall.load(Ordering::SeqCst) {
                            continue;
                        } else if !take(&faults.error_after) && take(&faults.error_frames) {
                            let code = faults.error_code.load(Ordering::SeqCst) as u16;
                            enc.error(&mut out, h.correlation, &ErrorFrame { code, detail: 0 }).unwrap();
                        } else {
                            let replies: Vec<Reply> = {
                                let mut b = book.lock().unwrap();
                                b.double_count = faults.double_count.load(Ordering::SeqCst);
                                reqs.iter().map(|r| b.apply(core, r)).collect()
                            };
                            if take(&faults.drop_after_apply) {
                                return; // reply lost: the client must recover
                            }
                            enc.replies(&mut out, h.correlation, &replies).unwrap();
                        }
                    }
                    _ => return,
                }
                if stream.write_all(&out).is_err() {
                    return;
                }
                out.clear();
            }
            FrameCheck::Invalid(_) => return,
            FrameCheck::Incomplete { need } => {
                if faults.pause_reading.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let want = need.max(4096);
                match stream.read(rx.spare(want)) {
                    Ok(0) => return,
                    Ok(n) => rx.commit(n),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

fn take(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Which shard owner serves `product`.
pub fn owner_of_product(product: u64, cores: u16) -> u16 {
    (shard_of_product(product, SHARDS) % u32::from(cores)) as u16
}

pub fn owner_of_order(id: u64, cores: u16) -> u16 {
    (shard_of_order(id) % u32::from(cores)) as u16
}

/// The clock, ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
