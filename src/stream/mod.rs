//! The live order stream: subscribers read the events every core's log
//! holds, from a position, once they are durable.
//!
//! # Shape
//!
//! There is no event queue between the order path and the subscribers:
//! **the log is the buffer.** A subscription is a set of cursors, one per
//! core ([`cursor::CoreCursor`]), over the records below each core's
//! durable point ([`durable::DurablePoints`], published by each core's
//! group-commit flusher after every flush). The records reach it as
//! [`block::Block`]s: chunks of segment files read through io_uring by the
//! reading core's shared reader (`runtime::stream_reader`), verified and
//! turned into wire [`StreamEvent`]s ([`event::stream_event`]) once, and
//! shared by every subscription of that core that reads the same range;
//! each subscription applies its own filter. So:
//!
//! - only durable events are sent (a crash cannot take back one that was
//!   seen), in log order per core;
//! - a position is `(core, offset)` with offset the record's sequence, the
//!   same forever; a subscriber that resumes with the positions of the
//!   events it last saw (plus one) gets every later event exactly once,
//!   across reconnects and server restarts;
//! - subscribers cannot starve the order path: every frame of stream work
//!   passes the core's stream budget (`runtime::stream_budget`,
//!   `--stream-share`, 5% of the core by default while orders run, all of
//!   it when they stop), so a crowd catching up falls behind instead of
//!   slowing orders; caught-up subscribers wait for a durable point to move,
//!   all of a core's woken by one timer (`runtime::stream_ticker`). A
//!   subscriber's memory is one output frame and a mapping per core; one
//!   that does not read its socket within the write timeout is
//!   disconnected and may resume from its position.
//!
//! Retention (`log::retention`) deletes whole segments from the oldest;
//! a position older than the oldest segment file or past the durable end
//! is refused with `position_unavailable` and the oldest offset, and a
//! cursor whose next segment was deleted under it ends its subscription
//! the same way.
//!
//! [`StreamEvent`]: orderd_protocol::message::StreamEvent

pub mod aggregates;
pub mod block;
pub mod cursor;
pub mod durable;
pub mod event;
pub mod subscription;

pub use block::{Block, Pos};
pub use cursor::{BlockSource, CoreCursor, CursorError};
pub use durable::DurablePoints;
pub use subscription::{Filter, SubscriberPositions, Subscription};
