"""The supervised job shared by SFT and judge training, run by the one loop (loop.py).

A task supplies the data (a resumable batch iterator in the CONTRACTS.md batch format) and its
evaluation; this module adds the jit'd step (explicit shardings, donated state, compiled once),
its metrics fetched one step late and the tokens/s, MFU and ETA progress line.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deliberative.model import losses, sharding
from deliberative.weights import source
from deliberative.model.config import ModelConfig
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import loop, runtime
from deliberative.trainers import metrics as metrics_lib
from deliberative.trainers import state as state_lib

BATCH_FIELDS = ('tokens', 'targets', 'weights', 'segment_ids', 'positions')


def token_loss(setup: state_lib.Setup, params, batch) -> tuple[jax.Array, dict]:
  """Summed weighted NLL over a (micro)batch, plus the sums needed to normalise across microbatches."""
  model = setup.bind(params)
  x_BLE, _ = model.hidden(batch['tokens'], batch['positions'], batch['segment_ids'], frozen_layers=setup.frozen_layers)
  nll, correct = losses.token_nll(model, x_BLE, batch['targets'], batch['weights'])
  return nll, {'weight': jnp.sum(batch['weights']), 'correct': correct}


def make_train_step(setup: state_lib.Setup, accum_steps: int, nan_at_step: int = -1):
  def split_micro(x):
    return x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:])

  def train_step(state, batch):
    params = state['params']
    grad_fn = jax.value_and_grad(lambda p, mb: token_loss(setup, p, mb), has_aux=True)

    def micro(carry, mb):
      grads, loss, weight, correct = carry
      (l, aux), g = grad_fn(params, mb)
      return (jax.tree.map(jnp.add, grads, g), loss + l, weight + aux['weight'], correct + aux['correct']), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (zeros, jnp.float32(0), jnp.float32(0), jnp.float32(0))
    (grads, loss_sum, weight, correct), _ = jax.lax.scan(micro, init, jax.tree.map(split_micro, batch))
    denom = jnp.maximum(weight, 1.0)  # per-token mean over the whole global batch
    grads = jax.tree.map(lambda g: g / denom, grads)
    loss = loss_sum / denom
    if nan_at_step >= 0:  # debug.inject_nan_at_step: proves the non-finite guard end to end
      loss = jnp.where(state['step'] + 1 == nan_at_step, jnp.nan, loss)
    updates, opt_state = setup.tx.update(grads, state['opt_state'], params)
    new_state = {'params': optax.apply_updates(params, updates), 'opt_state': opt_state,
                 'step': state['step'] + 1, 'rng': state['rng']}
    out = {'train/loss': loss, 'train/token_accuracy': correct / denom, 'train/grad_norm': optax.global_norm(grads),
           'train/lr': setup.lr(state['step']), 'train/loss_tokens': weight}
    return new_state, out

  batch_shardings = {k: setup.batch_sharding() for k in BATCH_FIELDS}
  return jax.jit(sharding.under_mesh(train_step, setup.mesh, setup.rules),
                 in_shardings=(setup.state_shardings, batch_shardings),
                 out_shardings=(setup.state_shardings, setup.replicated()), donate_argnums=0)


def make_eval_step(setup: state_lib.Setup):
  def eval_step(params, batch):
    loss_sum, aux = token_loss(setup, params, batch)
    return loss_sum, aux['weight']
  batch_shardings = {k: setup.batch_sharding() for k in BATCH_FIELDS}
  return jax.jit(sharding.under_mesh(eval_step, setup.mesh, setup.rules),
                 in_shardings=(setup.state_shardings['params'], batch_shardings),
                 out_shardings=setup.replicated())


def model_config(config) -> ModelConfig:
  """The architecture a run of `config` trains: init_from's when set, else config.model."""
  return state_lib.model_config_for(config)[0]


class Task(Protocol):
  """What a supervised job plugs into `run`."""

  def train_iterator(self) -> Any:  # yields host batches; has get_state()/set_state()
    ...

  def evaluate(self, params, step: int, workdir: str, *, at_start: bool) -> dict[str, float]:
    ...

  def meta(self) -> dict[str, Any]:  # task facts a checkpoint's reader needs (merged into its meta)
    ...


