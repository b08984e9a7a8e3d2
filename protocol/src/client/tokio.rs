//! The async client on tokio (cargo feature `tokio`), for services that call
//! orderd. Cheap to clone and share between tasks: every clone uses the same
//! connections, one per core, each with a reader task that hands replies to
//! their callers by correlation id. Calls from many tasks pipeline on the
//! same connection up to the in-flight bound.
//!
//! # Cancellation
//!
//! Every call is cancellation-safe: a future dropped at any await (a
//! `tokio::time::timeout`, a `select!`, an aborted task) never leaves half
//! a frame on a shared connection. A call hands its whole encoded frame to
//! the connection's writer task in one non-blocking send, and only that
//! task writes the socket. A frame handed over is written whole even if its
//! caller is gone; its reply is dropped when it arrives, and only then is
//! its place in the in-flight bound given back, so a cancelled call never
//! lets more frames be unanswered than the server allows.
//!
//! # Deadlines
//!
//! [`ClientConfig::call_timeout`] bounds a whole call: its sends, its waits
//! and its retries with their backoff. A call that runs out of it fails with
//! [`ClientError::Timeout`] (or [`ClientError::Indeterminate`] for a
//! request that is not idempotent, such as a stock adjustment).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::error::{ClientError, Result};
use super::routing::{Routes, ShardMap};
use super::{expect_aggregates, expect_order, expect_stats, expect_stock, ClientConfig};
use crate::buffer::FrameBuffer;
use crate::codec::{decode_server_frame, Encoder, ServerFrame};
use crate::frame::{FrameCheck, FrameLimits};
use crate::limits::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::message::{
    AdjustStock, Aggregates, AggregatesQuery, Checkpointed, ClusterMapInfo, IdempotencyKey, KeyRef, ListProducts, Order, OrderRef,
    PlaceOrder, ProductPage, ProductRef, Rejection, Reply, Request, Stats, StockInfo, StorageStats, UpsertProduct, Welcome,
};

const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Encoding happens between awaits, so a per-thread encoder (and its
    /// scratch arena) is never shared.
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::default());
}

type ReplySender = oneshot::Sender<Result<Vec<Reply>>>;

/// A frame waiting for its replies: how many, where they go, and its place
/// in the in-flight bound (given back when the entry goes).
struct Waiting {
    requests: usize,
    reply: ReplySender,
    _slot: OwnedSemaphorePermit,
}

type Pending = Arc<Mutex<HashMap<u64, Waiting>>>;

/// One connection to one core: a writer task fed whole frames, a reader
/// task, and the callers waiting for replies.
struct AsyncConn {
    addr: SocketAddr,
    frames: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_correlation: AtomicU64,
    slots: Arc<Semaphore>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    welcome: Welcome,
}

impl Drop for AsyncConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

pub(super) async fn read_frame(stream: &mut (impl AsyncReadExt + Unpin), rx: &mut FrameBuffer, addr: SocketAddr) -> Result<ServerFrame> {
    loop {
        let verdict = rx.check();
        match verdict {
            FrameCheck::Complete(h) => {
                let frame = decode_server_frame(rx.payload(&h), &h).map_err(|source| ClientError::Frame { addr, source })?;
                rx.consume(&h);
                return Ok(frame);
            }
            FrameCheck::Invalid(source) => return Err(ClientError::Frame { addr, source }),
            FrameCheck::Incomplete { .. } => {
                let want = rx.want(&verdict, READ_CHUNK);
                match stream.read(rx.spare(want)).await {
                    Ok(0) => return Err(ClientError::Closed { addr }),
                    Ok(n) => rx.commit(n),
                    Err(source) => return Err(ClientError::Io { addr, source }),
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent
    // (single inserts and removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Connects to `addr` and completes the handshake within the connect
/// timeout: the stream, its receive buffer (it may already hold frames
/// after the Welcome) and the Welcome.
pub(super) async fn handshake(addr: SocketAddr, config: &ClientConfig) -> Result<(TcpStream, FrameBuffer, Welcome)> {
    let connect = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr, source })?;
        stream.set_nodelay(true).map_err(|source| ClientError::Io { addr, source })?;
        let mut hello = Vec::new();
        ENCODER.with(|e| e.borrow_mut().hello(&mut hello, 0, &config.hello()))?;
        stream.write_all(&hello).await.map_err(|source| ClientError::Io { addr, source })?;
        let mut rx = FrameBuffer::new(READ_CHUNK, FrameLimits::WIRE_MAX);
        let welcome = match read_frame(&mut stream, &mut rx, addr).await? {
            ServerFrame::Welcome(w) if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&w.version) => w,
            ServerFrame::Welcome(w) => {
                return Err(ClientError::Protocol { addr, what: format!("the server chose protocol version {}, not offered", w.version) })
            }
            ServerFrame::Error(_, e) => return Err(ClientError::Refused { addr, code: e.code, detail: e.detail }),
            other => return Err(ClientError::Protocol { addr, what: format!("expected Welcome, got {other:?}") }),
        };
        Ok((stream, rx, welcome))
    };
    tokio::time::timeout(config.connect_timeout, connect).await.map_err(|_| ClientError::Timeout { addr, after: config.connect_timeout })?
}

/// Resolves `addr` (`host:port`) to its first socket address.
pub(super) async fn lookup(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| ClientError::Resolve { given: addr.into(), detail: e.to_string() })?
        .next()
        .ok_or(ClientError::Resolve { given: addr.into(), detail: "no address".into() })
}

