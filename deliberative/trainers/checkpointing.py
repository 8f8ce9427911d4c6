"""Full training checkpoints: everything needed to continue exactly, and nothing lost on failure.

Items per step (Orbax Composite): `params`, `opt_state`, `train` (step and the RNG as raw uint32 key data),
`data` (the input iterator's position, JSON) and `meta` (JSON: model config, spec version,
provenance). `deliberative.weights.checkpoints` reads `params` + `meta` alone for init_from/export.

Failures are loud and never cost the last good checkpoint:
- an asynchronous save that fails (a full disk) is reported by `check()` at the first step after
  it finished, at the latest by the next save, as one CheckpointError naming the step, the
  directory and the OS error; Orbax writes into a temporary
  directory and renames it only when complete, so the previous checkpoint is untouched;
- once a save is final, process 0 writes the sha256 of each of its files (`<step>/digests.json`,
  weights/checkpoints.py); a step is "the last good checkpoint" only from then on;
- on start, `restore_newest_readable` skips a checkpoint that cannot be read (truncated array
  files, an emptied JSON item) or whose files no longer match their digests (bit rot, which Orbax
  can read back without an error), says which and why, moves it aside into `checkpoints_damaged/` (so the
  run can save that step again) and resumes from the newest readable one; when none can be
  read it fails rather than start from scratch over them. A step without digests (saved before
  they existed, or stopped between the save and its digests) is read unverified, with a note.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import re
import sys
import time
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp

from deliberative.weights import checkpoints
from deliberative.common import storage
from deliberative.common.errors import CheckpointError, debug_requested, one_line
from deliberative.model import layout

JSON_ITEMS = ('data', 'meta')
DAMAGED_DIR = 'checkpoints_damaged'


class _OrbaxErrorRepeats(logging.Filter):
  """Orbax logs one failed background save from several threads, each with a full traceback
  (hundreds of lines for a full disk); the Checkpointer raises it once, as a CheckpointError with
  the OS error, so Orbax's own copies are dropped (`DELIBERATIVE_DEBUG=1` keeps them)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if '/orbax/' in record.pathname.replace(os.sep, '/'):
      return False
    # asyncio's "Task exception was never retrieved" for Orbax's abandoned writes, logged whenever
    # the garbage collector reaches them (before or after the Checkpointer has raised the error).
    message = record.getMessage()
    return not ('exception was never retrieved' in message and ('orbax' in message or 'OCDBT' in message))


def _quiet_orbax_errors() -> None:
  absl_logger = logging.getLogger('absl')
  if debug_requested() or any(isinstance(f, _OrbaxErrorRepeats) for f in absl_logger.filters):
    return
  absl_logger.addFilter(_OrbaxErrorRepeats())
  logging.getLogger('asyncio').addFilter(_OrbaxErrorRepeats())
  # After a failed write, tensorstore's callbacks for the abandoned writes find Orbax's event loop
  # closed; Python reports each as an unraisable "RuntimeError: Event loop is closed" with a traceback.
  previous = sys.unraisablehook

  def unraisablehook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)
  sys.unraisablehook = unraisablehook


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints, absolute (a URL as it is): the one place a run's checkpoint root is named."""
  return storage.join(storage.abspath(workdir), 'checkpoints')


