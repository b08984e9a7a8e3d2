//! A segment: one preallocated, memory-mapped file of a core's log.
//!
//! ```text
//! offset size field
//!   0     8   magic          b"ORDDLOG\0"
//!   8     4   format         LOG_FORMAT_VERSION
//!  12     4   core           the core whose log this is
//!  16     8   first_sequence sequence of the segment's first record
//!  24     8   segment_bytes  the file's size when it was created
//!  32    28   reserved       zero
//!  60     4   crc32c         CRC32C of bytes 0..60
//!  64     …   records        (see `record.rs`), then zeros to the end
//! ```
//!
//! A segment is created at its full size (`fallocate`, so the blocks exist
//! and a flush never has to allocate; usually also zero-filled ahead of
//! need, [`prepare`], so a flush never converts extents either), then
//! mapped read-write. Records are written in place through the mapping and
//! made durable with `fdatasync` on the same file (DESIGN.md: it persists
//! pages written through the mapping, and was the fastest flush measured).
//! A segment made at rotation keeps its prepared name until the next flush
//! renames it ([`Segment::adopt_prepared`], [`rename_no_replace`]).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapMut;

use super::error::LogError;
use super::record::{le_u32, le_u64};
use super::storage::Storage;

/// The first bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ORDDLOG\0";

/// The version of the segment and record layout. A reader refuses others.
pub const LOG_FORMAT_VERSION: u32 = 1;

/// Bytes of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;

const _: () = assert!(SEGMENT_HEADER_LEN.is_multiple_of(super::record::RECORD_ALIGN));

/// The file name of the segment whose first record is `first_sequence`.
#[must_use]
pub fn segment_file_name(first_sequence: u64) -> String {
    numbered_file_name("segment-", first_sequence, ".log")
}

/// The first sequence named by a segment file name, if it is one.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered_file_name(name, "segment-", ".log")
}

/// `{prefix}{sequence as 20 digits}{suffix}`: log files named by a sequence
/// sort by it (segments, checkpoints).
#[must_use]
pub fn numbered_file_name(prefix: &str, sequence: u64, suffix: &str) -> String {
    format!("{prefix}{sequence:020}{suffix}")
}

/// The sequence of a [`numbered_file_name`], if `name` is one.
#[must_use]
pub fn parse_numbered_file_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The directory of core `core`'s log inside the data directory.
#[must_use]
pub fn core_dir(data_dir: &Path, core: usize) -> PathBuf {
    data_dir.join(format!("core-{core:04}"))
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The core whose log this is.
    pub core: u32,
    /// Sequence of the first record.
    pub first_sequence: u64,
    /// The size the segment was created with.
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// The header's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.core.to_le_bytes());
        h[16..24].copy_from_slice(&self.first_sequence.to_le_bytes());
        h[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&h[..60]);
        h[60..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and verifies a header; the error says what is wrong.
    ///
    /// # Errors
    /// A description of the first check that failed.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        let h = bytes.get(..SEGMENT_HEADER_LEN).ok_or("the file is shorter than a segment header")?;
        if h[..8] != SEGMENT_MAGIC {
            return Err("bad magic: not an orderd log segment".into());
        }
        let stored = le_u32(h, 60);
        let computed = crc32c::crc32c(&h[..60]);
        if stored != computed {
            return Err(format!("header CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"));
        }
        let format = le_u32(h, 8);
        if format != LOG_FORMAT_VERSION {
            return Err(format!("log format version {format}; this build reads {LOG_FORMAT_VERSION}"));
        }
        Ok(SegmentHeader { core: le_u32(h, 12), first_sequence: le_u64(h, 16), segment_bytes: le_u64(h, 24) })
    }
}

/// An open, mapped segment.
pub struct Segment {
    /// Its path (for messages).
    pub path: PathBuf,
    /// The file, shared with the flusher's blocking thread.
    pub file: Arc<File>,
    /// The mapping of the whole file.
    pub map: MmapMut,
    /// Its header.
    pub header: SegmentHeader,
}

