"""Writes a GGUF file with gguf-py's GGUFWriter: every metadata type and F32 / F16 / BF16 /
Q8_0 / TQ1_0 / TQ2_0 tensors quantized by gguf-py. Next to it, `<path>.json` holds each
tensor's f32 source values and gguf-py's dequantized values (as float32 bit patterns).

Used by tests/ggufpy.rs; the metadata values are mirrored there.
"""
import json
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V
from gguf.quants import dequantize, quantize


def main(path):
    w = gguf.GGUFWriter(path, "bitnet")
    w.add_uint8("m.u8", 200)
    w.add_int8("m.i8", -100)
    w.add_uint16("m.u16", 60000)
    w.add_int16("m.i16", -30000)
    w.add_uint32("m.u32", 4000000000)
    w.add_int32("m.i32", -2000000000)
    w.add_float32("m.f32", 0.1)
    w.add_bool("m.bool", True)
    w.add_string("m.string", "héllo 세계")
    w.add_uint64("m.u64", 18000000000000000000)
    w.add_int64("m.i64", -9000000000000000000)
    w.add_float64("m.f64", 2.718281828459045)
    w.add_array("m.arr_i32", [1, -2, 3])
    w.add_array("m.arr_f32", [0.5, -1.25])
    w.add_array("m.arr_str", ["a", "", "ü"])
    w.add_array("m.arr_bool", [True, False])
    w.add_key_value("m.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("m.arr_u64", [2**64 - 1, 0], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("m.arr_f64", [1e300, -0.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_array("m.nested", [[1, 2], [3]])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(2048)

    rng = np.random.default_rng(20261125)
    smooth = rng.standard_normal((3, 512)).astype(np.float32)
    codes = rng.integers(-1, 2, size=(2, 512)).astype(np.float32)
    ternary = codes * np.float32(0.0371)
    # Near-ternary values with noise, and an all-zero block (d = 0 in TQ formats).
    noisy = (ternary + rng.normal(0, 0.004, size=ternary.shape)).astype(np.float32)
    noisy[1, :256] = 0.0
    tensors = [
        ("t.f32", smooth, None),
        ("t.f16", smooth, Q.F16),
        ("t.bf16", smooth, Q.BF16),
        ("t.q8_0", smooth, Q.Q8_0),
        ("t.tq1_0", ternary, Q.TQ1_0),
        ("t.tq2_0", ternary, Q.TQ2_0),
        ("t.tq1_0_noisy", noisy, Q.TQ1_0),
        ("t.tq2_0_noisy", noisy, Q.TQ2_0),
    ]
    side = {}
    for name, src, qtype in tensors:
        if qtype is None:
            w.add_tensor(name, src)
            stored, qtype = src, Q.F32
        elif qtype == Q.F16:
            stored = src.astype(np.float16)
            w.add_tensor(name, stored)
        else:
            stored = quantize(src, qtype)
            w.add_tensor(name, stored, raw_dtype=qtype)
        deq = dequantize(stored, qtype).astype(np.float32)
        side[name] = {
            "type": qtype.name,
            "source_bits": src.ravel().view(np.uint32).tolist(),
            "dequantized_bits": deq.ravel().view(np.uint32).tolist(),
        }
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path + ".json", "w") as f:
        json.dump(side, f)


if __name__ == "__main__":
    main(sys.argv[1])
