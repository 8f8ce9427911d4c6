"""Reading a compiled decode program: the instructions of its loop body, and how many kernels they run.

A decode step on a CPU or GPU is bound by the kernels it launches per token (docs/benchmarks.md), so
tools/benchmark.py reports their count, and tests/test_sampler.py checks the loop body for copies of
the KV cache. Both read `compiled.as_text()` (XLA's HLO text after optimisation).
"""

from __future__ import annotations

import re

# Instructions that name or regroup buffers and launch nothing.
VIEWS = ('parameter', 'get-tuple-element', 'bitcast', 'tuple', 'constant')
# name = shape opcode(operands...): a shape is one token, or a tuple `(f32[1]{0}, s32[1]{0})` with
# spaces in it (multi-output fusions, the loop's own state), whose layouts use braces, never parens.
_INSTRUCTION = re.compile(r'\s*(?:ROOT )?%?[\w.\-]+ = (\(.*?\)|\S+) ([a-z][\w\-]*)\(')


def while_body_instructions(hlo_text: str) -> list[str]:
  """The instruction lines of the body computations of the program's while loops."""
  bodies = set(re.findall(r'\bwhile\(.*?body=%?([\w.\-]+)', hlo_text))
  if not bodies:
    raise ValueError('no while loop in the compiled program')
  lines, inside = [], False
  for line in hlo_text.splitlines():
    if not inside:
      name = re.match(r'%?([\w.\-]+) ', line)
      inside = bool(name) and name.group(1) in bodies and line.rstrip().endswith('{')
    elif line.startswith('}'):
      inside = False
    else:
      lines.append(line)
  return lines


def opcode(line: str) -> str | None:
  """An instruction line's opcode ('fusion', 'dot', ...); None for a line that is no instruction."""
  m = _INSTRUCTION.match(line)
  return m.group(2) if m else None


def kernel_count(lines: list[str]) -> int:
  """Instructions that run as kernels: all but views of buffers (fusions, matmuls, copies, ...)."""
  return sum(1 for line in lines if (op := opcode(line)) is not None and op not in VIEWS)
