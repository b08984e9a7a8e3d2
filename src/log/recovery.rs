//! Recovery at start: scan every core's segments in order (the cores in
//! parallel, a thread each), verify every record, replay the events into
//! their shards (a few records ahead warmed first), truncate a torn tail,
//! and hand back one [`LogWriter`] per core positioned after the last
//! record.
//!
//! # What is a torn tail
//!
//! A record that does not verify (bad length, CRC mismatch, runs past the
//! end) or non-zero bytes after the last record are a *torn tail* when they
//! are in the last segment and no verified record follows them anywhere in
//! that segment: the crash interrupted the latest appends, none of which was
//! acknowledged in `sync` mode (the reply waits for the flush). The bytes
//! from there on are zeroed and synced, with a warning naming the file and
//! offset. Anything else is corruption and stops the start
//! ([`RecoveryError::Corrupt`]) unless the operator asked for
//! `--truncate-corrupt-log`: a bad record followed by a verified one, or a
//! bad record in a segment that is not the last (every segment but the last
//! was synced before the next was created, see `writer.rs`). A flipped bit in
//! the very last record looks exactly like a torn write and is truncated: no
//! format can tell them apart without a second copy.
//!
//! # Routing
//!
//! Order events go to `shard_of_order(order_id)`, product events to
//! `shard_of_product(product, shards)`; the shard must belong to the core
//! whose log holds the event. Replay uses `Shard::apply_event`, the same
//! function that applied the event live, so clocks and order sequences
//! continue exactly where they were (new order ids never collide).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{self, CheckpointHeader};
use super::error::{LogError, RecoveryError};
use super::manifest::{self, Layout};

use super::record::RECORD_ALIGN;
use super::scan::{self, scan, zero_from, CoreShards, ScanEnd};
use super::segment::{
    core_dir, parse_segment_file_name, prepare, rename_no_replace, segment_file_name, sync_dir, Prepare, Segment, SegmentHeader,
    PREPARED_FILE_NAME, SEGMENT_HEADER_LEN,
};
use super::storage::SharedStorage;
use super::writer::{LogSettings, LogTail, LogWriter};
use crate::engine::archive::OrderArchive;
use crate::engine::Shard;

/// What recovery needs to know.
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// The data directory (locked by the caller).
    pub data_dir: PathBuf,
    /// Cores, one log each.
    pub cores: usize,
    /// Size of new segments.
    pub segment_bytes: u64,
    /// Bound on each core's segment files.
    pub max_log_bytes: u64,
    /// Truncate at the first bad record even when it is not a torn tail
    /// (operator's choice after corruption: later records are lost).
    pub truncate_corrupt: bool,
    /// The CPU each core's executor runs on (index: core). Each core's
    /// replay thread runs there, so the shard memory it builds is first
    /// touched on that CPU's NUMA node. Empty: not pinned.
    pub cpus: Vec<usize>,
    /// How often a line reports the replay's progress while it runs (a
    /// large log takes minutes); `None`: no progress lines.
    pub progress_every: Option<Duration>,
    /// Also handed each progress line (the server tells systemd).
    pub on_progress: Option<fn(&str)>,
    /// How the first segment of a core that has none is made:
    /// [`Prepare::Zero`] writes its zeros before the server starts (~50 ms
    /// for 64 MiB here), so the first segment's flushes are as cheap as
    /// later ones'.
    pub first_segment: Prepare,
    /// Where the log's syncs go: [`RealStorage`](super::RealStorage), or the
    /// simulator's disk.
    pub storage: SharedStorage,
}

impl RecoveryConfig {
    /// The configuration of `cores` logs in `data_dir` with segments of
    /// `segment_bytes` through `storage`, and the defaults of everything
    /// else: a bound of 1 TiB per core, no truncation of corrupt records, no
    /// CPU pinning, no progress lines, first segments allocated (not zeroed).
    #[must_use]
    pub fn new(data_dir: PathBuf, cores: usize, segment_bytes: u64, storage: SharedStorage) -> RecoveryConfig {
        RecoveryConfig {
            data_dir,
            cores,
            segment_bytes,
            max_log_bytes: 1 << 40,
            truncate_corrupt: false,
            cpus: Vec::new(),
            progress_every: None,
            on_progress: None,
            first_segment: Prepare::Allocate,
            storage,
        }
    }
}

