//! The live order stream: subscribers read the events every core's log
//! holds, from a position, once they are durable.
//!
//! # Shape
//!
//! There is no in-memory event queue between the order path and the
//! subscribers: **the log is the buffer.** A subscription is a set of
//! read cursors, one per core, over the mapped segment files
//! ([`cursor::LogCursor`]); it reads the records below each core's durable
//! point ([`durable::DurablePoints`], published by each core's group-commit
//! flusher after every flush), turns them into wire [`StreamEvent`]s
//! ([`event::stream_event`]) and applies the server-side filter. So:
//!
//! - only durable events are sent (a crash cannot take back one that was
//!   seen), in log order per core;
//! - a position is `(core, offset)` with offset the record's sequence, the
//!   same forever; a subscriber that resumes with the positions of the
//!   events it last saw (plus one) gets every later event exactly once,
//!   across reconnects and server restarts;
//! - a slow subscriber costs the order path nothing: it only reads files
//!   (the page cache serves a subscriber that keeps up, the disk one that
//!   fell far behind), its memory is one output frame and a mapping per
//!   core, and it runs in a task queue with a small share of the core
//!   (`runtime::connection`). One that does not read its socket within the
//!   write timeout is disconnected and may resume from its position.
//!
//! Segments are never deleted (the log is bounded by `--max-log-bytes`), so
//! every position from 0 stays available; a position older than the oldest
//! segment file (if an operator removed some) or past the durable end is
//! refused with `position_unavailable` and the oldest offset.
//!
//! [`StreamEvent`]: orderd_protocol::message::StreamEvent

pub mod aggregates;
pub mod cursor;
pub mod durable;
pub mod event;
pub mod subscription;

pub use cursor::{CursorError, LogCursor};
pub use durable::DurablePoints;
pub use subscription::{Filter, SubscriberPositions, Subscription};
