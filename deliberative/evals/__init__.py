"""Evaluation: generating held-out completions, grading them, and the suites that report them.

`generation` samples and scores completions (SFT's and RL's in-run evals call it);
`graders` read the decision out of an answer (get_grader by name); `citations` holds the
format and citation rules.
"""

from deliberative.evals.citations import check_citation, is_well_formed
from deliberative.evals.generation import (SAFETY_SPLITS, aggregate, final_safety_evals, generate_and_score,
                                           governing_clause_ids, safety_split_metrics, score_completion,
                                           score_completions)
from deliberative.evals.grading import GradeItem, Grader
from deliberative.evals.graders import get_grader, grader_names
from deliberative.evals.model_graders import ModelGrader
# Suites, metrics, the memorisation baseline and the report writers (for `deliberative.evaluate`).
from deliberative.evals.baseline import NearestNeighbour, memorisation_baseline
from deliberative.evals.metrics import Rate, bootstrap_mean, goodness_at, safety_metrics, strongreject_score
from deliberative.evals.report import BASELINE_ARM, MetricValue, plot_pareto, write_report
from deliberative.evals.suites import EvalItem, Suite, SuiteFormatError, load_suite

__all__ = ['SAFETY_SPLITS', 'final_safety_evals', 'safety_split_metrics', 'GradeItem', 'Grader', 'ModelGrader', 'aggregate', 'check_citation', 'generate_and_score', 'get_grader',
           'governing_clause_ids', 'grader_names', 'is_well_formed', 'score_completion', 'score_completions',
           'BASELINE_ARM', 'EvalItem', 'MetricValue', 'NearestNeighbour', 'Rate', 'Suite', 'SuiteFormatError',
           'bootstrap_mean', 'goodness_at', 'load_suite', 'memorisation_baseline', 'plot_pareto', 'safety_metrics',
           'strongreject_score', 'write_report']
