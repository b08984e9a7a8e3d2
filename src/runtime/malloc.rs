//! Process-wide allocator settings for a server that grows large tables.
//!
//! glibc serves allocations above `M_MMAP_THRESHOLD` with their own
//! mappings, and `realloc` of such a block is an `mremap`: the pages move,
//! nothing is copied. By default the threshold is *dynamic*: freeing a
//! mapped block raises it to that block's size (up to 32 MiB), after which
//! blocks of that size come from the heap and every `Vec` doubling copies
//! its contents. A shard's order records grow by doubling; measured here
//! (`cargo bench --bench engine_growth`), the 16 MiB copy at 262,144 orders
//! stalled the core for 8 ms. A fixed threshold switches the dynamic rule
//! off, so growth stays a page-table move.

/// Threshold above which allocations get their own mapping.
const MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;

/// Fixes glibc's mmap threshold (see the module docs). Call once at start,
/// before the tables grow. A no-op where the C library is not glibc.
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes the allocator's parameters; glibc
        // takes its own lock, so it is safe to call with threads running.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        if ok != 1 {
            tracing::warn!("cannot fix the allocator's mmap threshold; growing shards may copy their tables (ms stalls)");
        }
    }
}
