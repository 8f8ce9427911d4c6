"""SFT end to end on tiny shapes: exact resume after a kill, SIGTERM, init_from, NaN guard, configs."""

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deliberative.weights import checkpoints
from deliberative import train
from deliberative.trainers.runtime import NonFiniteLoss
from tests.train_fixtures import REPO, cli_args, losses, tiny_sft_config


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(REPO, 'configs', '*.py'))))
def test_every_config_builds_and_is_complete(path):
  spec = importlib.util.spec_from_file_location('cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(None)
  module.get_config('smoke')
  assert 'name' in config and 'seed' in config, f'{path}: config lacks name or seed'
  if 'trainer' not in config:  # configs/generate.py: stage 1, no trainer (tests/test_generate.py)
    return
  for key in ('total_steps', 'model', 'mesh', 'checkpoint'):
    assert key in config, f'{path}: config lacks {key}'
  assert importlib.util.find_spec(f'deliberative.trainers.{config.trainer}') is not None
  if hasattr(module, 'sweep'):
    runs = []
    module.sweep(runs.append)
    assert runs and all(isinstance(r, dict) for r in runs)
    # The launcher as a user runs it: from another directory, with nothing on PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    printed = subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'sweep.py'), '--config', path,
                              '--dry_run'], cwd=os.path.dirname(REPO), env=env, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr[-2000:]
    commands = printed.stdout.splitlines()
    assert len(commands) == len(runs) and all('-m deliberative.train --config' in c for c in commands)


