//! Metadata values (the 13 GGUF value types) and the ordered key/value table.

// The tag tables read best as flat matches over the variants.
#![allow(clippy::enum_glob_use)]

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;

/// The `u32` value type tag of a metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// 0
    U8,
    /// 1
    I8,
    /// 2
    U16,
    /// 3
    I16,
    /// 4
    U32,
    /// 5
    I32,
    /// 6
    F32,
    /// 7: one byte, 0 or 1.
    Bool,
    /// 8: u64 length + UTF-8 bytes.
    String,
    /// 9: element type, u64 count, elements.
    Array,
    /// 10
    U64,
    /// 11
    I64,
    /// 12
    F64,
}

impl ValueType {
    /// The type for a file's tag, or `None` if unknown.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The tag written to files.
    pub fn id(self) -> u32 {
        use ValueType::*;
        match self {
            U8 => 0,
            I8 => 1,
            U16 => 2,
            I16 => 3,
            U32 => 4,
            I32 => 5,
            F32 => 6,
            Bool => 7,
            String => 8,
            Array => 9,
            U64 => 10,
            I64 => 11,
            F64 => 12,
        }
    }

    /// gguf-py's name for the type (`UINT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }

    /// The smallest number of bytes one value of this type occupies in a file; used to bound
    /// counts by the bytes left before allocating.
    pub(crate) fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// UINT8
    U8(u8),
    /// INT8
    I8(i8),
    /// UINT16
    U16(u16),
    /// INT16
    I16(i16),
    /// UINT32
    U32(u32),
    /// INT32
    I32(i32),
    /// FLOAT32
    F32(f32),
    /// BOOL
    Bool(bool),
    /// STRING
    String(String),
    /// ARRAY (homogeneous; may nest)
    Array(Array),
    /// UINT64
    U64(u64),
    /// INT64
    I64(i64),
    /// FLOAT64
    F64(f64),
}

/// A homogeneous metadata array. Nested arrays (`Array::Array`) may hold arrays of different
/// element types, as the format allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// UINT8 elements
    U8(Vec<u8>),
    /// INT8 elements
    I8(Vec<i8>),
    /// UINT16 elements
    U16(Vec<u16>),
    /// INT16 elements
    I16(Vec<i16>),
    /// UINT32 elements
    U32(Vec<u32>),
    /// INT32 elements
    I32(Vec<i32>),
    /// FLOAT32 elements
    F32(Vec<f32>),
    /// BOOL elements
    Bool(Vec<bool>),
    /// STRING elements
    String(Vec<String>),
    /// ARRAY elements
    Array(Vec<Array>),
    /// UINT64 elements
    U64(Vec<u64>),
    /// INT64 elements
    I64(Vec<i64>),
    /// FLOAT64 elements
    F64(Vec<f64>),
}

impl Value {
    /// The value's type tag.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value as `i128`, whatever its width or signedness.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Any float value (F32 or F64) as `f64`.
    pub fn as_float(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The string, if this is a STRING.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array, if this is an ARRAY.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A JSON rendering: numbers, strings, booleans, arrays as JSON arrays (non-finite
    /// floats become `null`, as JSON has no representation for them).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::U8(v) => J::from(*v),
            Value::I8(v) => J::from(*v),
            Value::U16(v) => J::from(*v),
            Value::I16(v) => J::from(*v),
            Value::U32(v) => J::from(*v),
            Value::I32(v) => J::from(*v),
            Value::U64(v) => J::from(*v),
            Value::I64(v) => J::from(*v),
            Value::F32(v) => J::from(f64::from(*v)),
            Value::F64(v) => J::from(*v),
            Value::Bool(v) => J::from(*v),
            Value::String(v) => J::from(v.as_str()),
            Value::Array(a) => a.to_json(),
        }
    }
}

