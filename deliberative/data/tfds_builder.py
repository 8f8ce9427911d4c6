"""JSONL records -> a versioned TFDS dataset in array_record format, read back without TF.

  version_dir = build_dataset("my_traces/", data_dir="/data", name="my_traces")
  source = open_source(version_dir, "train")    # random access to decoded examples
  record = record_from_example(source[0])        # back to the schema's record dict

One split per JSONL file stem; a directory is read recursively, and how its files map
to splits (and what was skipped) is in schema.list_jsonl. Files are validated (schema.py)
before anything is written. A build goes to a temporary directory under `data_dir` and is
renamed into place, so a reader never sees a half-written dataset and concurrent
builders cannot corrupt one.

Prompts shared between splits are checked before a build: a prompt in both a training
split and an evaluation split is an error (evaluation would partly measure memory)
unless `allow_split_overlap`, which reports it as a warning instead. An evaluation split
is one whose name has a word (split on "_") in EVAL_WORDS: `eval`, `eval_jailbreak`,
`judge_eval`, `test`, `validation`; every other split (`train`, `rl`, `judge_train`)
counts as training. Two prompts are the same when their non-system turns match, case
and whitespace folded. Repeats within one split are counted in the report, not refused.

Only array_record + `as_data_source` are used: `tfds.load`, tfrecord and tf.data would
import TensorFlow, which this project does not install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from deliberative.data import schema

log = logging.getLogger(__name__)

FORMAT_VERSION = "1.0.0"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")
EVAL_WORDS = frozenset({"eval", "evaluation", "test", "validation", "valid", "val", "dev", "heldout"})


def _text():
  return tfds.features.Text()


# Strings are Text features so the dataset is readable by any TFDS tool. `score` is its
# JSON text ("" = not judged) because TFDS stores floats as float32, which would change
# a score like 0.7; fields outside the schema travel as one JSON object in `extra`.
FEATURES = {
  "id": _text,
  "messages": lambda: tfds.features.Sequence({"role": _text(), "content": _text()}),
  "category": _text,
  "decision": _text,
  "has_completion": lambda: tfds.features.Scalar(dtype=np.bool_),
  "cot": _text,
  "answer": _text,
  "score": _text,
  "spec_version": _text,
  "source": _text,
  "extra": _text,
}


def features_dict() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({name: make() for name, make in FEATURES.items()})


def example_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """A validated record as a TFDS example."""
  has_completion = schema.is_trace(record)
  score = record.get("score")
  return {
    "id": record["id"],
    "messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]],
    "category": record["category"],
    "decision": record["decision"],
    "has_completion": has_completion,
    "cot": record.get("cot", ""),
    "answer": record.get("answer", ""),
    "score": "" if score is None else json.dumps(float(score)),
    "spec_version": record["spec_version"],
    "source": record["source"],
    "extra": json.dumps(schema.extra_fields(record), ensure_ascii=False, sort_keys=True),
  }


def _str(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_from_example(example: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of example_from_record, for a decoded example from a TFDS data source."""
  messages = [
    {"role": _str(role), "content": _str(content)}
    for role, content in zip(example["messages"]["role"], example["messages"]["content"])
  ]
  record = json.loads(_str(example["extra"]))
  record.update(
    id=_str(example["id"]),
    messages=messages,
    prompt=messages[-1]["content"],
    category=_str(example["category"]),
    decision=_str(example["decision"]),
    spec_version=_str(example["spec_version"]),
    source=_str(example["source"]),
  )
  if bool(example["has_completion"]):
    record["cot"] = _str(example["cot"])
    record["answer"] = _str(example["answer"])
    if _str(example["score"]):
      record["score"] = float(_str(example["score"]))
  return record


