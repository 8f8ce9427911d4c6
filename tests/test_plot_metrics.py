"""tools/plot_metrics.py on a hand-written workdir: default panels by trainer, errors that name the key."""

import json
import os
import re

import pytest

from tools import plot_metrics


def _workdir(path, trainer, rows):
  os.makedirs(path)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'trainer': trainer}, f)
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')
  return str(path)


def test_rl_panels_are_drawn_for_two_runs_and_unknown_keys_are_named(tmp_path, capsys):
  rows = [{'step': 0, 'eval/mean_reward': 0.8, 'eval/decision_accuracy': 0.86}]
  rows += [{'step': s, 'rl/reward': 0.8 + 0.01 * s, 'rl/kl': 0.001 * s, 'rl/entropy': 0.2,
            'rl/response_tokens': 80.0} for s in range(1, 11)]
  rows += [{'step': 10, 'eval/mean_reward': 0.86, 'eval/decision_accuracy': 0.89}]
  a = _workdir(tmp_path / 'a', 'rl', rows)
  b = _workdir(tmp_path / 'b', 'rl', rows[:5])
  assert plot_metrics.main([a, b]) == 0
  with open(os.path.join(a, 'curves.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # Panels this run never logged (group spread, citation accuracy) are left out, not drawn empty.
  assert '6 panels, 2 run(s)' in capsys.readouterr().out
  assert not [n for n in os.listdir(a) if n.startswith('.tmp-')]  # the temp file became curves.png

  assert plot_metrics.main([a, '--keys', 'rl/rewrd', '--out', str(tmp_path / 'x.png')]) == 1
  assert re.search(r'^error: rl/rewrd: in no metrics.jsonl.*available: .*rl/reward', capsys.readouterr().err)
  assert plot_metrics.main([str(tmp_path)]) == 1
  assert 'no config.json' in capsys.readouterr().err


def test_ema_is_bias_corrected_and_zero_smoothing_is_identity():
  assert plot_metrics.ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0
  assert plot_metrics.ema([1.0, 3.0], 0.0) == [1.0, 3.0]
  assert plot_metrics.ema([0.0, 1.0], 0.5) == pytest.approx([0.0, 0.5 / 0.75])