impl Segment {
    /// Creates segment `first_sequence` of core `core` in `dir`, `bytes`
    /// long, preallocated, with its header written and the file and the
    /// directory synced, and maps it.
    ///
    /// # Errors
    /// [`LogError::Full`] when the disk has no room, [`LogError::Io`] otherwise.
    pub fn create(storage: &dyn Storage, dir: &Path, core: u32, first_sequence: u64, bytes: u64) -> Result<Segment, LogError> {
        let path = dir.join(segment_file_name(first_sequence));
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { op, path, source }
        };
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io("create", &path))?;
        if let Err(source) = preallocate(&file, bytes) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(if source.raw_os_error() == Some(libc::ENOSPC) {
                LogError::Full { path }
            } else {
                LogError::Io { op: "fallocate", path, source }
            });
        }
        Segment::write_header(storage, file, path, dir, SegmentHeader { core, first_sequence, segment_bytes: bytes })
    }

    /// Maps the new segment `file` at `path`, writes its header, syncs it and
    /// its directory `dir`.
    fn write_header(storage: &dyn Storage, file: File, path: PathBuf, dir: &Path, header: SegmentHeader) -> Result<Segment, LogError> {
        let mut map = map_mut(&file, &path)?;
        map[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
        storage.sync_data(&file).map_err(LogError::sync("fdatasync", &path))?;
        sync_dir(storage, dir)?;
        Ok(Segment { path, file: Arc::new(file), map, header })
    }

    /// Makes the prepared file at `prepared` (see [`prepare`]) segment
    /// `first_sequence` of core `core` at once: [`Segment::adopt_prepared`],
    /// then renamed into place and synced with its directory (a new log's
    /// first segment, at start; rotation leaves the rename to the next
    /// flush).
    ///
    /// # Errors
    /// [`LogError::Io`]. A failure after the header was written leaves the
    /// prepared file with it; recovery removes such a file when the core
    /// has no segment.
    pub fn create_from_prepared(
        storage: &dyn Storage,
        prepared: &Path,
        dir: &Path,
        core: u32,
        first_sequence: u64,
        bytes: u64,
    ) -> Result<Segment, LogError> {
        let mut segment = Segment::adopt_prepared(prepared, core, first_sequence, bytes)?;
        let path = dir.join(segment_file_name(first_sequence));
        std::fs::rename(prepared, &path).map_err(|source| LogError::Io { op: "rename", path: prepared.to_path_buf(), source })?;
        storage.sync_data(&segment.file).map_err(LogError::sync("fdatasync", &path))?;
        sync_dir(storage, dir)?;
        segment.path = path;
        Ok(segment)
    }

    /// Makes the prepared file at `prepared` segment `first_sequence` of
    /// core `core` *without any I/O*: maps it and writes its header into
    /// the mapping. The file keeps its prepared name until the log's next
    /// flush syncs it and renames it ([`PendingRename::complete`](super::writer::PendingRename::complete)); until then its
    /// records are not durable and recovery adopts the file only if it
    /// continues the last segment exactly.
    ///
    /// # Errors
    /// [`LogError::Io`] if it cannot be opened or mapped or has the wrong
    /// size; the prepared file is left as it was.
    pub fn adopt_prepared(prepared: &Path, core: u32, first_sequence: u64, bytes: u64) -> Result<Segment, LogError> {
        let io = |op: &'static str| move |source| LogError::Io { op, path: prepared.to_path_buf(), source };
        let file = OpenOptions::new().read(true).write(true).open(prepared).map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        if len != bytes {
            return Err(LogError::Io {
                op: "use prepared segment",
                path: prepared.to_path_buf(),
                source: std::io::Error::other(format!("it has {len} bytes, segments have {bytes}")),
            });
        }
        let mut map = map_mut(&file, prepared)?;
        let header = SegmentHeader { core, first_sequence, segment_bytes: bytes };
        map[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
        Ok(Segment { path: prepared.to_path_buf(), file: Arc::new(file), map, header })
    }

    /// Opens and maps an existing segment and verifies its header.
    ///
    /// # Errors
    /// [`LogError::Io`] if it cannot be opened or mapped,
    /// [`LogError::BadSegmentHeader`] if the header does not verify.
    pub fn open(path: &Path) -> Result<Segment, LogError> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|source| LogError::Io {
            op: "open",
            path: path.to_path_buf(),
            source,
        })?;
        let map = map_mut(&file, path)?;
        let header = SegmentHeader::decode(&map).map_err(|reason| LogError::BadSegmentHeader { path: path.to_path_buf(), reason })?;
        if header.segment_bytes != map.len() as u64 {
            return Err(LogError::BadSegmentHeader {
                path: path.to_path_buf(),
                reason: format!("the header says {} bytes but the file has {}", header.segment_bytes, map.len()),
            });
        }
        Ok(Segment { path: path.to_path_buf(), file: Arc::new(file), map, header })
    }

    /// Opens the last segment of a log.
    ///
    /// A file shorter than its header says was cut short after it was
    /// written: orderd creates every segment at its full size and syncs that
    /// before its header, and never shortens one, so a crash cannot do it (a
    /// copy stopped midway, a `truncate`, a file system that lost the end
    /// can). Records past the cut may have been acknowledged, so the start
    /// is refused ([`LogError::CutShort`]) unless the operator accepts the
    /// loss (`cut_ok`, `--truncate-corrupt-log`): the file is then extended
    /// back to its size with zeros and recovery treats the missing bytes as
    /// a torn tail. The extension is allocated (`fallocate`), not a sparse
    /// hole: the server writes the tail through its mapping, and a store
    /// into a page the file system then cannot allocate is a SIGBUS, on
    /// every restart of a full disk.
    ///
    /// # Errors
    /// As [`Segment::open`]; [`LogError::CutShort`]; [`LogError::NoRoomForTail`]
    /// when the file system has no room for the extension (the file is left
    /// as it was).
    pub fn open_last(storage: &dyn Storage, path: &Path, cut_ok: bool) -> Result<Segment, LogError> {
        use std::io::Read;
        let io = |op: &'static str| move |source| LogError::Io { op, path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io("open"))?;
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let len = file.metadata().map_err(io("stat"))?.len();
        if len >= SEGMENT_HEADER_LEN as u64 {
            file.read_exact(&mut head).map_err(io("read"))?;
            if let Ok(header) = SegmentHeader::decode(&head) {
                if len < header.segment_bytes {
                    if !cut_ok {
                        return Err(LogError::CutShort { path: path.to_path_buf(), len, segment_bytes: header.segment_bytes });
                    }
                    tracing::warn!(file = %path.display(), len, expected = header.segment_bytes, "last segment is shorter than its header says (--truncate-corrupt-log): extending it with zeros; records past byte {len} are dropped");
                    if let Err(source) = preallocate(&file, header.segment_bytes) {
                        // A failed fallocate may leave some blocks or the
                        // size changed: put the length back as it was found.
                        let _ = file.set_len(len);
                        return Err(if source.raw_os_error() == Some(libc::ENOSPC) {
                            LogError::NoRoomForTail { path: path.to_path_buf(), len, segment_bytes: header.segment_bytes }
                        } else {
                            LogError::Io { op: "fallocate", path: path.to_path_buf(), source }
                        });
                    }
                    storage.sync_all(&file).map_err(LogError::sync("fsync", path))?;
                }
            }
        }
        drop(file);
        Segment::open(path)
    }

    /// The record area (everything after the header).
    #[must_use]
    pub fn records(&self) -> &[u8] {
        self.map.get(SEGMENT_HEADER_LEN..).unwrap_or(&[])
    }
}

