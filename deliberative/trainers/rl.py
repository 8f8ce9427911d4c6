"""RL on (prompt, category) pairs (paper step 4): GRPO-style advantages, PPO clipping, KL to the SFT model.

Per step: the next `prompts_per_step` prompts of the `rl` split (a resumable iterator whose
position is checkpointed) -> `group_size` samples each at the configured temperature (the
sampler returns their log-probs) -> reward = the judge's score of the **final answer only**
(the CoT is stripped before the judge sees anything), mixed with `rl.label_reward` of whether the
answer's decision is the one the prompt's label asks for (rl_rollout.answer_reward; at 1 the labels
are the judge and no judge model loads), or -format_penalty, unjudged, for a
completion without a well-formed CoT-then-answer -> advantages centred within each prompt's
group (and scaled by its std with `rl.scale_by_std`) -> `ppo_epochs` shuffled passes over
minibatches of the clipped objective with a k3 KL penalty to the frozen reference (a second
copy of `policy_init`), averaged over completion tokens.

Policy (with its optimizer), reference and judge live on one device mesh. Shapes come from a
fixed few (the rollout: rows = prompts_per_step * group_size of P + T slots, P = data.max_prompt_len,
T = max_new_tokens; the packed update (rl.pack_updates): rows of rl.pack_row_rollouts x (P + T)
slots, in at most rl.pack_buckets row counts), so once each has run an RL step compiles nothing
(`perf/compiles` in metrics.jsonl counts XLA compilations per step). Greedy evaluation on held-out
`eval` prompts runs before the first and after the last update; checkpoints hold params, optimizer, step, RNG and the
prompt position; SIGTERM saves and exits 0 (the run plumbing is loop.py's; this module is the
RL job: rollout, judging, advantages, the objective and its metrics).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from deliberative import evals
from deliberative.evals import generation, graders
from deliberative.common import storage
from deliberative.data import pipeline
from deliberative.judge import format as judge_format
from deliberative.judge import load as judge_load
from deliberative.judge.model import Judge
from deliberative.model import loading
from deliberative.weights import source
from deliberative.model.config import ModelConfig
from deliberative.inference import sampler as sampler_lib
from deliberative.inference.sampler import SamplingParams
from deliberative.spec import Spec
from deliberative.tokenizer.base import Completion
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import loop, rl_objective, rl_rollout, runtime
from deliberative.trainers import state as state_lib

# Every process reads the whole split: a step's rows are sampled and judged once, replicated, and each
# process then places only its own shards of them on the mesh (_global_array).
_WHOLE_SPLIT = dict(process_index=0, process_count=1)

PRODUCERS = {'policy_init': 'python -m deliberative.train --config configs/sft.py',
             'judge_init': 'python -m deliberative.train --config configs/judge.py'}


# -- start-up ------------------------------------------------------------------------------------

def uses_judge(config) -> bool:
  """False when the labels alone are the reward (rl.label_reward=1): no judge model is loaded."""
  return config.rl.label_reward < 1.0


def require_inputs(config, sources: dict) -> None:
  """Fails before any work when the SFT policy or the judge has not been trained yet.
  `sources`: the run's models, opened (source.run_sources)."""
  for field, command in PRODUCERS.items():
    if field == 'judge_init' and not uses_judge(config):
      continue
    path = config[field]
    if field not in sources:
      raise FileNotFoundError(
          f'config.{field}={path!r} holds no checkpoint (an Orbax workdir/checkpoint, a Hugging Face '
          f'directory or a GGUF file); run `{command}` first (or point --config.{field} at one)')


def check_shapes(config, batch_multiple: int) -> tuple[int, int]:
  """(rows per step, minibatches per epoch), or a clear error when they cannot split."""
  rl = config.rl
  rows = rl.prompts_per_step * rl.group_size
  if rl.group_size < 2:
    raise ValueError(f'rl.group_size={rl.group_size}: group-centred advantages need at least 2 samples')
  if rows % rl.minibatch_size:
    raise ValueError(f'rl.minibatch_size={rl.minibatch_size} does not divide prompts_per_step * group_size = {rows}')
  if rl.get('pack_row_rollouts', 1) > 1 and not rl.pack_updates:
    raise ValueError(f'rl.pack_row_rollouts={rl.pack_row_rollouts} lays out packed rows; with '
                     f'rl.pack_updates=False every rollout has its own row (set one or the other)')
  if rl.minibatch_size % batch_multiple:
    raise ValueError(f'rl.minibatch_size={rl.minibatch_size} is not divisible by the {batch_multiple} devices '
                     f'the mesh splits a batch over')
  return rows, rows // rl.minibatch_size


