"""A judge made ready for a run: the tokenizer it reads with and a `Judge` built with the prompt format
judge/format.py resolved. The RL trainer, stage 1 and the tools that measure the RL judge (AOT,
benchmark) all build it here, so they size and prompt it alike.

    fmt = format.resolve(config.judge_init, config.judge, spec.version)
    judge = load.rl_judge(config, judge_cfg, load.judge_tokenizer(config, tokenizer), spec, rows,
                          batch_multiple, fmt, mesh, rules)

The judge's weights are loaded as any model's are (trainers/state.py, inference.Policy); only what
is the judge's own is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deliberative.judge.model import Judge
from deliberative.judge.prompt import suffix_overhead
from deliberative.model.config import ModelConfig
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.weights import source


def judge_tokenizer(config, policy_tokenizer: Tokenizer, judge_src: source.ModelSource | None = None) -> Tokenizer:
  """The tokenizer the judge reads with: its own (a real model's; what an Orbax judge recorded),
  else the policy's (a judge from before tokenizers were recorded). `judge_src`: judge_init opened."""
  if config.tokenizer:  # the user's choice applies to the whole run
    return policy_tokenizer
  return source.open_source(judge_src or config.judge_init, 'judge_init').tokenizer() or policy_tokenizer


def build(model_cfg: ModelConfig, tokenizer: Tokenizer, spec: Spec, fmt: Mapping[str, Any], **kwargs) -> Judge:
  """A Judge prompted as `fmt` says (rubric, spec view, max_len); `kwargs` are Judge's own (buckets,
  mesh, answer_and_cot, ...)."""
  return Judge(model_cfg, tokenizer, spec, rubric=fmt['rubric'], spec_view=fmt['spec_view'], max_len=fmt['max_len'],
               **kwargs)


def rl_judge(config, judge_cfg: ModelConfig, tokenizer: Tokenizer, spec: Spec, rows: int,
             batch_multiple: int, fmt: Mapping[str, Any], mesh, rules) -> Judge:
  """The RL run's judge: one batch bucket and a suffix-length bucket sized for the longest rollout, so
  judging an RL step always reuses one compiled program (whatever the answers' lengths)."""
  # The answers are the policy's text re-encoded by the judge's tokenizer: their length in the
  # policy's tokens is a guide, the slack covers the difference, and max_len is the last bucket.
  overhead = suffix_overhead(tokenizer) + 16
  top = -(-fmt['max_len'] // 8) * 8
  round32 = lambda n: min(-(-n // 32) * 32, top)
  P = config.data.max_prompt_len
  longest_answers = (config.rl.max_new_tokens, config.evals.max_new_tokens)
  buckets = sorted({top, *(round32(P + n + overhead) for n in longest_answers)})
  return build(judge_cfg, tokenizer, spec, fmt, batch_buckets=(config.judge.batch_size or rows,),
               length_buckets=buckets, batch_multiple=batch_multiple, mesh=mesh, rules=rules)
