//! Shared by the server tests: start a real `orderd` on loopback in a temp
//! dir, find its ports from the listening line (and the metrics endpoint's
//! from the line after it), connect the SDK; the server is killed when the
//! handle drops.
//!
//! Every server started here serves metrics on an ephemeral port
//! (`--metrics-listen 127.0.0.1:0`) unless the test passes its own
//! `--metrics-listen` or `--no-metrics`: parallel tests must never meet on
//! the default port 9070.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use orderd_protocol::client::{Client, ClientConfig};

pub mod etcd;

/// A running server.
pub struct Server {
    pub child: Child,
    pub seed: SocketAddr,
    pub cores: Vec<SocketAddr>,
    /// The metrics endpoint (`None` with `--no-metrics`).
    pub metrics: Option<SocketAddr>,
    /// The data directory.
    pub dir: PathBuf,
    /// Removes the data directory when the server was given none.
    _owned: Option<tempfile::TempDir>,
}

/// How long a server may take to start before the test fails.
const START_LIMIT: Duration = Duration::from_secs(20);

impl Server {
    /// Start `orderd serve` on `127.0.0.1:0` with `cores` (a `--cores` value)
    /// and extra flags.
    pub fn start(cores: &str, extra: &[&str]) -> Server {
        Server::start_with_env(cores, extra, &[])
    }

    /// As [`Server::start`], with extra `ORDERD_*` (or other) environment variables.
    pub fn start_with_env(cores: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Server::start_in(dir.path(), cores, extra, env);
        server._owned = Some(dir);
        server
    }

    /// As [`Server::start_with_env`] on the data directory `dir` (kept when
    /// the server stops: a restart recovers it).
    pub fn start_in(dir: &Path, cores: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = serve_command(dir, cores, extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn orderd");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let (mut line, mut metrics) = (String::new(), String::new());
            let _ = lines.read_line(&mut line);
            let _ = lines.read_line(&mut metrics);
            let _ = tx.send((line, metrics));
            // Keep draining so the server never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = lines.read_to_end(&mut sink);
        });
        let (line, metrics) = match rx.recv_timeout(START_LIMIT) {
            Ok(lines) => lines,
            Err(_) => {
                let _ = child.kill();
                panic!("orderd did not announce its ports within {START_LIMIT:?}");
            }
        };
        let (seed, cores) = parse_listening(&line).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected listening line {line:?}")
        });
        let metrics = parse_metrics(&metrics).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected metrics line {metrics:?}")
        });
        Server { child, seed, cores, metrics, dir: dir.to_path_buf(), _owned: None }
    }

    /// `GET /metrics`: the status line and the body.
    pub fn scrape(&self) -> (String, String) {
        let reply = self.http(b"GET /metrics HTTP/1.1\r\nHost: orderd\r\n\r\n");
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
    }

    /// Send `request` to the metrics endpoint as it is and read the whole
    /// response (the server closes after one), bounded in time.
    pub fn http(&self, request: &[u8]) -> String {
        let addr = self.metrics.expect("this server serves no metrics");
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the metrics endpoint");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        stream.set_write_timeout(Some(Duration::from_secs(5))).expect("write timeout");
        stream.write_all(request).expect("send the request");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).expect("read the response");
        String::from_utf8(reply).expect("a UTF-8 response")
    }

    /// A shard-aware SDK client.
    pub fn client(&self) -> Client {
        Client::connect(self.seed, ClientConfig::default()).expect("connect")
    }

    /// An SDK client with `config`, connected to core `core`'s port.
    pub fn client_on(&self, core: usize, config: ClientConfig) -> Client {
        Client::connect(self.cores[core], config).expect("connect")
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill SIGTERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "orderd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// SIGKILL, at once, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `orderd serve` on loopback with ephemeral ports (unless `extra` sets
/// `--listen`), `cores`, data in `dir`, and `extra` flags (an ephemeral
/// metrics port unless they set one); `RUST_LOG=error` unless the caller
/// sets it again.
pub fn serve_command(dir: &Path, cores: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orderd"));
    command.arg("serve");
    if !extra.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command.args(["--cores", cores, "--data-dir"]).arg(dir).args(metrics_flags(extra)).args(extra).env("RUST_LOG", "error");
    command
}

/// Run `orderd serve` on `dir` expecting it to refuse to start: its exit
/// status and stderr (bounded in time).
pub fn start_fails(dir: &Path, cores: &str, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = serve_command(dir, cores, extra).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn orderd");
    let deadline = std::time::Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
            return (status, err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orderd was expected to refuse to start but kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--metrics-listen 127.0.0.1:0` unless `extra` sets the metrics itself.
fn metrics_flags(extra: &[&str]) -> &'static [&'static str] {
    if extra.iter().any(|a| a.starts_with("--metrics-listen") || *a == "--no-metrics") {
        &[]
    } else {
        &["--metrics-listen", "127.0.0.1:0"]
    }
}

/// `orderd metrics listening <addr>` -> Some(Some(addr)); `orderd metrics off` -> Some(None).
pub fn parse_metrics(line: &str) -> Option<Option<SocketAddr>> {
    let line = line.trim();
    if line == "orderd metrics off" {
        return Some(None);
    }
    Some(Some(line.strip_prefix("orderd metrics listening ")?.parse().ok()?))
}

/// `orderd listening <seed> cores=<a>,<b>` -> (seed, [a, b]).
pub fn parse_listening(line: &str) -> Option<(SocketAddr, Vec<SocketAddr>)> {
    let rest = line.trim().strip_prefix("orderd listening ")?;
    let (seed, cores) = rest.split_once(" cores=")?;
    let cores = cores.split(',').map(|a| a.parse().ok()).collect::<Option<Vec<_>>>()?;
    Some((seed.parse().ok()?, cores))
}

pub mod raw;

/// The `promtool` binary to check with (`PROMTOOL` names another), or
/// `None` where it is not installed, which outside CI skips the check; in
/// CI (`CI` set) a missing promtool is a failure.
pub fn promtool() -> Option<std::ffi::OsString> {
    let promtool = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    if Command::new(&promtool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return Some(promtool);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is not installed but CI is set: install it (Debian: apt-get install prometheus) so the metrics are checked"
    );
    println!("SKIPPED: promtool not found (Debian: apt-get install prometheus)");
    None
}
