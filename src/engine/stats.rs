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

/// The memory a shard's tables hold, in bytes, by table: what grows with
/// orders (records, key index, deadlines), with limited buyers (holdings)
/// and with products (catalogue). Counted from the tables' allocations
/// (capacity, not length: reserved room is memory held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableBytes {
    /// The order records (64 bytes each).
    pub order_records: u64,
    /// The idempotency index of the orders in memory.
    pub key_index: u64,
    /// The keys of archived orders (the dedup window's).
    pub cold_keys: u64,
    /// The payment deadlines' heap.
    pub deadlines: u64,
    /// The per-user holdings of limited products.
    pub holdings: u64,
    /// The catalogue.
    pub catalogue: u64,
}

impl std::ops::AddAssign for TableBytes {
    fn add_assign(&mut self, other: TableBytes) {
        self.order_records += other.order_records;
        self.key_index += other.key_index;
        self.cold_keys += other.cold_keys;
        self.deadlines += other.deadlines;
        self.holdings += other.holdings;
        self.catalogue += other.catalogue;
    }
}
