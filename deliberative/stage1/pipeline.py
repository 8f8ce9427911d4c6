"""The stage-1 loop: prompts -> K completions (spec in the system prompt) -> k grades each ->
min-of-k -> best above threshold -> spec stripped -> trace records, shard by shard (shards.py).

A prompt's fate is one of: kept, none_passed (every completion malformed or below threshold),
too_long (the model cannot take it; listed by id), endpoint_error (a request outlasted its
retries; listed by id with the error). Above `max_error_fraction` of the prompts done so far in
endpoint errors, the run stops (the failing shard is not marked done, so a rerun retries it).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deliberative import config_lib
from deliberative.common import errors, io as atomic, progress, storage
from deliberative.data import datasets, schema, tfds_builder
from deliberative.evals import graders as graders_lib
from deliberative.judge import format as judge_format_lib
from deliberative.judge.prompt import JudgeInput
from deliberative.spec import Spec
from deliberative.stage1 import backends, label_cot, prompt as prompt_lib, select as select_lib, shards
from deliberative.stage1.endpoint import Endpoint, EndpointError


def log(msg: str) -> None:
  print(msg, flush=True)


def prompt_seed(seed: int, prompt_id: str) -> int:
  """A prompt's own seed: its completions and grades do not depend on batching, order or restarts."""
  return int.from_bytes(hashlib.sha256(f'{seed}\0{prompt_id}'.encode()).digest()[:4], 'little') & 0x3FFFFFFF


# --- the config, checked before the workdir is touched -------------------------------------------

# Either mode's fields (a field the config lacks is skipped). prompts.num_prompts=-3 once meant "all but 3".
MINIMUMS = {'prompts.num_prompts': 0, 'labels.per_file': 0, 'labels.num_samples': 1, 'labels.cot_max_chars': 1,
            'labels.max_dropped_fraction': 0.0, 'select.num_completions': 1, 'select.num_grades': 1,
            'shards.prompts_per_shard': 1, 'max_error_fraction': 0.0, 'base.temperature': 0.0, 'base.top_k': 0,
            'base.max_new_tokens': 1, 'base.max_prompt_len': 1, 'judge.temperature': 0.0, 'judge.max_len': 0,
            'judge.max_new_tokens': 1}
CHOICES = {'base.backend': ('own', 'endpoint'), 'judge.backend': ('own', 'endpoint'),
           'base.reasoning': ('auto', 'on', 'off'), 'judge.reasoning': ('auto', 'on', 'off'),
           'base.think_tags': ('auto', 'on', 'off'), 'labels.comply_without_answer': ('sample', 'skip'),
           'labels.truncated': ('drop', 'trim'), 'labels.cot_order': label_cot.ORDERS}


def validate(config) -> None:
  """Every value no run can use, named, before a manifest is written: a bad one found later left a
  workdir whose corrected command was then refused as a config change."""
  config_lib.check_values(config, MINIMUMS, CHOICES)
  if 'select' in config:
    select_lib.select(np.zeros((0, 1)), config.select.threshold)
  try:
    graders_lib.check_grader_name(config.grader)
  except graders_lib.UnknownGrader as e:
    raise ValueError(f'config.grader: {errors.one_line(e)}') from None


# --- inputs -------------------------------------------------------------------------------------