/// The name of a core's prepared next segment (see [`prepare`]).
pub const PREPARED_FILE_NAME: &str = "prepared-segment.tmp";

/// Zeros are written one page per `write(2)`: the page cache then holds the
/// file in base pages. One large write makes large folios (6.x kernels), and
/// a store through the mapping later dirties, and every group commit writes
/// back, the whole folio: measured here, a 16 KiB append + fdatasync took
/// 289 µs (p50) over zeros written 1 MiB at a time and 130 µs over zeros
/// written a page at a time (benches/README.md, Durability).
const ZERO_WRITE_BYTES: usize = 4096;

/// Zeros written between two starts of writeback while preparing: keeps
/// the dirty zeros few (the core's group commits flush the same device),
/// without an fdatasync, and so a journal commit, per chunk.
const ZERO_SYNC_EVERY: u64 = 1 << 20;

/// How [`prepare`] makes the next segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    /// Allocate the blocks only (`fallocate`): the file system marks them
    /// "unwritten", and every flush into them converts extents too.
    Allocate,
    /// Allocate and write the zeros, so that flushes into the segment write
    /// data and nothing else: about half the fdatasync time here.
    Zero,
}

/// Prepares the next segment of a log in `dir` ahead of need: a file of
/// `bytes`, allocated (and with [`Prepare::Zero`] its zeros written) and
/// synced, at [`PREPARED_FILE_NAME`]. Slow (~50 ms for 64 MiB of zeros
/// here): run it off the core (`runtime::segments` runs it, paced, on a
/// helper thread of the core's CPU that only takes idle time).
///
/// # Errors
/// [`LogError::Full`] when the disk has no room, [`LogError::Io`] otherwise;
/// the partial file is removed.
pub fn prepare(storage: &dyn Storage, dir: &Path, bytes: u64, how: Prepare) -> Result<PathBuf, LogError> {
    prepare_paced(storage, dir, bytes, how, &mut |_| Pace::Zero)
}

