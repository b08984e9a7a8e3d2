//! Shard-aware routing: which core each request should go to, from the shard
//! map the server announced in its handshake.

use std::net::SocketAddr;

use crate::message::{CoreAddr, Request, Welcome};
use crate::shard::{shard_of_order, shard_of_product};

/// The routing table a client keeps: the shard map and each core's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    shard_owner: Vec<u16>,
    cores: Vec<CoreAddr>,
    seed_core: u16,
    version: u16,
}

impl ShardMap {
    /// The map announced by `welcome` (the core that answered is the seed).
    #[must_use]
    pub fn from_welcome(welcome: &Welcome) -> Self {
        ShardMap {
            shard_owner: welcome.shard_owner.clone(),
            cores: welcome.cores.clone(),
            seed_core: welcome.core,
            version: welcome.version,
        }
    }

    /// The protocol version the handshake chose (every connection to the
    /// server speaks it): requests of a newer version are not sent.
    #[must_use]
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Number of shards.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.shard_owner.len() as u32
    }

    /// Number of cores announced.
    #[must_use]
    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// The core that answered the handshake; requests that belong to no
    /// shard (stats, subscriptions) go there.
    #[must_use]
    pub fn seed_core(&self) -> u16 {
        self.seed_core
    }

    /// The core that owns `shard`, if the map knows it.
    #[must_use]
    pub fn owner_of_shard(&self, shard: u32) -> Option<u16> {
        self.shard_owner.get(shard as usize).copied()
    }

    /// The core a request should be sent to: the owner of its shard, or the
    /// seed core for requests without one (or ids the map does not know:
    /// the server answers those itself).
    #[must_use]
    pub fn core_for(&self, request: &Request) -> u16 {
        let shard = match request {
            Request::PlaceOrder(p) => Some(shard_of_product(p.product, self.shard_count())),
            Request::GetOrderByKey(k) => Some(shard_of_product(k.product, self.shard_count())),
            Request::GetStock(p) => Some(shard_of_product(p.product, self.shard_count())),
            Request::UpsertProduct(u) => Some(shard_of_product(u.product, self.shard_count())),
            Request::AdjustStock(a) => Some(shard_of_product(a.product, self.shard_count())),
            Request::PayOrder(o) | Request::CancelOrder(o) | Request::GetOrder(o) => Some(shard_of_order(o.order_id)),
            Request::Subscribe(_)
            | Request::Stats
            | Request::Aggregates(_)
            | Request::ListProducts(_)
            | Request::Checkpoint
            | Request::StorageStats
            | Request::ClusterMap => None,
        };
        shard.and_then(|s| self.owner_of_shard(s)).filter(|&c| (c as usize) < self.cores.len()).unwrap_or(self.seed_core)
    }

    /// The address to reach `core` on. A server listening on an unspecified
    /// address (`0.0.0.0`) announces it as such; the client then uses the
    /// IP it reached the seed on.
    #[must_use]
    pub fn addr_of(&self, core: u16, seed: SocketAddr) -> Option<SocketAddr> {
        let announced = self.cores.iter().find(|c| c.core == core)?.socket_addr()?;
        if announced.ip().is_unspecified() {
            Some(SocketAddr::new(seed.ip(), announced.port()))
        } else {
            Some(announced)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{OrderRef, ProductRef, ServerLimits};

    fn welcome() -> Welcome {
        Welcome {
            server_id: 1,
            version: 1,
            core: 0,
            cores: vec![CoreAddr::new(0, "127.0.0.1:7070".parse().unwrap()), CoreAddr::new(1, "0.0.0.0:7071".parse().unwrap())],
            shard_owner: vec![0, 1, 0, 1],
            limits: ServerLimits { max_frame_bytes: 1 << 20, max_batch: 1024, max_in_flight: 64 },
        }
    }

    #[test]
    fn requests_route_to_the_owner_of_their_shard() {
        let map = ShardMap::from_welcome(&welcome());
        for product in 1..100u64 {
            let shard = shard_of_product(product, 4);
            assert_eq!(map.core_for(&Request::GetStock(ProductRef { product })), (shard % 2) as u16);
        }
        let id = crate::shard::order_id(3, 9).unwrap();
        assert_eq!(map.core_for(&Request::PayOrder(OrderRef { order_id: id })), 1);
        // A shard the map does not know goes to the seed.
        let id = crate::shard::order_id(77, 9).unwrap();
        assert_eq!(map.core_for(&Request::GetOrder(OrderRef { order_id: id })), 0);
        assert_eq!(map.core_for(&Request::Stats), 0);
    }

    #[test]
    fn unspecified_announced_address_uses_the_seed_ip() {
        let map = ShardMap::from_welcome(&welcome());
        let seed: SocketAddr = "127.0.0.5:7070".parse().unwrap();
        assert_eq!(map.addr_of(1, seed), Some("127.0.0.5:7071".parse().unwrap()));
        assert_eq!(map.addr_of(0, seed), Some("127.0.0.1:7070".parse().unwrap()));
        assert_eq!(map.addr_of(9, seed), None);
    }
}
