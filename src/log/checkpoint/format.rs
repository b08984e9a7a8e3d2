//! The checkpoint file's bytes: encoding shard images one after another
//! with a running CRC32C, and decoding a whole file back, refusing anything
//! that does not verify. Pure: no file system here.
//!
//! Little-endian throughout; every part a multiple of 8 bytes. Format 2
//! adds what a shard with archived orders needs, format 3 the time before
//! which the cold key index may miss keys, format 4 (written) each shard's
//! position (replication); format 1 files (no archived orders), format 2
//! and format 3 files are still read.
//!
//! ```text
//! file header, 64 bytes                   shard section header, 64 bytes
//!   0  8  magic b"ORDDCKPT"                 0  4  shard id
//!   8  4  format CHECKPOINT_FORMAT          4  4  reserved (zero)
//!  12  4  core                              8  8  sequence: replay this
//!  16  4  cores                                   shard's records from here
//!  20  4  shard count (all cores)          16  8  clock_ms
//!  24  4  shards in this file              24  8  orders_placed
//!  28  4  reserved (zero)                  32  8  gmv_cents
//!  32  8  sequence: the lowest shard       40  8  live_orders
//!         sequence (the file's name)       48  8  products (count)
//!  40  8  end sequence: the log's next     56  8  orders (count)
//!         sequence once every shard was
//!         taken (the log must reach it)   then 64 bytes per product: id,
//!  48  8  log record bytes below           unit_price_cents, available,
//!         `sequence`                       reserved, paid, supplied,
//!  56  4  taken at, s since the epoch      payment_window_ms (u64 each),
//!  60  4  CRC32C of bytes 0..60            per_user_limit u32, reserved u32
//!
//! trailer, 16 bytes                       then 64 bytes per order, by slot:
//!   0  8  magic b"ORDDCEND"                key.hi, key.lo, user, product,
//!   8  4  CRC32C of every section byte     unit_price_cents, created_ms,
//!  12  4  reserved (zero)                  expires_ms (u64 each), qty u32,
//!                                          state u8 (0 placed, 1 paid,
//!                                          2 cancelled, 3 expired),
//!                                          3 reserved bytes (zero)
//! ```
//!
//! Format 2 extends each shard section: its header is 128 bytes, the 64
//! above plus
//!
//! ```text
//!  64  8  base: the slot of the first order below (the ring)
//!  72  8  pinned orders (count)
//!  80  8  holdings (count)
//!  88  8  keys_from: the lowest slot of a cold key of the dedup window
//!  96  8  archived orders        104  8  archived paid orders
//! 112  8  archived gmv_cents     120  8  archived paid-units entries (count)
//! ```
//!
//! Format 3 adds 64 more bytes to each section header (192 in all):
//!
//! ```text
//! 128  8  keys_complete_from_ms: keys made before this time may have left
//!         the cold key index (dropped past the window, or by the bound);
//!         recovery refuses them as expired whatever its clock says
//! 136 56  reserved (zero)
//! ```
//!
//! and after the products come the archived paid units (16 bytes each:
//! product, units), the holdings (24 bytes each: user, product, units),
//! the pinned orders (72 bytes each: slot as u64, then the order's 64),
//! then the ring's orders as in format 1 ("orders (count)" counts those).
//!
//! Format 4 keeps each shard's position in the third block:
//!
//! ```text
//! 136  8  position: events applied to the shard since it was created
//!         (replication's per-shard position; format 3 reads as zero)
//! 144 48  reserved (zero)
//! ```
//!
//! A file cut short has no valid trailer; a flipped bit anywhere fails a
//! CRC. Either way the file is refused as a whole and recovery falls back
//! to the previous checkpoint.

use crate::engine::archive::{decode_record, encode_record};
use crate::engine::catalogue::Product;
use crate::engine::cold::ArchivedTotals;
use crate::engine::orders::OrderRecord;
use crate::engine::ShardImage;
use crate::log::record::{le_u32, le_u64};

