"""TFDS array_record build from JSONL, read back through grain, without TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deliberative.data import datasets, schema, tfds_builder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import build_dataset  # noqa: E402


def trace(i, **extra):
  return {"id": f"t{i}", "prompt": f"question {i} ünï\n", "category": "violence", "decision": "refuse",
          "cot": f"VI.{i} applies", "answer": f"No {i}.", "score": 0.1 * i, "spec_version": "v1",
          "source": "test", **extra}


def prompt(i):
  return {"id": f"p{i}", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": f"q{i}"}],
          "category": "none", "decision": "comply", "spec_version": "v1", "source": "test"}


def write_jsonl_dir(root: Path, n_train=5) -> Path:
  root.mkdir(parents=True, exist_ok=True)
  schema.write_jsonl(root / "train.jsonl", [trace(i, tags=["x", i]) for i in range(n_train)])
  schema.write_jsonl(root / "eval_prompts.jsonl", [prompt(i) for i in range(3)])
  return root


def test_build_and_read_without_tensorflow(tmp_path):
  jsonl = write_jsonl_dir(tmp_path / "jsonl")
  # A fresh interpreter, so nothing imported by other tests can hide a TensorFlow import.
  script = textwrap.dedent(f"""
      import json, sys
      import grain
      import tensorflow_datasets as tfds
      from deliberative.data import schema, tfds_builder
      version_dir = tfds_builder.build_dataset({str(jsonl)!r}, {str(tmp_path / 'data')!r}, "toy")
      out = {{}}
      for split in ("train", "eval_prompts"):
        source = tfds.builder_from_directory(str(version_dir)).as_data_source(split=split)
        records = grain.MapDataset.source(source).map(tfds_builder.record_from_example)
        out[split] = [records[i] for i in range(len(records))]
        assert out[split] == schema.read_jsonl({str(jsonl)!r} + "/" + split + ".jsonl"), split
      assert "tensorflow" not in sys.modules, "TensorFlow was imported"
      print(json.dumps({{k: len(v) for k, v in out.items()}}))
  """)
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {"train": 5, "eval_prompts": 3}


def test_extra_fields_score_and_messages_survive(tmp_path):
  jsonl = write_jsonl_dir(tmp_path / "jsonl")
  version_dir = tfds_builder.build_dataset(jsonl, tmp_path / "data", "toy")
  assert version_dir == tmp_path / "data" / "toy" / tfds_builder.FORMAT_VERSION
  assert tfds_builder.split_counts(version_dir) == {"train": 5, "eval_prompts": 3}
  source = tfds_builder.open_source(version_dir, "train")
  record = tfds_builder.record_from_example(source[3])
  assert record["tags"] == ["x", 3] and record["score"] == 0.1 * 3 and record["cot"] == "VI.3 applies"
  prompt_record = tfds_builder.record_from_example(tfds_builder.open_source(version_dir, "eval_prompts")[1])
  assert prompt_record["messages"][0] == {"role": "system", "content": "sys"}
  assert not schema.is_trace(prompt_record)
  metadata = tfds_builder.read_metadata(version_dir)
  assert metadata["spec_versions"] == ["v1"] and metadata["fingerprint"] == tfds_builder.fingerprint(jsonl)
  with pytest.raises(KeyError, match="no split 'test'"):
    tfds_builder.open_source(version_dir, "test")


def test_rebuild_reuses_refuses_or_replaces(tmp_path):
  jsonl = write_jsonl_dir(tmp_path / "jsonl")
  version_dir = tfds_builder.build_dataset(jsonl, tmp_path / "data", "toy")
  info_mtime = (version_dir / "dataset_info.json").stat().st_mtime_ns
  assert tfds_builder.build_dataset(jsonl, tmp_path / "data", "toy") == version_dir
  assert (version_dir / "dataset_info.json").stat().st_mtime_ns == info_mtime  # reused, not rebuilt
  write_jsonl_dir(jsonl, n_train=7)
  with pytest.raises(FileExistsError, match="different build"):
    tfds_builder.build_dataset(jsonl, tmp_path / "data", "toy")
  tfds_builder.build_dataset(jsonl, tmp_path / "data", "toy", overwrite=True)
  assert tfds_builder.split_counts(version_dir)["train"] == 7
  assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["toy"]  # no staging left behind


def test_bad_input_fails_before_writing(tmp_path):
  jsonl = write_jsonl_dir(tmp_path / "jsonl")
  with (jsonl / "train.jsonl").open("a") as f:
    f.write(json.dumps(trace(99, category="bogus")) + "\n")
  with pytest.raises(schema.SchemaError, match=r"train.jsonl:6: field 'category'.*valid: "):
    tfds_builder.build_dataset(jsonl, tmp_path / "data", "toy")
  assert not (tmp_path / "data" / "toy").exists()
  (jsonl / "train.jsonl").unlink()
  schema.write_jsonl(jsonl / "eval-set.jsonl", [trace(1)])
  with pytest.raises(schema.SchemaError, match="not a valid split name"):
    tfds_builder.build_dataset(jsonl, tmp_path / "data", "toy")
  with pytest.raises(ValueError, match="must be lower_snake_case"):
    tfds_builder.builder_class("Bad-Name")


def test_build_dataset_cli(tmp_path, capsys):
  jsonl = write_jsonl_dir(tmp_path / "jsonl")
  assert build_dataset.main(["--jsonl", str(jsonl), "--data_dir", str(tmp_path / "data"), "--name", "cli"]) == 0
  out = capsys.readouterr().out
  assert "eval_prompts" in out and "3 records" in out and "5 records" in out
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": 1}\n')
  assert build_dataset.main(["--jsonl", str(bad), "--data_dir", str(tmp_path / "data")]) == 1
  assert f"{bad}:1: field 'id'" in capsys.readouterr().err


def test_resolve_dataset_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
    datasets.resolve_dataset(tmp_path, "missing")


def test_default_data_dir_env(monkeypatch, tmp_path):
  monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
  assert datasets.default_data_dir() == tmp_path
  monkeypatch.delenv(datasets.DATA_DIR_ENV)
  assert datasets.default_data_dir() == Path.home() / ".cache" / "deliberative" / "data"


def test_demo_dataset_builds_once(tmp_path):
  pytest.importorskip("deliberative.data.demo")
  sizes = {"train": 40, "eval": 10, "eval_overrefuse": 10, "eval_jailbreak": 10, "judge_train": 10,
           "judge_eval": 10, "rl": 10}
  version_dir = datasets.ensure_demo_dataset(tmp_path, sizes=sizes)
  counts = tfds_builder.split_counts(version_dir)
  assert {"train", "eval", "eval_overrefuse", "eval_jailbreak", "judge_train", "judge_eval"} <= set(counts)
  assert counts["train"] == 40 and all(n > 0 for n in counts.values())
  metadata = tfds_builder.read_metadata(version_dir)
  stamp = datasets.demo_stamp(sizes=sizes)
  assert {k: metadata[k] for k in stamp} == stamp
  mtime = (version_dir / "dataset_info.json").stat().st_mtime_ns
  assert datasets.ensure_demo_dataset(tmp_path, sizes=sizes) == version_dir
  assert (version_dir / "dataset_info.json").stat().st_mtime_ns == mtime
  # A different generator setting is a stale build: rebuilt in place.
  datasets.ensure_demo_dataset(tmp_path, sizes={**sizes, "train": 30})
  assert tfds_builder.split_counts(version_dir)["train"] == 30
