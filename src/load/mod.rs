//! `orderd-load`: the load generator of the reference workloads
//! (`WORKLOAD.md`), with the invariant check at the end of every run.
//!
//! A run: connect, load the catalogue (unless `--no-load`), read every
//! product's stock, start `C` threads (one shard-aware [`Client`] each,
//! pinned to `--cpus`) that keep `P` frames of `B` requests in flight
//! (closed loop) or send at intended times (open loop, `--rate`), stop by
//! request count or duration, read the stock again and check the
//! invariants, then print a table and write the JSON report.
//!
//! The binary (`benches/load/main.rs`) is [`LoadArgs`] + [`run`] + an exit
//! code: `0` when every invariant holds and no thread failed, `1` when an
//! invariant is broken, `2` when the run could not be carried out.
//!
//! # Layout
//! - [`args`]: the command line (fixed flags and extensions).
//! - [`draw`]: users, products, keys and retries of each request.
//! - [`worker`]: one thread's closed or open loop.
//! - [`tally`]: what the threads saw, merged.
//! - [`check`]: the invariants, through the server's own requests.
//! - [`report`]: the report, as a table and as JSON.
//! - [`progress`]: the progress bar.
//! - [`stream`]: a subscriber measuring the order stream during the run,
//!   and stalled subscribers.
//! - [`LoadError`]: why a run could not be carried out.

pub mod args;
pub mod check;
pub mod draw;
mod error;
pub mod probe;
pub mod progress;
pub mod report;
pub mod stream;
pub mod tally;
pub mod worker;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderd_protocol::client::{new_key, Client, ClientConfig, ClientError};
use orderd_protocol::message::{ProductRef, StreamStart};
use orderd_protocol::{Request, Status, UpsertProduct};

pub use self::args::{LoadArgs, Stop};
use self::check::Check;
use self::draw::Drawer;
pub use self::error::LoadError;
use self::progress::Progress;
pub use self::report::{Machine, Report};
use self::tally::{micros, Tally};
use self::worker::{Budget, Plan};
use crate::admin;
use crate::workload::Workload;

/// Time between connecting the threads and the common start, so that every
/// thread is running before the first request is due.
const START_DELAY: Duration = Duration::from_millis(20);

/// Run the load `args` describe, printing the table (and the progress bar
/// when standard output is a terminal) to `out`.
///
/// # Errors
/// A run that could not be carried out. A run that breaks an invariant is
/// `Ok` with `invariants_ok == false`.
pub fn run(args: &LoadArgs, out: &mut impl Write) -> Result<Report, LoadError> {
    let config = ClientConfig { request_timeout: args.timeout, ..ClientConfig::default() };
    run_with(args, config, out)
}

