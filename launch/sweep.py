"""Runs a config's `sweep(add)`: one training run per entry, each in its own workdir.

  python launch/sweep.py --config configs/judge.py [--root runs/judge_sweep] [--dry_run] [--only 0,3]

Each entry is a dict of `--config.*` overrides; the key `config_arg` (if present) is the
`configs/x.py:ARG` string. Locally the runs go one after another; `--dry_run` prints the
commands instead (to hand to a TPU pod scheduler, one command per slice).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs import `deliberative`, wherever this is run from


def load_sweep(config_path: str) -> list[dict]:
  spec = importlib.util.spec_from_file_location('sweep_config', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'sweep'):
    raise SystemExit(f'{config_path} defines no sweep(add)')
  runs: list[dict] = []
  module.sweep(runs.append)
  return runs


def command(config_path: str, run: dict, workdir: str) -> list[str]:
  arg = run.get('config_arg')
  cmd = [sys.executable, '-m', 'deliberative.train', '--config', f'{config_path}:{arg}' if arg else config_path,
         '--workdir', workdir]
  cmd += [f'--config.{k}={v}' for k, v in run.items() if k != 'config_arg']
  return cmd


def run_name(index: int, run: dict) -> str:
  parts = [f'{k.split(".")[-1]}={v}' for k, v in run.items()]
  return f'{index:03d}_' + ','.join(parts).replace('/', '_').replace(' ', '')[:120]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True)
  parser.add_argument('--root', default=None, help='parent of the runs\' workdirs (default runs/<file>_sweep)')
  parser.add_argument('--dry_run', action='store_true')
  parser.add_argument('--only', default='', help='comma-separated entry indices to run')
  args = parser.parse_args(argv)
  runs = load_sweep(args.config)
  root = args.root or os.path.join('runs', os.path.splitext(os.path.basename(args.config))[0] + '_sweep')
  chosen = [int(i) for i in args.only.split(',') if i.strip()] or list(range(len(runs)))
  failures = 0
  for i in chosen:
    if not 0 <= i < len(runs):
      parser.error(f'--only {i}: the sweep has {len(runs)} entries (0..{len(runs) - 1})')
    workdir = os.path.join(root, run_name(i, runs[i]))
    cmd = command(args.config, runs[i], workdir)
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
      continue
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
    result = subprocess.run(cmd, env=env)
    failures += result.returncode != 0
    summary = os.path.join(workdir, 'summary.json')
    if os.path.exists(summary):
      with open(summary) as f:
        evals = {k: v for k, v in json.load(f).items() if k.startswith('eval/') and '/' not in k[5:]}
      print(f'[{i}] {evals}', flush=True)
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
