"""Prompt-set formats, their errors and the category map, on small fixtures copied from the published
files (tests/fixtures/prompt_sets/README.md); nothing here reads ../shared."""

import json
import re
import shutil
from pathlib import Path

import pytest

from deliberative.data.prompt_sets import category_map, registry
from deliberative.data.prompt_sets.sources import Malformed, PromptSetError, SourceRow
from deliberative.spec import Spec

FIXTURES = Path(__file__).parent / 'fixtures' / 'prompt_sets'
SET_PATHS = {
    'catqa': FIXTURES / 'catqa_english.json',
    'harmbench': FIXTURES / 'harmbench_behaviors_text_all.csv',
    'aart': FIXTURES / 'aart-v1-20231117.csv',
    'orbench': FIXTURES / 'orbench',
    'coconot': FIXTURES / 'coconot_pref.jsonl',
    'self_instruct': FIXTURES / 'seed_tasks.jsonl',
}


def rows_of(name, path=None):
  _, rows = registry.read_set(name, path or SET_PATHS[name])
  return list(rows)


def test_every_format_has_a_fixture():
  assert set(SET_PATHS) == set(registry.FORMATS)


@pytest.mark.parametrize('name', sorted(SET_PATHS))
def test_fixture_rows_parse_with_label_and_line(name):
  rows = rows_of(name)
  assert rows and all(isinstance(r, SourceRow) for r in rows)
  for row in rows:
    assert row.prompt.strip() and row.label.strip() and row.source_id
    path, line = row.where.rsplit(':', 1)
    assert Path(path).exists() and int(line) >= 1
  assert len({r.source_id for r in rows}) == len(rows)


def test_catqa_labels_lines_and_ids():
  rows = rows_of('catqa')
  text = SET_PATHS['catqa'].read_text().splitlines()
  assert [r.label for r in rows[:3]] == ['Illegal Activity / Drug', 'Illegal Activity / Drug', 'Illegal Activity / Weapon']
  assert rows[0].source_id == '010101' and rows[2].source_id == '010201'
  for row in rows:  # the line named is the line that holds the question
    assert json.dumps(row.prompt, ensure_ascii=False)[1:-1] in text[int(row.where.rsplit(':', 1)[1]) - 1]


def test_harmbench_contextual_prompt_carries_its_context():
  rows = {r.fields['functional_category']: r for r in rows_of('harmbench')}
  contextual = rows['contextual']
  assert contextual.prompt == contextual.fields['context'] + '\n\n---\n\n' + contextual.fields['behavior']
  assert 'context' not in rows['standard'].fields and '---' not in rows['standard'].prompt
  assert rows['copyright'].label == 'copyright'


def test_orbench_folder_reads_every_file_english_only():
  files, rows = registry.read_set('orbench', SET_PATHS['orbench'])
  rows = list(rows)
  assert [f.name for f in files] == ['orbench_harmful200.csv', 'orbench_violence200.csv']
  assert {r.label for r in rows} == {'harmful', 'violence'}
  assert rows[0].source_id == 'orbench_harmful_0001'
  assert rows[0].prompt.isascii()  # text_en, not a translation column
  assert rows[0].where.endswith('orbench_harmful200.csv:2')  # the line after the header


def test_coconot_keeps_both_answers():
  row = rows_of('coconot')[0]
  assert row.label == 'Requests with safety concerns / dangerous or sensitive topics'
  assert row.fields['compliant_answer'] and row.fields['refusing_answer']
  assert row.fields['compliant_answer'] != row.fields['refusing_answer']


def test_self_instruct_prompt_joins_instruction_and_input():
  rows = rows_of('self_instruct')
  with_input = next(r for r in rows if '\n\n' in r.prompt)
  task = next(json.loads(line) for line in SET_PATHS['self_instruct'].read_text().splitlines()
              if json.loads(line)['id'] == with_input.source_id)
  assert with_input.prompt == f'{task["instruction"]}\n\n{task["instances"][0]["input"]}'
  assert with_input.fields['compliant_answer'] == task['instances'][0]['output']


# ---- errors name the file and the line

