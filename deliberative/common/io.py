"""The one way this package writes a file: whole, or not at all. Text goes to a temporary file in the
same directory, is flushed to disk, then renamed over the target, so a reader, a crash or a SIGKILL
never sees it half done. A URL (gs://, ...; common/storage.py) has no atomic rename: its object is
uploaded whole in one go instead, which the store makes visible only once complete. JSON and JSONL are text written this way (numpy values as plain numbers,
non-ASCII kept readable)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deliberative.common import storage


def write_text(path: str | os.PathLike, text: str) -> Path | str:
  if not storage.is_local(path):  # an object store: one upload, visible only once whole (no rename there)
    storage.write_whole(path, text.encode('utf-8'))
    return os.fspath(path)
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def json_default(o):
  """numpy scalars and arrays as the JSON numbers and lists they hold."""
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(f'not JSON serialisable: {type(o).__name__}')


def write_json(path: str | os.PathLike, obj: Any) -> Path | str:
  """`obj` as indented JSON with sorted keys: the same object always gives the same bytes."""
  return write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=json_default) + '\n')


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], sort_keys: bool = False) -> Path | str:
  """One JSON object per line, in the order given (keys in their own order unless `sort_keys`)."""
  return write_text(path, ''.join(json.dumps(row, ensure_ascii=False, sort_keys=sort_keys, default=json_default) + '\n'
                                  for row in rows))


def read_jsonl(path: str | os.PathLike) -> list[Any]:
  """Every line of a JSONL file this package wrote (blank lines skipped). A line that is not JSON, or
  bytes that are not UTF-8, fail naming `file:line`, not as a bare decoder error."""
  rows = []
  with storage.open(path, 'rb') as f:
    for line_no, raw in enumerate(f, 1):
      try:
        line = raw.decode('utf-8')
        if line.strip():
          rows.append(json.loads(line))
      except UnicodeDecodeError as e:
        raise ValueError(f'{path}:{line_no}: not UTF-8 (byte {e.start + 1} of the line)') from None
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{line_no}: column {e.colno}: invalid JSON: {e.msg}') from None
  return rows


def flatten(tree: Mapping, prefix: str = '') -> dict[str, Any]:
  """A nested mapping as {'a.b.c': leaf}; an empty mapping is a leaf of its own, so that a field
  set to {} still shows (and compares) in the flat view."""
  out: dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, Mapping) and value:
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out
