//! Typed errors of the wire layer: why bytes are not a valid frame, and why
//! a value could not be encoded.

use crate::status::Status;

/// Why received bytes are not a valid frame. Each maps to the status code a
/// server answers with ([`FrameError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first four bytes are not `ORDR`: not an orderd peer.
    #[error("bad magic: the peer does not speak the orderd protocol")]
    BadMagic,
    /// The header's protocol version is not spoken here.
    #[error(
        "unsupported protocol version {found} (this build speaks {} to {})",
        crate::limits::MIN_PROTOCOL_VERSION,
        crate::limits::PROTOCOL_VERSION
    )]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
    },
    /// The frame kind is unknown.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// The kind byte.
        found: u8,
    },
    /// The frame kind is known but not allowed here (e.g. a client sent `Replies`).
    #[error("frame kind {found:?} is not allowed in this direction or state")]
    UnexpectedKind {
        /// The kind.
        found: crate::kind::FrameKind,
    },
    /// Reserved flag bits are set.
    #[error("reserved flags {found:#04x} are set")]
    BadFlags {
        /// The flags byte.
        found: u8,
    },
    /// The payload is larger than the receiver accepts.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame declares more items than the receiver accepts.
    #[error("{items} items exceed the limit of {max} per frame")]
    TooManyItems {
        /// Declared items.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// The padding after the payload is not zero.
    #[error("non-zero padding after the payload")]
    NonZeroPadding,
    /// The payload is not a valid archive of the expected type (bounds,
    /// alignment, enum tags or pointers failed validation).
    #[error("payload is not a valid {what} archive")]
    BadArchive {
        /// The expected type.
        what: &'static str,
    },
    /// The header's `items` differs from the archive's vector length.
    #[error("header declares {header} items but the archive holds {archive}")]
    ItemCountMismatch {
        /// From the header.
        header: u32,
        /// From the archive.
        archive: usize,
    },
}

impl FrameError {
    /// The status code that answers this error on the wire.
    #[must_use]
    pub const fn status(&self) -> Status {
        match self {
            FrameError::UnsupportedVersion { .. } => Status::UnsupportedVersion,
            FrameError::UnknownKind { .. } | FrameError::UnexpectedKind { .. } => Status::UnknownFrameKind,
            FrameError::TooLarge { .. } => Status::FrameTooLarge,
            FrameError::TooManyItems { .. } => Status::BatchTooLarge,
            FrameError::BadMagic
            | FrameError::BadFlags { .. }
            | FrameError::NonZeroPadding
            | FrameError::BadArchive { .. }
            | FrameError::ItemCountMismatch { .. } => Status::BadFrame,
        }
    }

    /// The detail number sent with [`FrameError::status`].
    #[must_use]
    pub const fn detail(&self) -> u64 {
        match self {
            FrameError::UnsupportedVersion { .. } => crate::limits::PROTOCOL_VERSION as u64,
            FrameError::TooLarge { max, .. } | FrameError::TooManyItems { max, .. } => *max as u64,
            _ => 0,
        }
    }
}

/// Why a value could not be encoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded payload would exceed the limit.
    #[error("encoded payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More items than the limit allows in one frame.
    #[error("{items} items exceed the limit of {max} per frame")]
    TooManyItems {
        /// Items.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// rkyv failed to serialize (it cannot for the types of this crate).
    #[error("serialization failed: {0}")]
    Serialize(String),
}
