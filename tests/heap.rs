//! `roomhost::heap` in a process of its own: the allocator settings are
//! process-wide, and the heap they shape is the main thread's arena, so this
//! runs without the test harness, on the main thread.

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage.ru_minflt
    }
}

/// Allocates `n` 4 KiB blocks, as QuickJS takes its arenas, writing to
/// each; returns them and the page faults that took.
fn touch_blocks(n: usize) -> (Vec<*mut u8>, i64) {
    let before = minor_faults();
    let blocks: Vec<*mut u8> = (0..n)
        .map(|_| {
            // SAFETY: a fresh 4 KiB block, written within its bounds.
            unsafe {
                let block = libc::malloc(4096).cast::<u8>();
                assert!(!block.is_null());
                block.write_bytes(1, 4096);
                block
            }
        })
        .collect();
    (blocks, minor_faults() - before)
}

fn main() {
    if !roomhost::heap::tune_for_rooms() {
        println!("skipped: not glibc on Linux");
        return;
    }
    let mut blocks = Vec::with_capacity(256);
    // Memory the heap has not handed out before faults page by page...
    let (cold, faults_cold) = touch_blocks(64);
    // ...and after `prefault`, the same amount does not.
    roomhost::heap::prefault(512 << 10);
    let (warm, faults_warm) = touch_blocks(64);
    println!("64 blocks of 4 KiB: {faults_cold} page faults fresh, {faults_warm} after prefault");
    assert!(faults_cold >= 32, "fresh heap pages fault: {faults_cold}");
    assert!(faults_warm <= 8, "prefaulted pages do not: {faults_warm}");
    // A prefault of nothing, or of what is already in, costs nothing.
    roomhost::heap::prefault(0);
    blocks.extend(cold);
    blocks.extend(warm);
    for block in blocks {
        // SAFETY: each came from malloc above and is freed once.
        unsafe { libc::free(block.cast()) };
    }
    println!("test heap ... ok");
}
