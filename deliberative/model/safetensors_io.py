"""Minimal safetensors reading and writing on numpy, bfloat16 included.

The `safetensors` numpy bindings reject bfloat16, the dtype most Hub checkpoints use.
The format is simple (an 8-byte header length, a JSON header, raw little-endian bytes),
so tensors are read as zero-copy memory-mapped views, one at a time.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

_DTYPES = {
    'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
    'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsFile:
  """Lazy, memory-mapped access to one .safetensors file."""

  def __init__(self, path: str):
    self.path = path
    with open(path, 'rb') as f:
      raw_len = f.read(8)
      if len(raw_len) != 8:
        raise ValueError(f'{path}: not a safetensors file (shorter than its header length)')
      (n,) = struct.unpack('<Q', raw_len)
      try:
        header = json.loads(f.read(n))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}: unreadable safetensors header: {e}') from e
    self.metadata = header.pop('__metadata__', {}) or {}
    self._header = header
    self._data_start = 8 + n
    self._mmap = None

  def keys(self) -> list[str]:
    return list(self._header)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._header[name]['shape'])

  def read(self, name: str) -> np.ndarray:
    info = self._header[name]
    if info['dtype'] not in _DTYPES:
      raise ValueError(f'{self.path}: tensor {name} has unsupported dtype {info["dtype"]}')
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode='r')
    start, end = info['data_offsets']
    flat = self._mmap[self._data_start + start:self._data_start + end]
    return flat.view(_DTYPES[info['dtype']]).reshape(info['shape'])


def write(path: str, tensors: Iterable[tuple[str, np.ndarray]] | Mapping[str, np.ndarray],
          metadata: Mapping[str, str] | None = None) -> None:
  """Writes tensors (in the given order) to `path`, via a temporary file renamed into place."""
  items = list(tensors.items() if isinstance(tensors, Mapping) else tensors)
  header: dict = {'__metadata__': dict(metadata or {'format': 'pt'})}
  offset = 0
  for name, arr in items:
    nbytes = arr.size * arr.dtype.itemsize
    header[name] = {'dtype': _NAMES[np.dtype(arr.dtype)], 'shape': list(arr.shape),
                    'data_offsets': [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(',', ':')).encode()
  blob += b' ' * (-len(blob) % 8)  # the data section starts 8-byte aligned
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(struct.pack('<Q', len(blob)))
    f.write(blob)
    for _, arr in items:
      f.write(np.ascontiguousarray(arr).tobytes())
  os.replace(tmp, path)
