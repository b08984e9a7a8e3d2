//! Which shard owns a product, and which shard issued an order id.
//!
//! Shared by the server and the SDK so that both route identically. The
//! functions are part of the protocol: `PROTOCOL.md` § Shard map gives them
//! in words and test vectors, and they never change within a version.

use crate::limits::{ORDER_ID_SEQUENCE_BITS, ORDER_ID_SHARD_BITS};

/// The 64-bit finaliser of SplitMix64: a fast, well-mixing bijection.
#[must_use]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The shard that owns `product`, for a server with `shard_count` shards.
///
/// `shard = mix64(product) mod shard_count` (and `0` if `shard_count` is 0,
/// which no valid server announces).
#[must_use]
pub const fn shard_of_product(product: u64, shard_count: u32) -> u32 {
    if shard_count == 0 {
        return 0;
    }
    (mix64(product) % shard_count as u64) as u32
}

/// The order id made of a shard id and that shard's sequence number.
///
/// `None` if the shard does not fit 16 bits or the sequence 48 bits.
#[must_use]
pub const fn order_id(shard: u32, sequence: u64) -> Option<u64> {
    if shard as u64 >= 1 << ORDER_ID_SHARD_BITS || sequence >= 1 << ORDER_ID_SEQUENCE_BITS {
        return None;
    }
    Some(((shard as u64) << ORDER_ID_SEQUENCE_BITS) | sequence)
}

/// The shard that issued `order_id` (its high 16 bits).
#[must_use]
pub const fn shard_of_order(order_id: u64) -> u32 {
    (order_id >> ORDER_ID_SEQUENCE_BITS) as u32
}

/// The per-shard sequence number of `order_id` (its low 48 bits).
#[must_use]
pub const fn sequence_of_order(order_id: u64) -> u64 {
    order_id & ((1 << ORDER_ID_SEQUENCE_BITS) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_function_vectors_are_stable() {
        // These values are in PROTOCOL.md; a change here is a wire break.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(shard_of_product(1, 64), (0x5692_161d_100b_05e5u64 % 64) as u32);
        assert_eq!(shard_of_product(42, 0), 0);
    }

    #[test]
    fn order_ids_split_into_shard_and_sequence() {
        let id = order_id(7, 123).unwrap();
        assert_eq!(shard_of_order(id), 7);
        assert_eq!(sequence_of_order(id), 123);
        assert_eq!(order_id(1 << 16, 0), None);
        assert_eq!(order_id(0, 1 << 48), None);
    }

    #[test]
    fn products_spread_over_shards() {
        let mut counts = [0u32; 16];
        for p in 1..=16_000u64 {
            counts[shard_of_product(p, 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
