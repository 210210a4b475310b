//! Fuzzes the GGUF reader: any input must parse or give an error, never panic, hang or
//! allocate without bound; every accepted file must survive dequantization, both dumps and a
//! rewrite through the writer that is stable (rewriting the rewrite gives the same bytes).

#![no_main]

use gguf_io::{GgufBuilder, GgufFile, dump};
use libfuzzer_sys::fuzz_target;

fn rewrite(f: &GgufFile) -> Vec<u8> {
    let mut b = GgufBuilder::new();
    for (k, v) in f.metadata().iter() {
        b.add_metadata(k, v.clone())
            .expect("metadata the reader accepted is writable");
    }
    for t in f.tensors() {
        b.add_tensor(t.name(), t.dims(), t.ty())
            .expect("tensor infos the reader accepted are writable");
    }
    let mut w = b.write_to(Vec::new()).expect("writing to a Vec");
    for v in f.views() {
        w.write_tensor(v.name(), v.data())
            .expect("tensor data of the declared size");
    }
    w.finish().expect("all tensors written")
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for v in f.views() {
        if v.ty().is_convertible() {
            if let Ok(values) = v.to_f32() {
                assert_eq!(values.len() as u64, v.info().n_elements());
            }
        }
    }
    let _ = dump::to_json(&f).to_string();
    let _ = dump::to_text(&f);
    let once = rewrite(&f);
    let again = GgufFile::from_bytes(once.clone()).expect("our own output parses");
    assert_eq!(again.tensors().len(), f.tensors().len());
    for (a, b) in f.views().zip(again.views()) {
        assert_eq!(
            (a.name(), a.dims(), a.ty(), a.data()),
            (b.name(), b.dims(), b.ty(), b.data())
        );
    }
    assert_eq!(rewrite(&again), once, "rewriting is stable");
});
