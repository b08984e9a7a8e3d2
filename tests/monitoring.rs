//! The monitoring kit in `tuning/`: the Prometheus rules pass `promtool
//! check rules`, and every orderd metric the rules and the Grafana
//! dashboard name exists in a real scrape (a renamed metric fails here, not
//! silently on a dashboard at 3 a.m.).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::Server;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/prometheus-rules.yml");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/grafana-dashboard.json");

/// The metric names (`orderd_*`, `process_*`) a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        if starts_word && (rest.starts_with("orderd_") || rest.starts_with("process_")) {
            let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            names.insert(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// The series names a scrape exposes (histograms as `_bucket`, `_sum`, `_count`).
fn exposed(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exposed() {
    let rules = std::fs::read_to_string(RULES).expect("read the rules");
    let dashboard = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = parsed["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {} has no query", panel["title"]);
    }
    let server = Server::start("0", &[]);
    let (status, scrape) = server.scrape();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let exposed = exposed(&scrape);
    let named: BTreeSet<String> = metric_names(&rules).into_iter().chain(metric_names(&dashboard)).collect();
    assert!(named.len() > 15, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(missing.is_empty(), "named in tuning/ but not exposed: {missing:?}");
}

/// Skipped where promtool is not installed, except in CI (`CI` set).
#[test]
fn promtool_accepts_the_rules() {
    let Some(promtool) = common::promtool() else { return };
    let out = Command::new(&promtool).args(["check", "rules", RULES]).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules refused tuning/prometheus-rules.yml:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
