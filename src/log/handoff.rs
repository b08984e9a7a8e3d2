//! A shard handed from one node to another (`orderd cluster move-shard`):
//! the bundle its state travels in, the file the new owner keeps it in,
//! and the two control records that order a handoff among a core's events.
//!
//! # The bundle
//!
//! ```text
//! offset size field
//!   0     8   magic          "ORDDMOVE"
//!   8     4   format         2 (1: a format-3 section, still read)
//!  12     2   shard
//!  14     2   reserved       zero
//!  16     8   section_len    bytes of the shard's image (a checkpoint section, format 4)
//!  24     8   archive_len    bytes of the shard's order archive file, copied whole
//!  32     8   move_id        the map version the move makes
//!  40    24   reserved       zero
//!  64     …   the section, then the archive file
//!   …    16   trailer        "ORDDMEND", CRC32C of every byte before the trailer, 4 zero bytes
//! ```
//!
//! # Control records
//!
//! Records of kinds [`KIND_SHARD_INSTALLED`] and [`KIND_SHARD_RELEASED`] sit
//! in a core's log among its events (same framing and CRC, `record.rs`),
//! 24 bytes of body: `time_ms u64, shard u32, reserved u32 (zero), move_id u64`.
//! They are not events of the order stream (its readers skip them).
//! - `ShardInstalled`: from here on, shard `shard` is the one in bundle
//!   `move_id` (its file in `moves/`), whatever it was before; recovery
//!   loads the bundle there and replays the shard's later events on it. The
//!   new owner appends it, and waits for it to be durable, before the map
//!   names it owner.
//! - `ShardReleased`: from here on, shard `shard` is empty on this node (it
//!   was handed away); the old owner appends it once the map names another.
//! - Tail events (kinds [`FIRST_TAIL_KIND`] + the event's kind, the event's
//!   body): after a `ShardInstalled` of a shard bundled while it served,
//!   the events it took since, replayed as events but not streamed.

use std::path::{Path, PathBuf};

use super::checkpoint::format::{decode_section, encode_section};
use super::checkpoint::ShardEntry;
use super::record::le_u64;
use super::storage::Storage;
use crate::engine::ShardImage;

/// The first control record kind; kinds below are events.
pub const FIRST_CONTROL_KIND: u8 = 64;
/// A shard was installed from a bundle.
pub const KIND_SHARD_INSTALLED: u8 = 64;
/// A shard was handed away.
pub const KIND_SHARD_RELEASED: u8 = 65;
/// Kinds from this one are a moved shard's tail events (below: the event
/// kind plus this): the events its old owner logged while its bundle was
/// copied, logged again by the new owner after the install. Recovery
/// replays them as events; the order stream skips them (the old owner's
/// stream delivered them).
pub const FIRST_TAIL_KIND: u8 = 80;

/// The record kind of tail event `event`.
#[must_use]
pub const fn tail_kind(event: &crate::engine::Event) -> u8 {
    FIRST_TAIL_KIND + event.kind()
}

/// The event kind of tail record kind `kind`, if it is one.
#[must_use]
pub const fn event_kind_of_tail(kind: u8) -> Option<u8> {
    if kind >= FIRST_TAIL_KIND {
        Some(kind - FIRST_TAIL_KIND)
    } else {
        None
    }
}

/// Bytes of a control record's body.
pub const CONTROL_LEN: usize = 24;
/// The format of control records (the record header's version byte).
pub const CONTROL_FORMAT: u8 = 1;

const BUNDLE_MAGIC: [u8; 8] = *b"ORDDMOVE";
const BUNDLE_TRAILER_MAGIC: [u8; 8] = *b"ORDDMEND";
/// Format 2 (written): the image is a format-4 checkpoint section (with
/// the shard's position). Format 1 (a format-3 section) is still read: its
/// position reads as zero.
const BUNDLE_FORMAT: u32 = 2;
const OLDEST_BUNDLE_FORMAT: u32 = 1;
const BUNDLE_HEADER_LEN: usize = 64;
const BUNDLE_TRAILER_LEN: usize = 16;

/// The directory a node keeps the bundles it installed in.
#[must_use]
pub fn moves_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("moves")
}

/// The file of bundle `move_id` of shard `shard`.
#[must_use]
pub fn bundle_file_name(shard: u16, move_id: u64) -> String {
    format!("shard-{shard:05}-{move_id:020}.bundle")
}

/// `(shard, move_id)` of a bundle file's name.
#[must_use]
pub fn parse_bundle_file_name(name: &str) -> Option<(u16, u64)> {
    let rest = name.strip_prefix("shard-")?.strip_suffix(".bundle")?;
    let (shard, id) = rest.split_once('-')?;
    Some((shard.parse().ok()?, id.parse().ok()?))
}

