//! The frame path's decisions, without I/O: frames in, replies out.
//!
//! A connection hands [`Dispatch`] each complete frame its buffer holds
//! (already judged by `frame::check`) together with its core's state and
//! the time; dispatch answers with what to do. Nothing here touches a
//! socket, an executor, a clock or a channel, so every decision of the
//! frame path can be tested by calling it with crafted frames (the tests
//! below), and a simulator can drive it like a connection does.
//!
//! One frame goes through it in three steps:
//! 1. [`Dispatch::admit`]: the handshake comes first, then only Requests
//!    frames, within the in-flight bound; anything else is a [`Refusal`]
//!    (one Error frame, then the connection closes).
//! 2. [`Dispatch::begin`]: validate the payload once (`access_requests`,
//!    never an unchecked access), route each request by the shard map
//!    (PROTOCOL.md § 8), warm what the frame's local requests will read,
//!    apply them to this core's shards in frame order, and queue one
//!    [`CoreMsg`] per other core that owns some of them (or whose stats or
//!    aggregates the frame asks for). Subscribe requests are listed for the
//!    connection, which owns the stream side.
//! 3. The caller delivers [`Dispatch::outgoing`] and hands each answer back
//!    ([`Dispatch::arrived`], or [`Dispatch::undeliverable`]); then
//!    [`Dispatch::finish`] fills the core's own stats and aggregates,
//!    counts the frame, and encodes its replies.
//!
//! [`answer`] is the receiving side: what a core does with a [`CoreMsg`]
//! another core sent it.
//!
//! Replies to state changes carry the log sequence they must wait for
//! ([`Dispatch::take_wait`]): they may leave once every record below it is
//! durable (group commit, `runtime::commit`).

use orderd_protocol::codec::{self, Encoder};
use orderd_protocol::frame::{FrameHeader, FrameKind};
use orderd_protocol::limits::{MAX_BATCH_REQUESTS, MAX_FRAME_PAYLOAD_BYTES, MAX_LIST_PRODUCTS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use orderd_protocol::message::{
    Aggregates, ArchivedRequest, ArchivedSubscribe, CoreStats, CoreStorage, ErrorFrame, ProductPage, Stats, StockInfo, StorageStats,
    Welcome,
};
use orderd_protocol::shard::{shard_of_order, shard_of_product};
use orderd_protocol::{FrameError, Reply, Status};
use rkyv::vec::ArchivedVec;

use super::core::Core;
use crate::engine::Command;
use crate::stream::aggregates;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the shard with this id.
    Shard(u32),
    /// To every core (a stats request).
    Stats,
    /// To every core (a storage-stats request).
    Storage,
    /// To every core: their parts of the live aggregates, with this many best sellers.
    Aggregates(u32),
    /// To every core: their products above `after`, at most `limit` (both
    /// already bounded).
    Products {
        /// Products with a larger id.
        after: u64,
        /// Most products.
        limit: u32,
    },
    /// Answered by the connection itself: it becomes a subscriber.
    Subscribe,
    /// Answered by the connection itself once every core took a checkpoint.
    Checkpoint,
    /// Answered on the spot with this status (unknown shard, unsupported kind).
    Refuse(Status),
    /// In a cluster, a shard this node does not own: answered `moved` with
    /// the map version it holds.
    Moved,
    /// Answered by this core: the cluster map the node follows.
    ClusterMap,
    /// Answered by the connection itself: a request between the nodes of a
    /// cluster (a step of a shard move, `runtime::handoff`; a batch of
    /// replicated events, `runtime::replication`).
    Node,
}

