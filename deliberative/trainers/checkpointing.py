"""Full training checkpoints: everything needed to continue exactly.

Items per step (Orbax Composite): `params`, `opt_state`, `train` (step and the RNG as raw uint32 key data),
`data` (the input iterator's position, JSON) and `meta` (JSON: model config, spec version,
provenance). `deliberative.checkpoints` reads `params` + `meta` alone for init_from/export.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from deliberative import checkpoints


class Checkpointer:
  def __init__(self, workdir: str, ckpt_cfg):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.every_steps = int(ckpt_cfg.every_steps)
    self._mngr = checkpoints.manager(self.directory, max_to_keep=ckpt_cfg.keep, async_save=ckpt_cfg.async_save)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, state: Mapping[str, Any], data_state: Mapping, meta: Mapping, *, wait: bool = False) -> None:
    step = int(jax.device_get(state['step']))
    train = {'step': state['step'], 'rng': state['rng']}
    self._mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state['params']), opt_state=ocp.args.StandardSave(state['opt_state']),
        train=ocp.args.StandardSave(train), data=ocp.args.JsonSave(dict(data_state)),
        meta=ocp.args.JsonSave(dict(meta))), force=True)
    if wait:
      self._mngr.wait_until_finished()

  def restore(self, abstract_state: Mapping[str, Any], step: int | None = None) -> tuple[dict, dict, dict]:
    """Returns (state, data_state, meta), arrays laid out as `abstract_state`'s shardings say."""
    step = self.latest_step() if step is None else step
    abstract_train = {'step': abstract_state['step'], 'rng': abstract_state['rng']}
    out = self._mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state['params']),
        opt_state=ocp.args.StandardRestore(abstract_state['opt_state']),
        train=ocp.args.StandardRestore(abstract_train), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    state = {'params': out['params'], 'opt_state': out['opt_state'], 'step': out['train']['step'],
             'rng': out['train']['rng']}
    return state, dict(out['data']), dict(out['meta'])

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()
