"""The paper's data filter: a completion's score is the minimum of its k grades; the best completion
whose score passes the threshold is kept (ties: the first sampled, so the choice is deterministic)."""

from __future__ import annotations

import dataclasses

import numpy as np

from deliberative.judge.metrics import min_of_k
from deliberative.judge.prompt import NUM_GRADES


@dataclasses.dataclass(frozen=True)
class Selection:
  scores: np.ndarray  # [N] min-of-k digit per judged completion
  passed: np.ndarray  # [N] bool: score >= threshold
  best: int | None  # index of the kept completion, None when none passed

  @property
  def below_threshold(self) -> int:
    return int((~self.passed).sum())


def select(grades_NK: np.ndarray, threshold: int) -> Selection:
  """`grades_NK`: the k digits (0-9) of each judged completion; `threshold`: the lowest passing digit."""
  if not 0 <= threshold <= NUM_GRADES - 1:
    raise ValueError(f'config.select.threshold={threshold}: must be a grade digit 0..{NUM_GRADES - 1}')
  grades_NK = np.asarray(grades_NK)
  if grades_NK.size == 0:
    return Selection(np.zeros((0,), np.int32), np.zeros((0,), bool), None)
  scores = min_of_k(grades_NK).astype(np.int32)
  passed = scores >= threshold
  best = int(np.argmax(np.where(passed, scores, -1))) if passed.any() else None
  return Selection(scores, passed, best)


def score_of(digit: int) -> float:
  """The stored score: the min-of-k digit on the judge's 0-1 scale (judge/metrics: E[digit] / 9)."""
  return float(digit) / (NUM_GRADES - 1)