/// The first bytes of every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"ORDDCKPT";
/// The last 16 bytes start with this.
pub const TRAILER_MAGIC: [u8; 8] = *b"ORDDCEND";
/// The version of the layout above that is written. A reader refuses
/// others than it and [`OLDEST_CHECKPOINT_FORMAT`].
pub const CHECKPOINT_FORMAT: u32 = 4;
/// The oldest format still read.
pub const OLDEST_CHECKPOINT_FORMAT: u32 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 64;
/// Bytes of a shard section's header.
pub const SECTION_HEADER_LEN: usize = 64;
/// Bytes per product.
pub const PRODUCT_LEN: usize = 64;
/// Bytes per order.
pub const ORDER_LEN: usize = 64;
/// Bytes of the trailer.
pub const TRAILER_LEN: usize = 16;

/// What the file header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The core whose shards these are.
    pub core: u32,
    /// Cores of the data directory.
    pub cores: u32,
    /// Shards of the data directory.
    pub shard_count: u32,
    /// Shard sections in the file.
    pub shards: u32,
    /// The lowest shard sequence: replay starts here.
    pub sequence: u64,
    /// The log's next sequence once every shard was taken: a log that ends
    /// before it cannot continue this checkpoint.
    pub end_sequence: u64,
    /// Bytes of the log's records below `sequence`.
    pub record_bytes: u64,
    /// When the checkpoint was taken, seconds since the Unix epoch.
    pub taken_s: u32,
}

impl CheckpointHeader {
    /// The header's 64 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        h[8..12].copy_from_slice(&CHECKPOINT_FORMAT.to_le_bytes());
        h[12..16].copy_from_slice(&self.core.to_le_bytes());
        h[16..20].copy_from_slice(&self.cores.to_le_bytes());
        h[20..24].copy_from_slice(&self.shard_count.to_le_bytes());
        h[24..28].copy_from_slice(&self.shards.to_le_bytes());
        h[32..40].copy_from_slice(&self.sequence.to_le_bytes());
        h[40..48].copy_from_slice(&self.end_sequence.to_le_bytes());
        h[48..56].copy_from_slice(&self.record_bytes.to_le_bytes());
        h[56..60].copy_from_slice(&self.taken_s.to_le_bytes());
        let crc = crc32c::crc32c(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and verifies a header.
    ///
    /// # Errors
    /// Why the bytes are not a header of this format, in words.
    pub fn decode(h: &[u8]) -> Result<CheckpointHeader, String> {
        let h: &[u8; HEADER_LEN] = h.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or("shorter than a header")?;
        if h[0..8] != CHECKPOINT_MAGIC {
            return Err("not a checkpoint file (bad magic)".into());
        }
        if le_u32(h, 60) != crc32c::crc32c(&h[..60]) {
            return Err("the header's CRC does not match".into());
        }
        let format = le_u32(h, 8);
        if !(OLDEST_CHECKPOINT_FORMAT..=CHECKPOINT_FORMAT).contains(&format) {
            return Err(format!("checkpoint format {format}; this build reads {OLDEST_CHECKPOINT_FORMAT} to {CHECKPOINT_FORMAT}"));
        }
        Ok(CheckpointHeader {
            core: le_u32(h, 12),
            cores: le_u32(h, 16),
            shard_count: le_u32(h, 20),
            shards: le_u32(h, 24),
            sequence: le_u64(h, 32),
            end_sequence: le_u64(h, 40),
            record_bytes: le_u64(h, 48),
            taken_s: le_u32(h, 56),
        })
    }
}

/// One shard of a checkpoint: its image and where its replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// Replay this shard's records from this sequence on.
    pub sequence: u64,
    /// The shard's state before that record.
    pub image: ShardImage,
}

