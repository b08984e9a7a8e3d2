//! The network side: `net.core.somaxconn` (caps every port's accept
//! queue: what a connection storm at the start of a sale can queue before
//! the kernel drops SYNs), `net.ipv4.ip_local_port_range` (an outgoing
//! connection may take a listen port inside it), and that each core's
//! port (`--listen` port + i) and the metrics port (`--metrics-listen`) are
//! free right now.

use std::net::{SocketAddr, TcpListener};

use super::sysfs::{read_line, unreadable};
use super::{cores_word, Check, Status, Target};

/// The accept queue the project's sysctl.conf sets; below it, a WARN.
pub const WANTED_SOMAXCONN: u32 = 4096;

/// The network checks.
pub fn checks(target: &Target) -> Vec<Check> {
    vec![somaxconn(), port_range(target), ports(target), metrics_port(target)]
}

fn somaxconn() -> Check {
    const PATH: &str = "/proc/sys/net/core/somaxconn";
    match read_line(PATH).map(|v| v.parse::<u32>()) {
        Ok(Ok(v)) if v >= WANTED_SOMAXCONN => Check::new("somaxconn", Status::Pass, format!("net.core.somaxconn = {v} (accept queue per port)")),
        Ok(Ok(v)) => Check::new(
            "somaxconn",
            Status::Warn,
            format!("net.core.somaxconn = {v}: each port queues at most {v} connections not yet accepted; a reconnect storm beyond that sees dropped SYNs and 1 s retransmits"),
        )
        .fix(format!("sysctl -w net.core.somaxconn={WANTED_SOMAXCONN} (tuning/sysctl.conf)")),
        Ok(Err(_)) => Check::new("somaxconn", Status::Skip, format!("cannot parse {PATH}")),
        Err(e) => Check::new("somaxconn", Status::Skip, unreadable(PATH, &e)),
    }
}

/// The ports orderd will listen on (empty for port 0: ephemeral).
pub fn listen_addrs(listen: SocketAddr, cores: usize) -> Vec<SocketAddr> {
    if listen.port() == 0 {
        return Vec::new();
    }
    (0..cores)
        .filter_map(|i| {
            let port = u16::try_from(usize::from(listen.port()) + i).ok()?;
            let mut a = listen;
            a.set_port(port);
            Some(a)
        })
        .collect()
}

fn port_range(target: &Target) -> Check {
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let line = match read_line(PATH) {
        Ok(l) => l,
        Err(e) => return Check::new("port_range", Status::Skip, unreadable(PATH, &e)),
    };
    let mut it = line.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(lo)), Some(Ok(hi))) = (it.next(), it.next()) else {
        return Check::new("port_range", Status::Skip, format!("cannot parse {PATH}: {line:?}"));
    };
    let reserved = read_line("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap_or_default();
    let reserved = super::sysfs::parse_cpu_list(&reserved).unwrap_or_default();
    let clash: Vec<u16> = listen_addrs(target.args.site.listen, target.cpus.len())
        .iter()
        .chain(metrics_addr(target).as_ref())
        .map(SocketAddr::port)
        .filter(|p| (lo..=hi).contains(p) && !reserved.contains(&usize::from(*p)))
        .collect();
    if clash.is_empty() {
        Check::new(
            "port_range",
            Status::Pass,
            format!("ephemeral ports {lo}-{hi} ({} ports) do not include orderd's listen ports", u32::from(hi - lo) + 1),
        )
    } else {
        let list = clash.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        Check::new("port_range", Status::Warn, format!("listen ports {list} lie inside the ephemeral range {lo}-{hi}: an outgoing connection can take one and orderd then fails to bind"))
            .fix(format!("pick --listen below {lo}, or reserve them: sysctl -w net.ipv4.ip_local_reserved_ports={list}"))
    }
}

/// The metrics address `serve` will bind, if metrics are on with a fixed port.
fn metrics_addr(target: &Target) -> Option<SocketAddr> {
    (!target.args.site.no_metrics && target.args.site.metrics_listen.port() != 0).then_some(target.args.site.metrics_listen)
}

