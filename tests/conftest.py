"""Test-wide setup: 8 fake CPU devices, so sharding is exercised without accelerators."""

import os

# Must precede the first `import jax` anywhere in the test process.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import jax  # noqa: E402

jax.config.update('jax_default_matmul_precision', 'highest')


import pytest  # noqa: E402


def pytest_configure(config):
  # The edit-test loop runs `pytest -m "not slow" tests`; CI and a plain `pytest tests` run all.
  config.addinivalue_line('markers', 'slow: real models, subprocess runs, AOT compiles or whole trainer runs '
                                     '(deselect with -m "not slow")')


@pytest.fixture(scope='session')
def demo_data_dir(tmp_path_factory):
  from deliberative.data import datasets
  d = tmp_path_factory.mktemp('demo_data')
  datasets.ensure_demo_dataset(str(d))
  return str(d)
