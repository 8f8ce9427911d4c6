"""Stage 1 with the labels as the judge: traces without a capable teacher (issue 22, part 3).

  python -m deliberative.generate --config configs/generate.py:source=labels \
      --config.prompts.jsonl=IMPORT_DIR --workdir runs/label_traces

The paper's stage 1 needs a strong model to write spec-citing traces and a strong judge to filter
them. Where neither exists, labelled prompt sets (tools/import_prompts.py) already say what the
judge would: each prompt's category, decision and governing clause. This stage writes the trace
from that label:

  CoT     label_cot.py: the category, the governing clause by id, why it governs, the decision,
          in wording cut from the spec itself, short (<= labels.cot_max_chars characters).
  answer  comply: the set's own compliant answer where it ships one (CoCoNot's `chosen`,
          Self-Instruct's output), else the generator's own answer (self-distillation: K samples
          from stage 1's generator backend, `base`, with no system prompt), kept only when
          well formed, closed (not cut at max_new_tokens) and read as compliance by the grader;
          refuse: an ST.1 refusal naming the request; safe_complete: the category's style
          (label_answers.py). Every answer is read back by config.grader; an answer it reads as
          another decision is dropped and counted (below_threshold, `misread`).

It writes stage 1's own workdir (shards.py: manifest, atomic shards resumed after a kill, counts
that add up) and adds, per source set and decision, how many prompts were kept and dropped. Above
labels.max_dropped_fraction of prompts dropped, the run stops after writing its summary. The
model-judge path (pipeline.py, config source=model) is unchanged, for users with a capable judge.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from deliberative.common import errors, io as common_io, storage
from deliberative.data import schema
from deliberative.evals import graders as graders_lib
from deliberative.spec import Spec
from deliberative.stage1 import backends, label_answers, label_cot, label_input, pipeline, shards
from deliberative.stage1.endpoint import Endpoint, EndpointError

LABELS_JUDGE = 'labels'


def make_generator(config):
  """Stage 1's G_base (backends.py), asked for a direct answer: no reasoning block, no <think>
  tags, no system prompt. The CoT is the label's; only the model's answer is used."""
  b = config.base
  if b.backend == 'own':
    from deliberative.inference.sampler import SamplingParams
    # One sampler call per shard: every prompt of the shard that needs an answer, K rows each.
    rows = config.shards.prompts_per_shard * config.labels.num_samples
    policy = backends.load_policy(b.checkpoint, random_size=b.random_size, batch_size=rows,
                                  max_new_tokens=b.max_new_tokens, reasoning=b.reasoning,
                                  max_prompt_len=b.max_prompt_len, field='base.checkpoint', seed=config.seed)
    sampling = SamplingParams(temperature=b.temperature, top_k=b.top_k, top_p=b.top_p, max_new_tokens=b.max_new_tokens)
    return backends.OwnBase(policy, sampling, think_tags=False, require_cot=False, lock=threading.Lock())
  if b.backend == 'endpoint':
    return backends.EndpointBase(Endpoint(b.endpoint, 'base'), temperature=b.temperature, top_p=b.top_p,
                                 max_new_tokens=b.max_new_tokens, require_cot=False)
  raise ValueError(f'config.base.backend={b.backend!r}: expected own or endpoint')


class LabelStage1:
  """Writes one prompt's trace; the generator is loaded on the first prompt that needs it."""

  def __init__(self, config, spec: Spec, grader, digest: str):
    self.config, self.spec, self.grader, self.digest = config, spec, grader, digest
    self.cots = label_cot.CotWriter(spec, config.labels.cot_max_chars, config.labels.cot_order)
    self._generator = None
    self._presampled: dict[str, list[backends.Candidate] | backends.TooLong] = {}

  @property
  def generator(self):
    if self._generator is None:
      self._generator = make_generator(self.config)
    return self._generator

  def _sampled(self, record, seed: int) -> list[backends.Candidate]:
    got = self._presampled.pop(record['id'], None)
    if isinstance(got, backends.TooLong):
      raise got
    if got is None:
      got = self.generator.complete(self.generator.prepare(record, ''), self.config.labels.num_samples, seed)
    if self.config.labels.truncated == 'trim':
      got = [backends.trim_truncated(c) for c in got]
    return got

  def presample(self, records) -> None:
    """Samples the answers of every record in `records` that needs one, together (backends.presample).
    The batch's seed is its first prompt's, so a resumed shard samples the same answers."""
    wanted = [r for r in records if label_input.needs_sampling(r) and r['decision'] in ('comply', 'safe_complete')]
    if wanted:
      seed = pipeline.prompt_seed(self.config.seed, wanted[0]['id'])
      self._presampled.update(backends.presample(self.generator, wanted, self.config.labels.num_samples, seed))

  def _candidates(self, record, rng: random.Random, clause, seed: int) -> tuple[list[backends.Candidate], str]:
    """The answers to choose from, and where they came from: dataset, written or sampled."""
    category, decision, prompt = record['category'], record['decision'], record['prompt']
    if decision == 'refuse':
      return [backends.Candidate('', label_answers.refusal(rng, prompt))], 'written'
    if decision == 'safe_complete' and category == 'self_harm':
      asks_for_methods = clause is not None and clause.id in _methods_clauses(self.spec)
      return [backends.Candidate('', label_answers.self_harm_safe_completion(rng, prompt, asks_for_methods))], 'written'
    given = label_input.dataset_answer(record)
    if given:
      return [backends.Candidate('', given)], 'dataset'
    return self._sampled(record, seed), f'sampled:{self.generator.name}'

  def _read_back(self, record, cot: str, answers, expected: str, tally: Counter) -> list[int]:
    """Indices of the answers the grader reads as `expected`; the others are tallied by why."""
    items = [graders_lib.GradeItem(prompt=record['prompt'], category=record['category'], answer=a, cot=cot,
                                   id=f'{record["id"]}#{i}') for i, a in answers]
    keep = []
    for (i, _), g in zip(answers, self.grader.grade(items)):
      if g['decision'] == graders_lib.MALFORMED:
        tally[f'malformed:grader:{g.get("outcome", "malformed")}'] += 1
      elif g['decision'] != expected:
        tally[f'misread:{g["decision"]}'] += 1
      else:
        keep.append(i)
    return keep

  def run_prompt(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    pid, category, decision = record['id'], record['category'], record['decision']
    seed = pipeline.prompt_seed(self.config.seed, pid)
    rng = random.Random(seed)
    clause = label_cot.governing_clause(self.spec, category, decision, record.get('clause_ids'), record['prompt'])
    cot = self.cots.write(rng, category, decision, clause, record['prompt']).text
    out: dict[str, Any] = {'id': pid, 'category': category, 'source': record['source'], 'label_decision': decision,
                           'completions': 0, 'malformed': 0, 'below_threshold': 0, 'passed': 0,
                           'judge_unparsed': 0, 'judge_truncated': 0}
    try:
      candidates, answer_from = self._candidates(record, rng, clause, seed)
    except backends.TooLong as e:
      return {**out, 'outcome': 'too_long', 'error': errors.one_line(e)}, None
    except EndpointError as e:
      return {**out, 'outcome': 'endpoint_error', 'error': errors.one_line(e)}, None
    tally = Counter(f'malformed:{c.malformed}' for c in candidates if c.malformed)
    answers = [(i, c.answer) for i, c in enumerate(candidates) if not c.malformed]
    if decision == 'safe_complete' and category == 'regulated_advice':
      # ST.3 wraps information: the information must read as help before the wrap is read back.
      informative = self._read_back(record, cot, answers, 'comply', tally)
      domain = label_answers.domain_of(record['prompt'], clause.text)
      answers = [(i, label_answers.with_disclaimer(rng, candidates[i].answer, domain)) for i in informative]
    texts = dict(answers)
    kept = self._read_back(record, cot, answers, decision, tally)
    malformed = sum(n for k, n in tally.items() if k.startswith('malformed:'))
    below = sum(n for k, n in tally.items() if k.startswith('misread:'))
    out.update(completions=len(candidates), malformed=malformed, below_threshold=below, passed=len(kept),
               malformed_reasons={k.removeprefix('malformed:'): n for k, n in tally.items() if k.startswith('malformed:')},
               misread={k.removeprefix('misread:'): n for k, n in tally.items() if k.startswith('misread:')},
               decisions={decision: {'judged': below + len(kept), 'below_threshold': below, 'passed': len(kept),
                                     'kept': int(bool(kept))}},
               answer_from=answer_from.split(':')[0])
    if answer_from.startswith('sampled'):  # the audit trail of self-distillation: every sample and its fate
      out['candidates'] = [{'answer': c.answer, 'malformed': c.malformed, 'trimmed': c.trimmed,
                            'kept': i == (kept[0] if kept else None)} for i, c in enumerate(candidates)]
      out['kept_trimmed'] = bool(kept) and candidates[kept[0]].trimmed
    if not kept:
      return {**out, 'outcome': 'none_passed'}, None
    trace = {'id': pid, 'messages': backends.non_system(record['messages']), 'category': category,
             'decision': decision, 'cot': cot, 'answer': texts[kept[0]],
             'clause_ids': [clause.id] if clause else [], 'spec_version': self.spec.version,
             'source': record['source'], 'source_label': record.get('source_label', ''),
             'answer_from': answer_from, 'generator': f'{LABELS_JUDGE}+{self.digest}', 'judge': LABELS_JUDGE}
    return {**out, 'outcome': 'kept'}, schema.validate_record(trace, f'label traces: prompt {pid!r}')


def _methods_clauses(spec: Spec) -> set[str]:
  """Self-harm safe-completion clauses about methods (SH.5 in the packaged spec): the answer
  declines the methods before it turns to the person."""
  return {c.id for c in spec.clauses_for('self_harm', 'safe_complete') if 'method' in c.text.lower()}


def summarise(outcomes, inputs: label_input.LabelledPrompts) -> dict[str, Any]:
  """shards.summarise's counts, plus per source set and label decision; raises AssertionError
  when they do not add up."""
  summary = shards.summarise(outcomes, len(inputs.records))
  per_source: dict[str, dict[str, dict[str, int]]] = {}
  misread, answer_from = Counter(), Counter()
  for o in outcomes:
    cell = per_source.setdefault(o['source'], {}).setdefault(o['label_decision'],
                                                             dict.fromkeys(('prompts', *shards.OUTCOMES), 0))
    cell['prompts'] += 1
    cell[o['outcome']] += 1
    misread.update(o.get('misread', {}))
    if o['outcome'] == 'kept':
      answer_from[o['answer_from']] += 1
  summary.update(judge=LABELS_JUDGE, records_read=inputs.read,
                 kept_trimmed=sum(bool(o.get('kept_trimmed')) for o in outcomes), per_source=dict(sorted(per_source.items())),
                 misread=dict(sorted(misread.items())), answer_from=dict(sorted(answer_from.items())),
                 skipped_no_answer=dict(sorted(inputs.skipped.items())), skipped_no_answer_ids=inputs.skipped_ids[:20])
  cells = [c for by_decision in per_source.values() for c in by_decision.values()]
  for key in ('prompts', *shards.OUTCOMES):
    if sum(c[key] for c in cells) != summary[key]:
      raise AssertionError(f'label summary: per-source {key} do not sum to the total {summary[key]}')
  if sum(misread.values()) != summary['below_threshold'] or sum(answer_from.values()) != summary['kept']:
    raise AssertionError('label summary: misread or answer_from counts do not add up')
  return summary


def run(config, workdir: str) -> dict[str, Any]:
  """Writes (or continues) the label-as-judge run in `workdir`; returns summary.json's content."""
  t_start = time.perf_counter()
  spec = Spec.load(config.spec or None)
  pipeline.validate(config)
  grader = graders_lib.get_grader(config.grader)
  inputs = label_input.read(config.prompts, config.labels, spec)
  by_id = {r['id']: r for r in inputs.records}
  digest = shards.config_hash(config)
  storage.makedirs(workdir)
  manifest = shards.Manifest.open(workdir, config, spec.version,
                                  pipeline.plan_shards(inputs.records, config.shards.prompts_per_shard))
  todo = [i for i in range(len(manifest.shards)) if i not in manifest.done]
  pipeline.log(f'generate (labels as judge): {len(inputs.records)} prompts in {len(manifest.shards)} shards '
               f'({len(manifest.done)} done); {sum(inputs.skipped.values())} comply prompts without an answer '
               f'skipped; workdir {storage.abspath(workdir)}; config hash {digest}; spec {spec.version}')
  outcomes = pipeline.done_outcomes(workdir, manifest)
  stage = LabelStage1(config, spec, grader, digest)
  started, done_before = time.perf_counter(), len(outcomes)
  for index in todo:
    stage.presample([by_id[pid] for pid in manifest.shards[index]])
    results = [stage.run_prompt(by_id[pid]) for pid in manifest.shards[index]]
    shard_outcomes = [o for o, _ in results]
    failed = [o for o in outcomes + shard_outcomes if o['outcome'] == 'endpoint_error']
    if failed and len(failed) > config.max_error_fraction * len(outcomes + shard_outcomes):
      raise errors.RunError(f'{len(failed)} prompts failed at the endpoint after retries, more than '
                            f'config.max_error_fraction={config.max_error_fraction}; shard {index} is not marked '
                            'done (a rerun retries it): ' + '; '.join(f'{o["id"]}: {o["error"]}' for o in failed[:10]))
    pipeline.commit_shard(workdir, manifest, index, results, outcomes, len(inputs.records), started, done_before)
    if config.debug.kill_after_shard == index:  # tests: die as a preempted host would, mid-run
      os.kill(os.getpid(), signal.SIGKILL)
  summary = summarise(outcomes, inputs)
  summary['wall_seconds'] = round(time.perf_counter() - t_start, 2)
  common_io.write_json(storage.join(workdir, shards.SUMMARY), summary)
  dropped = summary['none_passed'] + summary['too_long']
  if dropped > config.labels.max_dropped_fraction * summary['prompts']:
    raise errors.RunError(
        f'{dropped} of {summary["prompts"]} prompts dropped (none_passed {summary["none_passed"]}, too_long '
        f'{summary["too_long"]}), more than config.labels.max_dropped_fraction={config.labels.max_dropped_fraction}; '
        f'why: malformed {summary["malformed_reasons"]}, read as another decision {summary["misread"]} '
        f'({storage.join(workdir, shards.SUMMARY)}); no traces written')
  summary.update(pipeline.write_traces(config, workdir, manifest, summary))
  common_io.write_json(storage.join(workdir, shards.SUMMARY), summary)
  return summary


def report_lines(summary: Mapping[str, Any]) -> list[str]:
  """What deliberative.generate prints after the common summary line."""
  lines = [f'  answers kept: {summary["answer_from"]}; read as another decision: {summary["misread"]}'
           + (f'; sampled answers kept trimmed to their last sentence: {summary["kept_trimmed"]}'
              if summary.get('kept_trimmed') else '')]
  for source, by_decision in summary['per_source'].items():
    cells = '  '.join(f'{d} {c["kept"]}/{c["prompts"]}' for d, c in by_decision.items())
    lines.append(f'  {source:<14} kept/prompts  {cells}')
  if summary['skipped_no_answer']:
    lines.append(f'  comply prompts without an answer, not sampled (labels.comply_without_answer=skip): '
                 f'{summary["skipped_no_answer"]}')
  return lines
