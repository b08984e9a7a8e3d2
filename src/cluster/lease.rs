//! A node's etcd lease, as the node itself keeps time of it: its TTL, how
//! often it is renewed, and the clock by which a node that may have lost it
//! stops serving before a follower can take its shards over (fencing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A node's lease: the node's entry disappears this long after the node
/// stops renewing it (a crash, a partition).
pub const NODE_LEASE_TTL_SECS: u64 = 2;

/// How often a node renews its lease: a quarter of its TTL, so that three
/// renewals in a row may fail (a loaded machine, an etcd leader election)
/// before the lease lapses and the node's shards fail over.
pub const NODE_LEASE_RENEW_EVERY: Duration = Duration::from_millis(NODE_LEASE_TTL_SECS * 1000 / 4);

/// When this node's etcd lease was last renewed, on a monotonic clock:
/// the lease runs for [`NODE_LEASE_TTL_SECS`]
/// at least from the moment its renewal was *sent*, so a node that has not
/// renewed for [`FENCE_AFTER_MS`] knows, by its own clock, that its lease
/// may be about to lapse (a pause, etcd out of reach) and stops serving
/// before any follower could have taken its shards over.
#[derive(Debug, Default)]
pub struct LeaseClock {
    /// When the last successful renewal was sent, ms after [`LeaseClock::now_ms`]'s origin.
    renewed_ms: AtomicU64,
}

/// A node whose last renewal was sent this long ago serves nothing while
/// its cluster keeps several copies: the lease's TTL less 500 ms of margin
/// for clock rate differences and the time the refusal takes.
pub const FENCE_AFTER_MS: u64 = NODE_LEASE_TTL_SECS * 1000 - 500;

impl LeaseClock {
    /// Milliseconds on a monotonic clock (since the first call in the process).
    #[must_use]
    pub fn now_ms() -> u64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        // Offset by one so that 0 means "never renewed".
        ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
    }

    /// A renewal sent at `sent_ms` succeeded.
    pub fn renewed(&self, sent_ms: u64) {
        self.renewed_ms.fetch_max(sent_ms, Ordering::AcqRel);
    }

    /// Whether the lease surely still runs.
    #[must_use]
    pub fn fresh(&self) -> bool {
        let renewed = self.renewed_ms.load(Ordering::Acquire);
        renewed != 0 && LeaseClock::now_ms().saturating_sub(renewed) < FENCE_AFTER_MS
    }
}
