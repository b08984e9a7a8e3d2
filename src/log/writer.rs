//! [`LogWriter`]: one core's appender. It owns the core's current segment,
//! appends records in place through the mapping, rotates to a new segment
//! when the current one is full, and enforces the size bound.
//!
//! # The room rule
//!
//! The engine changes memory *before* its events reach the log, so a
//! state change may only be decided once the log is known to have room for
//! every event it can emit. [`LogWriter::ensure_room`] makes that room
//! (rotating if needed) and, once it has succeeded, appending up to that
//! many bytes cannot fail: it is a copy into mapped memory. The runtime
//! (`runtime::core`) expires due orders first, one record's room at a time,
//! then checks room for [`MAX_RECORD_LEN`] (every command emits at most one
//! event of its own once the expiries are done) before calling the engine.
//! If the room is not there the command is answered `log_full` and memory is
//! untouched, so memory and log never diverge.
//!
//! # Flushing
//!
//! The writer never flushes on its own, except on rotation's slow path.
//! Every segment file named `segment-*.log` but the last is complete on
//! disk (recovery relies on that to tell a torn tail from corruption).
//! Group commit (`runtime::commit`) takes [`LogWriter::flush_target`] and
//! runs the returned [`FlushPlan`] off the executor.
//!
//! # Rotation without I/O
//!
//! The runtime prepares the next segment ahead of need, off the core
//! ([`LogWriter::wants_prepared`], [`segment::prepare`](super::segment::prepare))
//! and hands it over ([`LogWriter::set_prepared`]). Rotation then maps it
//! and writes its header into the mapping, and nothing else: the core
//! appends to the file while it still has its prepared name. The next
//! flush ([`PendingRename::complete`]) syncs the old segment, syncs the new
//! file, renames it to its segment name and syncs the directory, in that
//! order, and only then does the durable point move past the old segment.
//! A crash before the rename leaves the prepared file beside a last segment
//! that may be incomplete: recovery adopts it only if its header is valid
//! and it continues that segment's records exactly, and deletes it
//! otherwise (nothing in it was acknowledged in `sync` mode). This took
//! ~0.8 ms of fdatasync, header sync and directory sync off the core at
//! every rotation.
//!
//! A rotation while a rename is still pending (a segment filled before the
//! next flush: tiny segments), or with no prepared segment, takes the slow
//! path on the core: complete the pending rename, flush, create the next
//! segment in place.
//!
//! The old segment's mapping is not unmapped on the core either: unmapping
//! 64 MiB of written pages takes milliseconds. Rotation keeps it in
//! [`LogWriter::take_retired`]'s list for the runtime to drop off the core
//! (it is synced and complete; nothing writes it again).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::LogError;
use super::record::{self, read_at, record_len, Slot, MAX_RECORD_LEN};
use super::segment::{rename_no_replace, segment_file_name, sync_dir, Segment, SEGMENT_HEADER_LEN};
use super::storage::SharedStorage;
use crate::engine::Event;

/// A rotation whose new segment still has its prepared name: what the next
/// flush must do before the durable point may pass the old segment.
#[derive(Debug, Clone)]
pub struct PendingRename {
    /// The segment rotation left, synced first (its last records).
    pub previous: Arc<File>,
    /// The new segment's file.
    pub file: Arc<File>,
    /// Its prepared name.
    pub from: PathBuf,
    /// Its segment name.
    pub to: PathBuf,
    /// The directory both live in.
    pub dir: PathBuf,
    /// The new segment's first sequence.
    pub first_sequence: u64,
    /// Where the syncs go.
    pub storage: SharedStorage,
}

impl PendingRename {
    /// Syncs the previous segment, syncs the new one, renames it to its
    /// segment name and syncs the directory. Idempotent and safe to race
    /// with itself (the flusher and a rotation's slow path may both run it):
    /// the rename never replaces a file, and finding it done is success.
    ///
    /// # Errors
    /// [`LogError::Io`] naming the step that failed.
    pub fn complete(&self) -> Result<(), LogError> {
        let io = |op: &'static str, path: &PathBuf| {
            let path = path.clone();
            move |source| LogError::Io { op, path, source }
        };
        self.storage.sync_data(&self.previous).map_err(LogError::sync("fdatasync (the segment before)", &self.dir))?;
        self.storage.sync_data(&self.file).map_err(LogError::sync("fdatasync", &self.from))?;
        rename_no_replace(&self.from, &self.to).map_err(io("rename into place", &self.from))?;
        sync_dir(&*self.storage, &self.dir)
    }
}

