//! The messages: every request a client sends and every reply it gets, as
//! rkyv types.
//!
//! Each type here has an archived twin (`ArchivedPlaceOrder`, ...) that rkyv
//! derives: the bytes on the wire *are* the archived form, read in place
//! after validation. `PROTOCOL.md` draws the byte layout of each one.
//!
//! Why one file of 600 lines: it is the wire contract, mirrored section by
//! section in `PROTOCOL.md` § 5, and most of it is field docs; splitting it
//! would scatter one table over several files.
//!
//! Wire rules that follow from rkyv and must never be broken:
//! - enum variants are numbered by their position: variants are only ever
//!   appended, never reordered or removed;
//! - struct fields are laid out in declaration order (`repr(C)`): a field is
//!   never moved, removed or retyped within a protocol version;
//! - no `String`, `usize` or `bool` on the wire: strings have a small-string
//!   layout that is hard to document, `usize` changes with features and
//!   `bool`/enum fields cost per-element validation.

use rkyv::{Archive, Deserialize, Serialize};

use crate::status::Status;

/// A 128-bit idempotency key, chosen by the client, unique per logical
/// request. A retried request carries the same key; the server answers it
/// with the original outcome. Keys are scoped to the shard of the product
/// they order (see `PROTOCOL.md` § Idempotency).
///
/// A key is *time-ordered*: it has the layout of an RFC 9562 UUID version 7
/// (`hi` holds the big-endian first eight bytes, `lo` the last eight): the
/// high 48 bits of `hi` are the Unix time in milliseconds at which the
/// client made it, then the version nibble `7` and 12 random bits; `lo`
/// starts with the variant bits `10` and 62 random bits. The server
/// remembers keys for its dedup window and refuses a key whose time is
/// outside it (`key_expired`) instead of ever placing a second order;
/// [`IdempotencyKey::timed`] makes one, and so does any UUIDv7 library.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash), compare(PartialEq))]
pub struct IdempotencyKey {
    /// High 64 bits.
    pub hi: u64,
    /// Low 64 bits.
    pub lo: u64,
}

impl IdempotencyKey {
    /// The version nibble of a time-ordered key (bits 12..16 of `hi`).
    pub const VERSION: u64 = 7;
    /// The variant bits of a time-ordered key (the top two bits of `lo`).
    pub const VARIANT: u64 = 0b10;
    /// The largest time a key can carry (48 bits of milliseconds: the year 10889).
    pub const MAX_TIME_MS: u64 = (1 << 48) - 1;

    /// A time-ordered key made at `unix_ms` (milliseconds since the Unix
    /// epoch, masked to 48 bits) whose 74 random bits are taken from
    /// `random` (its bits 0..62 and 64..76).
    #[must_use]
    pub const fn timed(unix_ms: u64, random: u128) -> Self {
        let rand_a = ((random >> 64) as u64) & 0xfff;
        let rand_b = (random as u64) & ((1 << 62) - 1);
        IdempotencyKey { hi: ((unix_ms & Self::MAX_TIME_MS) << 16) | (Self::VERSION << 12) | rand_a, lo: (Self::VARIANT << 62) | rand_b }
    }

    /// The time (Unix milliseconds) this key was made at, or `None` when it
    /// is not a time-ordered key (its version nibble is not 7 or its variant
    /// bits are not `10`): the server refuses such a key as
    /// `invalid_request`.
    #[must_use]
    pub const fn time_ms(self) -> Option<u64> {
        if (self.hi >> 12) & 0xf == Self::VERSION && self.lo >> 62 == Self::VARIANT {
            Some(self.hi >> 16)
        } else {
            None
        }
    }

    /// The key as one `u128`.
    #[must_use]
    pub const fn as_u128(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }
}

impl From<u128> for IdempotencyKey {
    fn from(v: u128) -> Self {
        IdempotencyKey { hi: (v >> 64) as u64, lo: v as u64 }
    }
}

impl ArchivedIdempotencyKey {
    /// The archived key as a native value.
    #[must_use]
    pub fn to_native(&self) -> IdempotencyKey {
        IdempotencyKey { hi: self.hi.to_native(), lo: self.lo.to_native() }
    }
}

