//! The data directory: its filesystem (`statfs`: a RAM filesystem loses
//! every acknowledged order on reboot), its measured `fdatasync` latency
//! (write + fdatasync of 4 KiB and 64 KiB, the sizes of a small and a
//! large group commit, in a temp file inside the directory), and its free
//! space against cores × `--max-log-bytes`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{cores_word, Check, Status, Target};
use crate::config::Durability;

/// Flushes timed per size.
pub const SAMPLES: usize = 200;

/// p99 flush latency above which the check warns. A `sync` reply waits for
/// the flush in flight and then its own, so its p99 is about twice the
/// disk's: above 0.5 ms, replies under 1 ms at p99 are out of reach.
pub const SLOW_P99: Duration = Duration::from_micros(500);

/// The whole measurement stops after this long (a slow disk still answers).
pub const TIME_BUDGET: Duration = Duration::from_secs(5);

/// What `statfs` says about a directory.
#[derive(Debug, Clone, Copy)]
pub struct FsInfo {
    /// `f_type`, the filesystem magic.
    pub magic: i64,
    /// Bytes available to an unprivileged user.
    pub available: u64,
    /// Bytes in the filesystem.
    pub total: u64,
}

/// `statfs(2)` on `path`.
pub fn statfs(path: &Path) -> std::io::Result<FsInfo> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    #[allow(unsafe_code)]
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string alive for the call and
    // `st` a valid, exclusive `statfs` the call fills in; nothing is kept.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bsize = st.f_bsize as u64;
    Ok(FsInfo { magic: st.f_type as i64, available: st.f_bavail as u64 * bsize, total: st.f_blocks as u64 * bsize })
}

/// A filesystem magic's name, and whether it keeps data only in RAM.
pub fn fs_name(magic: i64) -> (&'static str, bool) {
    match magic {
        0x0102_1994 => ("tmpfs", true),
        0x8584_58f6 => ("ramfs", true),
        0xEF53 => ("ext2/3/4", false),
        0x5846_5342 => ("xfs", false),
        0x9123_683E => ("btrfs", false),
        0x2FC1_2FC1 => ("zfs", false),
        0xF2F5_2010 => ("f2fs", false),
        0x794C_7630 => ("overlayfs", false),
        0x6969 => ("nfs", false),
        0x0102_1997 => ("9p", false),
        0x6573_5546 => ("fuse", false),
        _ => ("unknown", false),
    }
}

/// The directory itself if it exists, else its nearest existing ancestor
/// (serve creates the directory; host-check does not).
pub fn existing_dir(dir: &Path) -> Option<PathBuf> {
    let abs = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir().ok()?.join(dir) };
    abs.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

