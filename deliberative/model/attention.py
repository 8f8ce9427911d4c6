"""Attention over packed rows without a cache: the masks every path shares, a blockwise path in plain
JAX and the TPU splash kernel.

A row may pack several sequences; `segment_ids` [B, L] name them (0 = padding). A query attends to
keys at or before it in its own segment, and a padding key is attended by nothing. The einsum path
in layers.Attention builds the whole [B, L, L] mask from `causal` and `same_segment`; the paths here
build it one block at a time from the same two functions, so no [L, L] array is ever held:

- `chunked`: flash-style attention (an online softmax over key blocks, queries a block at a time)
  with its own backward pass, which recomputes each block's scores from the saved log-sum-exp
  instead of keeping them: autodiff through the loops would save every block's probabilities,
  [L, L] again. Runs anywhere; causal blocks above the diagonal are skipped.
- `splash`: `jax.experimental.pallas.ops.tpu.splash_attention`, TPU only (or interpreted).

Shapes: queries [B, L, K, G, D] (K key/value heads, G query heads per key head: GQA), keys and
values [B, L, K, D].
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from deliberative.model import sharding

MASKED = -1e30  # finite, so a fully masked (padding) row stays NaN-free


def causal(query_index_L, key_index_S):
  """[L, S]: the key at or before the query (indices are positions in the row)."""
  return key_index_S[None, :] <= query_index_L[:, None]


def same_segment(query_seg_BL, key_seg_BS):
  """[B, L, S]: query and key in one segment, the key not padding (segment 0)."""
  return (query_seg_BL[:, :, None] == key_seg_BS[:, None, :]) & (key_seg_BS[:, None, :] != 0)


# ---------------------------------------------------------------------------------------------
# chunked: blockwise attention in plain JAX


def chunked(q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL, block: int):
  """Causal attention within segments, `block` queries by `block` keys at a time; [B, L, K, G, D]
  in q's dtype. Rows are padded to a multiple of `block` with segment 0 (attending to nothing,
  output 0), so any length works; a padding query's output is 0 here (the einsum path's is the
  mean of the values), and no real position ever reads it."""
  L = q_BLKGD.shape[1]
  block = min(block, L)
  padded = _pad_rows(-(-L // block) * block, q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL)
  return _flash(*padded, block)[:, :L]


def _pad_rows(length, *xs_BL):
  """Each array's length axis (1) zero-padded to `length`: zero segment ids mark the new positions as
  padding, which no real query attends to."""
  return [jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2)) for x in xs_BL]


def _take(x, i, block):
  """Block i of x's length axis (axis 1)."""
  return jax.lax.dynamic_slice_in_dim(x, i * block, block, axis=1)


def _block_scores(q_BCKGD, k_BCKD, seg, i, j, block):
  """float32 scores of query block i against key block j, scaled, and where they count [B, 1, 1, C, C]."""
  scale = 1 / math.sqrt(q_BCKGD.shape[-1])
  s_BKGCC = jnp.einsum('bckgd,bskd->bkgcs', q_BCKGD, k_BCKD, preferred_element_type=jnp.float32) * scale
  index_C = jnp.arange(block)
  mask_BCC = causal(i * block + index_C, j * block + index_C)[None] & same_segment(_take(seg, i, block),
                                                                                   _take(seg, j, block))
  return s_BKGCC, mask_BCC[:, None, None]


