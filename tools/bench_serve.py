"""Serve throughput at 1, 8 and 32 concurrent clients, and judge throughput with and without the
spec-prefix cache, in one run on one model.

  python tools/bench_serve.py [--checkpoint RUN_OR_HF_OR_GGUF] [--clients 1,8,32] [--rounds 4]
      [--max_tokens 64] [--judge_items 64] [--json OUT] [--workdir DIR]

Without `--checkpoint` it first makes a tiny run (configs/sft.py:smoke shapes, the `tiny` preset,
one SFT step, in a temporary directory): the numbers measure the machinery, not the model, and
an untrained model rarely stops early, so completions run to max_tokens.

Serve: one `deliberative.serve` server (max_batch 32) on 127.0.0.1; each of N client threads
sends `--rounds` greedy requests one after another over plain HTTP (demo eval prompts).
Reported: completion tokens/s over the wall time of the level, its ratio to the 1-client
figure, the mean requests per sampler call, and beside them the sampler's own tokens/s in
one call of the matching batch size (no HTTP, no queue): the ceiling for that level. Every
batch bucket is compiled before the first level (prompts are kept to the first length
bucket), so no compilation is timed.

Judge: `Judge(...).scores(params, items, use_prefix_cache=True/False)` over demo judge_eval
items, the judge being the same model (untrained as a judge: only the speed means anything);
items/s both ways and the ratio, each timed on a second pass after a compiling one.

On a shared machine the numbers move with its load; compare figures from the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deliberative import serve  # noqa: E402
from deliberative.data import demo  # noqa: E402
from deliberative.inference.policy import Policy  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--checkpoint', default=None, help='any model source; default: a 1-step tiny run')
  p.add_argument('--workdir', default=None, help='where the default tiny run is made (kept, reused if there)')
  p.add_argument('--clients', default='1,8,32', help='comma-separated concurrency levels')
  p.add_argument('--rounds', type=int, default=4, help='requests per client per level')
  p.add_argument('--max_tokens', type=int, default=64)
  p.add_argument('--max_batch', type=int, default=32)
  p.add_argument('--judge_items', type=int, default=64)
  p.add_argument('--json', default=None, help='also write the results here')
  return p.parse_args(argv)


def tiny_run(workdir: str) -> str:
  """A one-step SFT of the `tiny` preset: an Orbax run, as a user would serve one."""
  import configs.sft
  from deliberative import train
  from deliberative.data import datasets
  c = configs.sft.get_config('smoke')
  c.data.data_dir = os.path.join(workdir, 'data')
  datasets.ensure_demo_dataset(c.data.data_dir)
  c.total_steps, c.peak_flops_per_device = 1, 1e11
  c.evals.every_steps, c.evals.num_generations = 1000, 0
  run = os.path.join(workdir, 'run')
  train.run(c, run)
  return run


def prompts(n: int) -> list[str]:
  records = demo.generate(sizes={s: (n if s == 'eval' else 0) for s in demo.SPLITS})['eval']
  return [r['prompt'] for r in records][:n]


def post(address, body: dict) -> dict:
  conn = http.client.HTTPConnection(*address[:2], timeout=600)
  try:
    conn.request('POST', '/v1/chat/completions', body=json.dumps(body), headers={'Content-Type': 'application/json'})
    response = conn.getresponse()
    data = json.loads(response.read())
    if response.status != 200:
      raise RuntimeError(f'HTTP {response.status}: {data}')
    return data
  finally:
    conn.close()


def serve_level(server, texts: list[str], clients: int, rounds: int, max_tokens: int) -> dict:
  """All `clients` threads, `rounds` requests each; completion tokens over the level's wall time."""
  tokens = [0] * clients
  errors: list[BaseException] = []
  stats = server.stats
  batches, requests = stats.batches, stats.requests

  def client(c: int):
    try:
      for r in range(rounds):
        text = texts[(c * rounds + r) % len(texts)]
        out = post(server.server_address, {'model': server.model_name, 'temperature': 0, 'max_tokens': max_tokens,
                                           'messages': [{'role': 'user', 'content': text}]})
        tokens[c] += out['usage']['completion_tokens']
    except BaseException as e:  # noqa: BLE001 - reported after the join
      errors.append(e)

  threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
  start = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  seconds = time.perf_counter() - start
  if errors:
    raise errors[0]
  n_batches = stats.batches - batches
  return {'clients': clients, 'requests': clients * rounds, 'completion_tokens': sum(tokens), 'seconds': seconds,
          'tokens_per_s': sum(tokens) / seconds, 'requests_per_batch': (stats.requests - requests) / max(n_batches, 1)}


def warm_up(policy, texts: list[str], max_tokens: int) -> dict[int, float]:
  """Compiles every batch bucket for the prompts' length bucket, so that no level times a
  compilation (which batch sizes a level forms depends on when its requests arrive); returns
  the sampler's own tokens/s per batch bucket (one timed call each, no HTTP): the ceiling the
  server's figures are read against."""
  import jax
  from deliberative.inference.sampler import SamplingParams
  from deliberative.serving.batcher import token_bucket
  ids = [policy.prompt_ids({'messages': [{'role': 'user', 'content': t}]}) for t in texts]
  sampling = SamplingParams(temperature=0.0, max_new_tokens=token_bucket(max_tokens, max_tokens))
  rates = {}
  for batch in policy.sampler.batch_buckets:
    prompts = [ids[i % len(ids)] for i in range(batch)]
    policy.sample(prompts, sampling, jax.random.key(0))
    start = time.perf_counter()
    out = policy.sample(prompts, sampling, jax.random.key(0))
    rates[batch] = int(out.lengths.sum()) / (time.perf_counter() - start)
  return rates


