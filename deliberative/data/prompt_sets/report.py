"""The import report: what was read, kept, left unmapped, dropped as a benchmark overlap, or found
malformed, per set; as JSON (every row listed) and as markdown (counts, labels, overlaps)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from deliberative.data.prompt_sets.importer import SetImport

BUCKETS = ('read', 'kept', 'unmapped', 'overlapping', 'malformed')


def _counts(result: SetImport) -> dict[str, int]:
  return {'read': result.read, 'kept': len(result.kept), 'unmapped': len(result.unmapped),
          'overlapping': len(result.overlapping), 'malformed': len(result.malformed)}


def _unmapped_labels(result: SetImport) -> dict[str, dict[str, Any]]:
  counts = Counter(row['label'] for row in result.unmapped)
  reasons = {row['label']: row['reason'] for row in result.unmapped}
  return {label: {'rows': n, 'reason': reasons[label]} for label, n in sorted(counts.items())}


def build(results: Sequence[SetImport], *, spec_version: str, category_map: dict[str, str],
          benchmarks: dict[str, dict[str, Any]], near_threshold: float) -> dict[str, Any]:
  sets = {}
  for result in results:
    sets[result.name] = {
        'files': result.files, **_counts(result),
        'kept_by_category_decision': {f'{c}/{d}': n for (c, d), n in sorted(result.kept_by_cell().items())},
        'unmapped_labels': _unmapped_labels(result),
        'unmapped_rows': [{k: row[k] for k in ('id', 'where', 'label')} for row in result.unmapped],
        'overlapping_rows': result.overlapping,
        'malformed_rows': result.malformed,
    }
  totals = {b: sum(s[b] for s in sets.values()) for b in BUCKETS}
  return {'spec_version': spec_version, 'category_map': category_map, 'near_threshold': near_threshold,
          'benchmarks': benchmarks, 'totals': totals, 'sets': sets}


def _cell(text: str, limit: int = 90) -> str:
  text = ' '.join(text.split()).replace('|', '\\|')
  return text if len(text) <= limit else text[:limit - 1] + '…'


def markdown(report: dict[str, Any]) -> str:
  lines = ['# Prompt-set import', '',
           f'Spec {report["spec_version"]}; category map {report["category_map"]["path"]} '
           f'({report["category_map"]["version"]}); near-match threshold (Jaccard of word sets) '
           f'{report["near_threshold"]}.', '',
           'Held-out benchmarks checked: ' + ', '.join(f'{name} ({b["prompts"]} prompts, {b["path"]})'
                                                      for name, b in report['benchmarks'].items()) + '.', '',
           '| set | ' + ' | '.join(BUCKETS) + ' |', '|---|' + '---:|' * len(BUCKETS)]
  for name, s in report['sets'].items():
    lines.append(f'| {name} | ' + ' | '.join(str(s[b]) for b in BUCKETS) + ' |')
  lines.append('| **all** | ' + ' | '.join(f'**{report["totals"][b]}**' for b in BUCKETS) + ' |')

  cells = sorted({cell for s in report['sets'].values() for cell in s['kept_by_category_decision']})
  lines += ['', '## Kept, per spec category and decision', '',
            '| category/decision | ' + ' | '.join(report['sets']) + ' | all |', '|---|' + '---:|' * (len(report['sets']) + 1)]
  for cell in cells:
    per_set = [s['kept_by_category_decision'].get(cell, 0) for s in report['sets'].values()]
    lines.append(f'| {cell} | ' + ' | '.join(map(str, per_set)) + f' | {sum(per_set)} |')

  lines += ['', '## Unmapped source labels (rows counted, not guessed)', '']
  for name, s in report['sets'].items():
    for label, info in s['unmapped_labels'].items():
      lines.append(f'- {name}: "{label}" — {info["rows"]} rows ({info["reason"]})')
  if not any(s['unmapped_labels'] for s in report['sets'].values()):
    lines.append('None.')

  lines += ['', '## Dropped: overlaps with the held-out benchmarks', '']
  overlaps = [(name, row) for name, s in report['sets'].items() for row in s['overlapping_rows']]
  if overlaps:
    lines += ['| row | kind | score | benchmark item | row prompt | benchmark prompt |', '|---|---|---:|---|---|---|']
    lines += [f'| {row["id"]} | {row["kind"]} | {row["score"]:.2f} | {row["benchmark_id"]} | {_cell(row["prompt"])} | '
              f'{_cell(row["benchmark_prompt"])} |' for _, row in overlaps]
  else:
    lines.append('None.')

  lines += ['', '## Malformed rows', '']
  malformed = [(name, row) for name, s in report['sets'].items() for row in s['malformed_rows']]
  lines += [f'- {row["where"]}: {row["problem"]}' for _, row in malformed] or ['None.']
  return '\n'.join(lines) + '\n'
