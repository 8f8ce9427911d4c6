"""Speed against peers, in one run: train steps, sampler decode and an RL step's time split.

  python tools/benchmark.py [--out runs/benchmark] [--parts train,decode,rl] [--shapes tiny,small,smollm2]
      [--rounds 3]

Everything is measured in this one process, on the same cores, fp32, random weights (a step's
cost does not depend on their values), each figure the median of `--rounds` timed repetitions
after an untimed warm-up (compilation, caches):

  train   tokens/s and MFU of one optimizer step: ours (the jit'd SFT step) vs `transformers`
          LlamaForCausalLM + torch AdamW (tools/bench_train_step.py, shared). Batch x length:
          tiny 16 x 256, small 8 x 512, smollm2 4 x 256 (SmolLM2-135M's shape: 30 layers, vocab
          49,152). MFU = tokens/s x training FLOPs per token (trainers/metrics.py) / the FLOP/s of
          a large fp32 matmul measured here: the same denominator for both sides.
  decode  greedy tokens/s at batch 1 and 8, 64 random prompt ids, 128 new tokens (stop ids that
          never occur, so every row generates all 128): our Sampler vs `transformers` generate
          vs Tunix's Sampler on its own Llama3 model (tunix.models.llama3) at the same shape. The
          three models hold different random weights: this compares speed at equal shapes only.
  rl      one RL step of the tiny demo (configs/rl.py: 8 prompts x 4 samples, 64 + 128 slots) timed
          by phase (sampling, judging, update = scoring + PPO update) as trainers/rl.py does,
          random-weight policy and judge, demo `rl` prompts; and the share of the update's row
          slots that is padding, from that step's real prompt and completion lengths.

Writes benchmark.json (every timing, versions, errors) and benchmark.md (the table, with the
issue's targets) in --out, after each measurement, atomically. A peer that cannot run here
gets its exact error in the table instead of a number. Needs requirements-test.txt (torch,
transformers) and requirements-bench.txt (Tunix). Never run inside the timed test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

PARTS = ('train', 'decode', 'rl')
SHAPES = ('tiny', 'small', 'smollm2')
# (batch, sequence length) of a train step: the presets' demo shapes, and a small batch at SmolLM2's
# shape so its 30 layers stay fast on a CPU.
TRAIN_SHAPES = {'tiny': (16, 256), 'small': (8, 512), 'smollm2': (4, 256)}
DECODE_BATCHES = (1, 8)
PROMPT_LEN = 64
NEW_TOKENS = 128
# The issue's targets: ours / peer at least this much; RL update padding at most this fraction.
TRAIN_TARGET = 1.0
DECODE_TUNIX_TARGETS = {1: 1.5, 8: 2.0}
PADDING_TARGET = 0.25

_START = time.perf_counter()


def log(message: str) -> None:
  print(f'[benchmark {time.perf_counter() - _START:7.1f}s] {message}', flush=True)


# -- pure helpers (tests/test_benchmark.py) ----------------------------------------------------------

def median(seconds: list[float]) -> float:
  return float(np.median(seconds))


def ratio(ours: dict, peer: dict, key: str) -> float | None:
  """ours[key] / peer[key], or None when either side has no measurement (an error)."""
  if key not in ours or key not in peer or not peer[key]:
    return None
  return ours[key] / peer[key]


def padding_fraction(prompt_lens, completion_lens, max_prompt_len: int, max_new_tokens: int) -> float:
  """1 - real (prompt + completion) tokens / (rows x (max_prompt_len + max_new_tokens)): the share
  of an RL update's row slots that carry no token, hence FLOPs spent on padding."""
  prompt_lens, completion_lens = np.asarray(prompt_lens), np.asarray(completion_lens)
  if prompt_lens.shape != completion_lens.shape:
    raise ValueError(f'{prompt_lens.shape} prompt lengths but {completion_lens.shape} completion lengths')
  slots = prompt_lens.size * (max_prompt_len + max_new_tokens)
  return 1.0 - float(prompt_lens.sum() + completion_lens.sum()) / slots


