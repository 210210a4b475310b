//! glibc's allocator settings for training.
//!
//! Every training step allocates and frees the same activation- and gradient-sized buffers
//! (hundreds of KiB to tens of MiB each). glibc serves blocks above its mmap threshold
//! (128 KiB at first, raised dynamically only after such a block is freed) with a fresh
//! `mmap` and returns them with `munmap`, and it gives the top of the heap back to the
//! kernel above its trim threshold: so each step pays page faults and the kernel's zeroing
//! of every page again (about 6 % of a `tiny` step in the profile, docs/genkidama.md).
//! Raising both thresholds keeps freed buffers in the heap for the next step; the peak
//! resident size stays the step's own peak.

use std::sync::OnceLock;

/// The largest mmap threshold glibc accepts on 64-bit targets (`HEAP_MAX_SIZE / 2`).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Freed memory at the top of the heap kept for reuse instead of returned to the kernel.
pub const TRIM_THRESHOLD: usize = 1 << 30;

static APPLIED: OnceLock<bool> = OnceLock::new();

/// Raises glibc's mmap and trim thresholds (see the module docs) once per process; the
/// first [`Trainer`](super::Trainer) calls it. Leaves the settings alone where the user
/// chose them (`MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` in the environment)
/// and on other C libraries. Returns whether the settings are ours now.
pub fn retain_freed_memory() -> bool {
    *APPLIED.get_or_init(|| {
        let chosen = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        !chosen && apply()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; both values are in range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn applies_once_on_glibc() {
        let first = super::retain_freed_memory();
        assert_eq!(super::retain_freed_memory(), first);
        if cfg!(all(target_os = "linux", target_env = "gnu"))
            && std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
            && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
        {
            assert!(first, "glibc refused the thresholds");
        }
    }
}
