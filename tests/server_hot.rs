//! The `hot` flash sale over two cores and 16 concurrent connections: every
//! invariant of WORKLOAD.md holds at the end.

mod common;

use std::collections::{HashMap, HashSet};

use common::Server;
use orderd_protocol::client::{new_key, Client, ClientConfig};
use orderd_protocol::{PlaceOrder, Reply, Request, Status, UpsertProduct};

const PRODUCTS: u64 = 10;
const STOCK: u64 = 2_000;
const PRICE: u64 = 999;
const THREADS: u64 = 16;
const REQUESTS_PER_THREAD: u64 = 2_000;
const BATCH: usize = 50;

/// What one buyer thread saw.
#[derive(Default)]
struct Seen {
    accepted: HashMap<u64, u64>,
    orders: Vec<(u64, u64, u64)>, // (order id, user, product)
    keys: Vec<orderd_protocol::IdempotencyKey>,
    rejected: u64,
}

fn buyer(seed: std::net::SocketAddr, thread: u64) -> Seen {
    let shard_aware = thread.is_multiple_of(2); // half the clients lean on forwarding
    let mut client = Client::connect(seed, ClientConfig { shard_aware, ..ClientConfig::default() }).expect("connect");
    let mut seen = Seen::default();
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (thread + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        x ^= x << 7;
        x ^= x >> 9;
        x
    };
    for _ in 0..REQUESTS_PER_THREAD / BATCH as u64 {
        let batch: Vec<PlaceOrder> = (0..BATCH)
            .map(|_| PlaceOrder {
                key: new_key(),
                user: 1 + next() % 1_000_000,
                product: 1 + next() % PRODUCTS,
                unit_price_cents: PRICE,
                qty: 1,
            })
            .collect();
        let requests: Vec<Request> = batch.iter().copied().map(Request::PlaceOrder).collect();
        let replies = client.execute(&requests).expect("execute");
        for (req, reply) in batch.iter().zip(replies) {
            match reply {
                Reply::Order(o) => {
                    assert_eq!((o.user, o.product, o.key), (req.user, req.product, req.key));
                    *seen.accepted.entry(o.product).or_default() += 1;
                    seen.orders.push((o.id, o.user, o.product));
                    seen.keys.push(o.key);
                }
                Reply::Rejected(r) => {
                    let status = r.status();
                    assert!(matches!(status, Some(Status::SoldOut | Status::LimitExceeded)), "unexpected rejection {r}");
                    seen.rejected += 1;
                }
                other => panic!("unexpected reply {other:?}"),
            }
        }
    }
    seen
}

#[test]
fn hot_sale_on_two_cores_keeps_every_invariant() {
    let server = Server::start("0,1", &[]);
    let mut admin = server.client();
    for product in 1..=PRODUCTS {
        admin
            .upsert_product(UpsertProduct { product, unit_price_cents: PRICE, stock: STOCK, payment_window_ms: 0, per_user_limit: 1 })
            .unwrap();
    }
    let seed = server.seed;
    let threads: Vec<_> = (0..THREADS).map(|t| std::thread::spawn(move || buyer(seed, t))).collect();
    let seen: Vec<Seen> = threads.into_iter().map(|t| t.join().expect("buyer thread")).collect();

    let mut accepted: HashMap<u64, u64> = HashMap::new();
    let mut holders = HashSet::new();
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut rejected = 0;
    for s in &seen {
        for (&p, &n) in &s.accepted {
            *accepted.entry(p).or_default() += n;
        }
        for &(id, user, product) in &s.orders {
            assert!(ids.insert(id), "order id {id} answered twice");
            assert!(holders.insert((user, product)), "user {user} holds two units of product {product} (limit 1)");
        }
        for k in &s.keys {
            assert!(keys.insert(*k), "one idempotency key, two orders");
        }
        rejected += s.rejected;
    }
    let total_accepted: u64 = accepted.values().sum();
    assert_eq!(total_accepted + rejected, THREADS * REQUESTS_PER_THREAD, "every request was answered");

    for product in 1..=PRODUCTS {
        let stock = admin.stock(product).unwrap();
        assert_eq!(stock.supplied, stock.available + stock.reserved + stock.paid, "{stock:?}");
        assert_eq!(stock.supplied, STOCK);
        let n = accepted.get(&product).copied().unwrap_or(0);
        assert_eq!(n, stock.reserved + stock.paid, "accepted orders of product {product} hold exactly its sold units");
        assert!(n <= STOCK, "oversold product {product}");
    }
    let stats = admin.stats().unwrap();
    assert_eq!(stats.cores.len(), 2);
    assert_eq!(stats.cores.iter().map(|c| c.orders_placed).sum::<u64>(), total_accepted);
    assert_eq!(stats.cores.iter().map(|c| c.live_orders).sum::<u64>(), total_accepted);
    assert!(stats.cores.iter().map(|c| c.forwarded).sum::<u64>() > 0, "naive clients were forwarded");
    // 32,000 requests for 20,000 units: the sale sells out.
    assert_eq!(total_accepted, PRODUCTS * STOCK - (1..=PRODUCTS).map(|p| admin.stock(p).unwrap().available).sum::<u64>());
}
