//! Pseudo-gradient codecs: f32, f16, int8 and 4-bit with per-block absmax scales, and
//! top-k sparsification, in one self-describing little-endian byte format.
//!
//! Layout: `b"DLC1"`, codec tag `u8`, codec parameter `u32`, tensor count `u32`, then per
//! tensor: name length `u16`, UTF-8 name, rank `u8`, dims `u32` each, and the body:
//! - f32: `n` values; f16: `n` halves;
//! - int8 / q4: one f32 scale per block of `block` values, then `n` i8 or `ceil(n/2)`
//!   bytes of two 4-bit codes (`q + 8`, low nibble first);
//! - top-k: count `u32`, that many ascending `u32` indices, then as many f32 values.
//!
//! Decoding checks every length against the bytes left before allocating, so a hostile
//! payload can neither panic nor make us allocate more than it is long.
//!
//! Non-finite values never cross the wire: [`encode`] refuses a NaN or an infinity (and
//! an f32 that would overflow f16) with [`Error::NonFinite`] instead of writing it, and
//! [`decode`] refuses a payload that carries one (an f32 / f16 / top-k value, an int8 /
//! 4-bit block scale that is NaN, infinite or negative, or a scale so large that a
//! dequantized value overflows), so a NaN update can never pass the screen as zeros.

use crate::error::{Error, Result};
use crate::params::{NamedTensor, ParamMap};
use half::f16;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

const MAGIC: &[u8; 4] = b"DLC1";

/// How a pseudo-gradient (or outer step) is encoded for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Codec {
    /// Raw f32: lossless.
    F32,
    /// IEEE half precision: relative error <= 2^-11 in the normal range.
    F16,
    /// Symmetric int8 (-127..=127) with one f32 absmax scale per `block` values.
    Int8 {
        /// Values per scale.
        block: u32,
    },
    /// Symmetric 4-bit (-7..=7) with one f32 absmax scale per `block` values.
    Q4 {
        /// Values per scale.
        block: u32,
    },
    /// Keeps the `ceil(density * n)` largest-magnitude values of each tensor exactly.
    TopK {
        /// Fraction of values kept, in (0, 1].
        density: f32,
    },
}

impl Codec {
    fn tag(self) -> (u8, u32) {
        match self {
            Codec::F32 => (0, 0),
            Codec::F16 => (1, 0),
            Codec::Int8 { block } => (2, block),
            Codec::Q4 { block } => (3, block),
            Codec::TopK { density } => (4, density.to_bits()),
        }
    }

    /// Checks the parameters (block > 0, density in (0, 1]).
    pub fn validate(self) -> Result<()> {
        let bad = |message: &str| Error::Config {
            field: "codec".into(),
            message: message.into(),
        };
        match self {
            Codec::Int8 { block } | Codec::Q4 { block } if block == 0 || block > 1 << 24 => {
                Err(bad("block must be in 1..=2^24"))
            }
            Codec::TopK { density } if !(density > 0.0 && density <= 1.0) => {
                Err(bad("top-k density must be in (0, 1]"))
            }
            _ => Ok(()),
        }
    }

    /// Bits per value on the wire for a dense tensor of `n` values (top-k: of kept
    /// values only), ignoring names and headers.
    pub fn body_bytes(self, n: usize) -> usize {
        match self {
            Codec::F32 => 4 * n,
            Codec::F16 => 2 * n,
            Codec::Int8 { block } => 4 * n.div_ceil(block as usize) + n,
            Codec::Q4 { block } => 4 * n.div_ceil(block as usize) + n.div_ceil(2),
            Codec::TopK { density } => 4 + 8 * topk_count(density, n),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::F32 => write!(f, "f32"),
            Codec::F16 => write!(f, "f16"),
            Codec::Int8 { block } => write!(f, "int8:{block}"),
            Codec::Q4 { block } => write!(f, "q4:{block}"),
            Codec::TopK { density } => write!(f, "topk:{density}"),
        }
    }
}

