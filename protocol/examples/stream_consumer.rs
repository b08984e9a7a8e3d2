//! A consumer of the order stream (payment, warehouse, analytics): reads
//! events from a saved position (or from now), and prints the position to
//! resume from, as a consumer would store it with what it processed.
//!
//! ```sh
//! cargo run -p orderd-protocol --example stream_consumer -- 127.0.0.1:7070 [POSITION]
//! ```
//!
//! POSITION is what a previous run printed (one offset per core, e.g.
//! `1200,1187`); without it the stream starts now. Stops after 10 s without
//! an event.

use std::time::Duration;

use orderd_protocol::client::{format_positions, parse_positions, ClientConfig, SubscribeOptions, Subscription};
use orderd_protocol::message::StreamStart;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args.next().or_else(|| std::env::var("ORDERD_SERVER").ok()).unwrap_or_else(|| "127.0.0.1:7070".into());
    let start = match args.next() {
        Some(saved) => StreamStart::Positions(
            parse_positions(&saved).ok_or(format!("`{saved}` is not a position (offsets per core, e.g. 1200,1187)"))?,
        ),
        None => StreamStart::Now,
    };
    let options = SubscribeOptions { start, ..SubscribeOptions::default() };
    let mut stream = Subscription::connect(server.as_str(), ClientConfig::default(), options)?;
    while let Some(event) = stream.next_event(Duration::from_secs(10))? {
        println!(
            "{}:{} {} order {} product {} user {} qty {} amount {} cents",
            event.core,
            event.offset,
            event.kind.name(),
            event.order_id,
            event.product,
            event.user,
            event.qty,
            event.amount_cents
        );
    }
    println!("resume from {}", format_positions(stream.positions()));
    Ok(())
}
