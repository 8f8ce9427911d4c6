"""The judge G_RM: grades a final answer (never the CoT) against spec(category).

    judge = Judge(model_cfg, tokenizer, spec, spec_view='category', max_len=1536)
    judge.scores(params, records)                  # [N] E[digit] / 9 in [0, 1]
    judge.grades(params, records, rng, k=4)        # [N, k] sampled digits 0..9
    min_of_k(judge.grades(...))                    # the paper's data-filtering rule

Every judgment of a category starts with the same long system turn (spec view + rubric),
a token prefix on every backend (judge/prompt.judge_layout checks the boundary).
`prefix_cache(params)` prefills the turns of all categories once, in one batch, left-padded
to a common slot count P so that every row can share `cache['index'] = P`; scoring then gathers each row's category cache and runs only the suffix (user turn,
quoted answer, grade prompt), positions continuing after the row's real prefix length.
Padding slots carry segment id 0 and are invisible to attention (transformer.py), so the
cached result equals the full forward's up to float rounding.

Prompt rendering and training targets live in judge/prompt.py, metrics in judge/metrics.py.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deliberative.judge.metrics import scores_from_logprobs
from deliberative.judge.prompt import (DEFAULT_RUBRIC, NUM_GRADES, JudgeFormat, JudgeItem, PromptTooLong, RenderedPrompt,
                                       as_judge_input, tokenizer_name)
from deliberative.model import sharding
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import CACHE_SLOT_AXIS, Transformer, build, init_cache
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer

_SLOT_MULTIPLE = 8  # prefix slots are rounded up to this, for friendlier array shapes


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _bucket(n: int, buckets: Sequence[int], what: str) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise ValueError(f'judge: {what} {n} exceeds the largest bucket {buckets[-1]}')


def _default_length_buckets(max_len: int) -> tuple[int, ...]:
  buckets, b = [], 32
  while b < max_len:
    buckets.append(b)
    b *= 2
  return (*buckets, _round_up(max_len, _SLOT_MULTIPLE))


def _under_own_mesh(method):
  """A Judge method traced inside its judge's `sharding.use_mesh` (nothing when mesh is None)."""
  @functools.wraps(method)
  def traced(self, *args):
    return sharding.under_mesh(method, self.mesh, self.rules)(self, *args)
  return traced


def _host_generator(rng) -> np.random.Generator:
  """A numpy generator seeded by a jax key (typed or raw uint32), so a key fixes the draws."""
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return np.random.default_rng(np.asarray(rng, np.uint32).ravel().tolist())


@dataclasses.dataclass(frozen=True)
class PrefixCache:
  """KV caches of every category's system block, right-aligned at slot P (left padding
  has segment id 0). Valid only for the params it was computed from."""
  categories: tuple[str, ...]
  layers: list  # per layer {'k', 'v'}: [C, n_kv_heads, P, head_dim] (transformer.init_cache's layout)
  segment_ids_CP: jax.Array  # 1 on prefix tokens, 0 on left padding
  lengths_C: np.ndarray  # real prefix tokens per category
  spec_version: str

  @property
  def slots(self) -> int:
    return int(self.segment_ids_CP.shape[1])

  def __getitem__(self, category: str) -> dict:
    """One category's cache in transformer.py's layout (batch 1, index = P)."""
    c = self.categories.index(category)
    return {'layers': [{'k': layer['k'][c:c + 1], 'v': layer['v'][c:c + 1]} for layer in self.layers],
            'segment_ids': self.segment_ids_CP[c:c + 1], 'index': jnp.asarray(self.slots, jnp.int32)}