def attempt(what: str, fn: Callable[[], dict]) -> dict:
  """fn()'s measurement, or {'error': the exact exception} so the table says why, never omits it."""
  log(f'{what} ...')
  try:
    out = fn()
  except Exception as e:  # a peer that cannot run here is a result too
    out = {'error': f'{type(e).__name__}: {e}'}
    log(f'{what}: FAILED {out["error"]}')
    return out
  shown = {k: v for k, v in out.items() if k not in ('seconds', 'steps', 'note')}
  log(f'{what}: {shown}')
  return out


# -- the table ---------------------------------------------------------------------------------------

def _num(x: float | None, fmt: str = ',.0f') -> str:
  return '—' if x is None else format(x, fmt)


def _side(side: dict, key: str, fmt: str = ',.0f') -> str:
  if 'error' in side:
    return 'error: ' + side['error'].replace('|', '/').replace('\n', ' ')[:300]
  return _num(side.get(key), fmt)


def _verdict(value: float | None, target: float | None, at_least: bool = True) -> str:
  if value is None or target is None:
    return '—'
  return 'yes' if (value >= target if at_least else value <= target) else 'no'


def _train_rows(entry: dict) -> list[list[str]]:
  ours, peer = entry['ours'], entry['transformers']
  shape = f"{entry['shape']} {entry['batch']}x{entry['seq_len']}"
  r = ratio(ours, peer, 'tokens_per_s')
  return [
      ['train', shape, 'tokens/s', _side(ours, 'tokens_per_s'), 'transformers', _side(peer, 'tokens_per_s'),
       _num(r, '.2f') + ('x' if r is not None else ''), f'>= {TRAIN_TARGET:.1f}x', _verdict(r, TRAIN_TARGET)],
      ['train', shape, 'MFU %', _side(ours, 'mfu_percent', '.2f'), 'transformers',
       _side(peer, 'mfu_percent', '.2f'), '', '', ''],
  ]


def _decode_rows(entry: dict) -> list[list[str]]:
  shape = f"{entry['shape']} batch {entry['batch']}"
  ours, rows = entry['ours'], []
  for peer_name in ('tunix', 'transformers'):
    peer = entry[peer_name]
    r = ratio(ours, peer, 'tokens_per_s')
    target = DECODE_TUNIX_TARGETS.get(entry['batch']) if peer_name == 'tunix' else None
    rows.append(['decode', shape, 'tokens/s', _side(ours, 'tokens_per_s'), peer_name, _side(peer, 'tokens_per_s'),
                 _num(r, '.2f') + ('x' if r is not None else ''),
                 f'>= {target:.1f}x' if target else '—', _verdict(r, target)])
  if 'kernels_per_token' in ours:
    rows.append(['decode', shape, 'kernels per token', _num(ours['kernels_per_token']), '', '', '', '', ''])
  return rows


def _rl_rows(entry: dict) -> list[list[str]]:
  if 'error' in entry:
    return [['rl', 'tiny demo', 'step', 'error: ' + entry['error'][:300], '', '', '', '', '']]
  split = entry['seconds_median']
  total = sum(split.values())
  rows = [['rl', f"tiny {entry['rows']} rows", f'{phase} s', f'{split[phase]:.2f} ({100 * split[phase] / total:.0f}%)',
           '', '', '', '', ''] for phase in ('sampling', 'judging', 'update')]
  pad = entry['padding_fraction']
  layout = 'packed' if entry.get('packed') else 'padded'
  # The other layout's padding for the same rollouts beside it, as a peer (the padded one by arithmetic).
  peer = entry.get('unpacked_padding_fraction') if entry.get('packed') else None
  rows.append(['rl', f"tiny {entry['rows']} rows", f'update padding ({layout})', f'{100 * pad:.1f}%',
               'padded rows' if peer is not None else '', f'{100 * peer:.1f}%' if peer is not None else '', '',
               f'<= {100 * PADDING_TARGET:.0f}%', _verdict(pad, PADDING_TARGET, at_least=False)])
  return rows


