"""Labelled prompts for the label-as-judge stage 1: tools/import_prompts.py's output (or any JSONL of
prompt records with category and decision), each checked against the spec, with `file:line`.

The label must be one the spec can write a trace from: the category's policy has a list for the
decision (category 'none' only complies), the record's `clause_ids` (the import table's governing
clause) are clauses of that category and list, and the record was labelled under this spec's
version (clause ids mean nothing under another). Anything else stops the run naming the file,
the line and the field: a trace written from a wrong label would teach the wrong clause.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from deliberative.data import schema
from deliberative.common.errors import RunError
from deliberative.spec import NO_CATEGORY, Clause, Spec


class LabelError(RunError, ValueError):
  """A labelled prompt a trace cannot be written from; the message starts with `file:line:`."""


@dataclasses.dataclass
class LabelledPrompts:
  records: list[dict[str, Any]]  # in file order, ids unique
  where: dict[str, str]  # id -> file:line
  skipped: Counter  # source set -> comply records without an answer, left out (labels.comply_without_answer=skip)
  skipped_ids: list[str]
  read: int


def dataset_answer(record: dict[str, Any]) -> str:
  """The compliant answer the prompt set ships (CoCoNot's `chosen`, Self-Instruct's output), or ''."""
  answer = record.get('compliant_answer')
  return answer.strip() if isinstance(answer, str) else ''


def needs_sampling(record: dict[str, Any]) -> bool:
  """A comply record (or a regulated-advice safe completion, which needs information to wrap)
  whose set ships no answer: only the generator can supply one."""
  informs = record['decision'] == 'comply' or (record['decision'] == 'safe_complete'
                                               and record['category'] == 'regulated_advice')
  return informs and not dataset_answer(record)


def check_label(record: dict[str, Any], spec: Spec, where: str) -> None:
  category, decision = record['category'], record['decision']
  if record['spec_version'] != spec.version:
    raise LabelError(f"{where}: field 'spec_version': labelled under spec {record['spec_version']}, this run "
                     f'has spec {spec.version} (config.spec); re-import the prompts under this spec')
  ids = record.get('clause_ids', [])
  if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
    raise LabelError(f"{where}: field 'clause_ids': expected a list of clause ids, got {ids!r}")
  if category == NO_CATEGORY:
    if decision != 'comply' or ids:
      raise LabelError(f"{where}: category 'none' with decision {decision!r} and clause_ids {ids}: no clause "
                       "governs a request outside every category, so the only label is comply with no clause")
    return
  if decision not in spec.category(category).decisions:
    raise LabelError(f"{where}: field 'decision': {decision!r} is not a list of category {category!r} in spec "
                     f'{spec.version} (it has {", ".join(spec.category(category).decisions)})')
  for clause_id in ids:
    clause = spec.clause(clause_id) if clause_id in spec.ids else None
    if not isinstance(clause, Clause) or clause.category != category or clause.decision != decision:
      raise LabelError(f"{where}: field 'clause_ids': {clause_id!r} is not a {decision} clause of category "
                       f'{category!r} in spec {spec.version}')


def read(prompts_cfg, labels_cfg, spec: Spec) -> LabelledPrompts:
  """config.prompts.jsonl (a file, or a folder read as tools/build_dataset.py reads it, with
  labels.ignore left out), the first labels.per_file of each file, prompts.categories, then the
  first prompts.num_prompts; comply records without an answer left out when
  labels.comply_without_answer is 'skip' (counted per set)."""
  if not prompts_cfg.jsonl:
    raise LabelError('config.prompts.jsonl is empty: give the labelled prompts (tools/import_prompts.py --out DIR)')
  if labels_cfg.comply_without_answer not in ('sample', 'skip'):
    raise LabelError(f'config.labels.comply_without_answer={labels_cfg.comply_without_answer!r}: expected sample or skip')
  wanted = [c.strip() for c in prompts_cfg.categories.split(',') if c.strip()]
  unknown = [c for c in wanted if c not in schema.CATEGORIES]
  if unknown:
    raise LabelError(f'config.prompts.categories: unknown {unknown}; valid: {", ".join(schema.CATEGORIES)}')
  ignore = [p.strip() for p in labels_cfg.ignore.split(',') if p.strip()]
  records, where, read_count = [], {}, 0
  for file in schema.jsonl_files(prompts_cfg.jsonl, ignore):
    taken = 0
    for line_no, record in schema.iter_jsonl_lines(file):
      if labels_cfg.per_file and taken >= labels_cfg.per_file:
        break
      here = f'{file}:{line_no}'
      if schema.is_trace(record):
        raise LabelError(f"{here}: field 'answer': a trace, not a prompt record; the label-as-judge stage writes "
                         'the CoT and answer itself')
      if record['id'] in where:
        raise LabelError(f'{here}: id {record["id"]!r} also at {where[record["id"]]}; ids key the resumable shards')
      check_label(record, spec, here)
      read_count += 1
      taken += 1
      if wanted and record['category'] not in wanted:
        continue
      where[record['id']] = here
      records.append(record)
  if prompts_cfg.num_prompts:
    records = records[:prompts_cfg.num_prompts]
  skipped, skipped_ids = Counter(), []
  if labels_cfg.comply_without_answer == 'skip':
    kept = []
    for r in records:
      if needs_sampling(r):
        skipped[r['source']] += 1
        skipped_ids.append(r['id'])
      else:
        kept.append(r)
    records = kept
  if not records and not skipped:
    raise LabelError(f'{prompts_cfg.jsonl}: no prompts (config.prompts: categories={prompts_cfg.categories!r}, '
                     f'num_prompts={prompts_cfg.num_prompts}; labels.per_file={labels_cfg.per_file})')
  return LabelledPrompts(records, {r['id']: where[r['id']] for r in records}, skipped, skipped_ids, read_count)
