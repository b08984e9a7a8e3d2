//! The blocking client on `std::net`: one [`Connection`] per core, and the
//! shard-aware, pipelined [`Client`] over them.
//!
//! Pipelining without threads: [`Client::submit`] sends a batch and returns
//! a [`Ticket`] at once; [`Client::wait`] reads replies (for any ticket) until
//! that ticket's are all in. Many tickets may be outstanding; each
//! connection's replies arrive in the order its frames were sent.
//!
//! Why 700 lines: one typed method per request (place, pay, cancel, get,
//! stock, upsert, adjust, stats, aggregates) with its retry rule, over one
//! connection type; the sans-I/O parts (codec, routing, errors) live in
//! their own modules already.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::error::{ClientError, Result};
use super::routing::{Routes, ShardMap};
use super::{expect_aggregates, expect_order, expect_stats, expect_stock, ClientConfig};
use crate::buffer::FrameBuffer;
use crate::codec::{decode_server_frame, Encoder, ServerFrame};
use crate::frame::{FrameCheck, FrameLimits};
use crate::limits::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::message::{
    AdjustStock, Aggregates, AggregatesQuery, Checkpointed, ClusterMapInfo, IdempotencyKey, KeyRef, ListProducts, Order, OrderRef,
    PlaceOrder, ProductPage, ProductRef, Reply, Request, Stats, StockInfo, StorageStats, UpsertProduct, Welcome,
};

const READ_CHUNK: usize = 64 * 1024;

/// Resolve `addr` to its first socket address.
pub(crate) fn resolve(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<SocketAddr> {
    let given = format!("{addr:?}");
    addr.to_socket_addrs()
        .map_err(|e| ClientError::Resolve { given: given.clone(), detail: e.to_string() })?
        .next()
        .ok_or(ClientError::Resolve { given, detail: "no address".into() })
}

/// One connection to one core, after the handshake.
pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    rx: FrameBuffer,
    tx: Vec<u8>,
    encoder: Encoder,
    welcome: Welcome,
    next_correlation: u64,
    timeout: std::time::Duration,
}

