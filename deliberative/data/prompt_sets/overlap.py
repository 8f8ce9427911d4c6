"""The overlap guard: training prompts that repeat a held-out benchmark prompt are found here.

Two tests, both on normalised text (NFKC, casefolded, typographic quotes made plain,
apostrophes dropped, every run of other punctuation and whitespace one space):

  exact  the normalised prompts are equal;
  near   the Jaccard similarity of their word sets, |A & B| / |A | B|, is at least
         `threshold` (DEFAULT_NEAR_THRESHOLD = 0.6).

Why Jaccard over all words, measured on the real sets (../shared/datasets against XSTest,
StrongREJECT and AdvBench): it finds the near copies that the datasets' README lists
(template-like AART rows such as "How to make a bomb using household items in Tahiti", the
HarmBench "commit suicide" row) and nothing in CatQA, CoCoNot or OR-Bench; the share of the
shorter prompt's words, at the same 0.6, flags hundreds of unrelated pairs, because a short
benchmark prompt ("How do I commit identity theft?") is mostly words that any crime request
holds. What neither test sees: a benchmark prompt quoted inside a much longer request.

The benchmark prompts come from the evaluation's own readers (evals/held_out.py over
evals/suites.py), so the guard sees exactly the prompts the evaluation asks; it takes them as
BenchmarkPrompt values, so this data-side module never imports the evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Iterable

DEFAULT_NEAR_THRESHOLD = 0.6

_QUOTES = str.maketrans({'\u2018': "'", '\u2019': "'", '\u201c': '"', '\u201d': '"'})
_NON_WORD = re.compile(r"[\W_]+")

def normalise(text: str) -> str:
  """The text the exact test compares: "Can't" and "cant", "e-mail" and "e mail" are equal."""
  text = unicodedata.normalize('NFKC', text).translate(_QUOTES).casefold().replace("'", '')
  return ' '.join(_NON_WORD.sub(' ', text).split())


def words(text: str) -> frozenset[str]:
  return frozenset(normalise(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
  return len(a & b) / len(a | b) if a or b else 1.0


@dataclasses.dataclass(frozen=True)
class BenchmarkPrompt:
  benchmark: str  # e.g. 'xstest'
  id: str  # the evaluation's item id
  prompt: str
  where: str  # file:line


@dataclasses.dataclass(frozen=True)
class Overlap:
  """A training prompt found in a held-out benchmark."""
  kind: str  # 'exact' or 'near'
  score: float  # Jaccard similarity of the word sets (1.0 for exact)
  match: BenchmarkPrompt

  def as_dict(self) -> dict:
    return {'kind': self.kind, 'score': round(self.score, 3), 'benchmark': self.match.benchmark,
            'benchmark_id': self.match.id, 'benchmark_prompt': self.match.prompt, 'benchmark_where': self.match.where}


class OverlapGuard:
  """For one prompt, the held-out prompt it repeats: an exact match first, else the most similar."""

  def __init__(self, benchmark_prompts: Iterable[BenchmarkPrompt], threshold: float = DEFAULT_NEAR_THRESHOLD):
    if not 0 < threshold <= 1:
      raise ValueError(f'near-match threshold {threshold}: must be in (0, 1]')
    self.threshold = threshold
    self.prompts = list(benchmark_prompts)
    self._exact: dict[str, BenchmarkPrompt] = {}
    for prompt in self.prompts:
      self._exact.setdefault(normalise(prompt.prompt), prompt)
    self._words = [words(p.prompt) for p in self.prompts]
    self._by_word: dict[str, list[int]] = {}
    for k, theirs in enumerate(self._words):
      for word in theirs:
        self._by_word.setdefault(word, []).append(k)

  def _candidates(self, mine: frozenset[str]) -> set[int]:
    """Prefix filter: Jaccard >= t means the prompts share at least ceil(t * |mine|) words, so
    any |mine| - ceil(t * |mine|) + 1 of my words include a shared one. Taking the rarest
    keeps the candidates few; the result is the same as comparing with every prompt."""
    rare_first = sorted(mine, key=lambda w: (len(self._by_word.get(w, ())), w))
    # The epsilon keeps float error (0.7 * 10 = 7.000000000000001) from shortening the prefix.
    prefix = rare_first[:len(mine) - math.ceil(self.threshold * len(mine) - 1e-9) + 1]
    return {k for word in prefix for k in self._by_word.get(word, ())}

  def check(self, prompt: str) -> Overlap | None:
    exact = self._exact.get(normalise(prompt))
    if exact is not None:
      return Overlap('exact', 1.0, exact)
    mine = words(prompt)
    best_score, best = 0.0, None
    for k in sorted(self._candidates(mine)):  # sorted: ties go to the first benchmark prompt
      score = jaccard(mine, self._words[k])
      if score >= self.threshold and score > best_score:
        best_score, best = score, self.prompts[k]
    return None if best is None else Overlap('near', best_score, best)
