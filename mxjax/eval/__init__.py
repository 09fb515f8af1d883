"""The parity gate: metrics with directions, noise floors, budgets, verdicts and reports.

`gate_core` holds the statistics (pure functions), `lm_metrics` the metric functions over
logits, `simulate` the simulated numerics of a recipe, `gate` / `embed_gate` the runners,
`report` the CSV / markdown / plot writers and `cli` the `mxjax gate|ladder|plan` subcommands.
"""

from mxjax.eval import gate_core
from mxjax.eval import lm_metrics
from mxjax.eval.embed_gate import run_embedding_gate
from mxjax.eval.gate import DEFAULT_RECIPES
from mxjax.eval.gate import PRESETS
from mxjax.eval.gate import CandidateResult
from mxjax.eval.gate import GateConfig
from mxjax.eval.gate import GateResult
from mxjax.eval.gate import run_gate
from mxjax.eval.gate_core import Decision
from mxjax.eval.gate_core import Direction
from mxjax.eval.gate_core import MetricSpec
from mxjax.eval.gate_core import Scale
from mxjax.eval.gate_core import decide
from mxjax.eval.gate_core import effective_budget
from mxjax.eval.gate_core import noise_floor
from mxjax.eval.gate_core import resample_noise_floor
from mxjax.eval.lm_metrics import PerplexityProtocol
from mxjax.eval.report import write_reports
from mxjax.eval.simulate import Candidate
from mxjax.eval.simulate import Simulator
from mxjax.eval.simulate import candidate_from_recipe
from mxjax.eval.simulate import single_axis_runs

__all__ = [
    "Candidate",
    "CandidateResult",
    "DEFAULT_RECIPES",
    "Decision",
    "Direction",
    "GateConfig",
    "GateResult",
    "MetricSpec",
    "PRESETS",
    "PerplexityProtocol",
    "Scale",
    "Simulator",
    "candidate_from_recipe",
    "decide",
    "effective_budget",
    "gate_core",
    "lm_metrics",
    "noise_floor",
    "resample_noise_floor",
    "run_embedding_gate",
    "run_gate",
    "single_axis_runs",
    "write_reports",
]
