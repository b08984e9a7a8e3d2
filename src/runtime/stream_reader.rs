//! [`LogReader`]: one per core, reads every core's log for that core's
//! subscriptions through io_uring, in chunks, and keeps the decoded blocks
//! they share.
//!
//! - **The core never blocks on the disk.** A chunk ([`CHUNK_BYTES`]) is
//!   read with glommio's buffered file reads (io_uring): from the page
//!   cache it completes at once, from the disk the core runs other tasks
//!   meanwhile. Nothing is mapped, so no page fault can stop the executor
//!   (the old mapped cursors took them on the core thread, whatever the
//!   stream's share).
//! - **One read and one decode for all.** Decoded blocks are kept, by core
//!   and first sequence, up to [`CACHE_BYTES`] (oldest inserted dropped
//!   first); a read in flight is shared too: a subscription wanting the
//!   same position waits for it instead of reading again. Eight
//!   subscribers catching up together read each chunk once, and a core's
//!   caught-up subscribers read each new flush's records once.
//! - **Bounded**: one chunk per read, at most [`CACHE_BYTES`] of blocks
//!   plus the one block each subscription holds.
//!
//! Records are verified (CRC, sequence) as they are decoded
//! (`stream::block::parse`), and a segment's header is checked whenever a
//! chain of reads starts at its first record. A segment deleted by
//! retention before it is opened is `CursorError::Missing`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Waker;

use glommio::io::BufferedFile;

use crate::log::segment::{core_dir, segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::stream::block::{parse, Block, Pos, CHUNK_BYTES};
use crate::stream::cursor::{holding_segment, oldest};
use crate::stream::{BlockSource, CursorError};

/// Decoded blocks one core keeps for its subscriptions (a block of 1024
/// events is 64 KiB).
pub const CACHE_BYTES: usize = 32 << 20;

/// Record positions a core's reader remembers (about 40 bytes each).
const MAX_POSITIONS: usize = 1 << 16;

/// What a core's reader did, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Chunks read from segment files.
    pub reads: u64,
    /// Bytes those reads returned.
    pub read_bytes: u64,
    /// Blocks handed out from the cache or from another subscription's read.
    pub shared: u64,
}

/// A core's reader of every core's log.
pub struct LogReader {
    data_dir: PathBuf,
    /// What it did: the core's own counters (`Core::stream_reads`), which
    /// the metrics read.
    stats: Rc<Cell<ReadStats>>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    blocks: BTreeMap<(usize, u64), Rc<Block>>,
    /// Insertion order, for dropping the oldest.
    order: VecDeque<(usize, u64)>,
    bytes: usize,
    /// Reads in flight, by (core, segment, offset): who waits for each.
    inflight: HashMap<(usize, u64, u64), Vec<Waker>>,
    /// Record positions reads found (where each chunk started and ended),
    /// by (core, sequence): where a subscription starting or resuming
    /// anywhere begins reading instead of its segment's first record.
    positions: BTreeMap<(usize, u64), Pos>,
    position_order: VecDeque<(usize, u64)>,
}

impl LogReader {
    /// A reader of the logs in `data_dir`, counting what it does in `stats`.
    #[must_use]
    pub fn new(data_dir: &Path, stats: Rc<Cell<ReadStats>>) -> Rc<LogReader> {
        Rc::new(LogReader { data_dir: data_dir.to_path_buf(), stats, state: RefCell::new(State::default()) })
    }