/// The route of a validated wire request, by the shard map of PROTOCOL.md § 8.
#[must_use]
pub fn route(request: &ArchivedRequest, shard_count: u32) -> Route {
    let by_order = |order_id: u64| {
        let shard = shard_of_order(order_id);
        if shard < shard_count {
            Route::Shard(shard)
        } else {
            Route::Refuse(Status::NoSuchOrder)
        }
    };
    match request {
        ArchivedRequest::PlaceOrder(p) => Route::Shard(shard_of_product(p.product.to_native(), shard_count)),
        ArchivedRequest::GetOrderByKey(k) => Route::Shard(shard_of_product(k.product.to_native(), shard_count)),
        ArchivedRequest::GetStock(p) => Route::Shard(shard_of_product(p.product.to_native(), shard_count)),
        ArchivedRequest::UpsertProduct(u) => Route::Shard(shard_of_product(u.product.to_native(), shard_count)),
        ArchivedRequest::AdjustStock(a) => Route::Shard(shard_of_product(a.product.to_native(), shard_count)),
        ArchivedRequest::PayOrder(o) | ArchivedRequest::CancelOrder(o) | ArchivedRequest::GetOrder(o) => by_order(o.order_id.to_native()),
        ArchivedRequest::Stats => Route::Stats,
        ArchivedRequest::StorageStats => Route::Storage,
        ArchivedRequest::ClusterMap => Route::ClusterMap,
        ArchivedRequest::MoveShard(_) | ArchivedRequest::Replicate(_) => Route::Node,
        ArchivedRequest::Aggregates(q) => Route::Aggregates(q.top.to_native()),
        ArchivedRequest::Checkpoint => Route::Checkpoint,
        ArchivedRequest::ListProducts(l) => {
            let limit = match l.limit.to_native() {
                0 => MAX_LIST_PRODUCTS as u32,
                n => n.min(MAX_LIST_PRODUCTS as u32),
            };
            Route::Products { after: l.after.to_native(), limit }
        }
        ArchivedRequest::Subscribe(_) => Route::Subscribe,
    }
}

/// A message from one core to another: everything cores say to each other
/// goes over the mesh as one of these (`runtime::mesh` carries it with the
/// sender and a ticket naming the frame that waits).
#[derive(Debug)]
pub enum CoreMsg {
    /// Apply these `(shard, command)`s of one frame, in order, at the
    /// sender's `now_ms`; the answer is [`CoreAnswer::Applied`].
    Apply {
        /// The sender's clock for the frame.
        now_ms: u64,
        /// The frame's requests for the receiver's shards.
        commands: Vec<(u32, Command)>,
    },
    /// The receiver's counters ([`CoreAnswer::Stats`]).
    Stats,
    /// The receiver's storage ([`CoreAnswer::Storage`]).
    Storage,
    /// The receiver's part of the live aggregates with `top` best sellers
    /// ([`CoreAnswer::Aggregates`]).
    Aggregates {
        /// The sender's clock for the frame.
        now_ms: u64,
        /// Best sellers wanted.
        top: u32,
    },
    /// The receiver's products above `after`, at most `limit` + 1 (one
    /// more says whether more exist), for reply slot `slot`
    /// ([`CoreAnswer::Products`]).
    Products {
        /// The reply slot of the frame's list-products request.
        slot: u32,
        /// Products with a larger id.
        after: u64,
        /// Most products wanted.
        limit: u32,
    },
    /// The receiver's metrics snapshot, for a scrape (answered by
    /// `runtime::mesh`, not by [`answer`]: it reads the group commit).
    Metrics,
}

/// What a core answers to a [`CoreMsg`].
#[derive(Debug)]
pub enum CoreAnswer {
    /// One reply per command of an [`CoreMsg::Apply`], in order.
    Applied(Vec<Reply>),
    /// The core's counters.
    Stats(CoreStats),
    /// The core's storage.
    Storage(CoreStorage),
    /// The core's part of the aggregates.
    Aggregates(Aggregates),
    /// The core's products for a list-products request, by id.
    Products {
        /// The reply slot.
        slot: u32,
        /// The products.
        products: Vec<StockInfo>,
    },
    /// The core's metrics snapshot.
    Metrics(Box<super::metrics::snapshot::CoreSnapshot>),
    /// The message could not be delivered or answered (the core stops).
    Lost,
}

