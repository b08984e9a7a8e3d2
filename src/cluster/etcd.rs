//! The cluster's store: etcd, through its v3 API's JSON gateway (`POST
//! /v3/kv/range`, `/v3/kv/txn`, `/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/revoke`; keys and values in base64, 64-bit numbers as
//! strings), with a blocking HTTP client. Checked against Debian's etcd
//! 3.4.23 (`tests/cluster_etcd.rs`). The gRPC client crate (`etcd-client`,
//! also tried against that etcd) needs `protoc` to build, which would break
//! the README's two commands on a fresh machine; the gateway needs nothing.
//!
//! Every request is bounded by [`REQUEST_TIMEOUT`] and tries the endpoints
//! in order; failures are [`ClusterError`]s that name the endpoints and
//! what was being done. Map changes are compare-and-swap on the map key's
//! mod revision ([`Coordinator::swap_map`]); a node's entry lives under its
//! lease ([`Coordinator::register`]), kept alive by [`NodeLease`]'s thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::lease::{NODE_LEASE_RENEW_EVERY, NODE_LEASE_TTL_SECS};
use super::map::{intent_key, intents_prefix, map_key, node_key, nodes_prefix, ClusterMap, MoveIntent, NodeInfo};

/// How long one etcd request may take (connection included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to etcd or with what it holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No endpoint answered.
    #[error("etcd at {endpoints}: {op}: {reason} (is etcd running there? check --etcd)")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What was being done.
        op: String,
        /// The last endpoint's failure.
        reason: String,
    },
    /// etcd answered with an error.
    #[error("etcd at {endpoints}: {op}: {message}")]
    Refused {
        /// The endpoints.
        endpoints: String,
        /// What was being done.
        op: String,
        /// etcd's message.
        message: String,
    },
    /// The cluster has no map: `orderd cluster init` was not run.
    #[error("cluster `{cluster}` does not exist in etcd at {endpoints}: create it with `orderd cluster init --etcd {endpoints} --cluster {cluster} --shards N`")]
    NoCluster {
        /// The cluster.
        cluster: String,
        /// The endpoints.
        endpoints: String,
    },
    /// `cluster init` of a cluster that exists.
    #[error("cluster `{cluster}` already exists with {shards} shards (map version {version}); nothing was changed")]
    Exists {
        /// The cluster.
        cluster: String,
        /// Its shards.
        shards: u32,
        /// Its map's version.
        version: u64,
    },
    /// The map changed between reading and writing it.
    #[error("cluster `{cluster}`: the map changed while this change was being made (another operator or node); nothing was changed, run it again")]
    Conflict {
        /// The cluster.
        cluster: String,
    },
    /// What etcd holds (or answered) is not what this build reads.
    #[error("cluster `{cluster}`: {reason}")]
    Damaged {
        /// The cluster.
        cluster: String,
        /// What is wrong.
        reason: String,
    },
    /// A thread could not start, or output could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A connection to etcd for one cluster.
#[derive(Clone)]
pub struct Coordinator {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    cluster: String,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("endpoints", &self.endpoints).field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

/// The map as read, with the etcd mod revision a swap must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMap {
    /// The map.
    pub map: ClusterMap,
    /// Its key's mod revision in etcd.
    pub revision: i64,
}

