"""Growing a model's vocabulary for tokens a tokenizer adds (e.g. `<think>`/`</think>` on a model
whose vocabulary lacks them).

New rows of the input embedding and columns of the output head are the mean of the existing
ones: a new token starts as the "average" token, so its logit starts near the average logit
rather than at a random value that could dominate (or never win) sampling. Built sharded: the
grown parameters take the shardings the grown config's abstract parameters carry.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from deliberative.model import loading, sharding
from deliberative.model.config import ModelConfig


def grown_config(cfg: ModelConfig, new_vocab_size: int) -> ModelConfig:
  if new_vocab_size < cfg.vocab_size:
    raise ValueError(f'cannot shrink the vocabulary from {cfg.vocab_size} to {new_vocab_size} rows')
  return dataclasses.replace(cfg, vocab_size=new_vocab_size)


def padded_vocab_size(needed: int, multiple: int = 1) -> int:
  """The smallest multiple of `multiple` that holds `needed` tokens: a vocabulary sharded over a
  `tensor` axis of 8 cannot grow by 2 rows (the rows past `needed` are never produced by the tokenizer)."""
  return -(-needed // multiple) * multiple


def grow_vocab(params: Mapping, cfg: ModelConfig, new_vocab_size: int, mesh: Mesh | None = None,
               rules=sharding.DEFAULT_RULES) -> tuple[dict, ModelConfig]:
  """(params with `new_vocab_size` embedding rows and head columns, the grown config)."""
  new_cfg = grown_config(cfg, new_vocab_size)
  extra = new_vocab_size - cfg.vocab_size
  abstract = loading.abstract_params(new_cfg, mesh, rules)
  shardings = jax.tree.map(lambda a: a.sharding, abstract) if mesh is not None else None

  def grow(params):
    out = dict(params)
    embed_VE = params['embed']
    mean_E = jnp.mean(embed_VE.astype(jnp.float32), axis=0).astype(embed_VE.dtype)
    out['embed'] = jnp.concatenate([embed_VE, jnp.broadcast_to(mean_E, (extra, embed_VE.shape[1]))], axis=0)
    if 'lm_head' in params:
      head_EV = params['lm_head']
      mean_col_E = jnp.mean(head_EV.astype(jnp.float32), axis=1).astype(head_EV.dtype)
      out['lm_head'] = jnp.concatenate(
          [head_EV, jnp.broadcast_to(mean_col_E[:, None], (head_EV.shape[0], extra))], axis=1)
    return out

  grown = jax.jit(grow, out_shardings=shardings)(dict(params))
  expected = jax.tree.map(lambda a: a.shape, abstract)
  got = jax.tree.map(lambda a: a.shape, grown)
  if expected != got:
    raise AssertionError(f'grown parameter shapes {got} differ from the model\'s {expected}')
  return grown, new_cfg
