//! What `orderd admin stats` shows of each core's storage (protocol
//! version 2's `StorageStats`): its newest checkpoint (sequence, age,
//! duration, size), the log it retains (records, bytes, segments, against
//! its bound), its orders in memory (hot) and archived (cold), and the
//! memory of each of its tables. As JSON, the `storage` object of the
//! stats view; as text, two tables under the counters.

use std::io::Write;

use orderd_protocol::message::{CoreStorage, StorageStats};
use serde::Serialize;

use super::AdminError;

/// One core's storage (or the totals), as JSON.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CoreStorageView {
    /// The core (`null` in the totals).
    pub core: Option<u16>,
    /// Log sequence of the newest checkpoint (`0`: none; totals: not summed, `0`).
    pub checkpoint_sequence: u64,
    /// Seconds since it was published (`null`: none since the start;
    /// totals: the oldest core's).
    pub checkpoint_age_s: Option<f64>,
    /// How long it took, seconds (totals: the slowest core's).
    pub checkpoint_duration_s: f64,
    /// Its size.
    pub checkpoint_bytes: u64,
    /// The oldest record the log holds.
    pub log_oldest_sequence: u64,
    /// The next record's sequence.
    pub log_next_sequence: u64,
    /// Records retained: `log_next_sequence - log_oldest_sequence`.
    pub log_retained_records: u64,
    /// Bytes of segment files retained.
    pub log_retained_bytes: u64,
    /// `--max-log-bytes`.
    pub log_max_bytes: u64,
    /// Segment files.
    pub log_segments: u64,
    /// Orders in memory (open ones and the hot window's final ones).
    pub hot_orders: u64,
    /// Orders in the archives.
    pub cold_orders: u64,
    /// Keys of archived orders remembered for retries.
    pub cold_keys: u64,
    /// Bytes of the archives.
    pub archive_bytes: u64,
    /// Memory by table, bytes.
    pub memory: MemoryView,
}

/// Memory by table, bytes.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct MemoryView {
    /// Order records.
    pub order_records: u64,
    /// Idempotency index of the orders in memory.
    pub key_index: u64,
    /// Cold key index.
    pub cold_keys: u64,
    /// Payment deadlines.
    pub deadlines: u64,
    /// Per-user holdings.
    pub holdings: u64,
    /// Catalogue.
    pub catalogue: u64,
    /// Their sum.
    pub total: u64,
}

impl MemoryView {
    fn cells(&self) -> [u64; 7] {
        [self.order_records, self.key_index, self.cold_keys, self.deadlines, self.holdings, self.catalogue, self.total]
    }
}

/// Every core's storage and the totals, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct StorageView {
    /// Server time of the answer, ms since the Unix epoch.
    pub now_ms: u64,
    /// By core.
    pub cores: Vec<CoreStorageView>,
    /// Summed over the cores (ages and durations: the worst core's).
    pub totals: CoreStorageView,
}

impl CoreStorageView {
    fn new(c: &CoreStorage, now_ms: u64) -> Self {
        let memory = MemoryView {
            order_records: c.memory_order_records,
            key_index: c.memory_key_index,
            cold_keys: c.memory_cold_keys,
            deadlines: c.memory_deadlines,
            holdings: c.memory_holdings,
            catalogue: c.memory_catalogue,
            total: [
                c.memory_order_records,
                c.memory_key_index,
                c.memory_cold_keys,
                c.memory_deadlines,
                c.memory_holdings,
                c.memory_catalogue,
            ]
            .iter()
            .fold(0u64, |a, b| a.saturating_add(*b)),
        };
        CoreStorageView {
            core: Some(c.core),
            checkpoint_sequence: c.checkpoint_sequence,
            checkpoint_age_s: (c.checkpoint_at_ms != 0).then(|| now_ms.saturating_sub(c.checkpoint_at_ms) as f64 / 1000.0),
            checkpoint_duration_s: c.checkpoint_duration_us as f64 / 1e6,
            checkpoint_bytes: c.checkpoint_bytes,
            log_oldest_sequence: c.log_oldest_sequence,
            log_next_sequence: c.log_next_sequence,
            log_retained_records: c.log_next_sequence.saturating_sub(c.log_oldest_sequence),
            log_retained_bytes: c.log_file_bytes,
            log_max_bytes: c.log_max_bytes,
            log_segments: u64::from(c.log_segments),
            hot_orders: c.orders_in_memory,
            cold_orders: c.orders_archived,
            cold_keys: c.cold_keys,
            archive_bytes: c.archive_bytes,
            memory,
        }
    }

