"""What an evaluation writes: metrics.json, samples.jsonl, report.md and plots.

    arms = {'model': metric_values(suite, grades, 'demo_regex'),    # {'demo/decision_accuracy': MetricValue}
            BASELINE_ARM: metric_values(suite, baseline_grades, 'demo_regex')}
    paths = write_report(out_dir, arms, samples=rows, disagreements=found, meta={...})
    plot_pareto(out_dir / 'pareto.png', pareto_points(grid_arms))

An *arm* is one set of answers: a checkpoint, the memorisation baseline, or a cell of the
ablation grid. Every metric carries the grader that produced it. Files are written atomically
(a reader never sees half a file); PNGs follow tools/plot_metrics.py (Agg, temp file, replace).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deliberative.common import io as atomic, storage
from deliberative.evals.metrics import DISAGREEMENT_THRESHOLD, Disagreement, Rate

BASELINE_ARM = 'memorisation baseline'
LOWER_IS_BETTER = ('strongreject_score',)  # every other metric here is a rate where higher is better
PARETO_X, PARETO_Y = 'not_overrefuse', 'goodness@0.1'


@dataclasses.dataclass(frozen=True)
class MetricValue:
  """One row of metrics.json: a value, its bootstrap 95% interval, n, and who graded it."""

  value: float
  ci_low: float
  ci_high: float
  n: int
  grader: str
  n_groups: int | None = None

  @classmethod
  def of(cls, rate: Rate, grader: str) -> MetricValue:
    return cls(rate.value, rate.ci_low, rate.ci_high, rate.n, grader, rate.n_groups)

  def as_dict(self) -> dict[str, Any]:
    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}
    if out['n_groups'] is None:
      del out['n_groups']
    return out


def metric_key(suite: str, metric: str, grader: str | None = None, default_grader: str | None = None) -> str:
  """'demo/decision_accuracy'; a grader other than the suite's default is named: '...@model'."""
  key = f'{suite}/{metric}'
  return key if grader is None or grader == default_grader else f'{key}@{grader}'


def canonical_grader(name: str) -> str:
  """A registered grader's own name for an alias ('string_match' -> 'xstest_string_match'), else `name`."""
  if name.startswith('model'):
    return name
  try:
    from deliberative.evals import graders
    return graders.get_grader(name).name or name
  except Exception:  # an unknown or unbuildable name is kept as given
    return name


def metric_values(suite, scored: Sequence[Mapping[str, Any]], grader: str, **kw) -> dict[str, MetricValue]:
  """A suite's metrics from one grader's per-item grades (metrics.suite_rates), keyed by
  metric_key: the suite's default grader gives 'suite/metric', any other 'suite/metric@grader'."""
  from deliberative.evals.metrics import suite_rates

  default = canonical_grader(grader) == canonical_grader(suite.default_grader)
  return {metric_key(suite.name, metric, None if default else grader): MetricValue.of(rate, grader)
          for metric, rate in suite_rates(suite.metrics, suite.items, scored, **kw).items()}


# ---- files

def write_metrics_json(path: str | os.PathLike, arms: Mapping[str, Mapping[str, MetricValue]], *,
                       disagreements: Sequence[Disagreement] = (), meta: Mapping[str, Any] | None = None) -> Path:
  """{"arms": {arm: {key: {value, ci_low, ci_high, n, grader}}}, "disagreements": [...], "meta": {...}}."""
  obj = {'arms': {arm: {k: v.as_dict() for k, v in metrics.items()} for arm, metrics in arms.items()},
         'disagreements': [d.as_dict() for d in disagreements], 'meta': dict(meta or {})}
  return atomic.write_json(path, obj)


def write_samples(path: str | os.PathLike, samples: Sequence[Mapping[str, Any]]) -> Path:
  """Every generation with its grades, one JSON object a line."""
  return atomic.write_jsonl(path, samples)


# ---- report.md

def _fmt(v: MetricValue | None) -> str:
  if v is None:
    return '—'
  if math.isnan(v.value):
    return 'n/a (no items)'
  return f'{v.value:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]'


