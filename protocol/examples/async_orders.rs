//! Many tasks of an async service placing orders through one shared
//! `AsyncClient` (its connections are shared and pipelined), each call
//! bounded by a deadline.
//!
//! ```sh
//! cargo run -p orderd-protocol --features tokio --example async_orders -- 127.0.0.1:7070
//! ```
//!
//! Products 1..=10 must exist: `orderd admin load-workload hot`.

use std::time::Duration;

use orderd_protocol::client::{AsyncClient, ClientConfig, ClientError};
use orderd_protocol::{PlaceOrder, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::args().nth(1).or_else(|| std::env::var("ORDERD_SERVER").ok()).unwrap_or_else(|| "127.0.0.1:7070".into());
    let config = ClientConfig { call_timeout: Duration::from_secs(2), ..ClientConfig::default() };
    let client = AsyncClient::connect(&server, config).await?;

    let mut tasks = Vec::new();
    for user in 1..=100u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let product = 1 + user % 10;
            let price = client.stock(product).await?.unit_price_cents;
            match client.place_order(PlaceOrder::with_new_key(user, product, 1, price)).await {
                Ok(order) => Ok(Some(order.id)),
                // A sale's ordinary answers: not errors of the service.
                Err(ClientError::Rejected(r)) if matches!(r.status(), Some(Status::SoldOut | Status::LimitExceeded)) => Ok(None),
                Err(e) => Err(e),
            }
        }));
    }
    let (mut placed, mut refused) = (0, 0);
    for task in tasks {
        match task.await? {
            Ok(Some(_)) => placed += 1,
            Ok(None) => refused += 1,
            Err(e) => eprintln!("a call failed: {e}"),
        }
    }
    println!("{placed} orders placed, {refused} sold out or over the limit");
    Ok(())
}