class CompileCounter:
  """XLA compilations in this process (one listener, registered once), so a loop can report
  how many a step triggered: after warm-up the answer must be 0."""
  _lock = threading.Lock()
  _count = 0
  _registered = False

  def __init__(self):
    with CompileCounter._lock:
      if not CompileCounter._registered:
        jax.monitoring.register_event_duration_secs_listener(CompileCounter._on_event)
        CompileCounter._registered = True

  @staticmethod
  def _on_event(event: str, duration: float, **_) -> None:
    if event == '/jax/core/compile/backend_compile_duration':
      with CompileCounter._lock:
        CompileCounter._count += 1

  @property
  def count(self) -> int:
    return CompileCounter._count


def _global_array(x: np.ndarray, sharding) -> jax.Array:
  """A global array from host data that every process holds in full."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


# -- evaluation ----------------------------------------------------------------------------------

def eval_data_config(config):
  """config.data with the held-out prompts' own length budget (evals.max_prompt_len; 0 = the
  rollout's): the rollout rows are sized to the training prompts, while jailbreak-wrapped
  held-out prompts run longer and must not be dropped for want of slots."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.max_prompt_len = config.evals.get('max_prompt_len', 0) or config.data.max_prompt_len
  return data


class Evaluator:
  """Greedy completions of held-out prompts: decision accuracy (evals.py) + mean judge reward."""

  def __init__(self, config, policy_cfg: ModelConfig, tokenizer: Tokenizer, spec: Spec,
               reward_fn: rl_rollout.RewardFn, batch_multiple: int, mesh, rules):
    self.config, self.tokenizer, self.spec, self.reward_fn = config, tokenizer, spec, reward_fn
    ev = config.evals
    self.data_cfg = eval_data_config(config)
    self.sampler = sampler_lib.for_model(policy_cfg, tokenizer, mesh=mesh, rules=rules, batch_multiple=batch_multiple,
                                         length_buckets=(self.data_cfg.max_prompt_len,), batch_buckets=(ev.batch_size,))
    prompts = pipeline.load_prompts(self.data_cfg, tokenizer, config.data.eval_split, **_WHOLE_SPLIT)
    self.items = prompts.items[:ev.num_prompts]
    self.sampling = SamplingParams(temperature=0.0, max_new_tokens=ev.max_new_tokens)

  def __call__(self, params, step: int, workdir: str) -> dict[str, float]:
    start = time.perf_counter()
    out, samples = evals.generate_and_score(
        self.sampler, params, self.tokenizer, self.spec, self.items, batch_size=self.config.evals.batch_size,
        sampling=self.sampling, rng=jax.random.key(step), reasoning=self.data_cfg.open_reasoning)
    rl = self.config.rl
    direct = not self.data_cfg.open_reasoning  # prompts without the opener: every non-blank answer is direct
    ok = [rl_rollout.well_formed(Completion(s['cot'], s['answer'], s['format_valid'],
                                            direct=direct and bool(s['answer'].strip())), rl.require_cot)
          for s in samples]
    rewards = np.full(len(samples), -rl.format_penalty, np.float32)
    judged = [i for i, good in enumerate(ok) if good]
    if judged:
      # The items' own records: a sample's 'decision' is the grader's reading, its label is 'expected'.
      rewards[judged] = self.reward_fn([self.items[i][0] for i in judged], [samples[i]['answer'] for i in judged])
    for s, r in zip(samples, rewards):
      s['reward'] = float(r)
    runtime.write_jsonl_atomic(os.path.join(workdir, 'samples', f'eval_step_{step:07d}.jsonl'), samples)
    out['eval/mean_reward'] = float(rewards.mean())
    if step == self.config.total_steps:  # the final eval adds the over-refusal and jailbreak splits
      safety, safety_samples = evals.final_safety_evals(
          self.sampler, params, self.tokenizer, self.spec, self.data_cfg, self.config.evals.final_splits,
          batch_size=self.config.evals.batch_size, sampling=self.sampling, rng=jax.random.key(step + 1),
          log=runtime.log)
      out.update(safety)
      for split, rows in safety_samples.items():
        runtime.write_jsonl_atomic(os.path.join(workdir, 'samples', f'{split}_step_{step:07d}.jsonl'), rows)
    out['eval/generation_seconds'] = time.perf_counter() - start
    return out


