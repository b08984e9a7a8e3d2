//! Replication: every shard on more than one node (`cluster init
//! --replicas 2|3`).
//!
//! Each shard has a leader (its owner in the map) and in-sync followers
//! (the map's `followers`). The leader's core sends every event of its
//! shards to the follower copies as it logs it ([`Replication::push`], from
//! `Core::append_events`), batched per follower core, over one connection
//! per follower core that a task of the leader core keeps ([`link`]). The
//! follower's core checks that the batch comes from the shard's leader by
//! its own map (a deposed leader is refused: fencing), applies each event
//! to its copy in order of the shard's position (one already there is
//! skipped: a batch sent again after a broken connection), logs it as a
//! tail event (replayed at recovery, not streamed) and answers once its log
//! is durable ([`receive()`]).
//!
//! A state change is acknowledged once it is durable on the leader and on
//! every in-sync follower of its core's shards: the core's replication
//! point ([`Replication::point`], the oldest event some follower has not
//! acknowledged) caps the acknowledged point (`runtime::commit`). A shard
//! with fewer in-sync copies than it needs to survive the loss of any one
//! node (both of 2, two of 3: `ClusterMap::min_copies`), or whose in-sync
//! follower is on a node that is down or has been unreachable longer than
//! [`FOLLOWER_TIMEOUT_MS`], refuses state changes (`replica_unavailable`)
//! instead of acknowledging them with fewer copies than promised (the
//! seeder drops a dead follower from the map when enough copies remain, or
//! replaces it). Failover (a follower that becomes leader when its
//! leader's node lease lapses) is the membership thread's
//! (`runtime::membership`).

pub mod batch;
pub mod link;
pub mod receive;
pub mod seeder;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use crate::cluster::map::{ClusterMap, Owner};
use crate::engine::Event;

pub use receive::receive;

/// What a core's replication shares with its group commit (one thread).
#[derive(Debug)]
pub struct ReplicaPoint {
    /// Below this, every event sent to an in-sync follower is durable there
    /// (`u64::MAX`: nothing waits for a follower).
    pub point: Cell<u64>,
    /// Ranges `(from, to]` of reply waits never to be acknowledged: their
    /// changes went to a follower that left the in-sync set before it
    /// acknowledged them (this node stopped leading the shard, or the
    /// follower was replaced). Such a reply is not sent: its connection
    /// closes (a forwarded one is answered `moved`), and the client asks
    /// again with the same key.
    unacknowledged: RefCell<VecDeque<(u64, u64)>>,
}

/// Ranges of unacknowledged waits kept (the oldest go first: by then no
/// reply waits on them).
const UNACKNOWLEDGED_KEPT: usize = 256;

impl Default for ReplicaPoint {
    fn default() -> Self {
        ReplicaPoint { point: Cell::new(u64::MAX), unacknowledged: RefCell::default() }
    }
}

impl ReplicaPoint {
    /// Replies waiting for a sequence in `(from, to]` are never acknowledged.
    pub fn never(&self, from: u64, to: u64) {
        let mut ranges = self.unacknowledged.borrow_mut();
        if ranges.len() == UNACKNOWLEDGED_KEPT {
            ranges.pop_front();
        }
        ranges.push_back((from, to));
    }

    /// Whether a reply waiting for `wait` must never be acknowledged.
    #[must_use]
    pub fn unacknowledged(&self, wait: u64) -> bool {
        self.unacknowledged.borrow().iter().any(|&(from, to)| from < wait && wait <= to)
    }
}

/// Most bytes of events waiting for one follower core; past it the follower
/// is too far behind to catch up from memory (it needs a new copy).
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// A follower unreachable this long makes its shards refuse state changes
/// (`replica_unavailable`) rather than have clients wait.
pub const FOLLOWER_TIMEOUT_MS: u64 = 1_000;

/// The detail of `replica_unavailable`: retry after this many ms.
pub const RETRY_AFTER_MS: u64 = 200;

/// A new copy that the map does not name this long after its `Seed` was
/// abandoned: its link is dropped.
pub const SEED_LIMIT_MS: u64 = 5 * 60 * 1000;