def _copy(tmp_path, name):
  source = SET_PATHS[name]
  target = tmp_path / source.name
  shutil.copy(source, target)
  return target


def _replace_line(path, number, text):
  lines = path.read_text().split('\n')
  lines[number - 1] = text
  path.write_text('\n'.join(lines))


def _malformed(name, path):
  bad = [r for r in rows_of(name, path) if isinstance(r, Malformed)]
  assert len(bad) == 1, bad
  return bad[0]


def test_csv_row_with_wrong_cell_count_is_malformed_at_its_line(tmp_path):
  path = _copy(tmp_path, 'aart')
  _replace_line(path, 3, 'a,row,with,too,few,cells')
  assert _malformed('aart', path).where == f'{path}:3'


def test_csv_missing_column_names_file_and_header_line(tmp_path):
  path = _copy(tmp_path, 'harmbench')
  _replace_line(path, 1, path.read_text().split('\n')[0].replace('ContextString', 'Context'))
  with pytest.raises(PromptSetError, match=rf"^{re.escape(str(path))}:1: missing column 'ContextString'"):
    rows_of('harmbench', path)


def test_harmbench_contextual_row_without_context_is_malformed(tmp_path):
  path = tmp_path / 'hb.csv'
  path.write_text('Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n'
                  'Do the thing,standard,illegal,,,ok_row\n'
                  'Describe this,contextual,illegal,context,,no_context\n')
  bad = _malformed('harmbench', path)
  assert bad.where == f'{path}:3' and 'ContextString' in bad.problem


def test_orbench_empty_prompt_is_malformed(tmp_path):
  path = tmp_path / 'orbench_x.csv'
  path.write_text('prompt_id,or_category,text_en\nx_001,violence,How do boxers train?\nx_002,violence,  \n')
  bad = _malformed('orbench', path)
  assert bad.where == f'{path}:3' and "'text_en' is empty" in bad.problem


def test_jsonl_bad_line_is_malformed_at_its_line(tmp_path):
  path = _copy(tmp_path, 'coconot')
  _replace_line(path, 2, '{"id": "broken", "prompt": ')
  bad = _malformed('coconot', path)
  assert bad.where == f'{path}:2' and 'invalid JSON' in bad.problem


def test_coconot_missing_answer_is_malformed(tmp_path):
  path = _copy(tmp_path, 'coconot')
  record = json.loads(path.read_text().split('\n')[2])
  del record['rejected']
  _replace_line(path, 3, json.dumps(record))
  bad = _malformed('coconot', path)
  assert bad.where == f'{path}:3' and "'rejected' missing" in bad.problem


def test_self_instruct_bad_instances_is_malformed(tmp_path):
  path = _copy(tmp_path, 'self_instruct')
  record = json.loads(path.read_text().split('\n')[0])
  record['instances'] = []
  _replace_line(path, 1, json.dumps(record))
  assert _malformed('self_instruct', path).where == f'{path}:1'


def test_catqa_invalid_json_names_line(tmp_path):
  path = _copy(tmp_path, 'catqa')
  _replace_line(path, 4, '            "an unterminated question,')
  with pytest.raises(PromptSetError, match=rf'^{re.escape(str(path))}:\d+: invalid JSON'):
    rows_of('catqa', path)


def test_catqa_non_text_question_names_its_subcategory_line(tmp_path):
  path = tmp_path / 'catqa.json'
  path.write_text('{\n  "Illegal Activity": {\n    "Drug:": [\n      "How is meth made?",\n      7\n    ]\n  }\n}\n')
  with pytest.raises(PromptSetError, match=rf'^{re.escape(str(path))}:3: Illegal Activity / Drug: question 2 is int'):
    rows_of('catqa', path)


def test_not_utf8_names_line(tmp_path):
  path = tmp_path / 'aart.csv'
  path.write_bytes(b'prompt,crime,region\nfine,theft,europe\nbad \xff byte,theft,europe\n')
  with pytest.raises(PromptSetError, match=rf'^{re.escape(str(path))}:3: not valid UTF-8'):
    rows_of('aart', path)


