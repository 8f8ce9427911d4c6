"""Input pipeline: TFDS split -> grain -> chat tokens -> packed, fixed-shape batches.

    data_cfg = default_config()                      # the `data` section of a training config
    it = make_iterator(data_cfg, tokenizer, data_cfg.train_split, global_batch_size=64, seed=0)
    batch = next(it)          # CONTRACTS.md batch: tokens/targets/weights/segment_ids/positions
    state = it.get_state()    # JSON; it.set_state(state) on a fresh iterator resumes exactly
    it.stats()                # overlong counts, mean tokens per part, packing efficiency

    prompts = make_prompt_iterator(data_cfg, tokenizer, "eval", batch_size=16)
    for pb in prompts: pb.tokens, pb.positions, pb.segment_ids, pb.records ...

Each host reads only its shard (`jax.process_index()` of `jax.process_count()` by default);
shards are disjoint and equal-sized. Every record is tokenized once per process: the
tokenized shard is kept (small LRU keyed by dataset, split, tokenizer and settings), so
later epochs and repeated eval passes cost only packing.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from deliberative.data import datasets, packing, schema, tfds_builder, tokenized
from deliberative.tokenizer.sentencepiece import Tokenizer


def default_config() -> ml_collections.ConfigDict:
  """The `data` config section; training configs embed it and override fields."""
  cfg = ml_collections.ConfigDict()
  cfg.data_dir = ""  # "" -> $DELIBERATIVE_DATA_DIR or ~/.cache/deliberative/data
  cfg.dataset = datasets.DEMO_DATASET  # a name under data_dir, or a built version dir
  cfg.train_split = "train"
  cfg.eval_split = "eval"
  cfg.seq_len = 256  # positions per row (a trace of seq_len + 1 tokens fits exactly)
  cfg.loss_on = "cot_answer"  # "cot_answer" | "answer": which targets carry loss
  cfg.packing = True  # several records per row (segment_ids) vs one padded record per row
  cfg.packing_lookahead = 16  # records a batch may defer while filling its rows (1 = plain first-fit)
  # Traces longer than seq_len + 1: "drop", "truncate_cot" (cut the CoT), or "trim_answer" (cut the
  # answer back to its last whole sentence that fits, end of turn kept).
  cfg.overlong = "truncate_cot"
  # 0 = off; N: every answer longer than N tokens is cut back to its last whole sentence within N (counted),
  # so the model learns answers that end inside the evaluation's answer budget.
  cfg.max_answer_tokens = 0
  cfg.max_overlong_fraction = 0.05  # fail at start-up when more records than this are overlong
  cfg.shuffle = True  # reshuffled every epoch, deterministically from the seed
  cfg.seed = 0
  cfg.max_prompt_len = 128  # prompt iterator: longer generation prompts are dropped (counted)
  # False: generation prompts stop before the reasoning opener (a model that has not learnt it).
  cfg.open_reasoning = True
  return cfg


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # only when the caller did not say which host this is

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return process_index, process_count


def _tokenizer_id(tokenizer: Tokenizer) -> str:
  # `version` is each backend's content hash (sentencepiece proto; tokenizer.json + chat format).
  return tokenizer.version


def check_tokenized_with(split: tokenized.TokenizedSplit, tokenizer: Tokenizer) -> None:
  """Refuses ids made by another tokenizer: they would train on the wrong tokens without a sign."""
  if split.tokenizer_version and split.tokenizer_version != tokenizer.version:
    raise ValueError(f"{split.where}: tokenized with tokenizer {split.tokenizer_version}, but this run's "
                     f"tokenizer is {tokenizer.version}; re-tokenize the data with the run's tokenizer")


# Tokenized shards by (dataset dir, split, tokenizer, settings, host); eval iterators are
# made again and again, and re-tokenizing each time would dominate a CPU run.
_CACHE: collections.OrderedDict[tuple, tokenized.TokenizedSplit] = collections.OrderedDict()
_CACHE_SIZE = 8


def _cached(key: tuple, build):
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  value = build()
  _CACHE[key] = value
  while len(_CACHE) > _CACHE_SIZE:
    _CACHE.popitem(last=False)
  return value


def dataset_records(version_dir, split: str) -> tuple[grain.MapDataset, str]:
  """A split's decoded records as a grain MapDataset, and the place it was read from."""
  source = tfds_builder.open_source(version_dir, split)
  return tokenized.as_records(source, tfds_builder.record_from_example), f"{version_dir}[{split}]"


def _dataset_key(version_dir) -> tuple[str, str]:
  # The content fingerprint makes a rebuilt dataset a cache miss, not a stale hit.
  return str(version_dir), (tfds_builder.read_metadata(version_dir) or {}).get("fingerprint", "")