# -- the job -------------------------------------------------------------------------------------

def model_config(config, tokenizer=None) -> ModelConfig:
  """The policy's architecture: policy_init's, with the run fields of `config.model`, its vocabulary
  grown when the run's tokenizer added ids (a real model's <think>/</think>)."""
  return state_lib.model_config_for(config, tokenizer, 'policy_init')[0]


def step_programs(config, setup: state_lib.Setup, tokenizer: Tokenizer, rows: int, n_minibatches: int,
                  batch_multiple: int):
  """An RL step's compiled pieces: (rollout sampler, its SamplingParams, score step, update step,
  the update batch's shardings), one bucket each so a run compiles each once."""
  rl = config.rl
  sampler = sampler_lib.for_model(setup.model_cfg, tokenizer, mesh=setup.mesh, rules=setup.rules,
                                  batch_multiple=batch_multiple, length_buckets=(config.data.max_prompt_len,),
                                  batch_buckets=(rows,))
  sampling = SamplingParams(temperature=rl.temperature, top_k=rl.top_k, top_p=rl.top_p,
                            max_new_tokens=rl.max_new_tokens)
  objective = rl_objective.Objective(temperature=rl.temperature, clip_eps=rl.clip_eps, kl_coef=rl.kl_coef)
  return (sampler, sampling, rl_objective.make_score_step(setup, objective, n_minibatches),
          rl_objective.make_update_step(setup, objective, rl.ppo_epochs, n_minibatches,
                                        presplit=rl.pack_updates),
          rl_objective.field_shardings(setup, rl_objective.UPDATE_FIELDS))


