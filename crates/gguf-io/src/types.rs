//! ggml tensor type ids and their storage sizes.
//!
//! The table covers every type id that a GGUF file written by mainline ggml/llama.cpp or by
//! bitnet.cpp can contain, so that a tensor of any known type has the right byte size even
//! when this crate cannot dequantize it.

// The id/name/size tables read best as flat matches over the variants.
#![allow(clippy::enum_glob_use, clippy::match_same_arms)]

use std::fmt;

/// A ggml tensor type as stored in a GGUF tensor info (`u32`).
///
/// Variant names are spelled as ggml spells the types (`Q8_0`, `TQ2_0`, ...), which is also
/// what [`GgmlType::name`] returns.
///
/// Id collisions: bitnet.cpp's fork uses ids 36–39 for `I2_S`, `I8_S`, `TL1` and `TL2`, while
/// mainline ggml has 36–38 reserved (removed types) and 39 = `MXFP4`. This crate reads 36 as
/// `I2_S` and 38 as `TL1` (dead ids in mainline), and 39 as `MXFP4` (mainline wins: bitnet.cpp's
/// TL2 is a shape-specific kernel format that is never needed for interchange).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, block 32.
    Q4_0,
    /// 4-bit with min, block 32.
    Q4_1,
    /// 5-bit, block 32.
    Q5_0,
    /// 5-bit with min, block 32.
    Q5_1,
    /// 8-bit with an fp16 scale per 32 values.
    Q8_0,
    /// 8-bit with scale and sum, block 32.
    Q8_1,
    /// k-quant 2-bit.
    Q2_K,
    /// k-quant 3-bit.
    Q3_K,
    /// k-quant 4-bit.
    Q4_K,
    /// k-quant 5-bit.
    Q5_K,
    /// k-quant 6-bit.
    Q6_K,
    /// k-quant 8-bit (activation type).
    Q8_K,
    /// i-quant.
    IQ2_XXS,
    /// i-quant.
    IQ2_XS,
    /// i-quant.
    IQ3_XXS,
    /// i-quant.
    IQ1_S,
    /// i-quant, block 32.
    IQ4_NL,
    /// i-quant.
    IQ3_S,
    /// i-quant.
    IQ2_S,
    /// i-quant.
    IQ4_XS,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// i-quant.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// Ternary, 5 trits per byte, fp16 scale per 256 values (54 bytes per block).
    TQ1_0,
    /// Ternary, 2 bits per value, fp16 scale per 256 values (66 bytes per block).
    TQ2_0,
    /// bitnet.cpp ternary: 2-bit codes in 128-element groups and one f32 scale per tensor;
    /// `n / 4 + 32` bytes. Not loadable by mainline llama.cpp.
    I2_S,
    /// bitnet.cpp lookup-table kernel format (ARM); `n / 4 + 32` bytes, readable as raw bytes
    /// only.
    TL1,
    /// Microscaling FP4, block 32.
    MXFP4,
    /// NVIDIA FP4, block 64.
    NVFP4,
    /// 1-bit, block 128.
    Q1_0,
    /// 2-bit, block 64 (newest ggml only).
    Q2_0,
}

/// How a type's byte size is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeLayout {
    /// Rows are cut into blocks of `block_size` elements stored in `type_size` bytes each;
    /// a row's length must be a multiple of `block_size`.
    Blocks {
        /// Elements per block.
        block_size: u64,
        /// Bytes per block.
        type_size: u64,
    },
    /// bitnet.cpp's per-tensor types (I2_S, TL1): `n_elements / 4 + 32` bytes for the whole
    /// tensor (2 bits per value plus a 32-byte tail holding the f32 scale).
    PerTensor2Bit,
}