impl FromStr for Codec {
    type Err = Error;
    /// `f32`, `f16`, `int8[:block]` (default 64), `q4[:block]` (default 64),
    /// `topk:density`.
    fn from_str(s: &str) -> Result<Self> {
        let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
        let bad = |m: String| Error::Config {
            field: "codec".into(),
            message: m,
        };
        let block = |a: Option<&str>| -> Result<u32> {
            a.map_or(Ok(64), |a| {
                a.parse().map_err(|e| bad(format!("block `{a}`: {e}")))
            })
        };
        let codec = match kind {
            "f32" => Codec::F32,
            "f16" => Codec::F16,
            "int8" => Codec::Int8 { block: block(arg)? },
            "q4" | "int4" => Codec::Q4 { block: block(arg)? },
            "topk" => {
                let a = arg.ok_or_else(|| bad("topk needs a density, e.g. topk:0.01".into()))?;
                Codec::TopK {
                    density: a.parse().map_err(|e| bad(format!("density `{a}`: {e}")))?,
                }
            }
            other => return Err(bad(format!("unknown codec `{other}`"))),
        };
        codec.validate()?;
        Ok(codec)
    }
}

fn topk_count(density: f32, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((f64::from(density) * n as f64).ceil() as usize).clamp(1, n)
    }
}

/// The first value of `data` the codec cannot carry finitely, as an [`Error::NonFinite`].
fn check_encodable(name: &str, data: &[f32], codec: Codec) -> Result<()> {
    let bad = |index: usize, detail| Error::NonFinite {
        what: "encode".into(),
        tensor: name.into(),
        index,
        value: data[index],
        detail,
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(bad(i, ""));
    }
    if codec == Codec::F16
        && let Some(i) = data.iter().position(|&v| f16::from_f32(v).is_infinite())
    {
        return Err(bad(i, " (overflows f16)"));
    }
    Ok(())
}

/// Largest magnitude in `c`, NaN if any value is NaN (`f32::max` would drop it and make
/// a NaN block look like a zero block).
fn absmax(c: &[f32]) -> f32 {
    c.iter().fold(0.0f32, |m, v| {
        if m.is_nan() || v.is_nan() {
            f32::NAN
        } else {
            m.max(v.abs())
        }
    })
}