def _forward(q, k, v, seg, block):
  """(out [B, L, K, G, D] in q's dtype, log-sum-exp [B, K, G, L] float32; 0 for a row with no key)."""
  B, L, K, G, D = q.shape

  def query_block(i):
    q_i = _take(q, i, block)

    def key_block(j, carry):
      m, l, acc = carry
      s, mask = _block_scores(q_i, _take(k, j, block), seg, i, j, block)
      m_new = jnp.maximum(m, jnp.max(jnp.where(mask, s, MASKED), axis=-1))
      p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
      rescale = jnp.exp(m - m_new)
      pv = jnp.einsum('bkgcs,bskd->bkgcd', p.astype(v.dtype), _take(v, j, block),
                      preferred_element_type=jnp.float32)
      return m_new, l * rescale + jnp.sum(p, axis=-1), acc * rescale[..., None] + pv

    init = (jnp.full((B, K, G, block), MASKED, jnp.float32), jnp.zeros((B, K, G, block), jnp.float32),
            jnp.zeros((B, K, G, block, D), jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, i + 1, key_block, init)  # causal: key blocks after i see nothing
    empty = l == 0
    out = acc / jnp.where(empty, 1.0, l)[..., None]
    return out.astype(q.dtype), jnp.where(empty, 0.0, m + jnp.log(jnp.where(empty, 1.0, l)))

  out_nBKGCD, lse_nBKGC = jax.lax.map(query_block, jnp.arange(L // block))
  out_BLKGD = jnp.transpose(out_nBKGCD, (1, 0, 4, 2, 3, 5)).reshape(B, L, K, G, D)
  lse_BKGL = jnp.transpose(lse_nBKGC, (1, 2, 3, 0, 4)).reshape(B, K, G, L)
  return out_BLKGD, lse_BKGL


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, seg, block):
  return _forward(q, k, v, seg, block)[0]


def _flash_fwd(q, k, v, seg, block):
  out, lse = _forward(q, k, v, seg, block)
  return out, (q, k, v, seg, out, lse)


def _flash_bwd(block, residuals, d_out):
  """Per key block j, the query blocks i >= j: probabilities recomputed from the log-sum-exp, then
  dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K, dK = dS^T Q (scaled)."""
  q, k, v, seg, out, lse = residuals
  B, L, K, G, D = q.shape
  n = L // block
  scale = 1 / math.sqrt(D)
  # rowsum(dO * O): the softmax's Jacobian term, one number per query.
  delta_BKGL = jnp.einsum('blkgd,blkgd->bkgl', d_out.astype(jnp.float32), out.astype(jnp.float32))

  def key_block(dq, j):
    k_j, v_j = _take(k, j, block), _take(v, j, block)

    def query_block(i, carry):
      dq, dk, dv = carry
      q_i, do_i = _take(q, i, block), _take(d_out, i, block)
      s, mask = _block_scores(q_i, k_j, seg, i, j, block)
      lse_i = jax.lax.dynamic_slice_in_dim(lse, i * block, block, axis=3)
      delta_i = jax.lax.dynamic_slice_in_dim(delta_BKGL, i * block, block, axis=3)
      p = jnp.where(mask, jnp.exp(s - lse_i[..., None]), 0.0)
      dv = dv + jnp.einsum('bkgcs,bckgd->bskd', p.astype(do_i.dtype), do_i, preferred_element_type=jnp.float32)
      dp = jnp.einsum('bckgd,bskd->bkgcs', do_i, v_j, preferred_element_type=jnp.float32)
      ds = (p * (dp - delta_i[..., None]) * scale).astype(q.dtype)
      dq_i = jnp.einsum('bkgcs,bskd->bckgd', ds, k_j, preferred_element_type=jnp.float32)
      dq = jax.lax.dynamic_update_slice_in_dim(dq, _take(dq, i, block) + dq_i, i * block, axis=1)
      dk = dk + jnp.einsum('bkgcs,bckgd->bskd', ds, q_i, preferred_element_type=jnp.float32)
      return dq, dk, dv

    zeros = jnp.zeros((B, block, K, D), jnp.float32)
    dq, dk, dv = jax.lax.fori_loop(j, n, query_block, (dq, zeros, zeros))  # causal: queries before j see none
    return dq, (dk, dv)

  dq, (dk_nBCKD, dv_nBCKD) = jax.lax.scan(key_block, jnp.zeros(q.shape, jnp.float32), jnp.arange(n))
  unblock = lambda x: jnp.moveaxis(x, 0, 1).reshape(B, L, K, D)
  return dq.astype(q.dtype), unblock(dk_nBCKD).astype(k.dtype), unblock(dv_nBCKD).astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ---------------------------------------------------------------------------------------------
# splash: the TPU Pallas kernel


def splash(q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL, block: int, *, interpret: bool = False):
  """Causal attention within segments by `jax.experimental.pallas.ops.tpu.splash_attention`;
  [B, L, K, G, D] in q's dtype. The kernel is per example and per key head: its MQA form takes a
  key head's G query heads against that head's keys, so GQA never repeats keys or values. Under
  `sharding.use_mesh` it runs per shard (shard_map): XLA cannot split a Pallas call itself and would
  gather whole arrays onto every chip. Splash's segment rule is equality alone, so padding queries
  (segment 0) attend to earlier padding keys; real queries never see padding either way.
  `interpret=True` runs the kernel's Pallas interpreter (any backend; slow, for tests)."""
  from jax.experimental.pallas.ops.tpu import splash_attention as sa
  platform = sharding.current_platform()
  if platform != 'tpu' and not interpret:
    raise ValueError(f"model.attention='splash' is a TPU kernel and this program is for {platform}: use "
                     "model.attention='chunked' (the same blockwise attention in plain JAX)")
  if sharding.current_axes('length'):  # each shard would attend within its own piece of the row
    raise ValueError(f"model.attention='splash' needs whole rows on each chip; mesh.rules split 'length' over "
                     f'{sharding.current_axes("length")}')
  L, G = q_BLKGD.shape[1], q_BLKGD.shape[3]
  # The kernel tiles the sequence by multiples of 128 that divide it: rows are padded to a multiple of
  # 128 with segment 0, which no real query attends to.
  padded = -(-L // _SPLASH_LANES) * _SPLASH_LANES
  q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL = _pad_rows(padded, q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL)
  block = splash_block(padded, block)
  sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  kernel = sa.make_splash_mqa_single_device(sa.MultiHeadMask([sa.CausalMask((padded, padded))] * G),
                                            block_sizes=sizes, interpret=interpret)

  def per_shard(q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL):
    scale = 1 / math.sqrt(q_BLKGD.shape[-1])  # splash takes queries already scaled
    q_BKGLD = jnp.transpose(q_BLKGD * jnp.asarray(scale, q_BLKGD.dtype), (0, 2, 3, 1, 4))
    k_BKLD, v_BKLD = jnp.swapaxes(k_BLKD, 1, 2), jnp.swapaxes(v_BLKD, 1, 2)

    def one_row(q_KGLD, k_KLD, v_KLD, seg_L):
      ids = sa.SegmentIds(q=seg_L, kv=seg_L)
      return jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=ids))(q_KGLD, k_KLD, v_KLD)
    out_BKGLD = jax.vmap(one_row)(q_BKGLD, k_BKLD, v_BKLD, segment_ids_BL)
    return jnp.transpose(out_BKGLD, (0, 3, 1, 2, 4)).astype(q_BLKGD.dtype)

  qo_axes = ('batch', 'length', 'kv_heads', None, 'kv')
  kv_axes = ('batch', 'length', 'kv_heads', 'kv')
  return sharding.per_shard(per_shard, (qo_axes, kv_axes, kv_axes, ('batch', 'length')), qo_axes)(
      q_BLKGD, k_BLKD, v_BLKD, segment_ids_BL)[:, :L]


_SPLASH_LANES = 128  # splash's key blocks are a multiple of the TPU's 128 lanes


def splash_block(length: int, block: int) -> int:
  """The largest multiple of 128 that divides `length` (itself one) and is at most `block`; 128 at least."""
  for candidate in range(min(block, length) // _SPLASH_LANES * _SPLASH_LANES, 0, -_SPLASH_LANES):
    if length % candidate == 0:
      return candidate
  return _SPLASH_LANES
