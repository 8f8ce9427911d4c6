"""Runs a config's `sweep(add)`: one training run per entry, each in its own workdir, then a table.

  python launch/sweep.py --config configs/judge.py [--root runs/judge_sweep] [--dry_run] [--only 0,3]
  python launch/sweep.py --config configs/judge.py --parallel 2          # two runs at a time here
  python launch/sweep.py --config configs/judge.py --report_only         # just the table and plot
  python launch/sweep.py --config configs/judge.py --root /mnt/runs/judge_sweep \\
      --pod dl-judge --zone us-east5-a --accelerator_type v5p-8 --spot   # one TPU slice per entry

Each entry is a dict of `--config.*` overrides; the key `config_arg` (if present) is the
`configs/x.py:ARG` string. Each run's workdir is ROOT/NAME, NAME short and readable
(`011-small-lr1e-3-brief`: the index, then the fields that vary in the sweep); ROOT/runs.json maps
each NAME to its overrides. An entry whose summary.json exists (and was not cut short by a
preemption) is skipped. Afterwards ROOT/results.md, results.csv and results.png hold one row per
entry: its swept fields and the final metrics of its summary.json, best --sort_by first.
`--dry_run` prints the commands instead (with --pod: the gcloud commands of every slice).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import importlib.util
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs import `deliberative`, wherever this is run from
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # launch/pod.py

import pod  # noqa: E402

MAX_NAME = 60
SUMMARY_KEYS = ('final_train_loss', 'final_step', 'wall_seconds')


def load_sweep(config: str) -> list[dict]:
  """The entries of CONFIG's sweep(add); CONFIG may carry an ":ARG" (as `deliberative.train --config`
  takes it), which every entry then gets ahead of its own `config_arg`."""
  config_path, _, arg = config.partition(':')
  if not os.path.isfile(config_path):  # importlib's own answer is "'NoneType' object has no attribute 'loader'"
    raise SystemExit(f'error: --config {config}: no such file {config_path}')
  spec = importlib.util.spec_from_file_location('sweep_config', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'sweep'):
    raise SystemExit(f'error: --config {config}: {config_path} defines no sweep(add)')
  runs: list[dict] = []
  module.sweep(runs.append)
  return [_with_arg(run, arg, config) for run in runs] if arg.strip() else runs


def _arg_keys(arg: str) -> list[str]:
  return [part.partition('=')[0].strip() for part in arg.split(',') if part.strip()]


def _with_arg(run: dict, arg: str, config: str) -> dict:
  own = run.get('config_arg', '')
  clash = [k for k in _arg_keys(arg) if k in _arg_keys(own)]
  if clash:  # which value would win is a guess either way: say so rather than pick
    raise SystemExit(f'error: --config {config}: the sweep\'s entries set {", ".join(clash)} themselves '
                     f'(config_arg {own!r}); leave it out of --config')
  return {**run, 'config_arg': ','.join(a for a in (arg.strip(), own) if a)}


def train_args(config_path: str, run: dict, workdir: str) -> list[str]:
  arg = run.get('config_arg')
  cmd = ['--config', f'{config_path}:{arg}' if arg else config_path, '--workdir', workdir]
  return cmd + [f'--config.{k}={v}' for k, v in run.items() if k != 'config_arg']


def command(config_path: str, run: dict, workdir: str) -> list[str]:
  return [sys.executable, '-m', 'deliberative.train', *train_args(config_path, run, workdir)]


# -- names ----------------------------------------------------------------------------------------

def fields(run: dict) -> dict:
  """The entry's swept values, with `config_arg` ('size=small,smoke') split into its own fields."""
  out = {}
  for k, v in run.items():
    if k == 'config_arg':
      for part in str(v).split(','):
        if part.strip():
          key, eq, value = part.partition('=')
          out[key.strip()] = value.strip() if eq else True
    else:
      out[k] = v
  return out


def varying(runs: list[dict]) -> list[str]:
  """Fields whose value differs between entries (all of them for a one-entry sweep), in entry order."""
  all_fields = [fields(r) for r in runs]
  keys = list(dict.fromkeys(k for f in all_fields for k in f))
  if len(runs) < 2:
    return keys
  return [k for k in keys if len({repr(f.get(k)) for f in all_fields}) > 1]


def compact_number(v: float) -> str:
  """1e-3 -> '1e-3', 0.02 -> '2e-2', 2.5e-4 -> '2p5e-4', 16 -> '16', 1.5 -> '1p5' (no dots: pod names)."""
  if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
    return str(int(v))
  if v != 0 and abs(v) < 1:
    mantissa, exp = f'{v:.3e}'.split('e')
    text = f'{mantissa.rstrip("0").rstrip(".")}e{int(exp)}'
  else:
    text = f'{v:g}'
  return text.replace('.', 'p')


