//! `orderd admin`: the operator's commands, all through the client SDK.
//!
//! ```text
//! orderd admin [--server HOST:PORT] [--json] <command>
//!   load-workload uniform|hot|zipf   load a reference catalogue (benches/WORKLOAD.md)
//!   load-catalogue FILE              load products from a CSV file
//!     (both: --dry-run shows what would change; --set-stock makes the
//!      file's stock each existing product's total supplied)
//!   adjust-stock PRODUCT DELTA       add (or remove) units of a product
//!   stock PRODUCT                    a product's stock and settings
//!   place PRODUCT --user U [--qty N] place an order at the catalogue price
//!   pay ORDER / cancel ORDER         pay or cancel a placed order
//!   aggregates [--top N]             orders and GMV over 1/10/60 s, best sellers
//!   order ID                         an order
//!   stats                            per-core counters, storage (checkpoints,
//!                                    log retained, hot and cold orders,
//!                                    memory by table) and totals
//! ```
//!
//! `--server` defaults to `127.0.0.1:7070` or `$ORDERD_SERVER`. The binary
//! plugs the commands in with one variant, `Admin(AdminArgs)`, and calls
//! [`run`] with standard output.
//!
//! - [`catalogue_file`]: the CSV format of `load-catalogue` and its parser.
//! - [`load`]: pipelined upserts, every reply checked.
//! - [`plan`]: what a load changes, read from the server before it.
//! - [`render`]: human and JSON output.
//! - [`storage`]: the storage part of `stats`.
//! - [`AdminError`]: failures, worded for an operator.

pub mod catalogue_file;
mod error;
pub mod load;
pub mod plan;
pub mod render;
pub mod shell;
pub mod storage;

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use orderd_protocol::client::{Client, ClientConfig, ClientError};
use orderd_protocol::{IdempotencyKey, PlaceOrder, Status, StockInfo, UpsertProduct};

pub use self::error::AdminError;
use crate::workload::Workload;

