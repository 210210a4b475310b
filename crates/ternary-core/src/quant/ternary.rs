//! Absmean ternary weight quantization (BitNet b1.58).
//!
//! `gamma = mean|W|` over a group, `code = RoundClip(W / (gamma + eps), -1, 1)`, and the
//! dequantized weight is `code * (gamma + eps)`. Rounding is half-to-even, like `torch.round`
//! in the reference training code.

use crate::error::{Error, Result, check_finite};

/// Which weights share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One scale for the whole tensor (the BitNet b1.58 default).
    PerTensor,
    /// One scale per output channel (row).
    PerRow,
    /// One scale per run of this many consecutive values within a row.
    PerGroup(usize),
}

/// Ternary codes of a `rows x cols` matrix (row-major) with their scales.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryWeights {
    /// Output channels.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Codes in -1..=1, row-major.
    pub codes: Vec<i8>,
    /// `gamma + eps` per group: 1 (per tensor), `rows` (per row) or `rows*cols/g` (per group).
    pub scales: Vec<f32>,
    /// How `scales` map to codes.
    pub granularity: Granularity,
}

impl TernaryWeights {
    /// Values per scale.
    pub fn group_len(&self) -> usize {
        match self.granularity {
            Granularity::PerTensor => self.rows * self.cols,
            Granularity::PerRow => self.cols,
            Granularity::PerGroup(g) => g,
        }
    }

    /// `code * scale` for every weight, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let g = self.group_len().max(1);
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 * self.scales[i / g])
            .collect()
    }
}

/// Absmean ternary quantization of a row-major `rows x cols` matrix. `eps` (BitNet uses 1e-5)
/// keeps an all-zero group finite. Errors on an empty matrix, a wrong buffer length, a
/// non-finite weight, a zero or non-dividing group size, or a negative / non-finite `eps`.
pub fn quantize_absmean(
    w: &[f32],
    rows: usize,
    cols: usize,
    granularity: Granularity,
    eps: f32,
) -> Result<TernaryWeights> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty {
            what: "absmean weights",
            rows,
            cols,
        });
    }
    let n = rows.checked_mul(cols).ok_or(Error::Overflow {
        what: "absmean weights",
        rows,
        cols,
    })?;
    crate::error::check_len("absmean weights", w.len(), n, "elements")?;
    check_finite("absmean weights", w)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidScale {
            what: "absmean eps",
            index: 0,
            value: eps,
        });
    }
    let g = match granularity {
        Granularity::PerTensor => n,
        Granularity::PerRow => cols,
        Granularity::PerGroup(g) => {
            if g == 0 || !cols.is_multiple_of(g) {
                return Err(Error::NotBlockMultiple {
                    what: "absmean row length",
                    format: "absmean group",
                    len: cols,
                    block: g,
                });
            }
            g
        }
    };
    let mut codes = Vec::with_capacity(n);
    let mut scales = Vec::with_capacity(n / g);
    for group in w.chunks_exact(g) {
        // f64 accumulation: the mean must not depend on summation order subtleties at 10^7 values.
        let mean = (group.iter().map(|v| v.abs() as f64).sum::<f64>() / g as f64) as f32;
        let scale = mean + eps;
        scales.push(scale);
        if scale == 0.0 {
            codes.extend(std::iter::repeat_n(0i8, g));
        } else {
            codes.extend(
                group
                    .iter()
                    .map(|&v| (v / scale).round_ties_even().clamp(-1.0, 1.0) as i8),
            );
        }
    }
    Ok(TernaryWeights {
        rows,
        cols,
        codes,
        scales,
        granularity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // mean|w| = 0.5 -> w/0.5 = [2, -0.4, 0.2, -1.4] -> [1, 0, 0, -1]
        let t =
            quantize_absmean(&[1.0, -0.2, 0.1, -0.7], 1, 4, Granularity::PerTensor, 0.0).unwrap();
        assert_eq!(t.codes, vec![1, 0, 0, -1]);
        assert_eq!(t.scales, vec![0.5]);
        assert_eq!(t.dequantize(), vec![0.5, 0.0, 0.0, -0.5]);
    }

    #[test]
    fn bad_input_is_typed() {
        let g = Granularity::PerTensor;
        assert!(matches!(
            quantize_absmean(&[], 0, 4, g, 1e-5),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            quantize_absmean(&[1.0; 3], 1, 4, g, 1e-5),
            Err(Error::BufferLength { .. })
        ));
        assert!(matches!(
            quantize_absmean(&[1.0, f32::NAN], 1, 2, g, 1e-5),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            quantize_absmean(&[1.0; 6], 1, 6, Granularity::PerGroup(4), 1e-5),
            Err(Error::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            quantize_absmean(&[1.0; 6], 1, 6, Granularity::PerGroup(0), 1e-5),
            Err(Error::NotBlockMultiple { .. })
        ));
    }

    proptest! {
        #[test]
        fn codes_are_ternary_and_scales_are_group_means(
            rows in 1usize..5, groups in 1usize..4, g in 1usize..9, seed in any::<u64>()
        ) {
            let cols = groups * g;
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((seed.wrapping_add(i as u64 * 2654435761) % 2001) as f32 - 1000.0) / 300.0)
                .collect();
            for gran in [Granularity::PerTensor, Granularity::PerRow, Granularity::PerGroup(g)] {
                let t = quantize_absmean(&w, rows, cols, gran, 1e-5).unwrap();
                prop_assert!(t.codes.iter().all(|c| (-1..=1).contains(c)));
                let gl = t.group_len();
                prop_assert_eq!(t.scales.len(), rows * cols / gl);
                for (k, chunk) in w.chunks(gl).enumerate() {
                    let mean = chunk.iter().map(|v| v.abs() as f64).sum::<f64>() / gl as f64;
                    prop_assert!((t.scales[k] as f64 - mean - 1e-5).abs() < 1e-5);
                }
                // Dequantized weights are within half a step (plus clipping) of the input.
                let dq = t.dequantize();
                for (i, (&a, &b)) in w.iter().zip(&dq).enumerate() {
                    let s = t.scales[i / gl];
                    prop_assert!((a - b).abs() <= 0.5 * s + 1e-4 || a.abs() > s);
                }
            }
        }
    }
}
