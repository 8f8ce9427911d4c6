"""Input pipeline: loss mask, packing, restore, sharding, overlong policy, prompts."""

import collections
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deliberative.data import packing, pipeline, schema, tfds_builder, tokenized
from deliberative.tokenizer.base import Segment
from deliberative.tokenizer.sentencepiece import Tokenizer

TOK = Tokenizer.load()


def record(i, cot_words=12, answer_words=6, prompt_words=8, **changes):
  base = {
      "id": f"r{i}", "prompt": f"request {i}: " + "please help " * prompt_words, "category": "illicit_behavior",
      "decision": "refuse", "cot": f"record {i} IB.2 " + "reason " * cot_words, "answer": "no thanks " * answer_words,
      "spec_version": "v1", "source": "test",
  }
  return schema.validate_record(dict(base, **changes))


def records(n, rng_seed=0):
  rng = np.random.default_rng(rng_seed)
  return [record(i, cot_words=int(rng.integers(0, 20)), answer_words=int(rng.integers(1, 8))) for i in range(n)]


def n_tokens(rec):
  return len(TOK.render_chat(rec["messages"], cot=rec["cot"], answer=rec["answer"])[0])


# Rows fit about three typical records whatever the tokenizer's compression; LONG words
# always overflow a row (every word is at least one token).
SEQ_LEN = 3 * int(np.mean([n_tokens(r) for r in records(40)]))
LONG = SEQ_LEN + 1


def config(**changes):
  cfg = pipeline.default_config()
  cfg.seq_len = SEQ_LEN
  cfg.update(changes)
  return cfg


def token_sequences(batches):
  """Each packed segment as (tokens..., last target): the record's full token sequence."""
  out = []
  for batch in batches:
    for seg in packing.unpack(batch):
      assert np.array_equal(seg["positions"], np.arange(len(seg["tokens"])))
      assert np.array_equal(seg["tokens"][1:], seg["targets"][:-1])  # shifted within the record
      out.append(tuple(seg["tokens"].tolist()) + (int(seg["targets"][-1]),))
  return out


def expected_sequences(recs):
  return [tuple(TOK.render_chat(r["messages"], cot=r["cot"], answer=r["answer"])[0]) for r in recs]


# -- loss mask ----------------------------------------------------------------------------------

texts = st.text(max_size=60) | st.sampled_from(["<|end|>", "<|answer|>", "<s>", "", "\n"])


@settings(max_examples=60, deadline=None)
@given(system=st.none() | texts, user=texts, cot=texts, answer=texts.filter(str.strip),
       loss_on=st.sampled_from(["cot_answer", "answer"]), packing_on=st.booleans())
def test_loss_mask_covers_answer_never_prompt(system, user, cot, answer, loss_on, packing_on):
  messages = ([{"role": "system", "content": system}] if system is not None else []) + [
      {"role": "user", "content": user or "x"}]
  rec = schema.validate_record({"id": "h", "messages": messages, "category": "none", "decision": "comply",
                                "cot": cot, "answer": answer, "spec_version": "v", "source": "h"})
  ids, labels = TOK.render_chat(rec["messages"], cot=rec["cot"], answer=rec["answer"])
  cfg = config(seq_len=len(ids) + 3, loss_on=loss_on, packing=packing_on)
  it = pipeline.iterator_from_records([rec, rec], cfg, TOK, global_batch_size=2, seed=0, num_epochs=1)
  for batch in it:
    for row in range(batch["tokens"].shape[0]):
      seg = batch["segment_ids"][row]
      target_labels = np.asarray(labels[1:], np.int8)
      for s in np.unique(seg[seg > 0]):
        weights = batch["weights"][row][seg == s]
        assert np.array_equal(batch["targets"][row][seg == s], ids[1:])
        covered = target_labels[weights > 0]
        assert not np.isin(covered, [Segment.SYSTEM, Segment.USER, Segment.PAD]).any()
        assert (weights[target_labels == Segment.ANSWER] == 1).all()
        cot_weight = weights[target_labels == Segment.COT]
        assert (cot_weight == (1 if loss_on == "cot_answer" else 0)).all()
      assert not batch["weights"][row][seg == 0].any()


# -- packing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("packing_on, lookahead", [(True, 1), (True, 8), (False, 1)])
def test_one_epoch_round_trips_every_record_once(packing_on, lookahead):
  recs = records(40)
  cfg = config(packing=packing_on, packing_lookahead=lookahead)
  it = pipeline.iterator_from_records(recs, cfg, TOK, global_batch_size=4, seed=3, num_epochs=1)
  batches = list(it)
  assert all(b[k].shape == (4, SEQ_LEN) for b in batches for k in packing.BATCH_KEYS)
  assert all(b["tokens"].dtype == np.int32 and b["weights"].dtype == np.float32 for b in batches)
  assert collections.Counter(token_sequences(batches)) == collections.Counter(expected_sequences(recs))
  stats = it.stats()
  assert stats["segments"] == 40 and stats["batches"] == len(batches)
  assert stats["tokens"] == sum(int((b["segment_ids"] > 0).sum()) for b in batches)
  if packing_on:
    assert stats["segments_per_row"] > 1.5 and stats["packing_efficiency"] > 0.6
  else:
    assert all(set(np.unique(b["segment_ids"])) <= {0, 1} for b in batches)


