"""A briefly trained SFT run, exported, behaves identically in `transformers`."""


import jax
import numpy as np
import pytest
import torch
import transformers

from deliberative import train
from deliberative.data import pipeline
from deliberative.model import loading
from deliberative.model.sampler import Sampler, SamplingParams
from deliberative.tokenizer import Tokenizer
from tests.train_fixtures import tiny_sft_config


@pytest.fixture(scope='module')
def trained_export(tmp_path_factory, demo_data_dir):
  import tools.export_hf
  root = tmp_path_factory.mktemp('export')
  config = tiny_sft_config(demo_data_dir, total_steps=3)
  workdir = str(root / 'run')
  train.run(config, workdir)
  out = str(root / 'hf')
  assert tools.export_hf.main(['--checkpoint', workdir, '--out', out]) == 0
  cfg, model, _ = loading.load(workdir)
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
