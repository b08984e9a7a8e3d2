//! Loading a catalogue: upserts sent in pipelined batches, every reply
//! checked against what was sent.
//!
//! The products are cut into batches of [`BATCH`]; up to [`WINDOW`] batches
//! are in flight at once (the SDK splits each batch per owning core and
//! frame size), and the oldest is collected before the next is sent. On the
//! first refusal no further batch is sent, the ones in flight are collected
//! (so the count of loaded products is exact), and the command fails.
//! Upserts are idempotent, so running the command again after a failure is
//! always safe.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use orderd_protocol::client::{Client, Ticket};
use orderd_protocol::message::Rejection;
use orderd_protocol::{Reply, Request, UpsertProduct};

use super::AdminError;

/// Upserts per submitted batch.
pub const BATCH: usize = 1024;

/// Batches in flight at once: enough to keep every core busy while the
/// previous replies come back, few enough to bound the memory held.
pub const WINDOW: usize = 8;

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Products the server confirmed.
    pub loaded: usize,
    /// Wall time from the first send to the last reply.
    pub elapsed: Duration,
}

/// The first thing wrong with a batch's replies.
enum Fault {
    Refused(u64, Rejection),
    Mismatch(u64, String),
}

/// Upsert every product of `products` through `client`.
///
/// # Errors
/// The first refusal or mismatching reply (with how many products were
/// loaded), or the first transport failure.
pub fn load(client: &mut Client, server: &str, products: &[UpsertProduct]) -> Result<LoadReport, AdminError> {
    let start = Instant::now();
    let total = products.len();
    let mut batches = products.chunks(BATCH);
    let mut in_flight: VecDeque<(&[UpsertProduct], Ticket)> = VecDeque::with_capacity(WINDOW);
    let mut loaded = 0;
    let mut fault = None;
    let what = |batch: &[UpsertProduct]| match (batch.first(), batch.last()) {
        (Some(a), Some(b)) => format!("the upsert of products {}..={}", a.product, b.product),
        _ => "an upsert".to_owned(),
    };
    loop {
        while fault.is_none() && in_flight.len() < WINDOW {
            let Some(batch) = batches.next() else { break };
            let requests: Vec<Request> = batch.iter().copied().map(Request::UpsertProduct).collect();
            let ticket = client.submit(&requests).map_err(|e| AdminError::from_client(server, what(batch), e))?;
            in_flight.push_back((batch, ticket));
        }
        let Some((batch, ticket)) = in_flight.pop_front() else { break };
        let replies = client.wait(ticket).map_err(|e| AdminError::from_client(server, what(batch), e))?;
        let (ok, batch_fault) = check_batch(batch, &replies);
        loaded += ok;
        if fault.is_none() {
            fault = batch_fault;
        }
    }
    match fault {
        None => Ok(LoadReport { loaded, elapsed: start.elapsed() }),
        Some(Fault::Refused(product, rejection)) => {
            Err(AdminError::UpsertRefused { server: server.to_owned(), product, rejection, loaded, total })
        }
        Some(Fault::Mismatch(product, what)) => Err(AdminError::UpsertMismatch { server: server.to_owned(), product, what }),
    }
}

/// How many replies of `batch` confirm their upsert, and the first that does not.
fn check_batch(batch: &[UpsertProduct], replies: &[Reply]) -> (usize, Option<Fault>) {
    let mut ok = 0;
    let mut fault = None;
    if replies.len() != batch.len() {
        let what = format!("{} replies for {} upserts", replies.len(), batch.len());
        return (0, Some(Fault::Mismatch(batch.first().map_or(0, |u| u.product), what)));
    }
    for (sent, reply) in batch.iter().zip(replies) {
        let verdict = match reply {
            Reply::Stock(s) => {
                let differs = [
                    ("product", s.product != sent.product),
                    ("unit_price_cents", s.unit_price_cents != sent.unit_price_cents),
                    ("per_user_limit", s.per_user_limit != sent.per_user_limit),
                    ("payment_window_ms", s.payment_window_ms != sent.payment_window_ms),
                ]
                .iter()
                .find(|(_, differs)| *differs)
                .map(|(name, _)| format!("{name} differs: sent {sent:?}, got {s:?}"));
                differs.map(|what| Fault::Mismatch(sent.product, what))
            }
            Reply::Rejected(r) => Some(Fault::Refused(sent.product, *r)),
            other => Some(Fault::Mismatch(sent.product, format!("expected a Stock reply, got {other:?}"))),
        };
        match verdict {
            None => ok += 1,
            Some(f) => {
                fault.get_or_insert(f);
            }
        }
    }
    (ok, fault)
}

#[cfg(test)]
mod tests {
    use orderd_protocol::{Status, StockInfo};

    use super::*;

    fn upsert(product: u64) -> UpsertProduct {
        UpsertProduct { product, unit_price_cents: 100, stock: 5, payment_window_ms: 0, per_user_limit: 1 }
    }

    fn confirmed(u: &UpsertProduct) -> Reply {
        Reply::Stock(StockInfo {
            product: u.product,
            unit_price_cents: u.unit_price_cents,
            available: u.stock,
            reserved: 0,
            paid: 0,
            supplied: u.stock,
            payment_window_ms: u.payment_window_ms,
            per_user_limit: u.per_user_limit,
        })
    }

    #[test]
    fn confirming_replies_count_as_loaded() {
        let batch = [upsert(1), upsert(2)];
        let replies: Vec<Reply> = batch.iter().map(confirmed).collect();
        let (ok, fault) = check_batch(&batch, &replies);
        assert_eq!(ok, 2);
        assert!(fault.is_none());
    }

    #[test]
    fn a_rejection_is_the_fault_and_the_others_still_count() {
        let batch = [upsert(1), upsert(2), upsert(3)];
        let replies = vec![confirmed(&batch[0]), Reply::rejected(Status::InvalidRequest, 2), confirmed(&batch[2])];
        let (ok, fault) = check_batch(&batch, &replies);
        assert_eq!(ok, 2);
        assert!(matches!(fault, Some(Fault::Refused(2, r)) if r.status() == Some(Status::InvalidRequest)));
    }

    #[test]
    fn a_reply_with_other_settings_is_a_mismatch() {
        let batch = [upsert(1)];
        let Reply::Stock(mut s) = confirmed(&batch[0]) else { unreachable!() };
        s.per_user_limit = 0;
        let (ok, fault) = check_batch(&batch, &[Reply::Stock(s)]);
        assert_eq!(ok, 0);
        assert!(matches!(fault, Some(Fault::Mismatch(1, ref what)) if what.starts_with("per_user_limit differs")));
        let (_, fault) = check_batch(&batch, &[]);
        assert!(matches!(fault, Some(Fault::Mismatch(1, _))));
    }
}