/// What recovery did, for the startup log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Records replayed.
    pub records: u64,
    /// Segments read.
    pub segments: u64,
    /// Torn tails truncated.
    pub torn_tails: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Whether the data directory had a manifest already.
    pub manifest_existed: bool,
    /// The sequence of the checkpoint recovery started from (the lowest
    /// over the cores), `None` when it replayed from the first record.
    pub checkpoint_sequence: Option<u64>,
    /// `(shard, move, sequence)` of each `ShardInstalled` record replayed
    /// or read past (those before the newest checkpoint's start are
    /// not read: that checkpoint holds their shards).
    pub installs: Vec<Installed>,
}

/// A shard installed from a bundle: its shard, its move, and the log
/// sequence of its `ShardInstalled` record (`runtime::checkpoints` removes
/// the bundle once every kept checkpoint starts after it).
pub type Installed = (u16, u64, u64);

/// Recovers every core's log into `shards` (indexed by shard id, fresh),
/// creating the first segment of a core that has none.
///
/// The cores' logs are replayed in parallel, a thread each: a core's log
/// holds events of its own shards only (shard `s` on core `s % cores`, which
/// replay checks), so the threads write to disjoint shards. Each core's
/// recovery decides alone (a torn tail truncated on one core does not wait
/// for the others); when several fail, the error of the lowest core is
/// returned.
///
/// # Errors
/// See [`RecoveryError`]: every error names the file and offset.
pub fn recover(config: &RecoveryConfig, shards: &mut [Shard]) -> Result<(Vec<LogWriter>, RecoveryStats), RecoveryError> {
    let started = Instant::now();
    let count = u32::try_from(shards.len()).map_err(|_| RecoveryError::Inconsistent {
        path: config.data_dir.clone(),
        offset: 0,
        reason: format!("{} shards is more than a log can name", shards.len()),
    })?;
    let manifest_existed = manifest::check_or_write(&*config.storage, &config.data_dir, Layout { cores: config.cores, shards: count })?;
    let prepared = prepare_first_segments(config)?;
    let cores = config.cores.max(1);
    let mut owned: Vec<Vec<&mut Shard>> = (0..cores).map(|_| Vec::new()).collect();
    for (s, shard) in shards.iter_mut().enumerate() {
        owned[s % cores].push(shard);
    }
    let progress = Progress::default();
    let results: Vec<Result<(LogWriter, RecoveryStats), RecoveryError>> = std::thread::scope(|scope| {
        // Each thread holds a sender until it ends (or unwinds): the channel
        // disconnects when every core is done.
        let (running, all_done) = mpsc::channel::<()>();
        let progress = &progress;
        let threads: Vec<_> = owned
            .into_iter()
            .zip(prepared)
            .enumerate()
            .map(|(core, (mine, first_prepared))| {
                let running = running.clone();
                let recover_one = move || {
                    let _running = running;
                    if let Some(&cpu) = config.cpus.get(core) {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                            tracing::debug!(core, cpu, "cannot pin the recovery thread; replaying unpinned");
                        }
                    }
                    let mut stats = RecoveryStats { manifest_existed, ..RecoveryStats::default() };
                    let from = vec![0; mine.len()];
                    let archives = open_archives(config, &mine)?;
                    let (data_dir, storage) = (config.data_dir.clone(), config.storage.clone());
                    let installs = Vec::new();
                    let mut view = CoreShards { core, cores, count, shards: mine, from, archives, data_dir, storage, installs };
                    reset(&mut view)?;
                    let writer = recover_core(config, first_prepared, &mut view, &mut stats, progress)?;
                    stats.installs = std::mem::take(&mut view.installs);
                    Ok((writer, stats))
                };
                (core, std::thread::Builder::new().name(format!("orderd-recover-{core}")).spawn_scoped(scope, recover_one))
            })
            .collect();
        drop(running);
        if let Some(every) = config.progress_every {
            while let Err(mpsc::RecvTimeoutError::Timeout) = all_done.recv_timeout(every.max(Duration::from_millis(1))) {
                let line = progress.report(started.elapsed());
                if let Some(hand) = config.on_progress {
                    hand(&line);
                }
            }
        }
        threads
            .into_iter()
            .map(|(core, thread)| {
                let failed = |what: &str| LogError::Io {
                    op: "recover",
                    path: core_dir(&config.data_dir, core),
                    source: std::io::Error::other(what.to_owned()),
                };
                match thread {
                    Ok(handle) => handle.join().unwrap_or_else(|_| Err(failed("the recovery thread panicked").into())),
                    Err(e) => Err(failed(&format!("cannot start a recovery thread: {e}")).into()),
                }
            })
            .collect()
    });
    let mut stats = RecoveryStats { manifest_existed, ..RecoveryStats::default() };
    let mut writers = Vec::with_capacity(cores);
    for result in results {
        let (writer, core_stats) = result?;
        stats.records += core_stats.records;
        stats.installs.extend_from_slice(&core_stats.installs);
        stats.segments += core_stats.segments;
        stats.torn_tails += core_stats.torn_tails;
        stats.bytes += core_stats.bytes;
        stats.checkpoint_sequence = match (stats.checkpoint_sequence, core_stats.checkpoint_sequence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        writers.push(writer);
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        cores,
        records = stats.records,
        segments = stats.segments,
        torn_tails = stats.torn_tails,
        bytes = stats.bytes,
        ms = format_args!("{:.1}", seconds * 1e3),
        records_per_s = format_args!("{:.0}", stats.records as f64 / seconds.max(1e-9)),
        "log recovered"
    );
    Ok((writers, stats))
}

