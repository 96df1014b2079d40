//! Each QuickJS runtime's memory comes from mappings of its own, not from the
//! process heap, and goes back to the system whole when the runtime drops.
//!
//! Why: a room's runtime is most of a resident room's memory, and the room
//! frees it when it hibernates while its channels, presence and connections
//! stay. From the shared heap, the small blocks allocated meanwhile by
//! everything else (other rooms' structures, connections, the hub) sat
//! between the runtimes' blocks, and after the runtimes were freed they kept
//! the pages around them resident: ~16 KiB per hibernated room that
//! `malloc_trim` could not give back. Here a dropped runtime unmaps its
//! chunks, and the process heap holds only the long-lived Rust side.
//!
//! QuickJS already serves objects up to ~500 bytes from 4 KiB arenas of its
//! own, so what reaches this allocator is those arenas, larger blocks and
//! the runtime itself. Blocks are carved from the current chunk (bump) and
//! kept on a free list per size class when freed, for the same runtime to
//! reuse; blocks over [`MAX_CLASS`] come from the C allocator. A runtime is
//! used by one thread at a time (rquickjs holds its lock around every call),
//! so nothing here locks.

use std::ptr;

/// Bytes before each block's user data: the block's size, with [`LARGE`]
/// set for blocks from the C allocator. It keeps the data 8-aligned, as
/// QuickJS asks (`JS_ARENA_ALIGN`).
const HEADER: usize = 8;
const ALIGN: usize = 8;
/// The header flag of a block from the C allocator.
const LARGE: usize = 1;
/// QuickJS's arena (4 KiB) with our header: the commonest request by far,
/// so it has a class of its own, not 12% more from the geometric classes.
const ARENA_BLOCK: usize = 4096 + HEADER;
/// Classes up to 256 bytes step by 16; above, eight per power of two.
const SMALL_STEP: usize = 16;
const SMALL_CLASSES: usize = 256 / SMALL_STEP;
/// The largest block (header included) served from the chunks.
const MAX_CLASS: usize = 256 << 10;
/// The geometric classes from 257 bytes to [`MAX_CLASS`]: 8 per doubling,
/// so a block wastes at most an eighth.
const STEPS: usize = 8;
const GEOMETRIC_CLASSES: usize = STEPS * (MAX_CLASS.trailing_zeros() as usize - 8);
const ARENA_CLASS: usize = SMALL_CLASSES + GEOMETRIC_CLASSES;
const CLASSES: usize = ARENA_CLASS + 1;
/// The first chunk: a loaded chat room takes ~200 KiB; pages not touched
/// are not resident, so a larger first chunk costs address space only.
const FIRST_CHUNK: usize = 256 << 10;
/// Chunks double up to this.
const MAX_CHUNK: usize = 4 << 20;
const PAGE: usize = 4096;

/// A block's total size (header included) for `size` bytes of data.
fn total_of(size: usize) -> Option<usize> {
    size.checked_add(HEADER + ALIGN - 1)
        .map(|t| t & !(ALIGN - 1))
}

/// The class and block size (header included) of a block of `total` bytes,
/// or `None` above [`MAX_CLASS`].
fn class_of(total: usize) -> Option<(usize, usize)> {
    if total == ARENA_BLOCK {
        return Some((ARENA_CLASS, ARENA_BLOCK));
    }
    if total <= 256 {
        let steps = total.div_ceil(SMALL_STEP).max(1);
        return Some((steps - 1, steps * SMALL_STEP));
    }
    if total > MAX_CLASS {
        return None;
    }
    // 2^k < total <= 2^(k+1), k >= 8, in eighths of 2^k.
    let k = (usize::BITS - 1 - (total - 1).leading_zeros()) as usize;
    let step = (1usize << k) / STEPS;
    let i = (total - (1 << k)).div_ceil(step);
    Some((SMALL_CLASSES + (k - 8) * STEPS + i - 1, (1 << k) + i * step))
}

