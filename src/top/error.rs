//! [`TopError`]: the ways `orderd top` itself fails. A server that cannot be
//! reached is not one of them: the view shows that and keeps retrying.

use std::io;

/// Why `orderd top` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopError {
    /// The terminal could not be set up, drawn on, read or restored.
    #[error("cannot {what} the terminal: {source} — `orderd top` needs an interactive terminal (run it in a terminal or tmux, not through a pipe)")]
    Terminal {
        /// What was being done (`set up`, `draw on`, `read keys from`, `restore`).
        what: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// The thread that polls the server could not be started.
    #[error("cannot start the polling thread: {0}")]
    SpawnPoller(io::Error),
    /// The termination signals could not be watched.
    #[error("cannot watch for termination signals: {0}")]
    Signals(io::Error),
    /// The polling thread ended although the view still runs.
    #[error("the polling thread stopped unexpectedly")]
    PollerStopped,
}

impl TopError {
    /// A terminal failure while doing `what`.
    pub(crate) fn terminal(what: &'static str) -> impl FnOnce(io::Error) -> TopError {
        move |source| TopError::Terminal { what, source }
    }
}
