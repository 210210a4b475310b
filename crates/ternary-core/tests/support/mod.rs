//! Deterministic test data shared by the kernel tests and the kernel bench (which includes this
//! file by path), so every one of them draws the same numbers from the same seeds.

#![allow(dead_code)] // each includer uses a different subset

/// `n` pseudo-random values in `[-scale, scale)` from a 64-bit LCG (Knuth's MMIX constants):
/// reproducible everywhere, no dependency on a rand version.
pub fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}
