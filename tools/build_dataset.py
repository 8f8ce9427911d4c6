"""Builds a TFDS (array_record) dataset from your JSONL files; one split per file stem.

    python tools/build_dataset.py --jsonl my_traces/ --data_dir ~/.cache/deliberative/data --name my_traces
    python tools/build_dataset.py --demo            # the demo dataset (normally built on first use)

A directory is read recursively: every `*.jsonl` (any case); files with the same stem in
different folders feed one split, and the report says so. Hidden names are skipped and
counted; any other file is refused by name unless `--ignore PATTERN` leaves it out.

Every line is validated first (schema: deliberative/data/schema.py); an error names the
file, the line and the field (invalid UTF-8, lone surrogates and JSON nested too deeply
included). A prompt in both a training split and an evaluation split (`eval*`, `test`,
`validation`, ...) is an error unless `--allow_split_overlap`. Prints what was read and
skipped, then the record count per split. Training then reads it with
`--config.data.dataset=my_traces` (and `--config.data.data_dir=...` if not the default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deliberative.data import datasets, schema, tfds_builder  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--jsonl", help="a .jsonl file or a directory of them")
  source.add_argument("--demo", action="store_true", help="generate and build the demo dataset")
  parser.add_argument("--data_dir", default=None, help=f"default: ${datasets.DATA_DIR_ENV} or ~/.cache/deliberative/data")
  parser.add_argument("--name", default="traces", help="dataset name (lower_snake_case)")
  parser.add_argument("--overwrite", action="store_true", help="replace a different existing build")
  parser.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                      help="leave out files or folders matching this fnmatch pattern (repeatable; reported)")
  parser.add_argument("--allow_split_overlap", action="store_true",
                      help="build even when training and evaluation splits share prompts (reported as a warning)")
  args = parser.parse_args(argv)
  try:
    tfds_builder.check_name(args.name)
  except ValueError as e:
    parser.error(f"--name: {e}")

  data_dir = Path(args.data_dir) if args.data_dir else datasets.default_data_dir()
  start = time.perf_counter()
  try:
    if args.demo:
      version_dir = datasets.ensure_demo_dataset(data_dir)
    else:
      version_dir = tfds_builder.build_dataset(
          args.jsonl, data_dir, args.name, overwrite=args.overwrite, ignore=args.ignore,
          allow_split_overlap=args.allow_split_overlap, echo=print)
  except (schema.SchemaError, FileExistsError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  seconds = time.perf_counter() - start
  counts = tfds_builder.split_counts(version_dir)
  print(f"{version_dir} ({seconds:.1f}s)")
  for split, count in sorted(counts.items()):
    print(f"  {split:<20} {count:>7} records")
  metadata = tfds_builder.read_metadata(version_dir) or {}
  print("  " + ", ".join(f"{k}={v}" for k, v in sorted(metadata.items())))
  return 0


if __name__ == "__main__":
  sys.exit(main())
