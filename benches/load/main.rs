//! `orderd-load`: drive a reference workload (`WORKLOAD.md`) against an
//! orderd server and check its invariants at the end. The work is done by
//! [`orderd::load`]; this file parses the command line and maps the outcome
//! to the exit code: `0` every invariant holds, `1` an invariant is broken,
//! `2` the run could not be carried out (or a generator thread failed).

use std::process::ExitCode;

use clap::Parser;
use orderd::load::{self, LoadArgs};

fn main() -> ExitCode {
    let args = LoadArgs::parse();
    match load::run(&args, &mut std::io::stdout().lock()) {
        Ok(report) if !report.invariants_ok => {
            eprintln!("orderd-load: invariants broken (see the checks above)");
            ExitCode::from(1)
        }
        Ok(report) if !report.errors.is_empty() => {
            eprintln!("orderd-load: {} generator thread(s) failed; the figures are incomplete", report.errors.len());
            ExitCode::from(2)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderd-load: {e}");
            ExitCode::from(2)
        }
    }
}
