"""Every entry point, run as a user runs it (a real process), with the plain mistakes of issue 25's
hostile walk: each must exit non-zero with a short error naming the culprit (flag, field, file or
file:line, address, tensor), no traceback, and nothing written where it would have written.

No probe loads or trains a model: each is refused before that, which is the point."""

import concurrent.futures
import json
import os
import re
import socket

import numpy as np
import pytest

from tests.train_fixtures import run_python

pytestmark = pytest.mark.slow  # a dozen real processes, each paying its own imports (~3 s)


def _garbage_metrics(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps({'trainer': 'sft'}))
  (workdir / 'metrics.jsonl').write_text('{"step": 1, "train/loss": 2.5}\nnot json at all\n')
  return ['tools/plot_metrics.py', workdir], f'{workdir}/metrics.jsonl:2', [workdir / 'curves.png']


def _spec_not_utf8(tmp_path):
  spec = tmp_path / 'spec.md'
  spec.write_bytes(b'# My spec\n\xff\xfe is not UTF-8\n')
  workdir = tmp_path / 'run'
  return (['-m', 'deliberative.train', '--config', 'configs/sft.py:smoke', f'--config.spec={spec}', '--workdir', workdir],
          f'{spec}:2: not UTF-8', [workdir])


def _truncated_gguf(tmp_path):
  import gguf as gguf_lib
  path = tmp_path / 'model.gguf'
  writer = gguf_lib.GGUFWriter(str(path), 'llama')
  writer.add_tensor('token_embd.weight', np.ones((96, 64), np.float32))
  writer.add_tensor('blk.0.attn_q.weight', np.ones((64, 64), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with open(path, 'r+b') as f:  # a download cut off inside the second tensor
    f.truncate(path.stat().st_size - 1000)
  out = tmp_path / 'ckpt'
  return (['tools/import_hf.py', '--gguf', path, '--out', out],
          f'{path}: truncated: tensor blk.0.attn_q.weight [64, 64]', [out])


def _escaping_dataset_name(tmp_path):
  jsonl = tmp_path / 'traces' / 'train.jsonl'
  jsonl.parent.mkdir()
  jsonl.write_text(json.dumps({'id': 'p1', 'prompt': 'a question', 'category': 'none', 'decision': 'comply',
                               'spec_version': 'v1', 'source': 'test'}) + '\n')
  data = tmp_path / 'data'
  return (['tools/build_dataset.py', '--jsonl', jsonl, '--data_dir', data, '--name', '../escaped'],
          "--name: dataset name '../escaped'", [data, tmp_path / 'escaped'])


def _train_missing_config(tmp_path):
  workdir = tmp_path / 'run'
  return (['-m', 'deliberative.train', '--config', 'configs/nope.py', '--workdir', workdir],
          '--config configs/nope.py: no such file configs/nope.py', [workdir])


def _sweep_config_arg(tmp_path):
  root = tmp_path / 'sweep'
  return (['launch/sweep.py', '--config', 'configs/judge.py:size=small', '--root', root],
          "--config configs/judge.py:size=small: the sweep's entries set size themselves", [root])


def _generate(tmp_path, override, culprit):
  workdir = tmp_path / 'gen'
  return (['-m', 'deliberative.generate', '--config', 'configs/generate.py:smoke', override, '--workdir', workdir],
          culprit, [workdir])


def _evaluate_bogus_grader(tmp_path):
  out = tmp_path / 'eval'
  return (['-m', 'deliberative.evaluate', '--checkpoint', tmp_path / 'no_model', '--suite', 'demo', '--grader', 'bogus',
           '--out', out], "--grader bogus: unknown grader 'bogus'", [out])


def _evaluate(tmp_path, *flags, culprit, out=None):
  out = out or tmp_path / 'eval'
  return (['-m', 'deliberative.evaluate', '--checkpoint', tmp_path / 'no_model', '--suite', 'demo', '--out', out,
           *flags], culprit, [] if out.exists() else [out])


def _evaluate_out_is_a_file(tmp_path):
  out = tmp_path / 'report.txt'
  out.write_text('mine\n')
  return _evaluate(tmp_path, out=out, culprit=f'--out {out} exists and is not a directory')


def _serve_port_out_of_range(tmp_path):
  return ['-m', 'deliberative.serve', '--checkpoint', tmp_path / 'no_model', '--port', '99999'], '--port 99999', []


PROBES = {
    'train --config configs/nope.py': _train_missing_config,
    'plot_metrics: garbage line': _garbage_metrics,
    'spec file not UTF-8': _spec_not_utf8,
    'import_hf --gguf truncated': _truncated_gguf,
    'build_dataset --name ../escaped': _escaping_dataset_name,
    'sweep --config judge.py:size=small': _sweep_config_arg,
    'generate base.backend=cloud': lambda t: _generate(t, '--config.base.backend=cloud', "config.base.backend='cloud'"),
    'generate prompts.num_prompts=-3': lambda t: _generate(t, '--config.prompts.num_prompts=-3',
                                                            'config.prompts.num_prompts=-3: must be >= 0'),
    'evaluate --grader bogus': _evaluate_bogus_grader,
    'evaluate --max_new_tokens 0': lambda t: _evaluate(t, '--max_new_tokens', '0', culprit='--max_new_tokens must be >= 1'),
    'evaluate --out FILE': _evaluate_out_is_a_file,
    'train --config.optim.lr=nan': lambda t: (
        ['-m', 'deliberative.train', '--config', 'configs/sft.py:smoke', '--config.optim.lr=nan', '--workdir', t / 'run'],
        'config.optim.lr=nan: must be a finite number', [t / 'run']),
    'ablate --suite bogus': lambda t: (['launch/ablate.py', '--root', t / 'grid', '--suite', 'bogus'],
                                       "--suite: unknown suite 'bogus'", [t / 'grid']),
    'serve --port 99999': _serve_port_out_of_range,
}


def _assert_refused(done, culprit: str, untouched=()) -> None:
  assert done.returncode != 0, done.stdout[-2000:]
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  assert culprit in done.stderr, done.stderr[-3000:]
  # before any work: no entry point had begun to load a model ("loading PATH", "serve: loading PATH")
  assert not re.search(r'^(serve: )?loading ', done.stdout + done.stderr, re.M), done.stdout[-2000:]
  for path in untouched:
    assert not path.exists(), f'{path} was written'


@pytest.fixture(scope='module')
def refusals(tmp_path_factory):
  """Every probe's process, run a few at a time (each spends most of its ~3 s importing):
  {probe: (finished process, culprit, paths it must not have written)}."""
  setups = {name: make(tmp_path_factory.mktemp('probe')) for name, make in PROBES.items()}
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
    done = dict(zip(setups, pool.map(lambda args: run_python(*args, timeout=120), [a for a, _, _ in setups.values()])))
  return {name: (done[name], culprit, untouched) for name, (_, culprit, untouched) in setups.items()}


@pytest.mark.parametrize('probe', list(PROBES))
def test_a_plain_mistake_is_one_named_error_and_writes_nothing(refusals, probe):
  _assert_refused(*refusals[probe])


def test_serve_on_a_busy_port_names_the_address_before_loading(tmp_path):
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    done = run_python('-m', 'deliberative.serve', '--checkpoint', tmp_path / 'no_model', '--port', port, timeout=120)
  _assert_refused(done, f'cannot listen on 127.0.0.1:{port}: Address already in use')