/// Place an order: reserve `qty` units of `product` for `user` at the
/// expected unit price.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct PlaceOrder {
    /// The request's idempotency key.
    pub key: IdempotencyKey,
    /// The buying user.
    pub user: u64,
    /// The product (non-zero).
    pub product: u64,
    /// The unit price the client expects to pay, in cents. A different
    /// catalogue price rejects the order with `price_changed`.
    pub unit_price_cents: u64,
    /// Units to buy, `1..=MAX_ORDER_QTY`.
    pub qty: u32,
}

/// Create a product or update it. Every field is set to the given value
/// (stock included), so the request is idempotent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct UpsertProduct {
    /// The product id (non-zero).
    pub product: u64,
    /// Catalogue unit price in cents (`1..=MAX_UNIT_PRICE_CENTS`).
    pub unit_price_cents: u64,
    /// Units available for sale from now on.
    pub stock: u64,
    /// Payment window in milliseconds: a placed order not paid within it
    /// expires and its units return to stock. `0` means orders never expire.
    pub payment_window_ms: u64,
    /// Maximum units one user may hold in live (placed or paid) orders of
    /// this product. `0` means no limit.
    pub per_user_limit: u32,
}

/// Where a subscription starts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub enum StreamStart {
    /// The oldest event still retained by every core.
    Beginning,
    /// The next event appended after the subscription is set up.
    Now,
    /// A saved position: for core `i`, the offset of the next event wanted
    /// (the `positions` a previous subscription reported).
    Positions(Vec<u64>),
}

/// Subscribe this connection to the order stream. The server answers with
/// [`Reply::Subscribed`] and then pushes `Events` frames carrying the same
/// correlation id.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Subscribe {
    /// Where to start.
    pub start: StreamStart,
    /// Only events of this product; `0` for all products.
    pub product: u64,
    /// Bit `1 << k` selects [`EventKind`] number `k`; `0` selects all kinds.
    pub kinds: u32,
}

/// Names an order by id (pay, cancel, get).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct OrderRef {
    /// The order id (its high 16 bits name the shard that owns it).
    pub order_id: u64,
}

/// Names an order by the idempotency key that placed it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct KeyRef {
    /// The key.
    pub key: IdempotencyKey,
    /// The product the order was placed for (it routes the request).
    pub product: u64,
}

/// Names a product.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ProductRef {
    /// The product id.
    pub product: u64,
}

/// Add (or with a negative delta remove) units of a product's stock.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct AdjustStock {
    /// The product.
    pub product: u64,
    /// Units to add (negative: remove).
    pub delta: i64,
}

/// One request. The variant number is the wire tag: append only.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub enum Request {
    /// Tag 0. Reply: [`Reply::Order`] or [`Reply::Rejected`].
    PlaceOrder(PlaceOrder),
    /// Tag 1. Confirm payment: `placed` -> `paid`. Reply: `Order` or `Rejected`.
    PayOrder(OrderRef),
    /// Tag 2. Cancel: `placed` -> `cancelled`, units go back to stock.
    /// Reply: `Order` or `Rejected`.
    CancelOrder(OrderRef),
    /// Tag 3. Read an order by id. Reply: `Order` or `Rejected(no_such_order)`.
    GetOrder(OrderRef),
    /// Tag 4. Read an order by its idempotency key. Reply: `Order` or
    /// `Rejected(no_such_order)`.
    GetOrderByKey(KeyRef),
    /// Tag 5. Read a product's stock and settings. Reply: `Stock` or `Rejected`.
    GetStock(ProductRef),
    /// Tag 6. Catalogue admin: create or update a product. Reply: `Stock` or `Rejected`.
    UpsertProduct(UpsertProduct),
    /// Tag 7. Catalogue admin: adjust stock. Not idempotent: the SDK never
    /// retries it on its own. Reply: `Stock` or `Rejected`.
    AdjustStock(AdjustStock),
    /// Tag 8. Subscribe to the order stream. Reply: `Subscribed` or `Rejected`.
    Subscribe(Subscribe),
    /// Tag 9. Server statistics. Reply: `Stats`.
    Stats,
    /// Tag 10. Live aggregates of the order flow, merged over every core.
    /// Reply: `Aggregates` or `Rejected`.
    Aggregates(AggregatesQuery),
    /// Tag 11, protocol version 2. A page of the catalogue, every core's
    /// products by id. Reply: `Products` or `Rejected`.
    ListProducts(ListProducts),
    /// Tag 12, protocol version 2. Every core takes a checkpoint now; the
    /// reply comes once each is durable (seconds for large shards).
    /// Reply: `Checkpointed` or `Rejected`.
    Checkpoint,
    /// Tag 13, protocol version 2. Every core's storage: checkpoints, log
    /// retained, orders in memory and archived, memory by table.
    /// Reply: `Storage`.
    StorageStats,
    /// Tag 14, protocol version 2. The cluster's map as this node follows
    /// it: its version, the nodes and their cores' addresses, each shard's
    /// owner. Reply: `Cluster`; from a server that is not in a cluster, an
    /// empty map of version 0.
    ClusterMap,
    /// Tag 15, protocol version 2. One step of handing a shard from one
    /// node of a cluster to another (`orderd cluster move-shard` sends
    /// them; not for applications: PROTOCOL.md § 8.1). Sent to the core
    /// of the node that serves the shard (`shard mod cores`); another core
    /// answers `not_owner` with that core as detail. Reply: `ShardMoved`
    /// or `Rejected`.
    MoveShard(MoveShard),
    /// Tag 16, protocol version 2. A batch of a shard leader's events for
    /// the copies a follower node keeps (replication between the nodes of
    /// a cluster; not for applications: PROTOCOL.md § 8.2). Sent to the
    /// follower's core for the shards. Reply: `Replicated` once every
    /// event of the batch is applied and durable there, or `Rejected`.
    Replicate(Replicate),
}