/// A control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Shard `shard` is now the one of bundle `move_id`.
    ShardInstalled {
        /// When, ms since the Unix epoch.
        time_ms: u64,
        /// The shard.
        shard: u16,
        /// The bundle.
        move_id: u64,
    },
    /// Shard `shard` was handed away by the move that made map `move_id`.
    ShardReleased {
        /// When.
        time_ms: u64,
        /// The shard.
        shard: u16,
        /// The move.
        move_id: u64,
    },
}

impl Control {
    /// The record kind.
    #[must_use]
    pub const fn kind(&self) -> u8 {
        match self {
            Control::ShardInstalled { .. } => KIND_SHARD_INSTALLED,
            Control::ShardReleased { .. } => KIND_SHARD_RELEASED,
        }
    }

    /// The shard it is about.
    #[must_use]
    pub const fn shard(&self) -> u16 {
        match *self {
            Control::ShardInstalled { shard, .. } | Control::ShardReleased { shard, .. } => shard,
        }
    }

    /// The body.
    #[must_use]
    pub fn encode(&self) -> [u8; CONTROL_LEN] {
        let (time_ms, shard, move_id) = match *self {
            Control::ShardInstalled { time_ms, shard, move_id } | Control::ShardReleased { time_ms, shard, move_id } => {
                (time_ms, shard, move_id)
            }
        };
        let mut out = [0u8; CONTROL_LEN];
        out[0..8].copy_from_slice(&time_ms.to_le_bytes());
        out[8..12].copy_from_slice(&u32::from(shard).to_le_bytes());
        out[16..24].copy_from_slice(&move_id.to_le_bytes());
        out
    }

    /// The control record of `kind`, `version` and body `bytes`.
    ///
    /// # Errors
    /// Not a control record of this format, in words.
    pub fn decode(kind: u8, version: u8, bytes: &[u8]) -> Result<Control, String> {
        if version != CONTROL_FORMAT {
            return Err(format!("control record format {version} (this build reads {CONTROL_FORMAT})"));
        }
        if bytes.len() != CONTROL_LEN {
            return Err(format!("a control record of {} bytes, not {CONTROL_LEN}", bytes.len()));
        }
        let shard = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let shard = u16::try_from(shard).map_err(|_| format!("a control record for shard {shard}"))?;
        if bytes[12..16] != [0; 4] {
            return Err("a control record with non-zero reserved bytes".into());
        }
        let (time_ms, move_id) = (le_u64(bytes, 0), le_u64(bytes, 16));
        match kind {
            KIND_SHARD_INSTALLED => Ok(Control::ShardInstalled { time_ms, shard, move_id }),
            KIND_SHARD_RELEASED => Ok(Control::ShardReleased { time_ms, shard, move_id }),
            other => Err(format!("unknown control record kind {other}")),
        }
    }
}

/// Whether a record of `kind` is a control record (not an event).
#[must_use]
pub const fn is_control(kind: u8) -> bool {
    kind >= FIRST_CONTROL_KIND
}

/// A shard's state as it moves: its image and its order archive's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The map version the move makes.
    pub move_id: u64,
    /// The shard's state.
    pub image: ShardImage,
    /// Its order archive file, whole (header included).
    pub archive: Vec<u8>,
}

