//! The commands the README shows run, as a newcomer would paste them,
//! against a real server: each `orderd ...` (or `cargo run --release --
//! ...`) line of its `sh` blocks, with its placeholders filled in (an order
//! id, a catalogue file, stream positions this server has) and a bound added
//! to a `tail` that would follow the stream for ever. Lines that start the
//! server, run the tests or the benchmarks are not run here.

mod common;

use std::process::Command;

use common::Server;

/// The README's command lines, comments and the program stripped: `(line,
/// arguments)`; `bin` is `orderd` or `orderd-sim`.
fn commands() -> Vec<(String, &'static str, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let mut in_sh = false;
    let mut out = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh" && !in_sh;
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = line.split(" #").next().unwrap_or("").trim();
        let (bin, rest) = if let Some(rest) = code.strip_prefix("cargo run --release --bin orderd-sim -- ") {
            ("orderd-sim", rest)
        } else if let Some(rest) = code.strip_prefix("cargo run --release -- ") {
            ("orderd", rest)
        } else if let Some(rest) = code.strip_prefix("orderd ") {
            ("orderd", rest)
        } else {
            continue;
        };
        out.push((code.to_owned(), bin, rest.split_whitespace().map(str::to_owned).collect()));
    }
    out
}

#[test]
fn every_command_the_readme_shows_runs_against_a_server() {
    let server = Server::start("0,1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("shop.csv");
    std::fs::write(&catalogue, "product,unit_price_cents,stock,per_user_limit,payment_window_ms\n20001,1999,5000,0,0\n").unwrap();
    let run = |bin: &str, args: &[String]| {
        let exe = if bin == "orderd" { env!("CARGO_BIN_EXE_orderd") } else { env!("CARGO_BIN_EXE_orderd-sim") };
        let out = Command::new(exe).args(args).env("ORDERD_SERVER", server.seed.to_string()).output().expect("run the command");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let mut commands = commands();
    assert!(commands.len() >= 12, "README commands found: {commands:?}");
    // In README order, but a command that needs an order id (`order ID`)
    // right after the `place` that gives one.
    if let (Some(needs), Some(place)) = (
        commands.iter().position(|(_, _, a)| a.contains(&"ID".to_owned())),
        commands.iter().position(|(_, _, a)| a.get(1).is_some_and(|c| c == "place")),
    ) {
        let command = commands.remove(needs);
        let place = if needs < place { place - 1 } else { place };
        commands.insert(place + 1, command);
    }
    let mut order_id = String::from("1");
    let mut ran = 0;
    for (line, bin, mut args) in commands {
        match args.first().map(String::as_str) {
            Some("serve") => continue,                             // the server itself
            _ if args.contains(&"--seeds".to_owned()) => continue, // a long run, not a check
            _ => {}
        }
        for arg in &mut args {
            match arg.as_str() {
                "ID" => arg.clone_from(&order_id),
                "shop.csv" => *arg = catalogue.display().to_string(),
                "1200,1187" => *arg = "0,0".into(),
                _ => {}
            }
        }
        if args.first().is_some_and(|a| a == "tail") {
            if let Some(i) = args.iter().position(|a| a == "--idle-exit") {
                args[i + 1] = "1".into();
            } else if !args.contains(&"--max".to_owned()) {
                args.extend(["--idle-exit".into(), "1".into()]);
            }
        }
        if args.first().is_some_and(|a| a == "admin") && args.get(1).is_some_and(|a| a == "place") {
            args.insert(1, "--json".into());
        }
        let (ok, out, err) = run(bin, &args);
        assert!(ok, "`{line}` (run as {args:?}) failed:\n{out}{err}");
        if args.contains(&"place".to_owned()) {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            order_id = v["id"].as_str().expect("an order id").to_owned();
        }
        ran += 1;
    }
    assert!(ran >= 12, "only {ran} README commands ran");
}
