//! Memory-mapped, validating GGUF reader.
//!
//! Parsing never trusts a count or length: each is checked against the bytes left in the file
//! before anything is allocated for it, so memory stays proportional to the file size.

use crate::convert;
use crate::error::{Error, Malformed, Result};
use crate::types::{GgmlType, n_elements};
use crate::value::{Array, Metadata, Value, ValueType};
use crate::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_TENSOR_NAME_LEN};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Smallest encoding of one metadata entry: key length (8) + type tag (4) + a 1-byte value.
const MIN_KV_SIZE: u64 = 13;
/// Smallest encoding of one tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_SIZE: u64 = 24;

/// Description of one tensor, from its tensor info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub(crate) name: String,
    pub(crate) dims: Vec<u64>,
    pub(crate) ty: GgmlType,
    pub(crate) offset: u64,
    pub(crate) n_bytes: u64,
}

impl TensorInfo {
    /// Tensor name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions in file (ggml) order: `dims[0]` is the row length (fastest varying). A
    /// PyTorch `(out, in)` weight has dims `[in, out]`.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// Storage type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Offset of the data relative to the start of the data section, as stored in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of elements (product of the dims).
    pub fn n_elements(&self) -> u64 {
        // Validated at parse time, so the product cannot overflow.
        n_elements(&self.dims).unwrap_or(0)
    }

    /// Size of the data in bytes.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// A tensor's info together with its data, borrowed from the file's memory map.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    info: &'a TensorInfo,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The tensor info.
    pub fn info(&self) -> &'a TensorInfo {
        self.info
    }

    /// Tensor name.
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    /// Dimensions in file (ggml) order.
    pub fn dims(&self) -> &'a [u64] {
        &self.info.dims
    }

    /// Storage type.
    pub fn ty(&self) -> GgmlType {
        self.info.ty
    }

    /// The raw bytes, exactly [`TensorInfo::n_bytes`] long (no copy).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The data as `f32`s without copying, if the tensor is F32 and its bytes happen to be
    /// 4-byte aligned in memory (always true for memory-mapped files).
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        if self.info.ty != GgmlType::F32 {
            return None;
        }
        bytemuck::try_cast_slice(self.data).ok()
    }

    /// Dequantizes (or copies) the tensor to f32, in file element order. Supported for F32,
    /// F16, BF16, Q8_0, TQ1_0, TQ2_0, I2_S, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K
    /// ([`GgmlType::is_dequantizable`]); other types give [`Error::Unsupported`].
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        convert::dequantize(self.info.ty, self.data, self.info.n_elements())
            .map_err(|e| e.with_tensor_name(&self.info.name))
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An open GGUF file: parsed header, metadata and tensor infos, with tensor data served as
/// borrowed views into a memory map.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("metadata_len", &self.metadata.len())
            .field("tensors_len", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Memory-maps and validates the file at `path`.
    ///
    /// The map is read-only; as with any memory map, another process truncating or rewriting
    /// the file while it is open is undefined behaviour, so open files you do not modify.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            context: format!("opening {}", path.display()),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let storage = if len == 0 {
            // mmap of an empty file fails on Linux; the parser reports the truncation.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is only read. Soundness needs the file to stay unmodified while
            // mapped, which is the documented contract of `open`.
            Storage::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        Self::from_storage(path.to_path_buf(), storage)
    }

    /// Validates GGUF data held in memory (errors name the path `<memory>`).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(PathBuf::from("<memory>"), Storage::Owned(bytes))
    }

    fn from_storage(path: PathBuf, storage: Storage) -> Result<Self> {
        let parsed = match parse(storage.bytes()) {
            Ok(p) => p,
            Err((offset, kind)) => return Err(Error::Malformed { path, offset, kind }),
        };
        let index = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            storage,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (3, or 2 for old files).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The metadata table, with typed accessors such as
    /// [`get_u32`](Metadata::get_u32) and [`get_str_array`](Metadata::get_str_array).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A borrowed view of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_owned(),
        })?;
        Ok(self.view(info))
    }

    /// Views of every tensor, in file order.
    pub fn views(&self) -> impl ExactSizeIterator<Item = TensorView<'_>> {
        self.tensors.iter().map(|t| self.view(t))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        // Bounds were validated when parsing.
        let start = (self.data_offset + info.offset) as usize;
        let data = &self.storage.bytes()[start..start + info.n_bytes as usize];
        TensorView { info, data }
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
}

