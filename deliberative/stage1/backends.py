"""G_base (writes K completions) and G_RM (grades each k times) on either backend.

own:      the project's sampler (inference.Policy: an Orbax run, a Hugging Face directory, a GGUF
          file; '' = a random-init model of `random_size`, for smoke runs) and the project's Judge
          with its spec-prefix KV cache (one prefill serves every judgment of a category). Calls
          into JAX are serialised by a lock, so endpoint threads can share an own backend.
endpoint: any OpenAI-compatible chat-completions server (endpoint.py).

Every call takes a per-prompt seed (pipeline.prompt_seed: from the run's seed and the prompt's
id), so a prompt's completions and grades do not depend on which other prompts share its run.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deliberative.common import progress
from deliberative.data import sentences
from deliberative.evals import citations
from deliberative.judge.prompt import JudgeInput, PromptTooLong, judge_messages, parse_grade, resolve_rubric
from deliberative.spec import Spec
from deliberative.stage1 import endpoint as endpoint_lib
from deliberative.stage1.prompt import split_think


class TooLong(ValueError):
  """A prompt the model cannot take (counted and listed by id, never cut)."""


@dataclasses.dataclass(frozen=True)
class Candidate:
  cot: str
  answer: str
  malformed: str = ''  # '' = well formed; else why not (no_answer, no_cot, truncated, ...)
  trimmed: bool = False  # labels.truncated=trim: cut at max_new_tokens, then back to its last sentence


def trim_truncated(candidate: Candidate) -> Candidate:
  """A sample cut at max_new_tokens, cut back to its last whole sentence (labels.truncated=trim, and
  the judge pairs' sampled compliance): a small model's answers often run past a CPU-sized budget,
  and dropping them all keeps only the shortest prompts' answers. The trimmed answer is closed but
  not the model's own ending: it is marked (trimmed=True) and counted."""
  if candidate.malformed != 'truncated':
    return candidate
  trimmed = sentences.last_whole_sentence(candidate.answer + ' ')
  if trimmed is None:
    return candidate
  return dataclasses.replace(candidate, answer=trimmed, malformed='', trimmed=True)


def presample(generator, records: Sequence[Mapping[str, Any]], n: int, seed: int) -> dict[str, Any]:
  """n answers to each record in batched sampler calls (the generator's batch size), by record id; a
  prompt too long for the generator maps to its TooLong. Decoding many prompts together, not K rows
  of one, is what makes self-distillation affordable on CPU. An endpoint generator (one request per
  prompt, with its own concurrency) is left alone: {}."""
  if not hasattr(generator, 'complete_many'):
    return {}
  out: dict[str, Any] = {}
  prepared = []
  for r in records:
    try:
      prepared.append((r, generator.prepare(r, '')))
    except TooLong as e:
      out[r['id']] = e
  if prepared:
    answers = generator.complete_many([ids for _, ids in prepared], n, seed)
    out.update({r['id']: c for (r, _), c in zip(prepared, answers)})
  return out


def non_system(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
  """The prompt's own turns: the spec system prompt replaces any system message at generation and
  is stripped from the stored record."""
  return [{'role': m['role'], 'content': m['content']} for m in messages if m['role'] != 'system']


# --- own ----------------------------------------------------------------------------------------

def length_buckets(max_prompt_len: int) -> tuple[int, ...]:
  from deliberative.inference.policy import LENGTH_BUCKETS
  return (*(b for b in LENGTH_BUCKETS if b < max_prompt_len), max_prompt_len)


def load_policy(path: str, *, random_size: str, batch_size: int, max_new_tokens: int, reasoning: str,
                max_prompt_len: int, field: str, seed: int = 0):
  """inference.Policy on `path`; '' builds a random-init `random_size` model with the packaged
  tokenizer (the smoke run's G_base and G_RM), through the same Policy methods."""
  from deliberative.inference.policy import Policy
  buckets = length_buckets(max_prompt_len)
  if path:
    return Policy(path, batch_size=batch_size, max_new_tokens=max_new_tokens, reasoning=reasoning,
                  length_buckets=buckets, field=field, seed=seed)
  return Policy.random(random_size, seed=seed, max_seq_len=max(2048, max_prompt_len), batch_size=batch_size,
                       max_new_tokens=max_new_tokens, reasoning='on' if reasoning == 'auto' else reasoning,
                       length_buckets=buckets)


class OwnBase:
  """K samples of one prompt in one sampler call, seeded by the prompt."""

  def __init__(self, policy, sampling, *, think_tags: bool, require_cot: bool, lock: threading.Lock):
    self.policy, self.sampling, self.lock = policy, sampling, lock
    self.think_tags, self.require_cot = think_tags, require_cot
    self.name = policy.name
    self.concurrency = 1

  def prepare(self, record: Mapping[str, Any], system: str) -> list[int]:
    ids = self.policy.prompt_ids(record, system)
    if len(ids) > self.policy.max_prompt_len:
      raise TooLong(f'G_base prompt is {len(ids)} tokens > base.max_prompt_len {self.policy.max_prompt_len}')
    return ids

  def complete(self, ids: list[int], n: int, seed: int) -> list[Candidate]:
    return self.complete_many([ids], n, seed)[0]

  def complete_many(self, prompts: Sequence[list[int]], n: int, seed: int) -> list[list[Candidate]]:
    """n samples of each prompt, in sampler calls of at most the policy's batch size."""
    import jax
    rows = [ids for ids in prompts for _ in range(n)]
    step = max(self.policy.batch_size // n, 1) * n
    candidates, started = [], time.perf_counter()
    for start in range(0, len(rows), step):
      with self.lock:
        out = self.policy.sample(rows[start:start + step], self.sampling, rng=jax.random.key(seed + start))
      candidates.extend(self._candidate(out, i) for i in range(len(rows[start:start + step])))
      if len(rows) > step:  # a presample of many batches runs for minutes: say how far it is
        print(f'sampled {len(candidates):>6}/{len(rows)} answers  '
              + progress.rate_and_eta(len(candidates), len(rows), started, 'answers'), flush=True)
    return [candidates[i * n:(i + 1) * n] for i in range(len(prompts))]

  def _candidate(self, out, i: int) -> Candidate:
    tok = self.policy.tokenizer
    stops = set(tok.stop_ids)
    completion = out.completion(i)
    if self.think_tags:  # a model without a reasoning channel, asked to write <think> as text
      cot, answer, reason = inline_reasoning(tok.decode([t for t in completion if t not in stops]),
                                             self.require_cot, 'no_think_block')
      if not reason and not bool(out.stopped[i]):
        reason = 'truncated'
    else:
      parsed = tok.parse_completion(completion, reasoning=self.policy.reasoning)
      cot, answer = parsed.cot, parsed.answer
      ok = citations.is_well_formed(cot, answer, parsed.well_formed) or (
          not self.require_cot and parsed.well_formed and bool(answer.strip()))
      reason = '' if ok else ('truncated' if not bool(out.stopped[i]) else 'format')
    return Candidate(cot.strip(), answer.strip(), reason)


def inline_reasoning(text: str, require_cot: bool, missing: str) -> tuple[str, str, str]:
  """(cot, answer, malformed reason) of text with the reasoning inline in <think> tags. Without
  `require_cot`, a direct answer (no tags at all) is kept with an empty CoT: a small instruct model
  that cannot follow the tag instruction still exercises the judge (configs/generate.py:size=smollm2)."""
  cot, answer, ok = split_think(text)
  if ok:
    return cot, answer, ''
  if not require_cot and '<think>' not in text and '</think>' not in text and text.strip():
    return '', text.strip(), ''
  return cot, answer, missing


class OwnJudge:
  """Judge.grades on the project's model; the prefix cache is built on first use and reused."""

  def __init__(self, judge, params, *, temperature: float, use_prefix_cache: bool, name: str, lock: threading.Lock):
    self.judge, self.params, self.lock = judge, params, lock
    self.temperature, self.use_prefix_cache = temperature, use_prefix_cache
    self.name = name
    self.concurrency = 1

  def check(self, category: str, prompt: str, prompt_id: str) -> None:
    try:
      self.judge.format.render(JudgeInput(category, prompt, '', '', prompt_id))
    except PromptTooLong as e:
      raise TooLong(str(e)) from None

  def grades(self, items: Sequence[JudgeInput], k: int, seed: int) -> tuple[np.ndarray, int, int]:
    """([N, k] digits, unparsed (always 0: a grade is a digit token), judgments whose CoT/answer the
    judge cut to fit its max_len, counted so that a cut is never silent)."""
    import jax
    with self.lock:
      before = self.judge.truncated
      grades = self.judge.grades(self.params, list(items), jax.random.key(seed), k, temperature=self.temperature,
                                 use_prefix_cache=self.use_prefix_cache)
      truncated = self.judge.truncated - before
    return np.asarray(grades, np.int32), 0, truncated


# --- endpoint -----------------------------------------------------------------------------------

class EndpointBase:
  def __init__(self, client: endpoint_lib.Endpoint, *, temperature: float, top_p: float, max_new_tokens: int,
               require_cot: bool = True):
    self.client, self.require_cot = client, require_cot
    self.params = {'temperature': temperature, 'top_p': top_p, 'max_tokens': max_new_tokens}
    self.name = f'endpoint:{client.model}'
    self.concurrency = client.concurrency

  def prepare(self, record: Mapping[str, Any], system: str) -> list[dict[str, str]]:
    return [{'role': 'system', 'content': system}, *non_system(record['messages'])]

  def complete(self, messages, n: int, seed: int) -> list[Candidate]:
    return [self._candidate(c) for c in self.client.choices(messages, n, seed=seed, **self.params)]

  def _candidate(self, choice: Mapping[str, Any]) -> Candidate:
    message = choice.get('message') or {}
    content = message.get('content') or ''
    reasoning = message.get('reasoning_content')
    if isinstance(reasoning, str) and reasoning.strip():
      cot, answer = reasoning.strip(), content.strip()
      reason = '' if answer else 'no_answer'
    else:  # no separate channel: the reasoning may be inline in <think> tags
      cot, answer, reason = inline_reasoning(content, self.require_cot, 'no_reasoning')
    if not reason and choice.get('finish_reason') == 'length':
      reason = 'truncated'
    return Candidate(cot, answer, reason)


class EndpointJudge:
  """k grades per completion: one request with n=k (or k requests); a reply without a digit counts
  as grade 0 (it fails min-of-k) and is counted as unparsed."""

  def __init__(self, client: endpoint_lib.Endpoint, spec: Spec, *, spec_view: str, rubric: str,
               answer_and_cot: bool, temperature: float, max_new_tokens: int):
    self.client, self.spec = client, spec
    self.spec_view, self.rubric, self.answer_and_cot = spec_view, rubric, answer_and_cot
    self.params = {'temperature': temperature, 'max_tokens': max_new_tokens}
    self.name = f'endpoint:{client.model}'
    self.concurrency = client.concurrency
    resolve_rubric(rubric)  # an unknown or empty rubric fails at start-up

  def check(self, category: str, prompt: str, prompt_id: str) -> None:
    pass  # the server refuses what it cannot take; that is an endpoint error, counted

  def grades(self, items: Sequence[JudgeInput], k: int, seed: int) -> tuple[np.ndarray, int, int]:
    out = np.zeros((len(items), k), np.int32)
    unparsed = 0
    for i, item in enumerate(items):
      messages = judge_messages(self.spec, item, spec_view=self.spec_view, rubric=self.rubric,
                                answer_and_cot=self.answer_and_cot)
      for j, choice in enumerate(self.client.choices(messages, k, seed=seed + 1000 * i, **self.params)):
        digit = parse_grade((choice.get('message') or {}).get('content'))
        if digit is None:
          unparsed += 1
          digit = 0
        out[i, j] = digit
    return out, unparsed, 0
