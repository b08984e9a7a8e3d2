//! PROTOCOL.md cannot drift from the code: its status table, limits table,
//! shard vectors and worked example are parsed here and compared with the
//! crate.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{hex, hex_blocks, parse_hex_dump};
use orderd_protocol::limits::*;
use orderd_protocol::shard::{mix64, shard_of_product};
use orderd_protocol::Status;

fn spec() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("PROTOCOL.md")).unwrap()
}

/// The cells of the rows of the first table after `marker`.
fn table_after(text: &str, marker: &str) -> Vec<Vec<String>> {
    let start = text.find(marker).unwrap_or_else(|| panic!("marker {marker} not found"));
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text[start..].lines().skip(1) {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<String> = line.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_string()).collect();
        rows.push(cells);
    }
    // Drop the header row and the |---| separator.
    rows.drain(..2.min(rows.len()));
    rows
}

fn parse_u64(cell: &str) -> u64 {
    match cell.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap_or_else(|e| panic!("{cell}: {e}")),
        None => cell.parse().unwrap_or_else(|e| panic!("{cell}: {e}")),
    }
}

#[test]
fn the_status_table_lists_exactly_every_status() {
    let rows = table_after(&spec(), "<!-- status-table");
    let in_doc: Vec<(u16, String)> = rows.iter().map(|r| (r[0].parse().unwrap(), r[1].clone())).collect();
    let in_code: Vec<(u16, String)> = Status::ALL.iter().map(|s| (s.code(), s.name().to_string())).collect();
    assert_eq!(in_doc, in_code);
    assert!(rows.iter().all(|r| r.len() == 3 && !r[2].is_empty()), "every status needs a meaning");
}

/// Every `pub const` of limits.rs with its value.
fn limits_in_code() -> BTreeMap<&'static str, u128> {
    BTreeMap::from([
        ("PROTOCOL_VERSION", PROTOCOL_VERSION as u128),
        ("MIN_PROTOCOL_VERSION", MIN_PROTOCOL_VERSION as u128),
        ("FRAME_HEADER_LEN", FRAME_HEADER_LEN as u128),
        ("FRAME_ALIGN", FRAME_ALIGN as u128),
        ("MAX_FRAME_PAYLOAD_BYTES", MAX_FRAME_PAYLOAD_BYTES as u128),
        ("DEFAULT_MAX_FRAME_PAYLOAD_BYTES", DEFAULT_MAX_FRAME_PAYLOAD_BYTES as u128),
        ("MAX_BATCH_REQUESTS", MAX_BATCH_REQUESTS as u128),
        ("DEFAULT_MAX_BATCH_REQUESTS", DEFAULT_MAX_BATCH_REQUESTS as u128),
        ("MAX_IN_FLIGHT_FRAMES", MAX_IN_FLIGHT_FRAMES as u128),
        ("DEFAULT_MAX_IN_FLIGHT_FRAMES", DEFAULT_MAX_IN_FLIGHT_FRAMES as u128),
        ("MAX_CORES", MAX_CORES as u128),
        ("MAX_SHARDS", MAX_SHARDS as u128),
        ("ORDER_ID_SEQUENCE_BITS", ORDER_ID_SEQUENCE_BITS as u128),
        ("ORDER_ID_SHARD_BITS", ORDER_ID_SHARD_BITS as u128),
        ("MAX_SUBSCRIBE_POSITIONS", MAX_SUBSCRIBE_POSITIONS as u128),
        ("MAX_TOP_PRODUCTS", MAX_TOP_PRODUCTS as u128),
        ("MAX_LIST_PRODUCTS", MAX_LIST_PRODUCTS as u128),
        ("MAX_SOLD_OUT_LISTED", MAX_SOLD_OUT_LISTED as u128),
        ("MAX_ORDER_QTY", MAX_ORDER_QTY as u128),
        ("MAX_UNIT_PRICE_CENTS", MAX_UNIT_PRICE_CENTS as u128),
        ("MAX_MOVE_CHUNK", MAX_MOVE_CHUNK as u128),
        ("MAX_REPLICATE_BYTES", MAX_REPLICATE_BYTES as u128),
    ])
}

#[test]
fn the_limits_table_lists_every_limit_with_its_value() {
    let rows = table_after(&spec(), "<!-- limits-table");
    let in_doc: BTreeMap<&str, u128> = rows.iter().map(|r| (r[0].as_str(), r[1].parse::<u128>().unwrap())).collect();
    assert_eq!(rows.len(), in_doc.len(), "a limit is listed twice");
    assert_eq!(in_doc, limits_in_code());
}

#[test]
fn every_pub_const_of_limits_rs_is_checked() {
    // A new limit must be added to `limits_in_code` (and so to PROTOCOL.md).
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/limits.rs")).unwrap();
    let mut in_src: Vec<&str> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter(|l| !l.starts_with("fn "))
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    in_src.sort_unstable();
    let mut checked: Vec<&str> = limits_in_code().into_keys().collect();
    checked.sort_unstable();
    assert_eq!(in_src, checked);
}

#[test]
fn the_shard_vectors_are_what_the_shard_function_computes() {
    let rows = table_after(&spec(), "<!-- shard-vectors");
    assert!(rows.len() >= 5);
    for r in rows {
        let product = parse_u64(&r[0]);
        assert_eq!(mix64(product), parse_u64(&r[1]), "mix64({product:#x})");
        for (col, count) in [(2, 16), (3, 64), (4, 1000)] {
            assert_eq!(u64::from(shard_of_product(product, count)), parse_u64(&r[col]), "shard of {product:#x} in {count}");
        }
    }
}

#[test]
fn the_worked_example_is_the_place_order_vector() {
    let blocks = hex_blocks(&spec());
    let (_, body) = blocks.iter().find(|(n, _)| n == "requests_place_order.bin").expect("worked example block");
    let file = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/requests_place_order.bin")).unwrap();
    assert_eq!(hex(&parse_hex_dump(body)), hex(&file));
}
