//! A cluster of orderd nodes (issue 24): the map of which node and core
//! owns each shard, kept in etcd, and each node's liveness through an etcd
//! lease. This is the control plane only: it never runs on a core.
//!
//! - [`map`]: the map, the node entries, their keys and JSON, and the
//!   placement of shards (pure).
//! - [`etcd`]: the blocking facade over etcd (`init`, read, compare-and-swap,
//!   node registration under a kept-alive lease, move intents).
//! - [`owned`]: the shards this node owns by the map, read by the cores
//!   per request (a request for another node's shard is refused `moved`).
//! - [`mover`]: `orderd cluster move-shard`, the driver of a move (intent
//!   in etcd, freeze, copy, install, switch, release); the nodes' side of
//!   it is `runtime::handoff`.
//! - [`command`]: `orderd cluster init|status|rebalance|move-shard`.

pub mod command;
pub mod etcd;
pub mod lease;
pub mod map;
pub mod mover;
pub mod owned;

pub use etcd::{ClusterError, Coordinator, NodeLease};
pub use map::{ClusterMap, MoveIntent, NodeInfo, Owner};
pub use owned::OwnedShards;
