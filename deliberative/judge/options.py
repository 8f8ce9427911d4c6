"""A judge that reads a choice instead of a grade: the next-token distribution over option tokens
(" A" / " B" / " C", or "1".."5") after a question, with the Judge's prompt, spec-prefix cache,
buckets and compiled programs unchanged. The model graders of evals/ (decision, StrongREJECT
rubric) are built on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from deliberative.judge.model import Judge
from deliberative.judge.prompt import GRADE_PROMPT, NUM_GRADES

# The option letters, in DECISIONS order; read as the token after DECISION_PROMPT.
OPTION_LETTERS = ('A', 'B', 'C')
DECISION_PROMPT = 'Answer (A, B or C):'


def option_token_ids(tokenizer, prompt: str = DECISION_PROMPT,
                     letters: Sequence[str] = OPTION_LETTERS) -> tuple[int, ...]:
  """The single token each letter becomes right after `prompt`: ' A' in BPE vocabularies
  (a prompt ending in a space would leave a lone space token), else 'A'. Fails clearly when
  neither is one token that leaves the prompt's ids unchanged."""
  base = tokenizer.encode(prompt)
  ids = []
  for letter in letters:
    for spelling in (' ' + letter, letter):
      encoded = tokenizer.encode(prompt + spelling)
      if len(encoded) == len(base) + 1 and encoded[:len(base)] == base:
        ids.append(encoded[-1])
        break
    else:
      raise ValueError(f'judge options: option {letter!r} after {prompt!r} is not one token in this tokenizer')
  if len(set(ids)) != len(ids):
    raise ValueError(f'judge options: option tokens are not distinct: {ids}')
  return tuple(ids)


class OptionJudge(Judge):
  """Reads the next-token distribution over option tokens instead of digits. Same prompt,
  prefix cache, buckets and compiled programs as Judge; only the token set and the text
  after the assistant turn's opening differ."""

  def __init__(self, *args, options: Sequence[str] = OPTION_LETTERS, prompt: str = DECISION_PROMPT, **kw):
    super().__init__(*args, **kw)
    tok, layout = self.tokenizer, self.format.layout
    # What opens the assistant turn, without the grade prompt that follows it.
    grade_tail = 1 if layout.kind == 'controls' else len(tok.encode(GRADE_PROMPT))
    head = layout.grade_prompt[:len(layout.grade_prompt) - grade_tail]
    self.options = tuple(options)
    option_ids = option_token_ids(tok, prompt, options)
    if max(option_ids) >= self.cfg.vocab_size:
      raise ValueError(f'judge options: option ids {option_ids} beyond the model vocab {self.cfg.vocab_size}')
    self.format.layout = dataclasses.replace(layout, grade_prompt=(*head, *tok.encode(prompt)))
    # Judge reads exactly NUM_GRADES tokens (its output is [N, 10]); the options come first
    # and digits fill the rest. Renormalising over the options alone (option_probs) equals
    # a softmax over the options only, since log_softmax over a superset only shifts them.
    filler = [i for i in self.format.grade_ids if i not in option_ids][:NUM_GRADES - len(option_ids)]
    self.grade_ids = np.asarray([*option_ids, *filler], np.int32)

  def option_probs(self, params, items, *, prefix_cache=None) -> np.ndarray:
    """[N, len(options)] probabilities over the options, rows summing to 1."""
    logprobs = self.grade_logprobs(params, items, prefix_cache=prefix_cache)[:, :len(self.options)]
    probs = np.exp(logprobs - logprobs.max(axis=-1, keepdims=True))
    return probs / probs.sum(axis=-1, keepdims=True)
