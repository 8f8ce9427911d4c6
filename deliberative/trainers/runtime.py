"""Run plumbing shared by trainers: logging, preemption, batch placement, summaries."""

from __future__ import annotations

import math
import os
import signal
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding

from deliberative.common import io as atomic
from deliberative.common.errors import RunError


def is_main_process() -> bool:
  return jax.process_index() == 0


def log(msg: str) -> None:
  if is_main_process():
    print(msg, flush=True)


class Preemption:
  """SIGTERM (a TPU preemption notice) or Ctrl-C sets a flag; the loop saves and exits cleanly. A
  second Ctrl-C aborts at once (KeyboardInterrupt), for a user who does not want to wait for the save."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = ''  # the signal's name once one arrived ('SIGTERM' / 'SIGINT'): truthy
    self._previous: dict = {}

  def __enter__(self):
    def handler(signum, frame):
      if signum == signal.SIGINT and self.requested:
        raise KeyboardInterrupt
      if signum == signal.SIGINT:
        log('Ctrl-C: saving a checkpoint after this step and stopping (Ctrl-C again aborts without saving)')
      self.requested = signal.Signals(signum).name
    try:
      self._previous = {s: signal.signal(s, handler) for s in self.SIGNALS}
    except ValueError:  # not the main thread: no handler, nothing to restore
      self._previous = {}
    return self

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


def stop_after_step(done: int, config, checkpointer, preempted: str) -> bool:
  """End-of-step hooks shared by trainers; True when the loop must stop (SIGTERM, already saved)."""
  if done == config.debug.kill_after_step:  # tests: a hard kill right after a checkpoint
    checkpointer.wait()
    os.kill(os.getpid(), signal.SIGKILL)
  if preempted:  # the step's checkpoint was saved (synchronously) for this
    log(f'{preempted}: saved step {done} to {checkpointer.directory}; exiting')
    return True
  return False


class NonFiniteLoss(RunError, FloatingPointError):
  pass


def put_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """This host's rows -> one global array per field, laid out by the batch sharding."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def check_finite(step: int, metrics: Mapping[str, Any], last_saved: int | None, ckpt_dir: str) -> None:
  loss = float(metrics['train/loss'])
  if not math.isfinite(loss):
    kept = f'the last good checkpoint is step {last_saved} in {ckpt_dir}' if last_saved is not None else \
        'no checkpoint was saved before it'
    raise NonFiniteLoss(f'train loss is {loss} at step {step}; stopping the run ({kept})')


def write_json_atomic(path: str, obj: Any) -> None:
  """Every process runs the loop; one writes its files."""
  if is_main_process():
    atomic.write_json(path, obj)


def write_jsonl_atomic(path: str, rows) -> None:
  if is_main_process():
    atomic.write_jsonl(path, rows)


def bytes_per_device(tree) -> int:
  """Bytes of `tree` held by the busiest device (what decides whether a model fits)."""
  per_device: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
  return max(per_device.values()) if per_device else 0
