//! # orderd
//!
//! A thread-per-core order server for e-commerce sales peaks: one binary
//! that takes orders, keeps stock, answers idempotent retries and streams
//! every order, at memory speed on every core.
//!
//! # Layout
//! - [`admin`]: `orderd admin`, the operator's commands (load a catalogue,
//!   read stock, orders and statistics), all through the client SDK.
//! - [`engine`]: the order engine, a pure state machine per shard
//!   (catalogue, orders, idempotency, events and their encoding, replay).
//! - [`load`]: `orderd-load`, the load generator of the reference
//!   workloads, with the invariant check at the end of every run.
//! - [`workload`]: the reference catalogues of `WORKLOAD.md` (`uniform`,
//!   `hot`, `zipf`) as data, shared by the admin commands and the load generator.
//! - [`runtime`]: the server: one pinned glommio executor per core, each
//!   owning its shards, listening on its own port, forwarding requests for
//!   other cores' shards over a channel mesh; bounds, timeouts, shutdown.
//! - [`config`]: the command line (clap) and its validation.
//!
//! The server is in-memory only for now: durability (the per-core log)
//! comes with a later issue.
#![warn(missing_docs)]
// `unsafe` is denied everywhere; the two uses (adopting a listening socket
// into glommio, reading RLIMIT_MEMLOCK) are allowed locally with a SAFETY note.
#![deny(unsafe_code)]
// No unwrap/expect outside tests: a client's bytes or the disk must never
// be able to panic the server (checked by clippy in CI; an exception carries
// `#[expect(clippy::expect_used, reason = "...")]` at its site).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod config;
pub mod engine;
pub mod load;
pub mod runtime;
pub mod workload;