macro_rules! array_dispatch {
    ($self:expr, $v:ident => $e:expr) => {
        match $self {
            Array::U8($v) => $e,
            Array::I8($v) => $e,
            Array::U16($v) => $e,
            Array::I16($v) => $e,
            Array::U32($v) => $e,
            Array::I32($v) => $e,
            Array::F32($v) => $e,
            Array::Bool($v) => $e,
            Array::String($v) => $e,
            Array::Array($v) => $e,
            Array::U64($v) => $e,
            Array::I64($v) => $e,
            Array::F64($v) => $e,
        }
    };
}

impl Array {
    /// The element type tag.
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        array_dispatch!(self, v => v.len())
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nesting depth: 1 for an array of scalars or strings, 2 for an array of such arrays, ...
    pub fn depth(&self) -> usize {
        match self {
            Array::Array(v) => 1 + v.iter().map(Array::depth).max().unwrap_or(0),
            _ => 1,
        }
    }

    /// Element `i` as a [`Value`] (cloned).
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.clone()),
            Array::Array(v) => Value::Array(v.get(i)?.clone()),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
        })
    }

    /// A JSON array (see [`Value::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Array::Array(v) => J::Array(v.iter().map(Array::to_json).collect()),
            Array::String(v) => J::Array(v.iter().map(|s| J::from(s.as_str())).collect()),
            Array::F32(v) => J::Array(v.iter().map(|&x| J::from(f64::from(x))).collect()),
            Array::F64(v) => J::Array(v.iter().map(|&x| J::from(x)).collect()),
            other => J::Array(
                (0..other.len())
                    .filter_map(|i| other.get(i).map(|v| v.to_json()))
                    .collect(),
            ),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v)
            }
        }
        impl From<Vec<$t>> for Array {
            fn from(v: Vec<$t>) -> Self {
                Array::$variant(v)
            }
        }
        impl From<Vec<$t>> for Value {
            fn from(v: Vec<$t>) -> Self {
                Value::Array(Array::$variant(v))
            }
        }
    )*};
}