/// A runtime's allocator (see the module docs).
pub struct RuntimeHeap {
    /// First free block of each class; a free block's data holds the next.
    free: [*mut u8; CLASSES],
    /// The unused part of the current chunk.
    bump: *mut u8,
    end: *mut u8,
    /// Every chunk mapped, to unmap on drop.
    chunks: Vec<(*mut u8, usize)>,
}

// SAFETY: the heap's memory belongs to it alone, and rquickjs moves a
// runtime (with its allocator) between threads only under its lock.
unsafe impl Send for RuntimeHeap {}

impl Default for RuntimeHeap {
    fn default() -> RuntimeHeap {
        RuntimeHeap {
            free: [ptr::null_mut(); CLASSES],
            bump: ptr::null_mut(),
            end: ptr::null_mut(),
            chunks: Vec::new(),
        }
    }
}

impl RuntimeHeap {
    /// Bytes mapped for this heap (resident or not).
    #[cfg(test)]
    fn mapped(&self) -> usize {
        self.chunks.iter().map(|(_, len)| len).sum()
    }

    /// A block of `block` bytes from the chunks, or null.
    fn carve(&mut self, block: usize) -> *mut u8 {
        let left = self.end as usize - self.bump as usize;
        if left < block && !self.map_chunk(block) {
            return ptr::null_mut();
        }
        let at = self.bump;
        // SAFETY: `block` bytes from `bump` are inside the current chunk.
        self.bump = unsafe { at.add(block) };
        at
    }

    /// Maps a new chunk with room for `block` bytes and carves from it. What
    /// was left of the previous one is not touched, so it is not resident.
    fn map_chunk(&mut self, block: usize) -> bool {
        let next = match self.chunks.last() {
            None => FIRST_CHUNK,
            Some((_, len)) => (len * 2).min(MAX_CHUNK),
        };
        let len = next.max(block.next_multiple_of(PAGE));
        // SAFETY: a fresh private anonymous mapping, owned by this heap.
        let chunk = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if chunk == libc::MAP_FAILED {
            return false;
        }
        let chunk = chunk.cast::<u8>();
        self.chunks.push((chunk, len));
        self.bump = chunk;
        // SAFETY: the end of the mapping just made.
        self.end = unsafe { chunk.add(len) };
        true
    }

    /// A free block of `class`, or of one of the next two classes (an
    /// eighth or a quarter larger): a runtime's blocks freed while it grows
    /// are reused by the next sizes up too.
    fn take_free(&mut self, class: usize) -> Option<*mut u8> {
        let last = if class == ARENA_CLASS {
            class
        } else {
            (class + 2).min(ARENA_CLASS - 1)
        };
        (class..=last).find_map(|c| {
            let head = self.free[c];
            if head.is_null() {
                return None;
            }
            // SAFETY: a free block's data holds the next free one.
            self.free[c] = unsafe { head.add(HEADER).cast::<*mut u8>().read() };
            Some(head)
        })
    }

    /// The block's total size from its header, as allocated.
    ///
    /// # Safety
    /// `data` came from this heap and is not freed.
    unsafe fn block_size(data: *mut u8) -> usize {
        // SAFETY: every block's header precedes its data.
        unsafe { data.sub(HEADER).cast::<usize>().read() }
    }
}

