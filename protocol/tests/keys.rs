//! Time-ordered idempotency keys have the UUIDv7 layout (RFC 9562), so that
//! a client in any language can make them with its UUID library.

use orderd_protocol::IdempotencyKey;

/// RFC 9562 appendix A.6: `017F22E2-79B0-7CC3-98C4-DC0C0C07398F`, made at
/// 2022-02-22 19:22:22.000 UTC.
const RFC_EXAMPLE: IdempotencyKey = IdempotencyKey { hi: 0x017F_22E2_79B0_7CC3, lo: 0x98C4_DC0C_0C07_398F };
const RFC_EXAMPLE_MS: u64 = 1_645_557_742_000;

#[test]
fn the_rfc_9562_example_is_a_time_ordered_key_with_its_time() {
    assert_eq!(RFC_EXAMPLE.time_ms(), Some(RFC_EXAMPLE_MS));
}

#[test]
fn timed_makes_the_rfc_example_from_its_time_and_random_bits() {
    let random = (0xCC3u128 << 64) | 0x18C4_DC0C_0C07_398F;
    assert_eq!(IdempotencyKey::timed(RFC_EXAMPLE_MS, random), RFC_EXAMPLE);
}

#[test]
fn keys_of_other_versions_or_variants_carry_no_time() {
    // Version 4 (random), the nil key and a version-7 nibble with the wrong variant.
    let v4 = IdempotencyKey { hi: 0x017F_22E2_79B0_4CC3, lo: 0x98C4_DC0C_0C07_398F };
    let wrong_variant = IdempotencyKey { hi: RFC_EXAMPLE.hi, lo: 0x18C4_DC0C_0C07_398F };
    for key in [v4, IdempotencyKey::default(), wrong_variant] {
        assert_eq!(key.time_ms(), None, "{key:?}");
    }
}

#[test]
fn every_time_and_any_random_bits_round_trip() {
    for ms in [0, 1, RFC_EXAMPLE_MS, IdempotencyKey::MAX_TIME_MS] {
        for random in [0, u128::MAX, 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef] {
            assert_eq!(IdempotencyKey::timed(ms, random).time_ms(), Some(ms));
        }
    }
}