HEADER = ['part', 'shape', 'measure', 'ours', 'peer', 'peer value', 'ours / peer', 'target', 'met']


def markdown(report: dict) -> str:
  """The table of `report` (benchmark.json's content): one line per measured figure."""
  rows = [row for e in report.get('train', []) for row in _train_rows(e)]
  rows += [row for e in report.get('decode', []) for row in _decode_rows(e)]
  if 'rl' in report:
    rows += _rl_rows(report['rl'])
  meta = report.get('meta', {})
  lines = ['# Benchmark: ours vs peers, one run', '',
           f"{meta.get('when', '')}; {meta.get('cores', '?')} cores ({meta.get('platform', '')}); "
           f"jax {meta.get('jax', '?')}, torch {meta.get('torch', '?')} ({meta.get('torch_threads', '?')} threads), "
           f"transformers {meta.get('transformers', '?')}, tunix {meta.get('tunix', '?')}; "
           f"median of {meta.get('rounds', '?')} timed rounds after a warm-up; 1-minute load average "
           f"{_num(meta.get('load_average_start'), '.1f')} at the start, {_num(meta.get('load_average_end'), '.1f')} "
           'at the end (other work on the cores slows both sides).', '',
           'fp32, random weights, same shapes. Decode: 64 random prompt ids, 128 greedy tokens, no early stop; '
           "Tunix runs its own Llama3 model (tunix.models.llama3) at the same shape with its own random weights, "
           "transformers a LlamaForCausalLM: a speed comparison at equal shapes, not of outputs. "
           f"MFU against a measured fp32 matmul peak of {_num(meta.get('peak_gflops'), ',.1f')} GFLOP/s.", '',
           '| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  rl = report.get('rl')
  if rl and 'error' not in rl:
    lines += ['', f"RL step: {rl['rows']} rows of {rl['max_prompt_len']} + {rl['max_new_tokens']} slots; "
              f"{rl['note']}"]
  return '\n'.join(lines) + '\n'


def write_outputs(out_dir: str, report: dict) -> None:
  from deliberative.common import io as atomic
  atomic.write_text(os.path.join(out_dir, 'benchmark.json'), json.dumps(report, indent=2, sort_keys=True) + '\n')
  atomic.write_text(os.path.join(out_dir, 'benchmark.md'), markdown(report))


# -- train -------------------------------------------------------------------------------------------

def model_cfg(preset: str):
  from deliberative import config_lib
  from deliberative.model.config import ModelConfig
  return ModelConfig.from_dict(config_lib.model_config(preset))


def _train_side(step_seconds: Callable, cfg, batch: int, seq_len: int, rounds: int, flops_per_token: float,
                peak: float) -> dict:
  import bench_train_step
  seconds = step_seconds(cfg, batch, seq_len, rounds)
  tok_s = bench_train_step.tokens_per_second(batch, seq_len, seconds)
  return {'seconds': seconds, 'tokens_per_s': tok_s, 'mfu_percent': 100 * tok_s * flops_per_token / peak}


def measure_train(preset: str, rounds: int, peak: float) -> dict:
  import bench_train_step
  from deliberative.trainers import metrics
  cfg = model_cfg(preset)
  batch, seq_len = TRAIN_SHAPES[preset]
  fpt = metrics.flops_per_token(cfg, seq_len)
  entry = {'shape': preset, 'batch': batch, 'seq_len': seq_len, 'flops_per_token': fpt}
  entry['ours'] = attempt(f'train {preset} {batch}x{seq_len} ours', lambda: _train_side(
      bench_train_step.ours_step_seconds, cfg, batch, seq_len, rounds, fpt, peak))
  entry['transformers'] = attempt(f'train {preset} {batch}x{seq_len} transformers', lambda: _train_side(
      bench_train_step.peer_step_seconds, cfg, batch, seq_len, rounds, fpt, peak))
  return entry


# -- decode ------------------------------------------------------------------------------------------

def _timed(call: Callable[[], int], rounds: int, batch: int) -> dict:
  """A warm-up call, then `rounds` timed ones; each returns the tokens it generated per row."""
  generated = call()
  if generated != NEW_TOKENS:
    raise RuntimeError(f'generated {generated} tokens per row, expected {NEW_TOKENS}')
  seconds = []
  for _ in range(rounds):
    start = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - start)
  return {'seconds': seconds, 'tokens_per_s': batch * NEW_TOKENS / median(seconds)}