def test_deterministic_and_seed_dependent():
  recs = records(30)
  def first_batches(seed):
    it = pipeline.iterator_from_records(recs, config(), TOK, global_batch_size=2, seed=seed)
    return [next(it)["tokens"] for _ in range(5)]
  a, b, c = first_batches(0), first_batches(0), first_batches(1)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_restored_iterator_yields_the_same_next_batches():
  recs = records(25)
  cfg = config(packing_lookahead=4)
  it = pipeline.iterator_from_records(recs, cfg, TOK, global_batch_size=3, seed=0)
  for _ in range(17):  # past the first epoch, with deferred records in flight
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(4)]
  restored = pipeline.iterator_from_records(recs, cfg, TOK, global_batch_size=3, seed=0)
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    assert all(np.array_equal(want[k], got[k]) for k in packing.BATCH_KEYS)
  assert restored.stats() == it.stats()
  other = pipeline.iterator_from_records(recs, cfg, TOK, global_batch_size=3, seed=1)
  with pytest.raises(ValueError, match="another pipeline"):
    other.set_state(state)


def test_hosts_get_disjoint_equal_shards():
  recs = records(23)
  shards = [
      token_sequences(pipeline.iterator_from_records(recs, config(), TOK, global_batch_size=4, seed=0, num_epochs=1,
                                                     process_index=i, process_count=2))
      for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == 11  # 23 // 2 each; the remainder is unused
  assert not set(shards[0]) & set(shards[1])
  assert set(shards[0]) | set(shards[1]) <= set(expected_sequences(recs))
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.iterator_from_records(recs, config(), TOK, global_batch_size=3, seed=0, process_index=0, process_count=2)


# -- overlong ----------------------------------------------------------------------------------


def test_overlong_drop_is_counted():
  recs = records(30) + [record(100, cot_words=LONG)]
  cfg = config(overlong="drop", max_overlong_fraction=0.1)
  it = pipeline.iterator_from_records(recs, cfg, TOK, global_batch_size=2, seed=0, num_epochs=1)
  stats = it.stats()
  assert (stats["records"], stats["overlong"], stats["overlong_dropped"], stats["overlong_truncated"]) == (31, 1, 1, 0)
  assert len(token_sequences(it)) == 30


def test_overlong_truncate_cot_keeps_the_answer_whole():
  long = record(100, cot_words=LONG)
  cfg = config(overlong="truncate_cot", max_overlong_fraction=0.5)
  it = pipeline.iterator_from_records([long, record(1)], cfg, TOK, global_batch_size=2, seed=0, num_epochs=1)
  assert it.stats()["overlong_truncated"] == 1
  full_ids, labels = TOK.render_chat_arrays(long["messages"], cot=long["cot"], answer=long["answer"])
  answer_part = full_ids[labels == Segment.ANSWER].tolist()
  sequences = [s for s in token_sequences(it) if len(s) == cfg.seq_len + 1]
  assert len(sequences) == 1
  truncated = list(sequences[0])
  assert truncated[-len(answer_part) - 1] == TOK.control_id("answer")
  assert truncated[-len(answer_part):] == answer_part
  # Too long even without any CoT: dropped, and counted as such.
  huge_prompt = record(101, prompt_words=LONG)
  it = pipeline.iterator_from_records([huge_prompt, record(1)], cfg, TOK, global_batch_size=2, seed=0)
  assert it.stats()["overlong_dropped"] == 1


def test_overlong_trim_answer_ends_the_answer_on_a_whole_sentence():
  sentence = "Drop your weight and turn toward the thumb of the grabbing hand. "
  long = record(100, answer=sentence * 40)
  short_answer_only = record(102, answer="Keep it short " * 80)  # no sentence end anywhere: dropped
  cfg = config(overlong="trim_answer", max_overlong_fraction=0.9)
  it = pipeline.iterator_from_records([long, short_answer_only, record(1)], cfg, TOK, global_batch_size=2, seed=0,
                                      num_epochs=1)
  stats = it.stats()
  assert (stats["overlong"], stats["overlong_truncated"], stats["overlong_dropped"]) == (2, 1, 1)
  trimmed = tokenized.trim_answer(TOK, long, cfg.loss_on, cfg.seq_len + 1)
  answer_ids = trimmed.ids[trimmed.labels == Segment.ANSWER]
  text = TOK.decode([t for t in answer_ids.tolist() if t not in TOK.stop_ids])
  assert text.strip().endswith("grabbing hand.") and len(trimmed.ids) <= cfg.seq_len + 1
  assert trimmed.ids[-1] in TOK.stop_ids  # the turn still ends: the model learns to stop there
  # The next sentence would not have fitted: the cut is the longest one that does.
  longer = tokenized.tokenize_trace(TOK, {**long, "answer": text.strip() + " " + sentence.strip()}, cfg.loss_on)
  assert len(longer.ids) > cfg.seq_len + 1


def test_max_answer_tokens_cuts_long_answers_at_a_sentence_end_and_counts_them():
  sentence = "Drop your weight and turn toward the thumb of the grabbing hand. "
  long = record(100, answer=sentence * 6)
  no_end = record(102, answer="keep it short " * 30)  # nothing to cut at: kept whole, counted
  budget = 40  # two sentences fit, three do not (a cut keeps at least sentences.MIN_CHARS)
  cfg = config(max_answer_tokens=budget, seq_len=512)
  traces = tokenized.tokenize_traces(tokenized.as_records([long, no_end, record(1)]), TOK, seq_len=512,
                                     loss_on=cfg.loss_on, overlong=cfg.overlong, max_overlong_fraction=0.0,
                                     process_index=0, process_count=1, where="t", max_answer_tokens=budget)
  assert (traces.overlong.answers_trimmed, traces.overlong.answers_uncut) == (1, 1)
  answer_lengths = [int((t.labels == Segment.ANSWER).sum()) for t in traces.items]
  assert answer_lengths[0] <= budget < answer_lengths[1]
  text = TOK.decode([t for t in traces.items[0].ids[traces.items[0].labels == Segment.ANSWER].tolist()
                     if t not in TOK.stop_ids])
  assert text.strip().endswith("grabbing hand.") and traces.items[0].ids[-1] in TOK.stop_ids
  assert answer_lengths[2] == int((tokenized.tokenize_trace(TOK, record(1), cfg.loss_on).labels == Segment.ANSWER).sum())
  it = pipeline.iterator_from_records([long, no_end, record(1)], cfg, TOK, global_batch_size=2, seed=0, num_epochs=1)
  assert it.stats()["answers_trimmed"] == 1


def test_overlong_bound_fails_with_counts():
  recs = records(10) + [record(100 + i, cot_words=LONG) for i in range(3)]
  with pytest.raises(tokenized.OverlongError, match=rf"3 of 13 records \(23\.1%\) exceed {SEQ_LEN + 1} tokens.*bound 5\.0%"):
    pipeline.iterator_from_records(recs, config(), TOK, global_batch_size=2, seed=0)


def test_overlong_error_never_suggests_the_policy_in_use():
  recs = records(10) + [record(100 + i, cot_words=LONG) for i in range(3)]
  longest = max(n_tokens(r) for r in recs)
  with pytest.raises(tokenized.OverlongError) as e:
    pipeline.iterator_from_records(recs, config(overlong="truncate_cot"), TOK, global_batch_size=2, seed=0)
  message = str(e.value)
  assert "overlong='truncate_cot'" not in message.split("over the bound")[1]
  assert f"raise seq_len ({longest - 1} fits every record whole; now seq_len={SEQ_LEN})" in message
  assert message.endswith("or raise max_overlong_fraction")
  # Under 'drop', truncation is the useful advice, with how many it would keep.
  with pytest.raises(tokenized.OverlongError, match=r"use overlong='truncate_cot' \(it would keep 3 of the 3 "):
    pipeline.iterator_from_records(recs, config(overlong="drop"), TOK, global_batch_size=2, seed=0)


@pytest.mark.parametrize("overlong", ["truncate_cot", "drop"])
def test_seq_len_below_every_record_says_how_far_to_raise_it(overlong):
  recs = [record(i, prompt_words=20 + i) for i in range(4)]
  with pytest.raises(tokenized.OverlongError) as e:
    pipeline.iterator_from_records(recs, config(seq_len=8, overlong=overlong), TOK, global_batch_size=2, seed=0)
  message = str(e.value)
  assert "use overlong" not in message and "max_overlong_fraction" not in message.split("over the bound")[1]
  needed = int(message.split("raise seq_len to at least ")[1].split()[0].rstrip(","))
  assert "seq_len=8 is too small for every record" in message
  # The number is exact: one less and nothing fits; at it, the shortest record fits.
  cfg = config(seq_len=needed - 1, overlong=overlong, max_overlong_fraction=1.0)
  with pytest.raises(tokenized.EmptyDatasetError, match=rf"no record fits in seq_len={needed - 1}: .* {needed}\b"):
    pipeline.iterator_from_records(recs, cfg, TOK, global_batch_size=2, seed=0)
  cfg.seq_len = needed
  it = pipeline.iterator_from_records(recs, cfg, TOK, global_batch_size=2, seed=0)
  assert it.stats()["records"] == 4 and it.stats()["overlong_dropped"] == 3


def test_truncate_cot_weights_stay_aligned():
  rec = record(7, cot_words=100)
  trace = tokenized.tokenize_trace(TOK, rec, "cot_answer")
  cut = tokenized.truncate_cot(trace, len(trace.ids) - 50)
  assert len(cut.ids) == len(trace.ids) - 50 and len(cut.target_weights) == len(cut.ids) - 1
  expected = np.isin(cut.labels[1:], [Segment.COT, Segment.ANSWER]).astype(np.float32)
  assert np.array_equal(cut.target_weights, expected)


# -- TFDS-backed iterators and prompts -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline_data")
  jsonl = root / "jsonl"
  schema.write_jsonl(jsonl / "train.jsonl", records(20))
  prompts = [{k: v for k, v in r.items() if k not in ("cot", "answer")} for r in records(7)]
  schema.write_jsonl(jsonl / "prompts.jsonl", prompts)
  tfds_builder.build_dataset(jsonl, root / "data", "tiny")
  return config(data_dir=str(root / "data"), dataset="tiny")


def test_make_iterator_reads_tfds(tiny_dataset):
  it = pipeline.make_iterator(tiny_dataset, TOK, "train", global_batch_size=4, seed=0, num_epochs=1,
                              process_index=0, process_count=1)
  assert collections.Counter(token_sequences(it)) == collections.Counter(expected_sequences(records(20)))
  stats = it.stats()
  assert stats["mean_answer_tokens"] > 0 and stats["mean_cot_tokens"] > stats["mean_answer_tokens"] / 10


def test_empty_shard_names_the_dataset(tiny_dataset):
  with pytest.raises(tokenized.EmptyDatasetError, match=r"tiny/1\.0\.0\[prompts\].*7 records"):
    pipeline.make_prompt_iterator(tiny_dataset, TOK, "prompts", batch_size=1, process_index=0, process_count=8)


def test_prompt_iterator_pads_left_and_restores(tiny_dataset):
  it = pipeline.make_prompt_iterator(tiny_dataset, TOK, "prompts", batch_size=3, process_index=0, process_count=1)
  first = next(it)
  state = it.get_state()
  rest = list(it)
  assert [b.valid.sum() for b in [first, *rest]] == [3, 3, 1]
  assert [r["id"] for b in [first, *rest] for r, v in zip(b.records, b.valid) if v] == [f"r{i}" for i in range(7)]
  row, rec = 0, first.records[0]
  n = first.lengths[row]
  ids = TOK.render_chat(rec["messages"], add_generation_prompt=True)[0]
  assert first.tokens[row, -n:].tolist() == ids and ids[-1] == TOK.control_id("think")
  assert (first.tokens[row, :-n] == TOK.pad_id).all() and (first.segment_ids[row, :-n] == 0).all()
  assert first.positions[row, -n:].tolist() == list(range(n))
  restored = pipeline.make_prompt_iterator(tiny_dataset, TOK, "prompts", batch_size=3, process_index=0,
                                           process_count=1)
  restored.set_state(state)
  assert np.array_equal(next(restored).tokens, rest[0].tokens)


def test_prompt_iterator_drops_overlong_prompts(tiny_dataset):
  cfg = config(**{**tiny_dataset.to_dict(), "max_prompt_len": 10, "max_overlong_fraction": 1.0})
  with pytest.raises(tokenized.EmptyDatasetError, match="no prompt fits"):
    pipeline.make_prompt_iterator(cfg, TOK, "prompts", batch_size=2, process_index=0, process_count=1)
  cfg.max_overlong_fraction = 0.5
  with pytest.raises(tokenized.OverlongError, match="7 of 7") as e:
    pipeline.make_prompt_iterator(cfg, TOK, "prompts", batch_size=2, process_index=0, process_count=1)
  # The advice names the prompt setting, not the SFT ones.
  assert "max_prompt_len=10 is too small for every record" in str(e.value)
  assert "seq_len" not in str(e.value) and "overlong=" not in str(e.value)


def test_first_fit_decreasing_places_longest_first_and_opens_rows_only_when_needed():
  assert packing.first_fit_decreasing([5, 3, 4, 2], 7) == [(0, 0), (1, 4), (1, 0), (0, 5)]
  assert packing.first_fit_decreasing([], 7) == []
  with pytest.raises(ValueError, match="length 8 exceeds the row capacity 7"):
    packing.first_fit_decreasing([8], 7)
