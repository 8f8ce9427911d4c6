"""The HTTP side of `deliberative.serve`: a ThreadingHTTPServer whose handler threads validate
requests (serving/protocol.py), hand them to the batching worker (serving/batcher.py) and
write JSON or server-sent events back. `deliberative.serve.make_server` builds one."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from deliberative.common import errors
from deliberative.serving import protocol
from deliberative.serving.batcher import BatchWorker, Job, ServerStopped, token_bucket
from deliberative.serving.protocol import RequestError

MAX_BODY_BYTES = 32 << 20
REQUEST_TIMEOUT_S = 3600.0  # a handler gives up on the worker after this long


def _where(address) -> str:
  host, port = address[:2]
  return f'{host}:{port}'


def check_address(host: str, port: int) -> None:
  """Fails, naming host:port, where a ChatServer could not listen: `serve` asks before it loads a model
  (minutes for a large one) rather than after."""
  if not 0 <= port <= 65535:
    raise ValueError(f'--port {port}: must be in 0..65535 (0 = any free port)')
  try:
    with socket.socket(ChatServer.address_family, socket.SOCK_STREAM) as probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ChatServer binds (allow_reuse_address)
      probe.bind((host, port))
  except OSError as e:
    raise OSError(e.errno, f'cannot listen on {_where((host, port))}: {e.strerror or e}') from None


class ChatServer(ThreadingHTTPServer):
  """The HTTP server and its batching worker; see the module docstring for the API."""

  daemon_threads = True  # a client holding a connection open never blocks shutdown
  allow_reuse_address = True
  # listen() backlog: the stdlib's 5 resets connections when dozens of clients connect at once.
  request_queue_size = 256

  def __init__(self, address, policy, *, model_name: str, max_batch: int, max_new_tokens: int,
               batch_wait_s: float, log: Callable[[str], None] | None):
    try:
      super().__init__(address, ChatHandler)
    except OSError as e:  # the bare "[Errno 98] Address already in use" names no address
      raise OSError(e.errno, f'cannot listen on {_where(address)}: {e.strerror or e}') from None
    self.policy = policy
    self.model_name = model_name
    self.max_batch = max_batch
    self.max_new_tokens = max_new_tokens
    self.created = int(time.time())
    self.worker = BatchWorker(policy, max_batch=max_batch, batch_wait_s=batch_wait_s, log=log)
    self.worker.start()
    self._serving = threading.Event()

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f'http://{host}:{port}/v1'

  @property
  def stats(self):
    return self.worker.stats

  def serve_forever(self, poll_interval: float = 0.1) -> None:
    self._serving.set()
    super().serve_forever(poll_interval)

  def shutdown(self) -> None:
    """Stops serve_forever (if it ever ran: the stdlib one would wait forever)."""
    if self._serving.is_set():
      super().shutdown()
      self._serving.clear()

  def stop(self) -> None:
    """Stops serving, fails requests still waiting, ends the worker and closes the socket."""
    self.shutdown()
    self.worker.stop()
    self.server_close()

  # -- one request, from a handler thread ----------------------------------------------------------
  def job_for(self, request: protocol.ChatRequest) -> Job:
    """The worker's job for a validated request; refuses one beyond the context."""
    from deliberative.inference.sampler import SamplingParams
    policy = self.policy
    try:
      ids = policy.prompt_ids({'messages': request.messages})
    except (ValueError, KeyError) as e:
      raise RequestError(f'messages: {errors.one_line(e)}', param='messages', code='invalid_value') from None
    max_context = policy.cfg.max_seq_len
    if len(ids) > policy.max_prompt_len:
      raise RequestError(f'the prompt is {len(ids)} tokens; this server takes at most {policy.max_prompt_len} '
                         'prompt tokens (its largest length bucket)', param='messages', code='context_length_exceeded')
    max_tokens = request.max_tokens
    if max_tokens is None:
      max_tokens = min(self.max_new_tokens, max_context - len(ids))
      if max_tokens < 1:
        raise protocol.context_length_error(len(ids), 1, max_context)
    elif len(ids) + max_tokens > max_context:
      raise protocol.context_length_error(len(ids), max_tokens, max_context)
    bucket = token_bucket(max_tokens, self.max_new_tokens)
    if request.temperature <= 0:  # greedy: top_p does not matter, so it must not split batches
      sampling = SamplingParams(temperature=0.0, max_new_tokens=bucket)
    else:
      sampling = SamplingParams(temperature=request.temperature, top_p=request.top_p, max_new_tokens=bucket)
    return Job(prompt_ids=ids, n=request.n, sampling=sampling, max_tokens=max_tokens, seed=request.seed)