def _compare(model: MetricValue | None, base: MetricValue | None, key: str) -> str:
  """Whether the first arm beats the baseline, judged by non-overlapping intervals."""
  if model is None or base is None or math.isnan(model.value) or math.isnan(base.value):
    return ''
  lower_better = key.split('@')[0].rsplit('/', 1)[-1] in LOWER_IS_BETTER
  if model.ci_low > base.ci_high:
    return 'worse' if lower_better else 'better'
  if model.ci_high < base.ci_low:
    return 'better' if lower_better else 'worse'
  return 'no clear difference'


def _metric_order(arms: Mapping[str, Mapping[str, MetricValue]]) -> list[str]:
  keys: dict[str, None] = {}
  for metrics in arms.values():
    keys.update(dict.fromkeys(metrics))
  return list(keys)


def render_report(arms: Mapping[str, Mapping[str, MetricValue]], *, title: str = 'Evaluation',
                  disagreements: Sequence[Disagreement] = (), notes: Sequence[str] = (),
                  plots: Sequence[str] = ()) -> str:
  """Markdown: a table metric | grader | n | one column per arm, each a value with its 95% interval.

  With exactly one arm beside the memorisation baseline, a last column says whether that arm
  is better or worse than lookup (non-overlapping intervals) or not clearly different.
  """
  names = list(arms)
  others = [a for a in names if a != BASELINE_ARM]
  compare = BASELINE_ARM in arms and len(others) == 1
  header = ['metric', 'grader', 'n', *names] + ([f'{others[0]} vs baseline'] if compare else [])
  lines = [f'# {title}', '', 'Values are rates with bootstrap 95% intervals [low, high]; n counts items '
           '(base prompts for goodness@0.1).', '']
  lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for key in _metric_order(arms):
    values = [arms[a].get(key) for a in names]
    present = [v for v in values if v is not None]
    graders = sorted({v.grader for v in present})
    n = present[0].n_groups if present[0].n_groups is not None and key.endswith('@0.1') else present[0].n
    row = [f'`{key}`', ', '.join(graders), str(n), *(_fmt(v) for v in values)]
    if compare:
      row.append(_compare(arms[others[0]].get(key), arms[BASELINE_ARM].get(key), key))
    lines.append('| ' + ' | '.join(row) + ' |')
  flagged = [d for d in disagreements if d.flagged]
  lines.append('')
  if flagged:
    lines.append(f'**Graders disagree** (on more than {DISAGREEMENT_THRESHOLD:.0%} of items); read these metrics '
                 'with care:')
    lines.append('')
    for d in flagged:
      whose = f' on the answers of {d.arm}' if d.arm else ''
      lines.append(f'- {d.suite}: graders `{d.grader_a}` and `{d.grader_b}` disagree on {d.fraction:.1%} of '
                   f'{d.n} items{whose}.')
  elif disagreements:
    lines.append(f'Graders agree on all but at most {DISAGREEMENT_THRESHOLD:.0%} of items wherever two graded the '
                 'same answers.')
  if notes:
    lines += ['', '## Notes', ''] + [f'- {note}' for note in notes]
  for plot in plots:
    lines += ['', f'![{Path(plot).stem}]({Path(plot).name})']
  return '\n'.join(lines) + '\n'


# ---- plots

def save_png(fig, path: str | os.PathLike) -> Path | str:
  """Saves a matplotlib figure atomically (temporary file, then rename) and closes it; to a URL
  (common/storage.py) as one upload of the whole image."""
  import matplotlib.pyplot as plt
  if not storage.is_local(path):
    import io
    buffer = io.BytesIO()
    try:
      fig.savefig(buffer, format='png', dpi=110)
    finally:
      plt.close(fig)
    storage.write_whole(path, buffer.getvalue())
    return os.fspath(path)
  path = Path(path)

  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.tmp-', suffix='.png')
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _as_path(path: str | os.PathLike) -> Path | str:
  """A local path as a Path (as before); a URL as a string, which Path would cut to 'gs:/...'."""
  return Path(path) if storage.is_local(path) else os.fspath(path)


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')  # files only: no display on a TPU host or in CI
  import matplotlib.pyplot as plt
  return plt


