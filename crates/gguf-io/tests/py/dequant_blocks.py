"""Random blocks of every type gguf-py 0.19.0 dequantizes that producers write for
embeddings and heads, with gguf-py's dequantized values: for each type, `<dir>/<TYPE>.bin`
holds the raw blocks and `<dir>/<TYPE>.f32` the little-endian float32 values
`gguf.quants.dequantize` returns for them.

Scale fields (fp16 `d` / `dmin` / `m`) get finite normal values; every other byte is
uniform, so all bit patterns of the quantized fields occur. Used by tests/dequant_ggufpy.rs.
"""
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

# Byte offsets of the fp16 scale fields in each block.
SCALES = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}


def main(out):
    out = Path(out)
    rng = np.random.default_rng(20261201)
    n_blocks = 97
    for qtype, offsets in SCALES.items():
        block, size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
        for at in offsets:
            d = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
            raw[:, at:at + 2] = d.view(np.uint8).reshape(n_blocks, 2)
        # One block with zero scales, as a quantizer writes for an all-zero block.
        for at in offsets:
            raw[0, at:at + 2] = 0
        values = dequantize(raw, qtype).astype(np.float32).reshape(-1)
        assert values.size == n_blocks * block
        raw.tofile(out / f"{qtype.name}.bin")
        values.astype("<f4").tofile(out / f"{qtype.name}.f32")
    for qtype in (Q.F16, Q.BF16):
        x = (rng.standard_normal(4096) * 3).astype(np.float32)
        if qtype == Q.F16:
            raw = x.astype(np.float16).view(np.uint8)
        else:
            raw = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        values = dequantize(raw.reshape(1, -1), qtype).astype(np.float32).reshape(-1)
        raw.tofile(out / f"{qtype.name}.bin")
        values.astype("<f4").tofile(out / f"{qtype.name}.f32")


if __name__ == "__main__":
    main(sys.argv[1])