class SupervisedJob:
  """A task's batches through the token-loss step; see loop.Job."""
  fetch_late = True  # the step's metrics are fetched during the next step: the host never waits
  reuse_logged_evals = False

  def __init__(self, config, workdir: str, start: loop.Start, task: Task):
    self.config, self.workdir, self.task = config, workdir, task
    self.data = task.train_iterator()
    if start.data_state is not None:
      self.data.set_state(start.data_state)
    self.meta = task.meta()
    self.eval_at_start = config.evals.at_start
    self.setup = start.setup
    self._train_step = make_train_step(start.setup, config.optim.accum_steps, config.debug.inject_nan_at_step)
    peak = config.peak_flops_per_device or metrics_lib.measure_peak_flops()
    fpt = metrics_lib.flops_per_token(start.setup.model_cfg, config.data.seq_len, start.setup.frozen_layers)
    self.progress = metrics_lib.Progress(config.total_steps, start.step, fpt, peak)

  def step(self, state, step: int):
    local = next(self.data)
    batch = runtime.put_batch({k: local[k] for k in BATCH_FIELDS}, self.setup.batch_sharding())
    state, device_metrics = self._train_step(state, batch)
    tokens = float(np.count_nonzero(local['segment_ids'])) * jax.process_count()
    return state, (device_metrics, tokens)

  def fetch(self, step: int, out) -> dict[str, float]:
    device_metrics, tokens = out
    self.progress.add_tokens(tokens)
    return {k: float(v) for k, v in jax.device_get(device_metrics).items()}

  def report(self, step: int, metrics: dict[str, float]) -> dict[str, float] | None:
    if step % self.config.log_every_steps and step != self.config.total_steps:
      return None
    rates = self.progress.rates(step)
    self.progress.report(step, metrics['train/loss'], rates)
    return {**metrics, **rates}

  def evaluate(self, params, step: int, when: str) -> dict[str, float]:
    out = self.task.evaluate(params, step, self.workdir, at_start=when == loop.START)
    self.progress.restart_window()  # evals are no training time
    return out

  def summarize(self, summary: dict, when: str, metrics: dict[str, float]) -> None:
    if when == loop.START:
      summary.update({k.replace('eval/', 'eval_start/'): v for k, v in metrics.items()})
    else:
      summary.update(metrics)

  def final(self, last: dict[str, float]) -> dict[str, Any]:
    return {'final_train_loss': last.get('train/loss'), 'train_tokens': self.progress.tokens,
            'data': self.data.stats() if hasattr(self.data, 'stats') else {}}


def run(config, workdir: str, make_task: Callable[[state_lib.Setup, Tokenizer, Spec], Task],
        devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
  """Trains `make_task`'s job; `devices`: default all of them."""
  r = loop.begin(config, workdir, devices)
  tokenizer, spec = r.tokenizer, r.spec
  model_cfg, init_src = state_lib.model_config_for(config, tokenizer, sources=r.sources)
  if model_cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f'model vocab_size={model_cfg.vocab_size} is smaller than the tokenizer\'s '
                     f'{tokenizer.vocab_size} pieces')
  if config.batch_size % (config.optim.accum_steps * r.batch_multiple):
    raise ValueError(f'batch_size={config.batch_size} must be divisible by optim.accum_steps={config.optim.accum_steps}'
                     f' x the {r.batch_multiple} devices the mesh splits a batch over')
  runtime.log(f'model: {model_cfg.param_count():,} parameters; mesh {dict(r.mesh.shape)}; '
              f'spec {spec.version}')
  added = ', '.join(f'{t}={i}' for t, i in getattr(tokenizer, 'added_tokens', ()))
  runtime.log(f'tokenizer: {source.run_tokenizer_path(config, r.sources)} (version {tokenizer.version}, '
              f'{tokenizer.vocab_size:,} ids' + (f'; added {added}; model vocabulary {model_cfg.vocab_size:,})'
                                                   if added else ')'))
  start = r.restore(model_cfg, config.total_steps, init_src)
  runtime.log(f'start: {start.how}; parameter bytes per device: {runtime.bytes_per_device(start.state["params"]):,}')
  job = SupervisedJob(config, workdir, start, make_task(start.setup, tokenizer, spec))
  return loop.train(r, start, job)