const ALL: [GgmlType; 37] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ3_XXS,
    GgmlType::IQ1_S,
    GgmlType::IQ4_NL,
    GgmlType::IQ3_S,
    GgmlType::IQ2_S,
    GgmlType::IQ4_XS,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::IQ1_M,
    GgmlType::BF16,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::I2_S,
    GgmlType::TL1,
    GgmlType::MXFP4,
    GgmlType::NVFP4,
    GgmlType::Q1_0,
    GgmlType::Q2_0,
];

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> &'static [GgmlType] {
        &ALL
    }

    /// The type for a file's `u32` type id, or `None` for an unknown or removed id.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            36 => I2_S,
            38 => TL1,
            39 => MXFP4,
            40 => NVFP4,
            41 => Q1_0,
            42 => Q2_0,
            _ => return None,
        })
    }

    /// The `u32` id written to files.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            I2_S => 36,
            TL1 => 38,
            MXFP4 => 39,
            NVFP4 => 40,
            Q1_0 => 41,
            Q2_0 => 42,
        }
    }

    /// The name as ggml and gguf-py spell it (`"F32"`, `"TQ2_0"`, `"I2_S"`, ...).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            I2_S => "I2_S",
            TL1 => "TL1",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
            Q2_0 => "Q2_0",
        }
    }

    /// Parses a ggml type name (case-insensitive), e.g. `"tq2_0"`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::all()
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// How the byte size of a tensor of this type is computed.
    pub fn layout(self) -> TypeLayout {
        use GgmlType::*;
        let (block_size, type_size) = match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 | IQ4_NL => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            // ggml's C struct is 36 bytes (two fp16 + 32 int8); gguf-py 0.19.0 says 40 (stale).
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K | IQ3_S => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            IQ2_XXS => (256, 66),
            IQ2_XS => (256, 74),
            IQ3_XXS => (256, 98),
            IQ1_S => (256, 50),
            IQ2_S => (256, 82),
            IQ4_XS => (256, 136),
            IQ1_M => (256, 56),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            MXFP4 => (32, 17),
            NVFP4 => (64, 36),
            Q1_0 => (128, 18),
            Q2_0 => (64, 18),
            I2_S | TL1 => return TypeLayout::PerTensor2Bit,
        };
        TypeLayout::Blocks {
            block_size,
            type_size,
        }
    }

    /// Elements per block: the number a row length (`dims[0]`) must be a multiple of.
    pub fn block_size(self) -> u64 {
        match self.layout() {
            TypeLayout::Blocks { block_size, .. } => block_size,
            // bitnet.cpp's fork registers I2_S/TL1 with a nominal block of 1 element.
            TypeLayout::PerTensor2Bit => 1,
        }
    }

    /// Whether this crate can dequantize tensors of this type to f32 (and quantize f32 into
    /// it when writing).
    pub fn is_convertible(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | TQ1_0 | TQ2_0 | I2_S)
    }

    /// Whether this crate can dequantize tensors of this type to f32: the convertible types
    /// plus the legacy Q4_0 / Q4_1 / Q5_0 / Q5_1 and the k-quants Q4_K / Q5_K / Q6_K that
    /// other producers write for embeddings and heads (read only: we never write them).
    pub fn is_dequantizable(self) -> bool {
        use GgmlType::*;
        self.is_convertible() || matches!(self, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4_K | Q5_K | Q6_K)
    }

    /// Whether the type is a quantized (non-float, non-integer) type, i.e. one that makes
    /// `general.quantization_version` meaningful.
    pub fn is_quantized(self) -> bool {
        use GgmlType::*;
        !matches!(self, F32 | F16 | BF16 | F64 | I8 | I16 | I32 | I64)
    }

    /// Byte size of a tensor of this type with `dims` (ggml order, `dims[0]` = row length).
    ///
    /// Returns `None` when the row length is not a multiple of the block size or a product
    /// overflows `i64` (ggml's limit).
    pub fn n_bytes(self, dims: &[u64]) -> Option<u64> {
        let n = n_elements(dims)?;
        match self.layout() {
            TypeLayout::Blocks {
                block_size,
                type_size,
            } => {
                let row = dims.first().copied().unwrap_or(1);
                if row % block_size != 0 {
                    return None;
                }
                let bytes = (n / block_size).checked_mul(type_size)?;
                i64::try_from(bytes).is_ok().then_some(bytes)
            }
            TypeLayout::PerTensor2Bit => Some(n / 4 + 32),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of elements of a tensor with `dims`, or `None` if the product (or any dimension)
/// exceeds `i64::MAX`, ggml's limit. An empty `dims` is a scalar (one element).
pub fn n_elements(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| {
        let p = acc.checked_mul(d)?;
        (i64::try_from(d).is_ok() && i64::try_from(p).is_ok()).then_some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        for &t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        let mut ids: Vec<u32> = GgmlType::all().iter().map(|t| t.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), GgmlType::all().len());
        for removed in [4, 5, 31, 32, 33, 37, 43, u32::MAX] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn packed_sizes_agree_with_ternary_core() {
        use ternary_core::Format;
        for (f, t) in [
            (Format::Tq1_0, GgmlType::TQ1_0),
            (Format::Tq2_0, GgmlType::TQ2_0),
            (Format::Q8_0, GgmlType::Q8_0),
            (Format::I2S, GgmlType::I2_S),
        ] {
            assert_eq!(GgmlType::from_id(f.ggml_type()), Some(t));
            for (rows, cols) in [(1, 256), (3, 512), (2560, 6912)] {
                assert_eq!(
                    t.n_bytes(&[cols, rows]),
                    Some(f.tensor_bytes(rows as usize, cols as usize).unwrap() as u64),
                    "{t} {rows}x{cols}"
                );
            }
        }
    }

    #[test]
    fn sizes_follow_the_block_tables() {
        assert_eq!(GgmlType::TQ1_0.n_bytes(&[512, 3]), Some(2 * 54 * 3));
        assert_eq!(GgmlType::TQ2_0.n_bytes(&[256]), Some(66));
        assert_eq!(GgmlType::Q8_0.n_bytes(&[64, 2]), Some(4 * 34));
        assert_eq!(GgmlType::Q8_0.n_bytes(&[48, 2]), None);
        assert_eq!(GgmlType::F16.n_bytes(&[3, 5, 7]), Some(210));
        assert_eq!(GgmlType::I2_S.n_bytes(&[256, 4]), Some(256 + 32));
        assert_eq!(GgmlType::F32.n_bytes(&[]), Some(4));
        assert_eq!(GgmlType::F32.n_bytes(&[u64::MAX]), None);
        assert_eq!(GgmlType::F32.n_bytes(&[1 << 62]), None);
        assert_eq!(n_elements(&[1 << 32, 1 << 32]), None);
        assert_eq!(n_elements(&[0, u64::MAX]), None);
        assert_eq!(n_elements(&[0, 7]), Some(0));
    }
}