/// What `core` answers to a frame-path message from another core, and the
/// log sequence the answer must wait for (a state change it applied).
/// `None` for [`CoreMsg::Metrics`], which is not the frame path's.
#[must_use]
pub fn answer(core: &mut Core, msg: &CoreMsg) -> Option<(CoreAnswer, Option<u64>)> {
    Some(match msg {
        CoreMsg::Apply { now_ms, commands } => {
            let mut wait = None;
            let replies = commands
                .iter()
                .map(|(shard, cmd)| {
                    let (reply, w) = core.apply(*shard, cmd, *now_ms);
                    wait = wait.max(w);
                    reply
                })
                .collect();
            (CoreAnswer::Applied(replies), wait)
        }
        CoreMsg::Stats => (CoreAnswer::Stats(core.stats()), None),
        CoreMsg::Storage => (CoreAnswer::Storage(core.storage()), None),
        CoreMsg::Aggregates { now_ms, top } => (CoreAnswer::Aggregates(core.aggregates(*now_ms, *top)), None),
        CoreMsg::Products { slot, after, limit } => {
            (CoreAnswer::Products { slot: *slot, products: core.products_after(*after, *limit as usize + 1) }, None)
        }
        CoreMsg::Metrics => return None,
    })
}

/// Why a frame ends the connection: the Error frame to send before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The Error frame's status.
    pub status: Status,
    /// Its detail (a bound, an offset: PROTOCOL.md § 3).
    pub detail: u64,
    /// The correlation of the frame it answers (0 if unknown).
    pub correlation: u64,
}

impl Refusal {
    /// The refusal of a frame the protocol crate judged bad.
    #[must_use]
    pub fn frame(error: &FrameError, correlation: u64) -> Self {
        Refusal { status: error.status(), detail: error.detail(), correlation }
    }

    /// The Error frame to send.
    #[must_use]
    pub fn error_frame(&self) -> ErrorFrame {
        ErrorFrame { code: self.status.code(), detail: self.detail }
    }
}

/// What [`Dispatch::admit`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The Welcome was encoded: the handshake is done.
    Welcomed,
    /// A Requests frame: go on with [`Dispatch::begin`].
    Requests,
}

/// One connection's frame-path state and reused buffers.
pub struct Dispatch {
    /// This core's index.
    me: usize,
    /// Most frames a client may have unanswered.
    max_in_flight: u32,
    encoder: Encoder,
    welcomed: bool,
    /// The log sequence the replies encoded since the last
    /// [`Dispatch::take_wait`] wait for.
    wait_for: Option<u64>,
    replies: Vec<Reply>,
    /// Each request's route and, for a shard's, its engine command.
    routed: Vec<(Route, Option<Command>)>,
    /// Per destination core: the commands to forward and their reply slots.
    outbox: Vec<Vec<(u32, Command)>>,
    slots: Vec<Vec<u32>>,
    stats_slots: Vec<u32>,
    stats: Vec<CoreStats>,
    /// Slots of the frame's storage-stats requests.
    storage_slots: Vec<u32>,
    /// Per core, its storage (`None`: it could not answer).
    storage: Vec<Option<CoreStorage>>,
    /// `(slot, top)` of each aggregates request of the frame.
    aggregates_slots: Vec<(u32, u32)>,
    /// The largest `top` the frame asks for, if it asks for aggregates.
    aggregates_top: Option<u32>,
    /// Per core, its part of the aggregates.
    aggregates: Vec<Aggregates>,
    /// `(slot, after, limit)` of each list-products request of the frame.
    products_slots: Vec<(u32, u64, u32)>,
    /// Every core's products for those requests, by reply slot.
    products: Vec<(u32, Vec<StockInfo>)>,
    /// A core could not answer this frame: its list-products requests are
    /// answered `shutting_down`, not with a page missing its products.
    products_lost: bool,
    /// The protocol version the handshake chose.
    version: u16,
    /// Slots of the frame's subscribe requests (answered by the connection).
    subscribe_slots: Vec<u32>,
    /// Slots of the frame's checkpoint requests (answered by the connection).
    checkpoint_slots: Vec<u32>,
    /// Slots of the frame's requests between nodes (answered by the connection).
    node_slots: Vec<u32>,
    /// The messages of the frame for other cores.
    outgoing: Vec<(usize, CoreMsg)>,
}