class Checkpointer:
  def __init__(self, workdir: str, ckpt_cfg):
    _quiet_orbax_errors()
    self.directory = checkpoint_dir(workdir)
    self.every_steps = int(ckpt_cfg.every_steps)
    self._mngr = checkpoints.manager(self.directory, max_to_keep=ckpt_cfg.keep, async_save=ckpt_cfg.async_save)
    self._unconfirmed: int | None = None  # an async save not yet known to have succeeded
    self._last_good: int | None = self._mngr.latest_step()
    self._failed = False

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, state: Mapping[str, Any], data_state: Mapping, meta: Mapping, *, wait: bool = False) -> None:
    if self._unconfirmed is not None:  # Orbax waits for it inside save() anyway; its error is that step's
      self.wait()
    step = int(jax.device_get(state['step']))
    train = {'step': state['step'], 'rng': state['rng']}
    try:
      self._mngr.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state['params']), opt_state=ocp.args.StandardSave(state['opt_state']),
          train=ocp.args.StandardSave(train), data=ocp.args.JsonSave(dict(data_state)),
          meta=ocp.args.JsonSave(dict(meta))), force=True)
      if wait:
        self._mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - Orbax wraps OS errors in ValueError and others
      raise self._save_failed(step, e) from e
    if wait:
      self._unconfirmed = None
      self._seal(step)
    else:
      self._unconfirmed = step

  def _seal(self, step: int) -> None:
    """A finished save becomes the last good checkpoint once its digests are on disk beside it."""
    if jax.process_index() == 0:
      try:
        checkpoints.write_digests(self.directory, step)
      except OSError as e:
        raise self._save_failed(step, e) from e
    self._last_good = step

  def check(self) -> None:
    """Raises CheckpointError if the last asynchronous save failed; never waits for one still running.

    With several processes the answer could differ between them (each writes its own shards and
    finishes at its own time), and one process stopping while the others enter the next step's
    collectives would hang the job; there the check happens at the next save, all together."""
    if self._unconfirmed is None or jax.process_count() > 1 or self._mngr.is_saving_in_progress():
      return
    self.wait()

  def wait(self) -> None:
    step, self._unconfirmed = self._unconfirmed, None
    error = None
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      error = self._save_failed(step, e)
      error.__cause__ = e
    if not _everywhere(error is None) and error is None:
      self._failed = True
      error = CheckpointError(f'saving step {step} to {self.directory} failed on another process; stopping the run '
                              f'(the last good checkpoint is step {self._last_good})')
    if error is not None:
      raise error
    if step is not None:
      self._seal(step)

  def _save_failed(self, step: int | None, e: BaseException) -> CheckpointError:
    self._failed = True
    if not debug_requested():  # the failed save's abandoned writes are logged again when collected
      logging.getLogger('asyncio').setLevel(logging.CRITICAL + 1)
    kept = (f'the last good checkpoint is step {self._last_good}' if self._last_good is not None
            else 'no checkpoint was saved before it')
    what = f'step {step}' if step is not None else 'a checkpoint'
    return CheckpointError(f'saving {what} to {self.directory} failed: {os_error(e)}; stopping the run ({kept})')

  def restore(self, abstract_state: Mapping[str, Any], step: int | None = None) -> tuple[dict, dict, dict]:
    """Returns (state, data_state, meta), arrays laid out as `abstract_state`'s shardings say."""
    step = self.latest_step() if step is None else step
    for item in JSON_ITEMS:  # Orbax's own error for an emptied JSON item names no file
      read_json_item(self.directory, step, item)
    abstract_train = {'step': abstract_state['step'], 'rng': abstract_state['rng']}
    # Saved with the other model.scan_layers: params and the optimizer's params-shaped moments are
    # read in their saved layout, then converted (per layer they mean the same either way).
    abstract_model = {k: abstract_state[k] for k in ('params', 'opt_state')}
    abstract_saved = self._saved_layout(abstract_model, step)
    out = self._mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_saved['params']),
        opt_state=ocp.args.StandardRestore(abstract_saved['opt_state']),
        train=ocp.args.StandardRestore(abstract_train), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    model_state = layout.relayout({'params': out['params'], 'opt_state': out['opt_state']}, abstract_model)
    state = {**model_state, 'step': out['train']['step'], 'rng': out['train']['rng']}
    return state, dict(out['data']), dict(out['meta'])

  def _saved_layout(self, abstract_model: Mapping[str, Any], step: int) -> Mapping[str, Any]:
    try:
      saved = checkpoints.saved_params_tree(self.directory, step)
    except Exception:  # noqa: BLE001 - unreadable metadata: the restore itself reports the damage
      return abstract_model
    return layout.saved_layout_of(abstract_model, saved)

  def restore_newest_readable(self, abstract_state: Mapping[str, Any],
                              log: Callable[[str], None]) -> tuple[dict, dict, int] | None:
    """(state, data_state, step) of the newest checkpoint that reads back whole; None if there are none."""
    steps = sorted(self._mngr.all_steps(), reverse=True)
    damaged: list[int] = []
    for step in steps:
      reason = None
      try:
        with _quiet_abandoned_reads():
          # Process 0 compares the digests; the others learn its answer through _everywhere below.
          if jax.process_index() == 0 and not checkpoints.verify_digests(self.directory, step):
            log(f'note: checkpoint step {step} has no {checkpoints.DIGESTS} (saved before digests existed, or '
                'stopped before they were written); read unverified')
          state, data_state, _ = self.restore(abstract_state, step)
      except Exception as e:  # noqa: BLE001 - classified below
        reason = read_error(e)
        # Anything else (a structure mismatch, memory, a flaky mount) is not the files' fault.
        if not (isinstance(e, checkpoints.DigestMismatch) or _is_damage(reason)):
          raise
      # Each process reads its own shards: all must agree before one of them moves a step aside.
      if not _everywhere(reason is None):
        where = reason or 'another process could not read its part'
        log(f'checkpoint step {step} ({storage.join(self.directory, str(step))}) cannot be read: {where}')
        damaged.append(step)
        continue
      self._last_good = step
      if damaged:
        moved = self._move_aside(damaged)
        log(f'resuming from step {step}, the newest readable checkpoint; the unreadable ones '
            f'({", ".join(map(str, damaged))}) were moved to {moved}')
      return state, data_state, step
    self._last_good = None
    if steps:
      raise CheckpointError(f'{self.directory}: none of its checkpoints (steps {", ".join(map(str, steps))}) can be '
                            'read (reasons above); refusing to start from scratch over them. Move the directory '
                            'away to start over, or repair it')
    return None

  def _move_aside(self, steps: list[int]) -> str:
    """Damaged step directories go beside `checkpoints/`, kept for inspection, out of Orbax's way."""
    target = storage.join(storage.dirname(self.directory), DAMAGED_DIR)
    if jax.process_index() == 0:
      storage.makedirs(target)
      for step in steps:
        dest = storage.join(target, f'{step}.{time.strftime("%Y%m%d-%H%M%S")}')
        storage.move_tree(storage.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices('checkpoints moved aside')
    self._mngr.reload()
    return target

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is None:
      self.close()
      return False
    # The run is failing for another reason: let a save in flight (the last good state) land,
    # without letting a second error hide the first.
    try:
      self._mngr.wait_until_finished()
      self._mngr.close()
    except Exception:  # noqa: BLE001
      pass
    return False

  def close(self) -> None:
    if self._failed:  # Orbax would re-raise the save error at shutdown, under its own noise
      try:
        self._mngr.close()
      except Exception:  # noqa: BLE001 - already reported as a CheckpointError
        pass
      return
    self.wait()
    self._mngr.close()


def _everywhere(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  import numpy as np
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def read_json_item(directory: str, step: int, item: str) -> dict:
  """A JSON item of a checkpoint step, or a ValueError naming its file."""
  path = storage.join(directory, str(step), item, 'metadata')
  try:
    with storage.open(path, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    raise ValueError(f'{path}: missing (the checkpoint item {item!r} of step {step})') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path}: not valid JSON ({e}); the checkpoint item {item!r} of step {step} is damaged') from None


@contextlib.contextmanager
def _quiet_abandoned_reads():
  """A failed restore leaves Orbax's other array reads as never-awaited coroutines whose errors
  Python prints at garbage collection, one TensorStore spec dump each; the first error is reported."""
  previous, asyncio_log = sys.unraisablehook, logging.getLogger('asyncio')
  level = asyncio_log.level
  sys.unraisablehook = lambda unraisable: None
  asyncio_log.setLevel(logging.CRITICAL + 1)  # "Task exception was never retrieved", same dumps
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous
    asyncio_log.setLevel(level)


def _inner(e: BaseException) -> BaseException | None:
  if e.__cause__ is not None:
    return e.__cause__
  return None if e.__suppress_context__ else e.__context__


def read_error(e: BaseException) -> str:
  """The most specific message in an exception chain: tensorstore's own error ("Error reading
  <array chunk> ... at local file <dir>: Requested byte range [a, b) is not valid for value of size n")
  sits under Orbax's wrapper, which only dumps the TensorStore spec."""
  chain, seen = [], e
  while seen is not None and len(chain) < 20:
    chain.append(one_line(seen))
    seen = _inner(seen)
  specific = [m for m in chain if 'TensorStore(' not in m]
  return (specific[-1] if specific else chain[0])[:500]


# What tensorstore and our JSON reader say about files that are cut short, missing or corrupt.
_DAMAGE_MARKERS = ('OUT_OF_RANGE', 'DATA_LOSS', 'NOT_FOUND', 'Error reading', 'not valid JSON',
                   'missing (the checkpoint item', 'Error opening', 'Error decoding')


def _is_damage(reason: str) -> bool:
  return any(marker in reason for marker in _DAMAGE_MARKERS)


def os_error(e: BaseException) -> str:
  """The OS error inside an Orbax/tensorstore exception (which wraps it in a ValueError), as a short string."""
  seen = e
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno:
      return f'[Errno {seen.errno}] {os.strerror(seen.errno)} ({errno.errorcode.get(seen.errno, "?")})'
    seen = _inner(seen)
  match = re.search(r"os_error_code='?(\d+)", str(e))
  if match:
    code = int(match.group(1))
    return f'[Errno {code}] {os.strerror(code)} ({errno.errorcode.get(code, "?")})'
  return one_line(e)[:300]
