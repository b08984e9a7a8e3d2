//! A small closed-loop load client on the SDK: N connections (one thread
//! each), each keeping `depth` batches of `batch` PlaceOrder requests of the
//! `uniform` catalogue (WORKLOAD.md) in flight, for `seconds` seconds.
//!
//! ```text
//! cargo run --release --example closed_loop -- <addr> <connections> <batch> <depth> <seconds>
//! ```
//! It first upserts the 10,000 products of the catalogue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use orderd_protocol::client::{new_key, Client, ClientConfig};
use orderd_protocol::{PlaceOrder, Reply, Request, UpsertProduct};

const PRODUCTS: u64 = 10_000;

fn price(product: u64) -> u64 {
    1 + orderd_protocol::shard::mix64(product) % 100_000
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:7070".into());
    let (connections, batch, depth, seconds) = (arg(2, 4), arg(3, 64) as usize, arg(4, 8) as usize, arg(5, 10));

    let mut admin = Client::connect(addr.as_str(), ClientConfig::default())?;
    let upserts: Vec<Request> = (1..=PRODUCTS)
        .map(|p| {
            Request::UpsertProduct(UpsertProduct {
                product: p,
                unit_price_cents: price(p),
                stock: 1_000_000,
                payment_window_ms: 0,
                per_user_limit: 0,
            })
        })
        .collect();
    for chunk in upserts.chunks(512) {
        admin.execute(chunk)?;
    }

    let run = Duration::from_secs(seconds);
    let threads: Vec<_> = (0..connections)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || -> Result<(u64, u64), String> {
                let mut client = Client::connect(addr.as_str(), ClientConfig::default()).map_err(|e| e.to_string())?;
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut next = move || {
                    x ^= x << 7;
                    x ^= x >> 9;
                    x
                };
                let mut make = || -> Vec<Request> {
                    (0..batch)
                        .map(|_| {
                            let product = 1 + next() % PRODUCTS;
                            Request::PlaceOrder(PlaceOrder {
                                key: new_key(),
                                user: 1 + next() % 1_000_000,
                                product,
                                unit_price_cents: price(product),
                                qty: 1,
                            })
                        })
                        .collect()
                };
                let (mut done, mut accepted) = (0u64, 0u64);
                let mut tickets = VecDeque::new();
                let start = Instant::now();
                for _ in 0..depth {
                    tickets.push_back(client.submit(&make()).map_err(|e| e.to_string())?);
                }
                while let Some(ticket) = tickets.pop_front() {
                    let replies = client.wait(ticket).map_err(|e| e.to_string())?;
                    done += replies.len() as u64;
                    accepted += replies.iter().filter(|r| matches!(r, Reply::Order(_))).count() as u64;
                    if start.elapsed() < run {
                        tickets.push_back(client.submit(&make()).map_err(|e| e.to_string())?);
                    }
                }
                Ok((done, accepted))
            })
        })
        .collect();
    let start = Instant::now();
    let (mut done, mut accepted) = (0, 0);
    for t in threads {
        let (d, a) = t.join().map_err(|_| "load thread panicked")??;
        done += d;
        accepted += a;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "connections={connections} batch={batch} depth={depth} requests={done} accepted={accepted} seconds={secs:.2} requests_per_s={:.0}",
        done as f64 / secs
    );
    Ok(())
}
