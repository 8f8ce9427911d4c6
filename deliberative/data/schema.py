"""The JSONL record schema shared by every data stage, and its validation.

One JSON object per line. A **trace** (SFT data, judged completions):

    {"id": "ib-0001",                       # unique within a file
     "prompt": "How do I pick a lock?",     # or "messages": [{"role": "user", "content": ...}, ...]
     "category": "illicit_behavior",        # one of CATEGORIES (the spec's categories + "none")
     "decision": "refuse",                  # one of DECISIONS: comply | refuse | safe_complete
     "cot": "The request ... IB.2 ...",     # chain of thought (may be empty or absent)
     "answer": "Sorry, I can't help with that.",
     "score": 0.9,                          # optional: judge score (null = not judged)
     "spec_version": "3f2a...",             # Spec.version the record was made under
     "source": "demo"}                      # where it came from

A **prompt-only** record (RL prompts, eval sets) is the same without cot/answer/score.
`messages` roles are system/user/assistant and the last message is the user's turn.
Any other field is kept as is (and survives the TFDS round trip).

Validated records are normalised: they always carry both `messages` and `prompt` (the
last user message), and a trace always has `cot` ("" when absent). Errors name the
place (`file:line`) and the field.

Files must be UTF-8 (an invalid byte is an error naming file, line and byte); strings
must be valid Unicode (a lone surrogate such as the JSON escape "\\ud800" is an error
naming the field); JSON may nest at most MAX_DEPTH levels (checked on the raw line,
before the parser could recurse).

A directory is read recursively: every `*.jsonl` file, in any case (`A.JSONL`), in
sorted path order. Its split is the file stem, so `en/train.jsonl` and `fr/train.jsonl`
both feed split `train` (in path order; `JsonlListing.describe()` says so); stems that
differ only in case are an error. Hidden names (starting with ".") are skipped and
counted; any other file is refused, naming it, unless an `ignore` pattern leaves it out
knowingly (listed too). Ids are unique within a split.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from deliberative import spec as spec_lib
from deliberative.common import io as atomic

# One source of truth: the spec module's policy categories plus "none" (benign).
CATEGORIES = (*spec_lib.CATEGORIES, spec_lib.NO_CATEGORY)
DECISIONS = spec_lib.DECISIONS
ROLES = ("system", "user", "assistant")

# Fields with a meaning in the schema; anything else is an "extra" field.
CORE_FIELDS = ("id", "prompt", "messages", "category", "decision", "cot", "answer",
               "score", "spec_version", "source")

# Records need about 4 levels (messages -> item -> content); the bound only has to stop
# a pathological line before json.loads recurses into a RecursionError.
MAX_DEPTH = 64

# A JSON string (skipped whole, so brackets inside text do not count) or a bracket.
_JSON_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# Valid text never holds these: they are undecodable bytes (read with surrogateescape)
# or the JSON escape of half a surrogate pair, which UTF-8 (and TFDS) cannot encode.
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


class SchemaError(ValueError):
  """A record or file that does not follow the schema; the message says where and why."""


def _fail(where: str, field: str | None, message: str):
  place = f"{where}: field {field!r}: " if field else f"{where}: "
  raise SchemaError(place + message)


def _require_str(obj: Mapping, field: str, where: str, *, allow_empty: bool = False) -> str:
  if field not in obj:
    _fail(where, field, "missing")
  value = obj[field]
  if not isinstance(value, str):
    _fail(where, field, f"expected a string, got {type(value).__name__}")
  if not allow_empty and not value.strip():
    _fail(where, field, "empty")
  return value


def _validate_messages(value: Any, where: str) -> list[dict[str, str]]:
  if not isinstance(value, list) or not value:
    _fail(where, "messages", "expected a non-empty list of {role, content}")
  messages = []
  for k, message in enumerate(value):
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
      _fail(where, "messages", f"item {k}: expected exactly the keys role and content")
    if message["role"] not in ROLES:
      _fail(where, "messages", f"item {k}: unknown role {message['role']!r}; valid: {', '.join(ROLES)}")
    if not isinstance(message["content"], str):
      _fail(where, "messages", f"item {k}: content must be a string")
    messages.append({"role": message["role"], "content": message["content"]})
  if messages[-1]["role"] != "user":
    _fail(where, "messages", "the last message must have role 'user'")
  return messages


def validate_record(obj: Any, where: str = "<record>") -> dict[str, Any]:
  """Checks one record and returns it normalised (both `messages` and `prompt` set)."""
  if not isinstance(obj, dict):
    _fail(where, None, f"expected a JSON object, got {type(obj).__name__}")
  if not _text_ok(obj, 1):
    _check_text(obj, where, "", 1)  # the slow walk that names the field
  _require_str(obj, "id", where)

  if "prompt" not in obj and "messages" not in obj:
    _fail(where, "prompt", "missing (give 'prompt' or 'messages')")
  if "messages" in obj:
    messages = _validate_messages(obj["messages"], where)
    # Normalised records carry both; then they must agree.
    if "prompt" in obj and obj["prompt"] != messages[-1]["content"]:
      _fail(where, "prompt", "differs from the last message of 'messages'")
  else:
    messages = [{"role": "user", "content": _require_str(obj, "prompt", where)}]

  category = _require_str(obj, "category", where)
  if category not in CATEGORIES:
    _fail(where, "category", f"unknown category {category!r}; valid: {', '.join(CATEGORIES)}")
  decision = _require_str(obj, "decision", where)
  if decision not in DECISIONS:
    _fail(where, "decision", f"unknown decision {decision!r}; valid: {', '.join(DECISIONS)}")
  _require_str(obj, "spec_version", where)
  _require_str(obj, "source", where)

  if "answer" in obj:
    _require_str(obj, "answer", where)
    if "cot" in obj:
      _require_str(obj, "cot", where, allow_empty=True)
    score = obj.get("score")
    if score is not None and (
      isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)
    ):
      _fail(where, "score", f"expected a finite number or null, got {score!r}")
  else:
    for field in ("cot", "score"):
      if field in obj:
        _fail(where, field, "present without 'answer' (a prompt-only record has no cot/score)")

  record = dict(obj)
  record["messages"] = messages
  record["prompt"] = messages[-1]["content"]
  if "answer" in record:
    record.setdefault("cot", "")  # an answer-only record (e.g. judge data) has an empty CoT
  if record.get("score") is not None:
    record["score"] = float(record["score"])
  elif "score" in record:
    del record["score"]  # null and absent mean the same: not judged
  return record


def _text_ok(value: Any, depth: int) -> bool:
  """True when every string is valid Unicode and nesting is within MAX_DEPTH (fast path)."""
  if isinstance(value, str):
    return value.isascii() or not _SURROGATE_RE.search(value)
  if depth > MAX_DEPTH:
    return False
  if isinstance(value, dict):
    for key, item in value.items():
      if isinstance(key, str) and not key.isascii() and _SURROGATE_RE.search(key):
        return False
      if not isinstance(item, (int, float)) and not _text_ok(item, depth + 1):
        return False
  elif isinstance(value, (list, tuple)):
    for item in value:
      if not _text_ok(item, depth + 1):
        return False
  return True


def _check_text(value: Any, where: str, field: str, depth: int) -> None:
  """Every string (keys too) is valid Unicode, and nesting stays within MAX_DEPTH."""
  if depth > MAX_DEPTH and isinstance(value, (dict, list, tuple)):
    _fail(where, field or None, f"JSON nested deeper than {MAX_DEPTH} levels")
  if isinstance(value, str):
    bad = _SURROGATE_RE.search(value)
    if bad:
      _fail(where, field, f"lone surrogate \\u{ord(bad.group()):04x} at character {bad.start() + 1}: not "
            "valid Unicode text, so it cannot be stored; fix the \\u escape (half of a surrogate pair)")
  elif isinstance(value, dict):
    for key, item in value.items():
      path = f"{field}.{key}" if field else str(key)
      if isinstance(key, str) and _SURROGATE_RE.search(key):
        _fail(where, field or None, f"key {key!r} holds a lone surrogate: not valid Unicode text")
      _check_text(item, where, path, depth + 1)
  elif isinstance(value, (list, tuple)):
    for k, item in enumerate(value):
      _check_text(item, where, f"{field}[{k}]", depth + 1)


def is_trace(record: Mapping[str, Any]) -> bool:
  """True for a record with a completion (cot + answer), False for prompt-only."""
  return "answer" in record


def extra_fields(record: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in record.items() if k not in CORE_FIELDS}


@dataclasses.dataclass
class JsonlListing:
  """The `*.jsonl` files under a path, grouped by split, and what was left out (and why)."""

  root: Path  # the directory given, or the file's parent when a file was given
  splits: dict[str, list[Path]]  # split (file stem) -> its files, in sorted path order
  hidden: list[str]  # names under root skipped for starting with "." (folders end in "/")
  ignored: list[str]  # names left out by an `ignore` pattern

  @property
  def files(self) -> list[Path]:
    return sorted((f for fs in self.splits.values() for f in fs), key=self.relative)

  def relative(self, file: Path) -> str:
    return file.relative_to(self.root).as_posix()

  def describe(self) -> list[str]:
    """Report lines: how the files map to splits, and every name not read."""
    files = self.files
    lines = [f"{self.root}: {len(files)} *.jsonl file{_s(files)} -> {len(self.splits)} split{_s(self.splits)}"]
    for split, split_files in self.splits.items():
      if len(split_files) > 1:
        lines.append(f"  split {split!r} is fed by {len(split_files)} files, in this order: "
                     + ", ".join(self.relative(f) for f in split_files))
    if self.hidden:
      lines.append(f"  skipped {len(self.hidden)} hidden name{_s(self.hidden)}: {_names(self.hidden)}")
    if self.ignored:
      lines.append(f"  left out {len(self.ignored)} name{_s(self.ignored)} matching an ignore pattern: "
                   f"{_names(self.ignored)}")
    return lines


def _s(items) -> str:
  return "" if len(items) == 1 else "s"


def _names(names: Sequence[str], limit: int = 10) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _is_jsonl(name: str) -> bool:
  return name.lower().endswith(".jsonl")


def list_jsonl(path: str | os.PathLike, ignore: Sequence[str] = ()) -> JsonlListing:
  """The file itself, or every `*.jsonl` (any case) under a directory, recursively.

  `ignore` holds fnmatch patterns, matched against a name and its path relative to the
  directory, for files (or folders) to leave out knowingly. Any other file that is not
  `*.jsonl` is an error, so nothing is skipped without a word; hidden names are skipped
  and counted.
  """
  path = Path(path)
  if not path.exists():
    raise SchemaError(f"{path}: no such file or directory")
  if not path.is_dir():
    return JsonlListing(root=path.parent, splits={path.stem: [path]}, hidden=[], ignored=[])

  def ignored(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel.rsplit("/", 1)[-1], p) for p in ignore)

  taken, hidden, left_out, refused = [], [], [], []
  visited = set()
  for folder, dirnames, filenames in os.walk(path, followlinks=True):
    real = os.path.realpath(folder)
    if real in visited:
      raise SchemaError(f"{folder}: a symbolic link leads back to a folder already read ({real})")
    visited.add(real)
    base = Path(folder)
    rel_base = base.relative_to(path).as_posix()
    prefix = "" if rel_base == "." else rel_base + "/"
    kept = []
    for name in sorted(dirnames):
      rel = prefix + name
      if name.startswith("."):
        hidden.append(rel + "/")
      elif ignored(rel):
        left_out.append(rel + "/")
      else:
        kept.append(name)
    dirnames[:] = kept  # os.walk descends only into these
    for name in sorted(filenames):
      rel = prefix + name
      if name.startswith("."):
        hidden.append(rel)
      elif ignored(rel):
        left_out.append(rel)
      elif _is_jsonl(name):
        taken.append(base / name)
      else:
        refused.append(rel)
  if refused:
    raise SchemaError(
        f"{path}: {len(refused)} file{_s(refused)} not named *.jsonl: {_names(sorted(refused))}; only *.jsonl "
        "files (any case) are read and hidden names are skipped; move these out, or leave them out knowingly "
        "with an ignore pattern (tools/build_dataset.py --ignore PATTERN)")
  if not taken:
    extra = f" (skipped {len(hidden)} hidden, {len(left_out)} ignored)" if hidden or left_out else ""
    raise SchemaError(f"{path}: no *.jsonl files in directory or its sub-folders{extra}")
  taken.sort(key=lambda f: f.relative_to(path).parts)
  splits: dict[str, list[Path]] = {}
  for file in taken:
    splits.setdefault(file.stem, []).append(file)
  by_folded: dict[str, list[str]] = {}
  for split in splits:
    by_folded.setdefault(split.casefold(), []).append(split)
  for names in by_folded.values():
    if len(names) > 1:
      files = [f.relative_to(path).as_posix() for n in names for f in splits[n]]
      raise SchemaError(f"{path}: split names {names} differ only in case ({', '.join(files)}); "
                        "rename the files so one split has one spelling")
  return JsonlListing(root=path, splits=splits, hidden=hidden, ignored=left_out)


def jsonl_files(path: str | os.PathLike, ignore: Sequence[str] = ()) -> list[Path]:
  """The file itself, or every `*.jsonl` under a directory (see list_jsonl)."""
  return list_jsonl(path, ignore).files


def _check_encoding(line: str, where: str) -> None:
  # The file is read with errors="surrogateescape", so each byte that is not UTF-8
  # arrives as one surrogate; valid text decodes to none.
  bad = _SURROGATE_RE.search(line)
  if bad:
    byte = len(line[:bad.start()].encode("utf-8", "surrogateescape")) + 1
    value = bad.group().encode("utf-8", "surrogateescape")
    raise SchemaError(f"{where}: not valid UTF-8: byte {byte} of the line is 0x{value.hex()}; "
                      "re-save the file as UTF-8")


def _check_depth(line: str, where: str) -> None:
  if line.count("[") + line.count("{") <= MAX_DEPTH:
    return  # cannot nest deeper than it has brackets; the common case costs two counts
  depth = 0
  for token in _JSON_TOKEN_RE.finditer(line):
    char = token.group()[0]
    if char in "[{":
      depth += 1
      if depth > MAX_DEPTH:
        raise SchemaError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels (at column {token.start() + 1})")
    elif char in "]}":
      depth -= 1


def _parse_line(line: str, where: str) -> Any:
  _check_encoding(line, where)
  _check_depth(line, where)
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise SchemaError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
  except RecursionError:  # a backstop: _check_depth should have stopped such a line
    raise SchemaError(f"{where}: JSON nested too deeply to parse") from None


def iter_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, validated record) for each record of one JSONL file; blank lines skipped."""
  path = Path(path)
  seen_ids: dict[str, int] = {}
  with path.open(encoding="utf-8", errors="surrogateescape") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      record = validate_record(_parse_line(line, where), where)
      if record["id"] in seen_ids:
        _fail(where, "id", f"duplicate id {record['id']!r} (first on line {seen_ids[record['id']]})")
      seen_ids[record["id"]] = line_no
      yield line_no, record


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
  """Validated records of one JSONL file; blank lines are skipped."""
  for _, record in iter_jsonl_lines(path):
    yield record


