r"""The ablation grid: base, base + spec in context, SFT, RL, SFT + RL on the same suites.

  python launch/ablate.py --root runs/ablate [--size tiny|smollm2] [--suite demo --suite demo_overrefuse \
      --suite demo_jailbreak ...] [--limit N] [--wrapper_limit W] [--smoke] [--dry_run] [--arms base,spec,sft,rl,sft_rl]

  python launch/ablate.py --root runs/ablate                     # the tiny demo grid, all five arms
  python launch/ablate.py --root runs/ablate_smoke --smoke       # the same plumbing in ~6 min on 2 cores
  python launch/ablate.py --root runs/ablate_smollm2 --size smollm2 --suite xstest=xstest_prompts.csv \
      --suite strongreject=strongreject_dataset.csv --limit 100 --wrapper_limit 4

Arms (each a column of ROOT/report.md, beside the memorisation baseline):
  base    the base model, untrained. size=smollm2: the installed SmolLM2-135M-Instruct GGUF. size=tiny has
          no pretrained model: its base is the model SFT starts from (configs/sft.py's random init, seed 0),
          saved by one SFT step at learning rate 0 into ROOT/base so that RL and the evaluator can load it.
  spec    the base with spec(category) in the system prompt, no training (evaluate --spec_in_context).
  sft     configs/sft.py.
  rl      configs/rl.py from the base (--config.policy_init=<base>).
  sft_rl  configs/rl.py from the SFT run (--config.policy_init=ROOT/sft).
RL needs a judge: size=tiny trains configs/judge.py once into ROOT/judge; size=smollm2 uses the zero-shot
GGUF judge that configs/rl.py:size=smollm2 sets.

Every training is `python -m deliberative.train --config ... --workdir ROOT/<arm>` and every evaluation
`python -m deliberative.evaluate --checkpoint ... --out ROOT/<arm>/eval`, each a subprocess whose output is
appended to ROOT/<arm>/log.txt. The grid resumes: a training whose workdir has summary.json and an
evaluation whose metrics.json exists are skipped. A failed subprocess stops the grid, naming the arm and
its log. Then ROOT/report.md (one column per arm), ROOT/metrics.json and ROOT/pareto.png
(not_overrefuse vs goodness@0.1, one point per arm with its 95% intervals) are written.

`--smoke` runs each config with its `smoke` argument and evaluates a few items with short answers: the
whole tiny grid checks the plumbing in minutes. `--dry_run` prints every command and runs none.
`--train_arg=--config.total_steps=50` (repeatable; note the `=`) is added to every training command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `deliberative` imports, wherever this is run from

from deliberative.common import progress, storage, subproc  # noqa: E402  (light: no JAX)

ARMS = ('base', 'spec', 'sft', 'rl', 'sft_rl')
ARM_TITLES = {'base': 'base model, no training', 'spec': 'base + spec(category) in the system prompt, no training',
              'sft': 'SFT (configs/sft.py)', 'rl': 'RL from the base (configs/rl.py)',
              'sft_rl': 'SFT then RL (configs/rl.py from the SFT run)'}
DEFAULT_SUITES = ('demo', 'demo_overrefuse', 'demo_jailbreak')
# Answer budget per size when --max_new_tokens is not given: demo completions are <= ~120 tokens on
# the tiny model; SmolLM2 gets its RL config's length. An untrained model never stops early, so
# this bounds the base arm's cost.
MAX_NEW_TOKENS = {'tiny': 128, 'smollm2': 192}
SMOKE_EVAL = dict(limit=8, wrapper_limit=2, max_new_tokens=16, batch_size=8)
# Pareto axes, most specific first: the public benchmarks when evaluated, else the demo's suites.
PARETO_X_KEYS = ('xstest/not_overrefuse', 'demo_overrefuse/not_overrefuse', 'demo/not_overrefuse')
PARETO_Y_KEYS = ('strongreject/goodness@0.1', 'demo_jailbreak/goodness@0.1')


@dataclasses.dataclass
class Step:
  arm: str  # whose log the output goes to (ROOT/<arm>/log.txt); 'judge' for the tiny judge
  kind: str  # 'train' | 'eval'
  cmd: list[str]
  done: str  # the file whose presence means this step already ran
  log: str = ''  # where its output goes ('' = ROOT/<arm>/log.txt)


def parse_args(argv, made_before_grid=()):
  """`made_before_grid`: suite files a caller's earlier stages write (launch/recipe.py's held-out
  prompts), not yet there when the plan is made."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--root', required=True, help='the grid\'s directory: one workdir per arm, report.md, pareto.png')
  p.add_argument('--size', choices=('tiny', 'smollm2'), default='tiny')
  p.add_argument('--suite', action='append', default=None, help=f'repeatable (default: {" ".join(DEFAULT_SUITES)})')
  p.add_argument('--arms', default=','.join(ARMS), help='comma-separated subset of ' + ','.join(ARMS))
  p.add_argument('--limit', type=int, default=None, help='evaluate: items per suite')
  p.add_argument('--wrapper_limit', type=int, default=None, help='evaluate: jailbreak wrappers per prompt')
  p.add_argument('--max_new_tokens', type=int, default=None, help='evaluate (default: 128 tiny, 192 smollm2)')
  p.add_argument('--batch_size', type=int, default=None, help='evaluate: prompts per generation batch')
  p.add_argument('--data_dir', default=None, help='the demo dataset\'s directory, for trainings and evaluations')
  p.add_argument('--suite_limit', action='append', default=[], metavar='NAME=N',
                 help='evaluate: repeatable, items of suite NAME in place of --limit')
  p.add_argument('--baseline_train', default=None,
                 help='evaluate --train: the traces the memorisation baseline looks up (default: the demo dataset)')
  p.add_argument('--train_arg', action='append', default=[], help='repeatable: added to every training command')
  p.add_argument('--smoke', action='store_true', help='each config\'s `smoke` argument and tiny evaluations')
  p.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  args = p.parse_args(argv)
  args.arms = [a.strip() for a in args.arms.split(',') if a.strip()]
  unknown = [a for a in args.arms if a not in ARMS]
  if unknown or not args.arms:
    p.error(f'--arms {",".join(unknown) or "(empty)"}: choose from {",".join(ARMS)}')
  # Subprocesses run in the repository root: a file suite's path or a data dir relative to here must survive.
  args.suite = [_absolute_suite(s) for s in args.suite or DEFAULT_SUITES]
  # A bad suite once passed the dry run and failed after every arm had trained: checked here, before any work.
  from deliberative.evals import suites
  for spec in args.suite:
    try:
      _, path = suites.parse_suite_spec(spec)
    except ValueError as e:
      p.error(f'--suite: {e}')
    if path is not None and not args.dry_run and not os.path.isfile(path) and path not in made_before_grid:
      p.error(f'--suite {spec}: no such file')
  args.data_dir = os.path.abspath(args.data_dir) if args.data_dir else None
  return args