def load_traces(data_cfg, tokenizer: Tokenizer, split: str, *, process_index=None,
                process_count=None) -> tokenized.TokenizedSplit:
  """This host's tokenized shard of a trace split (cached)."""
  process_index, process_count = _host(process_index, process_count)
  version_dir = datasets.resolve_dataset(data_cfg.data_dir, data_cfg.dataset)
  key = ("traces", *_dataset_key(version_dir), split, _tokenizer_id(tokenizer), data_cfg.seq_len, data_cfg.loss_on,
         data_cfg.overlong, data_cfg.max_overlong_fraction, data_cfg.get("max_answer_tokens", 0), process_index,
         process_count)

  def build():
    records, where = dataset_records(version_dir, split)
    return tokenized.tokenize_traces(
        records, tokenizer, seq_len=data_cfg.seq_len, loss_on=data_cfg.loss_on, overlong=data_cfg.overlong,
        max_overlong_fraction=data_cfg.max_overlong_fraction, process_index=process_index,
        process_count=process_count, where=where, max_answer_tokens=data_cfg.get("max_answer_tokens", 0))

  return _cached(key, build)


def _per_host_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible by {process_count} hosts")
  return global_batch_size // process_count


def iterator_from_traces(
    traces: tokenized.TokenizedSplit,
    data_cfg,
    tokenizer: Tokenizer,
    *,
    batch_rows: int,
    seed: int,
    num_epochs: int | None = None,
    shuffle: bool | None = None,
    signature: Mapping[str, Any],
) -> packing.PackedBatchIterator:
  """Batches of `batch_rows` rows from an already tokenized shard.

  `signature` names the data (portably: no absolute paths) so that a saved iterator
  state is only ever restored into the pipeline it came from.
  """
  check_tokenized_with(traces, tokenizer)
  shuffle = data_cfg.shuffle if shuffle is None else shuffle
  order = packing.record_order(len(traces.items), seed=seed, shuffle=shuffle, num_epochs=num_epochs)
  report = traces.overlong
  split_stats = {
      "records": report.records,
      "overlong": report.overlong,
      "overlong_dropped": report.dropped,
      "overlong_truncated": report.truncated,
      "answers_trimmed": report.answers_trimmed,
      **{f"mean_{part}_tokens": value for part, value in traces.token_means.items()},
  }
  return packing.PackedBatchIterator(
      traces.items, order, rows=batch_rows, seq_len=data_cfg.seq_len, packing=data_cfg.packing,
      lookahead=data_cfg.packing_lookahead, pad_id=tokenizer.pad_id, split_stats=split_stats,
      signature=dict(signature, records=len(traces.items), seed=seed, shuffle=shuffle, num_epochs=num_epochs),
  )


def make_iterator(
    data_cfg,
    tokenizer: Tokenizer,
    split: str,
    *,
    global_batch_size: int,
    seed: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    shuffle: bool | None = None,
) -> packing.PackedBatchIterator:
  """Per-host SFT batches [global_batch_size / process_count, seq_len] from a trace split.

  `seed` defaults to data_cfg.seed, `shuffle` to data_cfg.shuffle; `num_epochs=None`
  repeats forever. Raises OverlongError / EmptyDatasetError at construction.
  """
  process_index, process_count = _host(process_index, process_count)
  traces = load_traces(data_cfg, tokenizer, split, process_index=process_index, process_count=process_count)
  return iterator_from_traces(
      traces, data_cfg, tokenizer, batch_rows=_per_host_batch(global_batch_size, process_count),
      seed=data_cfg.seed if seed is None else seed, num_epochs=num_epochs, shuffle=shuffle,
      signature={"dataset": data_cfg.dataset, "split": split, "host": [process_index, process_count]})


def iterator_from_records(
    records: Sequence[Mapping[str, Any]],
    data_cfg,
    tokenizer: Tokenizer,
    *,
    global_batch_size: int,
    seed: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool | None = None,
) -> packing.PackedBatchIterator:
  """make_iterator() over in-memory trace records (tests, freshly generated data)."""
  records = [schema.validate_record(r, where=f"<records>[{i}]") for i, r in enumerate(records)]
  traces = tokenized.tokenize_traces(
      tokenized.as_records(records), tokenizer, seq_len=data_cfg.seq_len, loss_on=data_cfg.loss_on,
      overlong=data_cfg.overlong, max_overlong_fraction=data_cfg.max_overlong_fraction,
      process_index=process_index, process_count=process_count, where="<records>",
      max_answer_tokens=data_cfg.get("max_answer_tokens", 0))
  return iterator_from_traces(
      traces, data_cfg, tokenizer, batch_rows=_per_host_batch(global_batch_size, process_count),
      seed=data_cfg.seed if seed is None else seed, num_epochs=num_epochs, shuffle=shuffle,
      signature={"dataset": "<records>", "host": [process_index, process_count]})


# -- generation prompts (RL rollouts, evaluation) ---------------------------------------------------


