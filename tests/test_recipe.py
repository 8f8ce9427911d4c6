"""launch/recipe.py: the plan's wiring (dry run), and a killed recipe resuming without redoing a stage."""

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / 'tests' / 'fixtures' / 'prompt_sets'


def _load(name):
  spec = importlib.util.spec_from_file_location(name, REPO / 'launch' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


recipe = _load('recipe')


def _commands(capsys, *argv):
  assert recipe.main(['--dry_run', *argv]) == 0
  out = capsys.readouterr().out.splitlines()
  return out, [shlex.split(line) for line in out if line.startswith(sys.executable)]


def _by_workdir(cmds):
  return {c[c.index('--workdir') + 1].rsplit('/', 1)[-1]: c for c in cmds if '--workdir' in c}


def test_the_plan_wires_each_stage_to_the_last_ones_output(capsys, tmp_path):
  xstest = FIXTURES / 'benchmarks' / 'xstest_prompts.csv'
  out, cmds = _commands(capsys, '--root', str(tmp_path), '--xstest', str(xstest), '--strongreject', str(xstest),
                        '--size', 'rl_label_reward=0.5')
  assert out[0].startswith(f'recipe: SmolLM2-135M-Instruct under {tmp_path}; 22 steps, 0 done; estimated')
  runs = _by_workdir(cmds)
  assert set(runs) == {'traces', 'judge', 'sft', 'rl', 'sft_rl'}
  assert f'--config.prompts.jsonl={tmp_path}/mix' in runs['traces']
  assert '--config.data.dataset=recipe_traces' in runs['sft']
  assert f'--config.data.data_dir={tmp_path}/traces/data' in runs['sft']
  for arm in ('rl', 'sft_rl'):
    assert f'--config.judge_init={tmp_path}/judge' in runs[arm]  # the recipe's judge, not the zero-shot one
    assert '--config.data.dataset=recipe_prompts' in runs[arm] and '--config.rl.label_reward=0.5' in runs[arm]
  assert f'--config.policy_init={tmp_path}/sft' in runs['sft_rl']
  evals = [c for c in cmds if 'deliberative.evaluate' in c]
  assert len(evals) == 5
  for c in evals:
    assert f'xstest={xstest}' in c and c[c.index('--suite_limit') + 1] == 'strongreject=50'
    assert f'jsonl={tmp_path}/rl_prompts/eval.jsonl' in c  # the held-out imports, written by the prompts stage
    assert c[c.index('--train') + 1] == f'{tmp_path}/traces/traces'  # the baseline looks up the recipe's traces
  exports = [c for c in cmds if 'tools/export_hf.py' in c]
  assert [c[c.index('--out') + 1] for c in exports] == [f'{tmp_path}/export/{a}' for a in ('sft', 'rl', 'sft_rl')]
  imports = next(c for c in cmds if 'tools/import_prompts.py' in c)
  assert f'--benchmark=xstest={xstest}' in imports


def test_with_the_labels_as_the_reward_no_judge_is_built(capsys, tmp_path):
  out, cmds = _commands(capsys, '--root', str(tmp_path))  # the full default: rl_label_reward=1
  assert 'reward 0 x judge + 1 x labels' in out[1]
  runs = _by_workdir(cmds)
  assert set(runs) == {'traces', 'sft', 'rl', 'sft_rl'}
  assert not any('tools/build_judge_pairs.py' in ' '.join(c) for c in cmds)
  assert '--config.rl.label_reward=1.0' in runs['sft_rl'] and '--config.data.max_answer_tokens=96' in runs['sft']
  # --stop_after still cuts by stage name when the pairs are not in the plan
  _, cut = _commands(capsys, '--root', str(tmp_path / 'c'), '--stop_after', 'prompts')
  assert set(_by_workdir(cut)) == {'traces'} and any('rl_prompts' in c for c in cut)
  assert not any('deliberative.train' in c for c in cut)


def test_a_size_changes_the_command_that_uses_it(capsys, tmp_path):
  out, cmds = _commands(capsys, '--root', str(tmp_path), '--size', 'sft_steps=7', '--size', 'caps=aart=5',
                        '--size', 'mix_balance=source_label', '--size', 'cot_order=either')
  assert 'SFT 7 steps' in out[1] and 'mix caps aart=5 balanced by source_label; CoTs in either order' in out[1]
  assert '--config.labels.cot_order=either' in _by_workdir(cmds)['traces']
  assert '--config.total_steps=7' in _by_workdir(cmds)['sft']
  mix_cmd = next(c for c in cmds if 'tools/mix_prompts.py' in ' '.join(c))
  assert mix_cmd[mix_cmd.index('--balance') + 1] == 'source_label'


def test_the_smoke_trains_small_batches_and_the_full_run_the_configs(capsys, tmp_path):
  _, smoke = _commands(capsys, '--root', str(tmp_path / 's'), '--smoke', '--arms', 'sft,sft_rl')
  smoke = _by_workdir(smoke)
  assert '--config.batch_size=2' in smoke['sft'] and '--config.batch_size=2' in smoke['judge']
  assert {'--config.rl.prompts_per_step=2', '--config.rl.group_size=2', '--config.rl.minibatch_size=4'} <= set(
      smoke['sft_rl'])
  _, full = _commands(capsys, '--root', str(tmp_path / 'f'), '--arms', 'sft,sft_rl', '--size', 'rl_rollouts=4x3')
  full = _by_workdir(full)
  assert not any(a.startswith('--config.batch_size') for a in full['sft'])
  assert '--config.rl.minibatch_size=12' in full['sft_rl']
  # SFT's in-run generation eval would repeat the grid's evaluation
  assert '--config.evals.num_generations=0' in full['sft']
  assert '--config.optim.train_layers=8' in smoke['judge'] and 'judge' not in full  # labels as the full reward
  assert not any(a.startswith('--config.optim.train_layers') for a in full['sft'] + full['sft_rl'])
  _, top = _commands(capsys, '--root', str(tmp_path / 't'), '--arms', 'sft,sft_rl', '--size', 'policy_train_layers=6',
                     '--size', 'rl_label_reward=0.5')
  top = _by_workdir(top)
  assert '--config.optim.train_layers=6' in top['sft'] and '--config.optim.train_layers=6' in top['sft_rl']
  assert '--config.optim.train_layers=8' in top['judge']  # the judge keeps its own
  assert not any(a.startswith('--config.optim.lr') for a in top['sft_rl'])
  _, lr = _commands(capsys, '--root', str(tmp_path / 'l'), '--arms', 'sft_rl', '--size', 'rl_lr=3e-5')
  assert '--config.optim.lr=3e-05' in _by_workdir(lr)['sft_rl']


def test_without_benchmarks_the_plan_says_what_is_missing(capsys, tmp_path):
  out, cmds = _commands(capsys, '--root', str(tmp_path), '--smoke', '--arms', 'base,sft')
  assert any('warning: without --xstest and --strongreject' in line for line in out)
  assert not any('--benchmark' in ' '.join(c) for c in cmds)
  assert '--no_overlap_check' in next(c for c in cmds if 'tools/import_prompts.py' in c)
  assert set(_by_workdir(cmds)) == {'traces', 'sft'}  # no RL arm: no judge to train


@pytest.mark.parametrize('argv, problem', [
    (['--arms', 'base,bogus'], '--arms base,bogus'), (['--xstest', '/nonexistent.csv'], '--xstest /nonexistent.csv'),
    (['--stop_after', 'lunch'], '--stop_after lunch'), (['--size', 'sft_step=60'], '--size sft_step=60'),
    (['--size', 'sft_steps=many'], 'sft_steps takes an integer'),
    (['--size', 'rl_label_reward=2'], 'rl_label_reward=2.0: a weight in [0, 1]'),
    (['--size', 'rl_rollouts=8'], 'expected PROMPTSxGROUP'),
    (['--size', 'policy_train_layers=31'], 'policy_train_layers=31: 0 (every block) or 1..30'),
    (['--size', 'policy_train_layers=-1'], 'policy_train_layers=-1'),
    (['--size', 'rl_lr=-1'], 'rl_lr=-1: a learning rate >= 0'),
    (['--size', 'mix_balance=size'], 'mix_balance=size: choose from category, source_label'),
    (['--size', 'cot_order=last'], 'cot_order=last: choose from either, verdict_first'),
    (['--root', 'gs://bucket/recipe'], '--root gs://bucket/recipe: the recipe runs its data stages on local files')])
def test_bad_flags_are_named_before_any_work(tmp_path, argv, problem):
  result = subprocess.run([sys.executable, str(REPO / 'launch' / 'recipe.py'), '--root', str(tmp_path / 'r'), *argv],
                          capture_output=True, text=True)
  assert result.returncode == 2 and problem in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'r').exists()


