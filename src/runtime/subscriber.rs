//! The stream's side of a connection: a Subscribe request turns the
//! connection into a subscriber ([`start`]), and between replies it sends
//! the subscription's next frame of durable events ([`Subscribed::next_frame`]
//! fills it; the connection writes it).
//!
//! A subscription holds one of its core's `--max-subscriptions` places and
//! its position in the core's lag metric for as long as it lives
//! (its guard).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use orderd_protocol::codec::Encoder;
use orderd_protocol::message::{ArchivedSubscribe, ErrorFrame, StreamEvent, Subscribed as SubscribedReply};
use orderd_protocol::{Reply, Status};

use super::core::Core;
use super::stream_budget::StreamBudget;
use super::stream_reader::LogReader;
use super::StreamCtx;
use crate::stream::{Filter, Subscription};

/// Events a subscription may look at per frame, per event the frame can
/// hold (a filter that matches little still hands the core back).
const STREAM_SCAN_FACTOR: usize = 16;

/// Blocks a subscription may ask its core's reader for per frame (each a
/// chunk read and decoded at most once for all of the core's subscriptions).
const STREAM_READS_PER_FRAME: usize = 4;

/// A connection's subscription: the stream it sends and the frame it fills.
pub struct Subscribed {
    /// The correlation of the frame that held the Subscribe.
    correlation: u64,
    stream: Subscription,
    events: Vec<StreamEvent>,
    /// Releases the core's subscription count and position.
    guard: SubscriptionGuard,
}

/// Counts a subscription on its core, and keeps its position there for the
/// lag metric, for as long as it lives.
struct SubscriptionGuard {
    core: Rc<RefCell<Core>>,
    /// Its slot in the core's `subscribers`, once it started.
    slot: Option<usize>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let mut core = self.core.borrow_mut();
        core.counters.subscriptions = core.counters.subscriptions.saturating_sub(1);
        if let Some(slot) = self.slot {
            core.subscribers.remove(slot);
        }
    }
}

/// A Subscribe request of the frame `correlation`: the connection becomes a
/// subscriber (`slot` filled) unless it already is one or the core serves
/// `--max-subscriptions` (`too_many_subscriptions`), or the start position
/// is refused (the subscription's own rejection). Returns the reply.
pub fn start(
    slot: &mut Option<Subscribed>,
    request: &ArchivedSubscribe,
    correlation: u64,
    core: &Rc<RefCell<Core>>,
    streams: &StreamCtx,
) -> Reply {
    if slot.is_some() {
        return Reply::rejected(Status::TooManySubscriptions, 0);
    }
    let max = streams.max_subscriptions;
    {
        let mut core = core.borrow_mut();
        if core.counters.subscriptions >= max {
            return Reply::rejected(Status::TooManySubscriptions, u64::from(max));
        }
        core.counters.subscriptions += 1;
    }
    let mut guard = SubscriptionGuard { core: Rc::clone(core), slot: None };
    let filter = Filter { product: request.product.to_native(), kinds: request.kinds.to_native() };
    match Subscription::start(&streams.data_dir, Arc::clone(&streams.durable), &request.start, filter) {
        Ok(stream) => {
            let positions = stream.positions();
            guard.slot = Some(core.borrow_mut().subscribers.add(positions.clone()));
            tracing::debug!(?positions, product = filter.product, kinds = filter.kinds, "subscribed");
            let events = Vec::with_capacity(streams.max_events_per_frame);
            *slot = Some(Subscribed { correlation, stream, events, guard });
            Reply::Subscribed(SubscribedReply { positions })
        }
        Err(rejection) => Reply::Rejected(rejection),
    }
}

/// What [`Subscribed::next_frame`] put into the output buffer.
pub enum NextFrame {
    /// Nothing to send now; `more`: more events may be ready at once.
    Nothing {
        /// Whether to look again without waiting.
        more: bool,
    },
    /// An Events frame; `more` as above.
    Events {
        /// Whether to look again without waiting.
        more: bool,
    },
    /// The log could not be read: the events read so far and an `internal`
    /// Error frame (if they could be encoded); then close the connection.
    Failed(String),
}

impl Subscribed {
    /// Reads the subscription's next events (at most `max` of them, at most
    /// `max` × 16 looked at, at most 4 blocks asked of `reader`) and
    /// encodes them as one Events frame into `out`.
    pub async fn next_frame(
        &mut self,
        core: &RefCell<Core>,
        reader: &LogReader,
        budget: &StreamBudget,
        max: usize,
        encoder: &mut Encoder,
        out: &mut Vec<u8>,
    ) -> NextFrame {
        self.events.clear();
        let max_scan = max * STREAM_SCAN_FACTOR;
        let (scanned, reads) = match self.stream.fill(reader, &mut self.events, max, max_scan, STREAM_READS_PER_FRAME).await {
            Ok(done) if done.1 > 0 => {
                // Blocks were awaited: the gate may have closed meanwhile
                // (every subscription waiting on a shared read passed it
                // together); the encoding and the send wait for it too.
                budget.admit().await;
                done
            }
            Ok(done) => done,
            Err(e) => {
                let error = match e {
                    // Retention deleted the segment it was about to read:
                    // the subscriber fell behind the stream's history.
                    crate::stream::cursor::CursorError::Missing { core, oldest, .. } => {
                        tracing::warn!(error = %e, "a subscriber fell behind the log's retention; answering position_unavailable");
                        ErrorFrame { code: Status::PositionUnavailable.code(), detail: (core as u64) << 48 | oldest }
                    }
                    _ => {
                        tracing::error!(error = %e, "the order stream cannot read the log; closing the subscriber's connection");
                        ErrorFrame { code: Status::Internal.code(), detail: 0 }
                    }
                };
                let mark = out.len();
                let events = self.events.is_empty() || encoder.events(out, self.correlation, &self.events).is_ok();
                if !events || encoder.error(out, self.correlation, &error).is_err() {
                    out.truncate(mark);
                }
                return NextFrame::Failed(e.to_string());
            }
        };
        let more = self.events.len() >= max || scanned >= max_scan || reads >= STREAM_READS_PER_FRAME;
        if scanned > 0 {
            if let Some(slot) = self.guard.slot {
                core.borrow_mut().subscribers.set(slot, &self.stream.positions());
            }
        }
        if self.events.is_empty() {
            return NextFrame::Nothing { more };
        }
        let mark = out.len();
        if let Err(e) = encoder.events(out, self.correlation, &self.events) {
            tracing::error!(error = %e, "cannot encode stream events");
            out.truncate(mark);
            return NextFrame::Failed(e.to_string());
        }
        NextFrame::Events { more }
    }
}
