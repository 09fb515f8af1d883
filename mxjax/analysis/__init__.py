"""Error analysis, the precision ladder, the E4M3-vs-E8M0 scale study and the planner."""

from mxjax.analysis.accelerators import ACCELERATORS
from mxjax.analysis.accelerators import Accelerator
from mxjax.analysis.accelerators import get_accelerator
from mxjax.analysis.capture import record_linear_inputs
from mxjax.analysis.ladder import DEFAULT_LADDER
from mxjax.analysis.ladder import LadderRow
from mxjax.analysis.ladder import ladder_markdown
from mxjax.analysis.ladder import precision_ladder
from mxjax.analysis.metrics import ErrorStats
from mxjax.analysis.metrics import error_stats
from mxjax.analysis.metrics import model_error_stats
from mxjax.analysis.metrics import pooled_error_stats
from mxjax.analysis.planner import DEFAULT_RECIPES
from mxjax.analysis.planner import MODELS
from mxjax.analysis.planner import ModelShape
from mxjax.analysis.planner import PhaseEstimate
from mxjax.analysis.planner import Plan
from mxjax.analysis.planner import PlanRecipe
from mxjax.analysis.planner import compute_format
from mxjax.analysis.planner import kv_bytes_per_token
from mxjax.analysis.planner import plan
from mxjax.analysis.planner import plan_table
from mxjax.analysis.planner import plans_markdown
from mxjax.analysis.planner import stored_bytes
from mxjax.analysis.planner import weight_bytes
from mxjax.analysis.scale_study import NVIDIA_PUBLISHED
from mxjax.analysis.scale_study import ScaleStudyResult
from mxjax.analysis.scale_study import scale_format_study

__all__ = [
    "ACCELERATORS",
    "Accelerator",
    "DEFAULT_LADDER",
    "DEFAULT_RECIPES",
    "ErrorStats",
    "LadderRow",
    "MODELS",
    "ModelShape",
    "NVIDIA_PUBLISHED",
    "PhaseEstimate",
    "Plan",
    "PlanRecipe",
    "ScaleStudyResult",
    "compute_format",
    "error_stats",
    "get_accelerator",
    "kv_bytes_per_token",
    "ladder_markdown",
    "model_error_stats",
    "plan",
    "plan_table",
    "plans_markdown",
    "pooled_error_stats",
    "precision_ladder",
    "record_linear_inputs",
    "scale_format_study",
    "stored_bytes",
    "weight_bytes",
]
