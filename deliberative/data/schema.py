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
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from deliberative import spec as spec_lib

# One source of truth: the spec module's policy categories plus "none" (benign).
CATEGORIES = (*spec_lib.CATEGORIES, spec_lib.NO_CATEGORY)
DECISIONS = spec_lib.DECISIONS
ROLES = ("system", "user", "assistant")

# Fields with a meaning in the schema; anything else is an "extra" field.
CORE_FIELDS = ("id", "prompt", "messages", "category", "decision", "cot", "answer",
               "score", "spec_version", "source")


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


def is_trace(record: Mapping[str, Any]) -> bool:
  """True for a record with a completion (cot + answer), False for prompt-only."""
  return "answer" in record


def extra_fields(record: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in record.items() if k not in CORE_FIELDS}


def jsonl_files(path: str | os.PathLike) -> list[Path]:
  """The file itself, or every `*.jsonl` in a directory in sorted order."""
  path = Path(path)
  if path.is_dir():
    files = sorted(path.glob("*.jsonl"))
    if not files:
      raise SchemaError(f"{path}: no *.jsonl files in directory")
    return files
  if not path.exists():
    raise SchemaError(f"{path}: no such file or directory")
  return [path]


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
  """Validated records of one JSONL file; blank lines are skipped."""
  path = Path(path)
  seen_ids: dict[str, int] = {}
  with path.open(encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise SchemaError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
      record = validate_record(obj, where)
      if record["id"] in seen_ids:
        _fail(where, "id", f"duplicate id {record['id']!r} (first on line {seen_ids[record['id']]})")
      seen_ids[record["id"]] = line_no
      yield record


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """All records of a file, or of every `*.jsonl` in a directory (sorted by name)."""
  records = []
  for file in jsonl_files(path):
    records.extend(_read_nonempty(file))
  return records


def read_jsonl_splits(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
  """Records per split: one split per file, named by the file's stem."""
  splits = {}
  for file in jsonl_files(path):
    splits[file.stem] = _read_nonempty(file)
  return splits


def _read_nonempty(file: Path) -> list[dict[str, Any]]:
  records = list(iter_jsonl(file))
  if not records:
    raise SchemaError(f"{file}: empty (no records)")
  return records


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
  """Writes records one per line (UTF-8, non-ASCII kept readable)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
  return path
