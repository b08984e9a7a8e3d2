//! The catalogue of one shard: each product's settings and stock counters.
//!
//! Owns the stock invariant `supplied == available + reserved + paid` for
//! every product: every change of a counter goes through a method here that
//! keeps it, and [`Product::check`] states it. Products are never deleted.

use hashbrown::HashMap;
use orderd_protocol::StockInfo;

use crate::engine::FixedHasher;

/// One product's settings and counters. 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    /// Catalogue unit price in cents, `1..=MAX_UNIT_PRICE_CENTS`.
    pub unit_price_cents: u64,
    /// Units available for sale.
    pub available: u64,
    /// Units held by placed orders.
    pub reserved: u64,
    /// Units held by paid orders.
    pub paid: u64,
    /// Every unit supplied: `available + reserved + paid`.
    pub supplied: u64,
    /// Payment window in ms, `0` for never.
    pub payment_window_ms: u64,
    /// Units one user may hold in live orders, `0` for no limit.
    pub per_user_limit: u32,
}

impl Product {
    /// A new product with `stock` available units and nothing sold.
    #[must_use]
    pub const fn new(unit_price_cents: u64, stock: u64, payment_window_ms: u64, per_user_limit: u32) -> Self {
        Product { unit_price_cents, available: stock, reserved: 0, paid: 0, supplied: stock, payment_window_ms, per_user_limit }
    }

    /// Whether the stock invariant holds.
    #[must_use]
    pub fn check(&self) -> bool {
        self.available.checked_add(self.reserved).and_then(|s| s.checked_add(self.paid)) == Some(self.supplied)
    }

    /// The product as the protocol shows it.
    #[must_use]
    pub const fn stock_info(&self, product: u64) -> StockInfo {
        StockInfo {
            product,
            unit_price_cents: self.unit_price_cents,
            available: self.available,
            reserved: self.reserved,
            paid: self.paid,
            supplied: self.supplied,
            payment_window_ms: self.payment_window_ms,
            per_user_limit: self.per_user_limit,
        }
    }

    /// `supplied` once available stock is set to `stock`, or `None` if it
    /// would not fit a `u64`.
    #[must_use]
    pub const fn supplied_with_stock(&self, stock: u64) -> Option<u64> {
        // reserved + paid <= supplied, so this sum cannot overflow.
        stock.checked_add(self.reserved + self.paid)
    }

    /// `(available, supplied)` after adding `delta` units, or `None` if
    /// either would leave `0..=u64::MAX`.
    #[must_use]
    pub const fn adjusted(&self, delta: i64) -> Option<(u64, u64)> {
        match (self.available.checked_add_signed(delta), self.supplied.checked_add_signed(delta)) {
            (Some(available), Some(supplied)) => Some((available, supplied)),
            _ => None,
        }
    }

    /// Moves `qty` units from available to reserved. The caller checked
    /// `qty <= available`.
    pub fn reserve(&mut self, qty: u64) {
        debug_assert!(qty <= self.available);
        self.available -= qty;
        self.reserved += qty;
        debug_assert!(self.check());
    }

    /// Moves `qty` units from reserved to paid.
    pub fn settle(&mut self, qty: u64) {
        debug_assert!(qty <= self.reserved);
        self.reserved -= qty;
        self.paid += qty;
        debug_assert!(self.check());
    }

    /// Moves `qty` units from reserved back to available.
    pub fn release(&mut self, qty: u64) {
        debug_assert!(qty <= self.reserved);
        self.reserved -= qty;
        self.available += qty;
        debug_assert!(self.check());
    }
}

/// The products of one shard, by id.
pub type Catalogue = HashMap<u64, Product, FixedHasher>;

const _: () = assert!(std::mem::size_of::<Product>() == 56);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_settle_and_release_keep_supplied_equal_to_the_sum() {
        let mut p = Product::new(100, 10, 0, 0);
        p.reserve(4);
        p.settle(1);
        p.release(2);
        assert_eq!((p.available, p.reserved, p.paid, p.supplied), (8, 1, 1, 10));
        assert!(p.check());
    }

    #[test]
    fn an_adjustment_below_zero_or_past_u64_max_has_no_result() {
        let p = Product::new(100, 10, 0, 0);
        assert_eq!(p.adjusted(-10), Some((0, 0)));
        assert_eq!(p.adjusted(-11), None);
        assert_eq!(Product::new(1, u64::MAX - 1, 0, 0).adjusted(2), None);
    }
}
