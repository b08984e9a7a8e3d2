//! The order archive: one file per shard holding the orders that left
//! memory (cold orders), addressed by slot, so that reading one is a single
//! `pread` of 64 bytes at a computed offset, with no index.
//!
//! Only final orders (paid, cancelled, expired) are archived, and a final
//! order never changes again: a record, once written, is the order for
//! ever. Records are written and synced by the core's archiver thread
//! (`runtime::archiver`), and the core drops them from memory only after
//! that; so every slot below a shard's in-memory window that is not pinned
//! there was durable in the archive before memory let go of it. The archive
//! may hold records a later state does not have (written just before a
//! crash, for orders whose last event the log then lost): memory always
//! wins, and the archive is read only for slots below the shard's `base`
//! that memory does not hold.
//!
//! ```text
//! header, 64 bytes                      record, 64 bytes, at 64 * (slot + 1)
//!   0  8  magic b"ORDDARCH"               0 56  key.hi, key.lo, user, product,
//!   8  4  format ARCHIVE_FORMAT                 unit_price_cents, created_ms,
//!  12  4  shard                                 expires_ms (u64 each)
//!  16 44  zero                           56  4  qty
//!  60  4  CRC32C of bytes 0..60          60  1  state (1 paid, 2 cancelled,
//!                                               3 expired)
//!                                        61  3  check: the low 24 bits of
//!                                               CRC32C(bytes 0..61, slot)
//! ```
//!
//! A slot never written reads as 64 zero bytes (a hole of a sparse file):
//! "not archived". Any other record whose check does not match is damage,
//! reported with the file, slot and offset, never taken for an order.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use orderd_protocol::{IdempotencyKey, OrderState};

use crate::engine::record::OrderRecord;
use crate::log::storage::Storage;

/// The first bytes of every archive file.
pub const ARCHIVE_MAGIC: [u8; 8] = *b"ORDDARCH";
/// The version of the layout above.
pub const ARCHIVE_FORMAT: u32 = 1;
/// Bytes per record (and of the header).
pub const RECORD_LEN: usize = 64;
/// Records read per `pread` by a scan.
const SCAN_CHUNK: usize = 4096;

/// Why the archive cannot answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A file-system call failed.
    #[error("order archive {path}: {op} failed: {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A record or the header does not verify.
    #[error("order archive {path} is damaged at offset {offset} (slot {slot}): {what}; restore the data directory from a backup")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The slot (0 for the header).
        slot: u64,
        /// The byte offset.
        offset: u64,
        /// What does not verify.
        what: &'static str,
    },
}

/// The archive file of one shard (see the module docs). Reads and writes
/// take `&self` (`pread`/`pwrite`), so the core reads while its archiver
/// thread writes other slots.
#[derive(Debug)]
pub struct OrderArchive {
    file: File,
    path: PathBuf,
}

/// The file name of shard `shard`'s archive.
#[must_use]
pub fn file_name(shard: u16) -> String {
    format!("shard-{shard:05}.orders")
}

impl OrderArchive {
    /// Opens shard `shard`'s archive in `dir`, creating the directory and
    /// the file (header written and synced, directory synced) if missing.
    ///
    /// # Errors
    /// The file cannot be created or read, or its header is not an archive
    /// of this shard.
    pub fn open(dir: &Path, shard: u16, storage: &dyn Storage) -> Result<OrderArchive, ArchiveError> {
        let path = dir.join(file_name(shard));
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
            if let Some(parent) = dir.parent() {
                storage.sync_dir(parent).map_err(io("sync directory", parent))?;
            }
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io("open", &path))?;
        let len = file.metadata().map_err(io("stat", &path))?.len();
        let archive = OrderArchive { file, path };
        if len < RECORD_LEN as u64 {
            // New (or cut before its header was synced: nothing after it
            // can have been relied on, as no record is synced before it).
            archive.file.set_len(0).map_err(io("truncate", &archive.path))?;
            archive.file.write_all_at(&header(shard), 0).map_err(io("write", &archive.path))?;
            storage.sync_all(&archive.file).map_err(io("sync", &archive.path))?;
            storage.sync_dir(dir).map_err(io("sync directory", dir))?;
            return Ok(archive);
        }
        let mut h = [0u8; RECORD_LEN];
        archive.file.read_exact_at(&mut h, 0).map_err(io("read", &archive.path))?;
        if h != header(shard) {
            let what = if h[0..8] != ARCHIVE_MAGIC {
                "not an order archive"
            } else if u32::from_le_bytes([h[8], h[9], h[10], h[11]]) != ARCHIVE_FORMAT {
                "another archive format"
            } else {
                "the header is of another shard or does not verify"
            };
            return Err(ArchiveError::Damaged { path: archive.path, slot: 0, offset: 0, what });
        }
        Ok(archive)
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes (its apparent size: holes count).
    ///
    /// # Errors
    /// `fstat` failed.
    pub fn file_bytes(&self) -> Result<u64, ArchiveError> {
        self.file.metadata().map(|m| m.len()).map_err(|source| self.io("stat", source))
    }

