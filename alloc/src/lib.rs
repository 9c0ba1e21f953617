//! The gateway's allocator: mimalloc, built without transparent huge pages, as [`MiMalloc`], and
//! [`release_freed_memory`], which hands what a large configuration load freed back to the
//! operating system at once.
//!
//! mimalloc keeps freed pages for a while (its purge delay) and returns them only when the thread
//! that owns them next calls it. A configuration of 10,000 keys parsed on a loader thread leaves
//! megabytes behind on that thread, which then sits idle: without a collection the gateway idles
//! on part of its load's peak. Setting `MIMALLOC_PURGE_DELAY=0` for the whole process returns
//! pages at once everywhere, and costs the request path throughput (docs/capacity.md); a
//! collection after each load costs nothing per request.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block of mimalloc's has whatever its size: blocks are whole words, laid
/// out from a 16-byte aligned page start. (16 bytes holds only for some sizes: a 24-byte block
/// may sit 8 bytes off.) A layout asking no more is served by the plain entry points.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

fn plain(align: usize) -> bool {
    align <= PLAIN_ALIGN
}

/// mimalloc as the global allocator, through its plain entry points whenever the layout allows.
///
/// The `mimalloc` crate calls the aligned entry points for every layout, and mimalloc 3 serves
/// those on a fast path only for blocks up to 1 KiB: every larger block (a request's future, a
/// read buffer, a header map) took the general aligned path, about 180 instructions more, a
/// dozen times per request. Plain `malloc` has a fast path for every size class.
pub struct MiMalloc;

// SAFETY: each method hands the layout's size (and, past `PLAIN_ALIGN`, its alignment) to the
// mimalloc entry point that guarantees a block of at least that size and alignment, or null;
// blocks are freed and resized only by mimalloc, which owns them (`mi_free` and `mi_realloc`
// take any block it returned, aligned or not).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

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

    /// Every layout gets a block of its size at its alignment, through either entry point:
    /// zeroed when asked, its contents kept when it grows or shrinks (a plain block resized past
    /// an alignment it never had would show here), and the aligned blocks stay aligned.
    #[test]
    fn blocks_have_the_layouts_asked_and_keep_their_contents() {
        let sizes = [1usize, 3, 8, 24, 40, 100, 1_000, 1_025, 4_096, 9_000, 70_000, 1 << 21];
        let aligns = [1usize, 2, 4, 8, 16, 32, 64, 128, 4_096];
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for &size in &sizes {
            for &align in &aligns {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY (test): each block is written and read within its size, resized with
                // its current layout and freed once.
                #[allow(unsafe_code)]
                unsafe {
                    let zeroed = std::alloc::alloc_zeroed(layout);
                    assert!(!zeroed.is_null(), "no zeroed block for {layout:?}");
                    assert_eq!(zeroed as usize % align, 0, "zeroed block of {layout:?} misaligned");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0), "{layout:?} not zeroed");
                    std::alloc::dealloc(zeroed, layout);

                    let block = std::alloc::alloc(layout);
                    assert!(!block.is_null(), "no block for {layout:?}");
                    assert_eq!(block as usize % align, 0, "block of {layout:?} misaligned");
                    for i in 0..size {
                        *block.add(i) = (i % 251) as u8;
                    }
                    // Grown, then shrunk below its first size.
                    let mut block = block;
                    let mut current = size;
                    for new_size in [size * 3 + 5, size.div_ceil(2)] {
                        let old = Layout::from_size_align(current, align).expect("a valid layout");
                        block = std::alloc::realloc(block, old, new_size);
                        assert!(!block.is_null(), "no block resizing {old:?} to {new_size}");
                        assert_eq!(block as usize % align, 0, "{old:?} resized to {new_size} misaligned");
                        let kept = size.min(new_size);
                        let contents = std::slice::from_raw_parts(block, kept);
                        assert!(
                            contents.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
                            "{old:?} resized to {new_size} lost its contents"
                        );
                        current = new_size;
                    }
                    std::alloc::dealloc(block, Layout::from_size_align(current, align).expect("a valid layout"));
                }
            }
            blocks.push(vec![size as u8; size.min(10_000)]);
        }
        for (block, &size) in blocks.iter().zip(&sizes) {
            assert!(block.iter().all(|&b| b == size as u8), "a live block of {size} changed");
        }
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