@pytest.mark.slow
def test_a_killed_recipe_continues_without_repeating_finished_stages(tmp_path):
  """Killed as it starts the traces, the recipe's second run skips the import and the mix (same
  files, same times) and finishes the traces."""
  root = tmp_path / 'r'
  # OR-Bench left out: every answer is shipped or written, so no model loads and the stages take seconds.
  cmd = [sys.executable, str(REPO / 'launch' / 'recipe.py'), '--root', str(root), '--smoke', '--stop_after', 'traces',
         '--size', 'caps=aart=6,catqa=6,harmbench=6,orbench=0,coconot=6,self_instruct=6']
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
  deadline = time.time() + 300
  for line in proc.stdout:  # wait for the traces stage to start, then kill the whole process group
    if 'traces: data ...' in line or time.time() > deadline:
      break
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert (root / 'mix' / 'mix_report.json').exists()
  stamps = {p: p.stat().st_mtime_ns for p in (root / 'prompts').glob('*') if p.is_file()}
  stamps.update({p: p.stat().st_mtime_ns for p in (root / 'mix').glob('*')})
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  assert 'import: data done already' in again.stdout and 'mix: data done already' in again.stdout
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
  assert (root / 'traces' / 'traces' / 'train.jsonl').exists() and (root / 'stages.json').exists()
