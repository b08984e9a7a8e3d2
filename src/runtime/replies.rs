//! The replies a connection has encoded but not yet written, and the rule
//! that lets them go: in frame order, a batch only once the log is durable
//! up to the sequence it waits for. No I/O: the connection writes what
//! [`ReplyQueue::release`] allows; the simulator (`crate::sim`) runs the
//! same rule, so a reply that leaves before its flush fails its checks.

use std::collections::VecDeque;

/// The replies one read's frames produced: the bytes of the connection's
/// output buffer up to `end`, which may leave once every record below
/// `wait` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<T> {
    /// End of these replies in the output buffer.
    pub end: usize,
    /// Log sequence they wait for; 0 waits for nothing.
    pub wait: u64,
    /// Request frames they answer (for the in-flight bound).
    pub frames: usize,
    /// The caller's stamp (the connection: when the read returned).
    pub stamp: T,
}

/// Unwritten replies, oldest first.
#[derive(Debug)]
pub struct ReplyQueue<T> {
    batches: VecDeque<Batch<T>>,
}

impl<T> Default for ReplyQueue<T> {
    fn default() -> Self {
        ReplyQueue { batches: VecDeque::new() }
    }
}

impl<T: Copy> ReplyQueue<T> {
    /// Queues the replies the output buffer holds past the last batch
    /// (`out_len`: its length now), if any.
    pub fn push(&mut self, out_len: usize, wait: u64, frames: usize, stamp: T) {
        if out_len > self.batches.back().map_or(0, |b| b.end) {
            self.batches.push_back(Batch { end: out_len, wait, frames, stamp });
        }
    }

    /// Whether nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Request frames answered but not yet written.
    #[must_use]
    pub fn frames(&self) -> usize {
        self.batches.iter().map(|b| b.frames).sum()
    }

    /// The sequence the oldest batch waits for.
    #[must_use]
    pub fn oldest_wait(&self) -> Option<u64> {
        self.batches.front().map(|b| b.wait)
    }

    /// The sequence every batch may leave at.
    #[must_use]
    pub fn last_wait(&self) -> Option<u64> {
        self.batches.iter().map(|b| b.wait).max()
    }

    /// The sequences the batches wait for, oldest first.
    pub fn waits(&self) -> impl Iterator<Item = u64> + '_ {
        self.batches.iter().map(|b| b.wait)
    }

    /// Takes the oldest batches that may leave with the log durable below
    /// `durable` (each handed to `each`), and returns how many bytes of the
    /// output buffer they end at (0: none may leave). The caller writes
    /// those bytes, then calls [`ReplyQueue::written`].
    pub fn release(&mut self, durable: u64, mut each: impl FnMut(&Batch<T>)) -> usize {
        let mut upto = 0;
        while let Some(b) = self.batches.front() {
            if b.wait > durable {
                break;
            }
            upto = b.end;
            each(b);
            self.batches.pop_front();
        }
        upto
    }

    /// The first `upto` bytes of the output buffer were written and removed.
    pub fn written(&mut self, upto: usize) {
        for b in &mut self.batches {
            b.end -= upto;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_leave_in_order_once_durable() {
        let mut q = ReplyQueue::default();
        q.push(10, 5, 1, ());
        q.push(10, 9, 1, ()); // nothing new in the buffer: not queued
        q.push(25, 0, 2, ()); // a read behind a write waits for it
        q.push(40, 7, 1, ());
        assert_eq!((q.frames(), q.oldest_wait(), q.last_wait()), (4, Some(5), Some(7)));
        assert_eq!(q.release(4, |_| {}), 0, "nothing is durable far enough");
        let mut frames = 0;
        assert_eq!(q.release(5, |b| frames += b.frames), 25);
        assert_eq!(frames, 3);
        q.written(25);
        assert_eq!(q.release(7, |_| {}), 15);
        q.written(15);
        assert!(q.is_empty());
    }
}