/// The replay's progress, all cores together, for the lines a long
/// recovery prints while it runs.
#[derive(Default)]
struct Progress {
    segments: AtomicU64,
    segments_done: AtomicU64,
    records: AtomicU64,
}

impl Progress {
    /// Log the progress so far; returns it as one line of text.
    fn report(&self, elapsed: Duration) -> String {
        let (total, done) = (self.segments.load(Ordering::Relaxed), self.segments_done.load(Ordering::Relaxed));
        let records = self.records.load(Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        // Segments are the same size but for the last of each core: a fair
        // measure of the work left.
        let left = match done {
            0 => "?".to_string(),
            _ => format!("{:.0}", seconds * total.saturating_sub(done) as f64 / done as f64),
        };
        tracing::info!(
            segments = format_args!("{done}/{total}"),
            records,
            records_per_s = format_args!("{:.0}", records as f64 / seconds.max(1e-9)),
            elapsed_s = format_args!("{seconds:.0}"),
            left_s = %left,
            "replaying the log (the server listens once every core's log is replayed)"
        );
        format!("replaying the log: {done}/{total} segments, {records} records in {seconds:.0} s, {left} s left")
    }
}

/// The segment files of a core's directory, by first sequence.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let io = |source| LogError::Io { op: "read directory", path: dir.to_path_buf(), source };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_file_name) {
            Some(first) => found.push((first, entry.path())),
            // The prepared next segment is dealt with on its own.
            None if name == PREPARED_FILE_NAME => {}
            // Checkpoints live beside the segments (`log::checkpoint`).
            None if name == super::checkpoint::TMP_FILE_NAME
                || name.to_str().and_then(super::checkpoint::parse_checkpoint_file_name).is_some() => {}
            None => tracing::warn!(file = %entry.path().display(), "not a log segment; ignored"),
        }
    }
    found.sort_unstable_by_key(|(first, _)| *first);
    Ok(found)
}

/// Prepares, in parallel, the first segment of every core whose log has no
/// segment yet (with [`Prepare::Zero`]: tens of ms each). Returns each
/// core's prepared file, if any.
fn prepare_first_segments(config: &RecoveryConfig) -> Result<Vec<Option<PathBuf>>, LogError> {
    let mut prepared = vec![None; config.cores];
    if config.first_segment == Prepare::Allocate {
        return Ok(prepared);
    }
    let mut fresh = Vec::new();
    for core in 0..config.cores {
        let dir = core_dir(&config.data_dir, core);
        std::fs::create_dir_all(&dir).map_err(|source| LogError::Io { op: "create directory", path: dir.clone(), source })?;
        if list_segments(&dir)?.is_empty() {
            fresh.push((core, dir));
        }
    }
    for group in fresh.chunks(PREPARE_IN_PARALLEL) {
        let made: Vec<(usize, Result<PathBuf, LogError>)> = std::thread::scope(|scope| {
            let threads: Vec<_> = group
                .iter()
                .map(|(core, dir)| (*core, scope.spawn(move || prepare(&*config.storage, dir, config.segment_bytes, config.first_segment))))
                .collect();
            threads
                .into_iter()
                .map(|(core, thread)| {
                    let result = thread.join().unwrap_or_else(|_| {
                        Err(LogError::Io {
                            op: "prepare",
                            path: core_dir(&config.data_dir, core),
                            source: std::io::Error::other("the preparing thread panicked"),
                        })
                    });
                    (core, result)
                })
                .collect()
        });
        for (core, result) in made {
            prepared[core] = Some(result?);
        }
    }
    Ok(prepared)
}

