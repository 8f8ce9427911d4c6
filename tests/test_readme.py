"""Every command the README shows runs as written: its files and modules exist, its config loads, its
flags parse with the entry point's own parser, and its test command is the one `.ci/run` runs."""

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / 'fixtures'


def _readme_commands() -> list[list[str]]:
  """Each command of the README's ```bash blocks and inline `python ...` spans, split at `&&`,
  with the venv prefix dropped (`.venv/bin/python` -> `python`)."""
  text = (REPO / 'README.md').read_text()
  lines = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    joined = block.replace('\\\n', ' ')
    lines += [ln for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith('#')]
  lines += [span.replace('\n', ' ') for span in re.findall(r'`(python [^`]+)`', text)]
  commands = []
  for line in lines:
    for part in line.split('&&'):
      argv = shlex.split(part)
      if argv:
        argv[0] = re.sub(r'^\.venv/bin/', '', argv[0])
        commands.append(argv)
  return commands


COMMANDS = _readme_commands()


def _python(module: str) -> list[list[str]]:
  return [c for c in COMMANDS if c[:3] == ['python', '-m', module]]


def test_the_readme_shows_the_two_commands_and_the_entry_points():
  modules = {c[2] for c in COMMANDS if c[:2] == ['python', '-m']}
  assert {'deliberative.train', 'deliberative.evaluate', 'deliberative.generate', 'deliberative.serve',
          'pytest'} <= modules
  assert any(c[0] == 'python' and c[1] == 'launch/recipe.py' for c in COMMANDS)


def test_files_and_modules_the_commands_name_exist():
  for argv in COMMANDS:
    for flag, value in zip(argv, argv[1:]):
      if flag == '-r':
        assert (REPO / value).is_file(), (argv, value)
    if argv[:2] == ['python', '-m'] and argv[2].startswith('deliberative'):
      assert importlib.util.find_spec(argv[2]) is not None, argv
    if argv[0] == 'python' and argv[1].endswith('.py'):
      assert (REPO / argv[1]).is_file(), argv


def _requirements(argv: list[str]) -> list[str]:
  return [value for flag, value in zip(argv, argv[1:]) if flag == '-r']


def test_the_readme_test_command_is_what_ci_runs():
  readme_installs = [c for c in COMMANDS if c[1:3] == ['install', '-r'] or '--no-deps' in c]
  ci = [shlex.split(ln) for ln in (REPO / '.ci' / 'run').read_text().splitlines()
        if ln.startswith('.venv/bin/')]
  ci_installs = [c for c in ci if 'install' in c and _requirements(c)]
  tested = next(c for c in readme_installs if 'requirements-test.txt' in c)
  no_deps = next(c for c in readme_installs if '--no-deps' in c)
  assert [_requirements(c) for c in ci_installs] == [_requirements(tested), _requirements(no_deps)]
  assert ('--no-deps' in ci_installs[1]) and '--no-deps' not in ci_installs[0]
  readme_pytest = next(c for c in _python('pytest') if c[-1] == 'tests' and '-m' not in c[3:])
  ci_pytest = [re.sub(r'^\.venv/bin/', '', a) for a in next(c for c in ci if 'pytest' in c)]
  assert ci_pytest == readme_pytest


@pytest.mark.parametrize('module', ['deliberative.train', 'deliberative.generate'])
def test_config_commands_load_their_config_with_the_entry_points_flags(module, tmp_path):
  """absl parses the README's flags (an unknown one fails) and loads the config file with its argument."""
  commands = _python(module)
  assert commands
  for argv in commands:
    code = ('import sys, importlib; from absl import flags; importlib.import_module(sys.argv[1]); '
            'flags.FLAGS(sys.argv[1:]); print(flags.FLAGS.config.name)')
    result = subprocess.run([sys.executable, '-c', code, module, *argv[3:]], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (argv, result.stderr[-2000:])
    assert result.stdout.strip(), argv


def test_argparse_commands_parse_with_the_entry_points_parser():
  from deliberative import evaluate, serve
  for module, parse in (('deliberative.evaluate', evaluate.parse_args), ('deliberative.serve', serve.parse_args)):
    commands = _python(module)
    assert commands, module
    for argv in commands:
      parse(argv[3:])


def test_the_recipe_command_plans_with_benchmark_files_in_place_of_its_placeholders(tmp_path, capsys):
  if 'recipe' not in sys.modules:  # tests/test_recipe.py loads it under the same name
    spec = importlib.util.spec_from_file_location('recipe', REPO / 'launch' / 'recipe.py')
    sys.modules['recipe'] = importlib.util.module_from_spec(spec)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules['recipe'])
  recipe = sys.modules['recipe']
  csv = str(FIXTURES / 'prompt_sets' / 'benchmarks' / 'xstest_prompts.csv')
  for argv in [c for c in COMMANDS if c[:2] == ['python', 'launch/recipe.py']]:
    args = [{'XSTEST.csv': csv, 'STRONGREJECT.csv': csv}.get(a, a) for a in argv[2:]]
    args = [str(tmp_path / 'recipe') if a == 'runs/recipe' else a for a in args]
    assert recipe.main([*args, '--dry_run']) == 0, argv
    assert capsys.readouterr().out.startswith('recipe: SmolLM2-135M-Instruct under ')
