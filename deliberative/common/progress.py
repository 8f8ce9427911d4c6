"""How long work takes, written one way everywhere: durations, rates and ETAs in progress lines."""

from __future__ import annotations

import math
import time


def duration(seconds: float, always_hours: bool = False) -> str:
  """'M:SS', or 'H:MM:SS' from an hour on (always with `always_hours`, for columns that must align);
  '?' when the time is unknown (a rate of zero)."""
  if not math.isfinite(seconds):
    return '?'
  m, s = divmod(int(max(0.0, seconds)), 60)
  h, m = divmod(m, 60)
  return f'{h}:{m:02d}:{s:02d}' if h or always_hours else f'{m}:{s:02d}'


def rate_and_eta(done: int, total: int, started: float, unit: str, done_before: int = 0) -> str:
  """'{rate} {unit}/s  ETA {duration}': the rate over this process's work since `started`
  (time.perf_counter), not counting `done_before` items a resumed run found finished."""
  rate = (done - done_before) / max(time.perf_counter() - started, 1e-9)
  return f'{rate:.2f} {unit}/s  ETA {duration((total - done) / rate if rate > 0 else math.inf)}'