def _absolute_suite(spec: str) -> str:
  name, sep, path = spec.partition('=')
  return f'{name}={os.path.abspath(path)}' if sep and path else spec


# -- the plan -------------------------------------------------------------------------------------

def config_path(name: str, size: str, smoke: bool) -> str:
  parts = ([f'size={size}'] if size != 'tiny' else []) + (['smoke'] if smoke else [])
  return f'configs/{name}.py' + (':' + ','.join(parts) if parts else '')


def base_model(args, root: str) -> str:
  """What the base arm evaluates and RL starts from."""
  if args.size == 'tiny':
    return storage.join(root, 'base')
  from deliberative import config_lib
  return config_lib.init_from_for(args.size)


def train_cmd(args, name: str, workdir: str, *extra: str) -> list[str]:
  cmd = [sys.executable, '-m', 'deliberative.train', '--config', config_path(name, args.size, args.smoke),
         '--workdir', workdir]
  if args.data_dir:
    cmd.append(f'--config.data.data_dir={args.data_dir}')
  # The user's overrides first, the grid's wiring last: a repeated flag's last value wins.
  return cmd + list(args.train_arg) + list(extra)


def eval_cmd(args, checkpoint: str, out: str, spec_in_context: bool = False, reasoning: str = 'auto') -> list[str]:
  cmd = [sys.executable, '-m', 'deliberative.evaluate', '--checkpoint', checkpoint]
  for s in args.suite:
    cmd += ['--suite', s]
  cmd += ['--out', out]
  smoke = SMOKE_EVAL if args.smoke else {}
  passed = {'limit': args.limit, 'wrapper_limit': args.wrapper_limit, 'batch_size': args.batch_size,
            'max_new_tokens': args.max_new_tokens}
  defaults = {'max_new_tokens': MAX_NEW_TOKENS[args.size]}
  for key, value in passed.items():
    value = value if value is not None else smoke.get(key, defaults.get(key))
    if value is not None:
      cmd += [f'--{key}', str(value)]
  for item in getattr(args, 'suite_limit', []):
    cmd += ['--suite_limit', item]
  if args.data_dir:
    cmd += ['--data_dir', args.data_dir]
  if getattr(args, 'baseline_train', None):
    cmd += ['--train', args.baseline_train]
  if spec_in_context:
    cmd.append('--spec_in_context')
  if reasoning != 'auto':
    cmd.append(f'--reasoning={reasoning}')
  return cmd