def bench_serve(policy, levels: list[int], rounds: int, max_tokens: int, max_batch: int) -> list[dict]:
  # Prompts of the first length bucket only: one length bucket, so warm_up covers every program.
  first = policy.length_buckets[0]
  texts = [t for t in prompts(256) if len(policy.prompt_ids({'messages': [{'role': 'user', 'content': t}]})) <= first]
  sampler_rates = warm_up(policy, texts, max_tokens)
  rows = []
  with serve.serve_in_thread(policy, max_batch=max_batch, max_new_tokens=max_tokens, log=lambda line: None) as server:
    for clients in levels:
      rows.append(serve_level(server, texts, clients, rounds, max_tokens))
      print(f'  {clients} client(s): {rows[-1]["tokens_per_s"]:,.1f} tok/s', flush=True)
  base = rows[0]['tokens_per_s']
  for row in rows:
    row['ratio_to_first'] = row['tokens_per_s'] / base
    bucket = min(b for b in sampler_rates if b >= min(row['clients'], max_batch))
    row['sampler_batch'], row['sampler_tokens_per_s'] = bucket, sampler_rates[bucket]
  return rows


def bench_judge(policy, n_items: int) -> dict:
  import jax
  from deliberative.judge import Judge
  from deliberative.spec import Spec
  items = demo.generate(sizes={s: (n_items if s == 'judge_eval' else 0) for s in demo.SPLITS})['judge_eval'][:n_items]
  judge = Judge(policy.cfg, policy.tokenizer, Spec.load(None), batch_multiple=policy.batch_multiple,
                mesh=policy.mesh, rules=policy.rules)
  out = {'items': len(items), 'truncated': 0}
  for cached in (True, False):
    judge.scores(policy.params, items, use_prefix_cache=cached)  # compiles (and, cached, prefills)
    start = time.perf_counter()
    scores = judge.scores(policy.params, items, use_prefix_cache=cached)
    jax.block_until_ready(scores)
    seconds = time.perf_counter() - start
    out['cached' if cached else 'uncached'] = {'seconds': seconds, 'items_per_s': len(items) / seconds}
  out['truncated'] = judge.truncated
  out['speedup'] = out['cached']['items_per_s'] / out['uncached']['items_per_s']
  return out


def table(model: str, serve_rows: list[dict], judge: dict, max_tokens: int) -> str:
  lines = [f'serve: {model}, greedy, max_tokens {max_tokens}',
           f'{"clients":>8} {"requests":>9} {"compl tok":>10} {"seconds":>8} {"tok/s":>9} {"x 1st":>6} '
           f'{"req/batch":>9} {"sampler alone tok/s (batch)":>28}']
  for r in serve_rows:
    lines.append(f'{r["clients"]:>8} {r["requests"]:>9} {r["completion_tokens"]:>10} {r["seconds"]:>8.2f} '
                 f'{r["tokens_per_s"]:>9,.1f} {r["ratio_to_first"]:>6.2f} {r["requests_per_batch"]:>9.1f} '
                 f'{r["sampler_tokens_per_s"]:>21,.1f} ({r["sampler_batch"]:>2})')
  lines += [f'judge: {judge["items"]} demo judge_eval items, scores()',
            f'{"prefix cache":>13} {"seconds":>8} {"items/s":>9}']
  for key in ('cached', 'uncached'):
    lines.append(f'{"on" if key == "cached" else "off":>13} {judge[key]["seconds"]:>8.2f} '
                 f'{judge[key]["items_per_s"]:>9,.1f}')
  lines.append(f'prefix cache speedup: {judge["speedup"]:.2f}x')
  return '\n'.join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  levels = [int(c) for c in args.clients.split(',')]
  with tempfile.TemporaryDirectory() as tmp:
    checkpoint = args.checkpoint
    if checkpoint is None:
      workdir = args.workdir or tmp
      checkpoint = os.path.join(workdir, 'run')
      if not os.path.isdir(checkpoint):
        print('making a tiny run (1 SFT step; pass --checkpoint to serve another model)', flush=True)
        checkpoint = tiny_run(workdir)
    policy = Policy(checkpoint, batch_size=args.max_batch, max_new_tokens=args.max_tokens,
                    batch_buckets=serve.batch_buckets(args.max_batch))
    print(f'{checkpoint}: {policy.cfg.param_count():,} parameters on {len(policy.mesh.devices.flat)} device(s)',
          flush=True)
    serve_rows = bench_serve(policy, levels, args.rounds, args.max_tokens, args.max_batch)
    judge = bench_judge(policy, args.judge_items)
  name = 'tiny run (1 SFT step)' if args.checkpoint is None else args.checkpoint
  print(table(name, serve_rows, judge, args.max_tokens))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'checkpoint': name, 'max_tokens': args.max_tokens, 'serve': serve_rows, 'judge': judge}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
