"""The one training loop: SFT, judge training and RL each plug a `Job` into it.

The loop owns a run's plumbing, the same for every trainer: its inputs and mesh (`begin`), its
starting state (resume -> init_from -> scratch: `Run.restore`), then `train`: the metrics writer,
the step loop with the non-finite guard, evals on one schedule, Orbax checkpoints with the data
position, SIGTERM, summary.json and the final line. A job owns what it trains: its data, its
step and progress line, its evaluation, its checkpoint meta and its summary facts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Protocol, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from deliberative.common import storage
from deliberative.data import datasets
from deliberative.model import sharding
from deliberative.weights import source
from deliberative.model.config import ModelConfig
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import metrics as metrics_lib
from deliberative.trainers import resume, runtime
from deliberative.trainers import state as state_lib
from deliberative.trainers.checkpointing import Checkpointer

# When an eval runs: on the starting weights, every evals.every_steps, after the last step.
START, DURING, END = 'start', 'during', 'end'


@dataclasses.dataclass
class Start:
  """Where the run's state starts: the state itself (sharded as `setup` says) and its checkpointer."""
  setup: state_lib.Setup
  checkpointer: Checkpointer
  state: dict
  data_state: dict | None  # the input iterator's position saved with the resumed checkpoint
  how: str  # a sentence: resumed / initialised from / started from scratch
  step: int


@dataclasses.dataclass
class Run:
  """What every trainer needs before it builds its own parts."""
  config: Any
  workdir: str
  tokenizer: Tokenizer
  spec: Spec
  sources: dict  # field (init_from / policy_init / judge_init) -> its ModelSource, opened once by `begin`
  mesh: Mesh
  t_start: float

  @property
  def batch_multiple(self) -> int:
    """How many ways the mesh splits a batch's rows: every batch must be a multiple of it."""
    return sharding.batch_multiple(self.mesh, self.config.mesh.rules)

  def restore(self, model_cfg: ModelConfig, total_updates: int, init_src: source.ModelSource | str | None) -> Start:
    """The sharded state of a model of `model_cfg`: the workdir's newest readable checkpoint, else
    init_src's weights, else a random init. `total_updates`: optimizer updates the schedule spans."""
    setup = state_lib.make_setup(self.config, model_cfg, total_updates, self.mesh,
                                 state_lib.new_token_rows(self.config, model_cfg, init_src))
    checkpointer = Checkpointer(self.workdir, self.config.checkpoint)
    state, data_state, how = state_lib.start(self.config, setup, checkpointer, init_src, runtime.log)
    return Start(setup, checkpointer, state, data_state, how, int(jax.device_get(state['step'])))


def begin(config, workdir: str, devices: Sequence[jax.Device] | None = None, sources: dict | None = None) -> Run:
  """The run's models, tokenizer, spec, data and mesh; `devices`: default all of them (tests pass a
  subset); `sources`: the models already opened (source.run_sources), else opened here."""
  t_start = time.perf_counter()
  if sources is None:
    sources = source.run_sources(config)  # each model the run reads, opened here once and handed down
  tokenizer = source.run_tokenizer(config, sources)  # config.tokenizer, else the initial weights' own
  spec = Spec.load(config.spec or None)
  if config.data.dataset == datasets.DEMO_DATASET:
    datasets.ensure_demo_dataset(config.data.data_dir or None)
  return Run(config, workdir, tokenizer, spec, sources, sharding.make_mesh(config.mesh, devices), t_start)


class Job(Protocol):
  """What a trainer plugs into `train`."""

  data: Any  # the input iterator: next() per step; get_state()/set_state() travel in checkpoints
  meta: dict[str, Any]  # the job's facts in every checkpoint's meta, beside resume.run_meta's
  fetch_late: bool  # fetch a step's metrics during the next step (no stall); on-policy RL needs them at once
  eval_at_start: bool  # evaluate the starting weights of a fresh run
  reuse_logged_evals: bool  # a restart takes the start / final eval from metrics.jsonl rather than redo it

  def step(self, state: dict, step: int) -> tuple[dict, Any]:
    """Trains step `step` + 1: (new state, its output for `fetch`, device arrays allowed)."""
    ...

  def fetch(self, step: int, out: Any) -> dict[str, float]:
    """A finished step's host metrics, `train/loss` among them."""
    ...

  def report(self, step: int, metrics: dict[str, float]) -> dict[str, float] | None:
    """Prints the step's progress line; returns what metrics.jsonl gets for it (None: nothing)."""
    ...

  def evaluate(self, params, step: int, when: str) -> dict[str, float]:
    ...

  def summarize(self, summary: dict[str, Any], when: str, metrics: dict[str, float]) -> None:
    """What an eval adds to summary.json."""
    ...

  def final(self, last: dict[str, float]) -> dict[str, Any]:
    """The job's summary.json facts at the end; `last`: the last step's metrics."""
    ...


