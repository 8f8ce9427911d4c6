"""The two layouts of the transformer blocks' parameters, and the one place that converts them.

Unrolled (`model.scan_layers=False`): `tree['blocks']` is {0: block, 1: block, ...}, each leaf
one layer's array. Stacked (`scan_layers=True`): `tree['blocks']` is one block whose every leaf
carries all layers on a leading axis [n_layers, ...]. Checkpoints, HF/GGUF import and export
meet both; everything else sees only the layout of the model it runs.

The functions take pure-dict trees (`nnx.State.to_pure_dict()`) of arrays, or of
ShapeDtypeStructs (abstract trees, whose shardings are converted too), and subtrees of any
pytree (an optimizer state holds params-shaped dicts) via `convert_all`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

BLOCKS = 'blocks'


def has_blocks(tree) -> bool:
  return isinstance(tree, Mapping) and BLOCKS in tree


def is_stacked(tree: Mapping) -> bool:
  """Whether a params-shaped tree holds its blocks stacked (no integer layer keys under 'blocks')."""
  blocks = tree[BLOCKS]
  return not any(isinstance(k, int) or (isinstance(k, str) and k.isdigit()) for k in blocks)


def n_layers_of(tree: Mapping) -> int:
  """Layer count of either layout."""
  blocks = tree[BLOCKS]
  if is_stacked(tree):
    return jax.tree.leaves(blocks)[0].shape[0]
  return len(blocks)


def _layer_keys(blocks: Mapping) -> list:
  # Orbax metadata and JSON give string keys '0', '1', ...; pure dicts give ints.
  return sorted(blocks, key=int)


def _stack_leaf(*layers):
  first = layers[0]
  if isinstance(first, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(layers), *first.shape), first.dtype, sharding=_stacked_sharding(first.sharding))
  if isinstance(first, np.ndarray):
    return np.stack(layers)
  return jnp.stack(layers)


def _unstack_leaf(x, i: int):
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=_layer_sharding(x.sharding))
  return x[i]


def _stacked_sharding(s):
  """A layer's NamedSharding with the (replicated) layer axis in front: P(None, *spec)."""
  if isinstance(s, NamedSharding):
    return NamedSharding(s.mesh, P(None, *s.spec))
  return s


def _layer_sharding(s):
  if isinstance(s, NamedSharding):
    spec = tuple(s.spec)
    if spec and spec[0] is not None:
      raise ValueError(f'stacked parameter sharded along its layer axis ({s.spec}); expected it replicated')
    return NamedSharding(s.mesh, P(*spec[1:]))
  return s


def stack_layers(tree: Mapping) -> dict:
  """Unrolled -> stacked (a stacked tree is returned as is)."""
  if is_stacked(tree):
    return dict(tree)
  blocks = tree[BLOCKS]
  layers = [blocks[k] for k in _layer_keys(blocks)]
  return {**tree, BLOCKS: jax.tree.map(_stack_leaf, *layers)}


def unstack_layers(tree: Mapping, n_layers: int | None = None) -> dict:
  """Stacked -> unrolled with integer layer keys (an unrolled tree is returned as is)."""
  if not is_stacked(tree):
    return dict(tree)
  blocks = tree[BLOCKS]
  n = n_layers_of(tree)
  if n_layers is not None and n != n_layers:
    raise ValueError(f'stacked blocks hold {n} layers, expected {n_layers}')
  return {**tree, BLOCKS: {i: jax.tree.map(lambda x, i=i: _unstack_leaf(x, i), blocks) for i in range(n)}}


def to_layout(tree: Mapping, stacked: bool) -> dict:
  return stack_layers(tree) if stacked else unstack_layers(tree)


def convert_all(tree: Any, stacked: bool) -> Any:
  """Every params-shaped dict inside any pytree (params, an optax state's mu/nu) in the given layout."""
  return jax.tree.map(lambda t: to_layout(t, stacked) if has_blocks(t) else t, tree, is_leaf=has_blocks)


def layer_path(path: tuple) -> tuple[tuple, int | None]:
  """('blocks', i, *rest) -> (('blocks', *rest), i): where one layer's tensor sits in the stacked layout."""
  if len(path) > 1 and path[0] == BLOCKS and isinstance(path[1], int):
    return (BLOCKS, *path[2:]), path[1]
  return path, None


def _layouts(tree: Any) -> set[bool]:
  found: list[bool] = []
  jax.tree.map(lambda t: found.append(is_stacked(t)) if has_blocks(t) else None, tree, is_leaf=has_blocks)
  return set(found)


def saved_layout_of(abstract: Any, saved_params: Mapping) -> Any:
  """`abstract` (ShapeDtypeStructs) rewritten into the layout of `saved_params` (a checkpoint's
  params tree, e.g. Orbax metadata): what to restore into before `relayout`."""
  return convert_all(abstract, is_stacked(saved_params))


def relayout(tree: Any, abstract: Any) -> Any:
  """`tree` converted to the layout (and shardings) of `abstract`; returned as is when they match.

  One jitted conversion, so each stacked array is assembled directly in its target sharding."""
  target = _layouts(abstract)
  if not target or _layouts(tree) == target:
    return tree
  if len(target) > 1:
    raise ValueError('target tree mixes stacked and unrolled blocks')
  stacked = target.pop()
  shardings = [getattr(a, 'sharding', None) for a in jax.tree.leaves(abstract)]
  convert = lambda t: convert_all(t, stacked)  # noqa: E731
  if all(s is not None for s in shardings):
    return jax.jit(convert, out_shardings=jax.tree.map(lambda a: a.sharding, abstract))(tree)
  return jax.jit(convert)(tree)


# ---------------------------------------------------------------------------------------------
# Fused projections (ModelConfig.fused_projections): the sampler's decode-time layout.

def fuse_projections(tree: Mapping, n_heads: int, n_kv_heads: int) -> dict:
  """Separate q/k/v and gate/up kernels -> `qkv` [..., E, K, G + 2, D] (each key head's G query heads,
  then its key and value) and `gate_up` [..., E, 2, F], in either layer layout (a stacked tree's
  leading layer axis rides along). Arrays only (`nnx.State.to_pure_dict()`); a tree already fused
  is returned as is."""
  blocks = tree[BLOCKS]
  if is_stacked(tree):
    return {**tree, BLOCKS: _fuse_block(blocks, n_heads, n_kv_heads)}
  return {**tree, BLOCKS: {i: _fuse_block(blocks[i], n_heads, n_kv_heads) for i in _layer_keys(blocks)}}


def _fuse_block(block: Mapping, n_heads: int, n_kv_heads: int) -> dict:
  attn, mlp = dict(block['attn']), dict(block['mlp'])
  if 'qkv' in attn:
    return dict(block)
  K, G = n_kv_heads, n_heads // n_kv_heads

  def grouped(q, k, v):  # [..., K*G, D], [..., K, D], [..., K, D] -> [..., K, G + 2, D]
    q = q.reshape(*q.shape[:-2], K, G, q.shape[-1])
    return jnp.concatenate([q, k[..., None, :], v[..., None, :]], axis=-2)

  attn['qkv'] = grouped(attn.pop('q'), attn.pop('k'), attn.pop('v'))
  if 'q_bias' in attn:
    attn['qkv_bias'] = grouped(attn.pop('q_bias'), attn.pop('k_bias'), attn.pop('v_bias'))
  mlp['gate_up'] = jnp.stack([mlp.pop('gate'), mlp.pop('up')], axis=-2)
  return {**block, 'attn': attn, 'mlp': mlp}