def name_part(key: str, value) -> str:
  short = key.split('.')[-1]
  if isinstance(value, bool):
    return short if value else ''  # runs.json and the table say False; the name stays short
  if isinstance(value, (int, float)):
    return short + compact_number(value)
  return str(value)


def safe(text: str) -> str:
  return re.sub(r'-{2,}', '-', re.sub(r'[^A-Za-z0-9_-]+', '-', text)).strip('-')


def run_names(runs: list[dict]) -> list[str]:
  """'011-small-lr1e-3-brief': the index keeps names unique whatever the truncation; the values make
  them readable (fields constant over the sweep, and False flags, are left out: runs.json has them)."""
  keys = varying(runs)
  names = []
  for i, run in enumerate(runs):
    f = fields(run)
    parts = [safe(name_part(k, f[k])) for k in keys if k in f]
    names.append(f'{i:03d}-' + '-'.join(p for p in parts if p)[:MAX_NAME - 4].rstrip('-'))
  return names


# -- skipping and running -------------------------------------------------------------------------

def read_summary(workdir: str) -> dict | None:
  from deliberative.common import storage  # a sweep root may be a URL (gs://...), as a workdir may
  path = storage.join(workdir, 'summary.json')
  if not storage.exists(path):
    return None
  return json.loads(storage.read_bytes(path))


def finished(workdir: str) -> bool:
  from deliberative.trainers import loop
  return loop.finished(workdir)


def read_runs_json(root: str) -> dict:
  from deliberative.common import storage
  path = storage.join(root, 'runs.json')
  if not storage.exists(path):
    return {}
  return json.loads(storage.read_bytes(path))


def same_entry(previous: dict, name: str, run: dict) -> bool:
  """False when an earlier version of the sweep used this name for other overrides (a field that was
  constant, so not in the name, has changed): that workdir's summary is not this entry's."""
  return name not in previous or previous[name] == json.loads(json.dumps(run))


def launch_local(cmd: list[str], log_path: str = '') -> int:
  from deliberative.common import subproc
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
  if not log_path:
    return subprocess.run(cmd, env=env).returncode
  # side by side runs would interleave on the terminal; a gs:// root's log is uploaded when the run ends
  return subproc.run_logged(cmd, log_path, env=env, header=False)


def run_all(jobs: list, launch, parallel: int = 1) -> list[int]:
  """launch(job) -> exit code for each job, `parallel` at a time; codes in job order."""
  if parallel <= 1:
    return [launch(job) for job in jobs]
  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    return list(pool.map(launch, jobs))


def pod_args(args, name: str, config: str, workdir: str, overrides: list[str]) -> argparse.Namespace:
  """pod.watch's flags for one entry's slice: the sweep's slice flags, the slice named POD-NAME."""
  slice_name = re.sub(r'[^a-z0-9-]+', '-', f'{args.pod}-{name}'.lower()).strip('-')[:63].rstrip('-')
  return argparse.Namespace(
      name=slice_name, zone=args.zone, project=args.project, accelerator_type=args.accelerator_type,
      runtime_version=args.runtime_version, spot=args.spot, wait_minutes=args.wait_minutes,
      poll_seconds=args.poll_seconds, python=args.python, log_root=args.log_root, dry_run=args.dry_run,
      config=config, workdir=workdir, train_args=overrides, max_restarts=args.max_restarts,
      delete_when_done=True)


# -- the results table ----------------------------------------------------------------------------

def final_metrics(summary: dict) -> dict:
  """Top-level scalars: eval/* (not the per-category eval/x/y) and the run's final numbers."""
  return {k: v for k, v in summary.items()
          if (k.startswith('eval/') and '/' not in k[5:] or k in SUMMARY_KEYS)
          and isinstance(v, (int, float)) and not isinstance(v, bool)}


def collect(root: str, names: list[str], runs: list[dict]) -> list[dict]:
  rows = []
  for i, (name, run) in enumerate(zip(names, runs)):
    summary = read_summary(os.path.join(root, name))
    status = 'missing' if summary is None else 'preempted' if summary.get('preempted') else 'done'
    rows.append({'index': i, 'name': name, 'status': status, 'fields': fields(run),
                 'metrics': final_metrics(summary or {})})
  return rows


