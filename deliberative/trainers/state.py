"""Train state born sharded, and where it starts from: resume -> init_from -> scratch.

The state is a plain dict pytree: `params` (pure dict), `opt_state` (optax), `step`
(int32) and `rng` (uint32 key data), every leaf with an explicit NamedSharding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deliberative.common import storage
from deliberative.model import loading, sharding, vocab
from deliberative.weights import source
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import build
from deliberative.trainers import optim

# Fields of `config.model` that stay the run's choice when the architecture comes from init_from.
RUN_FIELDS = ('param_dtype', 'dtype', 'remat', 'attention', 'attention_block', 'loss_chunk', 'scan_layers')


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
  frozen_layers: int = 0  # the bottom blocks `optim.train_layers` leaves untrained (model.hidden's)

  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, sharding.logical_to_spec(('batch', 'length'), self.rules))

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def bind(self, params) -> nnx.Module:
    return nnx.merge(self.graphdef, params)


def architecture(model_section, src: str | source.ModelSource, field: str = 'init_from') -> ModelConfig:
  """A model source's shape (Orbax, Hugging Face or GGUF), with the run fields of `model_section`."""
  return source.open_source(src, field).architecture(**{k: model_section[k] for k in RUN_FIELDS})


def vocab_multiple(config) -> int:
  """How many ways the mesh splits the vocabulary: a grown vocabulary is padded to a multiple of it."""
  axes = dict(sharding.normalize_rules(config.mesh.rules)).get('vocab', ())
  sizes = {a: int(config.mesh[a]) for a in sharding.MESH_AXES}
  if any(sizes[a] == -1 for a in axes):  # only then the device count matters (a run may use a subset)
    sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, jax.device_count())))
  return math.prod(sizes[a] for a in axes)


def model_config_for(config, tokenizer=None, field: str = 'init_from',
                     sources=None) -> tuple[ModelConfig, source.ModelSource | None]:
  """(The architecture, the opened source of `config[field]` or None): from `config[field]` when set
  (its files fix the shape), else `config.model`. `sources`: the run's opened models (loop.Run.sources).

  When the run's tokenizer has more ids than that model's vocabulary (a real model whose
  tokenizer gained <think>/</think>), the vocabulary is grown to hold them, padded so the mesh
  can split it; `load_init_params` grows the weights to match.
  """
  if not config[field]:
    return ModelConfig.from_dict(config.model), None
  src = source.open_source((sources or {}).get(field) or config[field], field)
  cfg = architecture(config.model, src, field)
  tokenizer = tokenizer or source.run_tokenizer(config, sources)
  if tokenizer.vocab_size > cfg.vocab_size:
    cfg = vocab.grown_config(cfg, vocab.padded_vocab_size(tokenizer.vocab_size, vocab_multiple(config)))
  return cfg, src


def new_token_rows(config, model_cfg: ModelConfig,
                   init_src: str | source.ModelSource | None) -> tuple[int, int] | None:
  """The vocabulary rows this run adds to init_src's model ([its vocabulary, ours)), else None."""
  if not init_src:
    return None
  base = architecture(config.model, init_src).vocab_size
  return (base, model_cfg.vocab_size) if model_cfg.vocab_size > base else None


def make_setup(config, model_cfg: ModelConfig, total_steps: int, mesh: Mesh | None = None,
               new_rows: tuple[int, int] | None = None) -> Setup:
  """`mesh`: default, config.mesh over this process's devices (tools/aot_compile.py passes a TPU topology's).
  `new_rows`: vocabulary rows grown onto the initial model (`new_token_rows`), for the optimizer."""
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
  rules = sharding.normalize_rules(config.mesh.rules)
  sharding.check_model_fits_mesh(model_cfg, mesh, rules)
  frozen = optim.frozen_layers(config.optim, model_cfg.n_layers)
  tx, lr = optim.make(config.optim, total_steps, new_rows, frozen_layers=frozen,
                      tied_embeddings=model_cfg.tie_embeddings)
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
  return Setup(mesh, rules, model_cfg, graphdef, tx, lr, abstract_state, state_shardings, frozen)


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


def load_params(src: str | source.ModelSource, cfg: ModelConfig, abstract: dict, field: str = 'init_from') -> dict:
  """Parameters of any model source, laid out as `abstract` says."""
  return source.open_source(src, field).load_params(cfg, abstract)


def load_init_params(setup: Setup, src: str | source.ModelSource) -> dict:
  """init_from's parameters in the run's layout; grown first when the run's vocabulary is larger."""
  model = source.open_source(src)
  run_fields = {k: getattr(setup.model_cfg, k) for k in RUN_FIELDS}
  base = model.architecture(**run_fields)
  if base.vocab_size == setup.model_cfg.vocab_size:
    return model.load_params(setup.model_cfg, setup.abstract_state['params'])
  params = model.load_params(base, loading.abstract_params(base, setup.mesh, setup.rules))
  grown, _ = vocab.grow_vocab(params, base, setup.model_cfg.vocab_size, setup.mesh, setup.rules)
  return grown


def start(config, setup: Setup, checkpointer, init_src: str | source.ModelSource | None,
          log: Callable[[str], None]) -> tuple[dict, dict | None, str]:
  """Returns (state, saved data-iterator state or None, a sentence saying where it started)."""
  restored = checkpointer.restore_newest_readable(setup.abstract_state, log)
  if restored is not None:
    state, data_state, step = restored
    return state, data_state, f'resumed from {checkpointer.directory} at step {step}'
  if init_src:
    params = load_init_params(setup, init_src)
    state = init_state(setup, config.seed, params)
    path = source.open_source(init_src).path
    return state, None, f'initialised from {storage.abspath(path)} (fresh optimizer, step 0)'
  return init_state(setup, config.seed), None, 'started from scratch (random init, step 0)'