impl Connection {
    /// Connect to `addr` and perform the handshake.
    pub fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, config.connect_timeout).map_err(|source| ClientError::Connect { addr, source })?;
        let io = |source| ClientError::Io { addr, source };
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(config.connect_timeout)).map_err(io)?;
        stream.set_write_timeout(Some(config.request_timeout)).map_err(io)?;
        let mut conn = Connection {
            addr,
            stream,
            rx: FrameBuffer::new(READ_CHUNK, FrameLimits::WIRE_MAX),
            tx: Vec::with_capacity(READ_CHUNK),
            encoder: Encoder::default(),
            welcome: Welcome {
                server_id: 0,
                version: 0,
                core: 0,
                cores: Vec::new(),
                shard_owner: Vec::new(),
                limits: crate::message::ServerLimits { max_frame_bytes: 0, max_batch: 0, max_in_flight: 0 },
            },
            next_correlation: 1,
            timeout: config.connect_timeout,
        };
        conn.encoder.hello(&mut conn.tx, 0, &config.hello())?;
        conn.flush()?;
        match conn.recv()? {
            ServerFrame::Welcome(w) => {
                if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&w.version) {
                    return Err(ClientError::Protocol {
                        addr,
                        what: format!("the server chose protocol version {}, not offered", w.version),
                    });
                }
                conn.encoder.set_version(w.version);
                conn.welcome = w;
            }
            ServerFrame::Error(_, e) => return Err(ClientError::Refused { addr, code: e.code, detail: e.detail }),
            other => return Err(ClientError::Protocol { addr, what: format!("expected Welcome, got {other:?}") }),
        }
        if conn.welcome.shard_owner.is_empty() || conn.welcome.cores.is_empty() {
            return Err(ClientError::Protocol { addr, what: "handshake announced no cores or no shards".into() });
        }
        conn.stream.set_read_timeout(Some(config.request_timeout)).map_err(io)?;
        conn.timeout = config.request_timeout;
        Ok(conn)
    }

    /// The peer's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handshake the server answered with.
    #[must_use]
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// How long [`Connection::recv`] waits for bytes before it fails with
    /// [`ClientError::Timeout`] (the request timeout until changed).
    pub fn set_read_timeout(&mut self, timeout: std::time::Duration) -> Result<()> {
        let timeout = timeout.max(std::time::Duration::from_millis(1));
        self.stream.set_read_timeout(Some(timeout)).map_err(|source| ClientError::Io { addr: self.addr, source })?;
        self.timeout = timeout;
        Ok(())
    }

    /// Send one `Requests` frame; returns its correlation id.
    pub fn send(&mut self, requests: &[Request]) -> Result<u64> {
        let correlation = self.next_correlation;
        self.send_with(correlation, requests)?;
        Ok(correlation)
    }

    fn send_with(&mut self, correlation: u64, requests: &[Request]) -> Result<()> {
        self.next_correlation = self.next_correlation.max(correlation) + 1;
        self.encoder.requests(&mut self.tx, correlation, requests)?;
        self.flush()
    }

    /// Write raw bytes (for tests that speak the protocol badly on purpose).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.tx.extend_from_slice(bytes);
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        let result = self.stream.write_all(&self.tx);
        self.tx.clear();
        result.map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: std::io::Error) -> ClientError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout { addr: self.addr, after: self.timeout },
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                ClientError::Closed { addr: self.addr }
            }
            _ => ClientError::Io { addr: self.addr, source: e },
        }
    }

    /// Read the next frame the server sends (blocking up to the timeout).
    pub fn recv(&mut self) -> Result<ServerFrame> {
        loop {
            if let Some(frame) = self.read_some(None)? {
                return Ok(frame);
            }
        }
    }

    /// Like [`Connection::recv`], but gives up at `deadline` with `None`
    /// instead of failing: the bytes of a frame read so far stay buffered
    /// for the next call. For callers that must do something else on time
    /// (an open-loop load generator sending at intended instants).
    pub fn recv_until(&mut self, deadline: std::time::Instant) -> Result<Option<ServerFrame>> {
        let result = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.read_some(Some(left)) {
                Ok(None) if !left.is_zero() => {}
                other => break other,
            }
        };
        // Elsewhere than Linux the wait moved the socket's read timeout.
        #[cfg(not(target_os = "linux"))]
        let result = {
            let restored = self.stream.set_read_timeout(Some(self.timeout)).map_err(|source| ClientError::Io { addr: self.addr, source });
            match (result, restored) {
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                (Ok(frame), Ok(())) => Ok(frame),
            }
        };
        result
    }

    /// Waits at most `within` for bytes to read; `false` if none came.
    /// ppoll: its timeout is precise to microseconds, where a socket read
    /// timeout rounds up to the kernel's timer ticks (8 ms measured for a
    /// 50 µs timeout), which would make an open-loop sender miss its times.
    #[cfg(target_os = "linux")]
    fn readable_within(&mut self, within: std::time::Duration) -> Result<bool> {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd { fd: self.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(within.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(within.subsec_nanos() as i32),
        };
        // SAFETY: ppoll reads one `pollfd` we own for the call (and writes
        // its `revents`), reads the timespec we pass, and is given no signal
        // mask; the descriptor is our open socket.
        #[allow(unsafe_code)]
        let ready = unsafe { libc::ppoll(&raw mut fd, 1, &raw const timeout, std::ptr::null()) };
        match ready {
            0 => Ok(false),
            n if n > 0 => Ok(true),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(self.io_error(e))
                }
            }
        }
    }

    /// Waits at most `within` for bytes to read (elsewhere than Linux, with
    /// the socket's read timeout: as precise as the platform's timers).
    #[cfg(not(target_os = "linux"))]
    fn readable_within(&mut self, within: std::time::Duration) -> Result<bool> {
        self.stream.set_read_timeout(Some(within)).map_err(|source| ClientError::Io { addr: self.addr, source })?;
        Ok(true)
    }

    /// The next complete frame in the buffer or, if there is none, one read
    /// from the socket and `None` (more may be needed). With `within`, that
    /// read waits at most so long (zero: no read) and a timeout is `None`;
    /// without it, the connection's timeout is an error.
    fn read_some(&mut self, within: Option<std::time::Duration>) -> Result<Option<ServerFrame>> {
        let verdict = self.rx.check();
        match verdict {
            FrameCheck::Complete(header) => {
                let frame = decode_server_frame(self.rx.payload(&header), &header)
                    .map_err(|source| ClientError::Frame { addr: self.addr, source })?;
                self.rx.consume(&header);
                Ok(Some(frame))
            }
            FrameCheck::Invalid(source) => Err(ClientError::Frame { addr: self.addr, source }),
            FrameCheck::Incomplete { .. } => {
                if let Some(within) = within {
                    if within.is_zero() || !self.readable_within(within)? {
                        return Ok(None);
                    }
                }
                let want = self.rx.want(&verdict, READ_CHUNK);
                match self.stream.read(self.rx.spare(want)) {
                    Ok(0) => Err(ClientError::Closed { addr: self.addr }),
                    Ok(n) => {
                        self.rx.commit(n);
                        Ok(None)
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => Ok(None),
                    Err(e) if within.is_some() && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
                    Err(e) => Err(self.io_error(e)),
                }
            }
        }
    }

    /// One step of a shard move (`orderd cluster move-shard`), sent to this
    /// connection's core: its answer, or the refusal as an error.
    pub fn move_shard(&mut self, step: crate::message::MoveShard) -> Result<crate::message::ShardMoved> {
        let mut replies = self.call(&[Request::MoveShard(step)])?;
        super::expect_shard_moved(replies.pop().ok_or(ClientError::UnexpectedReply { expected: "one reply", got: "none".into() })?)
    }

    /// Send one batch and wait for its replies (no pipelining).
    pub fn call(&mut self, requests: &[Request]) -> Result<Vec<Reply>> {
        let correlation = self.send(requests)?;
        loop {
            match self.recv()? {
                ServerFrame::Replies(c, replies) if c == correlation => return Ok(replies),
                ServerFrame::Error(c, e) if c == correlation || c == 0 => {
                    return Err(ClientError::Refused { addr: self.addr, code: e.code, detail: e.detail })
                }
                ServerFrame::Events(..) => {}
                other => return Err(ClientError::Protocol { addr: self.addr, what: format!("unexpected frame {other:?}") }),
            }
        }
    }
}