/// Encodes every tensor of `params` with `codec`; a NaN or infinite value (or one that
/// overflows f16) is an [`Error::NonFinite`] naming the tensor and index.
pub fn encode(params: &ParamMap, codec: Codec) -> Result<Vec<u8>> {
    codec.validate()?;
    for (name, t) in params {
        check_encodable(name, &t.data, codec)?;
    }
    let mut out = Vec::with_capacity(
        16 + params
            .iter()
            .map(|(n, t)| n.len() + 8 + 4 * t.shape.len() + codec.body_bytes(t.data.len()))
            .sum::<usize>(),
    );
    let (tag, arg) = codec.tag();
    out.extend_from_slice(MAGIC);
    out.push(tag);
    out.extend_from_slice(&arg.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(params.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (name, t) in params {
        let name_len = u16::try_from(name.len()).map_err(|_| Error::Tensor {
            name: name.clone(),
            message: "name longer than 65535 bytes".into(),
        })?;
        let rank = u8::try_from(t.shape.len()).map_err(|_| Error::Tensor {
            name: name.clone(),
            message: "rank above 255".into(),
        })?;
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(rank);
        for &d in &t.shape {
            let d = u32::try_from(d).map_err(|_| Error::Tensor {
                name: name.clone(),
                message: format!("dimension {d} above u32"),
            })?;
            out.extend_from_slice(&d.to_le_bytes());
        }
        encode_body(&t.data, codec, &mut out);
    }
    Ok(out)
}

fn encode_body(x: &[f32], codec: Codec, out: &mut Vec<u8>) {
    match codec {
        Codec::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Codec::F16 => x
            .iter()
            .for_each(|&v| out.extend_from_slice(&f16::from_f32(v).to_le_bytes())),
        Codec::Int8 { block } | Codec::Q4 { block } => {
            let levels = if matches!(codec, Codec::Int8 { .. }) {
                127.0
            } else {
                7.0
            };
            let scales: Vec<f32> = x
                .chunks(block as usize)
                .map(|c| absmax(c) / levels)
                .collect();
            for s in &scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
            // Division, not a reciprocal: 1 / s overflows for a subnormal scale.
            let q = x.chunks(block as usize).zip(&scales).flat_map(|(c, &s)| {
                c.iter().map(move |v| {
                    if s > 0.0 {
                        (v / s).round().clamp(-levels, levels) as i8
                    } else {
                        0
                    }
                })
            });
            if levels > 100.0 {
                out.extend(q.map(|v| v as u8));
            } else {
                let q: Vec<i8> = q.collect();
                out.extend(q.chunks(2).map(|p| {
                    let lo = (p[0] + 8) as u8;
                    let hi = p.get(1).map_or(8, |&v| (v + 8) as u8);
                    lo | (hi << 4)
                }));
            }
        }
        Codec::TopK { density } => {
            let k = topk_count(density, x.len());
            let mut idx: Vec<u32> = (0..x.len() as u32).collect();
            // Total order (magnitude desc, index asc) makes the kept set deterministic.
            let key = |&i: &u32| (std::cmp::Reverse(x[i as usize].abs().to_bits()), i);
            if k < idx.len() {
                idx.select_nth_unstable_by_key(k, key);
                idx.truncate(k);
            }
            idx.sort_unstable();
            out.extend_from_slice(&(k as u32).to_le_bytes());
            for i in &idx {
                out.extend_from_slice(&i.to_le_bytes());
            }
            for &i in &idx {
                out.extend_from_slice(&x[i as usize].to_le_bytes());
            }
        }
    }
}

struct Reader<'a> {
    what: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Decode {
            what: self.what.into(),
            offset: self.pos,
            message: message.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!(
                "needs {n} bytes, {} left",
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self.take(
            n.checked_mul(4)
                .ok_or_else(|| self.err("length overflow"))?,
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect())
    }
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Decodes a payload written by [`encode`], returning the codec it used and the
/// (dequantized, densified) tensors. `what` names the payload in errors.
pub fn decode(bytes: &[u8], what: &str) -> Result<(Codec, ParamMap)> {
    let mut r = Reader {
        what,
        buf: bytes,
        pos: 0,
    };
    if r.take(4)? != MAGIC {
        return Err(Error::Decode {
            what: what.into(),
            offset: 0,
            message: "bad magic (not a DLC1 payload)".into(),
        });
    }
    let tag = r.u8()?;
    let arg = r.u32()?;
    let codec = match tag {
        0 => Codec::F32,
        1 => Codec::F16,
        2 => Codec::Int8 { block: arg },
        3 => Codec::Q4 { block: arg },
        4 => Codec::TopK {
            density: f32::from_bits(arg),
        },
        t => return Err(r.err(format!("unknown codec tag {t}"))),
    };
    codec.validate().map_err(|e| r.err(e.to_string()))?;
    let count = r.u32()? as usize;
    let mut out = ParamMap::new();
    for _ in 0..count {
        let name_len = r.u16()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|e| r.err(format!("tensor name not UTF-8: {e}")))?
            .to_string();
        let rank = r.u8()? as usize;
        let mut shape = Vec::with_capacity(rank);
        let mut n: usize = 1;
        for _ in 0..rank {
            let d = r.u32()? as usize;
            n = n
                .checked_mul(d)
                .ok_or_else(|| r.err(format!("tensor `{name}`: element count overflows")))?;
            shape.push(d);
        }
        // Every codec spends at least n/2 bytes on a dense body (top-k checks its count).
        if !matches!(codec, Codec::TopK { .. }) && n.div_ceil(2) > r.left() {
            return Err(r.err(format!(
                "tensor `{name}`: {n} values cannot fit in {} bytes",
                r.left()
            )));
        }
        let data = decode_body(&mut r, codec, n, &name)?;
        if let Some(index) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: what.into(),
                tensor: name,
                index,
                value: data[index],
                detail: "",
            });
        }
        if out
            .insert(name.clone(), NamedTensor { shape, data })
            .is_some()
        {
            return Err(r.err(format!("tensor `{name}` appears twice")));
        }
    }
    if r.left() != 0 {
        return Err(r.err(format!("{} trailing bytes", r.left())));
    }
    Ok((codec, out))
}

