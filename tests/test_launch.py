"""launch/pod.py (the gcloud commands, as a dry run or through a scripted runner: no network, no gcloud)
and launch/sweep.py (run names, skipping finished runs, the results table and plot, --parallel)."""

import csv
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PNG = b'\x89PNG\r\n\x1a\n'


def _load(name):
  sys.path.insert(0, str(REPO / 'launch'))  # sweep.py imports pod
  spec = importlib.util.spec_from_file_location(name, REPO / 'launch' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


pod = _load('pod')
sweep = _load('sweep')

SLICE = ['--name', 'dl-sft', '--zone', 'us-east5-a', '--project', 'my-proj']
WHERE = ['--zone=us-east5-a', '--project=my-proj']
QR = ['gcloud', 'compute', 'tpus', 'queued-resources']
STATE = [*QR, 'describe', 'dl-sft', *WHERE, '--format=value(state.state)']
CREATE = [*QR, 'create', 'dl-sft', '--node-id=dl-sft', *WHERE, '--accelerator-type=v5p-64',
          '--runtime-version=v2-alpha-tpuv5', '--spot']
DELETE = [*QR, 'delete', 'dl-sft', *WHERE, '--force', '--quiet']
SCP = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', pod.local_tarball('dl-sft'), 'dl-sft:~/deliberative.tgz',
       '--worker=all', *WHERE]
SSH = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'dl-sft', '--worker=all', *WHERE]
TRAIN = ['--config', 'configs/sft.py:size=small', '--workdir', '/mnt/runs/sft', '--', '--config.total_steps=10']


@pytest.fixture(autouse=True)
def no_gcloud(monkeypatch):
  """gcloud may be installed here: a test that forgot --dry_run must fail, never reach a real project."""
  monkeypatch.setattr(pod.shutil, 'which', lambda _: None)


def _dry(capsys, *argv):
  assert pod.main([argv[0], '--dry_run', *argv[1:]]) == 0
  return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


# -- pod.py -----------------------------------------------------------------------------------------

def test_create_describes_first_then_creates_a_spot_queued_resource(capsys):
  cmds = _dry(capsys, 'create', *SLICE, '--accelerator_type', 'v5p-64', '--spot')
  assert cmds == [STATE, CREATE, STATE]  # exists? create; then wait for ACTIVE
  on_demand = _dry(capsys, 'create', *SLICE, '--accelerator_type', 'v5litepod-16', '--runtime_version', 'my-img')
  assert on_demand[1][-2:] == ['--accelerator-type=v5litepod-16', '--runtime-version=my-img']


def test_setup_copies_the_git_files_to_every_worker_and_installs_both_requirements(capsys):
  tar, scp, ssh = _dry(capsys, 'setup', *SLICE)
  assert tar[:3] == ['bash', '-o', 'pipefail'] and 'ls-files -z --cached --others --exclude-standard' in tar[-1]
  assert f'-czf {pod.local_tarball("dl-sft")} -T -' in tar[-1]
  assert scp == SCP
  assert ssh[:-1] == SSH
  remote = ssh[-1].removeprefix('--command=')
  assert 'python3.11 -m venv .venv' in remote
  assert remote.endswith('.venv/bin/pip install -q -r requirements.txt -r requirements-tpu.txt')


def test_run_starts_the_trainer_on_all_workers_with_the_auto_coordinator(capsys):
  [ssh] = _dry(capsys, 'run', *SLICE, *TRAIN)
  assert ssh[:-1] == SSH
  remote = ssh[-1].removeprefix('--command=')
  train = ('.venv/bin/python -m deliberative.train --config configs/sft.py:size=small --workdir /mnt/runs/sft '
           '--config.total_steps=10 --coordinator_address=auto')
  assert remote == (f'set -o pipefail; cd ~/deliberative && W=$({pod.WORKER_NUMBER}) && '
                    f'{train} 2>&1 | sed -u "s/^/[worker-$W] /"')


def test_delete_and_a_watch_cycle(capsys):
  assert _dry(capsys, 'delete', *SLICE) == [DELETE]
  cmds = _dry(capsys, 'watch', *SLICE, '--accelerator_type', 'v5p-64', '--spot', *TRAIN)
  assert cmds[:3] == [STATE, CREATE, STATE] and cmds[4:6] == [SCP, SSH + [cmds[5][-1]]]
  assert 'deliberative.train' in cmds[6][-1] and cmds[7:] == [STATE, DELETE]


