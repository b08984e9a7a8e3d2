//! The per-core state: the shards this core owns and its counters.
//!
//! A [`Core`] lives on its executor's thread only (shared by that core's
//! tasks through `Rc<RefCell<_>>`, borrowed for synchronous stretches and
//! never across an await): no `Arc`, no `Mutex`, no atomics on the order
//! path. Shard `s` belongs to core `s % cores` and sits at local index
//! `s / cores` here.

use orderd_protocol::message::{ArchivedRequest, CoreStats};
use orderd_protocol::shard::{shard_of_order, shard_of_product};
use orderd_protocol::{Reply, Status};

use crate::engine::{Command, Event, Shard, ShardConfig};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the shard with this id.
    Shard(u32),
    /// To every core (a stats request).
    Stats,
    /// Answered on the spot with this status (unknown shard, unsupported kind).
    Refuse(Status),
}

/// The route of a validated wire request, by the shard map of PROTOCOL.md § 8.
#[must_use]
pub fn route(request: &ArchivedRequest, shard_count: u32) -> Route {
    let by_order = |order_id: u64| {
        let shard = shard_of_order(order_id);
        if shard < shard_count {
            Route::Shard(shard)
        } else {
            Route::Refuse(Status::NoSuchOrder)
        }
    };
    match request {
        ArchivedRequest::PlaceOrder(p) => Route::Shard(shard_of_product(p.product.to_native(), shard_count)),
        ArchivedRequest::GetOrderByKey(k) => Route::Shard(shard_of_product(k.product.to_native(), shard_count)),
        ArchivedRequest::GetStock(p) => Route::Shard(shard_of_product(p.product.to_native(), shard_count)),
        ArchivedRequest::UpsertProduct(u) => Route::Shard(shard_of_product(u.product.to_native(), shard_count)),
        ArchivedRequest::AdjustStock(a) => Route::Shard(shard_of_product(a.product.to_native(), shard_count)),
        ArchivedRequest::PayOrder(o) | ArchivedRequest::CancelOrder(o) | ArchivedRequest::GetOrder(o) => by_order(o.order_id.to_native()),
        ArchivedRequest::Stats => Route::Stats,
        // Streams come with a later issue.
        ArchivedRequest::Subscribe(_) => Route::Refuse(Status::Unsupported),
    }
}

/// Connection-level counters of a core (the shards count the orders).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Requests answered by this core's shards.
    pub requests: u64,
    /// Request frames read by this core's connections.
    pub frames: u64,
    /// Requests this core's connections forwarded to other cores.
    pub forwarded: u64,
    /// Open client connections.
    pub connections: u32,
}

/// One core's shards and counters.
pub struct Core {
    index: usize,
    cores: usize,
    shard_count: u32,
    shards: Vec<Shard>,
    /// The events of the latest command; cleared each time (the log that
    /// will keep them comes with the durability issue).
    events: Vec<Event>,
    /// Counters for the stats request.
    pub counters: Counters,
}

impl Core {
    /// Core `index` of `cores`, owning shards `s` with `s % cores == index`.
    #[must_use]
    pub fn new(index: usize, cores: usize, shard_count: u32, max_orders_per_shard: u32) -> Self {
        let shards = (0..shard_count)
            .filter(|s| *s as usize % cores == index)
            .map(|s| {
                let mut config = ShardConfig::new(s as u16);
                config.max_orders = max_orders_per_shard;
                config.max_idempotency_keys = max_orders_per_shard;
                Shard::new(config)
            })
            .collect();
        Core { index, cores, shard_count, shards, events: Vec::with_capacity(64), counters: Counters::default() }
    }

    /// This core's index.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of cores.
    #[must_use]
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Number of shards in the server.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The core that owns shard `shard`.
    #[must_use]
    pub fn owner_of(&self, shard: u32) -> usize {
        shard as usize % self.cores
    }

    /// Number of shards this core owns.
    #[must_use]
    pub fn local_shards(&self) -> usize {
        self.shards.len()
    }

    /// Apply `cmd` to shard `shard`, which this core must own.
    pub fn apply(&mut self, shard: u32, cmd: &Command, now_ms: u64) -> Reply {
        if self.owner_of(shard) != self.index {
            return Reply::rejected(Status::NotOwner, self.owner_of(shard) as u64);
        }
        let Some(target) = self.shards.get_mut(shard as usize / self.cores) else {
            return Reply::rejected(Status::Internal, 0);
        };
        self.counters.requests += 1;
        let reply = target.apply(cmd, now_ms, &mut self.events);
        self.events.clear();
        reply
    }

    /// Expire the placed orders whose payment window has passed.
    pub fn expire_due(&mut self, now_ms: u64) -> usize {
        let mut expired = 0;
        for shard in &mut self.shards {
            if shard.next_expiry().is_some_and(|t| t <= now_ms) {
                expired += shard.expire_due(now_ms, &mut self.events);
                self.events.clear();
            }
        }
        expired
    }

    /// This core's counters, summed over its shards.
    #[must_use]
    pub fn stats(&self) -> CoreStats {
        let mut s = CoreStats {
            requests: self.counters.requests,
            frames: self.counters.frames,
            forwarded: self.counters.forwarded,
            core: self.index as u16,
            connections: self.counters.connections,
            shards: self.shards.len() as u32,
            ..CoreStats::default()
        };
        for shard in &self.shards {
            let st = shard.stats();
            s.orders_placed += st.orders_placed;
            s.orders_rejected += st.orders_rejected;
            s.live_orders += st.live_orders;
            s.gmv_cents += st.gmv_cents;
        }
        s
    }
}

/// Milliseconds since the Unix epoch: the coarse clock the runtime reads
/// once per frame (or timer tick) and hands to the engine.
#[must_use]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_has_exactly_one_owner() {
        let cores: Vec<Core> = (0..3).map(|i| Core::new(i, 3, 64, 16)).collect();
        assert_eq!(cores.iter().map(Core::local_shards).sum::<usize>(), 64);
        for s in 0..64 {
            assert_eq!(cores[0].owner_of(s), s as usize % 3);
        }
    }

    #[test]
    fn a_shard_of_another_core_is_refused_not_applied() {
        let mut core = Core::new(0, 2, 4, 16);
        let reply = core.apply(1, &Command::GetStock { product: 1 }, 0);
        assert_eq!(reply, Reply::rejected(Status::NotOwner, 1));
    }
}
