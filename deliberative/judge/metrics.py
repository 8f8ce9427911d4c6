"""Judge evaluation (accuracy, ROC AUC, per category) and the min-of-k filtering rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deliberative.judge.prompt import NUM_GRADES, grade_to_digit

# The 0-10 grade at or above which a judged answer is labelled good: the one threshold the demo's
# judge data (label = grade >= LABEL_THRESHOLD) and the judge's evaluation share.
LABEL_THRESHOLD = 7

# label = grade >= 7 <=> digit >= grade_to_digit(7) = 6, so a judge that emits the right
# digit is right about the label when the cut sits between digits 5 and 6. (At 0.5 a
# perfect judge would call the demo's grade-6 "moralizing" answers, digit 5, good.)
SCORE_THRESHOLD = (grade_to_digit(LABEL_THRESHOLD) - 0.5) / (NUM_GRADES - 1)


def scores_from_logprobs(logprobs_NG: np.ndarray) -> np.ndarray:
  """E[digit] / 9 under each row's grade distribution: in [0, 1], always defined."""
  probs_NG = np.exp(np.asarray(logprobs_NG, np.float64))
  probs_NG /= probs_NG.sum(axis=-1, keepdims=True)
  return (probs_NG @ np.arange(NUM_GRADES)) / (NUM_GRADES - 1)


def min_of_k(grades_NK: np.ndarray) -> np.ndarray:
  """The paper's filtering rule: a completion's grade is its worst of k samples."""
  grades_NK = np.asarray(grades_NK)
  if grades_NK.ndim != 2 or grades_NK.shape[1] == 0:
    raise ValueError(f'min_of_k: expected [N, k>0] grades, got shape {grades_NK.shape}')
  return grades_NK.min(axis=1)


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks; tied values share the mean of the ranks they span."""
  order = np.argsort(values, kind='mergesort')
  sorted_values = values[order]
  # Start index of each run of equal values in sorted order.
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  ends = np.r_[starts[1:], len(values)]
  run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(len(values), np.float64)
  ranks[order] = np.repeat(run_rank, ends - starts)
  return ranks


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
  """P(score of a random positive > score of a random negative), ties counting one half
  (Mann-Whitney U). NaN when either class is absent."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(bool)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ValueError(f'roc_auc: scores {scores.shape} and labels {labels.shape} must be equal 1-D')
  n_pos = int(labels.sum())
  n_neg = len(labels) - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  ranks = _average_ranks(scores)
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def judge_metrics(scores: Sequence[float], labels: Sequence[int], categories: Sequence[str], *,
                  threshold: float = SCORE_THRESHOLD, prefix: str = 'eval/') -> dict[str, float]:
  """Accuracy (score >= threshold vs label) and AUC, overall and per category.

  Keys: {prefix}judge_accuracy, {prefix}judge_auc, and /<category> versions of both; and
  {prefix}judge_majority_accuracy, the accuracy of always answering the commoner label: the
  trivial baseline the judge's accuracy must beat. A category with one class only has AUC NaN
  (undefined), not a made-up number.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(bool)
  categories = np.asarray(categories)
  if not (len(scores) == len(labels) == len(categories)) or len(scores) == 0:
    raise ValueError(f'judge_metrics: need equal, non-empty lengths; got {len(scores)} scores, '
                     f'{len(labels)} labels, {len(categories)} categories')
  correct = (scores >= threshold) == labels
  out = {f'{prefix}judge_accuracy': float(correct.mean()), f'{prefix}judge_auc': roc_auc(scores, labels),
         f'{prefix}judge_majority_accuracy': float(max(labels.mean(), 1.0 - labels.mean()))}
  for category in sorted(set(categories.tolist())):
    mask = categories == category
    out[f'{prefix}judge_accuracy/{category}'] = float(correct[mask].mean())
    out[f'{prefix}judge_auc/{category}'] = roc_auc(scores[mask], labels[mask])
  return out
