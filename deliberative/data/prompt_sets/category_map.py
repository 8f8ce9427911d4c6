"""The table that maps each prompt set's own labels to the spec's (category, decision): data, not
code. Default: deliberative/assets/prompt_sets/category_map.csv.

Columns: set, label, category, decision, clause, note. One row per (set, label).

  mapped     category is one of the spec's categories, decision one of comply | refuse |
             safe_complete, and clause, where one clause governs all the label's rows, its id
             (checked against the spec: a clause of that category with that decision); left
             empty where the clause depends on the row (benign prompts: which allowed clause
             applies differs from prompt to prompt). Or category `none`, decision comply
             and no clause, for benign prompts that no category's policy is about.
  unmapped   category, decision and clause empty, and a note saying why: the label's rows
             are counted and listed by the import, never given a guessed category.

A label that the table does not name is unmapped too, and the report says it was missing
from the table rather than left out on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection
from pathlib import Path

from deliberative import spec as spec_lib
from deliberative.data.prompt_sets.sources import Malformed, PromptSetError, csv_rows, read_text

DEFAULT_PATH = Path(__file__).resolve().parents[2] / 'assets' / 'prompt_sets' / 'category_map.csv'
COLUMNS = ('set', 'label', 'category', 'decision', 'clause', 'note')


@dataclasses.dataclass(frozen=True)
class Target:
  category: str | None  # None: unmapped
  decision: str | None
  clause: str | None
  note: str
  where: str  # the table's file:line, or '' for a label the table does not name

  @property
  def mapped(self) -> bool:
    return self.category is not None


@dataclasses.dataclass(frozen=True)
class CategoryMap:
  path: Path
  version: str  # content hash, stamped on the import report
  rows: dict[tuple[str, str], Target]

  def lookup(self, set_name: str, label: str) -> Target:
    found = self.rows.get((set_name, label))
    if found is not None:
      return found
    return Target(None, None, None, 'not in the category map', '')

  def labels(self, set_name: str) -> list[str]:
    return [label for s, label in self.rows if s == set_name]


def _check_mapped(where: str, category: str, decision: str, clause: str, spec: spec_lib.Spec) -> None:
  if decision not in spec_lib.DECISIONS:
    raise PromptSetError(f'{where}: decision {decision!r}: expected one of {", ".join(spec_lib.DECISIONS)}')
  if category == spec_lib.NO_CATEGORY:
    if decision != 'comply' or clause:
      raise PromptSetError(f'{where}: category {category!r} is for benign prompts: decision comply and no clause')
    return
  if category not in spec.categories:
    raise PromptSetError(f'{where}: category {category!r}: expected one of {", ".join(spec.categories)} or '
                         f'{spec_lib.NO_CATEGORY!r}, or leave category, decision and clause empty for a label '
                         'that maps to none')
  governing = [c.id for c in spec.clauses_for(category, decision)]
  if not governing:
    raise PromptSetError(f'{where}: spec {spec.version} has no {decision} clause in category {category!r}')
  if clause and clause not in governing:
    raise PromptSetError(f'{where}: clause {clause!r} does not govern {category}/{decision} in spec '
                         f'{spec.version}; expected one of {", ".join(governing)}, or no clause')


def load(path: str | Path | None = None, *, spec: spec_lib.Spec | None = None,
         known_sets: Collection[str] = ()) -> CategoryMap:
  """The table at `path` (the packaged one by default), checked against `spec` and `known_sets`."""
  path = Path(path) if path is not None else DEFAULT_PATH
  spec = spec if spec is not None else spec_lib.Spec.load()
  rows: dict[tuple[str, str], Target] = {}
  for row in csv_rows(path, COLUMNS):
    if isinstance(row, Malformed):
      raise PromptSetError(f'{row.where}: {row.problem}; quote cells that hold commas')
    cell = {c: row.value[c].strip() for c in COLUMNS}
    set_name, label = cell['set'], cell['label']
    if not set_name or not label:
      raise PromptSetError(f'{row.where}: set and label must both be given')
    if known_sets and set_name not in known_sets:
      raise PromptSetError(f'{row.where}: unknown set {set_name!r}; known: {", ".join(known_sets)}')
    if (set_name, label) in rows:
      raise PromptSetError(f'{row.where}: ({set_name}, {label!r}) is already mapped at {rows[set_name, label].where}')
    target = (cell['category'], cell['decision'], cell['clause'])
    if any(target):
      if not cell['category'] or not cell['decision']:
        raise PromptSetError(f'{row.where}: give both category and decision, or neither (an unmapped label)')
      _check_mapped(row.where, *target, spec)
      rows[set_name, label] = Target(*(v or None for v in target), cell['note'], row.where)
    else:
      if not cell['note']:
        raise PromptSetError(f'{row.where}: an unmapped label needs a note saying why it maps to no category')
      rows[set_name, label] = Target(None, None, None, cell['note'], row.where)
  if not rows:
    raise PromptSetError(f'{path}: no rows after the header')
  version = hashlib.sha256(read_text(path).encode('utf-8')).hexdigest()[:12]
  return CategoryMap(path, version, rows)
