//! Crafted malformed files: each must give its typed error (never a panic), and parsing must
//! allocate memory bounded by the file size however large the counts it claims.

use gguf_io::{Error, GgmlType, GgufBuilder, GgufFile, Malformed};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Tracks the peak heap use of the current thread, so that tests running in parallel do not
/// disturb each other's measurement.
struct PeakAlloc;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with` because allocations also happen while thread-locals are torn down.
    let _ = CURRENT.try_with(|c| {
        let now = c.get().saturating_add_signed(delta);
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: delegates to the system allocator and only adds bookkeeping.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Parses `bytes` and returns the error kind and offset; asserts that the parse allocated
/// at most a small multiple of the file size.
fn parse_err(bytes: &[u8]) -> (Malformed, u64) {
    let input = bytes.to_vec();
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let result = GgufFile::from_bytes(input);
    let peak = PEAK.with(Cell::get) - base;
    let limit = 16 * 1024 + 8 * bytes.len();
    assert!(
        peak <= limit,
        "parsing {} bytes allocated {peak} bytes (limit {limit})",
        bytes.len()
    );
    match result {
        Err(Error::Malformed { offset, kind, path }) => {
            assert_eq!(path.to_str(), Some("<memory>"));
            (kind, offset)
        }
        Err(other) => panic!("expected a Malformed error, got {other}"),
        Ok(_) => panic!("malformed input was accepted"),
    }
}

/// Raw little-endian byte builder for crafting files field by field.
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        Raw::default()
            .bytes(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u8(self, v: u8) -> Self {
        self.bytes(&[v])
    }
    fn u32(self, v: u32) -> Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    fn pad(mut self, align: usize) -> Self {
        self.0.resize(self.0.len().next_multiple_of(align), 0);
        self
    }
    fn zeros(mut self, n: usize) -> Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

/// A valid file with one u32 key and two F32 tensors of 8 elements (32 bytes each).
fn valid() -> Raw {
    Raw::header(3, 2, 1)
        .kv_u32("general.k", 7)
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 32)
        .pad(32)
        .zeros(64)
}

macro_rules! check {
    ($bytes:expr, $pat:pat) => {{
        let (kind, offset) = parse_err(&($bytes).0);
        assert!(matches!(kind, $pat), "got {kind:?} at {offset}");
        (kind, offset)
    }};
}

#[test]
fn the_reference_file_is_valid() {
    let f = GgufFile::from_bytes(valid().0).unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.metadata().get_u32("general.k").unwrap(), 7);
}

#[test]
fn header_errors() {
    check!(
        Raw::default(),
        Malformed::Truncated {
            needed: 4,
            available: 0,
            ..
        }
    );
    check!(Raw::default().bytes(b"GGU"), Malformed::Truncated { .. });
    check!(
        Raw::default().bytes(b"GGML").u32(3),
        Malformed::BadMagic {
            found: [b'G', b'G', b'M', b'L']
        }
    );
    let (_, at) = check!(
        Raw::default()
            .bytes(b"GGUF")
            .u32(3u32.swap_bytes())
            .u64(0)
            .u64(0),
        Malformed::BigEndian { swapped_version: 3 }
    );
    assert_eq!(at, 4);
    check!(
        Raw::header(1, 0, 0),
        Malformed::UnsupportedVersion { version: 1 }
    );
    check!(
        Raw::header(0, 0, 0),
        Malformed::UnsupportedVersion { version: 0 }
    );
    check!(
        Raw::header(4, 0, 0),
        Malformed::UnsupportedVersion { version: 4 }
    );
    check!(
        Raw::default().bytes(b"GGUF").bytes(&[3, 0]),
        Malformed::Truncated { .. }
    );
    check!(
        Raw::default().bytes(b"GGUF").u32(3).u32(0),
        Malformed::Truncated { .. }
    );
    check!(
        Raw::default().bytes(b"GGUF").u32(3).u64(0).u32(0),
        Malformed::Truncated { .. }
    );
}

#[test]
fn absurd_counts_are_refused_before_allocating() {
    let (_, at) = check!(Raw::header(3, 0, 1 << 63), Malformed::CountTooLarge { .. });
    assert_eq!(at, 16);
    let (_, at) = check!(Raw::header(3, 1 << 63, 0), Malformed::CountTooLarge { .. });
    assert_eq!(at, 8);
    check!(
        Raw::header(3, u64::MAX, u64::MAX),
        Malformed::CountTooLarge { .. }
    );
    // A plausible kv count but too many tensors for what is left after the metadata.
    check!(
        Raw::header(3, 2, 1).kv_u32("general.k", 1).zeros(30),
        Malformed::CountTooLarge {
            count: 2,
            max: 1,
            ..
        }
    );
    // Array lengths: 2^63 u32 elements, and 2^62 strings.
    check!(
        Raw::header(3, 0, 1)
            .str("a")
            .u32(9)
            .u32(4)
            .u64(1 << 63)
            .zeros(16),
        Malformed::CountTooLarge { .. }
    );
    check!(
        Raw::header(3, 0, 1)
            .str("a")
            .u32(9)
            .u32(8)
            .u64(1 << 62)
            .zeros(64),
        Malformed::CountTooLarge { .. }
    );
    check!(
        Raw::header(3, 0, 1)
            .str("a")
            .u32(9)
            .u32(9)
            .u64(u64::MAX)
            .zeros(64),
        Malformed::CountTooLarge { .. }
    );
}

#[test]
fn string_errors() {
    let (_, at) = check!(
        Raw::header(3, 0, 1).u64(1 << 63).bytes(b"key").zeros(5),
        Malformed::StringTooLong {
            len: 9223372036854775808,
            ..
        }
    );
    assert_eq!(at, 24);
    check!(
        Raw::header(3, 0, 1).u64(40).bytes(b"key").zeros(10),
        Malformed::StringTooLong {
            len: 40,
            available: 13,
            ..
        }
    );
    check!(
        Raw::header(3, 0, 1)
            .u64(2)
            .bytes(&[0xC3, 0x28])
            .u32(4)
            .u32(0),
        Malformed::InvalidUtf8 { .. }
    );
    check!(
        Raw::header(3, 0, 1)
            .str("k")
            .u32(8)
            .u64(100)
            .bytes(b"short"),
        Malformed::StringTooLong {
            len: 100,
            available: 5,
            ..
        }
    );
    check!(
        Raw::header(3, 0, 1).str("k").u32(8).u64(1).bytes(&[0xFF]),
        Malformed::InvalidUtf8 { .. }
    );
    check!(
        Raw::header(3, 0, 1)
            .str("k")
            .u32(9)
            .u32(8)
            .u64(2)
            .str("ok")
            .u64(9)
            .bytes(b"x"),
        Malformed::StringTooLong { .. }
    );
}

#[test]
fn value_errors() {
    let (kind, at) = check!(
        Raw::header(3, 0, 1).str("k").u32(13).u32(0),
        Malformed::UnknownValueType { type_id: 13, .. }
    );
    assert_eq!(at, 33);
    assert!(kind.to_string().contains("`k`"));
    check!(
        Raw::header(3, 0, 1).str("key12"),
        Malformed::Truncated { .. }
    );
    check!(
        Raw::header(3, 0, 1).str("k").u32(10).u32(0),
        Malformed::Truncated { .. }
    );
    check!(
        Raw::header(3, 0, 1).str("k").u32(7).u8(2),
        Malformed::InvalidBool { value: 2, .. }
    );
    check!(
        Raw::header(3, 0, 1)
            .str("k")
            .u32(9)
            .u32(7)
            .u64(3)
            .bytes(&[1, 0, 7]),
        Malformed::InvalidBool { value: 7, .. }
    );
    check!(
        Raw::header(3, 0, 1).str("k").u32(9).u32(77).u64(0),
        Malformed::UnknownValueType { type_id: 77, .. }
    );
    check!(
        Raw::header(3, 0, 1)
            .str("k")
            .u32(9)
            .u32(4)
            .u64(3)
            .u32(1)
            .u32(2)
            .bytes(&[0, 0]),
        Malformed::CountTooLarge {
            count: 3,
            max: 2,
            ..
        }
    );
    // Truncated inside the header of the second inner array of a nested array.
    check!(
        Raw::header(3, 0, 1)
            .str("k")
            .u32(9)
            .u32(9)
            .u64(2)
            .u32(0)
            .u64(4)
            .bytes(&[1, 2, 3, 4])
            .u32(0)
            .u32(0),
        Malformed::Truncated {
            needed: 8,
            available: 4,
            ..
        }
    );
    check!(
        Raw::header(3, 0, 1).str("k").u32(9).u32(4),
        Malformed::Truncated { .. }
    );
    check!(
        Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2),
        Malformed::DuplicateKey { .. }
    );
}

#[test]
fn deeply_nested_arrays_are_refused() {
    // 9 levels of one-element arrays around an empty u8 array.
    let mut r = Raw::header(3, 0, 1).str("deep").u32(9);
    for _ in 0..9 {
        r = r.u32(9).u64(1);
    }
    let deep = r.u32(0).u64(0);
    check!(deep, Malformed::ArrayTooDeep { max: 8, .. });
    // 8 levels is the limit and is accepted.
    let mut r = Raw::header(3, 0, 1).str("deep").u32(9);
    for _ in 0..7 {
        r = r.u32(9).u64(1);
    }
    let f = GgufFile::from_bytes(r.u32(0).u64(0).0).unwrap();
    assert_eq!(f.metadata().get_array("deep").unwrap().depth(), 8);
    // A nesting bomb: 100k headers that claim nesting, without recursion blowing the stack.
    let mut r = Raw::header(3, 0, 1).str("bomb").u32(9);
    for _ in 0..100_000 {
        r = r.u32(9).u64(1);
    }
    check!(r, Malformed::ArrayTooDeep { .. });
}

#[test]
fn alignment_errors() {
    check!(
        Raw::header(3, 0, 1)
            .str("general.alignment")
            .u32(10)
            .u64(32),
        Malformed::AlignmentType { .. }
    );
    check!(
        Raw::header(3, 0, 1).kv_u32("general.alignment", 0),
        Malformed::AlignmentValue { value: 0 }
    );
    let (_, at) = check!(
        Raw::header(3, 0, 2)
            .kv_u32("general.k", 0)
            .kv_u32("general.alignment", 48),
        Malformed::AlignmentValue { value: 48 }
    );
    assert_eq!(at, 24 + 8 + 9 + 4 + 4);
}

#[test]
fn tensor_info_errors() {
    let long = "x".repeat(64);
    check!(
        Raw::header(3, 1, 0)
            .tensor(&long, &[8], 0, 0)
            .pad(32)
            .zeros(32),
        Malformed::TensorNameTooLong { len: 64, .. }
    );
    let ok63 = "x".repeat(63);
    GgufFile::from_bytes(
        Raw::header(3, 1, 0)
            .tensor(&ok63, &[8], 0, 0)
            .pad(32)
            .zeros(32)
            .0,
    )
    .unwrap();
    check!(
        Raw::header(3, 1, 0)
            .u64(2)
            .bytes(&[0xE2, 0x82])
            .u32(1)
            .u64(8)
            .u32(0)
            .u64(0)
            .pad(32)
            .zeros(32),
        Malformed::InvalidUtf8 { .. }
    );
    check!(
        Raw::header(3, 2, 0)
            .tensor("a", &[8], 0, 0)
            .tensor("a", &[8], 0, 32)
            .pad(32)
            .zeros(64),
        Malformed::DuplicateTensor { .. }
    );
    check!(
        Raw::header(3, 1, 0)
            .tensor("a", &[1, 1, 1, 1, 8], 0, 0)
            .pad(32)
            .zeros(32),
        Malformed::TooManyDims { n_dims: 5, .. }
    );
    check!(
        Raw::header(3, 1, 0)
            .tensor("a", &[1 << 32, 1 << 32], 0, 0)
            .pad(32),
        Malformed::DimsOverflow { .. }
    );
    check!(
        Raw::header(3, 1, 0).tensor("a", &[1 << 63], 0, 0).pad(32),
        Malformed::DimsOverflow { .. }
    );
    // Elements fit i64 but the F64 byte size does not.
    check!(
        Raw::header(3, 1, 0).tensor("a", &[1 << 61], 28, 0).pad(32),
        Malformed::DimsOverflow { .. }
    );
    for id in [4, 5, 31, 37, 1000] {
        check!(
            Raw::header(3, 1, 0)
                .tensor("a", &[256], id, 0)
                .pad(32)
                .zeros(256),
            Malformed::UnknownTensorType { .. }
        );
    }
    check!(
        Raw::header(3, 1, 0)
            .tensor("a", &[48, 2], GgmlType::Q8_0.id(), 0)
            .pad(32)
            .zeros(128),
        Malformed::RowNotBlockMultiple {
            row: 48,
            block: 32,
            ..
        }
    );
    check!(
        Raw::header(3, 1, 0)
            .tensor("w", &[100], GgmlType::TQ2_0.id(), 0)
            .pad(32)
            .zeros(128),
        Malformed::RowNotBlockMultiple { block: 256, .. }
    );
    // Truncated inside n_dims, inside the dims, inside the type and inside the offset.
    for cut in [3, 10, 22, 30] {
        let name = "a_name_of_24_bytes_long_";
        let mut r = Raw::header(3, 1, 0).tensor(name, &[8, 2], 0, 0);
        r.0.truncate(24 + 8 + name.len() + cut);
        check!(r, Malformed::Truncated { .. });
    }
}

#[test]
fn tensor_data_errors() {
    check!(
        Raw::header(3, 1, 0)
            .tensor("a", &[8], 0, 1)
            .pad(32)
            .zeros(64),
        Malformed::MisalignedTensor {
            offset: 1,
            alignment: 32,
            ..
        }
    );
    // With general.alignment = 64, an offset of 32 is misaligned.
    check!(
        Raw::header(3, 2, 1)
            .kv_u32("general.alignment", 64)
            .tensor("a", &[8], 0, 0)
            .tensor("b", &[8], 0, 32)
            .pad(64)
            .zeros(128),
        Malformed::MisalignedTensor { alignment: 64, .. }
    );
    check!(
        Raw::header(3, 1, 0)
            .tensor("a", &[8], 0, 1 << 40)
            .pad(32)
            .zeros(32),
        Malformed::TensorOutOfBounds { .. }
    );
    check!(
        Raw::header(3, 1, 0)
            .tensor("a", &[8], 0, u64::MAX - 31)
            .pad(32)
            .zeros(32),
        Malformed::TensorOutOfBounds { .. }
    );
    let mut cut = valid();
    cut.0.pop();
    check!(cut, Malformed::TensorOutOfBounds { .. });
    check!(
        Raw::header(3, 2, 0)
            .tensor("a", &[16], 0, 0)
            .tensor("b", &[8], 0, 32)
            .pad(32)
            .zeros(96),
        Malformed::OverlappingTensors { .. }
    );
    // Overlap when the infos are not in offset order.
    check!(
        Raw::header(3, 3, 0)
            .tensor("c", &[8], 0, 64)
            .tensor("a", &[16], 0, 0)
            .tensor("b", &[8], 0, 32)
            .pad(32)
            .zeros(96),
        Malformed::OverlappingTensors { .. }
    );
    // Gaps and reordering are legal GGUF (only llama.cpp's loader insists on contiguity).
    let f = GgufFile::from_bytes(
        Raw::header(3, 2, 0)
            .tensor("b", &[8], 0, 96)
            .tensor("a", &[8], 0, 0)
            .pad(32)
            .zeros(128)
            .0,
    )
    .unwrap();
    assert_eq!(f.tensor("b").unwrap().data().len(), 32);
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let mut b = GgufBuilder::new();
    b.add_metadata("general.architecture", "bitnet").unwrap();
    b.add_metadata("s", vec!["a", "bc", ""]).unwrap();
    b.add_metadata(
        "nested",
        vec![
            gguf_io::Array::U8(vec![1, 2]),
            gguf_io::Array::F64(vec![0.5]),
        ],
    )
    .unwrap();
    b.add_metadata("f", 1.5f64).unwrap();
    b.add_tensor("t0", &[8, 2], GgmlType::F16).unwrap();
    b.add_tensor("t1", &[3], GgmlType::F32).unwrap();
    let mut w = b.write_to(Vec::new()).unwrap();
    w.write_tensor_f32("t0", &[0.5; 16]).unwrap();
    w.write_tensor_f32("t1", &[1.0, 2.0, 3.0]).unwrap();
    let full = w.finish().unwrap();
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let data_end = (f.data_offset() + f.tensors()[1].offset() + 12) as usize;
    for len in 0..data_end {
        let (kind, offset) = parse_err(&full[..len]);
        assert!(
            offset <= len as u64,
            "offset {offset} beyond the {len}-byte file: {kind}"
        );
    }
    // The padding after the last tensor is not needed to read it.
    GgufFile::from_bytes(full[..data_end].to_vec()).unwrap();
}

#[test]
fn errors_name_what_and_where() {
    let bytes = Raw::header(3, 1, 0)
        .tensor("blk.0.attn_q.weight", &[8], 0, 3)
        .pad(32)
        .zeros(32);
    let err = GgufFile::from_bytes(bytes.0).unwrap_err().to_string();
    assert!(err.contains("<memory>"), "{err}");
    assert!(err.contains("blk.0.attn_q.weight"), "{err}");
    assert!(err.contains("byte 67"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, b"GGUF\x03\x00").unwrap();
    let err = GgufFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("bad.gguf") && err.contains("byte 4"), "{err}");
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&empty),
        Err(Error::Malformed {
            kind: Malformed::Truncated { .. },
            ..
        })
    ));
    assert!(matches!(
        GgufFile::open(dir.path().join("missing")),
        Err(Error::Io { .. })
    ));
}
