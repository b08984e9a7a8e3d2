//! `orderd top` in a real terminal: a real server with known orders, the
//! view in a detached tmux session of a fixed size, its screen read with
//! `tmux capture-pane` until it shows the expected totals; q and Ctrl-C end
//! it with status 0 and the terminal restored (off the alternate screen);
//! closing the session (SIGHUP, the terminal gone) ends it too. An
//! unreachable server is shown in the view and retried.
//!
//! Needs tmux: without it the tests are skipped with a note, unless `CI` is
//! set (CI installs tmux, so there a missing tmux is a failure).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::{PlaceOrder, UpsertProduct};

/// How long the view may take to show what the test waits for.
const VIEW_LIMIT: Duration = Duration::from_secs(20);

/// How long the view may take to exit after a quit key.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Whether tmux can be run; without it, skip (or fail under CI).
fn tmux_available() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "tmux is not installed but CI is set: .ci/run installs it, so this must not be skipped");
    // Straight to stderr, past the test harness's capture, so the skip shows.
    let _ = writeln!(
        std::io::stderr(),
        "note: tmux is not installed; skipping the `orderd top` terminal test (apt-get install tmux to run it)"
    );
    false
}

/// A private tmux server (its own socket in a temp dir, so the user's tmux
/// is never touched), killed with every session in it on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start() -> Tmux {
        let dir = tempfile::tempdir().expect("temp dir");
        // remain-on-exit keeps a pane whose program ended, so its screen
        // mode can be read; sh runs the wrapper of `top` whatever $SHELL is.
        let conf = dir.path().join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g default-shell /bin/sh\n").expect("write tmux.conf");
        // The server starts with the first session, reading `conf`.
        Tmux { socket: dir.path().join("sock"), _dir: dir }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-u").arg("-S").arg(&self.socket).env_remove("TMUX");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = self.command().args(args).output().expect("run tmux");
        assert!(output.status.success(), "tmux {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// Where the wrapper of session `name` writes `top`'s exit status.
    fn status_file(&self, name: &str) -> PathBuf {
        self.socket.with_file_name(format!("{name}.status"))
    }

    /// A detached 120 x 40 session `name` running `orderd top` with `args`.
    /// The shell around it writes its exit status to a file: tmux itself
    /// sometimes reaps a pane's process late, so its `pane_dead_status`
    /// cannot be waited for.
    fn top(&self, name: &str, args: &str) {
        let bin = env!("CARGO_BIN_EXE_orderd");
        let conf = self.socket.with_file_name("tmux.conf");
        let status = self.status_file(name).display().to_string();
        let command = format!("'{bin}' top {args}; echo $? > '{status}.tmp' && mv '{status}.tmp' '{status}'");
        self.run(&["-f", conf.to_str().expect("utf-8 path"), "new-session", "-d", "-s", name, "-x", "120", "-y", "40", &command]);
    }

    /// The pid of the `orderd top` of session `name` (the child of its shell).
    fn top_pid(&self, name: &str) -> u32 {
        let shell = self.pane(name, "pane_pid");
        let children = std::fs::read_dir("/proc").expect("read /proc").flatten().filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid ...
            let (_, rest) = stat.rsplit_once(") ")?;
            let ppid = rest.split(' ').nth(1)?;
            (ppid == shell && stat.contains("(orderd)")).then_some(pid)
        });
        let pids: Vec<u32> = children.collect();
        assert_eq!(pids.len(), 1, "the shell of session {name} ({shell}) should have one orderd child: {pids:?}");
        pids[0]
    }

    /// The visible screen of `name`'s pane.
    fn screen(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", name]).stdout).into_owned()
    }

    /// A pane variable such as `pane_dead`.
    fn pane(&self, name: &str, variable: &str) -> String {
        String::from_utf8_lossy(&self.run(&["display-message", "-p", "-t", name, &format!("#{{{variable}}}")]).stdout).trim().to_owned()
    }

    /// The screen of `name` once `ready` holds for it (bounded).
    fn wait_for(&self, name: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + VIEW_LIMIT;
        loop {
            let screen = self.screen(name);
            if ready(&screen) {
                return screen;
            }
            assert!(self.pane(name, "pane_dead") != "1", "orderd top exited before showing {what}:\n{screen}");
            assert!(Instant::now() < deadline, "orderd top did not show {what} within {VIEW_LIMIT:?}; its screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send `key` and check the view ends (bounded) with status 0 and the
    /// terminal off the alternate screen.
    fn quit_with(&self, name: &str, key: &str) {
        self.run(&["send-keys", "-t", name, key]);
        let deadline = Instant::now() + EXIT_LIMIT;
        let status = loop {
            if let Ok(status) = std::fs::read_to_string(self.status_file(name)) {
                break status;
            }
            assert!(Instant::now() < deadline, "orderd top still runs {EXIT_LIMIT:?} after {key}:\n{}", self.screen(name));
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.trim(), "0", "exit status after {key}:\n{}", self.screen(name));
        assert_eq!(self.pane(name, "alternate_on"), "0", "the terminal is left on the alternate screen after {key}");
    }
}

/// SIGKILLs an `orderd` process when dropped (a no-op once it has ended).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let still_orderd = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).is_ok_and(|s| s.contains("(orderd)"));
        if still_orderd && !ended(self.0) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).output();
        }
    }
}

