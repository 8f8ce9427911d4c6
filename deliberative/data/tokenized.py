"""Records -> token arrays, once per record: loss weights, overlong policy and its counts.

A `TokenizedSplit` holds one host's shard of a split, tokenized with the chat format.
Each SFT example keeps `ids` (the rendered trace) and `target_weights` (the loss mask on
`ids[1:]`), so packing is only array copies. Overlong records are handled here, before
any batch is made, so their count is exact and a bad `seq_len` fails at start-up rather
than hours into a run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from deliberative.data import sentences
from deliberative.tokenizer.base import Segment, without_reasoning_opener
from deliberative.tokenizer.sentencepiece import Tokenizer

log = logging.getLogger(__name__)

LOSS_SEGMENTS = {
    "cot_answer": (Segment.COT, Segment.ANSWER),
    "answer": (Segment.ANSWER,),
}
OVERLONG_POLICIES = ("drop", "truncate_cot", "trim_answer")


class OverlongError(ValueError):
  """Too many records longer than the sequence length (more than the configured bound)."""


class EmptyDatasetError(ValueError):
  """A split (or one host's shard of it) has nothing to iterate over."""


@dataclasses.dataclass(frozen=True)
class TokenizedTrace:
  ids: np.ndarray  # int32 [n]: the rendered trace
  labels: np.ndarray  # int8 [n]: Segment per token
  target_weights: np.ndarray  # float32 [n-1]: loss weight of predicting ids[1:]


def tokenize_trace(tokenizer: Tokenizer, record: Mapping[str, Any], loss_on: str) -> TokenizedTrace:
  """A trace record rendered with the chat format, with its loss mask."""
  if loss_on not in LOSS_SEGMENTS:
    raise ValueError(f"loss_on={loss_on!r}; valid: {sorted(LOSS_SEGMENTS)}")
  if "answer" not in record:
    raise ValueError(f"record {record.get('id')!r} has no answer: SFT needs traces, not prompt-only records")
  ids, labels = tokenizer.render_chat_arrays(record["messages"], cot=record.get("cot", ""), answer=record["answer"])
  weight_of_segment = np.zeros(len(Segment), np.float32)
  weight_of_segment[list(LOSS_SEGMENTS[loss_on])] = 1.0
  weights = weight_of_segment[labels[1:]]
  return TokenizedTrace(ids, labels, weights)


def truncate_cot(trace: TokenizedTrace, max_tokens: int) -> TokenizedTrace | None:
  """Cuts CoT text tokens from the end of the CoT until the trace has `max_tokens` tokens.

  The `<|answer|>` marker and the answer are kept whole; None if even an empty CoT is
  too long.
  """
  excess = len(trace.ids) - max_tokens
  if excess <= 0:
    return trace
  cot_positions = np.flatnonzero(trace.labels == Segment.COT)
  cot_text_positions = cot_positions[:-1]  # the last COT token is the <|answer|> marker
  if len(cot_text_positions) < excess:
    return None
  keep = np.ones(len(trace.ids), bool)
  keep[cot_text_positions[-excess:]] = False
  ids, labels = trace.ids[keep], trace.labels[keep]
  # Weights belong to targets ids[1:]; dropping token k drops target k-1.
  weights = trace.target_weights[keep[1:]]
  return TokenizedTrace(ids, labels, weights)


def trim_answer(tokenizer: Tokenizer, record: Mapping[str, Any], loss_on: str,
                max_tokens: int) -> TokenizedTrace | None:
  """The trace with its answer cut back to the longest whole-sentence prefix that fits `max_tokens`
  (data/sentences.py), its end-of-turn kept: a long shipped answer (CoCoNot's run to ~600 SmolLM2
  tokens) teaches a shorter complete answer instead of being dropped. None if no cut fits."""
  for cut in sentences.cuts(record["answer"]):
    trace = tokenize_trace(tokenizer, {**record, "answer": record["answer"][:cut]}, loss_on)
    if len(trace.ids) <= max_tokens:
      return trace
  return None


@dataclasses.dataclass
class OverlongReport:
  """How many records did not fit, what was done with them, and the bound.

  The length facts (0 = not measured) let an error say what would help: which
  `limit_name` value fits the records, and whether another policy would keep any.
  """

  records: int = 0
  overlong: int = 0
  dropped: int = 0
  truncated: int = 0
  limit_tokens: int = 0
  policy: str = "drop"
  max_fraction: float = 0.0
  limit_name: str = "seq_len"  # the setting that sets limit_tokens
  limit_value: int = 0  # its value (0: equal to limit_tokens)
  longest_tokens: int = 0  # the longest record, whole
  shortest_needed_tokens: int = 0  # the fewest tokens any record can keep under `policy`
  truncatable: int = 0  # dropped records that overlong='truncate_cot' would have kept
  answers_trimmed: int = 0  # answers cut back to max_answer_tokens at a sentence end
  answers_uncut: int = 0  # answers over max_answer_tokens with no sentence end to cut at (kept whole)

  @property
  def fraction(self) -> float:
    return self.overlong / self.records if self.records else 0.0

  def describe(self, where: str) -> str:
    return (
        f"{where}: {self.overlong} of {self.records} records ({100 * self.fraction:.1f}%) exceed "
        f"{self.limit_tokens} tokens; policy {self.policy!r}: {self.truncated} truncated, "
        f"{self.dropped} dropped (bound {100 * self.max_fraction:.1f}%)"
    )

  def _setting_for(self, tokens: int) -> int:
    """The `limit_name` value under which a record of `tokens` tokens fits."""
    return tokens - self.limit_tokens + (self.limit_value or self.limit_tokens)

  def advice(self) -> str:
    """What would make more records fit; never the policy already in use."""
    setting = f"{self.limit_name}={self.limit_value or self.limit_tokens}"
    to_truncate = (f"use overlong='truncate_cot' (it would keep {self.truncatable} of the {self.dropped} dropped)"
                   if self.policy == "drop" and self.truncatable else "")
    if self.records and self.dropped == self.records and self.shortest_needed_tokens:
      # Nothing fits: a looser bound would only leave an empty split.
      cut = " even with its CoT cut" if self.policy == "truncate_cot" else ""
      at_least, whole = self._setting_for(self.shortest_needed_tokens), self._setting_for(self.longest_tokens)
      return (f"{setting} is too small for every record: the shortest needs {self.shortest_needed_tokens} "
              f"tokens{cut}, the longest has {self.longest_tokens}; raise {self.limit_name} to at least "
              f"{at_least}" + (f" ({whole} fits every record whole)" if whole != at_least else "")
              + (f", or {to_truncate}" if to_truncate else ""))
    if self.longest_tokens:
      options = [f"raise {self.limit_name} ({self._setting_for(self.longest_tokens)} fits every record whole; "
                 f"now {setting})"]
    else:
      options = [f"raise {self.limit_name}"]
    if to_truncate:
      options.append(to_truncate)
    options.append("raise max_overlong_fraction")
    return ", ".join(options[:-1]) + ", or " + options[-1]

  def check(self, where: str) -> None:
    """Logs the counts when nonzero and raises OverlongError past the bound."""
    if self.overlong:
      log.warning("%s", self.describe(where))
    if self.fraction > self.max_fraction:
      raise OverlongError(self.describe(where) + ": over the bound; " + self.advice())


@dataclasses.dataclass
class TokenizedSplit:
  """One host's tokenized shard of a split (SFT traces or generation prompts)."""

  items: list  # TokenizedTrace for SFT; (record, prompt_ids) for prompts
  overlong: OverlongReport
  token_means: dict[str, float]  # mean tokens per record by part (prompt/cot/answer/total)
  where: str
  tokenizer_version: str = ""  # the tokenizer that made the ids ('' = not recorded)


def shard_indices(num_records: int, process_index: int, process_count: int) -> slice:
  """This host's disjoint, equal-sized share of [0, num_records) (the remainder is unused)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  per_host = num_records // process_count
  return slice(process_index, per_host * process_count, process_count)


def _sharded_records(records: grain.MapDataset, process_index: int, process_count: int, where: str):
  total = len(records)
  shard = records[shard_indices(total, process_index, process_count)]
  if total == 0:
    raise EmptyDatasetError(f"{where}: empty split")
  if len(shard) == 0:
    raise EmptyDatasetError(f"{where}: {total} records cannot give each of {process_count} hosts one")
  return shard


def tokenize_traces(
    records: grain.MapDataset,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    loss_on: str,
    overlong: str,
    max_overlong_fraction: float,
    process_index: int,
    process_count: int,
    where: str,
    max_answer_tokens: int = 0,
) -> TokenizedSplit:
  """Tokenizes this host's shard of trace `records`; applies and checks the overlong policy.

  A packed row holds `seq_len` input positions, so a trace fits when it has at most
  `seq_len + 1` tokens (inputs and targets are the trace shifted by one). `max_answer_tokens` (0 = off)
  cuts every longer answer back to its last whole sentence within that many tokens: a model taught
  600-token answers runs past an evaluation's answer budget and is graded as cut off.
  """
  if overlong not in OVERLONG_POLICIES:
    raise ValueError(f"overlong={overlong!r}; valid: {OVERLONG_POLICIES}")
  shard = _sharded_records(records, process_index, process_count, where)
  max_tokens = seq_len + 1
  report = OverlongReport(limit_tokens=max_tokens, policy=overlong, max_fraction=max_overlong_fraction,
                          limit_name="seq_len", limit_value=seq_len)
  part_sums = dict.fromkeys(("prompt", "cot", "answer", "total"), 0)
  items = []
  shortest_whole, shortest_cut = np.inf, np.inf
  # Plain indexing, not iteration: grain's iterator runs a thread pool whose overhead
  # exceeds the tokenization itself for records this small.
  for index in range(len(shard)):
    trace = tokenize_trace(tokenizer, shard[index], loss_on)
    report.records += 1
    counts = np.bincount(trace.labels, minlength=len(Segment))
    if max_answer_tokens and counts[Segment.ANSWER] > max_answer_tokens:
      cut = trim_answer(tokenizer, shard[index], loss_on, len(trace.ids) - int(counts[Segment.ANSWER]) + max_answer_tokens)
      if cut is None:
        report.answers_uncut += 1
      else:
        trace, counts = cut, np.bincount(cut.labels, minlength=len(Segment))
        report.answers_trimmed += 1
    part_sums["prompt"] += int(counts[Segment.SYSTEM] + counts[Segment.USER])
    part_sums["cot"] += int(counts[Segment.COT])
    part_sums["answer"] += int(counts[Segment.ANSWER])
    part_sums["total"] += len(trace.ids)
    # What truncate_cot can reach: every CoT token but the <|answer|> marker removed.
    cut_tokens = len(trace.ids) - max(int(counts[Segment.COT]) - 1, 0)
    report.longest_tokens = max(report.longest_tokens, len(trace.ids))
    shortest_whole, shortest_cut = min(shortest_whole, len(trace.ids)), min(shortest_cut, cut_tokens)
    if len(trace.ids) > max_tokens:
      report.overlong += 1
      if overlong == "truncate_cot":
        trace = truncate_cot(trace, max_tokens)
      elif overlong == "trim_answer":
        trace = trim_answer(tokenizer, shard[index], loss_on, max_tokens)
      else:
        trace = None
      if trace is None:
        report.dropped += 1
        report.truncatable += int(overlong == "drop" and cut_tokens <= max_tokens)
        continue
      report.truncated += 1
    items.append(trace)
  report.shortest_needed_tokens = int(shortest_cut if overlong == "truncate_cot" else shortest_whole)
  if max_answer_tokens:
    log.info("%s: %d of %d answers cut back to max_answer_tokens=%d at a sentence end; %d longer ones have no "
             "sentence end to cut at and were kept whole", where, report.answers_trimmed, report.records,
             max_answer_tokens, report.answers_uncut)
  report.check(where)
  if not items:
    raise EmptyDatasetError(f"{where}: no record fits in seq_len={seq_len}: {report.advice()}")
  means = {k: v / report.records for k, v in part_sums.items()}
  return TokenizedSplit(items, report, means, where, tokenizer.version)


def tokenize_prompts(
    records: grain.MapDataset,
    tokenizer: Tokenizer,
    *,
    max_prompt_len: int,
    max_overlong_fraction: float,
    process_index: int,
    process_count: int,
    where: str,
    open_reasoning: bool = True,
) -> TokenizedSplit:
  """This host's shard as (record, generation-prompt ids); over-long prompts are dropped.

  `open_reasoning=False` ends each prompt before the chat format's reasoning opener (`<think>`),
  for a model that never learnt it and would end its turn at once."""
  shard = _sharded_records(records, process_index, process_count, where)
  report = OverlongReport(limit_tokens=max_prompt_len, policy="drop", max_fraction=max_overlong_fraction,
                          limit_name="max_prompt_len", limit_value=max_prompt_len)
  items, total_tokens, shortest = [], 0, np.inf
  for index in range(len(shard)):
    record = shard[index]
    ids, _ = tokenizer.render_chat(record["messages"], add_generation_prompt=True)
    if not open_reasoning:
      ids = without_reasoning_opener(ids, tokenizer.think_id)
    report.records += 1
    total_tokens += len(ids)
    report.longest_tokens = max(report.longest_tokens, len(ids))
    shortest = min(shortest, len(ids))
    if len(ids) > max_prompt_len:
      report.overlong += 1
      report.dropped += 1
      continue
    items.append((record, ids))
  report.shortest_needed_tokens = int(shortest)
  report.check(where)
  if not items:
    raise EmptyDatasetError(f"{where}: no prompt fits in max_prompt_len={max_prompt_len}: {report.advice()}")
  return TokenizedSplit(items, report, {"prompt": total_tokens / report.records}, where, tokenizer.version)


def as_records(source: Sequence[Any], decode=None) -> grain.MapDataset:
  """A grain MapDataset of records over a random-access source (optionally decoded)."""
  dataset = grain.MapDataset.source(source)
  return dataset.map(decode) if decode is not None else dataset