def _yerr(values: Sequence[MetricValue | None]) -> list[list[float]]:
  low = [max(0.0, v.value - v.ci_low) if v is not None and not math.isnan(v.value) else 0.0 for v in values]
  high = [max(0.0, v.ci_high - v.value) if v is not None and not math.isnan(v.value) else 0.0 for v in values]
  return [low, high]


def plot_metric_bars(path: str | os.PathLike, arms: Mapping[str, Mapping[str, MetricValue]],
                     keys: Sequence[str] | None = None) -> Path:
  """Grouped bars: one group per metric, one bar per arm, 95% intervals as error bars."""
  plt = _pyplot()
  keys = list(keys) if keys is not None else _metric_order(arms)
  if not keys:
    raise ValueError('no metrics to plot')
  names = list(arms)
  width = 0.8 / len(names)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys) * max(1, len(names)) / 2 + 2), 4.2))
  for k, arm in enumerate(names):
    values = [arms[arm].get(key) for key in keys]
    heights = [v.value if v is not None else float('nan') for v in values]  # NaN: no bar, not a zero
    xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(keys))]
    ax.bar(xs, heights, width, yerr=_yerr(values), capsize=2, label=arm)
  ax.set_xticks(range(len(keys)))
  ax.set_xticklabels(keys, rotation=35, ha='right', fontsize=8)
  ax.set_ylim(0, 1.05)
  ax.grid(axis='y', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save_png(fig, _as_path(path))


def pareto_points(arms: Mapping[str, Mapping[str, MetricValue]], x_key: str, y_key: str
                  ) -> dict[str, tuple[MetricValue, MetricValue]]:
  """(x, y) per arm that has both metrics, e.g. x_key 'xstest/not_overrefuse', y_key 'strongreject/goodness@0.1'."""
  return {arm: (m[x_key], m[y_key]) for arm, m in arms.items() if x_key in m and y_key in m}


def plot_pareto(path: str | os.PathLike, points: Mapping[str, tuple[MetricValue | Rate, MetricValue | Rate]], *,
                x_label: str = PARETO_X, y_label: str = PARETO_Y, title: str = '') -> Path:
  """One point per arm at (not_overrefuse, goodness@0.1), with both 95% intervals as error bars;
  the top right is best (helpful and safe)."""
  plt = _pyplot()
  if not points:
    raise ValueError(f'no arm has both {x_label} and {y_label}')
  fig, ax = plt.subplots(figsize=(5.5, 4.5))
  for arm, (x, y) in points.items():
    ax.errorbar([x.value], [y.value], xerr=_yerr([x]), yerr=_yerr([y]), fmt='o', capsize=3, label=arm)
    ax.annotate(arm, (x.value, y.value), textcoords='offset points', xytext=(5, 5), fontsize=8)
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  ax.set_xlim(-0.02, 1.02)
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.set_title(title or f'{y_label} vs {x_label} (top right is best)', fontsize=10)
  ax.legend(fontsize=8, loc='lower left')
  fig.tight_layout()
  return save_png(fig, _as_path(path))


def write_report(out_dir: str | os.PathLike, arms: Mapping[str, Mapping[str, MetricValue]], *,
                 samples: Sequence[Mapping[str, Any]] | None = None, disagreements: Sequence[Disagreement] = (),
                 meta: Mapping[str, Any] | None = None, notes: Sequence[str] = (), title: str = 'Evaluation',
                 plot: bool = True) -> dict[str, Path]:
  """metrics.json, samples.jsonl (when given), metrics.png (when `plot`) and report.md under out_dir."""
  out = _as_path(out_dir)
  storage.makedirs(out)

  def child(name: str) -> Path | str:
    return out / name if isinstance(out, Path) else storage.join(out, name)

  paths = {'metrics': write_metrics_json(child('metrics.json'), arms, disagreements=disagreements, meta=meta)}
  if samples is not None:
    paths['samples'] = write_samples(child('samples.jsonl'), samples)
  plots = []
  if plot and any(arms.values()):
    paths['plot'] = plot_metric_bars(child('metrics.png'), arms)
    plots.append(str(paths['plot']))
  paths['report'] = child('report.md')
  atomic.write_text(paths['report'], render_report(arms, title=title, disagreements=disagreements, notes=notes,
                                                    plots=plots))
  return paths