/// [`run`] with a client configuration of the caller's (tests shorten the
/// timeouts). `max_batch` and `max_in_flight` are set from `--batch` and
/// `--pipeline` for the generator's clients.
///
/// # Errors
/// As [`run`].
pub fn run_with(args: &LoadArgs, config: ClientConfig, out: &mut impl Write) -> Result<Report, LoadError> {
    args.validate()?;
    let cpus = usable_cpus(args.cpus.as_ref().map(|c| c.0.as_slice()).unwrap_or_default())?;
    if let Some(&id) = cpus.first() {
        // The checks run here; keep them off the server's cores too.
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let (server, workload) = (args.server.as_str(), args.workload);
    let mut control = Client::connect(server, config.clone()).map_err(|e| LoadError::client(server, "connecting", e))?;
    // Every core the client may reach: the server's, or every live node's
    // in a cluster.
    let server_cores = control.routes().len();
    if !args.no_load {
        let products: Vec<UpsertProduct> = workload
            .catalogue()
            .map(|u| UpsertProduct {
                stock: args.stock.unwrap_or(u.stock),
                payment_window_ms: args.payment_window_ms.unwrap_or(u.payment_window_ms),
                ..u
            })
            .collect();
        admin::load::load(&mut control, server, &products)?;
        // An upsert keeps an existing product's stock: top each product up
        // (or down) to the run's stock, so every run starts as
        // WORKLOAD.md says even on a server that sold before.
        admin::plan::refill(&mut control, server, &products)?;
    }
    let before = check::snapshot(&mut control, server, workload)?;

    let run_key = new_key();
    let seed = args.seed.unwrap_or_else(|| new_key().lo);
    let stalled = stream::Stalled::start(server, &config, args.stalled_subscribers)
        .map_err(|e| LoadError::client(server, "opening the stalled subscribers", e))?;
    let watcher = if args.subscribe {
        Some(stream::Watcher::start(server, config.clone()).map_err(|e| LoadError::client(server, "subscribing", e))?)
    } else {
        None
    };
    let from = if args.readers_from == "beginning" { StreamStart::Beginning } else { StreamStart::Now };
    let mut readers = stream::Readers::start(server, &config, args.readers, from, args.readers_product)
        .map_err(|e| LoadError::client(server, "opening the readers", e))?;
    let probe = match args.read_probe_ms {
        Some(ms) => Some(probe::ReadProbe::start(server, &config, 1, Duration::from_millis(ms))?),
        None => None,
    };
    readers.load_started();
    let (tally, elapsed) = drive(args, &config, &cpus, seed, run_key)?;
    let load_end = Instant::now();
    let read_probe = probe.map(probe::ReadProbe::finish).transpose()?;
    drop(stalled);
    let readers = readers.finish().map_err(|e| LoadError::client(server, "reading the order stream (--readers)", e))?;
    if workload.follows_up() {
        // Every order left open expires by the end of its window (the
        // server's timer runs every 10 ms; a second of margin).
        let window = before.iter().map(|s| s.payment_window_ms).max().unwrap_or(0);
        let until = load_end + Duration::from_millis(window) + Duration::from_secs(1);
        if !args.quiet {
            let _ = writeln!(
                out,
                "waiting {:.1} s for the orders left open to expire (payment window {window} ms)",
                until.saturating_duration_since(Instant::now()).as_secs_f64()
            );
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }
    let stream = match watcher {
        Some(w) => Some(w.finish(load_end).map_err(|e| LoadError::client(server, "reading the order stream", e))?),
        None => None,
    };

    let checks = match checks(args, &mut control, &before, &tally, run_key) {
        Ok(checks) => checks,
        Err(e) => {
            // The checks could not be made (typically the server went away
            // during the run): what was measured is still worth showing,
            // without a verdict.
            let mut report = report(args, &tally, elapsed, Vec::new(), seed, server_cores);
            report.stream = stream;
            report.readers = readers;
            report.read_probe = read_probe;
            report.render_figures(out)?;
            return Err(LoadError::NotChecked { source: Box::new(e) });
        }
    };

    let mut report = report(args, &tally, elapsed, checks, seed, server_cores);
    report.stream = stream;
    report.readers = readers;
    report.read_probe = read_probe;
    report.render(out)?;
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report)
}

/// The checks of WORKLOAD.md, through the server's own requests once the
/// load has stopped.
fn checks(
    args: &LoadArgs,
    control: &mut Client,
    before: &[orderd_protocol::StockInfo],
    tally: &Tally,
    run_key: orderd_protocol::IdempotencyKey,
) -> Result<Vec<check::Check>, LoadError> {
    let (server, workload) = (args.server.as_str(), args.workload);
    // Lifecycle: the orders left open reach their final state by the end
    // of the payment window; read them first, then the stock, which then
    // no longer moves.
    let final_states = match workload.follows_up() {
        true => Some(check::final_states(control, server, tally)?),
        false => None,
    };
    let released = final_states.as_ref().map(|f| f.released_per_product.clone()).unwrap_or_default();
    let after = check::snapshot(control, server, workload)?;
    let mut checks = vec![
        check::stock_balance(&after),
        check::sold_matches_accepted(before, &after, tally, &released),
        check::retries_return_original(tally),
        check::replies_match_requests(tally),
    ];
    let mut samples = tally.samples.clone();
    samples.truncate(args.verify_sample);
    checks.push(check::keys_read_back(control, server, &samples, args.dedup_window_secs.saturating_mul(1000))?);
    if let Some(states) = &final_states {
        checks.push(check::final_states_check(states, tally));
    }
    if workload.per_user_limit() > 0 {
        // After the accounting snapshot: a probe the server wrongly accepts
        // changes the stock, but is then reported as what it is.
        let probe = check::limit_probe(control, server, tally, run_key, args.connections)?;
        checks.push(check::per_user_limit(tally, &probe));
    }
    Ok(checks)
}

/// Check that every CPU of `wanted` may be used by this process.
fn usable_cpus(wanted: &[usize]) -> Result<Vec<usize>, LoadError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let usable: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
    match wanted.iter().find(|cpu| !usable.contains(cpu)) {
        Some(&cpu) => Err(LoadError::Cpu { cpu, why: "not among the CPUs this process may run on", usable }),
        None => Ok(wanted.to_vec()),
    }
}

