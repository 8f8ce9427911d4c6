"""Building a model: from scratch (born sharded), around an existing parameter tree, or as the abstract
tree a loader fills. Reading weights from files is deliberative.weights.source.load."""

from __future__ import annotations

from typing import Mapping

from flax import nnx
from jax.sharding import Mesh

from deliberative.model import sharding
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import Transformer, build


def create(cfg: ModelConfig, mesh: Mesh | None = None, rules=sharding.DEFAULT_RULES, seed: int = 0) -> Transformer:
  if mesh is None:
    return build(cfg, seed)()
  sharding.check_model_fits_mesh(cfg, mesh, rules)
  return sharding.create_sharded(build(cfg, seed), mesh, rules)


def abstract_params(cfg: ModelConfig, mesh: Mesh | None = None, rules=sharding.DEFAULT_RULES) -> dict:
  """Pure-dict tree of ShapeDtypeStructs (with shardings when a mesh is given)."""
  if mesh is not None:
    sharding.check_model_fits_mesh(cfg, mesh, rules)
  _, state = sharding.abstract_model(build(cfg), mesh, rules)
  return state.to_pure_dict()


def from_params(cfg: ModelConfig, params: Mapping) -> Transformer:
  """Wraps an existing parameter tree (no copy) in a Transformer."""
  graphdef, state = nnx.split(nnx.eval_shape(build(cfg)))
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)


def params_of(model: Transformer) -> dict:
  return nnx.state(model, nnx.Param).to_pure_dict()
