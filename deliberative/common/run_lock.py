"""One writer per run directory.

Two trainers on one workdir both started from scratch, wrote the same steps twice to
metrics.jsonl, and one run's Orbax deleted the other's unfinished checkpoint; the survivor exited
0. Every command that writes a run directory therefore holds `DIR/.lock` while it runs: an
advisory `flock` on the file, which the kernel releases when the process dies however it dies, so
a lock left by a killed run never blocks the next one. The file also records the holder (host,
pid, start time) so a refused writer can name it, and is emptied on a clean exit, so a run that
finds a holder recorded but no lock held knows the previous one died and says so.

`flock` is local to one machine's kernel (and to NFS where the server supports it); on a bucket
mounted with gcsfuse it does not exclude writers on other hosts. Multi-host runs take the lock on
process 0 only: one run, one lock.

A URL run directory (gs://, ...; common/storage.py) has no flock. There the lock is the object
`DIR/.lock` created only if absent (`storage.create_exclusive`: on GCS a server-side precondition,
ifGenerationMatch=0, so of two writers starting together exactly one gets it) and deleted on exit,
clean or by an exception. What an object store cannot give: a lock that its holder's death releases.
A run killed without running its exit (SIGKILL, a lost VM; a preemption's SIGTERM does exit
cleanly) leaves the object behind, and the next run is refused with the holder named; whoever
knows that run is dead deletes `DIR/.lock` by hand. On stores whose fsspec driver checks existence
before writing instead of on the server (fsspec's default `pipe_file(mode='create')`), two writers
starting within that gap could both proceed: the exclusion is guaranteed on GCS and local disks only.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

from deliberative.common import errors, storage

LOCK_NAME = '.lock'


class WorkdirBusy(errors.RunError):
  """Another live process writes this run directory."""


def _holder_text(holder: dict) -> str:
  return f'host {holder.get("host", "?")}, pid {holder.get("pid", "?")}, started {holder.get("started", "?")}'


class WorkdirLock:
  """`with WorkdirLock(dir, what='train'):` holds DIR/.lock; a second holder gets WorkdirBusy at once.

  `note(text)` receives the one-line note when a dead run's lock is taken over (default: print).
  A directory this lock had to create is removed again on exit if nothing else was written in it,
  so a command refused before any work leaves nothing behind.
  """

  def __init__(self, directory: str | os.PathLike, what: str = 'run', note=print):
    self.directory = os.fspath(directory)
    self.path = storage.join(self.directory, LOCK_NAME)
    self.what, self.note = what, note
    self._fd: int | None = None
    self._created_dir = False
    self._remote_held = False

  def _me(self) -> dict:
    return {'what': self.what, 'host': socket.gethostname(), 'pid': os.getpid(),
            'started': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}

  def __enter__(self) -> 'WorkdirLock':
    if not storage.is_local(self.directory):
      return self._enter_remote()
    self._created_dir = not os.path.isdir(self.directory)
    try:
      os.makedirs(self.directory, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirBusy(f'cannot lock run directory {self.directory}: {e.strerror or e}') from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirBusy(f'{self.directory} is in use by another {holder.get("what", "run")} ({_holder_text(holder)}; '
                        f'lock {self.path}): wait for it to finish, or choose another directory') from None
    previous = _read_holder(fd)
    if previous:  # recorded but not held: that process died without its clean exit
      self.note(f'note: took over the lock of a {previous.get("what", "run")} that ended without releasing it '
                f'({_holder_text(previous)})')
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(self._me()).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def _enter_remote(self) -> 'WorkdirLock':
    """Create-if-absent of DIR/.lock on an object store (see the module docstring for its limits)."""
    self._created_dir = not storage.isdir(self.directory)
    try:
      storage.makedirs(self.directory)
      taken = storage.create_exclusive(self.path, json.dumps(self._me()).encode())
    except OSError as e:
      raise WorkdirBusy(f'cannot lock run directory {self.directory}: {e.strerror or e}') from e
    if not taken:
      try:
        holder = json.loads(storage.read_bytes(self.path) or b'{}')
      except (OSError, ValueError):
        holder = {'host': '?', 'pid': '?', 'started': '? (unreadable lock object)'}
      raise WorkdirBusy(
          f'{self.directory} is in use by another {holder.get("what", "run")} ({_holder_text(holder)}; lock '
          f'{self.path}): wait for it to finish, or choose another directory. On an object store a run that was '
          'killed without exiting leaves its lock behind: if that run is dead, delete the lock object and start again')
    self._remote_held = True
    return self

  def _exit_remote(self) -> None:
    self._remote_held = False
    storage.remove(self.path)  # a lock object left behind would refuse every later run
    try:
      left = storage.listdir(self.directory) if self._created_dir else ['(kept)']
    except FileNotFoundError:  # an object store lists no prefix without objects under it
      left = []
    if not left:
      storage.rmdir(self.directory)

  def __exit__(self, *exc) -> None:
    if self._remote_held:
      self._exit_remote()
      return
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)  # a clean exit: the next holder has nothing to report
    os.close(self._fd)  # releases the flock
    self._fd = None
    if self._created_dir and os.listdir(self.directory) == [LOCK_NAME]:
      os.remove(self.path)
      os.rmdir(self.directory)


def _read_holder(fd: int) -> dict:
  try:
    raw = os.pread(fd, 4096, 0)
    return json.loads(raw) if raw.strip() else {}
  except (OSError, ValueError):
    return {'host': '?', 'pid': '?', 'started': '? (unreadable lock file)'}
