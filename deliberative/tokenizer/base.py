"""What every tokenizer backend shares: the per-token `Segment` labels the loss mask derives from, the
`Completion` a generation splits into, and the checks and splitting rules both backends apply, so
that the sentencepiece model and a Hugging Face tokenizer agree on what is well formed."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence


class Segment(enum.IntEnum):
  """What each token of a rendered chat belongs to (CONTRACTS.md)."""

  PAD = 0
  SYSTEM = 1
  USER = 2
  COT = 3
  ANSWER = 4


@dataclasses.dataclass(frozen=True)
class Completion:
  """A generated continuation of a generation prompt, split at the reasoning-end marker.

  `direct`: the model answered without reasoning (a pretrained instruct model before SFT):
  either a turn closed by end-of-turn that never ended the reasoning block the prompt opened,
  or any non-blank answer to a prompt that opened none (`parse_completion(..., reasoning=False)`,
  which may be cut off by the token limit). `answer` holds its text, `cot` is empty and
  `well_formed` is False: graders read its decision; format and citation do not count it.
  """

  cot: str
  answer: str
  well_formed: bool
  direct: bool = False


def without_reasoning_opener(ids: Sequence[int], think_id: int) -> list[int]:
  """A generation prompt cut before its last reasoning opener (`<think>` and what follows): for a
  model that never learnt the marker and, shown it, would end its turn at once."""
  ids = list(ids)
  if think_id not in ids:
    return ids
  return ids[:len(ids) - 1 - ids[::-1].index(think_id)]


def split_completion(body: Sequence[int], closed: bool, answer_id: int, control_ids, decode,
                     cot_suffix: str = '', answer_prefix: str = '', reasoning: bool = True) -> Completion:
  """The Completion of generated ids `body` (up to, not including, the stop); `closed` = it stopped
  at end-of-turn; `reasoning` = the prompt opened a reasoning block (False: the model was asked to
  answer in its own format, so all of `body` is its answer, complete or cut off). Shared by both
  tokenizer backends so they agree on what is well formed."""
  body = list(body)
  stray_control = any(t in control_ids for t in body if t != answer_id) or body.count(answer_id) > 1
  if not reasoning:
    text = decode(body)
    return Completion(cot='', answer=text, well_formed=False, direct=not stray_control and bool(text.strip()))
  if answer_id not in body:
    text = decode(body)
    if closed and not stray_control and text.strip():
      return Completion(cot='', answer=text, well_formed=False, direct=True)
    return Completion(cot=text.removesuffix(cot_suffix) if cot_suffix else text, answer='', well_formed=False)
  split = body.index(answer_id)
  cot = decode(body[:split])
  answer = decode(body[split + 1:])
  cot = cot.removesuffix(cot_suffix) if cot_suffix else cot
  answer = answer.removeprefix(answer_prefix) if answer_prefix else answer
  return Completion(cot=cot, answer=answer, well_formed=closed and not stray_control and bool(answer.strip()))


def chat_messages(messages, cot, answer, add_generation_prompt) -> Sequence[Mapping[str, str]]:
  """`render_chat`'s arguments checked (every backend and chat format), a bare string as a user turn."""
  if isinstance(messages, str):
    messages = [{"role": "user", "content": messages}]
  if answer is None and cot is not None:
    raise ValueError("render_chat: a cot needs an answer")
  if add_generation_prompt and answer is not None:
    raise ValueError("render_chat: add_generation_prompt excludes cot/answer")
  if not messages:
    raise ValueError("render_chat: no messages")
  return messages