/// What one flush must do: sync `file` and, first, complete `rename` if a
/// rotation left one; then everything below `target` is durable.
#[derive(Debug, Clone)]
pub struct FlushPlan {
    /// The current segment's file.
    pub file: Arc<File>,
    /// The sequence the flush makes durable (exclusive).
    pub target: u64,
    /// A rotation's rename to complete first.
    pub rename: Option<PendingRename>,
    /// Where the syncs go.
    pub storage: SharedStorage,
}

impl FlushPlan {
    /// Runs the plan on the calling thread.
    ///
    /// # Errors
    /// As [`PendingRename::complete`]; `fdatasync` of the current file.
    pub fn run(&self, path: &std::path::Path) -> Result<(), LogError> {
        match &self.rename {
            Some(rename) => {
                rename.complete()?;
                if !Arc::ptr_eq(&rename.file, &self.file) {
                    self.storage.sync_data(&self.file).map_err(|source| LogError::Io {
                        op: "fdatasync",
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
                Ok(())
            }
            None => self.storage.sync_data(&self.file).map_err(LogError::sync("fdatasync", path)),
        }
    }
}

/// One core's log writer.
pub struct LogWriter {
    core: usize,
    dir: PathBuf,
    segment_bytes: u64,
    max_log_bytes: u64,
    /// Bytes of every segment file of this core (what the bound limits).
    files_bytes: u64,
    /// Bytes of records in the log (the `log_bytes` stat).
    record_bytes: u64,
    current: Segment,
    /// Where the next record goes in `current` (a file offset).
    pos: usize,
    next_sequence: u64,
    /// The sequence up to which (exclusive) the log is known durable.
    durable: u64,
    /// A prepared next segment (zeros, synced), used at the next rotation.
    prepared: Option<PathBuf>,
    /// Segments created by rotation since this writer was made.
    segments_created: u64,
    /// Segment files retention deleted since the start.
    segments_removed: u64,
    /// The first sequence of the oldest segment file.
    oldest_sequence: u64,
    /// Old segments whose mappings wait to be dropped off the core.
    retired: Vec<Segment>,
    /// The last rotation's rename, until a flush completes it.
    pending: Option<PendingRename>,
    /// Where the syncs go (the real file system, or the simulator's).
    storage: SharedStorage,
    /// Why the writer stopped: a sync failed on the core (rotation's slow
    /// path); it takes nothing more and the server must stop.
    stopped: Option<String>,
}

/// The settings of one core's log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The core.
    pub core: usize,
    /// Its log directory.
    pub dir: PathBuf,
    /// Size of new segments.
    pub segment_bytes: u64,
    /// Bound on its segment files.
    pub max_log_bytes: u64,
    /// Where the syncs go.
    pub storage: SharedStorage,
}

/// Where recovery left a core's log: the segment to append to and what
/// the whole log holds (all of it durable).
pub struct LogTail {
    /// The last segment.
    pub current: Segment,
    /// File offset of the next record in it.
    pub pos: usize,
    /// The next record's sequence.
    pub next_sequence: u64,
    /// Bytes of every segment file of the core.
    pub files_bytes: u64,
    /// Bytes of records ever appended to the log (deleted segments included).
    pub record_bytes: u64,
    /// The first sequence of the oldest segment file.
    pub oldest_sequence: u64,
}

/// Retired segments kept for the runtime at most; past this, rotation drops
/// the oldest itself (a runtime that stopped collecting them must not make
/// the writer hold every segment's mapping).
const MAX_RETIRED: usize = 4;

impl LogWriter {
    /// A writer for the log `settings` describe, appending where recovery
    /// left it (`tail`).
    #[must_use]
    pub fn new(settings: LogSettings, tail: LogTail) -> LogWriter {
        let LogSettings { core, dir, segment_bytes, max_log_bytes, storage } = settings;
        let LogTail { current, pos, next_sequence, files_bytes, record_bytes, oldest_sequence: oldest } = tail;
        LogWriter {
            core,
            dir,
            segment_bytes,
            max_log_bytes,
            files_bytes,
            record_bytes,
            current,
            pos,
            next_sequence,
            durable: next_sequence,
            prepared: None,
            segments_created: 0,
            segments_removed: 0,
            oldest_sequence: oldest,
            retired: Vec::new(),
            pending: None,
            storage,
            stopped: None,
        }
    }

    /// Why the writer stopped, if a sync it ran failed ([`LogError::SyncFailed`]):
    /// nothing more is appended or flushed, and the runtime must stop the
    /// server (recovery keeps what reached the disk).
    #[must_use]
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Stops the writer if `error` is a failed sync; hands it back.
    fn stop_on_sync_failure(&mut self, error: LogError) -> LogError {
        if matches!(error, LogError::SyncFailed { .. }) && self.stopped.is_none() {
            self.stopped = Some(error.to_string());
        }
        error
    }

    /// This log's directory.
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Where this log's syncs go (the segment preparer uses it too).
    #[must_use]
    pub fn storage(&self) -> &SharedStorage {
        &self.storage
    }

    /// Whether a next segment should be prepared now: none is, the current
    /// one is an eighth full (an idle server writes no spare file), and the
    /// size bound allows one more segment. Where, and how big.
    #[must_use]
    pub fn wants_prepared(&self) -> Option<(PathBuf, u64)> {
        let allowed = self.files_bytes.saturating_add(self.segment_bytes) <= self.max_log_bytes;
        let started = self.pos >= self.current.map.len() / 8;
        // While a rename is pending the current segment has the prepared
        // name: a new preparation would truncate it.
        (self.prepared.is_none() && self.pending.is_none() && allowed && started).then(|| (self.dir.clone(), self.segment_bytes))
    }

    /// How full the current segment is, in `1/one`ths (`one` when full).
    #[must_use]
    pub fn fill(&self, one: u64) -> u64 {
        let len = self.current.map.len().max(1) as u128;
        (self.pos as u128 * u128::from(one) / len) as u64
    }

    /// The old segments rotation replaced, to be dropped (unmapped and
    /// closed) off the core. Dropping a mapping loses no written page: the
    /// next flush syncs the file.
    pub fn take_retired(&mut self) -> Vec<Segment> {
        std::mem::take(&mut self.retired)
    }

    /// Hands the writer a prepared next segment (from
    /// [`segment::prepare`](super::segment::prepare)).
    pub fn set_prepared(&mut self, path: PathBuf) {
        self.prepared = Some(path);
    }

    /// The sequence the next record gets.
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Records below this sequence are durable.
    #[must_use]
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Bytes of records in the log.
    #[must_use]
    pub fn record_bytes(&self) -> u64 {
        self.record_bytes
    }

    /// The bound on the segment files (`--max-log-bytes`).
    #[must_use]
    pub fn max_log_bytes(&self) -> u64 {
        self.max_log_bytes
    }

    /// Bytes of segment files (what `--max-log-bytes` bounds).
    #[must_use]
    pub fn files_bytes(&self) -> u64 {
        self.files_bytes
    }

    /// Segments this writer created by rotation (the metrics' segment count).
    #[must_use]
    pub fn segments_created(&self) -> u64 {
        self.segments_created
    }

    /// Segment files retention deleted since the start.
    #[must_use]
    pub fn segments_removed(&self) -> u64 {
        self.segments_removed
    }

    /// The oldest sequence the log holds (the first of its oldest segment).
    #[must_use]
    pub fn oldest_sequence(&self) -> u64 {
        self.oldest_sequence
    }

    /// Retention deleted `segments` files of `bytes` in all (never the
    /// current one); the log now starts at `oldest`. The room they held
    /// counts against `--max-log-bytes` no more.
    pub fn removed(&mut self, segments: u64, bytes: u64, oldest: u64) {
        self.segments_removed += segments;
        self.files_bytes = self.files_bytes.saturating_sub(bytes);
        self.oldest_sequence = self.oldest_sequence.max(oldest);
    }

    /// The current segment.
    #[must_use]
    pub fn current(&self) -> &Segment {
        &self.current
    }

    /// The slot at file offset `pos` of the current segment (the read side
    /// a stream reader uses; older segments open with [`Segment::open`]).
    #[must_use]
    pub fn read_current(&self, pos: usize) -> Slot<'_> {
        read_at(&self.current.map, pos)
    }

    /// Bytes of records that fit in the current segment now.
    #[must_use]
    pub fn room(&self) -> usize {
        self.current.map.len().saturating_sub(self.pos)
    }

    /// Whether `bytes` of records fit now without a new segment.
    #[must_use]
    pub fn fits(&self, bytes: usize) -> bool {
        self.pos.saturating_add(bytes) <= self.current.map.len()
    }

    /// Makes room for `bytes` of records (at most a segment's record area),
    /// rotating to a new segment if the current one is too full. After `Ok`,
    /// appends totalling at most `bytes` cannot fail.
    ///
    /// # Errors
    /// [`LogError::BoundReached`] at `--max-log-bytes`, [`LogError::Full`]
    /// when the disk is full, [`LogError::SyncFailed`] (then
    /// [`LogError::Stopped`] for good) when a sync of rotation's slow path
    /// failed, [`LogError::Io`] for any other failure. The log is unchanged
    /// by a failure.
    pub fn ensure_room(&mut self, bytes: usize) -> Result<(), LogError> {
        if let Some(reason) = &self.stopped {
            return Err(LogError::Stopped { core: self.core, reason: reason.clone() });
        }
        if self.fits(bytes) {
            return Ok(());
        }
        if self.files_bytes.saturating_add(self.segment_bytes) > self.max_log_bytes {
            return Err(LogError::BoundReached { core: self.core, max_log_bytes: self.max_log_bytes });
        }
        if self.pending.is_none() {
            if let Some(prepared) = self.prepared.take() {
                match Segment::adopt_prepared(&prepared, self.core as u32, self.next_sequence, self.segment_bytes) {
                    Ok(next) => {
                        let to = self.dir.join(segment_file_name(self.next_sequence));
                        tracing::info!(
                            core = self.core,
                            segment = %to.display(),
                            first_sequence = self.next_sequence,
                            "log segment rotated (named at the next flush)"
                        );
                        self.pending = Some(PendingRename {
                            previous: Arc::clone(&self.current.file),
                            file: Arc::clone(&next.file),
                            from: prepared,
                            to,
                            dir: self.dir.clone(),
                            first_sequence: self.next_sequence,
                            storage: Arc::clone(&self.storage),
                        });
                        return self.switch_to(next, bytes);
                    }
                    Err(e) => {
                        tracing::warn!(core = self.core, error = %e, "cannot use the prepared segment; creating one in place");
                        let _ = std::fs::remove_file(&prepared);
                    }
                }
            }
        }
        // The slow path, on the core: the segment before must be complete
        // on disk before a new one is named (see module docs).
        self.flush_now()?;
        let next = Segment::create(&*self.storage, &self.dir, self.core as u32, self.next_sequence, self.segment_bytes)
            .map_err(|e| self.stop_on_sync_failure(e))?;
        tracing::info!(core = self.core, segment = %next.path.display(), first_sequence = self.next_sequence, "log segment rotated (created on the core)");
        self.switch_to(next, bytes)
    }

    /// Makes `next` the current segment and checks `bytes` fit in it.
    fn switch_to(&mut self, next: Segment, bytes: usize) -> Result<(), LogError> {
        let old = std::mem::replace(&mut self.current, next);
        if self.retired.len() >= MAX_RETIRED {
            self.retired.remove(0);
        }
        self.retired.push(old);
        self.pos = SEGMENT_HEADER_LEN;
        self.files_bytes += self.segment_bytes;
        self.segments_created += 1;
        if self.fits(bytes) {
            Ok(())
        } else {
            Err(LogError::BoundReached { core: self.core, max_log_bytes: self.max_log_bytes })
        }
    }

    /// Appends `event` and returns its sequence.
    ///
    /// # Errors
    /// As [`LogWriter::ensure_room`]; nothing is appended then.
    pub fn append(&mut self, event: &Event) -> Result<u64, LogError> {
        self.append_with(record_len(event), |out, sequence| record::write(out, sequence, event))
    }

    /// Appends the control record `control` (`log::handoff`) and returns
    /// its sequence.
    ///
    /// # Errors
    /// As [`LogWriter::ensure_room`]; nothing is appended then.
    pub fn append_control(&mut self, control: &super::handoff::Control) -> Result<u64, LogError> {
        self.append_with(record::control_record_len(), |out, sequence| record::write_control(out, sequence, control))
    }

    /// Appends `event` as a moved shard's tail event (`log::handoff`) and
    /// returns its sequence.
    ///
    /// # Errors
    /// As [`LogWriter::ensure_room`]; nothing is appended then.
    pub fn append_tail_event(&mut self, event: &Event) -> Result<u64, LogError> {
        self.append_with(record_len(event), |out, sequence| record::write_tail_event(out, sequence, event))
    }

    /// Makes room for a record of `len` bytes and writes it with `write`
    /// (which returns the bytes written, `None` if they do not fit).
    fn append_with(&mut self, len: usize, write: impl FnOnce(&mut [u8], u64) -> Option<usize>) -> Result<u64, LogError> {
        self.ensure_room(len)?;
        let sequence = self.next_sequence;
        let written = self.current.map.get_mut(self.pos..).and_then(|out| write(out, sequence));
        debug_assert_eq!(written, Some(len), "ensure_room made room");
        let Some(written) = written else {
            return Err(LogError::BoundReached { core: self.core, max_log_bytes: self.max_log_bytes });
        };
        self.pos += written;
        self.next_sequence += 1;
        self.record_bytes += written as u64;
        Ok(sequence)
    }

    /// What a flush must do to make every record appended so far durable:
    /// the file to fdatasync, the rename a rotation left (if any), and the
    /// sequence it makes durable. `None` when everything is durable already.
    #[must_use]
    pub fn flush_target(&self) -> Option<FlushPlan> {
        if self.stopped.is_some() {
            return None;
        }
        (self.next_sequence > self.durable || self.pending.is_some()).then(|| FlushPlan {
            file: Arc::clone(&self.current.file),
            target: self.next_sequence,
            rename: self.pending.clone(),
            storage: Arc::clone(&self.storage),
        })
    }

    /// Records that a flush ran `plan`: its rename (if any) is done and
    /// everything below its target is durable. The current segment takes
    /// its segment name if it was the one renamed.
    pub fn flushed(&mut self, plan: &FlushPlan) {
        if let Some(done) = &plan.rename {
            if self.pending.as_ref().is_some_and(|p| p.first_sequence == done.first_sequence) {
                self.pending = None;
            }
            if self.current.header.first_sequence == done.first_sequence {
                self.current.path.clone_from(&done.to);
            } else if let Some(old) = self.retired.iter_mut().find(|s| s.header.first_sequence == done.first_sequence) {
                old.path.clone_from(&done.to);
            }
        }
        self.durable = self.durable.max(plan.target.min(self.next_sequence));
    }

    /// Whether a rotation's rename waits for the next flush.
    #[must_use]
    pub fn rename_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Flushes on the calling thread (rotation's slow path, shutdown, tests).
    ///
    /// # Errors
    /// [`LogError::Io`] if a step of the flush fails.
    pub fn flush_now(&mut self) -> Result<(), LogError> {
        if let Some(reason) = &self.stopped {
            return Err(LogError::Stopped { core: self.core, reason: reason.clone() });
        }
        if let Some(plan) = self.flush_target() {
            plan.run(&self.current.path).map_err(|e| self.stop_on_sync_failure(e))?;
            self.flushed(&plan);
        }
        Ok(())
    }
}

const _: () = assert!(MAX_RECORD_LEN < 4096 - SEGMENT_HEADER_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Shard, ShardConfig};
    use crate::log::{recover, segment, RecoveryConfig};

    #[test]
    fn rotation_uses_the_prepared_segment_asked_for_once_the_current_one_is_an_eighth_full() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecoveryConfig {
            max_log_bytes: 1 << 20,
            ..RecoveryConfig::new(dir.path().to_path_buf(), 1, 4096, crate::log::RealStorage::shared())
        };
        let mut shards = vec![Shard::new(ShardConfig::new(0))];
        let (mut writers, _) = recover(&config, &mut shards).unwrap();
        let w = &mut writers[0];
        assert_eq!(w.wants_prepared(), None, "an empty segment wants nothing yet");
        let upsert = orderd_protocol::UpsertProduct { product: 1, unit_price_cents: 1, stock: 0, payment_window_ms: 0, per_user_limit: 0 };
        w.append(&Event::ProductUpserted { time_ms: 1, upsert, rule: crate::engine::StockRule::Create }).unwrap();
        let event = Event::StockAdjusted { time_ms: 1, product: 1, delta: 1 };
        while w.wants_prepared().is_none() {
            w.append(&event).unwrap();
        }
        let (core_dir, bytes) = w.wants_prepared().unwrap();
        let prepared = segment::prepare(&crate::log::RealStorage, &core_dir, bytes, segment::Prepare::Zero).unwrap();
        w.set_prepared(prepared.clone());
        assert_eq!(w.wants_prepared(), None, "one prepared segment at a time");
        let first = w.current().header.first_sequence;
        while w.current().header.first_sequence == first {
            w.append(&event).unwrap();
        }
        // Rotation did no I/O: the core appends to the prepared file under
        // its prepared name, and the next flush renames it.
        let named = core_dir.join(segment::segment_file_name(w.current().header.first_sequence));
        assert_eq!(w.current().path, prepared);
        assert!(w.rename_pending() && prepared.exists() && !named.exists());
        assert_eq!(w.wants_prepared(), None, "no preparation may reuse the name while the rename is pending");
        let plan = w.flush_target().unwrap();
        assert!(plan.rename.is_some());
        plan.run(&w.current().path).unwrap();
        // The rename is idempotent and never replaces a file: run again
        // (the flusher and a rotation's slow path may race) after a new
        // prepared file took the name, it leaves both files alone.
        std::fs::write(&prepared, b"next").unwrap();
        plan.run(&w.current().path).unwrap();
        assert_eq!(std::fs::read(&prepared).unwrap(), b"next");
        std::fs::remove_file(&prepared).unwrap();
        w.flushed(&plan);
        assert!(!w.rename_pending() && named.exists());
        assert_eq!(w.current().path, named);
        assert_eq!(w.durable(), w.next_sequence());
        // The old segment waits to be dropped off the core, once.
        let retired = w.take_retired();
        assert_eq!(retired.iter().map(|s| s.header.first_sequence).collect::<Vec<_>>(), vec![first]);
        assert!(w.take_retired().is_empty());
        drop(retired);
        // A runtime that never collects them cannot make the writer hold
        // every old mapping: it keeps the newest few.
        for _ in 0..MAX_RETIRED + 2 {
            let before = w.current().header.first_sequence;
            while w.current().header.first_sequence == before {
                w.append(&event).unwrap();
            }
        }
        assert_eq!(w.take_retired().len(), MAX_RETIRED);
        // Everything appended reads back after a restart.
        let appended = w.next_sequence();
        drop(writers);
        let mut shards = vec![Shard::new(ShardConfig::new(0))];
        let (writers, stats) = recover(&config, &mut shards).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((writers[0].next_sequence(), stats.records), (appended, appended));
    }

