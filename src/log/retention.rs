//! Retention: which of a core's oldest segments may be deleted, and
//! deleting them.
//!
//! A segment may go only when recovery can never need it: every record in
//! it is below the *recovery floor*, the sequence of the oldest checkpoint
//! kept ([`checkpoint::KEEP`]; recovery falls back to it when the newest is
//! damaged). Until two checkpoints exist nothing goes, so recovery can
//! still fall back to the whole log, with one exception: a log over its
//! retention bytes with a single checkpoint (it filled up before a second
//! one; with the log full no record comes and no second checkpoint would
//! ever be taken, so the server would answer `log_full` for ever) uses that
//! checkpoint as the floor once it has been read back whole, and says so.
//! The current segment never goes.
//!
//! Below the floor the log is the order stream's history, kept by policy
//! ([`Retention`]): the oldest segments go while the core's segment files
//! exceed `max_bytes` (so the `--max-log-bytes` bound never stops a server
//! whose checkpoints keep up), and any whose records are all older than
//! `max_age`. A segment's age is that of the first record after it (the
//! first of the next segment). Deleting moves the stream's oldest position
//! forward: a subscription asking for less is refused with
//! `position_unavailable` naming the new oldest, and a cursor whose next
//! segment is gone gets the same answer instead of a read of a missing
//! file.
//!
//! Oldest segments are deleted first and the directory is synced once: a
//! crash before the sync may bring some back (they are still valid, older
//! segments), never leave a hole.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checkpoint;
use super::error::LogError;
use super::record::{read_at, Slot, MAX_RECORD_LEN};
use super::segment::{parse_segment_file_name, sync_dir, SEGMENT_HEADER_LEN};
use super::storage::SharedStorage;

/// How much of the log below the recovery floor is kept for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Segments go while the core's segment files exceed this.
    pub max_bytes: u64,
    /// Segments whose records are all older than this go.
    pub max_age: Duration,
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its first record's sequence.
    pub first: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Segment files deleted.
    pub segments: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The oldest sequence the log holds afterwards.
    pub oldest: u64,
}

/// How many of `segments` (oldest first) to delete: see the module docs.
/// `end_ms(i)` is the time of the first record after segment `i` (`None`:
/// unknown, so not old).
#[must_use]
pub fn choose(segments: &[SegmentFile], floor: u64, retention: Retention, now_ms: u64, end_ms: impl Fn(usize) -> Option<u64>) -> usize {
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let max_age_ms = u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX);
    let mut count = 0;
    for (i, pair) in segments.windows(2).enumerate() {
        if pair[1].first > floor {
            break; // segment i holds records at or above the floor
        }
        let old = end_ms(i).is_some_and(|end| now_ms.saturating_sub(end) > max_age_ms);
        if total <= retention.max_bytes && !old {
            break;
        }
        total -= pair[0].bytes;
        count += 1;
    }
    count
}

/// The recovery floor of the core whose log is `dir`: the oldest kept
/// checkpoint's sequence once [`checkpoint::KEEP`] exist.
///
/// # Errors
/// The directory cannot be read.
pub fn recovery_floor(dir: &Path) -> Result<Option<u64>, LogError> {
    let kept = checkpoint::list(dir)?;
    Ok((kept.len() >= checkpoint::KEEP).then(|| kept[0].0))
}

/// The sequence of the only checkpoint of `dir`, if there is exactly one
/// and it reads back whole (every CRC): the floor of a log that filled up
/// before a second checkpoint (module docs).
fn only_checkpoint_verified(dir: &Path) -> Result<Option<u64>, LogError> {
    let kept = checkpoint::list(dir)?;
    let [(sequence, path)] = kept.as_slice() else { return Ok(None) };
    match checkpoint::load(path) {
        Ok(_) => {
            tracing::warn!(
                checkpoint = %path.display(),
                sequence,
                "the log is over its retention bytes with one checkpoint: deleting the segments below it (it reads back \
                 whole; recovery can no longer fall back to the whole log until the next checkpoint)"
            );
            Ok(Some(*sequence))
        }
        Err(reason) => {
            tracing::error!(checkpoint = %path.display(), %reason, "the only checkpoint does not read back: retention keeps the whole log");
            Ok(None)
        }
    }
}

