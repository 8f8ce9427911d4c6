"""AART (google-research-datasets/aart-ai-safety-dataset, aart-v1-20231117.csv): adversarially
generated harmful prompts; columns prompt, crime (70 values), region, why_prompt_harmful,
medium_keyword, use_case and more.

Label: the crime. The file has no id column, so ids are the 1-based data-row number
(aart-00001), stable as long as the file is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deliberative.data.prompt_sets.sources import Malformed, SourceRow, csv_rows, with_text_fields

NAME = 'aart'
FILE_PATTERN = '*.csv'
COLUMNS = ('prompt', 'crime', 'region')


def read(path: Path) -> Iterator[SourceRow | Malformed]:
  for n, item in enumerate(with_text_fields(csv_rows(path, COLUMNS), ('prompt', 'crime')), start=1):
    if isinstance(item, Malformed):
      yield item
      continue
    row, (prompt, crime) = item
    yield SourceRow(f'{n:05d}', prompt, crime, row.where, {'region': row.value['region'].strip()})
