//! The durable log: one append-only log per core, in preallocated,
//! memory-mapped segment files; records framed with their own CRC32C; group
//! commit by fdatasync; recovery by replaying every record into the shards.
//!
//! # Files
//!
//! ```text
//! <data-dir>/log-manifest                         cores and shards (manifest.rs)
//! <data-dir>/core-0000/segment-00000000000000000000.log
//! <data-dir>/core-0000/segment-00000000000000812345.log   named by first sequence
//! <data-dir>/core-0001/...
//! ```
//!
//! A record is identified forever by `(core, sequence)`: sequences count
//! from 0 per core, without gaps, across segments. A record never moves: a
//! reader finds the segment by its first sequence (the file name) and reads
//! records in place from the mapping ([`record::read_at`]).
//!
//! # Layout
//! - [`record`]: the record format; pure write / verify over byte slices.
//! - [`segment`]: the segment header, file creation (fallocate), mapping.
//! - [`writer`]: [`LogWriter`], appends, rotation, the size bound and the
//!   room rule that keeps memory and log from diverging.
//! - [`recovery`]: torn-tail truncation, corruption errors, the first
//!   segment, adopting a prepared one; `scan.rs`: verifying and replaying
//!   one segment's records.
//! - [`checkpoint`]: each core's shards written whole as of a sequence, so
//!   that recovery replays only the log after it.
//! - [`retention`]: deleting the oldest segments once every kept
//!   checkpoint is past them, as the stream's history policy allows.
//! - [`manifest`]: the core and shard counts the directory was written with.
//! - [`storage`]: the seam of the durability calls (fdatasync, fsync,
//!   directory fsync), real or simulated.
//! - [`error`]: [`LogError`] and [`RecoveryError`].

pub mod checkpoint;
pub mod error;
pub mod handoff;
pub mod manifest;
pub mod record;
pub mod recovery;
pub mod retention;
mod scan;
pub mod segment;
pub mod storage;
pub mod writer;

pub use error::{LogError, RecoveryError};
pub use recovery::{recover, RecoveryConfig, RecoveryStats};
pub use storage::{RealStorage, SharedStorage, Storage};
pub use writer::{LogSettings, LogTail, LogWriter};

/// Default size of a segment file (`--segment-bytes`).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default bound on each core's segment files (`--max-log-bytes`).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 << 30;

/// Smallest segment accepted: a page, room for dozens of records.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Largest segment accepted (the mapping and offsets stay far from limits).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

const _: () = assert!(MIN_SEGMENT_BYTES as usize > segment::SEGMENT_HEADER_LEN + record::MAX_RECORD_LEN);
const _: () = assert!(DEFAULT_SEGMENT_BYTES.is_multiple_of(4096) && DEFAULT_MAX_LOG_BYTES.is_multiple_of(DEFAULT_SEGMENT_BYTES));
