//! Live aggregates: orders and GMV over sliding windows, units sold per
//! product, the best sellers and the sold-out products.
//!
//! Each core keeps its own [`Windows`] (fed by the events its log appends,
//! `runtime::core::Core::append_events`) and reads units sold and stock from its shards'
//! catalogues; nothing is shared. An `Aggregates` request asks every core
//! for its part ([`core_part`]) over the mesh and [`merge`]s them. A product
//! lives on exactly one shard, so merging each core's top `n` gives the
//! exact global top `n`.
//!
//! Windows count whole seconds of the engine clock: the window of `w`
//! seconds ending at `now` covers the seconds `now_s - w + 1 ..= now_s`, so
//! a recount from the stream's `time_ms` gives the same numbers. They count
//! orders placed (what the sales screen shows as orders/s and GMV), not
//! later cancellations. After a restart the windows start empty: events
//! replayed from the log are older than a restart takes, in practice, and
//! are not counted again.

use orderd_protocol::limits::{MAX_SOLD_OUT_LISTED, MAX_TOP_PRODUCTS};
use orderd_protocol::message::{Aggregates, ProductSales, WindowTotals};

use crate::engine::Shard;

/// The window lengths, in seconds, in the order replies list them.
pub const WINDOW_SECONDS: [u32; 3] = [1, 10, 60];

/// Seconds the ring remembers (more than the longest window).
const RING: usize = 64;

const _: () = assert!(WINDOW_SECONDS[2] as usize <= RING);

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    orders: u64,
    gmv_cents: u64,
}

/// Orders placed and their GMV per second, for the last 64 seconds.
#[derive(Debug, Clone)]
pub struct Windows {
    ring: [Bucket; RING],
    /// Orders placed since start, and their GMV.
    orders: u64,
    gmv_cents: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows { ring: [Bucket::default(); RING], orders: 0, gmv_cents: 0 }
    }
}

impl Windows {
    /// Counts an order of `amount_cents` placed at `time_ms`.
    pub fn record(&mut self, time_ms: u64, amount_cents: u64) {
        let second = time_ms / 1000;
        let bucket = &mut self.ring[(second % RING as u64) as usize];
        if bucket.second != second {
            *bucket = Bucket { second, orders: 0, gmv_cents: 0 };
        }
        bucket.orders += 1;
        bucket.gmv_cents = bucket.gmv_cents.saturating_add(amount_cents);
        self.orders += 1;
        self.gmv_cents = self.gmv_cents.saturating_add(amount_cents);
    }

    /// The totals of each window of [`WINDOW_SECONDS`] ending at `now_ms`.
    #[must_use]
    pub fn totals(&self, now_ms: u64) -> Vec<WindowTotals> {
        let now_s = now_ms / 1000;
        WINDOW_SECONDS
            .iter()
            .map(|&seconds| {
                let from = (now_s + 1).saturating_sub(u64::from(seconds));
                let mut t = WindowTotals { orders: 0, gmv_cents: 0, seconds };
                for b in self.ring.iter().filter(|b| b.orders > 0 && (from..=now_s).contains(&b.second)) {
                    t.orders += b.orders;
                    t.gmv_cents = t.gmv_cents.saturating_add(b.gmv_cents);
                }
                t
            })
            .collect()
    }
}

/// One core's part of the aggregates at `now_ms`, with its `top` best sellers.
#[must_use]
pub fn core_part(shards: &[Shard], windows: &Windows, now_ms: u64, top: u32) -> Aggregates {
    let mut part = Aggregates {
        now_ms,
        windows: windows.totals(now_ms),
        orders_placed: windows.orders,
        gmv_cents: windows.gmv_cents,
        ..Aggregates::default()
    };
    let top = (top as usize).min(MAX_TOP_PRODUCTS);
    for shard in shards {
        shard.for_each_product(|product, p| {
            let units_sold = p.reserved + p.paid;
            part.products += 1;
            part.units_sold += units_sold;
            if p.available == 0 && p.supplied > 0 {
                part.sold_out_count += 1;
                part.sold_out.push(product);
            }
            if top > 0 && units_sold > 0 {
                part.top.push(ProductSales { product, units_sold, available: p.available });
            }
        });
    }
    trim(&mut part, top);
    part
}

