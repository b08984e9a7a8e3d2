//! The counters a shard keeps for the stats request and the live screens.

/// Counters of one shard.
///
/// All but `orders_rejected` follow from the events (replay restores them);
/// rejections record no event, so a replayed shard counts them from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardStats {
    /// Orders placed (accepted), all time.
    pub orders_placed: u64,
    /// Place-order requests rejected since this process started.
    pub orders_rejected: u64,
    /// Sum of the amounts of placed orders, in cents (saturating). Not
    /// reduced by cancellations or expiries: it is the gross figure.
    pub gmv_cents: u64,
    /// Orders placed or paid (holding units).
    pub live_orders: u64,
}
