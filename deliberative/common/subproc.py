"""A launcher's child process with its output appended to a log that may live in a bucket.

launch/ablate.py (one log per arm) and launch/sweep.py (one per side-by-side run) both run a
trainer or an evaluation as a subprocess and keep its output. A local log is appended to as the
child writes. An object store cannot be appended to as a stream, so a URL log (a gs:// root) is
written to a local temporary file while the child runs and then appended to the URL whole,
whether the child succeeded or not; if that upload fails, the temporary file is kept and named.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from typing import Mapping, Sequence

from deliberative.common import errors, storage


def _local_log(log_path: str) -> str:
  """Where the child's output goes while it runs: `log_path` itself when local, else a new
  temporary file (_upload appends it to the URL afterwards)."""
  if storage.is_local(log_path):
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    return log_path
  handle, target = tempfile.mkstemp(prefix='deliberative-', suffix='.log')
  os.close(handle)
  return target


def run_logged(cmd: Sequence[str], log_path: str, *, env: Mapping[str, str] | None = None,
               cwd: str | None = None, header: bool = True) -> int:
  """Runs `cmd` (stdout and stderr) into `log_path`, after a `$ cmd` line when `header`; its exit code."""
  target = _local_log(log_path)
  try:
    with open(target, 'a') as log:
      if header:
        log.write(f'$ {shlex.join(cmd)}\n')
        log.flush()
      return subprocess.run(list(cmd), cwd=cwd, env=None if env is None else dict(env), stdout=log,
                            stderr=subprocess.STDOUT).returncode
  finally:
    if target != log_path:
      _upload(target, log_path)


def _upload(target: str, log_path: str) -> None:
  try:
    with open(target, encoding='utf-8', errors='replace') as f:
      storage.append_text(log_path, f.read())
  except Exception as e:  # the run's own outcome matters more than its log: keep the log, say where
    print(f'warning: could not append the log to {log_path} ({errors.one_line(e)}); it is kept at {target}',
          file=sys.stderr, flush=True)
  else:
    os.remove(target)
