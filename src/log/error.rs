//! The log's errors: [`LogError`] for the files and the writer,
//! [`RecoveryError`] for what stops a start. Each names the file, and the
//! offset where there is one, and says what the operator can do.

use std::path::PathBuf;

use super::record::BadRecord;
use crate::engine::{EventDecodeError, EventError};

/// A failure of a log file operation or of the writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A system call on a log file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`create`, `open`, `mmap`, `fdatasync`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The disk has no room for another segment.
    #[error("no space left on the device for segment {path}")]
    Full {
        /// The segment that could not be created.
        path: PathBuf,
    },
    /// The last segment is shorter than its header says: cut after it was
    /// written, which no crash of orderd does.
    #[error(
        "{path} is {len} bytes but its header says {segment_bytes}: the file was cut short after it was written \
         (orderd never shortens a segment; a copy stopped midway, a truncate or a file system that lost its end did), \
         and records past byte {len} may have been acknowledged. Nothing was changed: restore the file from a backup, \
         or start with --truncate-corrupt-log to keep the records before byte {len} and drop the rest"
    )]
    CutShort {
        /// The segment.
        path: PathBuf,
        /// Its length as found.
        len: u64,
        /// Its full size, from its header.
        segment_bytes: u64,
    },
    /// The last segment, found cut short at a start, cannot be given back
    /// the disk blocks of its full size: the file system is full.
    #[error(
        "{path} is {len} bytes but its header says {segment_bytes}, and the file system has no room to allocate the \
         other {} bytes its tail needs (writing into an unallocated mapped page would kill the server with SIGBUS); \
         nothing was changed: free at least that much on the data directory's file system and start again",
        segment_bytes - len
    )]
    NoRoomForTail {
        /// The segment.
        path: PathBuf,
        /// Its length as found.
        len: u64,
        /// Its full size, from its header.
        segment_bytes: u64,
    },
    /// The configured bound on the log's size is reached.
    #[error("the log of core {core} reached its bound of {max_log_bytes} bytes (--max-log-bytes)")]
    BoundReached {
        /// The core.
        core: usize,
        /// The bound.
        max_log_bytes: u64,
    },
    /// A sync of the log (fdatasync, fsync, directory fsync) failed. It
    /// cannot be retried safely: the kernel may have dropped the unwritten
    /// pages and cleared the error ("fsyncgate"), so a later sync that
    /// succeeds would not mean the data is there. The writer refuses
    /// everything after it and the server stops; recovery then reads what
    /// reached the disk.
    #[error("{op} {path} failed: {source}; a failed sync cannot be retried safely, so the server stops (check the disk and its kernel log, then restart: recovery keeps what reached the disk)")]
    SyncFailed {
        /// The sync (`fdatasync`, `fsync`, `fsync directory`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An earlier sync of this log failed ([`LogError::SyncFailed`]): the
    /// writer takes nothing more.
    #[error("core {core}'s log stopped after a failed sync: {reason}")]
    Stopped {
        /// The core.
        core: usize,
        /// The failed sync, in words.
        reason: String,
    },
    /// A shard's order archive could not be opened, read or written.
    #[error(transparent)]
    Archive(#[from] crate::engine::archive::ArchiveError),
    /// A segment's header does not verify.
    #[error("{path}: bad segment header: {reason}; the file is not a segment this build can read (move it away only if you know it holds nothing acknowledged)")]
    BadSegmentHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    /// Whether this failure means "no room": the server answers `log_full`.
    #[must_use]
    pub fn is_full(&self) -> bool {
        matches!(self, LogError::Full { .. } | LogError::BoundReached { .. })
    }

    /// Whether a sync failed: the log can no longer be trusted to hold what
    /// it was given, and the server must stop.
    #[must_use]
    pub fn is_sync_failure(&self) -> bool {
        matches!(self, LogError::SyncFailed { .. } | LogError::Stopped { .. })
    }

    /// The mapper of a sync's error: `storage.sync_data(f).map_err(LogError::sync("fdatasync", path))`.
    pub fn sync(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.to_path_buf();
        move |source| LogError::SyncFailed { op, path, source }
    }
}

/// Why the log could not be recovered: the server does not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// A file operation failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record before the tail of the log does not verify.
    #[error(
        "log corrupt: {path} at byte offset {offset} (expected record sequence {sequence}): {reason}; \
         verified records follow it, so this is not a torn tail and nothing is skipped silently. \
         Restore the data directory from a backup or replica, or, to keep only the records before \
         this offset and lose every later one, restart once with --truncate-corrupt-log"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the bad record in the file.
        offset: u64,
        /// The sequence that should have been there.
        sequence: u64,
        /// What is wrong.
        reason: BadRecord,
    },
    /// A record verifies but is not the one expected at its place.
    #[error("log inconsistent: {path} at byte offset {offset}: {reason}; restore the data directory from a backup")]
    Inconsistent {
        /// The segment.
        path: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record verifies but its event does not decode.
    #[error("{path} at byte offset {offset}: record {sequence} holds no event this build reads: {source}")]
    Decode {
        /// The segment.
        path: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// The record's sequence.
        sequence: u64,
        /// Why.
        source: EventDecodeError,
    },
    /// A recovered event is not a legal step of its shard.
    #[error("{path} at byte offset {offset}: record {sequence} does not replay on shard {shard}: {source}; restore the data directory from a backup")]
    Replay {
        /// The segment.
        path: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// The record's sequence.
        sequence: u64,
        /// The shard it routed to.
        shard: u32,
        /// Why.
        source: EventError,
    },
    /// The data directory was written with another layout.
    #[error(
        "{path}: this data directory was written by {} and {written_shards} shards, \
         but the server was started with {} and {shards} shards; each core's log holds its own \
         shards, so start with {} (e.g. --cores with {written_cores} CPU ids) and \
         --shards {written_shards}, or use another --data-dir",
        cores_word(*written_cores),
        cores_word(*cores),
        cores_word(*written_cores)
    )]
    LayoutMismatch {
        /// The manifest.
        path: PathBuf,
        /// Cores in the manifest.
        written_cores: usize,
        /// Shards in the manifest.
        written_shards: u32,
        /// Cores now.
        cores: usize,
        /// Shards now.
        shards: u32,
    },
    /// Core logs exist but the manifest that says how they were written
    /// does not (deleted, or the directory copied without it). Starting
    /// anyway would guess the layout: with fewer cores a log would be
    /// ignored, with other shards every event would go to the wrong shard.
    #[error(
        "{path} is missing, but the data directory holds core logs ({}): \
         nothing was started and nothing was changed. Restore the manifest from a backup, or write it as \
         three lines `orderd-log-manifest 1`, `cores {}`, `shards <the --shards the server ran with, 64 by default>` \
         (the cores count is the number of core-NNNN directories the server wrote), then start again",
        found.join(", "),
        found.len()
    )]
    ManifestMissing {
        /// Where the manifest should be.
        path: PathBuf,
        /// The core log directories found, sorted.
        found: Vec<String>,
    },
    /// The manifest cannot be read.
    #[error("{path}: unreadable log manifest: {reason}; restore it or use another --data-dir")]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `1 core`, `2 cores`.
fn cores_word(n: usize) -> String {
    if n == 1 {
        "1 core".to_owned()
    } else {
        format!("{n} cores")
    }
}
