//! A counting global allocator (wrapping `System`).
//!
//! Allocations are attributed to the module (the filter and
//! `proxy_on_memory_allocate` when the host calls it: all of that lives in
//! the Wasm VM's linear memory in Envoy) or to the host (the mocks' own
//! bookkeeping, which in Envoy would be C++ heap, not the filter's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

pub struct Counting;

/// True while a mock host function runs (and is not calling back into the
/// module).
static IN_HOST: AtomicBool = AtomicBool::new(false);

struct Side {
    allocs: AtomicU64,
    deallocs: AtomicU64,
    reallocs: AtomicU64,
    bytes: AtomicU64,
}

static MODULE: Side = Side::new();
static HOST: Side = Side::new();

impl Side {
    const fn new() -> Side {
        Side {
            allocs: AtomicU64::new(0),
            deallocs: AtomicU64::new(0),
            reallocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> Allocs {
        Allocs {
            allocs: self.allocs.load(Relaxed),
            deallocs: self.deallocs.load(Relaxed),
            reallocs: self.reallocs.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

fn side() -> &'static Side {
    if IN_HOST.load(Relaxed) {
        &HOST
    } else {
        &MODULE
    }
}

/// Counts at one moment (or, after `since`, over an interval).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Allocs {
    /// `alloc` + `alloc_zeroed` calls.
    pub allocs: u64,
    pub deallocs: u64,
    pub reallocs: u64,
    /// Bytes requested by `alloc`, `alloc_zeroed` and `realloc` (new size).
    pub bytes: u64,
}

impl Allocs {
    pub fn since(self, earlier: Allocs) -> Allocs {
        Allocs {
            allocs: self.allocs - earlier.allocs,
            deallocs: self.deallocs - earlier.deallocs,
            reallocs: self.reallocs - earlier.reallocs,
            bytes: self.bytes - earlier.bytes,
        }
    }

    pub fn add(&mut self, other: Allocs) {
        self.allocs += other.allocs;
        self.deallocs += other.deallocs;
        self.reallocs += other.reallocs;
        self.bytes += other.bytes;
    }
}

pub fn module() -> Allocs {
    MODULE.snapshot()
}

pub fn host() -> Allocs {
    HOST.snapshot()
}

/// Marks the current code as host (mock) code until dropped; nests.
pub struct InHost(bool);

impl InHost {
    pub fn enter() -> InHost {
        InHost(IN_HOST.swap(true, Relaxed))
    }

    /// Runs `f` as module code (the host calling `proxy_on_memory_allocate`).
    pub fn module<R>(&self, f: impl FnOnce() -> R) -> R {
        IN_HOST.store(false, Relaxed);
        let r = f();
        IN_HOST.store(true, Relaxed);
        r
    }
}

impl Drop for InHost {
    fn drop(&mut self) {
        IN_HOST.store(self.0, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let s = side();
        s.allocs.fetch_add(1, Relaxed);
        s.bytes.fetch_add(layout.size() as u64, Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let s = side();
        s.allocs.fetch_add(1, Relaxed);
        s.bytes.fetch_add(layout.size() as u64, Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        side().deallocs.fetch_add(1, Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let s = side();
        s.reallocs.fetch_add(1, Relaxed);
        s.bytes.fetch_add(new_size as u64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}