def _prompts(cfg, batch: int) -> np.ndarray:
  # Ids from 1: 0 is every side's pad id, and a prompt made of pads would be masked out.
  return np.random.default_rng(batch).integers(1, cfg.vocab_size, (batch, PROMPT_LEN)).astype(np.int32)


def ours_decode(cfg, batch: int, rounds: int) -> dict:
  import jax
  from deliberative.inference import hlo, policy as inference
  from deliberative.model import loading
  from deliberative.inference.sampler import Sampler, SamplingParams
  # Stop id = vocab_size: never sampled, so all rows run the full 128 steps like the peers.
  sampler = Sampler(cfg, stop_ids=(cfg.vocab_size,), pad_id=0, length_buckets=(PROMPT_LEN,), batch_buckets=(batch,))
  params = inference.random_params(loading.abstract_params(cfg), seed=0)
  prompts = _prompts(cfg, batch).tolist()
  sampling = SamplingParams(temperature=0.0, max_new_tokens=NEW_TOKENS)
  key = jax.random.key(0)

  def call() -> int:
    return int(sampler(params, prompts, key, sampling).lengths.min())
  result = _timed(call, rounds, batch)
  # What a step costs on a CPU: the kernels the compiled decode loop runs per token.
  body = hlo.while_body_instructions(sampler.lower(params, batch, PROMPT_LEN, sampling).compile().as_text())
  return {**result, 'kernels_per_token': hlo.kernel_count(body)}


def transformers_decode(cfg, batch: int, rounds: int) -> dict:
  import torch
  import bench_train_step
  model = bench_train_step.hf_llama(cfg, PROMPT_LEN + NEW_TOKENS).eval()
  ids = torch.from_numpy(_prompts(cfg, batch).astype(np.int64))
  mask = torch.ones_like(ids)

  def call() -> int:
    with torch.inference_mode():
      out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW_TOKENS,
                           min_new_tokens=NEW_TOKENS, pad_token_id=0, eos_token_id=cfg.vocab_size - 1)
    return out.shape[1] - PROMPT_LEN
  return _timed(call, rounds, batch)


def ids_text(ids) -> str:
  return ' '.join(str(int(i)) for i in ids)


class IdsTokenizer:
  """Tunix's sampler takes strings: these are space-separated ids, so its prompts are ours exactly.
  bos 0 adds nothing (Tunix skips a falsy bos); eos = vocab_size is never sampled."""

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def encode(self, text: str, **_) -> list[int]:
    return [int(t) for t in text.split()]

  def decode(self, ids, **_) -> str:
    return ids_text(ids)

  def bos_id(self) -> int:
    return 0

  def eos_id(self) -> int:
    return self.vocab_size

  def pad_id(self) -> int:
    return 0


