//! Crash consistency through the real binary: several client threads place,
//! pay and cancel orders over two cores while the server is SIGKILLed at a
//! seeded random moment, then restarted on the same data directory. Every
//! acknowledged reply must hold after each restart: the order with the same
//! id, key and fields, a state no earlier than acknowledged, idempotent
//! retries answering the original order, and the stock invariants.
//!
//! `ORDERD_CRASH_CYCLES` (default 20) sets the number of kill/restart
//! cycles, `ORDERD_CRASH_SEED` the seed (printed, to replay a failure).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use orderd_protocol::client::{new_key, Client, ClientConfig};
use orderd_protocol::message::{OrderRef, ProductRef};
use orderd_protocol::{Order, OrderState, PlaceOrder, Reply, Request, UpsertProduct};

const PRODUCTS: u64 = 10;
const THREADS: u64 = 4;
const USERS: u64 = 30;
/// Small segments, so rotations happen under load and across crashes.
const SERVER_FLAGS: &[&str] = &["--segment-bytes", "65536", "--shards", "8"];

fn upsert(p: u64) -> UpsertProduct {
    UpsertProduct {
        product: p,
        unit_price_cents: 100 + p,
        // Two hot products sell out; the others never do.
        stock: if p > 8 { 60 } else { 1_000_000 },
        // Odd products have a payment window: orders expire across restarts.
        payment_window_ms: if p % 2 == 1 { 1500 } else { 0 },
        per_user_limit: if p.is_multiple_of(3) { 4 } else { 0 },
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients were told.
#[derive(Default)]
struct Acked {
    /// Order id -> (the request that placed it, the reply).
    orders: HashMap<u64, (PlaceOrder, Order)>,
    paid: HashSet<u64>,
    cancelled: HashSet<u64>,
    /// Pays and cancels sent, acknowledged or not.
    pay_tried: HashSet<u64>,
    cancel_tried: HashSet<u64>,
}

impl Acked {
    fn merge(&mut self, other: Acked) {
        for (id, (request, order)) in other.orders {
            if let Some((earlier, _)) = self.orders.get(&id) {
                assert_eq!(earlier.key, request.key, "order id {id} was issued twice, to two keys");
            }
            self.orders.insert(id, (request, order));
        }
        self.paid.extend(other.paid);
        self.cancelled.extend(other.cancelled);
        self.pay_tried.extend(other.pay_tried);
        self.cancel_tried.extend(other.cancel_tried);
    }
}

fn config() -> ClientConfig {
    ClientConfig { retries: 0, request_timeout: Duration::from_secs(5), ..ClientConfig::default() }
}

/// One client thread: batches of place orders, and pays and cancels of its
/// own orders, until the server dies or `stop`.
fn load(addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::default();
    let Ok(mut client) = Client::connect(addr, config()) else { return acked };
    let mut rng = Rng(seed | 1);
    let mut mine: Vec<u64> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<PlaceOrder> = (0..1 + rng.below(8))
            .map(|_| {
                let product = 1 + rng.below(PRODUCTS);
                PlaceOrder {
                    key: new_key(),
                    user: 1 + rng.below(USERS),
                    product,
                    unit_price_cents: 100 + product,
                    qty: 1 + rng.below(2) as u32,
                }
            })
            .collect();
        let requests: Vec<Request> = batch.iter().map(|p| Request::PlaceOrder(*p)).collect();
        let Ok(replies) = client.execute(&requests) else { break };
        for (request, reply) in batch.iter().zip(replies) {
            if let Reply::Order(order) = reply {
                mine.push(order.id);
                acked.orders.insert(order.id, (*request, order));
            }
        }
        if mine.is_empty() || rng.below(2) == 0 {
            continue;
        }
        let id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
        if rng.below(2) == 0 {
            acked.pay_tried.insert(id);
            match client.pay_order(id) {
                Ok(order) if order.state == OrderState::Paid => {
                    acked.paid.insert(id);
                }
                Ok(_) => {}
                Err(e) if e.is_transport() => break,
                Err(_) => {}
            }
        } else {
            acked.cancel_tried.insert(id);
            match client.cancel_order(id) {
                Ok(order) if order.state == OrderState::Cancelled => {
                    acked.cancelled.insert(id);
                }
                Ok(_) => {}
                Err(e) if e.is_transport() => break,
                Err(_) => {}
            }
        }
    }
    acked
}

/// Every acknowledged fact holds on the restarted server.
fn verify(server: &Server, acked: &Acked, cycle: usize) {
    let mut client = Client::connect(server.seed, config()).expect("connect after restart");
    let ids: Vec<u64> = acked.orders.keys().copied().collect();
    let mut live_units: HashMap<u64, u64> = HashMap::new();
    let mut held: HashMap<(u64, u64), u64> = HashMap::new();
    for chunk in ids.chunks(256) {
        let gets: Vec<Request> = chunk.iter().map(|&order_id| Request::GetOrder(OrderRef { order_id })).collect();
        let replies = client.execute(&gets).expect("get orders");
        for (&id, reply) in chunk.iter().zip(replies) {
            let (request, placed) = &acked.orders[&id];
            let Reply::Order(now) = reply else { panic!("cycle {cycle}: acknowledged order {id} is missing after restart: {reply:?}") };
            assert_eq!(
                (now.id, now.key, now.user, now.product, now.qty, now.unit_price_cents, now.created_ms),
                (placed.id, placed.key, placed.user, placed.product, placed.qty, placed.unit_price_cents, placed.created_ms),
                "cycle {cycle}: order {id} came back different"
            );
            let allowed = if acked.paid.contains(&id) {
                now.state == OrderState::Paid
            } else if acked.cancelled.contains(&id) {
                now.state == OrderState::Cancelled
            } else {
                match now.state {
                    OrderState::Placed | OrderState::Expired => true,
                    OrderState::Paid => acked.pay_tried.contains(&id),
                    OrderState::Cancelled => acked.cancel_tried.contains(&id),
                }
            };
            assert!(
                allowed,
                "cycle {cycle}: order {id} is {:?} after restart (paid acked: {}, cancelled acked: {})",
                now.state,
                acked.paid.contains(&id),
                acked.cancelled.contains(&id)
            );
            if now.state.holds_units() {
                *live_units.entry(now.product).or_default() += u64::from(now.qty);
                *held.entry((now.user, now.product)).or_default() += u64::from(now.qty);
            }
            let _ = request;
        }
        // Idempotent retries of acknowledged place orders answer the original.
        let retries: Vec<Request> = chunk.iter().map(|id| Request::PlaceOrder(acked.orders[id].0)).collect();
        let replies = client.execute(&retries).expect("retries");
        for (&id, reply) in chunk.iter().zip(replies) {
            match reply {
                Reply::Order(order) => assert_eq!(order.id, id, "cycle {cycle}: a retry of order {id} answered another order"),
                other => panic!("cycle {cycle}: a retry of acknowledged order {id} answered {other:?}"),
            }
        }
    }
    for p in 1..=PRODUCTS {
        let replies = client.execute(&[Request::GetStock(ProductRef { product: p })]).expect("stock");
        let Some(Reply::Stock(stock)) = replies.first() else { panic!("cycle {cycle}: no stock for product {p}") };
        assert_eq!(
            stock.supplied,
            stock.available + stock.reserved + stock.paid,
            "cycle {cycle}: stock invariant of product {p}: {stock:?}"
        );
        // (Orders of products with a payment window may expire between the
        // reads of the orders and of the stock: only the others are compared.)
        let live = if upsert(p).payment_window_ms == 0 { live_units.get(&p).copied().unwrap_or(0) } else { 0 };
        assert!(
            stock.reserved + stock.paid >= live,
            "cycle {cycle}: product {p} holds {} units for {live} acknowledged live units",
            stock.reserved + stock.paid
        );
        let limit = u64::from(upsert(p).per_user_limit);
        if limit > 0 {
            for ((user, _), units) in held.iter().filter(|((_, product), _)| *product == p) {
                assert!(*units <= limit, "cycle {cycle}: user {user} holds {units} units of product {p}, limit {limit}");
            }
        }
    }
}

#[test]
fn crash_sigkill_under_load_loses_no_acknowledged_order() {
    let cycles: usize = std::env::var("ORDERD_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("ORDERD_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5EED_2026);
    println!("crash test: {cycles} cycles, ORDERD_CRASH_SEED={seed}");
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng(seed | 1);
    let mut acked = Acked::default();
    let mut server = Server::start_in(dir.path(), "0,1", SERVER_FLAGS, &[]);
    {
        let mut client = Client::connect(server.seed, config()).expect("connect");
        for p in 1..=PRODUCTS {
            client.upsert_product(upsert(p)).expect("upsert");
        }
    }
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (addr, stop, seed) = (server.seed, Arc::clone(&stop), rng.next() ^ t);
                std::thread::spawn(move || load(addr, seed, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            acked.merge(t.join().expect("load thread"));
        }
        server = Server::start_in(dir.path(), "0,1", SERVER_FLAGS, &[]);
        verify(&server, &acked, cycle);
    }
    println!(
        "crash test: {cycles} cycles, {} acknowledged orders, {} paid, {} cancelled, {:.1} s",
        acked.orders.len(),
        acked.paid.len(),
        acked.cancelled.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked.orders.len() > cycles * 10, "the load placed too few orders to mean anything");
    server.kill();
}
