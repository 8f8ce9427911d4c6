"""The stage-1 system prompt: spec(category) and the instruction to reason over it before answering.

The paper's G_base sees the spec in its system prompt and is asked to recall the relevant parts in
its chain of thought, cite them, and then answer; the spec is stripped before the record is stored,
so the trained model has to recall it (context distillation).
"""

from __future__ import annotations

from deliberative.inference.policy import spec_prompt
from deliberative.spec import NO_CATEGORY, Spec

THINK_OPEN, THINK_CLOSE = '<think>', '</think>'


def instruction(spec: Spec, category: str, think_tags: bool) -> str:
  """What to do with the spec. Ids to cite are taken from the spec itself, so a model sees the
  citation form it is graded on (evals/citations.py: ids like `IB.2` in the CoT)."""
  if category != NO_CATEGORY and category in spec.categories:
    example = spec.category(category).clauses[0].id
    cite = (f'Name the clauses of the spec that apply by their ids (for example {example}), decide whether '
            'the spec says to comply, refuse or give a safe completion, and which style guideline applies.')
  else:
    cite = ('No content policy covers this request: say so, cite no category clause, and plan a helpful '
            'answer that follows the principles.')
  where = (f'Write your reasoning between {THINK_OPEN} and {THINK_CLOSE}, then the final answer after '
           f'{THINK_CLOSE}.' if think_tags else 'Reason first in your chain of thought, then give the final answer.')
  return ('Before answering, think about the safety spec above in your chain of thought. ' + cite + ' ' + where +
          ' The final answer is for the user: follow the decision and style you chose, and do not quote the spec '
          'or mention clause ids in it.')


def system_prompt(spec: Spec, category: str, think_tags: bool = False) -> str:
  """spec(category) (inference.spec_prompt: the whole spec for an unknown category) + the instruction."""
  return spec_prompt(spec, category) + '\n' + instruction(spec, category, think_tags)


def split_think(text: str) -> tuple[str, str, bool]:
  """(cot, answer, well_formed) of text whose reasoning is inside <think>...</think>: a server
  without a separate reasoning channel, or a model prompted to write the tags as text."""
  start = text.find(THINK_OPEN)
  end = text.find(THINK_CLOSE, start + len(THINK_OPEN) if start >= 0 else 0)
  if start < 0 or end < 0 or text[:start].strip():
    return '', text.strip(), False
  cot = text[start + len(THINK_OPEN):end].strip()
  answer = text[end + len(THINK_CLOSE):].strip()
  return cot, answer, bool(cot) and bool(answer) and THINK_OPEN not in answer
