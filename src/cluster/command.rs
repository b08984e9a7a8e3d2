//! `orderd cluster`: the operator's view and changes of a cluster's map.
//!
//! ```text
//! orderd cluster init --etcd EP --cluster NAME --shards N [--replicas R]   create the map (no owners yet)
//! orderd cluster status --etcd EP --cluster NAME [--json]   nodes, liveness, owners, version
//! orderd cluster rebalance --etcd EP --cluster NAME         place unowned shards, move owned ones to even out
//! orderd cluster set-replicas R ...                          keep R copies of every shard (1 to 3)
//! orderd cluster move-shard SHARD --to NODE[:CORE] ...       hand a shard to another node, online
//! ```

use std::io::Write;

use serde::Serialize;

use super::etcd::Coordinator;
use super::map::{check_name, place_unowned, plan_moves, ClusterMap, NodeInfo};

/// Where the cluster is kept (every `cluster` command, and `serve` in a
/// cluster).
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated `host:port`.
    #[arg(long, global = true, env = "ORDERD_ETCD", value_name = "ENDPOINTS", default_value = "127.0.0.1:2379")]
    pub etcd: String,
    /// The cluster's name (its keys live under `/orderd/NAME/` in etcd);
    /// needed by every command.
    #[arg(long, global = true, env = "ORDERD_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
}

/// `orderd cluster`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Where the cluster is kept.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `cluster` commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Create the cluster's map in etcd with a fixed number of shards, none
    /// owned yet (nodes join with `orderd serve --etcd ... --cluster ...
    /// --node ID`; `rebalance` then gives them shards). Refused if the
    /// cluster exists.
    Init {
        /// Shards: fixed for the cluster's life; every node's data
        /// directory has this many (`serve --shards`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        shards: u32,
        /// Copies of every shard: 1 (the owner's disk only), 2 or 3 (a
        /// leader and followers on other nodes; a state change is
        /// acknowledged once every in-sync copy has it durably, and a
        /// follower takes over when its leader's node dies).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        replicas: u8,
    },
    /// Show the map: its version, every node (live or down, its cores'
    /// addresses, the shards it owns) and shards without an owner.
    Status,
    /// Spread the shards evenly over the live nodes' cores: every shard
    /// without an owner goes to the live core with the fewest shards, then
    /// owned shards move (one at a time, online, as `move-shard` moves
    /// them) from the busiest cores to the idlest until no core has two
    /// more than another. A node that joins a running cluster takes its
    /// share this way. Shards of nodes that are down stay.
    Rebalance {
        /// Print the placements and moves, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Change how many copies of each shard the cluster keeps (1 to 3).
    /// More: each shard's leader makes the new copies on other live nodes
    /// while the shard serves (its state changes are refused until they are
    /// in sync). Fewer: the followers past the count leave the map (their
    /// copies are emptied).
    SetReplicas {
        /// Copies of every shard.
        #[arg(value_parser = clap::value_parser!(u8).range(1..=3))]
        replicas: u8,
    },
    /// Hand a shard to another node while orders keep coming: the owner
    /// freezes it, the new node installs its state durably, the map
    /// switches, the new node serves it. Prints how long it paused. A move
    /// that fails leaves the shard with its owner.
    MoveShard {
        /// The shard.
        shard: u32,
        /// The node to move it to (`NODE`, or `NODE:CORE` with the core
        /// that node serves the shard on: shard mod its cores).
        #[arg(long, value_name = "NODE[:CORE]")]
        to: String,
    },
}