/// The segment files of `dir`, oldest first, with their sizes.
///
/// # Errors
/// The directory or a file's metadata cannot be read.
pub fn segment_files(dir: &Path) -> Result<Vec<SegmentFile>, LogError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| LogError::Io { op, path, source }
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("read directory", dir))? {
        let entry = entry.map_err(io("read directory", dir))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            let path = entry.path();
            let bytes = entry.metadata().map_err(io("stat", &path))?.len();
            found.push(SegmentFile { first, path, bytes });
        }
    }
    found.sort_unstable_by_key(|s| s.first);
    Ok(found)
}

/// The engine time of the first record of the segment at `path`, if it
/// reads and verifies.
#[must_use]
pub fn first_record_ms(path: &Path) -> Option<u64> {
    let mut head = Vec::with_capacity(SEGMENT_HEADER_LEN + MAX_RECORD_LEN);
    std::fs::File::open(path).ok()?.take((SEGMENT_HEADER_LEN + MAX_RECORD_LEN) as u64).read_to_end(&mut head).ok()?;
    match read_at(&head, SEGMENT_HEADER_LEN) {
        // A control record's body starts with its time, as an event's does.
        Slot::Record(r) if super::handoff::is_control(r.kind) => Some(super::record::le_u64(r.payload, 0)),
        Slot::Record(r) => r.event().ok().map(|e| e.time_ms()),
        _ => None,
    }
}

/// What retention will delete of one core's log: the segments [`choose`]
/// allows, oldest first. [`enforce`] runs it whole; the simulator runs it
/// in steps ([`Plan::remove`], then [`Plan::finish`]) so that a crash lands
/// between a removal and the directory sync that makes it durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The core's log directory.
    pub dir: PathBuf,
    /// The segments to delete, oldest first.
    pub doomed: Vec<SegmentFile>,
    /// The first sequence of the segment after the last doomed one: the
    /// log's oldest once they are gone.
    pub oldest_after: u64,
    /// The recovery floor the plan respects.
    pub floor: u64,
    /// What [`Plan::remove`] deleted so far.
    pub removed: Removed,
}

impl Plan {
    /// What retention may delete of the log in `dir` now (nothing until a
    /// recovery floor exists: module docs).
    ///
    /// # Errors
    /// The directory or a checkpoint cannot be read.
    pub fn new(dir: &Path, retention: Retention, now_ms: u64) -> Result<Plan, LogError> {
        let segments = segment_files(dir)?;
        let oldest = segments.first().map_or(0, |s| s.first);
        let nothing = |floor| Plan {
            dir: dir.to_path_buf(),
            doomed: Vec::new(),
            oldest_after: oldest,
            floor,
            removed: Removed { oldest, ..Removed::default() },
        };
        let over_bytes = segments.iter().map(|s| s.bytes).sum::<u64>() > retention.max_bytes;
        let floor = match recovery_floor(dir)? {
            Some(floor) => floor,
            None if over_bytes => match only_checkpoint_verified(dir)? {
                Some(floor) => floor,
                None => return Ok(nothing(0)),
            },
            None => return Ok(nothing(0)),
        };
        let count = choose(&segments, floor, retention, now_ms, |i| segments.get(i + 1).and_then(|s| first_record_ms(&s.path)));
        let oldest_after = segments.get(count).map_or(oldest, |s| s.first);
        let mut plan = nothing(floor);
        plan.doomed = segments[..count].to_vec();
        plan.oldest_after = oldest_after;
        Ok(plan)
    }

