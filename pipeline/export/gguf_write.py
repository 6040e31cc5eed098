"""Streaming GGUF writing shared by the adapter and full-model exports.

The whole tensor plan (names, shapes, types) is known from headers before any data is read, so the file's
header is written first and tensors follow one at a time: memory holds one tensor, not the model.
The type rules follow llama.cpp's converter: 1-D and `*_norm` tensors stay F32; block-quantized types need
rows that are a whole number of blocks, and a tensor that cannot be quantized falls back to F16, which
is reported rather than done silently.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from plumbing.atomic import atomic_path

Q = gguf.GGMLQuantizationType
OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # numpy order (rows, cols); ggml's ne is the reverse
    qtype: gguf.GGMLQuantizationType
    load: Callable[[], np.ndarray]  # float32 data, produced only when written
    copy_from: tuple[Path, int, int] | None = None  # (file, offset, length) already in the final type


class FileSlice:
    """Bytes of another file, written by the kernel (copy_file_range) without passing through Python."""

    def __init__(self, path: Path, offset: int, nbytes: int):
        self.path, self.offset, self.nbytes = path, offset, nbytes

    def tofile(self, fout) -> None:
        fout.flush()
        start = fout.tell()
        with open(self.path, "rb") as src:
            done = 0
            try:
                while done < self.nbytes:
                    n = os.copy_file_range(
                        src.fileno(), fout.fileno(), self.nbytes - done, self.offset + done, start + done
                    )
                    if n == 0:
                        raise OSError(f"{self.path} ended early")
                    done += n
            except (AttributeError, OSError) as e:  # no copy_file_range here (other OS, filesystem)
                if isinstance(e, OSError) and "ended early" in str(e):
                    raise
                src.seek(self.offset + done)
                os.lseek(fout.fileno(), start + done, os.SEEK_SET)
                while done < self.nbytes:
                    chunk = src.read(min(1 << 24, self.nbytes - done))
                    if not chunk:
                        # why: the fallback's reason (no copy_file_range) is not why the file ended early
                        raise OSError(f"{self.path} ended early") from None
                    os.write(fout.fileno(), chunk)
                    done += len(chunk)
        fout.seek(start + self.nbytes)  # resynchronise the buffered writer with the descriptor


@dataclass
class WriteReport:
    path: Path
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)


def choose_type(name: str, shape: Sequence[int], outtype: str) -> tuple[gguf.GGMLQuantizationType, bool]:
    """The GGML type for a tensor, and whether it fell back to F16 (rows not a whole number of blocks)."""
    if outtype not in OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r}: use one of {', '.join(OUTTYPES)}")
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return Q.F32, False
    qtype = OUTTYPES[outtype]
    if shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return Q.F16, True
    return qtype, False


def plan_notes(plan: list[PlannedTensor], outtype: str) -> list[str]:
    """One line per row length that could not be quantized, naming the tensors kept in F16."""
    qtype = OUTTYPES[outtype]
    if qtype in (Q.F32, Q.F16, Q.BF16):
        return []
    by_cols: dict[int, list[str]] = {}
    for t in plan:
        if t.qtype == Q.F16:
            by_cols.setdefault(t.shape[-1], []).append(t.name)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return [
        f"{len(names)} tensor(s) written as F16, not {qtype.name}: rows of {cols} values are not a multiple "
        f"of its block of {block} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for cols, names in by_cols.items()
    ]


QUANT_ROW = 4096  # values per row handed to gguf-py's quantizers


def encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype == Q.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == Q.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] >= QUANT_ROW:
        return gguf.quants.quantize(data, qtype)
    # gguf-py quantizes row by row, slowly for short rows (a LoRA B has rank-long rows). Blocks never
    # straddle rows, so quantizing k rows joined end to end gives the very same bytes, several times faster.
    rows, cols = data.shape
    k = max(1, QUANT_ROW // cols)
    while rows % k:
        k -= 1
    joined = gguf.quants.quantize(data.reshape(rows // k, cols * k), qtype)
    return joined.reshape(rows, -1)


def nbytes(shape: Sequence[int], qtype: gguf.GGMLQuantizationType) -> int:
    return int(np.prod(gguf.quant_shape_to_byte_shape(tuple(shape), qtype), dtype=np.int64))


def _encode_one(t: PlannedTensor) -> np.ndarray:
    data = t.load()
    if tuple(data.shape) != tuple(t.shape):
        raise ValueError(f"{t.name}: planned shape {list(t.shape)}, got {list(data.shape)}")
    return encode(data, t.qtype)


def _encoded(plan: list[PlannedTensor]) -> Iterator[tuple[PlannedTensor, np.ndarray | FileSlice]]:
    """The plan's data in order, converted on every core a few tensors ahead (numpy releases the GIL);
    at most `workers + 1` tensors are held at once."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        window: deque = deque()
        for t in plan:
            window.append((t, FileSlice(*t.copy_from) if t.copy_from else pool.submit(_encode_one, t)))
            if len(window) > workers:
                yield _ready(window.popleft())
        while window:
            yield _ready(window.popleft())


def _ready(item):
    t, data = item
    return t, data if isinstance(data, FileSlice) else data.result()


def write_gguf(
    path: Path,
    arch: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    plan: list[PlannedTensor],
    overwrite: bool = False,
    on_tensor: Callable[[str], None] | None = None,
) -> WriteReport:
    """Write metadata then the planned tensors, atomically: on any error no file is left at path."""
    t0 = time.perf_counter()
    report = WriteReport(Path(path))
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer = gguf.GGUFWriter(None, arch)
        add_metadata(writer)
        for t in plan:
            byte_shape = gguf.quant_shape_to_byte_shape(t.shape, t.qtype)
            if t.qtype in (Q.F32, Q.F16):
                dtype = np.float32 if t.qtype == Q.F32 else np.float16
                writer.add_tensor_info(t.name, t.shape, np.dtype(dtype), nbytes(t.shape, t.qtype))
            else:
                writer.add_tensor_info(
                    t.name, byte_shape, np.dtype(np.uint8), nbytes(t.shape, t.qtype), t.qtype
                )
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, data in _encoded(plan):
            # a FileSlice stands in for the array: the writer reads only its nbytes and calls tofile
            writer.write_tensor_data(data)  # type: ignore[arg-type]
            report.tensors += 1
            report.types[t.qtype.name] = report.types.get(t.qtype.name, 0) + 1
            if on_tensor:
                on_tensor(t.name)
        writer.close()
    report.bytes = Path(path).stat().st_size
    report.seconds = time.perf_counter() - t0
    return report
