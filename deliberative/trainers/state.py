"""Train state born sharded, and where it starts from: resume -> init_from -> scratch.

The state is a plain dict pytree: `params` (pure dict), `opt_state` (optax), `step`
(int32) and `rng` (uint32 key data), every leaf with an explicit NamedSharding.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deliberative import checkpoints
from deliberative.model import hf, sharding
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import build
from deliberative.trainers import optim

# Fields of `config.model` that stay the run's choice when the architecture comes from init_from.
RUN_FIELDS = ('param_dtype', 'dtype', 'remat')


@dataclasses.dataclass
class Setup:
  mesh: Mesh
  rules: Any
  model_cfg: ModelConfig
  graphdef: Any
  tx: optax.GradientTransformation
  lr: optax.Schedule
  abstract_state: dict  # ShapeDtypeStructs carrying the shardings
  state_shardings: dict

  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, sharding.logical_to_spec(('batch', 'length'), self.rules))

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def bind(self, params) -> nnx.Module:
    return nnx.merge(self.graphdef, params)


def architecture(model_section, src: str, field: str = 'init_from') -> ModelConfig:
  """A checkpoint's (Orbax or Hugging Face) model shape, with the run fields of `model_section`."""
  run = {k: model_section[k] for k in RUN_FIELDS}
  if hf.is_hf_dir(src):
    return hf.read_config(src, **run)
  ckpt = checkpoints.resolve_dir(src)
  if checkpoints.latest_step(ckpt) is None:
    raise FileNotFoundError(f'config.{field}={src!r}: neither a Hugging Face directory (config.json + '
                            f'*.safetensors) nor an Orbax checkpoint')
  base = checkpoints.model_config_from_meta(checkpoints.load_meta(ckpt)).to_dict()
  return ModelConfig.from_dict({**base, **run})


def model_config_for(config) -> tuple[ModelConfig, str | None]:
  """The architecture: from `init_from` when set (its files fix the shape), else `config.model`."""
  if not config.init_from:
    return ModelConfig.from_dict(config.model), None
  return architecture(config.model, config.init_from), config.init_from


def make_setup(config, model_cfg: ModelConfig, total_steps: int) -> Setup:
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.normalize_rules(config.mesh.rules)
  sharding.check_model_fits_mesh(model_cfg, mesh, rules)
  tx, lr = optim.make(config.optim, total_steps)
  graphdef, abstract_model_state = sharding.abstract_model(build(model_cfg), mesh, rules)
  abstract_params = abstract_model_state.to_pure_dict()
  param_shardings = jax.tree.map(lambda x: x.sharding, abstract_params)
  replicated = NamedSharding(mesh, P())
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_shardings = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_shardings,
                                        transform_non_params=lambda _: replicated)
  state_shardings = {'params': param_shardings, 'opt_state': opt_shardings, 'step': replicated, 'rng': replicated}
  shapes = {'params': abstract_params, 'opt_state': abstract_opt,
            'step': jax.ShapeDtypeStruct((), jnp.int32), 'rng': jax.ShapeDtypeStruct((2,), jnp.uint32)}
  abstract_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                                state_shardings)
  return Setup(mesh, rules, model_cfg, graphdef, tx, lr, abstract_state, state_shardings)


def init_state(setup: Setup, seed: int, params=None) -> dict:
  """Fresh optimizer state around `params` (or freshly initialised ones), built sharded."""
  def make(params):
    if params is None:
      params = nnx.state(build(setup.model_cfg, seed)(), nnx.Param).to_pure_dict()
    return {'params': params, 'opt_state': setup.tx.init(params), 'step': jnp.zeros((), jnp.int32),
            'rng': jax.random.key_data(jax.random.key(seed))}
  if params is None:
    return jax.jit(lambda: make(None), out_shardings=setup.state_shardings)()
  return jax.jit(make, out_shardings=setup.state_shardings, donate_argnums=0)(params)


def load_params(src: str, cfg: ModelConfig, abstract: dict) -> dict:
  """Parameters from a Hugging Face directory or an Orbax checkpoint, laid out as `abstract` says."""
  if hf.is_hf_dir(src):
    return hf.load_params(src, cfg, abstract)
  return checkpoints.restore_params(checkpoints.resolve_dir(src), abstract)


def load_init_params(setup: Setup, src: str) -> dict:
  return load_params(src, setup.model_cfg, setup.abstract_state['params'])


def start(config, setup: Setup, checkpointer, init_src: str | None,
          log: Callable[[str], None]) -> tuple[dict, dict | None, str]:
  """Returns (state, saved data-iterator state or None, a sentence saying where it started)."""
  restored = checkpointer.restore_newest_readable(setup.abstract_state, log)
  if restored is not None:
    state, data_state, step = restored
    return state, data_state, f'resumed from {checkpointer.directory} at step {step}'
  if init_src:
    params = load_init_params(setup, init_src)
    state = init_state(setup, config.seed, params)
    return state, None, f'initialised from {os.path.abspath(init_src)} (fresh optimizer, step 0)'
  return init_state(setup, config.seed), None, 'started from scratch (random init, step 0)'