/// Merges the parts of every core into the server's aggregates.
#[must_use]
pub fn merge(parts: impl IntoIterator<Item = Aggregates>, top: u32) -> Aggregates {
    let mut all = Aggregates::default();
    for part in parts {
        all.now_ms = all.now_ms.max(part.now_ms);
        if all.windows.is_empty() {
            all.windows.clone_from(&part.windows);
        } else {
            for (w, p) in all.windows.iter_mut().zip(&part.windows) {
                w.orders += p.orders;
                w.gmv_cents = w.gmv_cents.saturating_add(p.gmv_cents);
            }
        }
        all.top.extend_from_slice(&part.top);
        all.sold_out.extend_from_slice(&part.sold_out);
        all.sold_out_count += part.sold_out_count;
        all.products += part.products;
        all.units_sold += part.units_sold;
        all.orders_placed += part.orders_placed;
        all.gmv_cents = all.gmv_cents.saturating_add(part.gmv_cents);
    }
    trim(&mut all, (top as usize).min(MAX_TOP_PRODUCTS));
    all
}

/// Keeps the `top` best sellers (most units, then lowest id) and the
/// lowest sold-out ids up to the listing bound.
fn trim(a: &mut Aggregates, top: usize) {
    a.top.sort_unstable_by(|x, y| y.units_sold.cmp(&x.units_sold).then(x.product.cmp(&y.product)));
    a.top.truncate(top);
    a.sold_out.sort_unstable();
    a.sold_out.truncate(MAX_SOLD_OUT_LISTED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_whole_seconds_ending_now_and_forget_older_ones() {
        let mut w = Windows::default();
        w.record(100_999, 5); // second 100
        w.record(109_000, 7); // second 109
        w.record(110_500, 11); // second 110
        w.record(40_000, 1000); // second 40: only in the totals since start
        let t = w.totals(110_900);
        let got: Vec<_> = t.iter().map(|t| (t.seconds, t.orders, t.gmv_cents)).collect();
        assert_eq!(got, [(1, 1, 11), (10, 2, 18), (60, 3, 23)]);
        assert_eq!((w.orders, w.gmv_cents), (4, 1023));
        // A second that reuses a ring slot starts it afresh.
        w.record(100_000 + RING as u64 * 1000, 1);
        assert_eq!(w.totals(100_000 + RING as u64 * 1000)[0].orders, 1);
    }

    #[test]
    fn merging_sums_windows_and_keeps_the_global_top() {
        let part = |units: &[(u64, u64)], orders| Aggregates {
            now_ms: 5,
            windows: vec![WindowTotals { orders, gmv_cents: orders * 10, seconds: 1 }],
            top: units.iter().map(|&(product, units_sold)| ProductSales { product, units_sold, available: 0 }).collect(),
            sold_out: units.iter().map(|&(p, _)| p).collect(),
            sold_out_count: units.len() as u64,
            products: units.len() as u64,
            units_sold: units.iter().map(|&(_, u)| u).sum(),
            orders_placed: orders,
            gmv_cents: orders * 10,
        };
        let all = merge([part(&[(1, 5), (3, 9)], 2), part(&[(2, 9), (4, 1)], 3)], 3);
        assert_eq!(all.windows[0].orders, 5);
        assert_eq!(all.top.iter().map(|p| p.product).collect::<Vec<_>>(), [2, 3, 1]);
        assert_eq!((all.sold_out, all.sold_out_count, all.units_sold, all.products), (vec![1, 2, 3, 4], 4, 24, 4));
    }
}
