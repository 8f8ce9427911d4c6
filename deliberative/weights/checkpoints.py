"""Orbax checkpoint layout shared by every stage.

A checkpoint directory is an Orbax CheckpointManager root: `<dir>/<step>/` holds items
`params` (the model's pure-dict parameters), `meta` (JSON: model config, spec version,
provenance) and, for trainers, `opt_state`, `train` (step, RNG) and `data` (iterator
position). Readers restore only the items they need, into any sharding.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath

from deliberative.model import layout
from deliberative.model.config import ModelConfig


def manager(directory: str, *, max_to_keep: int | None = None, async_save: bool = True,
            create: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                         create=create)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def resolve_dir(path: str) -> str:
  """A checkpoint root, given either it or a workdir containing `checkpoints/`."""
  inner = os.path.join(path, 'checkpoints')
  return inner if os.path.isdir(inner) else path


def latest_step(directory: str) -> int | None:
  if not os.path.isdir(directory):
    return None
  with manager(directory, async_save=False, create=False) as mngr:
    return mngr.latest_step()


def save_params(directory: str, step: int, params: Mapping, meta: Mapping[str, Any]) -> None:
  """Params + meta only (what import_hf writes and init_from reads)."""
  with manager(directory, async_save=False) as mngr:
    mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(dict(meta))))
    mngr.wait_until_finished()


def _require_step(directory: str, step: int | None) -> int:
  step = latest_step(directory) if step is None else step
  if step is None:
    raise FileNotFoundError(f'{directory}: no Orbax checkpoint found (expected <dir>/<step>/ subdirectories)')
  return step


def load_meta(directory: str, step: int | None = None) -> dict:
  step = _require_step(directory, step)
  with manager(directory, async_save=False, create=False) as mngr:
    return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])


def model_config_from_meta(meta: Mapping) -> ModelConfig:
  if 'model' not in meta:
    raise ValueError(f'checkpoint meta has no "model" entry (keys: {sorted(meta)})')
  return ModelConfig.from_dict(meta['model'])


def saved_params_tree(directory: str, step: int) -> dict:
  """The tree of a step's `params` item (array metadata leaves), read without reading arrays."""
  return ocp.StandardCheckpointHandler().metadata(epath.Path(os.path.abspath(directory)) / str(step) / 'params').tree


def restore_params(directory: str, abstract_params: Mapping, step: int | None = None) -> dict:
  """Restores `params` into the layout and shardings of `abstract_params` (ShapeDtypeStruct leaves).

  A checkpoint saved with the other `model.scan_layers` setting is read in its own layout and
  converted (model/layout.py), so runs, exports and evaluations load either."""
  step = _require_step(directory, step)
  abstract_saved = layout.saved_layout_of(abstract_params, saved_params_tree(directory, step))
  with manager(directory, async_save=False, create=False) as mngr:
    out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_saved)))
  return layout.relayout(out['params'], abstract_params)


def abstract_of(tree) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree)
