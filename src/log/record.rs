//! The record: one event framed for the log, and the pure functions that
//! write and verify it in a byte slice (the storage seam of the recovery
//! tests: they run on plain buffers as well as on mapped segments).
//!
//! ```text
//! offset size field
//!   0     4   crc32c    CRC32C (Castagnoli) of bytes 4..24 and the payload
//!   4     4   len       payload length in bytes (the event body, 16..=64)
//!   8     8   sequence  the record's sequence in its core's log, from 0
//!  16     1   kind      Event::kind
//!  17     1   version   EVENT_FORMAT_VERSION the payload was written in
//!  18     6   reserved  zero
//!  24   len   payload   Event::encode
//!   …         padding   zero, up to the next multiple of 8
//! ```
//!
//! All integers are little-endian. A record starts 8-aligned and its total
//! size is `24 + len` rounded up to 8. Eight zero bytes where a record
//! would start mean "no more records" (a valid record never has `len` 0, so
//! a CRC of 0 and a length of 0 together never occur).

use crate::engine::event::MAX_EVENT_LEN;
use crate::engine::{Event, EVENT_FORMAT_VERSION};

/// Bytes of the record header.
pub const RECORD_HEADER_LEN: usize = 24;

/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;

/// The largest record (header + largest event, padded).
pub const MAX_RECORD_LEN: usize = padded(RECORD_HEADER_LEN + MAX_EVENT_LEN);

const _: () = assert!(RECORD_HEADER_LEN.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(MAX_RECORD_LEN == 88);

/// `n` rounded up to [`RECORD_ALIGN`].
#[must_use]
pub const fn padded(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// The size a record of `event` takes in a segment.
#[must_use]
pub const fn record_len(event: &Event) -> usize {
    padded(RECORD_HEADER_LEN + event.encoded_len())
}

/// A verified record, borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Its sequence in the core's log.
    pub sequence: u64,
    /// The event kind.
    pub kind: u8,
    /// The event format version.
    pub version: u8,
    /// The event body.
    pub payload: &'a [u8],
    /// Bytes the record takes (header, payload, padding).
    pub len: usize,
}

impl RecordView<'_> {
    /// Decodes the event.
    ///
    /// # Errors
    /// The payload is not an event of this build's format.
    pub fn event(&self) -> Result<Event, crate::engine::EventDecodeError> {
        Event::decode(self.kind, self.version, self.payload)
    }
}

/// What is at a position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// A record whose CRC verifies.
    Record(RecordView<'a>),
    /// Zero bytes where a header would start: the end of the records.
    End,
    /// Bytes that are not a verified record.
    Bad(BadRecord),
}

/// Why the bytes at a position are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRecord {
    /// The position is not 8-aligned or not inside the bytes.
    #[error("position is not an 8-aligned record start inside the segment")]
    Misplaced,
    /// The header or the payload runs past the end of the segment.
    #[error("the record runs past the end of the segment")]
    Truncated,
    /// The length is not one an event can have.
    #[error("record length {len} is not an event length")]
    BadLength {
        /// The length found.
        len: u32,
    },
    /// Non-zero bytes after the last record, where only zeros may be.
    #[error("non-zero bytes after the last record")]
    TrailingBytes,
    /// The CRC does not match the bytes.
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
}

/// The little-endian `u32` at `at` of `bytes` (`0` past its end: callers
/// check lengths first; never panics). Shared by the log's formats.
pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// The little-endian `u64` at `at` of `bytes` (as [`le_u32`]).
pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

/// Reads the slot at `pos` of `bytes`. Never panics, whatever the bytes.
#[must_use]
pub fn read_at(bytes: &[u8], pos: usize) -> Slot<'_> {
    if !pos.is_multiple_of(RECORD_ALIGN) || pos > bytes.len() {
        return Slot::Bad(BadRecord::Misplaced);
    }
    if pos == bytes.len() {
        return Slot::End;
    }
    let Some(header) = bytes.get(pos..pos + RECORD_HEADER_LEN) else {
        // A segment's size is a multiple of 8, so fewer than 24 bytes left
        // can hold no record: zeros are the end, anything else is torn.
        return if bytes[pos..].iter().all(|&b| b == 0) { Slot::End } else { Slot::Bad(BadRecord::Truncated) };
    };
    if header[..8].iter().all(|&b| b == 0) {
        return Slot::End;
    }
    let len = le_u32(header, 4);
    if len as usize > MAX_EVENT_LEN || len < 8 {
        return Slot::Bad(BadRecord::BadLength { len });
    }
    let total = padded(RECORD_HEADER_LEN + len as usize);
    let Some(payload) = bytes.get(pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len as usize) else {
        return Slot::Bad(BadRecord::Truncated);
    };
    if pos + total > bytes.len() {
        return Slot::Bad(BadRecord::Truncated);
    }
    let stored = le_u32(header, 0);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[4..]), payload);
    if stored != computed {
        return Slot::Bad(BadRecord::CrcMismatch { stored, computed });
    }
    Slot::Record(RecordView { sequence: le_u64(header, 8), kind: header[16], version: header[17], payload, len: total })
}

