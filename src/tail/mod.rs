//! `orderd tail`: the console consumer of the order stream (like
//! kafka-console-consumer). One line per event, human-readable or JSON
//! lines, and on exit a last line with the position to resume from.
//!
//! It reads through the SDK's [`Subscription`], so it resumes by itself
//! after a broken connection or a server restart; the position it prints
//! on exit (`--from` takes it back) continues exactly after the last event
//! it printed, on every core.
//!
//! Given a node of a cluster, it subscribes to every live node and prints
//! each node's events (each event is in exactly one node's log: a shard's
//! events before a move in its old owner's, after it in its new owner's);
//! its position names every node's cores: `a=1200,1187;b=33`.

mod render;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderd_protocol::client::{format_positions, parse_positions, Client, ClientConfig, ClientError, SubscribeOptions, Subscription};
use orderd_protocol::message::{ClusterMapInfo, EventKind, StreamStart};

use crate::admin::DEFAULT_SERVER;

/// `orderd tail`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// The orderd server (any of its cores).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_SERVER, env = "ORDERD_SERVER")]
    pub server: String,
    /// Where to start: `beginning`, `now`, or a position printed by an
    /// earlier run (one offset per core, comma separated, e.g. `1200,1187`;
    /// of a cluster, per node: `a=1200,1187;b=33`, a node not named from
    /// its beginning).
    #[arg(long, value_name = "beginning|now|POSITION", default_value = "now")]
    pub from: String,
    /// Only events of this product.
    #[arg(long, value_name = "P")]
    pub product: Option<u64>,
    /// Only these kinds, comma separated: placed, paid, cancelled, expired,
    /// product_upserted, stock_adjusted.
    #[arg(long, value_name = "KIND,...", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Exit once no event came for this many seconds.
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<f64>,
}

/// Why `orderd tail` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// An argument is not valid.
    #[error("{0}")]
    Usage(String),
    /// The stream failed.
    #[error("{0}")]
    Stream(#[from] ClientError),
    /// The server has no event at the `--from` position of a core: older
    /// than its log keeps, or past its durable end.
    #[error(
        "--from {given}: core {core} cannot start at offset {asked}; its log keeps offsets from {oldest} up to its \
         latest durable event. Use --from beginning (everything kept), --from now (new events only), or a position \
         printed by an earlier `orderd tail` of this server"
    )]
    PositionUnavailable {
        /// The `--from` argument.
        given: String,
        /// The core that refused.
        core: u64,
        /// The offset asked of it.
        asked: String,
        /// The oldest offset it keeps.
        oldest: u64,
    },
    /// Writing to stdout failed (a closed pipe, say).
    #[error("writing the events: {0}")]
    Output(#[from] std::io::Error),
}

/// How long one wait for events lasts before the Ctrl-C flag and the idle
/// timer are looked at again.
const POLL: Duration = Duration::from_millis(200);

/// Runs `orderd tail` until `--max`, `--idle-exit`, Ctrl-C or an error,
/// printing events to `out` and, at the end, the position line.
///
/// # Errors
/// See [`TailError`]; the position line is printed first whenever a
/// subscription was made.
pub fn run(args: &TailArgs, out: &mut impl Write) -> Result<(), TailError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(TailError::Output)?;
    }
    let map = Client::connect(args.server.as_str(), ClientConfig::default()).and_then(|mut c| c.cluster_map())?;
    if map.version > 0 {
        return run_cluster(args, &map, &stop, out);
    }
    let options = options(args)?;
    let asked = match &options.start {
        StreamStart::Positions(p) => p.clone(),
        _ => Vec::new(),
    };
    let mut stream =
        Subscription::connect(args.server.as_str(), ClientConfig::default(), options).map_err(|e| explain(e, &args.from, &asked))?;
    let result = pump(args, &mut stream, &stop, out);
    let events = result.as_ref().copied().unwrap_or(0);
    render::position_line(out, &format_positions(stream.positions()), events, args.json)?;
    out.flush()?;
    result.map(|_| ())
}

/// `orderd tail` of a cluster: one subscription per live node.
fn run_cluster(args: &TailArgs, map: &ClusterMapInfo, stop: &AtomicBool, out: &mut impl Write) -> Result<(), TailError> {
    let mut given = cluster_positions(&args.from)?;
    let mut streams = Vec::new();
    for node in map.nodes.iter().filter(|n| !n.cores.is_empty()) {
        let mut options = options(&TailArgs { from: "now".into(), ..args.clone() })?;
        options.start = match args.from.as_str() {
            "now" => StreamStart::Now,
            "beginning" => StreamStart::Beginning,
            // A node the position does not name joined since: all of it.
            _ => given.as_mut().and_then(|g| g.remove(&node.node)).map_or(StreamStart::Beginning, StreamStart::Positions),
        };
        let asked = match &options.start {
            StreamStart::Positions(p) => p.clone(),
            _ => Vec::new(),
        };
        let stream =
            Subscription::connect(node.cores[0].as_str(), ClientConfig::default(), options).map_err(|e| explain(e, &args.from, &asked))?;
        streams.push((node.node.clone(), stream));
    }
    if let Some(rest) = given.filter(|g| !g.is_empty()) {
        let names: Vec<&String> = rest.keys().collect();
        return Err(TailError::Usage(format!(
            "--from names node(s) {names:?}, which are not live in the cluster: their events would be missed"
        )));
    }
    let idle = args.idle_exit.map(Duration::from_secs_f64);
    let mut last_event = Instant::now();
    let mut printed = 0u64;
    let wait = (POLL / streams.len().max(1) as u32).max(Duration::from_millis(1));
    let result = (|| -> Result<u64, TailError> {
        'outer: while args.max.is_none_or(|max| printed < max) && !stop.load(Ordering::Relaxed) {
            let mut any = false;
            for (node, stream) in &mut streams {
                while let Some(event) = stream.next_event(if any { Duration::ZERO } else { wait })? {
                    render::event_line_of(out, Some(node), &event, args.json)?;
                    printed += 1;
                    any = true;
                    last_event = Instant::now();
                    if args.max.is_some_and(|max| printed >= max) {
                        break 'outer;
                    }
                }
            }
            if !any {
                out.flush()?;
                if idle.is_some_and(|idle| last_event.elapsed() >= idle) {
                    break;
                }
            }
        }
        Ok(printed)
    })();
    let position = streams.iter().map(|(node, s)| format!("{node}={}", format_positions(s.positions()))).collect::<Vec<_>>().join(";");
    render::position_line(out, &position, printed, args.json)?;
    out.flush()?;
    result.map(|_| ())
}