/// Runs `orderd cluster`, writing to `out`.
///
/// # Errors
/// What etcd or the map refused, worded for an operator.
pub fn run(args: &ClusterArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(cluster) = args.etcd.cluster.as_deref() else {
        anyhow::bail!("which cluster? give --cluster NAME (or ORDERD_CLUSTER)");
    };
    check_name("cluster", cluster).map_err(anyhow::Error::msg)?;
    let etcd = Coordinator::connect(&args.etcd.etcd, cluster);
    match args.command {
        ClusterCommand::Init { shards, replicas } => {
            let map = etcd.init(shards, replicas)?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&map)?)?;
            } else {
                writeln!(
                    out,
                    "cluster `{}` created in etcd at {}: {} shards, {} cop{} of each, none owned yet; start nodes with \
                     `orderd serve --etcd {} --cluster {} --shards {} --node ID`, then `orderd cluster rebalance`",
                    map.cluster,
                    etcd.endpoints(),
                    map.shards,
                    map.replicas,
                    if map.replicas == 1 { "y" } else { "ies" },
                    etcd.endpoints(),
                    map.cluster,
                    map.shards
                )?;
            }
        }
        ClusterCommand::Status => {
            let read = etcd.map()?;
            let live = etcd.live_nodes()?;
            status(out, &read.map, &live, args.json)?;
        }
        ClusterCommand::Rebalance { dry_run } => rebalance(&etcd, out, args.json, dry_run)?,
        ClusterCommand::SetReplicas { replicas } => {
            let read = etcd.map()?;
            let mut map = read.map.clone();
            map.replicas = replicas;
            let mut dropped = 0;
            for followers in &mut map.followers {
                let keep = usize::from(replicas) - 1;
                dropped += followers.len().saturating_sub(keep);
                followers.truncate(keep);
            }
            if map == read.map {
                writeln!(
                    out,
                    "cluster `{}` keeps {replicas} cop{} of each shard already",
                    map.cluster,
                    if replicas == 1 { "y" } else { "ies" }
                )?;
            } else {
                etcd.swap_map(&read, &map)?;
                writeln!(
                    out,
                    "cluster `{}` keeps {replicas} cop{} of each shard from map version {} ({dropped} follower cop{} dropped); \
                     `orderd cluster status` shows the shards still short of copies",
                    map.cluster,
                    if replicas == 1 { "y" } else { "ies" },
                    read.map.version + 1,
                    if dropped == 1 { "y" } else { "ies" }
                )?;
            }
        }
        ClusterCommand::MoveShard { shard, ref to } => {
            let json = args.json;
            let report = super::mover::move_shard(&etcd, shard, to, |line| {
                if !json {
                    let _ = writeln!(out, "{line}");
                }
            })?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                writeln!(
                    out,
                    "moved shard {} ({} orders, {} bytes) from {} to {}: map version {}; paused {} ms (frozen for {} change(s) made during \
                     the {} ms copy: {} ms, switch {} ms)",
                    report.shard,
                    report.orders,
                    report.bytes,
                    report.from,
                    report.to,
                    report.version,
                    report.paused_ms,
                    report.tail_events,
                    report.copy_ms,
                    report.freeze_ms,
                    report.switch_ms
                )?;
            }
        }
    }
    Ok(())
}

/// One node in `status`.
#[derive(Debug, Serialize)]
struct NodeView<'a> {
    node: &'a str,
    live: bool,
    /// Its cores' addresses (none for a node that is down).
    cores: &'a [String],
    shards_owned: usize,
    /// Shards it holds an in-sync follower's copy of.
    copies: usize,
    version: Option<&'a str>,
    since_ms: Option<u64>,
}

/// `status`'s JSON.
#[derive(Debug, Serialize)]
struct StatusView<'a> {
    cluster: &'a str,
    shards: u32,
    version: u64,
    nodes: Vec<NodeView<'a>>,
    /// `owners[s]`: `NODE:CORE`, or `null`.
    owners: Vec<Option<String>>,
    unowned: usize,
    /// Copies of each shard the cluster keeps.
    replicas: u8,
    /// `followers[s]`: the in-sync followers of shard `s`, `NODE:CORE` each.
    followers: Vec<Vec<String>>,
    /// `epochs[s]`: the map version at which shard `s`'s leader took it.
    epochs: &'a [u64],
    /// Owned shards with fewer in-sync copies than `replicas`: their
    /// state changes are refused (`replica_unavailable`) until copies come.
    under_replicated: usize,
}