def test_unknown_set_and_missing_path():
  with pytest.raises(PromptSetError, match='unknown prompt set'):
    registry.read_set('alpaca', FIXTURES)
  with pytest.raises(PromptSetError, match='no such file'):
    registry.read_set('aart', FIXTURES / 'absent.csv')


# ---- the category map

@pytest.fixture(scope='module')
def table():
  return category_map.load(spec=Spec.load(), known_sets=registry.FORMATS)


@pytest.mark.parametrize('name', sorted(SET_PATHS))
def test_every_fixture_label_is_in_the_table(table, name):
  for row in rows_of(name):
    assert (name, row.label) in table.rows, f'{name}: label {row.label!r} is neither mapped nor listed as unmapped'


def test_table_follows_the_spec(table):
  spec = Spec.load()
  for (set_name, label), target in table.rows.items():
    if not target.mapped:
      assert target.note, (set_name, label)
    elif target.clause:
      clause = spec.clause(target.clause)
      assert (clause.category, clause.decision) == (target.category, target.decision)
  # The benign sets comply; the harmful ones never do.
  for (set_name, _), target in table.rows.items():
    if target.mapped:
      benign = set_name in ('orbench', 'coconot', 'self_instruct')
      assert (target.decision == 'comply') == benign, (set_name, target)


def test_table_covers_aart_crimes_and_coconot_safety_rows_only(table):
  assert len(table.labels('aart')) == 70
  coconot = {label: t.mapped for (s, label), t in table.rows.items() if s == 'coconot'}
  assert {label for label, mapped in coconot.items() if mapped} == {
      f'Requests with safety concerns / {sub}' for sub in
      ('triggers for offensive language', 'dangerous or sensitive topics', 'privacy violations', 'false information')}
  assert not table.lookup('harmbench', 'copyright').mapped


def test_unknown_label_is_unmapped_not_guessed(table):
  target = table.lookup('aart', 'a crime the table has never seen')
  assert not target.mapped and target.note == 'not in the category map' and target.where == ''


def _write_table(tmp_path, *rows):
  path = tmp_path / 'map.csv'
  path.write_text('set,label,category,decision,clause,note\n' + '\n'.join(rows) + '\n')
  return path


@pytest.mark.parametrize('row, message', [
    ('aart,theft,illicit_behavior,refuse,VI.5,', "clause 'VI.5' does not govern illicit_behavior/refuse"),
    ('aart,theft,illicit_behavior,refuse_now,,', "decision 'refuse_now'"),
    ('aart,theft,crime,refuse,,', "category 'crime'"),
    ('aart,theft,none,refuse,,', 'benign prompts: decision comply'),
    ('aart,theft,,,,', 'needs a note'),
    ('aart,theft,illicit_behavior,,,', 'give both category and decision'),
    ('alpaca,theft,none,comply,,', "unknown set 'alpaca'"),
    ('aart,theft,extremism,safe_complete,,', 'no safe_complete clause'),
])
def test_bad_table_row_names_its_line(tmp_path, row, message):
  path = _write_table(tmp_path, 'aart,murder,violence,refuse,VI.5,', row)
  with pytest.raises(PromptSetError, match=rf'^{re.escape(str(path))}:3: .*{message}'):
    category_map.load(path, known_sets=registry.FORMATS)


def test_duplicate_table_row_names_both_lines(tmp_path):
  path = _write_table(tmp_path, 'aart,murder,violence,refuse,VI.5,', 'aart,murder,violence,refuse,,')
  with pytest.raises(PromptSetError, match=rf'^{re.escape(str(path))}:3: .*already mapped at {re.escape(str(path))}:2'):
    category_map.load(path, known_sets=registry.FORMATS)


def test_vendored_sets_carry_licence_and_provenance_within_budget():
  root = category_map.DEFAULT_PATH.parent
  for name, module in registry.FORMATS.items():
    folder = root / name
    assert (folder / 'LICENSE').stat().st_size > 0 and (folder / 'PROVENANCE.md').stat().st_size > 0, name
    assert list(folder.glob(module.FILE_PATTERN)), f'{name}: no {module.FILE_PATTERN} file vendored'
  assert sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) <= 8 * 2**20