def tunix_decode(cfg, batch: int, rounds: int) -> dict:
  from flax import nnx
  from tunix.generate import sampler as tunix_sampler
  from tunix.models.llama3 import model as tunix_llama
  if cfg.qkv_bias:
    raise ValueError('tunix.models.llama3 has no q/k/v bias; this shape needs tunix.models.qwen2')
  tcfg = tunix_llama.ModelConfig(
      num_layers=cfg.n_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.d_model, hidden_dim=cfg.ffn_dim,
      num_heads=cfg.n_heads, head_dim=cfg.head_dim_, num_kv_heads=cfg.n_kv_heads, rope_theta=int(cfg.rope_theta),
      norm_eps=cfg.norm_eps, weight_tying=cfg.tie_embeddings)
  model = tunix_llama.Llama3(tcfg, rngs=nnx.Rngs(0))
  cache = tunix_sampler.CacheConfig(cache_size=PROMPT_LEN + NEW_TOKENS, num_layers=cfg.n_layers,
                                    num_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim_)
  sampler = tunix_sampler.Sampler(model, IdsTokenizer(cfg.vocab_size), cache)
  texts = [ids_text(row) for row in _prompts(cfg, batch)]

  def call() -> int:
    out = sampler(texts, max_generation_steps=NEW_TOKENS, max_prompt_length=PROMPT_LEN,
                  eos_tokens=[cfg.vocab_size], temperature=0.0)
    return min(len(t) for t in out.tokens)
  return _timed(call, rounds, batch)


def measure_decode(preset: str, batch: int, rounds: int) -> dict:
  cfg = model_cfg(preset)
  entry = {'shape': preset, 'batch': batch, 'prompt_len': PROMPT_LEN, 'new_tokens': NEW_TOKENS}
  for name, fn in (('ours', ours_decode), ('transformers', transformers_decode), ('tunix', tunix_decode)):
    entry[name] = attempt(f'decode {preset} batch {batch} {name}', lambda fn=fn: fn(cfg, batch, rounds))
  return entry


# -- RL ----------------------------------------------------------------------------------------------

def _judge_format() -> dict:
  """How the demo judge is trained (configs/judge.py), so judging costs what it does in a demo run."""
  import configs.judge
  c = configs.judge.get_config()
  return {'rubric': c.judge.rubric, 'spec_view': c.judge.spec_view, 'max_len': c.data.seq_len,
          'answer_and_cot': c.judge.answer_and_cot}


