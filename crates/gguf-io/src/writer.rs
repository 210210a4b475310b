//! Streaming GGUF writer.
//!
//! A [`GgufBuilder`] collects metadata and tensor infos (names, shapes, types); its sizes
//! fix every tensor's offset up front, so the header can be written before any data. The
//! [`GgufWriter`] it returns then takes tensor data one tensor at a time, in the order the
//! tensors were declared, padding each to the alignment: exactly the layout llama.cpp's loader
//! checks (contiguous data in tensor-info order, each offset `Σ PAD(n_bytes)` of the ones
//! before). Only the header and one tensor's converted bytes are ever held in memory.

use crate::convert;
use crate::error::{Error, Result};
use crate::reader::TensorInfo;
use crate::types::GgmlType;
use crate::value::{Array, Metadata, Value};
use crate::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS,
    MAX_TENSOR_NAME_LEN,
};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Collects metadata and tensor declarations, then starts writing (see the module docs).
#[derive(Debug, Clone)]
pub struct GgufBuilder {
    metadata: Metadata,
    alignment: u64,
    tensors: Vec<TensorInfo>,
    names: HashSet<String>,
    data_len: u64,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    /// An empty builder with the default alignment (32).
    pub fn new() -> Self {
        Self {
            metadata: Metadata::new(),
            alignment: DEFAULT_ALIGNMENT,
            tensors: Vec::new(),
            names: HashSet::new(),
            data_len: 0,
        }
    }

    /// Sets `general.alignment` (a power of two). Must be called before declaring tensors,
    /// since their offsets depend on it.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<()> {
        if !self.tensors.is_empty() {
            return Err(invalid(
                KEY_ALIGNMENT,
                "set the alignment before declaring tensors",
            ));
        }
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(invalid(
                KEY_ALIGNMENT,
                format!("{alignment} is not a non-zero power of two"),
            ));
        }
        self.alignment = u64::from(alignment);
        self.metadata.set(KEY_ALIGNMENT, Value::U32(alignment));
        Ok(())
    }

    /// Adds a metadata entry (written in insertion order). Keys must be unique;
    /// arrays may nest at most [`MAX_ARRAY_DEPTH`](crate::MAX_ARRAY_DEPTH) levels (note that
    /// llama.cpp itself does not read nested arrays). `general.alignment` must be a UINT32
    /// power of two and goes through [`set_alignment`](Self::set_alignment).
    pub fn add_metadata(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        if self.metadata.contains_key(&key) {
            return Err(Error::DuplicateKey { key });
        }
        if key == KEY_ALIGNMENT {
            let Value::U32(a) = value else {
                return Err(invalid(
                    KEY_ALIGNMENT,
                    format!("type {} must be UINT32", value.value_type()),
                ));
            };
            return self.set_alignment(a);
        }
        if let Value::Array(a) = &value
            && a.depth() > MAX_ARRAY_DEPTH
        {
            return Err(invalid(
                format!("metadata `{key}`"),
                format!("arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
            ));
        }
        self.metadata.insert(key, value)
    }

    /// The metadata added so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Declares a tensor: `dims` in ggml order (`dims[0]` = row length; a PyTorch
    /// `(out, in)` weight is `[in, out]`). The name must be unique and shorter than 64 bytes,
    /// at most 4 dims, and the row length a multiple of the type's block size.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<()> {
        let name = name.into();
        let what = || format!("tensor `{name}`");
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(invalid(
                what(),
                format!(
                    "name is {} bytes, the limit is {MAX_TENSOR_NAME_LEN}",
                    name.len()
                ),
            ));
        }
        if self.names.contains(&name) {
            return Err(invalid(what(), "duplicate tensor name"));
        }
        if dims.len() > MAX_DIMS {
            return Err(invalid(
                what(),
                format!("{} dims, the limit is {MAX_DIMS}", dims.len()),
            ));
        }
        let n_bytes = ty.n_bytes(dims).ok_or_else(|| {
            invalid(
                what(),
                format!(
                    "dims {dims:?} overflow or the row length is not a multiple of {ty}'s block size {}",
                    ty.block_size()
                ),
            )
        })?;
        let offset = self.data_len;
        self.data_len = offset
            .checked_add(n_bytes.next_multiple_of(self.alignment))
            .ok_or_else(|| invalid(what(), "total data size overflows u64"))?;
        self.names.insert(name.clone());
        self.tensors.push(TensorInfo {
            name,
            dims: dims.to_vec(),
            ty,
            offset,
            n_bytes,
        });
        Ok(())
    }

    /// Tensors declared so far, with their assigned offsets.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Writes the header (magic, version 3, counts, metadata, tensor infos, padding) to `out`
    /// and returns the writer that takes the tensor data.
    pub fn write_to<W: Write>(self, mut out: W) -> Result<GgufWriter<W>> {
        let header = self.header();
        out.write_all(&header).map_err(|source| Error::Io {
            context: "writing the GGUF header".into(),
            source,
        })?;
        Ok(GgufWriter {
            out,
            tensors: self.tensors,
            alignment: self.alignment,
            next: 0,
        })
    }

    /// Creates (truncates) the file at `path` and writes the header to it.
    pub fn create(self, path: impl AsRef<Path>) -> Result<GgufWriter<BufWriter<File>>> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| Error::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        self.write_to(BufWriter::new(file))
    }

    fn header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&GGUF_MAGIC);
        h.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_str(&mut h, key);
            h.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut h, value);
        }
        for t in &self.tensors {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        // The data section starts aligned (gguf.cpp and gguf-py pad even without tensors).
        h.resize(
            (h.len() as u64).next_multiple_of(self.alignment) as usize,
            0,
        );
        h
    }
}