/// Writes the record of `event` with `sequence` at the front of `out` and
/// returns its length, or `None` (nothing written) if `out` is too short.
///
/// The payload and padding are written first and the header last, so a
/// crash in between leaves a header of zeros or a CRC that fails: never a
/// record that verifies with half its bytes.
pub fn write(out: &mut [u8], sequence: u64, event: &Event) -> Option<usize> {
    let mut body = [0u8; MAX_EVENT_LEN];
    let len = event.encode(&mut body).ok()?;
    write_body(out, sequence, event.kind(), EVENT_FORMAT_VERSION, &body[..len])
}

/// Writes a control record (`log::handoff`) at the front of `out`, as
/// [`write()`] writes an event.
pub fn write_control(out: &mut [u8], sequence: u64, control: &super::handoff::Control) -> Option<usize> {
    write_body(out, sequence, control.kind(), super::handoff::CONTROL_FORMAT, &control.encode())
}

/// Writes event `event` of a moved shard's tail (`log::handoff`) at the
/// front of `out`: its body, under its tail kind.
pub fn write_tail_event(out: &mut [u8], sequence: u64, event: &Event) -> Option<usize> {
    let mut body = [0u8; MAX_EVENT_LEN];
    let len = event.encode(&mut body).ok()?;
    write_body(out, sequence, super::handoff::tail_kind(event), EVENT_FORMAT_VERSION, &body[..len])
}

/// The size a control record takes in a segment.
#[must_use]
pub const fn control_record_len() -> usize {
    padded(RECORD_HEADER_LEN + super::handoff::CONTROL_LEN)
}

/// Writes a record of `kind` and format `version` with body `payload`.
fn write_body(out: &mut [u8], sequence: u64, kind: u8, version: u8, payload: &[u8]) -> Option<usize> {
    let len = payload.len();
    let total = padded(RECORD_HEADER_LEN + len);
    let out = out.get_mut(..total)?;
    let (header, body) = out.split_at_mut(RECORD_HEADER_LEN);
    body[..len].copy_from_slice(payload);
    body[len..].fill(0);
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&sequence.to_le_bytes());
    h[16] = kind;
    h[17] = version;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[4..]), &body[..len]);
    h[..4].copy_from_slice(&crc.to_le_bytes());
    // The CRC and length (first 8 bytes) go last: until they land, the slot
    // reads as the end of the log or as a torn record. The fences keep the
    // compiler from reordering the stores; the CPU cannot reorder them as
    // seen by this thread, and a power loss that persists pages out of order
    // is caught by the CRC, which covers every byte.
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Release);
    header[8..].copy_from_slice(&h[8..]);
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Release);
    header[..8].copy_from_slice(&h[..8]);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_protocol::{IdempotencyKey, PlaceOrder};

    fn placed(id: u64) -> Event {
        Event::OrderPlaced {
            time_ms: 5,
            order_id: id,
            request: PlaceOrder { key: IdempotencyKey { hi: 1, lo: id }, user: 2, product: 3, unit_price_cents: 4, qty: 1 },
        }
    }

    #[test]
    fn a_written_record_reads_back() {
        let mut buf = vec![0u8; 256];
        let n = write(&mut buf, 7, &placed(9)).unwrap();
        assert_eq!(n, 88);
        match read_at(&buf, 0) {
            Slot::Record(r) => {
                assert_eq!((r.sequence, r.len), (7, 88));
                assert_eq!(r.event().unwrap(), placed(9));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_at(&buf, 88), Slot::End);
        assert_eq!(read_at(&buf, 256), Slot::End);
        assert_eq!(read_at(&buf, 3), Slot::Bad(BadRecord::Misplaced));
    }

    #[test]
    fn every_flipped_bit_of_a_record_is_caught() {
        let mut buf = vec![0u8; 88];
        write(&mut buf, 1, &placed(2)).unwrap();
        for byte in 0..88 {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                match read_at(&b, 0) {
                    Slot::Record(r) => assert!(byte >= 24 + 64, "flip at {byte}.{bit} verified as {r:?}"),
                    Slot::Bad(_) | Slot::End => {}
                }
            }
        }
    }

    #[test]
    fn a_short_buffer_writes_nothing() {
        let mut buf = vec![0u8; 80];
        assert_eq!(write(&mut buf, 1, &placed(2)), None);
        assert!(buf.iter().all(|&b| b == 0));
    }
}
