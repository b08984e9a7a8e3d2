//! u64 ids in JSON output as decimal strings: a JSON number above 2^53
//! loses digits in JavaScript and in jq (16044073672507393 reads back as
//! ...392), so every id orderd prints as JSON (order, product, user and
//! server ids) is a string, `"16044073672507393"`, which every consumer
//! keeps exactly. Counters and amounts stay numbers.

use serde::Serializer;

/// `#[serde(serialize_with = "crate::json_id::id")]` on a `u64` id.
///
/// # Errors
/// The serializer's.
#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's serialize_with passes a reference")]
pub fn id<S: Serializer>(id: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

/// `#[serde(serialize_with = "crate::json_id::ids")]` on a `Vec<u64>` of ids.
///
/// # Errors
/// The serializer's.
pub fn ids<S: Serializer>(ids: &[u64], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(ids.iter().map(u64::to_string))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize)]
    struct Row {
        #[serde(serialize_with = "super::id")]
        order_id: u64,
        units: u64,
    }

    #[test]
    fn an_id_past_2_pow_53_survives_a_javascript_round_trip() {
        let text = serde_json::to_string(&Row { order_id: 16_044_073_672_507_393, units: 3 }).unwrap();
        assert_eq!(text, r#"{"order_id":"16044073672507393","units":3}"#);
        // What a JavaScript or jq consumer does with a number: an f64.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let back: u64 = v["order_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(back, 16_044_073_672_507_393);
        assert_ne!(16_044_073_672_507_393u64 as f64 as u64, 16_044_073_672_507_393, "a number would have lost a digit");
    }
}