/// A 64-bit number of the gateway's JSON (a string, or a number).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The first key after every key that starts with `prefix` (etcd's
/// `range_end` of a prefix read).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Coordinator {
    /// A client of etcd at `endpoints` (comma-separated `host:port` or
    /// `http://host:port`) for cluster `cluster`. Nothing is sent yet.
    #[must_use]
    pub fn connect(endpoints: &str, cluster: &str) -> Coordinator {
        let endpoints = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| if e.contains("://") { e.trim_end_matches('/').to_owned() } else { format!("http://{e}") })
            .collect();
        let agent = ureq::Agent::config_builder().timeout_global(Some(REQUEST_TIMEOUT)).http_status_as_error(false).build().into();
        Coordinator { agent, endpoints, cluster: cluster.to_owned() }
    }

    /// The endpoints, as used.
    #[must_use]
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// `POST path` with `body` to the first endpoint that answers.
    fn post(&self, op: &str, path: &str, body: &Value) -> Result<Value, ClusterError> {
        let mut reason = "no endpoint given".to_owned();
        for endpoint in &self.endpoints {
            let mut response = match self.agent.post(format!("{endpoint}{path}")).send_json(body) {
                Ok(r) => r,
                Err(e) => {
                    reason = format!("{endpoint}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let answer: Value = response.body_mut().read_json().map_err(|e| ClusterError::Damaged {
                cluster: self.cluster.clone(),
                reason: format!("{op}: etcd at {endpoint} answered HTTP {status} without JSON ({e})"),
            })?;
            if !status.is_success() || answer.get("error").is_some() {
                let message = answer.get("message").or_else(|| answer.get("error")).and_then(Value::as_str).unwrap_or("an error");
                return Err(ClusterError::Refused { endpoints: self.endpoints(), op: op.to_owned(), message: message.to_owned() });
            }
            return Ok(answer);
        }
        Err(ClusterError::Unreachable { endpoints: self.endpoints(), op: op.to_owned(), reason })
    }

    fn damaged(&self, reason: String) -> ClusterError {
        ClusterError::Damaged { cluster: self.cluster.clone(), reason }
    }

    /// A transaction: `put key value` if `compare` holds; whether it did.
    fn put_if(&self, op: &str, compare: Value, key: &str, value: &str) -> Result<bool, ClusterError> {
        let body = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) } }],
        });
        Ok(self.post(op, "/v3/kv/txn", &body)?.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// The values and mod revisions under `key` (or every key starting with
    /// it, with `prefix`).
    fn range(&self, op: &str, key: &str, prefix: bool) -> Result<Vec<(Vec<u8>, i64)>, ClusterError> {
        let mut body = json!({ "key": b64(key.as_bytes()) });
        if prefix {
            body["range_end"] = Value::String(b64(&prefix_end(key)));
        }
        let answer = self.post(op, "/v3/kv/range", &body)?;
        let kvs = answer.get("kvs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        kvs.iter()
            .map(|kv| {
                let value = kv.get("value").and_then(Value::as_str).unwrap_or_default();
                let bytes = B64.decode(value).map_err(|e| self.damaged(format!("{op}: a value that is not base64 ({e})")))?;
                Ok((bytes, int(&kv["mod_revision"])))
            })
            .collect()
    }

    /// Creates the cluster with `shards` shards, none owned yet.
    ///
    /// # Errors
    /// It exists already ([`ClusterError::Exists`]), or etcd failed.
    pub fn init(&self, shards: u32, replicas: u8) -> Result<ClusterMap, ClusterError> {
        let map = ClusterMap::with_replicas(&self.cluster, shards, replicas).map_err(|reason| self.damaged(reason))?;
        let key = map_key(&self.cluster);
        let absent = json!({ "key": b64(key.as_bytes()), "target": "CREATE", "result": "EQUAL", "create_revision": "0" });
        if self.put_if("creating the cluster map", absent, &key, &map.to_json())? {
            return Ok(map);
        }
        let existing = self.map()?;
        Err(ClusterError::Exists { cluster: self.cluster.clone(), shards: existing.map.shards, version: existing.map.version })
    }

    /// The cluster's map.
    ///
    /// # Errors
    /// No such cluster, a damaged map, or etcd failed.
    pub fn map(&self) -> Result<ReadMap, ClusterError> {
        let found = self.range("reading the cluster map", &map_key(&self.cluster), false)?;
        let Some((value, revision)) = found.into_iter().next() else {
            return Err(ClusterError::NoCluster { cluster: self.cluster.clone(), endpoints: self.endpoints() });
        };
        let map = ClusterMap::from_json(&value).map_err(|reason| self.damaged(reason))?;
        if map.cluster != self.cluster {
            return Err(self.damaged(format!("the map under its key names cluster `{}`", map.cluster)));
        }
        Ok(ReadMap { map, revision })
    }

    /// Writes `map` (its version one above `read`'s) if the map is still
    /// the one `read` saw.
    ///
    /// # Errors
    /// [`ClusterError::Conflict`] if it changed since; etcd failed.
    pub fn swap_map(&self, read: &ReadMap, map: &ClusterMap) -> Result<(), ClusterError> {
        let mut map = map.clone();
        map.version = read.map.version + 1;
        let key = map_key(&self.cluster);
        let unchanged =
            json!({ "key": b64(key.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": read.revision.to_string() });
        if self.put_if("writing the cluster map", unchanged, &key, &map.to_json())? {
            Ok(())
        } else {
            Err(ClusterError::Conflict { cluster: self.cluster.clone() })
        }
    }

    /// Grants a lease of `ttl_secs` (a move's intent lives under one).
    ///
    /// # Errors
    /// etcd failed.
    pub fn grant_lease(&self, ttl_secs: u64) -> Result<i64, ClusterError> {
        let granted = self.post("granting a lease", "/v3/lease/grant", &json!({ "TTL": ttl_secs }))?;
        match int(&granted["ID"]) {
            0 => Err(self.damaged(format!("granting a lease: no lease id in {granted}"))),
            lease => Ok(lease),
        }
    }

    /// Renews `lease`; `false` if it had expired.
    ///
    /// # Errors
    /// etcd failed.
    pub fn renew_lease(&self, lease: i64) -> Result<bool, ClusterError> {
        self.keep_alive(lease)
    }

    /// Revokes `lease` (its keys go at once).
    ///
    /// # Errors
    /// etcd failed.
    pub fn revoke_lease(&self, lease: i64) -> Result<(), ClusterError> {
        self.post("revoking a lease", "/v3/lease/revoke", &json!({ "ID": lease.to_string() })).map(|_| ())
    }

    /// Records `intent` under `lease` if the map is still the one `read`
    /// saw and no other move of the shard is under way. Returns the
    /// intent's create revision (what [`Coordinator::finish_move`]
    /// compares), or `None` if either check failed.
    ///
    /// # Errors
    /// etcd failed.
    pub fn begin_move(&self, read: &ReadMap, intent: &MoveIntent, lease: i64) -> Result<Option<i64>, ClusterError> {
        let (map, key) = (map_key(&self.cluster), intent_key(&self.cluster, intent.shard));
        let body = json!({
            "compare": [
                { "key": b64(map.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": read.revision.to_string() },
                { "key": b64(key.as_bytes()), "target": "CREATE", "result": "EQUAL", "create_revision": "0" },
            ],
            "success": [{ "request_put": { "key": b64(key.as_bytes()), "value": b64(intent.to_json().as_bytes()), "lease": lease.to_string() } }],
        });
        let answer = self.post("recording the move's intent", "/v3/kv/txn", &body)?;
        if !answer.get("succeeded").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(int(&answer["header"]["revision"])))
    }

    /// Writes `map` (its version one above `read`'s) and deletes the move's
    /// intent in one transaction, if the map is still the one `read` saw
    /// and the intent is still the one created at `intent_revision`.
    /// Whether it did.
    ///
    /// # Errors
    /// etcd failed (the outcome is then unknown: read the map again).
    pub fn finish_move(&self, read: &ReadMap, map: &ClusterMap, shard: u32, intent_revision: i64) -> Result<bool, ClusterError> {
        let mut map = map.clone();
        map.version = read.map.version + 1;
        let (map_key, key) = (map_key(&self.cluster), intent_key(&self.cluster, shard));
        let body = json!({
            "compare": [
                { "key": b64(map_key.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": read.revision.to_string() },
                { "key": b64(key.as_bytes()), "target": "CREATE", "result": "EQUAL", "create_revision": intent_revision.to_string() },
            ],
            "success": [
                { "request_put": { "key": b64(map_key.as_bytes()), "value": b64(map.to_json().as_bytes()) } },
                { "request_delete_range": { "key": b64(key.as_bytes()) } },
            ],
        });
        Ok(self.post("switching the shard's owner", "/v3/kv/txn", &body)?.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Deletes the intent to move `shard`: once this returns, that move can
    /// no longer change the map.
    ///
    /// # Errors
    /// etcd failed (the intent may remain until its lease runs out).
    pub fn cancel_move(&self, shard: u32) -> Result<(), ClusterError> {
        let key = intent_key(&self.cluster, shard);
        self.post("cancelling the move", "/v3/kv/deleterange", &json!({ "key": b64(key.as_bytes()) })).map(|_| ())
    }

    /// The moves under way, by shard.
    ///
    /// # Errors
    /// A damaged intent, or etcd failed.
    pub fn intents(&self) -> Result<Vec<MoveIntent>, ClusterError> {
        let found = self.range("listing the moves under way", &intents_prefix(&self.cluster), true)?;
        let mut intents =
            found.iter().map(|(v, _)| MoveIntent::from_json(v)).collect::<Result<Vec<_>, _>>().map_err(|r| self.damaged(r))?;
        intents.sort_by_key(|i| i.shard);
        Ok(intents)
    }

    /// The nodes whose lease is alive, by id.
    ///
    /// # Errors
    /// A damaged entry, or etcd failed.
    pub fn live_nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let found = self.range("listing the nodes", &nodes_prefix(&self.cluster), true)?;
        let mut nodes = found.iter().map(|(v, _)| NodeInfo::from_json(v)).collect::<Result<Vec<_>, _>>().map_err(|r| self.damaged(r))?;
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }

    /// Grants a lease of [`NODE_LEASE_TTL_SECS`] and puts `node` under it.
    fn put_node(&self, node: &NodeInfo) -> Result<i64, ClusterError> {
        let granted = self.post("granting the node's lease", "/v3/lease/grant", &json!({ "TTL": NODE_LEASE_TTL_SECS }))?;
        let lease = int(&granted["ID"]);
        if lease == 0 {
            return Err(self.damaged(format!("granting a lease: no lease id in {granted}")));
        }
        let key = node_key(&self.cluster, &node.node);
        let body = json!({ "key": b64(key.as_bytes()), "value": b64(node.to_json().as_bytes()), "lease": lease.to_string() });
        self.post("registering the node", "/v3/kv/put", &body)?;
        Ok(lease)
    }

    /// Renews `lease`; `false` if it had expired.
    fn keep_alive(&self, lease: i64) -> Result<bool, ClusterError> {
        let answer = self.post("renewing the node's lease", "/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        Ok(int(&answer["result"]["TTL"]) > 0)
    }

    /// Registers `node` under a fresh lease and keeps the lease alive from
    /// a thread of its own until the returned [`NodeLease`] is dropped
    /// (then it is revoked: the node leaves at once); if the process dies
    /// the entry goes after [`NODE_LEASE_TTL_SECS`]. A node that registers
    /// again (a restart) replaces its entry.
    ///
    /// # Errors
    /// etcd failed.
    pub fn register(&self, node: &NodeInfo, clock: Arc<super::lease::LeaseClock>) -> Result<NodeLease, ClusterError> {
        let sent = super::lease::LeaseClock::now_ms();
        let lease = self.put_node(node)?;
        clock.renewed(sent);
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = KeepAlive { etcd: self.clone(), lease, stop: Arc::clone(&stop), node: node.clone(), clock };
        let thread = std::thread::Builder::new().name("orderd-etcd-lease".into()).spawn(move || keeper.run())?;
        Ok(NodeLease { stop, thread: Some(thread), lease })
    }
}

/// A node's registration, kept alive while this lives.
#[derive(Debug)]
pub struct NodeLease {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    lease: i64,
}

impl NodeLease {
    /// The etcd lease id it started with.
    #[must_use]
    pub fn id(&self) -> i64 {
        self.lease
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The lease thread's state.
struct KeepAlive {
    etcd: Coordinator,
    lease: i64,
    stop: Arc<AtomicBool>,
    node: NodeInfo,
    /// Where each successful renewal is noted (fencing, `cluster::owned`).
    clock: Arc<super::lease::LeaseClock>,
}

impl KeepAlive {
    /// Renews the lease every quarter of its TTL; if it expired (etcd was
    /// unreachable for longer), registers again under a new one. Revokes
    /// it on a clean stop.
    fn run(mut self) {
        let every = NODE_LEASE_RENEW_EVERY;
        let mut healthy = true;
        while !self.stop.load(Ordering::Relaxed) {
            let sent = super::lease::LeaseClock::now_ms();
            let renewed = self.etcd.keep_alive(self.lease).and_then(|alive| {
                if alive {
                    self.clock.renewed(sent);
                } else {
                    let sent = super::lease::LeaseClock::now_ms();
                    self.lease = self.etcd.put_node(&self.node)?;
                    self.clock.renewed(sent);
                    tracing::info!(node = %self.node.node, "the node's etcd lease had expired: registered again");
                }
                Ok(())
            });
            match renewed {
                Ok(()) if !healthy => {
                    tracing::info!(node = %self.node.node, "etcd reachable again: the node's lease is renewed");
                    healthy = true;
                }
                Ok(()) => {}
                Err(e) => {
                    if healthy {
                        tracing::warn!(node = %self.node.node, error = %e, "cannot renew the node's etcd lease; serving on with the map held, retrying");
                    }
                    healthy = false;
                }
            }
            // Sleep in small steps so that a stop is prompt.
            let mut slept = Duration::ZERO;
            while slept < every && !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                slept += Duration::from_millis(50);
            }
        }
        let _ = self.etcd.post("revoking the node's lease", "/v3/lease/revoke", &json!({ "ID": self.lease.to_string() }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_numbers_and_prefix_ranges_read_as_etcd_means_them() {
        assert_eq!(int(&json!("4111120455121433863")), 4_111_120_455_121_433_863);
        assert_eq!(int(&json!(6)), 6);
        assert_eq!(int(&json!(null)), 0);
        assert_eq!(prefix_end("/orderd/eu/nodes/"), b"/orderd/eu/nodes0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        let c = Coordinator::connect(" 127.0.0.1:2379, http://10.0.0.2:2379/ ", "eu");
        assert_eq!(c.endpoints(), "http://127.0.0.1:2379,http://10.0.0.2:2379");
    }

    #[test]
    fn an_unreachable_etcd_is_named_with_what_was_being_done() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = Coordinator::connect(&format!("127.0.0.1:{port}"), "eu").map().unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ClusterError::Unreachable { .. }), "{e:?}");
        assert!(text.starts_with(&format!("etcd at http://127.0.0.1:{port}: reading the cluster map: ")), "{text}");
        assert!(text.ends_with("(is etcd running there? check --etcd)"), "{text}");
    }
}
