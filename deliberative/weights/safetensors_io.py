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
  """Lazy, memory-mapped access to one .safetensors file.

  The header is checked against the file size on open, so a truncated download or a
  corrupt header fails here naming the file and tensor, not later as a bad reshape.
  """

  def __init__(self, path: str):
    self.path = path
    with open(path, 'rb') as f:
      size = os.fstat(f.fileno()).st_size
      raw_len = f.read(8)
      if len(raw_len) != 8:
        raise ValueError(f'{path}: not a safetensors file (shorter than its 8-byte header length; '
                         f'the file has {size} bytes)')
      (n,) = struct.unpack('<Q', raw_len)
      if n > size - 8:
        raise ValueError(f'{path}: truncated or not a safetensors file: the header claims {n} bytes '
                         f'(file bytes [8, {8 + n})) but the file has {size} bytes')
      try:
        header = json.loads(f.read(n))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f'{path}: unreadable safetensors header: {e}') from e
    if not isinstance(header, dict):
      raise ValueError(f'{path}: corrupt safetensors header: expected a JSON object, got {type(header).__name__}')
    self.metadata = header.pop('__metadata__', {}) or {}
    self._header = header
    self._data_start = 8 + n
    for name, info in header.items():
      self._check_entry(name, info)
    # Name the first tensor (in file order) that runs past the end: where the file was cut.
    cut = sorted((info['data_offsets'], name) for name, info in header.items()
                 if self._data_start + info['data_offsets'][1] > size)
    if cut:
      (start, end), name = cut[0]
      more = f' ({len(cut) - 1} more tensor(s) lie past the end too)' if len(cut) > 1 else ''
      raise ValueError(str(self._truncated(name, start, end, size)) + more)
    self._mmap = None

  def _check_entry(self, name: str, info) -> None:
    """Offsets are ordered integers that hold exactly dtype x shape bytes."""
    where = f'{self.path}: corrupt safetensors header: tensor {name}'
    if not isinstance(info, dict) or not {'dtype', 'shape', 'data_offsets'} <= set(info):
      raise ValueError(f'{where}: expected dtype, shape and data_offsets, got {info!r}')
    offsets, shape = info['data_offsets'], info['shape']
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]):
      raise ValueError(f'{where}: data_offsets {offsets!r} are not two ordered non-negative integers')
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
      raise ValueError(f'{where}: shape {shape!r} is not a list of non-negative integers')
    start, end = offsets
    if info['dtype'] in _DTYPES:  # an unknown dtype is reported by read(), which needs it
      needed = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[info['dtype']]).itemsize
      if end - start != needed:
        raise ValueError(f'{where}: data_offsets [{start}, {end}) hold {end - start} bytes but '
                         f'{info["dtype"]} x shape {shape} needs {needed}')

  def _truncated(self, name: str, start: int, end: int, size: int) -> ValueError:
    return ValueError(f'{self.path}: truncated: tensor {name} needs bytes [{start}, {end}) of the data section '
                      f'(file bytes [{self._data_start + start}, {self._data_start + end})) but the file has '
                      f'{size} bytes')

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
    if flat.size != end - start:  # the file shrank after it was opened
      raise self._truncated(name, start, end, self._mmap.size)
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
