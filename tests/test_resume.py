"""Nothing lost, nothing silent: resume checks, damaged and failed checkpoints, config validation, CLI errors."""

import glob
import json
import os
import shutil
import subprocess

import pytest

from deliberative.weights import checkpoints
from deliberative import train
from deliberative.common.errors import CheckpointError, ConfigMismatch
from tests.train_fixtures import run_python, tiny_sft_config


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, demo_data_dir):
  """A 4-step tiny SFT run with checkpoints at steps 2 and 4 (copied by each test that changes it)."""
  workdir = str(tmp_path_factory.mktemp('resume') / 'run')
  config = tiny_sft_config(demo_data_dir, total_steps=4)
  train.run(config, workdir)
  return workdir, config


def _copy(finished_run, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished_run[0], workdir)
  return workdir, finished_run[1].copy_and_resolve_references()


def _read(path):
  with open(path) as f:
    return f.read()


@pytest.mark.parametrize('field,value,shown', [
    ('model.rope_theta', 500000.0, 'model.rope_theta: 10000.0 in the checkpoint vs 500000.0 now'),
    ('model.d_model', 128, 'model.d_model: 64 in the checkpoint vs 128 now'),
    ('data.seq_len', 256, 'data.seq_len: 192 in the checkpoint vs 256 now'),
])
def test_resume_with_a_math_changing_field_fails_naming_it_before_writing(finished_run, tmp_path, field, value,
                                                                          shown):
  workdir, config = _copy(finished_run, tmp_path)
  before = _read(os.path.join(workdir, 'config.json'))
  setattr(config[field.split('.')[0]], field.split('.')[1], value)
  config.total_steps = 6
  with pytest.raises(ConfigMismatch) as err:
    train.run(config, workdir)
  assert shown in str(err.value) and f'--allow_config_change={field}' in str(err.value)
  assert _read(os.path.join(workdir, 'config.json')) == before
  assert checkpoints.latest_step(os.path.join(workdir, 'checkpoints')) == 4


def test_another_model_size_names_each_architecture_field(finished_run, tmp_path):
  from deliberative import config_lib
  workdir, config = _copy(finished_run, tmp_path)
  config.model = config_lib.model_config('tiny')  # 4 layers of 256 where the run has 2 of 64
  with pytest.raises(ConfigMismatch) as err:
    train.run(config, workdir)
  for field in ('model.d_model: 64', 'model.n_layers: 2', 'model.ffn_dim: 128'):
    assert field in str(err.value)


@pytest.mark.slow
def test_harmless_changes_are_a_note_and_the_old_config_is_kept(finished_run, tmp_path, capsys):
  workdir, config = _copy(finished_run, tmp_path)
  before = json.loads(_read(os.path.join(workdir, 'config.json')))
  config.total_steps = 5
  config.evals.num_generations = 4
  summary = train.run(config, workdir)
  out = capsys.readouterr().out
  assert summary['start_step'] == 4 and summary['final_step'] == 5
  assert 'note: resuming' in out and 'evals.num_generations=4 (was 8)' in out and 'total_steps=5 (was 4)' in out
  assert json.loads(_read(os.path.join(workdir, 'config.4.json'))) == before
  assert json.loads(_read(os.path.join(workdir, 'config.json')))['total_steps'] == 5


@pytest.mark.slow
def test_allow_config_change_accepts_a_named_field(finished_run, tmp_path, capsys):
  workdir, config = _copy(finished_run, tmp_path)
  config.optim.lr = 1e-4
  config.total_steps = 5
  with pytest.raises(ConfigMismatch, match='optim.lr'):
    train.run(config, workdir)
  summary = train.run(config, workdir, allow_config_change=['optim.lr'])
  assert summary['final_step'] == 5 and 'allowed by --allow_config_change' in capsys.readouterr().out


def _largest_array_file(step_dir):
  files = glob.glob(os.path.join(step_dir, 'params', 'ocdbt.process_0', 'd', '*'))
  return max(files, key=os.path.getsize)


