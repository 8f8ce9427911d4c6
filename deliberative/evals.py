"""Scoring generated completions against the spec: decision, citation and format.

Used during SFT (held-out templates, no spec in context) and by RL and evaluation.
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, Mapping, Sequence

import jax

from deliberative.model.sampler import Sampler, SamplingParams
from deliberative.spec import Spec
from deliberative.tokenizer import Tokenizer


def governing_clause_ids(record: Mapping[str, Any], spec: Spec) -> set[str]:
  """The clauses that decide a record: its `clause_ids` field, else those its reference CoT cites."""
  ids = record.get('clause_ids')
  if isinstance(ids, str):
    ids = [i for i in ids.replace(',', ' ').split() if i]
  if ids:
    return set(ids)
  return set(spec.cited_clause_ids(record.get('cot') or ''))


def score_completion(record: Mapping[str, Any], cot: str, answer: str, well_formed: bool, spec: Spec) -> dict:
  from deliberative.data.demo import classify_answer
  decision = classify_answer(answer) if well_formed else 'malformed'
  governing = governing_clause_ids(record, spec)
  cited = set(spec.cited_clause_ids(cot))
  citation_ok = bool(governing & cited) if governing else not cited
  return {'format_valid': bool(well_formed), 'decision': decision,
          'decision_correct': decision == record.get('decision'), 'citation_correct': well_formed and citation_ok}


def aggregate(scored: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], prefix: str = 'eval/') -> dict:
  n = len(scored)
  if n == 0:
    return {}
  out = {
      f'{prefix}decision_accuracy': sum(s['decision_correct'] for s in scored) / n,
      f'{prefix}citation_accuracy': sum(s['citation_correct'] for s in scored) / n,
      f'{prefix}format_validity': sum(s['format_valid'] for s in scored) / n,
  }
  by_decision: dict[str, list[bool]] = collections.defaultdict(list)
  for s, r in zip(scored, records):
    by_decision[r.get('decision', '?')].append(s['decision_correct'])
  for decision, hits in sorted(by_decision.items()):
    out[f'{prefix}decision_accuracy/{decision}'] = sum(hits) / len(hits)
  return out


def generate_and_score(sampler: Sampler, params, tokenizer: Tokenizer, spec: Spec,
                       items: Iterable[tuple[Mapping[str, Any], Sequence[int]]], *, batch_size: int,
                       sampling: SamplingParams, rng: jax.Array, prefix: str = 'eval/') -> tuple[dict, list[dict]]:
  """Samples a completion per (record, prompt ids) pair and scores it; returns (metrics, samples)."""
  items = list(items)
  scored, records, samples = [], [], []
  for start in range(0, len(items), batch_size):
    chunk = items[start:start + batch_size]
    rng, sub = jax.random.split(rng)
    out = sampler(params, [ids for _, ids in chunk], sub, sampling)
    for i, (record, _) in enumerate(chunk):
      completion = tokenizer.parse_completion(out.completion(i))
      s = score_completion(record, completion.cot, completion.answer, completion.well_formed, spec)
      scored.append(s)
      records.append(record)
      samples.append({'id': record.get('id'), 'category': record.get('category'),
                      'expected': record.get('decision'), 'prompt': record.get('prompt'),
                      'cot': completion.cot, 'answer': completion.answer, **s})
  return aggregate(scored, records, prefix), samples