class JsonlRecords(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds one split per file stem of the `*.jsonl` files under `jsonl_path` (a file or a directory).

  Use `builder_class(name)` to get a builder with a dataset name of your choice.
  """

  name = "jsonl_records"
  VERSION = tfds.core.Version(FORMAT_VERSION)
  RELEASE_NOTES = {"1.0.0": "Trace / prompt records with messages, completion and extras."}
  # TFDS 4.9.10 derives code_path for a builder inside a package through the
  # `importlib_resources` backport, which is not installed; pinning it here skips that.
  code_path = epath.Path(__file__)

  def __init__(self, *, jsonl_path=None, splits: Mapping[str, list] | None = None,
               metadata: Mapping[str, Any] | None = None, **kwargs):
    self._jsonl_path = jsonl_path
    self._splits = splits  # already validated records per split, if the caller has them
    self._user_metadata = dict(metadata or {})
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="Deliberative-alignment records (schema: deliberative/data/schema.py).",
      features=features_dict(),
      metadata=tfds.core.MetadataDict(self._user_metadata),
      # Keep file order: index i of a split is line i of its file. Shuffling is the
      # input pipeline's job, seeded and restorable.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    splits = self._splits
    if splits is None:
      if self._jsonl_path is None:
        raise ValueError(f"{type(self).__name__}: no jsonl_path to build from")
      splits = read_validated_splits(self._jsonl_path)
    return {split: self._generate_examples(records) for split, records in splits.items()}

  def _generate_examples(self, records):
    for index, record in enumerate(records):
      yield index, example_from_record(record)


@functools.cache
def check_name(name: str) -> str:
  """`name`, if it can be a dataset's name and directory (no path separators, no `..`)."""
  if not _NAME_RE.match(name):
    raise ValueError(f"dataset name {name!r}: must be lower_snake_case (a letter, then letters, digits or _)")
  return name


def builder_class(name: str) -> type[JsonlRecords]:
  """A JsonlRecords subclass whose dataset name (and directory) is `name`."""
  check_name(name)
  if name == JsonlRecords.name:
    return JsonlRecords
  class_name = "JsonlRecords_" + name
  return types.new_class(
    class_name, (JsonlRecords,), {"skip_registration": True},
    lambda ns: ns.update(name=name, __module__=__name__),
  )


@dataclasses.dataclass
class ValidatedInput:
  """Validated records per split, and report lines about them (repeats, allowed overlap)."""

  splits: dict[str, list[dict[str, Any]]]
  notes: list[str]


def is_eval_split(split: str) -> bool:
  return not EVAL_WORDS.isdisjoint(split.lower().split("_"))


def prompt_key(record: Mapping[str, Any]) -> str:
  """What makes two prompts the same: the non-system turns, case and whitespace folded.

  Whole conversations, not only the last user turn, so that two dialogues ending in the
  same short reply ("yes, go on") are not taken for one prompt.
  """
  turns = (m["content"] for m in record["messages"] if m["role"] != "system")
  return "\n".join(" ".join(t.split()).casefold() for t in turns)


def _listing(jsonl_path, ignore: Sequence[str]) -> schema.JsonlListing:
  if isinstance(jsonl_path, schema.JsonlListing):
    return jsonl_path
  return schema.list_jsonl(jsonl_path, ignore)


def read_input(jsonl_path, *, ignore: Sequence[str] = (), allow_split_overlap: bool = False) -> ValidatedInput:
  """Reads and validates every split; checks split names and prompts shared across splits.

  `jsonl_path` is a file, a directory or a schema.JsonlListing.
  """
  listing = _listing(jsonl_path, ignore)
  for split, files in listing.splits.items():
    if not _SPLIT_RE.match(split):
      raise schema.SchemaError(
        f"{files[0]}: file stem {split!r} is not a valid split name ({_SPLIT_RE.pattern}); rename the file"
      )
  splits, places = schema.read_split_records(listing)
  total = sum(len(records) for records in splits.values())
  notes = [f"read {total} record{'' if total == 1 else 's'} from {len(listing.files)} file(s)"]
  notes += _overlap_notes(listing.root, splits, places, allow_split_overlap)
  return ValidatedInput(splits, notes)


def read_validated_splits(jsonl_path, **kwargs) -> dict[str, list[dict[str, Any]]]:
  return read_input(jsonl_path, **kwargs).splits


def _overlap_notes(root, splits, places, allow_split_overlap: bool) -> list[str]:
  """Counts repeats within each split; raises on train/eval overlap unless allowed."""
  notes, first_place = [], {}
  for split, records in splits.items():
    first, repeats = {}, 0
    for record, place in zip(records, places[split]):
      key = prompt_key(record)
      if key in first:
        repeats += 1
      else:
        first[key] = place
    first_place[split] = first
    if repeats:
      notes.append(f"split {split!r}: {repeats} of {len(records)} records repeat a prompt of the same split (kept)")
  pairs, examples, shared_total = [], [], 0
  for train in (s for s in splits if not is_eval_split(s)):
    for evaluation in (s for s in splits if is_eval_split(s)):
      shared = [k for k in first_place[evaluation] if k in first_place[train]]
      if not shared:
        continue
      shared_total += len(shared)
      pairs.append(f"{len(shared)} in {train!r} and {evaluation!r}")
      examples += [f"{first_place[evaluation][k]} = {first_place[train][k]} ({k[:50]!r})" for k in shared[:3]]
  if not shared_total:
    return notes
  summary = (f"{shared_total} prompt{' appears' if shared_total == 1 else 's appear'} in both a training and an "
             f"evaluation split ({'; '.join(pairs)}), so evaluation would partly measure memory; "
             f"e.g. {'; '.join(examples[:5])}")
  if not allow_split_overlap:
    raise schema.SchemaError(
        f"{root}: {summary}. Remove them from one side, or pass --allow_split_overlap "
        f"(allow_split_overlap=True) to build anyway. Evaluation splits are those with a word in "
        f"{sorted(EVAL_WORDS)} (split on '_'); every other split counts as training.")
  notes.append(f"warning: {summary} (allowed by allow_split_overlap)")
  return notes


def fingerprint(jsonl_path, ignore: Sequence[str] = ()) -> str:
  """Content hash of the JSONL input (file paths + bytes), to tell builds apart."""
  listing = _listing(jsonl_path, ignore)
  digest = hashlib.sha256()
  for file in listing.files:
    # A path relative to the input root (the bare name at top level, as before
    # recursion), so a moved input directory still matches its build.
    digest.update(listing.relative(file).encode() + b"\0" + file.read_bytes() + b"\0")
  return digest.hexdigest()[:16]


def _log_note(line: str) -> None:
  (log.warning if line.startswith("warning") else log.info)("%s", line)


def version_dir(data_dir, name: str) -> Path:
  return Path(data_dir) / name / FORMAT_VERSION


def read_metadata(dataset_dir) -> dict[str, Any] | None:
  """The metadata a built dataset was stamped with, or None if there is no dataset."""
  dataset_dir = Path(dataset_dir)
  if not (dataset_dir / "dataset_info.json").exists():
    return None
  metadata_file = dataset_dir / "metadata.json"
  return json.loads(metadata_file.read_text()) if metadata_file.exists() else {}


def build_dataset(
  jsonl_path,
  data_dir,
  name: str = "traces",
  *,
  metadata: Mapping[str, Any] | None = None,
  overwrite: bool = False,
  ignore: Sequence[str] = (),
  allow_split_overlap: bool = False,
  echo: Callable[[str], None] | None = None,
) -> Path:
  """Builds (or reuses) dataset `name` from JSONL; returns its version directory.

  An existing build of the same content (same fingerprint and metadata) is reused. A
  different one raises unless `overwrite`, which replaces it atomically. `ignore`
  (fnmatch patterns) leaves files out of a directory knowingly; `allow_split_overlap`
  turns shared train/eval prompts from an error into a warning. Report lines (files
  per split, skipped names, repeats, warnings) go to `echo`, or to this module's log.
  """
  echo = echo or _log_note
  check_name(name)  # "../escaped" once reached the file system as a raw ENOENT
  listing = _listing(jsonl_path, ignore)
  for line in listing.describe():
    echo(line)
  stamp = {"fingerprint": fingerprint(listing), **dict(metadata or {})}
  target = version_dir(data_dir, name)
  existing = read_metadata(target)
  if existing is not None and _same_stamp(existing, stamp):
    echo(f"{target}: already built from this input; reused")
    return target
  if existing is not None and not overwrite:
    raise FileExistsError(
      f"{target} holds a different build of {name!r} ({existing} != {stamp}); "
      "pass overwrite=True / --overwrite, or choose another name"
    )
  # Fail on bad input before writing anything.
  validated = read_input(listing, allow_split_overlap=allow_split_overlap)
  for line in validated.notes:
    echo(line)
  splits = validated.splits
  stamp["spec_versions"] = sorted({r["spec_version"] for rs in splits.values() for r in rs})

  data_dir = Path(data_dir)
  data_dir.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f".building-{name}-", dir=data_dir))
  try:
    builder = builder_class(name)(
        jsonl_path=jsonl_path, splits=splits, metadata=stamp, data_dir=staging, file_format="array_record")
    tfds.display_progress_bar(False)
    # TFDS prints banners naming the staging path, which would only confuse; callers
    # report the final location and counts instead.
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_dir=staging / "downloads",
          download_config=tfds.download.DownloadConfig(try_download_gcs=False),
      )
    _move_into_place(Path(builder.data_dir), target, staging, overwrite, stamp)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target