impl Request {
    /// The oldest protocol version that defines this request's tag: a
    /// client MUST NOT send it on a connection of an older version (the
    /// server answers `unsupported` there).
    #[must_use]
    pub const fn since_version(&self) -> u16 {
        match self {
            Request::ListProducts(_)
            | Request::Checkpoint
            | Request::StorageStats
            | Request::ClusterMap
            | Request::MoveShard(_)
            | Request::Replicate(_) => 2,
            _ => 1,
        }
    }

    /// Whether sending this request twice has the same effect as once, so
    /// that a client may resend it after a timeout or a broken connection.
    #[must_use]
    pub const fn is_idempotent(&self) -> bool {
        !matches!(self, Request::AdjustStock(_) | Request::Subscribe(_) | Request::MoveShard(_) | Request::Replicate(_))
    }
}

impl ArchivedRequest {
    /// [`Request::since_version`] of the archived request (what a server
    /// checks against its connection's version).
    #[must_use]
    pub const fn since_version(&self) -> u16 {
        match self {
            ArchivedRequest::ListProducts(_)
            | ArchivedRequest::Checkpoint
            | ArchivedRequest::StorageStats
            | ArchivedRequest::ClusterMap
            | ArchivedRequest::MoveShard(_)
            | ArchivedRequest::Replicate(_) => 2,
            _ => 1,
        }
    }
}

/// The state of an order. The variant number is the wire tag: append only.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq), compare(PartialEq))]
#[repr(u8)]
pub enum OrderState {
    /// Stock reserved, awaiting payment.
    Placed = 0,
    /// Paid: final.
    Paid = 1,
    /// Cancelled by the client: final, units returned.
    Cancelled = 2,
    /// Not paid within the payment window: final, units returned.
    Expired = 3,
}

impl OrderState {
    /// Whether the order still holds its units (placed or paid).
    #[must_use]
    pub const fn holds_units(self) -> bool {
        matches!(self, OrderState::Placed | OrderState::Paid)
    }
}

/// An order as the server knows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Order {
    /// Server-wide unique id: shard in the high 16 bits (see [`crate::shard`]).
    pub id: u64,
    /// The idempotency key that placed it.
    pub key: IdempotencyKey,
    /// The buyer.
    pub user: u64,
    /// The product.
    pub product: u64,
    /// The unit price charged, in cents.
    pub unit_price_cents: u64,
    /// When it was placed, ms since the Unix epoch (server clock).
    pub created_ms: u64,
    /// When an unpaid order expires, ms since the Unix epoch; `u64::MAX` if never.
    pub expires_ms: u64,
    /// Units.
    pub qty: u32,
    /// Its state.
    pub state: OrderState,
}

