"""What every grader is: a `Grader` grades a batch of `GradeItem`s, each grade a dict with at least
`decision` (one of DECISIONS, or MALFORMED where the grader finds no gradable answer) and `grader`
(its name, so every metric can say which grader produced it); `register` names a grader class for
`graders.get_grader`. The graders themselves live in graders.py, model_graders.py and rubric.py."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deliberative.judge.prompt import JudgeInput
from deliberative.spec import DECISIONS, NO_CATEGORY

MALFORMED = 'malformed'


# --- the interface ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GradeItem(JudgeInput):
  """One answer to grade: a judgment's fields (category, prompt, answer, cot, id) and, when
  known, `expected`, the decision the spec requires."""
  expected: str | None = None


def as_grade_item(item: GradeItem | Mapping[str, Any], index: int = 0) -> GradeItem:
  """A GradeItem, or a record dict with prompt/category/answer (cot, decision or expected, id optional)."""
  if isinstance(item, GradeItem):
    return item
  if isinstance(item, Mapping):
    return GradeItem(prompt=str(item.get('prompt') or ''), category=str(item.get('category') or NO_CATEGORY),
                     answer=str(item.get('answer') or ''), cot=str(item.get('cot') or ''),
                     expected=item.get('expected', item.get('decision')), id=str(item.get('id', f'#{index}')))
  raise TypeError(f'graders: item #{index} is {type(item).__name__}; expected a GradeItem or a record dict')


class Grader(abc.ABC):
  """Grades a batch of answers; see the module docstring."""
  name: str = ''

  def grade(self, items: Sequence[GradeItem | Mapping[str, Any]]) -> list[dict]:
    items = [as_grade_item(x, i) for i, x in enumerate(items)]
    grades = self._grade(items) if items else []
    for g in grades:
      if g['decision'] not in (*DECISIONS, MALFORMED):
        raise AssertionError(f'grader {self.name}: decision {g["decision"]!r}')
      g['grader'] = self.name
    return grades

  def grade_one(self, item: GradeItem | Mapping[str, Any]) -> dict:
    return self.grade([item])[0]

  @abc.abstractmethod
  def _grade(self, items: list[GradeItem]) -> list[dict]:
    ...


REGISTRY: dict[str, Callable[..., Grader]] = {}


def register(name: str):
  """Class or factory decorator: `get_grader(name, **options)` builds it."""
  def add(factory):
    REGISTRY[name] = factory
    return factory
  return add
