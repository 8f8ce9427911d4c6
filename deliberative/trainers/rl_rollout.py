"""Host side of an RL step: sampled completions -> fixed-shape rows, rewards, advantages.

Row layout (CONTRACTS-style names, shapes in names): R = prompts_per_step * group_size rows,
the G samples of one prompt adjacent; each row is the prompt left-padded to P slots (as
the PromptIterator and the Sampler both lay it out) followed by T = max_new_tokens
completion slots. Completion slots after the stop token are padding (segment 0, weight 0).

Packed layout (`pack_rows`, rl.pack_updates): each rollout's prompt and completion, unpadded, packed
first-fit into rows of L = k x (P + T) slots (k = rl.pack_row_rollouts, default 1), one segment per
rollout (positions restart at 0, attention stays within it), as SFT packs traces. The per-token
fields then cover every row slot but the first (T = L - 1: slot j's target is token j + 1), so the
objective's "the last T slots predict the completion" reads both layouts alike. A trained policy's short completions otherwise
leave most update slots empty; the row count is rounded up to one of a few buckets, so a run
compiles the update at most len(buckets) times. Rows longer than one padded rollout (k > 1) leave
less of a row's end empty: a ~150-token rollout fills a 320-slot row two at a time, a 640-slot one
four at a time (docs/benchmarks.md); each token then attends over a longer row, which a
segment-aware kernel (splash) skips and the dense path pays for.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from deliberative.data import packing
from deliberative.data.pipeline import PromptBatch
from deliberative.evals.grading import GradeItem, Grader
from deliberative.inference.sampler import SampleOutput
from deliberative.tokenizer.base import Completion
from deliberative.tokenizer.sentencepiece import Tokenizer


def repeat_prompts(prompts: PromptBatch, group_size: int) -> tuple[list[list[int]], list[dict], np.ndarray]:
  """(prompt ids per row, record per row, valid_R): each prompt repeated group_size times."""
  ids = [prompts.tokens[i, prompts.tokens.shape[1] - n:].tolist() for i, n in enumerate(prompts.lengths)]
  rows = [i for i in range(len(ids)) for _ in range(group_size)]
  return [ids[i] for i in rows], [prompts.records[i] for i in rows], np.repeat(prompts.valid, group_size)


def build_rows(prompts: PromptBatch, group_size: int, sample: SampleOutput, valid_R: np.ndarray,
               advantages_R: np.ndarray) -> dict[str, np.ndarray]:
  """The rollout as numpy arrays in rl_objective.UPDATE_FIELDS layout (but logp_ref_BT), one row each."""
  tokens_NP, positions_NP, segments_NP = prompts.tokens, prompts.positions, prompts.segment_ids
  tokens_RP = np.repeat(tokens_NP, group_size, axis=0)
  positions_RP = np.repeat(positions_NP, group_size, axis=0)
  segments_RP = np.repeat(segments_NP, group_size, axis=0)
  prompt_len_R = np.repeat(prompts.lengths, group_size)
  completion_RT = sample.tokens.astype(np.int32)
  R, T = completion_RT.shape
  if tokens_RP.shape[0] != R:
    raise ValueError(f'rollout: {tokens_RP.shape[0]} prompt rows but {R} sampled rows')
  live_RT = np.arange(T)[None, :] < sample.lengths[:, None]
  positions_RT = prompt_len_R[:, None] + np.arange(T)[None, :]
  return {
      'tokens_BL': np.concatenate([tokens_RP, completion_RT], axis=1),
      'positions_BL': np.concatenate([positions_RP, np.where(live_RT, positions_RT, 0)], axis=1).astype(np.int32),
      'segment_ids_BL': np.concatenate([segments_RP, live_RT.astype(np.int32)], axis=1),
      'completion_BT': completion_RT,
      'mask_BT': (live_RT & valid_R[:, None]).astype(np.float32),
      'logp_old_BT': np.where(live_RT, sample.logprobs, 0.0).astype(np.float32),
      'advantages_BT': np.repeat(np.asarray(advantages_R, np.float32)[:, None], T, axis=1),
  }


def packed_row_counts(rows: int, multiple: int, buckets: int, row_rollouts: int = 1) -> tuple[int, ...]:
  """The packed update's row counts: `buckets` fractions (1/buckets, 2/buckets, ..., all) of the rows
  that `rows` full-length rollouts need at `row_rollouts` per row, each rounded up to `multiple` (the
  devices a batch splits over), so that at most `buckets` shapes ever compile (rl.pack_buckets)."""
  most = -(-rows // row_rollouts)
  return tuple(sorted({-(-(most * q // buckets) // multiple) * multiple or multiple
                       for q in range(1, buckets + 1)}))


def packed_layout(rl, rows_per_minibatch: int, multiple: int, P: int, T: int) -> tuple[tuple[int, ...], int]:
  """(row counts, slots per row) of `rl`'s packed update (rl.pack_buckets, rl.pack_row_rollouts), or
  ((), P + T) when rl.pack_updates is off: what the trainer, the benchmark and the AOT tool compile."""
  if not rl.pack_updates:
    return (), P + T
  k = rl.get('pack_row_rollouts', 1)
  return packed_row_counts(rows_per_minibatch, multiple, rl.pack_buckets, k), k * (P + T)


def pack_rows(prompts: PromptBatch, group_size: int, sample: SampleOutput, valid_R: np.ndarray,
              advantages_R: np.ndarray, row_counts: Sequence[int], minibatches: int = 1,
              rng: np.random.Generator | None = None, row_slots: int | None = None) -> dict[str, np.ndarray]:
  """The valid rollouts, unpadded, packed first-fit (longest first) into rows of L = `row_slots` slots
  (default P + T; never fewer); the fields of build_rows with T = L - 1 (module docstring).

  `minibatches` > 1: the rollouts are first dealt at random (`rng`) into that many equal groups, as
  the padded layout's update shuffles its rows, and each group is packed on its own into the same
  number of rows (the least of `row_counts` that holds every group); the rows come group by group,
  so minibatch k is rows [k * n, (k + 1) * n). Which rollouts share a minibatch therefore never
  depends on how many devices split the rows (the empty rows that round a count up carry no loss)."""
  P, T = prompts.tokens.shape[1], sample.tokens.shape[1]
  L = row_slots or P + T
  if L < P + T:
    raise ValueError(f'packed RL rows of {L} slots cannot hold a {P} + {T}-token rollout')
  R = len(valid_R)
  order = rng.permutation(R) if minibatches > 1 else np.arange(R)
  groups = []  # per minibatch: its rollouts (row r, prompt ids, completion ids) and their (row, start)
  for members in np.array_split(order, minibatches):
    seqs = []
    for r in sorted(int(m) for m in members if valid_R[m]):
      i = r // group_size
      seqs.append((r, prompts.tokens[i, P - int(prompts.lengths[i]):], sample.tokens[r, :int(sample.lengths[r])]))
    groups.append((seqs, packing.first_fit_decreasing([len(p) + len(c) for _, p, c in seqs], L)))
  needed = max(max((row for row, _ in placed), default=-1) + 1 for _, placed in groups)
  rows = next((c for c in row_counts if c >= needed), None)
  if rows is None:
    raise ValueError(f'packed RL update: {needed} rows needed per minibatch, the largest count is {max(row_counts)}')
  parts = [_lay_out(seqs, placed, rows, L, sample.logprobs, advantages_R) for seqs, placed in groups]
  return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _lay_out(seqs, placed, rows: int, L: int, logprobs_RT: np.ndarray,
             advantages_R: np.ndarray) -> dict[str, np.ndarray]:
  """One minibatch's packed arrays: `rows` rows of L slots (empty rows past those it fills)."""
  tokens = np.zeros((rows, L), np.int32)
  positions, segments = np.zeros_like(tokens), np.zeros_like(tokens)
  mask, logp_old, advantages = (np.zeros((rows, L - 1), np.float32) for _ in range(3))
  for (r, prompt, completion), (row, start) in zip(seqs, placed):
    p, n = len(prompt), len(prompt) + len(completion)
    tokens[row, start:start + n] = np.concatenate([prompt, completion])
    positions[row, start:start + n] = np.arange(n)
    segments[row, start:start + n] = segments[row].max() + 1
    targets = slice(start + p - 1, start + n - 1)  # slot j's logits predict the token at slot j + 1
    mask[row, targets] = 1.0
    logp_old[row, targets] = logprobs_RT[r, :len(completion)]
    advantages[row, targets] = advantages_R[r]
  return {'tokens_BL': tokens, 'positions_BL': positions, 'segment_ids_BL': segments,
          'completion_BT': tokens[:, 1:].copy(), 'mask_BT': mask, 'logp_old_BT': logp_old,
          'advantages_BT': advantages}


