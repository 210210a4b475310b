//! Dequantizers for the ggml block types that other producers write for embeddings and
//! output heads: the legacy 32-blocks Q4_0, Q4_1, Q5_0, Q5_1 and the 256-element k-quants
//! Q4_K, Q5_K, Q6_K (llama.cpp's quantizer writes Q6_K for `token_embd` by default, and
//! bitnet.cpp recommends it with `--quant-embd`).
//!
//! Each function follows ggml's `dequantize_row_*` (`ggml-quants.c`) operation for
//! operation, in f32, so the values are bit-identical to ggml's and to gguf-py's numpy
//! dequantizers (tested in `tests/dequant_ggufpy.rs`). Block layouts (little-endian, packed):
//!
//! | type | bytes | layout |
//! |---|---|---|
//! | Q4_0 | 18 | `d: f16, qs[16]`: low nibbles are values 0..16, high nibbles 16..32; `(q - 8) * d` |
//! | Q4_1 | 20 | `d: f16, m: f16, qs[16]`: `q * d + m` |
//! | Q5_0 | 22 | `d: f16, qh: u32, qs[16]`: bit `j` of `qh` is bit 4 of value `j`; `(q - 16) * d` |
//! | Q5_1 | 24 | `d: f16, m: f16, qh: u32, qs[16]`: `q * d + m` |
//! | Q4_K | 144 | `d, dmin: f16, scales[12], qs[128]`: 8 sub-blocks of 32 with 6-bit scale and min |
//! | Q5_K | 176 | `d, dmin: f16, scales[12], qh[32], qs[128]` |
//! | Q6_K | 210 | `ql[128], qh[64], scales: i8[16], d: f16`: 16 sub-blocks of 16 |

use half::f16;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q4_0: one block of 18 bytes into 32 values.
pub(crate) fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        let x0 = i32::from(qs[j] & 0x0F) - 8;
        let x1 = i32::from(qs[j] >> 4) - 8;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// Q4_1: one block of 20 bytes into 32 values.
pub(crate) fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = f32::from(qs[j] & 0x0F) * d + m;
        y[j + 16] = f32::from(qs[j] >> 4) * d + m;
    }
}

fn q5_values(qh: u32, qs: &[u8], j: usize) -> (u32, u32) {
    let xh0 = ((qh >> j) << 4) & 0x10;
    let xh1 = (qh >> (j + 12)) & 0x10;
    (u32::from(qs[j] & 0x0F) | xh0, u32::from(qs[j] >> 4) | xh1)
}

/// Q5_0: one block of 22 bytes into 32 values.
pub(crate) fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let (x0, x1) = q5_values(qh, qs, j);
        y[j] = (x0 as i32 - 16) as f32 * d;
        y[j + 16] = (x1 as i32 - 16) as f32 * d;
    }
}

