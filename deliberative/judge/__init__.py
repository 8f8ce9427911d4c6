"""The judge G_RM, every concern of it: the model that grades a final answer against spec(category)
(`model`), its prompt and training targets (`prompt`), the metrics of its grades (`metrics`), the
prompt format a trained judge records (`format`), a judge built for a run with that format and its
tokenizer (`load`) and the option-token reader the model graders use (`options`).

What `deliberative.judge` exported as one module stays importable from here (Judge, the prompt's
names, the metrics), so `from deliberative.judge import Judge` keeps working."""

from deliberative.judge.format import JUDGE_FORMAT_FILE
from deliberative.judge.metrics import SCORE_THRESHOLD, judge_metrics, min_of_k, roc_auc, scores_from_logprobs
from deliberative.judge.model import Judge, PrefixCache
from deliberative.judge.prompt import (ANSWER_HEADER, COT_HEADER, DEFAULT_RUBRIC, GRADE_PROMPT, NUM_GRADES,
                                       REQUEST_HEADER, RUBRICS, SPEC_VIEWS, JudgeExample, JudgeFormat, JudgeInput,
                                       JudgeItem, JudgeLayout, PromptTooLong, RenderedPrompt, answer_only,
                                       as_judge_input, batch_judge_examples, grade_to_digit, grade_token_ids,
                                       judge_layout, render_judge_example, render_judge_examples,
                                       render_judge_prompt, spec_text, suffix_overhead, tokenizer_name)

__all__ = [
    'ANSWER_HEADER', 'COT_HEADER', 'DEFAULT_RUBRIC', 'GRADE_PROMPT', 'JUDGE_FORMAT_FILE', 'NUM_GRADES',
    'REQUEST_HEADER', 'RUBRICS', 'SCORE_THRESHOLD', 'SPEC_VIEWS', 'Judge', 'JudgeExample', 'JudgeFormat',
    'JudgeInput', 'JudgeItem', 'JudgeLayout', 'PrefixCache', 'PromptTooLong', 'RenderedPrompt', 'answer_only',
    'as_judge_input', 'batch_judge_examples', 'grade_to_digit', 'grade_token_ids', 'judge_layout',
    'judge_metrics', 'min_of_k', 'render_judge_example', 'render_judge_examples', 'render_judge_prompt',
    'roc_auc', 'scores_from_logprobs', 'spec_text', 'suffix_overhead', 'tokenizer_name',
]
