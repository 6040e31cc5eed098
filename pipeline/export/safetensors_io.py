"""Safetensors read lazily and written as a stream, with numpy only (no torch).

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor name to its
dtype, shape and byte range, then the raw bytes. Reading through a memory map keeps memory bounded to the
tensors in use; checking every range against the file size up front turns a truncated or corrupt file
into a clear error before anything is written.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

NP_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # read as raw bits, widened to float32 by shifting
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    pass


class SafetensorsFile:
    """One .safetensors file: names, shapes and dtypes from the header; data on demand as float32."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise self._bad("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise self._bad(f"header length {n} exceeds the file size {size}")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise self._bad(f"header is not JSON ({e})") from e
        self.metadata: dict = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            try:
                dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
                start, end = entry["data_offsets"]
            except (KeyError, TypeError, ValueError) as exc:
                raise self._bad(f"header entry for {name!r} is malformed") from exc
            if dtype not in NP_DTYPES:
                raise self._bad(f"tensor {name!r} has unsupported dtype {dtype}")
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(NP_DTYPES[dtype]).itemsize
            if end - start != expected or start < 0:
                raise self._bad(f"tensor {name!r} has {end - start} bytes for shape {list(shape)} {dtype}")
            if self._data_start + end > size:
                raise self._bad(f"tensor {name!r} runs past the end of the file (truncated download?)")
            self.entries[name] = (dtype, shape, start, end)

    def _bad(self, why: str) -> SafetensorsError:
        return SafetensorsError(f"{self.path} is not a valid safetensors file: {why}")

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def dtype(self, name: str) -> str:
        return self.entries[name][0]

    def byte_range(self, name: str) -> tuple[int, int]:
        """(file offset, length) of the tensor's bytes, for copying them unchanged."""
        _, _, start, end = self.entries[name]
        return self._data_start + start, end - start

    def read(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array. Plain file reads, not a memory map: the process holds
        only the tensors in use."""
        dtype, shape, _, _ = self.entries[name]
        offset, n = self.byte_range(name)
        raw: np.ndarray = np.empty(shape, dtype=NP_DTYPES[dtype])
        with open(self.path, "rb") as f:
            f.seek(offset)
            if f.readinto(raw.data.cast("B")) != n:
                raise self._bad(f"tensor {name!r} was cut short while reading")
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32, copy=False)


class TensorSet:
    """The tensors of a Hugging Face model folder, across the shards its index names."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        index = folder / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        elif (folder / "model.safetensors").exists():
            shards = ["model.safetensors"]
        else:
            raise SafetensorsError(
                f"{folder} has no model.safetensors (or index): give the Hugging Face model folder "
                "with its weights (a folder with only config.json is enough for export-gguf only)"
            )
        self.files = [SafetensorsFile(folder / s) for s in shards]
        self.where = {name: f for f in self.files for name in f.entries}

    def names(self) -> list[str]:
        return sorted(self.where, key=natural_key)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name].shape(name)

    def dtype(self, name: str) -> str:
        return self.where[name].dtype(name)

    def read(self, name: str) -> np.ndarray:
        return self.where[name].read(name)


def natural_key(name: str) -> list:
    """Sort layers.2 before layers.10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


def encode(a: np.ndarray, dtype: str) -> np.ndarray:
    """float32 array -> the bytes of a safetensors dtype (F32, F16 or BF16)."""
    if dtype == "BF16":
        return to_bf16_bits(a)
    return np.ascontiguousarray(a, dtype=NP_DTYPES[dtype])


def write_streamed(
    path: Path,
    specs: Iterable[tuple[str, str, tuple[int, ...]]],
    arrays: Iterator[np.ndarray],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file from (name, dtype, shape) specs, then one array per spec, in order."""
    specs = list(specs)
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in specs:
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(NP_DTYPES[dtype]).itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for (name, dtype, shape), array in zip(specs, arrays, strict=True):
            data = encode(array, dtype)
            if data.shape != tuple(shape):
                raise ValueError(f"{name}: expected shape {list(shape)}, got {list(data.shape)}")
            data.tofile(f)
