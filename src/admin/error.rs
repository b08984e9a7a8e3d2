//! [`AdminError`]: every way an admin command fails, worded for the
//! operator who reads it at 3 a.m.: what failed, against which server, and
//! what to try next.

use std::path::PathBuf;
use std::time::Duration;

use orderd_protocol::client::ClientError;
use orderd_protocol::message::Rejection;

use super::catalogue_file::CatalogueError;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No connection could be made to the server.
    #[error("cannot reach orderd at {server}: {reason} — is `orderd serve` running and listening there? (set --server or ORDERD_SERVER)")]
    Unreachable {
        /// The address given.
        server: String,
        /// Why, in words (`connection refused`, `timed out after 3s`).
        reason: String,
    },
    /// `--server` does not name an address.
    #[error("cannot resolve orderd address `{server}`: {detail} — expected HOST:PORT, e.g. 127.0.0.1:7070")]
    BadAddress {
        /// The address given.
        server: String,
        /// Why.
        detail: String,
    },
    /// The server did not answer in time.
    #[error(
        "orderd at {server} did not answer {what} within {after:?} — is it overloaded or stopped? Check `orderd admin stats` and its log"
    )]
    Timeout {
        /// The address given.
        server: String,
        /// The request.
        what: String,
        /// The timeout.
        after: Duration,
    },
    /// Any other failure of a request (connection lost, protocol error, ...).
    #[error("{what} failed against orderd at {server}: {source}")]
    Request {
        /// The address given.
        server: String,
        /// The request.
        what: String,
        /// The SDK's error.
        source: ClientError,
    },
    /// `stock PRODUCT` of a product the server does not have.
    #[error("orderd at {server} has no product {product} — load it with `orderd admin load-catalogue FILE` or `load-workload`")]
    NoSuchProduct {
        /// The address given.
        server: String,
        /// The product.
        product: u64,
    },
    /// `order ID` of an order the server does not have.
    #[error("orderd at {server} has no order {order_id} — check the id (order ids are printed by whoever placed the order)")]
    NoSuchOrder {
        /// The address given.
        server: String,
        /// The order id.
        order_id: u64,
    },
    /// The server refused a product of a load.
    #[error(
        "orderd at {server} refused product {product}: {rejection} — {loaded} of {total} products were loaded; \
         loading is idempotent, so fix the product and run the command again"
    )]
    UpsertRefused {
        /// The address given.
        server: String,
        /// The refused product.
        product: u64,
        /// Why.
        rejection: Rejection,
        /// Products the server confirmed before the command stopped.
        loaded: usize,
        /// Products the command meant to load.
        total: usize,
    },
    /// The server confirmed a product with other settings than were sent.
    #[error(
        "orderd at {server} answered the upsert of product {product} with different settings ({what}) — \
         is another operator changing the catalogue at the same time?"
    )]
    UpsertMismatch {
        /// The address given.
        server: String,
        /// The product.
        product: u64,
        /// Which setting differs.
        what: String,
    },
    /// The server refused an order command.
    #[error("orderd at {server} refused {what}: {rejection}")]
    Refused {
        /// The address given.
        server: String,
        /// The command, in words.
        what: String,
        /// Why.
        rejection: Rejection,
    },
    /// `--set-stock` with a file stock below the units already sold or held.
    #[error(
        "product {product}: the file supplies {file_stock} units but {taken} are already sold or held by orders — \
         nothing was sent; raise its stock in the file, or load without --set-stock to keep the server's stock"
    )]
    StockBelowTaken {
        /// The product.
        product: u64,
        /// The file's stock.
        file_stock: u64,
        /// Units reserved or paid on the server.
        taken: u64,
    },
    /// The server refused a stock adjustment.
    #[error(
        "orderd at {server} refused to adjust the stock of product {product} by {delta:+}: {rejection} — \
         {applied} adjustments were applied before it; check the product with `orderd admin stock {product}` \
         before adjusting again (adjustments are not idempotent)"
    )]
    AdjustRefused {
        /// The address given.
        server: String,
        /// The product.
        product: u64,
        /// The adjustment.
        delta: i64,
        /// Why.
        rejection: Rejection,
        /// Adjustments applied before this one.
        applied: usize,
    },
    /// The catalogue file cannot be opened.
    #[error("cannot open catalogue file {}: {source}", path.display())]
    OpenCatalogue {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The catalogue file is not valid; nothing was loaded.
    #[error("catalogue file {}, {source} — nothing was loaded (see `orderd admin load-catalogue --help` for the format)", path.display())]
    BadCatalogue {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong with it.
        source: CatalogueError,
    },
    /// The output could not be written (closed pipe, full disk).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// A file the command writes cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The shell's terminal (or standard input) cannot be read.
    #[error("cannot read the shell's input: {0}")]
    Input(String),
    /// The JSON output could not be produced.
    #[error("cannot write the JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

impl AdminError {
    /// The error for `source`, a failure of `what` against `server`.
    pub(crate) fn from_client(server: &str, what: impl Into<String>, source: ClientError) -> AdminError {
        let server = server.to_owned();
        match source {
            // A core other than the one given (learnt from the handshake) is named.
            ClientError::Connect { addr, source } if addr.to_string() != server => {
                AdminError::Unreachable { reason: format!("its core at {addr}: {}", io_reason(&source)), server }
            }
            ClientError::Connect { source, .. } => AdminError::Unreachable { server, reason: io_reason(&source) },
            ClientError::Resolve { detail, .. } => AdminError::BadAddress { server, detail },
            ClientError::Timeout { after, .. } => AdminError::Timeout { server, what: what.into(), after },
            // After retries, the last failure is what the operator must fix.
            ClientError::RetriesExhausted { last, .. } if matches!(*last, ClientError::Connect { .. } | ClientError::Timeout { .. }) => {
                AdminError::from_client(&server, what, *last)
            }
            source => AdminError::Request { server, what: what.into(), source },
        }
    }
}

/// An I/O error in the words an operator expects (`connection refused`).
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "connection timed out".into(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "no route to the host".into(),
        ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn a_refused_connection_reads_as_unreachable_with_a_hint() {
        let addr: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let cause = ClientError::Connect { addr, source: std::io::ErrorKind::ConnectionRefused.into() };
        let e = AdminError::from_client("127.0.0.1:7070", "connect", cause);
        assert!(matches!(e, AdminError::Unreachable { ref reason, .. } if reason == "connection refused"), "{e}");
        assert!(e.to_string().starts_with("cannot reach orderd at 127.0.0.1:7070: connection refused — is `orderd serve` running"), "{e}");
    }

    #[test]
    fn an_unreachable_core_other_than_the_given_one_is_named() {
        let addr: SocketAddr = "10.0.0.2:7071".parse().unwrap();
        let cause = ClientError::Connect { addr, source: std::io::ErrorKind::ConnectionRefused.into() };
        let e = AdminError::from_client("10.0.0.2:7070", "stats", cause);
        assert!(e.to_string().starts_with("cannot reach orderd at 10.0.0.2:7070: its core at 10.0.0.2:7071: connection refused"), "{e}");
    }

    #[test]
    fn retries_that_end_in_a_timeout_read_as_a_timeout() {
        let addr: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let last = ClientError::Timeout { addr, after: Duration::from_secs(5) };
        let cause = ClientError::RetriesExhausted { attempts: 4, last: Box::new(last) };
        let e = AdminError::from_client("h:1", "stats", cause);
        assert!(matches!(e, AdminError::Timeout { ref what, .. } if what == "stats"), "{e}");
    }
}
