//! `orderd admin`: the operator's commands, all through the client SDK.
//!
//! ```text
//! orderd admin [--server HOST:PORT] [--json] <command>
//!   load-workload uniform|hot|zipf   load a reference catalogue (benches/WORKLOAD.md)
//!   load-catalogue FILE              load products from a CSV file
//!   stock PRODUCT                    a product's stock and settings
//!   order ID                         an order
//!   stats                            per-core counters and totals
//! ```
//!
//! `--server` defaults to `127.0.0.1:7070` or `$ORDERD_SERVER`. The binary
//! plugs the commands in with one variant, `Admin(AdminArgs)`, and calls
//! [`run`] with standard output.
//!
//! - [`catalogue_file`]: the CSV format of `load-catalogue` and its parser.
//! - [`load`]: pipelined upserts, every reply checked.
//! - [`render`]: human and JSON output.
//! - [`AdminError`]: failures, worded for an operator.

pub mod catalogue_file;
mod error;
pub mod load;
pub mod render;

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use orderd_protocol::client::{Client, ClientConfig, ClientError};
use orderd_protocol::{Status, UpsertProduct};

pub use self::error::AdminError;
use crate::workload::Workload;

/// The address `--server` defaults to.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7070";

/// `orderd admin`: options shared by every admin command.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AdminArgs {
    /// The orderd server to talk to (any of its cores).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_SERVER, env = "ORDERD_SERVER", global = true)]
    pub server: String,
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AdminCommand {
    /// Load one of the reference catalogues of benches/WORKLOAD.md (every product's
    /// price, stock and limit are set; safe to repeat).
    LoadWorkload {
        /// Which catalogue.
        #[arg(value_enum)]
        workload: Workload,
    },
    /// Load products from a CSV file (every product's fields are set; safe
    /// to repeat).
    ///
    /// The file: a header line `product,unit_price_cents,stock,per_user_limit,payment_window_ms`,
    /// then one product per line, every field a whole number (cents, units,
    /// milliseconds; per_user_limit and payment_window_ms 0 for none). Blank
    /// lines and lines starting with `#` are ignored. The whole file is
    /// checked before anything is sent.
    LoadCatalogue {
        /// The CSV file.
        file: PathBuf,
    },
    /// Show a product's stock and settings.
    Stock {
        /// The product id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        product: u64,
    },
    /// Show an order.
    Order {
        /// The order id.
        id: u64,
    },
    /// Show per-core counters and their totals.
    Stats,
}

/// Run the admin command `args`, writing its output to `out`.
///
/// # Errors
/// Whatever stopped the command, in words an operator can act on; nothing
/// is written to `out` for a failed command.
pub fn run(args: &AdminArgs, out: &mut impl Write) -> Result<(), AdminError> {
    run_with(args, ClientConfig::default(), out)
}

/// [`run`] with a client configuration of the caller's (tests shorten the
/// timeouts).
///
/// # Errors
/// As [`run`].
pub fn run_with(args: &AdminArgs, config: ClientConfig, out: &mut impl Write) -> Result<(), AdminError> {
    let server = args.server.as_str();
    match &args.command {
        AdminCommand::LoadWorkload { workload } => {
            let products: Vec<UpsertProduct> = workload.catalogue().collect();
            let report = load::load(&mut connect(server, config)?, server, &products)?;
            render::loaded(out, server, &format!("workload {workload}"), &report, args.json)
        }
        AdminCommand::LoadCatalogue { file } => {
            // The whole file is checked before connecting: a bad file is the
            // likelier mistake, and it must not leave half a catalogue behind.
            let products = read_catalogue(file)?;
            let report = load::load(&mut connect(server, config)?, server, &products)?;
            render::loaded(out, server, &format!("file {}", file.display()), &report, args.json)
        }
        AdminCommand::Stock { product } => {
            let stock = connect(server, config)?.stock(*product).map_err(|e| match e {
                ClientError::Rejected(r) if r.status() == Some(Status::NoSuchProduct) => {
                    AdminError::NoSuchProduct { server: server.to_owned(), product: *product }
                }
                e => AdminError::from_client(server, format!("reading the stock of product {product}"), e),
            })?;
            render::stock(out, &stock, args.json)
        }
        AdminCommand::Order { id } => {
            let order = connect(server, config)?.get_order(*id).map_err(|e| match e {
                ClientError::Rejected(r) if r.status() == Some(Status::NoSuchOrder) => {
                    AdminError::NoSuchOrder { server: server.to_owned(), order_id: *id }
                }
                e => AdminError::from_client(server, format!("reading order {id}"), e),
            })?;
            render::order(out, &order, args.json)
        }
        AdminCommand::Stats => {
            let stats = connect(server, config)?.stats().map_err(|e| AdminError::from_client(server, "reading the statistics", e))?;
            render::stats(out, server, &stats, args.json)
        }
    }
}

/// Connect to `server` and learn its shard map.
fn connect(server: &str, config: ClientConfig) -> Result<Client, AdminError> {
    Client::connect(server, config).map_err(|e| AdminError::from_client(server, "connecting", e))
}

/// Open and parse a catalogue file.
fn read_catalogue(path: &Path) -> Result<Vec<UpsertProduct>, AdminError> {
    let file = File::open(path).map_err(|source| AdminError::OpenCatalogue { path: path.to_owned(), source })?;
    catalogue_file::parse(BufReader::new(file)).map_err(|source| AdminError::BadCatalogue { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// `orderd admin ...` as the binary will mount it: one variant.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Admin(AdminArgs),
    }

    fn parse(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        Cli::try_parse_from(["orderd", "admin"].into_iter().chain(args.iter().copied())).map(|c| match c.command {
            Top::Admin(a) => a,
        })
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_parses() {
        let a = parse(&["load-workload", "hot"]).unwrap();
        assert_eq!(a.command, AdminCommand::LoadWorkload { workload: Workload::Hot });
        assert!(!a.json);
        let a = parse(&["--server", "10.0.0.1:9000", "load-catalogue", "spring.csv"]).unwrap();
        assert_eq!(a.server, "10.0.0.1:9000");
        assert_eq!(a.command, AdminCommand::LoadCatalogue { file: "spring.csv".into() });
        let a = parse(&["stock", "42", "--json"]).unwrap();
        assert_eq!((a.command, a.json), (AdminCommand::Stock { product: 42 }, true));
        assert_eq!(parse(&["order", "281474976710657"]).unwrap().command, AdminCommand::Order { id: 281_474_976_710_657 });
        assert_eq!(parse(&["stats", "--server", "h:1"]).unwrap().server, "h:1");
    }

    #[test]
    fn the_server_defaults_to_localhost_7070_or_orderd_server() {
        let cmd = Cli::command();
        let admin = cmd.find_subcommand("admin").unwrap();
        let server = admin.get_arguments().find(|a| a.get_id() == "server").unwrap();
        assert_eq!(server.get_env(), Some(std::ffi::OsStr::new("ORDERD_SERVER")));
        assert_eq!(server.get_default_values(), [DEFAULT_SERVER]);
    }

    #[test]
    fn bad_arguments_are_refused_by_the_parser() {
        assert!(parse(&["load-workload", "flash"]).is_err());
        assert!(parse(&["stock", "0"]).is_err());
        assert!(parse(&["stock", "-1"]).is_err());
        assert!(parse(&["order"]).is_err());
        assert!(parse(&[]).is_err());
    }
}
