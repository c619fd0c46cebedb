#!/usr/bin/env python3
"""Dump a GGUF file as JSON with the reference Python reader (the `gguf` package).

Usage: py_dump.py FILE

Prints {"version", "alignment", "data_offset", "metadata": [[key, type, value], ...],
"tensors": [{"name", "type", "shape", "sha256"}, ...]} in file order. Types are gguf's
GGUFValueType names ("UINT32", "ARRAY[STRING]"); floats are given as their IEEE bit patterns so
that the comparison is exact; strings are text when they are UTF-8, else {"hex": ...}.
"""

import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType

HEADER_FIELDS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}


def scalar(part, vtype):
    if vtype == GGUFValueType.FLOAT32:
        return int(part.view(np.uint32)[0])
    if vtype == GGUFValueType.FLOAT64:
        return int(part.view(np.uint64)[0])
    if vtype == GGUFValueType.BOOL:
        return bool(part[0])
    return int(part[0])


def string(part):
    raw = part.tobytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}


def value(field):
    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        if len(field.types) > 2:
            raise SystemExit(f"{field.name}: nested arrays are not supported by this dump")
        # An empty array records no item type in field.types: read it from the parts
        # (key length, key, value type, item type, item count, items...).
        sub = GGUFValueType(int(field.parts[3][0]))
        items = [field.parts[i] for i in field.data]
        if sub == GGUFValueType.STRING:
            return f"ARRAY[{sub.name}]", [string(p) for p in items]
        return f"ARRAY[{sub.name}]", [scalar(p, sub) for p in items]
    part = field.parts[field.data[0]]
    if main == GGUFValueType.STRING:
        return main.name, string(part)
    return main.name, scalar(part, main)


def main():
    reader = GGUFReader(sys.argv[1], "r")
    metadata = []
    for name, field in reader.fields.items():
        if name in HEADER_FIELDS:
            continue
        vtype, val = value(field)
        metadata.append([name, vtype, val])
    tensors = []
    for t in reader.tensors:
        raw = np.ascontiguousarray(t.data).view(np.uint8).tobytes()
        if len(raw) != t.n_bytes:
            raise SystemExit(f"{t.name}: {len(raw)} bytes, expected {t.n_bytes}")
        tensors.append(
            {
                "name": t.name,
                "type": int(t.tensor_type),
                "shape": [int(d) for d in t.shape],
                "sha256": hashlib.sha256(raw).hexdigest(),
            }
        )
    version = int(reader.fields["GGUF.version"].parts[-1][0])
    json.dump(
        {
            "version": version,
            "alignment": int(reader.alignment),
            "data_offset": int(reader.data_offset),
            "metadata": metadata,
            "tensors": tensors,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
