"""The worker thread that owns the model: it batches waiting requests into sampler calls.

HTTP handler threads `submit` jobs and wait on them; one worker takes the oldest waiting job
and every other waiting job with the same sampling settings, up to `max_batch` rows (a job
with n choices is n rows), and answers them all from one `Policy.sample` call. Only this
thread touches the device, so no request ever waits on a lock inside JAX.

`SamplingParams` is a static argument of the sampler's jit: each distinct (temperature,
top_p, max_new_tokens) compiles once. Greedy settings are normalised (top_p ignored) and
`max_new_tokens` is rounded up to a power of two (at least 16, at most the server's cap)
with each completion cut back to what its request asked for, so a few programs serve
every request and requests with different max_tokens still share a batch.

A seeded request at temperature > 0 runs alone with `jax.random.key(seed)`: in a shared
batch its samples would depend on its batch mates. The same seed, prompt and n then give
the same completions. Greedy requests ignore the seed and batch freely.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence

from deliberative.serving.protocol import Choice

_STOP = object()
MIN_TOKEN_BUCKET = 16


def token_bucket(max_tokens: int, cap: int) -> int:
  """The compiled max_new_tokens that serves a request for `max_tokens` (<= cap)."""
  bucket = MIN_TOKEN_BUCKET
  while bucket < max_tokens:
    bucket *= 2
  return min(bucket, cap)


@dataclasses.dataclass(eq=False)
class Job:
  """One request's rows: its prompt `n` times. The worker fills `choices` or `error`."""
  prompt_ids: list[int]
  n: int
  sampling: object  # SamplingParams with the bucketed max_new_tokens
  max_tokens: int  # what the request asked for (<= sampling.max_new_tokens)
  seed: int | None = None
  choices: list[Choice] | None = None
  error: BaseException | None = None
  done: threading.Event = dataclasses.field(default_factory=threading.Event)

  @property
  def solo(self) -> bool:
    return self.seed is not None and not self.sampling.greedy

  def wait(self, timeout: float | None = None) -> list[Choice]:
    if not self.done.wait(timeout):
      raise TimeoutError('the model did not answer in time')
    if self.error is not None:
      raise self.error
    return self.choices


@dataclasses.dataclass
class Stats:
  """Counters a test or benchmark reads (written by the worker thread only)."""
  batches: int = 0
  requests: int = 0
  rows: int = 0
  prompt_tokens: int = 0
  completion_tokens: int = 0
  max_requests_per_batch: int = 0
  busy_seconds: float = 0.0


class ServerStopped(RuntimeError):
  """The server shut down before the job ran."""