fn human(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

/// The disk checks.
pub fn checks(target: &Target) -> Vec<Check> {
    let args = &target.args;
    let Some(dir) = existing_dir(&args.site.data_dir) else {
        return vec![Check::new("data_dir", Status::Skip, format!("cannot resolve --data-dir {}", args.site.data_dir.display()))];
    };
    let note = if dir == args.site.data_dir || args.site.data_dir.is_dir() {
        String::new()
    } else {
        format!(" (not created yet; measured on {})", dir.display())
    };
    let info = match statfs(&dir) {
        Ok(i) => i,
        Err(e) => return vec![Check::new("data_dir", Status::Skip, format!("statfs {}: {e}", dir.display()))],
    };
    let mut checks = vec![filesystem(target, &info, &note), free_space(target, &info, &note)];
    match (target.live, probe_beside(&dir)) {
        // A live server's directory is its own: probe beside it.
        (Some(_), Some(parent)) => checks.extend(flush_latency(&parent, &format!(" (beside the live server's {})", dir.display()))),
        (Some(pid), None) => checks.push(
            Check::new(
                "fdatasync",
                Status::Skip,
                format!("{} is served by orderd (pid {pid}) and is a mount point: nothing beside it is on the same disk", dir.display()),
            )
            .fix("measure while the server is stopped, or on another directory of the same filesystem: orderd host-check --data-dir DIR"),
        ),
        (None, _) => checks.extend(flush_latency(&dir, &note)),
    }
    checks
}

/// The parent of `dir` when it is on the same filesystem (not a mount point).
fn probe_beside(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent()?;
    let (a, b) = (std::fs::metadata(dir).ok()?, std::fs::metadata(parent).ok()?);
    (a.dev() == b.dev()).then(|| parent.to_path_buf())
}

fn filesystem(target: &Target, info: &FsInfo, note: &str) -> Check {
    let (name, in_ram) = fs_name(info.magic);
    let dir = target.args.site.data_dir.display();
    if !in_ram {
        let status = if name == "nfs" || name == "9p" || name == "fuse" { Status::Warn } else { Status::Pass };
        let check = Check::new("data_fs", status, format!("{dir} is on {name} (magic 0x{:x}){note}", info.magic));
        return if status == Status::Warn {
            check.fix("put the data directory on a local disk filesystem (ext4, xfs): mapped logs and fdatasync over network filesystems are slow and weakly durable")
        } else {
            check
        };
    }
    let fix = "point --data-dir at a disk filesystem (ext4, xfs), e.g. /var/lib/orderd";
    match target.args.durability {
        Durability::Sync => Check::new(
            "data_fs",
            Status::Fail,
            format!("{dir} is on {name}{note}: with --durability sync every acknowledged order would still be lost on reboot (RAM only)"),
        )
        .fix(fix),
        Durability::Async => {
            Check::new("data_fs", Status::Warn, format!("{dir} is on {name}{note}: the log lives in RAM and is lost on reboot")).fix(fix)
        }
    }
}

fn free_space(target: &Target, info: &FsInfo, note: &str) -> Check {
    let cores = target.cpus.len().max(1) as u64;
    let bound = target.args.max_log_bytes.saturating_mul(cores);
    let detail = format!(
        "{} free of {} for logs bounded at {} × {} = {}{note}",
        human(info.available),
        human(info.total),
        cores_word(cores as usize),
        human(target.args.max_log_bytes),
        human(bound)
    );
    if info.available >= bound {
        Check::new("free_space", Status::Pass, detail)
    } else {
        let fitting = info.available / cores;
        Check::new("free_space", Status::Warn, format!("{detail}: the disk would fill before the logs reach their bound"))
            .fix(format!("free space on that filesystem, or lower --max-log-bytes to at most {fitting} ({} per core)", human(fitting)))
    }
}

/// A temp file that is removed when dropped.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Time `SAMPLES` write + fdatasync rounds of `size` bytes, appended one
/// after the other into a region written and synced first, as group commits
/// append into a zero-filled segment; sorted durations.
fn time_flushes(tmp: &mut TempFile, size: usize, deadline: Instant) -> std::io::Result<Vec<Duration>> {
    use std::os::unix::fs::FileExt;
    let buf = vec![0xA5u8; size];
    let mut times = Vec::with_capacity(SAMPLES);
    // Allocate and write the region first; do not time it.
    let region = vec![0u8; size * SAMPLES];
    tmp.file.write_all_at(&region, 0)?;
    tmp.file.sync_data()?;
    for i in 0..SAMPLES {
        if Instant::now() > deadline {
            break;
        }
        let start = Instant::now();
        tmp.file.write_all_at(&buf, (i * size) as u64)?;
        tmp.file.sync_data()?;
        times.push(start.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

/// The value at `q` (0..=1) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

fn flush_latency(dir: &Path, note: &str) -> Vec<Check> {
    let path = dir.join(format!(".orderd-host-check-{}.tmp", std::process::id()));
    let file = match OpenOptions::new().create_new(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            return vec![Check::new("fdatasync", Status::Fail, format!("cannot create a file in {}: {e}", dir.display()))
                .fix("make the data directory writable by the user orderd runs as (run host-check as that user, e.g. sudo -u orderd)")]
        }
    };
    let mut tmp = TempFile { path, file };
    let deadline = Instant::now() + TIME_BUDGET;
    let mut parts = Vec::new();
    let mut worst = Duration::ZERO;
    for size in [4096usize, 65536] {
        match time_flushes(&mut tmp, size, deadline) {
            Ok(times) if !times.is_empty() => {
                let (p50, p99) = (quantile(&times, 0.5), quantile(&times, 0.99));
                worst = worst.max(p99);
                parts.push(format!("{} KiB: p50 {} p99 {} (n={})", size / 1024, micros(p50), micros(p99), times.len()));
            }
            Ok(_) => parts.push(format!("{} KiB: not measured (time budget spent)", size / 1024)),
            Err(e) => {
                return vec![Check::new("fdatasync", Status::Fail, format!("write + fdatasync in {} failed: {e}", dir.display()))
                    .fix("check the disk and the filesystem (dmesg)")]
            }
        }
    }
    drop(tmp);
    let detail = if note.is_empty() {
        format!("write+fdatasync in {}: {}", dir.display(), parts.join("; "))
    } else {
        format!("write+fdatasync{note}: {}", parts.join("; "))
    };
    if worst > SLOW_P99 {
        vec![Check::new(
            "fdatasync",
            Status::Warn,
            format!("{detail}: p99 above {}; a --durability sync reply waits for up to two flushes, so expect its p99 near twice that", micros(SLOW_P99)),
        )
        .fix("use a local NVMe/SSD with power-loss protection (flushes in tens of µs), keep other writers off that disk, or accept --durability async")]
    } else {
        vec![Check::new("fdatasync", Status::Pass, detail)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_names() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&d, 0.5), Duration::from_micros(51));
        assert_eq!(quantile(&d, 0.99), Duration::from_micros(99));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
        assert_eq!(fs_name(0x0102_1994), ("tmpfs", true));
        assert_eq!(fs_name(0xEF53).0, "ext2/3/4");
    }
}
