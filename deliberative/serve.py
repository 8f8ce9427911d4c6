"""An OpenAI-compatible chat-completions server over the project's sampler.

  python -m deliberative.serve --checkpoint RUN_OR_HF_DIR_OR_GGUF [--host 127.0.0.1] [--port 8000] \
      [--max_batch 32] [--max_new_tokens 1024] [--model_name NAME] [--reasoning auto|on|off]

  POST /v1/chat/completions   non-streaming, or streaming (`"stream": true`: SSE `data: {...}` chunks,
                              then `data: [DONE]`)
  GET  /v1/models, /v1/models/{id}, /health

`--checkpoint` is any model source (an Orbax run or checkpoint, a Hugging Face directory, a
GGUF file; deliberative.inference.Policy). The server binds 127.0.0.1 unless `--host` says
otherwise, and has no authentication: the API key a client sends is ignored.

What a response holds. `choices[i].message.reasoning_content` is the chain of thought and
`content` the answer, split where the model ended its reasoning (as vLLM and DeepSeek serve
reasoning models); `reasoning_content` is null when the prompt opened no reasoning block (a
pretrained model, `--reasoning off`). `choices[i].well_formed` (an extension) says the
completion parsed cleanly: one reasoning end, a non-blank answer, closed by end-of-turn.
`finish_reason` is 'stop' (the model ended its turn) or 'length' (it hit max_tokens);
`usage.completion_tokens` counts generated ids, the stop token included, over all choices.

Request fields honoured: messages (roles system/developer/user/assistant; content a string or
a list of text parts), model (must be the served name, else 404 model_not_found; absent =
the served model), n (<= --max_batch), temperature (0 = greedy), top_p, max_tokens /
max_completion_tokens (<= --max_new_tokens; absent = the lesser of --max_new_tokens and what
the context leaves), seed (deterministic: a seeded sampled request runs in a batch of its
own), stream, stream_options.include_usage. Refused with 400 (naming the field): stop,
tools, functions, logprobs, logit_bias, a non-text response_format. Other fields are ignored.
A request beyond the context is refused (400 `context_length_exceeded`), never truncated:
a prompt longer than the sampler's largest length bucket, or prompt + max_tokens beyond the
model's max_seq_len.

Streaming is "generate, then stream": the sampler makes a whole completion in one jitted
call, so the chunks (a role delta, the reasoning in word-sized `reasoning_content` deltas,
then the answer in `content` deltas, then an empty delta with the finish reason) are sent
once it is done. They are valid `chat.completion.chunk`s; only the first-token latency is
that of the whole completion.

Batching: one worker thread owns the model; concurrent requests with the same sampling
settings share one sampler call (serving/batcher.py says how settings are grouped and how
max_tokens is bucketed so that few programs compile). A line per batch goes to stderr.

Python API (stable; deliberative.generate's tests serve a model with it):

    from deliberative.inference import Policy
    from deliberative.serve import make_server, serve_in_thread

    with serve_in_thread(policy, max_batch=8) as server:    # port 0: a free port
      client = openai.OpenAI(base_url=server.url, api_key='unused')
      ...                                                   # server.model_name, server.stats

    server = make_server(policy, host='127.0.0.1', port=0)  # or by hand:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ...; server.stop()                                      # shutdown + worker + socket

`make_server(policy, *, host, port, model_name, max_batch, max_new_tokens, batch_wait_s, log)`
returns a ChatServer (a ThreadingHTTPServer): `server_address`, `url` ('http://HOST:PORT/v1'),
`model_name`, `stats` (batches, requests, rows, prompt_tokens, completion_tokens,
max_requests_per_batch, busy_seconds),
`serve_forever()`, `shutdown()`, `stop()`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from deliberative.common import cli
from deliberative.serving import httpd
from deliberative.serving.httpd import ChatServer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m deliberative.serve', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--checkpoint', required=True, help='Orbax run/checkpoint, Hugging Face directory or GGUF file')
  p.add_argument('--host', default='127.0.0.1', help='address to bind (default: loopback only)')
  p.add_argument('--port', type=int, default=8000, help='0 = any free port')
  p.add_argument('--max_batch', type=int, default=32, help='most rows (requests x n) per sampler call')
  p.add_argument('--max_new_tokens', type=int, default=1024, help='largest max_tokens a request may ask for')
  p.add_argument('--model_name', default=None, help='the name clients use (default: the checkpoint\'s base name)')
  p.add_argument('--reasoning', choices=('auto', 'on', 'off'), default='auto',
                 help='open a reasoning block in the generation prompt (see deliberative.inference.Policy)')
  p.add_argument('--batch_wait_ms', type=float, default=5.0,
                 help='how long an idle worker waits for more requests before running the first')
  p.add_argument('--seed', type=int, default=0, help='seeds the stream of unseeded sampled requests')
  p.add_argument('--debug', action='store_true', help='full tracebacks')
  return p.parse_args(argv)


def batch_buckets(max_batch: int) -> tuple[int, ...]:
  """Powers of two up to max_batch, and max_batch: varying loads reuse a few programs."""
  buckets, b = [], 1
  while b < max_batch:
    buckets.append(b)
    b *= 2
  return (*buckets, max_batch)


def default_model_name(path: str) -> str:
  return os.path.basename(os.path.normpath(path)) or path


def make_server(policy, *, host: str = '127.0.0.1', port: int = 0, model_name: str | None = None,
                max_batch: int | None = None, max_new_tokens: int | None = None, batch_wait_s: float = 0.005,
                log: Callable[[str], None] | None = None) -> ChatServer:
  """A ChatServer over `policy` (a deliberative.inference.Policy), bound but not yet serving.

  max_batch defaults to (and may not exceed) the sampler's largest batch bucket;
  max_new_tokens (the largest max_tokens a request may ask for) defaults to the policy's;
  `log` receives the per-batch lines (default: stderr).
  """
  largest = policy.sampler.batch_buckets[-1]
  max_batch = max_batch or largest
  if not 1 <= max_batch <= largest:
    raise ValueError(f'max_batch {max_batch} must be in [1, {largest}] (the policy\'s largest batch bucket)')
  max_new_tokens = max_new_tokens or policy.sampling.max_new_tokens
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  return ChatServer((host, port), policy, model_name=model_name or default_model_name(policy.name),
                    max_batch=max_batch, max_new_tokens=max_new_tokens, batch_wait_s=batch_wait_s, log=log)


@contextlib.contextmanager
def serve_in_thread(policy, **kwargs) -> Iterator[ChatServer]:
  """make_server(policy, **kwargs), serving from a daemon thread until the block ends."""
  server = make_server(policy, **kwargs)
  thread = threading.Thread(target=server.serve_forever, name='deliberative-serve-http', daemon=True)
  thread.start()
  try:
    yield server
  finally:
    server.stop()
    thread.join(10)


# -- main -----------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
  return cli.run_guarded(serve, parse_args(argv))


def serve(args: argparse.Namespace) -> int:
  from deliberative.inference.policy import Policy
  if args.max_batch < 1 or args.max_new_tokens < 1:
    raise ValueError('--max_batch and --max_new_tokens must be >= 1')
  httpd.check_address(args.host, args.port)  # a bad or busy port is named before the model loads
  log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
  log(f'serve: loading {args.checkpoint}')
  policy = Policy(args.checkpoint, batch_size=args.max_batch, max_new_tokens=args.max_new_tokens,
                  reasoning=args.reasoning, batch_buckets=batch_buckets(args.max_batch), seed=args.seed)
  server = make_server(policy, host=args.host, port=args.port, model_name=args.model_name or None,
                       max_batch=min(args.max_batch, policy.sampler.batch_buckets[-1]),
                       max_new_tokens=args.max_new_tokens, batch_wait_s=args.batch_wait_ms / 1000, log=log)
  stop = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
  thread = threading.Thread(target=server.serve_forever, name='deliberative-serve-http', daemon=True)
  thread.start()
  if args.host not in ('127.0.0.1', 'localhost', '::1'):
    log(f'serve: WARNING: bound to {args.host}; this server has no authentication')
  log(f'serve: {server.model_name} ({policy.cfg.param_count():,} parameters, reasoning {policy.reasoning}) at '
      f'{server.url}; max_batch {server.max_batch}, max_new_tokens {server.max_new_tokens}; Ctrl-C stops')
  while not stop.wait(0.5):
    pass
  log('serve: shutting down')
  server.stop()
  thread.join(10)
  s = server.stats
  log(f'serve: answered {s.requests} request(s) in {s.batches} batch(es), {s.completion_tokens} completion tokens')
  return 0


if __name__ == '__main__':
  sys.exit(main())
