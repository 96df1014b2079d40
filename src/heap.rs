//! The C allocator's settings for a room host, and a heap kept faulted in
//! ahead of new rooms.
//!
//! A new room's QuickJS heap is ~210 KiB of memory the process has never
//! touched, and on a virtual machine the first touch of each 4 KiB page is
//! the expensive part: faulting in 208 KiB page by page takes ~130 µs here
//! (`MADV_POPULATE_WRITE` of the same range ~100 µs), a quarter of a cold
//! start. The warm thread ([`crate::engine::warm`]) keeps [`Config::warm_heap`]
//! bytes at the top of the heap faulted in, at idle priority, so a room that
//! starts finds its pages there.
//!
//! [`Config::warm_heap`]: crate::Config::warm_heap

/// Tunes glibc's allocator for a room host (the `roomhost` binary calls it
/// first thing; an embedding program may too, before it starts threads),
/// unless the environment sets the same knobs (`MALLOC_ARENA_MAX`;
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`). Returns whether the
/// heap is set up for [`prefault`] to help: without it, keep `warm_heap` 0.
///
/// - One arena: glibc gives each thread that allocates its own arena and
///   grows a thread arena one `mprotect` call at a time; a new room (a fresh
///   QuickJS heap, 4 KiB at a time) made ~60 such calls, 15% of a cold
///   start's CPU in a profile. The main arena grows by `brk`, and with few
///   threads one arena costs no contention (each thread's tcache still
///   serves small allocations without the lock).
/// - Blocks up to 1 MiB from the heap, not from their own mappings, and the
///   heap's top given back only above 2 MiB: what [`prefault`] faults in
///   stays where the next rooms allocate.
pub fn tune_for_rooms() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        let heap_ours = unset("MALLOC_MMAP_THRESHOLD_") && unset("MALLOC_TRIM_THRESHOLD_");
        // SAFETY: mallopt only tunes the allocator.
        unsafe {
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
            if heap_ours {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
            }
        }
        heap_ours
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Blocks up to this size come from the heap (glibc's default starts at
/// 128 KiB and moves).
const MMAP_THRESHOLD: usize = 1 << 20;
/// The heap's free top is given back to the system above this.
const TRIM_THRESHOLD: usize = 2 << 20;
/// The largest `warm_heap` that [`tune_for_rooms`] keeps in the heap.
pub const MAX_WARM_HEAP: usize = MMAP_THRESHOLD / 2;

/// Faults in `bytes` of free heap: allocates them (with [`tune_for_rooms`],
/// from the top of the heap), has the kernel populate their pages without
/// changing them, and frees them, so the next allocations there take no page
/// faults. Pages already present cost a page-table walk.
pub fn prefault(bytes: usize) {
    #[cfg(target_os = "linux")]
    if bytes > 0 {
        use std::sync::atomic::{AtomicBool, Ordering};
        static NO_POPULATE: AtomicBool = AtomicBool::new(false);
        const PAGE: usize = 4096;
        // SAFETY: the block is ours between malloc and free; madvise only
        // populates page tables of whole pages inside it (contents kept),
        // and without MADV_POPULATE_WRITE (Linux < 5.14) one byte per page
        // of our own block is written instead.
        unsafe {
            let block = libc::malloc(bytes).cast::<u8>();
            if block.is_null() {
                return;
            }
            let start = (block as usize).next_multiple_of(PAGE);
            let end = (block as usize + bytes) & !(PAGE - 1);
            if end > start {
                let populated = !NO_POPULATE.load(Ordering::Relaxed)
                    && libc::madvise(
                        start as *mut libc::c_void,
                        end - start,
                        libc::MADV_POPULATE_WRITE,
                    ) == 0;
                if !populated {
                    NO_POPULATE.store(true, Ordering::Relaxed);
                    for page in (start..end).step_by(PAGE) {
                        (page as *mut u8).write_volatile(0);
                    }
                }
            }
            libc::free(block.cast());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Gives the heap's free pages back to the system (glibc's `malloc_trim`),
/// wherever they are in the heap, not only at its top. After many rooms
/// hibernate (each frees a ~200 KiB JavaScript heap in the middle of the
/// process heap) RSS would otherwise stay at its high-water mark. Holds the
/// allocator's lock while it walks the free lists (milliseconds for a heap
/// of hundreds of MiB), so call it rarely. Returns whether memory was
/// released.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
