"""JSONL schema: normalisation, extras, and errors that name file:line and field."""

import json

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
  (tmp_path / "ignored.txt").write_text("not jsonl")
  assert [r["id"] for r in schema.read_jsonl(tmp_path)] == ["a1", "a2", "b1"]
  assert list(schema.read_jsonl_splits(tmp_path)) == ["a", "b"]


def test_write_then_read_round_trips(tmp_path):
  records = [schema.validate_record(dict(TRACE, prompt="ünï\ncode")), schema.validate_record(dict(PROMPT, id="p1"))]
  path = schema.write_jsonl(tmp_path / "out" / "x.jsonl", records)
  assert schema.read_jsonl(path) == records
