"""Batched sampling with a KV cache: one prefill, then a jit'd decode loop.

Prompts are left-padded to a length bucket and the batch to a size bucket, so a call
compiles once per (batch bucket, length bucket, max_new_tokens, sampling mode) and never
per prompt. Padding slots carry segment id 0 and are invisible to attention.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deliberative.model import layout, sharding
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import Transformer, build, init_cache


# XLA:CPU's default copy insertion copies each layer's KV cache at every decode step (the
# in-place cache write has readers in the same loop iteration); its region analysis orders
# them instead. A debug option of every backend, read by the CPU one.
DECODE_COMPILER_OPTIONS = {'xla_cpu_copy_insertion_use_region_analysis': True}


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  temperature: float = 0.0  # 0 = greedy
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1 = off
  max_new_tokens: int = 128

  @property
  def greedy(self) -> bool:
    return self.temperature <= 0.0


@dataclasses.dataclass
class SampleOutput:
  tokens: np.ndarray  # [B, max_new_tokens] int32, padded with pad_id after the stop token
  logprobs: np.ndarray  # [B, max_new_tokens] float32, log p(token) under softmax(logits / T); 0 after stop
  lengths: np.ndarray  # [B] generated tokens including the stop token
  stopped: np.ndarray  # [B] bool: ended on a stop token (False = ran out of max_new_tokens)

  def completion(self, i: int) -> list[int]:
    return self.tokens[i, :self.lengths[i]].tolist()


def _bucket(n: int, buckets: Sequence[int], what: str) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise ValueError(f'sampler: {what} {n} exceeds the largest bucket {buckets[-1]}; add a larger bucket')


def _filter_logits(logits_BV, top_k: int, top_p: float):
  if top_k > 0:
    kth = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
    cutoff_idx = jnp.sum(cum_BV < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_BV, cutoff_idx, axis=-1)
    logits_BV = jnp.where(logits_BV < cutoff, -jnp.inf, logits_BV)
  return logits_BV


class Sampler:
  """`Sampler(cfg, stop_ids, pad_id)(params, prompts, rng, SamplingParams(...))`."""

  def __init__(self, cfg: ModelConfig, stop_ids: Sequence[int], pad_id: int = 0, *,
               length_buckets: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
               batch_buckets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512), batch_multiple: int = 1,
               mesh: jax.sharding.Mesh | None = None, rules=sharding.DEFAULT_RULES,
               fuse_projections: bool | None = None, keep_decode_params: bool | None = None):
    self.cfg = cfg
    self.mesh, self.rules = mesh, rules  # rows split over the rules' batch axes of `mesh`
    self.stop_ids = tuple(int(s) for s in stop_ids)
    self.pad_id = int(pad_id)
    self.length_buckets = tuple(sorted(length_buckets))
    # Batch buckets must split evenly over the mesh's batch axes (batch_multiple).
    self.batch_buckets = tuple(sorted({-(-b // batch_multiple) * batch_multiple for b in batch_buckets}))
    # The decode layout of the weights: decoding runs layer by layer (a KV cache per layer), so
    # stacked (scanned) weights are unstacked once, outside the decode loop (a slice per layer at
    # every token ran 2x slower at SmolLM2's shape, tools/benchmark.py); and q/k/v and gate/up are one
    # matmul each (ModelConfig.fused_projections).
    platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
    self.fuse_projections = platform != 'tpu' if fuse_projections is None else fuse_projections
    # Where the converted weights are kept between calls (keyed on the weights' identity), an
    # evaluation's or a server's calls with the same weights convert them once: the conversion
    # copies every block's weights (~0.35 s a call at SmolLM2's shape on 2 cores, a tenth of a
    # batch-1 call). Not on TPUs by default: there the copy would stay resident beside the training
    # state, and there the conversion runs inside the decode program (tools/aot_compile.py sizes it).
    self.keep_decode_params = platform != 'tpu' if keep_decode_params is None else keep_decode_params
    self._kept: tuple | None = None  # (the weights' leaves, their decode layout)
    self.graphdef = nnx.graphdef(nnx.eval_shape(build(
        dataclasses.replace(cfg, scan_layers=False, fused_projections=self.fuse_projections))))
    self._to_decode_layout = jax.jit(sharding.under_mesh(self._decode_layout, mesh, rules))
    self.compiles = 0  # counted at trace time, so tests can assert "no new compilation"
    # Replicated outputs: every process can read all samples (multi-host meshes).
    out_shardings = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    # Traced under the mesh, so the model's activation constraints (sharding.constrain) apply.
    self._generate = jax.jit(sharding.under_mesh(self._generate_impl, mesh, rules), static_argnums=(6,),
                             out_shardings=out_shardings, compiler_options=DECODE_COMPILER_OPTIONS)

  def __call__(self, params, prompts: Sequence[Sequence[int]], rng: jax.Array,
               sampling: SamplingParams = SamplingParams()) -> SampleOutput:
    n = len(prompts)
    if n == 0:
      raise ValueError('sampler: no prompts')
    batch = _bucket(n, self.batch_buckets, 'batch size')
    length = _bucket(max(len(p) for p in prompts), self.length_buckets, 'prompt length')
    tokens = np.full((batch, length), self.pad_id, np.int32)
    segments = np.zeros((batch, length), np.int32)
    positions = np.zeros((batch, length), np.int32)
    prompt_lens = np.zeros((batch,), np.int32)
    for i, p in enumerate(prompts):
      if not p:
        raise ValueError(f'sampler: prompt {i} is empty')
      tokens[i, length - len(p):] = p  # left-pad: every prompt ends at the same slot
      segments[i, length - len(p):] = 1
      positions[i, length - len(p):] = np.arange(len(p))
      prompt_lens[i] = len(p)
    for i in range(n, batch):  # filler rows: a one-token prompt, results dropped
      tokens[i, -1], segments[i, -1] = self.pad_id, 1
      prompt_lens[i] = 1
    out = self._generate(self.program_params(params), jnp.asarray(tokens), jnp.asarray(positions),
                         jnp.asarray(segments), jnp.asarray(prompt_lens), rng, sampling)
    tokens_out, logprobs, lengths, stopped = jax.device_get(out)
    return SampleOutput(tokens_out[:n], logprobs[:n], lengths[:n], stopped[:n])

  def lower(self, params, batch: int, length: int, sampling: SamplingParams) -> jax.stages.Lowered:
    """The decode program for `batch` prompts of `length` slots (bucket sizes), lowered for
    inspection (its HLO, cost analysis, kernel count: inference/hlo.py); nothing runs."""
    tokens = segments = jnp.ones((batch, length), jnp.int32)
    positions, lengths = jnp.zeros((batch, length), jnp.int32), jnp.full((batch,), length, jnp.int32)
    return self._generate.lower(self.program_params(params), tokens, positions, segments, lengths, jax.random.key(0),
                                sampling)

  def program_params(self, params):
    """The weights as the decode program (`_generate`) takes them: in the decode layout where it is
    kept between calls (converted once for as long as the same arrays are passed), else as given."""
    if not self.keep_decode_params:
      return params
    leaves = jax.tree.leaves(params)
    if self._kept is None or len(self._kept[0]) != len(leaves) or any(
        a is not b for a, b in zip(self._kept[0], leaves)):
      self._kept = None  # the old copy is freed before the new one is made
      self._kept = (leaves, self._to_decode_layout(params))
    return self._kept[1]

  def _decode_layout(self, params):
    if isinstance(params, nnx.State):  # callers pass pure dicts (model/loading.py); a State is unwrapped
      params = params.to_pure_dict()
    if self.cfg.scan_layers:
      params = layout.unstack_layers(params, self.cfg.n_layers)
    if self.fuse_projections:
      params = layout.fuse_projections(params, self.cfg.n_heads, self.cfg.n_kv_heads)
    return params

  def _generate_impl(self, params, tokens_BP, positions_BP, segments_BP, prompt_lens_B, rng, sampling: SamplingParams):
    self.compiles += 1
    if not self.keep_decode_params:  # the conversion runs inside the program (see __init__)
      params = self._decode_layout(params)
    model: Transformer = nnx.merge(self.graphdef, params)
    tokens_BP, positions_BP, segments_BP, prompt_lens_B = sharding.shard_rows(
        self.mesh, self.rules, tokens_BP, positions_BP, segments_BP, prompt_lens_B)
    B, P = tokens_BP.shape
    T = sampling.max_new_tokens
    cache = init_cache(self.cfg, B, P + T)
    # Prompts are left-padded to end in the last slot, and only that slot's logits are read: the head
    # on every slot would be a [B, P, V] float32 array (SmolLM2, 32 x 512 prompts: 3.2 GB) and
    # B x P x E x V multiply-adds, for nothing.
    x_BPE, cache = model.hidden(tokens_BP, positions_BP, segments_BP, cache=cache)
    last_logits_BV = model.logits(x_BPE[:, -1:])[:, 0]
    stop_ids = jnp.asarray(self.stop_ids, jnp.int32)

    def choose(logits_BV, key):
      logits_BV = logits_BV.astype(jnp.float32)
      if sampling.greedy:
        token_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
        logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
      else:
        scaled_BV = logits_BV / sampling.temperature
        logp_BV = jax.nn.log_softmax(scaled_BV, axis=-1)
        filtered_BV = _filter_logits(scaled_BV, sampling.top_k, sampling.top_p)
        token_B = jax.random.categorical(key, filtered_BV, axis=-1).astype(jnp.int32)
      return token_B, jnp.take_along_axis(logp_BV, token_B[:, None], axis=-1)[:, 0]

    def body(carry):
      t, cache, last_logits_BV, done_B, out_tokens, out_logp, key = carry
      key, sub = jax.random.split(key)
      token_B, logp_B = choose(last_logits_BV, sub)
      token_B = jnp.where(done_B, self.pad_id, token_B)
      logp_B = jnp.where(done_B, 0.0, logp_B)
      out_tokens = out_tokens.at[:, t].set(token_B)
      out_logp = out_logp.at[:, t].set(logp_B)
      done_B = done_B | jnp.isin(token_B, stop_ids)
      logits_B1V, cache = model(token_B[:, None], (prompt_lens_B + t)[:, None], jnp.ones((B, 1), jnp.int32),
                                cache=cache)
      return t + 1, cache, logits_B1V[:, 0], done_B, out_tokens, out_logp, key

    def cond(carry):
      t, _, _, done_B, *_ = carry
      return (t < T) & ~jnp.all(done_B)

    init = (jnp.int32(0), cache, last_logits_BV, jnp.zeros((B,), bool), jnp.full((B, T), self.pad_id, jnp.int32),
            jnp.zeros((B, T), jnp.float32), rng)
    _, _, _, done_B, out_tokens, out_logp, _ = jax.lax.while_loop(cond, body, init)
    is_stop_BT = jnp.isin(out_tokens, stop_ids)
    first_stop_B = jnp.argmax(is_stop_BT, axis=-1)
    lengths_B = jnp.where(done_B, first_stop_B + 1, T).astype(jnp.int32)
    return out_tokens, out_logp, lengths_B, done_B


def for_model(cfg: ModelConfig, tokenizer, *, mesh: jax.sharding.Mesh | None = None, rules=sharding.DEFAULT_RULES,
              batch_multiple: int | None = None, **buckets) -> Sampler:
  """The sampler of a model and its tokenizer: it stops at the tokenizer's end-of-turn ids and pads
  with its pad id, its batch buckets a multiple of `mesh`'s batch axes (`batch_multiple` when a
  caller has fixed it). Every sampler of the package is built here; `buckets` are Sampler's
  length_buckets / batch_buckets."""
  if batch_multiple is None:
    batch_multiple = 1 if mesh is None else sharding.batch_multiple(mesh, rules)
  return Sampler(cfg, stop_ids=tokenizer.stop_ids, pad_id=tokenizer.pad_id, batch_multiple=batch_multiple, mesh=mesh,
                 rules=rules, **buckets)
