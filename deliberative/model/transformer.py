"""The decoder-only transformer (Llama / Qwen2 family) and its KV cache.

One module serves training, prefill and decode: without a cache it attends within the
given tokens (causal, per packed segment); with a cache it writes the new keys at
`cache['index']` and attends over everything cached so far.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from deliberative.model import sharding
from deliberative.model.config import ModelConfig
from deliberative.model.layers import Block, RMSNorm, rope_inv_freq

_REMAT_POLICIES = {
    'full': None,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> dict:
  """An empty KV cache: per layer keys and values, plus each slot's segment id (0 = empty)."""
  dtype = dtype or cfg.jnp_dtype
  shape = (batch, max_len, cfg.n_kv_heads, cfg.head_dim_)
  return {
      'layers': [{'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)} for _ in range(cfg.n_layers)],
      'segment_ids': jnp.zeros((batch, max_len), jnp.int32),
      'index': jnp.zeros((), jnp.int32),
  }


class Transformer(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    e, v, pd = cfg.d_model, cfg.vocab_size, cfg.jnp_param_dtype
    embed = jax.random.normal(rngs.params(), (v, e), jnp.float32) / jnp.sqrt(e)
    self.embed = nnx.Param(embed.astype(pd), logical_axes=('vocab', 'embed'))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(e, cfg.norm_eps, pd)
    if not cfg.tie_embeddings:
      head = jax.random.truncated_normal(rngs.params(), -2.0, 2.0, (e, v), jnp.float32) / jnp.sqrt(e)
      self.lm_head = nnx.Param(head.astype(pd), logical_axes=('embed', 'vocab'))

  def __call__(self, tokens_BL, positions_BL=None, segment_ids_BL=None, cache=None):
    """Returns (logits_BLV float32, updated cache or None).

    positions default to 0..L-1 (after cache['index'] when decoding); segment_ids default
    to all ones; 0 marks padding, which attends to nothing and is attended by nothing.
    """
    x_BLE, new_cache = self.hidden(tokens_BL, positions_BL, segment_ids_BL, cache)
    return self.logits(x_BLE), new_cache

  def head(self):
    """The output projection [E, V] in the compute dtype. Tied: embed transposed explicitly, so
    both products run in the [E, V] layout of an untied head; XLA's CPU backend computes the
    [V, E] weight gradient about 3x slower (tools/bench_train_step.py --preset smollm2). A
    transpose costs one pass over the table."""
    head_EV = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    return head_EV.astype(self.cfg.jnp_dtype)

  def logits(self, x_BLE):
    """float32 logits of final hidden states (any leading shape [B, L])."""
    logits_BLV = jnp.einsum('ble,ev->blv', x_BLE, self.head(), preferred_element_type=jnp.float32)
    return sharding.constrain(logits_BLV, ('batch', 'length', 'vocab'))

  def hidden(self, tokens_BL, positions_BL=None, segment_ids_BL=None, cache=None):
    """(final normed hidden states [B, L, E], updated cache or None): everything before the
    head, so a loss can take the logits a chunk at a time (model/losses.py)."""
    cfg = self.cfg
    B, L = tokens_BL.shape
    offset = 0 if cache is None else cache['index']
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(offset + jnp.arange(L, dtype=jnp.int32), (B, L))
    if segment_ids_BL is None:
      segment_ids_BL = jnp.ones((B, L), jnp.int32)
    inv_freq = rope_inv_freq(cfg.head_dim_, cfg.rope_theta, cfg.rope_scaling)

    x_BLE = jnp.take(self.embed[...], tokens_BL, axis=0).astype(cfg.jnp_dtype)
    x_BLE = sharding.constrain(x_BLE, ('batch', 'length', 'embed'))

    cache_seg_BS = None
    if cache is not None:
      cache_seg_BS = jax.lax.dynamic_update_slice_in_dim(cache['segment_ids'], segment_ids_BL, offset, axis=1)
    new_layers = []
    for i, block in enumerate(self.blocks):
      layer_cache = None if cache is None else cache['layers'][i]
      if cache is None and cfg.remat != 'none':
        run = nnx.remat(lambda blk, *a: blk(*a), policy=_REMAT_POLICIES[cfg.remat])
        x_BLE, _ = run(block, x_BLE, positions_BL, segment_ids_BL, inv_freq)
      else:
        x_BLE, new_layer = block(x_BLE, positions_BL, segment_ids_BL, inv_freq, layer_cache, offset, cache_seg_BS)
        new_layers.append(new_layer)

    x_BLE = self.final_norm(x_BLE)
    if cache is None:
      return x_BLE, None
    return x_BLE, {'layers': new_layers, 'segment_ids': cache_seg_BS, 'index': offset + L}


def build(cfg: ModelConfig, seed: int = 0):
  """A zero-argument constructor, for `sharding.create_sharded` and `jax.eval_shape`."""
  return lambda: Transformer(cfg, rngs=nnx.Rngs(params=seed))