def _number(v) -> float | None:
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def sort_rows(rows: list[dict], key: str, descending: bool = True) -> list[dict]:
  """By metrics[key], best first; rows without the metric (or NaN) last, in sweep order."""
  have = [r for r in rows if _number(r['metrics'].get(key)) is not None]
  rest = [r for r in rows if _number(r['metrics'].get(key)) is None]
  return sorted(have, key=lambda r: _number(r['metrics'][key]), reverse=descending) + rest


def table_columns(rows: list[dict], swept: list[str], sort_by: str) -> tuple[list[str], list[str]]:
  metrics = sorted({k for r in rows for k in r['metrics']} | {sort_by})
  metrics.remove(sort_by)
  return swept, [sort_by, *metrics]


def _cell(v) -> str:
  if v is None:
    return ''
  if isinstance(v, float):
    return f'{v:.4g}'
  return str(v)


def render_csv(rows: list[dict], swept: list[str], metric_keys: list[str]) -> str:
  out = io.StringIO()
  w = csv.writer(out, lineterminator='\n')
  w.writerow(['name', 'status', *swept, *metric_keys])
  for r in rows:
    w.writerow([r['name'], r['status'], *(r['fields'].get(k, '') for k in swept),
                *(('' if r['metrics'].get(k) is None else r['metrics'][k]) for k in metric_keys)])
  return out.getvalue()


