"""Llama-family building blocks: RMSNorm, rotary embeddings, GQA attention, SwiGLU MLP.

Parameters carry `logical_axes` metadata; `sharding.state_shardings` turns it into mesh
shardings. Kernels keep heads as their own dimension ([embed, heads, head_dim]) so the
tensor axis can shard heads without reshapes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deliberative.model import attention, sharding
from deliberative.model.attention import causal, same_segment
from deliberative.model.config import ModelConfig, RopeScaling


def _param(rngs: nnx.Rngs, shape, fan_in: int, logical_axes, dtype, scale: float = 1.0) -> nnx.Param:
  std = scale / math.sqrt(fan_in)
  value = std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32)
  return nnx.Param(value.astype(dtype), logical_axes=tuple(logical_axes))


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, eps: float, param_dtype):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=('embed',))

  def __call__(self, x):
    # Normalise in float32 (as the reference implementations do), then return to x's dtype.
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> jnp.ndarray:
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if scaling is None:
    return inv_freq
  # Llama 3: long wavelengths are slowed by `factor`, short ones kept, the band between
  # interpolated smoothly in 1/wavelength.
  old_len = scaling.original_max_position_embeddings
  wavelen = 2 * math.pi / inv_freq
  slow = inv_freq / scaling.factor
  smooth = (old_len / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
  blended = (1 - smooth) * slow + smooth * inv_freq
  long_wave = wavelen > old_len / scaling.low_freq_factor
  short_wave = wavelen < old_len / scaling.high_freq_factor
  return jnp.where(long_wave, slow, jnp.where(short_wave, inv_freq, blended))


def apply_rope(x_BLHD, positions_BL, inv_freq):
  """Rotary embedding in the half-split layout used by Hugging Face Llama/Qwen2 weights."""
  angles_BLF = positions_BL[..., None].astype(jnp.float32) * inv_freq
  cos = jnp.cos(angles_BLF)[:, :, None, :]
  sin = jnp.sin(angles_BLF)[:, :, None, :]
  x = x_BLHD.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BLHD.dtype)


class Attention(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    e, h, k, d, pd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim_, cfg.jnp_param_dtype
    if cfg.fused_projections:  # ModelConfig.fused_projections; layout.fuse_projections fills it
      self.qkv = _param(rngs, (e, k, h // k + 2, d), e, ('embed', 'kv_heads', None, 'kv'), pd)
      if cfg.qkv_bias:
        self.qkv_bias = nnx.Param(jnp.zeros((k, h // k + 2, d), pd), logical_axes=('kv_heads', None, 'kv'))
    else:
      self.q = _param(rngs, (e, h, d), e, ('embed', 'heads', 'kv'), pd)
      self.k = _param(rngs, (e, k, d), e, ('embed', 'kv_heads', 'kv'), pd)
      self.v = _param(rngs, (e, k, d), e, ('embed', 'kv_heads', 'kv'), pd)
      if cfg.qkv_bias:
        self.q_bias = nnx.Param(jnp.zeros((h, d), pd), logical_axes=('heads', 'kv'))
        self.k_bias = nnx.Param(jnp.zeros((k, d), pd), logical_axes=('kv_heads', 'kv'))
        self.v_bias = nnx.Param(jnp.zeros((k, d), pd), logical_axes=('kv_heads', 'kv'))
    self.o = _param(rngs, (h, d, e), h * d, ('heads', 'kv', 'embed'), pd, scale=1 / math.sqrt(2 * cfg.n_layers))

  def _project(self, x_BLE, kernel, bias_name):
    dt = self.cfg.jnp_dtype
    y = jnp.einsum('ble,ehd->blhd', x_BLE, kernel[...].astype(dt))
    if self.cfg.qkv_bias:
      y = y + getattr(self, bias_name)[...].astype(dt)
    return y

  def _queries_keys_values(self, x_BLE, positions_BL, inv_freq):
    """(queries [B, L, H, D], keys [B, L, K, D], values [B, L, K, D]), rotary embedding applied."""
    cfg = self.cfg
    if not cfg.fused_projections:
      return (apply_rope(self._project(x_BLE, self.q, 'q_bias'), positions_BL, inv_freq),
              apply_rope(self._project(x_BLE, self.k, 'k_bias'), positions_BL, inv_freq),
              self._project(x_BLE, self.v, 'v_bias'))
    dt, (B, L), K, D = cfg.jnp_dtype, x_BLE.shape[:2], cfg.n_kv_heads, cfg.head_dim_
    G = cfg.n_heads // K
    y_BLKJD = jnp.einsum('ble,ekjd->blkjd', x_BLE, self.qkv[...].astype(dt))  # J = G queries, key, value
    if cfg.qkv_bias:
      y_BLKJD = y_BLKJD + self.qkv_bias[...].astype(dt)
    # One rotary pass over each key head's queries and key together (they share positions).
    qk_BLKJD = apply_rope(y_BLKJD[:, :, :, :G + 1].reshape(B, L, K * (G + 1), D), positions_BL,
                          inv_freq).reshape(B, L, K, G + 1, D)
    return qk_BLKJD[:, :, :, :G].reshape(B, L, K * G, D), qk_BLKJD[:, :, :, G], y_BLKJD[:, :, :, G + 1]

  def __call__(self, x_BLE, positions_BL, segment_ids_BL, inv_freq, layer_cache=None, cache_index=None,
               cache_segment_ids_BS=None):
    cfg = self.cfg
    q_BLHD, k_BLKD, v_BLKD = self._queries_keys_values(x_BLE, positions_BL, inv_freq)
    q_BLHD = sharding.constrain(q_BLHD, ('batch', 'length', 'heads', 'kv'))

    B, L = x_BLE.shape[:2]
    dt = cfg.jnp_dtype
    q_BLKGD = q_BLHD.reshape(B, L, cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.head_dim_)
    if layer_cache is None and cfg.attention in ('chunked', 'splash'):  # the long-sequence paths: training, scoring
      attend = attention.chunked if cfg.attention == 'chunked' else attention.splash
      out_BLKGD = attend(q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL, cfg.attention_block)
      out_BLHD = out_BLKGD.reshape(B, L, cfg.n_heads, cfg.head_dim_).astype(dt)
      return sharding.constrain(self._project_out(out_BLHD), ('batch', 'length', 'embed')), None
    new_mask_BLL = causal(jnp.arange(L), jnp.arange(L))[None] & same_segment(segment_ids_BL, segment_ids_BL)
    if layer_cache is None:  # attend within the given tokens: causal, per packed segment
      blocks = [(k_BLKD, v_BLKD, 'bskd', new_mask_BLL)]
      new_cache = None
    else:
      # The new keys go to slots [cache_index, cache_index + L) of the cache ([B, kv_heads, slot,
      # head_dim], transformer.init_cache).
      def write(cached_BKSD, new_BLKD):
        new_BKLD = jnp.swapaxes(new_BLKD, 1, 2).astype(cached_BKSD.dtype)
        return jax.lax.dynamic_update_slice_in_dim(cached_BKSD, new_BKLD, cache_index, axis=2)
      new_cache = {'k': write(layer_cache['k'], k_BLKD), 'v': write(layer_cache['v'], v_BLKD)}
      if cfg.attention == 'dot_product':  # the updated cache, in jax.nn.dot_product_attention's [B, S, K, D]
        slots_S = jnp.arange(layer_cache['k'].shape[2])
        mask_BLS = (slots_S[None, :] <= cache_index + jnp.arange(L)[:, None])[None] & same_segment(
            segment_ids_BL, cache_segment_ids_BS)
        blocks = [(jnp.swapaxes(new_cache['k'], 1, 2), jnp.swapaxes(new_cache['v'], 1, 2), 'bskd', mask_BLS)]
      else:
        # Two blocks: the cache as it was (its slots before cache_index) and the new keys. The
        # updated cache then has one reader, the returned cache, and is written in place; read
        # back for attention, XLA:CPU copied (and transposed) every layer's cache at every token.
        cached_BLS = (jnp.arange(layer_cache['k'].shape[2]) < cache_index)[None, None, :] & same_segment(
            segment_ids_BL, cache_segment_ids_BS)
        blocks = [(layer_cache['k'], layer_cache['v'], 'bksd', cached_BLS), (k_BLKD, v_BLKD, 'bskd', new_mask_BLL)]

    if cfg.attention == 'dot_product':
      keys, values, _, mask_BLS = blocks[0]
      out_BLHD = jax.nn.dot_product_attention(q_BLHD, keys.astype(q_BLHD.dtype), values.astype(q_BLHD.dtype),
                                              mask=mask_BLS[:, None], scale=1 / math.sqrt(cfg.head_dim_))
      return sharding.constrain(self._project_out(out_BLHD.astype(dt)), ('batch', 'length', 'embed')), new_cache
    # One softmax over every block's keys: their scores side by side on the key axis.
    scores = [jnp.einsum(f'blkgd,{kv}->bkgls', q_BLKGD, keys.astype(q_BLKGD.dtype), preferred_element_type=jnp.float32)
              for keys, _, kv, _ in blocks]
    scores_BKGLS = jnp.concatenate(scores, axis=-1) / math.sqrt(cfg.head_dim_)
    mask_BLS = jnp.concatenate([mask for *_, mask in blocks], axis=-1)
    scores_BKGLS = jnp.where(mask_BLS[:, None, None], scores_BKGLS, attention.MASKED)
    probs_BKGLS = jax.nn.softmax(scores_BKGLS, axis=-1).astype(dt)
    splits = np.cumsum([s.shape[-1] for s in scores])[:-1]
    out_BKGLD = sum(jnp.einsum(f'bkgls,{kv}->bkgld', probs, values.astype(dt))
                    for probs, (_, values, kv, _) in zip(jnp.split(probs_BKGLS, splits, axis=-1), blocks))
    out_BLHD = jnp.moveaxis(out_BKGLD, 3, 1).reshape(B, L, cfg.n_heads, cfg.head_dim_)
    return sharding.constrain(self._project_out(out_BLHD), ('batch', 'length', 'embed')), new_cache

  def _project_out(self, out_BLHD):
    # One matmul over the merged (heads, head_dim) axis, in the kernel's own order: as an einsum
    # contracting h and d, XLA:CPU transposed both operands to (d, h) order at every call.
    B, L, H, D = out_BLHD.shape
    return out_BLHD.reshape(B, L, H * D) @ self.o[...].astype(self.cfg.jnp_dtype).reshape(H * D, -1)


class MLP(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    e, f, pd = cfg.d_model, cfg.ffn_dim, cfg.jnp_param_dtype
    if cfg.fused_projections:  # [embed, (gate, up), ffn]: ModelConfig.fused_projections
      self.gate_up = _param(rngs, (e, 2, f), e, ('embed', None, 'mlp'), pd)
    else:
      self.gate = _param(rngs, (e, f), e, ('embed', 'mlp'), pd)
      self.up = _param(rngs, (e, f), e, ('embed', 'mlp'), pd)
    self.down = _param(rngs, (f, e), f, ('mlp', 'embed'), pd, scale=1 / math.sqrt(2 * cfg.n_layers))

  def __call__(self, x_BLE):
    dt = self.cfg.jnp_dtype
    if self.cfg.fused_projections:
      both_BLTF = jnp.einsum('ble,etf->bltf', x_BLE, self.gate_up[...].astype(dt))
      gate_BLF, up_BLF = both_BLTF[:, :, 0], both_BLTF[:, :, 1]
    else:
      gate_BLF = x_BLE @ self.gate[...].astype(dt)
      up_BLF = x_BLE @ self.up[...].astype(dt)
    hidden_BLF = sharding.constrain(jax.nn.silu(gate_BLF) * up_BLF, ('batch', 'length', 'mlp'))
    return hidden_BLF @ self.down[...].astype(dt)


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.jnp_param_dtype)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.jnp_param_dtype)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x_BLE, positions_BL, segment_ids_BL, inv_freq, layer_cache=None, cache_index=None,
               cache_segment_ids_BS=None):
    attn_out, new_cache = self.attn(self.attn_norm(x_BLE), positions_BL, segment_ids_BL, inv_freq,
                                    layer_cache, cache_index, cache_segment_ids_BS)
    x_BLE = x_BLE + attn_out
    x_BLE = x_BLE + self.mlp(self.mlp_norm(x_BLE))
    return sharding.constrain(x_BLE, ('batch', 'length', 'embed')), new_cache