class RLJob:
  """Rollout -> judge -> advantages -> PPO update, one RL step at a time; see loop.Job."""
  fetch_late = False  # on-policy: the next rollout needs this step's params, so nothing overlaps anyway
  eval_at_start = True
  reuse_logged_evals = True

  def __init__(self, config, workdir: str, start: loop.Start, *, tokenizer: Tokenizer, judge: Judge | None,
               reward_fn: rl_rollout.RewardFn, evaluator: Evaluator, ref_params, rows: int, n_minibatches: int, batch_multiple: int,
               compiles: CompileCounter):
    rl, setup = config.rl, start.setup
    self.config, self.workdir, self.tokenizer, self.rows = config, workdir, tokenizer, rows
    self.judge, self.reward_fn, self.evaluator, self.ref_params, self.compiles = (
        judge, reward_fn, evaluator, ref_params, compiles)
    self.data = pipeline.make_prompt_iterator(config.data, tokenizer, config.data.train_split,
                                              batch_size=rl.prompts_per_step, seed=config.seed, shuffle=True,
                                              num_epochs=None, **_WHOLE_SPLIT)
    if start.data_state is not None:
      self.data.set_state(start.data_state)
    self.meta = {'init_from': config.policy_init, 'judge_init': config.judge_init}
    (self.sampler, self.sampling, self.score_step, self.update_step,
     self.shardings) = step_programs(config, setup, tokenizer, rows, n_minibatches, batch_multiple)
    self.sample_key = jax.random.key(config.seed)
    # rl.pack_updates: a minibatch's possible packed row counts (each compiles once, on first use)
    self.n_minibatches = n_minibatches
    self.packed_rows, self.row_slots = rl_rollout.packed_layout(rl, rows // n_minibatches, batch_multiple,
                                                                config.data.max_prompt_len, rl.max_new_tokens)
    self.step_seconds: list[float] = []
    self.totals = {'time/sampling_seconds': 0.0, 'time/judging_seconds': 0.0, 'time/update_seconds': 0.0}
    storage.makedirs(storage.join(workdir, 'samples'))

  def step(self, state, step: int):
    rl, rows = self.config.rl, self.rows
    compiles_before, t0 = self.compiles.count, time.perf_counter()
    prompts = next(self.data)
    prompt_ids, records, valid_R = rl_rollout.repeat_prompts(prompts, rl.group_size)
    sample = self.sampler(state['params'], prompt_ids, jax.random.fold_in(self.sample_key, step), self.sampling)
    t1 = time.perf_counter()
    rewards = rl_rollout.score(self.tokenizer, records, [sample.completion(i) for i in range(rows)], self.reward_fn,
                               format_penalty=rl.format_penalty, require_cot=rl.require_cot,
                               reasoning=self.config.data.open_reasoning)
    advantages_R = rl_rollout.group_advantages(rewards.reward_R, rl.group_size, rl.scale_by_std, rl.adv_eps) * valid_R
    t2 = time.perf_counter()
    if self.packed_rows:
      local = rl_rollout.pack_rows(prompts, rl.group_size, sample, valid_R, advantages_R, self.packed_rows,
                                   self.n_minibatches, np.random.default_rng([self.config.seed, step]),
                                   row_slots=self.row_slots)
    else:
      local = rl_rollout.build_rows(prompts, rl.group_size, sample, valid_R, advantages_R)
    batch = {k: _global_array(v, self.shardings[k]) for k, v in local.items()}
    logp_ref_BT, score_metrics = self.score_step(state['params'], self.ref_params,
                                                 {k: batch[k] for k in rl_objective.ROLLOUT_FIELDS})
    state, update_metrics = self.update_step(state, {**batch, 'logp_ref_BT': logp_ref_BT})
    # On-policy RL cannot run ahead: the next rollout needs these params and the host needs
    # its tokens, so fetching the metrics now costs no overlap (unlike SFT's late fetch).
    host = {k: float(v) for k, v in jax.device_get({**score_metrics, **update_metrics}).items()}
    t3 = time.perf_counter()
    timing = {'time/sampling_seconds': t1 - t0, 'time/judging_seconds': t2 - t1,
              'time/update_seconds': t3 - t2, 'time/step_seconds': t3 - t0}
    for k in self.totals:
      self.totals[k] += timing[k]
    self.step_seconds.append(t3 - t0)
    host.update(rl_rollout.reward_metrics(rewards, records, valid_R, sample.lengths, rl.group_size))
    host.update(timing)
    host['perf/compiles'] = self.compiles.count - compiles_before
    host['rl/update_padding'] = rl_rollout.update_padding(local)
    host['rl/update_rows'], host['rl/update_row_slots'] = local['tokens_BL'].shape
    host['rl/judge_truncated_total'] = self.judge.truncated if self.judge else 0
    return state, host

  def fetch(self, step: int, out: dict[str, float]) -> dict[str, float]:
    return out

  def report(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
    _report(step, self.config.total_steps, metrics, self.step_seconds)
    return metrics

  def evaluate(self, params, step: int, when: str) -> dict[str, float]:
    return self.evaluator(params, step, self.workdir)

  def summarize(self, summary: dict, when: str, metrics: dict[str, float]) -> None:
    if when == loop.DURING:
      return
    suffix = '_start' if when == loop.START else '_end'
    for key in ('eval/mean_reward', 'eval/decision_accuracy'):
      summary[key + suffix] = metrics.get(key)

  def final(self, last: dict[str, float]) -> dict[str, Any]:
    n = max(len(self.step_seconds), 1)
    return {**{k.replace('_seconds', '_seconds_per_step'): v / n for k, v in self.totals.items()},
            'final_train_reward': last.get('rl/reward'), 'prompts': self.data.stats(),
            'judge_truncated': self.judge.truncated if self.judge else 0}


def train(config, workdir: str, devices=None) -> dict[str, Any]:
  """`devices`: default all of them."""
  rl_rollout.check_label_weight(config.rl.label_reward)  # before any model is opened
  sources = source.run_sources(config)  # policy and judge, each opened once for the whole run
  require_inputs(config, sources)
  compiles = CompileCounter()
  run = loop.begin(config, workdir, devices, sources)  # the tokenizer is the one the policy was trained with
  tokenizer, spec = run.tokenizer, run.spec
  # before any loading: a judge we cannot prompt fails fast
  judged = uses_judge(config)
  judge_src = run.sources['judge_init'] if judged else None  # require_inputs found it
  judge_fmt = judge_format.resolve(judge_src, config.judge, spec.version, log=runtime.log) if judged else None
  policy_cfg, policy_src = state_lib.model_config_for(config, tokenizer, 'policy_init', run.sources)
  grown = state_lib.new_token_rows(config, policy_cfg, policy_src)
  if grown and grown[0] <= tokenizer.think_id < grown[1]:
    # A pretrained model shown the <think> row it has never seen ends its turn at once (SmolLM2: 94-97%
    # of samples, so nearly every reward was the format penalty): it answers in its own format instead.
    config.data.open_reasoning = False
    runtime.log('policy_init has no trained reasoning marker: its prompts do not open a reasoning block '
                '(direct answers are judged)')
  if judged:
    judge_cfg = state_lib.architecture(config.model, judge_src, 'judge_init')
    judge_tok = judge_load.judge_tokenizer(config, tokenizer, judge_src)  # Judge checks it against judge_cfg
  grader = graders.get_grader(generation.DEFAULT_GRADER)  # the decision reader of the eval's decision accuracy

  rows, n_minibatches = check_shapes(config, run.batch_multiple)
  # The optimizer's schedule counts updates, several per RL step.
  start = run.restore(policy_cfg, config.total_steps * config.rl.ppo_epochs * n_minibatches, policy_src)
  setup, state = start.setup, start.state
  ref_params = state_lib.load_init_params(setup, policy_src)  # frozen: never donated or updated
  runtime.log(f'start: {start.how}; mesh {dict(setup.mesh.shape)}; spec {spec.version}')
  judge = judge_fn = None
  if judged:
    judge_params = state_lib.load_params(judge_src, judge_cfg,
                                         loading.abstract_params(judge_cfg, setup.mesh, setup.rules))
    runtime.log(f'judge {runtime.bytes_per_device(judge_params):,} parameter bytes per device '
                f'[{judge_cfg.param_count():,} parameters]; reward: {1 - config.rl.label_reward:g} x judge + '
                f'{config.rl.label_reward:g} x label agreement')
    judge = judge_load.rl_judge(config, judge_cfg, judge_tok, spec, rows, run.batch_multiple, judge_fmt,
                                setup.mesh, setup.rules)
    judge_fn = lambda triples: judge.scores(judge_params, triples, use_prefix_cache=config.judge.use_prefix_cache)
  else:
    runtime.log(f'reward: label agreement only (rl.label_reward=1, read by the {grader.name} grader); no judge')
  runtime.log('parameter bytes per device: '
              f'policy {runtime.bytes_per_device(state["params"]):,} (+ optimizer '
              f'{runtime.bytes_per_device(state["opt_state"]):,}), reference {runtime.bytes_per_device(ref_params):,} '
              f'[{policy_cfg.param_count():,} parameters]')
  reward_fn = rl_rollout.answer_reward(judge_fn, config.rl.label_reward, grader)
  evaluator = Evaluator(config, policy_cfg, tokenizer, spec, reward_fn, run.batch_multiple, setup.mesh, setup.rules)
  job = RLJob(config, workdir, start, tokenizer=tokenizer, judge=judge, reward_fn=reward_fn, evaluator=evaluator,
              ref_params=ref_params, rows=rows, n_minibatches=n_minibatches, batch_multiple=run.batch_multiple,
              compiles=compiles)
  return loop.train(run, start, job)


def _report(step: int, total: int, m: dict[str, float], step_seconds: list[float]) -> None:
  recent = step_seconds[-10:]
  eta = (total - step) * sum(recent) / len(recent)
  runtime.log(
      f'step {step:>5}/{total}  reward {m["rl/reward"]:+.3f} (format {m["rl/format_valid"]:.2f})  '
      f'kl {m["rl/kl"]:.4f}  entropy {m["rl/entropy"]:.3f}  clip {m["rl/clip_fraction"]:.3f}  '
      f'mismatch {m["rl/logp_mismatch"]:.1e}  len {m["rl/response_tokens"]:.0f} (cot {m["rl/cot_tokens"]:.0f})  '
      f'time sample {m["time/sampling_seconds"]:.1f}s judge {m["time/judging_seconds"]:.1f}s '
      f'update {m["time/update_seconds"]:.1f}s  ETA {int(eta) // 60}:{int(eta) % 60:02d}')
