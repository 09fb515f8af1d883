"""The parity gate's statistics and decisions: pure functions over arrays of per-unit values.

A metric is an aggregate over units (windows of tokens, multiple-choice items, passkey trials,
sentences). A candidate is compared with the reference on the same units, so every interval
here is a paired one.

- Degradation d (>= 0 is worse), in the metric's own scale:
  absolute:  d = c - r (lower is better)   or  d = r - c (higher is better);
  ratio:     d = c / r - 1 (lower is better) or d = 1 - c / r (higher is better).
- Noise floor: the standard deviation (ddof=1) of the reference metric over repeats (seeds:
  eval-set resamples, calibration seeds, sampling seeds), expressed in the same scale as d (a
  ratio metric's repeats are divided by the reference's full-set value first).
- Budget: k x noise floor (default k = 3), intersected with a budget the user states (the
  smaller wins). A noise floor of exactly 0 (an exactly reproducible reference) gives budget 0
  unless the user states one. With neither (self-referential metrics such as KL, whose
  reference value is exact, and no stated budget) the metric is reported, not gated.
- Decision: PASS iff the upper end of the two-sided (1 - alpha) paired-bootstrap interval of d
  is <= budget. Comparisons are exact (`fractions.Fraction` of the binary floats against the
  budget parsed from its decimal text), so a value above a threshold never passes because it
  rounds to it; and `format_against` prints enough digits to show the difference.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

# An aggregate maps per-unit values [n, ...] to a scalar; vectorised over a leading resample
# axis: [B, n, ...] -> [B].
Aggregate = Callable[[np.ndarray], np.ndarray]


class Direction(enum.Enum):
  LOWER = "lower"  # lower is better (perplexity, KL)
  HIGHER = "higher"  # higher is better (accuracy, agreement, cosine)


class Scale(enum.Enum):
  ABSOLUTE = "absolute"  # budgets in the metric's units (accuracy points, nats)
  RATIO = "ratio"  # budgets as a relative change (perplexity: c / r - 1)


def agg_mean(v: np.ndarray) -> np.ndarray:
  """Mean over units: [..., n] -> [...]."""
  return v.mean(axis=-1)


def agg_exp_ratio(v: np.ndarray) -> np.ndarray:
  """exp(sum nll / sum count) over units with v[..., n, 2] = (nll sum, count): perplexity."""
  return np.exp(v[..., 0].sum(axis=-1) / v[..., 1].sum(axis=-1))


def agg_ratio(v: np.ndarray) -> np.ndarray:
  """sum a / sum b over units with v[..., n, 2] = (a, b) (token-weighted means)."""
  return v[..., 0].sum(axis=-1) / v[..., 1].sum(axis=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricSpec:
  """A gated metric.

  Attributes:
    name: e.g. "ppl/ptb".
    direction: LOWER or HIGHER is better.
    scale: ABSOLUTE or RATIO degradation.
    aggregate: per-unit values -> metric (see `agg_*`).
    self_referential: True for metrics measured against the reference itself (KL, top-1
      agreement, cosine): the reference's own value is exact (0 or 1), so their noise floor
      must come from reference repeats that differ (e.g. sampling seeds) or a stated budget.
    description: protocol in words, for reports.
  """

  name: str
  direction: Direction
  scale: Scale
  aggregate: Aggregate = agg_mean
  self_referential: bool = False
  description: str = ""

  def __post_init__(self):
    object.__setattr__(self, "direction", Direction(self.direction))
    object.__setattr__(self, "scale", Scale(self.scale))
    if not self.name:
      raise ValueError("a metric needs a name")


def degradation(spec: MetricSpec, cand: np.ndarray | float, ref: np.ndarray | float):
  """d (>= 0 worse) of candidate values against reference values (see the module docstring)."""
  c, r = np.asarray(cand, np.float64), np.asarray(ref, np.float64)
  if spec.scale is Scale.RATIO:
    rel = c / r - 1.0
    return rel if spec.direction is Direction.LOWER else -rel
  return c - r if spec.direction is Direction.LOWER else r - c


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
  """[n_resamples, n] unit indices drawn with replacement (numpy PCG64, `seed`)."""
  if n < 1 or n_resamples < 1:
    raise ValueError("need at least one unit and one resample")
  return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def noise_floor(spec: MetricSpec, repeats: Sequence[float], ref_value: float) -> float:
  """Standard deviation (ddof=1) of the reference over repeats, in the scale of d.

  Args:
    spec: the metric.
    repeats: the reference metric measured under each seed (>= 2 values).
    ref_value: the reference on the full evaluation (the RATIO scale divides by it).
  """
  v = np.asarray(repeats, np.float64)
  if v.size < 2:
    raise ValueError("a noise floor needs at least two repeats")
  if spec.scale is Scale.RATIO:
    v = v / ref_value
  return float(np.std(v, ddof=1))


def resample_noise_floor(spec: MetricSpec, ref_units: np.ndarray, *, n_resamples: int = 200,
                         seed: int = 0) -> float:
  """Noise floor from eval-set resamples: the reference metric over bootstrap resamples of its
  units (a repeat per seed), then `noise_floor`."""
  idx = bootstrap_indices(ref_units.shape[0], n_resamples, seed)
  reps = spec.aggregate(ref_units[idx])
  return noise_floor(spec, reps, float(spec.aggregate(ref_units)))


def to_fraction(x: float | str | Fraction) -> Fraction:
  """Exact rational of a budget: decimal text exactly ("0.01" is 1/100), floats exactly."""
  if isinstance(x, Fraction):
    return x
  if isinstance(x, str):
    return Fraction(x.strip())
  if not math.isfinite(x):
    raise ValueError(f"budget must be finite, got {x}")
  return Fraction(x)


def effective_budget(noise: float | None, k: float | str, user: float | str | None
                     ) -> Fraction | None:
  """k x noise intersected with the user's budget (the smaller), exactly; None if neither."""
  cands = []
  if noise is not None and noise > 0:
    cands.append(to_fraction(k) * Fraction(noise))
  elif noise is not None and noise == 0 and user is None:
    cands.append(Fraction(0))  # exactly reproducible and nothing stated: any change fails
  if user is not None:
    u = to_fraction(user)
    if u < 0:
      raise ValueError(f"a budget is a non-negative degradation, got {user}")
    cands.append(u)
  return min(cands) if cands else None


