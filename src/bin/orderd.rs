//! The `orderd` binary: parse the command line, set up logging, run.
//! Everything else lives in the library.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use clap::Parser;
use orderd::cli::{Cli, CliCommand as Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => match orderd::admin::run(&args, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orderd admin: error: {e}");
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
                    eprintln!("orderd: error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
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
