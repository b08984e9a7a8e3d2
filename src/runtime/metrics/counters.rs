//! [`CoreMetrics`]: the counters and histograms one core keeps for the
//! metrics endpoint, beside [`Counters`](crate::runtime::core::Counters) (which
//! the wire's Stats reply also reads). Owned by the core's
//! [`Core`](crate::runtime::core::Core), updated on its thread with plain
//! integer adds, read only when a scrape asks for a snapshot.

use orderd_protocol::message::ArchivedRequest;
use orderd_protocol::{Reply, Status};

use super::histogram::{Histogram, FLUSH_RECORDS, FLUSH_SECONDS, FRAME_REQUESTS, REPLY_SECONDS};

/// Request kinds, by the `kind` label they are exposed with. A new request
/// kind is one more name here and one more arm in [`kind_of`].
pub const KINDS: [&str; 17] = [
    "place_order",
    "pay_order",
    "cancel_order",
    "get_order",
    "get_order_by_key",
    "get_stock",
    "upsert_product",
    "adjust_stock",
    "subscribe",
    "stats",
    "aggregates",
    "list_products",
    "checkpoint",
    "storage_stats",
    "cluster_map",
    "move_shard",
    "replicate",
];

/// The index of `request`'s kind in [`KINDS`].
#[must_use]
pub const fn kind_of(request: &ArchivedRequest) -> usize {
    match request {
        ArchivedRequest::PlaceOrder(_) => 0,
        ArchivedRequest::PayOrder(_) => 1,
        ArchivedRequest::CancelOrder(_) => 2,
        ArchivedRequest::GetOrder(_) => 3,
        ArchivedRequest::GetOrderByKey(_) => 4,
        ArchivedRequest::GetStock(_) => 5,
        ArchivedRequest::UpsertProduct(_) => 6,
        ArchivedRequest::AdjustStock(_) => 7,
        ArchivedRequest::Subscribe(_) => 8,
        ArchivedRequest::Stats => 9,
        ArchivedRequest::Aggregates(_) => 10,
        ArchivedRequest::ListProducts(_) => 11,
        ArchivedRequest::Checkpoint => 12,
        ArchivedRequest::StorageStats => 13,
        ArchivedRequest::ClusterMap => 14,
        ArchivedRequest::MoveShard(_) => 15,
        ArchivedRequest::Replicate(_) => 16,
    }
}

/// Number of status codes (the `reason` label of a rejection).
pub const REASONS: usize = Status::ALL.len();

/// Position in [`Status::ALL`] of each wire code below 256; codes this build
/// does not know count as `internal` (the server only sends known ones).
const REASON_OF_CODE: [u8; 256] = {
    let mut table = [u8::MAX; 256];
    let mut i = 0;
    while i < Status::ALL.len() {
        let code = Status::ALL[i].code() as usize;
        assert!(code < 256 && i < u8::MAX as usize);
        table[code] = i as u8;
        i += 1;
    }
    table
};

/// The index in [`Status::ALL`] of the rejection `code`.
#[must_use]
pub fn reason_of(code: u16) -> usize {
    match REASON_OF_CODE.get(usize::from(code)) {
        Some(&i) if i != u8::MAX => usize::from(i),
        _ => Status::ALL.iter().position(|s| *s == Status::Internal).unwrap_or(0),
    }
}

/// One core's counters and histograms for the metrics endpoint.
#[derive(Debug, Clone, Copy)]
pub struct CoreMetrics {
    /// Requests read by this core's connections, by kind.
    pub requests: [u64; KINDS.len()],
    /// Of those, the ones answered with a rejection, by kind and reason.
    pub rejections: [[u64; REASONS]; KINDS.len()],
    /// Requests per frame read by this core's connections.
    pub frame_requests: Histogram<13>,
    /// Time of each group-commit fdatasync, in µs.
    pub flush_seconds: Histogram<14>,
    /// Records each flush made durable.
    pub flush_records: Histogram<10>,
    /// Per Requests frame, µs from the read that completed it to the write
    /// of its replies (the server's part of a request's latency).
    pub reply_seconds: Histogram<18>,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            requests: [0; KINDS.len()],
            rejections: [[0; REASONS]; KINDS.len()],
            frame_requests: Histogram::new(&FRAME_REQUESTS),
            flush_seconds: Histogram::new(&FLUSH_SECONDS),
            flush_records: Histogram::new(&FLUSH_RECORDS),
            reply_seconds: Histogram::new(&REPLY_SECONDS),
        }
    }
}

impl CoreMetrics {
    /// Count one answered Requests frame: its size, each request's kind and
    /// each rejection's reason (`replies[i]` answers `requests[i]`).
    pub fn frame<'a>(&mut self, requests: impl ExactSizeIterator<Item = &'a ArchivedRequest>, replies: &[Reply]) {
        self.frame_requests.observe(requests.len() as u64);
        for (request, reply) in requests.zip(replies) {
            let kind = kind_of(request);
            self.requests[kind] += 1;
            if let Reply::Rejected(r) = reply {
                self.rejections[kind][reason_of(r.code)] += 1;
            }
        }
    }

    /// Count one group-commit flush: its fdatasync time and the records it
    /// made durable.
    pub fn flushed(&mut self, micros: u64, records: u64) {
        self.flush_seconds.observe(micros);
        self.flush_records.observe(records);
    }

    /// Count `frames` Requests frames whose replies left `micros` after the
    /// read that completed them.
    pub fn replied(&mut self, micros: u64, frames: u64) {
        self.reply_seconds.observe_n(micros, frames);
    }

    /// Request frames counted.
    #[must_use]
    pub const fn frames(&self) -> u64 {
        self.frame_requests.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderd_protocol::message::Request;
    use orderd_protocol::{IdempotencyKey, PlaceOrder, Rejection};

    fn place(lo: u64) -> Request {
        Request::PlaceOrder(PlaceOrder { key: IdempotencyKey { hi: 1, lo }, user: 1, product: 2, unit_price_cents: 100, qty: 1 })
    }

    #[test]
    fn every_status_has_a_reason_index() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(reason_of(s.code()), i);
        }
        assert_eq!(Status::ALL[reason_of(999)], Status::Internal);
        assert_eq!(Status::ALL[reason_of(0)], Status::Internal);
    }

    #[test]
    fn a_frame_counts_kinds_and_rejection_reasons() {
        let requests = vec![place(1), place(2), Request::Stats];
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&requests).unwrap();
        let archived = rkyv::access::<rkyv::Archived<Vec<Request>>, rkyv::rancor::Error>(&bytes).unwrap();
        let replies = vec![
            Reply::Rejected(Rejection::new(Status::SoldOut, 0)),
            Reply::Rejected(Rejection::new(Status::SoldOut, 0)),
            Reply::rejected(Status::Unsupported, 0),
        ];
        let mut m = CoreMetrics::default();
        m.frame(archived.iter(), &replies);
        assert_eq!(m.requests[0], 2);
        assert_eq!(m.requests[9], 1);
        assert_eq!(m.rejections[0][reason_of(Status::SoldOut.code())], 2);
        assert_eq!(m.rejections[9][reason_of(Status::Unsupported.code())], 1);
        assert_eq!(m.frames(), 1);
        assert_eq!(m.frame_requests.sum(), 3);
    }
}
