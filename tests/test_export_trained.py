"""A briefly trained SFT run, exported, behaves identically in `transformers`; export never
writes over the run it reads."""

import os
import re

import jax
import numpy as np
import pytest
import torch
import transformers

from deliberative import train
from deliberative.data import pipeline
from deliberative.model import loading
from deliberative.weights import source
from deliberative.inference.sampler import Sampler, SamplingParams
from deliberative.tokenizer.sentencepiece import Tokenizer
from tests.train_fixtures import tiny_sft_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory, demo_data_dir):
  root = tmp_path_factory.mktemp('export')
  config = tiny_sft_config(demo_data_dir, total_steps=3)
  workdir = str(root / 'run')
  train.run(config, workdir)
  return config, workdir


@pytest.fixture(scope='module')
def trained_export(trained_run):
  import tools.export_hf
  config, workdir = trained_run
  out = os.path.join(os.path.dirname(workdir), 'hf')
  assert tools.export_hf.main(['--checkpoint', workdir, '--out', out]) == 0
  cfg, model, _ = source.load(workdir)
  return config, cfg, model, out


def test_exported_logits_equal_ours(trained_export):
  _, _, model, out = trained_export
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  ids = np.random.default_rng(0).integers(0, 4096, size=(2, 40))
  ours = np.asarray(model(jax.numpy.asarray(ids))[0])
  with torch.no_grad():
    theirs = hf_model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_chat_template_and_greedy_generate_match(trained_export):
  config, cfg, model, out = trained_export
  tokenizer = Tokenizer.load()
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  items = pipeline.load_prompts(config.data, tokenizer, 'eval').items[:3]  # held-out templates
  sampler = Sampler(cfg, stop_ids=[tokenizer.control_id('<|end|>'), tokenizer.eos_id], pad_id=tokenizer.pad_id)
  for record, prompt_ids in items:
    messages = [{'role': 'user', 'content': record['prompt']}]
    templated = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    templated = templated['input_ids'] if hasattr(templated, 'keys') else templated
    assert list(templated) == list(prompt_ids)
    ours = sampler(loading.params_of(model), [prompt_ids], jax.random.key(0),
                   SamplingParams(max_new_tokens=24)).completion(0)
    with torch.no_grad():
      generated = hf_model.generate(torch.tensor([prompt_ids]), max_new_tokens=24, do_sample=False)
    assert generated[0, len(prompt_ids):].tolist() == ours


def _tree(directory):
  """Every path under `directory` with its size and mtime: equal before and after = untouched."""
  out = {}
  for parent, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(parent, name)
      st = os.lstat(path)
      out[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns)
  return out


def test_export_refuses_out_that_is_in_or_around_the_run(trained_run, tmp_path, capsys):
  import tools.export_hf
  _, workdir = trained_run
  ckpt = os.path.join(workdir, 'checkpoints')
  assert {'checkpoints', 'metrics.jsonl'} <= set(os.listdir(workdir))
  before = _tree(workdir)
  link = tmp_path / 'link'
  link.symlink_to(workdir)
  real_w, real_c = os.path.realpath(workdir), os.path.realpath(ckpt)
  cases = [  # (--checkpoint, --out, what the error must say)
      (workdir, workdir, f'is the workdir {real_w}'),
      (ckpt, workdir, f'is the workdir {real_w}'),  # the workdir of a root W/checkpoints is W
      (workdir, ckpt, f'is the checkpoint {real_c}'),
      (workdir, os.path.join(workdir, 'hf'), f'lies inside the workdir {real_w}'),
      (workdir, os.path.join(ckpt, 'hf'), f'lies inside the checkpoint {real_c}'),
      (workdir, os.path.dirname(workdir), f'contains the workdir {real_w}'),
      (workdir, str(link), f'(= {real_w}) is the workdir {real_w}'),  # a symlink does not hide it
      (workdir, str(link / 'export'), f'lies inside the workdir {real_w}'),
  ]
  for checkpoint, out, says in cases:
    for overwrite in ([], ['--overwrite']):
      with pytest.raises(SystemExit) as e:
        tools.export_hf.main(['--checkpoint', checkpoint, '--out', out, *overwrite])
      assert e.value.code == 2
      err = capsys.readouterr().err
      assert f'--out {out}' in err and says in err, (checkpoint, out, overwrite, err)
  assert _tree(workdir) == before


def _refused(capsys, argv, pattern):
  """The export tool's one-line error (exit 1, no traceback) for a user's mistake."""
  import tools.export_hf
  assert tools.export_hf.main(argv) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and len(err.strip().splitlines()) == 1 and re.search(pattern, err), err


def test_overwrite_replaces_only_a_previous_export(trained_run, tmp_path, capsys):
  import tools.export_hf
  _, workdir = trained_run
  out = tmp_path / 'hf'
  args = ['--checkpoint', workdir, '--out', str(out)]
  assert tools.export_hf.main(args) == 0
  _refused(capsys, args, 'exists')
  first = _tree(out)
  assert tools.export_hf.main([*args, '--overwrite']) == 0  # a previous export: replaced
  assert _tree(out).keys() == first.keys() and _tree(out) != first
  (out / 'notes.txt').write_text('mine')
  (out / 'runs').mkdir()
  kept = _tree(out)
  _refused(capsys, [*args, '--overwrite'], r'holds files an export does not write \(notes\.txt, runs\)')
  assert _tree(out) == kept
  other = tmp_path / 'other'
  other.mkdir()
  for i in range(7):
    (other / f'f{i}.txt').write_text('work')
  _refused(capsys, ['--checkpoint', workdir, '--out', str(other), '--overwrite'],
           r'\(f0\.txt, f1\.txt, f2\.txt, f3\.txt, f4\.txt and 2 more\)')
  assert sorted(os.listdir(other)) == [f'f{i}.txt' for i in range(7)]
