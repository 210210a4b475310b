"""Reads a GGUF file with gguf-py's GGUFReader and prints what it sees as JSON.

Used by tests/ggufpy.rs as the independent reader. Float values are given as bit patterns
(float32 or float64) so that the comparison is exact.
"""
import json
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize


def encode(value, leaf_type):
    if leaf_type == GGUFValueType.FLOAT32:
        return struct.unpack("<I", struct.pack("<f", value))[0]
    if leaf_type == GGUFValueType.FLOAT64:
        return struct.unpack("<Q", struct.pack("<d", value))[0]
    return value


def main(path):
    reader = GGUFReader(path)
    metadata = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        leaf = field.types[-1]
        contents = field.contents()
        if field.types[0] == GGUFValueType.ARRAY:
            value = [encode(v, leaf) for v in contents]
        else:
            value = encode(contents, leaf)
        metadata[field.name] = {"types": [t.name for t in field.types], "value": value}
    tensors = []
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "n_bytes": int(t.n_bytes),
            "data_offset": int(t.data_offset),
            "bits": values.view(np.uint32).tolist(),
        })
    json.dump({
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "metadata": metadata,
        "tensors": tensors,
    }, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