def test_flag_errors_name_the_flag(capsys):
  with pytest.raises(SystemExit):
    pod.main(['create', *SLICE, '--accelerator_type', 'v5p64', '--dry_run'])
  assert "--accelerator_type='v5p64'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    pod.main(['watch', *SLICE, '--dry_run'])
  assert '--accelerator_type is required' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    pod.main(['delete', *SLICE, '--dry_run', '--', '--config.x=1'])
  assert 'takes no training flags' in capsys.readouterr().err
  assert pod.main(['run', *SLICE, '--workdir', '/mnt/x', '--dry_run']) == 2
  assert '--config is required' in capsys.readouterr().err
  assert pod.main(['delete', *SLICE]) == 2  # no_gcloud: as on a machine without the SDK
  err = capsys.readouterr().err
  assert 'gcloud is not on PATH' in err and '--dry_run' in err


def test_the_code_tarball_is_the_working_tree_without_venv_or_runs(tmp_path):
  tarball = tmp_path / 'code.tgz'
  assert subprocess.run(pod.tarball_cmd(str(tarball))).returncode == 0  # real git + tar, ~0.3 s
  with tarfile.open(tarball) as t:
    names = t.getnames()
  assert {'launch/pod.py', 'deliberative/train.py', 'requirements.txt'} <= set(names)
  assert not [n for n in names if n.startswith(('.venv/', 'runs/', '.git/'))]


def test_workdir_warnings():
  assert pod.workdir_warning('gs://b/runs/x') == ''  # written through common/storage.py (gcsfs on the pod)
  assert 'relative' in pod.workdir_warning('runs/x')
  assert pod.workdir_warning('/mnt/runs/x') == ''


class ScriptedRunner(pod.Runner):
  """Answers gcloud as a slice would: the queued resource's states in turn, the trainer's results in turn."""

  def __init__(self, states, trainings):
    super().__init__(dry_run=False, echo=lambda line: None)
    self.states, self.trainings, self.calls = list(states), list(trainings), []

  def require_gcloud(self, subcommand):
    pass

  def sleep(self, seconds):
    pass

  def __call__(self, cmd, capture=False, log_dir=''):
    self.calls.append(cmd)
    if cmd[:5] == STATE[:5]:
      state = self.states.pop(0)
      return pod.Result(0 if state else 1, state)
    if 'deliberative.train' in cmd[-1]:
      return self.trainings.pop(0)
    return pod.Result(0)


def _watch_args(*extra):
  return pod.parse_args(['watch', *SLICE, '--accelerator_type', 'v5p-64', '--spot', *extra, *TRAIN])


def test_watch_recreates_a_preempted_slice_and_reruns_the_same_command():
  runner = ScriptedRunner(
      # absent; ACTIVE after create; SUSPENDED after the run; (restart) SUSPENDED; ACTIVE; still ACTIVE at the end
      states=['', 'ACTIVE', 'SUSPENDED', 'SUSPENDED', 'ACTIVE', 'ACTIVE'],
      # the trainer saves on SIGTERM and exits 0: the log line says it was a preemption, not the end
      trainings=[pod.Result(0, pod.PREEMPTED_MARK), pod.Result(0)])
  assert pod.watch(runner, _watch_args('--delete_when_done')) == 0
  runs = [c for c in runner.calls if 'deliberative.train' in c[-1]]
  assert len(runs) == 2 and runs[0] == runs[1]
  creates = [c for c in runner.calls if c[:5] == CREATE[:5]]
  assert creates == [CREATE, CREATE]
  # the suspended queued resource is deleted before its name is used again; the finished slice too
  deletes = [i for i, c in enumerate(runner.calls) if c == DELETE]
  assert len(deletes) == 2 and deletes[0] < runner.calls.index(CREATE, runner.calls.index(CREATE) + 1)
  assert runner.calls[-1] == DELETE


def test_watch_does_not_retry_a_trainer_failure_on_a_healthy_slice():
  runner = ScriptedRunner(states=['ACTIVE', 'ACTIVE', 'ACTIVE'], trainings=[pod.Result(3)])
  assert pod.watch(runner, _watch_args()) == 3
  assert [c for c in runner.calls if c[:5] == CREATE[:5]] == []  # reused the existing slice


