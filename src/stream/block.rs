//! [`Block`]: a run of one core's durable log records, verified and decoded
//! into wire events once, shared by every subscription of the reading core
//! that needs them ([`parse`] builds one from bytes read from a segment).
//!
//! A block is cut from a chunk of a segment file read at a record boundary
//! ([`Pos`]). It holds the records that start in the chunk and end inside
//! it, below the durable point the reader saw before reading (bytes past it
//! may be half written and are never looked at), and at most
//! [`MAX_BLOCK_EVENTS`] of them. Its end is where the next block starts:
//! the next record's position in the same segment, or the start of the
//! next segment when the segment's records ended there (a segment file is
//! named by its first record's sequence, so the next one's name is the
//! next sequence).

use orderd_protocol::message::StreamEvent;

use super::event::stream_event;
use crate::log::record::{read_at, Slot, MAX_RECORD_LEN};
use crate::log::segment::SEGMENT_HEADER_LEN;

/// Most events in one block.
pub const MAX_BLOCK_EVENTS: usize = 1024;

/// Bytes read for one block: room for [`MAX_BLOCK_EVENTS`] records of the
/// usual size (~90 bytes) and always at least a few of the largest.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Where a record starts: its segment (named by its first sequence) and
/// its byte offset in the file, with the record's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pos {
    /// The first sequence of the segment file.
    pub segment: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// The record's sequence.
    pub sequence: u64,
}

impl Pos {
    /// The first record of the segment that starts at `sequence`.
    #[must_use]
    pub fn segment_start(sequence: u64) -> Pos {
        Pos { segment: sequence, offset: SEGMENT_HEADER_LEN as u64, sequence }
    }
}

/// Decoded records of one core's log, consecutive.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The core whose log it is.
    pub core: usize,
    /// Sequence of the first record kept.
    pub first: u64,
    /// The events, by sequence (`offset`): the records from `first` to
    /// `end` but control records (a shard handed over: `log::handoff`),
    /// which are not order events; without those, `events[i]` is the
    /// record of sequence `first + i`.
    pub events: Vec<StreamEvent>,
    /// Where the record after the last one starts.
    pub end: Pos,
}

impl Block {
    /// The sequence after the last record.
    #[must_use]
    pub fn end_sequence(&self) -> u64 {
        self.end.sequence
    }

    /// The index in `events` of the first event of sequence `sequence` or
    /// later.
    #[must_use]
    pub fn index_of(&self, sequence: u64) -> usize {
        self.events.partition_point(|e| e.offset < sequence)
    }

    /// Whether the block holds the record of `sequence`.
    #[must_use]
    pub fn holds(&self, sequence: u64) -> bool {
        sequence >= self.first && sequence < self.end_sequence()
    }

    /// Heap bytes the block holds (for the cache's bound).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<StreamEvent>()
    }
}