@dataclasses.dataclass
class PromptBatch:
  """Generation prompts, left-padded to max_prompt_len so generation starts in one column.

  `positions` count from 0 at each prompt's first token and `segment_ids` are 1 on
  prompt tokens, 0 on padding: ready for `model(tokens, positions, segment_ids)`.
  Rows with `valid` False only fill the last batch of a finite pass (copies of row 0).
  """

  tokens: np.ndarray  # int32 [B, P]
  positions: np.ndarray  # int32 [B, P]
  segment_ids: np.ndarray  # int32 [B, P]
  lengths: np.ndarray  # int32 [B]
  valid: np.ndarray  # bool [B]
  records: list[dict[str, Any]]  # the B records (category, decision, ... for rewards / metrics)


def load_prompts(data_cfg, tokenizer: Tokenizer, split: str, *, process_index=None,
                 process_count=None) -> tokenized.TokenizedSplit:
  """This host's shard of a split as (record, generation-prompt ids) pairs (cached).

  Works on prompt-only and trace splits alike (a trace's completion is ignored).
  """
  process_index, process_count = _host(process_index, process_count)
  version_dir = datasets.resolve_dataset(data_cfg.data_dir, data_cfg.dataset)
  open_reasoning = bool(data_cfg.get("open_reasoning", True))
  key = ("prompts", *_dataset_key(version_dir), split, _tokenizer_id(tokenizer), data_cfg.max_prompt_len,
         data_cfg.max_overlong_fraction, process_index, process_count, open_reasoning)

  def build():
    records, where = dataset_records(version_dir, split)
    return tokenized.tokenize_prompts(
        records, tokenizer, max_prompt_len=data_cfg.max_prompt_len,
        max_overlong_fraction=data_cfg.max_overlong_fraction, process_index=process_index,
        process_count=process_count, where=where, open_reasoning=open_reasoning)

  return _cached(key, build)


class PromptIterator(Iterator[PromptBatch]):
  """Batches of generation prompts with their records; get_state()/set_state() like SFT."""

  def __init__(self, prompts: tokenized.TokenizedSplit, *, batch_size: int, max_prompt_len: int,
               pad_id: int, order: grain.MapDataset, signature: dict[str, Any]):
    self._items = prompts.items
    self._order = order
    self._order_len = len(order)
    self._batch_size = batch_size
    self._max_prompt_len = max_prompt_len
    self._pad_id = pad_id
    self._signature = dict(signature, batch_size=batch_size, max_prompt_len=max_prompt_len)
    self._next = 0
    self._overlong = prompts.overlong
    self._mean_prompt_tokens = prompts.token_means["prompt"]

  def __iter__(self):
    return self

  def get_state(self) -> dict[str, Any]:
    return {"signature": self._signature, "next": self._next}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("signature") != self._signature:
      raise ValueError(f"iterator state is for another pipeline: {state.get('signature')} != {self._signature}")
    self._next = int(state["next"])

  def stats(self) -> dict[str, float]:
    return {"records": self._overlong.records, "overlong_dropped": self._overlong.dropped,
            "mean_prompt_tokens": self._mean_prompt_tokens, "prompts_emitted": self._next}

  def __next__(self) -> PromptBatch:
    if self._next >= self._order_len:
      raise StopIteration
    stop = min(self._next + self._batch_size, self._order_len)
    chosen = [self._items[self._order[p]] for p in range(self._next, stop)]
    self._next = stop
    valid = np.zeros(self._batch_size, bool)
    valid[: len(chosen)] = True
    chosen += [chosen[0]] * (self._batch_size - len(chosen))
    shape = (self._batch_size, self._max_prompt_len)
    tokens = np.full(shape, self._pad_id, np.int32)
    positions = np.zeros(shape, np.int32)
    segment_ids = np.zeros(shape, np.int32)
    lengths = np.zeros(self._batch_size, np.int32)
    for row, (_, ids) in enumerate(chosen):
      n = len(ids)
      tokens[row, -n:] = ids
      positions[row, -n:] = np.arange(n)
      segment_ids[row, -n:] = 1
      lengths[row] = n
    return PromptBatch(tokens, positions, segment_ids, lengths, valid, [dict(r) for r, _ in chosen])


def make_prompt_iterator(
    data_cfg,
    tokenizer: Tokenizer,
    split: str,
    *,
    batch_size: int,
    seed: int | None = None,
    shuffle: bool = False,
    num_epochs: int | None = 1,
    process_index: int | None = None,
    process_count: int | None = None,
) -> PromptIterator:
  """Per-host batches of `batch_size` generation prompts (one pass, in order, by default)."""
  process_index, process_count = _host(process_index, process_count)
  prompts = load_prompts(data_cfg, tokenizer, split, process_index=process_index, process_count=process_count)
  check_tokenized_with(prompts, tokenizer)
  seed = data_cfg.seed if seed is None else seed
  order = packing.record_order(len(prompts.items), seed=seed, shuffle=shuffle, num_epochs=num_epochs)
  return PromptIterator(
      prompts, batch_size=batch_size, max_prompt_len=data_cfg.max_prompt_len, pad_id=tokenizer.pad_id,
      order=order, signature={"dataset": data_cfg.dataset, "split": split, "seed": seed, "shuffle": shuffle,
                              "num_epochs": num_epochs, "host": [process_index, process_count]})