def load_prompt_records(cfg) -> list[dict[str, Any]]:
  """config.prompts: a JSONL file/dir (`jsonl`), else a built dataset's split (the demo's train split by
  default); only the messages and category of each record are used."""
  if cfg.jsonl:
    records = schema.read_jsonl(cfg.jsonl)
    where = cfg.jsonl
  else:
    from deliberative.data import pipeline as data_pipeline
    version_dir = datasets.resolve_dataset(cfg.data_dir or None, cfg.dataset)
    ds, where = data_pipeline.dataset_records(version_dir, cfg.split)
    records = [ds[i] for i in range(len(ds))]
  if cfg.categories:
    wanted = [c.strip() for c in cfg.categories.split(',') if c.strip()]
    unknown = [c for c in wanted if c not in schema.CATEGORIES]
    if unknown:
      raise ValueError(f'config.prompts.categories: unknown {unknown}; valid: {", ".join(schema.CATEGORIES)}')
    records = [r for r in records if r['category'] in wanted]
  if cfg.num_prompts:
    records = records[:cfg.num_prompts]
  seen: dict[str, int] = {}
  for i, r in enumerate(records):
    if r['id'] in seen:
      raise ValueError(f'{where}: prompt id {r["id"]!r} appears twice (records {seen[r["id"]]} and {i}); ids key '
                       'the resumable shards and the per-prompt seeds, so they must be unique')
    seen[r['id']] = i
  if not records:
    raise ValueError(f'{where}: no prompts (config.prompts: categories={cfg.categories!r}, num_prompts={cfg.num_prompts})')
  return records


# --- backends -----------------------------------------------------------------------------------

def make_backends(config, spec: Spec):
  """(G_base, G_RM) as the config says; an own model named by both is loaded once."""
  lock = threading.Lock()
  K = config.select.num_completions
  policies: dict[tuple, Any] = {}

  def policy_for(section, field: str, max_new_tokens: int, max_prompt_len: int):
    key = (section.checkpoint, section.random_size)
    if key not in policies:
      policies[key] = backends.load_policy(
          section.checkpoint, random_size=section.random_size, batch_size=K, max_new_tokens=max_new_tokens,
          reasoning=section.reasoning, max_prompt_len=max_prompt_len, field=field, seed=config.seed)
    return policies[key]

  b = config.base
  if b.backend == 'own':
    from deliberative.inference.sampler import SamplingParams
    policy = policy_for(b, 'base.checkpoint', b.max_new_tokens, b.max_prompt_len)
    think_tags = b.think_tags == 'on' or (b.think_tags == 'auto' and not policy.reasoning)
    sampling = SamplingParams(temperature=b.temperature, top_k=b.top_k, top_p=b.top_p, max_new_tokens=b.max_new_tokens)
    base = backends.OwnBase(policy, sampling, think_tags=think_tags, require_cot=config.select.require_cot, lock=lock)
  elif b.backend == 'endpoint':
    think_tags = b.think_tags != 'off'
    base = backends.EndpointBase(Endpoint(b.endpoint, 'base'), temperature=b.temperature, top_p=b.top_p,
                                 max_new_tokens=b.max_new_tokens, require_cot=config.select.require_cot)
  else:
    raise ValueError(f'config.base.backend={b.backend!r}: expected own or endpoint')

  j = config.judge
  if j.backend == 'own':
    from deliberative.judge import load as judge_load
    # What its checkpoint recorded (else the paper's prompt), the config's non-empty fields winning;
    # a random-init judge (no checkpoint) records none.
    fmt = judge_format_lib.for_source(j.checkpoint, j, spec.version, log=log, sees_cot=bool(j.answer_and_cot))
    jp = policy_for(j, 'judge.checkpoint', b.max_new_tokens, b.max_prompt_len)
    judge_model = judge_load.build(jp.cfg, jp.tokenizer, spec, fmt, answer_and_cot=j.answer_and_cot,
                                   batch_buckets=(K,), batch_multiple=jp.batch_multiple, mesh=jp.mesh, rules=jp.rules)
    judge = backends.OwnJudge(judge_model, jp.params, temperature=j.temperature, use_prefix_cache=j.use_prefix_cache,
                              name=jp.name, lock=lock)
  elif j.backend == 'endpoint':
    judge = backends.EndpointJudge(Endpoint(j.endpoint, 'judge'), spec, spec_view=j.spec_view or 'full',
                                   rubric=j.rubric or 'default', answer_and_cot=j.answer_and_cot,
                                   temperature=j.temperature, max_new_tokens=j.max_new_tokens)
  else:
    raise ValueError(f'config.judge.backend={j.backend!r}: expected own or endpoint')
  return base, judge, think_tags


