"""Public prompt sets -> records of the project's schema, each row accounted for.

Every row read ends in exactly one bucket, so the counts add up (read = malformed +
overlapping + unmapped + kept):

  malformed    the row cannot be read (a missing or empty field, a bad JSON line, a CSV row
               with the wrong number of cells); an error naming file and line unless
               `skip_malformed`, then counted and listed
  overlapping  it repeats a held-out benchmark prompt (overlap.py), mapped or not
  unmapped     its source label maps to no spec category (category_map.py)
  kept         a prompt-only record: id, prompt, category, decision, clause_ids (the
               table's governing clause, where it names one), spec_version, source (the
               set), source_label, source_where, and the format's own fields

Nothing is written here; `import_sets` returns the records and the accounting, and the
caller writes them only once every set has been read.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deliberative.data import schema
from deliberative.data.prompt_sets import category_map as category_map_lib, registry
from deliberative.data.prompt_sets.overlap import OverlapGuard
from deliberative.data.prompt_sets.sources import Malformed, PromptSetError, SourceRow
from deliberative.spec import Spec


@dataclasses.dataclass
class SetImport:
  """One set's records and the account of every row it read."""
  name: str
  files: list[str]
  kept: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  unmapped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  overlapping: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  malformed: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def read(self) -> int:
    return len(self.kept) + len(self.unmapped) + len(self.overlapping) + len(self.malformed)

  def kept_by_cell(self) -> Counter:
    return Counter((r['category'], r['decision']) for r in self.kept)


def _short_where(where: str) -> str:
  """file:line with the file's name only: records should not carry this machine's paths."""
  path, _, line = where.rpartition(':')
  return f'{Path(path).name}:{line}'


def _record(set_name: str, row: SourceRow, target: category_map_lib.Target, spec_version: str) -> dict[str, Any]:
  record = {'id': f'{set_name}-{row.source_id}', 'prompt': row.prompt, 'category': target.category,
            'decision': target.decision, 'clause_ids': [target.clause] if target.clause else [],
            'spec_version': spec_version, 'source': set_name, 'source_label': row.label,
            'source_where': _short_where(row.where)}
  record.update(row.fields)
  return record


def import_set(name: str, path: str | Path, *, table: category_map_lib.CategoryMap, guard: OverlapGuard,
               spec: Spec, skip_malformed: bool = False) -> SetImport:
  files, rows = registry.read_set(name, path)
  result = SetImport(name, [str(f) for f in files])
  first_seen: dict[str, str] = {}

  def malformed(where: str, problem: str) -> None:
    if not skip_malformed:
      raise PromptSetError(f'{where}: {problem} (--skip_malformed counts and lists such rows instead)')
    result.malformed.append({'where': where, 'problem': problem})

  for row in rows:
    if isinstance(row, Malformed):
      malformed(row.where, row.problem)
      continue
    record_id = f'{name}-{row.source_id}'
    if record_id in first_seen:
      malformed(row.where, f'id {record_id!r} repeats the row at {first_seen[record_id]}')
      continue
    first_seen[record_id] = row.where
    entry = {'id': record_id, 'where': row.where, 'label': row.label, 'prompt': row.prompt}
    overlap = next(filter(None, map(guard.check, (row.prompt, *row.guard_texts))), None)
    if overlap is not None:
      result.overlapping.append({**entry, **overlap.as_dict()})
      continue
    target = table.lookup(name, row.label)
    if not target.mapped:
      result.unmapped.append({**entry, 'reason': target.note})
      continue
    record = _record(name, row, target, spec.version)
    try:
      schema.validate_record(record, row.where)
    except schema.SchemaError as e:
      malformed(row.where, str(e).removeprefix(f'{row.where}: '))
      continue
    result.kept.append(record)
  return result


def import_sets(sets: Sequence[tuple[str, str]], *, table: category_map_lib.CategoryMap, guard: OverlapGuard,
                spec: Spec, skip_malformed: bool = False) -> list[SetImport]:
  """Every (name, path) read in full; a name twice, or no sets, is an error."""
  if not sets:
    raise PromptSetError('no prompt sets given (--set NAME=PATH)')
  names = [name for name, _ in sets]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise PromptSetError(f'set {repeated[0]!r} given twice; give a folder to read several files of one set')
  return [import_set(name, path, table=table, guard=guard, spec=spec, skip_malformed=skip_malformed)
          for name, path in sets]
