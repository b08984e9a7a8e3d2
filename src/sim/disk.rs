//! The simulated disk: real files in a temp directory (the log maps them
//! as it always does), plus a record of what the durability calls made
//! durable, so that a crash can be played: every write no completed sync
//! covers is dropped, except a torn tail the dice keep.
//!
//! What is durable, as POSIX and ext4 promise it:
//! - a file's bytes: as they were at its last `sync_data` / `sync_all`
//!   (kept per inode, so a rename does not lose them);
//! - a directory's entries: as they were at its last `sync_dir` (a file
//!   created, renamed or removed since is undone by a crash).
//!
//! A crash rebuilds the tree from that record ([`SimDisk::crash`]). A torn
//! tail keeps a sector-aligned prefix of the unsynced bytes of a file that
//! was appended to (a write the device had started), and may flip a bit in
//! its last sector. A sync may be made to fail ([`SimDisk::fail_sync_after`]):
//! it returns EIO and, as Linux does ("fsyncgate"), the file's unsynced
//! bytes are dropped from the page cache, so a later sync that succeeds
//! does not bring them back.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::RngExt;

use crate::log::Storage;

/// The size of a torn write's unit: a sector.
const SECTOR: usize = 512;

/// A file's identity: its inode and its birth time (an inode number is
/// reused once its file is removed; the pair is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FileId {
    ino: u64,
    born_ns: u128,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        let born_ns = meta.created().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        FileId { ino: meta.ino(), born_ns }
    }
}

/// A directory entry as the last `sync_dir` left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A file and its identity.
    File(FileId),
    /// A subdirectory.
    Dir,
}

#[derive(Debug, Default)]
struct State {
    /// Per file: its bytes at its last sync.
    images: HashMap<FileId, Vec<u8>>,
    /// Per directory: its entries at its last sync.
    dirs: HashMap<PathBuf, BTreeMap<String, Entry>>,
    /// Sync calls so far.
    syncs: u64,
    /// The sync call (counted from 1) that fails.
    fail_at: Option<u64>,
    /// Whether a sync has failed.
    failed: bool,
}

