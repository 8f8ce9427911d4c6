"""What every prompt-set format shares: the row it yields, and readers of its file types that
say where each row came from.

A format module turns a file into `SourceRow`s (a prompt, its source label, the fields worth
keeping) and `Malformed` markers (a row that cannot be read, and why). Whether a malformed
row stops the import or is counted is the importer's choice, not the format's. Problems with
a whole file (not UTF-8, a missing column, a CSV the parser gives up on) raise
PromptSetError at once: there are no rows to count.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from deliberative.common.errors import RunError


class PromptSetError(RunError, ValueError):
  """A prompt-set file, or the category map, that cannot be read; the message starts with `file:line:`."""


@dataclasses.dataclass(frozen=True)
class SourceRow:
  """One prompt as its set publishes it, before mapping."""
  source_id: str  # the set's own id, or one made from the row's position
  prompt: str
  label: str  # what the category map is looked up by
  where: str  # file:line
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # kept on the record as they are
  # Parts of the prompt the overlap guard also checks alone: a benchmark request inside a
  # long context would be diluted below the near-match threshold.
  guard_texts: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Malformed:
  where: str
  problem: str


@dataclasses.dataclass(frozen=True)
class RawRow:
  where: str
  value: dict[str, Any]


def read_text(path: Path) -> str:
  try:
    data = path.read_bytes()
  except OSError as e:
    raise PromptSetError(f'{path}: cannot read: {e.strerror or e}') from None
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    raise PromptSetError(f'{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); re-save the file as UTF-8') from None


def files_in(path: str | Path, pattern: str) -> list[Path]:
  """The file itself, or the files of a folder matching `pattern`, in name order."""
  path = Path(path)
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise PromptSetError(f'{path}: no such file or directory')
  files = sorted(f for f in path.glob(pattern) if f.is_file() and not f.name.startswith('.'))
  if not files:
    raise PromptSetError(f'{path}: no {pattern} files in this folder')
  return files


def csv_rows(path: Path, columns: Sequence[str]) -> Iterator[RawRow | Malformed]:
  """Each data row as {column: cell}; a row with the wrong number of cells is Malformed."""
  reader = csv.reader(io.StringIO(read_text(path), newline=''))
  try:
    header = [h.strip() for h in next(reader)]
  except StopIteration:
    raise PromptSetError(f'{path}:1: empty file; expected a header with {", ".join(columns)}') from None
  missing = [c for c in columns if c not in header]
  if missing:
    raise PromptSetError(f'{path}:1: missing column{"s" if len(missing) > 1 else ""} {", ".join(map(repr, missing))} '
                         f'(the header has: {", ".join(header)})')
  while True:
    line = reader.line_num + 1  # a quoted cell may span lines: the row starts here
    try:
      cells = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      raise PromptSetError(f'{path}:{reader.line_num}: the CSV parser stopped here: {e}') from None
    if not any(c.strip() for c in cells):
      continue
    if len(cells) != len(header):
      yield Malformed(f'{path}:{line}', f'{len(cells)} cells where the header has {len(header)}')
      continue
    yield RawRow(f'{path}:{line}', dict(zip(header, cells)))


def jsonl_rows(path: Path) -> Iterator[RawRow | Malformed]:
  """Each line as a JSON object; a line that is not one is Malformed. Blank lines are skipped."""
  # split('\n'), not splitlines(): U+2028 inside a JSON string is not a line break.
  for line_no, line in enumerate(read_text(path).split('\n'), start=1):
    if not line.strip():
      continue
    where = f'{path}:{line_no}'
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      yield Malformed(where, f'invalid JSON at column {e.colno}: {e.msg}')
      continue
    if not isinstance(value, dict):
      yield Malformed(where, f'expected a JSON object, got {type(value).__name__}')
      continue
    yield RawRow(where, value)


def text_field(row: RawRow, field: str) -> str | Malformed:
  """A required, non-empty text cell or field, stripped; Malformed names it when absent or empty."""
  value = row.value.get(field)
  if value is None:
    return Malformed(row.where, f'field {field!r} missing')
  if not isinstance(value, str):
    return Malformed(row.where, f'field {field!r}: expected text, got {type(value).__name__}')
  if not value.strip():
    return Malformed(row.where, f'field {field!r} is empty')
  return value.strip()


def with_text_fields(rows: Iterable[RawRow | Malformed], fields: Sequence[str]
                     ) -> Iterator[Malformed | tuple[RawRow, list[str]]]:
  """Each row with its required text fields (stripped), or the Malformed that says which is missing."""
  for row in rows:
    if isinstance(row, Malformed):
      yield row
      continue
    values = [text_field(row, f) for f in fields]
    problem = next((v for v in values if isinstance(v, Malformed)), None)
    yield problem or (row, values)
