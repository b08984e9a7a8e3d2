//! The poller: a thread that asks the server for its aggregates and
//! statistics every interval and sends each result to the view, so that
//! the view never waits on the network (q works while a connect hangs).
//! A failed poll drops the connection; the next one reconnects. Given a
//! node of a cluster, it polls every live node and merges their figures
//! (aggregates as a node merges its cores', cores and connections summed).

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use orderd_protocol::client::{Client, ClientConfig};

use super::state::{Snapshot, Update};
use super::TopError;
use crate::admin::AdminError;

/// Polls one server.
struct Poller {
    server: String,
    top: u32,
    config: ClientConfig,
    client: Option<Client>,
    /// In a cluster, a client per node's address.
    nodes: std::collections::HashMap<String, Client>,
}

impl Poller {
    /// One poll: the aggregates and the statistics, or why not, worded as
    /// `orderd admin` words it.
    fn poll(&mut self) -> Update {
        let result = self.poll_client();
        if result.is_err() {
            self.client = None;
            self.nodes.clear();
        }
        result.map_err(|e| e.to_string())
    }

    fn poll_client(&mut self) -> Result<Snapshot, AdminError> {
        let server = self.server.as_str();
        let client = match &mut self.client {
            Some(client) => client,
            None => self
                .client
                .insert(Client::connect(server, self.config.clone()).map_err(|e| AdminError::from_client(server, "connecting", e))?),
        };
        if client.routes().cluster_version().is_some() {
            let map = client.cluster_map().map_err(|e| AdminError::from_client(server, "reading the cluster map", e))?;
            let server_id = client.stats().map_err(|e| AdminError::from_client(server, "reading the statistics", e))?.server_id;
            let (mut parts, mut cores, mut connections) = (Vec::new(), 0, 0);
            for addr in map.nodes.iter().filter_map(|n| n.cores.first()) {
                let node = match self.nodes.entry(addr.clone()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(
                        Client::connect(addr.as_str(), self.config.clone()).map_err(|e| AdminError::from_client(addr, "connecting", e))?,
                    ),
                };
                parts.push(node.aggregates(self.top).map_err(|e| AdminError::from_client(addr, "reading the aggregates", e))?);
                let stats = node.stats().map_err(|e| AdminError::from_client(addr, "reading the statistics", e))?;
                cores += stats.cores.len();
                connections += stats.cores.iter().map(|c| u64::from(c.connections)).sum::<u64>();
            }
            let aggregates = crate::stream::aggregates::merge(parts, self.top);
            return Ok(Snapshot { aggregates, server_id, cores, connections });
        }
        let aggregates = client.aggregates(self.top).map_err(|e| AdminError::from_client(server, "reading the aggregates", e))?;
        let stats = client.stats().map_err(|e| AdminError::from_client(server, "reading the statistics", e))?;
        Ok(Snapshot {
            aggregates,
            server_id: stats.server_id,
            cores: stats.cores.len(),
            connections: stats.cores.iter().map(|c| u64::from(c.connections)).sum(),
        })
    }
}

/// One poll of `server` (every node of its cluster, if it is in one), as
/// the view gets it every interval.
///
/// # Errors
/// A server could not be reached or answered, worded as `orderd admin` words it.
pub fn poll_once(server: &str, top: u32) -> Result<Snapshot, AdminError> {
    let mut poller = Poller {
        server: server.to_owned(),
        top,
        config: client_config(Duration::from_secs(5)),
        client: None,
        nodes: std::collections::HashMap::new(),
    };
    poller.poll_client()
}

/// The client settings of a poll every `interval`: one attempt per poll
/// (the next poll is the retry), bounded by about one interval.
fn client_config(interval: Duration) -> ClientConfig {
    let bound = interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
    ClientConfig { connect_timeout: bound, request_timeout: bound, retries: 0, ..ClientConfig::default() }
}

/// Start polling `server` for its `top` best sellers every `interval`; the
/// thread ends when the returned receiver is dropped.
///
/// # Errors
/// The thread could not be started.
pub fn spawn(server: String, top: u32, interval: Duration) -> Result<Receiver<Update>, TopError> {
    let (tx, rx) = mpsc::channel();
    let poller = Poller { server, top, config: client_config(interval), client: None, nodes: std::collections::HashMap::new() };
    std::thread::Builder::new().name("orderd-top-poll".into()).spawn(move || run(poller, interval, &tx)).map_err(TopError::SpawnPoller)?;
    Ok(rx)
}

fn run(mut poller: Poller, interval: Duration, tx: &Sender<Update>) {
    loop {
        let started = Instant::now();
        if tx.send(poller.poll()).is_err() {
            return; // the view is gone
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_reported_and_retried() {
        // A loopback port that refuses connections: the local end of a
        // connection, bound but not listening, held so nothing else takes it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let addr = held.local_addr().unwrap();
        let rx = spawn(addr.to_string(), 10, Duration::from_millis(100)).unwrap();
        for _ in 0..2 {
            let update = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let error = update.unwrap_err();
            assert!(error.contains(&format!("cannot reach orderd at {addr}: connection refused")), "{error}");
        }
    }
}
