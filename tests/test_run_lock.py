"""One writer per run directory: a second trainer, evaluation or generation is refused at once,
naming the holder; a lock left by a killed process is taken over with a note."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from deliberative.common import run_lock
from tests.train_fixtures import REPO, run_python

HOLD = textwrap.dedent('''
    import sys, time
    from deliberative.common import run_lock
    with run_lock.WorkdirLock(sys.argv[1], what='sft training'):
      print('held', flush=True)
      time.sleep(600)
''')


@pytest.fixture
def holder(tmp_path):
  """A real process holding tmp_path/run's lock, as a running trainer does."""
  workdir = tmp_path / 'run'
  proc = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  yield workdir, proc
  proc.kill()
  proc.wait()


def _entry(*args) -> subprocess.CompletedProcess:
  return run_python('-m', *args)


def test_a_second_trainer_is_refused_at_once_naming_the_holder(holder):
  workdir, proc = holder
  t0 = time.perf_counter()
  done = _entry('deliberative.train', '--config', 'configs/sft.py:smoke', '--workdir', str(workdir))
  assert done.returncode != 0
  assert f'pid {proc.pid}' in done.stderr and 'in use by another sft training' in done.stderr, done.stderr
  assert 'Traceback' not in done.stderr
  assert sorted(os.listdir(workdir)) == ['.lock']  # nothing of the refused run's written
  assert time.perf_counter() - t0 < 120  # refused before any data or model work


def test_a_second_evaluation_is_refused_before_loading_a_model(holder, tmp_path):
  workdir, proc = holder
  done = _entry('deliberative.evaluate', '--checkpoint', str(tmp_path / 'no_such_model'), '--suite', 'demo',
                '--out', str(workdir), '--limit', '2')
  assert done.returncode == 2 and f'pid {proc.pid}' in done.stderr, done.stderr
  assert 'loading' not in done.stdout and 'Traceback' not in done.stderr


def test_a_killed_holders_lock_is_taken_over_with_a_note(holder):
  workdir, proc = holder
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  notes = []
  with run_lock.WorkdirLock(workdir, what='sft training', note=notes.append):
    pass
  assert len(notes) == 1 and f'pid {proc.pid}' in notes[0] and 'ended without releasing it' in notes[0]
  with run_lock.WorkdirLock(workdir, note=notes.append):  # released cleanly last time: nothing to say
    pass
  assert len(notes) == 1


def test_in_process_second_holder_and_cleanup(tmp_path):
  fresh = tmp_path / 'fresh'
  with run_lock.WorkdirLock(fresh, what='evaluation'):
    with pytest.raises(run_lock.WorkdirBusy, match=f'in use by another evaluation .*pid {os.getpid()}'):
      with run_lock.WorkdirLock(fresh):
        pass
  assert not fresh.exists()  # created by the lock, nothing else written: removed again
  kept = tmp_path / 'kept'
  with run_lock.WorkdirLock(kept):
    (kept / 'metrics.jsonl').write_text('{}\n')
  assert sorted(os.listdir(kept)) == ['.lock', 'metrics.jsonl']

