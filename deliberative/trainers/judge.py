"""Training the demo judge (a reward model) by SFT on graded (category, prompt, answer) records.

Each record becomes one judge prompt (spec view + rubric, the request, the quoted final
answer, `<|grade|>`) whose only loss-bearing target is the grade digit. The supervised job
of `supervised.py` (run by loop.py) does the rest; evaluation scores held-out records with
`Judge` (the spec-prefix KV cache on) and reports agreement with the labels: accuracy and
ROC AUC, overall and per category.
"""

from __future__ import annotations

import time

import numpy as np

from deliberative import judge as judge_lib
from deliberative.judge import metrics as judge_metrics, prompt as judge_prompt
from deliberative.data import datasets, pipeline, tokenized
from deliberative.model import sharding
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import runtime
from deliberative.trainers import state as state_lib
from deliberative.trainers import supervised


def _records(config, split: str, process_index: int | None = None, process_count: int | None = None) -> list[dict]:
  version_dir = datasets.resolve_dataset(config.data.data_dir, config.data.dataset)
  records, _ = pipeline.dataset_records(version_dir, split)
  rows = [dict(records[i]) for i in range(len(records))]
  if process_count is None:
    return rows
  return rows[tokenized.shard_indices(len(rows), process_index, process_count)]


def judge_split(config, tokenizer: Tokenizer, spec: Spec, split: str) -> tokenized.TokenizedSplit:
  """This host's judge examples as packable traces (only the grade digit carries loss)."""
  import jax
  rows = _records(config, split, jax.process_index(), jax.process_count())
  examples, stats = judge_prompt.render_judge_examples(
      tokenizer, spec, rows, rubric=config.judge.rubric, spec_view=config.judge.spec_view,
      max_len=config.data.seq_len, answer_and_cot=config.judge.answer_and_cot)
  traces = [tokenized.TokenizedTrace(ids=np.append(ex.tokens, ex.targets[-1]).astype(np.int32),
                                     labels=np.zeros(len(ex) + 1, np.int8), target_weights=ex.weights)
            for ex in examples]
  report = tokenized.OverlongReport(records=len(rows), overlong=stats['truncated'], truncated=stats['truncated'],
                                    limit_tokens=config.data.seq_len, policy='truncate_answer',
                                    max_fraction=config.data.max_overlong_fraction)
  where = f'{config.data.dataset}[{split}]'
  report.check(where)  # too many answers cut to fit: fail with the counts
  if report.truncated:
    runtime.log(f'judge data: {report.truncated}/{len(rows)} answers truncated to fit seq_len={config.data.seq_len}')
  lengths = [len(t.ids) for t in traces]
  return tokenized.TokenizedSplit(items=traces, overlong=report, token_means={'total': float(np.mean(lengths))},
                                  where=where)


class JudgeTask:
  def __init__(self, config, setup: state_lib.Setup, tokenizer: Tokenizer, spec: Spec):
    self.config, self.tokenizer = config, tokenizer
    self.traces = judge_split(config, tokenizer, spec, config.judge.train_split)
    runtime.log(f'judge data: {len(self.traces.items)} examples, mean {self.traces.token_means["total"]:.0f} tokens')
    mesh = setup.mesh
    self.judge = judge_lib.Judge(setup.model_cfg, tokenizer, spec, rubric=config.judge.rubric,
                                 spec_view=config.judge.spec_view, answer_and_cot=config.judge.answer_and_cot,
                                 max_len=config.data.seq_len,
                                 batch_multiple=sharding.batch_multiple(mesh, setup.rules), mesh=mesh,
                                 rules=setup.rules)
    self.eval_records = _records(config, config.judge.eval_split)[:config.evals.num_examples]

  def train_iterator(self):
    return pipeline.iterator_from_traces(
        self.traces, self.config.data, self.tokenizer, batch_rows=self.config.batch_size, seed=self.config.seed,
        signature={'dataset': self.config.data.dataset, 'split': self.config.judge.train_split, 'task': 'judge',
                   'rubric': self.config.judge.rubric, 'spec_view': self.config.judge.spec_view})

  def meta(self) -> dict:
    """How this judge reads its input: a judge used elsewhere (RL) must render prompts the same way."""
    j = self.config.judge
    return {'judge_format': {'rubric': j.rubric, 'spec_view': j.spec_view, 'answer_and_cot': j.answer_and_cot,
                             'max_len': self.config.data.seq_len}}

  def evaluate(self, params, step: int, workdir: str, *, at_start: bool) -> dict[str, float]:
    start = time.perf_counter()
    scores = self.judge.scores(params, self.eval_records, use_prefix_cache=self.config.judge.use_prefix_cache)
    labels = [bool(r['label']) if 'label' in r else r['grade'] >= 7 for r in self.eval_records]
    out = judge_metrics.judge_metrics(scores, labels, [r['category'] for r in self.eval_records])
    out = {k: v for k, v in out.items() if np.isfinite(v)}
    out['eval/judge_seconds'] = time.perf_counter() - start
    return out


model_config = supervised.model_config


def train(config, workdir: str, devices=None) -> dict:
  return supervised.run(config, workdir, lambda setup, tok, spec: JudgeTask(config, setup, tok, spec), devices)
