//! What `/proc` says about other processes: who listens on a TCP port, and
//! who holds a file lock. Used where orderd must tell its own server from a
//! stranger: the listener's retry after a crash (`runtime::listener`) and
//! `orderd host-check` beside a live server.

/// Who holds a TCP port or a lock, as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A live process: its pid and command name.
    Live {
        /// Its pid.
        pid: u32,
        /// Its command name (`/proc/PID/comm`).
        name: String,
    },
    /// Nothing live holds it (a socket bound and not listening, or one
    /// torn down between the bind and this look).
    Dead,
    /// `/proc` could not tell (not Linux, no permission).
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Live { pid, name } => write!(f, "pid {pid} ({name})"),
            Holder::Dead => f.write_str("no live process"),
            Holder::Unknown => f.write_str("an unknown process"),
        }
    }
}

fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// The holder of the listening socket on `port` (any address), from
/// `/proc/net/tcp{,6}` and the processes' descriptors.
#[must_use]
pub fn port_holder(port: u16) -> Holder {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { return Holder::Unknown };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else { continue };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "0A" && *inode != "0" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return Holder::Dead;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return Holder::Unknown };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str())) {
                return Holder::Live { pid, name: command_name(pid) };
            }
        }
    }
    Holder::Dead
}

/// The process holding a `flock` on the file or directory at `path`, from
/// `/proc/locks` (matched by its inode).
#[must_use]
pub fn lock_holder(path: &std::path::Path) -> Holder {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return Holder::Dead };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else { return Holder::Unknown };
    let inode = meta.ino().to_string();
    for line in locks.lines() {
        // 1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(pid), Some(device_inode)) = (fields.get(4), fields.get(5)) else { continue };
        if device_inode.rsplit(':').next() == Some(inode.as_str()) {
            if let Ok(pid) = pid.parse::<u32>() {
                return Holder::Live { pid, name: command_name(pid) };
            }
        }
    }
    Holder::Dead
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_this_process_listens_on_is_held_by_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(matches!(port_holder(port), Holder::Live { pid, .. } if pid == std::process::id()));
        drop(listener);
        assert_eq!(port_holder(port), Holder::Dead);
    }

    #[test]
    fn a_lock_this_process_holds_is_held_by_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orderd.lock");
        let file = std::fs::File::create(&path).unwrap();
        assert_eq!(lock_holder(&path), Holder::Dead);
        file.lock().unwrap();
        assert!(matches!(lock_holder(&path), Holder::Live { pid, .. } if pid == std::process::id()));
        // A directory's lock too (the data directory's).
        assert_eq!(lock_holder(dir.path()), Holder::Dead);
        let handle = std::fs::File::open(dir.path()).unwrap();
        handle.lock().unwrap();
        assert!(matches!(lock_holder(dir.path()), Holder::Live { pid, .. } if pid == std::process::id()));
    }
}