/// What [`Client::wait_until`] found.
#[derive(Debug)]
pub enum Waited {
    /// Every reply, in request order.
    Ready(Vec<Reply>),
    /// Not all in yet: the ticket, to wait on again.
    Pending(Ticket),
}

/// A handle on a submitted batch; redeem it with [`Client::wait`].
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "a ticket's replies are only read by Client::wait"]
pub struct Ticket(u64);

/// A frame sent and not yet answered.
struct InFlight {
    ticket: u64,
    /// The requests, kept to resend them after a reconnect.
    requests: Vec<Request>,
    /// Where each reply goes in the ticket's reply vector.
    slots: Vec<u32>,
    /// Times this frame was resent after a transport failure.
    attempts: u32,
    /// When its requests were first answered `moved` (resent since).
    moved_since: Option<Instant>,
}

/// A request to resend to its owner by a fresh cluster map: a node
/// answered it `moved` (it does not own the shard by the map it holds;
/// nothing was done), or its node could not be reached (it may be down, or
/// back on other ports).
struct Moved {
    ticket: u64,
    request: Request,
    slot: u32,
    /// The answer if the owner is not found in time: the refusal, or the
    /// transport error.
    outcome: Result<Reply, ClientError>,
    since: Instant,
}

struct TicketState {
    replies: Vec<Option<Reply>>,
    missing: usize,
    failed: Option<ClientError>,
}

/// A connection slot per core, with the frames it has in flight in order.
#[derive(Default)]
struct CoreLink {
    conn: Option<Connection>,
    in_flight: VecDeque<u64>,
}

/// The shard-aware, pipelined, retrying blocking client. See the module docs.
///
/// ```no_run
/// use orderd_protocol::client::{Client, ClientConfig};
/// use orderd_protocol::{PlaceOrder, Request};
///
/// # fn main() -> orderd_protocol::client::Result<()> {
/// let mut client = Client::connect("127.0.0.1:7070", ClientConfig::default())?;
/// // Pipelining: submit several batches, then collect their replies.
/// let a = client.submit(&[Request::PlaceOrder(PlaceOrder::with_new_key(1, 7, 1, 1999))])?;
/// let b = client.submit(&[Request::PlaceOrder(PlaceOrder::with_new_key(2, 8, 1, 2999))])?;
/// let (ra, rb) = (client.wait(a)?, client.wait(b)?);
/// assert_eq!((ra.len(), rb.len()), (1, 1));
/// # Ok(())
/// # }
/// ```
pub struct Client {
    config: ClientConfig,
    seed: SocketAddr,
    map: ShardMap,
    /// Where requests go: this server's cores, or every node's in a cluster.
    routes: Routes,
    /// One link per endpoint of `routes`.
    links: Vec<CoreLink>,
    /// Requests answered `moved`, to resend by a fresh cluster map.
    moved: Vec<Moved>,
    frames: HashMap<u64, InFlight>,
    tickets: HashMap<u64, TicketState>,
    next_ticket: u64,
    next_correlation: u64,
    max_batch: usize,
    max_in_flight: usize,
}

