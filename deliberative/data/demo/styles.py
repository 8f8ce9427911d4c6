"""Reference chains of thought and answers for demo prompts.

A CoT names the category, cites the governing clause (and the principle or style
guideline it applies), and decides; the answer follows the style guideline of that
decision (ST.1 hard refusal, ST.2 self-harm and ST.3 regulated-advice safe
completions). Both come in a few phrasings so that a model learns the content of
the reasoning rather than one sentence. The phrasings are data,
`deliberative/assets/demo/styles.yaml`. The regexes that read a decision back out of an
answer are the evaluation's demo grader (evals/graders.classify_demo_answer); tests/test_demo.py
checks that every phrasing reads as its decision.
"""

from __future__ import annotations

import dataclasses
import random

from deliberative.data.demo import assets
from deliberative.data.demo.cells import Cell, Filler, third_person
from deliberative.spec import Spec

_STYLES = assets.root('styles.yaml')
_PRINCIPLES = _STYLES['principles']
# Ids of the principles the demo cites; check_cells asserts they exist in the spec.
HELPFUL = _PRINCIPLES['helpful'].text()
LOOKALIKE_PRINCIPLE = _PRINCIPLES['lookalike'].text()
FRAMING_PRINCIPLE = _PRINCIPLES['framing'].text()
# How a CoT paraphrases each clause it cites (demo wording, not policy).
CLAUSE_GLOSSES = {k: v.text() for k, v in _STYLES['clause_glosses'].mapping().items()}
# domain -> (disclaimer adjective, who to consult, that professional alone)
DOMAINS = {k: tuple(v[f].text() for f in ('adjective', 'pro', 'pro_alone'))
           for k, v in _STYLES['domains'].mapping().items()}

_ANSWERS = _STYLES['answers']
# Train phrasings are the references every trace split teaches; held-out ones only reach
# judge_eval (see build_trace's `heldout`).
REFUSALS, HELDOUT_REFUSALS = _ANSWERS['refusals'].split()
COMPLY_OPENERS = _ANSWERS['comply_openers'].texts(allow_empty=True)
SELF_HARM_ANSWERS, HELDOUT_SELF_HARM_ANSWERS = _ANSWERS['self_harm'].split({'reflect'})
REGULATED_ANSWERS = _ANSWERS['regulated'].texts({'info', 'adjective', 'pro', 'pro_alone'})

_COT = _STYLES['cot']
_FIELDS = {'cat', 'cid', 'gloss', 'gist', 'sid', 'helpful', 'framing_principle'}
_COT_COMPLY = _COT['comply'].texts(_FIELDS)
_COT_REFUSE = _COT['refuse'].texts(_FIELDS)
_COT_JAILBREAK = _COT['jailbreak'].texts(_FIELDS | {'framing'})
_COT_SAFE = _COT['safe_complete'].texts(_FIELDS | {'tail'})
_SAFE_TAILS = {k: v.text({'pro'}) for k, v in _COT['safe_tails'].mapping().items()}
_COT_BENIGN = _COT['benign'].texts({'gist', 'helpful'})
_COT_LOOKALIKE = _COT['lookalike'].texts({'gist', 'trigger', 'reading', 'gid'})
_PRINCIPLE_FIELDS = {'helpful': HELPFUL, 'framing_principle': FRAMING_PRINCIPLE}


@dataclasses.dataclass(frozen=True)
class Trace:
    cot: str
    answer: str
    clause_ids: tuple[str, ...]     # governing category clauses the CoT cites
    guideline_ids: tuple[str, ...]  # principles and styles the CoT cites


def gist(filler: Filler) -> str:
    """A third-person paraphrase of what is asked, for the CoT."""
    slots = filler.slots
    if 'gist' in slots:
        return slots['gist']
    if 'topic' in slots:
        return third_person(slots['topic'])
    return ('how to ' if 'ask' in slots else '') + third_person(slots.get('ask', ''))


def build_trace(rng: random.Random, spec: Spec, cell: Cell, filler: Filler,
                framing: str | None = None, heldout: bool = False) -> Trace:
    """The reference CoT and answer for `filler` in `cell`. `framing` (a phrase such as
    'a role-play framing') marks a jailbreak-wrapped disallowed prompt. `heldout` picks
    the held-out phrasings of the answers that do not depend on the request (refusals,
    self-harm replies), so that judge_eval's answers are all unseen in judge_train."""
    if cell.category == 'none':
        return _none_trace(rng, cell, filler)
    cat = spec.categories[cell.category].name.lower()
    fields = dict(cat=cat, cid=filler.clause, gloss=CLAUSE_GLOSSES[filler.clause], gist=gist(filler),
                  **_PRINCIPLE_FIELDS)
    if cell.decision == 'comply':
        cot = rng.choice(_COT_COMPLY).format(**fields)
        answer = rng.choice(COMPLY_OPENERS) + filler.answer
        return Trace(cot, answer, (filler.clause,),
                     tuple(i for i in spec.cited_ids(cot) if i != filler.clause))
    style = spec.style_for(cell.category, cell.decision)
    fields['sid'] = style.id
    if cell.decision == 'refuse':
        if framing:
            cot = rng.choice(_COT_JAILBREAK).format(framing=framing, **fields)
        else:
            cot = rng.choice(_COT_REFUSE).format(**fields)
        refusals = HELDOUT_REFUSALS if heldout else REFUSALS
        return Trace(cot, rng.choice(refusals), (filler.clause,),
                     tuple(i for i in spec.cited_ids(cot) if i != filler.clause))
    if cell.category == 'self_harm':
        answers = HELDOUT_SELF_HARM_ANSWERS if heldout else SELF_HARM_ANSWERS
        answer = rng.choice(answers).format(reflect=filler.slots['reflect'])
        tail = _SAFE_TAILS['self_harm']
    else:
        adjective, pro, pro_alone = DOMAINS[filler.slots['domain']]
        answer = rng.choice(REGULATED_ANSWERS).format(
            info=filler.answer, adjective=adjective, pro=pro, pro_alone=pro_alone)
        tail = _SAFE_TAILS['regulated_advice'].format(pro=pro)
    cot = rng.choice(_COT_SAFE).format(tail=tail, **fields)
    return Trace(cot, answer, (filler.clause,), (style.id,))


def _none_trace(rng: random.Random, cell: Cell, filler: Filler) -> Trace:
    slots = filler.slots
    if cell.kind == 'lookalike':
        cot = rng.choice(_COT_LOOKALIKE).format(
            gist=third_person(slots['ask']), trigger=slots['trigger'], reading=slots['reading'],
            gid=filler.clause)
    else:
        cot = rng.choice(_COT_BENIGN).format(gist=third_person(slots['ask']), helpful=HELPFUL)
    return Trace(cot, rng.choice(COMPLY_OPENERS) + filler.answer, (), (filler.clause,))
