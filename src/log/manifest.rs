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
/// syncs it) when there is none. Returns whether it existed.
///
/// # Errors
/// [`RecoveryError::LayoutMismatch`], [`RecoveryError::BadManifest`], or a
/// file error.
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
}