/// Encodes a Requests frame of protocol `version` with this thread's encoder.
pub(super) fn encode_requests(version: u16, correlation: u64, requests: &[Request]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ENCODER.with(|e| {
        let mut e = e.borrow_mut();
        e.set_version(version);
        e.requests(&mut bytes, correlation, requests)
    })?;
    Ok(bytes)
}

impl AsyncConn {
    async fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<AsyncConn> {
        let (stream, rx, welcome) = handshake(addr, config).await?;
        if welcome.shard_owner.is_empty() || welcome.cores.is_empty() {
            return Err(ClientError::Protocol { addr, what: "handshake announced no cores or no shards".into() });
        }
        let (read_half, write_half) = stream.into_split();
        let pending: Pending = Arc::default();
        let reader = tokio::spawn(Self::read_loop(read_half, rx, addr, Arc::clone(&pending)));
        let (frames, queued) = mpsc::unbounded_channel();
        let writer = tokio::spawn(Self::write_loop(write_half, queued, addr, Arc::clone(&pending)));
        let in_flight = config.max_in_flight.min(welcome.limits.max_in_flight as usize).max(1);
        Ok(AsyncConn {
            addr,
            frames,
            pending,
            next_correlation: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(in_flight)),
            reader,
            writer,
            welcome,
        })
    }

    /// Whether the connection still works both ways.
    fn alive(&self) -> bool {
        !self.reader.is_finished() && !self.writer.is_finished()
    }

    /// Write every frame handed over, whole, in order; on a failed write,
    /// fail every caller still waiting and stop (the reader then sees the
    /// connection end, and the connection is replaced).
    async fn write_loop(mut stream: OwnedWriteHalf, mut frames: mpsc::UnboundedReceiver<Vec<u8>>, addr: SocketAddr, pending: Pending) {
        while let Some(frame) = frames.recv().await {
            if let Err(source) = stream.write_all(&frame).await {
                let failure = ClientError::Io { addr, source };
                for (_, waiting) in lock(&pending).drain() {
                    let _ = waiting.reply.send(Err(super::blocking::clone_error(&failure)));
                }
                let _ = stream.shutdown().await;
                return;
            }
        }
    }

    /// Hand every reply frame to its caller; on any failure, fail every
    /// caller still waiting and stop (the connection is then replaced).
    async fn read_loop(mut stream: tokio::net::tcp::OwnedReadHalf, mut rx: FrameBuffer, addr: SocketAddr, pending: Pending) {
        let failure = loop {
            match read_frame(&mut stream, &mut rx, addr).await {
                Ok(ServerFrame::Replies(c, replies)) => {
                    // A caller that gave up is gone: the send fails, and the
                    // entry's slot in the in-flight bound is given back.
                    if let Some(waiting) = lock(&pending).remove(&c) {
                        let _ = waiting.reply.send(Ok(replies));
                    }
                }
                Ok(ServerFrame::Error(c, e)) => match lock(&pending).remove(&c) {
                    Some(waiting) => {
                        let rejected = Reply::Rejected(Rejection { code: e.code, detail: e.detail });
                        let _ = waiting.reply.send(Ok(vec![rejected; waiting.requests]));
                    }
                    None => break ClientError::Refused { addr, code: e.code, detail: e.detail },
                },
                Ok(ServerFrame::Events(..)) => {}
                Ok(ServerFrame::Welcome(_)) => break ClientError::Protocol { addr, what: "Welcome after handshake".into() },
                Err(e) => break e,
            }
        };
        for (_, waiting) in lock(&pending).drain() {
            let _ = waiting.reply.send(Err(super::blocking::clone_error(&failure)));
        }
    }

    /// Sends one frame and waits for its replies (cancellation-safe: see
    /// the module docs).
    async fn call(&self, requests: &[Request], config: &ClientConfig) -> Result<Vec<Reply>> {
        let slot = Arc::clone(&self.slots).acquire_owned().await.map_err(|_| ClientError::Closed { addr: self.addr })?;
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_requests(self.welcome.version, correlation, requests)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(correlation, Waiting { requests: requests.len(), reply: tx, _slot: slot });
        if !self.alive() || self.frames.send(bytes).is_err() {
            lock(&self.pending).remove(&correlation);
            return Err(ClientError::Closed { addr: self.addr });
        }
        // From here the frame is the writer's: a caller dropped while it
        // waits leaves it to be written whole and its reply dropped.
        match tokio::time::timeout(config.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed { addr: self.addr }),
            Err(_) => Err(ClientError::Timeout { addr: self.addr, after: config.request_timeout }),
        }
    }
}