class ChatHandler(BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'  # keep-alive: clients reuse connections
  server: ChatServer

  def log_message(self, format, *args):  # the worker logs batches; per-request lines would drown them
    pass

  # -- routing --------------------------------------------------------------------------------------
  def do_GET(self):
    path = urlsplit(self.path).path.rstrip('/')
    s = self.server
    if path == '/v1/models':
      return self._send_json(200, protocol.models_body(s.model_name, s.created))
    if path.startswith('/v1/models/'):
      name = path[len('/v1/models/'):]
      if name == s.model_name:
        return self._send_json(200, protocol.model_body(name, s.created))
      return self._send_error(RequestError(f'The model {name!r} does not exist', param='model',
                                           code='model_not_found', status=404))
    if path == '/health':
      return self._send_json(200, {'status': 'ok'})
    self._not_found()

  def do_POST(self):
    path = urlsplit(self.path).path.rstrip('/')
    try:
      raw = self._read_body()
      if path != '/v1/chat/completions':
        return self._not_found()
      self._chat(raw)
    except RequestError as e:
      self._send_error(e)
    except Exception as e:  # a bug here must still answer the client, and name itself
      self._send_error(RequestError(f'internal error: {type(e).__name__}: {errors.one_line(e)}', status=500,
                                    type='server_error'))

  def _not_found(self):
    self._send_error(RequestError(f'Unknown request URL: {self.command} {self.path}', code='unknown_url',
                                  status=404))

  # -- chat -----------------------------------------------------------------------------------------
  def _chat(self, raw: bytes) -> None:
    s = self.server
    request = protocol.parse_chat_request(protocol.parse_json(raw), s.model_name, max_n=s.max_batch,
                                          max_tokens_limit=s.max_new_tokens)
    job = s.job_for(request)
    try:
      choices = s.worker.submit(job).wait(REQUEST_TIMEOUT_S)
    except ServerStopped as e:
      raise RequestError(str(e), status=503, type='server_error', code='server_shutting_down') from None
    except TimeoutError as e:
      raise RequestError(str(e), status=504, type='server_error', code='timeout') from None
    except Exception as e:  # the sampler failed: the server's fault, not the request's
      raise RequestError(f'generation failed: {errors.one_line(e)}', status=500, type='server_error') from None
    request_id = protocol.completion_id()
    if request.stream:
      self._send_stream(protocol.stream_chunks(request_id, s.model_name, len(job.prompt_ids), choices,
                                               include_usage=request.include_usage))
    else:
      self._send_json(200, protocol.completion_body(request_id, s.model_name, len(job.prompt_ids), choices))

  # -- wire -----------------------------------------------------------------------------------------
  def _read_body(self) -> bytes:
    length = self.headers.get('Content-Length')
    if length is None:
      self.close_connection = True  # the body's end is unknown: this connection cannot be reused
      raise RequestError('a Content-Length header is required', status=411)
    try:
      length = int(length)
    except ValueError:
      self.close_connection = True
      raise RequestError(f'bad Content-Length {length!r}') from None
    if length > MAX_BODY_BYTES:
      self.close_connection = True
      raise RequestError(f'the request body is {length} bytes; the limit is {MAX_BODY_BYTES}', status=413)
    return self.rfile.read(length)

  def _send_json(self, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _send_error(self, e: RequestError) -> None:
    self._send_json(e.status, e.body())

  def _send_stream(self, chunks: Iterator[dict]) -> None:
    """Server-sent events; the connection closes after `[DONE]` (no chunked encoding needed)."""
    self.send_response(200)
    self.send_header('Content-Type', 'text/event-stream')
    self.send_header('Cache-Control', 'no-cache')
    self.send_header('Connection', 'close')
    self.end_headers()
    try:
      for chunk in chunks:
        self.wfile.write(b'data: ' + json.dumps(chunk).encode() + b'\n\n')
      self.wfile.write(b'data: [DONE]\n\n')
      self.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):  # the client went away; nothing to answer
      pass