/// A cluster position (`a=1200,1187;b=33`) by node; `None` for `beginning`
/// or `now`.
fn cluster_positions(from: &str) -> Result<Option<std::collections::BTreeMap<String, Vec<u64>>>, TailError> {
    if from == "beginning" || from == "now" {
        return Ok(None);
    }
    let bad = || TailError::Usage(format!("--from {from:?}: a cluster's position names each node's offsets, such as `a=1200,1187;b=33`"));
    from.split(';')
        .map(|part| {
            let (node, offsets) = part.split_once('=').ok_or_else(bad)?;
            Ok((node.trim().to_owned(), parse_positions(offsets).ok_or_else(bad)?))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Prints events until a stop condition; returns how many were printed.
fn pump(args: &TailArgs, stream: &mut Subscription, stop: &AtomicBool, out: &mut impl Write) -> Result<u64, TailError> {
    let idle = args.idle_exit.map(Duration::from_secs_f64);
    let mut last_event = Instant::now();
    let mut printed = 0u64;
    while args.max.is_none_or(|max| printed < max) && !stop.load(Ordering::Relaxed) {
        match stream.next_event(POLL)? {
            Some(event) => {
                render::event_line(out, &event, args.json)?;
                printed += 1;
                last_event = Instant::now();
            }
            None => {
                out.flush()?;
                if idle.is_some_and(|idle| last_event.elapsed() >= idle) {
                    break;
                }
            }
        }
    }
    Ok(printed)
}

/// A refusal of the start position in words an operator can act on; any
/// other error as it is.
fn explain(error: ClientError, given: &str, asked: &[u64]) -> TailError {
    match &error {
        ClientError::Rejected(r) if r.code == orderd_protocol::Status::PositionUnavailable.code() => {
            let core = r.detail >> 48;
            let oldest = r.detail & ((1 << 48) - 1);
            let asked = usize::try_from(core).ok().and_then(|c| asked.get(c)).map_or_else(|| "?".to_owned(), u64::to_string);
            TailError::PositionUnavailable { given: given.to_owned(), core, asked, oldest }
        }
        _ => TailError::Stream(error),
    }
}

/// The subscription the arguments ask for.
fn options(args: &TailArgs) -> Result<SubscribeOptions, TailError> {
    let start = match args.from.as_str() {
        "beginning" => StreamStart::Beginning,
        "now" => StreamStart::Now,
        position => StreamStart::Positions(parse_positions(position).ok_or_else(|| {
            TailError::Usage(format!(
                "--from {position:?}: expected `beginning`, `now` or a position such as `1200,1187` (one offset per core)"
            ))
        })?),
    };
    let mut kinds = 0;
    for name in &args.kind {
        let kind = EventKind::from_name(name.trim()).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            TailError::Usage(format!("--kind {name:?}: expected one of {}", known.join(", ")))
        })?;
        kinds |= kind.bit();
    }
    if args.idle_exit.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        return Err(TailError::Usage("--idle-exit: expected a positive number of seconds".into()));
    }
    Ok(SubscribeOptions { start, product: args.product.unwrap_or(0), kinds, ..SubscribeOptions::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tail: TailArgs,
    }

    fn parse(argv: &[&str]) -> TailArgs {
        Cli::parse_from(std::iter::once("tail").chain(argv.iter().copied())).tail
    }

    #[test]
    fn the_arguments_become_the_subscription() {
        let o = options(&parse(&["--from", "3,4", "--kind", "placed,paid", "--product", "7"])).unwrap();
        assert_eq!((o.start, o.kinds, o.product), (StreamStart::Positions(vec![3, 4]), 0b11, 7));
        assert_eq!(options(&parse(&[])).unwrap().start, StreamStart::Now);
        assert!(matches!(options(&parse(&["--from", "yesterday"])), Err(TailError::Usage(_))));
        assert!(matches!(options(&parse(&["--kind", "shipped"])), Err(TailError::Usage(_))));
        assert!(matches!(options(&parse(&["--idle-exit", "0"])), Err(TailError::Usage(_))));
    }

    #[test]
    fn an_unavailable_position_is_said_in_words() {
        let rejected = ClientError::Rejected(orderd_protocol::Rejection::new(orderd_protocol::Status::PositionUnavailable, 1 << 48 | 7));
        let text = explain(rejected, "1200,1187", &[1200, 1187]).to_string();
        assert!(text.contains("core 1 cannot start at offset 1187") && text.contains("from 7"), "{text}");
        assert!(text.contains("--from beginning") && !text.contains("detail"), "{text}");
    }
}
