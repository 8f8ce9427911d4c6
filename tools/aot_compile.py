"""Compile a config's programs for a real TPU slice on this machine, and say whether they fit.

  pip install -r requirements.txt -r requirements-tpu.txt      # libtpu; nothing else needs it
  python tools/aot_compile.py --config configs/sft.py:size=llama3.1-8b --topology v5p:2x2x2
  python tools/aot_compile.py --config configs/rl.py:size=llama3.1-8b --topology v5p:4x4x4 \\
      --json runs/aot/rl_8b_v5p64.json

No TPU is needed: libtpu compiles for the named topology (`jax.experimental.topologies`) on
the CPU. Every program is the trainer's own (the same step builders, shardings and donation),
lowered with abstract sharded inputs, so nothing is allocated:
  sft / judge trainer: `train_step` (forward + backward + optimizer update of one global batch);
  rl: `update` (PPO epochs over the rollout), `score` (policy + reference log-probs),
      `sample` (prefill + decode of the rollout) and `judge` (the judge's scoring pass).
For each: per-chip HBM (arguments, temporaries, outputs, total) against the chip's capacity,
compile time, and FLOPs per chip with the step time they imply at 40% / 60% MFU. RL keeps the
policy state, the reference and the judge resident on one mesh, so its peak is those bytes plus
the largest program's working set; the report says "fits" or "does not fit" by how much, and then
(unless --nosuggest) what would fit: FSDP over every chip, full remat, a halved batch or sequence,
each compiled alone with the peak per chip it reaches, until one fits (`suggest`).
Step times use model FLOPs (6N per trained token + attention, 2N per forward token): XLA's own
count, also shown, counts a scanned or looped body once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time

# Compiling for a TPU topology needs the CPU as the host platform; set before jax is imported.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# libtpu takes an exclusive lock (/tmp/libtpu_lockfile) for the chips it drives; compiling drives
# none, so it must not wait on (or block) another process that loaded libtpu on this machine.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402


FLAGS = flags.FLAGS
GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: int
  bf16_flops: float  # peak dense bf16 FLOP/s per chip, from the vendor's published figures


# Per chip (Google Cloud TPU documentation, system architecture pages).
CHIPS = {
    'v4': Chip(32 * GIB, 275e12),
    'v5e': Chip(16 * GIB, 197e12),
    'v5p': Chip(95 * GIB, 459e12),
    'v6e': Chip(32 * GIB, 918e12),
}


def chip_for(topology: str) -> Chip:
  generation = topology.split(':')[0]
  if generation not in CHIPS:
    raise ValueError(f'--topology={topology!r}: expected GENERATION:SHAPE with GENERATION one of {sorted(CHIPS)}')
  return CHIPS[generation]


def topology_devices(topology: str) -> list:
  chip_for(topology)
  from jax.experimental import topologies
  try:
    return list(topologies.get_topology_desc(platform='tpu', topology_name=topology).devices)
  except Exception as e:  # libtpu absent, or a shape the generation does not have
    raise ValueError(f'--topology={topology!r}: {type(e).__name__}: {e} (is libtpu installed? '
                     'pip install -r requirements-tpu.txt)') from e


@dataclasses.dataclass
class Program:
  name: str
  argument_bytes: int
  temp_bytes: int
  output_bytes: int
  alias_bytes: int  # outputs written in place of donated arguments (the train state)
  resident_argument_bytes: int  # of the arguments: state that stays on the chips between programs
  flops: float  # XLA's count: a scan or while loop's body counted once, not per iteration
  compile_seconds: float
  model_flops: float = 0.0  # per chip, from the shapes (6N per trained token, 2N per forward token)
  error: str = ''  # the compiler's refusal, when the program cannot fit at all
  # Call sites of Mosaic (Pallas) kernels in the compiled program: splash attention's forward, dQ and
  # dKV per attention layer (once for scanned layers); 0 says attention ran as XLA ops.
  pallas_kernels: int = 0

  @property
  def total_bytes(self) -> int:
    return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

  @property
  def working_bytes(self) -> int:
    """What the program needs beyond the resident state: temporaries, new outputs, its inputs."""
    return self.total_bytes - self.resident_argument_bytes


def bytes_per_chip(tree) -> int:
  """Bytes one chip holds of a tree of sharded ShapeDtypeStructs (the largest shard of each)."""
  import jax
  import numpy as np
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, 'sharding', None) is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


_UNITS = {'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4}
_TOO_BIG = re.compile(r'RESOURCE_EXHAUSTED: .*?HLO temporaries \(([\d.]+)([KMGT])\)')


def model_flops(cfg, tokens: int, seq_len: int, chips: int, *, passes: float) -> float:
  """Per chip: `passes` = 3 for forward + backward (the 6N of training), 1 for a forward pass."""
  from deliberative.trainers.metrics import flops_per_token
  return flops_per_token(cfg, seq_len) / 3 * passes * tokens / chips


def compile_program(name: str, jitted, args, resident_args=(), flops: float = 0.0) -> Program:
  """Compiled for the topology. A program whose temporaries alone exceed HBM is refused by the TPU
  compiler; that refusal names the bytes needed, which are reported (arguments then unknown: 0)."""
  import jax
  start = time.perf_counter()
  resident = sum(bytes_per_chip(a) for a in resident_args)
  try:
    compiled = jitted.lower(*args).compile()
  except jax.errors.JaxRuntimeError as e:
    match = _TOO_BIG.search(str(e))
    if match is None:
      raise
    temp = int(float(match.group(1)) * _UNITS[match.group(2)])
    return Program(name, resident, temp, 0, 0, resident, 0.0, time.perf_counter() - start, flops,
                   error=str(e).splitlines()[0])
  seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return Program(name, mem.argument_size_in_bytes, mem.temp_size_in_bytes, mem.output_size_in_bytes,
                 mem.alias_size_in_bytes, resident, float((cost or {}).get('flops', 0.0)), seconds, flops,
                 pallas_kernels=compiled.as_text().count('custom_call_target="tpu_custom_call"'))


def _abstract(shape, dtype, sharding):
  import jax
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def supervised_programs(config, mesh, wanted) -> tuple[dict, list[Program]]:
  import jax.numpy as jnp
  from deliberative.trainers import state as state_lib
  from deliberative.trainers import supervised
  model_cfg = supervised.model_config(config)
  setup = state_lib.make_setup(config, model_cfg, config.total_steps, mesh=mesh)
  batch = {k: _abstract((config.batch_size, config.data.seq_len), jnp.float32 if k == 'weights' else jnp.int32,
                        setup.batch_sharding()) for k in supervised.BATCH_FIELDS}
  programs = []
  if 'train_step' in wanted:
    step = supervised.make_train_step(setup, config.optim.accum_steps)
    L = config.data.seq_len
    flops = model_flops(model_cfg, config.batch_size * L, L, mesh.size, passes=3)
    programs.append(compile_program('train_step', step, (setup.abstract_state, batch), (setup.abstract_state,), flops))
  resident = {'train state': bytes_per_chip(setup.abstract_state)}
  shape = {'model': model_cfg, 'tokens per step': config.batch_size * config.data.seq_len,
           'batch': f'{config.batch_size} x {config.data.seq_len}'}
  return {'resident': resident, **shape}, programs


def rl_programs(config, mesh, wanted) -> tuple[dict, list[Program]]:
  import jax
  import jax.numpy as jnp
  from deliberative.judge import format as judge_format
  from deliberative.judge import load as judge_load
  from deliberative.model import loading, sharding
  from deliberative.weights import source
  from deliberative.model.config import ModelConfig
  from deliberative.inference.sampler import Sampler, SamplingParams
  from deliberative.spec import Spec
  from deliberative.trainers import rl, rl_objective, rl_rollout
  from deliberative.trainers import state as state_lib

  # Pod runs start from checkpoints that are not on this machine: a missing policy_init or
  # judge_init is compiled with config.model's architecture (the report names which).
  policy_found, judge_found = source.find(config.policy_init), source.find(config.judge_init)
  policy_cfg = rl.model_config(config) if policy_found else ModelConfig.from_dict(config.model)
  judge_cfg = (state_lib.architecture(config.model, config.judge_init, 'judge_init') if judge_found
               else ModelConfig.from_dict(config.model))
  rules = sharding.normalize_rules(config.mesh.rules)
  batch_multiple = sharding.batch_multiple(mesh, rules)
  rows, n_minibatches = rl.check_shapes(config, batch_multiple)
  setup = state_lib.make_setup(config, policy_cfg, config.total_steps * config.rl.ppo_epochs * n_minibatches,
                               mesh=mesh)
  params = setup.abstract_state['params']
  judge_params = loading.abstract_params(judge_cfg, mesh, rules)
  P, T = config.data.max_prompt_len, config.rl.max_new_tokens
  # A packed update's worst case: its largest row count, every row full, each slot's target scored
  # (rl_rollout.pack_rows); rows of L = k x (P + T) slots with rl.pack_row_rollouts = k.
  counts, L = rl_rollout.packed_layout(config.rl, rows // n_minibatches, batch_multiple, P, T)
  update_rows = max(counts) * n_minibatches if counts else rows
  T_fields = L - 1 if config.rl.pack_updates else T
  row_shapes = {'tokens_BL': ((update_rows, L), jnp.int32), 'positions_BL': ((update_rows, L), jnp.int32),
                'segment_ids_BL': ((update_rows, L), jnp.int32),
                **{k: ((update_rows, T_fields), jnp.int32 if k == 'completion_BT' else jnp.float32)
                   for k in ('completion_BT', 'mask_BT', 'logp_old_BT', 'logp_ref_BT', 'advantages_BT')}}
  shardings = rl_objective.field_shardings(setup, rl_objective.UPDATE_FIELDS)
  batch = {k: _abstract(*row_shapes[k], shardings[k]) for k in rl_objective.UPDATE_FIELDS}
  rollout = {k: batch[k] for k in rl_objective.ROLLOUT_FIELDS}
  objective = rl_objective.Objective(temperature=config.rl.temperature, clip_eps=config.rl.clip_eps,
                                     kl_coef=config.rl.kl_coef)
  replicated = setup.replicated()
  chips, row_tokens = mesh.size, update_rows * L
  programs = []
  if 'update' in wanted:
    update = rl_objective.make_update_step(setup, objective, config.rl.ppo_epochs, n_minibatches,
                                           presplit=config.rl.pack_updates)
    flops = model_flops(policy_cfg, row_tokens * config.rl.ppo_epochs, L, chips, passes=3)
    programs.append(compile_program('update', update, (setup.abstract_state, batch), (setup.abstract_state,), flops))
  if 'score' in wanted:
    score = rl_objective.make_score_step(setup, objective, n_minibatches)
    flops = model_flops(policy_cfg, row_tokens, L, chips, passes=2)  # policy and reference
    programs.append(compile_program('score', score, (params, params, rollout), (params, params), flops))
  if 'sample' in wanted:
    sampler = Sampler(policy_cfg, stop_ids=(0,), length_buckets=(P,), batch_buckets=(rows,),
                      batch_multiple=batch_multiple, mesh=mesh, rules=rules)
    sampling = SamplingParams(temperature=config.rl.temperature, top_k=config.rl.top_k, top_p=config.rl.top_p,
                              max_new_tokens=T)
    key = jax.eval_shape(lambda: jax.random.key(0))
    prompt = [_abstract((rows, P), jnp.int32, replicated) for _ in range(3)]
    args = (params, *prompt, _abstract((rows,), jnp.int32, replicated),
            _abstract(key.shape, key.dtype, replicated), sampling)
    flops = model_flops(policy_cfg, row_tokens, P + T, chips, passes=1)
    programs.append(compile_program('sample', sampler._generate, args, (params,), flops))
  if 'judge' in wanted:
    # The judge's scoring pass over whole prompts (spec + rubric + request + answer), its largest
    # program; the prefix-cache path scores shorter suffixes against a cached spec.
    tokenizer = source.run_tokenizer(config)
    if judge_found:
      fmt = judge_format.resolve(config.judge_init, config.judge, log=lambda _: None)
      judge_tok = judge_load.judge_tokenizer(config, tokenizer)
    else:  # what a judge without a record is prompted with, as config.judge sets it
      fmt = judge_format.unrecorded(config.judge)
      judge_tok = tokenizer
    judge = judge_load.rl_judge(config, judge_cfg, judge_tok, Spec.load(config.spec or None),
                                rows, batch_multiple, fmt, mesh, rules)
    L = judge.length_buckets[-1]
    B = judge.batch_buckets[-1]
    inputs = [_abstract((B, L), jnp.int32, replicated) for _ in range(3)] + [_abstract((B,), jnp.int32, replicated)]
    # A jit with static self (static_argnums=0): lowered through the class, self passed first.
    flops = model_flops(judge_cfg, B * L, L, chips, passes=1)
    programs.append(compile_program('judge', type(judge)._full_logprobs, (judge, judge_params, *inputs),
                                    (judge_params,), flops))
  resident = {'policy state': bytes_per_chip(setup.abstract_state), 'reference': bytes_per_chip(params),
              'judge': bytes_per_chip(judge_params)}
  shape = {'model': policy_cfg, 'judge model': judge_cfg, 'rows': rows,
           'architectures from': {'policy': config.policy_init if policy_found else 'config.model',
                                  'judge': config.judge_init if judge_found else 'config.model'},
           'rollout': f'{rows} rows x ({P} prompt + {T} new)'}
  return {'resident': resident, **shape}, programs


PROGRAMS = {'sft': ('train_step',), 'judge': ('train_step',), 'rl': ('update', 'score', 'sample', 'judge')}


def report(config, topology: str, wanted=()) -> dict:
  import jax
  from deliberative import config_lib
  from deliberative.model import sharding
  chip = chip_for(topology)
  devices = topology_devices(topology)
  trainer = config.trainer
  if trainer not in PROGRAMS:
    raise ValueError(f'config.trainer={trainer!r}: no programs known (known: {sorted(PROGRAMS)})')
  unknown = sorted(set(wanted) - set(PROGRAMS[trainer]))
  if unknown:
    raise ValueError(f'--programs: {unknown} are not programs of the {trainer} trainer {PROGRAMS[trainer]}')
  wanted = tuple(wanted) or PROGRAMS[trainer]
  config_lib.validate(config, len(devices))
  mesh = sharding.make_mesh(config.mesh, devices)
  build = rl_programs if trainer == 'rl' else supervised_programs
  info, programs = build(config, mesh, wanted)
  resident = sum(info['resident'].values())
  peak = resident + max((p.working_bytes for p in programs), default=0)
  out = {
      'topology': topology, 'chips': len(devices), 'device_kind': devices[0].device_kind,
      'jax': jax.__version__, 'mesh': dict(mesh.shape), 'trainer': trainer,
      'hbm_per_chip_bytes': chip.hbm_bytes, 'bf16_peak_flops_per_chip': chip.bf16_flops,
      'model': info.pop('model').to_dict(), **{k: (v.to_dict() if hasattr(v, 'to_dict') else v) for k, v in info.items()},
      'programs': [dict(dataclasses.asdict(p), total_bytes=p.total_bytes, working_bytes=p.working_bytes,
                        seconds_at_40_mfu=p.model_flops / (0.4 * chip.bf16_flops),
                        seconds_at_60_mfu=p.model_flops / (0.6 * chip.bf16_flops)) for p in programs],
      'peak_bytes_per_chip': peak, 'fits': peak <= chip.hbm_bytes, 'excess_bytes': max(0, peak - chip.hbm_bytes),
  }
  return out


def _attention(m: dict) -> str:
  name = m.get('attention', 'xla')
  return f'{name} (block {m["attention_block"]})' if name in ('chunked', 'splash') else name


def _candidates(config, chips: int) -> list[dict]:
  """Changes that lower the memory per chip, in the order to try them, each alone on top of `config`:
  parameters and optimizer state sharded over every chip (FSDP); full remat (activations recomputed in
  the backward pass); then, for the supervised trainers, fewer tokens per step (batch, then sequence
  length, each halved up to four times; a list is one such series)."""
  out = []
  if config.mesh.data != 1 or config.mesh.fsdp not in (-1, chips):
    out.append({'mesh.data': 1, 'mesh.fsdp': -1})
  if config.model.remat != 'full':
    out.append({'model.remat': 'full'})
  if config.trainer in ('sft', 'judge'):
    for field, value in (('batch_size', config.batch_size), ('data.seq_len', config.data.seq_len)):
      halvings = []
      while value % 2 == 0 and len(halvings) < 4:
        value //= 2
        halvings.append({field: value})
      out.append(halvings)
  return out


def suggest(config, topology: str, wanted, r: dict, compile_report=None) -> list[dict]:
  """For a report that does not fit: each candidate change compiled, with the peak per chip it
  reaches, until one fits (each is a full compile, so the search stops there). A halving series
  stops at its first fitting value. An invalid change (a batch the mesh cannot divide) is skipped
  with the reason."""
  import copy
  compile_report = compile_report or report
  tried = []
  for candidate in _candidates(config, r['chips']):
    for change in candidate if isinstance(candidate, list) else [candidate]:
      variant = copy.deepcopy(config)
      variant.update_from_flattened_dict(change)
      flags_text = ' '.join(f'--config.{k}={v}' for k, v in change.items())
      try:
        got = compile_report(variant, topology, wanted)
      except ValueError as e:
        tried.append({'change': flags_text, 'error': str(e).splitlines()[0]})
        break
      tried.append({'change': flags_text, 'peak_bytes_per_chip': got['peak_bytes_per_chip'], 'fits': got['fits'],
                    'mesh': got['mesh']})
      if got['fits']:
        return tried
  return tried


def format_report(r: dict) -> str:
  gib = lambda b: f'{b / GIB:.2f}'
  m = r['model']
  lines = [f'{r["trainer"]} on {r["topology"]} ({r["chips"]} x {r["device_kind"]}, {gib(r["hbm_per_chip_bytes"])} GiB '
           f'HBM each), mesh {r["mesh"]}; model {m["n_layers"]} layers x d{m["d_model"]}, vocab {m["vocab_size"]:,}, '
           f'{m["dtype"]} compute / {m["param_dtype"]} params, remat {m["remat"]}, '
           f'scan {m.get("scan_layers", False)}, loss_chunk {m["loss_chunk"]}, attention {_attention(m)}',
           '', '| program | arguments GiB | temporaries GiB | outputs GiB | aliased GiB | total GiB | compile s '
           '| model TFLOP per chip | XLA TFLOP per chip | s at 40% MFU | s at 60% MFU |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for p in r['programs']:
    lines.append(f'| {p["name"]} | {gib(p["argument_bytes"])} | {gib(p["temp_bytes"])} | {gib(p["output_bytes"])} | '
                 f'{gib(p["alias_bytes"])} | {gib(p["total_bytes"])} | {p["compile_seconds"]:.0f} | '
                 f'{p["model_flops"] / 1e12:.1f} | {p["flops"] / 1e12:.1f} | {p["seconds_at_40_mfu"]:.2f} | '
                 f'{p["seconds_at_60_mfu"]:.2f} |')
    if p.get('pallas_kernels'):
      lines.append(f'|  ^ {p["pallas_kernels"]} Pallas kernel call sites in the compiled program | | | | | | | | | | |')
    if p['error']:
      lines.append(f'|  ^ refused by the TPU compiler: {p["error"]} | | | | | | | | | | |')
  resident = ', '.join(f'{k} {gib(v)}' for k, v in r['resident'].items())
  verdict = 'fits' if r['fits'] else f'does NOT fit: {gib(r["excess_bytes"])} GiB over'
  lines += ['', f'resident per chip (GiB): {resident}',
            f'peak per chip: {gib(r["peak_bytes_per_chip"])} of {gib(r["hbm_per_chip_bytes"])} GiB -> {verdict}']
  if r.get('suggestions'):
    lines += ['', 'what would fit (each change alone, compiled):']
    for t in r['suggestions']:
      if 'error' in t:
        lines.append(f'  {t["change"]}: not valid here ({t["error"]})')
      else:
        over = t['peak_bytes_per_chip'] - r['hbm_per_chip_bytes']
        lines.append(f'  {t["change"]}: {gib(t["peak_bytes_per_chip"])} GiB per chip, mesh {t["mesh"]} -> '
                     + ('fits' if t['fits'] else f'still {gib(over)} GiB over'))
    if not any(t.get('fits') for t in r['suggestions']):
      lines.append('  none of these alone fits: combine them, or use a larger slice')
  elif r.get('suggestions') == []:
    lines += ['', 'no change to try: the mesh is FSDP over every chip, remat is full and the batch cannot be halved']
  return '\n'.join(lines)


def define_flags() -> None:
  """Only when run as a program: tests import this module beside deliberative.train's flags."""
  config_flags.DEFINE_config_file('config', None, 'Config file, optionally with ":arg".', lock_config=True)
  flags.DEFINE_string('topology', None, 'TPU slice, GENERATION:SHAPE, e.g. v5p:2x2x2, v5e:4x4, v6e:8x8.')
  flags.DEFINE_list('programs', [], 'Subset to compile (default: all of the trainer\'s): '
                    'train_step; update, score, sample, judge.')
  flags.DEFINE_string('json', None, 'Also write the report as JSON here.')
  flags.DEFINE_bool('suggest', True, 'When it does not fit, compile the changes that would lower the memory '
                    '(FSDP over every chip, full remat, smaller batch or sequence) until one fits, and report '
                    'each one\'s peak per chip.')
  flags.mark_flags_as_required(['config', 'topology'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  from deliberative.common import cli, errors
  try:
    r = report(FLAGS.config, FLAGS.topology, FLAGS.programs)
    if not r['fits'] and FLAGS.suggest:
      r['suggestions'] = suggest(FLAGS.config, FLAGS.topology, FLAGS.programs, r)
  except errors.USER_ERRORS as e:
    cli.fail(e, sys.argv)
  print(format_report(r), flush=True)
  if FLAGS.json:
    from deliberative.common.io import write_text
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
    write_text(FLAGS.json, json.dumps(r, indent=1, default=str) + '\n')
  return 0


if __name__ == '__main__':
  from deliberative.common import cli
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
