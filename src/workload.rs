//! The reference workloads of `benches/WORKLOAD.md` as data: which products exist,
//! at what price and stock, with which limits, and which users buy.
//!
//! `orderd admin load-workload` loads a catalogue from here, and the load
//! generator draws its requests from the same definitions, so a published
//! figure always names a catalogue that both sides agree on.
//!
//! | workload | products | stock each | unit price (cents) | per-user limit | users |
//! |---|---|---|---|---|---|
//! | `uniform` | 1..=10,000 | 1,000,000 | [`unit_price_cents`] | none | 1..=1,000,000 |
//! | `hot` | 1..=10 | 100,000 | [`unit_price_cents`] | 1 | 1..=1,000,000 |
//! | `zipf` | as `uniform` (drawn with exponent [`ZIPF_EXPONENT`]) | | | | |
//! | `lifecycle` | as `uniform`, with a payment window of [`LIFECYCLE_PAYMENT_WINDOW_MS`] | | | | |
//!
//! In `lifecycle` every accepted order is followed, by the same generator
//! thread, after a delay drawn uniformly from 0-2 s: paid (90%), cancelled
//! (5%) or left to expire (5%) (`load::draw`).
//!
//! Choices `WORKLOAD.md` leaves open, fixed here:
//! - **Price**: every workload prices product `p` at
//!   `mix64(p) % 100_000 + 1` cents ([`orderd_protocol::shard::mix64`]):
//!   deterministic, spread over `1..=100,000`, and computable by a load
//!   generator that must send the expected price without asking the server.
//! - **Payment window**: `0` (orders never expire) but in `lifecycle`, so a
//!   run's invariant check (`initial stock = remaining + units in live
//!   orders`) does not depend on how long the run lasted; `lifecycle` waits
//!   out its window before checking, so that every order left is expired.

use std::ops::RangeInclusive;

use orderd_protocol::shard::mix64;
use orderd_protocol::UpsertProduct;

/// Users of every workload: ids `1..=USERS`, chosen uniformly.
pub const USERS: u64 = 1_000_000;

/// Highest catalogue price of every workload, in cents (the lowest is 1).
pub const MAX_PRICE_CENTS: u64 = 100_000;
const _: () = assert!(MAX_PRICE_CENTS <= orderd_protocol::limits::MAX_UNIT_PRICE_CENTS, "workload prices must be valid catalogue prices");

/// Payment window of the products of `uniform`, `hot` and `zipf`: `0`,
/// orders never expire.
pub const PAYMENT_WINDOW_MS: u64 = 0;

/// Payment window of the `lifecycle` catalogue (`orderd-load
/// --payment-window-ms` may shorten it for tests).
pub const LIFECYCLE_PAYMENT_WINDOW_MS: u64 = 60_000;

/// The Zipf exponent of the `zipf` workload's product popularity.
pub const ZIPF_EXPONENT: f64 = 0.99;

/// One of the reference workloads. The names (`uniform`, `hot`, `zipf`) are
/// those of `WORKLOAD.md` and of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Workload {
    /// 10,000 products with plenty of stock, chosen uniformly.
    Uniform,
    /// The flash sale: 10 products, 100,000 units each, 1 per user.
    Hot,
    /// As `uniform`, products chosen with Zipf exponent 0.99.
    Zipf,
    /// A shop's day: `uniform` with a 60 s payment window; every accepted
    /// order paid, cancelled or left to expire 0-2 s later.
    Lifecycle,
}

impl Workload {
    /// Every workload, in the order of `WORKLOAD.md`.
    pub const ALL: [Workload; 4] = [Workload::Uniform, Workload::Hot, Workload::Zipf, Workload::Lifecycle];