// SAFETY: every pointer returned is null or the data of a block of at least
// the size asked, 8-aligned (chunks are page-aligned, blocks and the header
// multiples of 8; the C allocator aligns to 16); `usable_size` reads the
// size the header recorded.
unsafe impl rquickjs::allocator::Allocator for RuntimeHeap {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        let Some(total) = total_of(size) else {
            return ptr::null_mut();
        };
        let block = match class_of(total) {
            Some((class, block_size)) => match self.take_free(class) {
                // A free block keeps its header (its size).
                Some(block) => block,
                None => {
                    let block = self.carve(block_size);
                    if block.is_null() {
                        return ptr::null_mut();
                    }
                    // SAFETY: the block is ours, at least HEADER bytes.
                    unsafe { block.cast::<usize>().write(block_size) };
                    block
                }
            },
            None => {
                // SAFETY: plain malloc; the header is written inside it.
                let block = unsafe { libc::malloc(total) }.cast::<u8>();
                if block.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: as above.
                unsafe { block.cast::<usize>().write(total | LARGE) };
                block
            }
        };
        // SAFETY: the data follows the header inside the block.
        unsafe { block.add(HEADER) }
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(bytes) = count.checked_mul(size) else {
            return ptr::null_mut();
        };
        let data = self.alloc(bytes);
        if !data.is_null() {
            // SAFETY: `bytes` bytes of the block's data are ours.
            unsafe { data.write_bytes(0, bytes) };
        }
        data
    }

    unsafe fn dealloc(&mut self, data: *mut u8) {
        // SAFETY: the caller passes a live block of this heap.
        let size = unsafe { Self::block_size(data) };
        // SAFETY: the block starts at the header.
        let block = unsafe { data.sub(HEADER) };
        if size & LARGE != 0 {
            // SAFETY: a large block is the C allocator's.
            unsafe { libc::free(block.cast()) };
            return;
        }
        if let Some((class, _)) = class_of(size) {
            // SAFETY: the freed block's data holds the next free block.
            unsafe { data.cast::<*mut u8>().write(self.free[class]) };
            self.free[class] = block;
        }
    }

    unsafe fn realloc(&mut self, data: *mut u8, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block of this heap.
        let size = unsafe { Self::block_size(data) };
        let usable = (size & !LARGE) - HEADER;
        let Some(total) = total_of(new_size) else {
            return ptr::null_mut();
        };
        // A small block stays where it is while it fits and would not
        // shrink by half or more; a large one is the C allocator's to resize.
        let large = size & LARGE != 0;
        if !large && new_size <= usable && total * 2 > size {
            return data;
        }
        if large && total > MAX_CLASS {
            // SAFETY: a large block is the C allocator's; the header moves
            // with it and is rewritten.
            unsafe {
                let block = libc::realloc(data.sub(HEADER).cast(), total).cast::<u8>();
                if block.is_null() {
                    return ptr::null_mut();
                }
                block.cast::<usize>().write(total | LARGE);
                return block.add(HEADER);
            }
        }
        // The block carved last grows in place while its chunk has room
        // (a string or an array being built grows by steps).
        if !large
            && let Some((_, grown)) = class_of(total)
            && grown > size
        {
            // SAFETY: pointer arithmetic within the block and its chunk.
            let block = unsafe { data.sub(HEADER) };
            let end = block as usize + grown;
            if block as usize + size == self.bump as usize && end <= self.end as usize {
                // SAFETY: the bytes up to `end` are the chunk's unused part.
                unsafe {
                    self.bump = block.add(grown);
                    block.cast::<usize>().write(grown);
                }
                return data;
            }
        }
        let moved = self.alloc(new_size);
        if !moved.is_null() {
            // SAFETY: both blocks are live and distinct; the copy stays
            // within the smaller one.
            unsafe {
                ptr::copy_nonoverlapping(data, moved, usable.min(new_size));
                self.dealloc(data);
            }
        }
        moved
    }

    unsafe fn usable_size(data: *mut u8) -> usize {
        // SAFETY: the caller passes a live block of this heap.
        (unsafe { Self::block_size(data) } & !LARGE) - HEADER
    }
}

