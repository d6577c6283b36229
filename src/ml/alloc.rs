//! Allocator settings for tensor work, applied once per process by
//! [`crate::ml::device`].
//!
//! burn-flex allocates every intermediate tensor afresh. glibc serves blocks
//! above 128 KiB-32 MiB (its adaptive mmap threshold) with a fresh `mmap`
//! and returns them on free, so each step's activations are page-faulted and
//! zeroed by the kernel again: a quarter of a training step's single-threaded
//! time in the profile (BENCHMARKS.md). Keeping freed blocks in the heap for
//! reuse removes that, and also lowers the peak (fewer half-returned arenas).

use std::sync::Once;

/// Blocks this large and above still come from `mmap`: a parameter or
/// activation of BART-large is at most ~200 MiB, so only the odd huge
/// buffer (a whole safetensors read) bypasses the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 512 << 20;
/// Free memory at the heap's top is returned to the system beyond this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Tunes glibc's malloc for large, short-lived tensor buffers; a no-op
/// elsewhere and after the first call.
pub fn tune_for_tensors() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt takes plain integers and glibc's own arena locks,
        // so other threads may be allocating meanwhile.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    });
}
