//! Cross-core messages: requests for another core's shards travel over a
//! glommio channel mesh, batched per destination core per frame (one
//! message per destination, not per request); the replies come back over a
//! second mesh.
//!
//! Two meshes, not one, so that no cycle of full channels can deadlock: a
//! core's request handler may block sending a reply, but reply channels are
//! drained by tasks that never block.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::channels::channel_mesh::{Receivers, Senders};
use orderd_protocol::message::{Aggregates, CoreStats};
use orderd_protocol::Reply;

use super::commit::Commit;
use super::metrics::snapshot::{self, CoreSnapshot};
use crate::engine::Command;

/// Capacity of each core-to-core channel, in messages (each a whole batch).
pub const CHANNEL_CAPACITY: usize = 1024;

/// A frame's requests for one other core.
#[derive(Debug)]
pub struct ForwardBatch {
    /// The sending core.
    pub from: usize,
    /// Names the waiting frame on the sending core.
    pub ticket: u32,
    /// The sender's clock for this frame.
    pub now_ms: u64,
    /// `(shard, command)` for each request, in frame order.
    pub commands: Vec<(u32, Command)>,
    /// Whether the frame also asks for this core's stats.
    pub want_stats: bool,
    /// Whether the frame also asks for this core's part of the live
    /// aggregates, with this many best sellers.
    pub want_aggregates: Option<u32>,
    /// Whether a metrics scrape asks for this core's snapshot.
    pub want_metrics: bool,
}

/// The answers to a [`ForwardBatch`].
#[derive(Debug)]
pub struct ForwardDone {
    /// The batch's ticket.
    pub ticket: u32,
    /// One reply per command, in order.
    pub replies: Vec<Reply>,
    /// The core's stats, if asked for.
    pub stats: Option<CoreStats>,
    /// The core's part of the aggregates, if asked for.
    pub aggregates: Option<Aggregates>,
    /// The core's metrics snapshot, if asked for.
    pub metrics: Option<Box<CoreSnapshot>>,
}

/// This core's ends of both meshes.
pub struct Mesh {
    /// Requests out.
    pub requests_tx: Senders<ForwardBatch>,
    /// Requests in.
    pub requests_rx: Receivers<ForwardBatch>,
    /// Replies out.
    pub replies_tx: Senders<ForwardDone>,
    /// Replies in.
    pub replies_rx: Receivers<ForwardDone>,
    /// Frames waiting for replies from other cores.
    pub pending: Pending,
}

#[derive(Default)]
struct Slot {
    in_use: bool,
    done: Option<ForwardDone>,
    waker: Option<Waker>,
}

/// The frames of this core waiting for other cores, by ticket.
#[derive(Default)]
pub struct Pending {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl Pending {
    /// A fresh ticket.
    pub fn register(&self) -> u32 {
        let mut slots = self.slots.borrow_mut();
        let ticket = match self.free.borrow_mut().pop() {
            Some(t) => t,
            None => {
                slots.push(Slot::default());
                (slots.len() - 1) as u32
            }
        };
        if let Some(slot) = slots.get_mut(ticket as usize) {
            *slot = Slot { in_use: true, done: None, waker: None };
        }
        ticket
    }

    /// Hand the answer to the frame holding `done.ticket`.
    pub fn complete(&self, done: ForwardDone) {
        let waker = {
            let mut slots = self.slots.borrow_mut();
            match slots.get_mut(done.ticket as usize) {
                Some(slot) if slot.in_use => {
                    let waker = slot.waker.take();
                    slot.done = Some(done);
                    waker
                }
                _ => None,
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Wait for the answer to `ticket`, then free it.
    pub fn wait(&self, ticket: u32) -> WaitDone<'_> {
        WaitDone { pending: self, ticket }
    }

    /// Tickets in use: frames waiting for another core (a metrics gauge).
    pub fn in_use(&self) -> usize {
        self.slots.borrow().len().saturating_sub(self.free.borrow().len())
    }

    /// Give up on `ticket` (its batch could not be sent).
    pub fn cancel(&self, ticket: u32) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(ticket as usize) {
            *slot = Slot::default();
            self.free.borrow_mut().push(ticket);
        }
    }
}

/// The future of [`Pending::wait`].
pub struct WaitDone<'a> {
    pending: &'a Pending,
    ticket: u32,
}

impl Future for WaitDone<'_> {
    type Output = ForwardDone;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ForwardDone> {
        let mut slots = self.pending.slots.borrow_mut();
        let Some(slot) = slots.get_mut(self.ticket as usize) else {
            return Poll::Ready(ForwardDone { ticket: self.ticket, replies: Vec::new(), stats: None, aggregates: None, metrics: None });
        };
        match slot.done.take() {
            Some(done) => {
                *slot = Slot::default();
                drop(slots);
                self.pending.free.borrow_mut().push(self.ticket);
                Poll::Ready(done)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Serve the batches another core forwards to this one, until the mesh
/// closes. In sync mode the answer to a batch that changed state leaves once
/// the log covers it; a task per such batch waits, so this loop keeps
/// applying meanwhile (and its records join the same group commit).
pub async fn serve_forwarded(peer: usize, mesh: Rc<Mesh>, core: Rc<RefCell<super::core::Core>>, commit: Option<Rc<Commit>>) {
    while let Ok(Some(batch)) = mesh.requests_rx.recv_from(peer).await {
        let (done, wait) = {
            let mut core = core.borrow_mut();
            let mut wait = None;
            let replies = batch
                .commands
                .iter()
                .map(|(shard, cmd)| {
                    let (reply, w) = core.apply(*shard, cmd, batch.now_ms);
                    wait = wait.max(w);
                    reply
                })
                .collect();
            let stats = batch.want_stats.then(|| core.stats());
            let aggregates = batch.want_aggregates.map(|top| core.aggregates(batch.now_ms, top));
            let metrics = batch.want_metrics.then(|| Box::new(snapshot::take(&core, commit.as_deref(), Some(&mesh.pending))));
            (ForwardDone { ticket: batch.ticket, replies, stats, aggregates, metrics }, wait)
        };
        match (wait, &commit) {
            (Some(sequence), Some(commit)) => {
                let (mesh, commit) = (Rc::clone(&mesh), Rc::clone(commit));
                glommio::spawn_local(async move {
                    commit.durable(sequence).await;
                    if mesh.replies_tx.send_to(batch.from, done).await.is_err() {
                        tracing::warn!(peer, "core {peer} stopped taking replies");
                    }
                })
                .detach();
            }
            _ => {
                if mesh.replies_tx.send_to(batch.from, done).await.is_err() {
                    tracing::warn!(peer, "core {peer} stopped taking replies");
                    break;
                }
            }
        }
    }
}

/// Hand the replies another core sends back to the waiting frames.
pub async fn collect_replies(peer: usize, mesh: Rc<Mesh>) {
    while let Ok(Some(done)) = mesh.replies_rx.recv_from(peer).await {
        mesh.pending.complete(done);
    }
}
