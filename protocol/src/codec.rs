//! The sans-I/O codec: values to frame bytes and frame payloads to values.
//!
//! No sockets here: encoders append to a `Vec<u8>`, decoders read a payload
//! slice (from [`crate::buffer::FrameBuffer`] or anywhere). Nothing in this
//! module panics on any input; every failure is a typed error.
//!
//! Two ways to read a payload:
//! - zero copy: [`access_requests`] validates the archive once and returns a
//!   view of it (the server's path);
//! - owned: [`decode_replies`] and friends validate and deserialize into
//!   ordinary values (the SDK's path).

use rkyv::rancor;
use rkyv::ser::allocator::Arena;
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Place, Serialize};

use crate::error::{EncodeError, FrameError};
use crate::frame::{FrameHeader, FrameKind};
use crate::limits::{padded_len, FRAME_HEADER_LEN, MAX_BATCH_REQUESTS, MAX_FRAME_PAYLOAD_BYTES, MIN_PROTOCOL_VERSION};
use crate::message::{
    ArchivedErrorFrame, ArchivedHello, ArchivedReply, ArchivedRequest, ArchivedStreamEvent, ArchivedWelcome, ErrorFrame, Hello, Reply,
    Request, StreamEvent, Welcome,
};

/// A borrowed slice that archives as a `Vec<T>`, so a batch can be encoded
/// without first collecting it into a `Vec`.
pub struct SliceAsVec<'a, T>(pub &'a [T]);

impl<T: Archive> Archive for SliceAsVec<'_, T> {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_slice(self.0, resolver, out);
    }
}

impl<T, S> Serialize<S> for SliceAsVec<'_, T>
where
    T: Serialize<S>,
    S: rancor::Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedVec::serialize_from_slice(self.0, serializer)
    }
}

/// Appends frames to a byte vector, reusing its serialization scratch memory
/// between frames (no allocation per frame once warmed up).
pub struct Encoder {
    arena: Arena,
    max_payload_bytes: usize,
    max_items: usize,
    /// The version written in every frame header (a connection's version,
    /// once its handshake chose one; [`MIN_PROTOCOL_VERSION`] before).
    version: u16,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new(MAX_FRAME_PAYLOAD_BYTES, MAX_BATCH_REQUESTS)
    }
}

impl Encoder {
    /// An encoder that refuses payloads over `max_payload_bytes` and vector
    /// payloads of more than `max_items` elements.
    #[must_use]
    pub fn new(max_payload_bytes: usize, max_items: usize) -> Self {
        Encoder { arena: Arena::new(), max_payload_bytes, max_items, version: MIN_PROTOCOL_VERSION }
    }

    /// Writes `version` in the headers of the frames encoded from now on:
    /// the version a connection's handshake chose (`Welcome.version`).
    pub fn set_version(&mut self, version: u16) {
        self.version = version;
    }

    /// The version written in frame headers.
    #[must_use]
    pub const fn version(&self) -> u16 {
        self.version
    }

    /// Append one frame whose payload is `value`'s archive. On error `out`
    /// is left as it was.
    pub fn encode<T>(&mut self, out: &mut Vec<u8>, kind: FrameKind, correlation: u64, items: u32, value: &T) -> Result<(), EncodeError>
    where
        T: for<'a> Serialize<rkyv::api::high::HighSerializer<Vec<u8>, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>>,
    {
        if items as usize > self.max_items {
            return Err(EncodeError::TooManyItems { items: items as usize, max: self.max_items });
        }
        let frame_start = out.len();
        debug_assert_eq!(frame_start % crate::limits::FRAME_ALIGN, 0, "frames must start 8-aligned");
        out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        let payload_start = out.len();
        let taken = std::mem::take(out);
        let result = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(value, taken, self.arena.acquire());
        let mut written = match result {
            Ok(v) => v,
            Err(e) => {
                // The writer was consumed; rkyv's types here cannot fail, but
                // stay correct if one ever does.
                return Err(EncodeError::Serialize(e.to_string()));
            }
        };
        let payload_len = written.len() - payload_start;
        if payload_len > self.max_payload_bytes {
            written.truncate(frame_start);
            *out = written;
            return Err(EncodeError::TooLarge { len: payload_len, max: self.max_payload_bytes });
        }
        let header = FrameHeader { version: self.version, kind, flags: 0, correlation, payload_len: payload_len as u32, items };
        written[frame_start..payload_start].copy_from_slice(&header.to_bytes());
        written.resize(payload_start + padded_len(payload_len), 0);
        *out = written;
        // Give the arena back its memory for the next frame; shrink it if a
        // huge frame grew it (bounded scratch memory).
        self.arena.shrink();
        Ok(())
    }