/// Appends the bytes of one shard section to `out` (format 4).
pub fn encode_section(entry: &ShardEntry, out: &mut Vec<u8>) {
    let image = &entry.image;
    let holdings: &[(u64, u64, u64)] = image.holdings.as_deref().unwrap_or_default();
    out.reserve(
        SECTION_HEADER_LEN * 3
            + image.products.len() * PRODUCT_LEN
            + image.archived.paid_units.len() * 16
            + holdings.len() * 24
            + image.pinned.len() * (8 + ORDER_LEN)
            + image.orders.len() * ORDER_LEN,
    );
    out.extend_from_slice(&u32::from(image.shard_id).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let words = [
        entry.sequence,
        image.clock_ms,
        image.orders_placed,
        image.gmv_cents,
        image.live_orders,
        image.products.len() as u64,
        image.orders.len() as u64,
        u64::from(image.base),
        image.pinned.len() as u64,
        holdings.len() as u64,
        u64::from(image.keys_from),
        image.archived.orders,
        image.archived.paid_orders,
        image.archived.gmv_cents,
        image.archived.paid_units.len() as u64,
        image.keys_complete_from_ms,
        image.position,
    ];
    for word in words {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&[0u8; 48]);
    for (id, p) in &image.products {
        for word in [*id, p.unit_price_cents, p.available, p.reserved, p.paid, p.supplied, p.payment_window_ms] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&p.per_user_limit.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    for (product, units) in &image.archived.paid_units {
        out.extend_from_slice(&product.to_le_bytes());
        out.extend_from_slice(&units.to_le_bytes());
    }
    for &(user, product, units) in holdings {
        for word in [user, product, units] {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    for (slot, r) in &image.pinned {
        out.extend_from_slice(&u64::from(*slot).to_le_bytes());
        out.extend_from_slice(&encode_record(r));
    }
    for r in &image.orders {
        out.extend_from_slice(&encode_record(r));
    }
}

/// The trailer for sections whose bytes have CRC32C `crc`.
#[must_use]
pub fn encode_trailer(crc: u32) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0..8].copy_from_slice(&TRAILER_MAGIC);
    t[8..12].copy_from_slice(&crc.to_le_bytes());
    t
}

/// A whole checkpoint file, decoded and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The header.
    pub header: CheckpointHeader,
    /// The shards, in file order.
    pub shards: Vec<ShardEntry>,
}

/// Decodes a whole file. Never panics, whatever the bytes.
///
/// # Errors
/// Why the bytes are not a complete, verified checkpoint, in words.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let header = CheckpointHeader::decode(bytes)?;
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err("cut short: no trailer".into());
    }
    let (body, trailer) = bytes[HEADER_LEN..].split_at(bytes.len() - HEADER_LEN - TRAILER_LEN);
    if trailer[0..8] != TRAILER_MAGIC || trailer[12..16] != [0, 0, 0, 0] {
        return Err("cut short or damaged: no trailer".into());
    }
    if le_u32(trailer, 8) != crc32c::crc32c(body) {
        return Err("the CRC of the shard sections does not match".into());
    }
    let mut r = Reader { bytes: body, at: 0, format: le_u32(bytes, 8) };
    let mut shards = Vec::with_capacity(header.shards.min(1 << 16) as usize);
    for _ in 0..header.shards {
        shards.push(r.section()?);
    }
    if r.at != body.len() {
        return Err(format!("{} bytes after the last shard section", body.len() - r.at));
    }
    Ok(Decoded { header, shards })
}

/// One shard section of the current format, alone (as a shard bundle
/// carries it, `log::handoff`): every byte of `bytes` must belong to it.
/// Never panics.
///
/// # Errors
/// Why the bytes are not one section, in words.
pub fn decode_section(bytes: &[u8]) -> Result<ShardEntry, String> {
    let mut r = Reader { bytes, at: 0, format: CHECKPOINT_FORMAT };
    let entry = r.section()?;
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the shard section", bytes.len() - r.at));
    }
    Ok(entry)
}

