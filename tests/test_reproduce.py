"""tools/reproduce.py: the seed table, its verdicts and its stamp, from a finished demo tree.

The trainings themselves are tested elsewhere (tests/test_ablate.py runs a smoke grid for real);
here every stage's output already exists, written by the project's own writers, so the command
must skip them all and build its tables from them.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools'))
import reproduce  # noqa: E402

from deliberative.evals import report  # noqa: E402

SUITE = {'demo/decision_accuracy': (0.60, 0.62), 'demo_jailbreak/goodness@0.1': (0.45, 0.10)}


def _finished_seed(root, seed: int, judge_auc: float, reward: tuple[float, float]):
  """One seed's grid as the trainers and the evaluator leave it."""
  for name, summary in (('sft', {'final_step': 300}),
                        ('judge', {'eval/judge_auc': judge_auc, 'eval/judge_accuracy': 0.6,
                                   'eval/judge_majority_accuracy': 0.61, 'eval_start/judge_auc': 0.45}),
                        ('sft_rl', {'eval/mean_reward_start': reward[0], 'eval/mean_reward_end': reward[1],
                                    'eval/decision_accuracy_start': 0.6, 'eval/decision_accuracy_end': 0.6 + seed / 100,
                                    'wall_seconds': 60.0})):
    os.makedirs(root / name, exist_ok=True)
    (root / name / 'summary.json').write_text(json.dumps(summary))
  for i, arm in enumerate(('sft', 'sft_rl')):
    model = {k: report.MetricValue(v[i] + seed / 100, 0.0, 1.0, 100, 'demo') for k, v in SUITE.items()}
    lookup = {k: report.MetricValue(0.7, 0.6, 0.8, 100, 'demo') for k in SUITE}
    report.write_metrics_json(root / arm / 'eval' / 'metrics.json', {'model': model, report.BASELINE_ARM: lookup},
                              meta={'checkpoint': str(root / arm), 'wall_seconds': 5.0})


def test_demo_tier_from_finished_runs_reports_spread_and_verdicts(tmp_path, capsys):
  out = tmp_path / 'repro'
  for seed, (auc, reward) in enumerate(((0.75, (0.66, 0.77)), (0.65, (0.70, 0.68)), (0.70, (0.68, 0.70)))):
    _finished_seed(out / f'seed_{seed}', seed, auc, reward)
  assert reproduce.main(['--tier', 'demo', '--seeds', '3', '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert printed.count('done already') == 15  # 5 stages x 3 seeds, none rerun
  md = (out / 'reproduce.md').read_text()
  data = json.loads((out / 'reproduce.json').read_text())
  auc = data['figures']['judge ROC AUC (judge_eval)']
  assert auc['mean'] == pytest.approx(0.70) and auc['min'] == 0.65 and auc['max'] == 0.75
  assert auc['std'] == pytest.approx(0.05)
  assert '| judge ROC AUC (judge_eval) | 0.750 | 0.650 | 0.700 | **0.700** | 0.050 | 0.650 - 0.750 |' in md
  # The reward rose on one seed and fell on another: within spread, whatever the mean says.
  assert data['changes']['RL: mean judge reward, end - start']['verdict'] == 'within spread'
  # goodness fell by 0.35 on every seed: a change.
  assert data['changes']['SFT + RL - SFT: demo_jailbreak/goodness@0.1']['verdict'] == 'change (down)'
  assert data['figures']['lookup baseline demo/decision_accuracy']['mean'] == pytest.approx(0.7)
  st = data['stamp']
  assert st['seeds'] == [0, 1, 2] and st['wall_seconds'] >= 0 and st['load_samples'] >= 1
  assert md.startswith('# Reproduction: tier demo\n\n- commit `') and '- wall time 0:' in md


@pytest.mark.parametrize('diffs, expected', [
    ([0.1, 0.12, 0.09], 'change (up)'),
    ([-0.2, -0.01, -0.3], 'change (down)'),  # same sign, mean 0.17 > std 0.15
    ([-0.02, -0.01, -0.3], 'within spread'),  # same sign, but the mean is inside the seeds' spread
    ([0.1, -0.1, 0.3], 'within spread'),
    ([0.1], 'one seed: no verdict'),
])
def test_a_change_must_exceed_the_seed_spread(diffs, expected):
  assert reproduce.verdict(diffs) == expected


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    reproduce.parse_args(['--tier', 'demo', '--seeds', '0', '--out', str(tmp_path)])
  assert e.value.code == 2 and '--seeds must be >= 1' in capsys.readouterr().err
  afile = tmp_path / 'file'
  afile.write_text('x')
  with pytest.raises(SystemExit):
    reproduce.parse_args(['--tier', 'demo', '--out', str(afile)])
  assert 'is not a directory' in capsys.readouterr().err
  with pytest.raises(SystemExit, match='--xstest'):
    reproduce.main(['--tier', 'smollm2', '--out', str(tmp_path / 'x')])


def test_dry_run_prints_each_seeds_commands_and_runs_nothing(tmp_path, capsys):
  assert reproduce.main(['--tier', 'demo', '--seeds', '2', '--out', str(tmp_path / 'r'), '--dry_run']) == 0
  out = capsys.readouterr().out
  for seed in (0, 1):
    for config in ('sft', 'judge', 'rl'):
      assert f'configs/{config}.py --workdir {tmp_path}/r/seed_{seed}/' in out
    assert out.count(f'--config.seed={seed}') == 3
  assert not (tmp_path / 'r').exists()
