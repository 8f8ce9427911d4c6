"""The held-out benchmarks' prompts, read by the evaluation's own readers, for the overlap guard
(data/prompt_sets/overlap.py): a training prompt is checked against exactly what evaluation asks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from deliberative.data.prompt_sets.overlap import BenchmarkPrompt
from deliberative.evals import suites

# StrongREJECT is read bare (no jailbreak wrappers): the wrappers are the evaluation's, not data.
BENCHMARK_READERS: Mapping[str, Callable[[str], list[suites.EvalItem]]] = {
    'xstest': suites.read_xstest,
    'strongreject': lambda path: suites.read_strongreject(path, wrappers=()),
    'advbench': suites.read_advbench,
}


def read_benchmarks(specs: Iterable[tuple[str, str]]) -> list[BenchmarkPrompt]:
  """(name, path) pairs -> every prompt of those files; an unknown name or a bad file raises."""
  prompts = []
  for name, path in specs:
    if name not in BENCHMARK_READERS:
      raise ValueError(f'--benchmark {name}={path}: unknown benchmark {name!r}; '
                       f'expected one of {", ".join(BENCHMARK_READERS)}')
    if not Path(path).is_file():
      raise ValueError(f'--benchmark {name}={path}: no such file')
    prompts += [BenchmarkPrompt(name, item.id, item.prompt, item.where) for item in BENCHMARK_READERS[name](path)]
  return prompts