impl Client {
    /// Connect to the server at `addr` (any core), perform the handshake
    /// and learn the shard map. Connections to other cores are made on
    /// first use.
    ///
    /// A node of a cluster hands the client the cluster's map (one more
    /// round trip here): requests then go to their shard's owner on
    /// whichever node it is, and a request answered `moved` (the shard
    /// moved, or the node's map is newer than the client's) is resent to
    /// the owner by a freshly read map, with the same idempotency key,
    /// until `request_timeout` has passed since the first `moved`.
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug, config: ClientConfig) -> Result<Client> {
        let seed = resolve(addr)?;
        let mut conn = Connection::connect(seed, &config)?;
        let welcome = conn.welcome().clone();
        let map = ShardMap::from_welcome(&welcome);
        let mut routes = Routes::single(&map, seed);
        if let Some(info) = read_cluster_map(&mut conn, map.version())? {
            routes.follow_cluster(&info, map.shard_count());
        }
        let mut links: Vec<CoreLink> = (0..routes.len()).map(|_| CoreLink::default()).collect();
        links[routes.seed()].conn = Some(conn);
        let max_batch = config.max_batch.min(welcome.limits.max_batch as usize).max(1);
        let max_in_flight = config.max_in_flight.min(welcome.limits.max_in_flight as usize).max(1);
        Ok(Client {
            config,
            seed,
            map,
            routes,
            links,
            moved: Vec::new(),
            frames: HashMap::new(),
            tickets: HashMap::new(),
            next_ticket: 1,
            next_correlation: 1,
            max_batch,
            max_in_flight,
        })
    }

    /// The routing table learnt from the handshake.
    #[must_use]
    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// Where requests go: the server's cores, or in a cluster every node's
    /// cores and each shard's owner by the map last read.
    #[must_use]
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Send `requests` (split per owning core and per frame size as needed)
    /// and return at once. Blocks only if a connection already has the
    /// maximum of frames in flight, reading replies until it has room.
    pub fn submit(&mut self, requests: &[Request]) -> Result<Ticket> {
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(id, TicketState { replies: vec![None; requests.len()], missing: requests.len(), failed: None });
        let routed = requests.iter().cloned().enumerate().map(|(slot, r)| (slot as u32, r, None));
        self.send_routed(id, routed, self.config.shard_aware)?;
        Ok(Ticket(id))
    }

    /// Sends `(slot, request, moved since)` of ticket `id`, grouped per
    /// endpoint by the routes (`by_map`; else all to the seed) and cut to
    /// the batch size.
    fn send_routed(&mut self, id: u64, requests: impl IntoIterator<Item = (u32, Request, Option<Instant>)>, by_map: bool) -> Result<()> {
        let mut groups: Vec<(Vec<Request>, Vec<u32>, Option<Instant>)> =
            (0..self.links.len()).map(|_| (Vec::new(), Vec::new(), None)).collect();
        for (slot, request, since) in requests {
            let endpoint = if by_map { self.routes.endpoint_for(&request) } else { self.routes.seed() };
            let group = &mut groups[endpoint.min(self.links.len() - 1)];
            group.0.push(request);
            group.1.push(slot);
            group.2 = group.2.min(since).or(since);
        }
        for (endpoint, (reqs, slots, moved_since)) in groups.into_iter().enumerate() {
            for (chunk, chunk_slots) in reqs.chunks(self.max_batch).zip(slots.chunks(self.max_batch)) {
                let frame = InFlight { ticket: id, requests: chunk.to_vec(), slots: chunk_slots.to_vec(), attempts: 0, moved_since };
                self.send_frame(endpoint, frame)?;
            }
        }
        Ok(())
    }

    /// Wait for every reply of `ticket`, in the order its requests were given.
    pub fn wait(&mut self, ticket: Ticket) -> Result<Vec<Reply>> {
        loop {
            self.resend_moved()?;
            let Some(state) = self.tickets.get_mut(&ticket.0) else {
                return Err(ClientError::Protocol { addr: self.seed, what: "unknown ticket".into() });
            };
            if let Some(e) = state.failed.take() {
                self.forget_ticket(ticket.0);
                return Err(e);
            }
            if state.missing == 0 {
                let state = self.tickets.remove(&ticket.0).ok_or(ClientError::Protocol { addr: self.seed, what: "lost ticket".into() })?;
                return Ok(state.replies.into_iter().flatten().collect());
            }
            let Some(core) = self.link_waiting_for(ticket.0)? else { continue };
            self.pump(core);
        }
    }

    /// As [`Client::wait`], but only until `deadline`: the replies if they
    /// are all in by then, else the ticket back ([`Waited::Pending`]) to
    /// wait on later. The request timeout is not applied here (a later
    /// [`Client::wait`] applies it); a broken connection is handled as in
    /// `wait`.
    pub fn wait_until(&mut self, ticket: Ticket, deadline: std::time::Instant) -> Result<Waited> {
        loop {
            self.resend_moved()?;
            let Some(state) = self.tickets.get_mut(&ticket.0) else {
                return Err(ClientError::Protocol { addr: self.seed, what: "unknown ticket".into() });
            };
            if state.failed.is_some() || state.missing == 0 {
                return self.wait(ticket).map(Waited::Ready);
            }
            let Some(core) = self.link_waiting_for(ticket.0)? else {
                if std::time::Instant::now() >= deadline {
                    return Ok(Waited::Pending(ticket));
                }
                continue;
            };
            if !self.pump_until(core, deadline) {
                return Ok(Waited::Pending(ticket));
            }
        }
    }

    /// The link with a frame of `ticket` in flight; `None` if its missing
    /// replies all wait to be resent by a fresh map (`resend_moved`).
    fn link_waiting_for(&self, ticket: u64) -> Result<Option<usize>> {
        if let Some(core) =
            self.links.iter().position(|l| l.in_flight.iter().any(|c| self.frames.get(c).is_some_and(|f| f.ticket == ticket)))
        {
            return Ok(Some(core));
        }
        if self.moved.iter().any(|m| m.ticket == ticket) {
            return Ok(None);
        }
        Err(ClientError::Protocol { addr: self.seed, what: "ticket has replies missing but nothing in flight".into() })
    }

    /// Submit and wait: the replies of `requests`, in order.
    pub fn execute(&mut self, requests: &[Request]) -> Result<Vec<Reply>> {
        let ticket = self.submit(requests)?;
        self.wait(ticket)
    }

    fn execute_one(&mut self, request: Request) -> Result<Reply> {
        let mut replies = self.execute(std::slice::from_ref(&request))?;
        replies.pop().ok_or(ClientError::UnexpectedReply { expected: "one reply", got: "none".into() })
    }

    /// Place an order. A rejection (sold out, limit, ...) is
    /// `Err(ClientError::Rejected(..))`; check it with [`ClientError::status`].
    pub fn place_order(&mut self, order: PlaceOrder) -> Result<Order> {
        expect_order(self.execute_one(Request::PlaceOrder(order))?)
    }

    /// Confirm payment of an order (`placed` -> `paid`; idempotent).
    pub fn pay_order(&mut self, order_id: u64) -> Result<Order> {
        expect_order(self.execute_one(Request::PayOrder(OrderRef { order_id }))?)
    }

    /// Cancel an order (`placed` -> `cancelled`; idempotent).
    pub fn cancel_order(&mut self, order_id: u64) -> Result<Order> {
        expect_order(self.execute_one(Request::CancelOrder(OrderRef { order_id }))?)
    }

    /// Read an order by id.
    pub fn get_order(&mut self, order_id: u64) -> Result<Order> {
        expect_order(self.execute_one(Request::GetOrder(OrderRef { order_id }))?)
    }

    /// Read an order by the product and idempotency key that placed it.
    pub fn get_order_by_key(&mut self, product: u64, key: IdempotencyKey) -> Result<Order> {
        expect_order(self.execute_one(Request::GetOrderByKey(KeyRef { key, product }))?)
    }

    /// Read a product's stock and settings.
    pub fn stock(&mut self, product: u64) -> Result<StockInfo> {
        expect_stock(self.execute_one(Request::GetStock(ProductRef { product }))?)
    }

    /// Create or update a product.
    pub fn upsert_product(&mut self, product: UpsertProduct) -> Result<StockInfo> {
        expect_stock(self.execute_one(Request::UpsertProduct(product))?)
    }

    /// Add (or remove, with a negative delta) stock. Never retried by the
    /// SDK: a transport failure gives [`ClientError::Indeterminate`].
    pub fn adjust_stock(&mut self, product: u64, delta: i64) -> Result<StockInfo> {
        expect_stock(self.execute_one(Request::AdjustStock(AdjustStock { product, delta }))?)
    }

    /// Server statistics, per core.
    pub fn stats(&mut self) -> Result<Stats> {
        expect_stats(self.execute_one(Request::Stats)?)
    }

    /// The live aggregates (orders and GMV over 1/10/60 s windows, the `top`
    /// best-selling products, sold-out products), merged over every core.
    pub fn aggregates(&mut self, top: u32) -> Result<Aggregates> {
        expect_aggregates(self.execute_one(Request::Aggregates(AggregatesQuery { top }))?)
    }

    /// A page of the catalogue: the products whose id is above `after`, by
    /// id, at most `limit` (`0`: the most a reply holds). `more` says
    /// whether to ask again from the last id. Protocol version 2: against
    /// an older server, [`ClientError::Unsupported`] and nothing is sent.
    pub fn list_products(&mut self, after: u64, limit: u32) -> Result<ProductPage> {
        let request = Request::ListProducts(ListProducts { after, limit });
        super::check_version(&request, self.map.version())?;
        super::expect_products(self.execute_one(request)?)
    }

    /// Every core of the server takes a checkpoint now; answers once each is
    /// durable, with the log sequence each covers. It takes as long as the
    /// slowest core's checkpoint (seconds for large shards): give the
    /// client a `request_timeout` to match. Protocol version 2.
    pub fn checkpoint(&mut self) -> Result<Checkpointed> {
        let request = Request::Checkpoint;
        super::check_version(&request, self.map.version())?;
        super::expect_checkpointed(self.execute_one(request)?)
    }

    /// Every core's storage: its newest checkpoint (sequence, time,
    /// duration, size), the log it retains, its orders in memory and
    /// archived, and the memory of its tables. Protocol version 2.
    pub fn storage_stats(&mut self) -> Result<StorageStats> {
        let request = Request::StorageStats;
        super::check_version(&request, self.map.version())?;
        super::expect_storage(self.execute_one(request)?)
    }

    /// The cluster's map as the server follows it: its version, the nodes
    /// and their cores' addresses, each shard's owner; an empty map of
    /// version 0 from a server that is not in a cluster. Protocol version 2.
    pub fn cluster_map(&mut self) -> Result<ClusterMapInfo> {
        let request = Request::ClusterMap;
        super::check_version(&request, self.map.version())?;
        super::expect_cluster(self.execute_one(request)?)
    }

    /// Resends the requests answered `moved` to their owners by a freshly
    /// read cluster map; one whose shard has no reachable owner, or still
    /// moved after `request_timeout`, gets its refusal as the answer.
    fn resend_moved(&mut self) -> Result<()> {
        if self.moved.is_empty() {
            return Ok(());
        }
        let held = self.routes.cluster_version();
        self.refresh_routes();
        let moved = std::mem::take(&mut self.moved);
        if self.routes.cluster_version() == held {
            // The nodes have not caught up with a change, or a move is
            // under way: wait a little, longer the longer it lasts.
            let waited = moved.iter().map(|m| m.since.elapsed()).max().unwrap_or_default();
            std::thread::sleep((waited / 8).clamp(Duration::from_millis(1), Duration::from_millis(100)));
        }
        let mut resend: HashMap<u64, Vec<(u32, Request, Option<Instant>)>> = HashMap::new();
        for m in moved {
            let Some(state) = self.tickets.get_mut(&m.ticket) else { continue };
            if !self.routes.has_owner(&m.request) || m.since.elapsed() >= self.config.request_timeout {
                match m.outcome {
                    Ok(refusal) => {
                        if let Some(place) = state.replies.get_mut(m.slot as usize) {
                            if place.replace(refusal).is_none() {
                                state.missing -= 1;
                            }
                        }
                    }
                    Err(e) => {
                        state.failed.get_or_insert(e);
                    }
                }
                continue;
            }
            resend.entry(m.ticket).or_default().push((m.slot, m.request, Some(m.since)));
        }
        while self.links.len() < self.routes.len() {
            self.links.push(CoreLink::default());
        }
        for (ticket, requests) in resend {
            // A redirect is followed by the map even by a client that
            // sends everything to its seed.
            self.send_routed(ticket, requests, true)?;
        }
        Ok(())
    }

    /// Reads the cluster map again, from the seed or else any endpoint, on
    /// a connection of its own (the links have frames in flight); keeps
    /// the routes held if none answers.
    fn refresh_routes(&mut self) {
        let config = ClientConfig { request_timeout: self.config.connect_timeout, ..self.config.clone() };
        let seed = self.routes.seed();
        for endpoint in std::iter::once(seed).chain((0..self.routes.len()).filter(|&e| e != seed)) {
            let Some(addr) = self.routes.addr(endpoint) else { continue };
            let read = Connection::connect(addr, &config).and_then(|mut conn| {
                let version = conn.welcome().version;
                read_cluster_map(&mut conn, version)
            });
            if let Ok(Some(info)) = read {
                if self.routes.cluster_version().is_none_or(|held| info.version >= held) {
                    self.routes.follow_cluster(&info, self.map.shard_count());
                }
                return;
            }
        }
    }

    fn connection(&mut self, core: usize) -> Result<&mut Connection> {
        if self.links[core].conn.is_none() {
            let addr = self
                .routes
                .addr(core)
                .ok_or(ClientError::Protocol { addr: self.seed, what: format!("no address known for endpoint {core}") })?;
            let conn = Connection::connect(addr, &self.config)?;
            if ShardMap::from_welcome(conn.welcome()).shard_count() != self.map.shard_count() {
                return Err(ClientError::Protocol { addr, what: "core announced a different shard map; reconnect the client".into() });
            }
            self.links[core].conn = Some(conn);
        }
        self.links[core].conn.as_mut().ok_or(ClientError::Closed { addr: self.seed })
    }

    fn send_frame(&mut self, core: usize, frame: InFlight) -> Result<()> {
        while self.links[core].in_flight.len() >= self.max_in_flight {
            self.pump(core);
        }
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let sent = self.connection(core).and_then(|c| c.send_with(correlation, &frame.requests));
        self.links[core].in_flight.push_back(correlation);
        self.frames.insert(correlation, frame);
        if let Err(e) = sent {
            if matches!(e, ClientError::Encode(_)) {
                self.links[core].in_flight.pop_back();
                if let Some(f) = self.frames.remove(&correlation) {
                    self.forget_ticket(f.ticket);
                }
                return Err(e);
            }
            self.recover(core, e);
        }
        Ok(())
    }

    /// As [`Client::pump`], giving up at `deadline`; `false` if no frame
    /// came by then.
    fn pump_until(&mut self, core: usize, deadline: std::time::Instant) -> bool {
        match self.connection(core).and_then(|c| c.recv_until(deadline)) {
            Ok(Some(frame)) => self.file(core, frame),
            Ok(None) => return false,
            Err(e) => self.recover(core, e),
        }
        true
    }

    /// Read one frame from `core` and file its replies; on a transport
    /// failure, recover that core's in-flight frames.
    fn pump(&mut self, core: usize) {
        match self.connection(core).and_then(Connection::recv) {
            Ok(frame) => self.file(core, frame),
            Err(e) => self.recover(core, e),
        }
    }

    /// File the replies of `frame`, read from `core`.
    fn file(&mut self, core: usize, frame: ServerFrame) {
        let (correlation, replies) = match frame {
            ServerFrame::Replies(c, replies) => (c, replies),
            ServerFrame::Error(c, e) if self.links[core].in_flight.front() == Some(&c) => {
                let n = self.frames.get(&c).map_or(0, |f| f.slots.len());
                (c, vec![Reply::Rejected(crate::message::Rejection { code: e.code, detail: e.detail }); n])
            }
            ServerFrame::Error(_, e) => {
                let addr = self.links[core].conn.as_ref().map_or(self.seed, Connection::addr);
                return self.recover(core, ClientError::Refused { addr, code: e.code, detail: e.detail });
            }
            ServerFrame::Events(..) => return,
            ServerFrame::Welcome(_) => {
                return self.recover(core, ClientError::Protocol { addr: self.seed, what: "Welcome after handshake".into() })
            }
        };
        if self.links[core].in_flight.front() != Some(&correlation) {
            let what = format!("reply for correlation {correlation} out of order");
            return self.recover(core, ClientError::Protocol { addr: self.seed, what });
        }
        self.links[core].in_flight.pop_front();
        let Some(frame) = self.frames.remove(&correlation) else { return };
        let Some(state) = self.tickets.get_mut(&frame.ticket) else { return };
        if replies.len() != frame.slots.len() {
            let got = format!("{} replies for {} requests", replies.len(), frame.slots.len());
            state.failed = Some(ClientError::UnexpectedReply { expected: "one reply per request", got });
            return;
        }
        for ((slot, reply), request) in frame.slots.iter().zip(replies).zip(frame.requests) {
            if self.routes.cluster_version().is_some() && is_moved(&reply) {
                let since = frame.moved_since.unwrap_or_else(Instant::now);
                self.moved.push(Moved { ticket: frame.ticket, request, slot: *slot, outcome: Ok(reply), since });
                continue;
            }
            if let Some(place) = state.replies.get_mut(*slot as usize) {
                if place.replace(reply).is_none() {
                    state.missing -= 1;
                }
            }
        }
    }

    /// The connection to `core` failed with `cause`: drop it, reconnect and
    /// resend its in-flight frames if they are all idempotent, or fail their
    /// tickets.
    fn recover(&mut self, core: usize, cause: ClientError) {
        let addr = self.links[core].conn.take().map_or(self.seed, |c| c.addr());
        let pending: Vec<u64> = self.links[core].in_flight.drain(..).collect();
        let mut frames: Vec<InFlight> = pending.iter().filter_map(|c| self.frames.remove(c)).collect();
        if self.routes.cluster_version().is_some() && cause.is_transport() {
            // In a cluster the node may be down for good, or back on other
            // ports: idempotent requests go back to their owner by a fresh
            // map (`resend_moved`), within the request timeout.
            let (idempotent, other): (Vec<InFlight>, Vec<InFlight>) =
                frames.into_iter().partition(|f| f.requests.iter().all(Request::is_idempotent));
            self.fail_frames(other, addr, &cause, 0);
            for f in idempotent {
                let since = f.moved_since.unwrap_or_else(Instant::now);
                for (slot, request) in f.slots.into_iter().zip(f.requests) {
                    self.moved.push(Moved { ticket: f.ticket, request, slot, outcome: Err(clone_error(&cause)), since });
                }
            }
            return;
        }
        let mut cause = cause;
        loop {
            let attempts = frames.iter().map(|f| f.attempts).max().unwrap_or(0);
            let resendable = cause.is_transport() && frames.iter().all(|f| f.requests.iter().all(Request::is_idempotent));
            if frames.is_empty() || !resendable || attempts >= self.config.retries {
                return self.fail_frames(frames, addr, &cause, attempts);
            }
            std::thread::sleep(self.config.retry_backoff * 2u32.saturating_pow(attempts));
            for f in &mut frames {
                f.attempts += 1;
            }
            match self.resend(core, &frames) {
                Ok(()) => {
                    for (c, f) in self.links[core].in_flight.iter().zip(frames) {
                        self.frames.insert(*c, f);
                    }
                    return;
                }
                Err(e) => {
                    self.links[core].conn = None;
                    self.links[core].in_flight.clear();
                    cause = e;
                }
            }
        }
    }

    /// Fail the tickets of `frames` with the error `cause` calls for.
    fn fail_frames(&mut self, frames: Vec<InFlight>, addr: SocketAddr, cause: &ClientError, attempts: u32) {
        for f in frames {
            let error = if !f.requests.iter().all(Request::is_idempotent) && cause.is_transport() {
                ClientError::Indeterminate { addr, cause: cause.to_string() }
            } else if attempts > 0 {
                ClientError::RetriesExhausted { attempts: attempts + 1, last: Box::new(clone_error(cause)) }
            } else {
                clone_error(cause)
            };
            if let Some(state) = self.tickets.get_mut(&f.ticket) {
                state.failed.get_or_insert(error);
            }
        }
    }

    fn resend(&mut self, core: usize, frames: &[InFlight]) -> Result<()> {
        for f in frames {
            let correlation = self.next_correlation;
            self.next_correlation += 1;
            self.connection(core)?.send_with(correlation, &f.requests)?;
            self.links[core].in_flight.push_back(correlation);
        }
        Ok(())
    }

    fn forget_ticket(&mut self, ticket: u64) {
        self.tickets.remove(&ticket);
        let dead: Vec<u64> = self.frames.iter().filter(|(_, f)| f.ticket == ticket).map(|(c, _)| *c).collect();
        for c in dead {
            // Leave the correlation in the link's queue: its reply still
            // arrives in order and is then dropped.
            if let Some(f) = self.frames.get_mut(&c) {
                f.ticket = 0;
            }
        }
    }
}