/// Events for one follower core, cut into batches of at most
/// `MAX_REPLICATE_BYTES`.
#[derive(Debug)]
pub struct Batch {
    /// The log sequence of its first event.
    pub first: u64,
    /// One past the log sequence of its last event.
    pub through: u64,
    /// The events (`batch::push`).
    pub bytes: Vec<u8>,
    /// How many.
    pub events: u64,
    /// It went out at least once: it is never extended (the answer to it
    /// must cover exactly what it holds).
    pub sent: bool,
}

/// The link of one leader core to one follower core.
#[derive(Debug)]
pub struct Link {
    /// The follower core.
    pub dest: Owner,
    /// Batches not yet acknowledged, oldest first: the front one is sent
    /// (again after a broken connection) until the follower answers.
    pub batches: VecDeque<Batch>,
    /// Bytes in `batches`.
    pub bytes: usize,
    /// The link's task, waiting for events.
    pub waker: Option<Waker>,
    /// Since when (ms) the follower has been unreachable, if it is.
    pub down_since_ms: Option<u64>,
    /// Why this copy can no longer follow from memory, if it cannot.
    pub broken: Option<String>,
    /// No shard names this follower core any more: the task ends.
    pub retired: bool,
    /// The follower's node is not registered in etcd (its lease lapsed).
    pub gone: bool,
    /// A link made for a new copy of this shard (`Seed`): it carries that
    /// shard's events only, for as long as the copy is kept, so that they
    /// reach it in order from the bundle on.
    pub seed: Option<u32>,
    /// A new copy's events are kept, not sent, until it is installed
    /// (`Attach`).
    pub held: bool,
    /// The map names this follower core in-sync: what it has not
    /// acknowledged holds replies back.
    pub required: bool,
    /// When the link was made (ms): a new copy's link that the map does not
    /// name within [`SEED_LIMIT_MS`] is dropped.
    pub since_ms: u64,
    /// Events acknowledged by the follower, all told.
    pub acked_events: u64,
    /// When the oldest unacknowledged event was logged (ms), for the lag.
    pub oldest_ms: Option<u64>,
}

impl Link {
    fn new(dest: Owner, seed: Option<u32>, now_ms: u64) -> Link {
        Link {
            seed,
            held: seed.is_some(),
            required: false,
            since_ms: now_ms,
            dest,
            batches: VecDeque::new(),
            bytes: 0,
            waker: None,
            down_since_ms: None,
            broken: None,
            retired: false,
            gone: false,
            acked_events: 0,
            oldest_ms: None,
        }
    }

    /// Ends the link: its task stops, what it held is dropped.
    fn retire(&mut self) {
        self.retired = true;
        self.required = false;
        self.batches.clear();
        self.bytes = 0;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The oldest log sequence this follower has not acknowledged.
    #[must_use]
    pub fn oldest(&self) -> Option<u64> {
        self.batches.front().map(|b| b.first)
    }

    /// Whether this follower keeps its shards from taking state changes.
    #[must_use]
    pub fn failing(&self, now_ms: u64) -> bool {
        self.broken.is_some() || self.gone || self.down_since_ms.is_some_and(|t| now_ms.saturating_sub(t) > FOLLOWER_TIMEOUT_MS)
    }

    /// Events waiting to be acknowledged.
    #[must_use]
    pub fn lag_events(&self) -> u64 {
        self.batches.iter().map(|b| b.events).sum()
    }
}

/// One core's replication state: its links and which of its shards go
/// where.
#[derive(Debug)]
pub struct Replication {
    /// The links, by index (a retired one keeps its index).
    pub links: Vec<Link>,
    /// Per local shard: the links its events go to.
    targets: Vec<Vec<usize>>,
    /// Per local shard: it has fewer in-sync copies than the cluster keeps.
    short: Vec<bool>,
    /// The map version `targets` follow.
    version: u64,
    /// Shared with `Commit`: the oldest sequence some follower has not
    /// acknowledged (`u64::MAX`: none), and the waits never to acknowledge.
    point: Rc<ReplicaPoint>,
    /// Links whose task is not started yet.
    pub unstarted: Vec<usize>,
    /// One event, encoded, for every link it goes to.
    scratch: Vec<u8>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            links: Vec::new(),
            targets: Vec::new(),
            short: Vec::new(),
            version: 0,
            point: Rc::new(ReplicaPoint::default()),
            unstarted: Vec::new(),
            scratch: Vec::with_capacity(128),
        }
    }
}