class RLStep:
  """The pieces of one tiny-demo RL step (trainers/rl.py RLJob.step), random weights, no run dir."""

  def __init__(self, rounds: int):
    import jax
    import configs.rl
    from deliberative.inference import policy as inference
    from deliberative.data import demo, pipeline, schema, tokenized
    from deliberative.judge import load as judge_load
    from deliberative.model import loading, sharding
    from deliberative.spec import Spec
    from deliberative.tokenizer.sentencepiece import Tokenizer
    from deliberative.trainers import rl as rl_trainer
    from deliberative.trainers import state as state_lib
    self.config = config = configs.rl.get_config()
    rl, P = config.rl, config.data.max_prompt_len
    cfg = model_cfg('tiny')
    self.tok, spec = Tokenizer.load(), Spec.load()
    mesh = sharding.make_mesh(config.mesh)
    multiple = sharding.batch_multiple(mesh, sharding.normalize_rules(config.mesh.rules))
    self.rows, n_minibatches = rl_trainer.check_shapes(config, multiple)
    setup = state_lib.make_setup(config, cfg, (rounds + 1) * rl.ppo_epochs * n_minibatches, mesh)
    self.state = state_lib.init_state(setup, config.seed, inference.random_params(setup.abstract_state['params'], 0))
    self.ref_params = inference.random_params(setup.abstract_state['params'], 0)  # the frozen init policy
    judge_params = inference.random_params(loading.abstract_params(cfg, setup.mesh, setup.rules), 1)
    self.judge = judge_load.rl_judge(config, cfg, self.tok, spec, self.rows, multiple, _judge_format(),
                                     setup.mesh, setup.rules)
    self.judge_fn = lambda triples: self.judge.scores(judge_params, triples,
                                                      use_prefix_cache=config.judge.use_prefix_cache)
    (self.sampler, self.sampling, self.score_step, self.update_step,
     self.shardings) = rl_trainer.step_programs(config, setup, self.tok, self.rows, n_minibatches, multiple)
    from deliberative.trainers import rl_rollout
    self.n_minibatches = n_minibatches
    self.packed_rows, self.row_slots = rl_rollout.packed_layout(rl, self.rows // n_minibatches, multiple, P,
                                                                rl.max_new_tokens)
    n = rl.prompts_per_step * (rounds + 1)
    # Normalised as a built dataset holds them (`messages` beside `prompt`).
    records = [schema.validate_record(r, 'demo rl')
               for r in demo.generate(sizes={s: (n if s == 'rl' else 0) for s in demo.SPLITS})['rl']]
    split = tokenized.tokenize_prompts(tokenized.as_records(records), self.tok, max_prompt_len=P,
                                       max_overlong_fraction=config.data.max_overlong_fraction, process_index=0,
                                       process_count=1, where='benchmark: demo rl prompts')
    self.prompts = pipeline.PromptIterator(split, batch_size=rl.prompts_per_step, max_prompt_len=P,
                                           pad_id=self.tok.pad_id, order=list(range(len(split.items))),
                                           signature={'benchmark': True})
    self.key = jax.random.key(config.seed)

  def judge_all(self, records, completion_ids) -> np.ndarray:
    """Every row judged: a random policy rarely writes a well-formed CoT-then-answer, and RL judges
    only those, so judging all rows times a step in which every completion is well formed."""
    triples = []
    for record, ids in zip(records, completion_ids):
      completion = self.tok.parse_completion(ids)
      triples.append((record['category'], record['prompt'], completion.answer or self.tok.decode(ids)))
    return np.asarray(self.judge_fn(triples), np.float32)

  def __call__(self, step: int) -> dict:
    import jax
    from deliberative.trainers import rl_objective, rl_rollout
    rl = self.config.rl
    t0 = time.perf_counter()
    prompts = next(self.prompts)
    prompt_ids, records, valid_R = rl_rollout.repeat_prompts(prompts, rl.group_size)
    sample = self.sampler(self.state['params'], prompt_ids, jax.random.fold_in(self.key, step), self.sampling)
    t1 = time.perf_counter()
    reward_R = self.judge_all(records, [sample.completion(i) for i in range(self.rows)])
    advantages_R = rl_rollout.group_advantages(reward_R, rl.group_size, rl.scale_by_std, rl.adv_eps) * valid_R
    t2 = time.perf_counter()
    if self.packed_rows:
      local = rl_rollout.pack_rows(prompts, rl.group_size, sample, valid_R, advantages_R, self.packed_rows,
                                   self.n_minibatches, np.random.default_rng([self.config.seed, step]),
                                   row_slots=self.row_slots)
    else:
      local = rl_rollout.build_rows(prompts, rl.group_size, sample, valid_R, advantages_R)
    batch = {k: jax.device_put(v, self.shardings[k]) for k, v in local.items()}  # one process holds all rows
    logp_ref_BT, _ = self.score_step(self.state['params'], self.ref_params,
                                     {k: batch[k] for k in rl_objective.ROLLOUT_FIELDS})
    self.state, metrics = self.update_step(self.state, {**batch, 'logp_ref_BT': logp_ref_BT})
    jax.device_get(metrics)
    t3 = time.perf_counter()
    prompt_lens = np.repeat(prompts.lengths, rl.group_size)
    return {'sampling': t1 - t0, 'judging': t2 - t1, 'update': t3 - t2,
            'padding_fraction': rl_rollout.update_padding(local),  # the update as it ran (packed or not)
            'unpacked_padding_fraction': padding_fraction(prompt_lens, sample.lengths,
                                                          self.config.data.max_prompt_len, rl.max_new_tokens),
            'mean_prompt_tokens': float(prompt_lens.mean()), 'mean_completion_tokens': float(sample.lengths.mean()),
            'stopped_rows': int(sample.stopped.sum())}