impl Order {
    /// `qty * unit_price_cents`.
    #[must_use]
    pub const fn amount_cents(&self) -> u64 {
        self.qty as u64 * self.unit_price_cents
    }
}

/// A product's catalogue entry and stock counters.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct StockInfo {
    /// The product.
    pub product: u64,
    /// Catalogue unit price in cents.
    pub unit_price_cents: u64,
    /// Units available for sale now.
    pub available: u64,
    /// Units held by placed (unpaid) orders.
    pub reserved: u64,
    /// Units held by paid orders.
    pub paid: u64,
    /// Every unit ever supplied: stock set by upserts plus adjustments. The
    /// stock invariant is `supplied == available + reserved + paid`.
    pub supplied: u64,
    /// Payment window in ms (`0`: never expires).
    pub payment_window_ms: u64,
    /// Per-user limit (`0`: none).
    pub per_user_limit: u32,
}

/// A refusal: a status code and one number whose meaning the code defines.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Rejection {
    /// The wire code (see [`Status`]). Unknown codes must be tolerated.
    pub code: u16,
    /// Detail whose meaning depends on the code (e.g. the current price for
    /// `price_changed`); `0` when the code defines none.
    pub detail: u64,
}

impl Rejection {
    /// A rejection with this status and detail.
    #[must_use]
    pub const fn new(status: Status, detail: u64) -> Self {
        Rejection { code: status.code(), detail }
    }

    /// The status, or `None` for a code this build does not know.
    #[must_use]
    pub const fn status(&self) -> Option<Status> {
        Status::from_code(self.code)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status() {
            Some(s) => write!(f, "{} (detail {}): {}", s.name(), self.detail, s.meaning()),
            None => write!(f, "unknown status code {} (detail {})", self.code, self.detail),
        }
    }
}

/// The answer to a subscription: the positions (one offset per core) at
/// which the stream starts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Subscribed {
    /// For core `i`, the offset of the first event the stream will carry.
    pub positions: Vec<u64>,
}

/// Counters of one core.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct CoreStats {
    /// Requests answered by this core's shards (forwarded ones included).
    pub requests: u64,
    /// Orders placed (accepted).
    pub orders_placed: u64,
    /// Place-order requests rejected.
    pub orders_rejected: u64,
    /// Request frames read.
    pub frames: u64,
    /// Requests forwarded to another core.
    pub forwarded: u64,
    /// Live (placed or paid) orders held in memory.
    pub live_orders: u64,
    /// Sum of the amounts of accepted orders, in cents.
    pub gmv_cents: u64,
    /// Bytes of records in this core's log (recovered and appended since).
    pub log_bytes: u64,
    /// The core id.
    pub core: u16,
    /// Open client connections.
    pub connections: u32,
    /// Shards owned.
    pub shards: u32,
}

/// Server statistics: one entry per core.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Stats {
    /// The server's id.
    pub server_id: u64,
    /// Per-core counters, by core id.
    pub cores: Vec<CoreStats>,
}

/// One core's storage (PROTOCOL.md § 5.2): what its checkpoints, log
/// retention and order archive hold, and the memory of its tables. The
/// same numbers as the metrics of the same names.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct CoreStorage {
    /// Log sequence of the core's newest checkpoint: a restart replays its
    /// log from here (`0`: none).
    pub checkpoint_sequence: u64,
    /// When that checkpoint was published, ms since the Unix epoch (`0`:
    /// none since the server started).
    pub checkpoint_at_ms: u64,
    /// How long it took to write, first shard to rename, in µs.
    pub checkpoint_duration_us: u64,
    /// Its file's size.
    pub checkpoint_bytes: u64,
    /// The oldest record the log still holds (retention deleted those
    /// before it; the order stream's history starts here).
    pub log_oldest_sequence: u64,
    /// The sequence the next record gets.
    pub log_next_sequence: u64,
    /// Bytes of the log's segment files (what `--max-log-bytes` bounds).
    pub log_file_bytes: u64,
    /// `--max-log-bytes`.
    pub log_max_bytes: u64,
    /// Orders in memory: open ones and final ones of the hot window.
    pub orders_in_memory: u64,
    /// Final orders moved to the shards' archives.
    pub orders_archived: u64,
    /// Keys of archived orders remembered for retries.
    pub cold_keys: u64,
    /// Bytes of the order archives.
    pub archive_bytes: u64,
    /// Memory of the order records, bytes.
    pub memory_order_records: u64,
    /// Memory of the idempotency index of the orders in memory, bytes.
    pub memory_key_index: u64,
    /// Memory of the cold key index, bytes.
    pub memory_cold_keys: u64,
    /// Memory of the payment deadlines, bytes.
    pub memory_deadlines: u64,
    /// Memory of the per-user holdings, bytes.
    pub memory_holdings: u64,
    /// Memory of the catalogue, bytes.
    pub memory_catalogue: u64,
    /// The core id.
    pub core: u16,
    /// Segment files of the log.
    pub log_segments: u32,
}