@dataclasses.dataclass
class Wiring:
  """What a caller (launch/recipe.py) adds to the grid's commands: per-config training flags, and a
  judge it trained itself for RL (else size=tiny trains ROOT/judge and smollm2 uses its zero-shot judge)."""
  sft: list[str] = dataclasses.field(default_factory=list)
  rl: list[str] = dataclasses.field(default_factory=list)
  judge_init: str = ''


def plan(args, wiring: Wiring | None = None) -> list[Step]:
  """Every training and evaluation the chosen arms need, in an order where each input exists first."""
  wiring = wiring or Wiring()
  root = storage.abspath(args.root)
  arms = set(args.arms)
  wd = lambda name: storage.join(root, name)  # noqa: E731
  summary = lambda name: storage.join(wd(name), 'summary.json')  # noqa: E731
  base = base_model(args, root)
  steps: list[Step] = []
  if args.size == 'tiny' and arms & {'base', 'spec', 'rl'}:
    # No pretrained tiny model exists: the base is SFT's own starting point (same config, same seed),
    # checkpointed by one step whose learning rate is 0, so its weights are the random init exactly.
    steps.append(Step('base', 'train', train_cmd(
        args, 'sft', wd('base'), '--config.total_steps=1', '--config.optim.lr=0.0', '--config.optim.weight_decay=0.0',
        '--config.checkpoint.every_steps=1', '--config.evals.at_start=False', '--config.evals.every_steps=1',
        '--config.evals.num_generations=8', '--config.evals.max_new_tokens=16', '--config.evals.batch_size=8',
        '--config.evals.loss_batches=1', '--config.evals.final_splits='), summary('base')))
  if arms & {'sft', 'sft_rl'}:
    steps.append(Step('sft', 'train', train_cmd(args, 'sft', wd('sft'), *wiring.sft), summary('sft')))
  judge = [f'--config.judge_init={wiring.judge_init}'] if wiring.judge_init else []
  if args.size == 'tiny' and arms & {'rl', 'sft_rl'} and not wiring.judge_init:
    steps.append(Step('judge', 'train', train_cmd(args, 'judge', wd('judge')), summary('judge')))
    judge = [f'--config.judge_init={wd("judge")}']
  if 'rl' in arms:
    steps.append(Step('rl', 'train', train_cmd(args, 'rl', wd('rl'), *wiring.rl, f'--config.policy_init={base}',
                                               *judge), summary('rl')))
  if 'sft_rl' in arms:
    # configs/rl.py:size=smollm2 accepts direct answers (a base model never opens <think>); an SFT
    # run has learnt the CoT format, so it must produce one again, as on the tiny model.
    cot = ['--config.rl.require_cot=True'] if args.size != 'tiny' else []
    steps.append(Step('sft_rl', 'train', train_cmd(args, 'rl', wd('sft_rl'), *wiring.rl,
                                                   f'--config.policy_init={wd("sft")}', *judge, *cot),
                      summary('sft_rl')))
  checkpoints = {'base': base, 'spec': base, 'sft': wd('sft'), 'rl': wd('rl'), 'sft_rl': wd('sft_rl')}
  for arm in ARMS:
    if arm in arms:
      out = storage.join(wd(arm), 'eval')
      # RL from a pretrained model that never learnt the reasoning format: grade its direct answers.
      reasoning = 'off' if arm == 'rl' and args.size != 'tiny' else 'auto'
      steps.append(Step(arm, 'eval', eval_cmd(args, checkpoints[arm], out, spec_in_context=arm == 'spec',
                                              reasoning=reasoning), storage.join(out, 'metrics.json')))
  return steps


