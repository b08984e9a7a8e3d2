//! `orderd-load --workload lifecycle` against a real server: accepted
//! orders paid, cancelled or left to expire by the same thread 0-2 s
//! later; after the payment window every order is in a final state, the
//! counts add up and the stock accounts for what came back.

mod common;

use clap::Parser;
use common::Server;
use orderd::load::{self, LoadArgs};

#[test]
fn a_lifecycle_run_ends_with_every_order_paid_cancelled_or_expired_and_the_stock_balanced() {
    let server = Server::start("0,1", &["--shards", "8"]);
    let addr = server.seed.to_string();
    let argv = [
        "orderd-load",
        "--server",
        addr.as_str(),
        "--workload",
        "lifecycle",
        "--payment-window-ms",
        "800",
        "--duration",
        "3",
        "--connections",
        "2",
        "--pipeline",
        "2",
        "--batch",
        "16",
        "--quiet",
        "--seed",
        "11",
    ];
    let args = LoadArgs::try_parse_from(argv).expect("arguments");
    let mut out = Vec::new();
    let report =
        load::run_with(&args, orderd_protocol::client::ClientConfig::default(), &mut out).unwrap_or_else(|e| panic!("run failed: {e}"));
    let text = String::from_utf8_lossy(&out);
    assert!(report.invariants_ok, "{text}");
    let states = report.checks.iter().find(|c| c.name == "final_states").unwrap_or_else(|| panic!("no final_states check:\n{text}"));
    assert!(states.ok, "{}", states.detail);
    // "N orders accepted: P paid, C cancelled, E expired, 0 still placed, 0 not read back"
    let count = |what: &str| -> u64 {
        let at = states.detail.find(what).unwrap_or_else(|| panic!("no {what} in {}", states.detail));
        states.detail[..at].trim_end().rsplit([' ', ',']).next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{}", states.detail))
    };
    let (paid, cancelled, expired) = (count(" paid"), count(" cancelled"), count(" expired"));
    assert!(report.accepted > 100, "{}", states.detail);
    assert_eq!(paid + cancelled + expired, report.accepted, "{}", states.detail);
    // 90 / 5 / 5 in expectation; orders accepted in the last two seconds
    // whose follow-up was not sent expire too.
    assert!(paid > cancelled && paid > 0 && cancelled > 0 && expired > 0, "{}", states.detail);
    let live: u64 = server.client().stats().unwrap().cores.iter().map(|c| c.live_orders).sum();
    assert_eq!(live, paid, "only the paid orders still hold units");
}
