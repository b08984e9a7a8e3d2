//! Shard-aware routing: which core each request should go to, from the shard
//! map the server announced in its handshake ([`ShardMap`]) and, in a
//! cluster, from the cluster's map any node hands out ([`Routes`]: every
//! node's cores, each shard's owner node).

use std::net::{SocketAddr, ToSocketAddrs};

use crate::message::{ClusterMapInfo, CoreAddr, Request, Welcome, NO_OWNER};
use crate::shard::{shard_of_order, shard_of_product};

/// The shard `request` belongs to, of `shards`; `None` for requests that
/// belong to no shard (stats, subscriptions, the map).
#[must_use]
pub fn shard_of_request(request: &Request, shards: u32) -> Option<u32> {
    match request {
        Request::PlaceOrder(p) => Some(shard_of_product(p.product, shards)),
        Request::GetOrderByKey(k) => Some(shard_of_product(k.product, shards)),
        Request::GetStock(p) => Some(shard_of_product(p.product, shards)),
        Request::UpsertProduct(u) => Some(shard_of_product(u.product, shards)),
        Request::AdjustStock(a) => Some(shard_of_product(a.product, shards)),
        Request::PayOrder(o) | Request::CancelOrder(o) | Request::GetOrder(o) => Some(shard_of_order(o.order_id)),
        Request::Subscribe(_)
        | Request::Stats
        | Request::Aggregates(_)
        | Request::ListProducts(_)
        | Request::Checkpoint
        | Request::StorageStats
        | Request::ClusterMap
        // Sent by `orderd cluster move-shard` to a chosen node's core.
        | Request::MoveShard(_)
        | Request::Replicate(_) => None,
    }
}

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
        shard_of_request(request, self.shard_count())
            .and_then(|s| self.owner_of_shard(s))
            .filter(|&c| (c as usize) < self.cores.len())
            .unwrap_or(self.seed_core)
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

/// Where a client sends each request: a table of endpoints (the address of
/// every core it may reach: one server's cores, or every live node's cores
/// in a cluster) and each shard's endpoint. Endpoints are only ever added,
/// so an index a connection is kept under stays valid across map changes.
#[derive(Debug, Clone)]
pub struct Routes {
    endpoints: Vec<SocketAddr>,
    /// `shard_endpoint[s]`: the endpoint of shard `s`'s owner, or
    /// [`Routes::NOWHERE`] (no owner, or its node is down).
    shard_endpoint: Vec<u32>,
    seed: usize,
    /// The cluster map's version routed by; `None`: a single server.
    cluster_version: Option<u64>,
}

impl Routes {
    /// A shard with no reachable owner.
    const NOWHERE: u32 = u32::MAX;

    /// The routes of a single server: its cores in core order, the shards
    /// as `map` places them; `seed` is the address the client reached the
    /// seed core on.
    #[must_use]
    pub fn single(map: &ShardMap, seed: SocketAddr) -> Routes {
        let cores = map.core_count().max(usize::from(map.seed_core()) + 1) as u16;
        let endpoints =
            (0..cores).map(|core| if core == map.seed_core() { seed } else { map.addr_of(core, seed).unwrap_or(seed) }).collect();
        let shard_endpoint =
            (0..map.shard_count()).map(|s| map.owner_of_shard(s).filter(|&c| c < cores).map_or(Self::NOWHERE, u32::from)).collect();
        Routes { endpoints, shard_endpoint, seed: usize::from(map.seed_core()), cluster_version: None }
    }

    /// The routes of a cluster by `info`, keeping `self`'s endpoints
    /// (addresses it does not know yet are added). A node splits its
    /// shards over its cores by the rule a single server uses (shard
    /// modulo its cores), so a shard goes to core `s % cores` of its owner.
    pub fn follow_cluster(&mut self, info: &ClusterMapInfo, shards: u32) {
        let seed_ip = self.endpoints[self.seed].ip();
        let nodes: Vec<Vec<u32>> = info
            .nodes
            .iter()
            .map(|n| n.cores.iter().map(|c| resolve_core(c, seed_ip).map_or(Self::NOWHERE, |a| self.endpoint_of(a) as u32)).collect())
            .collect();
        self.shard_endpoint = (0..shards as usize)
            .map(|s| {
                let owner = info.owners.get(s).copied().unwrap_or(NO_OWNER);
                match nodes.get(owner as usize) {
                    Some(cores) if !cores.is_empty() => cores[s % cores.len()],
                    _ => Self::NOWHERE,
                }
            })
            .collect();
        self.cluster_version = Some(info.version);
    }