def measure_rl(rounds: int) -> dict:
  def run() -> dict:
    step = RLStep(rounds)
    log(f'rl: {step.rows} rows; warm-up step (compiles sampler, judge, scoring and update)')
    step(0)
    steps = [step(i + 1) for i in range(rounds)]
    rl = step.config.rl
    return {'rows': step.rows, 'max_prompt_len': step.config.data.max_prompt_len,
            'max_new_tokens': rl.max_new_tokens, 'steps': steps,
            'seconds_median': {k: median([s[k] for s in steps]) for k in ('sampling', 'judging', 'update')},
            'padding_fraction': median([s['padding_fraction'] for s in steps]),
            'unpacked_padding_fraction': median([s['unpacked_padding_fraction'] for s in steps]),
            'packed': bool(rl.pack_updates),
            'note': ('random-weight tiny policy and judge; every row judged (see RLStep.judge_all); update = '
                     'reference scoring + PPO update; padding from the timed steps\' real prompt and completion '
                     'lengths (a random policy seldom stops early: completions near max_new_tokens).')}
  return attempt('rl step', run)


# -- the run -----------------------------------------------------------------------------------------

def _version(package: str) -> str:
  from importlib import metadata
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return 'not installed'


def meta(rounds: int, argv: list[str]) -> dict:
  import jax
  try:
    import torch
    threads = torch.get_num_threads()
  except ImportError:
    threads = None
  return {'when': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'argv': argv, 'rounds': rounds, 'cores': os.cpu_count(),
          'platform': f'{jax.devices()[0].platform}, {platform.machine()}', 'jax': jax.__version__,
          'torch': _version('torch'), 'torch_threads': threads, 'transformers': _version('transformers'),
          'tunix': _version('google-tunix'), 'load_average_start': os.getloadavg()[0]}


def _csv(text: str, known: tuple[str, ...], what: str) -> list[str]:
  items = [t.strip() for t in text.split(',') if t.strip()]
  unknown = sorted(set(items) - set(known))
  if unknown:
    raise SystemExit(f'--{what}: unknown {unknown}; known: {", ".join(known)}')
  return items


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='runs/benchmark')
  parser.add_argument('--parts', default=','.join(PARTS))
  parser.add_argument('--shapes', default=','.join(SHAPES), help='presets for the train and decode parts')
  parser.add_argument('--rounds', type=int, default=3, help='timed repetitions per figure (median reported)')
  args = parser.parse_args(argv)
  parts, shapes = _csv(args.parts, PARTS, 'parts'), _csv(args.shapes, SHAPES, 'shapes')
  if args.rounds < 1:
    raise SystemExit('--rounds must be at least 1')
  report: dict[str, Any] = {'meta': meta(args.rounds, sys.argv[1:] if argv is None else list(argv))}
  if 'train' in parts:
    from deliberative.trainers import metrics
    report['meta']['peak_gflops'] = metrics.measure_peak_flops() / 1e9
    log(f"fp32 matmul peak {report['meta']['peak_gflops']:,.1f} GFLOP/s (the MFU denominator)")
    report['train'] = []
    for preset in shapes:
      report['train'].append(measure_train(preset, args.rounds, report['meta']['peak_gflops'] * 1e9))
      write_outputs(args.out, report)
  if 'decode' in parts:
    report['decode'] = []
    for preset in shapes:
      for batch in DECODE_BATCHES:
        report['decode'].append(measure_decode(preset, batch, args.rounds))
        write_outputs(args.out, report)
  if 'rl' in parts:
    report['rl'] = measure_rl(args.rounds)
  report['meta']['wall_seconds'] = time.perf_counter() - _START
  report['meta']['load_average_end'] = os.getloadavg()[0]
  write_outputs(args.out, report)
  log(f'wrote {os.path.join(args.out, "benchmark.json")} and benchmark.md')
  print(markdown(report), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