/// What a pacer tells [`prepare_paced`] before a chunk of zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Write the next chunk.
    Zero,
    /// Write no more zeros; sync the file and hand it over as it is (its
    /// blocks are all allocated; those not zeroed are only slower to flush).
    Finish,
    /// Give up: the file is removed.
    Abandon,
}

/// [`prepare`] at a pace the caller sets: before each chunk of zeros,
/// `pace(zeros_written_so_far)` may block until more zeros are welcome,
/// and says what to do ([`Pace`]). The runtime uses it to spread the zeros
/// over the current segment's life instead of writing them in one burst
/// that the group commits' flushes would queue behind, and to hand over a
/// partly zeroed file rather than none when the zeros fall behind.
///
/// # Errors
/// As [`prepare`]; giving up is [`LogError::Io`] with `ErrorKind::Interrupted`.
pub fn prepare_paced(
    storage: &dyn Storage,
    dir: &Path,
    bytes: u64,
    how: Prepare,
    pace: &mut dyn FnMut(u64) -> Pace,
) -> Result<PathBuf, LogError> {
    use std::io::Write;
    let path = dir.join(PREPARED_FILE_NAME);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        preallocate(&file, bytes)?;
        if how == Prepare::Zero {
            let zeros = [0u8; ZERO_WRITE_BYTES];
            let (mut written, mut started) = (0u64, 0u64);
            while written < bytes {
                if written == started {
                    match pace(written) {
                        Pace::Zero => {}
                        Pace::Finish => break,
                        Pace::Abandon => {
                            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the log stopped wanting the segment"));
                        }
                    }
                }
                let n = (bytes - written).min(ZERO_WRITE_BYTES as u64) as usize;
                file.write_all(&zeros[..n])?;
                written += n as u64;
                if written - started >= ZERO_SYNC_EVERY || written == bytes {
                    start_writeback(&file, started, written - started)?;
                    started = written;
                }
            }
        }
        storage.sync_all(&file)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&path);
        return Err(if source.raw_os_error() == Some(libc::ENOSPC) {
            LogError::Full { path }
        } else {
            LogError::Io { op: "prepare", path, source }
        });
    }
    sync_dir(storage, dir)?;
    Ok(path)
}

