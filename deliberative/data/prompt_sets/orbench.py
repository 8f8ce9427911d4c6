"""OR-Bench (OR-Bench-80k rows, as published in Overrefusal_in_Criminal_Legal_Context, data/
orbench_<category>200.csv): benign prompts that sound harmful. Only the English prompt
(text_en) and or_category are read; the other columns are translations and legal-prefix
experiments. A folder is read as all its *.csv files, in name order.

Label: or_category. Ids: the file's prompt_id (orbench_violence_001).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deliberative.data.prompt_sets.sources import Malformed, SourceRow, csv_rows, with_text_fields

NAME = 'orbench'
FILE_PATTERN = '*.csv'
COLUMNS = ('prompt_id', 'or_category', 'text_en')


def read(path: Path) -> Iterator[SourceRow | Malformed]:
  for item in with_text_fields(csv_rows(path, COLUMNS), COLUMNS):
    if isinstance(item, Malformed):
      yield item
      continue
    row, (prompt_id, category, text) = item
    yield SourceRow(prompt_id, text, category, row.where)