/// Reads sections, failing instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    format: u32,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or("a shard section runs past the end")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// `n` items of `len` bytes each, as one slice.
    fn items(&mut self, n: u64, len: usize, shard_id: u16) -> Result<&[u8], String> {
        let bytes = usize::try_from(n).ok().and_then(|n| n.checked_mul(len)).ok_or(format!("shard {shard_id}: counts out of range"))?;
        self.take(bytes)
    }

    fn section(&mut self) -> Result<ShardEntry, String> {
        let h = self.take(SECTION_HEADER_LEN)?;
        let shard_id = u16::try_from(le_u32(h, 0)).map_err(|_| format!("shard id {} out of range", le_u32(h, 0)))?;
        if le_u32(h, 4) != 0 {
            return Err(format!("shard {shard_id}: reserved bytes are not zero"));
        }
        let sequence = le_u64(h, 8);
        let (clock_ms, orders_placed, gmv_cents, live_orders) = (le_u64(h, 16), le_u64(h, 24), le_u64(h, 32), le_u64(h, 40));
        let counts = (le_u64(h, 48), le_u64(h, 56));
        let ext: [u64; 8] = if self.format >= 2 {
            let e = self.take(SECTION_HEADER_LEN)?;
            std::array::from_fn(|i| le_u64(e, i * 8))
        } else {
            [0; 8]
        };
        let [base, pinned_n, holdings_n, keys_from, archived_orders, archived_paid, archived_gmv, paid_units_n] = ext;
        let (keys_complete_from_ms, position) = if self.format >= 3 {
            // Format 3 has no position: its bytes are reserved (zero) there.
            let has_position = self.format >= 4;
            let e = self.take(SECTION_HEADER_LEN)?;
            let reserved_from = if has_position { 16 } else { 8 };
            if e[reserved_from..].iter().any(|&b| b != 0) {
                return Err(format!("shard {shard_id}: reserved bytes are not zero"));
            }
            (le_u64(e, 0), if has_position { le_u64(e, 8) } else { 0 })
        } else {
            (0, 0)
        };
        let slot = |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("shard {shard_id}: {what} {v} out of range"));
        let (base, keys_from) = (slot(base, "base")?, slot(keys_from, "keys_from")?);
        let products = self
            .items(counts.0, PRODUCT_LEN, shard_id)?
            .chunks_exact(PRODUCT_LEN)
            .map(|p| {
                let product = Product {
                    unit_price_cents: le_u64(p, 8),
                    available: le_u64(p, 16),
                    reserved: le_u64(p, 24),
                    paid: le_u64(p, 32),
                    supplied: le_u64(p, 40),
                    payment_window_ms: le_u64(p, 48),
                    per_user_limit: le_u32(p, 56),
                };
                (le_u32(p, 60) == 0)
                    .then_some((le_u64(p, 0), product))
                    .ok_or(format!("shard {shard_id}: a product's reserved bytes are not zero"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let paid_units = self.items(paid_units_n, 16, shard_id)?.chunks_exact(16).map(|u| (le_u64(u, 0), le_u64(u, 8))).collect();
        let holdings: Vec<(u64, u64, u64)> =
            self.items(holdings_n, 24, shard_id)?.chunks_exact(24).map(|u| (le_u64(u, 0), le_u64(u, 8), le_u64(u, 16))).collect();
        let pinned = self
            .items(pinned_n, 8 + ORDER_LEN, shard_id)?
            .chunks_exact(8 + ORDER_LEN)
            .map(|p| Ok((slot(le_u64(p, 0), "a pinned slot")?, order(shard_id, &p[8..])?)))
            .collect::<Result<Vec<_>, String>>()?;
        let orders = self
            .items(counts.1, ORDER_LEN, shard_id)?
            .chunks_exact(ORDER_LEN)
            .map(|o| order(shard_id, o))
            .collect::<Result<Vec<_>, String>>()?;
        let archived = ArchivedTotals { orders: archived_orders, paid_orders: archived_paid, gmv_cents: archived_gmv, paid_units };
        let holdings = (self.format >= 2).then_some(holdings);
        let image = ShardImage {
            shard_id,
            clock_ms,
            orders_placed,
            gmv_cents,
            live_orders,
            products,
            base,
            orders,
            pinned,
            holdings,
            archived,
            keys_from,
            keys_complete_from_ms,
            position,
        };
        Ok(ShardEntry { sequence, image })
    }
}

/// One order's 64 bytes (reserved bytes zero).
fn order(shard_id: u16, o: &[u8]) -> Result<OrderRecord, String> {
    let o: &[u8; ORDER_LEN] = o.try_into().map_err(|_| format!("shard {shard_id}: a short order"))?;
    if o[61..64] != [0, 0, 0] {
        return Err(format!("shard {shard_id}: an order's reserved bytes are not zero"));
    }
    decode_record(o).ok_or_else(|| format!("shard {shard_id}: unknown order state {}", o[60]))
}

#[cfg(test)]
mod tests {
    use orderd_protocol::{IdempotencyKey, OrderState};

    use super::*;

    fn entry(shard_id: u16, sequence: u64) -> ShardEntry {
        let product = Product::new(250, 7, 1000, 2);
        let order = OrderRecord {
            key: IdempotencyKey { hi: 1, lo: 2 },
            user: 3,
            product: 9,
            unit_price_cents: 250,
            created_ms: 5,
            expires_ms: 1005,
            qty: 1,
            state: OrderState::Paid,
        };
        let image = ShardImage {
            shard_id,
            clock_ms: 6,
            orders_placed: 1,
            gmv_cents: 250,
            live_orders: 1,
            products: vec![(9, product)],
            base: 0,
            orders: vec![order],
            pinned: Vec::new(),
            holdings: Some(Vec::new()),
            archived: ArchivedTotals::default(),
            keys_from: 0,
            keys_complete_from_ms: 0,
            position: 0,
        };
        ShardEntry { sequence, image }
    }

    fn file(entries: &[ShardEntry]) -> Vec<u8> {
        let header = CheckpointHeader {
            core: 1,
            cores: 2,
            shard_count: 4,
            shards: entries.len() as u32,
            sequence: 10,
            end_sequence: 12,
            record_bytes: 880,
            taken_s: 1_800_000_000,
        };
        let mut body = Vec::new();
        for e in entries {
            encode_section(e, &mut body);
        }
        let mut out = header.encode().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&encode_trailer(crc32c::crc32c(&body)));
        out
    }

    #[test]
    fn a_file_round_trips_and_every_part_is_a_multiple_of_8_bytes() {
        let entries = [entry(1, 10), entry(3, 11)];
        let bytes = file(&entries);
        assert_eq!(bytes.len(), HEADER_LEN + 2 * (3 * SECTION_HEADER_LEN + PRODUCT_LEN + ORDER_LEN) + TRAILER_LEN);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.shards, entries);
        assert_eq!((decoded.header.core, decoded.header.sequence, decoded.header.end_sequence), (1, 10, 12));
    }

    #[test]
    fn a_file_cut_anywhere_or_with_any_bit_flipped_is_refused() {
        let bytes = file(&[entry(1, 10)]);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(decode(&flipped).is_err(), "bit flipped at {at}");
        }
    }

    #[test]
    fn another_format_is_refused_by_name() {
        let mut bytes = file(&[entry(1, 10)]);
        bytes[8] = 9;
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bytes).unwrap_err(), "checkpoint format 9; this build reads 1 to 4");
    }

    #[test]
    fn a_format_2_file_reads_with_no_cold_key_cutoff() {
        let mut e = entry(1, 10);
        e.image.keys_complete_from_ms = 1_790_000_000_000;
        let three = file(&[e.clone()]);
        // The same file as format 2 wrote it: no third block of the
        // section header, format 2 in the header, both CRCs again.
        let cut = HEADER_LEN + 2 * SECTION_HEADER_LEN;
        let mut two = three[..cut].to_vec();
        two.extend_from_slice(&three[cut + SECTION_HEADER_LEN..three.len() - TRAILER_LEN]);
        two[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&two[..60]);
        two[60..64].copy_from_slice(&crc.to_le_bytes());
        let body_crc = crc32c::crc32c(&two[HEADER_LEN..]);
        two.extend_from_slice(&encode_trailer(body_crc));
        let decoded = decode(&two).unwrap();
        e.image.keys_complete_from_ms = 0;
        assert_eq!(decoded.shards, [e]);
        assert_eq!(decode(&three).unwrap().shards[0].image.keys_complete_from_ms, 1_790_000_000_000);
    }

    #[test]
    fn a_shards_position_round_trips_and_a_format_3_file_reads_as_position_0() {
        let mut e = entry(1, 10);
        e.image.position = 12_345;
        let four = file(&[e.clone()]);
        assert_eq!(decode(&four).unwrap().shards[0].image.position, 12_345);
        // Format 3 had zeros where the position is: the same bytes but the
        // position, as format 3.
        e.image.position = 0;
        let mut three = file(&[e.clone()]);
        three[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&three[..60]);
        three[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&three).unwrap().shards, [e.clone()]);
        // A format-3 file with bytes where format 4 keeps the position is
        // damaged (reserved bytes not zero).
        let mut bad = file(&[ShardEntry { image: ShardImage { position: 7, ..e.image.clone() }, ..e }]);
        bad[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&bad[..60]);
        bad[60..64].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&bad).unwrap_err().contains("reserved bytes are not zero"));
    }
}
