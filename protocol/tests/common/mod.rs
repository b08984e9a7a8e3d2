//! Helpers shared by the integration tests: decode one frame from bytes the
//! way a receiver does (check the header, copy into an aligned buffer,
//! validate the payload).
#![allow(dead_code)]

use orderd_protocol::codec::{decode_error, decode_events, decode_hello, decode_replies, decode_requests, decode_welcome};
use orderd_protocol::frame::{check, FrameCheck, FrameHeader, FrameKind, FrameLimits};
use orderd_protocol::limits::FRAME_HEADER_LEN;
use orderd_protocol::message::{ErrorFrame, Hello, Reply, Request, StreamEvent, Welcome};
use orderd_protocol::FrameError;

/// Any frame's content, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Hello(Hello),
    Welcome(Welcome),
    Requests(Vec<Request>),
    Replies(Vec<Reply>),
    Error(ErrorFrame),
    Events(Vec<StreamEvent>),
}

/// What a receiver makes of some bytes that should hold one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Incomplete { need: usize },
    Invalid(FrameError),
    Decoded(FrameHeader, Payload),
    Refused(FrameHeader, FrameError),
}

/// Decode the payload of a checked frame with the `decode_*` function of its kind.
pub fn decode_payload(payload: &[u8], h: &FrameHeader) -> Result<Payload, FrameError> {
    // Copy into a 16-aligned buffer, as `FrameBuffer` guarantees on the real path.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let p = &aligned[..];
    Ok(match h.kind {
        FrameKind::Hello => Payload::Hello(decode_hello(p, h)?),
        FrameKind::Welcome => Payload::Welcome(decode_welcome(p, h)?),
        FrameKind::Requests => Payload::Requests(decode_requests(p, h)?),
        FrameKind::Replies => Payload::Replies(decode_replies(p, h)?),
        FrameKind::Error => Payload::Error(decode_error(p, h)?),
        FrameKind::Events => Payload::Events(decode_events(p, h)?),
    })
}

/// Check the frame at the start of `bytes` and decode it.
pub fn receive(bytes: &[u8], limits: &FrameLimits) -> Outcome {
    match check(bytes, limits) {
        FrameCheck::Incomplete { need } => Outcome::Incomplete { need },
        FrameCheck::Invalid(e) => Outcome::Invalid(e),
        FrameCheck::Complete(h) => {
            let payload = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + h.payload_len as usize];
            match decode_payload(payload, &h) {
                Ok(p) => Outcome::Decoded(h, p),
                Err(e) => Outcome::Refused(h, e),
            }
        }
    }
}

/// Encode one frame carrying `payload`.
pub fn encode(
    enc: &mut orderd_protocol::codec::Encoder,
    correlation: u64,
    payload: &Payload,
) -> Result<Vec<u8>, orderd_protocol::EncodeError> {
    let mut out = Vec::new();
    match payload {
        Payload::Hello(v) => enc.hello(&mut out, correlation, v)?,
        Payload::Welcome(v) => enc.welcome(&mut out, correlation, v)?,
        Payload::Requests(v) => enc.requests(&mut out, correlation, v)?,
        Payload::Replies(v) => enc.replies(&mut out, correlation, v)?,
        Payload::Error(v) => enc.error(&mut out, correlation, v)?,
        Payload::Events(v) => enc.events(&mut out, correlation, v)?,
    }
    Ok(out)
}

/// Bytes as lowercase hex pairs separated by spaces.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Parse the hex pairs of a dump: on each line, everything after a `#` is a
/// comment and a leading `0000:` offset is skipped.
pub fn parse_hex_dump(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let line = match line.split_once(':') {
            Some((_, rest)) => rest,
            None => line,
        };
        for tok in line.split_whitespace() {
            out.push(u8::from_str_radix(tok, 16).unwrap_or_else(|_| panic!("bad hex byte {tok:?} in {line:?}")));
        }
    }
    out
}

/// The fenced blocks of a markdown text whose info string is `hex <name>`,
/// as (name, body) pairs.
pub fn hex_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.trim().strip_prefix("```hex ") {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            blocks.push((name.trim().to_string(), body));
        }
    }
    blocks
}