fn decode_body(r: &mut Reader<'_>, codec: Codec, n: usize, name: &str) -> Result<Vec<f32>> {
    Ok(match codec {
        Codec::F32 => r.f32s(n)?,
        Codec::F16 => r
            .take(2 * n)?
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Codec::Int8 { block } | Codec::Q4 { block } => {
            let scales = r.f32s(n.div_ceil(block as usize))?;
            let block = block as usize;
            if let Some(b) = scales.iter().position(|s| !s.is_finite()) {
                return Err(Error::NonFinite {
                    what: r.what.into(),
                    tensor: name.into(),
                    index: b * block,
                    value: scales[b],
                    detail: " (block scale)",
                });
            }
            if let Some(b) = scales.iter().position(|s| s.is_sign_negative()) {
                return Err(r.err(format!(
                    "tensor `{name}`: block {b} has negative scale {}",
                    scales[b]
                )));
            }
            if matches!(codec, Codec::Int8 { .. }) {
                let q = r.take(n)?;
                q.iter()
                    .enumerate()
                    .map(|(i, &b)| f32::from(b as i8) * scales[i / block])
                    .collect()
            } else {
                let q = r.take(n.div_ceil(2))?;
                (0..n)
                    .map(|i| {
                        let byte = q[i / 2];
                        let nib = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                        f32::from(nib as i8 - 8) * scales[i / block]
                    })
                    .collect()
            }
        }
        Codec::TopK { .. } => {
            let k = r.u32()? as usize;
            if k > n || k.saturating_mul(8) > r.left() {
                return Err(r.err(format!("tensor `{name}`: top-k count {k} of {n} values")));
            }
            let idx: Vec<u32> = (0..k).map(|_| r.u32()).collect::<Result<_>>()?;
            let vals = r.f32s(k)?;
            let mut data = vec![0.0f32; n];
            for (j, (&i, v)) in idx.iter().zip(vals).enumerate() {
                let slot = data.get_mut(i as usize).ok_or_else(|| {
                    r.err(format!(
                        "tensor `{name}`: top-k index {i} (entry {j}) >= {n}"
                    ))
                })?;
                *slot = v;
            }
            data
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(data: Vec<f32>) -> ParamMap {
        let mut m = ParamMap::new();
        m.insert(
            "blk.0.w".into(),
            NamedTensor {
                shape: vec![data.len()],
                data,
            },
        );
        m
    }

    fn roundtrip(x: &[f32], codec: Codec) -> Vec<f32> {
        let bytes = encode(&one(x.to_vec()), codec).unwrap();
        let (c, m) = decode(&bytes, "test").unwrap();
        assert_eq!(c, codec);
        m["blk.0.w"].data.clone()
    }

    proptest! {
        #[test]
        fn f32_is_lossless(x in prop::collection::vec(-1e30f32..1e30, 0..300)) {
            prop_assert_eq!(roundtrip(&x, Codec::F32), x);
        }

        #[test]
        fn f16_relative_error(x in prop::collection::vec(-6e4f32..6e4, 0..300)) {
            for (a, b) in x.iter().zip(roundtrip(&x, Codec::F16)) {
                // Normal range: half an ulp of 2^-10; subnormals: absolute 2^-25.
                prop_assert!((a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-25), "{a} {b}");
            }
        }

        #[test]
        fn blockwise_error_is_half_a_step(
            x in prop::collection::vec(-10f32..10.0, 0..300),
            block in 1u32..100,
            four in any::<bool>(),
        ) {
            let (codec, levels) = if four { (Codec::Q4 { block }, 7.0) } else { (Codec::Int8 { block }, 127.0) };
            let y = roundtrip(&x, codec);
            for (c, yc) in x.chunks(block as usize).zip(y.chunks(block as usize)) {
                let absmax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (a, b) in c.iter().zip(yc) {
                    prop_assert!((a - b).abs() <= absmax / levels * 0.5 + absmax * 2e-6 + 1e-12, "{a} {b} {absmax}");
                }
            }
        }

        #[test]
        fn topk_keeps_the_largest_exactly(x in prop::collection::vec(-10f32..10.0, 1..300), density in 0.01f32..1.0) {
            let y = roundtrip(&x, Codec::TopK { density });
            let k = topk_count(density, x.len());
            prop_assert!(y.iter().filter(|v| **v != 0.0).count() <= k);
            let min_kept = (0..x.len()).filter(|&i| y[i] != 0.0).map(|i| x[i].abs()).fold(f32::INFINITY, f32::min);
            for i in 0..x.len() {
                if y[i] == 0.0 { prop_assert!(x[i].abs() <= min_kept); } else { prop_assert_eq!(y[i], x[i]); }
            }
        }

        #[test]
        fn encoding_refuses_non_finite_values(
            x in prop::collection::vec(-10f32..10.0, 1..200),
            at in any::<prop::sample::Index>(),
            bad in prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
        ) {
            let mut x = x;
            let i = at.index(x.len());
            x[i] = bad;
            for codec in ALL_CODECS {
                match encode(&one(x.clone()), codec) {
                    Err(Error::NonFinite { tensor, index, .. }) => {
                        prop_assert_eq!(tensor.as_str(), "blk.0.w");
                        prop_assert_eq!(index, i);
                    }
                    other => prop_assert!(false, "{codec}: {other:?}"),
                }
            }
        }

        #[test]
        fn decoding_refuses_non_finite_payloads(
            x in prop::collection::vec(-10f32..10.0, 1..200),
            at in any::<prop::sample::Index>(),
            bad in prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
        ) {
            // Offsets in a one-tensor payload named `blk.0.w` of rank 1 (module docs).
            const BODY: usize = 4 + 1 + 4 + 4 + 2 + 7 + 1 + 4;
            let j = at.index(x.len());
            let patch = |codec: Codec, offset: usize, bytes: &[u8]| {
                let mut p = encode(&one(x.clone()), codec).unwrap();
                p[offset..offset + bytes.len()].copy_from_slice(bytes);
                decode(&p, "hostile")
            };
            let block = 8u32;
            let k = topk_count(0.5, x.len());
            let cases = [
                (Codec::F32, BODY + 4 * j, bad.to_le_bytes().to_vec()),
                (Codec::F16, BODY + 2 * j, f16::from_f32(bad).to_le_bytes().to_vec()),
                (Codec::Int8 { block }, BODY + 4 * (j / block as usize), bad.to_le_bytes().to_vec()),
                (Codec::Q4 { block }, BODY + 4 * (j / block as usize), bad.to_le_bytes().to_vec()),
                (Codec::TopK { density: 0.5 }, BODY + 4 + 4 * k + 4 * (j % k), bad.to_le_bytes().to_vec()),
            ];
            for (codec, offset, bytes) in cases {
                match patch(codec, offset, &bytes) {
                    Err(Error::NonFinite { what, tensor, .. }) => {
                        prop_assert_eq!(what.as_str(), "hostile");
                        prop_assert_eq!(tensor.as_str(), "blk.0.w");
                    }
                    other => prop_assert!(false, "{codec}: {other:?}"),
                }
            }
        }

        #[test]
        fn finite_inputs_always_decode_finite(
            x in prop::collection::vec(prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO, 0..200),
        ) {
            for codec in ALL_CODECS {
                match encode(&one(x.clone()), codec) {
                    Ok(bytes) => {
                        let (_, m) = decode(&bytes, "ok").unwrap();
                        prop_assert!(m["blk.0.w"].data.iter().all(|v| v.is_finite()));
                    }
                    // Only f16 may refuse a finite input: one above its range.
                    Err(Error::NonFinite { index, .. }) => {
                        prop_assert_eq!(codec, Codec::F16);
                        prop_assert!(x[index].abs() > 65504.0);
                    }
                    Err(e) => prop_assert!(false, "{codec}: {e}"),
                }
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, "fuzz");
        }

        #[test]
        fn truncation_is_an_error(x in prop::collection::vec(-1f32..1.0, 1..50), cut in 0usize..1000) {
            for codec in [Codec::F32, Codec::F16, Codec::Int8 { block: 8 }, Codec::Q4 { block: 8 }, Codec::TopK { density: 0.3 }] {
                let bytes = encode(&one(x.clone()), codec).unwrap();
                let cut = cut % bytes.len();
                prop_assert!(decode(&bytes[..cut], "cut").is_err());
            }
        }
    }

    const ALL_CODECS: [Codec; 5] = [
        Codec::F32,
        Codec::F16,
        Codec::Int8 { block: 8 },
        Codec::Q4 { block: 8 },
        Codec::TopK { density: 0.5 },
    ];

    #[test]
    fn block_max_keeps_nan_and_huge_scales_are_refused() {
        assert!(absmax(&[1.0, f32::NAN, 3.0]).is_nan());
        assert!(absmax(&[f32::NAN, 1.0]).is_nan());
        assert_eq!(absmax(&[-4.0, 1.0]), 4.0);
        // A finite scale so large that 127 x scale overflows: refused, not decoded to inf.
        let mut p = encode(&one(vec![1.0; 4]), Codec::Int8 { block: 4 }).unwrap();
        p[27..31].copy_from_slice(&f32::MAX.to_le_bytes());
        assert!(
            matches!(decode(&p, "huge"), Err(Error::NonFinite { .. })),
            "{:?}",
            decode(&p, "huge")
        );
        // A negative scale is not something our encoder writes.
        p[27..31].copy_from_slice(&(-1.0f32).to_le_bytes());
        let err = decode(&p, "neg").unwrap_err().to_string();
        assert!(err.contains("negative scale"), "{err}");
        // Subnormal blocks quantize without overflowing the reciprocal.
        let tiny = vec![1e-44f32, -1e-44, 0.0, 1e-45];
        let y = roundtrip(&tiny, Codec::Int8 { block: 4 });
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    }

    #[test]
    fn sizes_and_parsing() {
        let x: Vec<f32> = (0..1024).map(|i| (i as f32).sin()).collect();
        let f32b = encode(&one(x.clone()), Codec::F32).unwrap().len();
        let q4b = encode(&one(x.clone()), Codec::Q4 { block: 64 })
            .unwrap()
            .len();
        assert!(f32b as f64 / q4b as f64 > 6.5, "{f32b} / {q4b}");
        assert_eq!("q4:128".parse::<Codec>().unwrap(), Codec::Q4 { block: 128 });
        assert_eq!("int8".parse::<Codec>().unwrap(), Codec::Int8 { block: 64 });
        assert!("topk:0".parse::<Codec>().is_err());
        assert!("zip".parse::<Codec>().is_err());
        let err = decode(&[b'D', b'L', b'C', b'1', 9, 0, 0, 0, 0], "obj/key")
            .unwrap_err()
            .to_string();
        assert!(err.contains("obj/key") && err.contains("tag 9"), "{err}");
    }
}