    fn endpoint_of(&mut self, addr: SocketAddr) -> usize {
        self.endpoints.iter().position(|&a| a == addr).unwrap_or_else(|| {
            self.endpoints.push(addr);
            self.endpoints.len() - 1
        })
    }

    /// The endpoint `request` goes to: its shard's owner, or the seed for
    /// requests without a shard or a shard without a reachable owner (a
    /// cluster node answers those `moved`, a single server itself).
    #[must_use]
    pub fn endpoint_for(&self, request: &Request) -> usize {
        shard_of_request(request, self.shard_endpoint.len() as u32)
            .and_then(|s| self.shard_endpoint.get(s as usize).copied())
            .filter(|&e| e != Self::NOWHERE)
            .map_or(self.seed, |e| e as usize)
    }

    /// Whether `request`'s shard has an owner the map can reach (requests
    /// without a shard: `true`).
    #[must_use]
    pub fn has_owner(&self, request: &Request) -> bool {
        shard_of_request(request, self.shard_endpoint.len() as u32)
            .is_none_or(|s| self.shard_endpoint.get(s as usize).is_some_and(|&e| e != Self::NOWHERE))
    }

    /// The address of endpoint `index`.
    #[must_use]
    pub fn addr(&self, index: usize) -> Option<SocketAddr> {
        self.endpoints.get(index).copied()
    }

    /// Endpoints known (connections a client may hold).
    #[must_use]
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Never: there is always the seed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The seed's endpoint.
    #[must_use]
    pub fn seed(&self) -> usize {
        self.seed
    }

    /// The cluster map version routed by (`None`: a single server).
    #[must_use]
    pub fn cluster_version(&self) -> Option<u64> {
        self.cluster_version
    }
}

/// A core's address as a node announces it (`host:port`); an unspecified
/// IP (a node listening on `0.0.0.0` without `--advertise`) is taken as
/// the seed's.
fn resolve_core(announced: &str, seed_ip: std::net::IpAddr) -> Option<SocketAddr> {
    let addr = announced.to_socket_addrs().ok()?.next()?;
    Some(if addr.ip().is_unspecified() { SocketAddr::new(seed_ip, addr.port()) } else { addr })
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

    #[test]
    fn cluster_routes_send_each_shard_to_its_owner_node_and_keep_known_endpoints() {
        use crate::message::ClusterNode;
        let seed: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let mut routes = Routes::single(&ShardMap::from_welcome(&welcome()), seed);
        assert_eq!((routes.len(), routes.cluster_version()), (2, None));
        let node = |id: &str, cores: &[&str]| ClusterNode { node: id.into(), cores: cores.iter().map(|c| (*c).to_owned()).collect() };
        let mut info = ClusterMapInfo {
            version: 3,
            nodes: vec![node("a", &["127.0.0.1:7070", "127.0.0.1:7071"]), node("b", &["0.0.0.0:8000"]), node("c", &[])],
            owners: vec![0, 0, 1, 2],
            owner_cores: vec![0, 1, 0, 0],
        };
        routes.follow_cluster(&info, 4);
        let stock = |product: u64| Request::GetStock(ProductRef { product });
        let product_of_shard = |s: u32| (1..).find(|&p| shard_of_product(p, 4) == s).unwrap();
        // Shard 0 on a's core 0, 1 on a's core 1, 2 on b (the seed's IP),
        // 3 on a node that is down: to the seed, and not reachable.
        let addr = |s: u32| routes.addr(routes.endpoint_for(&stock(product_of_shard(s)))).unwrap();
        assert_eq!(addr(0), "127.0.0.1:7070".parse::<SocketAddr>().unwrap());
        assert_eq!(addr(1), "127.0.0.1:7071".parse::<SocketAddr>().unwrap());
        assert_eq!(addr(2), "127.0.0.1:8000".parse::<SocketAddr>().unwrap());
        assert_eq!(routes.endpoint_for(&stock(product_of_shard(3))), routes.seed());
        assert!(!routes.has_owner(&stock(product_of_shard(3))) && routes.has_owner(&Request::Stats));
        assert_eq!((routes.len(), routes.cluster_version()), (3, Some(3)));
        // A later map: endpoints known keep their index.
        let before = routes.endpoint_for(&stock(product_of_shard(2)));
        info.version = 4;
        info.owners = vec![1, 1, 1, 1];
        routes.follow_cluster(&info, 4);
        assert_eq!(routes.endpoint_for(&stock(product_of_shard(0))), before);
        assert_eq!(routes.len(), 3);
    }
}
