"""The fields a resumed run may change: one definition (config_lib) that trainers/resume.py and
stage1/shards.py both read, and the stage-1 config hash it feeds, pinned."""

import pytest

import configs.generate
from deliberative import config_lib
from deliberative.stage1 import shards

# stage1/shards.config_hash of configs/generate.py, computed before the two lists moved into config_lib.
# The hash keys a stage-1 workdir (a resume with another hash is refused) and ends every trace's
# `source`, so a change of what is hashed must be a deliberate one: update these only then. The labels
# pins changed on 2026-12-07 with labels.cot_order (verdict-first CoTs are other traces: a resume of a
# workdir written in the old order must be refused).
PINNED = {None: '78942250efae', 'smoke': 'aefd4ef9f341', 'source=labels': '726bd22d91fa',
          'source=labels,smoke': '75fa5033938a'}


@pytest.mark.parametrize('arg', list(PINNED))
def test_the_stage1_config_hash_of_a_fixed_config_is_unchanged(arg):
  assert shards.config_hash(configs.generate.get_config(arg)) == PINNED[arg]


def test_both_lists_are_the_shared_one_plus_their_own():
  for extras in (config_lib.TRAIN_RESUME_MAY_CHANGE, config_lib.GENERATE_RESUME_MAY_CHANGE):
    assert extras[:len(config_lib.RESUME_MAY_CHANGE)] == config_lib.RESUME_MAY_CHANGE


@pytest.mark.parametrize('field, train, generate', [
    ('debug.kill_after_step', True, True),         # a section, in both
    ('spec', True, False),                         # a trainer's spec is a path, compared by content...
    ('spec.version', False, False),                # ...which it may not change
    ('name', True, False),                         # stage 1 hashes its name
    ('model.remat', True, False),
    ('model.d_model', False, False),
    ('judge.endpoint.timeout_s', False, True),     # '.timeout_s': in any section
    ('timeout_s', False, True),
    ('judge.endpoint.model', False, False),
    ('max_error_fraction', False, True),
    ('output.build_dataset', False, True),
    ('evals.every_steps', True, False),
])
def test_what_a_resume_may_change(field, train, generate):
  assert config_lib.may_change_on_resume(field, config_lib.TRAIN_RESUME_MAY_CHANGE) is train
  assert config_lib.may_change_on_resume(field, config_lib.GENERATE_RESUME_MAY_CHANGE) is generate
