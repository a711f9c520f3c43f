//! Keeps bzip2's working memory between streams.
//!
//! A package is hundreds of independent bzip2 streams (see [`super::compress`]), and each stream
//! allocates its own state: ~7.6 MB to compress at level 9, ~3.6 MB to decode. glibc hands
//! freed memory at the top of a thread's heap back to the kernel, so every stream page-faulted
//! its state in again: 5–8% of packaging's CPU (perf: `exc_page_fault`, `madvise`). While a
//! [`KeepFreedMemory`] lives, freed memory stays in the process for the next stream; when the
//! last one ends it is given back, so a long-running agent does not keep it.
//!
//! The one place the workspace allows `unsafe`: two plain calls into glibc's allocator.
#![allow(unsafe_code)]

use std::sync::Mutex;

/// How many holders are alive: the thresholds are process-wide.
static HOLDERS: Mutex<usize> = Mutex::new(0);

/// Freed memory stays in the process while this lives (glibc only; elsewhere it does nothing).
pub struct KeepFreedMemory(());

impl KeepFreedMemory {
    pub fn new() -> Self {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if *holders == 0 {
            // Above any stream's state, below glibc's cap for the mmap threshold (32 MB).
            set_thresholds(32 << 20, 256 << 20);
        }
        *holders += 1;
        Self(())
    }
}

impl Default for KeepFreedMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeepFreedMemory {
    fn drop(&mut self) {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        *holders -= 1;
        if *holders == 0 {
            // glibc's defaults, then everything free goes back to the kernel.
            set_thresholds(128 << 10, 128 << 10);
            give_back();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds(mmap: i32, trim: i32) {
    // SAFETY: mallopt only sets allocator parameters; it is thread-safe and any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back() {
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds(_mmap: i32, _trim: i32) {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back() {}
