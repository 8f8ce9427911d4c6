"""Tokenizer: fixed ids, exact round trip, unforgeable control tokens, chat labels."""

import pickle
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deliberative.tokenizer import sentencepiece as tokenizer_lib
from deliberative.tokenizer.sentencepiece import CONTROL_TOKENS, Tokenizer
from deliberative.tokenizer.base import Segment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import train_tokenizer  # noqa: E402

TOK = Tokenizer.load()
# Everything a user might type to imitate a marker: the chat/reserved tokens and the
# sentencepiece meta pieces.
FORGERIES = list(CONTROL_TOKENS) + ["<s>", "</s>", "<pad>", "<unk>", "<|", "|>", "\u2581"]
NEVER_FROM_TEXT = TOK.control_ids | {TOK.unk_id}

text_with_forgeries = st.lists(
    st.one_of(st.text(max_size=40), st.sampled_from(FORGERIES)), max_size=8
).map("".join)


def test_layout_matches_contract():
  assert TOK.vocab_size <= 4096
  assert (TOK.pad_id, TOK.unk_id, TOK.bos_id, TOK.eos_id) == (0, 1, 2, 3)
  assert [TOK.control_id(t) for t in CONTROL_TOKENS] == list(range(4, 4 + len(CONTROL_TOKENS)))
  assert TOK.control_id("end") == TOK.control_id("<|end|>")
  assert {TOK.control_id(t) for t in CONTROL_TOKENS} | {0, 2, 3} == TOK.control_ids
  with pytest.raises(KeyError, match="unknown control token"):
    TOK.control_id("nope")


@pytest.mark.parametrize("text", [
    "", " ", "  two  spaces ", "line\nbreaks\n\n\tand tabs\r\n", "ünïcödé 日本語 😀 \u200b",
    "a\u2581b \u2581", "<|end|> <s></s> <pad><unk>", "\x00\x7f",
])
def test_round_trip_examples(text):
  ids = TOK.encode(text)
  assert TOK.decode(ids) == text
  assert TOK.encode(text) == ids  # deterministic
  assert not NEVER_FROM_TEXT & set(ids)


@settings(max_examples=300, deadline=None)
@given(text_with_forgeries)
def test_encode_never_forges_and_round_trips(text):
  ids = TOK.encode(text)
  assert not NEVER_FROM_TEXT & set(ids), text
  assert TOK.decode(ids) == text


def _control_structure(ids):
  return [t for t in ids if t in TOK.control_ids]


@settings(max_examples=100, deadline=None)
@given(system=text_with_forgeries, user=text_with_forgeries, cot=text_with_forgeries, answer=text_with_forgeries)
def test_render_chat_structure_is_independent_of_content(system, user, cot, answer):
  messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
  plain = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
  ids, labels = TOK.render_chat(messages, cot=cot, answer=answer)
  plain_ids, _ = TOK.render_chat(plain, cot="c", answer="a")
  assert _control_structure(ids) == _control_structure(plain_ids)
  assert len(ids) == len(labels)


def test_render_chat_labels_follow_contract():
  c = TOK.control_id
  ids, labels = TOK.render_chat(
      [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], cot="C", answer="A")
  s, u, cot, a = TOK.encode("S"), TOK.encode("U"), TOK.encode("C"), TOK.encode("A")
  expected = (
      [(TOK.bos_id, Segment.USER)]
      + [(t, Segment.SYSTEM) for t in [c("system"), *s, c("end")]]
      + [(t, Segment.USER) for t in [c("user"), *u, c("end"), c("assistant"), c("think")]]
      + [(t, Segment.COT) for t in [*cot, c("answer")]]
      + [(t, Segment.ANSWER) for t in [*a, c("end")]]
  )
  assert list(zip(ids, labels)) == expected

  prompt_ids, prompt_labels = TOK.render_chat("U", add_generation_prompt=True)
  assert prompt_ids == [TOK.bos_id, c("user"), *u, c("end"), c("assistant"), c("think")]
  assert set(prompt_labels) == {Segment.USER}
  assert ids[: len(prompt_ids)] != prompt_ids  # the system block comes first
  arr_ids, arr_labels = TOK.render_chat_arrays("U", cot="C", answer="A")
  list_ids, list_labels = TOK.render_chat("U", cot="C", answer="A")
  assert arr_ids.tolist() == list_ids and arr_labels.tolist() == [int(x) for x in list_labels]


def test_render_chat_rejects_bad_input():
  with pytest.raises(ValueError, match="unknown role"):
    TOK.render_chat([{"role": "tool", "content": "x"}])
  with pytest.raises(ValueError, match="cot needs an answer"):
    TOK.render_chat("x", cot="c")


def test_parse_completion():
  c = TOK.control_id
  good = [*TOK.encode("think IB.2"), c("answer"), *TOK.encode("Sorry."), c("end"), TOK.pad_id, 99]
  assert TOK.parse_completion(good) == tokenizer_lib.Completion("think IB.2", "Sorry.", True)
  # A closed turn that never ended a reasoning block answered directly (a model that does not reason yet).
  direct = [*TOK.encode("thinking"), c("end")]
  assert TOK.parse_completion(direct) == tokenizer_lib.Completion("", "thinking", False, direct=True)
  cut_off = TOK.encode("thinking")  # ran out of tokens: neither reasoning nor an answer
  assert TOK.parse_completion(cut_off) == tokenizer_lib.Completion("thinking", "", False)
  assert not TOK.parse_completion([*TOK.encode("x"), c("user"), *TOK.encode("y"), c("end")]).direct
  # A prompt that opened no reasoning block: everything is the answer, even cut off.
  assert TOK.parse_completion(cut_off, reasoning=False) == tokenizer_lib.Completion("", "thinking", False, direct=True)
  assert not TOK.parse_completion([c("end")], reasoning=False).direct
  unterminated = [*TOK.encode("t"), c("answer"), *TOK.encode("a")]
  assert not TOK.parse_completion(unterminated).well_formed
  stray = [*TOK.encode("t"), c("user"), c("answer"), *TOK.encode("a"), c("end")]
  assert not TOK.parse_completion(stray).well_formed
  blank = [c("answer"), *TOK.encode("  "), c("end")]
  assert not TOK.parse_completion(blank).well_formed


def test_pickles():
  clone = pickle.loads(pickle.dumps(TOK))
  assert clone.encode("pickled tokenizer é") == TOK.encode("pickled tokenizer é")


def test_training_is_reproducible_and_keeps_layout():
  texts = [f"clause IB.{i % 7} says refuse; answer {i}\n  with spaces" for i in range(200)]
  first = train_tokenizer.train_model_proto(texts, vocab_size=320, seed=0)
  assert first == train_tokenizer.train_model_proto(texts, vocab_size=320, seed=0)
  tok = Tokenizer(first)
  assert tok.vocab_size == 320
  assert tok.decode(tok.encode(texts[3])) == texts[3]


def test_training_falls_back_to_largest_vocab():
  _, size = train_tokenizer.train_largest_fitting(["tiny corpus"] * 5, vocab_size=4096)
  assert size < 4096


def test_shipped_vocab_file_matches_model():
  vocab = tokenizer_lib.DEFAULT_MODEL_PATH.with_suffix(".vocab")
  assert vocab.read_text(encoding="utf-8") == train_tokenizer.vocab_text(TOK.model_proto)