/// Maps all of `file` read-write.
fn map_mut(file: &File, path: &Path) -> Result<MmapMut, LogError> {
    // SAFETY: the mapping is undefined behaviour only if the file changes
    // size or content behind our back while mapped. The file is a segment
    // of a data directory this process holds an exclusive flock on
    // (`runtime::startup::lock_data_dir`), so no other orderd writes it; orderd never
    // truncates or resizes a segment after creating it (`set_len`/fallocate
    // happen before this call, and nothing calls them again), and a segment
    // is written only through this one mapping by the one core that owns it.
    // Editing the files of a running server by hand is outside the contract
    // (benches/README.md, Durability).
    #[allow(unsafe_code)]
    let map = unsafe { MmapMut::map_mut(file) }.map_err(|source| LogError::Io { op: "mmap", path: path.to_path_buf(), source })?;
    // MADV_RANDOM: a write fault maps one page, not a readahead window. On
    // kernels that cache files in large folios (6.x), a fault under normal
    // advice can bring in a folio of up to read_ahead_kb, and every append
    // then dirties, and every group commit writes back, the whole folio:
    // measured here, 64 MiB segments flushed in 446 µs instead of 285 µs and
    // sync throughput fell by a third (benches/README.md, Durability; to
    // measure the default again, drop this call).
    map.advise(memmap2::Advice::Random).map_err(|source| LogError::Io { op: "madvise", path: path.to_path_buf(), source })?;
    Ok(map)
}

/// Allocates `bytes` of disk for `file` (so flushes never allocate) and
/// sets its length.
fn preallocate(file: &File, bytes: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(bytes).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fallocate(2) on a file descriptor we own and keep open for the
    // call; it reads and writes no memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        // A file system without fallocate: a sparse file still works, the
        // first flush of each page then allocates.
        Some(libc::EOPNOTSUPP) => file.set_len(bytes),
        _ => Err(error),
    }
}

/// Starts writeback of `len` bytes at `offset` of `file` after the previous
/// writeback of the file is done (`sync_file_range`): the zeros go to disk
/// at the pace the disk takes them, one chunk in flight, and no device
/// cache flush or journal commit is asked for until the final fdatasync.
fn start_writeback(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: sync_file_range(2) on a file descriptor we own and keep open
    // for the call; it reads and writes no memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, offset, libc::SYNC_FILE_RANGE_WAIT_BEFORE) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with
/// `RENAME_NOREPLACE`; a hard link and an unlink where the file system has
/// no such rename). Returns whether this call renamed it: `false` when `to`
/// already exists, whoever made it. Never replaces a file.
///
/// # Errors
/// What the system calls return, but for "`to` exists" and "`from` is gone
/// and `to` exists" (renamed by someone else), which are `Ok(false)`.
pub fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
    let (cfrom, cto) = (c(from)?, c(to)?);
    // SAFETY: renameat2(2) with two NUL-terminated paths that live across
    // the call; AT_FDCWD resolves relative paths as rename(2) does.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, cfrom.as_ptr(), libc::AT_FDCWD, cto.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EEXIST) => Ok(false),
        Some(libc::ENOENT) if to.exists() => Ok(false),
        Some(libc::EINVAL | libc::ENOSYS) => match std::fs::hard_link(from, to) {
            Ok(()) => std::fs::remove_file(from).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => Ok(false),
            Err(e) => Err(e),
        },
        _ => Err(error),
    }
}