/// First segments prepared at once at most (each a thread writing zeros).
const PREPARE_IN_PARALLEL: usize = 16;

fn recover_core(
    config: &RecoveryConfig,
    first_prepared: Option<PathBuf>,
    shards: &mut CoreShards<'_>,
    stats: &mut RecoveryStats,
    progress: &Progress,
) -> Result<LogWriter, RecoveryError> {
    let core = shards.core;
    let dir = core_dir(&config.data_dir, core);
    std::fs::create_dir_all(&dir).map_err(|source| LogError::Io { op: "create directory", path: dir.clone(), source })?;
    checkpoint::remove_tmp(&dir)?;
    let mut segments = list_segments(&dir)?;
    // A crash during rotation can leave the newest segment without its
    // header (created, not yet written and synced). No record was ever
    // appended to it, so it is removed and the one before stays the last.
    if let Some((_, path)) = segments.last() {
        if unfinished_segment(path)? {
            tracing::warn!(file = %path.display(), "removing a segment whose creation a crash interrupted (no header, no records)");
            std::fs::remove_file(path).map_err(|source| LogError::Io { op: "remove", path: path.clone(), source })?;
            sync_dir(&*config.storage, &dir)?;
            segments.pop();
        }
    }
    let mut checkpoints = checkpoint::list(&dir)?;
    if segments.is_empty() {
        if let Some((_, path)) = checkpoints.last() {
            return Err(RecoveryError::Inconsistent {
                path: path.clone(),
                offset: 0,
                reason: "a checkpoint exists but the log has no segment to continue it".into(),
            });
        }
        if stats.manifest_existed {
            tracing::warn!(dir = %dir.display(), "this core's log has no segment although the data directory was written before; starting it empty (restore it if it was removed by mistake)");
        }
        // A prepared file with no segment before it holds zeros only (a
        // rotation into it needs a segment to rotate from): not kept, but
        // for one prepared just now for this new log.
        if first_prepared.is_none() {
            remove_prepared(&dir)?;
        }
        sync_dir(&*config.storage, &config.data_dir)?;
        let segment = match first_prepared {
            Some(prepared) => Segment::create_from_prepared(&*config.storage, &prepared, &dir, core as u32, 0, config.segment_bytes)?,
            None => Segment::create(&*config.storage, &dir, core as u32, 0, config.segment_bytes)?,
        };
        let settings = log_settings(config, core, &dir);
        return Ok(LogWriter::new(
            settings,
            LogTail {
                current: segment,
                pos: SEGMENT_HEADER_LEN,
                next_sequence: 0,
                files_bytes: config.segment_bytes,
                record_bytes: 0,
                oldest_sequence: 0,
            },
        ));
    }
    // The newest usable checkpoint, falling back to older ones, then to
    // the whole log.
    let tried = checkpoints.len();
    while let Some((_, path)) = checkpoints.pop() {
        let header = match restore_checkpoint(&path, shards) {
            Ok(header) => header,
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "checkpoint unusable; falling back to the one before (or the whole log)");
                reset(shards)?;
                continue;
            }
        };
        let from = Start { sequence: header.sequence, record_bytes: header.record_bytes, log_must_reach: header.end_sequence };
        match replay_segments(config, &dir, &mut segments, from, shards, stats, progress)? {
            Replayed::Writer(writer) => {
                stats.checkpoint_sequence = Some(header.sequence);
                tracing::info!(core, file = %path.display(), sequence = header.sequence, "recovered from a checkpoint and the log after it");
                return Ok(*writer);
            }
            Replayed::EndsBefore { end } => {
                tracing::warn!(
                    file = %path.display(),
                    log_ends_at = end,
                    checkpoint_needs = header.end_sequence,
                    "the log ends before this checkpoint (it was truncated): falling back to the one before (or the whole log)"
                );
                reset(shards)?;
            }
        }
    }
    if tried > 0 {
        tracing::warn!(core, "no usable checkpoint: replaying the whole log");
    }
    let from = Start { sequence: 0, record_bytes: 0, log_must_reach: 0 };
    match replay_segments(config, &dir, &mut segments, from, shards, stats, progress)? {
        Replayed::Writer(writer) => Ok(*writer),
        Replayed::EndsBefore { end } => {
            Err(RecoveryError::Inconsistent { path: dir, offset: 0, reason: format!("the log ends at record {end} before it starts") })
        }
    }
}