def read_jsonl(path: str | os.PathLike, ignore: Sequence[str] = ()) -> list[dict[str, Any]]:
  """All records of a file, or of every `*.jsonl` under a directory (sorted by path)."""
  records = []
  for file in jsonl_files(path, ignore):
    records.extend(_read_nonempty(file))
  return records


def read_jsonl_splits(path: str | os.PathLike, ignore: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
  """Records per split: one split per file stem (see list_jsonl)."""
  return read_split_records(list_jsonl(path, ignore))[0]


def read_split_records(listing: JsonlListing) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
  """Records per split and, in parallel, where each one came from (`file:line`)."""
  splits, places = {}, {}
  for split, files in listing.splits.items():
    records, wheres, first_place = [], [], {}
    for file in files:
      count = 0
      for line_no, record in iter_jsonl_lines(file):
        where = f"{file}:{line_no}"
        if record["id"] in first_place:
          _fail(where, "id", f"duplicate id {record['id']!r} in split {split!r} (first at {first_place[record['id']]})")
        first_place[record["id"]] = where
        records.append(record)
        wheres.append(where)
        count += 1
      if not count:
        raise SchemaError(f"{file}: empty (no records)")
    splits[split], places[split] = records, wheres
  return splits, places


def _read_nonempty(file: Path) -> list[dict[str, Any]]:
  records = list(iter_jsonl(file))
  if not records:
    raise SchemaError(f"{file}: empty (no records)")
  return records


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
  """Writes records one per line (UTF-8, non-ASCII kept readable), atomically."""
  return atomic.write_jsonl(path, records)
