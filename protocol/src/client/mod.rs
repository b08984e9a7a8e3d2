//! The client SDK: connect to orderd, place orders, read them back.
//!
//! - [`Client`]: blocking, on `std::net`. Shard-aware (each request goes
//!   straight to the core that owns its product), pipelined (many frames in
//!   flight per connection, replies matched by correlation id), batching,
//!   with timeouts, reconnect and idempotent retry built in.
//! - `AsyncClient` (cargo feature `tokio`): the same for async services.
//! - [`Subscription`]: the live order stream as an iterator that remembers
//!   its position and resumes by itself after a reconnect.
//! - `AsyncSubscription` (cargo feature `tokio`): the same stream for async
//!   code, also as a `futures_core::Stream`.
//! - [`Connection`]: one raw connection to one core, for tools and tests.
//!
//! # Example
//! ```no_run
//! use orderd_protocol::client::{Client, ClientConfig};
//! use orderd_protocol::{PlaceOrder, Status};
//!
//! # fn main() -> Result<(), orderd_protocol::client::ClientError> {
//! let mut client = Client::connect("127.0.0.1:7070", ClientConfig::default())?;
//! // A fresh idempotency key per logical order; the SDK resends the same
//! // key if it has to retry, so the order is placed at most once.
//! let order = PlaceOrder::with_new_key(/* user */ 42, /* product */ 7, /* qty */ 1, /* cents */ 1999);
//! match client.place_order(order) {
//!     Ok(placed) => println!("order {} placed", placed.id),
//!     Err(e) if e.status() == Some(Status::SoldOut) => println!("sold out"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```

mod blocking;
mod error;
mod routing;
mod subscription;
#[cfg(feature = "tokio")]
mod tokio;
#[cfg(feature = "tokio")]
mod tokio_subscription;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use self::blocking::{Client, Connection, Ticket, Waited};
pub use self::error::{ClientError, Result};
pub use self::routing::{shard_of_request, Routes, ShardMap};
pub use self::subscription::{format_positions, parse_positions, SubscribeOptions, Subscription};
#[cfg(feature = "tokio")]
pub use self::tokio::AsyncClient;
#[cfg(feature = "tokio")]
pub use self::tokio_subscription::AsyncSubscription;

use crate::limits::{DEFAULT_MAX_IN_FLIGHT_FRAMES, MAX_BATCH_REQUESTS, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::message::{Hello, IdempotencyKey, Order, PlaceOrder, Reply, StockInfo};

/// How a client behaves. Every field has a sensible default.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Time allowed for a TCP connect and the handshake.
    pub connect_timeout: Duration,
    /// Time allowed for any one reply to arrive once its frame is sent.
    pub request_timeout: Duration,
    /// Time allowed for a whole call of the `AsyncClient`: every send,
    /// wait, retry and backoff (without it the worst case is about
    /// `(retries + 1)` request timeouts plus the backoff). The blocking
    /// [`Client`]'s calls are bounded by `request_timeout` and `retries`.
    pub call_timeout: Duration,
    /// Times an idempotent request is resent after a transport failure
    /// (reconnecting first) before the call fails.
    pub retries: u32,
    /// Pause before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    /// Send each request to the core that owns its shard (`true`), or every
    /// request to the core first connected to (`false`: the server forwards).
    pub shard_aware: bool,
    /// Largest batch per frame (further capped by the server's limit).
    pub max_batch: usize,
    /// Most unanswered frames per connection (further capped by the server's limit).
    pub max_in_flight: usize,
    /// An id the server logs for this client (`0`: anonymous).
    pub client_id: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            retries: 3,
            retry_backoff: Duration::from_millis(50),
            shard_aware: true,
            max_batch: MAX_BATCH_REQUESTS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT_FRAMES,
            client_id: 0,
        }
    }
}

impl ClientConfig {
    pub(crate) fn hello(&self) -> Hello {
        Hello { client_id: self.client_id, min_version: MIN_PROTOCOL_VERSION, max_version: PROTOCOL_VERSION }
    }
}

/// A fresh time-ordered idempotency key, made now (see
/// [`IdempotencyKey::timed`]).
///
/// Its time is this machine's clock; its 74 random bits are drawn from the
/// standard library's per-process random hasher keys mixed with a counter:
/// unique within the process, unpredictable across processes. Keep the key
/// to retry: the server answers a retry with the original order for its
/// dedup window (24 h by default) and refuses it as `key_expired` after.
#[must_use]
pub fn new_key() -> IdempotencyKey {
    new_key_at(unix_now_ms())
}