/// Every core's storage, by core id.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct StorageStats {
    /// Server time of the answer, ms since the Unix epoch (a checkpoint's
    /// age is `now_ms - checkpoint_at_ms`).
    pub now_ms: u64,
    /// By core id.
    pub cores: Vec<CoreStorage>,
}

/// A node of a cluster, as a [`ClusterMapInfo`] lists it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ClusterNode {
    /// The node's id (`orderd serve --node`).
    pub node: String,
    /// The address (`host:port`) of each of its cores, by core; empty for a
    /// node that is down (its shards wait for it).
    pub cores: Vec<String>,
}

/// One step of a shard move (PROTOCOL.md § 8.1).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct MoveShard {
    /// The shard.
    pub shard: u32,
    /// The map version the move makes (names the move).
    pub move_id: u64,
    /// What to do.
    pub step: MoveStep,
}

/// The steps of a shard move. The variant number is the wire tag: append only.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
#[repr(u8)]
pub enum MoveStep {
    /// Tag 0, to the owner: stop serving the shard (its requests are
    /// answered `moved`) and bundle its state. Reply: `ShardMoved` with
    /// the bundle's size in `total` and its orders in `orders`.
    Freeze,
    /// Tag 1, to the owner: bytes of the bundle. Reply: `ShardMoved` with
    /// them in `data`.
    Read(MoveRange),
    /// Tag 2, to the new owner: bytes of the bundle. The chunk that
    /// completes it installs the shard (durably, not yet serving it: the
    /// map decides that). Reply: `ShardMoved` with the bytes received in
    /// `offset`, and `total` once installed.
    Write(MoveBytes),
    /// Tag 3, to the old owner once the map names the new one: drop the
    /// shard's state (durably). Reply: `ShardMoved`.
    Release,
    /// Tag 4, to the old owner after a move failed before the map changed
    /// (and can no longer change: its etcd intent is gone): serve the shard
    /// again. Reply: `ShardMoved`.
    Abort,
    /// Tag 5, to any node: the map changed; read it now. Answered once the
    /// node follows map version `move_id` or later (or after 5 s).
    /// Reply: `ShardMoved` with that version in `total`.
    Follow,
    /// Tag 6, to the owner: bundle the shard's state while it still serves
    /// it, and keep the shard's events from there on (its tail). A later
    /// `Freeze` then bundles only the tail. Reply: `ShardMoved` with the
    /// bundle's size in `total` and its orders in `orders`.
    Prepare,
    /// Tag 7, to the new owner: bytes of a prepared bundle; the last chunk
    /// makes it ready (its file synced, the shard built), not installed.
    /// Reply: `ShardMoved` with the bytes received in `offset`, and `total`
    /// once ready.
    Stage(MoveBytes),
    /// Tag 8, to the new owner: bytes of the tail (the shard's events since
    /// its `Prepare`); the last chunk applies them to the staged shard and
    /// installs it, durably. Reply: as `Write`'s.
    WriteTail(MoveBytes),
    /// Tag 9, to a shard's leader (replication, PROTOCOL.md § 8.2): bundle
    /// the shard as `Prepare` does and, in the same step on its core, start
    /// keeping its events for the follower core named, held until `Attach`.
    /// Reply: `ShardMoved` with the bundle's size in `total`.
    Seed(SeedTo),
    /// Tag 10, to the node that gets a copy: take the shard's events from
    /// its leader by this node's map from now on (sent before the bundle,
    /// so that the copy counts as one from its install on). Reply:
    /// `ShardMoved`.
    Accept,
    /// Tag 11, to the leader, once the follower installed the bundle
    /// (`Write`): send it the events kept since the bundle, then every
    /// later one. Sent again to see the follower catch up. Reply:
    /// `ShardMoved` with the events the follower has not acknowledged yet
    /// in `offset`.
    Attach(SeedTo),
}