class Judge:
  """Scores and samples grades with a judge model; see the module docstring."""

  def __init__(self, model_cfg: ModelConfig, tokenizer: Tokenizer, spec: Spec, *,
               rubric: str = DEFAULT_RUBRIC, spec_view: str = 'category', answer_and_cot: bool = False,
               max_len: int = 1536, batch_buckets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
               length_buckets: Sequence[int] | None = None, batch_multiple: int = 1,
               mesh: jax.sharding.Mesh | None = None, rules=sharding.DEFAULT_RULES):
    self.cfg = model_cfg
    self.tokenizer = tokenizer
    self.spec = spec
    self.max_len = max_len
    self.format = JudgeFormat(tokenizer, spec, rubric=rubric, spec_view=spec_view,
                              answer_and_cot=answer_and_cot, max_len=max_len)
    # Ids a tokenizer adds beyond its file (HFTokenizer's <think> on SmolLM2) are never in a
    # judge prompt: text cannot produce them and the layout does not use them.
    layout = self.format.layout
    text_vocab = tokenizer.vocab_size - len(getattr(tokenizer, 'added_tokens', ()))
    needed = 1 + max(text_vocab - 1, *layout.user_open, *layout.user_close, *layout.grade_prompt,
                     *self.format.grade_ids)
    if model_cfg.vocab_size < needed:
      raise ValueError(f'judge: model vocab {model_cfg.vocab_size} < the {needed} ids judge prompts may use '
                       f'(tokenizer {tokenizer_name(tokenizer)})')
    self.grade_ids = np.asarray(self.format.grade_ids, np.int32)
    self.categories = self.format.categories
    self._category_index = {c: i for i, c in enumerate(self.categories)}
    self.prefix_lengths = np.asarray([len(self.format.prefix_ids(c)) for c in self.categories], np.int32)
    longest = int(self.prefix_lengths.max())
    if longest >= max_len:
      worst = self.categories[int(self.prefix_lengths.argmax())]
      raise PromptTooLong(f'judge: the {spec_view!r} spec view + rubric for {worst!r} is {longest} '
                          f'tokens; max_len {max_len} leaves no room for the request and answer')
    self.prefix_slots = _round_up(longest, _SLOT_MULTIPLE)
    self.length_buckets = tuple(sorted(length_buckets or _default_length_buckets(max_len)))
    if self.length_buckets[-1] < max_len:
      raise ValueError(f'judge: largest length bucket {self.length_buckets[-1]} < max_len {max_len}')
    # Batch buckets must split evenly over the mesh's batch axes.
    self.batch_buckets = tuple(sorted({_round_up(b, batch_multiple) for b in batch_buckets}))
    self.batch_multiple = batch_multiple
    self.mesh, self.rules = mesh, rules  # judgments split over the rules' batch axes of `mesh`
    self.graphdef = nnx.graphdef(nnx.eval_shape(build(model_cfg)))
    self.compiles = 0  # counted at trace time, so tests can assert "no new compilation"
    self.truncated = 0  # judgments whose answer (or CoT) was cut to fit max_len
    self._memo: tuple[list, PrefixCache] | None = None

  # --- public API -----------------------------------------------------------------------
  def scores(self, params, items: Sequence[JudgeItem], *, use_prefix_cache: bool = True,
             prefix_cache: PrefixCache | None = None) -> np.ndarray:
    """[N] float scores E[digit] / 9 in [0, 1], in the order of `items`."""
    logprobs_NG = self.grade_logprobs(params, items, use_prefix_cache=use_prefix_cache,
                                      prefix_cache=prefix_cache)
    return scores_from_logprobs(logprobs_NG)

  def grades(self, params, items: Sequence[JudgeItem], rng: jax.Array, k: int, *,
             temperature: float = 1.0, use_prefix_cache: bool = True,
             prefix_cache: PrefixCache | None = None) -> np.ndarray:
    """[N, k] int32 digits sampled from the judge's grade distribution (temperature 0 =
    argmax). A grade is one token after a fixed prompt, so one forward pass serves all k."""
    if k < 1:
      raise ValueError(f'judge: k must be >= 1, got {k}')
    logprobs_NG = self.grade_logprobs(params, items, use_prefix_cache=use_prefix_cache,
                                      prefix_cache=prefix_cache)
    if temperature <= 0:
      return np.repeat(logprobs_NG.argmax(axis=-1)[:, None], k, axis=1).astype(np.int32)
    # Ten classes per row: sampled on the host by inverse CDF, seeded by `rng`, instead of
    # a device program that would compile per (N, k) for a few thousand random numbers.
    scaled_NG = logprobs_NG.astype(np.float64) / temperature
    probs_NG = np.exp(scaled_NG - scaled_NG.max(axis=-1, keepdims=True))
    cdf_NG = np.cumsum(probs_NG / probs_NG.sum(axis=-1, keepdims=True), axis=-1)
    uniform_NK = _host_generator(rng).random((len(cdf_NG), k))
    draws_NK = (uniform_NK[:, :, None] >= cdf_NG[:, None, :NUM_GRADES - 1]).sum(axis=-1)
    return draws_NK.astype(np.int32)

  def grade_logprobs(self, params, items: Sequence[JudgeItem], *, use_prefix_cache: bool = True,
                     prefix_cache: PrefixCache | None = None) -> np.ndarray:
    """[N, 10] log-probabilities of the digits after the grade prompt, renormalised over digits."""
    rendered = [self.format.render(as_judge_input(self.tokenizer, item, i)) for i, item in enumerate(items)]
    self.truncated += sum(r.tokens_dropped > 0 for r in rendered)
    out_NG = np.zeros((len(rendered), NUM_GRADES), np.float32)
    if not rendered:
      return out_NG
    if use_prefix_cache:
      cache = prefix_cache if prefix_cache is not None else self.prefix_cache(params)
      self._check_prefix_cache(cache)
      lengths = [len(r.suffix_ids) for r in rendered]
    else:
      lengths = [len(r.ids) for r in rendered]
    # Similar lengths share a batch, so little of each batch is padding.
    order = np.argsort(lengths, kind='stable')
    chunk = self.batch_buckets[-1]
    for start in range(0, len(order), chunk):
      rows = order[start:start + chunk]
      if use_prefix_cache:
        out_NG[rows] = self._score_suffixes(params, cache, [rendered[i] for i in rows])
      else:
        out_NG[rows] = self._score_full(params, [rendered[i] for i in rows])
    return out_NG

  def prefix_cache(self, params) -> PrefixCache:
    """Every category's system-block cache, from one batched prefill. Remembered for the
    last params seen (compared leaf by leaf by identity; jax arrays are immutable, and the
    held references keep a freed array's id from being reused), so a frozen judge
    prefills once per run and a changed one never serves stale keys."""
    leaves = jax.tree_util.tree_leaves(params)
    if self._memo is not None:
      old_leaves, cache = self._memo
      if len(old_leaves) == len(leaves) and all(a is b for a, b in zip(old_leaves, leaves)):
        return cache
    n_categories = len(self.categories)
    rows = _round_up(n_categories, self.batch_multiple)
    P = self.prefix_slots
    tokens_CP = np.zeros((rows, P), np.int32)
    positions_CP = np.zeros((rows, P), np.int32)
    segments_CP = np.zeros((rows, P), np.int32)
    for c, category in enumerate(self.categories):
      ids = self.format.prefix_ids(category)
      tokens_CP[c, P - len(ids):] = ids  # right-aligned, so every suffix starts at slot P
      positions_CP[c, P - len(ids):] = np.arange(len(ids))
      segments_CP[c, P - len(ids):] = 1
    layers, segment_ids_CP = self._prefill(params, tokens_CP, positions_CP, segments_CP)
    cache = PrefixCache(self.categories, layers, segment_ids_CP, self.prefix_lengths.copy(), self.spec.version)
    self._memo = (leaves, cache)
    return cache

  # --- batching -------------------------------------------------------------------------
  def _check_prefix_cache(self, cache: PrefixCache) -> None:
    if cache.categories != self.categories or cache.slots != self.prefix_slots:
      raise ValueError('judge: prefix cache was built by a judge with other categories or spec view')
    if cache.spec_version != self.spec.version:
      raise ValueError(f'judge: prefix cache is for spec {cache.spec_version}, judge has {self.spec.version}')

  def _score_suffixes(self, params, cache: PrefixCache, rows: list[RenderedPrompt]) -> np.ndarray:
    n = len(rows)
    B = _bucket(n, self.batch_buckets, 'batch size')
    S = _bucket(max(len(r.suffix_ids) for r in rows), self.length_buckets, 'suffix length')
    tokens_BS = np.zeros((B, S), np.int32)
    positions_BS = np.zeros((B, S), np.int32)
    segments_BS = np.zeros((B, S), np.int32)  # filler rows stay all-padding; results dropped
    last_B = np.zeros((B,), np.int32)
    category_B = np.zeros((B,), np.int32)
    for b, r in enumerate(rows):
      m, c = len(r.suffix_ids), self._category_index[r.category]
      tokens_BS[b, :m] = r.suffix_ids  # right-padded: the suffix starts right after the prefix
      positions_BS[b, :m] = self.prefix_lengths[c] + np.arange(m)
      segments_BS[b, :m] = 1
      last_B[b] = m - 1  # the grade prompt's last token
      category_B[b] = c
    logprobs_BG = self._suffix_logprobs(params, cache.layers, cache.segment_ids_CP, category_B,
                                        tokens_BS, positions_BS, segments_BS, last_B)
    return np.asarray(logprobs_BG)[:n]

  def _score_full(self, params, rows: list[RenderedPrompt]) -> np.ndarray:
    n = len(rows)
    B = _bucket(n, self.batch_buckets, 'batch size')
    L = _bucket(max(len(r.ids) for r in rows), self.length_buckets, 'prompt length')
    tokens_BL = np.zeros((B, L), np.int32)
    positions_BL = np.zeros((B, L), np.int32)
    segments_BL = np.zeros((B, L), np.int32)
    last_B = np.zeros((B,), np.int32)
    for b, r in enumerate(rows):
      ids = r.ids
      tokens_BL[b, :len(ids)] = ids
      positions_BL[b, :len(ids)] = np.arange(len(ids))
      segments_BL[b, :len(ids)] = 1
      last_B[b] = len(ids) - 1
    logprobs_BG = self._full_logprobs(params, tokens_BL, positions_BL, segments_BL, last_B)
    return np.asarray(logprobs_BG)[:n]

  # --- compiled ---------------------------------------------------------------------------
  # Each jitted method below traces under the judge's mesh (_under_own_mesh), so the model's
  # activation constraints (sharding.constrain) apply.
  def _grade_logprobs_at(self, model: Transformer, x_BLE, last_B):
    # The head runs on each row's last position only: [B, L, vocab] logits never exist.
    x_B1E = jnp.take_along_axis(x_BLE, last_B[:, None, None], axis=1)
    logits_BV = model.logits(x_B1E)[:, 0]
    logprobs_BG = jax.nn.log_softmax(logits_BV[:, jnp.asarray(self.grade_ids)].astype(jnp.float32), axis=-1)
    if self.mesh is not None:  # replicated: with several processes, each reads every judgment's score
      logprobs_BG = jax.lax.with_sharding_constraint(
          logprobs_BG, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))
    return logprobs_BG

  @functools.partial(jax.jit, static_argnums=0)
  @_under_own_mesh
  def _prefill(self, params, tokens_CP, positions_CP, segments_CP):
    self.compiles += 1
    model: Transformer = nnx.merge(self.graphdef, params)
    C, P = tokens_CP.shape
    # Logits are unused, so XLA drops the LM head; only the keys and values are kept.
    _, cache = model(tokens_CP, positions_CP, segments_CP, cache=init_cache(self.cfg, C, P))
    return cache['layers'], cache['segment_ids']

  @functools.partial(jax.jit, static_argnums=0)
  @_under_own_mesh
  def _suffix_logprobs(self, params, prefix_layers, prefix_segments_CP, category_B, tokens_BS,
                       positions_BS, segments_BS, last_B):
    self.compiles += 1
    model: Transformer = nnx.merge(self.graphdef, params)
    category_B, tokens_BS, positions_BS, segments_BS, last_B = sharding.shard_rows(
        self.mesh, self.rules, category_B, tokens_BS, positions_BS, segments_BS, last_B)
    B, S = tokens_BS.shape
    P = prefix_segments_CP.shape[1]

    def rows_with_room(x_C, slot_axis):  # each row's category prefix, then S empty slots for the suffix
      rows = jnp.take(x_C, category_B, axis=0)
      room = [(0, 0)] * rows.ndim
      room[slot_axis] = (0, S)
      return jnp.pad(rows, room)

    cache = {'layers': [{k: rows_with_room(layer[k], CACHE_SLOT_AXIS) for k in ('k', 'v')} for layer in prefix_layers],
             'segment_ids': rows_with_room(prefix_segments_CP, 1), 'index': jnp.asarray(P, jnp.int32)}
    x_BSE, _ = model.hidden(tokens_BS, positions_BS, segments_BS, cache=cache)
    return self._grade_logprobs_at(model, x_BSE, last_B)

  @functools.partial(jax.jit, static_argnums=0)
  @_under_own_mesh
  def _full_logprobs(self, params, tokens_BL, positions_BL, segments_BL, last_B):
    self.compiles += 1
    model: Transformer = nnx.merge(self.graphdef, params)
    tokens_BL, positions_BL, segments_BL, last_B = sharding.shard_rows(
        self.mesh, self.rules, tokens_BL, positions_BL, segments_BL, last_B)
    x_BLE, _ = model.hidden(tokens_BL, positions_BL, segments_BL)
    return self._grade_logprobs_at(model, x_BLE, last_B)
