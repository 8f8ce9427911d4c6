"""CoCoNot's preference set (allenai/noncompliance, data/coconot_pref.jsonl): one JSON object a
line with id, category, subcategory, prompt, chosen (a compliant answer), chosen_model,
rejected (a refusing answer), rejected_model.

Label: "category / subcategory". The compliant and the refusing answer are kept on the
record as `compliant_answer` and `refusing_answer` (with the models that wrote them): a
later stage can train on the first and teach a judge that the second over-refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deliberative.data.prompt_sets.sources import Malformed, SourceRow, jsonl_rows, with_text_fields

NAME = 'coconot'
FILE_PATTERN = '*.jsonl'
_REQUIRED = ('id', 'category', 'subcategory', 'prompt', 'chosen', 'rejected')


def read(path: Path) -> Iterator[SourceRow | Malformed]:
  for item in with_text_fields(jsonl_rows(path), _REQUIRED):
    if isinstance(item, Malformed):
      yield item
      continue
    row, (row_id, category, subcategory, prompt, chosen, rejected) = item
    fields = {'compliant_answer': chosen, 'compliant_answer_model': str(row.value.get('chosen_model', '')),
              'refusing_answer': rejected, 'refusing_answer_model': str(row.value.get('rejected_model', ''))}
    yield SourceRow(row_id, prompt, f'{category} / {subcategory}', row.where, fields)