impl Replication {
    /// Shares `point` with the core's `Commit`.
    pub fn set_point(&mut self, point: Rc<ReplicaPoint>) {
        self.point = point;
        self.recompute();
    }

    /// The map version the targets follow.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Follows `map` for core `index` of `cores` of node `node`: each
    /// local shard this node leads sends its events to its in-sync
    /// followers (a copy made by `Seed` on its own link), and to the copies
    /// being made for it; links nothing names retire. Returns whether it
    /// changed.
    pub fn follow(&mut self, map: &ClusterMap, node: &str, index: usize, cores: usize, local_shards: usize, now_ms: u64) -> bool {
        if map.version <= self.version {
            return false;
        }
        self.version = map.version;
        self.targets = vec![Vec::new(); local_shards];
        self.short = vec![false; local_shards];
        let mut used = vec![false; self.links.len()];
        let was_required: Vec<bool> = self.links.iter().map(|l| l.required).collect();
        for link in &mut self.links {
            link.required = false;
        }
        let leads = |shard: u32| map.owners.get(shard as usize).and_then(Option::as_ref).is_some_and(|o| o.node == node);
        for local in 0..local_shards {
            let shard = (index + local * cores) as u32;
            if !leads(shard) || map.replicas <= 1 {
                continue;
            }
            let followers = map.followers_of(shard);
            self.short[local] = followers.len() + 1 < map.min_copies();
            for dest in followers {
                let live = |l: &Link, seed: Option<u32>| !l.retired && l.broken.is_none() && &l.dest == dest && l.seed == seed;
                let found = self.links.iter().position(|l| live(l, Some(shard))).or_else(|| self.links.iter().position(|l| live(l, None)));
                let at = found.unwrap_or_else(|| {
                    self.links.push(Link::new(dest.clone(), None, now_ms));
                    used.push(false);
                    self.unstarted.push(self.links.len() - 1);
                    self.links.len() - 1
                });
                used[at] = true;
                self.links[at].required = true;
                self.links[at].held = false;
                self.targets[local].push(at);
            }
        }
        for (at, link) in self.links.iter_mut().enumerate() {
            if used[at] || link.retired {
                continue;
            }
            // A copy being made for a shard this core still leads keeps
            // taking its events.
            if let Some(shard) = link.seed.filter(|&s| leads(s) && s as usize % cores == index) {
                if now_ms.saturating_sub(link.since_ms) < SEED_LIMIT_MS && link.broken.is_none() {
                    self.targets[shard as usize / cores].push(at);
                    continue;
                }
            }
            // No longer an in-sync follower of any shard here (the map
            // dropped it, or this node leads no longer): what it did not
            // acknowledge no longer holds replies back, and the replies
            // waiting for it are never acknowledged.
            let required = was_required.get(at).copied().unwrap_or(false);
            if let (true, Some(from), Some(to)) = (required, link.oldest(), link.batches.back().map(|b| b.through)) {
                self.point.never(from, to);
            }
            link.retire();
        }
        self.recompute();
        true
    }

    /// Starts a new copy of `shard` (local shard `local`) on follower core
    /// `dest`: its events from now on are kept for it, held until
    /// [`Replication::attach`]. A copy being made there before is dropped.
    pub fn start_seed(&mut self, local: usize, shard: u32, dest: Owner, now_ms: u64) {
        for link in self.links.iter_mut().filter(|l| !l.retired && l.seed == Some(shard) && l.dest == dest) {
            link.retire();
        }
        self.links.push(Link::new(dest, Some(shard), now_ms));
        let at = self.links.len() - 1;
        self.unstarted.push(at);
        if let Some(targets) = self.targets.get_mut(local) {
            targets.retain(|&t| !self.links[t].retired);
            targets.push(at);
        }
        self.recompute();
    }

    /// The copy of `shard` on `dest` is installed: its link sends what it
    /// kept. Returns the events it has not acknowledged yet, or `None` if
    /// no such copy is being made (or its link broke).
    pub fn attach(&mut self, shard: u32, dest: &Owner) -> Option<u64> {
        let link = self.links.iter_mut().find(|l| !l.retired && l.seed == Some(shard) && &l.dest == dest && l.broken.is_none())?;
        link.held = false;
        if let Some(w) = link.waker.take() {
            w.wake();
        }
        Some(link.lag_events())
    }