    /// Deletes up to `n` more of the doomed segments, oldest first (not
    /// durable until [`Plan::finish`]: a crash may bring them back, whole
    /// and valid, never leave a hole). Returns how many it deleted.
    ///
    /// # Errors
    /// A file cannot be removed (the ones before it are gone).
    pub fn remove(&mut self, n: usize) -> Result<usize, LogError> {
        let from = self.removed.segments as usize;
        let to = from.saturating_add(n).min(self.doomed.len());
        for i in from..to {
            let segment = &self.doomed[i];
            std::fs::remove_file(&segment.path).map_err(|source| LogError::Io { op: "remove", path: segment.path.clone(), source })?;
            self.removed.segments += 1;
            self.removed.bytes += segment.bytes;
            self.removed.oldest = self.doomed.get(i + 1).map_or(self.oldest_after, |next| next.first);
        }
        Ok(to - from)
    }

    /// Whether every doomed segment is deleted.
    #[must_use]
    pub fn all_removed(&self) -> bool {
        self.removed.segments as usize == self.doomed.len()
    }

    /// Syncs the directory once, making the deletions durable, and says
    /// what went (the caller tells the log writer: [`super::LogWriter::removed`]).
    ///
    /// # Errors
    /// The directory cannot be synced.
    pub fn finish(self, storage: &SharedStorage) -> Result<Removed, LogError> {
        if self.removed.segments > 0 {
            sync_dir(&**storage, &self.dir)?;
            tracing::info!(
                dir = %self.dir.display(),
                segments = self.removed.segments,
                bytes = self.removed.bytes,
                oldest = self.removed.oldest,
                floor = self.floor,
                "log retention: removed the oldest segments (the stream's history now starts at `oldest`)"
            );
        }
        Ok(self.removed)
    }
}

/// Deletes what [`choose`] allows of the log in `dir` and syncs the
/// directory once (blocking I/O: run it off the core).
///
/// # Errors
/// A file cannot be listed or removed, or the directory synced.
pub fn enforce(dir: &Path, storage: &SharedStorage, retention: Retention, now_ms: u64) -> Result<Removed, LogError> {
    let mut plan = Plan::new(dir, retention, now_ms)?;
    plan.remove(usize::MAX)?;
    plan.finish(storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(firsts: &[u64]) -> Vec<SegmentFile> {
        firsts.iter().map(|&first| SegmentFile { first, path: PathBuf::from(format!("s{first}")), bytes: 100 }).collect()
    }

    const KEEP_ALL: Retention = Retention { max_bytes: u64::MAX, max_age: Duration::from_secs(3600) };

    #[test]
    fn only_segments_wholly_below_the_floor_go_and_never_the_last() {
        let s = segments(&[0, 10, 20, 30]);
        let tight = Retention { max_bytes: 0, max_age: Duration::ZERO };
        // Floor 20: segments 0 (0..10) and 1 (10..20) are below it.
        assert_eq!(choose(&s, 20, tight, 0, |_| None), 2);
        // Floor 19: segment 1 holds record 19.
        assert_eq!(choose(&s, 19, tight, 0, |_| None), 1);
        // Floor past the end: the last segment stays.
        assert_eq!(choose(&s, 1000, tight, 0, |_| None), 3);
        assert_eq!(choose(&s, 0, tight, 0, |_| None), 0);
    }

    #[test]
    fn below_the_floor_segments_go_while_the_log_is_over_its_bytes_or_for_age() {
        let s = segments(&[0, 10, 20, 30]);
        let bytes = Retention { max_bytes: 250, max_age: Duration::from_secs(3600) };
        assert_eq!(choose(&s, 30, bytes, 0, |_| None), 2, "400 bytes down to 200");
        assert_eq!(choose(&s, 30, KEEP_ALL, 0, |_| None), 0, "young and within bytes: kept");
        // Segment 0 ends at 1000 ms, segment 1 at 5,000,000 ms; now is 4,000,000.
        let end = |i: usize| Some(if i == 0 { 1000 } else { 5_000_000 });
        assert_eq!(choose(&s, 30, KEEP_ALL, 4_000_000, end), 1, "only the one older than an hour");
    }
}