impl Bundle {
    /// The bundle's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut section = Vec::new();
        encode_section(&ShardEntry { sequence: 0, image: self.image.clone() }, &mut section);
        let mut out = Vec::with_capacity(BUNDLE_HEADER_LEN + section.len() + self.archive.len() + BUNDLE_TRAILER_LEN);
        out.extend_from_slice(&BUNDLE_MAGIC);
        out.extend_from_slice(&BUNDLE_FORMAT.to_le_bytes());
        out.extend_from_slice(&self.image.shard_id.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.archive.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.move_id.to_le_bytes());
        out.extend_from_slice(&[0; 24]);
        out.extend_from_slice(&section);
        out.extend_from_slice(&self.archive);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&BUNDLE_TRAILER_MAGIC);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out
    }

    /// Checks `bytes` whole (magic, lengths, CRC) and names the shard and
    /// move, without decoding the image.
    ///
    /// # Errors
    /// Why the bytes are not a complete, verified bundle.
    pub fn verify(bytes: &[u8]) -> Result<(u16, u64), String> {
        if bytes.len() < BUNDLE_HEADER_LEN + BUNDLE_TRAILER_LEN || bytes[0..8] != BUNDLE_MAGIC {
            return Err("not a shard bundle (no header)".into());
        }
        let format = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !(OLDEST_BUNDLE_FORMAT..=BUNDLE_FORMAT).contains(&format) {
            return Err(format!("bundle format {format} (this build reads {OLDEST_BUNDLE_FORMAT} to {BUNDLE_FORMAT})"));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - BUNDLE_TRAILER_LEN);
        if trailer[0..8] != BUNDLE_TRAILER_MAGIC || trailer[12..16] != [0; 4] {
            return Err("cut short: no trailer".into());
        }
        let stored = u32::from_le_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
        if stored != crc32c::crc32c(body) {
            return Err("the bundle's CRC does not match".into());
        }
        let (section, archive) = (le_u64(bytes, 16), le_u64(bytes, 24));
        let expected = (BUNDLE_HEADER_LEN as u64).checked_add(section).and_then(|n| n.checked_add(archive));
        if expected != Some(body.len() as u64) {
            return Err(format!("the bundle's lengths ({section} + {archive}) do not add up to its {} bytes", body.len()));
        }
        Ok((u16::from_le_bytes([bytes[12], bytes[13]]), le_u64(bytes, 32)))
    }

    /// The bundle in `bytes`, verified and decoded. Never panics.
    ///
    /// # Errors
    /// Why the bytes are not a bundle, in words.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, String> {
        let (shard, move_id) = Bundle::verify(bytes)?;
        let section_len = le_u64(bytes, 16) as usize;
        let section = &bytes[BUNDLE_HEADER_LEN..BUNDLE_HEADER_LEN + section_len];
        let archive = bytes[BUNDLE_HEADER_LEN + section_len..bytes.len() - BUNDLE_TRAILER_LEN].to_vec();
        let entry = decode_section(section)?;
        if entry.image.shard_id != shard {
            return Err(format!("the bundle names shard {shard} but its image is of shard {}", entry.image.shard_id));
        }
        Ok(Bundle { move_id, image: entry.image, archive })
    }
}

/// Writes `bytes` (a verified bundle) as bundle `move_id` of `shard` in
/// `dir`, durably: a temporary file synced, renamed into place, the
/// directory synced. Returns the path.
///
/// # Errors
/// The file system failed.
pub fn write_bundle(dir: &Path, shard: u16, move_id: u64, bytes: &[u8], storage: &dyn Storage) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(bundle_file_name(shard, move_id));
    let tmp = dir.join(format!("{}.tmp", bundle_file_name(shard, move_id)));
    let file = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut &file, bytes)?;
    storage.sync_all(&file)?;
    std::fs::rename(&tmp, &path)?;
    storage.sync_dir(dir)?;
    Ok(path)
}

/// Replaces shard `shard`'s order archive in `archive_dir` by `bytes`
/// (a temporary file synced and renamed over it, the directory synced):
/// open handles keep the old file.
///
/// # Errors
/// The file system failed.
pub fn replace_archive(archive_dir: &Path, shard: u16, bytes: &[u8], storage: &dyn Storage) -> std::io::Result<()> {
    std::fs::create_dir_all(archive_dir)?;
    let name = crate::engine::archive::file_name(shard);
    let tmp = archive_dir.join(format!("{name}.moving"));
    let file = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut &file, bytes)?;
    storage.sync_all(&file)?;
    std::fs::rename(&tmp, archive_dir.join(name))?;
    storage.sync_dir(archive_dir)
}

/// Removes shard `shard`'s bundles in `dir` other than bundle `keep` (a
/// later install supersedes them). Returns how many went.
///
/// # Errors
/// The directory cannot be read, or a file cannot be removed.
pub fn remove_bundles_except(dir: &Path, shard: u16, keep: u64, storage: &dyn Storage) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some((s, id)) = name.to_str().and_then(parse_bundle_file_name) else { continue };
        if s == shard && id != keep {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        storage.sync_dir(dir)?;
    }
    Ok(removed)
}

const TAIL_MAGIC: [u8; 8] = *b"ORDDTAIL";

