//! The command line: the clap tree of `orderd` (every flag also from an
//! `ORDERD_*` environment variable) and its validation: `orderd serve`'s
//! flags are checked once into the [`ServeConfig`](crate::config::ServeConfig)
//! the runtime trusts.
//!
//! - this file: [`Cli`] and its subcommands, one variant of [`CliCommand`]
//!   each (adding a subcommand is one variant).
//! - [`site`]: where a server keeps its data and listens (the flags `serve`
//!   and `host-check` share) and `--cores` parsing.
//! - [`serve`]: the flags of `orderd serve` and their validation.

pub mod serve;
pub mod site;

use clap::{Parser, Subcommand};

pub use serve::ServeArgs;
pub use site::{parse_cores, SiteArgs};

/// orderd: a thread-per-core order server for e-commerce sales peaks.
#[derive(Debug, Parser)]
#[command(name = "orderd", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands of `orderd`.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the order server: per-core durable logs in --data-dir, recovered
    /// at start.
    Serve(ServeArgs),
    /// Operator commands against a running server: load a catalogue, read
    /// stock, orders and statistics.
    Admin(crate::admin::AdminArgs),
    /// Check this host for `orderd serve` with the same options: kernel and
    /// io_uring, locked memory, CPUs, IRQs, data directory, network. One
    /// PASS/WARN/FAIL/SKIP line per check with its fix; exit code 1 on FAIL.
    HostCheck(crate::hostcheck::HostCheckArgs),
    /// Print the live order stream, one line per event (JSON lines with
    /// --json), from the beginning, now, or a saved position; on exit print
    /// the position to resume from.
    Tail(crate::tail::TailArgs),
    /// A live terminal view of a server's aggregates: orders/s and GMV over
    /// 1 s, 10 s and 60 s, totals, best sellers, sold-out products. Quit
    /// with q, Esc or Ctrl-C.
    Top(crate::top::TopArgs),
}