    fn io(&self, op: &'static str, source: io::Error) -> ArchiveError {
        ArchiveError::Io { op, path: self.path.clone(), source }
    }

    /// The record of `slot`; `None` if it was never written.
    ///
    /// # Errors
    /// The read failed or the record is damaged.
    pub fn read(&self, slot: u32) -> Result<Option<OrderRecord>, ArchiveError> {
        let mut b = [0u8; RECORD_LEN];
        let offset = offset_of(slot);
        match self.file.read_exact_at(&mut b, offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(self.io("read", e)),
        }
        self.decode(slot, &b)
    }

    fn decode(&self, slot: u32, b: &[u8]) -> Result<Option<OrderRecord>, ArchiveError> {
        let damaged = |what| ArchiveError::Damaged { path: self.path.clone(), slot: u64::from(slot), offset: offset_of(slot), what };
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let b: &[u8; RECORD_LEN] = b.try_into().map_err(|_| damaged("a short record"))?;
        if b[61..64] != check(slot, b) {
            return Err(damaged("a record's check does not match"));
        }
        decode_record(b).map(Some).ok_or_else(|| damaged("a record's state is not a final state"))
    }

    /// Calls `f` with every record written in slots `from..to` but those
    /// `skip` names (memory holds them: their bytes here are not read), in
    /// slot order, reading 256 KiB at a time (recovery, checks).
    ///
    /// # Errors
    /// A read failed or a record is damaged; `f` saw the records before it.
    pub fn scan(&self, from: u32, to: u32, skip: impl Fn(u32) -> bool, mut f: impl FnMut(u32, OrderRecord)) -> Result<(), ArchiveError> {
        let mut buf = vec![0u8; SCAN_CHUNK * RECORD_LEN];
        let end = u64::from(to).min(self.file_bytes()?.saturating_sub(RECORD_LEN as u64) / RECORD_LEN as u64) as u32;
        let mut slot = from;
        while slot < end {
            let n = ((end - slot) as usize).min(SCAN_CHUNK);
            let bytes = &mut buf[..n * RECORD_LEN];
            self.file.read_exact_at(bytes, offset_of(slot)).map_err(|e| self.io("read", e))?;
            for (i, b) in bytes.chunks_exact(RECORD_LEN).enumerate() {
                let at = slot + i as u32;
                if skip(at) {
                    continue;
                }
                if let Some(record) = self.decode(at, b)? {
                    f(at, record);
                }
            }
            slot += n as u32;
        }
        Ok(())
    }

    /// Writes `records` (slot, final record), sorted by slot, each run of
    /// consecutive slots in one `pwrite`. Not durable until [`Self::sync`].
    ///
    /// # Errors
    /// A write failed (a full disk): memory keeps the orders.
    pub fn write(&self, records: &[(u32, OrderRecord)]) -> Result<(), ArchiveError> {
        let mut run: Vec<u8> = Vec::with_capacity(records.len().min(SCAN_CHUNK) * RECORD_LEN);
        let mut first = None;
        let mut next = 0u32;
        for &(slot, record) in records {
            debug_assert!(record.state != OrderState::Placed, "only final orders are archived");
            if first.is_some() && (slot != next || run.len() >= SCAN_CHUNK * RECORD_LEN) {
                self.write_run(first, &run)?;
                run.clear();
                first = None;
            }
            first.get_or_insert(slot);
            run.extend_from_slice(&encode(slot, &record));
            next = slot.wrapping_add(1);
        }
        self.write_run(first, &run)
    }

    fn write_run(&self, first: Option<u32>, run: &[u8]) -> Result<(), ArchiveError> {
        match first {
            Some(slot) => self.file.write_all_at(run, offset_of(slot)).map_err(|e| self.io("write", e)),
            None => Ok(()),
        }
    }

    /// Makes every record written so far durable.
    ///
    /// # Errors
    /// The sync failed: the records may be lost, so memory must keep the
    /// orders (a later write of the same records and a sync that succeeds
    /// make them durable).
    pub fn sync(&self, storage: &dyn Storage) -> Result<(), ArchiveError> {
        storage.sync_all(&self.file).map_err(|e| self.io("sync", e))
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io { op, path: path.to_path_buf(), source }
}

const fn offset_of(slot: u32) -> u64 {
    (slot as u64 + 1) * RECORD_LEN as u64
}

fn header(shard: u16) -> [u8; RECORD_LEN] {
    let mut h = [0u8; RECORD_LEN];
    h[0..8].copy_from_slice(&ARCHIVE_MAGIC);
    h[8..12].copy_from_slice(&ARCHIVE_FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&u32::from(shard).to_le_bytes());
    let crc = crc32c::crc32c(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

fn check(slot: u32, b: &[u8; RECORD_LEN]) -> [u8; 3] {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..61]), &slot.to_le_bytes());
    let [x, y, z, _] = crc.to_le_bytes();
    [x, y, z]
}

