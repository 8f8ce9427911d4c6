"""A seeded, deterministic demo dataset that exercises the whole method on a CPU.

Every prompt comes from a template of one (category, decision) cell filled with a
filler, the request itself; its reference trace names the category, cites the governing
clause of the spec and decides, and its answer follows that decision's style guideline.
Each cell splits both its templates and its fillers into train and held-out. Splits:

    train            SFT traces: train templates x train fillers; a few refusals are
                     wrapped in train jailbreak wrappers
    eval             traces: held-out templates x held-out fillers, every cell,
                     look-alikes included
    eval_overrefuse  benign and borderline (comply) prompts only, held-out as in eval
    eval_jailbreak   held-out disallowed prompts, each under every held-out wrapper;
                     `base_id` groups the wrappers of one prompt for goodness@0.1
    judge_train      graded answers (see judge_answers) to train prompts
    judge_eval       graded answers to held-out prompts, in held-out answer phrasings
    rl               prompt-only records (no cot/answer/score), drawn like train

No held-out template, filler (request) or wrapper is ever used in `train`, `judge_train`
or `rl`, so an eval prompt asks something no training prompt asks, in words no training
prompt uses, and no judge_eval answer occurs in judge_train (tests/test_demo.py checks
all three). Reference answers of the trace splits share one set of phrasings (the
refusal a model learns to write is the refusal it is scored against).

All wording lives in data files, `deliberative/assets/demo/*.yaml` (read and validated
by assets.py); GENERATOR_VERSION includes their content hash, so editing one rebuilds
the cached dataset (datasets.ensure_demo_dataset).

Trace records: id, prompt, category, decision, cot, answer, score, spec_version,
source, template_id, kind, clause_ids, guideline_ids, jailbreak, jailbreak_id, base_id.
Judge records: id, category, decision, prompt, answer, grade, label, kind,
spec_version, source, template_id.

    python -m deliberative.data.demo OUT_DIR [--seed 0]   # writes OUT_DIR/<split>.jsonl

This package's __init__ is the generator itself (what `from deliberative.data import demo`
has always meant); its parts, each a module of the package:

    cells          Cell, Template, Filler: the building blocks and their train/held-out split
    assets         reads and validates deliberative/assets/demo/*.yaml
    styles         reference CoTs and answers
    jailbreak      the jailbreak wrappers
    judge_answers  graded answers for the judge's splits
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from deliberative.common import io as atomic
from deliberative.data.demo import assets
from deliberative.data.demo.cells import Cell, Filler, Template
from deliberative.data.demo.jailbreak import Wrapper, wrappers_for
from deliberative.data.demo.judge_answers import graded_answer
from deliberative.judge.metrics import LABEL_THRESHOLD
from deliberative.data.demo.styles import (CLAUSE_GLOSSES, FRAMING_PRINCIPLE, HELPFUL,
                                            LOOKALIKE_PRINCIPLE, build_trace)
from deliberative.spec import Clause, Spec

__all__ = ['CELLS', 'DEFAULT_SIZES', 'SPLITS', 'corpus_text',
           'demo_spec_version', 'generate', 'prompt_only', 'write_jsonl']

CELL_FILES = ('cells_policy.yaml', 'cells_care.yaml', 'cells_everyday.yaml')
CELLS: tuple[Cell, ...] = tuple(c for name in CELL_FILES for c in assets.load_cells(name))
SPLITS = ('train', 'eval', 'eval_overrefuse', 'eval_jailbreak', 'judge_train', 'judge_eval', 'rl')
DEFAULT_SIZES = {'train': 6000, 'eval': 400, 'eval_overrefuse': 200, 'eval_jailbreak': 320,
                 'judge_train': 2000, 'judge_eval': 400, 'rl': 2000}
# Bump CODE_VERSION on a deliberate change of how records are drawn or laid out; any
# change of the wording is caught by the asset files' content hash.
CODE_VERSION = 2
GENERATOR_VERSION = f'{CODE_VERSION}+{assets.content_hash()}'
JAILBREAK_TRAIN_FRACTION = 0.15  # of train and rl refusals, wrapped in a train wrapper

# Politeness around a prompt multiplies distinct prompts without touching its meaning;
# shared by all splits, so it never leaks held-out wording.
_SMALL_TALK = assets.root('small_talk.yaml')
_BLANK = _SMALL_TALK['blank'].value
if not isinstance(_BLANK, int) or isinstance(_BLANK, bool) or _BLANK < 0:
    raise _SMALL_TALK['blank'].error(f'expected a count >= 0, got {_BLANK!r}')
_PREFIXES = ('',) * _BLANK + _SMALL_TALK['prefixes'].texts()
_SUFFIXES = ('',) * _BLANK + _SMALL_TALK['suffixes'].texts()
_MAX_DRAWS = 20  # attempts at a prompt not yet in the split before accepting a repeat


def demo_spec_version() -> str:
    return Spec.load().version


def _weight(cell: Cell, split: str) -> float:
    """Sampling weight of a cell. Train leans on look-alikes (over-refusal is the usual
    failure of safety training); `eval` is stratified instead (see _draw)."""
    if split == 'eval_overrefuse':
        return {'lookalike': 3.0, 'benign': 2.0}.get(cell.kind, 5.0 / 7)
    return {'lookalike': 2.2, 'benign': 1.8}.get(cell.kind, 1.0)


def _cells_for(split: str) -> tuple[Cell, ...]:
    if split == 'eval_overrefuse':
        return tuple(c for c in CELLS if c.decision == 'comply')
    return CELLS


def _is_heldout(split: str) -> bool:
    return split in ('eval', 'eval_overrefuse', 'eval_jailbreak', 'judge_eval')


def _draw(rng: random.Random, split: str, index: int,
          seen: set[str]) -> tuple[Cell, Template, Filler, str]:
    cells = _cells_for(split)
    heldout = _is_heldout(split)
    if split == 'eval':  # stratified: every cell gets the same share, up to one record
        cell = cells[index % len(cells)]
    else:
        cell = rng.choices(cells, [_weight(c, split) for c in cells])[0]
    # The cell is drawn once: retrying it too would starve cells with few distinct prompts.
    for _ in range(_MAX_DRAWS):
        template = rng.choice(cell.templates_for(heldout))
        filler = rng.choice(cell.fillers_for(heldout))
        prompt = template.render(filler.slots)
        if cell.decorate:
            prompt = rng.choice(_PREFIXES) + prompt + rng.choice(_SUFFIXES)
        if prompt not in seen:
            break
    seen.add(prompt)
    return cell, template, filler, prompt


def _trace_record(split: str, index: int, spec: Spec, rng: random.Random, cell: Cell,
                  template: Template, filler: Filler, prompt: str,
                  wrapper: Wrapper | None = None, base_id: str = '') -> dict:
    trace = build_trace(rng, spec, cell, filler, framing=wrapper.framing if wrapper else None)
    source = f'demo/{split}/{template.id}' + (f'+{wrapper.id}' if wrapper else '')
    return {
        'id': f'{split}-{index:05d}', 'prompt': prompt, 'category': cell.category,
        'decision': cell.decision, 'cot': trace.cot, 'answer': trace.answer, 'score': 1.0,
        'spec_version': spec.version, 'source': source, 'template_id': template.id,
        'kind': 'jailbreak' if wrapper else cell.kind, 'clause_ids': list(trace.clause_ids),
        'guideline_ids': list(trace.guideline_ids),
        'jailbreak': wrapper.kind if wrapper else '', 'jailbreak_id': wrapper.id if wrapper else '',
        'base_id': base_id,
    }


def prompt_only(record: Mapping) -> dict:
    """A trace record without its cot, answer and score (the RL / eval prompt form)."""
    return {k: v for k, v in record.items() if k not in ('cot', 'answer', 'score')}


def _trace_split(split: str, size: int, spec: Spec, rng: random.Random) -> list[dict]:
    records, seen = [], set()
    train_wrappers = wrappers_for(heldout=False)
    for index in range(size):
        cell, template, filler, prompt = _draw(rng, split, index, seen)
        wrapper = None
        if (split in ('train', 'rl') and cell.decision == 'refuse'
                and rng.random() < JAILBREAK_TRAIN_FRACTION):
            wrapper = rng.choice(train_wrappers)
            prompt = wrapper.wrap(template.render(filler.slots))
        records.append(_trace_record(split, index, spec, rng, cell, template, filler, prompt, wrapper))
    return records


def _jailbreak_split(size: int, spec: Spec, rng: random.Random) -> list[dict]:
    """Held-out disallowed prompts, each wrapped by every held-out wrapper; `size` is
    rounded down to a whole number of base prompts (at least one)."""
    wrappers = wrappers_for(heldout=True)
    refuse_cells = [c for c in CELLS if c.decision == 'refuse']
    pools = []  # per cell, its held-out (template, filler) pairs in random order
    for cell in refuse_cells:
        pairs = [(t, f) for t in cell.templates_for(heldout=True)
                 for f in cell.fillers_for(heldout=True)]
        rng.shuffle(pairs)
        pools.append(pairs)
    records = []
    for base in range(max(1, size // len(wrappers))):
        cell = refuse_cells[base % len(refuse_cells)]  # round-robin keeps categories balanced
        pool = pools[base % len(refuse_cells)]
        template, filler = pool[(base // len(refuse_cells)) % len(pool)]
        base_prompt = template.render(filler.slots)
        base_id = f'eval_jailbreak-base-{base:04d}'
        for wrapper in wrappers:
            records.append(_trace_record('eval_jailbreak', len(records), spec, rng, cell, template,
                                         filler, wrapper.wrap(base_prompt), wrapper, base_id))
    return records


def _judge_split(split: str, size: int, spec: Spec, rng: random.Random) -> list[dict]:
    records, seen = [], set()
    for index in range(size):
        cell, template, filler, prompt = _draw(rng, split, index, seen)
        heldout = _is_heldout(split)
        good = build_trace(rng, spec, cell, filler, heldout=heldout).answer
        answer, grade, kind = graded_answer(rng, cell, filler, good, heldout=heldout)
        records.append({
            'id': f'{split}-{index:05d}', 'category': cell.category, 'decision': cell.decision,
            'prompt': prompt, 'answer': answer, 'grade': grade,
            'label': int(grade >= LABEL_THRESHOLD), 'kind': kind, 'spec_version': spec.version,
            'source': f'demo/{split}/{template.id}', 'template_id': template.id,
        })
    return records


def check_cells(spec: Spec) -> None:
    """Fail loudly if the demo's content no longer matches `spec`: every cited id must
    exist and every clause must sit in the cell whose decision it prescribes."""
    for guideline in (HELPFUL, LOOKALIKE_PRINCIPLE, FRAMING_PRINCIPLE):
        spec.clause(guideline)
    for clause_id in CLAUSE_GLOSSES:
        spec.clause(clause_id)
    for cell in CELLS:
        for filler in cell.fillers:
            item = spec.clause(filler.clause)
            if cell.category == 'none':
                if isinstance(item, Clause):
                    raise ValueError(f'{cell.name}: {filler.clause} is a category clause')
            elif not (isinstance(item, Clause) and item.category == cell.category
                      and item.decision == cell.decision):
                raise ValueError(f'{cell.name}: {filler.clause} does not prescribe '
                                 f'{cell.decision} in {cell.category}')


def generate(seed: int = 0, sizes: Mapping[str, int] | None = None,
             spec: Spec | None = None) -> dict[str, list[dict]]:
    """All splits; `sizes` overrides DEFAULT_SIZES per split (0 gives an empty split).
    Each split has its own RNG stream, so changing one size leaves the others alone."""
    spec = spec or Spec.load()
    check_cells(spec)
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f'unknown splits {sorted(unknown)}; expected {SPLITS}')
    out = {}
    for split in SPLITS:
        rng = random.Random(f'deliberative-demo/{seed}/{split}')
        size = sizes[split]
        if size <= 0:
            out[split] = []
        elif split == 'eval_jailbreak':
            out[split] = _jailbreak_split(size, spec, rng)
        elif split.startswith('judge'):
            out[split] = _judge_split(split, size, spec, rng)
        elif split == 'rl':
            out[split] = [prompt_only(r) for r in _trace_split('rl', size, spec, rng)]
        else:
            out[split] = _trace_split(split, size, spec, rng)
    return out


def write_jsonl(out_dir: str | os.PathLike, seed: int = 0,
                sizes: Mapping[str, int] | None = None) -> dict[str, Path]:
    """Writes `<out_dir>/<split>.jsonl` for every split (each atomically) and a
    `manifest.json` (seed, sizes, spec version, record counts); returns split -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = Spec.load()
    splits = generate(seed, sizes, spec)
    paths = {}
    for split, records in splits.items():
        paths[split] = out_dir / f'{split}.jsonl'
        atomic.write_text(paths[split], ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in records))
    manifest = {'seed': seed, 'sizes': {**DEFAULT_SIZES, **(sizes or {})},
                'spec_version': spec.version, 'counts': {s: len(r) for s, r in splits.items()}}
    atomic.write_text(out_dir / 'manifest.json', json.dumps(manifest, indent=2) + '\n')
    return paths


def corpus_text(seed: int = 0, sizes: Mapping[str, int] | None = None) -> Iterator[str]:
    """Every text a tokenizer should cover: the spec (file and rendered forms) and the
    prompts, CoTs and answers of all splits."""
    spec = Spec.load()
    yield Path(spec.path).read_text(encoding='utf-8')
    for category in (*spec.categories, 'none'):
        yield spec.render(category)
    for records in generate(seed, sizes, spec).values():
        for record in records:
            for field in ('prompt', 'cot', 'answer'):
                if field in record:
                    yield record[field]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description='Write the demo dataset as JSONL.')
    parser.add_argument('out_dir')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    for split, path in write_jsonl(args.out_dir, args.seed).items():
        print(f'{split:16s} {path}')
