"""Self-Instruct's seed tasks (yizhongw/self-instruct, data/seed_tasks.jsonl): one JSON object a
line with id, name, instruction, instances [{input, output}], is_classification.

Each instance is one prompt: the instruction, then its input when it has one. Its output
is kept as `compliant_answer`. Every seed task carries the one label LABEL (the set has no
harm categories). Ids: the task id, with -N (1-based) when a task has several instances.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deliberative.data.prompt_sets.sources import Malformed, SourceRow, jsonl_rows, with_text_fields

NAME = 'self_instruct'
FILE_PATTERN = '*.jsonl'
LABEL = 'seed task'


def read(path: Path) -> Iterator[SourceRow | Malformed]:
  for item in with_text_fields(jsonl_rows(path), ('id', 'instruction')):
    if isinstance(item, Malformed):
      yield item
      continue
    row, (task_id, instruction) = item
    instances = row.value.get('instances')
    if not isinstance(instances, list) or not instances:
      yield Malformed(row.where, "field 'instances': expected a non-empty list of {input, output}")
      continue
    for k, instance in enumerate(instances, start=1):
      if not (isinstance(instance, dict) and isinstance(instance.get('input'), str)
              and isinstance(instance.get('output'), str)):
        yield Malformed(row.where, f"field 'instances': item {k}: expected text fields input and output")
        continue
      given = instance['input'].strip()
      prompt = f'{instruction}\n\n{given}' if given else instruction
      source_id = task_id if len(instances) == 1 else f'{task_id}-{k}'
      yield SourceRow(source_id, prompt, LABEL, row.where,
                      {'compliant_answer': instance['output'].strip(), 'task_name': str(row.value.get('name', ''))})