# --- one prompt ---------------------------------------------------------------------------------

class Stage1:
  """Everything one prompt needs; `run_prompt` is safe to call from several threads."""

  def __init__(self, config, spec: Spec, base, judge, grader, think_tags: bool, digest: str):
    self.config, self.spec, self.base, self.judge, self.grader = config, spec, base, judge, grader
    self.think_tags, self.digest = think_tags, digest

  def run_prompt(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(outcome, kept trace record or None)."""
    pid, category, text = record['id'], record['category'], record['prompt']
    out: dict[str, Any] = {'id': pid, 'category': category, 'completions': 0, 'malformed': 0,
                           'below_threshold': 0, 'passed': 0, 'judge_unparsed': 0, 'judge_truncated': 0}
    system = prompt_lib.system_prompt(self.spec, category, self.think_tags)
    try:
      prepared = self.base.prepare(record, system)
      self.judge.check(category, text, pid)
    except backends.TooLong as e:
      return {**out, 'outcome': 'too_long', 'error': errors.one_line(e)}, None
    seed = prompt_seed(self.config.seed, pid)
    sel = self.config.select
    try:
      candidates = self.base.complete(prepared, sel.num_completions, seed)
      reasons: dict[str, int] = {}
      for c in candidates:
        if c.malformed:
          reasons[c.malformed] = reasons.get(c.malformed, 0) + 1
      well = [i for i, c in enumerate(candidates) if not c.malformed]
      grades = self.grader.grade([graders_lib.GradeItem(prompt=text, category=category, answer=candidates[i].answer,
                                                        cot=candidates[i].cot, id=f'{pid}#{i}') for i in well])
      judged, decisions = [], []
      for i, g in zip(well, grades):
        if g['decision'] == graders_lib.MALFORMED:  # empty, degenerate, off-topic: no decision to train on
          reason = f'grader:{g.get("outcome", "malformed")}'
          reasons[reason] = reasons.get(reason, 0) + 1
        else:
          judged.append(i)
          decisions.append(g['decision'])
      items = [JudgeInput(category, text, candidates[i].answer, candidates[i].cot, f'{pid}#{i}') for i in judged]
      if items:
        grades_NK, unparsed, truncated = self.judge.grades(items, sel.num_grades, seed + 1)
      else:
        grades_NK, unparsed, truncated = np.zeros((0, sel.num_grades), np.int32), 0, 0
    except EndpointError as e:
      return {**out, 'outcome': 'endpoint_error', 'error': errors.one_line(e)}, None
    chosen = select_lib.select(grades_NK, sel.threshold)
    per_decision: dict[str, dict[str, int]] = {}
    for j, decision in enumerate(decisions):
      d = per_decision.setdefault(decision, {'judged': 0, 'below_threshold': 0, 'passed': 0, 'kept': 0})
      d['judged'] += 1
      d['passed' if chosen.passed[j] else 'below_threshold'] += 1
      d['kept'] += int(j == chosen.best)
    out.update(completions=len(candidates), malformed=sum(reasons.values()), below_threshold=chosen.below_threshold,
               passed=int(chosen.passed.sum()), judge_unparsed=int(unparsed), judge_truncated=int(truncated),
               malformed_reasons=reasons, decisions=per_decision)
    if self.config.output.keep_candidates:  # the audit trail: every completion, why it was dropped or kept
      rows = []
      for i, c in enumerate(candidates):
        row = {'cot': c.cot, 'answer': c.answer, 'malformed': c.malformed}
        if i in judged:
          j = judged.index(i)
          row.update(decision=decisions[j], grades=[int(g) for g in grades_NK[j]], kept=j == chosen.best)
        rows.append(row)
      out['candidates'] = rows
    if chosen.best is None:
      return {**out, 'outcome': 'none_passed'}, None
    best = candidates[judged[chosen.best]]
    trace = {'id': pid, 'messages': backends.non_system(record['messages']), 'category': category,
             'decision': decisions[chosen.best], 'cot': best.cot, 'answer': best.answer,
             'score': select_lib.score_of(int(chosen.scores[chosen.best])),
             'grades': [int(g) for g in grades_NK[chosen.best]], 'spec_version': self.spec.version,
             'source': f'{self.base.name}+{self.digest}', 'judge': self.judge.name}
    trace = schema.validate_record(trace, f'generate: prompt {pid!r}')
    return {**out, 'outcome': 'kept'}, trace


# --- the run ------------------------------------------------------------------------------------

def plan_shards(records: Sequence[Mapping[str, Any]], per_shard: int) -> list[list[str]]:
  ids = [r['id'] for r in records]
  return [ids[i:i + per_shard] for i in range(0, len(ids), per_shard)]


def done_outcomes(workdir: str, manifest: shards.Manifest) -> list[dict[str, Any]]:
  out = []
  for index in sorted(manifest.done):
    out.extend(shards.read_jsonl(shards.shard_path(workdir, index, '.outcomes')))
  return out


def run(config, workdir: str) -> dict[str, Any]:
  """Generates (or continues) the run in `workdir`; returns summary.json's content."""
  t_start = time.perf_counter()
  spec = Spec.load(config.spec or None)
  validate(config)
  grader = graders_lib.get_grader(config.grader)
  records = load_prompt_records(config.prompts)
  by_id = {r['id']: r for r in records}
  digest = shards.config_hash(config)
  storage.makedirs(workdir)
  manifest = shards.Manifest.open(workdir, config, spec.version, plan_shards(records, config.shards.prompts_per_shard))
  todo = [i for i in range(len(manifest.shards)) if i not in manifest.done]
  log(f'generate: {len(records)} prompts in {len(manifest.shards)} shards ({len(manifest.done)} done); '
      f'workdir {storage.abspath(workdir)}; config hash {digest}; spec {spec.version}')
  outcomes = done_outcomes(workdir, manifest)
  if todo:
    base, judge, think_tags = make_backends(config, spec)
    log(f'G_base {config.base.backend}: {base.name}; G_RM {config.judge.backend}: {judge.name}; '
        f'K={config.select.num_completions} k={config.select.num_grades} threshold={config.select.threshold}')
    stage = Stage1(config, spec, base, judge, grader, think_tags, digest)
    workers = max(base.concurrency, judge.concurrency)
    pool = concurrent.futures.ThreadPoolExecutor(workers) if workers > 1 else None
    started, done_before = time.perf_counter(), len(outcomes)
    try:
      for index in todo:
        shard_records = [by_id[pid] for pid in manifest.shards[index]]
        results = list(pool.map(stage.run_prompt, shard_records)) if pool else [stage.run_prompt(r) for r in shard_records]
        shard_outcomes = [o for o, _ in results]
        failed = outcomes + shard_outcomes
        errors_so_far = [o for o in failed if o['outcome'] == 'endpoint_error']
        if errors_so_far and len(errors_so_far) > config.max_error_fraction * len(failed):
          _write_summary(workdir, outcomes, len(records), time.perf_counter() - t_start)
          listed = '; '.join(f'{o["id"]}: {o["error"]}' for o in errors_so_far[:10])
          raise errors.RunError(
              f'{len(errors_so_far)} of {len(failed)} prompts failed at the endpoint after retries, more than '
              f'config.max_error_fraction={config.max_error_fraction}; shard {index} is not marked done (a rerun '
              f'retries it). Failed prompt ids: {listed}' + (' ...' if len(errors_so_far) > 10 else ''))
        commit_shard(workdir, manifest, index, results, outcomes, len(records), started, done_before)
        if config.debug.kill_after_shard == index:  # tests: die as a preempted host would, mid-run
          os.kill(os.getpid(), signal.SIGKILL)
    finally:
      if pool:
        pool.shutdown(wait=True)
  summary = _write_summary(workdir, outcomes, len(records), time.perf_counter() - t_start)
  summary.update(write_traces(config, workdir, manifest, summary))
  atomic.write_json(storage.join(workdir, shards.SUMMARY), summary)
  return summary


def commit_shard(workdir: str, manifest: shards.Manifest, index: int, results, outcomes: list, total: int,
                 started: float, done_before: int) -> None:
  """Writes one finished shard (its traces, then its outcomes) atomically, marks it done, adds its
  outcomes to `outcomes` and logs progress with the rate since `started` and an ETA."""
  shard_outcomes = [o for o, _ in results]
  atomic.write_jsonl(shards.shard_path(workdir, index), [t for _, t in results if t is not None], sort_keys=True)
  atomic.write_jsonl(shards.shard_path(workdir, index, '.outcomes'), shard_outcomes, sort_keys=True)
  manifest.mark_done(index)
  outcomes.extend(shard_outcomes)
  kept = sum(o['outcome'] == 'kept' for o in outcomes)
  log(f'prompts {len(outcomes):>6}/{total}  kept {kept}  shard {index + 1}/{len(manifest.shards)}  '
      + progress.rate_and_eta(len(outcomes), total, started, 'prompts', done_before))


def _write_summary(workdir: str, outcomes, total: int, seconds: float) -> dict[str, Any]:
  summary = shards.summarise(outcomes, total)
  summary['wall_seconds'] = round(seconds, 2)
  atomic.write_json(storage.join(workdir, shards.SUMMARY), summary)
  return summary


def _build_and_upload(records: Sequence[Mapping[str, Any]], workdir: str, name: str) -> str:
  """The TFDS build of a URL workdir: TFDS stages and renames on a local disk (tfds_builder), so the
  dataset is built in a local temporary directory and its files uploaded to WORKDIR/data/... (each
  object whole; the tree is not atomic as a whole: a rerun builds and uploads it again)."""
  import tempfile
  with tempfile.TemporaryDirectory(prefix='deliberative-traces-') as tmp:
    local_traces = os.path.join(tmp, 'traces')
    atomic.write_jsonl(os.path.join(local_traces, 'train.jsonl'), records, sort_keys=True)
    local_data = os.path.join(tmp, 'data')
    version_dir = tfds_builder.build_dataset(local_traces, local_data, name, overwrite=True, echo=lambda line: None)
    dataset = storage.join(workdir, 'data', *os.path.relpath(str(version_dir), local_data).split(os.sep))
    storage.upload_tree(str(version_dir), dataset)
  return dataset


def write_traces(config, workdir: str, manifest: shards.Manifest, summary: Mapping[str, Any]) -> dict[str, Any]:
  """WORKDIR/traces/train.jsonl (every kept record, in shard order) and its TFDS build."""
  records = []
  for index in sorted(manifest.done):
    records.extend(shards.read_jsonl(shards.shard_path(workdir, index)))
  if len(records) != summary['kept']:
    raise AssertionError(f'{len(records)} records in the shards, summary counts {summary["kept"]} kept')
  traces = storage.join(workdir, 'traces', 'train.jsonl')
  atomic.write_jsonl(traces, records, sort_keys=True)
  out: dict[str, Any] = {'traces': storage.abspath(traces)}
  if not records:
    log('no record was kept: no dataset built (see summary.json: malformed_reasons, below_threshold)')
    return out
  if not config.output.build_dataset:
    return out
  if storage.is_local(workdir):
    data_dir = os.path.join(workdir, 'data')
    version_dir = tfds_builder.build_dataset(os.path.dirname(traces), data_dir, config.output.dataset_name,
                                             overwrite=True, echo=lambda line: None)
    out['dataset'] = os.path.abspath(str(version_dir))
  else:
    out['dataset'] = _build_and_upload(records, workdir, config.output.dataset_name)
  out['sft_command'] = (f'python -m deliberative.train --config {config.output.sft_config} '
                        f'--config.data.dataset={out["dataset"]} --config.evals.split=train '
                        "--config.evals.final_splits=''")
  return out
