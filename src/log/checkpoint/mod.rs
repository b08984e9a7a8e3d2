//! Checkpoints: each core's shards written whole, as of a log sequence, so
//! that recovery replays only the log after it instead of every record
//! since the first order.
//!
//! # Files
//!
//! ```text
//! <data-dir>/core-0000/checkpoint-00000000000012345678.ckpt   named by its sequence
//! <data-dir>/core-0000/checkpoint.tmp                          one being written
//! ```
//!
//! # Writing, and what makes one usable
//!
//! The runtime takes one shard at a time on the core ([`Shard::image`]
//! copies its records), noting the log's next sequence at that moment: the
//! shard's state then is every record of it below that sequence. The images
//! are encoded and written off the core ([`CheckpointWriter`]) to
//! `checkpoint.tmp`, then the file is synced, renamed to its name and the
//! directory synced. The rename waits until the log is durable up to the
//! checkpoint's end sequence, so a usable checkpoint never holds a change
//! the log could lose. Only then are older checkpoints removed, keeping the
//! newest [`KEEP`]: a newest one found damaged at start falls back to the
//! one before, with a warning.
//!
//! A crash at any point leaves either a `checkpoint.tmp` (removed at start)
//! or a complete, synced file under its name: a checkpoint cut short is
//! never used, and its trailer and CRCs ([`format`](mod@format)) refuse one damaged
//! later.
//!
//! [`Shard::image`]: crate::engine::Shard::image

pub mod format;

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use self::format::{CheckpointHeader, Decoded, ShardEntry};
use super::error::LogError;
use super::segment::{numbered_file_name, parse_numbered_file_name, sync_dir};
use super::storage::SharedStorage;

/// Checkpoints kept per core: the newest and one to fall back to.
pub const KEEP: usize = 2;

/// The name a checkpoint is written under until it is complete.
pub const TMP_FILE_NAME: &str = "checkpoint.tmp";

/// The file name of the checkpoint whose sequence is `sequence`.
#[must_use]
pub fn checkpoint_file_name(sequence: u64) -> String {
    numbered_file_name("checkpoint-", sequence, ".ckpt")
}

/// The sequence named by a checkpoint file name, if it is one.
#[must_use]
pub fn parse_checkpoint_file_name(name: &str) -> Option<u64> {
    parse_numbered_file_name(name, "checkpoint-", ".ckpt")
}

/// The checkpoint files of a core's directory, oldest first.
///
/// # Errors
/// The directory cannot be read.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let io = |source| LogError::Io { op: "read directory", path: dir.to_path_buf(), source };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(sequence) = entry.file_name().to_str().and_then(parse_checkpoint_file_name) {
            found.push((sequence, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(sequence, _)| *sequence);
    Ok(found)
}

/// Reads and verifies the checkpoint at `path`.
///
/// # Errors
/// Why it cannot be used, in words (unreadable, cut short, damaged, another
/// format).
pub fn load(path: &Path) -> Result<Decoded, String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    if file.metadata().map_err(|e| format!("cannot stat it: {e}"))?.len() == 0 {
        return Err("it is empty".into());
    }
    // SAFETY: the mapping is read only, and nothing changes the file while
    // it is mapped: the data directory is locked by this process, and a
    // checkpoint is never written again once it has its name (a new one
    // is written beside it under another name). Mapping instead of reading
    // spares a copy of the whole file (gigabytes for a big shard set).
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("cannot map it: {e}"))?;
    if let Err(e) = map.advise(memmap2::Advice::Sequential) {
        tracing::debug!(file = %path.display(), error = %e, "madvise(SEQUENTIAL) refused; reading anyway");
    }
    format::decode(&map)
}

/// Removes a `checkpoint.tmp` a crash left behind.
///
/// # Errors
/// It exists and cannot be removed.
pub fn remove_tmp(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(TMP_FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "removed a checkpoint a stop interrupted (never used)");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Io { op: "remove", path, source }),
    }
}

/// Removes every checkpoint of `dir` but the newest [`KEEP`]; answers how
/// many were removed.
///
/// # Errors
/// A file cannot be removed or the directory synced.
pub fn remove_older(dir: &Path, storage: &SharedStorage) -> Result<usize, LogError> {
    let found = list(dir)?;
    let old = found.len().saturating_sub(KEEP);
    for (_, path) in &found[..old] {
        std::fs::remove_file(path).map_err(|source| LogError::Io { op: "remove", path: path.clone(), source })?;
    }
    if old > 0 {
        sync_dir(&**storage, dir)?;
    }
    Ok(old)
}

/// Writes one checkpoint: [`CheckpointWriter::add`] each shard, then
/// [`CheckpointWriter::finish`]. Blocking I/O: run it off the core.
#[derive(Debug)]
pub struct CheckpointWriter {
    out: BufWriter<File>,
    dir: PathBuf,
    path: PathBuf,
    crc: u32,
    shards: u32,
    bytes: u64,
    section: Vec<u8>,
    storage: SharedStorage,
}