/// Start the threads, show progress, and merge what they saw; returns the
/// tally and the time from the start to the last reply.
fn drive(
    args: &LoadArgs,
    config: &ClientConfig,
    cpus: &[usize],
    seed: u64,
    run_key: orderd_protocol::IdempotencyKey,
) -> Result<(Tally, Duration), LoadError> {
    let server = args.server.as_str();
    let connections = args.connections;
    let threads = usize::try_from(connections).map_err(|_| LoadError::Setting("--connections is too large".into()))?;
    let config = ClientConfig {
        max_batch: usize::try_from(args.batch).unwrap_or(usize::MAX),
        max_in_flight: usize::try_from(args.pipeline).unwrap_or(usize::MAX),
        shard_aware: !args.no_shard_aware,
        ..config.clone()
    };
    let mut clients = Vec::with_capacity(threads);
    for i in 0..threads {
        let what = || format!("connecting generator thread {i}");
        let mut client = Client::connect(server, config.clone()).map_err(|e| LoadError::client(server, what(), e))?;
        warm_up(&mut client, args.workload).map_err(|e| LoadError::client(server, what(), e))?;
        clients.push(client);
    }
    let limited = args.workload.per_user_limit() > 0;
    let sample_cap = args.verify_sample.div_ceil(threads.max(1));
    let progress = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + START_DELAY;
    let start_monotonic_us = monotonic_us() + micros(START_DELAY);
    let stop = args.stop();
    let mut handles: Vec<JoinHandle<(Tally, Instant)>> = Vec::with_capacity(threads);
    for (i, client) in clients.into_iter().enumerate() {
        let index = i as u64;
        let budget = match stop {
            Stop::Requests(n) => Budget::Requests(n / connections + u64::from(index < n % connections)),
            Stop::Duration(d) => Budget::Until(start + d),
        };
        let open = args.rate.map(|rate| (Duration::from_secs_f64(connections as f64 / rate), index as f64 / connections as f64));
        let plan = Plan {
            index: i,
            budget,
            pipeline: usize::try_from(args.pipeline).unwrap_or(usize::MAX),
            batch: usize::try_from(args.batch).unwrap_or(usize::MAX),
            open,
            linger: Duration::from_micros(args.linger_us),
            start,
            cpu: (!cpus.is_empty()).then(|| cpus[i % cpus.len()]),
            progress: Arc::clone(&progress),
            slow_us: args.slow_log.is_some().then_some(args.slow_us),
        };
        let drawer = Drawer::new(args.workload, seed, index, run_key, args.retry_share)?;
        let tally = Tally::new(args.workload.product_count(), limited, sample_cap);
        let handle = std::thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || {
                let tally = worker::run(plan, client, drawer, tally);
                (tally, Instant::now())
            })
            .map_err(|e| LoadError::Thread { index: i, what: format!("cannot be started: {e}") })?;
        handles.push(handle);
    }

    let bar = Progress::new(stop, start, !args.quiet && std::io::stdout().is_terminal());
    while !handles.iter().all(JoinHandle::is_finished) {
        bar.show(progress.load(Ordering::Relaxed));
        std::thread::sleep(progress::POLL);
    }
    bar.finish();

    let mut total = Tally::new(args.workload.product_count(), limited, 0);
    let mut end = start;
    for (i, handle) in handles.into_iter().enumerate() {
        let (tally, finished) = handle.join().map_err(|_| LoadError::Thread { index: i, what: "panicked".into() })?;
        total.merge(tally);
        end = end.max(finished);
    }
    if let Some(path) = &args.slow_log {
        write_slow_log(path, args.slow_us, start_monotonic_us, &mut total.slow)
            .map_err(|source| LoadError::SlowLog { path: path.clone(), source })?;
    }
    Ok((total, end.saturating_duration_since(start)))
}

/// CLOCK_MONOTONIC now, µs (the clock `perf` and kernel traces use).
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live
    // local; CLOCK_MONOTONIC is always available on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000
}