    /// Append a `Requests` frame carrying `requests`.
    pub fn requests(&mut self, out: &mut Vec<u8>, correlation: u64, requests: &[Request]) -> Result<(), EncodeError> {
        self.encode(out, FrameKind::Requests, correlation, items(requests.len())?, &SliceAsVec(requests))
    }

    /// Append a `Replies` frame carrying `replies`.
    pub fn replies(&mut self, out: &mut Vec<u8>, correlation: u64, replies: &[Reply]) -> Result<(), EncodeError> {
        self.encode(out, FrameKind::Replies, correlation, items(replies.len())?, &SliceAsVec(replies))
    }

    /// Append an `Events` frame carrying `events`.
    pub fn events(&mut self, out: &mut Vec<u8>, correlation: u64, events: &[StreamEvent]) -> Result<(), EncodeError> {
        self.encode(out, FrameKind::Events, correlation, items(events.len())?, &SliceAsVec(events))
    }

    /// Append a `Hello` frame.
    pub fn hello(&mut self, out: &mut Vec<u8>, correlation: u64, hello: &Hello) -> Result<(), EncodeError> {
        self.encode(out, FrameKind::Hello, correlation, 0, hello)
    }

    /// Append a `Welcome` frame.
    pub fn welcome(&mut self, out: &mut Vec<u8>, correlation: u64, welcome: &Welcome) -> Result<(), EncodeError> {
        self.encode(out, FrameKind::Welcome, correlation, 0, welcome)
    }

    /// Append an `Error` frame.
    pub fn error(&mut self, out: &mut Vec<u8>, correlation: u64, error: &ErrorFrame) -> Result<(), EncodeError> {
        self.encode(out, FrameKind::Error, correlation, 0, error)
    }
}

fn items(n: usize) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(|_| EncodeError::TooManyItems { items: n, max: MAX_BATCH_REQUESTS })
}

/// Validate `payload` as an archived `Vec<T>` whose length must equal the
/// header's `items`.
fn access_vec<'a, T>(payload: &'a [u8], items: u32, what: &'static str) -> Result<&'a ArchivedVec<T>, FrameError>
where
    T: rkyv::Portable + for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rancor::Failure>>,
{
    let vec = rkyv::access::<ArchivedVec<T>, rancor::Failure>(payload).map_err(|_| FrameError::BadArchive { what })?;
    if vec.len() != items as usize {
        return Err(FrameError::ItemCountMismatch { header: items, archive: vec.len() });
    }
    // rkyv reads the root from the last bytes of the payload, so a header
    // whose payload_len lies moves the root onto other bytes that may still
    // validate. The canonical layout (PROTOCOL.md § Archive layout) puts the
    // element array immediately before the root; insisting on it means a
    // moved root has to find a pointer to exactly `items` elements ending
    // exactly where it stands, which bytes at the wrong place do not hold.
    let root_pos = payload.len() - std::mem::size_of::<ArchivedVec<T>>();
    let elems_end = (vec.as_ptr() as usize).wrapping_sub(payload.as_ptr() as usize).wrapping_add(std::mem::size_of_val(vec.as_slice()));
    if elems_end != root_pos {
        return Err(FrameError::BadArchive { what });
    }
    Ok(vec)
}