type PResult<T> = std::result::Result<T, (u64, Malformed)>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn pos(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> PResult<&'a [u8]> {
        if n > self.remaining() {
            return Err((
                self.pos(),
                Malformed::Truncated {
                    what: what(),
                    needed: n,
                    available: self.remaining(),
                },
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> PResult<[u8; N]> {
        let s = self.take(N as u64, what)?;
        Ok(s.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, what: impl FnOnce() -> String) -> PResult<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> PResult<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> PResult<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A gguf_string: u64 length then UTF-8 bytes; the length is checked against the bytes
    /// left before anything is copied.
    fn string_bytes(&mut self, what: &dyn Fn() -> String) -> PResult<&'a [u8]> {
        let at = self.pos();
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err((
                at,
                Malformed::StringTooLong {
                    what: what(),
                    len,
                    available: self.remaining(),
                },
            ));
        }
        self.take(len, what)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> PResult<String> {
        let at = self.pos();
        let bytes = self.string_bytes(what)?;
        utf8(bytes, at, what)
    }

    /// Rejects `count` items of at least `min_size` bytes each when they cannot fit in the
    /// bytes left; this is what bounds every allocation by the file size.
    fn check_count(
        &self,
        at: u64,
        count: u64,
        min_size: u64,
        what: impl FnOnce() -> String,
    ) -> PResult<usize> {
        let max = self.remaining() / min_size;
        if count > max {
            return Err((
                at,
                Malformed::CountTooLarge {
                    what: what(),
                    count,
                    max,
                },
            ));
        }
        Ok(count as usize)
    }
}

fn utf8(bytes: &[u8], at: u64, what: &dyn Fn() -> String) -> PResult<String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err((at, Malformed::InvalidUtf8 { what: what() })),
    }
}

fn parse(buf: &[u8]) -> PResult<Parsed> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.array::<4>(|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err((0, Malformed::BadMagic { found: magic }));
    }
    let version = c.u32(|| "version".into())?;
    if version != 0 && version.trailing_zeros() >= 16 {
        return Err((
            4,
            Malformed::BigEndian {
                swapped_version: version.swap_bytes(),
            },
        ));
    }
    if !matches!(version, 2 | 3) {
        return Err((4, Malformed::UnsupportedVersion { version }));
    }
    let tensor_count_at = c.pos();
    let tensor_count = c.u64(|| "tensor count".into())?;
    let kv_count_at = c.pos();
    let kv_count = c.u64(|| "metadata count".into())?;
    // Cheap early refusal of absurd counts; each is re-checked where it is allocated.
    c.check_count(tensor_count_at, tensor_count, MIN_TENSOR_INFO_SIZE, || {
        "tensor".into()
    })?;
    let kv_count = c.check_count(kv_count_at, kv_count, MIN_KV_SIZE, || {
        "metadata entry".into()
    })?;

    let mut metadata = Metadata::new();
    let mut alignment_at = kv_count_at;
    for i in 0..kv_count {
        let entry_at = c.pos();
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let type_at = c.pos();
        let tag = c.u32(|| format!("value type of `{key}`"))?;
        let ty = ValueType::from_id(tag).ok_or_else(|| {
            (
                type_at,
                Malformed::UnknownValueType {
                    key: key.clone(),
                    type_id: tag,
                },
            )
        })?;
        let value = read_value(&mut c, ty, &key, 0)?;
        if metadata.contains_key(&key) {
            return Err((entry_at, Malformed::DuplicateKey { key }));
        }
        if key == crate::KEY_ALIGNMENT {
            alignment_at = entry_at;
        }
        metadata.set(key, value);
    }

    let alignment = match metadata.get(crate::KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => u64::from(*a),
        Some(Value::U32(a)) => return Err((alignment_at, Malformed::AlignmentValue { value: *a })),
        Some(other) => {
            return Err((
                alignment_at,
                Malformed::AlignmentType {
                    found: other.value_type(),
                },
            ));
        }
    };

    let tensor_count =
        c.check_count(tensor_count_at, tensor_count, MIN_TENSOR_INFO_SIZE, || {
            "tensor".into()
        })?;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count);
    let mut info_offsets = Vec::with_capacity(tensor_count);
    let mut names: HashSet<String> = HashSet::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let at = c.pos();
        info_offsets.push(at);
        let name_bytes = c.string_bytes(&|| format!("name of tensor {i}"))?;
        if name_bytes.len() > MAX_TENSOR_NAME_LEN {
            return Err((
                at,
                Malformed::TensorNameTooLong {
                    name: String::from_utf8_lossy(name_bytes).into_owned(),
                    len: name_bytes.len() as u64,
                },
            ));
        }
        let name = utf8(name_bytes, at, &|| format!("name of tensor {i}"))?;
        let dims_at = c.pos();
        let n_dims = c.u32(|| format!("n_dims of tensor `{name}`"))?;
        if n_dims as usize > MAX_DIMS {
            return Err((dims_at, Malformed::TooManyDims { name, n_dims }));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(|| format!("dimension {d} of tensor `{name}`"))?);
        }
        if n_elements(&dims).is_none() {
            return Err((dims_at, Malformed::DimsOverflow { name, dims }));
        }
        let type_at = c.pos();
        let type_id = c.u32(|| format!("type of tensor `{name}`"))?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err((type_at, Malformed::UnknownTensorType { name, type_id }));
        };
        let Some(n_bytes) = ty.n_bytes(&dims) else {
            let block = ty.block_size();
            let row = dims.first().copied().unwrap_or(1);
            return Err((
                dims_at,
                if row % block == 0 {
                    Malformed::DimsOverflow { name, dims }
                } else {
                    Malformed::RowNotBlockMultiple {
                        name,
                        ty,
                        row,
                        block,
                    }
                },
            ));
        };
        let offset_at = c.pos();
        let offset = c.u64(|| format!("data offset of tensor `{name}`"))?;
        if offset % alignment != 0 {
            return Err((
                offset_at,
                Malformed::MisalignedTensor {
                    name,
                    offset,
                    alignment,
                },
            ));
        }
        if !names.insert(name.clone()) {
            return Err((at, Malformed::DuplicateTensor { name }));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    let data_offset = c.pos().next_multiple_of(alignment);
    let file_len = buf.len() as u64;
    for (t, &at) in tensors.iter().zip(&info_offsets) {
        let start = data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.n_bytes);
        if end > file_len {
            return Err((
                at,
                Malformed::TensorOutOfBounds {
                    name: t.name.clone(),
                    start,
                    end,
                    file_len,
                },
            ));
        }
    }
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].n_bytes > 0)
        .collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.n_bytes > b.offset {
            return Err((
                info_offsets[w[1]],
                Malformed::OverlappingTensors {
                    first: a.name.clone(),
                    second: b.name.clone(),
                },
            ));
        }
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

