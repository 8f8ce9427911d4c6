"""Supervised fine-tuning on spec-citing traces (paper step 3: context distillation).

Masked cross-entropy on CoT + answer tokens of (prompt -> CoT + answer) traces, the spec
absent from the context. One jit'd train step (explicit shardings, donated state),
metrics fetched one step late, periodic eval loss and greedy-generation evals on held-out
templates, Orbax checkpoints with the data position, SIGTERM-safe.
"""

from __future__ import annotations

import os
import time

import jax

from deliberative import evals
from deliberative.common import storage
from deliberative.data import pipeline
from deliberative.inference import sampler as sampler_lib
from deliberative.inference.sampler import SamplingParams
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import runtime
from deliberative.trainers import state as state_lib
from deliberative.trainers import supervised

BATCH_FIELDS = supervised.BATCH_FIELDS


class Evaluator:
  """Held-out eval loss and greedy-generation metrics (decision, citation, format)."""

  def __init__(self, config, setup: state_lib.Setup, tokenizer: Tokenizer, spec: Spec):
    self.config, self.setup, self.tokenizer, self.spec = config, setup, tokenizer, spec
    self.eval_step = supervised.make_eval_step(setup)
    mesh = setup.mesh
    self.sampler = sampler_lib.for_model(setup.model_cfg, tokenizer, mesh=mesh, rules=setup.rules)
    # Every process feeds the same prompts: the sampler's inputs are replicated, not per-host shards.
    prompts = pipeline.load_prompts(config.data, tokenizer, config.evals.split, process_index=0, process_count=1)
    self.items = prompts.items[:config.evals.num_generations]
    self.sampling = SamplingParams(temperature=0.0, max_new_tokens=config.evals.max_new_tokens)

  def loss(self, params) -> dict[str, float]:
    it = pipeline.make_iterator(self.config.data, self.tokenizer, self.config.evals.split,
                                global_batch_size=self.config.evals.batch_size, seed=0, num_epochs=1, shuffle=False)
    loss_sum, weight = 0.0, 0.0
    for i, batch in enumerate(it):
      if i >= self.config.evals.loss_batches:
        break
      l, w = self.eval_step(params, runtime.put_batch({k: batch[k] for k in BATCH_FIELDS},
                                                       self.setup.batch_sharding()))
      loss_sum, weight = loss_sum + float(l), weight + float(w)
    return {'eval/loss': loss_sum / max(weight, 1.0)}

  def generation(self, params, step: int, workdir: str, limit: int | None = None) -> dict[str, float]:
    start = time.perf_counter()
    out, samples = evals.generate_and_score(
        self.sampler, params, self.tokenizer, self.spec, self.items[:limit], batch_size=self.config.evals.batch_size,
        sampling=self.sampling, rng=jax.random.key(step))
    runtime.write_jsonl_atomic(os.path.join(workdir, 'samples', f'step_{step:07d}.jsonl'), samples)
    out['eval/generation_seconds'] = time.perf_counter() - start
    return out

  def safety(self, params, step: int, workdir: str) -> dict[str, float]:
    """The final eval's over-refusal and jailbreak splits (config.evals.final_splits)."""
    out, samples = evals.final_safety_evals(
        self.sampler, params, self.tokenizer, self.spec, self.config.data, self.config.evals.final_splits,
        batch_size=self.config.evals.batch_size, sampling=self.sampling, rng=jax.random.key(step), log=runtime.log)
    for split, rows in samples.items():
      runtime.write_jsonl_atomic(os.path.join(workdir, 'samples', f'{split}_step_{step:07d}.jsonl'), rows)
    return out


class TraceTask:
  """SFT on trace records: packed (prompt -> CoT + answer) rows, loss on CoT + answer."""

  def __init__(self, config, setup: state_lib.Setup, tokenizer: Tokenizer, spec: Spec):
    self.config, self.tokenizer = config, tokenizer
    self.evaluator = Evaluator(config, setup, tokenizer, spec)

  def train_iterator(self):
    return pipeline.make_iterator(self.config.data, self.tokenizer, self.config.data.train_split,
                                  global_batch_size=self.config.batch_size, seed=self.config.seed)

  def meta(self) -> dict:
    return {}

  def evaluate(self, params, step: int, workdir: str, *, at_start: bool) -> dict[str, float]:
    storage.makedirs(storage.join(workdir, 'samples'))
    if at_start:  # the untrained baseline: generation metrics only, on fewer prompts (it never stops early)
      if not self.evaluator.items:
        return {}
      return self.evaluator.generation(params, step, workdir, limit=self.config.evals.num_generations_at_start)
    out = self.evaluator.loss(params)
    if self.evaluator.items:  # evals.num_generations=0: loss only (a caller that evaluates afterwards itself)
      out.update(self.evaluator.generation(params, step, workdir))
    if step == self.config.total_steps:
      out.update(self.evaluator.safety(params, step, workdir))
    return out


model_config = supervised.model_config


def train(config, workdir: str, devices=None) -> dict:
  return supervised.run(config, workdir, lambda setup, tok, spec: TraceTask(config, setup, tok, spec), devices)