def _subprocess_env():
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return env


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_run(tmp_path, demo_data_dir):
  config = tiny_sft_config(demo_data_dir, total_steps=6, **{'checkpoint.every_steps': 3, 'mesh.data': 2})
  straight = str(tmp_path / 'straight')
  first = subprocess.run([sys.executable, '-m', 'deliberative.train', '--config', 'configs/sft.py:smoke',
                          '--workdir', straight, *cli_args(config)], cwd=REPO, env=_subprocess_env(),
                         capture_output=True, text=True)
  assert first.returncode == 0, first.stderr[-3000:]

  resumed = str(tmp_path / 'resumed')
  # Killed after step 5: step 4 and its eval were logged (metrics are fetched a step late, so not step 5),
  # but the newest checkpoint is step 3.
  killed = subprocess.run([sys.executable, '-m', 'deliberative.train', '--config', 'configs/sft.py:smoke',
                           '--workdir', resumed, *cli_args(config), '--config.debug.kill_after_step=5'],
                          cwd=REPO, env=_subprocess_env(), capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert checkpoints.latest_step(os.path.join(resumed, 'checkpoints')) == 3
  assert 4 in losses(resumed)  # logged, and to be redone
  finished = subprocess.run([sys.executable, '-m', 'deliberative.train', '--config', 'configs/sft.py:smoke',
                             '--workdir', resumed, *cli_args(config)], cwd=REPO, env=_subprocess_env(),
                            capture_output=True, text=True)
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert 'resumed from' in finished.stdout and 'at step 3' in finished.stdout

  a, b = losses(straight), losses(resumed)
  assert sorted(a) == list(range(1, 7)) and sorted(b) == list(range(1, 7))
  np.testing.assert_allclose([b[s] for s in range(1, 7)], [a[s] for s in range(1, 7)], atol=1e-6, rtol=0)
  summary = json.load(open(os.path.join(resumed, 'summary.json')))
  assert summary['start_step'] == 3 and summary['final_step'] == 6
  # metrics.jsonl: the replayed steps' lines are not repeated: the same lines as the uninterrupted run.
  assert _logged_lines(resumed) == _logged_lines(straight)
  assert 'moved 2 line(s) of steps after 3' in finished.stdout
  assert [json.loads(line)['step'] for line in open(os.path.join(resumed, 'metrics.replaced.jsonl'))] == [4, 4]
  # TensorBoard: the resumed run's event file starts with a purge marker at step 4, hiding the old step-4 events.
  newest = max(glob.glob(os.path.join(resumed, 'tensorboard', 'events.*')), key=os.path.getmtime)
  starts = [e.step for e in _events(newest) if e.HasField('session_log')]
  assert starts == [4]


def _events(path):
  """The Event protos of a TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
  import struct
  from tensorboardX.proto import event_pb2
  with open(path, 'rb') as f:
    data = f.read()
  out, i = [], 0
  while i < len(data):
    (n,) = struct.unpack('<Q', data[i:i + 8])
    event = event_pb2.Event()
    event.ParseFromString(data[i + 12:i + 12 + n])
    out.append(event)
    i += 12 + n + 4
  return out


def _logged_lines(workdir):
  """(step, metric names) per metrics.jsonl line, in order (values differ in timings)."""
  from deliberative.trainers.metrics import read_metrics
  return [(m['step'], sorted(k for k in m if not k.startswith('perf/'))) for m in read_metrics(workdir)]


@pytest.mark.slow
@pytest.mark.parametrize('stop', [signal.SIGTERM, signal.SIGINT])
def test_sigterm_saves_and_resume_continues_from_that_step(tmp_path, demo_data_dir, stop):
  """SIGTERM (a preemption) and Ctrl-C both save and stop with exit 0; the run then resumes there."""
  config = tiny_sft_config(demo_data_dir, total_steps=400, log_every_steps=1,
                           **{'checkpoint.every_steps': 1000, 'evals.every_steps': 1000})
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen([sys.executable, '-m', 'deliberative.train', '--config', 'configs/sft.py:smoke',
                           '--workdir', workdir, *cli_args(config)], cwd=REPO, env=_subprocess_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  seen = []
  for line in proc.stdout:  # wait until training is really under way
    seen.append(line)
    if line.startswith('step ') and int(line.split()[1].split('/')[0]) >= 3:
      break
    assert time.time() < deadline
  else:
    pytest.fail('the run ended before step 3:\n' + ''.join(seen[-20:]) + proc.stderr.read()[-2000:])
  proc.send_signal(stop)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert f'{stop.name}: saved step' in out, out[-2000:]
  assert 'Traceback' not in err
  saved = checkpoints.latest_step(os.path.join(workdir, 'checkpoints'))
  assert saved is not None and 3 <= saved < 400
  assert f'{stop.name}: saved step {saved}' in out

  config.total_steps = saved + 2
  summary = train.run(config, workdir)
  assert summary['start_step'] == saved and summary['final_step'] == saved + 2
  assert 'resumed from' in summary['start']


@pytest.mark.slow
def test_init_from_hugging_face_directory_trains(tmp_path, demo_data_dir):
  from deliberative.weights import hf
  from deliberative.model import loading
  config = tiny_sft_config(demo_data_dir, total_steps=2)
  from deliberative.model.config import ModelConfig
  model_cfg = ModelConfig.from_dict(config.model)
  model = loading.create(model_cfg, seed=11)
  hf_dir = str(tmp_path / 'hf')
  hf.export(loading.params_of(model), model_cfg, hf_dir)
  config.init_from = hf_dir
  config.model.n_layers = 7  # ignored: the architecture comes from the directory
  summary = train.run(config, str(tmp_path / 'run'))
  assert summary['start'].startswith('initialised from') and summary['final_step'] == 2
  assert np.isfinite(summary['final_train_loss'])
  meta = checkpoints.load_meta(str(tmp_path / 'run' / 'checkpoints'))
  assert meta['model']['n_layers'] == 2


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path, demo_data_dir):
  config = tiny_sft_config(demo_data_dir, total_steps=8, **{'checkpoint.every_steps': 2,
                                                             'debug.inject_nan_at_step': 5})
  workdir = str(tmp_path / 'run')
  with pytest.raises(NonFiniteLoss, match=r'nan at step 5.*last good checkpoint is step 4'):
    train.run(config, workdir)
  assert checkpoints.latest_step(os.path.join(workdir, 'checkpoints')) == 4


@pytest.mark.slow
def test_no_generations_evaluates_the_loss_only(tmp_path, demo_data_dir):
  # launch/recipe.py evaluates every arm itself afterwards: SFT's in-run generation eval is skipped.
  config = tiny_sft_config(demo_data_dir, total_steps=2, **{'evals.every_steps': 2, 'evals.num_generations': 0,
                                                             'evals.at_start': True})
  summary = train.run(config, str(tmp_path / 'run'))
  assert np.isfinite(summary['eval/loss'])
  assert not any(k.startswith('eval/decision_accuracy') for k in summary)
  assert not os.listdir(tmp_path / 'run' / 'samples')