/// The follower core a copy of a shard is made for.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct SeedTo {
    /// The follower's node id.
    pub node: String,
    /// Its core for the shard.
    pub core: u16,
}

/// Bytes `offset..offset + len` of a shard's bundle.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct MoveRange {
    /// The first byte.
    pub offset: u64,
    /// Most bytes (at most [`MAX_MOVE_CHUNK`](crate::limits::MAX_MOVE_CHUNK)).
    pub len: u32,
}

/// Bytes of a shard's bundle, at `offset` of `total`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct MoveBytes {
    /// Where the bytes go.
    pub offset: u64,
    /// The bundle's size.
    pub total: u64,
    /// The bytes (at most [`MAX_MOVE_CHUNK`](crate::limits::MAX_MOVE_CHUNK)).
    pub data: Vec<u8>,
}

/// What a shard-move step did.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ShardMoved {
    /// The shard.
    pub shard: u32,
    /// The move.
    pub move_id: u64,
    /// `Read`: where `data` starts; `Write`: bytes received so far.
    pub offset: u64,
    /// The bundle's size (`Freeze`, `Read`; `Write` once installed, else 0).
    pub total: u64,
    /// Orders of the shard in the bundle (`Freeze`, and `Write` once installed).
    pub orders: u64,
    /// `Read`: the bytes.
    pub data: Vec<u8>,
}

/// A batch of replicated events (PROTOCOL.md § 8.2).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Replicate {
    /// The map version the leader follows (a follower on an older map
    /// reads the map before it judges the batch).
    pub map_version: u64,
    /// The leader core's log sequence the batch reaches: the leader has
    /// sent the follower every event of its copies logged below it.
    pub through: u64,
    /// The leader's node id.
    pub leader: String,
    /// The leader's core.
    pub core: u16,
    /// The events, each `shard u32, reserved u32 (zero), position u64,
    /// kind u8, format u8, body length u16, body` (the log's event
    /// encoding), padded to 8 bytes; `position` counts the events of the
    /// shard since it was created, this one included. At most
    /// [`MAX_REPLICATE_BYTES`](crate::limits::MAX_REPLICATE_BYTES).
    pub events: Vec<u8>,
}

/// A batch of replicated events is durable on the follower.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Replicated {
    /// The batch's `through`.
    pub through: u64,
    /// Events of the batch applied here (those the copy had already are
    /// skipped: a batch resent after a broken connection).
    pub applied: u64,
}

/// The cluster's map as a node follows it (PROTOCOL.md § 8).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ClusterMapInfo {
    /// The map's version (what `moved` names).
    pub version: u64,
    /// The nodes: the live ones and those owning shards, by id.
    pub nodes: Vec<ClusterNode>,
    /// `owners[s]`: the index in `nodes` of shard `s`'s owner, or
    /// [`NO_OWNER`] for a shard no node owns yet.
    pub owners: Vec<u32>,
    /// `owner_cores[s]`: the core of that node that owns shard `s` (`0`
    /// without an owner).
    pub owner_cores: Vec<u16>,
}

/// [`ClusterMapInfo::owners`] of a shard without an owner.
pub const NO_OWNER: u32 = u32::MAX;

/// Ask for a page of the catalogue: the products whose id is above
/// `after`, by id, at most `limit` of them (PROTOCOL.md § 5.2).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ListProducts {
    /// Products with a larger id than this (`0`: from the first).
    pub after: u64,
    /// Most products to return (at most
    /// [`MAX_LIST_PRODUCTS`](crate::limits::MAX_LIST_PRODUCTS); `0` asks
    /// for that many).
    pub limit: u32,
}

