"""The package's import graph (tools/check_imports.py): no circles, no import from a lower layer up
to a higher one. A new module outside every layer, a circle or a back-arrow fails here."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tools'))

import check_imports  # noqa: E402


def test_the_package_has_no_circles_and_no_back_arrows():
  result = check_imports.check(check_imports.Path(REPO) / 'deliberative')
  assert result['circles'] == [] and result['back_arrows'] == []
  assert result['modules'] > 50 and result['arrows'] > 100  # it read the real package


def test_a_circle_and_a_back_arrow_are_found(tmp_path):
  pkg = tmp_path / 'deliberative'
  (pkg / 'common').mkdir(parents=True)
  (pkg / 'model').mkdir()
  files = {
      '__init__.py': '',
      'common/__init__.py': '',
      'common/io.py': 'from deliberative.model import layers\n',  # up: common is the lowest layer
      'model/__init__.py': '',
      'model/layers.py': 'def f():\n  from deliberative.model import config  # a lazy import counts\n',
      'model/config.py': 'from deliberative.model.layers import f\n',
  }
  for name, text in files.items():
    (pkg / name).write_text(textwrap.dedent(text))
  result = check_imports.check(pkg)
  assert result['circles'] == [['deliberative.model.config', 'deliberative.model.layers']]
  assert result['back_arrows'] == [('deliberative.common.io', 'deliberative.model.layers')]


def test_the_tool_prints_the_figures_and_exits_zero():
  out = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'check_imports.py')], capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'circles 0' in out.stdout and 'back-arrows 0' in out.stdout
