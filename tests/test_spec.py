"""The safety spec: default content, render, citations, version, and malformed files."""

import re

import pytest

from deliberative.spec import (CATEGORIES, DEFAULT_PATH, REQUIRED_STYLES, Clause, Guideline, Spec,
                               SpecError)

DEFAULT_TEXT = DEFAULT_PATH.read_text(encoding='utf-8')


@pytest.fixture(scope='module')
def spec():
    return Spec.load()


def line_of(text, needle):
    """1-based number of the first line that starts with `needle`."""
    for number, line in enumerate(text.split('\n'), start=1):
        if line.startswith(needle):
            return number
    raise AssertionError(f'{needle!r} not in text')


def test_default_spec_has_every_category_style_and_principle(spec):
    assert tuple(spec.categories) == CATEGORIES
    assert set(REQUIRED_STYLES) <= set(spec.styles)
    assert [g.id for g in spec.principles][:2] == ['GP.1', 'GP.2']
    assert [spec.styles[k].id for k in REQUIRED_STYLES] == ['ST.1', 'ST.2', 'ST.3']
    prefixes = {c.key: {cl.id.split('.')[0] for cl in c.clauses} for c in spec.categories.values()}
    assert prefixes == {'erotic': {'ER'}, 'extremism': {'EX'}, 'harassment': {'HA'},
                        'illicit_behavior': {'IB'}, 'regulated_advice': {'RA'},
                        'self_harm': {'SH'}, 'violence': {'VI'}}
    for category in spec.categories.values():
        assert category.name and category.summary
        assert {'comply', 'refuse'} <= set(category.decisions)
        assert 3 <= len(category.clauses) <= 6
    assert spec.categories['self_harm'].decisions == ('comply', 'refuse', 'safe_complete')
    assert spec.categories['regulated_advice'].decisions == ('comply', 'refuse', 'safe_complete')


def test_lookup(spec):
    clause = spec.clause('IB.4')
    assert isinstance(clause, Clause)
    assert (clause.category, clause.decision) == ('illicit_behavior', 'refuse')
    assert isinstance(spec.clause('ST.2'), Guideline) and spec.clause('ST.2').key == 'self_harm_safe_completion'
    assert spec.clause('GP.2').key is None
    assert [c.id for c in spec.clauses_for('self_harm', 'safe_complete')] == ['SH.4', 'SH.5']
    assert spec.clauses_for('self_harm', 'safe_completion') == spec.clauses_for('self_harm', 'safe_complete')
    assert spec.clauses_for('illicit_behavior', 'disallowed') == spec.clauses_for('illicit_behavior', 'refuse')
    assert spec.clauses_for('violence', 'safe_complete') == ()
    assert spec.style_for('violence', 'refuse').id == 'ST.1'
    assert spec.style_for('regulated_advice', 'safe_complete').id == 'ST.3'
    assert spec.style_for('violence', 'comply') is None
    with pytest.raises(KeyError):
        spec.clause('IB.99')
    with pytest.raises(KeyError):
        spec.clauses_for('gambling', 'refuse')
    with pytest.raises(ValueError):
        spec.clauses_for('violence', 'maybe')


def test_render_has_full_text_of_only_its_category(spec):
    everyone = [g.text for g in spec.principles] + [g.text for g in spec.styles.values()]
    everyone += [c.summary for c in spec.categories.values()]
    for key in (*CATEGORIES, 'none'):
        text = spec.render(key)
        for shared in everyone:
            assert shared in text
        for category in spec.categories.values():
            for clause in category.clauses:
                assert (f'{clause.id}: {clause.text}' in text) == (category.key == key), (key, clause.id)
    with pytest.raises(KeyError):
        spec.render('gambling')


def test_render_is_compact(spec):
    # It sits in a tiny model's system prompt; keep it well under ~1000 tokens.
    assert len(spec.render('none').split()) < 500
    assert max(len(spec.render(k).split()) for k in CATEGORIES) < 620


def test_cited_ids(spec):
    text = 'Per GP.4 this is IB.4, not IB.41 or XIB.5; IB.4 again, then SH.5. ZZ.1 is unknown. ST.1.'
    assert spec.cited_clause_ids(text) == ['IB.4', 'SH.5']
    assert spec.cited_ids(text) == ['GP.4', 'IB.4', 'SH.5', 'ST.1']
    assert spec.cited_categories(text) == ['illicit_behavior', 'self_harm']
    assert spec.cited_clause_ids('no citations here') == []


def test_version(spec):
    assert re.fullmatch(r'[0-9a-f]{12}', spec.version)
    assert Spec.parse(DEFAULT_TEXT).version == spec.version
    assert Spec.parse(spec.to_text()).version == spec.version  # canonical text round-trips
    cosmetic = ('# Another title\nA different preamble.\n'
                + DEFAULT_TEXT.split('\n## Principles', 1)[1].join(['\n## Principles', ''])
                .replace('\n### Allowed', '\n\n<!-- a comment -->\n### Allowed')
                .replace('\n', '   \n'))
    assert Spec.parse(cosmetic).version == spec.version
    edited = DEFAULT_TEXT.replace('Instructions for making weapons', 'Instructions for building weapons')
    assert Spec.parse(edited).version != spec.version