/// A page of the catalogue.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ProductPage {
    /// The products, by id.
    pub products: Vec<StockInfo>,
    /// `1` when products with larger ids exist (ask again with `after` set
    /// to the last id here), else `0` (no `bool` on the wire).
    pub more: u32,
}

/// The answer to a checkpoint request: every core took one.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Checkpointed {
    /// By core: the log sequence its new checkpoint covers (a restart
    /// replays that core's log from there).
    pub sequences: Vec<u64>,
}

/// Ask for the live aggregates (PROTOCOL.md § 5.2).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct AggregatesQuery {
    /// How many of the best-selling products to list (at most
    /// [`MAX_TOP_PRODUCTS`](crate::limits::MAX_TOP_PRODUCTS)).
    pub top: u32,
}

/// Orders placed in a sliding window of whole seconds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct WindowTotals {
    /// Orders placed in the window.
    pub orders: u64,
    /// Sum of their amounts, in cents.
    pub gmv_cents: u64,
    /// The window's length: it covers the seconds `now_s - seconds + 1 ..= now_s`.
    pub seconds: u32,
}

/// One product's sales.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ProductSales {
    /// The product.
    pub product: u64,
    /// Units in placed or paid orders (cancelled and expired ones gave theirs back).
    pub units_sold: u64,
    /// Units still available.
    pub available: u64,
}

/// The live aggregates, merged over every core.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Aggregates {
    /// Server time the windows end at, ms since the Unix epoch.
    pub now_ms: u64,
    /// The windows: 1 s, 10 s and 60 s, in that order.
    pub windows: Vec<WindowTotals>,
    /// The best-selling products, most units first (ties: lower id first).
    pub top: Vec<ProductSales>,
    /// Products with stock supplied and none available, lowest ids first
    /// (at most [`MAX_SOLD_OUT_LISTED`](crate::limits::MAX_SOLD_OUT_LISTED)).
    pub sold_out: Vec<u64>,
    /// Sold-out products in all (the list may be cut short).
    pub sold_out_count: u64,
    /// Products in the catalogue.
    pub products: u64,
    /// Units in placed or paid orders, all products.
    pub units_sold: u64,
    /// Orders placed since the server started (all cores).
    pub orders_placed: u64,
    /// Sum of their amounts, in cents.
    pub gmv_cents: u64,
}

/// One reply. The variant number is the wire tag: append only.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub enum Reply {
    /// Tag 0. An order (place, pay, cancel, get).
    Order(Order),
    /// Tag 1. A product (get stock, upsert, adjust).
    Stock(StockInfo),
    /// Tag 2. The request was refused.
    Rejected(Rejection),
    /// Tag 3. A subscription was set up.
    Subscribed(Subscribed),
    /// Tag 4. Statistics.
    Stats(Stats),
    /// Tag 5. Live aggregates.
    Aggregates(Aggregates),
    /// Tag 6, protocol version 2. A page of the catalogue.
    Products(ProductPage),
    /// Tag 7, protocol version 2. Every core's checkpoint is durable.
    Checkpointed(Checkpointed),
    /// Tag 8, protocol version 2. Every core's storage.
    Storage(StorageStats),
    /// Tag 9, protocol version 2. The cluster's map.
    Cluster(ClusterMapInfo),
    /// Tag 10, protocol version 2. A step of a shard move was done.
    ShardMoved(ShardMoved),
    /// Tag 11, protocol version 2. A batch of replicated events is
    /// durable on the follower.
    Replicated(Replicated),
}

impl Reply {
    /// A rejection reply.
    #[must_use]
    pub const fn rejected(status: Status, detail: u64) -> Self {
        Reply::Rejected(Rejection::new(status, detail))
    }
}

/// The first frame a client sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Hello {
    /// A client-chosen id, logged by the server (`0`: anonymous).
    pub client_id: u64,
    /// The oldest protocol version the client speaks.
    pub min_version: u16,
    /// The newest protocol version the client speaks.
    pub max_version: u16,
}

/// How a client reaches one core directly.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct CoreAddr {
    /// IPv4 (in the first 4 bytes) or IPv6 address.
    pub ip: [u8; 16],
    /// The core id.
    pub core: u16,
    /// TCP port.
    pub port: u16,
    /// `4` or `6`.
    pub family: u8,
}

