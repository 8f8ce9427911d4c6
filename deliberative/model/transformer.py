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


# Cached keys and values are [batch, kv_heads, slot, head_dim]: the layout the attention
# products read as it is (layers.Attention), so a decode step never copies the cache.
CACHE_SLOT_AXIS = 2


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> dict:
  """An empty KV cache: per layer keys and values [B, kv_heads, max_len, head_dim], plus each
  slot's segment id [B, max_len] (0 = empty)."""
  dtype = dtype or cfg.jnp_dtype
  shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim_)
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
    blocks = [Block(cfg, rngs) for _ in range(cfg.n_layers)]
    self.blocks = stacked_block(blocks) if cfg.scan_layers else nnx.List(blocks)
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

  def hidden(self, tokens_BL, positions_BL=None, segment_ids_BL=None, cache=None, frozen_layers: int = 0):
    """(final normed hidden states [B, L, E], updated cache or None): everything before the
    head, so a loss can take the logits a chunk at a time (model/losses.py).

    `frozen_layers` (training, `optim.train_layers`): no gradient reaches the embedding lookup or
    the first that many blocks, so a backward pass computes the top blocks' and the head's only."""
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
    frozen = frozen_layers if cache is None else 0  # decoding takes no gradient anyway
    if frozen:
      x_BLE = jax.lax.stop_gradient(x_BLE)
    if cfg.scan_layers:
      x_BLE, new_layers = self._scanned(x_BLE, positions_BL, segment_ids_BL, inv_freq, cache, offset, cache_seg_BS,
                                        frozen)
    else:
      x_BLE, new_layers = self._unrolled(x_BLE, positions_BL, segment_ids_BL, inv_freq, cache, offset, cache_seg_BS,
                                         frozen)

    x_BLE = self.final_norm(x_BLE)
    if cache is None:
      return x_BLE, None
    return x_BLE, {'layers': new_layers, 'segment_ids': cache_seg_BS, 'index': offset + L}

  def _unrolled(self, x_BLE, positions_BL, segment_ids_BL, inv_freq, cache, offset, cache_seg_BS, frozen=0):
    cfg = self.cfg
    new_layers = []
    for i, block in enumerate(self.blocks):
      if frozen and i == frozen:  # straight-line code: XLA drops the frozen blocks' unused backward
        x_BLE = jax.lax.stop_gradient(x_BLE)
      if cache is None and cfg.remat != 'none':
        run = nnx.remat(lambda blk, *a: blk(*a), policy=_REMAT_POLICIES[cfg.remat])
        x_BLE, _ = run(block, x_BLE, positions_BL, segment_ids_BL, inv_freq)
      else:
        layer_cache = None if cache is None else cache['layers'][i]
        x_BLE, new_layer = block(x_BLE, positions_BL, segment_ids_BL, inv_freq, layer_cache, offset, cache_seg_BS)
        new_layers.append(new_layer)
    return x_BLE, new_layers

  def _scanned(self, x_BLE, positions_BL, segment_ids_BL, inv_freq, cache, offset, cache_seg_BS, frozen=0):
    """The stacked block, one layer's slice at a time: a lax.scan without a cache (training);
    with one, a Python loop, so the cache stays the per-layer list prefill and decode share."""
    graphdef, params = nnx.split(self.blocks)
    params = jax.tree.map(lambda v: v.get_value(), params, is_leaf=_is_var)  # plain arrays: scan slices them

    def layer(x_BLE, layer_params, layer_cache=None):
      return nnx.merge(graphdef, layer_params)(x_BLE, positions_BL, segment_ids_BL, inv_freq, layer_cache, offset,
                                               cache_seg_BS)

    if cache is not None:
      new_layers = []
      for i, layer_cache in enumerate(cache['layers']):
        x_BLE, new_layer = layer(x_BLE, jax.tree.map(lambda p: p[i], params), layer_cache)
        new_layers.append(new_layer)
      return x_BLE, new_layers

    def body(x_BLE, layer_params):
      return layer(x_BLE, layer_params)[0], None
    if self.cfg.remat != 'none':  # per layer, as the unrolled path: the scan saves only each layer's input
      body = jax.checkpoint(body, policy=_REMAT_POLICIES[self.cfg.remat], prevent_cse=False)
    if frozen:
      # Two scans. The first sees only constants (its input and slices are stop_gradient'd), so
      # differentiation neither saves its residuals nor runs its backward: a while loop's dead
      # outputs are not reliably pruned by XLA, symbolic zeros are never computed at all.
      bottom = jax.tree.map(lambda p: jax.lax.stop_gradient(p[:frozen]), params)
      x_BLE, _ = jax.lax.scan(body, x_BLE, bottom)
      params = jax.tree.map(lambda p: p[frozen:], params)
    x_BLE, _ = jax.lax.scan(body, x_BLE, params)
    return x_BLE, []


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def stacked_block(blocks: list[Block]) -> Block:
  """One Block whose every parameter stacks the given blocks' on a leading 'layers' axis.

  Built from the unrolled blocks (same RNG draws, in the same order), so a seed gives the same
  weights in either layout; under `jax.eval_shape`/`create_sharded` nothing is materialised."""
  graphdef = nnx.graphdef(blocks[0])
  states = [nnx.state(b) for b in blocks]

  def stack(*vs):
    return vs[0].replace(jnp.stack([v.get_value() for v in vs]), logical_axes=('layers', *vs[0].logical_axes))
  return nnx.merge(graphdef, jax.tree.map(stack, *states, is_leaf=_is_var))


def build(cfg: ModelConfig, seed: int = 0):
  """A zero-argument constructor, for `sharding.create_sharded` and `jax.eval_shape`."""
  return lambda: Transformer(cfg, rngs=nnx.Rngs(params=seed))
