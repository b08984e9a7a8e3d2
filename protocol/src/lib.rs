//! # orderd-protocol
//!
//! The wire protocol of [orderd](https://example.invalid/orderd), a
//! thread-per-core order server, and the client SDK that speaks it. This
//! crate has no server runtime dependency: it builds wherever Rust does.
//!
//! The byte-level specification is `PROTOCOL.md` beside this crate; this
//! crate is its reference implementation.
//!
//! # Layout
//! - [`limits`]: every bound of the protocol, const-asserted.
//! - [`status`]: the table of status codes (stable numbers).
//! - [`frame`]: the 24-byte frame header and [`frame::check`]; [`kind`]: the frame kinds.
//! - [`message`]: requests, replies, handshake and stream events (rkyv types).
//! - [`shard`]: product -> shard and order id -> shard, shared with the server.
//! - [`codec`]: sans-I/O encoding and validated decoding of frames.
//! - [`buffer`]: an aligned receive buffer for zero-copy decoding.
//! - [`error`]: typed wire errors.
//! - [`client`]: the SDK: blocking and async clients, shard-aware routing, retries.
#![warn(missing_docs)]
#![deny(unsafe_code)]
// No unwrap/expect outside tests: a client's bytes or the disk must never
// be able to panic the server (checked by clippy in CI; an exception carries
// `#[expect(clippy::expect_used, reason = "...")]` at its site).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod buffer;
pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
pub mod kind;
pub mod limits;
pub mod message;
pub mod shard;
pub mod status;

pub use error::{EncodeError, FrameError};
pub use message::{IdempotencyKey, Order, OrderState, PlaceOrder, Rejection, Reply, Request, StockInfo, UpsertProduct};
pub use status::Status;