def test_load_from_user_file(tmp_path, spec):
    path = tmp_path / 'my_spec.md'
    path.write_text(DEFAULT_TEXT.replace('- VI.6:', '- VI.6: Really.'), encoding='utf-8')
    user = Spec.load(path)
    assert user.path == str(path)
    assert user.clause('VI.6').text.startswith('Really.')
    assert user.version != spec.version


def test_continuation_lines_and_alternate_headings():
    text = DEFAULT_TEXT.replace(
        '- GP.3: Refuse only when a clause disallows the request.',
        '- GP.3: Refuse only when a clause\n  disallows the request.').replace(
        '### Disallowed', '### Refuse')
    parsed = Spec.parse(text)
    assert parsed.clause('GP.3').text.startswith('Refuse only when a clause disallows the request.')
    assert parsed.version == Spec.load().version


def _remove_section(text, header):
    start = text.index(header)
    end = text.find('\n## ', start + 1)
    return text[:start] + (text[end + 1:] if end >= 0 else '')


# (name, how to break the default text, needle on the line the error must name, message)
_BROKEN = [
    ('unknown category',
     lambda t: t.replace('## Category violence: Violence', '## Category weapons: Weapons'),
     '## Category weapons', 'unknown category'),
    ('missing category',
     lambda t: _remove_section(t, '## Category violence'), None, "missing required category 'violence'"),
    ('duplicate clause id',
     lambda t: t.replace('- IB.5: Help committing', '- IB.4: Help committing'),
     '- IB.4: Help committing', 'duplicate clause id IB.4'),
    ('missing style',
     lambda t: '\n'.join(l for l in t.split('\n') if not l.startswith('- ST.3 ')),
     None, "missing required style guideline 'regulated_advice_safe_completion'"),
    ('clause outside any section',
     lambda t: t.replace('Format, one construct per line:', '- XX.1: a stray clause'),
     '- XX.1: a stray clause', 'clause outside any section'),
    ('clause outside a decision subsection',
     lambda t: t.replace('Sexual topics. Factual', '- ER.9: stray\nSexual topics. Factual'),
     '- ER.9: stray', 'outside a decision subsection'),
    ('unknown subsection',
     lambda t: t.replace('### Allowed\n- EX.1', '### Maybe\n- EX.1'), '### Maybe', 'unknown subsection'),
    ('subsection outside a category',
     lambda t: t.replace('## Style guidelines\n', '## Style guidelines\n### Allowed\n'),
     '### Allowed', 'outside a category'),
    ('wrong prefix',
     lambda t: t.replace('- EX.4: Operational', '- ER.7: Operational'), '- ER.7: Operational', 'prefix'),
    ('malformed item',
     lambda t: t.replace('- HA.3: Respectful', '- Respectful'), '- Respectful', 'malformed item'),
    ('duplicate section',
     lambda t: t + '\n## principles\n- GP.9: again\n', '## principles', 'duplicate section'),
    ('style without key',
     lambda t: t.replace('- ST.1 hard_refusal:', '- ST.1:'), '- ST.1:', 'needs a key'),
    ('category without summary',
     lambda t: t.replace('Physical harm to people or animals. Depicting, studying and preventing '
                         'violence is fine; threatening, planning or celebrating real harm is not.\n', ''),
     '## Category violence', 'no summary'),
    ('safe completion without a style',
     lambda t: t + '### Safe completion\n- VI.7: A person at risk of violence.\n',
     '### Safe completion', 'no style guideline "violence_safe_completion"'),
    ('stray prose in a decision list',
     lambda t: t.replace('- VI.2: Self-defence', 'some prose\n- VI.2: Self-defence'),
     'some prose', 'unexpected text'),
    ('unknown section',
     lambda t: t.replace('## Principles', '## Rules'), '## Rules', 'unknown section'),
    ('unknown heading',
     lambda t: t.replace('- HA.3: Respectful', '#### Notes\n- HA.3: Respectful'), '#### Notes',
     'unknown heading'),
]


@pytest.mark.parametrize('name,break_text,needle,message', _BROKEN, ids=[b[0] for b in _BROKEN])
def test_malformed_spec_names_file_and_line(name, break_text, needle, message):
    text = break_text(DEFAULT_TEXT)
    # A missing piece is reported at the end of the file.
    expected_line = len(text.split('\n')) if needle is None else line_of(text, needle)
    with pytest.raises(SpecError) as info:
        Spec.parse(text, path='my_spec.md')
    assert info.value.line == expected_line, str(info.value)
    assert str(info.value).startswith(f'my_spec.md:{expected_line}: ')
    assert message in str(info.value)


def test_error_from_a_file_names_that_file(tmp_path):
    path = tmp_path / 'broken.md'
    path.write_text(DEFAULT_TEXT.replace('- IB.5: Help committing', '- IB.4: Help committing'))
    with pytest.raises(SpecError, match=re.escape(f'{path}:{line_of(path.read_text(), "- IB.4: Help committing")}:')):
        Spec.load(path)
