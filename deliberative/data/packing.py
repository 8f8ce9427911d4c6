"""Fixed-shape batches from tokenized traces: packing (or padding) with restorable state.

The record order is a grain MapDataset of indices (shuffled per epoch, repeated), so the
whole position of the iterator is "how far along that order we are" plus the few records
the packer deferred. That fits in a small JSON dict: `get_state()` / `set_state()`.

Packing is first-fit with a look-ahead: each batch takes records in order and puts each
into the first row with room. A record that fits nowhere is deferred to the next batch,
where deferred records are tried first (so none is starved; the oldest always fits an
empty batch); the batch closes once `lookahead` records have been deferred or the data
ends. `lookahead=1` is plain first-fit that closes at the first misfit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from deliberative.data.tokenized import TokenizedTrace

BATCH_KEYS = ("tokens", "targets", "weights", "segment_ids", "positions")
_STATE_VERSION = 1


def record_order(num_records: int, *, seed: int, shuffle: bool, num_epochs: int | None) -> grain.MapDataset:
  """Indices into the tokenized shard, epoch after epoch (each epoch reshuffled)."""
  order = grain.MapDataset.range(num_records)
  if shuffle:
    order = order.shuffle(seed=seed)
  return order.repeat(num_epochs)


class PackedBatchIterator(Iterator[dict[str, np.ndarray]]):
  """Per-host batches {tokens, targets, weights, segment_ids, positions}, shape [rows, seq_len].

  With finite epochs the last batch is completed with empty rows (segment_ids 0, weight 0)
  so every batch has the same shape.
  """

  def __init__(
      self,
      traces: Sequence[TokenizedTrace],
      order: grain.MapDataset,
      *,
      rows: int,
      seq_len: int,
      packing: bool,
      lookahead: int,
      pad_id: int,
      signature: dict[str, Any],
      split_stats: dict[str, Any] | None = None,
  ):
    if rows < 1 or seq_len < 1 or lookahead < 1:
      raise ValueError(f"rows={rows}, seq_len={seq_len}, lookahead={lookahead} must be >= 1")
    self._traces = traces
    self._order = order
    self._order_len = len(order)
    self._rows = rows
    self._seq_len = seq_len
    self._packing = packing
    self._lookahead = lookahead if packing else 1
    self._pad_id = pad_id
    self._split_stats = dict(split_stats or {})  # fixed facts about the data, for stats()
    # What the state belongs to; set_state refuses a state from a different pipeline.
    self._signature = dict(signature, rows=rows, seq_len=seq_len, packing=packing, lookahead=self._lookahead)
    self._next = 0  # position in `order` of the next record not yet taken
    self._deferred: list[int] = []  # positions taken but deferred to the next batch
    self._counters = dict.fromkeys(("batches", "rows", "segments", "tokens", "loss_tokens"), 0)

  def __iter__(self):
    return self

  # -- state ---------------------------------------------------------------------------
  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position; set_state() on a fresh iterator resumes right here."""
    return {
        "version": _STATE_VERSION,
        "signature": self._signature,
        "next": self._next,
        "deferred": list(self._deferred),
        "counters": dict(self._counters),
    }

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("version") != _STATE_VERSION or state.get("signature") != self._signature:
      raise ValueError(
          f"iterator state is for another pipeline: {state.get('signature')} != {self._signature}"
      )
    self._next = int(state["next"])
    self._deferred = [int(p) for p in state["deferred"]]
    self._counters = {k: int(v) for k, v in state["counters"].items()}

  # -- stats ---------------------------------------------------------------------------
  def stats(self) -> dict[str, float]:
    """Split facts (overlong counts, mean tokens per part) and counters since the start
    of iteration, with packing efficiency (non-pad share of positions) and tokens/segment."""
    c = self._counters
    capacity = c["rows"] * self._seq_len
    return {
        **self._split_stats,
        **c,
        "packing_efficiency": c["tokens"] / capacity if capacity else 0.0,
        "tokens_per_segment": c["tokens"] / c["segments"] if c["segments"] else 0.0,
        "segments_per_row": c["segments"] / c["rows"] if c["rows"] else 0.0,
    }

  # -- batches -------------------------------------------------------------------------
  def _take(self, queue: list[int]) -> int | None:
    if queue:
      return queue.pop(0)
    if self._next >= self._order_len:
      return None
    self._next += 1
    return self._next - 1

  def __next__(self) -> dict[str, np.ndarray]:
    if not self._deferred and self._next >= self._order_len:
      raise StopIteration
    rows, seq_len = self._rows, self._seq_len
    batch = {k: np.zeros((rows, seq_len), np.float32 if k == "weights" else np.int32) for k in BATCH_KEYS}
    if self._pad_id:
      batch["tokens"][:] = self._pad_id
      batch["targets"][:] = self._pad_id
    fill = np.zeros(rows, np.int64)  # tokens used per row
    segments = np.zeros(rows, np.int64)  # records per row
    queue, deferred = self._deferred, []
    while len(deferred) < self._lookahead:
      position = self._take(queue)
      if position is None:
        break
      trace = self._traces[self._order[position]]
      length = len(trace.ids) - 1
      if self._packing:
        room = np.flatnonzero(fill + length <= seq_len)
      else:
        room = np.flatnonzero(segments == 0)
      if not len(room):
        deferred.append(position)
        continue
      row = int(room[0])
      start, stop = int(fill[row]), int(fill[row]) + length
      segments[row] += 1
      batch["tokens"][row, start:stop] = trace.ids[:-1]
      batch["targets"][row, start:stop] = trace.ids[1:]
      batch["weights"][row, start:stop] = trace.target_weights
      batch["segment_ids"][row, start:stop] = segments[row]
      batch["positions"][row, start:stop] = np.arange(length)
      fill[row] = stop
    self._deferred = deferred + queue
    c = self._counters
    c["batches"] += 1
    c["rows"] += rows
    c["segments"] += int(segments.sum())
    c["tokens"] += int(fill.sum())
    c["loss_tokens"] += int(batch["weights"].sum())
    return batch


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[tuple[int, int]]:
  """(row, start slot) for each of `lengths`, in their order: longest first, each into the first row
  with room, a new row when none has it (RL's packed updates, trainers/rl_rollout.py, whose row count
  follows from the lengths; the SFT iterator above fills a fixed number of rows per batch instead)."""
  fill: list[int] = []  # slots used per row
  placed: dict[int, tuple[int, int]] = {}
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    n = lengths[i]
    if n > capacity:
      raise ValueError(f"first_fit_decreasing: a length {n} exceeds the row capacity {capacity}")
    row = next((k for k, used in enumerate(fill) if used + n <= capacity), None)
    if row is None:
      fill.append(0)
      row = len(fill) - 1
    placed[i] = (row, fill[row])
    fill[row] += n
  return [placed[i] for i in range(len(lengths))]


def unpack(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
  """The segments of a packed batch, row by row, each as {tokens, targets, weights, positions}."""
  out = []
  for row in range(batch["segment_ids"].shape[0]):
    ids = batch["segment_ids"][row]
    for segment in np.unique(ids[ids > 0]):
      mask = ids == segment
      out.append({k: batch[k][row][mask] for k in ("tokens", "targets", "weights", "positions")})
  return out