impl Dispatch {
    /// The frame path of a connection on core `me` of `cores`.
    #[must_use]
    pub fn new(me: usize, cores: usize, max_in_flight: u32) -> Self {
        Dispatch {
            me,
            max_in_flight,
            encoder: Encoder::new(MAX_FRAME_PAYLOAD_BYTES, MAX_BATCH_REQUESTS),
            welcomed: false,
            wait_for: None,
            replies: Vec::new(),
            routed: Vec::new(),
            outbox: (0..cores).map(|_| Vec::new()).collect(),
            slots: (0..cores).map(|_| Vec::new()).collect(),
            stats_slots: Vec::new(),
            stats: vec![CoreStats::default(); cores],
            storage_slots: Vec::new(),
            storage: vec![None; cores],
            aggregates_slots: Vec::new(),
            aggregates_top: None,
            aggregates: vec![Aggregates::default(); cores],
            products_slots: Vec::new(),
            products: Vec::new(),
            products_lost: false,
            version: MIN_PROTOCOL_VERSION,
            subscribe_slots: Vec::new(),
            checkpoint_slots: Vec::new(),
            node_slots: Vec::new(),
            outgoing: Vec::with_capacity(cores),
        }
    }

    /// Whether the handshake is done.
    #[must_use]
    pub fn welcomed(&self) -> bool {
        self.welcomed
    }

    /// The log sequence the replies encoded since the last call wait for
    /// (`None`: nothing to wait for), and forget it.
    pub fn take_wait(&mut self) -> Option<u64> {
        self.wait_for.take()
    }

