//! Heap use per thread, for tests that bound what the proxy holds. All tests share one process,
//! so its resident size (`VmHWM`) moves with whatever the other tests do at the same time; but
//! a `#[tokio::test]` runs its in-process proxy on its own thread, so the bytes that thread has
//! allocated and not freed are that proxy's alone. (Bytes another thread allocated and this one
//! frees lower the count; on a current-thread runtime the proxy's buffers never cross.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting each thread's live bytes and their peak.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // `try_with`: during thread teardown the counters may be gone; those bytes are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed to `System` unchanged; the counters are `const`-initialized
// thread-locals of plain integers, which neither allocate nor run destructors.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// A measurement of this thread's heap from now on.
pub struct PeakGrowth {
    base: isize,
}

impl PeakGrowth {
    /// Starts measuring: the peak is reset to what the thread holds now.
    pub fn start() -> PeakGrowth {
        let base = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(base));
        PeakGrowth { base }
    }

    /// How far above the start the thread's live heap has been, in bytes.
    pub fn bytes(&self) -> usize {
        usize::try_from(PEAK.with(Cell::get) - self.base).unwrap_or(0)
    }
}

#[test]
fn the_peak_counts_this_threads_allocations_only() {
    let growth = PeakGrowth::start();
    std::thread::spawn(|| drop(std::hint::black_box(vec![1u8; 64 << 20]))).join().unwrap();
    assert!(growth.bytes() < 1 << 20, "another thread's 64 MiB counted: {}", growth.bytes());
    let held = std::hint::black_box(vec![1u8; 40 << 20]);
    drop(held);
    let grew = growth.bytes();
    assert!((40 << 20..41 << 20).contains(&grew), "40 MiB allocated and freed here: peak grew {grew}");
}
