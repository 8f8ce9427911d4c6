"""`python -m deliberative.evaluate`'s flags are checked before any model loads (no model needed here)."""

import pytest

from deliberative import evaluate


@pytest.mark.parametrize('argv, problem', [
    (['--max_new_tokens', '0'], '--max_new_tokens must be >= 1, got 0'),
    (['--batch_size', '-2'], '--batch_size must be >= 1, got -2'),
    (['--suite_limit', 'demo=0'], '--suite_limit demo=0: expected NAME=N with N >= 1'),
    (['--suite_limit', 'demo'], '--suite_limit demo: expected NAME=N'),
    (['--suite_limit', 'xstest=5'], "--suite_limit xstest=5: no --suite named 'xstest'"),
    (['--grader', 'bogus'], "--grader bogus: unknown grader 'bogus'; expected one of demo, demo_regex"),
    (['--grader', 'model'], "--grader model: grader 'model' needs the model: 'model:PATH'"),
])
def test_a_bad_flag_is_named_before_any_work(tmp_path, capsys, argv, problem):
  with pytest.raises(SystemExit) as e:
    evaluate.parse_args(['--checkpoint', str(tmp_path / 'none'), '--suite', 'demo', '--suite', 'demo_overrefuse',
                         '--out', str(tmp_path / 'o'), *argv])
  assert e.value.code == 2 and problem in capsys.readouterr().err
  assert not (tmp_path / 'o').exists()


def test_suite_limit_replaces_the_limit_for_its_suite_only(tmp_path):
  args = evaluate.parse_args(['--checkpoint', 'x', '--suite', 'demo', '--suite', 'demo_overrefuse', '--out',
                              str(tmp_path / 'o'), '--limit', '100', '--suite_limit', 'demo_overrefuse=7'])
  assert args.suite_limits == {'demo_overrefuse': 7} and args.limit == 100