def update_padding(batch: Mapping[str, np.ndarray]) -> float:
  """The fraction of an update batch's token slots that hold no rollout token (either layout)."""
  return float(1.0 - np.count_nonzero(batch['segment_ids_BL']) / batch['segment_ids_BL'].size)


RewardFn = Callable[[Sequence[Mapping[str, Any]], Sequence[str]], np.ndarray]


def label_agreement(records: Sequence[Mapping[str, Any]], answers: Sequence[str], grader: Grader) -> np.ndarray:
  """1.0 where `grader` reads an answer as the decision its record's label asks for, else 0.0."""
  missing = [i for i, r in enumerate(records) if not r.get('decision')]
  if missing:
    raise ValueError(f'rl.label_reward > 0 needs a decision label on every prompt; record '
                     f'{records[missing[0]].get("id", missing[0])!r} has none (use prompts imported with their '
                     f'decisions, or rl.label_reward=0)')
  grades = grader.grade([GradeItem(prompt=str(r['prompt']), category=str(r.get('category') or 'none'), answer=a,
                                   expected=r['decision'], id=str(r.get('id', ''))) for r, a in zip(records, answers)])
  return np.array([g['decision'] == r['decision'] for g, r in zip(grades, records)], np.float32)


def check_label_weight(label_weight: float) -> None:
  if not 0.0 <= label_weight <= 1.0:
    raise ValueError(f'rl.label_reward={label_weight}: a weight in [0, 1]')


