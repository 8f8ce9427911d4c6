"""Imports public prompt sets into the project's JSONL schema, guarded against the held-out benchmarks.

    D=deliberative/assets/prompt_sets B=../shared/benchmarks
    python tools/import_prompts.py \
        --set catqa=$D/catqa/catqa_english.json --set harmbench=$D/harmbench/harmbench_behaviors_text_all.csv \
        --set aart=$D/aart/aart-v1-20231117.csv --set orbench=$D/orbench --set coconot=$D/coconot/coconot_pref.jsonl \
        --set self_instruct=$D/self_instruct/seed_tasks.jsonl \
        --benchmark xstest=$B/xstest/xstest_prompts.csv \
        --benchmark strongreject=$B/strongreject/strongreject_dataset_313.csv \
        --benchmark advbench=$B/advbench/harmful_behaviors.csv --out /tmp/prompts

Sets: catqa, harmbench, aart, orbench, coconot, self_instruct (formats: deliberative/data/prompt_sets/;
a folder PATH is read as all its files of the set's type). Each source label is mapped to a spec
(category, decision) by the table deliberative/assets/prompt_sets/category_map.csv (--category_map);
labels that map to no category are counted and listed, never guessed. Every row is checked against
every --benchmark (xstest, strongreject, advbench; read as the evaluation reads them): an exact
match after normalising, or a near one (Jaccard of word sets >= --near_threshold) is dropped.

Writes, once every file has been read without error: OUT/<set>.jsonl (prompt-only records),
OUT/import_report.json (every unmapped, overlapping and malformed row listed) and
OUT/import_report.md. A malformed row stops the import, naming file and line, unless
--skip_malformed; then it is counted and listed. Build a training dataset from OUT with
tools/build_dataset.py --jsonl OUT --ignore 'import_report.*'. The sets named above are vendored
(with their licences and provenance) under deliberative/assets/prompt_sets/; docs/data.md has the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deliberative.common import cli, io as common_io  # noqa: E402
from deliberative.data.prompt_sets import category_map, importer, overlap, registry, report  # noqa: E402
from deliberative.evals import held_out  # noqa: E402
from deliberative.spec import Spec  # noqa: E402

REPORT_NAME = 'import_report'
REPO = Path(__file__).resolve().parents[1]


def _pair(flag: str):
  def parse(text: str) -> tuple[str, str]:
    name, sep, path = text.partition('=')
    if not sep or not name.strip() or not path.strip():
      raise argparse.ArgumentTypeError(f'{flag} expects NAME=PATH, got {text!r}')
    return name.strip(), path.strip()
  return parse


def _threshold(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected a number in (0, 1], got {text!r}') from None
  if not 0 < value <= 1:
    raise argparse.ArgumentTypeError(f'expected a number in (0, 1], got {value}')
  return value


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--set', dest='sets', action='append', default=[], type=_pair('--set'), metavar='NAME=PATH',
                      help=f'a prompt set to import (repeatable); NAME one of {", ".join(registry.FORMATS)}')
  parser.add_argument('--benchmark', dest='benchmarks', action='append', default=[], type=_pair('--benchmark'),
                      metavar='NAME=PATH', help='a held-out benchmark file to guard against (repeatable); NAME one '
                      f'of {", ".join(held_out.BENCHMARK_READERS)}')
  parser.add_argument('--out', required=True, help='folder for <set>.jsonl and the import report')
  parser.add_argument('--category_map', default=None, help=f'the mapping table (default: {category_map.DEFAULT_PATH})')
  parser.add_argument('--spec', default=None, help='the spec file the table is checked against (default: packaged)')
  parser.add_argument('--near_threshold', type=_threshold, default=overlap.DEFAULT_NEAR_THRESHOLD,
                      help='Jaccard similarity of word sets at or above which a row is a near copy of a benchmark '
                      f'prompt (default {overlap.DEFAULT_NEAR_THRESHOLD})')
  parser.add_argument('--no_overlap_check', action='store_true',
                      help='import without any --benchmark (the report records that nothing was checked): for '
                      'plumbing runs that have no benchmark files; never for data a reported evaluation trains on')
  parser.add_argument('--skip_malformed', action='store_true',
                      help='count and list malformed rows instead of stopping at the first')
  parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
  return parser.parse_args(argv)


def _shown(path: Path) -> str:
  """A path inside the repository relative to it, so reports read the same on every clone."""
  path = path.resolve()
  return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _jsonl(records) -> str:
  return ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in records)


def run(args: argparse.Namespace) -> int:
  if not args.benchmarks and not args.no_overlap_check:
    raise ValueError('no --benchmark given: the import must be checked against the held-out benchmarks the '
                     f'evaluation uses ({", ".join(held_out.BENCHMARK_READERS)}); --no_overlap_check imports '
                     'unchecked, for plumbing runs only')
  if args.benchmarks and args.no_overlap_check:
    raise ValueError('--no_overlap_check with --benchmark: choose one')
  if not args.benchmarks:
    print('warning: --no_overlap_check: no held-out benchmark is checked; do not report evaluations of models '
          'trained on this import', file=sys.stderr)
  spec = Spec.load(args.spec)
  table = category_map.load(args.category_map, spec=spec, known_sets=registry.FORMATS)
  benchmark_prompts = held_out.read_benchmarks(args.benchmarks)
  guard = overlap.OverlapGuard(benchmark_prompts, args.near_threshold)
  results = importer.import_sets(args.sets, table=table, guard=guard, spec=spec,
                                 skip_malformed=args.skip_malformed)
  benchmarks = {name: {'path': _shown(Path(path)), 'prompts': sum(p.benchmark == name for p in benchmark_prompts)}
                for name, path in args.benchmarks}
  built = report.build(results, spec_version=spec.version, near_threshold=args.near_threshold,
                       category_map={'path': _shown(table.path), 'version': table.version}, benchmarks=benchmarks)

  out = Path(args.out)
  written = []
  for result in results:
    path = out / f'{result.name}.jsonl'
    common_io.write_text(path, _jsonl(result.kept))
    written.append(path.name)
  common_io.write_text(out / f'{REPORT_NAME}.json', json.dumps(built, indent=1, ensure_ascii=False) + '\n')
  common_io.write_text(out / f'{REPORT_NAME}.md', report.markdown(built))

  for name, s in built['sets'].items():
    print(f'{name:<14} ' + '  '.join(f'{b} {s[b]:>5}' for b in report.BUCKETS))
  print(f'{"all":<14} ' + '  '.join(f'{b} {built["totals"][b]:>5}' for b in report.BUCKETS))
  stale = sorted(p.name for p in out.glob('*.jsonl') if p.name not in written)
  if stale:
    print(f'note: {out} also holds {", ".join(stale)}, not written by this import', file=sys.stderr)
  print(f'wrote {out}/{{{",".join(written)}}} and {REPORT_NAME}.json/.md')
  return 0


def main(argv=None) -> int:
  args = parse_args(argv)
  return cli.run_guarded(run, args, status=1)


if __name__ == '__main__':
  sys.exit(main())
