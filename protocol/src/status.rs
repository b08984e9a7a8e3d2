//! The one table of status codes: why a request, a frame or a connection was
//! refused.
//!
//! Codes are numeric and stable: a number, once published, keeps its meaning
//! forever and is never reused (TigerBeetle's rule for result codes). New
//! codes take new numbers. Ranges: 1–99 the outcome of one request, 100–199
//! a frame or a connection, 200–299 the server's state. `0` is never a code.
//! On the wire a code is a little-endian `u16`; a client that meets a code it
//! does not know must treat it as a rejection it cannot interpret, not as a
//! decoding error (see [`Status::from_code`]).

macro_rules! status_table {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $meaning:literal; )*) => {
        /// A status code: why something was refused. See the module docs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        #[non_exhaustive]
        pub enum Status {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl Status {
            /// Every status, in code order (for documentation and tests).
            pub const ALL: &'static [Status] = &[ $( Status::$variant, )* ];

            /// The status with this wire code, or `None` for a code this
            /// build does not know (a newer server may send one).
            #[must_use]
            pub const fn from_code(code: u16) -> Option<Status> {
                match code {
                    $( $code => Some(Status::$variant), )*
                    _ => None,
                }
            }

            /// The stable snake_case name (`sold_out`), as in `PROTOCOL.md`.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $( Status::$variant => $name, )* }
            }

            /// One line saying what the code means and what to do about it.
            #[must_use]
            pub const fn meaning(self) -> &'static str {
                match self { $( Status::$variant => $meaning, )* }
            }
        }
    };
}

