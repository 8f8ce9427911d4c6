"""The prompt-set formats by name: what `--set NAME=PATH` accepts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from deliberative.data.prompt_sets import aart, catqa, coconot, harmbench, orbench, self_instruct
from deliberative.data.prompt_sets.sources import Malformed, PromptSetError, SourceRow, files_in

FORMATS: dict[str, ModuleType] = {m.NAME: m for m in (catqa, harmbench, aart, orbench, coconot, self_instruct)}


def format_for(name: str) -> ModuleType:
  try:
    return FORMATS[name]
  except KeyError:
    raise PromptSetError(f'unknown prompt set {name!r}; known: {", ".join(FORMATS)}') from None


def read_set(name: str, path: str | Path) -> tuple[list[Path], Iterator[SourceRow | Malformed]]:
  """The files a set is read from (a file, or a folder's files of the format's pattern) and its rows."""
  module = format_for(name)
  files = files_in(path, module.FILE_PATTERN)

  def rows():
    for file in files:
      yield from module.read(file)
  return files, rows()