impl CoreAddr {
    /// A socket address as a core entry.
    #[must_use]
    pub fn new(core: u16, addr: std::net::SocketAddr) -> Self {
        let mut ip = [0u8; 16];
        let family = match addr.ip() {
            std::net::IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                4
            }
            std::net::IpAddr::V6(v6) => {
                ip.copy_from_slice(&v6.octets());
                6
            }
        };
        CoreAddr { ip, core, port: addr.port(), family }
    }

    /// The socket address, or `None` if `family` is neither 4 nor 6.
    #[must_use]
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let ip = match self.family {
            4 => std::net::IpAddr::from([self.ip[0], self.ip[1], self.ip[2], self.ip[3]]),
            6 => std::net::IpAddr::from(self.ip),
            _ => return None,
        };
        Some(std::net::SocketAddr::new(ip, self.port))
    }
}

/// The bounds a server enforces, announced so that clients stay inside them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ServerLimits {
    /// Maximum payload bytes per frame.
    pub max_frame_bytes: u32,
    /// Maximum requests per frame.
    pub max_batch: u32,
    /// Maximum unanswered request frames per connection.
    pub max_in_flight: u32,
}

/// The server's answer to [`Hello`]: who it is, how to reach each core, and
/// which core owns which shard.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Welcome {
    /// The server's id (stable for a data directory).
    pub server_id: u64,
    /// The protocol version chosen for this connection.
    pub version: u16,
    /// The core that accepted this connection.
    pub core: u16,
    /// How to reach each core directly, by core id.
    pub cores: Vec<CoreAddr>,
    /// `shard_owner[s]` is the core that owns shard `s`. Its length is the
    /// shard count; products map to shards by [`crate::shard::shard_of_product`].
    pub shard_owner: Vec<u16>,
    /// Bounds the client must stay inside.
    pub limits: ServerLimits,
}

/// A frame-level refusal, sent in an `Error` frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ErrorFrame {
    /// The wire code (see [`Status`]).
    pub code: u16,
    /// Detail whose meaning depends on the code.
    pub detail: u64,
}

/// The kind of an order-stream event. The variant number is the wire tag
/// and the bit number in [`Subscribe::kinds`]: append only.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq), compare(PartialEq))]
#[repr(u8)]
pub enum EventKind {
    /// An order was placed.
    Placed = 0,
    /// An order was paid.
    Paid = 1,
    /// An order was cancelled.
    Cancelled = 2,
    /// An order expired.
    Expired = 3,
    /// A product was created or updated.
    ProductUpserted = 4,
    /// A product's stock was adjusted.
    StockAdjusted = 5,
}

impl EventKind {
    /// Every kind, by number.
    pub const ALL: [EventKind; 6] = [
        EventKind::Placed,
        EventKind::Paid,
        EventKind::Cancelled,
        EventKind::Expired,
        EventKind::ProductUpserted,
        EventKind::StockAdjusted,
    ];

    /// The kind's name as PROTOCOL.md § 5.2 spells it (`placed`, `paid`,
    /// `cancelled`, `expired`, `product_upserted`, `stock_adjusted`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Placed => "placed",
            EventKind::Paid => "paid",
            EventKind::Cancelled => "cancelled",
            EventKind::Expired => "expired",
            EventKind::ProductUpserted => "product_upserted",
            EventKind::StockAdjusted => "stock_adjusted",
        }
    }

    /// The kind named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its bit in [`Subscribe::kinds`].
    #[must_use]
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// One event of the order stream, as a subscriber receives it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct StreamEvent {
    /// Its offset in its core's log: `(core, offset)` names it forever.
    pub offset: u64,
    /// The order (`0` for product events).
    pub order_id: u64,
    /// The product.
    pub product: u64,
    /// The user (`0` for product events).
    pub user: u64,
    /// Order amount in cents, or for product events the unit price.
    pub amount_cents: u64,
    /// Server time of the event, ms since the Unix epoch.
    pub time_ms: u64,
    /// Units: the order's quantity, or for product events the stock change
    /// as a two's-complement i64.
    pub qty: u64,
    /// The core whose log holds it.
    pub core: u16,
    /// What happened.
    pub kind: EventKind,
}