class BatchWorker:
  """`submit(job)` from any thread; `start()` / `stop()` the thread that runs them."""

  def __init__(self, policy, *, max_batch: int, batch_wait_s: float = 0.005,
               log: Callable[[str], None] | None = None):
    import jax
    self.policy = policy
    self.max_batch = max_batch
    self.batch_wait_s = batch_wait_s
    self.log = log if log is not None else (lambda line: print(line, file=sys.stderr, flush=True))
    self.stats = Stats()
    self._queue: queue.Queue = queue.Queue()
    self._rng = jax.random.key(0)  # unseeded sampled requests draw from this stream
    self._thread = threading.Thread(target=self._run, name='deliberative-serve-worker', daemon=True)
    self._stopped = False

  def start(self) -> None:
    self._thread.start()

  def stop(self, timeout: float | None = 60) -> None:
    """Fails waiting jobs and ends the thread after the batch it is running."""
    self._stopped = True
    self._queue.put(_STOP)
    if self._thread.is_alive():
      self._thread.join(timeout)
    while True:  # a job that raced past the `_stopped` check, after the thread ended
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        break
      if item is not _STOP:
        item.error = ServerStopped('the server shut down before this request ran')
        item.done.set()

  def submit(self, job: Job) -> Job:
    if self._stopped:
      raise ServerStopped('the server is shutting down')
    self._queue.put(job)
    return job

  # -- the worker thread ----------------------------------------------------------------------------
  def _run(self) -> None:
    waiting: collections.deque[Job] = collections.deque()
    stopping = False
    while not stopping:
      if not waiting:
        item = self._queue.get()
        if item is _STOP:
          break
        waiting.append(item)
      stopping = self._drain(waiting)
      # Requests sent together arrive a moment apart, and clients answered by the last batch send
      # their next ones right away: a short wait lets them join this batch instead of the next.
      if not stopping and self.batch_wait_s > 0 and sum(job.n for job in waiting) < self.max_batch:
        time.sleep(self.batch_wait_s)
        stopping = self._drain(waiting)
      if not stopping:
        self._run_batch(self._take_batch(waiting))
    for job in waiting:
      job.error = ServerStopped('the server shut down before this request ran')
      job.done.set()

  def _drain(self, waiting: collections.deque) -> bool:
    """Moves every queued job to `waiting`; True when a stop was queued."""
    stopping = False
    while True:
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        return stopping
      if item is _STOP:
        stopping = True
      else:
        waiting.append(item)

  def _take_batch(self, waiting: collections.deque) -> list[Job]:
    """The oldest job and, unless it must run alone, every later compatible one that fits."""
    first = waiting.popleft()
    batch, rows = [first], first.n
    if first.solo:
      return batch
    kept = collections.deque()
    while waiting:
      job = waiting.popleft()
      if not job.solo and job.sampling == first.sampling and rows + job.n <= self.max_batch:
        batch.append(job)
        rows += job.n
      else:
        kept.append(job)
    waiting.extend(kept)
    return batch

  def _run_batch(self, batch: Sequence[Job]) -> None:
    import jax
    start = time.perf_counter()
    try:
      prompts = [job.prompt_ids for job in batch for _ in range(job.n)]
      sampling = batch[0].sampling
      if batch[0].solo:
        rng = jax.random.key(batch[0].seed)
      else:
        self._rng, rng = jax.random.split(self._rng)
      out = self.policy.sample(prompts, sampling, rng)
      row = 0
      for job in batch:
        job.choices = [self._choice(out, row + i, job.max_tokens) for i in range(job.n)]
        row += job.n
    except Exception as e:  # every job of the batch gets the error; the worker lives on
      for job in batch:
        job.error = e
    seconds = time.perf_counter() - start
    self._account(batch, seconds)
    for job in batch:
      job.done.set()

  def _choice(self, out, row: int, max_tokens: int) -> Choice:
    """Row `row` of a sampler output, cut back to the request's own `max_tokens`."""
    length = int(out.lengths[row])
    stopped = bool(out.stopped[row]) and length <= max_tokens
    ids = out.tokens[row, :min(length, max_tokens)].tolist()
    tokenizer, reasoning = self.policy.tokenizer, self.policy.reasoning
    parsed = tokenizer.parse_completion(ids, reasoning=reasoning)
    return Choice(reasoning=parsed.cot if reasoning else None, content=parsed.answer,
                  finish_reason='stop' if stopped else 'length', completion_tokens=len(ids),
                  well_formed=parsed.well_formed)

  def _account(self, batch: Sequence[Job], seconds: float) -> None:
    s = self.stats
    done = [job for job in batch if job.choices is not None]
    prompt = sum(len(job.prompt_ids) * job.n for job in batch)
    completion = sum(c.completion_tokens for job in done for c in job.choices)
    s.batches += 1
    s.requests += len(batch)
    s.rows += sum(job.n for job in batch)
    s.prompt_tokens += prompt
    s.completion_tokens += completion
    s.max_requests_per_batch = max(s.max_requests_per_batch, len(batch))
    s.busy_seconds += seconds
    failed = len(batch) - len(done)
    self.log(f'serve: batch {s.batches}: {len(batch)} request(s), {sum(j.n for j in batch)} row(s), '
             f'{prompt} prompt + {completion} completion tokens in {seconds:.2f}s '
             f'({completion / max(seconds, 1e-9):,.1f} tok/s)' + (f'; {failed} failed: {batch[0].error}' if failed else ''))
