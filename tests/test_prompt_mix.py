"""The training mix of imported prompts (deliberative/data/prompt_sets/mix.py, tools/mix_prompts.py)."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from deliberative.data.prompt_sets import mix

REPO = Path(__file__).resolve().parents[1]


def rows(set_name, labels, decision='refuse', categories=None):
  categories = categories or ['violence'] * len(labels)
  return [{'id': f'{set_name}-{i}', 'prompt': f'{set_name} prompt {i}', 'category': category, 'decision': decision,
           'source': set_name, 'source_label': label, 'spec_version': 'x'}
          for i, (label, category) in enumerate(zip(labels, categories))]


def test_a_capped_set_is_drawn_evenly_over_its_labels_and_the_rest_is_counted():
  records = {'aart': rows('aart', ['weapons'] * 50 + ['fraud'] * 30 + ['hate'] * 3),
             'coconot': rows('coconot', ['contrast'] * 7, 'comply')}
  drawn = mix.draw(records, {'aart': 21}, seed=0)  # one category: its labels share the cap
  labels = Counter(r['source_label'] for r in drawn.records['aart'])
  assert labels == {'weapons': 9, 'fraud': 9, 'hate': 3}  # a small label gives its share to the others
  assert drawn.records['coconot'] == records['coconot']  # no cap: whole, in order
  report = drawn.report()
  assert report['per_set']['aart'] == {'available': 83, 'kept': 21, 'left_out': 62, 'cap': 21,
                                       'decisions': {'refuse': 21}}
  assert report['kept'] == 28 and report['decisions'] == {'comply': 7, 'refuse': 21}
  ids = [r['id'] for r in drawn.records['aart']]
  assert ids == sorted(ids, key=lambda i: int(i.split('-')[1]))  # the set's own order is kept


def test_the_default_draw_balances_the_spec_categories_then_the_labels_within_each():
  # AART's shape: many crime labels, few of every other category; by label alone the crimes win.
  labels = [f'crime{k}' for k in range(6) for _ in range(20)] + ['hate'] * 20 + ['threat'] * 20 + ['terror'] * 4
  categories = ['illicit_behavior'] * 120 + ['harassment'] * 20 + ['violence'] * 20 + ['extremism'] * 4
  records = {'aart': rows('aart', labels, categories=categories)}
  by_category = mix.draw(records, {'aart': 40}, seed=0)
  kept = Counter(r['category'] for r in by_category.records['aart'])
  assert kept == {'illicit_behavior': 12, 'harassment': 12, 'violence': 12, 'extremism': 4}
  crimes = Counter(r['source_label'] for r in by_category.records['aart'] if r['category'] == 'illicit_behavior')
  assert crimes == {f'crime{k}': 2 for k in range(6)}  # within a category, every label keeps its turn
  assert by_category.report()['balance'] == 'category'
  assert by_category.report()['categories'] == {'refuse/extremism': 4, 'refuse/harassment': 12,
                                                'refuse/illicit_behavior': 12, 'refuse/violence': 12}
  by_label = mix.draw(records, {'aart': 40}, seed=0, balance='source_label')
  # 9 labels, 6 of them crimes: 4 rounds of every label, then the first 4 labels in order (crimes)
  assert Counter(r['category'] for r in by_label.records['aart']) == {
      'illicit_behavior': 28, 'harassment': 4, 'violence': 4, 'extremism': 4}
  # ... and it is the draw before 2026-12-07, row for row (ids from mix.py at 48a04e9, same rows and seed):
  # the mixes measured then redraw exactly.
  assert [int(r['id'].split('-')[1]) for r in by_label.records['aart']] == [
      3, 5, 9, 12, 16, 29, 30, 35, 36, 37, 47, 49, 52, 54, 56, 60, 62, 70, 72, 76, 80, 83, 86, 93, 100, 102, 112, 118,
      125, 127, 130, 134, 141, 150, 158, 159, 160, 161, 162, 163]
  with pytest.raises(ValueError, match="mix balance 'size'"):
    mix.draw(records, {'aart': 40}, balance='size')


def test_the_draw_is_seeded_and_one_sets_cap_leaves_the_others_alone():
  records = {'aart': rows('aart', ['a', 'b'] * 40), 'catqa': rows('catqa', ['c', 'd'] * 40)}
  first = mix.draw(records, {'aart': 10, 'catqa': 10}, seed=3)
  assert first.records == mix.draw(records, {'aart': 10, 'catqa': 10}, seed=3).records
  assert first.records['catqa'] == mix.draw(records, {'aart': 30, 'catqa': 10}, seed=3).records['catqa']
  assert first.records['aart'] != mix.draw(records, {'aart': 10, 'catqa': 10}, seed=4).records['aart']


@pytest.mark.parametrize('text, problem', [('aart=-1', 'N >= 0'), ('aart', 'SET=N'), ('aart=x', 'SET=N')])
def test_bad_caps_are_named(text, problem):
  with pytest.raises(ValueError, match=f"mix cap '{text}'.*{problem}"):
    mix.parse_caps(text)


def test_the_tool_writes_the_mix_and_refuses_an_unknown_set_before_writing(tmp_path):
  imports = tmp_path / 'prompts'
  imports.mkdir()
  for name, labels in (('aart', ['x', 'y'] * 10), ('orbench', ['z'] * 5)):
    (imports / f'{name}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows(name, labels)))
  (imports / 'import_report.json').write_text('{}')  # the importer's report beside the sets: not a set
  tool = [sys.executable, str(REPO / 'tools' / 'mix_prompts.py'), '--prompts', str(imports)]
  bad = subprocess.run(tool + ['--caps', 'advbench=3', '--out', str(tmp_path / 'bad')], capture_output=True, text=True)
  assert bad.returncode == 1 and 'advbench' in bad.stderr and 'Traceback' not in bad.stderr
  assert not (tmp_path / 'bad').exists()
  ok = subprocess.run(tool + ['--caps', 'aart=4', '--out', str(tmp_path / 'mix')], capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr
  assert len((tmp_path / 'mix' / 'aart.jsonl').read_text().splitlines()) == 4
  assert mix.load_report(tmp_path / 'mix')['per_set']['orbench']['kept'] == 5
  left_out = subprocess.run(tool + ['--caps', 'orbench=0', '--out', str(tmp_path / 'm0')], capture_output=True, text=True)
  assert left_out.returncode == 0 and not (tmp_path / 'm0' / 'orbench.jsonl').exists()
  assert mix.load_report(tmp_path / 'm0')['per_set']['orbench'] == {'available': 5, 'kept': 0, 'left_out': 5, 'cap': 0,
                                                                    'decisions': {}}