    /// The encoder the connection shares for the frames it writes itself
    /// (stream events, Error frames).
    pub fn encoder(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// Judge a complete frame's kind and the in-flight bound (`in_flight`:
    /// the client's Requests frames held unanswered, this one not counted).
    /// The Hello is answered here: its Welcome goes into `out`.
    ///
    /// # Errors
    /// The [`Refusal`] that closes the connection: a frame before the Hello,
    /// a second Hello or a server's frame kind (`unexpected_kind`), a Hello
    /// that does not decode or offers no version this server speaks
    /// (`unsupported_version`), more than `max_in_flight` frames
    /// (`too_many_in_flight`).
    pub fn admit(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        in_flight: usize,
        welcome: &Welcome,
        out: &mut Vec<u8>,
    ) -> Result<Admitted, Refusal> {
        if !self.welcomed {
            return self.hello(header, payload, welcome, out).map(|()| Admitted::Welcomed);
        }
        if header.kind != FrameKind::Requests {
            return Err(Refusal::frame(&FrameError::UnexpectedKind { found: header.kind }, header.correlation));
        }
        if in_flight >= self.max_in_flight as usize {
            return Err(Refusal { status: Status::TooManyInFlight, detail: self.max_in_flight.into(), correlation: header.correlation });
        }
        Ok(Admitted::Requests)
    }

    /// The handshake: a Hello gets the Welcome; anything else is refused.
    fn hello(&mut self, header: &FrameHeader, payload: &[u8], welcome: &Welcome, out: &mut Vec<u8>) -> Result<(), Refusal> {
        if header.kind != FrameKind::Hello {
            return Err(Refusal::frame(&FrameError::UnexpectedKind { found: header.kind }, header.correlation));
        }
        let hello = codec::decode_hello(payload, header).map_err(|e| Refusal::frame(&e, header.correlation))?;
        // The newest version both speak (PROTOCOL.md § 10).
        let version = hello.max_version.min(PROTOCOL_VERSION);
        if version < hello.min_version.max(MIN_PROTOCOL_VERSION) {
            return Err(Refusal { status: Status::UnsupportedVersion, detail: PROTOCOL_VERSION.into(), correlation: header.correlation });
        }
        let welcome = Welcome { version, ..welcome.clone() };
        let welcome = &welcome;
        tracing::debug!(client_id = hello.client_id, "hello");
        if let Err(e) = self.encoder.welcome(out, header.correlation, welcome) {
            tracing::error!(error = %e, "cannot encode the Welcome");
            return Err(Refusal { status: Status::Internal, detail: 0, correlation: header.correlation });
        }
        self.welcomed = true;
        self.version = version;
        self.encoder.set_version(version);
        Ok(())
    }

    /// Step 2 of a Requests frame: validate `payload`, route every request,
    /// apply the local ones to `core` at `now_ms`, and queue the messages
    /// for other cores ([`Dispatch::outgoing`]). Returns the validated
    /// requests, which [`Dispatch::subscribe`] and [`Dispatch::finish`]
    /// read again.
    ///
    /// # Errors
    /// The [`Refusal`] of a payload that does not validate.
    pub fn begin<'a>(
        &mut self,
        header: &FrameHeader,
        payload: &'a [u8],
        core: &mut Core,
        now_ms: u64,
    ) -> Result<&'a ArchivedVec<ArchivedRequest>, Refusal> {
        let requests = codec::access_requests(payload, header).map_err(|e| Refusal::frame(&e, header.correlation))?;
        debug_assert_eq!(core.index(), self.me);
        self.replies.clear();
        self.replies.resize(requests.len(), Reply::rejected(Status::Internal, 0));
        self.stats_slots.clear();
        self.storage_slots.clear();
        self.aggregates_slots.clear();
        self.products_slots.clear();
        self.products.clear();
        self.products_lost = false;
        self.subscribe_slots.clear();
        self.checkpoint_slots.clear();
        self.node_slots.clear();
        self.outgoing.clear();
        let shard_count = core.shard_count();
        let version = self.version;
        self.routed.clear();
        self.routed.extend(requests.iter().map(|request| {
            // A tag of a newer version than the connection's is refused
            // (a conforming client never sends one: PROTOCOL.md § 10).
            let too_new = request.since_version() > version;
            let to = match if too_new { Route::Refuse(Status::Unsupported) } else { route(request, shard_count) } {
                Route::Shard(shard) if !core.serves(shard) => Route::Moved,
                to => to,
            };
            (to, matches!(to, Route::Shard(_)).then(|| Command::from_archived(request)).flatten())
        }));
        // First touch what every request will read, so the cache misses of
        // the frame's requests overlap (benches/README.md, frame warm-up).
        if self.routed.len() > 1 {
            for (to, cmd) in &self.routed {
                if let (Route::Shard(shard), Some(cmd)) = (to, cmd) {
                    core.warm(*shard, cmd);
                }
            }
        }
        for (i, &(to, cmd)) in self.routed.iter().enumerate() {
            match to {
                Route::Shard(shard) => {
                    // A request whose command does not decode keeps the
                    // `internal` reply it was given above.
                    let Some(cmd) = cmd else { continue };
                    let owner = core.owner_of(shard);
                    if owner == self.me {
                        let (reply, wait) = core.apply(shard, &cmd, now_ms);
                        self.replies[i] = reply;
                        self.wait_for = self.wait_for.max(wait);
                    } else if let Some(outbox) = self.outbox.get_mut(owner) {
                        outbox.push((shard, cmd));
                        self.slots[owner].push(i as u32);
                    }
                }
                Route::Stats => self.stats_slots.push(i as u32),
                Route::Storage => self.storage_slots.push(i as u32),
                Route::Aggregates(top) => self.aggregates_slots.push((i as u32, top)),
                Route::Products { after, limit } => self.products_slots.push((i as u32, after, limit)),
                Route::Subscribe => self.subscribe_slots.push(i as u32),
                Route::Checkpoint => self.checkpoint_slots.push(i as u32),
                Route::Node => self.node_slots.push(i as u32),
                Route::Refuse(status) => self.replies[i] = Reply::rejected(status, 0),
                Route::Moved => self.replies[i] = Reply::rejected(Status::Moved, core.map_version()),
                Route::ClusterMap => self.replies[i] = core.cluster_map_reply(),
            }
        }
        self.aggregates_top = self.aggregates_slots.iter().map(|&(_, top)| top).max();
        let want_stats = !self.stats_slots.is_empty();
        let want_storage = !self.storage_slots.is_empty();
        // One Apply per destination core (then its stats and aggregates,
        // after the frame's commands: the mesh keeps a sender's order).
        for to in 0..self.outbox.len() {
            if to == self.me {
                continue;
            }
            if !self.outbox[to].is_empty() {
                let commands = std::mem::take(&mut self.outbox[to]);
                core.counters.forwarded += commands.len() as u64;
                self.outgoing.push((to, CoreMsg::Apply { now_ms, commands }));
            }
            if want_stats {
                self.outgoing.push((to, CoreMsg::Stats));
            }
            if want_storage {
                self.storage[to] = None;
                self.outgoing.push((to, CoreMsg::Storage));
            }
            if let Some(top) = self.aggregates_top {
                self.outgoing.push((to, CoreMsg::Aggregates { now_ms, top }));
            }
            for &(slot, after, limit) in &self.products_slots {
                self.outgoing.push((to, CoreMsg::Products { slot, after, limit }));
            }
        }
        Ok(requests)
    }

    /// The frame's messages for other cores, to deliver in this order; each
    /// answer goes back through [`Dispatch::arrived`].
    pub fn outgoing(&mut self) -> std::vec::Drain<'_, (usize, CoreMsg)> {
        self.outgoing.drain(..)
    }

    /// The frame's `i`th Subscribe request and its slot, to answer with
    /// [`Dispatch::set_reply`] before [`Dispatch::finish`] (`None` past the last).
    #[must_use]
    pub fn subscribe<'r>(&self, requests: &'r ArchivedVec<ArchivedRequest>, i: usize) -> Option<(u32, &'r ArchivedSubscribe)> {
        let slot = *self.subscribe_slots.get(i)?;
        match requests.get(slot as usize) {
            Some(ArchivedRequest::Subscribe(sub)) => Some((slot, sub)),
            _ => None,
        }
    }

    /// The slots of the frame's checkpoint requests, to answer with
    /// [`Dispatch::set_reply`] before [`Dispatch::finish`] (a connection that
    /// does not leaves them `internal`).
    #[must_use]
    pub fn checkpoint_slots(&self) -> &[u32] {
        &self.checkpoint_slots
    }

    /// The slots of the frame's requests between nodes (shard-move steps,
    /// replicated events), to answer with [`Dispatch::set_reply`] before
    /// [`Dispatch::finish`].
    #[must_use]
    pub fn node_slots(&self) -> &[u32] {
        &self.node_slots
    }

    /// The replies of the frame also wait for log sequence `sequence` to be
    /// durable (a shard-move step's control record).
    pub fn wait_also(&mut self, sequence: u64) {
        self.wait_for = self.wait_for.max(Some(sequence));
    }

    /// Sets the reply in `slot` (a subscribe or checkpoint request's).
    pub fn set_reply(&mut self, slot: u32, reply: Reply) {
        if let Some(r) = self.replies.get_mut(slot as usize) {
            *r = reply;
        }
    }

    /// Core `from` answered one of the frame's messages.
    pub fn arrived(&mut self, from: usize, answer: CoreAnswer) {
        match answer {
            CoreAnswer::Applied(replies) => {
                if let Some(slots) = self.slots.get_mut(from) {
                    for (slot, reply) in slots.iter().zip(replies) {
                        self.replies[*slot as usize] = reply;
                    }
                    slots.clear();
                }
            }
            CoreAnswer::Stats(stats) => {
                if let Some(s) = self.stats.get_mut(from) {
                    *s = stats;
                }
            }
            CoreAnswer::Storage(storage) => {
                if let Some(s) = self.storage.get_mut(from) {
                    *s = Some(storage);
                }
            }
            CoreAnswer::Aggregates(part) => {
                if let Some(a) = self.aggregates.get_mut(from) {
                    *a = part;
                }
            }
            CoreAnswer::Products { slot, products } => self.products.push((slot, products)),
            CoreAnswer::Metrics(_) => {}
            CoreAnswer::Lost => self.undeliverable(from),
        }
    }

    /// A message for core `from` could not be delivered (the core stops):
    /// its requests are answered `shutting_down`.
    pub fn undeliverable(&mut self, from: usize) {
        if let Some(slots) = self.slots.get_mut(from) {
            for &slot in slots.iter() {
                self.replies[slot as usize] = Reply::rejected(Status::ShuttingDown, 0);
            }
            slots.clear();
        }
        if let Some(s) = self.stats.get_mut(from) {
            *s = CoreStats::default();
        }
        if let Some(s) = self.storage.get_mut(from) {
            *s = None;
        }
        if let Some(a) = self.aggregates.get_mut(from) {
            *a = Aggregates::default();
        }
        // A page without that core's products would look complete.
        self.products_lost = true;
    }

    /// Step 3: fill this core's stats and aggregates, count the frame in the
    /// core's metrics and encode its replies into `out`.
    ///
    /// # Errors
    /// An `internal` [`Refusal`] if the replies cannot be encoded.
    pub fn finish(
        &mut self,
        header: &FrameHeader,
        requests: &ArchivedVec<ArchivedRequest>,
        core: &mut Core,
        server_id: u64,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        if !self.stats_slots.is_empty() {
            self.stats[self.me] = core.stats();
            let stats = Reply::Stats(Stats { server_id, cores: self.stats.clone() });
            for &slot in &self.stats_slots {
                self.replies[slot as usize] = stats.clone();
            }
        }
        if !self.storage_slots.is_empty() {
            self.storage[self.me] = Some(core.storage());
            let storage = Reply::Storage(StorageStats { now_ms, cores: self.storage.iter().flatten().copied().collect() });
            for &slot in &self.storage_slots {
                self.replies[slot as usize] = storage.clone();
            }
        }
        if let Some(top) = self.aggregates_top {
            self.aggregates[self.me] = core.aggregates(now_ms, top);
            for &(slot, top) in &self.aggregates_slots {
                self.replies[slot as usize] = Reply::Aggregates(aggregates::merge(self.aggregates.iter().cloned(), top));
            }
        }
        for &(slot, after, limit) in &self.products_slots {
            if self.products_lost {
                self.replies[slot as usize] = Reply::rejected(Status::ShuttingDown, 0);
                continue;
            }
            // This core's part, then every part for this slot, merged by id.
            let mut page: Vec<StockInfo> = core.products_after(after, limit as usize + 1);
            for (_, part) in self.products.iter().filter(|(s, _)| *s == slot) {
                page.extend_from_slice(part);
            }
            page.sort_unstable_by_key(|p| p.product);
            let more = page.len() > limit as usize;
            page.truncate(limit as usize);
            self.replies[slot as usize] = Reply::Products(ProductPage { products: page, more: u32::from(more) });
        }
        core.metrics.frame(requests.iter(), &self.replies);
        self.encoder.replies(out, header.correlation, &self.replies).map_err(|e| {
            tracing::error!(error = %e, "cannot encode replies");
            Refusal { status: Status::Internal, detail: 0, correlation: header.correlation }
        })
    }
}

#[cfg(test)]
mod tests;
