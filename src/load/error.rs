//! [`LoadError`]: every way a load run cannot be carried out, worded for the
//! engineer who started it: what failed, against which server, what to try.
//!
//! A run that completes but finds a broken invariant is not an error: it is
//! a report with `invariants_ok: false` (see [`super::Report`]).

use std::path::PathBuf;

use orderd_protocol::client::ClientError;

use crate::admin::AdminError;

/// Why a load run could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A setting is out of range or settings contradict each other.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// A CPU of `--cpus` does not exist or cannot be used by this process.
    #[error("cannot pin to CPU {cpu}: {why} (usable CPUs: {usable:?})")]
    Cpu {
        /// The CPU asked for.
        cpu: usize,
        /// Why it cannot be used.
        why: &'static str,
        /// The CPUs this process may run on.
        usable: Vec<usize>,
    },
    /// Connecting, loading the catalogue or a request outside the measured
    /// run failed (the admin commands' errors, with their hints).
    #[error(transparent)]
    Server(#[from] AdminError),
    /// The run went ahead, but the server could not be asked for the
    /// checks afterwards (it stopped or restarted during the run): the
    /// figures were printed, the invariants were not checked.
    #[error("the invariants could not be checked after the run (the figures above are what was measured): {source}")]
    NotChecked {
        /// Why the checks could not be made.
        source: Box<LoadError>,
    },
    /// A product of the workload is missing from the server.
    #[error(
        "orderd at {server} has no product {product} of workload {workload} — run without --no-load, \
         or load it first with `orderd admin load-workload {workload}`"
    )]
    NotLoaded {
        /// The address given.
        server: String,
        /// The workload.
        workload: &'static str,
        /// The first missing product.
        product: u64,
    },
    /// The server answered a check's request with something else than the
    /// request calls for.
    #[error("orderd at {server} answered {what} with {got}")]
    Unexpected {
        /// The address given.
        server: String,
        /// The request.
        what: String,
        /// What came back.
        got: String,
    },
    /// A generator thread could not be started or died.
    #[error("load thread {index} {what}")]
    Thread {
        /// The thread's index.
        index: usize,
        /// What happened to it.
        what: String,
    },
    /// The JSON report could not be written.
    #[error("cannot write the JSON report to {}: {source}", path.display())]
    Report {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `--slow-log` could not be written.
    #[error("cannot write the slow-request log to {}: {source}", path.display())]
    SlowLog {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The report could not be serialised.
    #[error("cannot encode the JSON report: {0}")]
    Json(#[from] serde_json::Error),
    /// The human report could not be written to the output.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

impl LoadError {
    /// `source`, a failure of `what` against `server`, with the admin
    /// commands' wording and hints.
    pub(crate) fn client(server: &str, what: impl Into<String>, source: ClientError) -> LoadError {
        LoadError::Server(AdminError::from_client(server, what, source))
    }
}