def answer_reward(judge_fn: Callable[[list[tuple[str, str, str]]], np.ndarray] | None, label_weight: float,
                  grader: Grader) -> RewardFn:
  """The reward of well-formed final answers: (1 - label_weight) x the judge's score + label_weight x
  label_agreement. The judge alone can be exploited where it is weak (a policy that refuses every
  request, docs/results.md); the labels pay for answering the benign prompts. label_weight 1: the
  labels are the judge (as stage 1's source=labels) and no judge model is needed."""
  check_label_weight(label_weight)
  if judge_fn is None and label_weight < 1.0:
    raise ValueError('a reward with rl.label_reward < 1 needs the judge (judge_init)')

  def reward(records: Sequence[Mapping[str, Any]], answers: Sequence[str]) -> np.ndarray:
    out = np.zeros(len(answers), np.float32)
    if not answers:
      return out
    if label_weight < 1.0:
      triples = [(r['category'], r['prompt'], a) for r, a in zip(records, answers)]
      out += (1.0 - label_weight) * np.asarray(judge_fn(triples), np.float32)
    if label_weight > 0.0:
      out += label_weight * label_agreement(records, answers, grader)
    return out

  return reward


@dataclasses.dataclass
class Rewards:
  reward_R: np.ndarray  # float32: answer_reward's score in [0, 1], or -format_penalty
  well_formed_R: np.ndarray  # bool: sent to the judge
  cot_tokens_R: np.ndarray  # int32: tokens before <|answer|> (all of them when it never came)
  completions: list[Completion]


def well_formed(completion: Completion, require_cot: bool) -> bool:
  """Judged (not format-penalised): a CoT-then-answer completion, with a non-blank CoT when
  `require_cot`; without it, a direct answer counts too (a model that does not reason yet: RL
  from a pretrained instruct model, whose grown <think> rows it never samples)."""
  if not require_cot and completion.direct:
    return True
  return completion.well_formed and (not require_cot or bool(completion.cot.strip()))