impl State {
    /// A sync call: counts it and fails it if asked to.
    fn sync_call(&mut self) -> io::Result<()> {
        self.syncs += 1;
        if self.fail_at == Some(self.syncs) {
            self.failed = true;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

/// What a crash did, for the simulator's checks and its report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Files whose unsynced tail was partly kept.
    pub torn_files: u32,
    /// Bytes of unsynced writes dropped.
    pub bytes_dropped: u64,
    /// Whether a bit was flipped in a kept torn tail.
    pub flipped: bool,
    /// Entries created or renamed since their directory's last sync, undone.
    pub entries_undone: u32,
}

/// The simulated disk under one data directory.
#[derive(Debug)]
pub struct SimDisk {
    root: PathBuf,
    state: Mutex<State>,
}

impl SimDisk {
    /// A disk whose files live under `root` (created if missing; whatever
    /// is there counts as durable).
    ///
    /// # Errors
    /// If `root` cannot be created or read.
    pub fn new(root: &Path) -> io::Result<SimDisk> {
        std::fs::create_dir_all(root)?;
        let disk = SimDisk { root: root.to_path_buf(), state: Mutex::new(State::default()) };
        disk.settle()?;
        Ok(disk)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held is a simulator bug; the state is
        // still usable for the report that follows.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the `n`th sync call from now fail (1: the next one).
    pub fn fail_sync_after(&self, n: u64) {
        let mut s = self.state();
        s.fail_at = Some(s.syncs + n.max(1));
    }

    /// No sync fails from now on (a failure armed and not yet hit is dropped).
    pub fn disarm(&self) {
        self.state().fail_at = None;
    }

    /// Whether a sync has failed since the last crash.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.state().failed
    }

    /// Records the whole tree as durable (after a crash rebuilt it, or at
    /// the start).
    fn settle(&self) -> io::Result<()> {
        let mut s = self.state();
        s.images.clear();
        s.dirs.clear();
        s.failed = false;
        s.fail_at = None;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = list(&dir)?;
            for (name, entry) in &entries {
                let path = dir.join(name);
                match entry {
                    Entry::Dir => stack.push(path),
                    Entry::File(ino) => {
                        let bytes = std::fs::read(&path)?;
                        s.images.insert(*ino, bytes);
                    }
                }
            }
            s.dirs.insert(dir, entries);
        }
        Ok(())
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        let id = FileId::of(&file.metadata()?);
        // One sync at a time, its read and its record together: recovery
        // syncs from a thread per core.
        let mut s = self.state();
        if let Err(e) = s.sync_call() {
            // The kernel drops the dirty pages it could not write: the file
            // reads as its last synced bytes from now on.
            let image = s.images.get(&id).cloned().unwrap_or_default();
            let mut restored = read_all(file)?;
            let keep = image.len().min(restored.len());
            restored[..keep].copy_from_slice(&image[..keep]);
            restored[keep..].fill(0);
            file.write_all_at(&restored, 0)?;
            return Err(e);
        }
        let bytes = read_all(file)?;
        s.images.insert(id, bytes);
        Ok(())
    }

    /// Overwrites the byte at `offset` of the file at `path` with what
    /// `change` makes of it, as a durable change (the disk's media did it,
    /// or an operator's repair): a later crash keeps it.
    ///
    /// # Errors
    /// If the file cannot be read or written.
    pub fn alter_durable(&self, path: &Path, offset: u64, change: impl FnOnce(u8) -> u8) -> io::Result<()> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, offset)?;
        file.write_all_at(&[change(byte[0])], offset)?;
        let id = FileId::of(&file.metadata()?);
        let mut s = self.state();
        let bytes = read_all(&file)?;
        s.images.insert(id, bytes);
        Ok(())
    }

    /// Plays a crash: the tree under the root becomes what the syncs made
    /// durable, plus torn tails the dice keep, and that is durable from now
    /// on. Every mapping and open file of the old tree must be dropped
    /// first (the process died).
    ///
    /// # Errors
    /// If the tree cannot be read or rewritten.
    pub fn crash(&self, rng: &mut SmallRng, torn: bool) -> io::Result<CrashReport> {
        let mut report = CrashReport::default();
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        {
            let s = self.state();
            // What each inode holds now (the page cache), wherever it is.
            let mut current: HashMap<FileId, PathBuf> = HashMap::new();
            let mut stack = vec![self.root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = list(&dir)?;
                let durable = s.dirs.get(&dir);
                for (name, entry) in &entries {
                    let path = dir.join(name);
                    match entry {
                        Entry::Dir => stack.push(path),
                        Entry::File(ino) => {
                            current.insert(*ino, path);
                        }
                    }
                    if durable.and_then(|d| d.get(name)) != Some(entry) {
                        report.entries_undone += 1;
                    }
                }
            }
            let mut stack = vec![self.root.clone()];
            while let Some(dir) = stack.pop() {
                let Some(entries) = s.dirs.get(&dir) else { continue };
                for (name, entry) in entries {
                    let path = dir.join(name);
                    match entry {
                        Entry::Dir => {
                            dirs.push(path.clone());
                            stack.push(path);
                        }
                        Entry::File(ino) => {
                            let image = s.images.get(ino).cloned().unwrap_or_default();
                            let now = match current.get(ino) {
                                Some(p) => std::fs::read(p)?,
                                None => image.clone(),
                            };
                            // Order archives are written a record at a
                            // time into sectors that hold durable records.
                            let overwrites = path.extension().is_some_and(|e| e == "orders");
                            let bytes = survivor(&image, &now, rng, torn, overwrites, &mut report);
                            files.push((path, bytes));
                        }
                    }
                }
            }
        }
        // Rewrite the tree.
        for entry in std::fs::read_dir(&self.root)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        dirs.sort();
        for dir in &dirs {
            std::fs::create_dir_all(dir)?;
        }
        for (path, bytes) in &files {
            std::fs::write(path, bytes)?;
        }
        self.settle()?;
        Ok(report)
    }
}

impl Storage for SimDisk {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.sync_file(file)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.sync_file(file)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.sync_call()?;
        let entries = list(dir)?;
        s.dirs.insert(dir.to_path_buf(), entries);
        Ok(())
    }
}

