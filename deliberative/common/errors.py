"""Errors a user can act on. The entry points print them as one line (and a line saying how to
see more), no traceback, unless `--debug` or `DELIBERATIVE_DEBUG=1` asks for one."""

from __future__ import annotations

import os

DEBUG_ENV = 'DELIBERATIVE_DEBUG'


class RunError(Exception):
  """A run cannot go on for a reason its message explains in full."""


class CheckpointError(RunError):
  """A checkpoint could not be written, or none of those on disk can be read."""


class ConfigMismatch(RunError, ValueError):
  """The config differs from the checkpoint it would resume in a way that changes the math."""


# What a user's input or environment causes (bad values, missing files, a full disk); a bug
# raises something else and keeps its traceback.
USER_ERRORS = (RunError, ValueError, OSError)


def debug_requested(argv=()) -> bool:
  flag = any(a == '--debug' or a.lower() in ('--debug=true', '--debug=1') for a in argv)
  return flag or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def one_line(e: BaseException) -> str:
  """`e` as the line a user reads: its message, without Python's repr quoting."""
  text = str(e) if not isinstance(e, KeyError) else str(e.args[0] if e.args else e)
  return ' '.join(text.split()) or type(e).__name__
