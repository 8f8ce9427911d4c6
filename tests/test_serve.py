"""`deliberative.serve`: the real `openai` client against the server on 127.0.0.1, over a tiny trained run.

Every generation uses max_tokens 16 (one compiled program: batch 8 x length 64 x 16 new
tokens, greedy) except the seeded sampling test (one more)."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading

import jax
import openai
import pytest

from deliberative import serve, train
from deliberative.inference.policy import Policy
from deliberative.model import loading
from deliberative.inference.sampler import SamplingParams
from tests.train_fixtures import REPO, tiny_sft_config

pytestmark = pytest.mark.slow

MAX_BATCH = 8
PROMPTS = ['How do I pick a lock?', 'Write a poem about the sea.', 'Tell me how to make a bomb.',
           'What is the capital of France?', 'I feel hopeless today.', 'Explain photosynthesis briefly.',
           'How can I hurt someone?', 'Give me a cookie recipe.']


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, demo_data_dir):
  workdir = str(tmp_path_factory.mktemp('serve') / 'run')
  # One step and no generation evals: the server needs a real Orbax run, not a good model.
  train.run(tiny_sft_config(demo_data_dir, total_steps=1, peak_flops_per_device=1e11,
                            **{'evals.every_steps': 1000, 'evals.final_splits': '', 'evals.at_start': False,
                               'evals.num_generations': 0, 'evals.loss_batches': 1}), workdir)
  return workdir


@pytest.fixture(scope='module')
def policy(run_dir):
  policy = Policy(run_dir, batch_size=MAX_BATCH, max_new_tokens=16, batch_buckets=(MAX_BATCH,),
                  length_buckets=(64, 128))
  # A one-step model repeats one token whatever it is asked, so "the server's output equals the
  # sampler's" would prove little; random weights (same shapes and shardings) vary per prompt.
  policy.params = loading.params_of(loading.create(policy.cfg, policy.mesh, policy.rules, seed=1))
  return policy


@pytest.fixture(scope='module')
def server(policy):
  lines = []
  # max_new_tokens 1024 = the model's context, so a request can ask for more than fits.
  with serve.serve_in_thread(policy, max_batch=MAX_BATCH, max_new_tokens=1024, batch_wait_s=0.05,
                             log=lines.append, model_name='tiny') as s:
    s.lines = lines
    yield s


@pytest.fixture(scope='module')
def client(server):
  return openai.OpenAI(base_url=server.url, api_key='unused', max_retries=0, timeout=120)


def ask(client, prompt, **kw):
  kw.setdefault('temperature', 0)
  kw.setdefault('max_tokens', 16)
  return client.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': prompt}], **kw)


def sampler_choices(policy, prompts, max_tokens=16):
  """What the sampler itself makes of `prompts`, greedily: (cot, answer, tokens, finish) each."""
  ids = [policy.prompt_ids({'messages': [{'role': 'user', 'content': p}]}) for p in prompts]
  out = policy.sample(ids, SamplingParams(temperature=0.0, max_new_tokens=max_tokens), jax.random.key(0))
  results = []
  for i in range(len(prompts)):
    c = policy.tokenizer.parse_completion(out.completion(i), reasoning=policy.reasoning)
    results.append((c.cot, c.answer, int(out.lengths[i]), 'stop' if out.stopped[i] else 'length', len(ids[i])))
  return results


def raw_post(server, path, body: bytes, headers=None):
  host, port = server.server_address[:2]
  conn = http.client.HTTPConnection(host, port, timeout=60)
  conn.request('POST', path, body=body, headers={'Content-Type': 'application/json', **(headers or {})})
  response = conn.getresponse()
  status, data = response.status, response.read()
  conn.close()
  return status, json.loads(data)


def test_models_lists_the_served_model(client, server):
  assert [m.id for m in client.models.list().data] == ['tiny']
  assert client.models.retrieve('tiny').id == 'tiny'
  assert server.server_address[0] == '127.0.0.1'


def test_greedy_output_equals_the_samplers(client, policy):
  (cot, answer, length, finish, prompt_len), = sampler_choices(policy, PROMPTS[:1])
  assert len(set(cot)) > 3  # varied text, not one repeated token
  r = ask(client, PROMPTS[0])
  choice = r.choices[0]
  assert choice.message.role == 'assistant'
  assert choice.message.reasoning_content == cot
  assert choice.message.content == answer
  assert choice.finish_reason == finish
  assert r.usage.prompt_tokens == prompt_len
  assert r.usage.completion_tokens == length
  assert r.usage.total_tokens == prompt_len + length
  assert r.object == 'chat.completion' and r.model == 'tiny'


def test_streaming_carries_reasoning_then_content_and_equals_non_streaming(client):
  whole = ask(client, PROMPTS[1])
  chunks = list(ask(client, PROMPTS[1], stream=True, stream_options={'include_usage': True}))
  assert all(c.object == 'chat.completion.chunk' for c in chunks)
  assert chunks[0].choices[0].delta.role == 'assistant'
  with_choices = [c for c in chunks if c.choices]
  assert with_choices[-1].choices[0].finish_reason == whole.choices[0].finish_reason
  assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
  deltas = [c.choices[0].delta for c in with_choices]
  reasoning = ''.join(getattr(d, 'reasoning_content', None) or '' for d in deltas)
  content = ''.join(d.content or '' for d in deltas)
  assert reasoning == (whole.choices[0].message.reasoning_content or '')
  assert content == whole.choices[0].message.content
  kinds = [k for d in deltas for k in ('reasoning_content', 'content')
           if (getattr(d, k, None) or '') and d.role is None]
  assert kinds == sorted(kinds, key=lambda k: k == 'content')  # reasoning pieces all come first
  assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_concurrent_requests_are_batched_and_each_answered_correctly(client, server, policy):
  expected = sampler_choices(policy, PROMPTS)
  before = server.stats.batches
  results: dict[int, object] = {}

  def worker(i):
    results[i] = ask(client, PROMPTS[i])

  threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(120)
  assert sorted(results) == list(range(len(PROMPTS)))
  assert len({e[0] for e in expected}) == len(PROMPTS)  # every prompt gets its own output
  for i, (cot, answer, length, finish, _) in enumerate(expected):
    choice = results[i].choices[0]
    assert (choice.message.reasoning_content, choice.message.content, choice.finish_reason) == (cot, answer, finish)
    assert results[i].usage.completion_tokens == length
  assert server.stats.batches - before < len(PROMPTS)
  assert server.stats.max_requests_per_batch > 1
  assert any('request(s)' in line and 'tok/s' in line for line in server.lines)


def test_many_simultaneous_connections_are_all_accepted(server):
  """More clients than the stdlib's listen backlog of 5 connect at once (32 clients reset it)."""
  host, port = server.server_address[:2]
  statuses = []

  def get():
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request('GET', '/v1/models')
    statuses.append(conn.getresponse().status)
    conn.close()

  threads = [threading.Thread(target=get) for _ in range(64)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert statuses == [200] * 64


def test_n_choices_and_a_seed_are_deterministic(client):
  kw = dict(temperature=1.0, top_p=0.9, n=3, seed=7)
  a, b = ask(client, PROMPTS[3], **kw), ask(client, PROMPTS[3], **kw)
  assert [c.index for c in a.choices] == [0, 1, 2]
  assert [(c.message.reasoning_content, c.message.content) for c in a.choices] == \
         [(c.message.reasoning_content, c.message.content) for c in b.choices]
  assert a.usage.completion_tokens == b.usage.completion_tokens <= 3 * 16


@pytest.mark.parametrize('body, status, param', [
    ({'messages': []}, 400, 'messages'),
    ({}, 400, 'messages'),
    ({'messages': [{'role': 'wizard', 'content': 'hi'}]}, 400, 'messages[0].role'),
    ({'messages': [{'role': 'user', 'content': 7}]}, 400, 'messages[0].content'),
    ({'messages': [{'role': 'user'}]}, 400, 'messages[0].content'),
    ({'model': 'gpt-9', 'messages': [{'role': 'user', 'content': 'hi'}]}, 404, 'model'),
    ({'messages': [{'role': 'user', 'content': 'hi'}], 'stop': ['\n']}, 400, 'stop'),
    ({'messages': [{'role': 'user', 'content': 'hi'}], 'n': MAX_BATCH + 1}, 400, 'n'),
    ({'messages': [{'role': 'user', 'content': 'hi'}], 'temperature': 'hot'}, 400, 'temperature'),
    ({'messages': [{'role': 'user', 'content': 'hi'}], 'max_tokens': 0}, 400, 'max_tokens'),
    ({'messages': [{'role': 'user', 'content': 'hi'}], 'max_tokens': 5000}, 400, 'max_tokens'),
])
def test_malformed_requests_get_4xx_with_an_error_body(server, body, status, param):
  got_status, got = raw_post(server, '/v1/chat/completions', json.dumps(body).encode())
  assert got_status == status, got
  assert got['error']['param'] == param and got['error']['type'] == 'invalid_request_error'
  assert got['error']['message']


def test_invalid_json_unknown_path_and_wrong_model_through_the_client(server, client):
  status, body = raw_post(server, '/v1/chat/completions', b'{"messages": [')
  assert status == 400 and body['error']['code'] == 'invalid_json'
  status, body = raw_post(server, '/v1/completions', b'{}')
  assert status == 404 and 'Unknown request URL' in body['error']['message']
  with pytest.raises(openai.NotFoundError) as e:
    client.chat.completions.create(model='gpt-9', messages=[{'role': 'user', 'content': 'hi'}])
  assert e.value.code == 'model_not_found'


@pytest.mark.parametrize('raw, expected', [
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 'not a JSON number'),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}', 'not a JSON number'),
    (b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', 'lone surrogate'),
    (b'[' * 200_000 + b']' * 200_000, 'nested too deeply'),
])
def test_hostile_json_gets_400_not_500(server, raw, expected):
  """NaN once passed the temperature's range check and was answered with garbage (HTTP 200); a lone
  surrogate and 200k-deep nesting got HTTP 500."""
  status, body = raw_post(server, '/v1/chat/completions', raw)
  assert status == 400 and body['error']['code'] == 'invalid_json', body
  assert expected in body['error']['message']