def _same_stamp(existing: Mapping[str, Any], stamp: Mapping[str, Any]) -> bool:
  return all(existing.get(k) == v for k, v in stamp.items())


def _move_into_place(built: Path, target: Path, staging: Path, overwrite: bool, stamp) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  existing = read_metadata(target)
  if existing is not None and _same_stamp(existing, stamp):
    return  # another process (e.g. another host on a shared disk) built the same data meanwhile
  if target.exists() and overwrite:
    # Move the old build aside first so the final rename is a single step.
    os.rename(target, staging / "replaced")
  try:
    os.rename(built, target)
  except OSError:
    # Another process finished the same build first: keep theirs if it matches.
    existing = read_metadata(target)
    if existing is None or not _same_stamp(existing, stamp):
      raise


def open_builder(dataset_dir) -> tfds.core.DatasetBuilder:
  """A read-only builder for a built version directory (no builder code needed)."""
  dataset_dir = Path(dataset_dir)
  if not (dataset_dir / "dataset_info.json").exists():
    raise FileNotFoundError(f"{dataset_dir}: not a built TFDS dataset (no dataset_info.json)")
  return tfds.builder_from_directory(os.fspath(dataset_dir))


def open_source(dataset_dir, split: str) -> Sequence[Mapping[str, Any]]:
  """Random-access TFDS data source of one split (decoded examples, not records)."""
  builder = open_builder(dataset_dir)
  if split not in builder.info.splits:
    raise KeyError(f"{dataset_dir}: no split {split!r}; splits: {sorted(builder.info.splits)}")
  return builder.as_data_source(split=split)


def split_counts(dataset_dir) -> dict[str, int]:
  builder = open_builder(dataset_dir)
  return {name: info.num_examples for name, info in builder.info.splits.items()}