/// A connection slot per endpoint of the routes.
type Link = Arc<tokio::sync::Mutex<Option<Arc<AsyncConn>>>>;

struct Inner {
    config: ClientConfig,
    seed: SocketAddr,
    map: ShardMap,
    /// Where requests go: this server's cores, or every node's in a
    /// cluster (re-read when a node answers `moved`).
    routes: Mutex<Routes>,
    /// One per endpoint of `routes` (endpoints are only added).
    links: Mutex<Vec<Link>>,
    max_batch: usize,
}

/// The async, shard-aware, pipelining, retrying client. Clone it freely.
///
/// ```no_run
/// # async fn demo() -> orderd_protocol::client::Result<()> {
/// use orderd_protocol::client::{AsyncClient, ClientConfig};
/// use orderd_protocol::PlaceOrder;
///
/// let client = AsyncClient::connect("127.0.0.1:7070", ClientConfig::default()).await?;
/// let order = client.place_order(PlaceOrder::with_new_key(42, 7, 1, 1999)).await?;
/// println!("placed order {}", order.id);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

impl AsyncClient {
    /// Connect to the server at `addr` (any core) and learn the shard map;
    /// from a node of a cluster, the cluster's map too, routed by as the
    /// blocking [`Client::connect`](crate::client::Client::connect) does.
    pub async fn connect(addr: &str, config: ClientConfig) -> Result<AsyncClient> {
        let seed = lookup(addr).await?;
        let conn = Arc::new(AsyncConn::connect(seed, &config).await?);
        let map = ShardMap::from_welcome(&conn.welcome);
        let max_batch = config.max_batch.min(conn.welcome.limits.max_batch as usize).max(1);
        let mut routes = Routes::single(&map, seed);
        if let Some(info) = read_cluster_map(&conn, &config).await? {
            routes.follow_cluster(&info, map.shard_count());
        }
        let links: Vec<Link> = (0..routes.len()).map(|_| Link::default()).collect();
        *links[routes.seed()].lock().await = Some(conn);
        let (routes, links) = (Mutex::new(routes), Mutex::new(links));
        Ok(AsyncClient { inner: Arc::new(Inner { config, seed, map, routes, links, max_batch }) })
    }

    fn link(&self, endpoint: usize) -> Link {
        let mut links = lock(&self.inner.links);
        while links.len() <= endpoint {
            links.push(Link::default());
        }
        Arc::clone(&links[endpoint])
    }

    /// The routing table learnt from the handshake.
    #[must_use]
    pub fn shard_map(&self) -> &ShardMap {
        &self.inner.map
    }