def train(run: Run, start: Start, job: Job) -> dict[str, Any]:
  config, workdir, checkpointer = run.config, run.workdir, start.checkpointer
  state, start_step = start.state, start.step
  writer = metrics_lib.MetricsWriter(workdir)
  writer.resume_at(start_step, runtime.log)
  meta = resume.run_meta(config, start.setup.model_cfg, run.spec, run.tokenizer, sources=run.sources, **job.meta)
  summary: dict[str, Any] = {'start': start.how, 'start_step': start_step, 'spec_version': run.spec.version,
                             'parameters': start.setup.model_cfg.param_count()}

  def evaluate(step: int, when: str) -> None:
    ev = job.evaluate(state['params'], step, when)
    writer.write(step, ev)
    runtime.log(('eval at start: ' if when == START else f'eval at step {step}: ') + fmt(ev))
    job.summarize(summary, when, ev)

  if start_step == 0 and job.eval_at_start:
    evaluate(0, START)
  elif start_step > 0 and job.reuse_logged_evals:
    job.summarize(summary, START, _logged_eval(workdir, 0))

  last_saved = checkpointer.latest_step()
  last: dict[str, float] = {}

  def drain(step: int, out: Any) -> dict[str, float]:
    host = job.fetch(step, out)
    runtime.check_finite(step, host, last_saved, checkpointer.directory)
    logged = job.report(step, host)
    if logged is not None:
      writer.write(step, logged)
    return host

  pending: tuple[int, Any] | None = None  # a finished step whose metrics are still on the device
  preempted = False
  every = config.evals.every_steps
  with runtime.Preemption() as preemption, checkpointer:
    for step in range(start_step, config.total_steps):
      checkpointer.check()  # a failed asynchronous save stops the run here, one step later at most
      state, out = job.step(state, step)
      done = step + 1
      if pending is not None:  # the previous step's metrics: ready by now, so no stall
        last = drain(*pending)
      pending = (done, out)
      # One snapshot per step: a SIGTERM landing mid-step is handled whole at the next step,
      # never as "exit" without "save".
      preempted_now = preemption.requested
      save_now = done % checkpointer.every_steps == 0 or done == config.total_steps or preempted_now
      eval_now = (every > 0 and done % every == 0) or done == config.total_steps
      if save_now or eval_now or not job.fetch_late:
        last = drain(*pending)  # never checkpoint a state whose loss went non-finite
        pending = None
      if save_now:
        checkpointer.save(state, job.data.get_state(), meta, wait=preempted_now)
        last_saved = done
      if eval_now:
        evaluate(done, END if done == config.total_steps else DURING)
      if runtime.stop_after_step(done, config, checkpointer, preempted_now):
        preempted = True
        break
    if pending is not None:
      last = drain(*pending)
  final_step = int(jax.device_get(state['step']))
  if job.reuse_logged_evals and start_step == final_step == config.total_steps:
    # A restart of a finished run (or of one preempted after its last save) evaluates only if it must.
    logged = _logged_eval(workdir, final_step)
    if _all_processes_agree(bool(logged)):
      job.summarize(summary, END, logged)
    else:
      evaluate(final_step, END)
  writer.close()

  summary.update({'wall_seconds': time.perf_counter() - run.t_start, 'final_step': final_step,
                  'preempted': preempted, **job.final(last)})
  runtime.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  runtime.log(f'done in {summary["wall_seconds"]:.0f}s: ' + fmt({k: v for k, v in summary.items()
                                                                 if k.startswith('eval/')}))
  return summary


def finished(workdir: str) -> bool:
  """The run in `workdir` reached its end: summary.json exists and SIGTERM did not cut it short (a
  preempted run writes one too, with `preempted`, and resumes when started again). Launchers that
  skip finished runs ask this, not whether the file exists."""
  path = storage.join(workdir, 'summary.json')
  if not storage.exists(path):
    return False
  return not json.loads(storage.read_bytes(path)).get('preempted')


def fmt(metrics: dict) -> str:
  return '  '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}' for k, v in sorted(metrics.items())
                   if not k.endswith('seconds'))


def _logged_eval(workdir: str, step: int) -> dict[str, float]:
  """The eval this workdir already logged at `step` (a resumed run reuses it rather than redo it)."""
  rows = [m for m in metrics_lib.read_metrics(workdir)
          if m['step'] == step and any(k.startswith('eval/') for k in m)]
  return rows[-1] if rows else {}


def _all_processes_agree(flag: bool) -> bool:
  """Process 0's answer everywhere: an eval is a collective program, so every process must make the
  same run-or-skip choice even if their views of the workdir differ (a stale or unshared disk)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))
