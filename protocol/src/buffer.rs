//! A receive buffer that keeps every frame payload 8-byte aligned, so rkyv
//! can validate it in place (zero copy).
//!
//! Frames are padded to a multiple of 8 bytes, and the buffer only ever
//! consumes whole frames, so a frame that starts at the buffer's (16-aligned)
//! beginning, or a multiple of 8 after it, has an aligned payload. Used by
//! the server's connections and the SDK's clients alike; it does no I/O: the
//! caller reads into [`FrameBuffer::spare`] and reports with
//! [`FrameBuffer::commit`].

use rkyv::util::AlignedVec;

use crate::frame::{check, FrameCheck, FrameHeader, FrameLimits};
use crate::limits::FRAME_HEADER_LEN;

/// An aligned, growable receive buffer holding unparsed bytes in `start..end`.
pub struct FrameBuffer {
    buf: AlignedVec<16>,
    start: usize,
    end: usize,
    limits: FrameLimits,
}

impl FrameBuffer {
    /// A buffer of `capacity` bytes that checks frames against `limits`.
    /// It grows (up to one maximal frame) when a larger frame arrives.
    #[must_use]
    pub fn new(capacity: usize, limits: FrameLimits) -> Self {
        let mut buf = AlignedVec::with_capacity(capacity.max(FRAME_HEADER_LEN * 2));
        buf.resize(buf.capacity(), 0);
        FrameBuffer { buf, start: 0, end: 0, limits }
    }

    /// The limits frames are checked against.
    #[must_use]
    pub fn limits(&self) -> &FrameLimits {
        &self.limits
    }

    /// Bytes received and not yet consumed.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether no unconsumed byte is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Check the frame at the front of the buffer.
    #[must_use]
    pub fn check(&self) -> FrameCheck {
        check(self.data(), &self.limits)
    }

    /// The payload of the complete frame at the front (after [`check`] said
    /// `Complete(header)`). It is 8-byte aligned.
    ///
    /// [`check`]: FrameBuffer::check
    #[must_use]
    pub fn payload(&self, header: &FrameHeader) -> &[u8] {
        let from = self.start + FRAME_HEADER_LEN;
        let to = (from + header.payload_len as usize).min(self.end);
        &self.buf[from.min(to)..to]
    }

    /// Drop the frame at the front.
    pub fn consume(&mut self, header: &FrameHeader) {
        self.start = (self.start + header.frame_len()).min(self.end);
        debug_assert_eq!(self.start % crate::limits::FRAME_ALIGN, 0);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// At least `min` writable bytes after the data, moving the data to the
    /// front or growing the buffer if needed. Read into it, then [`commit`].
    ///
    /// [`commit`]: FrameBuffer::commit
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.buf.len() - self.end < min {
            let len = self.end - self.start;
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = len;
            }
            if self.buf.len() - self.end < min {
                let want = (self.end + min).next_power_of_two();
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Record that `n` bytes were read into the slice [`spare`] returned.
    ///
    /// [`spare`]: FrameBuffer::spare
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// How many more bytes to ask the socket for, given a check verdict: at
    /// least the missing part of the frame, and at least a useful chunk.
    #[must_use]
    pub fn want(&self, verdict: &FrameCheck, chunk: usize) -> usize {
        match verdict {
            FrameCheck::Incomplete { need } => need.saturating_sub(self.end - self.start).max(chunk),
            _ => chunk,
        }
    }
}
