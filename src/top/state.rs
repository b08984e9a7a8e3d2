//! [`TopState`]: everything the view shows, built from successive polls —
//! the latest aggregates and server facts, the connection status, and the
//! history of orders/s behind the sparkline (kept here, client-side, from
//! the differences between polls).

use std::collections::VecDeque;
use std::time::Duration;

use orderd_protocol::message::Aggregates;

/// How much orders/s history is kept, in time: about two minutes, so the
/// sparkline of a wide terminal fills up; a narrow one shows the latest part.
pub const HISTORY_SPAN: Duration = Duration::from_secs(120);

/// One successful poll: the aggregates and the server facts of the header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The merged aggregates.
    pub aggregates: Aggregates,
    /// The server's id (stable for a data directory).
    pub server_id: u64,
    /// Its cores.
    pub cores: usize,
    /// Open client connections, all cores.
    pub connections: u64,
}

/// The result of one poll: a snapshot, or why there is none, worded for
/// the operator.
pub type Update = Result<Snapshot, String>;

/// Whether the latest poll reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// No poll has finished yet.
    Connecting,
    /// The latest poll was answered.
    Connected,
    /// The latest `failures` polls failed, the last one with `error`.
    Failing {
        /// Why the last poll failed.
        error: String,
        /// Polls failed in a row.
        failures: u64,
    },
}

/// What the view shows.
#[derive(Debug, Clone)]
pub struct TopState {
    /// The address watched.
    pub server: String,
    /// Time between polls.
    pub interval: Duration,
    /// Best sellers asked for.
    pub top: u32,
    /// The latest successful poll (kept while the server is unreachable).
    pub latest: Option<Snapshot>,
    /// The connection status.
    pub link: Link,
    /// Orders/s between successive polls, oldest first.
    history: VecDeque<u64>,
    /// Most samples `history` keeps.
    history_len: usize,
    /// `(now_ms, orders_placed)` of the previous answer in an unbroken
    /// series of answers, the base of the next orders/s sample.
    previous: Option<(u64, u64)>,
}

impl TopState {
    /// The state before the first poll.
    #[must_use]
    pub fn new(server: impl Into<String>, interval: Duration, top: u32) -> TopState {
        let per_sample = interval.as_millis().max(1);
        let history_len = usize::try_from(HISTORY_SPAN.as_millis().div_ceil(per_sample)).unwrap_or(usize::MAX).clamp(2, 1200);
        TopState {
            server: server.into(),
            interval,
            top,
            latest: None,
            link: Link::Connecting,
            history: VecDeque::with_capacity(history_len),
            history_len,
            previous: None,
        }
    }

    /// Take in the result of a poll.
    pub fn apply(&mut self, update: Update) {
        match update {
            Ok(snapshot) => {
                let (now_ms, placed) = (snapshot.aggregates.now_ms, snapshot.aggregates.orders_placed);
                if let Some((then_ms, then_placed)) = self.previous {
                    // A server restart resets the count: no sample across it.
                    if now_ms > then_ms && placed >= then_placed {
                        let per_s = (placed - then_placed).saturating_mul(1000) / (now_ms - then_ms);
                        if self.history.len() == self.history_len {
                            self.history.pop_front();
                        }
                        self.history.push_back(per_s);
                    }
                }
                self.previous = Some((now_ms, placed));
                self.latest = Some(snapshot);
                self.link = Link::Connected;
            }
            Err(error) => {
                // After an outage the rate restarts from the next answer
                // instead of averaging over the gap.
                self.previous = None;
                let failures = match &self.link {
                    Link::Failing { failures, .. } => failures + 1,
                    Link::Connecting | Link::Connected => 1,
                };
                self.link = Link::Failing { error, failures };
            }
        }
    }

    /// Orders/s between successive polls, oldest first.
    pub fn history(&self) -> impl ExactSizeIterator<Item = u64> + DoubleEndedIterator + '_ {
        self.history.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now_ms: u64, orders_placed: u64) -> Update {
        Ok(Snapshot { aggregates: Aggregates { now_ms, orders_placed, ..Aggregates::default() }, ..Snapshot::default() })
    }

    #[test]
    fn the_rate_is_the_difference_between_answers_over_server_time() {
        let mut s = TopState::new("h:1", Duration::from_secs(1), 10);
        s.apply(at(10_000, 100));
        assert_eq!(s.history().count(), 0, "one answer is no rate yet");
        s.apply(at(11_000, 600));
        s.apply(at(13_000, 1600));
        assert_eq!(s.history().collect::<Vec<_>>(), [500, 500]);
        assert_eq!(s.link, Link::Connected);
    }

    #[test]
    fn failures_are_counted_and_the_last_data_kept() {
        let mut s = TopState::new("h:1", Duration::from_secs(1), 10);
        s.apply(at(10_000, 100));
        s.apply(Err("refused".into()));
        s.apply(Err("refused again".into()));
        assert_eq!(s.link, Link::Failing { error: "refused again".into(), failures: 2 });
        assert_eq!(s.latest.as_ref().map(|l| l.aggregates.orders_placed), Some(100));
        // after the outage, no sample spans the gap; a restarted server's
        // smaller count gives none either
        s.apply(at(20_000, 50));
        s.apply(at(21_000, 40));
        s.apply(at(22_000, 140));
        assert_eq!(s.history().collect::<Vec<_>>(), [100]);
    }

    #[test]
    fn history_keeps_about_two_minutes() {
        let mut s = TopState::new("h:1", Duration::from_millis(500), 10);
        for i in 0..500 {
            s.apply(at(1000 + i * 500, i));
        }
        assert_eq!(s.history().len(), 240);
    }
}