def within(d: float, budget: Fraction) -> bool:
  """d <= budget, compared exactly (no rounding can carry a larger d under the budget)."""
  if math.isnan(d):
    return False
  if math.isinf(d):
    return d < 0
  return Fraction(d) <= budget


def ratio_within(cand: float, ref: float, budget: Fraction, direction: Direction) -> bool:
  """c / r - 1 <= budget (LOWER) or 1 - c / r <= budget (HIGHER), exactly in rationals: the
  float division c / r is never formed, so its rounding cannot decide."""
  c, r = Fraction(cand), Fraction(ref)
  if r <= 0:
    raise ValueError("ratio metrics need a positive reference value")
  if direction is Direction.LOWER:
    return c <= r * (1 + budget)
  return c >= r * (1 - budget)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
  """One metric's verdict for one candidate.

  Attributes:
    metric: metric name; category: "" for the whole set, else the category.
    ref, cand: metric values on the full set.
    delta: d on the full set (>= 0 is worse).
    ci_low, ci_high: two-sided (1 - alpha) paired-bootstrap interval of d.
    noise: the noise floor (scale of d), or None.
    budget: the effective budget (scale of d), or None (not gated).
    passed: True / False, or None when not gated.
    n_units: units compared.
    why: the rule that decided, in words.
  """

  metric: str
  category: str
  direction: str
  scale: str
  ref: float
  cand: float
  delta: float
  ci_low: float
  ci_high: float
  noise: float | None
  budget: float | None
  passed: bool | None
  n_units: int
  why: str


def paired_bootstrap_ci(spec: MetricSpec, ref_units: np.ndarray, cand_units: np.ndarray, *,
                        n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
                        ) -> tuple[float, float]:
  """Percentile interval of d from resampling units jointly for reference and candidate."""
  if ref_units.shape != cand_units.shape:
    raise ValueError(f"paired units differ in shape: {ref_units.shape} vs {cand_units.shape}")
  idx = bootstrap_indices(ref_units.shape[0], n_resamples, seed)
  d = degradation(spec, spec.aggregate(cand_units[idx]), spec.aggregate(ref_units[idx]))
  lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)