fn read_value(c: &mut Cursor<'_>, ty: ValueType, key: &str, depth: usize) -> PResult<Value> {
    let what = || format!("value of `{key}`");
    Ok(match ty {
        ValueType::U8 => Value::U8(c.u8(what)?),
        ValueType::I8 => Value::I8(c.u8(what)? as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(what)?)),
        ValueType::U32 => Value::U32(c.u32(what)?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(what)?)),
        ValueType::U64 => Value::U64(c.u64(what)?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(what)?)),
        ValueType::Bool => {
            let at = c.pos();
            Value::Bool(read_bool(c.u8(what)?, at, key)?)
        }
        ValueType::String => Value::String(c.string(&what)?),
        ValueType::Array => Value::Array(read_array(c, key, depth + 1)?),
    })
}

fn read_bool(b: u8, at: u64, key: &str) -> PResult<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        value => Err((
            at,
            Malformed::InvalidBool {
                key: key.to_owned(),
                value,
            },
        )),
    }
}

/// Reads an array header and its elements; `depth` is 1 for a top-level array.
fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> PResult<Array> {
    let at = c.pos();
    if depth > MAX_ARRAY_DEPTH {
        return Err((
            at,
            Malformed::ArrayTooDeep {
                key: key.to_owned(),
                max: MAX_ARRAY_DEPTH,
            },
        ));
    }
    let tag = c.u32(|| format!("element type of array `{key}`"))?;
    let elem = ValueType::from_id(tag).ok_or_else(|| {
        (
            at,
            Malformed::UnknownValueType {
                key: key.to_owned(),
                type_id: tag,
            },
        )
    })?;
    let count_at = c.pos();
    let count = c.u64(|| format!("length of array `{key}`"))?;
    let n = c.check_count(count_at, count, elem.min_encoded_size(), || {
        format!("element of array `{key}`")
    })?;
    let what = || format!("elements of array `{key}`");
    macro_rules! fixed {
        ($t:ty, $variant:ident) => {{
            const W: usize = size_of::<$t>();
            let bytes = c.take((n * W) as u64, what)?;
            Array::$variant(
                bytes
                    .chunks_exact(W)
                    .map(|b| <$t>::from_le_bytes(b.try_into().expect("chunk of W bytes")))
                    .collect(),
            )
        }};
    }
    Ok(match elem {
        ValueType::U8 => Array::U8(c.take(n as u64, what)?.to_vec()),
        ValueType::I8 => fixed!(i8, I8),
        ValueType::U16 => fixed!(u16, U16),
        ValueType::I16 => fixed!(i16, I16),
        ValueType::U32 => fixed!(u32, U32),
        ValueType::I32 => fixed!(i32, I32),
        ValueType::F32 => fixed!(f32, F32),
        ValueType::U64 => fixed!(u64, U64),
        ValueType::I64 => fixed!(i64, I64),
        ValueType::F64 => fixed!(f64, F64),
        ValueType::Bool => {
            let start = c.pos();
            let bytes = c.take(n as u64, what)?;
            let mut out = Vec::with_capacity(n);
            for (i, &b) in bytes.iter().enumerate() {
                out.push(read_bool(b, start + i as u64, key)?);
            }
            Array::Bool(out)
        }
        ValueType::String => {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(c.string(&|| format!("element {i} of array `{key}`"))?);
            }
            Array::String(out)
        }
        ValueType::Array => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(out)
        }
    })
}
