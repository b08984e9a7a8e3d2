//! The bytes of a `Replicate` request's events (PROTOCOL.md § 8.2): each
//! event with its shard and its position in the shard's history, in the
//! log's event encoding. Pure: no I/O.
//!
//! ```text
//! offset size field
//!   0     4   shard
//!   4     4   reserved (zero)
//!   8     8   position: events of the shard since it was created, this one included
//!  16     1   kind        (the event's, `engine::event`)
//!  17     1   format      (the event encoding's version)
//!  18     2   body length
//!  20     …   body, then zeros to a multiple of 8 bytes
//! ```

use crate::engine::{Event, EVENT_FORMAT_VERSION};

/// Bytes before an event's body.
const HEAD_LEN: usize = 20;

/// Appends `event` of `shard` at `position` to `out`.
pub fn push(out: &mut Vec<u8>, shard: u32, position: u64, event: &Event) {
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.push(event.kind());
    out.push(EVENT_FORMAT_VERSION);
    out.extend_from_slice(&(event.encoded_len() as u16).to_le_bytes());
    event.encode_to_vec(out);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// One decoded event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicated {
    /// Its shard.
    pub shard: u32,
    /// Its position in the shard's history.
    pub position: u64,
    /// The event.
    pub event: Event,
}

/// The events of `bytes`, in order. Never panics.
///
/// # Errors
/// Why the bytes are not a batch, in words.
pub fn decode(bytes: &[u8]) -> Result<Vec<Replicated>, String> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = bytes.get(at..at + HEAD_LEN).ok_or_else(|| format!("an event cut short at byte {at}"))?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let shard = word(0);
        if word(4) != 0 {
            return Err(format!("reserved bytes not zero at byte {at}"));
        }
        let position = u64::from(word(8)) | (u64::from(word(12)) << 32);
        let len = usize::from(u16::from_le_bytes([head[18], head[19]]));
        let body = bytes.get(at + HEAD_LEN..at + HEAD_LEN + len).ok_or_else(|| format!("an event body cut short at byte {at}"))?;
        let event = Event::decode(head[16], head[17], body).map_err(|e| format!("event at byte {at}: {e}"))?;
        events.push(Replicated { shard, position, event });
        at = (at + HEAD_LEN + len).next_multiple_of(8);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OrderFacts;

    #[test]
    fn events_round_trip_and_damage_is_refused() {
        let a = Event::OrderPaid { time_ms: 5, order_id: 7, facts: OrderFacts { user: 1, product: 2, unit_price_cents: 3, qty: 4 } };
        let b = Event::StockAdjusted { time_ms: 6, product: 2, delta: -3 };
        let mut out = Vec::new();
        push(&mut out, 3, 41, &a);
        push(&mut out, 5, 9, &b);
        assert_eq!(out.len() % 8, 0);
        let decoded = decode(&out).unwrap();
        assert_eq!(decoded, vec![Replicated { shard: 3, position: 41, event: a }, Replicated { shard: 5, position: 9, event: b }]);
        assert!(decode(&out[..out.len() - 9]).is_err(), "cut short");
        let mut bad = out.clone();
        bad[4] = 1;
        assert!(decode(&bad).is_err(), "reserved bytes");
        bad = out;
        bad[16] = 250;
        assert!(decode(&bad).is_err(), "unknown kind");
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }
}
