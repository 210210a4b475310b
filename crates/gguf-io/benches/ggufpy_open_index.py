"""Baseline for benches/gguf.rs: open a GGUF file with gguf-py's GGUFReader (which parses
all metadata and builds every tensor's memmap view) and read every tensor's header.

Prints {"samples": [seconds per repetition], ...} as JSON.
"""
import json
import sys
import time

from gguf import GGUFReader


def main(path, reps):
    samples = []
    acc = 0
    n_fields = n_tensors = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        reader = GGUFReader(path)
        acc = 0
        for t in reader.tensors:
            acc += len(t.name) + len(t.shape) + int(t.tensor_type) + int(t.n_bytes) + int(t.data_offset)
        samples.append(time.perf_counter() - t0)
        n_fields, n_tensors = len(reader.fields), len(reader.tensors)
        del reader
    json.dump({"samples": samples, "checksum": acc, "n_fields": n_fields, "n_tensors": n_tensors}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