/// fsync a directory, so a file created (or removed) in it survives a crash.
///
/// # Errors
/// [`LogError::Io`].
pub fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    storage.sync_dir(dir).map_err(LogError::sync("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        assert_eq!(segment_file_name(42), "segment-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("segment-42.log"), None);
        assert_eq!(parse_segment_file_name("other"), None);
    }

    #[test]
    fn a_header_verifies_and_every_flip_is_caught() {
        let h = SegmentHeader { core: 3, first_sequence: 99, segment_bytes: 1 << 20 };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut b = bytes;
            b[i] ^= 0x10;
            assert!(SegmentHeader::decode(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_prepared_segment_becomes_a_segment_of_zeros_with_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare(&crate::log::RealStorage, dir.path(), 3 * (1 << 20) + 8192, Prepare::Zero).unwrap();
        assert_eq!(prepared, dir.path().join(PREPARED_FILE_NAME));
        let s = Segment::create_from_prepared(&crate::log::RealStorage, &prepared, dir.path(), 2, 77, 3 * (1 << 20) + 8192).unwrap();
        assert!(!prepared.exists());
        assert_eq!(s.header, SegmentHeader { core: 2, first_sequence: 77, segment_bytes: 3 * (1 << 20) + 8192 });
        assert!(s.records().iter().all(|&b| b == 0));
        drop(s);
        assert!(Segment::open(&dir.path().join(segment_file_name(77))).is_ok());
        // A prepared file of another size is not used.
        let prepared = prepare(&crate::log::RealStorage, dir.path(), 4096, Prepare::Allocate).unwrap();
        assert!(Segment::create_from_prepared(&crate::log::RealStorage, &prepared, dir.path(), 2, 99, 8192).is_err());
        assert!(prepared.exists());
    }

    #[test]
    fn zeros_are_written_at_the_callers_pace_and_giving_up_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = 3 * ZERO_SYNC_EVERY + 8192;
        let mut asked = Vec::new();
        let prepared = prepare_paced(&crate::log::RealStorage, dir.path(), bytes, Prepare::Zero, &mut |written| {
            asked.push(written);
            Pace::Zero
        })
        .unwrap();
        // Asked before each chunk of zeros, with what was written so far.
        assert_eq!(asked, vec![0, ZERO_SYNC_EVERY, 2 * ZERO_SYNC_EVERY, 3 * ZERO_SYNC_EVERY]);
        let data = std::fs::read(&prepared).unwrap();
        assert_eq!(data.len() as u64, bytes);
        assert!(data.iter().all(|&b| b == 0));
        // A caller that gives up midway gets an error and no file.
        let err = prepare_paced(&crate::log::RealStorage, dir.path(), bytes, Prepare::Zero, &mut |written| {
            if written < ZERO_SYNC_EVERY {
                Pace::Zero
            } else {
                Pace::Abandon
            }
        })
        .unwrap_err();
        assert!(matches!(&err, LogError::Io { source, .. } if source.kind() == std::io::ErrorKind::Interrupted), "{err}");
        assert!(!dir.path().join(PREPARED_FILE_NAME).exists());
        // A caller that runs out of time gets the file as it is: full size,
        // the first chunk zeroed, the rest allocated (and reading as zeros).
        let mut asked = 0;
        let prepared = prepare_paced(&crate::log::RealStorage, dir.path(), bytes, Prepare::Zero, &mut |written| {
            asked += 1;
            if written < ZERO_SYNC_EVERY {
                Pace::Zero
            } else {
                Pace::Finish
            }
        })
        .unwrap();
        assert_eq!(asked, 2);
        let data = std::fs::read(&prepared).unwrap();
        assert_eq!(data.len() as u64, bytes);
        assert!(data.iter().all(|&b| b == 0));
        // Allocating only writes no zeros, so it never asks.
        prepare_paced(&crate::log::RealStorage, dir.path(), bytes, Prepare::Allocate, &mut |_| -> Pace {
            panic!("asked to pace an allocation")
        })
        .unwrap();
    }

    #[test]
    fn create_then_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segment::create(&crate::log::RealStorage, dir.path(), 1, 5, 8192).unwrap();
        assert_eq!(s.map.len(), 8192);
        assert!(s.records().iter().all(|&b| b == 0));
        drop(s);
        let s = Segment::open(&dir.path().join(segment_file_name(5))).unwrap();
        assert_eq!(s.header, SegmentHeader { core: 1, first_sequence: 5, segment_bytes: 8192 });
    }
}
