//! [`Subscription`]: one subscriber's cursors over every core's log, its
//! filter, and the batch it sends next.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use orderd_protocol::message::{ArchivedStreamStart, StreamEvent};
use orderd_protocol::{Rejection, Status};

use super::cursor::{self, BlockSource, CoreCursor, CursorError};
use super::durable::DurablePoints;

/// Which events a subscriber wants (PROTOCOL.md § 5.1 `Subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// Only this product; `0` for all.
    pub product: u64,
    /// Bit `1 << kind` selects an event kind; `0` selects all.
    pub kinds: u32,
}

impl Filter {
    /// Whether `event` passes.
    #[must_use]
    pub fn matches(&self, event: &StreamEvent) -> bool {
        (self.product == 0 || event.product == self.product) && (self.kinds == 0 || self.kinds & (1 << (event.kind as u32)) != 0)
    }
}

/// One subscriber's read state.
pub struct Subscription {
    cursors: Vec<CoreCursor>,
    filter: Filter,
    durable: Arc<DurablePoints>,
    /// The core read first by the next [`Subscription::fill`] (turns, so
    /// no core's events wait behind another's).
    first_core: usize,
}

impl Subscription {
    /// A subscription of every core's log in `data_dir` from `start`.
    ///
    /// # Errors
    /// The rejection to answer: `invalid_request` (detail 1) for a position
    /// list that does not have one entry per core, `position_unavailable`
    /// (detail `core << 48 | oldest`) for a position older than the retained
    /// log or past the durable end, `internal` if a log directory cannot be
    /// read.
    pub fn start(
        data_dir: &Path,
        durable: Arc<DurablePoints>,
        start: &ArchivedStreamStart,
        filter: Filter,
    ) -> Result<Subscription, Rejection> {
        let cores = durable.cores();
        let mut positions = Vec::with_capacity(cores);
        for core in 0..cores {
            let oldest = cursor::oldest(data_dir, core).map_err(|e| {
                tracing::error!(error = %e, "cannot start a subscription");
                Rejection::new(Status::Internal, 0)
            })?;
            let end = durable.get(core);
            let position = match start {
                ArchivedStreamStart::Beginning => oldest,
                ArchivedStreamStart::Now => end,
                ArchivedStreamStart::Positions(wanted) => {
                    if wanted.len() != cores {
                        return Err(Rejection::new(Status::InvalidRequest, 1));
                    }
                    wanted[core].to_native()
                }
            };
            if position < oldest || position > end {
                return Err(Rejection::new(Status::PositionUnavailable, (core as u64) << 48 | oldest));
            }
            positions.push(position);
        }
        let cursors = positions.iter().map(|&next| CoreCursor::new(next)).collect();
        Ok(Subscription { cursors, filter, durable, first_core: 0 })
    }

    /// For each core, the offset of the next event this subscription reads.
    #[must_use]
    pub fn positions(&self) -> Vec<u64> {
        self.cursors.iter().map(|c| c.next).collect()
    }