/// What a crash leaves of a file whose durable bytes are `image` and whose
/// page cache held `now`: the image, and with `torn` perhaps a prefix of
/// the unsynced change (sector-aligned from the first changed byte; its
/// last sector may be cut short or hold a flipped bit). With `overwrites`
/// (a file written in place among durable bytes, not appended to) the
/// flipped bit lands on a byte the unsynced change altered: the device is
/// taken to keep the bytes of a sector it was not asked to change
/// (SQLite's "powersafe overwrite"), as the archive's layout assumes.
fn survivor(image: &[u8], now: &[u8], rng: &mut SmallRng, torn: bool, overwrites: bool, report: &mut CrashReport) -> Vec<u8> {
    let len = image.len().max(now.len());
    let mut bytes = image.to_vec();
    bytes.resize(len, 0);
    let differs = |i: usize| image.get(i).copied().unwrap_or(0) != now.get(i).copied().unwrap_or(0);
    let Some(first) = (0..len).find(|&i| differs(i)) else { return bytes };
    let last = (first..len).rev().find(|&i| differs(i)).unwrap_or(first);
    report.bytes_dropped += (last + 1 - first) as u64;
    if !torn || !rng.random_bool(0.5) {
        return bytes;
    }
    // The device wrote whole sectors from the first changed one on, and
    // maybe part of the next.
    let start = first / SECTOR * SECTOR;
    let sectors = (last + 1 - start).div_ceil(SECTOR);
    let kept = rng.random_range(0..=sectors);
    let mut end = (start + kept * SECTOR).min(len);
    if end < len && rng.random_bool(0.3) {
        end += rng.random_range(0..SECTOR.min(len - end));
    }
    if end <= start {
        return bytes;
    }
    for (i, b) in bytes.iter_mut().enumerate().take(end).skip(start) {
        *b = now.get(i).copied().unwrap_or(0);
    }
    report.torn_files += 1;
    report.bytes_dropped = report.bytes_dropped.saturating_sub((end - start) as u64);
    let garble_from = end.saturating_sub(SECTOR).max(first);
    if garble_from < end && rng.random_bool(0.2) {
        // A garbled last sector: a bit flipped in what the sync did not
        // cover, nothing written after it (a sector cannot be half written
        // in order and then continue).
        let mut at = rng.random_range(garble_from..end);
        if overwrites {
            // A sparse change may leave the last sector untouched: then
            // nothing in it is garbled.
            match (at..end).chain(garble_from..at).find(|&i| differs(i)) {
                Some(changed) => at = changed,
                None => return bytes,
            }
        }
        bytes[at] ^= 1 << rng.random_range(0..8u32);
        for (i, b) in bytes.iter_mut().enumerate().take(end).skip(at + 1) {
            *b = image.get(i).copied().unwrap_or(0);
        }
        report.flipped = true;
    }
    bytes
}

/// A directory's entries: files by inode, and subdirectories.
fn list(dir: &Path) -> io::Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.insert(name, if meta.is_dir() { Entry::Dir } else { Entry::File(FileId::of(&meta)) });
    }
    Ok(out)
}

/// The whole content of `file`, read through its descriptor (so a file
/// renamed since it was opened is still read).
fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.metadata()?.len()).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut bytes = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let n = file.read_at(&mut bytes[at..], at as u64)?;
        if n == 0 {
            bytes.truncate(at);
            break;
        }
        at += n;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_crash_keeps_what_was_synced_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path()).unwrap();
        let path = dir.path().join("a");
        let file = std::fs::OpenOptions::new().create(true).read(true).write(true).truncate(true).open(&path).unwrap();
        file.write_all_at(b"durable", 0).unwrap();
        disk.sync_data(&file).unwrap();
        disk.sync_dir(dir.path()).unwrap();
        file.write_all_at(b"LOST", 0).unwrap();
        std::fs::write(dir.path().join("never-synced"), b"x").unwrap();
        drop(file);
        let report = disk.crash(&mut SmallRng::seed_from_u64(1), false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"durable");
        assert!(!dir.path().join("never-synced").exists());
        assert_eq!((report.bytes_dropped, report.entries_undone), (4, 1));
    }

    #[test]
    fn an_unsynced_rename_is_undone_and_the_file_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("from"), b"bytes").unwrap();
        let disk = SimDisk::new(dir.path()).unwrap();
        std::fs::rename(dir.path().join("from"), dir.path().join("to")).unwrap();
        disk.crash(&mut SmallRng::seed_from_u64(2), true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("from")).unwrap(), b"bytes");
        assert!(!dir.path().join("to").exists());
    }

    #[test]
    fn a_failed_sync_drops_the_unsynced_bytes_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path()).unwrap();
        let path = dir.path().join("a");
        let file = std::fs::OpenOptions::new().create(true).read(true).write(true).truncate(true).open(&path).unwrap();
        file.write_all_at(b"one", 0).unwrap();
        disk.sync_data(&file).unwrap();
        file.write_all_at(b"two", 3).unwrap();
        disk.fail_sync_after(1);
        assert!(disk.sync_data(&file).is_err());
        assert!(disk.failed());
        disk.sync_data(&file).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\0\0\0");
    }
}