fn log_settings(config: &RecoveryConfig, core: usize, dir: &Path) -> LogSettings {
    LogSettings {
        core,
        dir: dir.to_path_buf(),
        segment_bytes: config.segment_bytes,
        max_log_bytes: config.max_log_bytes,
        storage: Arc::clone(&config.storage),
    }
}

/// Sets every shard of `shards` back to empty, replaying from the start,
/// with its archive attached (nothing in it is read: an empty shard has
/// archived nothing).
fn reset(shards: &mut CoreShards<'_>) -> Result<(), LogError> {
    for (shard, archive) in shards.shards.iter_mut().zip(&shards.archives) {
        **shard = Shard::new(*shard.config());
        shard.attach_archive(Arc::clone(archive))?;
    }
    shards.from.fill(0);
    Ok(())
}

/// The directory of every shard's order archive.
#[must_use]
pub fn archive_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("archive")
}

/// Opens (creating if missing) the archive of each of `shards`.
fn open_archives(config: &RecoveryConfig, shards: &[&mut Shard]) -> Result<Vec<Arc<OrderArchive>>, RecoveryError> {
    let dir = archive_dir(&config.data_dir);
    let opened: Result<Vec<_>, _> =
        shards.iter().map(|s| OrderArchive::open(&dir, s.config().shard_id, &*config.storage).map(Arc::new)).collect();
    Ok(opened.map_err(LogError::from)?)
}

/// Loads the checkpoint at `path` into `shards`, each from its image, and
/// sets where each shard's replay starts. On an error some shards may be
/// set already: the caller resets them.
fn restore_checkpoint(path: &Path, shards: &mut CoreShards<'_>) -> Result<CheckpointHeader, String> {
    let started = Instant::now();
    let decoded = checkpoint::load(path)?;
    let read = started.elapsed();
    let h = decoded.header;
    let orders: usize = decoded.shards.iter().map(|e| e.image.orders.len()).sum();
    if h.core as usize != shards.core || h.cores as usize != shards.cores || h.shard_count != shards.count {
        return Err(format!(
            "it is of core {} of {} with {} shards, not core {} of {} with {}",
            h.core, h.cores, h.shard_count, shards.core, shards.cores, shards.count
        ));
    }
    if decoded.shards.len() != shards.shards.len() {
        return Err(format!("it holds {} shards; this core owns {}", decoded.shards.len(), shards.shards.len()));
    }
    for (local, entry) in decoded.shards.into_iter().enumerate() {
        let config = *shards.shards[local].config();
        if entry.sequence < h.sequence || entry.sequence > h.end_sequence {
            return Err(format!("shard {} starts at {}, outside {}..={}", config.shard_id, entry.sequence, h.sequence, h.end_sequence));
        }
        let mut shard = Shard::from_image(config, entry.image).map_err(|e| format!("shard {}: {e}", config.shard_id))?;
        let archive = Arc::clone(&shards.archives[local]);
        shard.attach_archive(archive).map_err(|e| format!("shard {}: {e}", config.shard_id))?;
        *shards.shards[local] = shard;
        shards.from[local] = entry.sequence;
    }
    tracing::info!(
        core = shards.core,
        file = %path.display(),
        orders,
        read_ms = read.as_millis() as u64,
        rebuild_ms = (started.elapsed() - read).as_millis() as u64,
        "checkpoint loaded"
    );
    Ok(h)
}

/// Where a replay starts.
struct Start {
    /// The first record replayed (every shard's checkpoint holds those
    /// before it).
    sequence: u64,
    /// Bytes of the records before it.
    record_bytes: u64,
    /// The log must hold every record below this one.
    log_must_reach: u64,
}

enum Replayed {
    Writer(Box<LogWriter>),
    /// The log ends at `end`, before [`Start::log_must_reach`].
    EndsBefore {
        end: u64,
    },
}