    /// Whether local shard `local` must refuse state changes now: fewer
    /// in-sync copies than the cluster keeps, or one of them failing.
    #[must_use]
    pub fn refuses(&self, local: usize, now_ms: u64) -> bool {
        self.short.get(local).copied().unwrap_or(false)
            || self.targets.get(local).is_some_and(|t| t.iter().any(|&l| self.links[l].required && self.links[l].failing(now_ms)))
    }

    /// Whether local shard `local`'s events go to followers.
    #[must_use]
    pub fn replicates(&self, local: usize) -> bool {
        self.targets.get(local).is_some_and(|t| !t.is_empty())
    }

    /// Queues `event` of `shard` (local shard `local`), at position
    /// `position` of the shard and sequence `sequence` of the log, for
    /// each follower of the shard.
    pub fn push(&mut self, local: usize, shard: u32, position: u64, sequence: u64, event: &Event, now_ms: u64) {
        let Some(targets) = self.targets.get(local) else { return };
        if targets.is_empty() {
            return;
        }
        self.scratch.clear();
        batch::push(&mut self.scratch, shard, position, event);
        let max = orderd_protocol::limits::MAX_REPLICATE_BYTES;
        for &at in targets {
            let link = &mut self.links[at];
            if link.broken.is_some() {
                continue;
            }
            if link.bytes + self.scratch.len() > MAX_PENDING_BYTES {
                tracing::error!(follower = %link.dest, "a follower fell more than 64 MiB of events behind: its copy must be made again");
                link.broken = Some("fell too far behind".into());
                continue;
            }
            match link.batches.back_mut() {
                Some(b) if !b.sent && b.bytes.len() + self.scratch.len() <= max => {
                    b.bytes.extend_from_slice(&self.scratch);
                    b.through = sequence + 1;
                    b.events += 1;
                }
                _ => link.batches.push_back(Batch {
                    first: sequence,
                    through: sequence + 1,
                    bytes: self.scratch.clone(),
                    events: 1,
                    sent: false,
                }),
            }
            link.bytes += self.scratch.len();
            link.oldest_ms.get_or_insert(now_ms);
            if let Some(w) = link.waker.take() {
                w.wake();
            }
        }
        if self.point.point.get() > sequence {
            self.recompute();
        }
    }

    /// The follower of link `at` acknowledged its oldest batch.
    pub fn acked(&mut self, at: usize, now_ms: u64) {
        let Some(link) = self.links.get_mut(at) else { return };
        if let Some(b) = link.batches.pop_front() {
            link.bytes -= b.bytes.len();
            link.acked_events += b.events;
        }
        link.down_since_ms = None;
        link.oldest_ms = (!link.batches.is_empty()).then_some(now_ms);
        self.recompute();
    }

    /// Lowers or raises the shared point to the oldest unacknowledged event
    /// of any live link.
    fn recompute(&self) {
        let oldest = self.links.iter().filter(|l| l.required && !l.retired).filter_map(Link::oldest).min();
        self.point.point.set(oldest.unwrap_or(u64::MAX));
    }

    /// The replication point (see the field).
    #[must_use]
    pub fn point(&self) -> u64 {
        self.point.point.get()
    }

    /// The in-sync follower cores this core sends to (metrics).
    #[must_use]
    pub fn in_sync(&self) -> u64 {
        self.links.iter().filter(|l| l.required && !l.retired).count() as u64
    }

    /// The most events one in-sync follower has not acknowledged (metrics).
    #[must_use]
    pub fn lag_events(&self) -> u64 {
        self.links.iter().filter(|l| l.required && !l.retired).map(Link::lag_events).max().unwrap_or(0)
    }

