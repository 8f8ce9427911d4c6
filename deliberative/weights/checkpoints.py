"""Orbax checkpoint layout shared by every stage.

A checkpoint directory is an Orbax CheckpointManager root: `<dir>/<step>/` holds items
`params` (the model's pure-dict parameters), `meta` (JSON: model config, spec version,
provenance) and, for trainers, `opt_state`, `train` (step, RNG) and `data` (iterator
position). Readers restore only the items they need, into any sharding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath

from deliberative.common import io as atomic, storage
from deliberative.model import layout
from deliberative.model.config import ModelConfig


def manager(directory: str, *, max_to_keep: int | None = None, async_save: bool = True,
            create: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                         create=create)
  return ocp.CheckpointManager(storage.abspath(directory), options=options)


def resolve_dir(path: str) -> str:
  """A checkpoint root, given either it or a workdir containing `checkpoints/`."""
  inner = storage.join(path, 'checkpoints')
  return inner if storage.isdir(inner) else path


def latest_step(directory: str) -> int | None:
  if not storage.isdir(directory):
    return None
  with manager(directory, async_save=False, create=False) as mngr:
    return mngr.latest_step()


def save_params(directory: str, step: int, params: Mapping, meta: Mapping[str, Any]) -> None:
  """Params + meta only (what import_hf writes and init_from reads)."""
  with manager(directory, async_save=False) as mngr:
    mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(dict(meta))))
    mngr.wait_until_finished()
  if jax.process_index() == 0:
    write_digests(directory, step)


# -- digests: bit rot is found at restore, not trained on ------------------------------------------
# Orbax does not check contents: 16 KB overwritten inside a params file (size unchanged) can read
# back without an error (measured: 5,867 parameters changed), and once trained on to NaN. Each step
# directory gets the size and sha256 of every file in it, written once the save is final; a restore
# compares them first.

DIGESTS = 'digests.json'


class DigestMismatch(ValueError):
  """A checkpoint file's bytes differ from those written at save (or the file is gone)."""


def _step_files(step_dir: str) -> list[str]:
  return [rel for rel in storage.walk_files(step_dir) if rel != DIGESTS]


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with storage.open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def write_digests(directory: str, step: int) -> None:
  """sha256 of every file of a finished (finalized) step, as `<step>/digests.json`. Only after the save
  is final: an asynchronous save's files are still being written, and Orbax renames the directory."""
  step_dir = storage.join(storage.abspath(directory), str(step))
  files = {rel: {'bytes': storage.getsize(storage.join(step_dir, rel)), 'sha256': _sha256(storage.join(step_dir, rel))}
           for rel in _step_files(step_dir)}
  atomic.write_json(storage.join(step_dir, DIGESTS), {'files': files})


def verify_digests(directory: str, step: int, items: Sequence[str] | None = None) -> bool:
  """Checks a step's files (those of `items` only, if given) against its digests.json: True when they
  match, False when the step has none (saved before digests existed, or stopped before they were
  written); a DigestMismatch names the first file that differs or is missing."""
  step_dir = storage.join(storage.abspath(directory), str(step))
  path = storage.join(step_dir, DIGESTS)
  if not storage.exists(path):
    return False
  try:
    with storage.open(path, encoding='utf-8') as f:
      files = json.load(f)['files']
  except (ValueError, KeyError, TypeError) as e:
    raise DigestMismatch(f'{path}: damaged ({e}); the files of step {step} cannot be checked') from None
  for rel, saved in sorted(files.items()):
    if items is not None and rel.split('/')[0] not in items:
      continue
    full = storage.join(step_dir, rel)
    if not storage.exists(full):
      raise DigestMismatch(f'{full}: missing, yet listed in {DIGESTS} of step {step}')
    size = storage.getsize(full)
    if size != saved['bytes']:
      raise DigestMismatch(f'{full}: {size:,} bytes where {saved["bytes"]:,} were saved at step {step} '
                           '(cut short or overwritten)')
    if _sha256(full) != saved['sha256']:
      raise DigestMismatch(f'{full}: sha256 mismatch: its bytes changed after step {step} was saved '
                           '(bit rot or an overwrite)')
  return True


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
  return ocp.StandardCheckpointHandler().metadata(epath.Path(storage.abspath(directory)) / str(step) / 'params').tree


def restore_params(directory: str, abstract_params: Mapping, step: int | None = None) -> dict:
  """Restores `params` into the layout and shardings of `abstract_params` (ShapeDtypeStruct leaves).

  A checkpoint saved with the other `model.scan_layers` setting is read in its own layout and
  converted (model/layout.py), so runs, exports and evaluations load either."""
  step = _require_step(directory, step)
  verify_digests(directory, step, items=('params',))  # every process: each must fail alike, none hang
  abstract_saved = layout.saved_layout_of(abstract_params, saved_params_tree(directory, step))
  with manager(directory, async_save=False, create=False) as mngr:
    out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_saved)))
  return layout.relayout(out['params'], abstract_params)


def abstract_of(tree) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree)
