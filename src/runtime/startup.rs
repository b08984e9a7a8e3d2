//! Everything an operator can get wrong, checked before any executor
//! starts: the CPUs asked for, the data directory's lock and server id, the
//! locked-memory limit io_uring needs; and [`StartError`], what the
//! operator reads when the start fails.

use std::fs::File;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use glommio::CpuSet;

use super::core::now_ms;
use crate::config::CoreSelection;
use crate::log::RecoveryError;

/// glommio's default `io_memory` per executor: what we use when the
/// locked-memory limit allows it.
pub const DEFAULT_IO_MEMORY: usize = 10 << 20;

/// Below this `io_memory`, glommio refuses to start (`MemLockLimit`).
pub const MIN_IO_MEMORY: usize = 512 << 10;

/// Each executor registers its `io_memory` in this many rings.
pub const RINGS_PER_EXECUTOR: usize = 3;

/// Why the server could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The cluster's map could not be read or does not fit this node.
    #[error("joining the cluster: {0}")]
    Cluster(String),
    /// Another process listens on the port.
    #[error("{addr} is already in use by {}: stop it, or pick another --listen port (core i listens on port + i)", holder.as_deref().unwrap_or("another process"))]
    PortInUse {
        /// The address.
        addr: SocketAddr,
        /// The process that holds it, when `/proc` says (`pid N (name)`).
        holder: Option<String>,
    },
    /// The listen IP is not an address of this machine.
    #[error("cannot listen on {addr}: the address is not available on this machine (check --listen)")]
    AddrNotAvailable {
        /// The address.
        addr: SocketAddr,
    },
    /// Any other bind failure.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics port is taken (by another process or by one of the
    /// order ports: core i listens on --listen port + i).
    #[error("metrics address {addr} is already in use (by another process, or by an order port: core i listens on --listen port + i): pick another --metrics-listen, or pass --no-metrics")]
    MetricsPortInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Any other failure to bind the metrics address.
    #[error("cannot listen for metrics on {addr}: {source} (check --metrics-listen, or pass --no-metrics)")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory cannot be created or written.
    #[error("data directory {path} is not writable: {source} (fix its permissions or pass another --data-dir)")]
    DataDirNotWritable {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--data-dir` names something that is not a directory.
    #[error("--data-dir {path} is not a directory: pass a directory (it is created if missing)")]
    DataDirNotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another orderd holds the data directory.
    #[error("data directory {path} is in use by another orderd ({holder} holds its lock); stop it or pass another --data-dir")]
    DataDirLocked {
        /// The directory.
        path: PathBuf,
        /// Who holds the lock, as found in /proc/locks.
        holder: String,
    },
    /// `--cores` names a CPU that is not online.
    #[error("--cores: CPU {cpu} is out of range; online CPUs are {online:?}")]
    CoreOutOfRange {
        /// The CPU asked for.
        cpu: usize,
        /// The CPUs online.
        online: Vec<usize>,
    },
    /// The CPU topology could not be read.
    #[error("cannot read the online CPUs: {0}")]
    Topology(String),
    /// `RLIMIT_MEMLOCK` is too low for io_uring.
    #[error(
        "locked-memory limit (RLIMIT_MEMLOCK) is {limit} bytes, but io_uring needs at least {needed} bytes for {cores} cores; \
         raise it with `ulimit -l {needed_kib}` (or `LimitMEMLOCK=` in the systemd unit), or run on fewer --cores"
    )]
    MemlockTooLow {
        /// The current soft limit.
        limit: u64,
        /// The least that works.
        needed: u64,
        /// In KiB, for `ulimit -l`.
        needed_kib: u64,
        /// Executors asked for.
        cores: usize,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signals(std::io::Error),
    /// The executors could not be started.
    #[error("cannot start the per-core executors: {0}")]
    Executors(String),
    /// The log could not be recovered.
    #[error("cannot recover the log: {0}")]
    Recovery(#[from] RecoveryError),
    /// A core stopped with an error.
    #[error("core failed: {0}")]
    CoreFailed(String),
}

/// The CPU ids to run on.
pub(super) fn select_cpus(selection: &CoreSelection) -> Result<Vec<usize>, StartError> {
    let online = CpuSet::online().map_err(|e| StartError::Topology(e.to_string()))?;
    let mut ids: Vec<usize> = online.iter().map(|l| l.cpu).collect();
    ids.sort_unstable();
    ids.dedup();
    match selection {
        CoreSelection::All => Ok(ids),
        CoreSelection::List(list) => {
            if let Some(&cpu) = list.iter().find(|c| !ids.contains(c)) {
                return Err(StartError::CoreOutOfRange { cpu, online: ids });
            }
            Ok(list.clone())
        }
    }
}

/// Create (if needed) and lock the data directory; read or create the
/// server id. The returned handle holds the lock until it is dropped.
///
/// The lock is an exclusive `flock` on the directory itself, not on a file
/// in it: a lock file can be deleted while its server runs (`rm
/// orderd.lock`), and the next server would then lock a new file of the
/// same name and write the same logs. A directory cannot be removed while
/// it holds the logs, so its lock cannot be defeated that way. (Earlier
/// builds locked a file `orderd.lock`; a leftover one is ignored.)
pub(super) fn lock_data_dir(dir: &Path) -> Result<(File, u64), StartError> {
    let not_writable = |source| StartError::DataDirNotWritable { path: dir.to_path_buf(), source };
    if dir.exists() && !dir.is_dir() {
        return Err(StartError::DataDirNotADirectory { path: dir.to_path_buf() });
    }
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let lock = File::open(dir).map_err(not_writable)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = match crate::procfs::lock_holder(dir) {
                crate::procfs::Holder::Live { pid, .. } => format!("pid {pid}"),
                _ => "a process that just stopped".to_owned(),
            };
            return Err(StartError::DataDirLocked { path: dir.to_path_buf(), holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(not_writable(e)),
    }
    let id_path = dir.join("server-id");
    let server_id = match std::fs::read_to_string(&id_path) {
        Ok(text) => text.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(not_writable(e)),
    };
    let server_id = match server_id {
        Some(id) => id,
        None => {
            let id = fresh_id();
            std::fs::write(&id_path, format!("{id}\n")).map_err(not_writable)?;
            id
        }
    };
    Ok((lock, server_id))
}

fn fresh_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// The soft `RLIMIT_MEMLOCK`, or `None` when unlimited.
pub(super) fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` through a valid, exclusive pointer
    // to a live local and reads nothing else.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(limit.rlim_cur)
    }
}

/// The `io_memory` per executor that fits `limit` for `cores` executors.
pub(crate) fn io_memory_for(cores: usize, limit: Option<u64>) -> Result<usize, StartError> {
    let Some(limit) = limit else { return Ok(DEFAULT_IO_MEMORY) };
    let per_executor = (limit / (RINGS_PER_EXECUTOR * cores) as u64) as usize & !4095;
    if per_executor >= DEFAULT_IO_MEMORY {
        return Ok(DEFAULT_IO_MEMORY);
    }
    if per_executor < MIN_IO_MEMORY {
        let needed = (MIN_IO_MEMORY * RINGS_PER_EXECUTOR * cores) as u64;
        return Err(StartError::MemlockTooLow { limit, needed, needed_kib: needed / 1024, cores });
    }
    tracing::warn!(memlock_limit = limit, io_memory = per_executor, "{}", memlock_advice(cores));
    Ok(per_executor)
}

/// What to raise the locked-memory limit to for full io_uring buffers on
/// `cores` executors: `ulimit -l` takes KiB, systemd's `LimitMEMLOCK` bytes.
#[must_use]
pub fn memlock_advice(cores: usize) -> String {
    let bytes = DEFAULT_IO_MEMORY * RINGS_PER_EXECUTOR * cores;
    format!(
        "io_memory lowered from {DEFAULT_IO_MEMORY} bytes to fit RLIMIT_MEMLOCK; for full io_uring buffers raise it to {bytes} bytes: \
         `ulimit -l {}` (KiB) or `LimitMEMLOCK={bytes}` in the systemd unit",
        bytes / 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memlock_advice_gives_ulimit_kib_and_systemd_bytes() {
        let advice = memlock_advice(2);
        let bytes = DEFAULT_IO_MEMORY * RINGS_PER_EXECUTOR * 2;
        assert!(advice.contains(&format!("`ulimit -l {}` (KiB)", bytes / 1024)), "{advice}");
        assert!(advice.contains(&format!("LimitMEMLOCK={bytes}")), "{advice}");
    }

    #[test]
    fn io_memory_fits_the_memlock_limit() {
        assert_eq!(io_memory_for(2, None).unwrap(), DEFAULT_IO_MEMORY);
        assert_eq!(io_memory_for(1, Some(1 << 40)).unwrap(), DEFAULT_IO_MEMORY);
        let m = io_memory_for(2, Some(8 << 20)).unwrap();
        assert!(m * RINGS_PER_EXECUTOR * 2 <= 8 << 20 && m >= MIN_IO_MEMORY);
        assert!(matches!(io_memory_for(4, Some(1 << 20)), Err(StartError::MemlockTooLow { .. })));
    }
}
