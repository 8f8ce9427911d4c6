"""Curves from one or more workdirs' metrics.jsonl, one panel per metric, one line per run.

  python tools/plot_metrics.py runs/rl                          # the trainer's usual panels
  python tools/plot_metrics.py runs/rl_sweep/* --keys rl/reward,rl/kl --out rl_sweep.png

Without --keys the panels follow the run's trainer (config.json): SFT and judge loss and their
evals; RL reward, KL, entropy, lengths and the held-out evals. Eval metrics logged only at a
few steps are drawn as markers. The PNG is written atomically (default: <first workdir>/curves.png).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from deliberative.common import cli  # noqa: E402
from deliberative.evals import report  # noqa: E402
from deliberative.trainers.metrics import read_metrics  # noqa: E402

DEFAULT_KEYS = {
    'sft': ('train/loss', 'eval/loss', 'eval/decision_accuracy', 'eval/citation_accuracy'),
    'judge': ('train/loss', 'eval/judge_accuracy', 'eval/judge_auc'),
    'rl': ('rl/reward', 'rl/kl', 'rl/entropy', 'rl/response_tokens', 'rl/group_reward_spread',
           'eval/mean_reward', 'eval/decision_accuracy', 'eval/citation_accuracy'),
}


def trainer_of(workdir: str) -> str:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: not a training workdir (no config.json); pass --keys to plot it anyway')
  with open(path) as f:
    return json.load(f).get('trainer', 'sft')


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
  rows = [m for m in rows if isinstance(m.get(key), (int, float))]
  return [m['step'] for m in rows], [float(m[key]) for m in rows]


def default_keys(workdirs: list[str], metrics: dict[str, list[dict]]) -> list[str]:
  """The first run's trainer's usual panels, less those no run logged (e.g. eval/loss)."""
  trainer = trainer_of(workdirs[0])
  if trainer not in DEFAULT_KEYS:
    raise ValueError(f'{workdirs[0]}: trainer {trainer!r} has no default panels ({sorted(DEFAULT_KEYS)}); '
                     'pass --keys')
  keys = [k for k in DEFAULT_KEYS[trainer] if any(series(metrics[w], k)[0] for w in workdirs)]
  return keys or list(DEFAULT_KEYS[trainer])


def ema(values: list[float], smoothing: float) -> list[float]:
  """Bias-corrected exponential moving average (as TensorBoard's smoothing slider)."""
  out, avg = [], 0.0
  for i, v in enumerate(values, 1):
    avg = smoothing * avg + (1 - smoothing) * v
    out.append(avg / (1 - smoothing ** i))
  return out


def plot(workdirs: list[str], keys: list[str], out: str, smoothing: float = 0.8) -> str:
  import matplotlib
  matplotlib.use('Agg')  # files only: no display on a TPU host or in CI
  import matplotlib.pyplot as plt

  if not workdirs:
    raise ValueError('no workdirs given')
  metrics = {w: read_metrics(w) for w in workdirs}
  found = {k: [(w, *series(metrics[w], k)) for w in workdirs] for k in keys}
  missing = [k for k, runs in found.items() if not any(steps for _, steps, _ in runs)]
  if missing:
    available = sorted({k for w in workdirs for m in metrics[w] for k in m if k != 'step'})
    raise ValueError(f'{", ".join(missing)}: in no metrics.jsonl of {", ".join(workdirs)}; '
                   f'available: {", ".join(available) or "none (empty or missing metrics.jsonl)"}')
  cols = min(len(keys), 4)
  rows = -(-len(keys) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    for workdir, steps, values in found[key]:
      if not steps:
        continue
      label = os.path.basename(os.path.normpath(workdir))
      if len(steps) <= 5:  # evals: before/after points, not a curve
        ax.plot(steps, values, marker='o', linewidth=1.2, label=label)
      elif len(steps) < 20:
        ax.plot(steps, values, linewidth=1.2, label=label)
      else:  # per-step RL rewards are noisy (a few prompts a step): faint raw values under a trend
        line, = ax.plot(steps, values, linewidth=0.8, alpha=0.3)
        ax.plot(steps, ema(values, smoothing), linewidth=1.6, color=line.get_color(), label=label)
    ax.set_title(key, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis('off')
  if len(workdirs) > 1:
    axes.flat[0].legend(fontsize=8)
  fig.tight_layout()
  return str(report.save_png(fig, out))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--keys', default='', help='comma-separated metric names (default: by trainer)')
  parser.add_argument('--out', default='', help='PNG path (default: <first workdir>/curves.png)')
  parser.add_argument('--smoothing', type=float, default=0.8,
                      help='EMA weight for curves of 20+ points, drawn over the faint raw values (0 = off)')
  parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
  args = parser.parse_args(argv)
  if not 0.0 <= args.smoothing < 1.0:
    parser.error(f'--smoothing={args.smoothing}: must be in [0, 1)')
  return cli.run_guarded(run, args, status=1)


def run(args: argparse.Namespace) -> int:
  keys = [k.strip() for k in args.keys.split(',') if k.strip()]
  if not keys:
    keys = default_keys(args.workdirs, {w: read_metrics(w) for w in args.workdirs})
  out = plot(args.workdirs, keys, args.out or os.path.join(args.workdirs[0], 'curves.png'), args.smoothing)
  print(f'wrote {out} ({len(keys)} panels, {len(args.workdirs)} run(s))')
  return 0


if __name__ == '__main__':
  sys.exit(main())
