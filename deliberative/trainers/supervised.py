"""The supervised training loop shared by SFT and judge training.

A task supplies the data (a resumable batch iterator in the CONTRACTS.md batch format)
and its evaluation; the loop owns everything else: sharded state, the jit'd step (explicit
shardings, donated state, compiled once), metrics fetched one step late, periodic evals,
Orbax checkpoints with the data position, SIGTERM, the NaN guard and summary.json.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deliberative.data import datasets
from deliberative.model import losses, source
from deliberative.model.config import ModelConfig
from deliberative.spec import Spec
from deliberative.tokenizer import Tokenizer
from deliberative.trainers import metrics as metrics_lib
from deliberative.trainers import resume, runtime
from deliberative.trainers import state as state_lib
from deliberative.trainers.checkpointing import Checkpointer

BATCH_FIELDS = ('tokens', 'targets', 'weights', 'segment_ids', 'positions')


def token_loss(setup: state_lib.Setup, params, batch) -> tuple[jax.Array, dict]:
  """Summed weighted NLL over a (micro)batch, plus the sums needed to normalise across microbatches."""
  model = setup.bind(params)
  x_BLE, _ = model.hidden(batch['tokens'], batch['positions'], batch['segment_ids'])
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
  return jax.jit(train_step, in_shardings=(setup.state_shardings, batch_shardings),
                 out_shardings=(setup.state_shardings, setup.replicated()), donate_argnums=0)


def make_eval_step(setup: state_lib.Setup):
  def eval_step(params, batch):
    loss_sum, aux = token_loss(setup, params, batch)
    return loss_sum, aux['weight']
  batch_shardings = {k: setup.batch_sharding() for k in BATCH_FIELDS}
  return jax.jit(eval_step, in_shardings=(setup.state_shardings['params'], batch_shardings),
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


def run(config, workdir: str, make_task: Callable[[state_lib.Setup, Tokenizer, Spec], Task]) -> dict[str, Any]:
  t_start = time.perf_counter()
  tokenizer = source.run_tokenizer(config)  # config.tokenizer, else the one init_from's weights came with
  spec = Spec.load(config.spec or None)
  if config.data.dataset == datasets.DEMO_DATASET:
    datasets.ensure_demo_dataset(config.data.data_dir or None)
  model_cfg, init_src = state_lib.model_config_for(config, tokenizer)
  if model_cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f'model vocab_size={model_cfg.vocab_size} is smaller than the tokenizer\'s '
                     f'{tokenizer.vocab_size} pieces')
  setup = state_lib.make_setup(config, model_cfg, config.total_steps)
  data_parallel = setup.mesh.shape['data'] * setup.mesh.shape['fsdp']
  if config.batch_size % (config.optim.accum_steps * data_parallel):
    raise ValueError(f'batch_size={config.batch_size} must be divisible by optim.accum_steps={config.optim.accum_steps}'
                     f' x mesh data*fsdp={data_parallel}')
  runtime.log(f'model: {model_cfg.param_count():,} parameters; mesh {dict(setup.mesh.shape)}; '
              f'spec {spec.version}')
  added = ', '.join(f'{t}={i}' for t, i in getattr(tokenizer, 'added_tokens', ()))
  runtime.log(f'tokenizer: {source.run_tokenizer_path(config)} (version {tokenizer.version}, '
              f'{tokenizer.vocab_size:,} ids' + (f'; added {added}; model vocabulary {model_cfg.vocab_size:,})'
                                                   if added else ')'))
  checkpointer = Checkpointer(workdir, config.checkpoint)
  state, data_state, how = state_lib.start(config, setup, checkpointer, init_src, runtime.log)
  start_step = int(jax.device_get(state['step']))
  runtime.log(f'start: {how}; parameter bytes per device: {runtime.bytes_per_device(state["params"]):,}')

  task = make_task(setup, tokenizer, spec)
  train_iter = task.train_iterator()
  if data_state is not None:
    train_iter.set_state(data_state)
  train_step = make_train_step(setup, config.optim.accum_steps, config.debug.inject_nan_at_step)
  writer = metrics_lib.MetricsWriter(workdir)
  writer.resume_at(start_step, runtime.log)
  peak = config.peak_flops_per_device or metrics_lib.measure_peak_flops()
  progress = metrics_lib.Progress(config.total_steps, start_step,
                                  metrics_lib.flops_per_token(model_cfg, config.data.seq_len), peak)
  meta = resume.run_meta(config, model_cfg, spec, tokenizer, **task.meta())
  summary: dict[str, Any] = {'start': how, 'start_step': start_step, 'spec_version': spec.version,
                             'parameters': model_cfg.param_count()}

  if start_step == 0 and config.evals.at_start:
    first = task.evaluate(state['params'], 0, workdir, at_start=True)
    writer.write(0, first)
    summary.update({k.replace('eval/', 'eval_start/'): v for k, v in first.items()})
    runtime.log('eval at start: ' + _fmt(first))
    progress.restart_window()

  last_saved = checkpointer.latest_step()
  pending: tuple[int, Any, float] | None = None  # (step, device metrics, tokens)
  last_train: dict[str, float] = {}

  def drain(pending) -> dict[str, float]:
    step, device_metrics, tokens = pending
    progress.add_tokens(tokens)
    host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    runtime.check_finite(step, host, last_saved, checkpointer.directory)
    if step % config.log_every_steps == 0 or step == config.total_steps:
      rates = progress.rates(step)
      writer.write(step, {**host, **rates})
      progress.report(step, host['train/loss'], rates)
    return host

  preempted = False
  with runtime.Preemption() as preemption, checkpointer:
    for step in range(start_step, config.total_steps):
      checkpointer.check()  # a failed asynchronous save stops the run here, one step later at most
      local = next(train_iter)
      batch = runtime.put_batch({k: local[k] for k in BATCH_FIELDS}, setup.batch_sharding())
      state, device_metrics = train_step(state, batch)
      tokens = float(np.count_nonzero(local['segment_ids'])) * jax.process_count()
      done = step + 1
      if pending is not None:  # the previous step's metrics: ready by now, so no stall
        last_train = drain(pending)
      pending = (done, device_metrics, tokens)
      # One snapshot per step: a SIGTERM landing mid-step is handled whole at the next step,
      # never as "exit" without "save".
      preempted_now = preemption.requested
      save_now = done % checkpointer.every_steps == 0 or done == config.total_steps or preempted_now
      eval_now = done % config.evals.every_steps == 0 or done == config.total_steps
      if save_now or eval_now:
        last_train = drain(pending)  # never checkpoint a state whose loss went non-finite
        pending = None
      if save_now:
        checkpointer.save(state, train_iter.get_state(), meta, wait=preempted_now)
        last_saved = done
      if eval_now:
        ev = task.evaluate(state['params'], done, workdir, at_start=False)
        writer.write(done, ev)
        summary.update(ev)
        runtime.log(f'eval at step {done}: ' + _fmt(ev))
        progress.restart_window()
      if runtime.stop_after_step(done, config, checkpointer, preempted_now):
        preempted = True
        break
    if pending is not None:
      last_train = drain(pending)
  writer.close()

  summary.update({'wall_seconds': time.perf_counter() - t_start, 'final_step': int(jax.device_get(state['step'])),
                  'final_train_loss': last_train.get('train/loss'), 'preempted': preempted,
                  'train_tokens': progress.tokens, 'data': train_iter.stats() if hasattr(train_iter, 'stats') else {}})
  runtime.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  runtime.log(f'done in {summary["wall_seconds"]:.0f}s: ' + _fmt({k: v for k, v in summary.items()
                                                                  if k.startswith('eval/')}))
  return summary


def _fmt(metrics: dict) -> str:
  return '  '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}' for k, v in sorted(metrics.items())
                   if not k.endswith('seconds'))
