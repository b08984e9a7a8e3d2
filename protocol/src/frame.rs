//! The frame: a fixed 24-byte little-endian header and an rkyv payload.
//!
//! ```text
//! offset size field
//!      0    4 magic        b"ORDR"
//!      4    2 version      u16 LE, PROTOCOL_VERSION
//!      6    1 kind         FrameKind
//!      7    1 flags        must be 0 in version 1
//!      8    8 correlation  u64 LE, chosen by the client, echoed in replies
//!     16    4 payload_len  u32 LE, exact length of the rkyv archive
//!     20    4 items        u32 LE, elements of the payload's root vector
//!     24    . payload      payload_len bytes, then zero padding to a multiple of 8
//! ```
//!
//! [`check`] looks at the bytes received so far and tells "incomplete" (read
//! more) from "invalid" (refuse, close) from "complete" before any payload
//! byte is interpreted; only a complete frame's payload is handed to rkyv.

use crate::error::FrameError;
pub use crate::kind::FrameKind;
use crate::limits::{padded_len, FRAME_HEADER_LEN, MAX_BATCH_REQUESTS, MAX_FRAME_PAYLOAD_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"ORDR";

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version of the frame.
    pub version: u16,
    /// What the payload is.
    pub kind: FrameKind,
    /// Flags (0 in version 1).
    pub flags: u8,
    /// Correlation id: a reply carries its request frame's.
    pub correlation: u64,
    /// Exact payload length in bytes (before padding).
    pub payload_len: u32,
    /// Elements of the payload's root vector (0 for non-vector payloads).
    pub items: u32,
}

impl FrameHeader {
    /// Bytes the whole frame occupies on the wire: header, payload, padding.
    #[must_use]
    pub const fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + padded_len(self.payload_len as usize)
    }

    /// The 24 header bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6] = self.kind as u8;
        b[7] = self.flags;
        b[8..16].copy_from_slice(&self.correlation.to_le_bytes());
        b[16..20].copy_from_slice(&self.payload_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.items.to_le_bytes());
        b
    }
}

/// The bounds a receiver applies while checking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest payload accepted, bytes.
    pub max_payload_bytes: usize,
    /// Largest `items` accepted.
    pub max_items: usize,
}

impl FrameLimits {
    /// The hard wire maxima: what a client accepts from a server.
    pub const WIRE_MAX: FrameLimits = FrameLimits { max_payload_bytes: MAX_FRAME_PAYLOAD_BYTES, max_items: MAX_BATCH_REQUESTS };
}

/// The verdict on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameCheck {
    /// Not a whole frame yet: at least `need` bytes in all are required.
    Incomplete {
        /// Total bytes needed (from the frame's start) before checking again.
        need: usize,
    },
    /// A whole, well-formed frame of `frame_len` bytes (padding included).
    Complete(FrameHeader),
    /// The bytes can never become a valid frame: refuse and close.
    Invalid(FrameError),
}

/// Check the frame at the start of `buf` against `limits`.
///
/// Never panics, whatever `buf` holds. A header is judged as soon as its 24
/// bytes are in; the payload is not interpreted here, only its padding.
#[must_use]
pub fn check(buf: &[u8], limits: &FrameLimits) -> FrameCheck {
    let Some(h) = buf.get(..FRAME_HEADER_LEN) else {
        // Judge the magic early: a stream of garbage is refused at once.
        let n = buf.len().min(MAGIC.len());
        if buf[..n] != MAGIC[..n] {
            return FrameCheck::Invalid(FrameError::BadMagic);
        }
        return FrameCheck::Incomplete { need: FRAME_HEADER_LEN };
    };
    if h[0..4] != MAGIC {
        return FrameCheck::Invalid(FrameError::BadMagic);
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return FrameCheck::Invalid(FrameError::UnsupportedVersion { found: version });
    }
    let Some(kind) = FrameKind::from_u8(h[6]) else {
        return FrameCheck::Invalid(FrameError::UnknownKind { found: h[6] });
    };
    let flags = h[7];
    if flags != 0 {
        return FrameCheck::Invalid(FrameError::BadFlags { found: flags });
    }
    let correlation = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    let payload_len = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    let items = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if payload_len as usize > limits.max_payload_bytes {
        return FrameCheck::Invalid(FrameError::TooLarge { len: payload_len as usize, max: limits.max_payload_bytes });
    }
    if items as usize > limits.max_items {
        return FrameCheck::Invalid(FrameError::TooManyItems { items: items as usize, max: limits.max_items });
    }
    let header = FrameHeader { version, kind, flags, correlation, payload_len, items };
    let frame_len = header.frame_len();
    let Some(frame) = buf.get(..frame_len) else {
        return FrameCheck::Incomplete { need: frame_len };
    };
    if frame[FRAME_HEADER_LEN + payload_len as usize..].iter().any(|&b| b != 0) {
        return FrameCheck::Invalid(FrameError::NonZeroPadding);
    }
    FrameCheck::Complete(header)
}

/// The payload bytes of a complete frame that starts at `buf[0]`.
///
/// # Panics
/// If `buf` is shorter than the frame `header` describes (check first).
#[must_use]
pub fn payload<'a>(buf: &'a [u8], header: &FrameHeader) -> &'a [u8] {
    &buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + header.payload_len as usize]
}