# -- running it -----------------------------------------------------------------------------------

def clock(seconds: float) -> str:
  return progress.duration(seconds, always_hours=True)


def _done(step: Step) -> bool:
  """An evaluation is done when its metrics.json exists; a training only when it reached its end (a
  SIGTERM'd run leaves a summary.json too, and must resume)."""
  if step.kind == 'train':
    from deliberative.trainers import loop
    return loop.finished(storage.dirname(step.done))
  return storage.exists(step.done)


def run_steps(steps: list[Step], root: str, dry_run: bool) -> int:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
  start = time.perf_counter()
  for i, step in enumerate(steps, 1):
    what = {'train': 'training', 'eval': 'evaluation'}.get(step.kind, step.kind)
    if dry_run:
      print(shlex.join(step.cmd), flush=True)
      continue
    head = f'[{i}/{len(steps)} {clock(time.perf_counter() - start)}] {step.arm}:'
    if _done(step):
      print(f'{head} {what} done already ({storage.relpath(step.done, root)}), skipped', flush=True)
      continue
    log_path = step.log or storage.join(root, step.arm, 'log.txt')
    t0 = time.perf_counter()
    print(f'{head} {what} ... (log {log_path})', flush=True)
    rc = subproc.run_logged(step.cmd, log_path, env=env, cwd=REPO)
    if rc != 0:
      print(f'error: arm {step.arm}: {what} failed (exit {rc}); see {log_path}', file=sys.stderr, flush=True)
      return 1
    print(f'[{i}/{len(steps)} {clock(time.perf_counter() - start)}] {step.arm}: {what} done in '
          f'{clock(time.perf_counter() - t0)}', flush=True)
  return 0


# -- combining the arms' evaluations --------------------------------------------------------------

def _metric(d: dict):
  from deliberative.evals.report import MetricValue
  nan = float('nan')
  num = lambda v: nan if v is None else float(v)  # noqa: E731  (metrics.json writes NaN as null)
  return MetricValue(num(d['value']), num(d.get('ci_low')), num(d.get('ci_high')), int(d['n']), d['grader'],
                     d.get('n_groups'))


def read_arms(root: str, arms) -> tuple[dict, list, list, dict]:
  """(arm -> {key: MetricValue}, with the memorisation baseline once; disagreements; notes; metas)."""
  from deliberative.evals.metrics import Disagreement
  from deliberative.evals.report import BASELINE_ARM
  columns, disagreements, notes, metas = {}, [], [], {}
  baseline = None
  for arm in arms:
    path = storage.join(root, arm, 'eval', 'metrics.json')
    if not storage.exists(path):
      notes.append(f'{arm}: no evaluation ({path} missing)')
      continue
    data = json.loads(storage.read_bytes(path))
    got = data.get('arms', {})
    columns[arm] = {k: _metric(v) for k, v in got.get('model', {}).items()}
    if baseline is None and BASELINE_ARM in got:  # the same lookup over the same train split in every file
      baseline = {k: _metric(v) for k, v in got[BASELINE_ARM].items()}
    for d in data.get('disagreements', []):
      if d.get('arm', 'model') in ('model', ''):
        disagreements.append(Disagreement(d['suite'], d['grader_a'], d['grader_b'], d['fraction'], d['n'], arm))
    metas[arm] = data.get('meta', {})
  if baseline is not None:
    columns[BASELINE_ARM] = baseline
  return columns, disagreements, notes, metas


def pareto_keys(columns: dict) -> tuple[str, str] | None:
  """The first (x, y) pair of PARETO_*_KEYS that some arm has both of."""
  for x in PARETO_X_KEYS:
    for y in PARETO_Y_KEYS:
      if any(x in m and y in m for m in columns.values()):
        return x, y
  return None


