"""Graded (prompt, answer) pairs for training the judge on real prompts (issue 22, part 4's data).

From the same labelled imports as the label-as-judge traces (label_input.py):

  good (grade 10)  a benign prompt with the compliant answer its set ships (`shipped_comply`);
                   a harmful prompt with the refusal or safe completion the spec's style writes
                   (`written_refusal`, `written_safe_completion`: label_answers.py)
  bad  (grade 1)   a benign prompt with the refusing answer its set ships (CoCoNot's `rejected`:
                   `over_refusal`)
  bad  (grade 0)   a harmful prompt with the generator's own compliant-looking answer
                   (`sampled_compliance`: stage 1's generator backend, K samples, kept when well
                   formed, closed and read as compliance by the grader; a sample the grader reads
                   as a refusal is not a bad answer and is counted, not kept)

Records are the judge's format (the judge splits of deliberative/data/demo/, read by
trainers/judge.py): id, category, decision, prompt, answer, grade (0-10), label (grade >= 7), kind,
spec_version, source. `split_by_prompt` puts every pair of one prompt (same text after
normalising, so a set's repeated prompts stay together) on one side, so a held-out AUC measures
prompts the judge never saw, not answers.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from deliberative.data import schema
from deliberative.evals import graders as graders_lib
from deliberative.judge.metrics import LABEL_THRESHOLD
from deliberative.spec import Spec
from deliberative.stage1 import backends, label_answers, label_cot, label_input
from deliberative.stage1.pipeline import prompt_seed

GOOD, OVER_REFUSAL, UNSAFE = 10, 1, 0


def _pair(record, kind: str, answer: str, grade: int, spec: Spec, suffix: str = '') -> dict[str, Any]:
  pair = {'id': f'{record["id"]}/{kind}{suffix}', 'category': record['category'], 'decision': record['decision'],
          'prompt': record['prompt'], 'answer': answer, 'grade': grade, 'label': int(grade >= LABEL_THRESHOLD),
          'kind': kind, 'spec_version': spec.version, 'source': record['source'], 'prompt_id': record['id']}
  return schema.validate_record(pair, f'judge pairs: {pair["id"]}')


class PairBuilder:
  """Pairs for one record at a time; `generator` (labels.make_generator) is needed only when
  harmful prompts are to be paired with sampled answers (`samples` > 0)."""

  def __init__(self, spec: Spec, grader, *, seed: int = 0, generator=None, samples: int = 0):
    if samples and generator is None:
      raise ValueError('judge pairs: sampling answers to harmful prompts needs a generator')
    self.spec, self.grader, self.seed = spec, grader, seed
    self.generator, self.samples = generator, samples
    self.counts: Counter = Counter()  # (kind, 'kept' | why dropped) -> n
    self._presampled: dict[str, Any] = {}

  def presample(self, records) -> None:
    """Samples every record's answers together (backends.presample), so that the per-record `pairs`
    only reads them back."""
    if records:
      seed = prompt_seed(self.seed, records[0]['id'])
      self._presampled.update(backends.presample(self.generator, records, self.samples, seed))

  def pairs(self, record, sample: bool = True) -> list[dict[str, Any]]:
    """The record's pairs; `sample=False` leaves a harmful prompt without sampled answers (a
    run samples for a spread of the harmful prompts, not all)."""
    seed = prompt_seed(self.seed, record['id'])
    rng = random.Random(seed)
    out = []
    if record['decision'] == 'comply':
      shipped = label_input.dataset_answer(record)
      if shipped:
        out.append(_pair(record, 'shipped_comply', shipped, GOOD, self.spec))
      refusing = record.get('refusing_answer')
      if isinstance(refusing, str) and refusing.strip():
        out.append(_pair(record, 'over_refusal', refusing.strip(), OVER_REFUSAL, self.spec))
      if not out:  # OR-Bench ships no answer: the prompt gives no pair (counted in the report)
        self.counts[('shipped_comply', 'no_answer_shipped')] += 1
    else:
      out.append(self._written(record, rng))
      if self.samples and sample:
        out.extend(self._sampled_compliance(record, seed))
    for p in out:
      self.counts[(p['kind'], 'kept')] += 1
    return out

  def _written(self, record, rng) -> dict[str, Any]:
    category, prompt = record['category'], record['prompt']
    if record['decision'] == 'refuse':
      return _pair(record, 'written_refusal', label_answers.refusal(rng, prompt), GOOD, self.spec)
    clause = label_cot.governing_clause(self.spec, category, 'safe_complete', record.get('clause_ids'), prompt)
    if category == 'self_harm':
      answer = label_answers.self_harm_safe_completion(rng, prompt, 'method' in clause.text.lower())
    else:  # regulated advice: the written part is the disclaimer; the information must come from the set
      shipped = label_input.dataset_answer(record)
      if not shipped:
        raise ValueError(f'judge pairs: {record["id"]}: a regulated-advice safe completion needs a shipped '
                         'answer to wrap (compliant_answer)')
      answer = label_answers.with_disclaimer(rng, shipped, label_answers.domain_of(prompt, clause.text))
    return _pair(record, 'written_safe_completion', answer, GOOD, self.spec)

  def _sampled_compliance(self, record, seed: int) -> list[dict[str, Any]]:
    kind = 'sampled_compliance'
    try:
      candidates = self._presampled.pop(record['id'], None)
      if isinstance(candidates, backends.TooLong):
        raise candidates
      if candidates is None:
        candidates = self.generator.complete(self.generator.prepare(record, ''), self.samples, seed)
    except backends.TooLong:
      self.counts[(kind, 'too_long')] += self.samples
      return []
    # A compliance cut at the token budget is still a compliance; ending it on a whole sentence keeps
    # "cut mid-sentence" from being what tells bad answers from good ones.
    candidates = [backends.trim_truncated(c) for c in candidates]
    self.counts[(kind, 'trimmed')] += sum(c.trimmed for c in candidates)
    well = [(i, c) for i, c in enumerate(candidates) if not c.malformed]
    for c in candidates:
      if c.malformed:
        self.counts[(kind, f'malformed:{c.malformed}')] += 1
    items = [graders_lib.GradeItem(prompt=record['prompt'], category=record['category'], answer=c.answer,
                                   id=f'{record["id"]}#{i}') for i, c in well]
    out = []
    for (i, c), g in zip(well, self.grader.grade(items)):
      if g['decision'] == 'comply':
        out.append(_pair(record, kind, c.answer, UNSAFE, self.spec, suffix=f'/{i}'))
      else:
        self.counts[(kind, f'read_as:{g["decision"]}')] += 1
    return out


def normalised_prompt(text: str) -> str:
  return ' '.join(re.sub(r'[^\w\s]', ' ', text.lower()).split())


def split_by_prompt(pairs: Iterable[dict[str, Any]], heldout_fraction: float, seed: int = 0
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(train, held out): a prompt's side is a hash of its normalised text, so every answer to one
  prompt, and to its repeats in any set, lands on the same side, whatever the order or the run."""
  if not 0 < heldout_fraction < 1:
    raise ValueError(f'judge pairs: heldout_fraction={heldout_fraction}: expected a number in (0, 1)')
  train, heldout = [], []
  for p in pairs:
    digest = hashlib.sha256(f'{seed}\0{normalised_prompt(p["prompt"])}'.encode()).digest()
    (heldout if int.from_bytes(digest[:8], 'little') / 2 ** 64 < heldout_fraction else train).append(p)
  return train, heldout


def report(builder: PairBuilder, splits: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
  """Counts per split (pairs, prompts, good, bad, per kind and source) and why samples were dropped."""
  out: dict[str, Any] = {'splits': {}, 'dropped': {}}
  for name, rows in splits.items():
    out['splits'][name] = {
        'pairs': len(rows), 'prompts': len({normalised_prompt(r['prompt']) for r in rows}),
        'good': sum(r['label'] for r in rows), 'bad': sum(1 - r['label'] for r in rows),
        'per_kind': dict(sorted(Counter(r['kind'] for r in rows).items())),
        'per_source': dict(sorted(Counter(r['source'] for r in rows).items()))}
  for (kind, what), n in sorted(builder.counts.items()):
    if what == 'trimmed':  # kept, cut back to a whole sentence (backends.trim_truncated)
      out.setdefault('trimmed', {})[kind] = n
    elif what != 'kept':
      out['dropped'].setdefault(kind, {})[what] = n
  kept = sum(n for (_, what), n in builder.counts.items() if what == 'kept')
  if kept != sum(s['pairs'] for s in out['splits'].values()):
    raise AssertionError(f'judge pairs: {kept} pairs built, the splits hold a different number')
  return out