    /// Durable records not yet read, over every core.
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.cursors.iter().enumerate().map(|(core, c)| self.durable.get(core).saturating_sub(c.next)).sum()
    }

    /// Takes durable events, in log order per core, from `source`'s
    /// blocks, and appends those that pass the filter to `out` until it
    /// holds `max`, `max_scan` events were looked at (so a filter that
    /// matches nothing still returns to the caller) or `max_reads` blocks
    /// were asked for. Returns `(events looked at, blocks asked for)`: both
    /// below their bounds with `out` not full means the subscription is
    /// caught up.
    ///
    /// # Errors
    /// A record that cannot be read; the events taken before stay in `out`
    /// and the positions after them.
    pub async fn fill<S: BlockSource>(
        &mut self,
        source: &S,
        out: &mut Vec<StreamEvent>,
        max: usize,
        max_scan: usize,
        max_reads: usize,
    ) -> Result<(usize, usize), CursorError> {
        let cores = self.cursors.len();
        let (mut scanned, mut reads) = (0, 0);
        // Each core in turn gets a fair share of the frame, then whoever
        // still has events fills the rest.
        let share = max.div_ceil(cores.max(1)).max(1);
        'rounds: for round in 0..2 {
            for i in 0..cores {
                let core = (self.first_core + i) % cores;
                let durable = self.durable.get(core);
                let limit = if round == 0 { (out.len() + share).min(max) } else { max };
                let cursor = &mut self.cursors[core];
                while out.len() < limit && scanned < max_scan && cursor.next < durable {
                    let block = match cursor.block.as_ref().filter(|b| b.holds(cursor.next)) {
                        Some(block) => Rc::clone(block),
                        None => {
                            if reads >= max_reads {
                                break 'rounds;
                            }
                            reads += 1;
                            let block = source.block(core, cursor.next, cursor.at, durable).await?;
                            if !block.holds(cursor.next) {
                                // Only records before `next` were read: go on from their end.
                                cursor.at = Some(block.end);
                                cursor.block = None;
                                continue;
                            }
                            cursor.block = Some(Rc::clone(&block));
                            block
                        }
                    };
                    let from = block.index_of(cursor.next);
                    let mut whole = true;
                    for event in &block.events[from..] {
                        if out.len() >= limit || scanned >= max_scan {
                            whole = false;
                            break;
                        }
                        scanned += 1;
                        cursor.next = event.offset + 1;
                        if self.filter.matches(event) {
                            out.push(*event);
                        }
                    }
                    if whole {
                        // Past the last event, and past any control record after it.
                        cursor.next = block.end_sequence();
                        cursor.at = Some(block.end);
                        cursor.block = None;
                    }
                }
            }
        }
        self.first_core = (self.first_core + 1) % cores.max(1);
        Ok((scanned, reads))
    }
}

/// Where each subscription of one core's connections is, for the
/// subscriber-lag metric: read at scrape time, so a stalled subscriber's lag
/// keeps growing there while it does not read.
#[derive(Debug, Default)]
pub struct SubscriberPositions {
    slots: Vec<Option<Vec<u64>>>,
    free: Vec<usize>,
    durable: Option<Arc<DurablePoints>>,
}

impl SubscriberPositions {
    /// Positions measured against `durable`.
    #[must_use]
    pub fn new(durable: Arc<DurablePoints>) -> SubscriberPositions {
        SubscriberPositions { slots: Vec::new(), free: Vec::new(), durable: Some(durable) }
    }

    /// Registers a subscription at `positions`; returns its slot.
    pub fn add(&mut self, positions: Vec<u64>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(positions);
                slot
            }
            None => {
                self.slots.push(Some(positions));
                self.slots.len() - 1
            }
        }
    }

    /// Subscription `slot` moved to `positions`.
    pub fn set(&mut self, slot: usize, positions: &[u64]) {
        if let Some(Some(p)) = self.slots.get_mut(slot) {
            p.clear();
            p.extend_from_slice(positions);
        }
    }

    /// Subscription `slot` ended.
    pub fn remove(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.take().is_some() {
                self.free.push(slot);
            }
        }
    }

    /// Durable records the subscriptions have not read, summed.
    #[must_use]
    pub fn lag(&self) -> u64 {
        let Some(durable) = &self.durable else { return 0 };
        self.slots.iter().flatten().flat_map(|p| p.iter().enumerate().map(|(core, &at)| durable.get(core).saturating_sub(at))).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_sums_what_every_subscription_has_not_read() {
        let durable = Arc::new(DurablePoints::new(&[10, 20]));
        let mut p = SubscriberPositions::new(Arc::clone(&durable));
        let a = p.add(vec![10, 20]);
        let b = p.add(vec![4, 5]);
        assert_eq!(p.lag(), 6 + 15);
        durable.publish(0, 12);
        assert_eq!(p.lag(), 2 + 8 + 15);
        p.set(b, &[12, 20]);
        p.remove(a);
        assert_eq!(p.lag(), 0);
        assert_eq!(p.add(vec![0, 0]), a, "a free slot is reused");
    }
}
