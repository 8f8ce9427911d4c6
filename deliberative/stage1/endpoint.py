"""A client for any OpenAI-compatible `/v1/chat/completions` endpoint, on the standard library only.

Retries 429, 5xx and connection errors with exponential backoff (honouring `Retry-After`); any
other 4xx fails at once (a bad request stays bad). An error that outlasts the retries is raised
as EndpointError: the pipeline counts it against the prompt and reports the prompt's id. The API
key is read from the environment variable the config names, never stored in the config.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from deliberative.common import errors

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(errors.RunError):
  """A request failed after its retries (or could not be retried); the message says why."""


def default_config():
  """The `endpoint` section of a backend (configs/generate.py embeds it for G_base and G_RM)."""
  import ml_collections
  return ml_collections.ConfigDict(dict(
      base_url='',  # e.g. http://127.0.0.1:8000/v1 (the path /chat/completions is appended)
      model='',  # the model name the server expects
      api_key_env='',  # name of the environment variable holding the API key ('' = no key)
      concurrency=4,  # prompts in flight at once (a thread pool)
      timeout_s=120.0,  # per request
      max_retries=5,  # retries after the first attempt, on 429/5xx/connection errors
      backoff_s=1.0,  # first wait; doubled each retry (Retry-After wins when the server sends it)
      max_backoff_s=60.0,
      supports_n=True,  # ask for several choices with `n`; False = one request per choice
  ))


class Endpoint:
  """One endpoint: POSTs chat-completion bodies, retries, counts what happened."""

  def __init__(self, cfg, what: str, *, sleep=time.sleep):
    if not cfg.base_url:
      raise ValueError(f'config.{what}.endpoint.base_url is empty; give the server\'s URL, e.g. http://127.0.0.1:8000/v1')
    if not cfg.model:
      raise ValueError(f'config.{what}.endpoint.model is empty; give the model name the server serves')
    self.url = cfg.base_url.rstrip('/') + '/chat/completions'
    self.model = cfg.model
    self.what = what
    self.api_key = ''
    if cfg.api_key_env:
      self.api_key = os.environ.get(cfg.api_key_env, '')
      if not self.api_key:
        raise ValueError(f'config.{what}.endpoint.api_key_env={cfg.api_key_env!r}: that environment variable is '
                         'not set (the key is read from it, never from the config)')
    self.timeout = float(cfg.timeout_s)
    self.max_retries = int(cfg.max_retries)
    self.backoff = float(cfg.backoff_s)
    self.max_backoff = float(cfg.max_backoff_s)
    self.supports_n = bool(cfg.supports_n)
    self.concurrency = max(1, int(cfg.concurrency))
    self._sleep = sleep
    self._lock = threading.Lock()
    self.stats = {'requests': 0, 'retries': 0, 'failures': 0}

  def _count(self, key: str) -> None:
    with self._lock:
      self.stats[key] += 1

  def _wait(self, attempt: int, retry_after: str | None) -> float:
    if retry_after:
      try:
        return min(self.max_backoff, max(0.0, float(retry_after)))
      except ValueError:
        when = email.utils.parsedate_to_datetime(retry_after) if retry_after else None
        if when is not None:
          return min(self.max_backoff, max(0.0, when.timestamp() - time.time()))
    # Full jitter would make runs irreproducible in their timing only; a small one spreads threads.
    return min(self.max_backoff, self.backoff * 2 ** attempt) * (1.0 + 0.1 * random.random())

  def chat(self, messages: Sequence[Mapping[str, str]], **params) -> dict[str, Any]:
    """The decoded response of one chat-completions request, after retries."""
    body = json.dumps({'model': self.model, 'messages': list(messages), **params}).encode('utf-8')
    headers = {'Content-Type': 'application/json'}
    if self.api_key:
      headers['Authorization'] = f'Bearer {self.api_key}'
    last = ''
    for attempt in range(self.max_retries + 1):
      if attempt:
        self._count('retries')
      self._count('requests')
      retry_after = None
      try:
        req = urllib.request.Request(self.url, data=body, headers=headers, method='POST')
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
          raw = resp.read()
        try:
          return json.loads(raw)
        except json.JSONDecodeError as e:
          last = f'response is not JSON ({e})'  # a proxy's error page: worth another try
      except urllib.error.HTTPError as e:
        detail = _error_text(e)
        last = f'HTTP {e.code}{": " + detail if detail else ""}'
        if e.code not in RETRY_STATUS:
          self._count('failures')
          raise EndpointError(f'{self.what} endpoint {self.url}: {last} (not retried)') from None
        retry_after = e.headers.get('Retry-After') if e.headers else None
      except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as e:
        last = f'{type(e).__name__}: {getattr(e, "reason", e)}'
      if attempt < self.max_retries:
        self._sleep(self._wait(attempt, retry_after))
    self._count('failures')
    raise EndpointError(f'{self.what} endpoint {self.url}: {last} after {self.max_retries} retries')

  def choices(self, messages, n: int, **params) -> list[dict[str, Any]]:
    """n choices: one request with `n` when the server supports it (topped up if it returns fewer),
    else n requests. `seed`, when given, is offset per extra request so they differ."""
    out: list[dict] = []
    seed = params.pop('seed', None)
    while len(out) < n:
      want = n - len(out) if self.supports_n else 1
      extra = {} if seed is None else {'seed': int(seed) + len(out)}
      response = self.chat(messages, n=want, **params, **extra) if want > 1 else self.chat(messages, **params, **extra)
      got = response.get('choices') or []
      if not got:
        raise EndpointError(f'{self.what} endpoint {self.url}: a response without choices')
      out.extend(got[:want])
    return out[:n]


def _error_text(e: urllib.error.HTTPError) -> str:
  try:
    raw = e.read().decode('utf-8', 'replace')
  except Exception:  # the body is a courtesy; its absence must not hide the status
    return ''
  try:
    message = json.loads(raw).get('error', {}).get('message', '')
  except (json.JSONDecodeError, AttributeError):
    message = raw
  return ' '.join(str(message).split())[:200]