/// Zero-copy view of a `Requests` payload, validated (bounds, alignment,
/// tags, pointers) before any field is read.
pub fn access_requests<'a>(payload: &'a [u8], header: &FrameHeader) -> Result<&'a ArchivedVec<ArchivedRequest>, FrameError> {
    expect_kind(header, FrameKind::Requests)?;
    access_vec(payload, header.items, "Vec<Request>")
}

/// Zero-copy view of a `Replies` payload.
pub fn access_replies<'a>(payload: &'a [u8], header: &FrameHeader) -> Result<&'a ArchivedVec<ArchivedReply>, FrameError> {
    expect_kind(header, FrameKind::Replies)?;
    access_vec(payload, header.items, "Vec<Reply>")
}

/// Zero-copy view of an `Events` payload.
pub fn access_events<'a>(payload: &'a [u8], header: &FrameHeader) -> Result<&'a ArchivedVec<ArchivedStreamEvent>, FrameError> {
    expect_kind(header, FrameKind::Events)?;
    access_vec(payload, header.items, "Vec<StreamEvent>")
}

fn expect_kind(header: &FrameHeader, kind: FrameKind) -> Result<(), FrameError> {
    if header.kind == kind {
        Ok(())
    } else {
        Err(FrameError::UnexpectedKind { found: header.kind })
    }
}