    async fn conn(&self, core: usize) -> Result<Arc<AsyncConn>> {
        let link = self.link(core);
        let mut link = link.lock().await;
        if let Some(c) = link.as_ref().filter(|c| c.alive()) {
            return Ok(Arc::clone(c));
        }
        let addr = lock(&self.inner.routes)
            .addr(core)
            .ok_or(ClientError::Protocol { addr: self.inner.seed, what: format!("no address known for endpoint {core}") })?;
        let conn = Arc::new(AsyncConn::connect(addr, &self.inner.config).await?);
        *link = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn drop_conn(&self, core: usize, addr: SocketAddr) {
        let link = self.link(core);
        let mut link = link.lock().await;
        if link.as_ref().is_some_and(|c| c.addr == addr) {
            *link = None;
        }
    }

    /// Send one frame's worth of requests to `core`, reconnecting and
    /// resending on transport failures when every request is idempotent.
    async fn call_core(&self, core: usize, requests: Vec<Request>) -> Result<Vec<Reply>> {
        let config = &self.inner.config;
        let idempotent = requests.iter().all(Request::is_idempotent);
        let mut attempt = 0u32;
        loop {
            let result = match self.conn(core).await {
                Ok(conn) => {
                    let r = conn.call(&requests, config).await;
                    if r.as_ref().is_err_and(ClientError::is_transport) {
                        self.drop_conn(core, conn.addr).await;
                    }
                    r
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_transport() => {
                    if !idempotent && !matches!(e, ClientError::Connect { .. }) {
                        return Err(ClientError::Indeterminate { addr: self.inner.seed, cause: e.to_string() });
                    }
                    if attempt >= config.retries {
                        return Err(ClientError::RetriesExhausted { attempts: attempt + 1, last: Box::new(e) });
                    }
                    tokio::time::sleep(config.retry_backoff * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The replies of `requests`, in order, within
    /// [`ClientConfig::call_timeout`]. Requests are split per owning core
    /// and per frame size, and the parts travel concurrently.
    pub async fn execute(&self, requests: &[Request]) -> Result<Vec<Reply>> {
        let deadline = self.inner.config.call_timeout;
        match tokio::time::timeout(deadline, self.execute_untimed(requests)).await {
            Ok(result) => result,
            Err(_) if requests.iter().all(Request::is_idempotent) => Err(ClientError::Timeout { addr: self.inner.seed, after: deadline }),
            Err(_) => Err(ClientError::Indeterminate {
                addr: self.inner.seed,
                cause: format!("no answer within the call timeout of {deadline:?}; the request may or may not have been applied"),
            }),
        }
    }

    /// Sends every request, then resends those a cluster node answered
    /// `moved` to their owners by a freshly read map, until the owner
    /// takes them or `request_timeout` has passed since the first `moved`
    /// (then, or for a shard with no reachable owner, the `moved` refusal
    /// is the answer).
    async fn execute_untimed(&self, requests: &[Request]) -> Result<Vec<Reply>> {
        let config = &self.inner.config;
        let mut out: Vec<Option<Reply>> = vec![None; requests.len()];
        let mut todo: Vec<usize> = (0..requests.len()).collect();
        let mut since: Option<tokio::time::Instant> = None;
        let mut unreachable = None;
        loop {
            // A redirect is followed by the map even by a client that
            // sends everything to its seed.
            let moved = self.execute_round(requests, &todo, &mut out, config.shard_aware || since.is_some(), &mut unreachable).await?;
            if moved.is_empty() {
                break;
            }
            let first = *since.get_or_insert_with(tokio::time::Instant::now);
            let held = lock(&self.inner.routes).cluster_version();
            self.refresh_routes().await;
            let routes = lock(&self.inner.routes).clone();
            if routes.cluster_version() == held {
                tokio::time::sleep((first.elapsed() / 8).clamp(std::time::Duration::from_millis(1), std::time::Duration::from_millis(100)))
                    .await;
            }
            todo =
                moved.into_iter().filter(|&slot| routes.has_owner(&requests[slot]) && first.elapsed() < config.request_timeout).collect();
            if todo.is_empty() {
                break;
            }
        }
        if out.iter().any(Option::is_none) {
            // Requests whose node stayed unreachable.
            return Err(unreachable.unwrap_or(ClientError::Timeout { addr: self.inner.seed, after: config.request_timeout }));
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Reads the cluster map again (from the seed, else any endpoint) and
    /// routes by it if it is not older than the one held.
    async fn refresh_routes(&self) {
        let endpoints = {
            let routes = lock(&self.inner.routes);
            std::iter::once(routes.seed()).chain((0..routes.len()).filter(|&e| e != routes.seed())).collect::<Vec<_>>()
        };
        for endpoint in endpoints {
            let Ok(conn) = self.conn(endpoint).await else { continue };
            if let Ok(Some(info)) = read_cluster_map(&conn, &self.inner.config).await {
                let mut routes = lock(&self.inner.routes);
                if routes.cluster_version().is_none_or(|held| info.version >= held) {
                    routes.follow_cluster(&info, self.inner.map.shard_count());
                }
                return;
            }
        }
    }

    /// One round of [`AsyncClient::execute_untimed`]: sends the requests of
    /// `todo` (slots of `requests`) to their owners (`by_map`; else to the
    /// seed), files their replies in `out`, and
    /// returns the slots answered `moved` by a cluster node.
    ///
    /// In a cluster, the slots of a part whose node could not be reached
    /// (idempotent requests only) are returned too, to be sent again by a
    /// fresh map (the node may be back on other ports, or its shards
    /// elsewhere); `unreachable` keeps the error for when time runs out.
    async fn execute_round(
        &self,
        requests: &[Request],
        todo: &[usize],
        out: &mut [Option<Reply>],
        by_map: bool,
        unreachable: &mut Option<ClientError>,
    ) -> Result<Vec<usize>> {
        let (mut groups, cluster) = {
            let routes = lock(&self.inner.routes);
            let mut groups: Vec<(Vec<Request>, Vec<usize>)> = (0..routes.len()).map(|_| (Vec::new(), Vec::new())).collect();
            for &slot in todo {
                let request = &requests[slot];
                let endpoint = if by_map { routes.endpoint_for(request) } else { routes.seed() };
                let last = groups.len() - 1;
                let group = &mut groups[endpoint.min(last)];
                group.0.push(request.clone());
                group.1.push(slot);
            }
            (std::mem::take(&mut groups), routes.cluster_version().is_some())
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (core, (reqs, slots)) in groups.drain(..).enumerate() {
            for (chunk, chunk_slots) in reqs.chunks(self.inner.max_batch).zip(slots.chunks(self.inner.max_batch)) {
                let this = self.clone();
                let (chunk, chunk_slots) = (chunk.to_vec(), chunk_slots.to_vec());
                tasks.spawn(async move { (chunk_slots, this.call_core(core, chunk).await) });
            }
        }
        let mut moved = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (slots, replies) =
                joined.map_err(|e| ClientError::Protocol { addr: self.inner.seed, what: format!("client task failed: {e}") })?;
            let replies = match replies {
                Ok(replies) => replies,
                Err(e) if cluster && e.is_transport() && slots.iter().all(|&s| requests[s].is_idempotent()) => {
                    moved.extend(slots);
                    *unreachable = Some(e);
                    continue;
                }
                Err(ClientError::RetriesExhausted { last, .. })
                    if cluster && last.is_transport() && slots.iter().all(|&s| requests[s].is_idempotent()) =>
                {
                    moved.extend(slots);
                    *unreachable = Some(*last);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if replies.len() != slots.len() {
                let got = format!("{} replies for {} requests", replies.len(), slots.len());
                return Err(ClientError::UnexpectedReply { expected: "one reply per request", got });
            }
            for (slot, reply) in slots.into_iter().zip(replies) {
                if cluster && matches!(&reply, Reply::Rejected(r) if r.code == crate::status::Status::Moved.code()) {
                    moved.push(slot);
                }
                out[slot] = Some(reply);
            }
        }
        Ok(moved)
    }

    async fn execute_one(&self, request: Request) -> Result<Reply> {
        let mut replies = self.execute(std::slice::from_ref(&request)).await?;
        replies.pop().ok_or(ClientError::UnexpectedReply { expected: "one reply", got: "none".into() })
    }

    /// Place an order; a rejection is `Err(ClientError::Rejected(..))`.
    pub async fn place_order(&self, order: PlaceOrder) -> Result<Order> {
        expect_order(self.execute_one(Request::PlaceOrder(order)).await?)
    }

    /// Confirm payment (`placed` -> `paid`; idempotent).
    pub async fn pay_order(&self, order_id: u64) -> Result<Order> {
        expect_order(self.execute_one(Request::PayOrder(OrderRef { order_id })).await?)
    }

    /// Cancel (`placed` -> `cancelled`; idempotent).
    pub async fn cancel_order(&self, order_id: u64) -> Result<Order> {
        expect_order(self.execute_one(Request::CancelOrder(OrderRef { order_id })).await?)
    }

    /// Read an order by id.
    pub async fn get_order(&self, order_id: u64) -> Result<Order> {
        expect_order(self.execute_one(Request::GetOrder(OrderRef { order_id })).await?)
    }

    /// Read an order by product and idempotency key.
    pub async fn get_order_by_key(&self, product: u64, key: IdempotencyKey) -> Result<Order> {
        expect_order(self.execute_one(Request::GetOrderByKey(KeyRef { key, product })).await?)
    }

    /// Read a product's stock and settings.
    pub async fn stock(&self, product: u64) -> Result<StockInfo> {
        expect_stock(self.execute_one(Request::GetStock(ProductRef { product })).await?)
    }

    /// Create or update a product.
    pub async fn upsert_product(&self, product: UpsertProduct) -> Result<StockInfo> {
        expect_stock(self.execute_one(Request::UpsertProduct(product)).await?)
    }

    /// Adjust stock; never retried on its own (see [`ClientError::Indeterminate`]).
    pub async fn adjust_stock(&self, product: u64, delta: i64) -> Result<StockInfo> {
        expect_stock(self.execute_one(Request::AdjustStock(AdjustStock { product, delta })).await?)
    }

    /// Server statistics, per core.
    pub async fn stats(&self) -> Result<Stats> {
        expect_stats(self.execute_one(Request::Stats).await?)
    }

    /// The live aggregates, merged over every core (see [`crate::client::Client::aggregates`]).
    pub async fn aggregates(&self, top: u32) -> Result<Aggregates> {
        expect_aggregates(self.execute_one(Request::Aggregates(AggregatesQuery { top })).await?)
    }

    /// A page of the catalogue (see [`crate::client::Client::list_products`]).
    pub async fn list_products(&self, after: u64, limit: u32) -> Result<ProductPage> {
        let request = Request::ListProducts(ListProducts { after, limit });
        super::check_version(&request, self.inner.map.version())?;
        super::expect_products(self.execute_one(request).await?)
    }

    /// Every core takes a checkpoint now (see [`crate::client::Client::checkpoint`]).
    pub async fn checkpoint(&self) -> Result<Checkpointed> {
        let request = Request::Checkpoint;
        super::check_version(&request, self.inner.map.version())?;
        super::expect_checkpointed(self.execute_one(request).await?)
    }

    /// Every core's storage (see [`crate::client::Client::storage_stats`]).
    pub async fn storage_stats(&self) -> Result<StorageStats> {
        let request = Request::StorageStats;
        super::check_version(&request, self.inner.map.version())?;
        super::expect_storage(self.execute_one(request).await?)
    }

    /// The cluster's map (see [`crate::client::Client::cluster_map`]).
    pub async fn cluster_map(&self) -> Result<ClusterMapInfo> {
        let request = Request::ClusterMap;
        super::check_version(&request, self.inner.map.version())?;
        super::expect_cluster(self.execute_one(request).await?)
    }
}

/// The cluster map `conn`'s server follows, or `None` for a server that is
/// not in a cluster (or speaks protocol version 1).
async fn read_cluster_map(conn: &AsyncConn, config: &ClientConfig) -> Result<Option<ClusterMapInfo>> {
    if Request::ClusterMap.since_version() > conn.welcome.version {
        return Ok(None);
    }
    match conn.call(&[Request::ClusterMap], config).await?.pop() {
        // Version 0: a server that is not in a cluster.
        Some(Reply::Cluster(info)) if info.version == 0 => Ok(None),
        Some(Reply::Cluster(info)) => Ok(Some(info)),
        Some(Reply::Rejected(r)) if r.code == crate::status::Status::Unsupported.code() => Ok(None),
        Some(Reply::Rejected(r)) => Err(ClientError::Rejected(r)),
        other => Err(ClientError::UnexpectedReply { expected: "Cluster", got: format!("{other:?}") }),
    }
}