fn status(out: &mut impl Write, map: &ClusterMap, live: &[NodeInfo], json: bool) -> anyhow::Result<()> {
    let owned = map.shards_per_node();
    let mut copies: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for follower in map.followers.iter().flatten() {
        *copies.entry(follower.node.as_str()).or_insert(0) += 1;
    }
    let mut names: Vec<&str> = live.iter().map(|n| n.node.as_str()).chain(owned.keys().copied()).chain(copies.keys().copied()).collect();
    names.sort_unstable();
    names.dedup();
    let nodes: Vec<NodeView<'_>> = names
        .iter()
        .map(|&name| {
            let info = live.iter().find(|n| n.node == name);
            NodeView {
                node: name,
                live: info.is_some(),
                cores: info.map_or(&[][..], |n| n.cores.as_slice()),
                shards_owned: owned.get(name).copied().unwrap_or(0),
                copies: copies.get(name).copied().unwrap_or(0),
                version: info.map(|n| n.version.as_str()),
                since_ms: info.map(|n| n.since_ms),
            }
        })
        .collect();
    let unowned = map.owners.iter().filter(|o| o.is_none()).count();
    let under_replicated =
        (0..map.shards).filter(|&s| map.owners[s as usize].is_some() && map.followers_of(s).len() + 1 < usize::from(map.replicas)).count();
    if json {
        let view = StatusView {
            cluster: &map.cluster,
            shards: map.shards,
            version: map.version,
            nodes,
            owners: map.owners.iter().map(|o| o.as_ref().map(ToString::to_string)).collect(),
            unowned,
            replicas: map.replicas,
            followers: map.followers.iter().map(|f| f.iter().map(ToString::to_string).collect()).collect(),
            epochs: &map.epochs,
            under_replicated,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "cluster `{}`: {} shards, {} cop{} of each, map version {}, {} node(s) live",
        map.cluster,
        map.shards,
        map.replicas,
        if map.replicas == 1 { "y" } else { "ies" },
        map.version,
        live.len()
    )?;
    let width = nodes.iter().map(|n| n.node.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:<width$}  {:<4}  {:>6}  {:>6}  cores", "node", "live", "shards", "copies")?;
    for n in &nodes {
        let cores = match (n.live, map.replicas) {
            (true, _) => n.cores.join(" "),
            (false, 1) => "(down: its shards wait for it)".to_owned(),
            (false, _) => "(down: its shards fail over to their copies; its copies are made again elsewhere)".to_owned(),
        };
        writeln!(out, "{:<width$}  {:<4}  {:>6}  {:>6}  {cores}", n.node, if n.live { "yes" } else { "no" }, n.shards_owned, n.copies)?;
    }
    if unowned > 0 {
        writeln!(out, "{unowned} shard(s) without an owner: `orderd cluster rebalance` gives them to the live nodes")?;
    }
    if under_replicated > 0 {
        writeln!(
            out,
            "{under_replicated} shard(s) with fewer than {} in-sync copies: their state changes are refused (replica_unavailable) \
             until another live node holds a copy",
            map.replicas
        )?;
    }
    Ok(())
}

fn rebalance(etcd: &Coordinator, out: &mut impl Write, json: bool, dry_run: bool) -> anyhow::Result<()> {
    let read = etcd.map()?;
    let live = etcd.live_nodes()?;
    let mut map = read.map.clone();
    let placement = place_unowned(&mut map, &live);
    if !placement.placed.is_empty() && !dry_run {
        etcd.swap_map(&read, &map)?;
        map.version = read.map.version + 1;
    }
    // With several copies a leader does not move (`move-shard` says why):
    // rebalance only places.
    let planned = if map.replicas > 1 { Vec::new() } else { plan_moves(&map, &live) };
    if !json {
        if placement.placed.is_empty() && live.is_empty() {
            writeln!(out, "no live node in cluster `{}`: nothing placed", map.cluster)?;
        } else if placement.placed.is_empty() {
            writeln!(out, "every shard of cluster `{}` has an owner: nothing placed (map version {})", map.cluster, map.version)?;
        } else {
            let verb = if dry_run { "would place" } else { "placed" };
            writeln!(out, "{verb} {} shard(s); map version {}", placement.placed.len(), map.version)?;
            for (shard, owner) in &placement.placed {
                writeln!(out, "  shard {shard} -> {owner}")?;
            }
        }
        if planned.is_empty() {
            writeln!(out, "the shards are spread evenly over the live cores: nothing to move")?;
        } else if dry_run {
            writeln!(out, "would move {} shard(s):", planned.len())?;
            for (shard, to) in &planned {
                writeln!(out, "  shard {shard} -> {to}")?;
            }
        }
    }
    let mut moved = Vec::new();
    if !dry_run {
        for (shard, to) in &planned {
            let report = super::mover::move_shard(etcd, *shard, &to.to_string(), |_| {})
                .map_err(|e| e.context(format!("rebalancing stopped after {} move(s)", moved.len())))?;
            if !json {
                writeln!(
                    out,
                    "moved shard {} ({} orders) from {} to {}: map version {}; paused {} ms",
                    report.shard, report.orders, report.from, report.to, report.version, report.paused_ms
                )?;
            }
            moved.push(report);
        }
    }
    if json {
        let placed: Vec<(u32, String)> = placement.placed.iter().map(|(s, o)| (*s, o.to_string())).collect();
        let planned: Vec<(u32, String)> = planned.iter().map(|(s, o)| (*s, o.to_string())).collect();
        let version = moved.last().map_or(map.version, |m| m.version);
        let view = serde_json::json!({ "version": version, "placed": placed, "moves": planned, "moved": moved, "dry_run": dry_run });
        writeln!(out, "{view:#}")?;
    }
    Ok(())
}
