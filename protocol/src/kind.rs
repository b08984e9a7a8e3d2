//! [`FrameKind`]: what a frame carries (the header's byte 6). Its own
//! module so that both the frame header and the frame errors name it
//! without importing each other; `crate::frame` re-exports it.

/// What a frame carries. The number is the wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client -> server, first frame: [`crate::message::Hello`].
    Hello = 1,
    /// Server -> client: [`crate::message::Welcome`].
    Welcome = 2,
    /// Client -> server: a batch, `Vec<Request>`.
    Requests = 3,
    /// Server -> client: the batch's answers in order, `Vec<Reply>`.
    Replies = 4,
    /// Server -> client: a frame-level refusal, [`crate::message::ErrorFrame`].
    Error = 5,
    /// Server -> subscriber: `Vec<StreamEvent>`.
    Events = 6,
}

impl FrameKind {
    /// The kind with this wire value.
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<FrameKind> {
        Some(match v {
            1 => FrameKind::Hello,
            2 => FrameKind::Welcome,
            3 => FrameKind::Requests,
            4 => FrameKind::Replies,
            5 => FrameKind::Error,
            6 => FrameKind::Events,
            _ => return None,
        })
    }

    /// Whether a client may send this kind.
    #[must_use]
    pub const fn is_client_to_server(self) -> bool {
        matches!(self, FrameKind::Hello | FrameKind::Requests)
    }
}