def test_run_output_is_split_into_one_log_per_worker(tmp_path, capsys):
  script = ('printf "[worker-0] step 1\\n[worker-1] step 1\\nssh: note\\n'
            f'[worker-1] {pod.PREEMPTED_MARK} 4 to x\\n"; exit 5')
  result = pod.Runner(echo=lambda line: None)(['bash', '-c', script], log_dir=str(tmp_path))
  assert result == pod.Result(5, pod.PREEMPTED_MARK)
  assert (tmp_path / 'worker-0.log').read_text() == 'step 1\n'
  assert (tmp_path / 'worker-1.log').read_text() == f'step 1\n{pod.PREEMPTED_MARK} 4 to x\n'
  assert (tmp_path / 'all.log').read_text().count('\n') == 4
  assert pod.split_worker_line('[worker-12] hi\n') == ('12', 'hi\n')
  assert pod.split_worker_line('Warning: x\n') == ('', 'Warning: x\n')


# -- sweep.py: names ---------------------------------------------------------------------------------

@pytest.mark.parametrize('config', ['judge', 'rl'])
def test_run_names_are_short_unique_and_safe_for_the_real_sweeps(config):
  runs = sweep.load_sweep(str(REPO / 'configs' / f'{config}.py'))
  names = sweep.run_names(runs)
  assert len(set(names)) == len(names) == len(runs)
  assert all(re.fullmatch(r'[0-9]{3}-[A-Za-z0-9_-]+', n) and len(n) <= sweep.MAX_NAME for n in names), names
  if config == 'judge':
    assert names[10] == '010-small-lr1e-3-brief'
    assert names[11] == '011-small-lr1e-3-brief-answer_and_cot'


def test_names_keep_only_what_varies_and_compact_numbers():
  assert sweep.run_names([{'config_arg': 'size=tiny,smoke', 'optim.lr': 2.5e-4, 'x.steps': 100},
                          {'config_arg': 'size=tiny,smoke', 'optim.lr': 0.05, 'x.steps': 1.5}]) == [
                              '000-lr2p5e-4-steps100', '001-lr5e-2-steps1p5']
  assert sweep.run_names([{'a': 'x/y z'}]) == ['000-x-y-z']
  long = [{'k': 'v' * 200, 'i': i} for i in range(2)]
  assert all(len(n) <= sweep.MAX_NAME for n in sweep.run_names(long))


# -- sweep.py: running, skipping, the table -------------------------------------------------------------

def _sweep_config(tmp_path):
  path = tmp_path / 'cfg.py'
  path.write_text('def sweep(add):\n'
                  '  for lr in (1e-3, 2e-3):\n'
                  '    for rubric in ("brief", "default"):\n'
                  '      add({"optim.lr": lr, "judge.rubric": rubric})\n')
  return str(path)


def _write_summary(workdir, **values):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(values, f)


def _fake_train(auc_by_name, launched):
  """A launch that writes the summary the trainer would, after recording the command."""
  def launch(cmd, log_path):
    workdir = cmd[cmd.index('--workdir') + 1]
    launched.append(os.path.basename(workdir))
    auc = auc_by_name.get(os.path.basename(workdir))
    if auc is not None:
      _write_summary(workdir, **{'eval/judge_auc': auc, 'eval/judge_accuracy': 0.5, 'eval/judge_auc/x': 0.1,
                                 'final_step': 4, 'preempted': False})
    return 0 if auc is not None else 1
  return launch