/// Q5_1: one block of 24 bytes into 32 values.
pub(crate) fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let (x0, x1) = q5_values(qh, qs, j);
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: one block of 144 bytes into 256 values.
pub(crate) fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (g, (q, out)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc, m) = scale_min_k4(2 * g, scales);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        let (sc, m) = scale_min_k4(2 * g + 1, scales);
        let (d2, m2) = (d * f32::from(sc), dmin * f32::from(m));
        for l in 0..32 {
            out[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            out[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// Q5_K: one block of 176 bytes into 256 values.
pub(crate) fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let ql = &b[48..176];
    for (g, (q, out)) in ql.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (u1, u2) = (1u8 << (2 * g), 2u8 << (2 * g));
        let (sc, m) = scale_min_k4(2 * g, scales);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        let (sc, m) = scale_min_k4(2 * g + 1, scales);
        let (d2, m2) = (d * f32::from(sc), dmin * f32::from(m));
        for l in 0..32 {
            let h1 = if qh[l] & u1 == 0 { 0 } else { 16 };
            let h2 = if qh[l] & u2 == 0 { 0 } else { 16 };
            out[l] = d1 * f32::from((q[l] & 0x0F) + h1) - m1;
            out[l + 32] = d2 * f32::from((q[l] >> 4) + h2) - m2;
        }
    }
}

/// Q6_K: one block of 210 bytes into 256 values.
pub(crate) fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[is + k].cast_signed());
            out[l] = s(0) * q1 as f32;
            out[l + 32] = s(2) * q2 as f32;
            out[l + 64] = s(4) * q3 as f32;
            out[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// Decodes one block into its values.
type BlockFn = fn(&[u8], &mut [f32]);

/// The block dequantizer of a type handled here, with its block size in elements and bytes.
fn block_fn(ty: crate::GgmlType) -> Option<(BlockFn, usize, usize)> {
    use crate::GgmlType as T;
    Some(match ty {
        T::Q4_0 => (q4_0 as BlockFn, 32, 18),
        T::Q4_1 => (q4_1, 32, 20),
        T::Q5_0 => (q5_0, 32, 22),
        T::Q5_1 => (q5_1, 32, 24),
        T::Q4_K => (q4_k, 256, 144),
        T::Q5_K => (q5_k, 256, 176),
        T::Q6_K => (q6_k, 256, 210),
        _ => return None,
    })
}

/// Dequantizes whole blocks (`bytes.len()` a multiple of the block bytes, `n` the matching
/// element count, both checked by the caller).
pub(crate) fn dequantize(ty: crate::GgmlType, bytes: &[u8], n: usize) -> Option<Vec<f32>> {
    let (f, elems, size) = block_fn(ty)?;
    let mut out = vec![0.0f32; n];
    for (b, y) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(elems)) {
        f(b, y);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_and_q4_1_by_hand() {
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&f16_bytes(0.5));
        b[2] = 0xF0; // value 0: nibble 0 -> -8; value 16: nibble 15 -> 7
        let mut y = [0.0; 32];
        q4_0(&b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (-4.0, 3.5, -4.0));
        let mut b = vec![0u8; 20];
        b[..2].copy_from_slice(&f16_bytes(0.25));
        b[2..4].copy_from_slice(&f16_bytes(-1.0));
        b[4] = 0x3A;
        q4_1(&b, &mut y);
        assert_eq!(
            (y[0], y[16], y[1]),
            (10.0 * 0.25 - 1.0, 3.0 * 0.25 - 1.0, -1.0)
        );
    }

    #[test]
    fn q5_high_bits_come_from_qh() {
        let mut b = vec![0u8; 22];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        // Bit 0 of qh: value 0 gets 16; bit 16: value 16 gets 16.
        b[2..6].copy_from_slice(&(1u32 | 1 << 16).to_le_bytes());
        let mut y = [0.0; 32];
        q5_0(&b, &mut y);
        assert_eq!((y[0], y[16], y[1], y[17]), (0.0, 0.0, -16.0, -16.0));
    }

    #[test]
    fn q6_k_by_hand() {
        let mut b = vec![0u8; 210];
        b[208..].copy_from_slice(&f16_bytes(2.0));
        for s in &mut b[192..208] {
            *s = 1;
        }
        b[192] = (-3i8).cast_unsigned();
        b[0] = 0x21; // value 0: low nibble 1, value 64: high nibble 2
        b[128] = 0b11; // value 0 high bits 3 -> q = 1 | 48
        let mut y = [0.0; 256];
        q6_k(&b, &mut y);
        assert_eq!(y[0], 2.0 * -3.0 * 17.0);
        assert_eq!(y[64], 2.0 * f32::from(2i8 - 32));
        assert_eq!(y[255], 2.0 * -32.0);
    }

    #[test]
    fn k4_scales_unpack_like_ggml() {
        let q: [u8; 12] = [0xC1, 0x42, 3, 4, 0x85, 6, 7, 8, 0x9A, 0xBC, 0, 0];
        assert_eq!(scale_min_k4(0, &q), (1, 5));
        assert_eq!(scale_min_k4(1, &q), (2, 6));
        // j >= 4: low nibble of q[j+4] | top 2 bits of q[j-4] << 4; min: high nibble | q[j] top bits.
        assert_eq!(scale_min_k4(4, &q), (0x0A | (3 << 4), 0x09 | (2 << 4)));
        assert_eq!(scale_min_k4(5, &q), (0x0C | (1 << 4), 0x0B));
    }
}
