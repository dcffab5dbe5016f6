"""Read and write safetensors files one tensor at a time.

Reading uses `os.pread` at the header's offsets instead of `safe_open`'s memory map: pages touched
through a map stay in the process's resident set until the map closes, so reading a whole
checkpoint through one map makes peak RSS grow to the checkpoint's size. A pread copy is freed with
the tensor. Writing computes the header from the known output shapes first, then streams each
tensor's bytes, so no more than one output tensor is ever held.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsReader:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError(f"{self.path}: not a safetensors file (shorter than its header)")
            (n,) = struct.unpack("<Q", raw)
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{self.path}: not a safetensors file (bad header: {e})") from None
        self.data_start = 8 + n
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.tensors: dict[str, TensorInfo] = {
            k: TensorInfo(k, v["dtype"], tuple(v["shape"]), *v["data_offsets"]) for k, v in header.items()
        }

    def read(self, name: str) -> torch.Tensor:
        info = self.tensors[name]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            buf = bytearray(info.end - info.begin)
            view, got = memoryview(buf), 0
            while got < len(buf):
                k = os.preadv(fd, [view[got:]], self.data_start + info.begin + got)
                if k == 0:
                    raise ValueError(f"{self.path}: truncated while reading tensor {name!r}")
                got += k
        finally:
            os.close(fd)
        if not buf:
            return torch.empty(info.shape, dtype=DTYPES[info.dtype])
        return torch.frombuffer(buf, dtype=DTYPES[info.dtype]).reshape(info.shape)


class SafetensorsWriter:
    """Writes tensors in the order given at construction; `add` must follow that order."""

    def __init__(self, path: str | Path, layout: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        for name, dtype, shape in layout:
            size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
        self._order: Iterator[tuple[str, torch.dtype, tuple[int, ...]]] = iter(layout)
        self._f = open(path, "wb")
        self._f.write(struct.pack("<Q", len(blob)) + blob)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        want_name, dtype, shape = next(self._order)
        if name != want_name or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"writer expected {want_name} {dtype} {shape}, got {name} {tensor.dtype} {tuple(tensor.shape)}")
        if tensor.numel():
            self._f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)

    def close(self) -> None:
        if next(self._order, None) is not None:
            self._f.close()
            raise ValueError("writer closed before every tensor was written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
