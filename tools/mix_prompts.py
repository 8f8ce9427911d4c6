"""A training mix of imported prompt sets: each set capped, drawn evenly over its own labels.

    python tools/import_prompts.py ... --out /tmp/prompts            # docs/data.md has the command
    python tools/mix_prompts.py --prompts /tmp/prompts --caps aart=600,catqa=300,harmbench=150,orbench=300 \
        --out /tmp/mix
    python -m deliberative.generate --config configs/generate.py:source=labels --config.prompts.jsonl=/tmp/mix \
        --config.labels.ignore='mix_report.*' --workdir runs/label_traces

The imports hold 3,465 harmful prompts against 1,654 benign ones; trained on as they are, a model
learns that most requests are refused. A set named in --caps keeps at most that many rows, drawn
round-robin from a seeded order over the spec categories its rows map to, then the set's own labels
within each category (`--balance source_label`: over the set's labels alone, the draw before
2026-12-07); other sets are taken whole. Writes OUT/<set>.jsonl and OUT/mix_report.json (available, kept and left out per set, and
decisions), and prints the same. A bad cap or an unknown set name is an error before anything is
written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deliberative.common import cli  # noqa: E402
from deliberative.data.prompt_sets import mix  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--prompts', required=True, help="tools/import_prompts.py's --out folder")
  parser.add_argument('--caps', default='', help='SET=N,...: at most N rows of SET (other sets whole)')
  parser.add_argument('--out', required=True, help='folder for <set>.jsonl and mix_report.json')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--balance', default='category', choices=mix.BALANCES,
                      help="what a capped set is drawn evenly over (deliberative/data/prompt_sets/mix.py)")
  parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
  return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
  caps = mix.parse_caps(args.caps)
  drawn = mix.draw(mix.read_imports(args.prompts), caps, seed=args.seed, balance=args.balance)
  report = drawn.write(args.out)
  for name, cell in report['per_set'].items():
    print(f'{name:<14} available {cell["available"]:>5}  kept {cell["kept"]:>5}  left out {cell["left_out"]:>5}  '
          f'{cell["decisions"]}')
  print(f'all            kept {report["kept"]:>5}  {report["decisions"]}')
  print('categories     ' + ', '.join(f'{k} {v}' for k, v in report['categories'].items()))
  print(f'wrote {args.out}/*.jsonl and {mix.REPORT}')
  return 0


def main(argv=None) -> int:
  return cli.run_guarded(run, parse_args(argv), status=1)


if __name__ == '__main__':
  sys.exit(main())
