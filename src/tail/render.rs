//! The lines `orderd tail` prints: one per event (text or JSON), and the
//! closing position line.

use std::io::Write;

use orderd_protocol::message::{EventKind, StreamEvent};
use serde::Serialize;

/// An event as a JSON line. Field names are an interface scripts rely on;
/// ids are decimal strings (`crate::json_id`).
#[derive(Serialize)]
struct JsonEvent {
    kind: &'static str,
    #[serde(serialize_with = "crate::json_id::id")]
    order_id: u64,
    #[serde(serialize_with = "crate::json_id::id")]
    product: u64,
    #[serde(serialize_with = "crate::json_id::id")]
    user: u64,
    /// Units; negative for a stock adjustment that removed units.
    qty: i128,
    amount_cents: u64,
    /// In a cluster, the node whose log holds the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    core: u16,
    offset: u64,
    time_ms: u64,
}

/// The event's units: signed for a stock adjustment.
fn units(event: &StreamEvent) -> i128 {
    match event.kind {
        EventKind::StockAdjusted => i128::from(event.qty.cast_signed()),
        _ => i128::from(event.qty),
    }
}

/// Writes one event line.
///
/// # Errors
/// Writing to `out` failed.
pub fn event_line(out: &mut impl Write, event: &StreamEvent, json: bool) -> std::io::Result<()> {
    event_line_of(out, None, event, json)
}

/// Writes one event line of node `node` (in a cluster: `(node, core,
/// offset)` names the event).
///
/// # Errors
/// Writing to `out` failed.
pub fn event_line_of(out: &mut impl Write, node: Option<&str>, event: &StreamEvent, json: bool) -> std::io::Result<()> {
    if json {
        let line = JsonEvent {
            kind: event.kind.name(),
            order_id: event.order_id,
            product: event.product,
            user: event.user,
            qty: units(event),
            amount_cents: event.amount_cents,
            node: node.map(str::to_owned),
            core: event.core,
            offset: event.offset,
            time_ms: event.time_ms,
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
        return writeln!(out);
    }
    let at = match node {
        Some(node) => format!("{node}:{}:{}", event.core, event.offset),
        None => format!("{}:{}", event.core, event.offset),
    };
    match event.kind {
        EventKind::ProductUpserted => {
            writeln!(
                out,
                "{at:>12}  {:<16} product={} available={} unit_price_cents={}",
                event.kind.name(),
                event.product,
                event.qty,
                event.amount_cents
            )
        }
        EventKind::StockAdjusted => writeln!(out, "{at:>12}  {:<16} product={} delta={:+}", event.kind.name(), event.product, units(event)),
        _ => writeln!(
            out,
            "{at:>12}  {:<16} order={} product={} user={} qty={} amount_cents={}",
            event.kind.name(),
            event.order_id,
            event.product,
            event.user,
            event.qty,
            event.amount_cents
        ),
    }
}

/// Writes the closing line: the position to resume from (`--from` takes it).
///
/// # Errors
/// Writing to `out` failed.
pub fn position_line(out: &mut impl Write, position: &str, events: u64, json: bool) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::json!({ "position": position, "events": events }))
    } else {
        writeln!(out, "# {events} events; resume with: --from {position}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, qty: u64) -> StreamEvent {
        StreamEvent { offset: 9, order_id: 5, product: 7, user: 3, amount_cents: 400, time_ms: 1, qty, core: 1, kind }
    }

    #[test]
    fn json_lines_carry_the_fixed_fields() {
        let mut out = Vec::new();
        event_line(&mut out, &event(EventKind::Paid, 2), true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for (field, want) in [
            ("kind", "\"paid\""),
            ("order_id", "\"5\""),
            ("product", "\"7\""),
            ("user", "\"3\""),
            ("qty", "2"),
            ("amount_cents", "400"),
            ("core", "1"),
            ("offset", "9"),
        ] {
            assert_eq!(v[field].to_string(), want, "{field}");
        }
        out.clear();
        event_line(&mut out, &event(EventKind::StockAdjusted, (-4i64).cast_unsigned()), true).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap()["qty"], -4);
    }

    #[test]
    fn the_position_line_can_be_fed_back() {
        let mut out = Vec::new();
        position_line(&mut out, "3,4", 2, false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "# 2 events; resume with: --from 3,4\n");
        let mut out = Vec::new();
        position_line(&mut out, "3,4", 2, true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"events\":2,\"position\":\"3,4\"}\n");
    }
}
