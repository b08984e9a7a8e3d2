//! The `orderd` binary: parse the command line, set up logging, run.
//! Everything else lives in the library.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use orderd::cli::ServeArgs;

/// The version and the commit it was built from (`orderd --version`).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("ORDERD_COMMIT"), ")");

/// orderd: a thread-per-core order server for e-commerce sales peaks.
#[derive(Debug, Parser)]
#[command(name = "orderd", version = VERSION, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands of `orderd`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the order server: per-core durable logs in --data-dir, recovered
    /// at start.
    Serve(Box<ServeArgs>),
    /// Operator commands against a running server: load a catalogue, read
    /// stock, orders and statistics.
    Admin(orderd::admin::AdminArgs),
    /// The cluster's map in etcd: create it, show its nodes and shard
    /// owners, give unowned shards to the live nodes.
    Cluster(orderd::cluster::command::ClusterArgs),
    /// Check this host for `orderd serve` with the same options: kernel and
    /// io_uring, locked memory, CPUs, IRQs, data directory, network. One
    /// PASS/WARN/FAIL/SKIP line per check with its fix; exit code 1 on FAIL.
    HostCheck(orderd::hostcheck::HostCheckArgs),
    /// Print the live order stream, one line per event (JSON lines with
    /// --json), from the beginning, now, or a saved position; on exit print
    /// the position to resume from.
    Tail(orderd::tail::TailArgs),
    /// A live terminal view of a server's aggregates: orders/s and GMV over
    /// 1 s, 10 s and 60 s, totals, best sellers, sold-out products. Quit
    /// with q, Esc or Ctrl-C.
    Top(orderd::top::TopArgs),
    /// Print a shell completion script for orderd to standard output, e.g.
    /// `orderd completions bash > /etc/bash_completion.d/orderd`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print orderd's manual page (roff) to standard output, e.g.
    /// `orderd man > /usr/local/share/man/man1/orderd.1`; with --dir, write
    /// one page per command there (orderd.1, orderd-serve.1, ...).
    Man {
        /// Write orderd.1 and a page per subcommand into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let (cli, printed) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("orderd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(text) = printed {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Command::Admin(args) => match orderd::admin::run(&args, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orderd admin: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Cluster(args) => match orderd::cluster::command::run(&args, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orderd cluster: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::HostCheck(args) => match orderd::hostcheck::run(&args, &mut std::io::stdout().lock()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("orderd host-check: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Tail(args) => match orderd::tail::run(&args, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orderd tail: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Completions { shell } => {
            // Generated into memory: clap_complete panics on a failed write
            // (`orderd completions bash | head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "orderd", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orderd completions: error: cannot write the script: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Man { dir } => {
            let command = <Cli as clap::CommandFactory>::command();
            let written = match &dir {
                Some(dir) => clap_mangen::generate_to(command, dir),
                None => clap_mangen::Man::new(command).render(&mut std::io::stdout()),
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "orderd man: error: cannot write the manual page{}: {e}",
                        dir.map(|d| format!(" into {}", d.display())).unwrap_or_default()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Top(args) => match orderd::top::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orderd top: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            init_logging();
            let result =
                args.validate().map_err(anyhow::Error::from).and_then(|config| orderd::runtime::serve(config).map_err(anyhow::Error::from));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Each error's message already carries its cause: `{e:#}`
                    // printed the cause twice.
                    eprintln!("orderd: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Parses the command line, with `serve --config FILE`'s settings as the
/// defaults of `serve`'s flags (flags and `ORDERD_*` variables win). With
/// `serve --print-config`, also the settings to print instead of starting.
fn parse() -> Result<(Cli, Option<String>), orderd::cli::config_file::ConfigFileError> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    // A first pass only to find the configuration file (flag or variable).
    let first = Cli::command().ignore_errors(true).try_get_matches();
    let config = first.ok().and_then(|m| m.subcommand_matches("serve").and_then(|s| s.get_one::<std::path::PathBuf>("config").cloned()));
    let mut settings = Vec::new();
    if let Some(path) = &config {
        let serve = command.find_subcommand("serve").cloned().unwrap_or_else(|| clap::Command::new("serve"));
        settings = orderd::cli::config_file::read(path, &serve)?;
        command = command.mut_subcommand("serve", |serve| orderd::cli::config_file::apply(serve, &settings));
    }
    let matches = command.clone().get_matches();
    let printed = match matches.subcommand() {
        Some(("serve", serve_matches)) if serve_matches.get_flag("print_config") => {
            let serve = command.find_subcommand("serve").cloned().unwrap_or_else(|| clap::Command::new("serve"));
            Some(orderd::cli::config_file::print(&serve, serve_matches, &settings))
        }
        _ => None,
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Ok((cli, printed))
}

/// Logs to stderr (stdout carries the machine-readable listening line),
/// filtered by `RUST_LOG` (default `info`); glommio's `log` records are
/// forwarded so its memlock and stall warnings are visible.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish();
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        let _ = tracing_log::LogTracer::init();
    }
}
