//! `orderd-sim`: runs the deterministic simulator (`orderd::sim`) over many
//! seeds, or one seed to reproduce a failure, and prints what it did.
//!
//! ```text
//! orderd-sim --seeds 1000 --requests 2000      # seeds 0..1000, 2000 client requests each
//! orderd-sim --seed 4242                       # one seed, as a failure printed it
//! ```
//!
//! Exit code 1 on the first failing seed (printed with the command that
//! reproduces it), 0 when every seed held.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use orderd::sim::{self, SimConfig, SimReport};

/// Run the deterministic whole-server simulator.
#[derive(Debug, Parser)]
#[command(name = "orderd-sim", version, about)]
struct Args {
    /// Run only this seed (to reproduce a failure).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of seeds to run, from --first-seed on.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Client requests per seed.
    #[arg(long, default_value_t = 2000)]
    requests: u64,
    /// No crashes, torn tails or failed syncs.
    #[arg(long)]
    no_faults: bool,
    /// Print every seed's report.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The server's own log lines (torn tails truncated, segments rotated...)
    // with RUST_LOG=info; none by default.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect(),
    };
    let started = Instant::now();
    let mut total = SimReport::default();
    for &seed in &seeds {
        match sim::run(SimConfig { seed, requests: args.requests, faults: !args.no_faults }) {
            Ok(report) => {
                if args.verbose || args.seed.is_some() {
                    println!("{report:?}");
                }
                total.requests += report.requests;
                total.acks += report.acks;
                total.orders += report.orders;
                total.crashes += report.crashes;
                total.failed_flushes += report.failed_flushes;
                total.failed_syncs += report.failed_syncs;
                total.torn_files += report.torn_files;
                total.flipped += report.flipped;
                total.rotted += report.rotted;
                total.checkpoints += report.checkpoints;
                total.failed_checkpoints += report.failed_checkpoints;
                total.from_checkpoint += report.from_checkpoint;
                total.records += report.records;
                total.steps += report.steps;
                total.keys_expired += report.keys_expired;
                total.orders_archived += report.orders_archived;
                total.orders_evicted += report.orders_evicted;
                total.segments_removed += report.segments_removed;
            }
            Err(failure) => {
                eprintln!("orderd-sim: {failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "orderd-sim: {} seeds held in {:.1} s: {} client requests, {} acknowledged changes ({} orders), {} crashes \
         ({} of them stops after a failed log sync), {} failed syncs in the segment preparer, {} torn tails ({} with a \
         flipped bit), {} bits rotted in durable records (each refused where it is, then repaired), {} checkpoints \
         ({} abandoned after a failed sync), {} restarts from a checkpoint, {} log records, {} steps, {} keys refused \
         past their dedup window, {} orders moved out of memory, {} orders in the archives at the end, {} log segments \
         deleted by retention",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        total.requests,
        total.acks,
        total.orders,
        total.crashes,
        total.failed_flushes,
        total.failed_syncs,
        total.torn_files,
        total.flipped,
        total.rotted,
        total.checkpoints,
        total.failed_checkpoints,
        total.from_checkpoint,
        total.records,
        total.steps,
        total.keys_expired,
        total.orders_evicted,
        total.orders_archived,
        total.segments_removed,
    );
    ExitCode::SUCCESS
}