status_table! {
    // ---- 1..=99: the outcome of one request -------------------------------
    /// Stock is below the requested quantity.
    SoldOut = 1, "sold_out", "stock is below the requested quantity; detail = units left";
    /// The user would exceed the product's per-user limit.
    LimitExceeded = 2, "limit_exceeded", "the user would exceed the product's per-user limit; detail = units the user may still buy";
    /// No product with this id exists.
    NoSuchProduct = 3, "no_such_product", "no product with this id exists";
    /// The expected unit price differs from the catalogue price.
    PriceChanged = 4, "price_changed", "the expected unit price differs from the catalogue; detail = current unit price in cents";
    /// The idempotency key is already bound to a different request.
    KeyReused = 5, "key_reused", "the idempotency key was used for a different request; detail = the original order id";
    /// No order with this id (or key) exists.
    NoSuchOrder = 6, "no_such_order", "no order with this id or idempotency key exists";
    /// The order is paid and can no longer be cancelled.
    OrderPaid = 7, "order_paid", "the order is paid and can no longer be cancelled";
    /// The order was cancelled and cannot be paid.
    OrderCancelled = 8, "order_cancelled", "the order was cancelled and cannot be paid";
    /// The order's payment window passed; it was expired and cannot be paid.
    OrderExpired = 9, "order_expired", "the payment window passed and the order expired; it cannot be paid";
    /// A field is outside its allowed range.
    InvalidRequest = 10, "invalid_request", "a field is out of range (zero or too large quantity, price or id); detail = field number";
    /// The shard's memory bound for live orders or idempotency entries is reached.
    OrdersFull = 11, "orders_full", "the shard holds its maximum of orders in memory (--max-orders-per-shard): open orders and final ones not yet archived; it lasts until orders are paid, cancelled or expire and leave memory";
    /// A stock adjustment would take stock below zero or above its maximum.
    StockOutOfRange = 12, "stock_out_of_range", "the stock adjustment would take available stock below zero or supplied past its maximum; detail = units available now";
    /// A stream position is older than the retained log or past its end.
    PositionUnavailable = 13, "position_unavailable", "a subscribe position is older than the retained log or past its end; detail = (core << 48) + the oldest offset that core still has";
    /// No room for another subscription.
    TooManySubscriptions = 14, "too_many_subscriptions", "the core serves its maximum of subscriptions (detail = the maximum), or this connection has one already (detail = 0)";
    /// The idempotency key's time is outside the server's dedup window.
    KeyExpired = 15, "key_expired", "the idempotency key's time is older than the server's dedup window or too far ahead of its clock; nothing was placed; detail = the server's clock (unix ms)";

    // ---- 100..=199: a frame or a connection --------------------------------
    /// The frame header or its archive failed validation.
    BadFrame = 100, "bad_frame", "the frame header or its rkyv archive failed validation; the connection is closed";
    /// The payload is larger than the server accepts.
    FrameTooLarge = 101, "frame_too_large", "the payload is larger than the server accepts; detail = the maximum in bytes";
    /// The frame carries more requests than the server accepts.
    BatchTooLarge = 102, "batch_too_large", "the frame carries more requests than the server accepts; detail = the maximum";
    /// The client has too many unanswered frames on this connection.
    TooManyInFlight = 103, "too_many_in_flight", "too many request frames are unanswered on this connection; detail = the maximum";
    /// The protocol version is not spoken by this server.
    UnsupportedVersion = 104, "unsupported_version", "the frame's protocol version is not spoken here; detail = the version the server speaks";
    /// The frame kind is unknown or not valid in this direction.
    UnknownFrameKind = 105, "unknown_frame_kind", "the frame kind is unknown or not allowed in this direction";
    /// The server is at its connection limit.
    TooManyConnections = 106, "too_many_connections", "the core is at its connection limit; detail = the limit; connect later or to another core";

    // ---- 200..=299: the server's state -------------------------------------
    /// This core does not own the shard and refuses to forward.
    NotOwner = 200, "not_owner", "this core does not own the request's shard and will not forward it; detail = the owning core";
    /// The server is saturated and shed the request.
    Overloaded = 201, "overloaded", "the server is saturated and shed this request; retry with backoff";
    /// The log is full; state-changing requests are refused, reads still work.
    LogFull = 202, "log_full", "the log reached its size bound or the disk is full; state changes are refused, reads still work";
    /// The server is shutting down.
    ShuttingDown = 203, "shutting_down", "the server is shutting down; retry on another server or after restart";
    /// The request kind is not served by this server.
    Unsupported = 204, "unsupported", "this server does not serve this request kind";
    /// The server failed in a way that is its own fault.
    Internal = 205, "internal", "the server failed to process the request; see the server log";
    /// In a cluster, this node does not own the request's shard.
    Moved = 206, "moved", "in a cluster, this node does not own the request's shard by its map (another node does, or none yet); nothing was done; detail = the map version the node holds: read the map and send the request to the owner";
    /// The shard has fewer in-sync copies than its cluster keeps.
    ReplicaUnavailable = 207, "replica_unavailable", "in a cluster that keeps several copies of each shard, this shard has fewer in-sync copies than that now (a follower is down or catching up): the state change was not made; retry with the same key after detail ms";
    /// A replicated event does not follow the copy's position.
    ReplicaGap = 208, "replica_gap", "between nodes: a replicated event does not follow this copy of its shard (detail = (shard << 48) + the copy's position): the copy must be seeded again";
}

impl Status {
    /// The wire code.
    #[must_use]
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Whether retrying the same request later (to the same server) may
    /// succeed without changing it. Not `orders_full` (it lasts until
    /// orders close), not `moved` (the request must go to another node).
    #[must_use]
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Status::Overloaded | Status::ShuttingDown | Status::TooManyInFlight | Status::TooManyConnections | Status::ReplicaUnavailable
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for &s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert!(names.insert(s.name()), "duplicate name {}", s.name());
            assert!(!s.meaning().is_empty());
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(65535), None);
    }

    #[test]
    fn published_codes_never_change() {
        // A changed number here is a wire break: add a new code instead.
        assert_eq!(Status::SoldOut.code(), 1);
        assert_eq!(Status::PriceChanged.code(), 4);
        assert_eq!(Status::KeyReused.code(), 5);
        assert_eq!(Status::BadFrame.code(), 100);
        assert_eq!(Status::UnsupportedVersion.code(), 104);
        assert_eq!(Status::NotOwner.code(), 200);
        assert_eq!(Status::LogFull.code(), 202);
        assert_eq!(Status::Internal.code(), 205);
    }
}