@pytest.mark.slow
def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path, capsys):
  workdir, config = _copy(finished_run, tmp_path)
  damaged = _largest_array_file(os.path.join(workdir, 'checkpoints', '4'))
  size = os.path.getsize(damaged)
  with open(damaged, 'r+b') as f:
    f.truncate(1000)
  config.total_steps = 5
  summary = train.run(config, workdir)
  out = capsys.readouterr().out
  assert (f'checkpoint step 4 ({workdir}/checkpoints/4) cannot be read: {damaged}: 1,000 bytes where {size:,} '
          'were saved at step 4') in out  # the digests' sizes: which file, both sizes
  assert 'resuming from step 2, the newest readable checkpoint' in out
  assert summary['start_step'] == 2 and summary['final_step'] == 5
  kept = glob.glob(os.path.join(workdir, 'checkpoints_damaged', '4.*'))
  assert len(kept) == 1 and os.path.getsize(os.path.join(kept[0], os.path.relpath(
      damaged, os.path.join(workdir, 'checkpoints', '4')))) == 1000  # moved aside, not deleted
  assert out.count('\n') < 40  # no dump of every abandoned read


@pytest.mark.slow
def test_bit_rot_in_the_latest_checkpoint_is_found_and_the_previous_one_used(finished_run, tmp_path, capsys):
  workdir, config = _copy(finished_run, tmp_path)
  for step in (2, 4):  # every finished save left its digests
    assert checkpoints.verify_digests(os.path.join(workdir, 'checkpoints'), step)
  damaged = _largest_array_file(os.path.join(workdir, 'checkpoints', '4'))
  size = os.path.getsize(damaged)
  assert size > 3 * 16384
  # 16 KB of rot inside the file, size unchanged. At a quarter of the way in, Orbax alone reads the
  # file without complaint (measured: 5,867 parameters changed, no error); at the middle, zstd happens
  # to notice. Either way the digests must name the file before any read.
  with open(damaged, 'r+b') as f:
    f.seek(size // 4)
    f.write(os.urandom(16384))
  assert os.path.getsize(damaged) == size
  config.total_steps = 5
  summary = train.run(config, workdir)
  out = capsys.readouterr().out
  assert f'checkpoint step 4 ({workdir}/checkpoints/4) cannot be read: {damaged}: sha256 mismatch' in out, out
  assert 'resuming from step 2, the newest readable checkpoint' in out
  assert summary['start_step'] == 2 and summary['final_step'] == 5
  assert len(glob.glob(os.path.join(workdir, 'checkpoints_damaged', '4.*'))) == 1
  assert checkpoints.verify_digests(os.path.join(workdir, 'checkpoints'), 5)  # the new save is sealed too


def test_exports_and_evaluations_refuse_rotten_params_naming_the_file(finished_run, tmp_path):
  from deliberative.model import loading
  workdir, _ = _copy(finished_run, tmp_path)
  ckpt = os.path.join(workdir, 'checkpoints')
  abstract = checkpoints.abstract_of(loading.abstract_params(checkpoints.model_config_from_meta(
      checkpoints.load_meta(ckpt, 4))))
  damaged = _largest_array_file(os.path.join(ckpt, '4'))
  with open(damaged, 'r+b') as f:
    f.seek(os.path.getsize(damaged) // 4)
    f.write(bytes(64))
  with pytest.raises(checkpoints.DigestMismatch, match=f'{damaged}: sha256 mismatch'):
    checkpoints.restore_params(ckpt, abstract, 4)


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(finished_run, tmp_path, capsys):
  workdir, config = _copy(finished_run, tmp_path)
  with open(os.path.join(workdir, 'checkpoints', '2', 'data', 'metadata'), 'w'):
    pass  # an emptied JSON item
  # Step 2 as a checkpoint saved before digests existed: the reader's own checks still catch the damage.
  os.remove(os.path.join(workdir, 'checkpoints', '2', checkpoints.DIGESTS))
  with open(_largest_array_file(os.path.join(workdir, 'checkpoints', '4')), 'r+b') as f:
    f.truncate(10)
  config.total_steps = 6
  with pytest.raises(CheckpointError, match=r'none of its checkpoints \(steps 4, 2\) can be read'):
    train.run(config, workdir)
  out = capsys.readouterr().out
  assert 'note: checkpoint step 2 has no digests.json' in out and 'read unverified' in out
  assert f'{workdir}/checkpoints/2/data/metadata: not valid JSON' in out
  assert f'cannot be read: {workdir}/checkpoints/4/params/' in out and ': 10 bytes where' in out
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']  # left where they were


@pytest.mark.parametrize('field,value,message', [
    ('checkpoint.every_steps', 0, 'config.checkpoint.every_steps=0: must be >= 1'),
    ('batch_size', -8, 'config.batch_size=-8: must be >= 1'),
    ('mesh.data', 3, 'config.mesh: mesh: '),
    ('optim.lr', float('nan'), 'config.optim.lr=nan: must be a finite number'),
    ('optim.grad_clip', float('inf'), 'config.optim.grad_clip=inf: must be a finite number'),
])
def test_bad_values_fail_at_start_naming_the_field_and_write_nothing(demo_data_dir, tmp_path, field, value,
                                                                     message):
  config = tiny_sft_config(demo_data_dir, **{field: value})
  workdir = str(tmp_path / 'run')
  with pytest.raises(ValueError, match=message.replace('(', r'\(')):
    train.run(config, workdir)
  assert not os.path.exists(workdir)


def _cli(*args, env=None):
  return run_python('-m', 'deliberative.train', *args, env=env)


@pytest.mark.slow
def test_a_config_typo_is_one_line_and_debug_restores_the_traceback(tmp_path):
  typo = _cli('--config', 'configs/sft.py:smoke', '--config.total_step=3', '--workdir', str(tmp_path / 'w'))
  assert typo.returncode == 2
  lines = typo.stderr.strip().splitlines()
  assert len(lines) <= 2 and 'Traceback' not in typo.stderr, typo.stderr
  assert lines[0] == ('error: --config.total_step: the config has no field \'total_step\'. '
                      'Did you mean "total_steps" instead of "total_step"?')
  debug = _cli('--config', 'configs/sft.py:smoke', '--config.total_step=3', env={'DELIBERATIVE_DEBUG': '1'})
  assert debug.returncode != 0 and 'Traceback (most recent call last)' in debug.stderr

  bad = _cli('--config', 'configs/sft.py:smoke', '--config.checkpoint.every_steps=0', '--workdir',
             str(tmp_path / 'w'))
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[0] == (
      'error: config.checkpoint.every_steps=0: must be >= 1'), bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 2 and not os.path.exists(tmp_path / 'w')


@pytest.fixture
def small_disk(tmp_path):
  """A real 8 MiB filesystem (tmpfs): room for one tiny checkpoint (~5.4 MB), not two."""
  mount_point = tmp_path / 'run' / 'checkpoints'
  mount_point.mkdir(parents=True)
  made = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', str(mount_point)], capture_output=True,
                        text=True)
  if made.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here to fill a real disk: {made.stderr.strip()}')
  try:
    yield str(tmp_path / 'run')
  finally:
    subprocess.run(['umount', '-l', str(mount_point)], check=False)


@pytest.mark.slow
def test_a_save_into_a_full_disk_stops_the_run_in_one_line_and_keeps_the_last_good(demo_data_dir, small_disk):
  from tests.train_fixtures import cli_args
  config = tiny_sft_config(demo_data_dir, total_steps=12, **{'checkpoint.every_steps': 2, 'checkpoint.keep': 3,
                                                              'evals.every_steps': 100})
  run = _cli('--config', 'configs/sft.py:smoke', '--workdir', small_disk, *cli_args(config),
             env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-3000:]
  lines = run.stderr.strip().splitlines()
  ckpt_dir = os.path.join(small_disk, 'checkpoints')
  assert [line for line in lines if line.startswith('error:')] == [(f'error: saving step 4 to {ckpt_dir} failed: [Errno 28] No space left on device (ENOSPC); '
                       'stopping the run (the last good checkpoint is step 2)')], run.stderr[-3000:]
  assert len(lines) == 2 and 'sys.meta_path' not in run.stderr, run.stderr  # and the --debug hint
  from deliberative.trainers.metrics import read_metrics
  trained = [m['step'] for m in read_metrics(small_disk) if 'train/loss' in m]
  assert max(trained) <= 6  # stopped at most one save interval after the failed save
  assert checkpoints.latest_step(ckpt_dir) == 2
  meta = checkpoints.load_meta(ckpt_dir, 2)  # the previous checkpoint is whole
  assert meta['model']['d_model'] == 64