def test_finished_entries_are_skipped_and_the_table_is_sorted(tmp_path, capsys):
  config, root = _sweep_config(tmp_path), str(tmp_path / 'root')
  names = sweep.run_names(sweep.load_sweep(config))
  assert names == ['000-lr1e-3-brief', '001-lr1e-3-default', '002-lr2e-3-brief', '003-lr2e-3-default']
  _write_summary(os.path.join(root, names[0]), **{'eval/judge_auc': 0.7, 'final_step': 4})
  _write_summary(os.path.join(root, names[1]), **{'eval/judge_auc': 0.2, 'preempted': True})  # resumes
  launched = []
  rc = sweep.main(['--config', config, '--root', root],
                  launch=_fake_train({names[1]: 0.6, names[2]: 0.9}, launched))
  assert rc == 1  # entry 3 failed (no summary)
  assert launched == names[1:]
  assert f'# [0] {names[0]}: skipped' in capsys.readouterr().out
  with open(os.path.join(root, 'runs.json')) as f:
    assert json.load(f)[names[2]] == {'optim.lr': 2e-3, 'judge.rubric': 'brief'}

  with open(os.path.join(root, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['name'] for r in rows] == [names[2], names[0], names[1], names[3]]  # best AUC first, missing last
  assert list(rows[0]) == ['name', 'status', 'optim.lr', 'judge.rubric', 'eval/judge_auc', 'eval/judge_accuracy',
                           'final_step']
  assert rows[0] == {'name': names[2], 'status': 'done', 'optim.lr': '0.002', 'judge.rubric': 'brief',
                     'eval/judge_auc': '0.9', 'eval/judge_accuracy': '0.5', 'final_step': '4'}
  assert rows[3]['status'] == 'missing' and rows[3]['eval/judge_auc'] == ''
  md = Path(root, 'results.md').read_text()
  assert md.index(names[2]) < md.index(names[0]) < md.index(names[3])
  assert '| 002-lr2e-3-brief | done | 0.002 | brief | 0.9 | 0.5 | 4 |' in md
  assert Path(root, 'results.png').read_bytes()[:8] == PNG

  # Nothing left but the failed entry; --report_only rewrites the table, ascending on request.
  launched.clear()
  sweep.main(['--config', config, '--root', root], launch=_fake_train({}, launched))
  assert launched == [names[3]]
  assert sweep.main(['--config', config, '--root', root, '--report_only', '--sort_by', 'eval/judge_auc',
                     '--ascending']) == 0
  with open(os.path.join(root, 'results.csv')) as f:
    assert [r['name'] for r in csv.DictReader(f)] == [names[1], names[0], names[2], names[3]]


def test_a_name_reused_for_other_overrides_is_not_skipped(tmp_path, capsys):
  config, root = _sweep_config(tmp_path), str(tmp_path / 'root')
  names = sweep.run_names(sweep.load_sweep(config))
  for name in names:
    _write_summary(os.path.join(root, name), **{'eval/judge_auc': 0.5})
  old = {n: {'optim.lr': 1.0} for n in names[:1]}  # an earlier sweep, another constant field
  Path(root, 'runs.json').write_text(json.dumps(old))
  launched = []
  sweep.main(['--config', config, '--root', root], launch=_fake_train({names[0]: 0.5}, launched))
  assert launched == names[:1]
  assert 'runs.json had other overrides' in capsys.readouterr().out


def test_parallel_runs_real_processes_with_a_log_each(tmp_path):
  config, root = _sweep_config(tmp_path), str(tmp_path / 'root')
  writer = ('import json, os, sys; w = sys.argv[1]; os.makedirs(w, exist_ok=True); print("training", w); '
            'json.dump({"eval/judge_auc": len(w) / 100}, open(os.path.join(w, "summary.json"), "w"))')

  def launch(cmd, log_path):
    assert log_path  # side by side: each run's output in its own file
    return sweep.launch_local([sys.executable, '-c', writer, cmd[cmd.index('--workdir') + 1]], log_path)

  assert sweep.main(['--config', config, '--root', root, '--parallel', '2'], launch=launch) == 0
  for name in sweep.run_names(sweep.load_sweep(config)):
    assert Path(root, name, 'summary.json').exists()
    assert 'training' in Path(root, 'logs', f'{name}.log').read_text()


def test_sweep_on_pods_is_one_watched_slice_per_entry(tmp_path, capsys):
  config = _sweep_config(tmp_path)
  rel = os.path.relpath(config, REPO)
  assert sweep.main(['--config', config, '--root', '/mnt/sw', '--dry_run', '--only', '1,2', '--pod', 'dl',
                     '--zone', 'us-east5-a', '--accelerator_type', 'v5p-8', '--spot']) == 0
  cmds = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
  creates = [c for c in cmds if c[:5] == CREATE[:5]]
  assert [c[5] for c in creates] == ['dl-001-lr1e-3-default', 'dl-002-lr2e-3-brief']
  assert all('--spot' in c and '--accelerator-type=v5p-8' in c for c in creates)
  trains = [c[-1] for c in cmds if 'deliberative.train' in c[-1]]
  assert len(trains) == 2
  assert (f'--config {rel} --workdir /mnt/sw/002-lr2e-3-brief --config.optim.lr=0.002 --config.judge.rubric=brief '
          '--coordinator_address=auto') in trains[1]
  with pytest.raises(SystemExit):
    sweep.main(['--config', config, '--pod', 'dl', '--zone', 'z', '--accelerator_type', 'tpu'])


def test_results_plot_and_table_with_no_summaries(tmp_path):
  runs = [{'optim.lr': 1e-3}, {'optim.lr': 2e-3}]
  paths = sweep.write_results(str(tmp_path), sweep.run_names(runs), runs, 'eval/judge_auc')
  assert Path(paths['png']).read_bytes()[:8] == PNG
  rows = list(csv.reader(io.StringIO(Path(paths['csv']).read_text())))
  assert rows[0] == ['name', 'status', 'optim.lr', 'eval/judge_auc'] and len(rows) == 3