/// The 64 bytes of `record` in `slot`, check included.
#[must_use]
pub fn encode(slot: u32, record: &OrderRecord) -> [u8; RECORD_LEN] {
    let mut b = encode_record(record);
    let c = check(slot, &b);
    b[61..64].copy_from_slice(&c);
    b
}

/// An order record's 64 bytes as the checkpoint and the archive lay them
/// out (bytes 61..64 zero).
#[must_use]
pub fn encode_record(r: &OrderRecord) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    for (i, word) in [r.key.hi, r.key.lo, r.user, r.product, r.unit_price_cents, r.created_ms, r.expires_ms].into_iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    b[56..60].copy_from_slice(&r.qty.to_le_bytes());
    b[60] = state_code(r.state);
    b
}

/// The record in `b`'s first 61 bytes; `None` for an unknown state code.
#[must_use]
pub fn decode_record(b: &[u8; RECORD_LEN]) -> Option<OrderRecord> {
    let u = |i: usize| u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
    let state = match b[60] {
        0 => OrderState::Placed,
        1 => OrderState::Paid,
        2 => OrderState::Cancelled,
        3 => OrderState::Expired,
        _ => return None,
    };
    Some(OrderRecord {
        key: IdempotencyKey { hi: u(0), lo: u(8) },
        user: u(16),
        product: u(24),
        unit_price_cents: u(32),
        created_ms: u(40),
        expires_ms: u(48),
        qty: u32::from_le_bytes([b[56], b[57], b[58], b[59]]),
        state,
    })
}

/// An order state's code in the checkpoint and the archive.
#[must_use]
pub const fn state_code(state: OrderState) -> u8 {
    match state {
        OrderState::Placed => 0,
        OrderState::Paid => 1,
        OrderState::Cancelled => 2,
        OrderState::Expired => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::RealStorage;

    fn record(n: u64, state: OrderState) -> OrderRecord {
        OrderRecord {
            key: IdempotencyKey::timed(n, u128::from(n)),
            user: n,
            product: 7,
            unit_price_cents: 100,
            created_ms: n,
            expires_ms: n + 10,
            qty: 1,
            state,
        }
    }

    #[test]
    fn records_come_back_by_slot_and_holes_read_as_not_archived() {
        let dir = tempfile::tempdir().unwrap();
        let archive = OrderArchive::open(&dir.path().join("archive"), 3, &RealStorage).unwrap();
        let written = [(0, record(1, OrderState::Paid)), (1, record(2, OrderState::Expired)), (5, record(6, OrderState::Cancelled))];
        archive.write(&written).unwrap();
        archive.sync(&RealStorage).unwrap();
        assert_eq!(archive.read(5).unwrap(), Some(written[2].1));
        assert_eq!(archive.read(3).unwrap(), None);
        assert_eq!(archive.read(1000).unwrap(), None);
        let mut seen = Vec::new();
        archive.scan(0, 100, |_| false, |slot, r| seen.push((slot, r))).unwrap();
        assert_eq!(seen, written);
        // Reopened: the same records; another shard's name refuses it.
        let again = OrderArchive::open(&dir.path().join("archive"), 3, &RealStorage).unwrap();
        assert_eq!(again.read(0).unwrap(), Some(written[0].1));
        std::fs::copy(again.path(), dir.path().join("archive").join(file_name(4))).unwrap();
        assert!(matches!(OrderArchive::open(&dir.path().join("archive"), 4, &RealStorage), Err(ArchiveError::Damaged { .. })));
    }

    #[test]
    fn a_flipped_bit_or_a_record_in_the_wrong_slot_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let archive = OrderArchive::open(dir.path(), 0, &RealStorage).unwrap();
        archive.write(&[(2, record(3, OrderState::Paid))]).unwrap();
        let at = offset_of(2);
        for bit in [0u64, 8 * 20, 8 * 60 + 1, 8 * 62] {
            let mut b = [0u8; RECORD_LEN];
            archive.file.read_exact_at(&mut b, at).unwrap();
            b[(bit / 8) as usize] ^= 1 << (bit % 8);
            archive.file.write_all_at(&b, at).unwrap();
            assert!(matches!(archive.read(2), Err(ArchiveError::Damaged { slot: 2, .. })), "bit {bit}");
            b[(bit / 8) as usize] ^= 1 << (bit % 8);
            archive.file.write_all_at(&b, at).unwrap();
        }
        // The same bytes one slot further are not that slot's record.
        let mut b = [0u8; RECORD_LEN];
        archive.file.read_exact_at(&mut b, at).unwrap();
        archive.file.write_all_at(&b, offset_of(3)).unwrap();
        assert!(matches!(archive.read(3), Err(ArchiveError::Damaged { slot: 3, .. })));
    }
}
