"""Where a run's files live: a local path, or a URL that an fsspec filesystem reaches (`gs://`,
`s3://`, `memory://` in tests). Every read and write of a run directory (config.json,
metrics.jsonl, summary.json, samples, TensorBoard events, checkpoint digests and JSON items,
stage 1 shards and manifest, evaluation outputs, the run lock) goes through this module.

Local paths keep exactly the `os` calls they always had (same bytes, same atomicity, same errors);
only a URL (`scheme://...`) goes through fsspec. fsspec rather than etils.epath: epath knows a fixed
set of schemes from private tables (gs, s3, az, hf) and, without TensorFlow (never installed here),
reaches `gs://` through fsspec's gcsfs anyway; fsspec directly serves any scheme it has a driver
for, the in-memory one the tests use included, with the same gcsfs underneath for `gs://`.
Orbax writes its checkpoint arrays itself (tensorstore; epath for its directories).

What is atomic where (docs/tpu.md, "gs:// workdirs"):
- local: `io.write_text` writes a temporary file in the same directory, fsyncs it and renames it
  over the target (POSIX rename is atomic), so a reader or a crash sees the old file or the new one;
- object stores (GCS, S3): there is no atomic rename (a "rename" is copy + delete), so
  `write_whole` uploads the object in one go, and the store makes it visible only once the
  upload has completed (a single-request or resumable upload to GCS creates the object atomically):
  readers see the old object or the new one, never a part, as locally;
- appends (metrics.jsonl): an object cannot be appended to, so `append_text` reads the object and
  writes it back whole with the new lines: atomic per write as above, but one writer only (the run
  lock's job) and O(size) per append;
- `replace`/`move` on an object store copy and then delete: not atomic (used only to keep an
  earlier config.json and to move damaged checkpoints aside, where a retry redoes them);
- `create_exclusive` is create-if-absent for URLs (local run directories lock with flock): atomic
  on GCS, where gcsfs sends ifGenerationMatch=0 and the server decides; on filesystems whose fsspec
  driver only checks existence first (fsspec's default) two writers racing within that gap could
  both succeed. The run lock (common/run_lock.py) says what it relies on.

Tested offline against fsspec's memory filesystem and against fake-gcs-server, a Cloud Storage
emulator (tests/test_remote_workdir.py).
"""

from __future__ import annotations

import builtins
import os
import posixpath
import re
import shutil
from typing import IO

_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.\-]*://')


def is_local(path: str | os.PathLike) -> bool:
  """False for `scheme://...` URLs (gs://, s3://, memory://): those go through fsspec."""
  return not _URL.match(os.fspath(path))


def _fs(path: str):
  """(filesystem, path as that filesystem names it) for a URL; gcsfs for gs:// must be installed."""
  import fsspec
  return fsspec.core.url_to_fs(path)


def _fresh(path: str):
  """_fs, with the driver's listing cache for `path` dropped first: gcsfs caches listings, and
  objects written by other writers (Orbax's tensorstore, another host) would not be in them."""
  fs, p = _fs(path)
  fs.invalidate_cache(p)
  return fs, p


def join(path: str | os.PathLike, *parts: str) -> str:
  path = os.fspath(path)
  if is_local(path):
    return os.path.join(path, *parts)
  return posixpath.join(path, *parts)


def abspath(path: str | os.PathLike) -> str:
  """os.path.abspath for a local path; a URL as it is (it is absolute already)."""
  path = os.fspath(path)
  return os.path.abspath(path) if is_local(path) else path.rstrip('/')


def relpath(path: str | os.PathLike, start: str | os.PathLike) -> str:
  """`path` relative to `start` when it lies under it (either may be a URL), else `path` as it is."""
  path, start = os.fspath(path), os.fspath(start)
  if is_local(path) and is_local(start):
    rel = os.path.relpath(path, start)
    return path if rel.startswith(os.pardir) else rel
  start = start.rstrip('/')
  return path[len(start) + 1:] if path.startswith(start + '/') else path