/// Takes tensor data in declaration order (see [`GgufBuilder`]).
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    next: usize,
}

impl<W: Write> GgufWriter<W> {
    /// The tensor whose data is due next, or `None` when all are written.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.next)
    }

    /// Writes the stored bytes of the next tensor, which must be called `name` and be exactly
    /// its declared size; pads to the alignment.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let info = self.due(name)?;
        if bytes.len() as u64 != info.n_bytes {
            return Err(Error::SizeMismatch {
                name: name.to_owned(),
                what: "bytes",
                found: bytes.len() as u64,
                expected: info.n_bytes,
            });
        }
        let pad = (info.n_bytes.next_multiple_of(self.alignment) - info.n_bytes) as usize;
        let io = |source| Error::Io {
            context: format!("writing data of tensor `{name}`"),
            source,
        };
        self.out.write_all(bytes).map_err(io)?;
        self.out.write_all(&vec![0u8; pad]).map_err(io)?;
        self.next += 1;
        Ok(())
    }

    /// Converts f32 values (file element order) into the next tensor's declared type with
    /// [`convert::quantize`] and writes them.
    pub fn write_tensor_f32(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let info = self.due(name)?;
        if values.len() as u64 != info.n_elements() {
            return Err(Error::SizeMismatch {
                name: name.to_owned(),
                what: "f32 values",
                found: values.len() as u64,
                expected: info.n_elements(),
            });
        }
        let bytes = convert::quantize(info.ty, values).map_err(|e| e.with_tensor_name(name))?;
        self.write_tensor(name, &bytes)
    }

    fn due(&self, name: &str) -> Result<&TensorInfo> {
        match self.tensors.get(self.next) {
            Some(t) if t.name == name => Ok(t),
            Some(t) => Err(Error::OutOfOrder {
                expected: t.name.clone(),
                found: name.to_owned(),
            }),
            None => Err(Error::OutOfOrder {
                expected: "<none: all tensors written>".into(),
                found: name.to_owned(),
            }),
        }
    }

    /// Checks that every tensor was written, flushes, and returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(Error::Unfinished {
                missing: self.tensors.len() - self.next,
                next: t.name.clone(),
            });
        }
        self.out.flush().map_err(|source| Error::Io {
            context: "flushing GGUF data".into(),
            source,
        })?;
        Ok(self.out)
    }
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(u8::from(*x)),
        Value::String(s) => put_str(h, s),
        Value::Array(a) => put_array(h, a),
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(h: &mut Vec<u8>, a: &Array) {
    h.extend_from_slice(&a.element_type().id().to_le_bytes());
    h.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                h.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => h.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
        Array::Bool(v) => h.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => {
            for s in v {
                put_str(h, s);
            }
        }
        Array::Array(v) => {
            for inner in v {
                put_array(h, inner);
            }
        }
    }
}