    fn count(&self, f: impl FnOnce(&mut ReadStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// A kept block of core `core` holding `want`.
    fn cached(&self, core: usize, want: u64) -> Option<Rc<Block>> {
        let state = self.state.borrow();
        let (_, block) = state.blocks.range((core, 0)..=(core, want)).next_back()?;
        block.holds(want).then(|| Rc::clone(block))
    }

    fn keep(&self, block: &Rc<Block>) {
        if block.events.is_empty() {
            return;
        }
        let mut state = self.state.borrow_mut();
        let key = (block.core, block.first);
        if let Some(old) = state.blocks.insert(key, Rc::clone(block)) {
            state.bytes = state.bytes.saturating_sub(old.bytes());
        } else {
            state.order.push_back(key);
        }
        state.bytes += block.bytes();
        while state.bytes > CACHE_BYTES {
            let Some(oldest) = state.order.pop_front() else { break };
            if let Some(old) = state.blocks.remove(&oldest) {
                state.bytes = state.bytes.saturating_sub(old.bytes());
            }
        }
    }

    /// Waits while a read of `key` is in flight.
    async fn wait_inflight(&self, key: (usize, u64, u64)) {
        std::future::poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            match state.inflight.get_mut(&key) {
                Some(waiters) => {
                    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        waiters.push(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
                None => std::task::Poll::Ready(()),
            }
        })
        .await;
    }

    /// The known record position of core `core` nearest at or before `want`.
    fn known_position(&self, core: usize, want: u64) -> Option<Pos> {
        let state = self.state.borrow();
        state.positions.range((core, 0)..=(core, want)).next_back().map(|(_, &pos)| pos)
    }

    fn remember(&self, core: usize, pos: Pos) {
        let mut state = self.state.borrow_mut();
        if state.positions.insert((core, pos.sequence), pos).is_none() {
            state.position_order.push_back((core, pos.sequence));
            while state.position_order.len() > MAX_POSITIONS {
                if let Some(old) = state.position_order.pop_front() {
                    state.positions.remove(&old);
                }
            }
        }
    }

    /// Reads and parses the chunk at `at`; whoever asks for the same
    /// position meanwhile waits for this read.
    async fn read_chunk(&self, core: usize, at: Pos, want: u64, durable: u64) -> Result<Rc<Block>, CursorError> {
        let key = (core, at.segment, at.offset);
        self.state.borrow_mut().inflight.insert(key, Vec::new());
        let result = self.read_and_parse(core, at, want, durable).await;
        let waiters = self.state.borrow_mut().inflight.remove(&key).unwrap_or_default();
        if let Ok(block) = &result {
            self.remember(core, at);
            self.remember(core, block.end);
            self.keep(block);
        }
        waiters.into_iter().for_each(Waker::wake);
        result
    }

    async fn read_and_parse(&self, core: usize, at: Pos, want: u64, durable: u64) -> Result<Rc<Block>, CursorError> {
        let path = core_dir(&self.data_dir, core).join(segment_file_name(at.segment));
        let io = |op: &'static str, e: glommio::GlommioError<()>| CursorError::Io { core, op, path: path.clone(), source: e.into() };
        let file = match BufferedFile::open(&path).await {
            Ok(file) => file,
            Err(e) => {
                let e: std::io::Error = e.into();
                if e.kind() == std::io::ErrorKind::NotFound {
                    // Retention deleted it (oldest first: everything before too).
                    let oldest = oldest(&self.data_dir, core)?;
                    return Err(CursorError::Missing { core, sequence: want, oldest });
                }
                return Err(CursorError::Io { core, op: "open", path, source: e });
            }
        };
        // A chain starting at a segment's first record reads (and checks)
        // its header too.
        let with_header = at.offset == SEGMENT_HEADER_LEN as u64;
        let (from, len) = if with_header { (0, CHUNK_BYTES + SEGMENT_HEADER_LEN) } else { (at.offset, CHUNK_BYTES) };
        let read = file.read_at(from, len).await;
        let _ = file.close().await;
        let bytes = read.map_err(|e| io("read", e))?;
        self.count(|s| {
            s.reads += 1;
            s.read_bytes += bytes.len() as u64;
        });
        let corrupt = |offset: u64, reason: String| CursorError::Corrupt { core, path: path.clone(), offset: offset as usize, reason };
        let records = if with_header {
            let header = SegmentHeader::decode(&bytes).map_err(|reason| corrupt(0, reason))?;
            if header.core as usize != core || header.first_sequence != at.segment {
                let reason = format!(
                    "header says core {} first offset {}, expected core {core} first offset {}",
                    header.core, header.first_sequence, at.segment
                );
                return Err(corrupt(0, reason));
            }
            &bytes[SEGMENT_HEADER_LEN.min(bytes.len())..]
        } else {
            &bytes[..]
        };
        let file_end = bytes.len() < len;
        parse(core, at, records, file_end, durable, want).map(Rc::new).map_err(|e| corrupt(e.offset, e.reason))
    }
}

impl BlockSource for LogReader {
    async fn block(&self, core: usize, want: u64, at: Option<Pos>, durable: u64) -> Result<Rc<Block>, CursorError> {
        let mut listed = None;
        loop {
            if let Some(block) = self.cached(core, want) {
                self.count(|s| s.shared += 1);
                return Ok(block);
            }
            // Start from the latest record position known at or before
            // `want`: the caller's, one an earlier read of this core's
            // subscriptions found, or the first record of its segment.
            let known = self.known_position(core, want);
            let start = match (at.filter(|p| p.sequence <= want), known) {
                (Some(a), Some(k)) => Some(if k.sequence > a.sequence { k } else { a }),
                (a, k) => a.or(k),
            };
            let start = match start {
                Some(start) => start,
                None => *listed.get_or_insert(holding_segment(&self.data_dir, core, want)?),
            };
            if at.is_some_and(|a| a.sequence < start.sequence) {
                // Another read already went past the caller's position: skip there.
                return Ok(Rc::new(Block { core, first: start.sequence, events: Vec::new(), end: start }));
            }
            let key = (core, start.segment, start.offset);
            if self.state.borrow().inflight.contains_key(&key) {
                self.wait_inflight(key).await;
                continue;
            }
            return self.read_chunk(core, start, want, durable).await;
        }
    }
}