value_from! {
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64,
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<Vec<&str>> for Value {
    fn from(v: Vec<&str>) -> Self {
        Value::Array(Array::String(v.into_iter().map(str::to_owned).collect()))
    }
}

impl From<Array> for Value {
    fn from(v: Array) -> Self {
        Value::Array(v)
    }
}

impl From<Vec<Array>> for Value {
    fn from(v: Vec<Array>) -> Self {
        Value::Array(Array::Array(v))
    }
}

/// The metadata key/value table of a file, in file order, with lookup by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

macro_rules! scalar_getter {
    ($($(#[$doc:meta])* $name:ident -> $t:ty : $variant:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, key: &str) -> Result<$t> {
            match self.require(key)? {
                Value::$variant(v) => Ok(*v),
                other => Err(wrong_type(key, ValueType::$variant, other)),
            }
        }
    )*};
}

macro_rules! array_getter {
    ($($(#[$doc:meta])* $name:ident -> $t:ty : $variant:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub fn $name(&self, key: &str) -> Result<&[$t]> {
            match self.get_array(key)? {
                Array::$variant(v) => Ok(v),
                other => Err(Error::WrongType {
                    key: key.to_owned(),
                    expected: concat!("ARRAY of ", stringify!($variant)),
                    found: format!("ARRAY of {}", other.element_type()),
                }),
            }
        }
    )*};
}

fn wrong_type(key: &str, expected: ValueType, found: &Value) -> Error {
    Error::WrongType {
        key: key.to_owned(),
        expected: expected.name(),
        found: found.value_type().name().to_owned(),
    }
}

impl Metadata {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry; `Err(DuplicateKey)` if the key is already present.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(Error::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// Replaces the value of an existing key (keeping its position) or appends a new entry.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        if let Some(&i) = self.index.get(&key) {
            self.entries[i].1 = value;
        } else {
            self.index.insert(key.clone(), self.entries.len());
            self.entries.push((key, value));
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::MissingKey {
            key: key.to_owned(),
        })
    }

    scalar_getter! {
        /// A UINT8 value.
        get_u8 -> u8 : U8,
        /// An INT8 value.
        get_i8 -> i8 : I8,
        /// A UINT16 value.
        get_u16 -> u16 : U16,
        /// An INT16 value.
        get_i16 -> i16 : I16,
        /// A UINT32 value (e.g. `llama.context_length`).
        get_u32 -> u32 : U32,
        /// An INT32 value.
        get_i32 -> i32 : I32,
        /// A FLOAT32 value.
        get_f32 -> f32 : F32,
        /// A BOOL value.
        get_bool -> bool : Bool,
        /// A UINT64 value.
        get_u64 -> u64 : U64,
        /// An INT64 value.
        get_i64 -> i64 : I64,
        /// A FLOAT64 value.
        get_f64 -> f64 : F64,
    }

    /// A STRING value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            other => Err(wrong_type(key, ValueType::String, other)),
        }
    }

    /// An ARRAY value of any element type.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            other => Err(wrong_type(key, ValueType::Array, other)),
        }
    }

    array_getter! {
        /// An ARRAY of STRING (e.g. `tokenizer.ggml.tokens`).
        get_str_array -> String : String,
        /// An ARRAY of UINT8.
        get_u8_array -> u8 : U8,
        /// An ARRAY of INT32 (e.g. `tokenizer.ggml.token_type`).
        get_i32_array -> i32 : I32,
        /// An ARRAY of UINT32.
        get_u32_array -> u32 : U32,
        /// An ARRAY of UINT64.
        get_u64_array -> u64 : U64,
        /// An ARRAY of INT64.
        get_i64_array -> i64 : I64,
        /// An ARRAY of FLOAT32 (e.g. `tokenizer.ggml.scores`).
        get_f32_array -> f32 : F32,
        /// An ARRAY of FLOAT64.
        get_f64_array -> f64 : F64,
        /// An ARRAY of BOOL.
        get_bool_array -> bool : Bool,
    }

    /// An integer of any width or signedness that fits `u64`: llama.cpp writers store most
    /// hyper-parameters as UINT32 but the spec suggests UINT64, so readers accept both.
    pub fn get_uint(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        let Some(i) = v.as_integer() else {
            return Err(wrong_type(key, ValueType::U64, v));
        };
        u64::try_from(i).map_err(|_| Error::OutOfRange {
            key: key.to_owned(),
            value: i.to_string(),
            target: "u64",
        })
    }

    /// A FLOAT32 or FLOAT64 value as `f64`.
    pub fn get_float(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_float()
            .ok_or_else(|| wrong_type(key, ValueType::F64, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_accessors_check_types() {
        let mut m = Metadata::new();
        m.insert("a.u32", 7u32).unwrap();
        m.insert("a.str", "x").unwrap();
        m.insert("a.toks", vec!["a", "b"]).unwrap();
        m.insert("a.i64", -3i64).unwrap();
        assert!(matches!(
            m.insert("a.u32", 1u8),
            Err(Error::DuplicateKey { .. })
        ));
        assert_eq!(m.get_u32("a.u32").unwrap(), 7);
        assert_eq!(m.get_uint("a.u32").unwrap(), 7);
        assert_eq!(m.get_str("a.str").unwrap(), "x");
        assert_eq!(m.get_str_array("a.toks").unwrap(), ["a", "b"]);
        assert!(matches!(m.get_u64("a.u32"), Err(Error::WrongType { .. })));
        assert!(matches!(m.get_uint("a.i64"), Err(Error::OutOfRange { .. })));
        assert!(matches!(
            m.get_i32_array("a.toks"),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(m.get_u32("nope"), Err(Error::MissingKey { .. })));
        m.set("a.u32", 9u32);
        assert_eq!(m.iter().next().unwrap().1, &Value::U32(9));
    }

    #[test]
    fn nested_array_depth_and_json() {
        let a = Array::Array(vec![Array::U8(vec![1, 2]), Array::String(vec!["s".into()])]);
        assert_eq!(a.depth(), 2);
        assert_eq!(a.to_json().to_string(), r#"[[1,2],["s"]]"#);
        assert_eq!(Value::F32(f32::NAN).to_json(), serde_json::Value::Null);
    }
}