/// The events a shard logged after its bundle was taken (a move's tail):
/// `"ORDDTAIL"`, the count (u64), then per event its kind (u8), its format
/// version (u8), its body's length (u16) and the body (`engine::event`),
/// then the CRC32C of every byte before it (u32).
#[must_use]
pub fn encode_tail(events: &[crate::engine::Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + events.len() * 68);
    out.extend_from_slice(&TAIL_MAGIC);
    out.extend_from_slice(&(events.len() as u64).to_le_bytes());
    for event in events {
        out.push(event.kind());
        out.push(crate::engine::EVENT_FORMAT_VERSION);
        out.extend_from_slice(&(event.encoded_len() as u16).to_le_bytes());
        event.encode_to_vec(&mut out);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The events of [`encode_tail`]'s bytes, verified. Never panics.
///
/// # Errors
/// Why the bytes are not a tail, in words.
pub fn decode_tail(bytes: &[u8]) -> Result<Vec<crate::engine::Event>, String> {
    if bytes.len() < 20 || bytes[..8] != TAIL_MAGIC {
        return Err("not a shard's tail (no header)".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) != crc32c::crc32c(body) {
        return Err("the tail's CRC does not match".into());
    }
    let count = le_u64(body, 8);
    let mut events = Vec::with_capacity(count.min(1 << 20) as usize);
    let mut at = 16;
    while at < body.len() {
        let Some(head) = body.get(at..at + 4) else { return Err("a tail event cut short".into()) };
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let payload = body.get(at + 4..at + 4 + len).ok_or("a tail event cut short")?;
        events.push(crate::engine::Event::decode(head[0], head[1], payload).map_err(|e| format!("tail event {}: {e}", events.len()))?);
        at += 4 + len;
    }
    if events.len() as u64 != count {
        return Err(format!("the tail holds {} events, its header says {count}", events.len()));
    }
    Ok(events)
}

/// The bundles of one core a checkpoint may make unneeded: a bundle is
/// needed while recovery may replay its `ShardInstalled` record, that is
/// while a kept checkpoint starts before the record.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// The data directory's `moves/`.
    pub moves_dir: PathBuf,
    /// The installs this core made or replayed since its start:
    /// `(shard, move, sequence of the record)`.
    pub tracked: Vec<super::recovery::Installed>,
    /// Bundles of this core's shards found at the start without a replayed
    /// install (their record is before the newest checkpoint then, which
    /// every checkpoint kept after a new one follows; or the install failed).
    pub stale: Vec<(u16, u64)>,
}

/// Removes the bundles `sweep` names that no kept checkpoint needs, given
/// the oldest kept checkpoint's start `oldest_checkpoint` (call it after a
/// checkpoint was published since the start). Returns how many went.
///
/// # Errors
/// A file could not be removed (one already gone is fine).
pub fn sweep_bundles(sweep: &Sweep, oldest_checkpoint: u64, storage: &dyn Storage) -> std::io::Result<usize> {
    // A bundle reinstalled under the same name (a move retried after it
    // was abandoned) is needed as long as its newest install is.
    let mut newest: std::collections::BTreeMap<(u16, u64), u64> = std::collections::BTreeMap::new();
    for &(shard, move_id, sequence) in &sweep.tracked {
        let at = newest.entry((shard, move_id)).or_insert(sequence);
        *at = (*at).max(sequence);
    }
    let unneeded = newest
        .iter()
        .filter(|(_, &sequence)| sequence < oldest_checkpoint)
        .map(|(&name, _)| name)
        .chain(sweep.stale.iter().copied().filter(|name| !newest.contains_key(name)));
    let mut removed = 0;
    for (shard, move_id) in unneeded {
        match std::fs::remove_file(sweep.moves_dir.join(bundle_file_name(shard, move_id))) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed > 0 {
        storage.sync_dir(&sweep.moves_dir)?;
    }
    Ok(removed)
}

/// The bundles in `dir` of the shards `mine` selects, not among `replayed`.
///
/// # Errors
/// The directory cannot be read.
pub fn stale_bundles(dir: &Path, mine: impl Fn(u16) -> bool, replayed: &[super::recovery::Installed]) -> std::io::Result<Vec<(u16, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut stale = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some((shard, move_id)) = name.to_str().and_then(parse_bundle_file_name) else { continue };
        if mine(shard) && !replayed.iter().any(|&(s, m, _)| (s, m) == (shard, move_id)) {
            stale.push((shard, move_id));
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Command, Shard, ShardConfig};
    use orderd_protocol::{PlaceOrder, UpsertProduct};

    fn shard_with_orders() -> Shard {
        let mut shard = Shard::new(ShardConfig::new(3));
        let mut events = Vec::new();
        let upsert = UpsertProduct { product: 7, unit_price_cents: 100, stock: 50, payment_window_ms: 60_000, per_user_limit: 2 };
        shard.apply(&Command::Upsert(upsert), 1_000, &mut events);
        for user in 1..=5 {
            let key = orderd_protocol::IdempotencyKey::timed(1_000, u128::from(user));
            let placed = shard.apply(
                &Command::PlaceOrder(PlaceOrder { key, user, product: 7, unit_price_cents: 100, qty: 1 }),
                1_000 + user,
                &mut events,
            );
            assert!(matches!(placed, orderd_protocol::Reply::Order(_)), "{placed:?}");
        }
        shard
    }

    #[test]
    fn a_bundle_round_trips_and_any_damage_is_refused() {
        let shard = shard_with_orders();
        let bundle = Bundle { move_id: 9, image: shard.image(), archive: b"archive bytes".to_vec() };
        let bytes = bundle.encode();
        assert_eq!(Bundle::verify(&bytes), Ok((3, 9)));
        let back = Bundle::decode(&bytes).unwrap();
        assert_eq!(back, bundle);
        let rebuilt = Shard::from_image(ShardConfig::new(3), back.image).unwrap();
        assert_eq!(rebuilt, shard);
        for at in [0, 13, 70, bytes.len() - 20, bytes.len() - 5] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(Bundle::decode(&bad).is_err(), "a flip at {at} passed");
        }
        assert!(Bundle::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Bundle::decode(&[]).is_err());
    }

    #[test]
    fn a_bundle_goes_once_every_kept_checkpoint_starts_after_its_install() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("moves");
        let storage = crate::log::RealStorage::shared();
        for (shard, id) in [(1, 5), (1, 9), (3, 7), (2, 4)] {
            write_bundle(&dir, shard, id, b"bytes", &*storage).unwrap();
        }
        let exists = |shard, id| dir.join(bundle_file_name(shard, id)).exists();
        // Shard 2's bundle predates the start: stale. Shard 1's move 5 was
        // installed at 100 and again (retried) at 400.
        let stale = stale_bundles(&dir, |s| s != 3, &[(1, 5, 100), (1, 9, 250)]).unwrap();
        assert_eq!(stale, [(2, 4)]);
        let sweep = Sweep { moves_dir: dir.clone(), tracked: vec![(1, 5, 100), (1, 9, 250), (1, 5, 400)], stale };
        assert_eq!(sweep_bundles(&sweep, 300, &*storage).unwrap(), 2);
        assert!(exists(1, 5) && !exists(1, 9) && !exists(2, 4) && exists(3, 7));
        assert_eq!(sweep_bundles(&sweep, 500, &*storage).unwrap(), 1, "the retried install's bundle goes once passed");
        assert!(!exists(1, 5) && exists(3, 7), "another core's bundle stays");
    }

    #[test]
    fn a_tail_round_trips_and_any_damage_is_refused() {
        let mut shard = shard_with_orders();
        let mut events = Vec::new();
        let place =
            PlaceOrder { key: orderd_protocol::IdempotencyKey::timed(2_000, 9), user: 9, product: 7, unit_price_cents: 100, qty: 1 };
        let placed = shard.apply(&Command::PlaceOrder(place), 2_000, &mut events);
        let adjusted = shard.apply(&Command::AdjustStock { product: 7, delta: -3 }, 2_001, &mut events);
        assert_eq!(events.len(), 2, "{placed:?} {adjusted:?}");
        let bytes = encode_tail(&events);
        assert_eq!(decode_tail(&bytes).unwrap(), events);
        assert_eq!(decode_tail(&encode_tail(&[])).unwrap(), []);
        for at in [0, 9, 17, 30, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(decode_tail(&bad).is_err(), "a flip at {at} passed");
        }
        assert!(decode_tail(&bytes[..bytes.len() - 2]).is_err());
    }

    #[test]
    fn control_records_round_trip_and_refuse_what_they_are_not() {
        for c in
            [Control::ShardInstalled { time_ms: 5, shard: 700, move_id: 12 }, Control::ShardReleased { time_ms: 6, shard: 1, move_id: 13 }]
        {
            assert!(is_control(c.kind()));
            assert_eq!(Control::decode(c.kind(), CONTROL_FORMAT, &c.encode()), Ok(c));
        }
        let body = Control::ShardReleased { time_ms: 6, shard: 1, move_id: 13 }.encode();
        assert!(Control::decode(KIND_SHARD_RELEASED, 2, &body).is_err());
        assert!(Control::decode(66, CONTROL_FORMAT, &body).is_err());
        assert!(Control::decode(KIND_SHARD_RELEASED, CONTROL_FORMAT, &body[..16]).is_err());
        let mut reserved = body;
        reserved[13] = 1;
        assert!(Control::decode(KIND_SHARD_RELEASED, CONTROL_FORMAT, &reserved).is_err());
        assert!(!is_control(crate::engine::event::KIND_STOCK_ADJUSTED));
        assert_eq!(parse_bundle_file_name(&bundle_file_name(42, 7)), Some((42, 7)));
        assert_eq!(parse_bundle_file_name("shard-1.orders"), None);
    }
}