/// Whether process `pid` has ended (gone, or a zombie awaiting its reaper).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')))
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// The index of the first line whose words contain `run` in a row. Words
/// are split at anything but letters, digits and `.,:()-`, so borders (box
/// drawing, or `_` and `|` without UTF-8) never join a word.
fn line_with(screen: &str, run: &[&str]) -> Option<usize> {
    screen.lines().position(|line| {
        let words: Vec<&str> =
            line.split(|c: char| !(c.is_ascii_alphanumeric() || ".,:()-".contains(c))).filter(|w| !w.is_empty()).collect();
        words.windows(run.len()).any(|w| w == run)
    })
}

fn has(screen: &str, run: &[&str]) -> bool {
    line_with(screen, run).is_some()
}

/// `N` of `ERROR (N failed polls`.
fn failed_polls(screen: &str) -> Option<u64> {
    let (_, rest) = screen.split_once("ERROR (")?;
    rest.split_once(" failed polls")?.0.parse().ok()
}

#[test]
fn top_shows_the_known_orders_and_quits_on_q_and_ctrl_c() {
    if !tmux_available() {
        return;
    }
    let server = Server::start("0,1", &[]);
    let mut client = server.client();
    // (product, unit price, stock), and the orders placed: (product, qty) x count
    for (product, unit_price_cents, stock) in [(1, 250, 3), (2, 1000, 100), (3, 199, 50), (4, 500, 10)] {
        client.upsert_product(UpsertProduct { product, unit_price_cents, stock, payment_window_ms: 0, per_user_limit: 0 }).unwrap();
    }
    let mut user = 0;
    for (product, qty, count, unit_price_cents) in [(1, 1, 3, 250), (2, 2, 4, 1000), (3, 5, 1, 199)] {
        for _ in 0..count {
            user += 1;
            client.place_order(PlaceOrder::with_new_key(user, product, qty, unit_price_cents)).unwrap();
        }
    }
    // 8 orders; 3 + 8 + 5 = 16 units; 3 x 2.50 + 8 x 10.00 + 5 x 1.99 = 97.45
    let tmux = Tmux::start();
    tmux.top("top", &format!("--server {}", server.seed));
    let screen = tmux.wait_for("top", "the 8 orders placed", |s| has(s, &["orders", "placed", "8"]));

    for (what, run) in [
        ("the connection", &["status", "connected,"][..]),
        ("the core count", &["cores", "2"]),
        ("the GMV in currency units", &["GMV", "97.45"]),
        ("the units sold", &["units", "sold", "16"]),
        ("the products", &["products", "4"]),
        ("the sold-out count", &["sold", "out", "1"]),
        ("the sold-out list", &["sold-out", "products:", "1"]),
    ] {
        assert!(has(&screen, run), "{what} ({run:?}) missing from\n{screen}");
    }
    // the best sellers, most units first: rank, product, units sold, available
    let first = line_with(&screen, &["1", "2", "8", "92"]).unwrap_or_else(|| panic!("best seller missing from\n{screen}"));
    assert_eq!(line_with(&screen, &["2", "3", "5", "45"]), Some(first + 1), "second best seller:\n{screen}");
    assert_eq!(line_with(&screen, &["3", "1", "3", "sold", "out"]), Some(first + 2), "third, sold out:\n{screen}");
    tmux.quit_with("top", "q");

    tmux.top("ctrl-c", &format!("--server {}", server.seed));
    tmux.wait_for("ctrl-c", "the 8 orders placed", |s| has(s, &["orders", "placed", "8"]));
    tmux.quit_with("ctrl-c", "C-c");

    // The terminal going away (the session closed: SIGHUP, then EOF on the
    // tty) must not leave `orderd top` running.
    tmux.top("hangup", &format!("--server {}", server.seed));
    tmux.wait_for("hangup", "the 8 orders placed", |s| has(s, &["orders", "placed", "8"]));
    let pid = tmux.top_pid("hangup");
    // Should the check fail, the process must not outlive the test.
    let _reap = KillOnDrop(pid);
    tmux.run(&["kill-session", "-t", "hangup"]);
    let deadline = Instant::now() + EXIT_LIMIT;
    while !ended(pid) {
        assert!(Instant::now() < deadline, "orderd top (pid {pid}) still runs {EXIT_LIMIT:?} after its terminal closed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn top_shows_an_unreachable_server_and_keeps_retrying() {
    if !tmux_available() {
        return;
    }
    // A loopback port that refuses connections: the local end of a
    // connection, bound but not listening, held (so no other test can
    // take the port) until the test ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let addr = held.local_addr().unwrap();
    let tmux = Tmux::start();
    tmux.top("down", &format!("--server {addr} --interval-ms 200"));
    let screen = tmux.wait_for("down", "two failed polls", |s| failed_polls(s).is_some_and(|n| n >= 2));
    assert!(screen.contains(&format!("cannot reach orderd at {addr}")), "{screen}");
    assert!(screen.contains("connection refused"), "{screen}");
    tmux.quit_with("down", "Escape");
}