def render_markdown(rows: list[dict], swept: list[str], metric_keys: list[str], title: str) -> str:
  head = ['name', 'status', *swept, *metric_keys]
  lines = [f'# {title}', '', f'{len(rows)} runs, sorted by {metric_keys[0]} (missing last).', '',
           '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [r['name'], r['status'], *(_cell(r['fields'].get(k)) for k in swept),
             *(_cell(r['metrics'].get(k)) for k in metric_keys)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n\n![results](results.png)\n'


def plot_results(path: str, rows: list[dict], swept: list[str], metric: str):
  """One panel per swept field: the metric of every run at its value of that field."""
  import matplotlib
  matplotlib.use('Agg')  # files only: no display on a TPU host or in CI
  import matplotlib.pyplot as plt
  from deliberative.evals import report

  swept = swept or ['name']
  fig, axes = plt.subplots(1, len(swept), figsize=(3.2 * len(swept), 3), squeeze=False)
  for ax, key in zip(axes.flat, swept):
    points = [(r['fields'].get(key) if key != 'name' else r['name'], _number(r['metrics'].get(metric)))
              for r in sorted(rows, key=lambda r: r['index'])]
    points = [(x, y) for x, y in points if y is not None]
    # evenly spaced values: numbers in increasing order (learning rates span decades), others in sweep order
    cats = list(dict.fromkeys(x for x, _ in points))
    if cats and all(_number(x) is not None for x in cats):
      cats.sort()
    xs = [cats.index(x) for x, _ in points]
    ax.scatter(xs, [y for _, y in points], alpha=0.6)
    for j, c in enumerate(cats):  # the mean over the other fields' values: the field's main effect
      ys = [y for x, y in points if x == c]
      ax.plot([j - 0.25, j + 0.25], [sum(ys) / len(ys)] * 2, color='black', linewidth=1.5)
    ax.set_xlim(-0.6, max(len(cats), 1) - 0.4)
    ax.set_xticks(range(len(cats)), [_cell(c) for c in cats], fontsize=8, rotation=30 if key == 'name' else 0)
    ax.set_title(key, fontsize=10)
    ax.set_ylabel(metric, fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return report.save_png(fig, path)


def write_results(root: str, names: list[str], runs: list[dict], sort_by: str, ascending: bool = False,
                  title: str = 'Sweep results') -> dict:
  from deliberative.common import io as atomic
  rows = sort_rows(collect(root, names, runs), sort_by, descending=not ascending)
  swept, metric_keys = table_columns(rows, varying(runs), sort_by)
  paths = {'md': os.path.join(root, 'results.md'), 'csv': os.path.join(root, 'results.csv'),
           'png': os.path.join(root, 'results.png')}
  atomic.write_text(paths['csv'], render_csv(rows, swept, metric_keys))
  atomic.write_text(paths['md'], render_markdown(rows, swept, metric_keys, title))
  plot_results(paths['png'], rows, swept, sort_by)
  return paths


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True)
  parser.add_argument('--root', default=None, help='parent of the runs\' workdirs (default runs/<file>_sweep)')
  parser.add_argument('--dry_run', action='store_true')
  parser.add_argument('--only', default='', help='comma-separated entry indices to run')
  parser.add_argument('--parallel', type=int, default=1, help='entries run at a time (local runs or slices)')
  parser.add_argument('--report_only', action='store_true', help='write results.* from existing summaries')
  parser.add_argument('--sort_by', default='eval/judge_auc', help='summary.json metric, best first')
  parser.add_argument('--ascending', action='store_true', help='lower --sort_by is better (a loss)')
  g = parser.add_argument_group('TPU pod (launch/pod.py): one slice per entry, named POD-NAME')
  g.add_argument('--pod', default='', help='slice name prefix; set to run the entries on TPU slices')
  g.add_argument('--zone', default='')
  g.add_argument('--project', default='')
  g.add_argument('--accelerator_type', default='')
  g.add_argument('--runtime_version', default='')
  g.add_argument('--spot', action='store_true')
  g.add_argument('--wait_minutes', type=float, default=120)
  g.add_argument('--poll_seconds', type=float, default=60)
  g.add_argument('--max_restarts', type=int, default=20)
  g.add_argument('--python', default='python3.11')
  g.add_argument('--log_root', default=os.path.join('runs', 'pod_logs'))
  args = parser.parse_args(argv)
  if args.parallel < 1:
    parser.error(f'--parallel={args.parallel}: must be at least 1')
  if args.pod:
    if not args.zone or not args.accelerator_type:
      parser.error('--pod needs --zone and --accelerator_type (e.g. --accelerator_type v5p-8)')
    try:
      pod.check_accelerator_type(args.accelerator_type)
    except pod.PodError as e:
      parser.error(str(e))
  return args


def main(argv=None, launch=None) -> int:
  """launch(cmd, log_path) -> exit code runs one local entry (tests pass their own)."""
  args = parse_args(argv)
  runs = load_sweep(args.config)
  config_path = args.config.partition(':')[0]  # its ":ARG" is in every entry's config_arg now
  names = run_names(runs)
  root = args.root or os.path.join('runs', os.path.splitext(os.path.basename(config_path))[0] + '_sweep')
  chosen = [int(i) for i in args.only.split(',') if i.strip()] or list(range(len(runs)))
  for i in chosen:
    if not 0 <= i < len(runs):
      raise SystemExit(f'error: --only {i}: the sweep has {len(runs)} entries (0..{len(runs) - 1})')
  title = f'Sweep {args.config} ({root})'
  if args.report_only:
    paths = write_results(root, names, runs, args.sort_by, args.ascending, title)
    print('wrote ' + ', '.join(paths.values()))
    return 0
  previous = read_runs_json(root)
  if not args.dry_run:
    from deliberative.common import io as atomic
    atomic.write_text(os.path.join(root, 'runs.json'), json.dumps(dict(zip(names, runs)), indent=2) + '\n')

  todo = []
  for i in chosen:
    workdir = os.path.join(root, names[i])
    if not same_entry(previous, names[i], runs[i]):
      print(f'# [{i}] {names[i]}: runs.json had other overrides under this name ({previous[names[i]]}); '
            'running it (the trainer refuses to resume a checkpoint of another config)', flush=True)
      todo.append(i)
    elif finished(workdir):
      print(f'# [{i}] {names[i]}: skipped, {workdir}/summary.json exists', flush=True)
    else:
      todo.append(i)

  if args.pod:
    # The workers see the repo at its root: the config path must be relative to it.
    config = os.path.relpath(os.path.abspath(config_path), REPO)
    runner = pod.Runner(args.dry_run)
    runner.require_gcloud('sweep --pod')

    def launch_entry(i):
      workdir = os.path.join(root, names[i])
      argv = train_args(config, runs[i], workdir)  # --config CONFIG[:ARG] --workdir W --config.x=y...
      return pod.watch(runner, pod_args(args, names[i], argv[1], workdir, argv[4:]))
  else:
    launch = launch or launch_local

    def launch_entry(i):
      workdir = os.path.join(root, names[i])
      cmd = command(config_path, runs[i], workdir)
      print(shlex.join(cmd), flush=True)
      if args.dry_run:
        return 0
      log = os.path.join(root, 'logs', f'{names[i]}.log') if args.parallel > 1 else ''
      rc = launch(cmd, log)
      summary = read_summary(workdir) or {}
      evals = {k: v for k, v in final_metrics(summary).items() if k.startswith('eval/')}
      print(f'# [{i}] {names[i]}: exit {rc} {evals}', flush=True)
      return rc

  # A dry run's printed commands stay in sweep order: one at a time.
  codes = run_all(todo, launch_entry, 1 if args.dry_run else args.parallel)
  if args.dry_run:
    return 0
  paths = write_results(root, names, runs, args.sort_by, args.ascending, title)
  print('wrote ' + ', '.join(paths.values()), flush=True)
  return 1 if any(codes) else 0


if __name__ == '__main__':
  sys.exit(main())