    /// Found by the simulator (`orderd-sim --seed 23 --requests 1000`): a
    /// directory fsync that failed while rotation created a segment on the
    /// core left the writer appending to the old segment (small records
    /// still fitted), and the next start refused the log (the new file's
    /// first sequence overlapped the old one's records).
    #[test]
    fn a_failed_sync_in_a_rotation_stops_the_writer_for_good() {
        let upsert = orderd_protocol::UpsertProduct { product: 1, unit_price_cents: 1, stock: 0, payment_window_ms: 0, per_user_limit: 0 };
        let event = Event::StockAdjusted { time_ms: 1, product: 1, delta: 1 };
        // No prepared segment: the rotation creates one on the core, and its
        // flush (1), its file's sync (2) or its directory's sync (3) fails.
        for nth in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let disk = std::sync::Arc::new(crate::sim::disk::SimDisk::new(dir.path()).unwrap());
            let config = RecoveryConfig { max_log_bytes: 1 << 20, ..RecoveryConfig::new(dir.path().to_path_buf(), 1, 4096, disk.clone()) };
            let (mut writers, _) = recover(&config, &mut [Shard::new(ShardConfig::new(0))]).unwrap();
            let w = &mut writers[0];
            w.append(&Event::ProductUpserted { time_ms: 1, upsert, rule: crate::engine::StockRule::Create }).unwrap();
            while w.fits(record_len(&event)) {
                w.append(&event).unwrap();
            }
            disk.fail_sync_after(nth);
            let failed = w.ensure_room(record_len(&event)).unwrap_err();
            assert!(matches!(failed, LogError::SyncFailed { .. }), "sync {nth}: {failed}");
            assert!(w.stopped().is_some());
            // Nothing more: no append (not even a small one that would still
            // fit the old segment), no flush.
            assert!(matches!(w.ensure_room(8), Err(LogError::Stopped { .. })));
            assert!(w.append(&event).is_err());
            assert!(w.flush_target().is_none());
            assert!(w.flush_now().is_err());
        }
    }
}
