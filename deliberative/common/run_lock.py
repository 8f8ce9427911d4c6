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
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

from deliberative.common import errors

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
    self.path = os.path.join(self.directory, LOCK_NAME)
    self.what, self.note = what, note
    self._fd: int | None = None
    self._created_dir = False

  def __enter__(self) -> 'WorkdirLock':
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
    me = {'what': self.what, 'host': socket.gethostname(), 'pid': os.getpid(),
          'started': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
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
