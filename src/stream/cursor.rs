//! [`LogCursor`]: reads one core's log in order, from any sequence, through
//! read-only mappings of its segment files, never past the durable point.
//!
//! A segment file is named by the sequence of its first record, and a new
//! segment is created exactly when the next record does not fit the
//! current one (`log::writer`), so the cursor finds any record without an
//! index: the segment with the largest first sequence at or below it, then
//! a scan from that segment's first record (verifying each CRC). Reaching
//! the end of a segment's records means the next record starts the segment
//! named by its sequence.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::engine::Event;
use crate::log::record::{read_at, Slot};
use crate::log::segment::{core_dir, parse_segment_file_name, segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};

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

/// The segment a cursor reads.
struct OpenSegment {
    path: PathBuf,
    map: Mmap,
    /// Sequence of the segment's first record.
    first: u64,
    /// Byte offset of the record the cursor reads next.
    pos: usize,
}

/// A reader of one core's log.
pub struct LogCursor {
    core: usize,
    dir: PathBuf,
    /// The sequence of the next record to read.
    next: u64,
    segment: Option<OpenSegment>,
}

impl LogCursor {
    /// A cursor on core `core`'s log in `data_dir`, at sequence `next`.
    /// Nothing is opened until the first read.
    #[must_use]
    pub fn new(data_dir: &Path, core: usize, next: u64) -> LogCursor {
        LogCursor { core, dir: core_dir(data_dir, core), next, segment: None }
    }

    /// The sequence of the next record this cursor reads (the position to
    /// resume from).
    #[must_use]
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The oldest sequence core `core`'s log still holds: the first sequence
    /// of its oldest segment file.
    ///
    /// # Errors
    /// [`CursorError::Io`] if the directory cannot be read.
    pub fn oldest(data_dir: &Path, core: usize) -> Result<u64, CursorError> {
        let dir = core_dir(data_dir, core);
        Ok(segment_firsts(&dir, core)?.into_iter().min().unwrap_or(0))
    }

    /// The next record if its sequence is below `durable`, else `None`.
    ///
    /// # Errors
    /// See [`CursorError`]; the cursor stays where it was.
    pub fn next(&mut self, durable: u64) -> Result<Option<(u64, Event)>, CursorError> {
        if self.next >= durable {
            return Ok(None);
        }
        // Each turn reads one record or changes segment; bounded by the
        // records before `next` in its segment plus one change.
        loop {
            let segment = match &mut self.segment {
                Some(s) => s,
                None => self.segment.insert(self.open_holding(self.next)?),
            };
            match read_at(&segment.map, segment.pos) {
                Slot::Record(record) if record.sequence < self.next => segment.pos += record.len,
                Slot::Record(record) if record.sequence == self.next => {
                    let event = record.event().map_err(|e| corrupt(self.core, segment, e.to_string()))?;
                    segment.pos += record.len;
                    self.next += 1;
                    return Ok(Some((record.sequence, event)));
                }
                Slot::Record(record) => {
                    let reason = format!("found offset {} where offset {} was expected", record.sequence, self.next);
                    return Err(corrupt(self.core, segment, reason));
                }
                Slot::End if segment.first < self.next => {
                    // The record did not fit this segment: it starts the next.
                    let path = self.dir.join(segment_file_name(self.next));
                    self.segment = Some(match open(self.core, &path, self.next) {
                        // Retention deleted it (oldest first, so everything
                        // before it is gone too).
                        Err(CursorError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                            let oldest = segment_firsts(&self.dir, self.core)?.into_iter().min().unwrap_or(0);
                            return Err(CursorError::Missing { core: self.core, sequence: self.next, oldest });
                        }
                        other => other?,
                    });
                }
                Slot::End => {
                    let reason = format!("offset {} is durable but its segment holds no record", self.next);
                    return Err(corrupt(self.core, segment, reason));
                }
                Slot::Bad(bad) => return Err(corrupt(self.core, segment, bad.to_string())),
            }
        }
    }

    /// Opens the segment that holds `sequence`, positioned at its first record.
    fn open_holding(&self, sequence: u64) -> Result<OpenSegment, CursorError> {
        let firsts = segment_firsts(&self.dir, self.core)?;
        let oldest = firsts.iter().copied().min().unwrap_or(0);
        let Some(&first) = firsts.iter().filter(|&&f| f <= sequence).max() else {
            return Err(CursorError::Missing { core: self.core, sequence, oldest });
        };
        match open(self.core, &self.dir.join(segment_file_name(first)), first) {
            // Deleted by retention between the listing and the open.
            Err(CursorError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let oldest = segment_firsts(&self.dir, self.core)?.into_iter().min().unwrap_or(oldest);
                Err(CursorError::Missing { core: self.core, sequence, oldest })
            }
            other => other,
        }
    }
}

fn corrupt(core: usize, segment: &OpenSegment, reason: String) -> CursorError {
    CursorError::Corrupt { core, path: segment.path.clone(), offset: segment.pos, reason }
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

/// Maps segment `path` read-only and checks that its header names `core`
/// and `first`.
fn open(core: usize, path: &Path, first: u64) -> Result<OpenSegment, CursorError> {
    let io = |op| move |source| CursorError::Io { core, op, path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io("open"))?;
    // SAFETY: the mapping is read-only and the bytes this cursor reads are
    // those of records below the core's durable point (`next` checks it
    // before reading), which the owning core wrote before its flusher
    // published that point with Release ordering (read here with Acquire,
    // `DurablePoints`) and never writes again: the log is append-only and a
    // segment is never truncated or resized while the server runs (the data
    // directory is locked, `runtime::startup::lock_data_dir`). Bytes past the durable
    // point may change under the mapping, but they are never read through it.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(io("map"))?;
    let header =
        SegmentHeader::decode(&map).map_err(|reason| CursorError::Corrupt { core, path: path.to_path_buf(), offset: 0, reason })?;
    if header.core as usize != core || header.first_sequence != first {
        let reason =
            format!("header says core {} first offset {}, expected core {core} first offset {first}", header.core, header.first_sequence);
        return Err(CursorError::Corrupt { core, path: path.to_path_buf(), offset: 0, reason });
    }
    Ok(OpenSegment { path: path.to_path_buf(), map, first, pos: SEGMENT_HEADER_LEN })
}
