//! [`DurablePoints`]: each core's durable log sequence, published for the
//! stream readers of every core.
//!
//! The one value shared between cores for the stream: written by a core's
//! flusher once per flush (not per order) with `Release`, read by stream
//! cursors with `Acquire`. A reader that sees `durable = n` also sees every
//! byte of the records below `n`, which the core wrote before it flushed
//! them and never writes again.

use std::sync::atomic::{AtomicU64, Ordering};

/// One core's point, alone on its cache line so that flushers of
/// different cores do not contend.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Point(AtomicU64);

/// Per core: every record below this sequence is durable.
#[derive(Debug)]
pub struct DurablePoints {
    points: Box<[Point]>,
}

impl DurablePoints {
    /// Points starting at `initial` (what recovery found durable), one per core.
    #[must_use]
    pub fn new(initial: &[u64]) -> DurablePoints {
        DurablePoints { points: initial.iter().map(|&s| Point(AtomicU64::new(s))).collect() }
    }

    /// Number of cores.
    #[must_use]
    pub fn cores(&self) -> usize {
        self.points.len()
    }

    /// Publishes that core `core`'s log is durable below `sequence`. Points
    /// only move forward.
    pub fn publish(&self, core: usize, sequence: u64) {
        if let Some(p) = self.points.get(core) {
            p.0.fetch_max(sequence, Ordering::Release);
        }
    }

    /// Core `core`'s durable point (0 for a core that does not exist).
    #[must_use]
    pub fn get(&self, core: usize) -> u64 {
        self.points.get(core).map_or(0, |p| p.0.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_only_move_forward_and_unknown_cores_read_zero() {
        let d = DurablePoints::new(&[5, 7]);
        d.publish(0, 9);
        d.publish(0, 3);
        d.publish(9, 100);
        assert_eq!((d.get(0), d.get(1), d.get(9), d.cores()), (9, 7, 0, 2));
    }
}