fn owned<A, T>(archived: &A, what: &'static str) -> Result<T, FrameError>
where
    A: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Failure>>,
{
    rkyv::deserialize::<T, rancor::Failure>(archived).map_err(|_| FrameError::BadArchive { what })
}

/// Decode a payload whose root is one struct (`items` must be 0).
///
/// These frames are rare (handshake, errors), so they are held to the
/// strictest rule: the payload must be exactly the canonical encoding of the
/// value it decodes to. rkyv reads the root from the end of the payload; a
/// header whose payload_len lies would otherwise yield a root read from the
/// wrong bytes, which still validates (plain integers accept any bits).
fn decode_one<A, T>(payload: &[u8], header: &FrameHeader, kind: FrameKind, what: &'static str) -> Result<T, FrameError>
where
    A: rkyv::Portable
        + for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rancor::Failure>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Failure>>,
    T: for<'a> Serialize<rkyv::api::high::HighSerializer<rkyv::util::AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Failure>>,
{
    expect_kind(header, kind)?;
    if header.items != 0 {
        return Err(FrameError::ItemCountMismatch { header: header.items, archive: 0 });
    }
    let archived = rkyv::access::<A, rancor::Failure>(payload).map_err(|_| FrameError::BadArchive { what })?;
    let value: T = owned(archived, what)?;
    match rkyv::to_bytes::<rancor::Failure>(&value) {
        Ok(canonical) if canonical.as_slice() == payload => Ok(value),
        _ => Err(FrameError::BadArchive { what }),
    }
}

/// Decode a `Requests` payload into owned requests.
pub fn decode_requests(payload: &[u8], header: &FrameHeader) -> Result<Vec<Request>, FrameError> {
    owned(access_requests(payload, header)?, "Vec<Request>")
}

/// Decode a `Replies` payload into owned replies.
pub fn decode_replies(payload: &[u8], header: &FrameHeader) -> Result<Vec<Reply>, FrameError> {
    owned(access_replies(payload, header)?, "Vec<Reply>")
}

/// Decode an `Events` payload into owned events.
pub fn decode_events(payload: &[u8], header: &FrameHeader) -> Result<Vec<StreamEvent>, FrameError> {
    owned(access_events(payload, header)?, "Vec<StreamEvent>")
}

/// Decode a `Hello` payload.
pub fn decode_hello(payload: &[u8], header: &FrameHeader) -> Result<Hello, FrameError> {
    decode_one::<ArchivedHello, Hello>(payload, header, FrameKind::Hello, "Hello")
}

/// Decode a `Welcome` payload.
pub fn decode_welcome(payload: &[u8], header: &FrameHeader) -> Result<Welcome, FrameError> {
    decode_one::<ArchivedWelcome, Welcome>(payload, header, FrameKind::Welcome, "Welcome")
}

/// Decode an `Error` payload.
pub fn decode_error(payload: &[u8], header: &FrameHeader) -> Result<ErrorFrame, FrameError> {
    decode_one::<ArchivedErrorFrame, ErrorFrame>(payload, header, FrameKind::Error, "ErrorFrame")
}

/// Any frame a server sends, decoded into owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// The handshake answer.
    Welcome(Welcome),
    /// Answers to the request frame with this correlation id.
    Replies(u64, Vec<Reply>),
    /// A frame-level refusal of the frame with this correlation id (`0` when
    /// it concerns the connection as a whole).
    Error(u64, ErrorFrame),
    /// Stream events for the subscription with this correlation id.
    Events(u64, Vec<StreamEvent>),
}

/// Decode one complete frame that a server sent. Client-to-server kinds are
/// refused as `UnexpectedKind`.
pub fn decode_server_frame(payload: &[u8], header: &FrameHeader) -> Result<ServerFrame, FrameError> {
    let c = header.correlation;
    match header.kind {
        FrameKind::Welcome => decode_welcome(payload, header).map(ServerFrame::Welcome),
        FrameKind::Replies => decode_replies(payload, header).map(|r| ServerFrame::Replies(c, r)),
        FrameKind::Error => decode_error(payload, header).map(|e| ServerFrame::Error(c, e)),
        FrameKind::Events => decode_events(payload, header).map(|e| ServerFrame::Events(c, e)),
        FrameKind::Hello | FrameKind::Requests => Err(FrameError::UnexpectedKind { found: header.kind }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::FrameBuffer;
    use crate::frame::{FrameCheck, FrameLimits};
    use crate::message::{IdempotencyKey, Order, OrderRef, OrderState, PlaceOrder, ServerLimits};

    fn place(n: u64) -> Request {
        Request::PlaceOrder(PlaceOrder { key: (n as u128).into(), user: n, product: n + 1, unit_price_cents: 100, qty: 1 })
    }

    #[test]
    fn frames_written_back_to_back_decode_in_place() {
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        let a = vec![place(1), Request::Stats, Request::PayOrder(OrderRef { order_id: 9 })];
        let b: Vec<Request> = (0..100).map(place).collect();
        enc.requests(&mut out, 1, &a).unwrap();
        enc.requests(&mut out, 2, &b).unwrap();
        enc.requests(&mut out, 3, &[]).unwrap();
        let mut buf = FrameBuffer::new(64, FrameLimits::WIRE_MAX);
        // Feed in odd-sized pieces to exercise reassembly.
        let mut fed = 0;
        let mut got = Vec::new();
        while got.len() < 3 {
            match buf.check() {
                FrameCheck::Complete(h) => {
                    got.push((h.correlation, decode_requests(buf.payload(&h), &h).unwrap()));
                    buf.consume(&h);
                }
                FrameCheck::Incomplete { .. } => {
                    let n = 13.min(out.len() - fed);
                    buf.spare(n)[..n].copy_from_slice(&out[fed..fed + n]);
                    buf.commit(n);
                    fed += n;
                }
                FrameCheck::Invalid(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, vec![(1, a), (2, b), (3, vec![])]);
    }

    /// Encode `frames` back to back, set the first frame's payload_len to
    /// `lie`, and decode that first frame as a server frame.
    fn decode_with_lying_len(frames: impl Fn(&mut Encoder, &mut Vec<u8>), lie: u32) -> Option<Result<ServerFrame, FrameError>> {
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        frames(&mut enc, &mut out);
        out[16..20].copy_from_slice(&lie.to_le_bytes());
        let mut buf = FrameBuffer::new(out.len(), FrameLimits::WIRE_MAX);
        buf.spare(out.len())[..out.len()].copy_from_slice(&out);
        buf.commit(out.len());
        match buf.check() {
            FrameCheck::Complete(h) => Some(decode_server_frame(buf.payload(&h), &h)),
            _ => None,
        }
    }

    #[test]
    fn a_lying_payload_len_never_moves_the_root_onto_other_bytes() {
        // The payload is 16 bytes; at 24 the root would be read from the
        // error's detail and the next frame's magic, which once decoded as
        // a valid ErrorFrame { code: 1800, .. }.
        let error_then_hello = |enc: &mut Encoder, out: &mut Vec<u8>| {
            enc.error(out, 0, &ErrorFrame { code: 100, detail: 0x0102_0304_0506_0708 }).unwrap();
            enc.welcome(
                out,
                0,
                &Welcome {
                    server_id: 1,
                    version: 1,
                    core: 0,
                    cores: vec![],
                    shard_owner: vec![0],
                    limits: ServerLimits { max_frame_bytes: 8, max_batch: 1, max_in_flight: 1 },
                },
            )
            .unwrap();
        };
        for lie in [0, 8, 15, 17, 24, 32, 40] {
            match decode_with_lying_len(error_then_hello, lie) {
                None | Some(Err(_)) => {}
                Some(Ok(v)) => panic!("payload_len {lie} accepted as {v:?}"),
            }
        }
        let replies = |enc: &mut Encoder, out: &mut Vec<u8>| {
            enc.replies(out, 7, &[Reply::rejected(crate::Status::SoldOut, 3), Reply::rejected(crate::Status::SoldOut, 0)]).unwrap();
            enc.replies(out, 8, &[]).unwrap();
        };
        let honest = decode_with_lying_len(replies, 2 * 80 + 8).unwrap().unwrap();
        for lie in (0..=2 * 80 + 8 + 32).filter(|&l| l != 2 * 80 + 8) {
            match decode_with_lying_len(replies, lie) {
                None | Some(Err(_)) => {}
                Some(Ok(v)) => assert_eq!(v, honest, "payload_len {lie}"),
            }
        }
    }

    #[test]
    fn a_moved_root_must_stand_right_after_its_elements() {
        // Two replies (80 bytes each) and the root at 160. With payload_len
        // 152 and items 1, rkyv reads the root at 144: the second order's
        // `expires_ms`, chosen here to look like a pointer back to the first
        // element with length 1. That validates, and would decode as a batch
        // of one order that was never sent as such.
        let order = |expires_ms| Order {
            id: 1,
            key: IdempotencyKey::default(),
            user: 1,
            product: 1,
            unit_price_cents: 1,
            created_ms: 0,
            expires_ms,
            qty: 1,
            state: OrderState::Placed,
        };
        let fake_root = (1u64 << 32) | u64::from((-144i32) as u32);
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        enc.replies(&mut out, 1, &[Reply::Order(order(0)), Reply::Order(order(fake_root))]).unwrap();
        out[16..20].copy_from_slice(&152u32.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.extend_from_slice(&out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 152]);
        let header =
            FrameHeader { version: MIN_PROTOCOL_VERSION, kind: FrameKind::Replies, flags: 0, correlation: 1, payload_len: 152, items: 1 };
        assert_eq!(decode_replies(&buf, &header), Err(FrameError::BadArchive { what: "Vec<Reply>" }));
    }

    #[test]
    fn struct_frames_must_declare_zero_items() {
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        enc.hello(&mut out, 0, &Hello { client_id: 1, min_version: 1, max_version: 1 }).unwrap();
        out[20] = 1;
        let header = match crate::frame::check(&out, &FrameLimits::WIRE_MAX) {
            FrameCheck::Complete(h) => h,
            v => panic!("{v:?}"),
        };
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.extend_from_slice(crate::frame::payload(&out, &header));
        assert_eq!(decode_hello(&buf, &header), Err(FrameError::ItemCountMismatch { header: 1, archive: 0 }));
    }
}
