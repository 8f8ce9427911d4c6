"""OR-Bench (OR-Bench-80k rows, as published in Overrefusal_in_Criminal_Legal_Context, data/
orbench_<category>200.csv): benign prompts that sound harmful. Only the English prompt
(text_en) and or_category are read; the other columns are translations and legal-prefix
experiments. A folder is read as all its *.csv files, in name order.

Label: or_category. Ids: the file's prompt_id (orbench_violence_001).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deliberative.data.prompt_sets.sources import Malformed, SourceRow, csv_rows, first_problem, text_field

NAME = 'orbench'
FILE_PATTERN = '*.csv'
COLUMNS = ('prompt_id', 'or_category', 'text_en')


def read(path: Path) -> Iterator[SourceRow | Malformed]:
  for row in csv_rows(path, COLUMNS):
    if isinstance(row, Malformed):
      yield row
      continue
    prompt_id, category, text = (text_field(row, c) for c in COLUMNS)
    problem = first_problem(prompt_id, category, text)
    if problem:
      yield problem
      continue
    yield SourceRow(prompt_id, text, category, row.where)
