//! Place an order with the blocking client, retry it with the same key (the
//! server answers with the same order, never a second one), then pay it.
//!
//! ```sh
//! cargo run -p orderd-protocol --example place_order -- 127.0.0.1:7070 PRODUCT
//! ```
//!
//! The product must exist with a price: `orderd admin load-workload uniform`
//! loads products 1..=10000.

use orderd_protocol::client::{Client, ClientConfig, ClientError};
use orderd_protocol::{PlaceOrder, Status};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args.next().or_else(|| std::env::var("ORDERD_SERVER").ok()).unwrap_or_else(|| "127.0.0.1:7070".into());
    let product: u64 = args.next().map_or(Ok(7), |p| p.parse())?;

    let mut client = Client::connect(server.as_str(), ClientConfig::default())?;
    // The price the buyer saw; the server refuses the order if it changed.
    let price = client.stock(product)?.unit_price_cents;
    let order = PlaceOrder::with_new_key(/* user */ 42, product, /* qty */ 1, price);
    let placed = match client.place_order(order) {
        Ok(placed) => placed,
        Err(ClientError::Rejected(r)) if r.status() == Some(Status::SoldOut) => {
            println!("product {product} is sold out");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!("placed order {} ({} x {} cents), key {:032x}", placed.id, placed.qty, placed.unit_price_cents, placed.key.as_u128());

    // A retry after a timeout sends the same request with the same key:
    // it is the same order.
    let again = client.place_order(order)?;
    assert_eq!(again.id, placed.id);
    println!("retried with the same key: order {} again", again.id);

    let paid = client.pay_order(placed.id)?;
    println!("order {} is {:?}", paid.id, paid.state);
    Ok(())
}
