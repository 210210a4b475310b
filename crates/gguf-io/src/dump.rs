//! Human-readable and JSON summaries of a file, as printed by the `gguf-dump` binary.

use crate::reader::GgufFile;
use crate::value::{Array, Value};
use std::fmt::Write as _;

/// Values longer than this are cut in the text dump.
const TEXT_STRING_LIMIT: usize = 60;
/// Array elements shown in the text dump.
const TEXT_ARRAY_LIMIT: usize = 6;

/// The JSON summary: `{"version", "alignment", "metadata": {key: value}, "tensors":
/// [{"name", "type", "dims", "offset"}]}` with ggml type names, dims in file order, offsets
/// relative to the data section (as stored in the file) and arrays as JSON arrays.
pub fn to_json(file: &GgufFile) -> serde_json::Value {
    let metadata: serde_json::Map<String, serde_json::Value> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_json()))
        .collect();
    let tensors: Vec<serde_json::Value> = file
        .tensors()
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name(),
                "type": t.ty().name(),
                "dims": t.dims(),
                "offset": t.offset(),
            })
        })
        .collect();
    serde_json::json!({
        "version": file.version(),
        "alignment": file.alignment(),
        "metadata": metadata,
        "tensors": tensors,
    })
}

/// A text listing in the spirit of gguf-py's `gguf-dump`: one line per metadata entry (type,
/// element count, key, shortened value) and one per tensor (elements, dims, type, name).
pub fn to_text(file: &GgufFile) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "* GGUF v{} {}, alignment {}, data at byte {}",
        file.version(),
        file.path().display(),
        file.alignment(),
        file.data_offset()
    );
    let _ = writeln!(s, "* Dumping {} key/value pair(s)", file.metadata().len());
    for (n, (key, value)) in file.metadata().iter().enumerate() {
        let (ty, count) = match value {
            Value::Array(a) => (array_type_name(a), a.len()),
            other => (other.value_type().name().to_owned(), 1),
        };
        let _ = writeln!(
            s,
            "  {:5}: {ty:10} | {count:8} | {key} = {}",
            n + 1,
            short(value)
        );
    }
    let _ = writeln!(s, "* Dumping {} tensor(s)", file.tensors().len());
    for (n, t) in file.tensors().iter().enumerate() {
        let dims: Vec<String> = (0..4)
            .map(|i| format!("{:5}", t.dims().get(i).copied().unwrap_or(1)))
            .collect();
        let _ = writeln!(
            s,
            "  {:5}: {:10} | {} | {:7} | {}",
            n + 1,
            t.n_elements(),
            dims.join(", "),
            t.ty().name(),
            t.name()
        );
    }
    s
}

fn array_type_name(a: &Array) -> String {
    match a {
        Array::Array(inner) => match inner.first() {
            Some(first) => format!("[{}]", array_type_name(first)),
            None => "[[]]".to_owned(),
        },
        other => format!("[{}]", other.element_type().name()),
    }
}

fn short(value: &Value) -> String {
    match value {
        Value::String(st) => {
            if st.chars().count() > TEXT_STRING_LIMIT {
                let cut: String = st.chars().take(TEXT_STRING_LIMIT - 3).collect();
                format!("{:?}", cut + "...")
            } else {
                format!("{st:?}")
            }
        }
        Value::Array(a) => {
            let shown: Vec<String> = (0..a.len().min(TEXT_ARRAY_LIMIT))
                .filter_map(|i| a.get(i))
                .map(|v| short(&v))
                .collect();
            let more = if a.len() > TEXT_ARRAY_LIMIT {
                ", ..."
            } else {
                ""
            };
            format!("[{}{more}]", shown.join(", "))
        }
        other => other.to_json().to_string(),
    }
}