/// Replays the segments from the one holding `start.sequence` on: verifies
/// every record, truncates a torn tail, adopts a prepared segment, and
/// hands back the writer positioned after the last record.
fn replay_segments(
    config: &RecoveryConfig,
    dir: &Path,
    segments: &mut Vec<(u64, PathBuf)>,
    start: Start,
    shards: &mut CoreShards<'_>,
    stats: &mut RecoveryStats,
    progress: &Progress,
) -> Result<Replayed, RecoveryError> {
    let core = shards.core;
    // The last segment whose first record is at or before the start.
    let mut index = segments.iter().rposition(|(first, _)| *first <= start.sequence).unwrap_or(0);
    let mut files_bytes = 0u64;
    for (_, path) in &segments[..index] {
        files_bytes += std::fs::metadata(path).map_err(|source| LogError::Io { op: "stat", path: path.clone(), source })?.len();
    }
    progress.segments.fetch_add((segments.len() - index) as u64, Ordering::Relaxed);
    let mut expected = segments[index].0;
    if expected > start.sequence {
        return Err(RecoveryError::Inconsistent {
            path: segments[index].1.clone(),
            offset: 0,
            reason: format!(
                "the log starts at record {expected} (retention deleted the records before it), after record {} where the replay \
                 must start: no usable checkpoint covers the deleted records; restore the checkpoints from a backup",
                start.sequence
            ),
        });
    }
    let mut record_bytes = start.record_bytes;
    let oldest_sequence = segments.first().map_or(0, |(first, _)| *first);
    let settings = log_settings(config, core, dir);
    let finish = |current, pos, next_sequence: u64, files_bytes, record_bytes| {
        if next_sequence < start.log_must_reach {
            return Replayed::EndsBefore { end: next_sequence };
        }
        let tail = LogTail { current, pos, next_sequence, files_bytes, record_bytes, oldest_sequence };
        Replayed::Writer(Box::new(LogWriter::new(settings.clone(), tail)))
    };
    let mut last = segments.len() - 1;
    loop {
        let (first, path) = &segments[index];
        let mut segment =
            if index == last { Segment::open_last(&*config.storage, path, config.truncate_corrupt)? } else { Segment::open(path)? };
        stats.segments += 1;
        stats.bytes += segment.map.len() as u64;
        files_bytes += segment.map.len() as u64;
        let header = segment.header;
        if header.core as usize != core || header.first_sequence != *first || header.first_sequence != expected {
            return Err(RecoveryError::Inconsistent {
                path: path.clone(),
                offset: 0,
                reason: format!(
                    "segment header says core {} first sequence {}, expected core {core} first sequence {expected} (file name says {first})",
                    header.core, header.first_sequence
                ),
            });
        }
        let before = expected.max(start.sequence);
        let end = scan(&segment, shards, &mut expected, &mut record_bytes)?;
        let replayed = expected.saturating_sub(before);
        stats.records += replayed;
        progress.records.fetch_add(replayed, Ordering::Relaxed);
        progress.segments_done.fetch_add(1, Ordering::Relaxed);
        match end {
            ScanEnd::Clean { pos } if index == last => match adoptable_prepared(dir, core, expected)? {
                // A rotation's new segment whose rename a stop interrupted,
                // continuing this one exactly: it becomes the last segment.
                Some(prepared) => {
                    let named = dir.join(segment_file_name(expected));
                    tracing::warn!(file = %prepared.display(), first_sequence = expected, "adopting a log segment whose rename a stop interrupted");
                    if !rename_no_replace(&prepared, &named).map_err(|source| LogError::Io {
                        op: "rename into place",
                        path: prepared.clone(),
                        source,
                    })? {
                        return Err(RecoveryError::Inconsistent {
                            path: named,
                            offset: 0,
                            reason: "a segment of this name appeared during recovery".into(),
                        });
                    }
                    sync_dir(&*config.storage, dir)?;
                    progress.segments.fetch_add(1, Ordering::Relaxed);
                    segments.push((expected, named));
                    last += 1;
                    index += 1;
                }
                None => return Ok(finish(segment, pos, expected, files_bytes, record_bytes)),
            },
            ScanEnd::Clean { .. } => index += 1,
            ScanEnd::Bad { pos, reason, verified_after } => {
                let torn = index == last && !verified_after;
                if !torn && !config.truncate_corrupt {
                    return Err(RecoveryError::Corrupt { path: path.clone(), offset: pos as u64, sequence: expected, reason });
                }
                if torn {
                    tracing::warn!(file = %path.display(), offset = pos, sequence = expected, %reason, "torn tail of the log truncated (records from here on were never acknowledged)");
                    stats.torn_tails += 1;
                } else {
                    // Name what is dropped: the records that still verify
                    // after the bad one, here and in the later segments.
                    let mut dropped = scan::Dropped::default();
                    dropped.count(&segment.map[..], pos + RECORD_ALIGN);
                    for (_, later) in &segments[index + 1..] {
                        if let Ok(bytes) = std::fs::read(later) {
                            dropped.count(&bytes, SEGMENT_HEADER_LEN);
                        }
                    }
                    let (first, last) = dropped.sequences.map_or((None, None), |(a, b)| (Some(a), Some(b)));
                    tracing::error!(
                        file = %path.display(),
                        offset = pos,
                        sequence = expected,
                        %reason,
                        dropped_records = dropped.records,
                        dropped_first_sequence = ?first,
                        dropped_last_sequence = ?last,
                        later_segments = segments.len() - index - 1,
                        "--truncate-corrupt-log: truncating the log here; the bad record and every later one are dropped (dropped_records still verified)"
                    );
                }
                zero_from(&*config.storage, &mut segment, pos)?;
                // A prepared file cannot continue a log that ends early.
                remove_prepared(dir)?;
                for (_, later) in &segments[index + 1..] {
                    tracing::error!(file = %later.display(), "--truncate-corrupt-log: removing a later segment");
                    std::fs::remove_file(later).map_err(|source| LogError::Io { op: "remove", path: later.clone(), source })?;
                }
                if index < last {
                    sync_dir(&*config.storage, dir)?;
                }
                segments.truncate(index + 1);
                return Ok(finish(segment, pos, expected, files_bytes, record_bytes));
            }
        }
    }
}

