"""JSONL schema: normalisation, extras, and errors that name file:line and field."""

import json
import re

import pytest

from deliberative.data import schema
from deliberative.data.schema import SchemaError

TRACE = {
    "id": "t1", "prompt": "How do I pick a lock?", "category": "illicit_behavior", "decision": "refuse",
    "cot": "IB.2 applies.", "answer": "Sorry, I can't help with that.", "score": 0.75,
    "spec_version": "abc123", "source": "test",
}
PROMPT = {k: v for k, v in TRACE.items() if k not in ("cot", "answer", "score")}


def write_lines(path, lines):
  """Writes dicts as JSON lines and strings verbatim (to plant malformed lines)."""
  text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
  path.write_text(text + "\n", encoding="utf-8")
  return path


def test_trace_and_prompt_records_are_normalised():
  trace = schema.validate_record(dict(TRACE, extra_field={"keep": [1]}))
  assert trace["messages"] == [{"role": "user", "content": TRACE["prompt"]}]
  assert trace["prompt"] == TRACE["prompt"] and trace["extra_field"] == {"keep": [1]}
  assert schema.is_trace(trace) and schema.extra_fields(trace) == {"extra_field": {"keep": [1]}}
  prompt = schema.validate_record(PROMPT)
  assert not schema.is_trace(prompt)
  # Normalised records validate again unchanged (they carry both prompt and messages).
  assert schema.validate_record(trace) == trace


def test_messages_form_and_null_score():
  record = {k: v for k, v in TRACE.items() if k != "prompt"}
  record["messages"] = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
  record["score"] = None
  out = schema.validate_record(record)
  assert out["prompt"] == "Hi" and "score" not in out


