"""A training mix of imported prompts: at most N per set, drawn evenly over the spec's categories.

The imports are lopsided (AART alone holds 2,853 harmful prompts; the benign sets 1,654 in all),
and a model fine-tuned on them as they are learns that most requests are refused. A mix caps each
set (`caps`, e.g. {'aart': 600}) and draws the cap round-robin in a seeded order, so that every
category stays represented; a set without a cap is taken whole. The rows left out are counted per
set, never silently dropped: `Mix.report()` says what was kept.

What "evenly" is over (`balance`):
- 'category' (the default): the spec category each row maps to, then, within a category, the set's
  own `source_label`s. A CoT must name the governing category, so the mix balances what it names.
- 'source_label': the set's own labels alone (the draw before 2026-12-07). AART has 62 labels, 35
  of them crimes, so this mix was 62% illicit_behavior among its refusals, and the model trained on
  it cited IB.5 for nearly every refusal (docs/results.md).

  records = mix.read_imports('runs/prompts')
  m = mix.draw(records, caps={'aart': 600, 'catqa': 300}, seed=0)
  m.write('runs/mix')          # one <set>.jsonl per set, and mix_report.json
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deliberative.common import io as common_io
from deliberative.data import schema

REPORT = 'mix_report.json'
BALANCES = ('category', 'source_label')


def read_imports(folder: str | Path) -> dict[str, list[dict[str, Any]]]:
  """tools/import_prompts.py's output: set name -> its records, in file order."""
  folder = Path(folder)
  files = sorted(p for p in folder.glob('*.jsonl'))
  if not files:
    raise schema.SchemaError(f'{folder}: no *.jsonl files (expected tools/import_prompts.py --out)')
  return {p.stem: list(schema.iter_jsonl(p)) for p in files}


def parse_caps(text: str) -> dict[str, int]:
  """'aart=600,catqa=300' -> {'aart': 600, 'catqa': 300}; a cap is an integer >= 0 (0 leaves the set out)."""
  caps = {}
  for part in filter(None, (p.strip() for p in text.split(','))):
    name, sep, value = part.partition('=')
    if not sep or not value.strip().isdigit():
      raise ValueError(f'mix cap {part!r}: expected SET=N with N >= 0')
    caps[name.strip()] = int(value)
  return caps


@dataclasses.dataclass
class Mix:
  records: dict[str, list[dict[str, Any]]]
  available: dict[str, int]
  caps: dict[str, int]
  seed: int
  balance: str = 'category'

  def report(self) -> dict[str, Any]:
    per_set = {}
    for name, rows in self.records.items():
      per_set[name] = dict(available=self.available[name], kept=len(rows), left_out=self.available[name] - len(rows),
                           cap=self.caps.get(name), decisions=dict(sorted(Counter(r['decision'] for r in rows).items())))
    decisions = Counter(r['decision'] for rows in self.records.values() for r in rows)
    categories = Counter((r['decision'], _category(r)) for rows in self.records.values() for r in rows)
    return dict(seed=self.seed, caps=self.caps, balance=self.balance, per_set=per_set,
                categories={f'{d}/{c}': n for (d, c), n in sorted(categories.items())}, kept=sum(decisions.values()),
                decisions=dict(sorted(decisions.items())))

  def write(self, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in self.records.items():
      if rows:  # a set capped at 0 is left out (and counted in the report), not written empty
        common_io.write_jsonl(out / f'{name}.jsonl', rows, sort_keys=True)
    report = self.report()
    common_io.write_json(out / REPORT, report)
    return report


def _round_robin(queues: list[list[Any]], n: int) -> list[Any]:
  """Up to n items, one from each non-empty queue in turn (popped from its end): a queue shorter
  than its share leaves its remainder to the others."""
  chosen: list[Any] = []
  while len(chosen) < n and any(queues):
    for q in queues:
      if q and len(chosen) < n:
        chosen.append(q.pop())
  return chosen


def _shuffled_groups(indices: Sequence[int], key, rng: random.Random) -> list[list[int]]:
  groups: dict[str, list[int]] = defaultdict(list)
  for i in indices:
    groups[key(i)].append(i)
  out = []
  for name in sorted(groups):
    rng.shuffle(groups[name])
    out.append(groups[name])
  return out


def _category(record: dict[str, Any]) -> str:
  return str(record.get('category', ''))


def _even_draw(rows: Sequence[dict[str, Any]], n: int, rng: random.Random, balance: str) -> list[dict[str, Any]]:
  """n rows taken round-robin over `balance` (see the module docstring), in the input's order."""
  label = lambda i: str(rows[i].get('source_label', ''))  # noqa: E731
  if balance == 'source_label':
    chosen = _round_robin(_shuffled_groups(range(len(rows)), label, rng), n)
  else:
    # The category groups' own shuffle is undone by the label groups' below; it stays because it
    # advances the seeded stream, and the category mixes measured on 2026-12-07 redraw only with it.
    by_category = _shuffled_groups(range(len(rows)), lambda i: _category(rows[i]), rng)
    # Each category's own queue interleaves its source labels, so that within a category every
    # harm type keeps its turn as well.
    queues = [_round_robin(_shuffled_groups(idx, label, rng), len(idx))[::-1] for idx in by_category]
    chosen = _round_robin(queues, n)
  return [rows[i] for i in sorted(chosen)]


def draw(records: Mapping[str, Sequence[dict[str, Any]]], caps: Mapping[str, int], seed: int = 0,
         balance: str = 'category') -> Mix:
  if balance not in BALANCES:
    raise ValueError(f'mix balance {balance!r}: choose from {", ".join(BALANCES)}')
  unknown = sorted(set(caps) - set(records))
  if unknown:
    raise ValueError(f'mix caps name sets that were not imported: {", ".join(unknown)} '
                     f'(imported: {", ".join(sorted(records))})')
  kept = {}
  for name in sorted(records):
    rows = list(records[name])
    cap = caps.get(name)
    # One stream per set: changing one set's cap leaves the other sets' draws as they were.
    rng = random.Random(f'{seed}:{name}')
    kept[name] = rows if cap is None or cap >= len(rows) else _even_draw(rows, cap, rng, balance)
  return Mix(kept, {n: len(r) for n, r in records.items()}, dict(caps), seed, balance)


def load_report(folder: str | Path) -> dict[str, Any]:
  with open(Path(folder) / REPORT) as f:
    return json.load(f)