impl CheckpointWriter {
    /// Starts `checkpoint.tmp` in `dir` (replacing one left behind).
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn create(dir: &Path, storage: SharedStorage) -> Result<CheckpointWriter, LogError> {
        let path = dir.join(TMP_FILE_NAME);
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { op, path, source }
        };
        // Read as well as write: the simulated disk reads a file back to
        // record what a sync made durable.
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io("create", &path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // The header is written last, when its sequences are known.
        out.write_all(&[0u8; format::HEADER_LEN]).map_err(io("write", &path))?;
        Ok(CheckpointWriter {
            out,
            dir: dir.to_path_buf(),
            path,
            crc: 0,
            shards: 0,
            bytes: format::HEADER_LEN as u64,
            section: Vec::new(),
            storage,
        })
    }

    /// Appends one shard.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn add(&mut self, entry: &ShardEntry) -> Result<(), LogError> {
        self.section.clear();
        format::encode_section(entry, &mut self.section);
        self.crc = crc32c::crc32c_append(self.crc, &self.section);
        self.out.write_all(&self.section).map_err(|source| LogError::Io { op: "write", path: self.path.clone(), source })?;
        self.shards += 1;
        self.bytes += self.section.len() as u64;
        // A shard's sections can be large: do not keep the buffer's peak.
        if self.section.capacity() > 16 << 20 {
            self.section = Vec::new();
        }
        Ok(())
    }

    /// Bytes written so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer and the header (`header.shards` is set here) and
    /// syncs the file. The checkpoint is not usable yet: [`Written::publish`]
    /// names it once the log is durable up to its end sequence.
    ///
    /// # Errors
    /// A write or the sync failed; the temporary file is left for the next
    /// start to remove.
    pub fn finish(mut self, mut header: CheckpointHeader) -> Result<Written, LogError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { op, path, source }
        };
        header.shards = self.shards;
        self.out.write_all(&format::encode_trailer(self.crc)).map_err(io("write", &self.path))?;
        let mut file = self.out.into_inner().map_err(|e| LogError::Io { op: "write", path: self.path.clone(), source: e.into_error() })?;
        file.seek(SeekFrom::Start(0)).map_err(io("seek", &self.path))?;
        file.write_all(&header.encode()).map_err(io("write", &self.path))?;
        self.storage.sync_all(&file).map_err(LogError::sync("fsync checkpoint", &self.path))?;
        let bytes = self.bytes + format::TRAILER_LEN as u64;
        Ok(Written { dir: self.dir, tmp: self.path, sequence: header.sequence, bytes, storage: self.storage })
    }
}

/// A complete, synced checkpoint still under its temporary name.
#[derive(Debug)]
pub struct Written {
    dir: PathBuf,
    tmp: PathBuf,
    sequence: u64,
    bytes: u64,
    storage: SharedStorage,
}

impl Written {
    /// The checkpoint's sequence.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The file's size.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Renames the file to its checkpoint name and syncs the directory:
    /// from here on recovery uses it. Call only once the log is durable up
    /// to the checkpoint's end sequence. Then removes older checkpoints but
    /// the newest [`KEEP`]. Answers the checkpoint's path.
    ///
    /// # Errors
    /// The rename, a removal or a directory sync failed.
    pub fn publish(self) -> Result<PathBuf, LogError> {
        let to = self.dir.join(checkpoint_file_name(self.sequence));
        std::fs::rename(&self.tmp, &to).map_err(|source| LogError::Io { op: "rename into place", path: self.tmp.clone(), source })?;
        sync_dir(&*self.storage, &self.dir)?;
        remove_older(&self.dir, &self.storage)?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Shard, ShardConfig};
    use crate::log::RealStorage;

    fn header(sequence: u64) -> CheckpointHeader {
        CheckpointHeader { core: 0, cores: 1, shard_count: 1, shards: 0, sequence, end_sequence: sequence, record_bytes: 0, taken_s: 0 }
    }

    fn write(dir: &Path, sequence: u64) -> PathBuf {
        let mut w = CheckpointWriter::create(dir, RealStorage::shared()).unwrap();
        w.add(&ShardEntry { sequence, image: Shard::new(ShardConfig::new(0)).image() }).unwrap();
        w.finish(header(sequence)).unwrap().publish().unwrap()
    }

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        assert_eq!(checkpoint_file_name(42), "checkpoint-00000000000000000042.ckpt");
        assert_eq!(parse_checkpoint_file_name(&checkpoint_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_checkpoint_file_name("checkpoint-42.ckpt"), None);
        assert_eq!(parse_checkpoint_file_name(TMP_FILE_NAME), None);
    }

    #[test]
    fn a_published_checkpoint_loads_and_only_the_newest_two_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for sequence in [10, 20, 30] {
            write(dir.path(), sequence);
        }
        let kept: Vec<u64> = list(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(kept, [20, 30]);
        let loaded = load(&dir.path().join(checkpoint_file_name(30))).unwrap();
        assert_eq!((loaded.header.sequence, loaded.header.shards, loaded.shards[0].sequence), (30, 1, 30));
        assert!(!dir.path().join(TMP_FILE_NAME).exists());
    }

    #[test]
    fn a_checkpoint_not_yet_published_is_not_listed_and_is_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let w = CheckpointWriter::create(dir.path(), RealStorage::shared()).unwrap();
        let _written = w.finish(header(5)).unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
        remove_tmp(dir.path()).unwrap();
        assert!(!dir.path().join(TMP_FILE_NAME).exists());
    }
}