fn metrics_port(target: &Target) -> Check {
    const NAME: &str = "metrics_port";
    if target.args.site.no_metrics {
        return Check::new(NAME, Status::Pass, "--no-metrics: no metrics endpoint");
    }
    let Some(addr) = metrics_addr(target) else {
        return Check::new(NAME, Status::Pass, format!("--metrics-listen {}: an ephemeral port", target.args.site.metrics_listen));
    };
    let orders = listen_addrs(target.args.site.listen, target.cpus.len());
    if let Some(core) = orders.iter().position(|a| a.port() == addr.port()) {
        return Check::new(
            NAME,
            Status::Fail,
            format!("--metrics-listen {addr} takes the order port of core {core} (--listen port + {core})"),
        )
        .fix("pick a --metrics-listen port outside the order ports, or pass --no-metrics");
    }
    match TcpListener::bind(addr) {
        Ok(_) => Check::new(NAME, Status::Pass, format!("{addr} free for the metrics endpoint")),
        Err(_) if held_by_live_server(target, addr.port()) => Check::new(
            NAME,
            Status::Pass,
            format!("{addr} is the metrics endpoint of the orderd serving this data directory (pid {})", target.live.unwrap_or_default()),
        ),
        Err(e) => {
            let fix = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "stop the process holding it (ss -ltnp), pick another --metrics-listen, or pass --no-metrics"
                }
                std::io::ErrorKind::AddrNotAvailable => "--metrics-listen must be an address of this machine (or 0.0.0.0)",
                std::io::ErrorKind::PermissionDenied => "use a port of 1024 or above",
                _ => "check --metrics-listen",
            };
            Check::new(NAME, Status::Fail, format!("cannot bind the metrics address {addr}: {e}")).fix(fix)
        }
    }
}

/// Whether `port` is held by the orderd serving the data directory now.
fn held_by_live_server(target: &Target, port: u16) -> bool {
    match (target.live, crate::procfs::port_holder(port)) {
        (Some(live), crate::procfs::Holder::Live { pid, .. }) => live == pid,
        _ => false,
    }
}

fn ports(target: &Target) -> Check {
    let listen = target.args.site.listen;
    let addrs = listen_addrs(listen, target.cpus.len());
    if addrs.is_empty() {
        return Check::new("listen_ports", Status::Pass, format!("--listen {listen}: every core takes an ephemeral port"));
    }
    if addrs.len() < target.cpus.len() {
        return Check::new(
            "listen_ports",
            Status::Fail,
            format!("--listen port {} + {} cores passes 65535", listen.port(), target.cpus.len()),
        )
        .fix("choose a lower --listen port");
    }
    let mut problems = Vec::new();
    let mut served = Vec::new();
    let mut fix = "";
    for addr in &addrs {
        // A plain std bind (no SO_REUSEPORT), as orderd serve binds: it
        // fails on a port any other socket listens on.
        if let Err(e) = TcpListener::bind(addr) {
            if held_by_live_server(target, addr.port()) {
                served.push(addr.port());
                continue;
            }
            fix = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "stop the process holding it (ss -ltnp) or pick another --listen port (core i listens on port + i)"
                }
                std::io::ErrorKind::AddrNotAvailable => "--listen must be an address of this machine (or 0.0.0.0)",
                std::io::ErrorKind::PermissionDenied => {
                    "use a port of 1024 or above, or grant CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit)"
                }
                _ => "check --listen",
            };
            problems.push(format!("{addr}: {e}"));
        }
    }
    let first = addrs[0];
    let last = addrs[addrs.len() - 1];
    if problems.is_empty() {
        let range = if addrs.len() == 1 { first.to_string() } else { format!("{first}..{}", last.port()) };
        let by = match (served.len(), target.live) {
            (0, _) | (_, None) => String::new(),
            (n, Some(pid)) => format!(" ({n} of them served by the orderd of this data directory, pid {pid})"),
        };
        Check::new("listen_ports", Status::Pass, format!("{range} free for {}{by}", cores_word(addrs.len())))
    } else {
        Check::new("listen_ports", Status::Fail, format!("cannot bind {}", problems.join("; "))).fix(fix)
    }
}
