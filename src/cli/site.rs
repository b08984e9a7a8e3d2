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

    /// CPUs to run on: `all`, or CPU ids and ranges such as `0,1` or `2-5`.
    /// One pinned executor (core) per CPU. Core numbers (ports, shard
    /// owners) follow glommio's executor order, not this list's order.
    #[arg(long, env = "ORDERD_CORES", default_value = crate::config::DEFAULT_CORES)]
    pub cores: String,

    /// Address of core 0. Core i listens on this port + i, so shard-aware
    /// clients can reach each core directly; with port 0 every core takes an
    /// ephemeral port. The handshake announces every core's address.
    #[arg(long, env = "ORDERD_LISTEN", default_value = crate::config::DEFAULT_LISTEN, value_parser = parse_socket_addr)]
    pub listen: SocketAddr,

    /// Address of the metrics endpoint: `GET /metrics` over HTTP answers the
    /// Prometheus text format (requests and rejections by reason, accepted
    /// orders, GMV, queue depths, batch sizes, group-commit flush latency,
    /// log size, connections), one series per core. Port 0 takes an
    /// ephemeral port (the startup line `orderd metrics listening ADDR`
    /// names it).
    #[arg(long, env = "ORDERD_METRICS_LISTEN", default_value = crate::config::DEFAULT_METRICS_LISTEN, value_parser = parse_socket_addr)]
    pub metrics_listen: SocketAddr,

    /// Serve no metrics endpoint (--metrics-listen is then ignored).
    #[arg(long, env = "ORDERD_NO_METRICS")]
    pub no_metrics: bool,
}

/// Parse `--cores`: `all`, or CPU ids and inclusive ranges (`0-3,6`).
pub fn parse_cores(given: &str) -> Result<CoreSelection, ConfigError> {
    let given = given.trim();
    if given.eq_ignore_ascii_case("all") {
        return Ok(CoreSelection::All);
    }
    let list = parse_cpu_list(given).map_err(|_| ConfigError::BadCores { given: given.to_owned() })?;
    let mut cpus = Vec::with_capacity(list.len());
    for cpu in list {
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

/// CPU ids and inclusive ranges, comma-separated (`1`, `0,2`, `2-3,6`), as
/// `taskset` and systemd's `CPUAffinity=` take them: the one parser of every
/// command's CPU list (`orderd serve --cores`, `orderd-load --cpus`).
///
/// # Errors
/// What is wrong, in words.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim) {
        let id = |t: &str| t.trim().parse::<usize>().map_err(|e| format!("`{t}` is not a CPU id: {e}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b || b - a >= 4096 {
                    return Err(format!("`{part}` is not a range of CPUs"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(id(part)?),
        }
    }
    Ok(cpus)
}

/// A byte size: a number, or a number with a unit, `KiB` `MiB` `GiB` `TiB`
/// (powers of 1024) or `KB` `MB` `GB` `TB` (powers of 1000), case and a
/// space before the unit ignored (`64MiB`, `64 mib`, `1GB`).
///
/// # Errors
/// What is wrong, in words.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{s}` is not a size (e.g. 67108864, 64MiB, 1GiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("`{other}` in `{s}` is not a unit: use KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("`{s}` is too large"))
}

/// A socket address, with a host name resolved (`localhost:7070`); the
/// first IPv4 address a name resolves to, else its first.
///
/// # Errors
/// What is wrong, in words.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = s.to_socket_addrs().map_err(|e| format!("`{s}` is not an address (HOST:PORT): {e}"))?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first()).copied().ok_or_else(|| format!("`{s}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_take_ids_and_ranges() {
        assert_eq!(parse_cpu_list("0-1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("2-3, 6").unwrap(), vec![2, 3, 6]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(parse_cores("0-1").unwrap(), CoreSelection::List(vec![0, 1]));
        assert!(matches!(parse_cores("0-1,1"), Err(ConfigError::DuplicateCore { cpu: 1 })));
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_bytes("67108864").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("64 mib").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1GB").unwrap(), 1_000_000_000);
        assert!(parse_bytes("64 MiBs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn addresses_take_host_names() {
        assert_eq!(parse_socket_addr("127.0.0.1:7070").unwrap(), "127.0.0.1:7070".parse::<SocketAddr>().unwrap());
        let local = parse_socket_addr("localhost:7070").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 7070, "{local}");
        assert!(parse_socket_addr("localhost").is_err(), "a port is needed");
    }
}