def dirname(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  return os.path.dirname(path) if is_local(path) else posixpath.dirname(path.rstrip('/'))


def _ask(path: str | os.PathLike, local, remote: str) -> bool:
  """One existence question: os.path's `local` for a local path, the fsspec method `remote` for a URL."""
  path = os.fspath(path)
  if is_local(path):
    return local(path)
  fs, p = _fresh(path)
  return getattr(fs, remote)(p)


def exists(path: str | os.PathLike) -> bool:
  return _ask(path, os.path.exists, 'exists')


def isdir(path: str | os.PathLike) -> bool:
  return _ask(path, os.path.isdir, 'isdir')


def isfile(path: str | os.PathLike) -> bool:
  return _ask(path, os.path.isfile, 'isfile')


def makedirs(path: str | os.PathLike) -> None:
  """mkdir -p. On an object store directories are only name prefixes: a no-op there (gcsfs), a
  marker in fsspec's memory filesystem."""
  path = os.fspath(path)
  if is_local(path):
    os.makedirs(path, exist_ok=True)
    return
  fs, p = _fs(path)
  fs.makedirs(p, exist_ok=True)


def listdir(path: str | os.PathLike) -> list[str]:
  """The names (not paths) in a directory, like os.listdir; FileNotFoundError when it is absent."""
  path = os.fspath(path)
  if is_local(path):
    return os.listdir(path)
  fs, p = _fresh(path)
  return [posixpath.basename(entry.rstrip('/')) for entry in fs.ls(p, detail=False)]


def walk_files(directory: str | os.PathLike) -> list[str]:
  """Every file under `directory`, as '/'-separated paths relative to it, sorted."""
  directory = os.fspath(directory)
  found = []
  if is_local(directory):
    for root, _, names in os.walk(directory):
      for name in names:
        found.append(os.path.relpath(os.path.join(root, name), directory).replace(os.sep, '/'))
    return sorted(found)
  fs, p = _fresh(directory)
  prefix = p.rstrip('/') + '/'
  return sorted(f[len(prefix):] for f in fs.find(p) if f.startswith(prefix))


def getsize(path: str | os.PathLike) -> int:
  path = os.fspath(path)
  if is_local(path):
    return os.path.getsize(path)
  fs, p = _fresh(path)
  return int(fs.size(p))


def open(path: str | os.PathLike, mode: str = 'r', encoding: str | None = None) -> IO:  # noqa: A001
  """builtins.open locally; fsspec's file object for a URL. Writing a URL through this handle
  creates the object when it is closed (one upload), never a visible part of it."""
  path = os.fspath(path)
  if is_local(path):
    return builtins.open(path, mode, encoding=encoding)
  fs, p = _fs(path)
  if 'b' not in mode and encoding is None:
    encoding = 'utf-8'
  return fs.open(p, mode, encoding=encoding) if 'b' not in mode else fs.open(p, mode)


def read_bytes(path: str | os.PathLike) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def read_text(path: str | os.PathLike) -> str:
  return read_bytes(path).decode('utf-8')


def write_whole(path: str | os.PathLike, data: bytes) -> None:
  """A URL's object written in one upload (object stores show it only once complete). Local paths
  are written by io.write_text (temporary file + fsync + rename) instead."""
  path = os.fspath(path)
  if is_local(path):
    raise ValueError(f'{path}: local files are written with deliberative.common.io.write_text')
  fs, p = _fs(path)
  fs.pipe_file(p, data)


def append_text(path: str | os.PathLike, text: str) -> None:
  """Adds `text` at the end of the file. An object store has no append: the object is read and
  written back whole with `text` added (each version complete; one writer per run directory)."""
  path = os.fspath(path)
  if is_local(path):
    with builtins.open(path, 'a', encoding='utf-8') as f:
      f.write(text)
    return
  fs, p = _fs(path)
  old = fs.cat_file(p) if fs.exists(p) else b''
  fs.pipe_file(p, old + text.encode('utf-8'))


def create_exclusive(path: str | os.PathLike, data: bytes) -> bool:
  """Writes a new URL object only if none exists; False when one does. GCS checks it server-side
  (gcsfs: ifGenerationMatch=0), so of two racing writers exactly one succeeds."""
  path = os.fspath(path)
  if is_local(path):
    raise ValueError(f'{path}: local run locks use flock (deliberative.common.run_lock)')
  fs, p = _fs(path)
  try:
    fs.pipe_file(p, data, mode='create')
  except FileExistsError:
    return False
  return True


def remove(path: str | os.PathLike) -> None:
  path = os.fspath(path)
  if is_local(path):
    os.remove(path)
    return
  fs, p = _fs(path)
  fs.rm_file(p)


def rmdir(path: str | os.PathLike) -> None:
  """Removes an empty directory (locally; on an object store, only a memory-fs marker exists)."""
  path = os.fspath(path)
  if is_local(path):
    os.rmdir(path)
    return
  fs, p = _fs(path)
  if fs.isdir(p) and not fs.ls(p, detail=False):
    try:
      fs.rmdir(p)
    except (OSError, NotImplementedError):  # object stores: nothing to remove
      pass


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """os.replace locally (atomic); copy then delete on an object store (not atomic)."""
  src, dst = os.fspath(src), os.fspath(dst)
  if is_local(src) and is_local(dst):
    os.replace(src, dst)
    return
  fs, p = _fs(src)
  fs.mv(p, _fs(dst)[1])


def move_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """shutil.move locally; on an object store every object is copied, then deleted (not atomic)."""
  src, dst = os.fspath(src), os.fspath(dst)
  if is_local(src) and is_local(dst):
    shutil.move(src, dst)
    return
  fs, p = _fs(src)
  fs.mv(p, _fs(dst)[1], recursive=True)


def upload_tree(local_dir: str, url: str) -> None:
  """Copies a local directory's files to a URL prefix, file by file (each object whole; the tree
  as a whole is not atomic: a rerun uploads it again)."""
  fs, p = _fs(url)
  for rel in walk_files(local_dir):
    with builtins.open(os.path.join(local_dir, rel), 'rb') as f:
      fs.pipe_file(f'{p.rstrip("/")}/{rel}', f.read())
