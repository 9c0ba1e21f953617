//! The gateway's allocator: mimalloc, built without transparent huge pages, and
//! [`release_freed_memory`], which hands what a large configuration load freed back to the
//! operating system at once.
//!
//! mimalloc keeps freed pages for a while (its purge delay) and returns them only when the thread
//! that owns them next calls it. A configuration of 10,000 keys parsed on a loader thread leaves
//! megabytes behind on that thread, which then sits idle: without a collection the gateway idles
//! on part of its load's peak. Setting `MIMALLOC_PURGE_DELAY=0` for the whole process returns
//! pages at once everywhere, and costs the request path throughput (docs/capacity.md); a
//! collection after each load costs nothing per request.

pub use mimalloc::MiMalloc;

/// Frees this thread's empty pages and purges, without waiting for the purge delay, every page
/// already free in this thread's segments, in abandoned segments (threads that ended), and in
/// the process's arenas. Call it on the thread that did a large piece of one-off work, once the
/// work's results are in place; it takes a few milliseconds for a heap of tens of megabytes.
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and reads no caller state; mimalloc allows it from
    // any thread at any time, concurrently with allocation on other threads.
    #[allow(unsafe_code)]
    unsafe {
        // A pass purges each visited segment's free spans before it frees the visited page, so
        // pages the first pass frees are purged by the second.
        libmimalloc_sys::mi_collect(true);
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: MiMalloc = MiMalloc;

    /// Resident memory of this process, in bytes (Linux).
    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
        let pages: usize =
            statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm's resident pages");
        pages * 4096
    }

    /// What a load freed leaves the process once collected, while what is still held stays
    /// intact (a collection that released live pages would corrupt them).
    #[test]
    fn collection_returns_freed_memory_and_keeps_what_is_held() {
        let kept: Vec<Vec<u8>> = (0..2_000).map(|i| vec![(i % 251) as u8; 1 + i % 700]).collect();
        // About 80 MB in blocks of the sizes a parsed configuration is made of, written so that
        // every page is resident, then freed.
        let garbage: Vec<Vec<u8>> = (0..40_000).map(|i| vec![7; 64 + i % 4_000]).collect();
        drop(garbage);
        let before = resident_bytes();
        release_freed_memory();
        let after = resident_bytes();
        assert!(
            before.saturating_sub(after) > 40 << 20,
            "collection returned {} KB of the ~80 MB freed ({} KB resident before, {} KB after)",
            before.saturating_sub(after) >> 10,
            before >> 10,
            after >> 10
        );
        for (i, block) in kept.iter().enumerate() {
            assert_eq!(block.len(), 1 + i % 700);
            assert!(block.iter().all(|&b| b == (i % 251) as u8), "block {i} changed");
        }
        let again: Vec<u64> = (0..100_000).collect();
        assert_eq!(again.iter().sum::<u64>(), 99_999 * 100_000 / 2);
    }
}