def combine(root: str, arms, *, size: str = '', title: str = 'Ablation grid') -> dict:
  """ROOT/report.md, ROOT/metrics.json, ROOT/metrics.png and ROOT/pareto.png from each arm's eval."""
  from deliberative.common import io as atomic
  from deliberative.evals import report
  root = storage.abspath(root)
  columns, disagreements, notes, metas = read_arms(root, arms)
  if not any(a in columns for a in arms):
    raise SystemExit(f'error: no arm of {",".join(arms)} has an evaluation under {root}')
  for arm in arms:
    if arm in metas:
      m = metas[arm]
      line = f'{arm}: {ARM_TITLES[arm]}; checkpoint {m.get("checkpoint", "?")}'
      summary = storage.join(root, arm, 'summary.json')
      if storage.exists(summary):
        seconds = clock(json.loads(storage.read_bytes(summary)).get('wall_seconds', 0))
        line += f'; saved (one step at learning rate 0) in {seconds}' if arm == 'base' else f'; trained in {seconds}'
      notes.append(line + f'; evaluated in {clock(m.get("wall_seconds", 0))}')
  # A resumed grid keeps earlier evaluations: columns are comparable only if they asked the same items.
  asked = {arm: tuple(str(m.get(k)) for k in ('suites', 'limit', 'wrapper_limit', 'max_new_tokens'))
           for arm, m in metas.items()}
  if len(set(asked.values())) > 1:
    notes.append('warning: the arms were evaluated with different suites/limit/wrapper_limit/max_new_tokens ('
                 + '; '.join(f'{arm}: {" ".join(a)}' for arm, a in asked.items()) + '); delete ROOT/<arm>/eval '
                 'to redo one')
  if size == 'tiny' and ('base' in columns or 'spec' in columns):
    notes.append('base (tiny): there is no pretrained tiny model; the base is the model SFT starts from '
                 '(random init, seed 0), so its rates show what an untrained network scores.')
  extra, paths = [], {}
  keys = pareto_keys(columns)
  if keys is None:
    notes.append(f'no pareto plot: no arm has one of {", ".join(PARETO_X_KEYS)} together with one of '
                 f'{", ".join(PARETO_Y_KEYS)}')
  else:
    x, y = keys
    paths['pareto'] = report.plot_pareto(storage.join(root, 'pareto.png'), report.pareto_points(columns, x, y),
                                         x_label=x, y_label=y, title='one point per arm (top right is best)')
    extra.append(str(paths['pareto']))
  meta = {'root': root, 'arms': list(arms), 'size': size, 'pareto': list(keys) if keys else None,
          'evaluations': metas}
  # report.write_report's parts, so that report.md shows pareto.png beside metrics.png.
  paths['metrics'] = report.write_metrics_json(storage.join(root, 'metrics.json'), columns,
                                               disagreements=disagreements, meta=meta)
  paths['plot'] = report.plot_metric_bars(storage.join(root, 'metrics.png'), columns)
  md = report.render_report(columns, title=title, disagreements=disagreements, notes=notes,
                            plots=[str(paths['plot']), *extra])
  paths['report'] = atomic.write_text(storage.join(root, 'report.md'), md)
  return paths


def main(argv=None) -> int:
  args = parse_args(argv)
  root = storage.abspath(args.root)
  steps = plan(args)
  if not args.dry_run:
    print(f'ablation grid: size {args.size}, arms {",".join(args.arms)}, suites {" ".join(args.suite)}, '
          f'{len(steps)} steps under {root}', flush=True)
  if args.dry_run:
    return run_steps(steps, root, args.dry_run)
  from deliberative.common import run_lock
  with run_lock.WorkdirLock(root, what='ablation grid'):  # two grids on one root would train each arm twice
    rc = run_steps(steps, root, args.dry_run)
    if rc:
      return rc
    paths = combine(root, args.arms, size=args.size,
                    title=f'Ablation grid ({args.size}{", smoke" if args.smoke else ""})')
  print(storage.read_text(paths['report']))
  print('wrote ' + ', '.join(str(p) for p in paths.values()), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
