"""Metrics to `metrics.jsonl` and TensorBoard, and a progress line with tokens/s, MFU and ETA."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import jax
import numpy as np

from deliberative.common import io as atomic, progress, storage


class MetricsWriter:
  """Appends one JSON line per logged step; mirrors scalars to TensorBoard. Main process only."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.path = storage.join(workdir, 'metrics.jsonl')
    self._tb = None
    self._tb_dir = storage.join(workdir, 'tensorboard')
    self._purge_step: int | None = None
    if self.enabled:
      storage.makedirs(workdir)

  def _board(self):
    if self._tb is None:  # opened at the first write, so a resumed run can purge what it redoes
      from tensorboardX import SummaryWriter
      if not storage.is_local(self._tb_dir):
        register_tensorboard_scheme(self._tb_dir)
      self._tb = SummaryWriter(self._tb_dir, purge_step=self._purge_step)
    return self._tb

  def resume_at(self, step: int, log=print) -> int:
    """Drops the lines a restarted run is about to write again: those of steps after `step`, the
    state it restored (all of them when it starts at step 0). Atomic; the dropped lines are
    appended to `metrics.replaced.jsonl`, not lost. Returns how many were dropped."""
    if not self.enabled:
      return 0
    # TensorBoard hides the earlier events of steps >= purge_step (a SessionLog.START marker).
    self._purge_step = step + 1 if step > 0 else 0
    if not storage.exists(self.path):
      return 0
    with storage.open(self.path, encoding='utf-8') as f:
      lines = [line if line.endswith('\n') else line + '\n' for line in f if line.strip()]
    kept = [step > 0 and _line_step(line) <= step for line in lines]
    keep = [line for line, k in zip(lines, kept) if k]
    if len(keep) == len(lines):
      return 0
    storage.append_text(storage.join(storage.dirname(self.path), 'metrics.replaced.jsonl'),
                        ''.join(line for line, k in zip(lines, kept) if not k))
    if storage.is_local(self.path):
      tmp = self.path + '.tmp'
      with open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(keep)
      os.replace(tmp, self.path)
    else:  # an object store: the kept lines as one new object (no rename there)
      storage.write_whole(self.path, ''.join(keep).encode('utf-8'))
    dropped = len(lines) - len(keep)
    log(f'metrics.jsonl: moved {dropped} line(s) of steps after {step}, which this run redoes, to '
        'metrics.replaced.jsonl (TensorBoard hides their events)')
    return dropped

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: _scalar(v) for k, v in metrics.items()}
    storage.append_text(self.path, json.dumps({'step': int(step), **clean}) + '\n')
    board = self._board()
    for k, v in clean.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        board.add_scalar(k, v, int(step))
    board.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class _WholeObjectEventFile:
  """An event file on an object store, which cannot be appended to: the events are kept in memory
  and each flush uploads the whole file as one object (complete whenever it is read). tensorboardX's
  own gs:// writer does the same through google-cloud-storage; this one goes through
  common/storage.py like every other file of the run, and serves any fsspec scheme."""

  def __init__(self, path: str):
    self.path, self._data = path, bytearray()

  def write(self, data: bytes) -> None:
    self._data += data

  def flush(self) -> None:
    storage.write_whole(self.path, bytes(self._data))

  def close(self) -> None:
    self.flush()


class _WholeObjectEventFiles:
  """tensorboardX's writer factory interface (record_writer.register_writer_factory)."""

  def open(self, path: str) -> _WholeObjectEventFile:
    return _WholeObjectEventFile(path)

  def directory_check(self, path: str) -> None:
    storage.makedirs(path)


def register_tensorboard_scheme(url: str) -> None:
  """Routes tensorboardX's event files for `url`'s scheme (gs, memory, ...) through common/storage.py."""
  from tensorboardX import record_writer
  record_writer.register_writer_factory(url.split('://', 1)[0], _WholeObjectEventFiles())


def _line_step(line: str) -> int:
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):  # a line cut short by a kill: written again after the resume
    return 1 << 62


def _scalar(v):
  if isinstance(v, (np.ndarray, jax.Array)):
    v = np.asarray(v).item()
  if isinstance(v, (np.floating, np.integer)):
    v = v.item()
  return v


def read_metrics(workdir: str) -> list[dict]:
  path = storage.join(workdir, 'metrics.jsonl')
  if not storage.exists(path):
    return []
  return atomic.read_jsonl(path)


def measure_peak_flops(seconds: float = 0.5) -> float:
  """FLOP/s of a large float32 matmul on one device: the MFU denominator when none is configured."""
  n = 1024
  x = jax.device_put(np.random.default_rng(0).standard_normal((n, n), np.float32), jax.devices()[0])
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  reps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    f(x).block_until_ready()
    reps += 1
  return 2 * n**3 * reps / (time.perf_counter() - start)


def flops_per_token(model_cfg, seq_len: int, frozen_layers: int = 0) -> float:
  """Training FLOPs per token: 6 * matmul params + causal attention (the PaLM appendix formula).
  With the bottom `frozen_layers` blocks frozen (optim.train_layers) they run forward only: 2 of
  the 6 per parameter, and a third of their attention."""
  table = model_cfg.vocab_size * model_cfg.d_model
  # The input embedding is a lookup, not a matmul; a tied table is still used once as the output projection.
  matmul_params = model_cfg.param_count() - table + (table if model_cfg.tie_embeddings else 0)
  attn = 12 * model_cfg.n_layers * model_cfg.n_heads * model_cfg.head_dim_ * seq_len / 2
  blocks = matmul_params - table  # the head is a table-sized matmul, tied or not
  trained = 1.0 - frozen_layers / model_cfg.n_layers
  return 2 * matmul_params + 4 * (table + blocks * trained) + attn * (1 + 2 * trained) / 3


class Progress:
  """One line per report: step/total, loss, tokens/s, MFU and ETA (rates over the last window)."""

  def __init__(self, total_steps: int, start_step: int, flops_per_token: float, peak_flops: float):
    self.total, self.start = total_steps, start_step
    self.fpt, self.peak = flops_per_token, peak_flops
    self.enabled = jax.process_index() == 0
    self._t0 = self._last_t = time.perf_counter()
    self._last_step, self._last_tokens = start_step, 0.0
    self.tokens = 0.0

  def restart_window(self) -> None:
    """Excludes time spent outside training steps (evals, saves) from the next rate."""
    self._last_t = time.perf_counter()

  def add_tokens(self, n: float) -> None:
    self.tokens += n

  def rates(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    dt = max(now - self._last_t, 1e-9)
    tok_s = (self.tokens - self._last_tokens) / dt
    steps_s = (step - self._last_step) / dt
    self._last_t, self._last_step, self._last_tokens = now, step, self.tokens
    return {'perf/tokens_per_sec': tok_s, 'perf/steps_per_sec': steps_s,
            'perf/mfu': tok_s * self.fpt / (self.peak * jax.device_count())}

  def report(self, step: int, loss: float, rates: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    left = self.total - step
    eta = left / rates['perf/steps_per_sec'] if rates['perf/steps_per_sec'] > 0 else float('nan')
    print(f'step {step:>6}/{self.total}  loss {loss:.4f}  {rates["perf/tokens_per_sec"]:,.0f} tok/s  '
          f'MFU {100 * rates["perf/mfu"]:.1f}%  ETA {progress.duration(eta)}', flush=True)

  def elapsed(self) -> float:
    return time.perf_counter() - self._t0

