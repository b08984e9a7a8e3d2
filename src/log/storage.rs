//! The storage seam: the file-system calls whose completion makes the log
//! durable, behind a trait with one real implementation ([`RealStorage`])
//! and a simulated one (`crate::sim::disk::SimDisk`), which records what
//! each call made durable so that a simulated crash can drop everything
//! else.
//!
//! Writes themselves (appends through the mapping, `fallocate`, file
//! creation, renames, removals) stay plain calls: none of them is durable
//! until one of these returns, and the durability rules of the log
//! (`writer.rs`, `recovery.rs`) are stated in terms of these calls alone:
//! - [`Storage::sync_data`] makes the bytes written to a file so far
//!   durable (`fdatasync`);
//! - [`Storage::sync_all`] does that and makes its length durable (`fsync`);
//! - [`Storage::sync_dir`] makes a directory's entries durable: files
//!   created, renamed or removed in it since its last sync.
//!
//! A failed sync cannot be retried safely (the kernel may have dropped the
//! dirty pages and cleared the error): callers stop (`runtime::commit`).

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The durability calls of the log (see the module docs).
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// `fdatasync(file)`.
    ///
    /// # Errors
    /// The call's error; the file's unsynced writes may then be lost.
    fn sync_data(&self, file: &File) -> io::Result<()>;

    /// `fsync(file)`.
    ///
    /// # Errors
    /// As [`Storage::sync_data`].
    fn sync_all(&self, file: &File) -> io::Result<()>;

    /// `fsync` of the directory `dir`.
    ///
    /// # Errors
    /// The call's error; entries changed since the last sync may be lost.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A storage handle shared by a core's writer, its flusher thread and the
/// segment preparer.
pub type SharedStorage = Arc<dyn Storage>;

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealStorage;

impl RealStorage {
    /// A shared handle to the real file system.
    #[must_use]
    pub fn shared() -> SharedStorage {
        Arc::new(RealStorage)
    }
}

impl Storage for RealStorage {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|d| d.sync_all())
    }
}