    /// How long the oldest event an in-sync follower has not acknowledged
    /// has waited, ms (metrics).
    #[must_use]
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        self.links
            .iter()
            .filter(|l| l.required && !l.retired)
            .filter_map(|l| l.oldest_ms)
            .map(|t| now_ms.saturating_sub(t))
            .max()
            .unwrap_or(0)
    }

    /// Events the followers acknowledged, all told (metrics).
    #[must_use]
    pub fn acked_events(&self) -> u64 {
        self.links.iter().map(|l| l.acked_events).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OrderFacts;

    fn map(version: u64, leader: &str, followers: &[&str], replicas: u8) -> ClusterMap {
        let mut map = ClusterMap::with_replicas("t", 2, replicas).unwrap();
        map.version = version;
        for s in 0..2 {
            map.owners[s] = Some(Owner { node: leader.into(), core: 0 });
            map.followers[s] = followers.iter().map(|f| Owner { node: (*f).into(), core: 0 }).collect();
            map.epochs[s] = version;
        }
        map
    }

    fn event() -> Event {
        Event::OrderPaid { time_ms: 1, order_id: 1, facts: OrderFacts { user: 1, product: 1, unit_price_cents: 1, qty: 1 } }
    }

    #[test]
    fn a_reply_waits_for_its_followers_and_is_never_acknowledged_once_the_node_loses_the_shard() {
        let mut r = Replication::default();
        let shared = Rc::new(ReplicaPoint::default());
        r.set_point(Rc::clone(&shared));
        assert!(r.follow(&map(2, "a", &["b"], 2), "a", 0, 1, 2, 0));
        assert!(!r.refuses(0, 0) && r.replicates(0));
        r.push(0, 0, 1, 10, &event(), 0);
        r.push(1, 1, 1, 11, &event(), 0);
        assert_eq!(shared.point.get(), 10, "the oldest event the follower has not acknowledged");
        // The follower acknowledges the batch: nothing waits any more.
        r.links[0].batches[0].sent = true;
        r.acked(0, 5);
        assert_eq!(shared.point.get(), u64::MAX);
        // Another change, then the map makes another node the leader (a
        // failover while this node was paused): the link retires and its
        // change is never acknowledged, though nothing holds the point.
        r.push(0, 0, 2, 12, &event(), 0);
        assert_eq!(shared.point.get(), 12);
        assert!(r.follow(&map(3, "b", &[], 2), "a", 0, 1, 2, 0));
        assert_eq!(shared.point.get(), u64::MAX);
        assert!(shared.unacknowledged(13), "the reply that waited for sequence 13");
        assert!(!shared.unacknowledged(12) && !shared.unacknowledged(14), "replies before and after");
        assert!(!r.replicates(0));
    }

    #[test]
    fn a_shard_short_of_copies_or_with_a_follower_down_refuses_changes() {
        let mut r = Replication::default();
        // Two copies kept, no follower: refused. Three kept, one follower:
        // two copies, a majority: taken.
        r.follow(&map(2, "a", &[], 2), "a", 0, 1, 2, 0);
        assert!(r.refuses(0, 0));
        r.follow(&map(3, "a", &["b"], 3), "a", 0, 1, 2, 0);
        assert!(!r.refuses(0, 0));
        // The follower's node is down, or unreachable for over a second.
        r.links[0].gone = true;
        assert!(r.refuses(0, 0));
        r.links[0].gone = false;
        r.links[0].down_since_ms = Some(1_000);
        assert!(!r.refuses(0, 1_500) && r.refuses(0, 2_001));
    }

    #[test]
    fn a_new_copy_takes_its_shards_events_held_and_does_not_hold_replies_back() {
        let mut r = Replication::default();
        let shared = Rc::new(ReplicaPoint::default());
        r.set_point(Rc::clone(&shared));
        r.follow(&map(2, "a", &[], 2), "a", 0, 1, 2, 0);
        r.start_seed(0, 0, Owner { node: "c".into(), core: 0 }, 0);
        r.push(0, 0, 7, 20, &event(), 0);
        r.push(1, 1, 7, 21, &event(), 0);
        let seed = r.links.iter().position(|l| l.seed == Some(0)).unwrap();
        assert!(r.links[seed].held && r.links[seed].lag_events() == 1, "shard 0's event only, held");
        assert_eq!(shared.point.get(), u64::MAX, "a copy being made is not waited for");
        assert_eq!(r.attach(0, &Owner { node: "c".into(), core: 0 }), Some(1));
        assert!(!r.links[seed].held);
        // Once the map names it, its link is the shard's, and waited for.
        let mut named = map(3, "a", &[], 2);
        named.followers[0] = vec![Owner { node: "c".into(), core: 0 }];
        r.follow(&named, "a", 0, 1, 2, 0);
        assert!(r.links[seed].required);
        assert_eq!(shared.point.get(), 20);
        assert!(!r.refuses(0, 0) && r.refuses(1, 0), "shard 1 still has one copy");
    }
}
