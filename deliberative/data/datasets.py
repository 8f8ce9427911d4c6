"""Where datasets live, and the demo dataset that a fresh clone builds on first use.

    data_dir = default_data_dir()                 # $DELIBERATIVE_DATA_DIR or ~/.cache/deliberative/data
    version_dir = ensure_demo_dataset(data_dir)   # generates + builds once, then reuses
    version_dir = resolve_dataset(data_dir, "my_traces")

The demo build is stamped with the spec version and the demo generator's version; a
stale build (spec or generator changed) is rebuilt and atomically replaced.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deliberative.data import tfds_builder

DEMO_DATASET = "deliberative_demo"
DATA_DIR_ENV = "DELIBERATIVE_DATA_DIR"


def default_data_dir() -> Path:
  return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "deliberative" / "data")


def demo_generator_version() -> str:
  """Hash of the demo generator's sources (every module of the deliberative/data/demo/ package).

  Any edit to the generator therefore rebuilds the demo dataset; a GENERATOR_VERSION
  declared in demo/__init__.py (if any) is recorded alongside for readability.
  """
  from deliberative.data import demo  # late import: only the demo needs it

  digest = hashlib.sha256()
  for path in sorted(Path(demo.__file__).parent.glob("*.py")):
    digest.update(path.name.encode() + b"\0" + path.read_bytes())
  declared = getattr(demo, "GENERATOR_VERSION", None)
  return f"{declared}+{digest.hexdigest()[:12]}" if declared is not None else digest.hexdigest()[:12]


def demo_stamp(seed: int = 0, sizes: Mapping[str, int] | None = None) -> dict[str, Any]:
  """What a demo build depends on: spec version, generator version, seed and sizes."""
  from deliberative import spec as spec_lib

  return {
      "spec_version": spec_lib.Spec.load().version,
      "generator_version": demo_generator_version(),
      "demo_seed": seed,
      "demo_sizes": dict(sorted((sizes or {}).items())),
  }


def ensure_demo_dataset(data_dir=None, seed: int = 0, sizes: Mapping[str, int] | None = None) -> Path:
  """The demo dataset's version directory under `data_dir`, generated and built if needed.

  `sizes` overrides the demo's default split sizes (tests use small ones).
  """
  data_dir = Path(data_dir) if data_dir else default_data_dir()
  stamp = demo_stamp(seed, sizes)
  target = tfds_builder.version_dir(data_dir, DEMO_DATASET)
  existing = tfds_builder.read_metadata(target)
  if existing is not None and all(existing.get(k) == v for k, v in stamp.items()):
    return target

  from deliberative.data import demo

  data_dir.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=".demo-jsonl-", dir=data_dir) as jsonl_dir:
    demo.write_jsonl(jsonl_dir, seed=seed, sizes=sizes)
    # The generator's manifest.json sits beside the splits; its facts are in the stamp.
    return tfds_builder.build_dataset(jsonl_dir, data_dir, DEMO_DATASET, metadata=stamp, overwrite=True,
                                      ignore=("manifest.json",))


def resolve_dataset(data_dir, dataset: str) -> Path:
  """Version directory of `dataset`: a name under `data_dir`, or a path to a built dataset.

  The demo dataset is built on first use; any other name must have been built with
  `tools/build_dataset.py`.
  """
  data_dir = Path(data_dir) if data_dir else default_data_dir()
  as_path = Path(dataset)
  if (as_path / "dataset_info.json").exists():
    return as_path
  if dataset == DEMO_DATASET:
    return ensure_demo_dataset(data_dir)
  target = tfds_builder.version_dir(data_dir, dataset)
  if tfds_builder.read_metadata(target) is None:
    raise FileNotFoundError(
        f"dataset {dataset!r} not found at {target}; build it with "
        f"`python tools/build_dataset.py --jsonl FILE_OR_DIR --data_dir {data_dir} --name {dataset}`"
    )
  return target
