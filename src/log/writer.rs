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
//! The writer never flushes on its own, except at rotation: the old segment
//! is fdatasync'ed before the new one is created, so every segment but the
//! last is complete on disk (recovery relies on that to tell a torn tail
//! from corruption). Group commit (`runtime::commit`) takes
//! [`LogWriter::flush_target`] and syncs the returned file off the executor.
//!
//! # Prepared segments
//!
//! Creating a segment at rotation means creating, allocating and syncing a
//! file on the core. So the runtime prepares the next segment ahead of need,
//! off the core ([`LogWriter::wants_prepared`],
//! [`segment::prepare`](super::segment::prepare)) and hands it over
//! ([`LogWriter::set_prepared`]); rotation then only renames it and writes
//! its header.
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
use super::segment::{Segment, SEGMENT_HEADER_LEN};
use crate::engine::Event;

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
    /// Old segments, synced, whose mappings wait to be dropped off the core.
    retired: Vec<Segment>,
}

/// Retired segments kept for the runtime at most; past this, rotation drops
/// the oldest itself (a runtime that stopped collecting them must not make
/// the writer hold every segment's mapping).
const MAX_RETIRED: usize = 4;

impl LogWriter {
    /// A writer appending to `current` at file offset `pos`, the next record
    /// being `next_sequence`; `files_bytes` and `record_bytes` describe the
    /// whole log as recovery found it (all of it durable).
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: usize,
        dir: PathBuf,
        segment_bytes: u64,
        max_log_bytes: u64,
        files_bytes: u64,
        record_bytes: u64,
        current: Segment,
        pos: usize,
        next_sequence: u64,
    ) -> LogWriter {
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
            retired: Vec::new(),
        }
    }

    /// Whether a next segment should be prepared now: none is, the current
    /// one is an eighth full (an idle server writes no spare file), and the
    /// size bound allows one more segment. Where, and how big.
    #[must_use]
    pub fn wants_prepared(&self) -> Option<(PathBuf, u64)> {
        let allowed = self.files_bytes.saturating_add(self.segment_bytes) <= self.max_log_bytes;
        let started = self.pos >= self.current.map.len() / 8;
        (self.prepared.is_none() && allowed && started).then(|| (self.dir.clone(), self.segment_bytes))
    }

    /// How full the current segment is, in `1/one`ths (`one` when full).
    #[must_use]
    pub fn fill(&self, one: u64) -> u64 {
        let len = self.current.map.len().max(1) as u128;
        (self.pos as u128 * u128::from(one) / len) as u64
    }

    /// The old segments rotation replaced, to be dropped (unmapped and
    /// closed) off the core. Each is synced and complete on disk.
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
    /// when the disk is full, [`LogError::Io`] for any other failure. The
    /// log is unchanged by a failure.
    pub fn ensure_room(&mut self, bytes: usize) -> Result<(), LogError> {
        if self.fits(bytes) {
            return Ok(());
        }
        if self.files_bytes.saturating_add(self.segment_bytes) > self.max_log_bytes {
            return Err(LogError::BoundReached { core: self.core, max_log_bytes: self.max_log_bytes });
        }
        // Every segment but the last is complete on disk (see module docs).
        self.flush_now()?;
        let next = match self.prepared.take() {
            Some(prepared) => Segment::create_from_prepared(&prepared, &self.dir, self.core as u32, self.next_sequence, self.segment_bytes)
                .or_else(|e| {
                    tracing::warn!(core = self.core, error = %e, "cannot use the prepared segment; creating one in place");
                    Segment::create(&self.dir, self.core as u32, self.next_sequence, self.segment_bytes)
                })?,
            None => Segment::create(&self.dir, self.core as u32, self.next_sequence, self.segment_bytes)?,
        };
        tracing::info!(core = self.core, segment = %next.path.display(), first_sequence = self.next_sequence, "log segment rotated");
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
        let len = record_len(event);
        self.ensure_room(len)?;
        let sequence = self.next_sequence;
        let written = self.current.map.get_mut(self.pos..).and_then(|out| record::write(out, sequence, event));
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
    /// the file to fdatasync and the sequence it makes durable. `None` when
    /// everything is durable already.
    #[must_use]
    pub fn flush_target(&self) -> Option<(Arc<File>, u64)> {
        (self.next_sequence > self.durable).then(|| (Arc::clone(&self.current.file), self.next_sequence))
    }

    /// Records that a flush made everything below `sequence` durable.
    pub fn mark_durable(&mut self, sequence: u64) {
        self.durable = self.durable.max(sequence.min(self.next_sequence));
    }

    /// Flushes on the calling thread (rotation, shutdown, tests).
    ///
    /// # Errors
    /// [`LogError::Io`] if fdatasync fails.
    pub fn flush_now(&mut self) -> Result<(), LogError> {
        if let Some((file, target)) = self.flush_target() {
            file.sync_data().map_err(|source| LogError::Io { op: "fdatasync", path: self.current.path.clone(), source })?;
            self.mark_durable(target);
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
            data_dir: dir.path().to_path_buf(),
            cores: 1,
            segment_bytes: 4096,
            max_log_bytes: 1 << 20,
            truncate_corrupt: false,
            first_segment: segment::Prepare::Allocate,
        };
        let mut shards = vec![Shard::new(ShardConfig::new(0))];
        let (mut writers, _) = recover(&config, &mut shards).unwrap();
        let w = &mut writers[0];
        assert_eq!(w.wants_prepared(), None, "an empty segment wants nothing yet");
        let upsert = orderd_protocol::UpsertProduct { product: 1, unit_price_cents: 1, stock: 0, payment_window_ms: 0, per_user_limit: 0 };
        w.append(&Event::ProductUpserted { time_ms: 1, upsert }).unwrap();
        let event = Event::StockAdjusted { time_ms: 1, product: 1, delta: 1 };
        while w.wants_prepared().is_none() {
            w.append(&event).unwrap();
        }
        let (core_dir, bytes) = w.wants_prepared().unwrap();
        let prepared = segment::prepare(&core_dir, bytes, segment::Prepare::Zero).unwrap();
        w.set_prepared(prepared.clone());
        assert_eq!(w.wants_prepared(), None, "one prepared segment at a time");
        let first = w.current().header.first_sequence;
        while w.current().header.first_sequence == first {
            w.append(&event).unwrap();
        }
        assert!(!prepared.exists(), "the prepared file became the new segment");
        assert_eq!(w.current().path, core_dir.join(segment::segment_file_name(w.current().header.first_sequence)));
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
}