/// The core's prepared file if a rotation began writing into it and it
/// continues the log at `expected` exactly (a valid header of this core
/// whose first sequence is `expected`). Any other prepared file is removed:
/// zeros only, or the start of a segment whose records were never
/// acknowledged (the segment before it ends earlier than it begins, so a
/// flush never completed its rename).
fn adoptable_prepared(dir: &Path, core: usize, expected: u64) -> Result<Option<PathBuf>, LogError> {
    use std::io::Read;
    let path = dir.join(PREPARED_FILE_NAME);
    let mut head = Vec::with_capacity(SEGMENT_HEADER_LEN);
    match std::fs::File::open(&path) {
        Ok(file) => {
            file.take(SEGMENT_HEADER_LEN as u64).read_to_end(&mut head).map_err(|source| LogError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LogError::Io { op: "open", path, source }),
    }
    if head.len() == SEGMENT_HEADER_LEN && head.iter().any(|&b| b != 0) {
        match SegmentHeader::decode(&head) {
            Ok(h) if h.core as usize == core && h.first_sequence == expected => return Ok(Some(path)),
            Ok(h) => tracing::warn!(
                file = %path.display(),
                first_sequence = h.first_sequence,
                expected,
                "removing a prepared segment that does not continue the log (its records were never acknowledged)"
            ),
            Err(reason) => tracing::warn!(file = %path.display(), %reason, "removing a prepared segment whose header does not verify"),
        }
    }
    remove_prepared(dir)?;
    Ok(None)
}

/// Removes the core's prepared file, if any.
fn remove_prepared(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(PREPARED_FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Io { op: "remove", path, source }),
    }
}

/// Whether the segment at `path` was never finished: it holds nothing but
/// zeros (created, or sized, and never given its header).
fn unfinished_segment(path: &Path) -> Result<bool, LogError> {
    use std::io::Read;
    let io = |op: &'static str| move |source| LogError::Io { op, path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io("open"))?;
    let mut head = Vec::with_capacity(SEGMENT_HEADER_LEN);
    (&mut file).take(SEGMENT_HEADER_LEN as u64).read_to_end(&mut head).map_err(io("read"))?;
    if head.iter().any(|&b| b != 0) {
        return Ok(false);
    }
    // A header of zeros (or none): unfinished only if nothing follows it
    // either. A zeroed header in front of records is damage, refused by
    // the header check, never a reason to delete the file.
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(io("read"))?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}