def score(tokenizer: Tokenizer, records: Sequence[Mapping[str, Any]], completion_ids: Sequence[Sequence[int]],
          reward_fn: RewardFn, *, format_penalty: float, require_cot: bool, reasoning: bool = True) -> Rewards:
  """answer_reward of the final answer only; malformed completions get -format_penalty unjudged.
  `reasoning`: the prompts opened a reasoning block (False: every completion is a direct answer)."""
  completions = [tokenizer.parse_completion(ids, reasoning=reasoning) for ids in completion_ids]
  ok_R = np.array([well_formed(c, require_cot) for c in completions], bool)
  reward_R = np.full(len(completions), -format_penalty, np.float32)
  # The judge sees (category, prompt, answer): the CoT was split off by parse_completion.
  judged = np.flatnonzero(ok_R)
  if judged.size:
    reward_R[ok_R] = reward_fn([records[i] for i in judged], [completions[i].answer for i in judged])
  cot_tokens_R = np.array([list(ids).index(tokenizer.answer_id) if tokenizer.answer_id in ids else len(ids)
                           for ids in completion_ids], np.int32)
  return Rewards(reward_R, ok_R, cot_tokens_R, completions)


def group_advantages(reward_R: np.ndarray, group_size: int, scale_by_std: bool, eps: float) -> np.ndarray:
  """r - mean within each prompt's group, divided by (std + eps) when `scale_by_std` (GRPO).

  A graded judge gives continuous scores, so a group whose samples are all good still differs
  by a few hundredths; dividing by its std blows that judge noise up to unit-size advantages,
  as large as a real right/wrong difference. Without the division (Dr. GRPO, Liu et al. 2025)
  such a group contributes almost nothing and the update follows the groups that disagree.
  """
  r_NG = reward_R.reshape(-1, group_size).astype(np.float64)
  adv_NG = r_NG - r_NG.mean(axis=1, keepdims=True)
  if scale_by_std:
    adv_NG = adv_NG / (r_NG.std(axis=1, keepdims=True) + eps)
  return adv_NG.reshape(-1).astype(np.float32)


def reward_metrics(rewards: Rewards, records: Sequence[Mapping[str, Any]], valid_R: np.ndarray,
                   lengths_R: np.ndarray, group_size: int, prefix: str = 'rl/') -> dict[str, float]:
  keep = np.flatnonzero(valid_R)
  # Group statistics over real prompts only (the last batch of a finite split may hold padding).
  r_NG = rewards.reward_R.reshape(-1, group_size)[valid_R.reshape(-1, group_size)[:, 0].astype(bool)]
  out = {f'{prefix}reward': float(rewards.reward_R[keep].mean()),
         # Groups whose samples all scored alike teach nothing (zero advantages): a saturated or stuck run.
         f'{prefix}no_signal_groups': float(np.mean(r_NG.max(axis=1) == r_NG.min(axis=1))),
         # Mean best-minus-worst reward within a group: how much a step has to learn from.
         f'{prefix}group_reward_spread': float(np.mean(r_NG.max(axis=1) - r_NG.min(axis=1))),
         f'{prefix}format_valid': float(rewards.well_formed_R[keep].mean()),
         f'{prefix}response_tokens': float(lengths_R[keep].mean()),
         f'{prefix}cot_tokens': float(rewards.cot_tokens_R[keep].mean())}
  by_category: dict[str, list[float]] = collections.defaultdict(list)
  for i in keep:
    by_category[str(records[i].get('category', '?'))].append(float(rewards.reward_R[i]))
  for category, values in sorted(by_category.items()):
    out[f'{prefix}reward/{category}'] = float(np.mean(values))
  # Per labelled decision: whether the prompts to refuse and those to answer both still teach. Groups
  # of one label that all score alike leave the update to the other label's groups alone.
  firsts = [records[i] for i in range(0, len(records), group_size)]
  valid_N = valid_R.reshape(-1, group_size)[:, 0].astype(bool)
  no_signal_N = r_NG.max(axis=1) == r_NG.min(axis=1)
  decisions = np.array([str(r.get('decision') or '') for r, v in zip(firsts, valid_N) if v])
  for decision in sorted(set(decisions) - {''}):
    out[f'{prefix}no_signal_groups/{decision}'] = float(np.mean(no_signal_N[decisions == decision]))
  return out