    /// Adds `other` into these totals (saturating; ages and durations: the worst).
    fn add(&mut self, other: &CoreStorageView) {
        self.checkpoint_age_s = match (self.checkpoint_age_s, other.checkpoint_age_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.checkpoint_duration_s = self.checkpoint_duration_s.max(other.checkpoint_duration_s);
        let sums = [
            (&mut self.checkpoint_bytes, other.checkpoint_bytes),
            (&mut self.log_retained_records, other.log_retained_records),
            (&mut self.log_retained_bytes, other.log_retained_bytes),
            (&mut self.log_max_bytes, other.log_max_bytes),
            (&mut self.log_segments, other.log_segments),
            (&mut self.hot_orders, other.hot_orders),
            (&mut self.cold_orders, other.cold_orders),
            (&mut self.cold_keys, other.cold_keys),
            (&mut self.archive_bytes, other.archive_bytes),
            (&mut self.memory.order_records, other.memory.order_records),
            (&mut self.memory.key_index, other.memory.key_index),
            (&mut self.memory.cold_keys, other.memory.cold_keys),
            (&mut self.memory.deadlines, other.memory.deadlines),
            (&mut self.memory.holdings, other.memory.holdings),
            (&mut self.memory.catalogue, other.memory.catalogue),
            (&mut self.memory.total, other.memory.total),
        ];
        for (mine, theirs) in sums {
            *mine = mine.saturating_add(theirs);
        }
    }

    fn label(&self) -> String {
        self.core.map_or_else(|| "total".to_owned(), |c| c.to_string())
    }
}

impl From<&StorageStats> for StorageView {
    fn from(s: &StorageStats) -> Self {
        let cores: Vec<CoreStorageView> = s.cores.iter().map(|c| CoreStorageView::new(c, s.now_ms)).collect();
        let mut totals = CoreStorageView::default();
        for c in &cores {
            totals.add(c);
        }
        StorageView { now_ms: s.now_ms, cores, totals }
    }
}

/// `bytes` as `12.3 GiB` (binary units, one decimal; plain bytes below 1 KiB).
#[must_use]
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds as `850 ms`, `12.3 s`, `4.2 min` or `3.1 h`.
#[must_use]
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Writes `rows` under `header`, the first column left-aligned, the others
/// right-aligned, two spaces apart.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> Result<(), AdminError> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            match i {
                0 => write!(out, "{cell:<w$}")?,
                _ => write!(out, "  {cell:>w$}")?,
            }
        }
        writeln!(out)
    };
    line(out, &mut header.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Writes the storage tables (after the counters of `admin stats`).
///
/// # Errors
/// Writing failed.
pub fn write(out: &mut impl Write, view: &StorageView) -> Result<(), AdminError> {
    let all = || view.cores.iter().chain(std::iter::once(&view.totals));
    writeln!(out)?;
    writeln!(out, "storage: checkpoints, log retained, orders in memory (hot) and archived (cold)")?;
    let rows: Vec<Vec<String>> = all()
        .map(|c| {
            let sequence = if c.core.is_some() { c.checkpoint_sequence.to_string() } else { String::new() };
            let age = c.checkpoint_age_s.map_or_else(|| "none".to_owned(), seconds);
            let bound = if c.log_max_bytes == 0 { String::new() } else { format!(" of {}", bytes(c.log_max_bytes)) };
            vec![
                c.label(),
                sequence,
                age,
                seconds(c.checkpoint_duration_s),
                bytes(c.checkpoint_bytes),
                c.log_retained_records.to_string(),
                format!("{}{bound}", bytes(c.log_retained_bytes)),
                c.log_segments.to_string(),
                c.hot_orders.to_string(),
                c.cold_orders.to_string(),
                c.cold_keys.to_string(),
                bytes(c.archive_bytes),
            ]
        })
        .collect();
    table(
        out,
        &[
            "core",
            "ckpt seq",
            "ckpt age",
            "ckpt took",
            "ckpt size",
            "log records",
            "log bytes",
            "segments",
            "hot",
            "cold",
            "cold keys",
            "archive",
        ],
        &rows,
    )?;
    writeln!(out)?;
    writeln!(out, "memory by table")?;
    let rows: Vec<Vec<String>> =
        all().map(|c| std::iter::once(c.label()).chain(c.memory.cells().into_iter().map(bytes)).collect()).collect();
    table(out, &["core", "orders", "key index", "cold keys", "deadlines", "holdings", "catalogue", "total"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(core: u16, checkpoint_at_ms: u64) -> CoreStorage {
        CoreStorage {
            core,
            checkpoint_sequence: 100,
            checkpoint_at_ms,
            checkpoint_duration_us: 250_000 * u64::from(core + 1),
            log_oldest_sequence: 10,
            log_next_sequence: 110,
            log_file_bytes: 3 << 30,
            log_max_bytes: 64 << 30,
            orders_in_memory: 7,
            memory_order_records: 1024,
            memory_cold_keys: 512,
            ..CoreStorage::default()
        }
    }

    #[test]
    fn totals_sum_counts_and_take_the_worst_age_and_duration() {
        let view = StorageView::from(&StorageStats { now_ms: 100_000, cores: vec![core(0, 90_000), core(1, 40_000), core(2, 0)] });
        assert_eq!(view.cores[0].checkpoint_age_s, Some(10.0));
        assert_eq!(view.cores[2].checkpoint_age_s, None, "no checkpoint since the start");
        assert_eq!(view.cores[0].log_retained_records, 100);
        assert_eq!(view.cores[0].memory.total, 1536);
        let t = &view.totals;
        assert_eq!((t.core, t.checkpoint_age_s, t.checkpoint_duration_s), (None, Some(60.0), 0.75));
        assert_eq!((t.hot_orders, t.log_retained_records, t.log_retained_bytes, t.memory.total), (21, 300, 9 << 30, 3 * 1536));
    }

    #[test]
    fn sizes_and_durations_read_at_a_glance() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(seconds(0.25), "250 ms");
        assert_eq!(seconds(12.34), "12.3 s");
        assert_eq!(seconds(600.0), "10.0 min");
        assert_eq!(seconds(36_000.0), "10.0 h");
    }

    #[test]
    fn the_tables_have_a_row_per_core_and_the_totals() {
        let view = StorageView::from(&StorageStats { now_ms: 100_000, cores: vec![core(0, 90_000), core(1, 0)] });
        let mut out = Vec::new();
        write(&mut out, &view).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ckpt age"), "{text}");
        assert!(text.contains("10.0 s"), "{text}");
        assert!(text.contains("none"), "{text}");
        assert!(text.contains("3.0 GiB of 64.0 GiB"), "{text}");
        assert!(text.contains("6.0 GiB of 128.0 GiB"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("total")).count(), 2, "{text}");
    }
}