/// This machine's clock in Unix milliseconds (0 if it reads before 1970),
/// as [`new_key`] stamps keys.
#[must_use]
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A fresh time-ordered idempotency key made at `unix_ms`, with random bits
/// as [`new_key`] draws them: for a caller with its own clock (a
/// simulation, a client whose clock source is not the system's).
#[must_use]
pub fn new_key_at(unix_ms: u64) -> IdempotencyKey {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let draw = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    let random = (u128::from(draw(0x6f72_6465_7264)) << 64) | u128::from(draw(n.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15));
    IdempotencyKey::timed(unix_ms, random)
}

impl PlaceOrder {
    /// A place-order request with a fresh time-ordered idempotency key ([`new_key`]). Keep the
    /// value (or its key) to retry it yourself; the SDK already retries it
    /// with the same key on transport failures.
    #[must_use]
    pub fn with_new_key(user: u64, product: u64, qty: u32, unit_price_cents: u64) -> Self {
        PlaceOrder { key: new_key(), user, product, unit_price_cents, qty }
    }
}

fn reply_kind(reply: &Reply) -> String {
    match reply {
        Reply::Order(_) => "Order".into(),
        Reply::Stock(_) => "Stock".into(),
        Reply::Rejected(r) => format!("Rejected({r})"),
        Reply::Subscribed(_) => "Subscribed".into(),
        Reply::Stats(_) => "Stats".into(),
        Reply::Aggregates(_) => "Aggregates".into(),
        Reply::Products(_) => "Products".into(),
        Reply::Checkpointed(_) => "Checkpointed".into(),
        Reply::Storage(_) => "Storage".into(),
        Reply::Cluster(_) => "Cluster".into(),
        Reply::ShardMoved(_) => "ShardMoved".into(),
        Reply::Replicated(_) => "Replicated".into(),
    }
}

/// `$name(reply)`: the `$variant` in `reply`, or the rejection as an error
/// (anything else is [`ClientError::UnexpectedReply`]).
macro_rules! expect_reply {
    ($($name:ident: $variant:ident => $ty:ty;)*) => {$(
        pub(crate) fn $name(reply: Reply) -> Result<$ty> {
            match reply {
                Reply::$variant(v) => Ok(v),
                Reply::Rejected(r) => Err(ClientError::Rejected(r)),
                other => Err(ClientError::UnexpectedReply { expected: stringify!($variant), got: reply_kind(&other) }),
            }
        }
    )*};
}

expect_reply! {
    expect_order: Order => Order;
    expect_stock: Stock => StockInfo;
    expect_stats: Stats => crate::message::Stats;
    expect_aggregates: Aggregates => crate::message::Aggregates;
    expect_products: Products => crate::message::ProductPage;
    expect_checkpointed: Checkpointed => crate::message::Checkpointed;
    expect_storage: Storage => crate::message::StorageStats;
    expect_cluster: Cluster => crate::message::ClusterMapInfo;
    expect_shard_moved: ShardMoved => crate::message::ShardMoved;
}

/// Refuses to send `request` to a server whose connection speaks an older
/// protocol version than the request needs (an old server would close the
/// connection on an unknown tag).
pub(crate) fn check_version(request: &crate::message::Request, version: u16) -> Result<()> {
    if request.since_version() > version {
        return Err(ClientError::Unsupported { needs: request.since_version(), server: version });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_are_distinct() {
        let keys: std::collections::HashSet<_> = (0..10_000).map(|_| new_key()).collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn a_request_of_a_newer_version_is_not_sent_on_an_older_connection() {
        let list = crate::message::Request::ListProducts(crate::message::ListProducts { after: 0, limit: 1 });
        assert!(matches!(check_version(&list, 1), Err(ClientError::Unsupported { needs: 2, server: 1 })));
        assert!(check_version(&list, 2).is_ok());
        assert!(check_version(&crate::message::Request::Stats, 1).is_ok());
    }

    #[test]
    fn new_keys_are_time_ordered_and_carry_the_clock() {
        let before = unix_now_ms();
        let key = new_key();
        let after = unix_now_ms();
        let time = key.time_ms().expect("a time-ordered key");
        assert!((before..=after).contains(&time), "{before} <= {time} <= {after}");
        assert_eq!(new_key_at(1_790_000_000_123).time_ms(), Some(1_790_000_000_123));
    }
}
