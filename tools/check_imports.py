"""The import graph of `deliberative/`, read from the code with `ast`: fails on import circles and on
imports that run from a lower layer up to a higher one, and prints the house's figures.

    python tools/check_imports.py            # figures, then every circle and back-arrow; exit 1 if any
    python tools/check_imports.py --edges    # also every arrow, "importer -> imported"

Every import counts, module level or inside a function: a lazy import still ties the two modules
together. A module's layer is that of the longest entry of LAYERS that prefixes its dotted name;
an arrow may stay in its layer or go down, never up. Circles are found between modules (a package's
`__init__` is a module of its own), so two modules in one folder that import each other fail too.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = 'deliberative'

# Lowest first; one entry per row may name several folders or modules of the same height.
LAYERS: tuple[tuple[str, ...], ...] = (
    ('common',),
    ('spec',),
    ('tokenizer',),
    ('model',),
    ('config_lib',),
    ('weights',),
    ('inference',),
    ('judge',),
    ('data',),
    ('evals',),
    ('stage1',),
    ('trainers',),
    ('serving',),
    ('train', 'evaluate', 'generate', 'serve'),  # the entry points
)


def module_files(root: Path) -> dict[str, Path]:
  """Dotted module name -> file, for every .py under `root` (a package's __init__ named as the package)."""
  found = {}
  for path in sorted(root.rglob('*.py')):
    parts = list(path.relative_to(root.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
      parts.pop()
    found['.'.join(parts)] = path
  return found


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
  """The package's modules that `name` imports (`from pkg import mod` counts as an arrow to `mod`)."""
  modules = set(modules)
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  targets: set[str] = set()
  for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
    if isinstance(node, ast.Import):
      targets.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split('.')[:len(package.split('.')) - node.level + 1]
        origin = '.'.join(base + ([node.module] if node.module else []))
      else:
        origin = node.module or ''
      for alias in node.names:
        targets.add(f'{origin}.{alias.name}' if f'{origin}.{alias.name}' in modules else origin)
  out = set()
  for target in targets:
    # `import a.b.c` and attribute-like names resolve to the longest module they name.
    while target and target not in modules:
      target = target.rpartition('.')[0]
    if target and target != name and target != PACKAGE:
      out.add(target)
  return out


def layer_of(name: str) -> int:
  rest = name.removeprefix(PACKAGE + '.')
  best, best_len = None, -1
  for height, row in enumerate(LAYERS):
    for entry in row:
      if (rest == entry or rest.startswith(entry + '.')) and len(entry) > best_len:
        best, best_len = height, len(entry)
  if best is None:
    raise SystemExit(f'{name}: in no layer of tools/check_imports.py LAYERS; add its folder there')
  return best


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan), each sorted."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  found: list[list[str]] = []
  sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(found)


def room_of(name: str) -> str:
  """The folder a module lives in (a top-level module is a room of its own)."""
  parts = name.split('.')
  return '.'.join(parts[:2])


def check(root: Path) -> dict:
  files = module_files(root)
  graph = {name: imports_of(name, path, files) for name, path in files.items()}
  lines = {name: len(path.read_text(encoding='utf-8').splitlines()) for name, path in files.items()}
  back = sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
  longest = max(lines, key=lines.get)
  rooms = {room_of(name) for name in files if name != PACKAGE}
  room_arrows = {(room_of(a), room_of(b)) for a, targets in graph.items() for b in targets
                 if a != PACKAGE and room_of(a) != room_of(b)}
  return {'rooms': len(rooms), 'room_arrows': len(room_arrows), 'modules': len(files), 'package_lines': sum(lines.values()), 'longest': (longest, lines[longest]),
          'arrows': sum(len(t) for t in graph.values()), 'circles': circles(graph), 'back_arrows': back,
          'graph': graph}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--root', default=str(Path(__file__).resolve().parent.parent / PACKAGE))
  parser.add_argument('--edges', action='store_true', help='print every arrow too')
  args = parser.parse_args(argv)
  r = check(Path(args.root))
  print(f"rooms {r['rooms']} (folders and top-level modules)  arrows between rooms {r['room_arrows']}")
  print(f"modules {r['modules']}  package lines {r['package_lines']}  longest {r['longest'][0]} "
        f"({r['longest'][1]} lines)  arrows {r['arrows']}  circles {len(r['circles'])}  "
        f"back-arrows {len(r['back_arrows'])}")
  for c in r['circles']:
    print('circle:', ' <-> '.join(c))
  for a, b in r['back_arrows']:
    print(f'back-arrow: {a} -> {b} (layer {layer_of(a)} imports layer {layer_of(b)})')
  if args.edges:
    for a in sorted(r['graph']):
      for b in sorted(r['graph'][a]):
        print(f'{a} -> {b}')
  return 1 if r['circles'] or r['back_arrows'] else 0


if __name__ == '__main__':
  sys.exit(main())