def decide(
    spec: MetricSpec,
    ref_units: np.ndarray,
    cand_units: np.ndarray,
    *,
    noise: float | None,
    k: float | str = 3,
    user_budget: float | str | None = None,
    category: str = "",
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Decision:
  """The gate's verdict on one metric (rules in the module docstring).

  Args:
    spec: the metric.
    ref_units, cand_units: per-unit values [n, ...] of the reference and candidate, paired.
    noise: the noise floor (scale of d); None when the metric has none.
    k: budget multiple of the noise floor.
    user_budget: the user's budget on d (decimal text is exact: "0.01").
    category: the category these units belong to ("" for all).
    n_resamples, alpha, seed: the paired bootstrap.

  Returns:
    A Decision.
  """
  ref_units = np.asarray(ref_units, np.float64)
  cand_units = np.asarray(cand_units, np.float64)
  r = float(spec.aggregate(ref_units))
  c = float(spec.aggregate(cand_units))
  d = float(degradation(spec, c, r))
  lo, hi = paired_bootstrap_ci(spec, ref_units, cand_units, n_resamples=n_resamples,
                               alpha=alpha, seed=seed)
  budget = effective_budget(noise, k, user_budget)
  if budget is None:
    passed, why = None, "not gated: no noise floor and no stated budget"
  else:
    # Both the interval's upper end and the point estimate must be inside: the point estimate
    # is compared without forming a float ratio (see `ratio_within`).
    point_ok = (ratio_within(c, r, budget, spec.direction) if spec.scale is Scale.RATIO
                else within(d, budget))
    passed = point_ok and within(hi, budget)
    src = []
    if noise is not None and noise > 0:
      src.append(f"{k} x noise {noise:.4g}")
    if user_budget is not None:
      src.append(f"stated {user_budget}")
    why = (f"{int(100 * (1 - alpha))}% upper bound of d {format_against(hi, budget)}"
           f" {'<=' if passed else '>'} budget {float(budget):.6g} ({' and '.join(src) or 'exact'})")
  return Decision(metric=spec.name, category=category, direction=spec.direction.value,
                  scale=spec.scale.value, ref=r, cand=c, delta=d, ci_low=lo, ci_high=hi,
                  noise=noise, budget=None if budget is None else float(budget), passed=passed,
                  n_units=int(ref_units.shape[0]), why=why)


def format_against(value: float, threshold: Fraction | float, digits: int = 4) -> str:
  """`value` with at least `digits` significant digits, and more until its printed form is
  on the same side of the threshold's printed form as the exact value (so 1.0100001 against
  1.01 prints as 1.0100001, never 1.01)."""
  t = Fraction(threshold) if not isinstance(threshold, Fraction) else threshold
  if not math.isfinite(value):
    return str(value)
  v = Fraction(value)
  for p in range(digits, 18):
    sv = f"{value:.{p}g}"
    st = f"{float(t):.{p}g}"
    shown_v, shown_t = Fraction(sv), Fraction(st)
    if (v > t) == (shown_v > shown_t) and (v == t) == (shown_v == shown_t):
      return sv
  return repr(value)


def overall(decisions: Sequence[Decision]) -> bool | None:
  """PASS iff every gated decision passed; None when nothing was gated."""
  gated = [d.passed for d in decisions if d.passed is not None]
  return all(gated) if gated else None


def flipped(ref_correct: np.ndarray, cand_correct: np.ndarray, *, n: int = 5, seed: int = 0
            ) -> dict[str, list[int]]:
  """Indices of items whose correctness flipped, a seeded sample of each direction.

  Returns:
    {"lost": [...], "gained": [...], "n_lost": [count], "n_gained": [count]}: lost = reference
    right and candidate wrong.
  """
  r, c = np.asarray(ref_correct, bool), np.asarray(cand_correct, bool)
  lost, gained = np.flatnonzero(r & ~c), np.flatnonzero(~r & c)
  rng = np.random.default_rng(seed)

  def pick(ix):
    return sorted(int(i) for i in (rng.choice(ix, size=min(n, ix.size), replace=False)
                                   if ix.size else []))

  return {"lost": pick(lost), "gained": pick(gained), "n_lost": [int(lost.size)],
          "n_gained": [int(gained.size)]}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Axes:
  """Which of a recipe's knobs are turned (for the one-knob-at-a-time rule)."""

  weights: object = None
  activations: object = None
  kv: object = None

  @property
  def turned(self) -> tuple[str, ...]:
    return tuple(a for a in ("weights", "activations", "kv") if getattr(self, a) is not None)


def single_axis_variants(axes: Axes) -> list[tuple[str, Axes]]:
  """The single-axis runs a multi-axis recipe also gets: one per turned knob, others off."""
  turned = axes.turned
  if len(turned) < 2:
    return []
  return [(a, Axes(**{a: getattr(axes, a)})) for a in turned]