/// How long `orderd admin checkpoint` waits for every core's checkpoint.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

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
    /// Load one of the reference catalogues of benches/WORKLOAD.md: new
    /// products are created with their stock; existing ones take the
    /// price, window and limit and keep their stock. Safe to repeat.
    LoadWorkload {
        /// Which catalogue.
        #[arg(value_enum)]
        workload: Workload,
        /// How to load.
        #[command(flatten)]
        options: LoadOptions,
    },
    /// Load products from a CSV file: new products are created with their
    /// stock; existing ones take the price, window and limit and keep their
    /// stock (an upsert never puts sold units back on sale). Safe to repeat.
    ///
    /// The file: CSV with a header naming its columns in any order:
    /// `product`, `unit_price_cents` and `stock` required, `per_user_limit`
    /// and `payment_window_ms` optional (0: none), other columns ignored;
    /// then one product per line, those fields whole numbers (cents, units,
    /// milliseconds). Fields may be quoted. Blank lines and lines starting
    /// with `#` are ignored. The whole file is checked before anything is
    /// sent.
    LoadCatalogue {
        /// The CSV file.
        file: PathBuf,
        /// How to load.
        #[command(flatten)]
        options: LoadOptions,
    },
    /// Add units to a product's stock (a negative DELTA removes them; it is
    /// refused if fewer are available). Not idempotent: check with `stock`
    /// before running it again after a failure.
    AdjustStock {
        /// The product id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        product: u64,
        /// Units to add, e.g. 500 or -200.
        #[arg(allow_negative_numbers = true)]
        delta: i64,
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
    /// Place an order at the product's catalogue price (for trying a
    /// catalogue out, or a manual order; a sale's clients use the SDK).
    Place {
        /// The product id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        product: u64,
        /// The buyer.
        #[arg(long)]
        user: u64,
        /// Units.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        qty: u32,
        /// The idempotency key, a time-ordered key (UUIDv7) as 32 hex
        /// digits, dashes allowed (default: a new one, printed with the
        /// order): run the command again with it within the server's dedup
        /// window and the server answers with the same order instead of
        /// placing a second.
        #[arg(long, value_name = "HEX", value_parser = parse_key)]
        key: Option<IdempotencyKey>,
    },
    /// Pay a placed order.
    Pay {
        /// The order id.
        id: u64,
    },
    /// Cancel a placed order (its units go back on sale).
    Cancel {
        /// The order id.
        id: u64,
    },
    /// Orders and GMV over the last 1, 10 and 60 s, the best sellers and
    /// the sold-out products, merged over every core.
    Aggregates {
        /// How many best sellers to list.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
        top: u32,
    },
    /// Show per-core counters and their totals, then each core's storage:
    /// its newest checkpoint (sequence, age, duration, size), the log it
    /// retains (records, bytes against --max-log-bytes, segments), its
    /// orders in memory (hot) and archived (cold), cold keys, and memory by
    /// table (the storage part needs a server of protocol version 2).
    Stats,
    /// Write the whole catalogue as CSV (every core's products, by id):
    /// `product,unit_price_cents,stock,per_user_limit,payment_window_ms`
    /// as `load-catalogue` reads them, `stock` being each product's total
    /// supplied (what `load-catalogue --set-stock` sets), then the
    /// `available`, `reserved` and `paid` units for the record (ignored by
    /// `load-catalogue`). `--json`: the products as JSON. Needs a server of
    /// protocol version 2.
    ExportCatalogue {
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Every core takes a checkpoint now; answers once each is durable,
    /// with the log sequence each covers (a restart replays only the log
    /// after it). Takes as long as the slowest core's checkpoint. Needs a
    /// server of protocol version 2.
    Checkpoint,
    /// Type admin commands one line at a time (line editing, history,
    /// `help`, `quit`); reads a script from standard input that is not a
    /// terminal.
    Shell {
        /// The history file (default ~/.orderd_history; none without a
        /// home directory).
        #[arg(long, value_name = "FILE", env = "ORDERD_HISTFILE")]
        history: Option<PathBuf>,
        /// The home directory the default history file is in (`$HOME`).
        #[arg(long, value_name = "DIR", env = "HOME", hide = true)]
        home: Option<PathBuf>,
    },
}

/// Options of `load-workload` and `load-catalogue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::Args)]
pub struct LoadOptions {
    /// Show what the load would change (new products, settings, stock) and
    /// send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Make the file's stock each existing product's total supplied: adjust
    /// it by the difference (refused, before anything is sent, where more
    /// units are already sold or held).
    #[arg(long)]
    pub set_stock: bool,
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
        AdminCommand::LoadWorkload { workload, options } => {
            let products: Vec<UpsertProduct> = workload.catalogue().collect();
            load_products(server, config, &format!("workload {workload}"), &products, *options, args.json, out)
        }
        AdminCommand::LoadCatalogue { file, options } => {
            // The whole file is checked before connecting: a bad file is the
            // likelier mistake, and it must not leave half a catalogue behind.
            let products = read_catalogue(file)?;
            load_products(server, config, &format!("file {}", file.display()), &products, *options, args.json, out)
        }
        AdminCommand::AdjustStock { product, delta } => {
            let stock = connect(server, config)?.adjust_stock(*product, *delta).map_err(|e| match e {
                ClientError::Rejected(r) if r.status() == Some(Status::NoSuchProduct) => {
                    AdminError::NoSuchProduct { server: server.to_owned(), product: *product }
                }
                ClientError::Rejected(rejection) => {
                    AdminError::AdjustRefused { server: server.to_owned(), product: *product, delta: *delta, rejection, applied: 0 }
                }
                e => AdminError::from_client(server, format!("adjusting the stock of product {product}"), e),
            })?;
            render::stock(out, &stock, args.json)
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
        AdminCommand::Place { product, user, qty, key } => {
            let mut client = connect(server, config)?;
            let price = client.stock(*product).map_err(|e| no_such_product(server, *product, e))?.unit_price_cents;
            let request = match key {
                Some(key) => PlaceOrder { key: *key, user: *user, product: *product, unit_price_cents: price, qty: *qty },
                None => PlaceOrder::with_new_key(*user, *product, *qty, price),
            };
            let order =
                client.place_order(request).map_err(|e| order_error(server, format!("placing an order of product {product}"), e))?;
            render::order(out, &order, args.json)
        }
        AdminCommand::Pay { id } => {
            let order = connect(server, config)?.pay_order(*id).map_err(|e| order_error(server, format!("paying order {id}"), e))?;
            render::order(out, &order, args.json)
        }
        AdminCommand::Cancel { id } => {
            let order = connect(server, config)?.cancel_order(*id).map_err(|e| order_error(server, format!("cancelling order {id}"), e))?;
            render::order(out, &order, args.json)
        }
        AdminCommand::Aggregates { top } => {
            let mut parts = Vec::new();
            for (_, addr) in nodes_of(server, &config)? {
                let part = connect(&addr, config.clone())?
                    .aggregates(*top)
                    .map_err(|e| AdminError::from_client(&addr, "reading the aggregates", e))?;
                parts.push(part);
            }
            // A cluster's: every node's, merged as a node merges its cores'.
            let aggregates = crate::stream::aggregates::merge(parts, *top);
            render::aggregates(out, &aggregates, args.json)
        }
        AdminCommand::Stats => {
            let nodes = nodes_of(server, &config)?;
            let mut views = serde_json::Map::new();
            for (node, addr) in &nodes {
                let mut client = connect(addr, config.clone())?;
                let stats = client.stats().map_err(|e| AdminError::from_client(addr, "reading the statistics", e))?;
                let storage = match client.storage_stats() {
                    Ok(storage) => Some(storage),
                    // A server of protocol version 1 has no storage statistics.
                    Err(ClientError::Unsupported { .. }) => None,
                    Err(ClientError::Rejected(r)) if r.status() == Some(Status::Unsupported) => None,
                    Err(e) => return Err(AdminError::from_client(addr, "reading the storage statistics", e)),
                };
                match node {
                    None => return render::stats(out, server, &stats, storage.as_ref(), args.json),
                    Some(node) if args.json => {
                        let mut text = Vec::new();
                        render::stats(&mut text, addr, &stats, storage.as_ref(), true)?;
                        let view = serde_json::from_slice(&text).map_err(|e| AdminError::Output(std::io::Error::other(e)))?;
                        views.insert(node.clone(), view);
                    }
                    Some(node) => render::stats(out, &format!("{addr} (node {node})"), &stats, storage.as_ref(), false)?,
                }
            }
            if args.json {
                writeln!(out, "{:#}", serde_json::json!({ "nodes": views }))?;
            }
            Ok(())
        }
        AdminCommand::Shell { history, home } => {
            let history = history.clone().or_else(|| home.as_ref().map(|home| home.join(shell::HISTORY_FILE)));
            shell::run(args, history.as_deref(), config, out)
        }
        AdminCommand::Checkpoint => {
            // A checkpoint of large shards takes seconds: wait for it, and
            // never resend it on a timeout (each try would take another).
            let config = ClientConfig { request_timeout: CHECKPOINT_WAIT, retries: 0, ..config };
            // In a cluster, every node takes one (JSON: {nodes: {id: ...}}).
            let mut views = serde_json::Map::new();
            for (node, addr) in nodes_of(server, &config)? {
                let taken =
                    connect(&addr, config.clone())?.checkpoint().map_err(|e| AdminError::from_client(&addr, "taking a checkpoint", e))?;
                match node {
                    None => return render::checkpointed(out, &taken, args.json),
                    Some(node) if args.json => {
                        let mut text = Vec::new();
                        render::checkpointed(&mut text, &taken, true)?;
                        let view = serde_json::from_slice(&text).map_err(|e| AdminError::Output(std::io::Error::other(e)))?;
                        views.insert(node, view);
                    }
                    Some(node) => {
                        write!(out, "node {node}: ")?;
                        render::checkpointed(out, &taken, false)?;
                    }
                }
            }
            if args.json {
                writeln!(out, "{:#}", serde_json::json!({ "nodes": views }))?;
            }
            Ok(())
        }
        AdminCommand::ExportCatalogue { out: file } => {
            let mut client = connect(server, config.clone())?;
            let mut products = Vec::new();
            if client.routes().cluster_version().is_some() {
                // A cluster's: each node's products of the shards the map
                // gives it (a node may still hold a copy of a shard moved
                // away, or one being moved in).
                let map = client.cluster_map().map_err(|e| AdminError::from_client(server, "reading the cluster map", e))?;
                let shards = map.owners.len() as u32;
                for (index, node) in map.nodes.iter().enumerate() {
                    let Some(addr) = node.cores.first() else { continue };
                    let mut node_client = connect(addr, config.clone())?;
                    let owned = |p: &StockInfo| {
                        map.owners.get(orderd_protocol::shard::shard_of_product(p.product, shards) as usize) == Some(&(index as u32))
                    };
                    products.extend(list_all(&mut node_client, addr)?.into_iter().filter(owned));
                }
                products.sort_unstable_by_key(|p| p.product);
            } else {
                products = list_all(&mut client, server)?;
            }
            match file {
                None => render::catalogue(out, &products, args.json),
                Some(path) => {
                    let mut buffer = Vec::new();
                    render::catalogue(&mut buffer, &products, args.json)?;
                    std::fs::write(path, &buffer).map_err(|source| AdminError::WriteFile { path: path.clone(), source })?;
                    writeln!(out, "exported {} products to {}", products.len(), path.display())?;
                    Ok(())
                }
            }
        }
    }
}

/// Load `products` (from `source`): read what the server has, plan, and
/// unless `--dry-run` upsert every product and send the plan's adjustments.
fn load_products(
    server: &str,
    config: ClientConfig,
    source: &str,
    products: &[UpsertProduct],
    options: LoadOptions,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), AdminError> {
    let mut client = connect(server, config)?;
    let current = plan::read_current(&mut client, server, products)?;
    let plan = plan::Plan::new(products, &current, options.set_stock)?;
    if options.dry_run {
        return render::plan(out, server, source, &plan, as_json);
    }
    let report = load::load(&mut client, server, products)?;
    plan::adjust(&mut client, server, &plan)?;
    render::loaded(out, server, source, &report, &plan, as_json)
}

/// The error of reading product `product`: `NoSuchProduct` said as such.
fn no_such_product(server: &str, product: u64, e: ClientError) -> AdminError {
    match e {
        ClientError::Rejected(r) if r.status() == Some(Status::NoSuchProduct) => {
            AdminError::NoSuchProduct { server: server.to_owned(), product }
        }
        e => AdminError::from_client(server, format!("reading the stock of product {product}"), e),
    }
}

/// The error of an order command: the server's refusal in words.
fn order_error(server: &str, what: String, e: ClientError) -> AdminError {
    match e {
        ClientError::Rejected(rejection) => AdminError::Refused { server: server.to_owned(), what, rejection },
        e => AdminError::from_client(server, what, e),
    }
}

/// A time-ordered idempotency key: 32 hex digits, dashes allowed (a UUIDv7
/// as `uuidgen --time-v7` or any UUID library prints it).
fn parse_key(text: &str) -> Result<IdempotencyKey, String> {
    let digits: String = text.chars().filter(|&c| c != '-').collect();
    if digits.len() != 32 {
        return Err(format!("a key is 32 hex digits (dashes allowed), `{text}` has {}", digits.len()));
    }
    let key = u128::from_str_radix(&digits, 16).map(IdempotencyKey::from).map_err(|_| format!("`{text}` is not hexadecimal"))?;
    match key.time_ms() {
        Some(_) => Ok(key),
        None => Err(format!("`{text}` is not a time-ordered key (a UUIDv7, PROTOCOL.md § 9): leave --key out to make one")),
    }
}

/// Connect to `server` and learn its shard map.
/// Every product `client`'s server lists, by id.
fn list_all(client: &mut Client, server: &str) -> Result<Vec<StockInfo>, AdminError> {
    let mut products = Vec::new();
    let mut after = 0;
    loop {
        let page = client.list_products(after, 0).map_err(|e| AdminError::from_client(server, "listing the products", e))?;
        products.extend_from_slice(&page.products);
        match page.products.last() {
            Some(last) if page.more != 0 => after = last.product,
            _ => break,
        }
    }
    Ok(products)
}

/// The servers to ask for what every node has (statistics, aggregates):
/// `server` alone (`None`: not in a cluster), or in a cluster every live
/// node, by id, at its first core.
fn nodes_of(server: &str, config: &ClientConfig) -> Result<Vec<(Option<String>, String)>, AdminError> {
    let mut client = connect(server, config.clone())?;
    if client.routes().cluster_version().is_none() {
        return Ok(vec![(None, server.to_owned())]);
    }
    let map = client.cluster_map().map_err(|e| AdminError::from_client(server, "reading the cluster map", e))?;
    Ok(map.nodes.iter().filter_map(|n| n.cores.first().map(|addr| (Some(n.node.clone()), addr.clone()))).collect())
}

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
        assert_eq!(a.command, AdminCommand::LoadWorkload { workload: Workload::Hot, options: LoadOptions::default() });
        assert!(!a.json);
        let a = parse(&["--server", "10.0.0.1:9000", "load-catalogue", "spring.csv"]).unwrap();
        assert_eq!(a.server, "10.0.0.1:9000");
        assert_eq!(a.command, AdminCommand::LoadCatalogue { file: "spring.csv".into(), options: LoadOptions::default() });
        let a = parse(&["load-catalogue", "spring.csv", "--dry-run", "--set-stock"]).unwrap();
        let options = LoadOptions { dry_run: true, set_stock: true };
        assert_eq!(a.command, AdminCommand::LoadCatalogue { file: "spring.csv".into(), options });
        assert_eq!(parse(&["adjust-stock", "7", "-200"]).unwrap().command, AdminCommand::AdjustStock { product: 7, delta: -200 });
        assert_eq!(parse(&["adjust-stock", "7", "500"]).unwrap().command, AdminCommand::AdjustStock { product: 7, delta: 500 });
        let place = parse(&["place", "7", "--user", "3", "--qty", "2", "--key", "017F22E2-79B0-7CC3-98C4-DC0C0C07398F"]).unwrap().command;
        let key = IdempotencyKey { hi: 0x017F_22E2_79B0_7CC3, lo: 0x98C4_DC0C_0C07_398F };
        assert_eq!(place, AdminCommand::Place { product: 7, user: 3, qty: 2, key: Some(key) });
        let shell = parse(&["shell", "--home", "/home/op"]).unwrap().command;
        assert_eq!(shell, AdminCommand::Shell { history: None, home: Some(PathBuf::from("/home/op")) });
        let untimed = parse(&["place", "7", "--user", "3", "--key", "000000000000000000000000000000ff"]).unwrap_err().to_string();
        assert!(untimed.contains("not a time-ordered key"), "{untimed}");
        assert_eq!(parse(&["place", "7", "--user", "3"]).unwrap().command, AdminCommand::Place { product: 7, user: 3, qty: 1, key: None });
        assert!(parse(&["place", "7", "--user", "3", "--key", "abc"]).is_err(), "a key is 32 hex digits");
        assert!(parse(&["place", "7"]).is_err(), "the buyer is required");
        assert_eq!(parse(&["pay", "9"]).unwrap().command, AdminCommand::Pay { id: 9 });
        assert_eq!(parse(&["cancel", "9"]).unwrap().command, AdminCommand::Cancel { id: 9 });
        assert_eq!(parse(&["aggregates"]).unwrap().command, AdminCommand::Aggregates { top: 10 });
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