/// `--slow-log`: the slow requests, by start time, one line each.
fn write_slow_log(path: &std::path::Path, threshold_us: u64, start_monotonic_us: u64, slow: &mut [(u64, u64)]) -> std::io::Result<()> {
    slow.sort_unstable();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "# orderd-load slow requests (latency > {threshold_us} us): start_monotonic_us latency_us")?;
    for &(since_start, latency) in slow.iter() {
        writeln!(out, "{} {latency}", start_monotonic_us + since_start)?;
    }
    out.flush()
}

/// Connect `client` to every core before the run (the SDK connects to a
/// core on first use), so no connection setup is measured as latency: one
/// get-stock of a product of each core (of every node, in a cluster).
fn warm_up(client: &mut Client, workload: Workload) -> Result<(), ClientError> {
    let routes = client.routes();
    let mut reached = vec![false; routes.len()];
    let mut requests = Vec::new();
    for product in workload.products() {
        let request = Request::GetStock(ProductRef { product });
        if let Some(seen) = reached.get_mut(routes.endpoint_for(&request)) {
            if !*seen {
                *seen = true;
                requests.push(request);
            }
        }
        if reached.iter().all(|r| *r) {
            break;
        }
    }
    client.execute(&requests).map(drop)
}

/// The report of a run.
fn report(args: &LoadArgs, tally: &Tally, elapsed: Duration, checks: Vec<Check>, seed: u64, server_cores: usize) -> Report {
    let secs = elapsed.as_secs_f64();
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let rejected = tally
        .rejected
        .iter()
        .map(|(&code, &n)| (Status::from_code(code).map_or_else(|| format!("code_{code}"), |s| s.name().to_owned()), n))
        .collect();
    let lat = &tally.latency_us;
    let lag = (args.rate.is_some() && !tally.send_lag_us.is_empty()).then_some(&tally.send_lag_us);
    let delay = (args.rate.is_some() && !tally.send_delay_us.is_empty()).then_some(&tally.send_delay_us);
    let invariants_ok = checks.iter().all(|c| c.ok);
    let (requests, duration_s) = match args.stop() {
        Stop::Requests(n) => (Some(n), None),
        Stop::Duration(d) => (None, Some(d.as_secs_f64())),
    };
    Report {
        tool: "orderd-load",
        version: env!("CARGO_PKG_VERSION"),
        server: args.server.clone(),
        workload: args.workload.name(),
        mode: if args.rate.is_some() { "open" } else { "closed" },
        connections: args.connections,
        pipeline: args.pipeline,
        batch: args.batch,
        rate: args.rate,
        linger_us: args.linger_us,
        shard_aware: !args.no_shard_aware,
        requests,
        duration_s,
        retry_share: args.retry_share,
        cpus: args.cpus.as_ref().map(|c| c.0.clone()),
        seed,
        loaded: !args.no_load,
        stock_per_product: args.stock,
        durability: args.durability_label.clone(),
        server_cores,
        machine: Machine::this(),
        elapsed_s: secs,
        generator_cpu_s: tally.busy.as_secs_f64(),
        generator_busy: if secs > 0.0 { tally.busy.as_secs_f64() / (secs * args.connections.max(1) as f64) } else { 0.0 },
        completed: tally.completed,
        completed_per_s: per_s(tally.completed),
        accepted: tally.accepted,
        accepted_per_s: per_s(tally.accepted),
        gmv_cents: tally.gmv_cents,
        rejected,
        retries: tally.retries,
        retries_verified: tally.retries_verified,
        unknown: tally.unknown_total(),
        p50_us: lat.value_at_quantile(0.50),
        p99_us: lat.value_at_quantile(0.99),
        p999_us: lat.value_at_quantile(0.999),
        max_us: lat.max(),
        mean_us: lat.mean(),
        send_lag_p99_us: lag.map(|h| h.value_at_quantile(0.99)),
        send_lag_max_us: lag.map(hdrhistogram::Histogram::max),
        send_delay_p99_us: delay.map(|h| h.value_at_quantile(0.99)),
        send_delay_p999_us: delay.map(|h| h.value_at_quantile(0.999)),
        slow_log: args.slow_log.as_ref().map(|path| report::SlowLog {
            path: path.display().to_string(),
            threshold_us: args.slow_us,
            requests: tally.slow.len() as u64,
            not_kept: tally.slow_dropped,
        }),
        checks,
        invariants_ok,
        errors: tally.errors.clone(),
        stream: None,
        stalled_subscribers: args.stalled_subscribers,
        readers: None,
        read_probe: None,
    }
}
