//! Cross-core messages: the [`CoreMsg`]s a frame sends to the cores that
//! own some of its requests (one message per destination and kind per
//! frame, not per request; `runtime::dispatch` decides them) travel over a
//! glommio channel mesh, each in an [`Envelope`] naming its sender and the
//! ticket of the frame that waits; the [`CoreAnswer`]s come back over a
//! second mesh.
//!
//! Two meshes, not one, so that no cycle of full channels can deadlock: a
//! core's request handler may block sending an answer, but answer channels
//! are drained by tasks that never block.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::channels::channel_mesh::{Receivers, Senders};

use super::commit::Commit;
use super::dispatch::{self, CoreAnswer, CoreMsg};
use super::metrics::snapshot;

/// Capacity of each core-to-core channel, in messages (each a whole batch).
pub const CHANNEL_CAPACITY: usize = 1024;

/// A message on the mesh: its sender, the ticket of what waits for the
/// answer on the sender, and the body.
#[derive(Debug)]
pub struct Envelope<T> {
    /// The sending core.
    pub from: usize,
    /// Names what waits on the sending core.
    pub ticket: u32,
    /// The message.
    pub body: T,
}

/// This core's ends of both meshes.
pub struct Mesh {
    /// Requests out.
    pub requests_tx: Senders<Envelope<CoreMsg>>,
    /// Requests in.
    pub requests_rx: Receivers<Envelope<CoreMsg>>,
    /// Answers out.
    pub replies_tx: Senders<Envelope<CoreAnswer>>,
    /// Answers in.
    pub replies_rx: Receivers<Envelope<CoreAnswer>>,
    /// What waits on this core for other cores' answers.
    pub tickets: Tickets,
}

impl Mesh {
    /// Sends `msg` to core `to`; its ticket, to [`Tickets::wait`] on, or
    /// `None` if it cannot be delivered.
    pub async fn send(&self, me: usize, to: usize, msg: CoreMsg) -> Option<u32> {
        let ticket = self.tickets.register();
        if self.requests_tx.send_to(to, Envelope { from: me, ticket, body: msg }).await.is_err() {
            self.tickets.cancel(ticket);
            return None;
        }
        Some(ticket)
    }
}

#[derive(Default)]
struct Slot {
    in_use: bool,
    done: Option<CoreAnswer>,
    waker: Option<Waker>,
}

/// What waits on this core for other cores' answers, by ticket.
#[derive(Default)]
pub struct Tickets {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl Tickets {
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

    /// Hand `done` to what holds `ticket`.
    pub fn complete(&self, ticket: u32, done: CoreAnswer) {
        let waker = {
            let mut slots = self.slots.borrow_mut();
            match slots.get_mut(ticket as usize) {
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

/// The future of [`Tickets::wait`].
pub struct WaitDone<'a> {
    pending: &'a Tickets,
    ticket: u32,
}

impl Future for WaitDone<'_> {
    type Output = CoreAnswer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CoreAnswer> {
        let mut slots = self.pending.slots.borrow_mut();
        let Some(slot) = slots.get_mut(self.ticket as usize) else {
            return Poll::Ready(CoreAnswer::Lost);
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

/// Serve the messages core `peer` sends this one, until the mesh closes.
/// In sync mode the answer to a batch that changed state leaves once the
/// log covers it; a task per such batch waits, so this loop keeps applying
/// meanwhile (and its records join the same group commit).
pub async fn serve_forwarded(peer: usize, mesh: Rc<Mesh>, core: Rc<RefCell<super::core::Core>>, commit: Option<Rc<Commit>>) {
    while let Ok(Some(msg)) = mesh.requests_rx.recv_from(peer).await {
        let (body, wait) = {
            let mut core = core.borrow_mut();
            match dispatch::answer(&mut core, &msg.body) {
                Some(answered) => answered,
                None => (CoreAnswer::Metrics(Box::new(snapshot::take(&core, commit.as_deref(), mesh.tickets.in_use() as u64))), None),
            }
        };
        // The answer names this core as its sender and goes back to `peer`.
        let done = Envelope { from: mesh.requests_tx.peer_id(), ticket: msg.ticket, body };
        match (wait, &commit) {
            (Some(sequence), Some(commit)) => {
                let (mesh, commit) = (Rc::clone(&mesh), Rc::clone(commit));
                glommio::spawn_local(async move {
                    commit.durable(sequence).await;
                    let mut done = done;
                    if commit.unacknowledged(sequence) {
                        // A follower never acknowledged these changes (see
                        // `commit::ReplicaPoint`): answered `moved`, so the
                        // client asks the shard's leader again.
                        if let CoreAnswer::Applied(replies) = &mut done.body {
                            for reply in replies.iter_mut() {
                                *reply = orderd_protocol::Reply::rejected(orderd_protocol::Status::Moved, 0);
                            }
                        }
                    }
                    if mesh.replies_tx.send_to(peer, done).await.is_err() {
                        tracing::warn!(peer, "core {peer} stopped taking replies");
                    }
                })
                .detach();
            }
            _ => {
                if mesh.replies_tx.send_to(peer, done).await.is_err() {
                    tracing::warn!(peer, "core {peer} stopped taking replies");
                    break;
                }
            }
        }
    }
}

/// Hand the answers another core sends back to what waits for them.
pub async fn collect_replies(peer: usize, mesh: Rc<Mesh>) {
    while let Ok(Some(done)) = mesh.replies_rx.recv_from(peer).await {
        mesh.tickets.complete(done.ticket, done.body);
    }
}
