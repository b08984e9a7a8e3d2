//! The layout manifest: `log-manifest` in the data directory records how
//! many cores and shards wrote the logs. Each core's log holds the events of
//! the shards that core owned (shard `s` on core `s % cores`), so a start
//! with another core or shard count would route events to the wrong shards;
//! it is refused with both numbers ([`RecoveryError::LayoutMismatch`]).
//!
//! ```text
//! orderd-log-manifest 1
//! cores 2
//! shards 64
//! ```

use std::io::ErrorKind;
use std::path::Path;

use super::error::{LogError, RecoveryError};
use super::segment::sync_dir;
use super::storage::Storage;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "log-manifest";

/// The layout a data directory was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Cores (one log each).
    pub cores: usize,
    /// Shards.
    pub shards: u32,
}

impl Layout {
    fn render(self) -> String {
        format!("orderd-log-manifest 1\ncores {}\nshards {}\n", self.cores, self.shards)
    }

    fn parse(text: &str) -> Result<Layout, String> {
        let mut lines = text.lines();
        if lines.next() != Some("orderd-log-manifest 1") {
            return Err("first line is not `orderd-log-manifest 1`".into());
        }
        let mut value = |name: &str| -> Result<u64, String> {
            let line = lines.next().ok_or(format!("missing `{name}` line"))?;
            line.strip_prefix(name).and_then(|v| v.trim().parse().ok()).ok_or(format!("expected `{name} <number>`, found {line:?}"))
        };
        let cores = value("cores")?;
        let shards = value("shards")?;
        Ok(Layout { cores: usize::try_from(cores).map_err(|e| e.to_string())?, shards: u32::try_from(shards).map_err(|e| e.to_string())? })
    }
}

/// Checks the manifest of `data_dir` against `layout`, or writes it (and
/// syncs it) when there is none and the directory holds no core log yet (a
/// new data directory). Returns whether it existed. A directory with core
/// logs and no manifest is refused and left as it is: the layout of those
/// logs cannot be known, and guessing it loses data.
///
/// # Errors
/// [`RecoveryError::LayoutMismatch`], [`RecoveryError::ManifestMissing`],
/// [`RecoveryError::BadManifest`], or a file error.
pub fn check_or_write(storage: &dyn Storage, data_dir: &Path, layout: Layout) -> Result<bool, RecoveryError> {
    let path = data_dir.join(MANIFEST_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let written = Layout::parse(&text).map_err(|reason| RecoveryError::BadManifest { path: path.clone(), reason })?;
            if written != layout {
                return Err(RecoveryError::LayoutMismatch {
                    path,
                    written_cores: written.cores,
                    written_shards: written.shards,
                    cores: layout.cores,
                    shards: layout.shards,
                });
            }
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let found = core_logs(data_dir).map_err(|source| LogError::Io { op: "list", path: data_dir.to_path_buf(), source })?;
            if !found.is_empty() {
                return Err(RecoveryError::ManifestMissing { path, found });
            }
            let tmp = data_dir.join(format!("{MANIFEST_FILE}.tmp"));
            let io = |op, p: &Path| {
                let p = p.to_path_buf();
                move |source| LogError::Io { op, path: p, source }
            };
            std::fs::write(&tmp, layout.render()).map_err(io("write", &tmp))?;
            std::fs::File::open(&tmp).and_then(|f| storage.sync_all(&f)).map_err(io("fsync", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
            sync_dir(storage, data_dir)?;
            Ok(false)
        }
        Err(source) => Err(LogError::Io { op: "read", path, source }.into()),
    }
}

/// The names of the core log directories (`core-NNNN`) in `data_dir`, sorted.
fn core_logs(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_core = name.strip_prefix("core-").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_core && entry.file_type()?.is_dir() {
            found.push(name);
        }
    }
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_checked_and_a_change_is_refused_with_both_numbers() {
        let dir = tempfile::tempdir().unwrap();
        check_or_write(&crate::log::RealStorage, dir.path(), Layout { cores: 2, shards: 64 }).unwrap();
        check_or_write(&crate::log::RealStorage, dir.path(), Layout { cores: 2, shards: 64 }).unwrap();
        let err = check_or_write(&crate::log::RealStorage, dir.path(), Layout { cores: 1, shards: 64 }).unwrap_err();
        assert!(matches!(err, RecoveryError::LayoutMismatch { written_cores: 2, cores: 1, .. }));
        let text = err.to_string();
        assert!(text.contains("2 cores") && text.contains("1 core and"), "{text}");
    }

    #[test]
    fn core_logs_without_a_manifest_are_refused_naming_them_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for core in ["core-0000", "core-0001"] {
            std::fs::create_dir(dir.path().join(core)).unwrap();
        }
        std::fs::write(dir.path().join("core-notes"), b"not a log").unwrap();
        let err = check_or_write(&crate::log::RealStorage, dir.path(), Layout { cores: 1, shards: 32 }).unwrap_err();
        let RecoveryError::ManifestMissing { ref found, .. } = err else { panic!("{err}") };
        assert_eq!(found, &["core-0000", "core-0001"]);
        let text = err.to_string();
        assert!(text.contains("core-0000, core-0001") && text.contains("cores 2"), "{text}");
        assert!(!dir.path().join(MANIFEST_FILE).exists(), "the manifest is not written on a refusal");
    }
}
