//! The SDK's typed errors: what went wrong and where, in words an operator
//! can act on.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{EncodeError, FrameError};
use crate::message::Rejection;
use crate::status::Status;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No TCP connection could be made.
    #[error("cannot connect to orderd at {addr}: {source} (is the server running and listening there?)")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No address could be resolved from what was given.
    #[error("cannot resolve orderd address {given:?}: {detail}")]
    Resolve {
        /// What the caller passed.
        given: String,
        /// Why.
        detail: String,
    },
    /// Reading or writing the connection failed.
    #[error("i/o error talking to orderd at {addr}: {source}")]
    Io {
        /// The peer.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("orderd at {addr} closed the connection")]
    Closed {
        /// The peer.
        addr: SocketAddr,
    },
    /// No answer within the configured request timeout.
    #[error("no answer from orderd at {addr} within {after:?}")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server sent bytes that are not a valid frame.
    #[error("invalid frame from orderd at {addr}: {source}")]
    Frame {
        /// The peer.
        addr: SocketAddr,
        /// What was wrong.
        source: FrameError,
    },
    /// A request could not be encoded (too large for one frame).
    #[error("cannot encode request: {0}")]
    Encode(#[from] EncodeError),
    /// The server refused the handshake or the connection (an `Error` frame).
    #[error("orderd at {addr} refused: {}", describe(*code, *detail))]
    Refused {
        /// The peer.
        addr: SocketAddr,
        /// Status code.
        code: u16,
        /// Detail.
        detail: u64,
    },
    /// The server answered out of protocol (e.g. a reply of the wrong kind).
    #[error("protocol violation by orderd at {addr}: {what}")]
    Protocol {
        /// The peer.
        addr: SocketAddr,
        /// What was unexpected.
        what: String,
    },
    /// The request needs a newer protocol version than the server speaks;
    /// nothing was sent.
    #[error("this request needs protocol version {needs}, but the server speaks {server}: upgrade the server")]
    Unsupported {
        /// The version the request needs.
        needs: u16,
        /// The version the connection chose.
        server: u16,
    },
    /// A reply of another kind than the request calls for.
    #[error("unexpected reply: expected {expected}, got {got}")]
    UnexpectedReply {
        /// The reply kind the request calls for.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// The request was refused by the server with a status code.
    #[error("request rejected: {0}")]
    Rejected(Rejection),
    /// The connection failed while a non-idempotent request (stock
    /// adjustment, subscription) was in flight: it may or may not have been
    /// applied. Read the state back before retrying.
    #[error("outcome unknown: the connection to {addr} failed while a non-idempotent request was in flight ({cause})")]
    Indeterminate {
        /// The peer.
        addr: SocketAddr,
        /// The failure.
        cause: String,
    },
    /// Gave up after retrying.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<ClientError>,
    },
}

fn describe(code: u16, detail: u64) -> String {
    Rejection { code, detail }.to_string()
}

impl ClientError {
    /// The status code when the server refused (per request or per frame).
    #[must_use]
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Rejected(r) => r.status(),
            ClientError::Refused { code, .. } => Status::from_code(*code),
            ClientError::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Whether the failure is of the transport (connection, timeout,
    /// garbage), after which an idempotent request may be resent.
    #[must_use]
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Io { .. }
                | ClientError::Closed { .. }
                | ClientError::Timeout { .. }
                | ClientError::Frame { .. }
                | ClientError::Protocol { .. }
        ) || matches!(self, ClientError::Refused { code, .. } if Status::from_code(*code).is_some_and(Status::is_transient))
    }
}

/// Shorthand for SDK results.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