    /// The name used in `WORKLOAD.md`, on the command line and in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Hot => "hot",
            Workload::Zipf => "zipf",
            Workload::Lifecycle => "lifecycle",
        }
    }

    /// How many products the catalogue has (ids `1..=product_count()`).
    #[must_use]
    pub const fn product_count(self) -> u64 {
        match self {
            Workload::Uniform | Workload::Zipf | Workload::Lifecycle => 10_000,
            Workload::Hot => 10,
        }
    }

    /// The product ids of the catalogue.
    #[must_use]
    pub const fn products(self) -> RangeInclusive<u64> {
        1..=self.product_count()
    }

    /// The users that buy: ids `1..=USERS`.
    #[must_use]
    pub const fn users(self) -> RangeInclusive<u64> {
        1..=USERS
    }

    /// Initial stock of each product.
    #[must_use]
    pub const fn stock(self) -> u64 {
        match self {
            Workload::Uniform | Workload::Zipf | Workload::Lifecycle => 1_000_000,
            Workload::Hot => 100_000,
        }
    }

    /// Units one user may hold of each product (`0`: no limit).
    #[must_use]
    pub const fn per_user_limit(self) -> u32 {
        match self {
            Workload::Uniform | Workload::Zipf | Workload::Lifecycle => 0,
            Workload::Hot => 1,
        }
    }

    /// The Zipf exponent products are drawn with, or `None` for uniform draws.
    #[must_use]
    pub const fn zipf_exponent(self) -> Option<f64> {
        match self {
            Workload::Zipf => Some(ZIPF_EXPONENT),
            Workload::Uniform | Workload::Hot | Workload::Lifecycle => None,
        }
    }

    /// The payment window of its products, ms (`0`: orders never expire).
    #[must_use]
    pub const fn payment_window_ms(self) -> u64 {
        match self {
            Workload::Lifecycle => LIFECYCLE_PAYMENT_WINDOW_MS,
            Workload::Uniform | Workload::Hot | Workload::Zipf => PAYMENT_WINDOW_MS,
        }
    }

    /// Whether accepted orders are followed by a payment or cancellation.
    #[must_use]
    pub const fn follows_up(self) -> bool {
        matches!(self, Workload::Lifecycle)
    }

    /// The catalogue entry of `product`, or `None` if the workload has no
    /// such product.
    #[must_use]
    pub const fn upsert(self, product: u64) -> Option<UpsertProduct> {
        if product == 0 || product > self.product_count() {
            return None;
        }
        Some(UpsertProduct {
            product,
            unit_price_cents: unit_price_cents(product),
            stock: self.stock(),
            payment_window_ms: self.payment_window_ms(),
            per_user_limit: self.per_user_limit(),
        })
    }

    /// The whole catalogue, in product order.
    pub fn catalogue(self) -> impl Iterator<Item = UpsertProduct> {
        self.products().filter_map(move |p| self.upsert(p))
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The catalogue price of `product` in every workload, in cents:
/// `mix64(product) % MAX_PRICE_CENTS + 1`, so `1..=MAX_PRICE_CENTS`.
#[must_use]
pub const fn unit_price_cents(product: u64) -> u64 {
    mix64(product) % MAX_PRICE_CENTS + 1
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use clap::ValueEnum;

    use super::*;

    #[test]
    fn uniform_and_zipf_have_10_000_products_of_a_million_units_without_limit() {
        for w in [Workload::Uniform, Workload::Zipf] {
            let all: Vec<_> = w.catalogue().collect();
            assert_eq!(all.len(), 10_000);
            assert_eq!(w.product_count(), 10_000);
            assert_eq!(all.iter().map(|u| u.product).collect::<Vec<_>>(), (1..=10_000).collect::<Vec<_>>());
            assert!(all.iter().all(|u| u.stock == 1_000_000 && u.per_user_limit == 0 && u.payment_window_ms == 0));
        }
    }

    #[test]
    fn hot_has_10_products_of_100_000_units_limited_to_1_per_user() {
        let all: Vec<_> = Workload::Hot.catalogue().collect();
        assert_eq!(all.iter().map(|u| u.product).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
        assert!(all.iter().all(|u| u.stock == 100_000 && u.per_user_limit == 1 && u.payment_window_ms == 0));
    }

    #[test]
    fn prices_are_deterministic_within_range_and_spread() {
        let prices: Vec<u64> = Workload::Uniform.catalogue().map(|u| u.unit_price_cents).collect();
        assert!(prices.iter().all(|p| (1..=MAX_PRICE_CENTS).contains(p)));
        // Stable across builds: the load generator relies on it.
        assert_eq!(unit_price_cents(1), 0x5692_161d_100b_05e5 % 100_000 + 1);
        let distinct: HashSet<u64> = prices.iter().copied().collect();
        assert!(distinct.len() > 9_000, "prices are spread: {} distinct of 10,000", distinct.len());
        let mean = prices.iter().sum::<u64>() / prices.len() as u64;
        assert!((45_000..55_000).contains(&mean), "mean price {mean}");
        // Every workload prices a product the same way.
        for p in Workload::Hot.products() {
            assert_eq!(Workload::Hot.upsert(p).map(|u| u.unit_price_cents), Workload::Uniform.upsert(p).map(|u| u.unit_price_cents));
        }
    }

    #[test]
    fn products_outside_the_catalogue_have_no_entry() {
        assert_eq!(Workload::Hot.upsert(0), None);
        assert_eq!(Workload::Hot.upsert(11), None);
        assert!(Workload::Uniform.upsert(10_000).is_some());
        assert_eq!(Workload::Uniform.upsert(10_001), None);
    }

    #[test]
    fn users_are_one_to_a_million() {
        for w in Workload::ALL {
            assert_eq!(w.users(), 1..=1_000_000);
        }
    }

    #[test]
    fn only_zipf_draws_with_an_exponent() {
        assert_eq!(Workload::Zipf.zipf_exponent(), Some(0.99));
        assert_eq!(Workload::Uniform.zipf_exponent(), None);
        assert_eq!(Workload::Hot.zipf_exponent(), None);
    }

    #[test]
    fn command_line_names_are_the_names_of_workload_md() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_str(w.name(), false), Ok(w));
            assert_eq!(w.to_string(), w.name());
        }
        assert_eq!(Workload::value_variants(), &Workload::ALL);
        assert!(Workload::from_str("flash", false).is_err());
    }
}
