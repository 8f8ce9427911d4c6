"""HarmBench's behaviours (harmbench_behaviors_text_all.csv): columns Behavior, FunctionalCategory
(standard | contextual | copyright), SemanticCategory, Tags, ContextString, BehaviorID.

Label: the SemanticCategory (copyright rows have SemanticCategory "copyright"). A contextual
behaviour is asked about its context, so its prompt is the ContextString, a separator and
the behaviour, the layout HarmBench itself uses for these rows; the context and the bare
behaviour are also kept as fields, and the overlap guard checks the bare behaviour too. A
contextual row without a ContextString is malformed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deliberative.data.prompt_sets.sources import Malformed, SourceRow, csv_rows, with_text_fields

NAME = 'harmbench'
FILE_PATTERN = '*.csv'
COLUMNS = ('Behavior', 'FunctionalCategory', 'SemanticCategory', 'ContextString', 'BehaviorID')
FUNCTIONAL_CATEGORIES = ('standard', 'contextual', 'copyright')
CONTEXT_SEPARATOR = '\n\n---\n\n'


def read(path: Path) -> Iterator[SourceRow | Malformed]:
  for item in with_text_fields(csv_rows(path, COLUMNS), ('Behavior', 'FunctionalCategory', 'SemanticCategory',
                                                         'BehaviorID')):
    if isinstance(item, Malformed):
      yield item
      continue
    row, (behavior, functional, semantic, behavior_id) = item
    if functional not in FUNCTIONAL_CATEGORIES:
      yield Malformed(row.where, f'FunctionalCategory {functional!r}: expected one of {", ".join(FUNCTIONAL_CATEGORIES)}')
      continue
    fields = {'behavior_id': behavior_id, 'functional_category': functional}
    if functional == 'contextual':
      context = row.value['ContextString'].strip()
      if not context:
        yield Malformed(row.where, 'a contextual behaviour without its ContextString')
        continue
      fields.update(context=context, behavior=behavior)
      yield SourceRow(behavior_id, context + CONTEXT_SEPARATOR + behavior, semantic, row.where, fields, (behavior,))
    else:
      yield SourceRow(behavior_id, behavior, semantic, row.where, fields)