/// Why bytes read from a segment are not the records they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Verifies and decodes the records of `bytes`, read from offset `at.offset`
/// of core `core`'s segment `at.segment`; `file_end`: the read reached the
/// end of the file. Keeps records from sequence `keep_from` (those before
/// are verified and skipped) and below `durable`.
///
/// # Errors
/// A record that does not verify, decode or carry the sequence expected
/// there, or a segment whose records end before the durable point without
/// holding any.
pub fn parse(core: usize, at: Pos, bytes: &[u8], file_end: bool, durable: u64, keep_from: u64) -> Result<Block, ParseError> {
    let mut events = Vec::new();
    let mut first = None;
    let mut pos = 0usize;
    let mut sequence = at.sequence;
    let end_at = |pos: usize, sequence: u64| Pos { segment: at.segment, offset: at.offset + pos as u64, sequence };
    let error = |pos: usize, reason: String| ParseError { offset: at.offset + pos as u64, reason };
    let end = loop {
        if sequence >= durable || events.len() >= MAX_BLOCK_EVENTS {
            break end_at(pos, sequence);
        }
        // A record that may run past the bytes read is judged in the next
        // chunk, where it starts.
        if !file_end && bytes.len() - pos < MAX_RECORD_LEN {
            break end_at(pos, sequence);
        }
        match read_at(bytes, pos) {
            Slot::Record(record) if record.sequence == sequence => {
                if sequence >= keep_from {
                    first.get_or_insert(sequence);
                    // Control records (a shard handed over) are not order events.
                    if !crate::log::handoff::is_control(record.kind) {
                        let event = record.event().map_err(|e| error(pos, e.to_string()))?;
                        events.push(stream_event(core as u16, sequence, &event));
                    }
                }
                pos += record.len;
                sequence += 1;
            }
            Slot::Record(record) => {
                return Err(error(pos, format!("found offset {} where offset {sequence} was expected", record.sequence)));
            }
            Slot::End if sequence == at.segment => {
                return Err(error(pos, format!("offset {sequence} is durable but its segment holds no record")));
            }
            // The record did not fit this segment: it starts the next.
            Slot::End => break Pos::segment_start(sequence),
            Slot::Bad(bad) => return Err(error(pos, bad.to_string())),
        }
    };
    let first = first.unwrap_or(end.sequence);
    Ok(Block { core, first, events, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Event;
    use crate::log::record::{record_len, write};
    use orderd_protocol::message::EventKind;

    /// Records `from..to` of a segment starting at `segment`, as the file's
    /// bytes after its header, then `zeros` zero bytes.
    fn segment_bytes(from: u64, to: u64, zeros: usize) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for sequence in from..to {
            offsets.push(SEGMENT_HEADER_LEN as u64 + bytes.len() as u64);
            let event = Event::StockAdjusted { product: sequence, delta: 1, time_ms: 7 };
            let at = bytes.len();
            bytes.resize(at + record_len(&event), 0);
            assert_eq!(write(&mut bytes[at..], sequence, &event), Some(record_len(&event)));
        }
        bytes.resize(bytes.len() + zeros, 0);
        (bytes, offsets)
    }

    #[test]
    fn keeps_the_durable_records_from_the_one_asked_and_ends_where_the_next_starts() {
        let (bytes, offsets) = segment_bytes(100, 110, 4096);
        let block = parse(1, Pos::segment_start(100), &bytes, true, 108, 103).expect("parse");
        assert_eq!((block.first, block.end_sequence()), (103, 108));
        assert_eq!(
            block.events.iter().map(|e| (e.core, e.offset, e.product)).collect::<Vec<_>>(),
            (103..108).map(|s| (1, s, s)).collect::<Vec<_>>()
        );
        assert!(block.events.iter().all(|e| e.kind == EventKind::StockAdjusted));
        assert_eq!(block.end, Pos { segment: 100, offset: offsets[8], sequence: 108 }, "not durable yet: read from there later");
    }

    #[test]
    fn the_end_of_a_segments_records_points_at_the_next_segment() {
        let (bytes, _) = segment_bytes(100, 104, 64);
        let block = parse(0, Pos::segment_start(100), &bytes, true, 200, 0).expect("parse");
        assert_eq!((block.first, block.events.len()), (100, 4));
        assert_eq!(block.end, Pos::segment_start(104));
    }

    #[test]
    fn a_record_that_may_run_past_the_chunk_is_left_for_the_next_read() {
        let (bytes, offsets) = segment_bytes(0, 50, 0);
        let cut = offsets[30] as usize - SEGMENT_HEADER_LEN + 8;
        let block = parse(0, Pos::segment_start(0), &bytes[..cut], false, 50, 0).expect("parse");
        assert!(block.end_sequence() <= 30, "nothing past the chunk is judged");
        let next = block.end;
        let from = (next.offset - SEGMENT_HEADER_LEN as u64) as usize;
        let rest = parse(0, next, &bytes[from..], true, 50, 0).expect("parse the rest");
        assert_eq!((rest.first, rest.end_sequence()), (block.end_sequence(), 50));
    }

    #[test]
    fn control_records_are_skipped_and_the_block_still_ends_after_them() {
        use crate::log::handoff::Control;
        use crate::log::record::{control_record_len, write_control};
        let mut bytes = Vec::new();
        for sequence in 0..6u64 {
            let at = bytes.len();
            if sequence == 2 || sequence == 5 {
                bytes.resize(at + control_record_len(), 0);
                let control = Control::ShardInstalled { time_ms: 7, shard: 1, move_id: 3 };
                assert!(write_control(&mut bytes[at..], sequence, &control).is_some());
            } else {
                let event = Event::StockAdjusted { product: sequence, delta: 1, time_ms: 7 };
                bytes.resize(at + record_len(&event), 0);
                assert!(write(&mut bytes[at..], sequence, &event).is_some());
            }
        }
        bytes.resize(bytes.len() + 64, 0);
        let block = parse(0, Pos::segment_start(0), &bytes, true, 6, 0).expect("parse");
        assert_eq!(block.events.iter().map(|e| e.offset).collect::<Vec<_>>(), [0, 1, 3, 4]);
        assert_eq!((block.first, block.end_sequence()), (0, 6), "the trailing control record is read past");
        assert_eq!((block.index_of(2), block.index_of(3), block.index_of(5)), (2, 2, 4));
        assert!(block.holds(5) && !block.holds(6));
    }

    #[test]
    fn a_block_holds_at_most_its_bound_of_events() {
        let (bytes, _) = segment_bytes(0, MAX_BLOCK_EVENTS as u64 + 10, 0);
        let block = parse(0, Pos::segment_start(0), &bytes, true, u64::MAX, 0).expect("parse");
        assert_eq!(block.events.len(), MAX_BLOCK_EVENTS);
        assert_eq!(block.end.sequence, MAX_BLOCK_EVENTS as u64);
    }

    #[test]
    fn wrong_sequences_flipped_bits_and_empty_durable_segments_are_refused_with_their_offset() {
        let (bytes, offsets) = segment_bytes(0, 5, 64);
        let at3 = Pos { segment: 0, offset: offsets[3], sequence: 4 };
        let from = (offsets[3] as usize) - SEGMENT_HEADER_LEN;
        let e = parse(0, at3, &bytes[from..], true, 10, 0).expect_err("sequence 3 where 4 expected");
        assert_eq!(e.offset, offsets[3]);
        let mut flipped = bytes.clone();
        flipped[(offsets[2] as usize - SEGMENT_HEADER_LEN) + 30] ^= 1;
        assert_eq!(parse(0, Pos::segment_start(0), &flipped, true, 10, 0).expect_err("flipped").offset, offsets[2]);
        let e = parse(0, Pos::segment_start(7), &[0; 128], true, 10, 0).expect_err("durable but empty");
        assert!(e.reason.contains("holds no record"), "{}", e.reason);
    }
}
