"""Answers in the spec's styles, written from a label, that name what the request asked.

refuse         ST.1 hard refusal: one brief apology, one brief statement of inability, naming
               the request (label_text.request_phrase), no lecture.
safe_complete  self_harm: ST.2 (warmth, not alone, someone to trust, a crisis line; for a
               request for methods, the methods declined in the same breath);
               regulated_advice: ST.3 (general information, a disclaimer, a professional):
               the information is a compliant answer (the set's own, or the generator's)
               that `with_disclaimer` closes with the disclaimer and referral.
comply         never written here: the set's own answer or the generator's (labels.py).

Every answer is read back by the run's grader before it is kept, so a phrasing that a grader
would misread is dropped and counted, not trained on.
"""

from __future__ import annotations

import random
import re

from deliberative.stage1 import label_text

_REFUSALS = ("I'm sorry, but I can't help with {phrase}.",
             "Sorry, I can't help with {phrase}.",
             "I'm sorry, I can't assist with {phrase}.",
             "I apologize, but I can't provide help with {phrase}.",
             "Sorry, but I can't help you with {phrase}.")
_SELF_HARM = ("I'm really sorry you're going through this. You're not alone, and you deserve support right now. "
              "Please reach out to someone you trust, and you can call or text 988 (the US crisis line) or contact "
              "your local emergency services at any time.",
              "It sounds like you're carrying a lot, and I'm glad you told me. You don't have to face this alone: "
              "please talk to someone you trust, or call or text 988 to reach a crisis line, any time of day. If you "
              "are in danger now, call your local emergency number.",
              "Thank you for telling me how you feel. You're not alone in this. A crisis line can help right now: "
              "call or text 988 in the US, or your local emergency services elsewhere, and consider reaching out to "
              "a friend or family member you trust.")
# Said first when the request is for methods (SH.5): the methods are declined, the person is not.
_SELF_HARM_METHODS = ("I can't help with {phrase}, but I care about how you're doing. ",
                      "I won't share {phrase}, and I'm concerned about you. ")
_DISCLAIMERS = ("This is general information, not {adjective} advice; please talk to a {pro} about your own situation.",
                "Please treat this as general information rather than {adjective} advice: a {pro} can look at the "
                "details of your situation.",
                "I'm not a {pro_alone}, so this is general information and not a substitute for {adjective} advice; "
                "a {pro} can advise you on your specific case.")
# domain -> (disclaimer adjective, who to consult, that professional alone)
_DOMAINS = {'medical': ('medical', 'doctor or pharmacist', 'doctor'),
            'legal': ('legal', 'qualified lawyer', 'lawyer'),
            'financial': ('financial', 'qualified financial advisor', 'financial advisor')}
_MONEY = re.compile(r'\b(?:tax|taxes|invest\w*|money|loan|debt|mortgage|stock|stocks|retire\w*|savings?|credit|'
                    r'budget|pension|insurance|bank\w*|crypto\w*|income|finance|financial)\b', re.I)
_HEALTH = re.compile(r'\b(?:symptom\w*|dose|doses|dosage|medicine\w*|medication\w*|pain|pill\w*|doctor|sick|'
                     r'fever|rash|blood|pregnan\w*|diagnos\w*|prescri\w*|health)\b', re.I)


def refusal(rng: random.Random, prompt: str) -> str:
  return rng.choice(_REFUSALS).format(phrase=label_text.request_phrase(prompt))


def self_harm_safe_completion(rng: random.Random, prompt: str, asks_for_methods: bool) -> str:
  body = rng.choice(_SELF_HARM)
  if not asks_for_methods:
    return body
  return rng.choice(_SELF_HARM_METHODS).format(phrase=label_text.request_phrase(prompt)) + body


def domain_of(prompt: str, clause_text: str) -> str:
  """Which professional a regulated-advice answer refers to: the clause says medical or
  legal/financial; within legal/financial, money words in the request say financial."""
  if re.search(r'\bmedical\b', clause_text, re.I) or (_HEALTH.search(prompt) and not _MONEY.search(prompt)):
    return 'medical'
  return 'financial' if _MONEY.search(prompt) else 'legal'


def with_disclaimer(rng: random.Random, information: str, domain: str) -> str:
  adjective, pro, pro_alone = _DOMAINS[domain]
  closing = rng.choice(_DISCLAIMERS).format(adjective=adjective, pro=pro, pro_alone=pro_alone)
  return f'{information.strip()}\n\n{closing}'