@pytest.mark.parametrize("change, field, message", [
    ({"category": "weapons"}, "category", "valid: erotic, extremism, harassment, illicit_behavior, "
                                           "regulated_advice, self_harm, violence, none"),
    ({"decision": "maybe"}, "decision", "valid: comply, refuse, safe_complete"),
    ({"id": ""}, "id", "empty"),
    ({"score": "high"}, "score", "finite number"),
    ({"score": True}, "score", "finite number"),
    ({"answer": 3}, "answer", "expected a string"),
    ({"messages": [{"role": "user", "content": "other"}]}, "prompt", "differs"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages", "unknown role 'bot'"),
])
def test_field_errors_name_the_field(change, field, message):
  with pytest.raises(SchemaError) as e:
    schema.validate_record(dict(TRACE, **change), where="f.jsonl:7")
  assert f"f.jsonl:7: field {field!r}" in str(e.value) and message in str(e.value)


def test_missing_fields():
  for field in ("id", "category", "decision", "spec_version", "source"):
    with pytest.raises(SchemaError, match=f"field '{field}': missing"):
      schema.validate_record({k: v for k, v in TRACE.items() if k != field})
  with pytest.raises(SchemaError, match="field 'cot': present without 'answer'"):
    schema.validate_record(dict(PROMPT, cot="x"))


def test_malformed_line_names_file_and_line(tmp_path):
  path = write_lines(tmp_path / "bad.jsonl", [TRACE, "{not json", PROMPT])
  with pytest.raises(SchemaError, match=rf"{path}:2: invalid JSON"):
    schema.read_jsonl(path)
  path = write_lines(tmp_path / "bad2.jsonl", [TRACE, "", dict(TRACE, id="t2", category="nope")])
  with pytest.raises(SchemaError, match=rf"{path}:3: field 'category': unknown category 'nope'; valid: "):
    schema.read_jsonl(path)
  path = write_lines(tmp_path / "dup.jsonl", [TRACE, TRACE])
  with pytest.raises(SchemaError, match=rf"{path}:2: field 'id': duplicate id 't1' \(first on line 1\)"):
    schema.read_jsonl(path)
  path = write_lines(tmp_path / "list.jsonl", ["[1, 2]"])
  with pytest.raises(SchemaError, match=rf"{path}:1: expected a JSON object"):
    schema.read_jsonl(path)


def test_empty_inputs_name_their_path(tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n\n")
  with pytest.raises(SchemaError, match=rf"{empty}: empty"):
    schema.read_jsonl(empty)
  empty_dir = tmp_path / "nothing"
  empty_dir.mkdir()
  with pytest.raises(SchemaError, match=rf"{empty_dir}: no \*\.jsonl files"):
    schema.read_jsonl(empty_dir)
  with pytest.raises(SchemaError, match="no such file"):
    schema.read_jsonl(tmp_path / "missing.jsonl")


def test_directory_reads_sorted_files(tmp_path):
  write_lines(tmp_path / "b.jsonl", [dict(TRACE, id="b1")])
  write_lines(tmp_path / "a.jsonl", [dict(TRACE, id="a1"), dict(PROMPT, id="a2")])
  assert [r["id"] for r in schema.read_jsonl(tmp_path)] == ["a1", "a2", "b1"]
  assert list(schema.read_jsonl_splits(tmp_path)) == ["a", "b"]


def test_directory_refuses_other_files_unless_ignored(tmp_path):
  write_lines(tmp_path / "a.jsonl", [TRACE])
  (tmp_path / "notes.txt").write_text("not jsonl")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "data.json").write_text("{}")
  with pytest.raises(SchemaError, match=r"2 files not named \*\.jsonl: notes\.txt, sub/data\.json; .*--ignore"):
    schema.read_jsonl(tmp_path)
  listing = schema.list_jsonl(tmp_path, ignore=("*.txt", "sub"))
  assert listing.ignored == ["sub/", "notes.txt"]
  assert [r["id"] for r in schema.read_jsonl(tmp_path, ("*.txt", "sub"))] == ["t1"]
  assert "left out 2 names matching an ignore pattern: sub/, notes.txt" in "\n".join(listing.describe())


def test_directory_is_read_recursively_in_any_case(tmp_path):
  write_lines(tmp_path / "a.jsonl", [dict(TRACE, id="a1")])
  write_lines(tmp_path / "B.JSONL", [dict(TRACE, id="b1"), dict(TRACE, id="b2")])
  (tmp_path / "sub" / "deeper").mkdir(parents=True)
  write_lines(tmp_path / "sub" / "c.Jsonl", [dict(TRACE, id="c1")])
  write_lines(tmp_path / "sub" / "deeper" / "a.jsonl", [dict(TRACE, id="a2")])
  (tmp_path / ".DS_Store").write_bytes(b"\0\1")
  (tmp_path / ".cache").mkdir()
  write_lines(tmp_path / ".cache" / "old.jsonl", [TRACE])
  listing = schema.list_jsonl(tmp_path)
  assert {k: [listing.relative(f) for f in v] for k, v in listing.splits.items()} == {
      "B": ["B.JSONL"], "a": ["a.jsonl", "sub/deeper/a.jsonl"], "c": ["sub/c.Jsonl"]}
  assert listing.hidden == [".cache/", ".DS_Store"]
  report = "\n".join(listing.describe())
  assert "4 *.jsonl files -> 3 splits" in report
  assert "split 'a' is fed by 2 files, in this order: a.jsonl, sub/deeper/a.jsonl" in report
  assert "skipped 2 hidden names: .cache/, .DS_Store" in report
  splits = schema.read_jsonl_splits(tmp_path)
  assert {k: [r["id"] for r in v] for k, v in splits.items()} == {"B": ["b1", "b2"], "a": ["a1", "a2"], "c": ["c1"]}
  assert len(schema.read_jsonl(tmp_path)) == 5


def test_split_names_and_ids_across_files(tmp_path):
  write_lines(tmp_path / "train.jsonl", [TRACE])
  (tmp_path / "en").mkdir()
  write_lines(tmp_path / "en" / "train.jsonl", [dict(TRACE, prompt="other")])
  # Sorted by path parts: en/train.jsonl is read before train.jsonl.
  with pytest.raises(SchemaError, match=rf"{tmp_path}/train.jsonl:1: field 'id': duplicate id 't1' in split "
                                        rf"'train' \(first at {tmp_path}/en/train.jsonl:1\)"):
    schema.read_jsonl_splits(tmp_path)
  (tmp_path / "en" / "train.jsonl").unlink()
  write_lines(tmp_path / "en" / "Train.jsonl", [dict(TRACE, id="t2")])
  with pytest.raises(SchemaError, match=r"split names \['Train', 'train'\] differ only in case"):
    schema.list_jsonl(tmp_path)


def test_non_utf8_names_file_line_and_byte(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes(json.dumps(TRACE).encode() + b"\n" + json.dumps(dict(TRACE, id="t2", prompt="caf\u00e9"))
                   .replace("\\u00e9", "\u00e9").encode("latin-1") + b"\n")
  column = json.dumps(dict(TRACE, id="t2", prompt="caf\u00e9")).index("\\u00e9") + 1
  with pytest.raises(SchemaError, match=rf"{path}:2: not valid UTF-8: byte {column} of the line is 0xe9"):
    schema.read_jsonl(path)


@pytest.mark.parametrize("line, field", [
    ('"prompt": "bad \\ud800 text"', "prompt"),
    ('"messages": [{"role": "user", "content": "x\\udfff"}]', "messages[0].content"),
    ('"prompt": "p", "meta": {"tags": ["ok", "\\ud83d"]}', "meta.tags[1]"),
])
def test_lone_surrogate_names_file_line_and_field(tmp_path, line, field):
  base = json.dumps({k: v for k, v in PROMPT.items() if k != "prompt"})
  path = tmp_path / "s.jsonl"
  path.write_text(json.dumps(dict(PROMPT, id="t0")) + "\n" + base[:-1] + ", " + line + "}\n")
  expected = re.escape(f"{path}:2: field {field!r}: lone surrogate \\u") + "(d800|dfff|d83d)"
  with pytest.raises(SchemaError, match=expected):
    schema.read_jsonl(path)


def test_escaped_surrogate_pair_is_valid_text(tmp_path):
  path = tmp_path / "emoji.jsonl"
  path.write_text(json.dumps(dict(PROMPT, prompt="smile \U0001F600"), ensure_ascii=True) + "\n")
  assert "\\ud83d\\ude00" in path.read_text()
  assert schema.read_jsonl(path)[0]["prompt"] == "smile \U0001F600"


def test_deep_nesting_is_an_error_with_file_and_line(tmp_path):
  path = tmp_path / "deep.jsonl"
  path.write_text(json.dumps(TRACE) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
  with pytest.raises(SchemaError, match=rf"{path}:2: JSON nested deeper than 64 levels \(at column 65"):
    schema.read_jsonl(path)
  # Brackets inside strings do not count; an extra field nested too deep does.
  brackets = dict(TRACE, cot="[" * 500 + "{" * 500, extra=[[["fine"]]])
  path.write_text(json.dumps(brackets) + "\n")
  assert schema.read_jsonl(path)[0]["cot"] == brackets["cot"]
  nested = "x"
  for _ in range(schema.MAX_DEPTH):
    nested = [nested]
  path.write_text(json.dumps(dict(TRACE, extra=nested)) + "\n")
  with pytest.raises(SchemaError, match=rf"{path}:1: JSON nested deeper"):
    schema.read_jsonl(path)
  # In-memory records are bounded too, before anything recurses.
  for _ in range(5_000):
    nested = [nested]
  with pytest.raises(SchemaError, match=r"r:1: field 'extra\[0\]\[0\]\[0\].*JSON nested deeper"):
    schema.validate_record(dict(TRACE, extra=nested), where="r:1")


def test_write_then_read_round_trips(tmp_path):
  records = [schema.validate_record(dict(TRACE, prompt="ünï\ncode")), schema.validate_record(dict(PROMPT, id="p1"))]
  path = schema.write_jsonl(tmp_path / "out" / "x.jsonl", records)
  assert schema.read_jsonl(path) == records