impl Drop for RuntimeHeap {
    fn drop(&mut self) {
        for &(chunk, len) in &self.chunks {
            // SAFETY: each chunk was mapped by this heap; the runtime that
            // allocated from it is gone.
            unsafe { libc::munmap(chunk.cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rquickjs::allocator::Allocator;

    #[test]
    fn classes_fit_and_waste_at_most_an_eighth() {
        let mut last = 0;
        for total in (16..=MAX_CLASS).step_by(8) {
            let (class, block) = class_of(total).unwrap();
            assert!(block >= total, "{total} fits {block}");
            assert!(class < CLASSES);
            if total > 256 && total != ARENA_BLOCK {
                assert!(block * 8 <= total * 9, "{total} → {block}");
                assert!(class >= last, "classes grow with the size");
                last = class;
            }
            // The same class for the block size itself (as `dealloc` sees it).
            assert_eq!(class_of(block), Some((class, block)));
        }
        assert_eq!(class_of(ARENA_BLOCK), Some((ARENA_CLASS, ARENA_BLOCK)));
        assert_eq!(class_of(MAX_CLASS + 8), None);
    }

    #[test]
    fn blocks_hold_their_data_through_reuse_and_realloc() {
        let mut heap = RuntimeHeap::default();
        let sizes = [1, 8, 100, 500, 4096, 5000, 70_000, 300_000, 2 << 20];
        let mut blocks: Vec<(*mut u8, usize)> = Vec::new();
        for round in 0..3u8 {
            for &size in &sizes {
                let data = heap.alloc(size);
                assert!(!data.is_null());
                assert_eq!(data as usize % ALIGN, 0);
                // SAFETY: the block was just allocated with `size` bytes.
                unsafe {
                    assert!(RuntimeHeap::usable_size(data) >= size);
                    data.write_bytes(round, size);
                }
                blocks.push((data, size));
            }
            // Grow and shrink every other block; the contents move along.
            for (i, block) in blocks.iter_mut().enumerate() {
                let new_size = if i % 2 == 0 {
                    block.1 * 3
                } else {
                    block.1 / 2 + 1
                };
                // SAFETY: live blocks of this heap.
                unsafe {
                    let first = *block.0;
                    let moved = heap.realloc(block.0, new_size);
                    assert!(!moved.is_null());
                    assert_eq!(*moved, first);
                    assert!(RuntimeHeap::usable_size(moved) >= new_size);
                    moved.write_bytes(round, new_size);
                    *block = (moved, new_size);
                }
            }
            // Free half; the next round reuses their blocks.
            for (data, _) in blocks.drain(..blocks.len() / 2) {
                // SAFETY: each is live and freed once.
                unsafe { heap.dealloc(data) };
            }
        }
        for (data, size) in &blocks {
            // SAFETY: live; every byte was written in the round it was sized.
            unsafe {
                let bytes = std::slice::from_raw_parts(*data, *size);
                assert!(bytes.iter().all(|&b| b == bytes[0]));
            }
        }
        for (data, _) in blocks {
            // SAFETY: each is live and freed once.
            unsafe { heap.dealloc(data) };
        }
        let zeroed = heap.calloc(100, 8);
        // SAFETY: 800 bytes just allocated.
        unsafe {
            assert!(
                std::slice::from_raw_parts(zeroed, 800)
                    .iter()
                    .all(|&b| b == 0)
            );
            heap.dealloc(zeroed);
        }
    }

    #[test]
    fn freed_blocks_are_reused_before_the_chunk_grows() {
        let mut heap = RuntimeHeap::default();
        for _ in 0..1000 {
            let data = heap.alloc(4096);
            // SAFETY: live and freed once.
            unsafe { heap.dealloc(data) };
        }
        assert_eq!(heap.mapped(), FIRST_CHUNK);
    }

    #[test]
    fn a_runtime_runs_on_it() {
        let rt = rquickjs::Runtime::new_with_alloc(RuntimeHeap::default()).unwrap();
        let ctx = rquickjs::Context::full(&rt).unwrap();
        let n: i32 = ctx
            .with(|ctx| {
                ctx.eval(
                    "let a = []; for (let i = 0; i < 20000; i++) a.push({i, s: 'x'.repeat(i % 700)}); \
                     JSON.stringify(a).length > 0 ? a.length : 0",
                )
            })
            .unwrap();
        assert_eq!(n, 20000);
    }
}