/// Whether `reply` is a `moved` refusal.
fn is_moved(reply: &Reply) -> bool {
    matches!(reply, Reply::Rejected(r) if r.code == crate::status::Status::Moved.code())
}

/// The cluster map `conn`'s server follows, or `None` for a server that is
/// not in a cluster (or speaks protocol version 1).
fn read_cluster_map(conn: &mut Connection, version: u16) -> Result<Option<ClusterMapInfo>> {
    if Request::ClusterMap.since_version() > version {
        return Ok(None);
    }
    match conn.call(&[Request::ClusterMap])?.pop() {
        // Version 0: a server that is not in a cluster.
        Some(Reply::Cluster(info)) if info.version == 0 => Ok(None),
        Some(Reply::Cluster(info)) => Ok(Some(info)),
        Some(Reply::Rejected(r)) if r.code == crate::status::Status::Unsupported.code() => Ok(None),
        Some(Reply::Rejected(r)) => Err(ClientError::Rejected(r)),
        other => Err(ClientError::UnexpectedReply { expected: "Cluster", got: format!("{other:?}") }),
    }
}

/// `ClientError` holds `io::Error`s, which are not `Clone`; one failure can
/// fail several tickets, each of which gets an equivalent copy.
pub(crate) fn clone_error(e: &ClientError) -> ClientError {
    match e {
        ClientError::Connect { addr, source } => {
            ClientError::Connect { addr: *addr, source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        ClientError::Io { addr, source } => ClientError::Io { addr: *addr, source: std::io::Error::new(source.kind(), source.to_string()) },
        ClientError::Closed { addr } => ClientError::Closed { addr: *addr },
        ClientError::Timeout { addr, after } => ClientError::Timeout { addr: *addr, after: *after },
        ClientError::Frame { addr, source } => ClientError::Frame { addr: *addr, source: source.clone() },
        ClientError::Encode(e) => ClientError::Encode(e.clone()),
        ClientError::Refused { addr, code, detail } => ClientError::Refused { addr: *addr, code: *code, detail: *detail },
        ClientError::Protocol { addr, what } => ClientError::Protocol { addr: *addr, what: what.clone() },
        ClientError::UnexpectedReply { expected, got } => ClientError::UnexpectedReply { expected, got: got.clone() },
        ClientError::Unsupported { needs, server } => ClientError::Unsupported { needs: *needs, server: *server },
        ClientError::Rejected(r) => ClientError::Rejected(*r),
        ClientError::Indeterminate { addr, cause } => ClientError::Indeterminate { addr: *addr, cause: cause.clone() },
        ClientError::Resolve { given, detail } => ClientError::Resolve { given: given.clone(), detail: detail.clone() },
        ClientError::RetriesExhausted { attempts, last } => {
            ClientError::RetriesExhausted { attempts: *attempts, last: Box::new(clone_error(last)) }
        }
    }
}
