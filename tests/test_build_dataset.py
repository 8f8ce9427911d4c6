"""tools/build_dataset.py on awkward input: nothing skipped silently, errors name file:line."""

import json
import sys
from pathlib import Path

import pytest

from deliberative.data import schema, tfds_builder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import build_dataset  # noqa: E402


def prompt(i, text=None, **changes):
  return {"id": f"p{i}", "prompt": text or f"question number {i}", "category": "none", "decision": "comply",
          "spec_version": "v1", "source": "test", **changes}


def build(capsys, jsonl, tmp_path, *flags):
  code = build_dataset.main(["--jsonl", str(jsonl), "--data_dir", str(tmp_path / "data"), "--name", "toy", *flags])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_every_jsonl_in_any_case_and_folder_is_built(tmp_path, capsys):
  # The reported bug: 15 records in, 5 built, no word. Now all 15, and the report says how.
  jsonl = tmp_path / "jsonl"
  schema.write_jsonl(jsonl / "train.jsonl", [prompt(i) for i in range(5)])
  schema.write_jsonl(jsonl / "more" / "train.JSONL", [prompt(i) for i in range(5, 10)])
  schema.write_jsonl(jsonl / "held" / "out" / "Eval.Jsonl", [prompt(i) for i in range(10, 15)])
  (jsonl / ".DS_Store").write_bytes(b"\0")
  code, out, err = build(capsys, jsonl, tmp_path)
  assert code == 0, err
  assert tfds_builder.split_counts(tmp_path / "data" / "toy" / tfds_builder.FORMAT_VERSION) == {"train": 10, "Eval": 5}
  assert "3 *.jsonl files -> 2 splits" in out and "read 15 records from 3 file(s)" in out
  assert "split 'train' is fed by 2 files, in this order: more/train.JSONL, train.jsonl" in out
  assert "skipped 1 hidden name: .DS_Store" in out


def test_other_files_are_refused_by_name_or_ignored_out_loud(tmp_path, capsys):
  jsonl = tmp_path / "jsonl"
  schema.write_jsonl(jsonl / "train.jsonl", [prompt(0)])
  (jsonl / "README.md").write_text("notes")
  (jsonl / "old").mkdir()
  (jsonl / "old" / "train.jsonl.bak").write_text("{}")
  code, out, err = build(capsys, jsonl, tmp_path)
  assert code == 1 and "2 files not named *.jsonl: README.md, old/train.jsonl.bak" in err
  assert not (tmp_path / "data" / "toy").exists()
  code, out, err = build(capsys, jsonl, tmp_path, "--ignore", "*.md", "--ignore", "old")
  assert code == 0, err
  assert "left out 2 names matching an ignore pattern: old/, README.md" in out


def test_train_eval_overlap_is_an_error_unless_allowed(tmp_path, capsys):
  jsonl = tmp_path / "jsonl"
  train = schema.write_jsonl(jsonl / "train.jsonl", [prompt(0), prompt(1, "How do I pick a lock?"), prompt(2),
                                                     prompt(3, "question number 2")])
  evaluation = schema.write_jsonl(jsonl / "eval_prompts.jsonl", [prompt(5), prompt(6, "how do  I pick\na LOCK? ")])
  schema.write_jsonl(jsonl / "rl.jsonl", [prompt(7, "question number 5")])
  code, out, err = build(capsys, jsonl, tmp_path)
  assert code == 1, out
  assert "2 prompts appear in both a training and an evaluation split (1 in 'rl' and 'eval_prompts'; " \
         "1 in 'train' and 'eval_prompts')" in err
  assert f"{evaluation}:2 = {train}:2 ('how do i pick a lock?')" in err and "--allow_split_overlap" in err
  assert not (tmp_path / "data" / "toy").exists()
  code, out, err = build(capsys, jsonl, tmp_path, "--allow_split_overlap")
  assert code == 0, err
  assert "warning: 2 prompts appear in both" in out
  assert "split 'train': 1 of 4 records repeat a prompt of the same split (kept)" in out


def test_eval_split_names():
  assert all(map(tfds_builder.is_eval_split, ["eval", "eval_jailbreak", "judge_eval", "test", "Validation", "dev"]))
  assert not any(map(tfds_builder.is_eval_split, ["train", "rl", "judge_train", "evaluator_notes", "latest"]))


@pytest.mark.parametrize("name, payload, message", [
    ("latin1", json.dumps(prompt(1, "café"), ensure_ascii=False).encode("latin-1"),
     ":2: not valid UTF-8: byte 28 of the line is 0xe9"),
    ("surrogate", json.dumps(prompt(1, "bad \ud800"), ensure_ascii=True).encode(),
     ":2: field 'prompt': lone surrogate \\ud800"),
    ("deep", b"[" * 200_000 + b"]" * 200_000, ":2: JSON nested deeper than 64 levels"),
])
def test_bad_lines_name_file_and_line(tmp_path, capsys, name, payload, message):
  jsonl = tmp_path / "jsonl"
  jsonl.mkdir()
  path = jsonl / f"{name}.jsonl"
  path.write_bytes(json.dumps(prompt(0)).encode() + b"\n" + payload + b"\n")
  code, out, err = build(capsys, jsonl, tmp_path)
  assert code == 1 and f"error: {path}{message}" in err, err
  assert not (tmp_path / "data" / "toy").exists()
