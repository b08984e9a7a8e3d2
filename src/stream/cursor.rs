//! A subscription's position in one core's log ([`CoreCursor`]), where the
//! records it reads come from ([`BlockSource`]: decoded [`Block`]s, shared
//! by the core's subscriptions), and how a record's segment is found.
//!
//! A segment file is named by the sequence of its first record, and a new
//! segment is created exactly when the next record does not fit the
//! current one (`log::writer`), so a record is found without an index: the
//! segment with the largest first sequence at or below it, then a scan from
//! that segment's first record (verifying each CRC). Reaching the end of a
//! segment's records means the next record starts the segment named by its
//! sequence.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::block::{Block, Pos};
use crate::log::segment::{core_dir, parse_segment_file_name};

/// Why a cursor cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// A file or directory of the log could not be read.
    #[error("core {core}: cannot {op} {path}: {source}")]
    Io {
        /// The core.
        core: usize,
        /// What failed.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No segment holds the sequence wanted.
    #[error("core {core}: no log segment holds offset {sequence} (the oldest retained offset is {oldest})")]
    Missing {
        /// The core.
        core: usize,
        /// The sequence wanted.
        sequence: u64,
        /// The oldest sequence still in the log.
        oldest: u64,
    },
    /// The bytes of a durable record do not verify or decode.
    #[error("core {core}: {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The core.
        core: usize,
        /// The segment.
        path: PathBuf,
        /// Byte offset in the file.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Where a subscription's blocks come from: the reading core's shared,
/// I/O-driven reader in the server (`runtime::stream_reader`).
#[allow(async_fn_in_trait, reason = "used on one thread, never boxed")]
pub trait BlockSource {
    /// A block of core `core`'s log that holds record `want` (below
    /// `durable`, the core's durable point read before asking), or, when
    /// the bytes read held only records before `want`, one with no events
    /// whose `end` is where to ask from next. `at`: where the caller knows
    /// a record at or before `want` starts (`None`: find it from the
    /// segment files).
    ///
    /// # Errors
    /// See [`CursorError`].
    async fn block(&self, core: usize, want: u64, at: Option<Pos>, durable: u64) -> Result<Rc<Block>, CursorError>;
}

/// One subscription's place in one core's log.
#[derive(Debug, Clone)]
pub struct CoreCursor {
    /// The sequence of the next record to read.
    pub next: u64,
    /// Where a record at or before `next` starts, once known.
    pub at: Option<Pos>,
    /// The block being read, while it holds `next`.
    pub block: Option<Rc<Block>>,
}

impl CoreCursor {
    /// A cursor at sequence `next`.
    #[must_use]
    pub fn new(next: u64) -> CoreCursor {
        CoreCursor { next, at: None, block: None }
    }
}

/// The oldest sequence core `core`'s log in `data_dir` still holds: the
/// first sequence of its oldest segment file.
///
/// # Errors
/// [`CursorError::Io`] if the directory cannot be read.
pub fn oldest(data_dir: &Path, core: usize) -> Result<u64, CursorError> {
    Ok(segment_firsts(&core_dir(data_dir, core), core)?.into_iter().min().unwrap_or(0))
}

/// Where the segment holding `sequence` of core `core`'s log starts.
///
/// # Errors
/// [`CursorError::Missing`] when no segment file holds it (retention
/// deleted it); [`CursorError::Io`] if the directory cannot be read.
pub fn holding_segment(data_dir: &Path, core: usize, sequence: u64) -> Result<Pos, CursorError> {
    let firsts = segment_firsts(&core_dir(data_dir, core), core)?;
    let oldest = firsts.iter().copied().min().unwrap_or(0);
    match firsts.into_iter().filter(|&f| f <= sequence).max() {
        Some(first) => Ok(Pos::segment_start(first)),
        None => Err(CursorError::Missing { core, sequence, oldest }),
    }
}

/// The first sequences of the segment files in `dir`.
fn segment_firsts(dir: &Path, core: usize) -> Result<Vec<u64>, CursorError> {
    let io = |source| CursorError::Io { core, op: "read directory", path: dir.to_path_buf(), source };
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        if let Some(first) = entry.map_err(io)?.file_name().to_str().and_then(parse_segment_file_name) {
            firsts.push(first);
        }
    }
    Ok(firsts)
}
