//! Where a server keeps its data and listens: the flags `orderd serve` and
//! `orderd host-check` share, and `--cores` parsing.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use orderd_protocol::limits::MAX_CORES;

use crate::config::{ConfigError, CoreSelection};

/// Where a server keeps its data and listens: the flags `orderd serve`
/// and `orderd host-check` share (same names, same `ORDERD_*` variables),
/// so that `host-check` run with a service's environment checks what the
/// service will start with.
#[derive(Debug, Clone, Args)]
pub struct SiteArgs {
    /// Data directory. Locked for the life of the server, so two servers
    /// never share one. Created if missing.
    #[arg(long, env = "ORDERD_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// CPUs to run on: `all`, or a comma-separated list of CPU ids such as
    /// `0,1`. One pinned executor (core) per CPU. Core numbers (ports,
    /// shard owners) follow glommio's executor order, not this list's order.
    #[arg(long, env = "ORDERD_CORES", default_value = crate::config::DEFAULT_CORES)]
    pub cores: String,

    /// Address of core 0. Core i listens on this port + i, so shard-aware
    /// clients can reach each core directly; with port 0 every core takes an
    /// ephemeral port. The handshake announces every core's address.
    #[arg(long, env = "ORDERD_LISTEN", default_value = crate::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Address of the metrics endpoint: `GET /metrics` over HTTP answers the
    /// Prometheus text format (requests and rejections by reason, accepted
    /// orders, GMV, queue depths, batch sizes, group-commit flush latency,
    /// log size, connections), one series per core. Port 0 takes an
    /// ephemeral port (the startup line `orderd metrics listening ADDR`
    /// names it).
    #[arg(long, env = "ORDERD_METRICS_LISTEN", default_value = crate::config::DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// Serve no metrics endpoint (--metrics-listen is then ignored).
    #[arg(long, env = "ORDERD_NO_METRICS")]
    pub no_metrics: bool,
}

/// Parse `--cores`.
pub fn parse_cores(given: &str) -> Result<CoreSelection, ConfigError> {
    let given = given.trim();
    if given.eq_ignore_ascii_case("all") {
        return Ok(CoreSelection::All);
    }
    let mut cpus = Vec::new();
    for part in given.split(',') {
        let cpu: usize = part.trim().parse().map_err(|_| ConfigError::BadCores { given: given.to_owned() })?;
        if cpus.contains(&cpu) {
            return Err(ConfigError::DuplicateCore { cpu });
        }
        cpus.push(cpu);
    }
    if cpus.is_empty() || cpus.len() > MAX_CORES {
        return Err(ConfigError::BadCores { given: given.to_owned() });
    }
    Ok(CoreSelection::List(cpus))
}
