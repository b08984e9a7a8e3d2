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
//! - [`log`]: the durable per-core logs: memory-mapped segment files,
//!   CRC32C-framed event records, rotation and the size bound, recovery
//!   (torn-tail truncation, corruption errors, replay into the shards).
//! - [`workload`]: the reference catalogues of `benches/WORKLOAD.md` (`uniform`,
//!   `hot`, `zipf`) as data, shared by the admin commands and the load generator.
//! - [`runtime`]: the server: one pinned glommio executor per core, each
//!   owning its shards, listening on its own port, forwarding requests for
//!   other cores' shards over a channel mesh; the log-room rule, group
//!   commit; bounds, timeouts, shutdown.
//! - [`sim`]: the deterministic simulator of a whole server on a simulated
//!   disk with crashes and storage faults (`orderd-sim`).
//! - [`stream`]: the live order stream: subscribers read every core's log
//!   below its durable point, filtered, from any saved position.
//! - [`tail`]: `orderd tail`, the console consumer of the stream.
//! - [`cli`]: the command line (clap) and its validation into a [`config::ServeConfig`].
//! - [`cluster`]: the cluster's map of shard owners and its nodes'
//!   liveness, kept in etcd; `orderd cluster`.
//! - [`config`]: the validated settings the server runs with, and their defaults.
//! - [`top`]: `orderd top`, the live terminal view (ratatui) of the
//!   aggregates, polled through the SDK.
//! - [`json_id`]: u64 ids as strings in every JSON output (JavaScript-safe).
//! - [`procfs`]: who holds a port or a lock, from `/proc`.
//! - [`hostcheck`]: `orderd host-check`, whether this host is ready for
//!   `orderd serve` (io_uring, locked memory, CPUs, IRQs, disk, network).
//!
//! Every state change is appended to its core's log; in `sync` mode (the
//! default) a reply to a state change leaves only once a group-commit
//! flush has made it durable, and a restart replays the logs.
#![warn(missing_docs)]
// `unsafe` is denied everywhere; the uses (adopting a listening socket into
// glommio, reading RLIMIT_MEMLOCK, mapping a log segment, fallocate) are
// allowed locally with a SAFETY note.
#![deny(unsafe_code)]
// No unwrap/expect outside tests: a client's bytes or the disk must never
// be able to panic the server (checked by clippy in CI; an exception carries
// `#[expect(clippy::expect_used, reason = "...")]` at its site).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod hostcheck;
pub mod json_id;
pub mod load;
pub mod log;
pub mod procfs;
pub mod runtime;
pub mod sim;
pub mod stream;
pub mod tail;
pub mod top;
pub mod workload;