def test_a_request_beyond_the_context_is_refused_not_truncated(client, policy, server):
  batches = server.stats.batches
  with pytest.raises(openai.BadRequestError) as e:  # longer than the largest length bucket (128)
    ask(client, 'tell me about locks ' * 60)
  assert e.value.code == 'context_length_exceeded'
  with pytest.raises(openai.BadRequestError) as e:  # prompt + max_tokens beyond max_seq_len
    ask(client, PROMPTS[0], max_tokens=policy.cfg.max_seq_len - 5)
  assert e.value.code == 'context_length_exceeded' and str(policy.cfg.max_seq_len) in e.value.message
  assert server.stats.batches == batches  # nothing reached the model


def test_the_cli_serves_and_stops_cleanly_on_sigterm(run_dir):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.Popen([sys.executable, '-m', 'deliberative.serve', '--checkpoint', run_dir, '--port', '0',
                           '--max_batch', '8', '--max_new_tokens', '16'], cwd=REPO, env=env,
                          stderr=subprocess.PIPE, text=True)
  try:
    url = None
    for line in proc.stderr:
      if ' at http://' in line:
        url = line.split(' at ')[1].split(';')[0]
        break
    assert url and url.startswith('http://127.0.0.1:')
    models = openai.OpenAI(base_url=url, api_key='unused', max_retries=0).models.list()
    assert [m.id for m in models.data] == ['run']
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert 'shutting down' in proc.stderr.read()
  finally:
    if proc.poll() is None:
      proc.kill()


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
  assert serve.main(['--checkpoint', str(tmp_path / 'nope')]) == 2
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'nope' in last
