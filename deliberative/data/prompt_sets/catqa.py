"""CategoricalHarmfulQA (declare-lab/red-instruct, harmful_questions/catqa_english.json): one JSON
document, {category: {subcategory: [question, ...]}}, 11 categories x 5 subcategories x 10.

Label: "Category / Subcategory", with the stray trailing colon of some published keys
("Drug:") dropped. Ids: catqa-CCSSQQ, the 1-based positions of category, subcategory and
question, stable as long as the file is. Each question's line is found by reading the
document's string tokens in order, since json.loads keeps no positions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from deliberative.data.prompt_sets.sources import Malformed, PromptSetError, SourceRow, read_text

NAME = 'catqa'
FILE_PATTERN = '*.json'

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _string_lines(text: str) -> Iterator[int]:
  """The line of every JSON string token, in document order (keys and values alike)."""
  line, last = 1, 0
  for match in _STRING.finditer(text):
    line += text.count('\n', last, match.start())
    last = match.start()
    yield line


def _no_duplicate_keys(pairs):
  keys = [k for k, _ in pairs]
  repeated = sorted({k for k in keys if keys.count(k) > 1})
  if repeated:
    raise ValueError(f'key {repeated[0]!r} appears twice in one object')
  return dict(pairs)


def read(path: Path) -> Iterator[SourceRow | Malformed]:
  text = read_text(path)
  try:
    document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
  except json.JSONDecodeError as e:
    raise PromptSetError(f'{path}:{e.lineno}: invalid JSON at column {e.colno}: {e.msg}') from None
  except ValueError as e:
    raise PromptSetError(f'{path}: {e}') from None
  if not isinstance(document, dict):
    raise PromptSetError(f'{path}:1: expected an object {{category: {{subcategory: [question, ...]}}}}')
  lines = _string_lines(text)
  for c, (category, subcategories) in enumerate(document.items(), start=1):
    category_line = next(lines)
    if not isinstance(subcategories, dict):
      raise PromptSetError(f'{path}:{category_line}: category {category!r}: expected an object of subcategories')
    for s, (subcategory, questions) in enumerate(subcategories.items(), start=1):
      subcategory_line = next(lines)
      if not isinstance(questions, list):
        raise PromptSetError(f'{path}:{subcategory_line}: {category!r} / {subcategory!r}: expected a list of questions')
      label = f'{category.strip()} / {subcategory.strip().rstrip(":").strip()}'
      for q, question in enumerate(questions, start=1):
        if not isinstance(question, str):
          # Only strings have tokens to count; anything else makes the later lines unknowable.
          raise PromptSetError(f'{path}:{subcategory_line}: {label}: question {q} is '
                               f'{type(question).__name__}, expected text')
        where = f'{path}:{next(lines)}'
        if not question.strip():
          yield Malformed(where, f'{label}: question {q} is empty')
          continue
        yield SourceRow(f'{c:02d}{s:02d}{q:02d}', question.strip(), label, where)
