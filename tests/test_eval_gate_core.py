"""The gate's decisions on synthetic metric streams with known noise."""

import math
from fractions import Fraction

import numpy as np
import pytest

from mxjax.eval import gate_core as G

ACC = G.MetricSpec(name="acc", direction="higher", scale="absolute")
KL = G.MetricSpec(name="kl", direction="lower", scale="absolute", self_referential=True)
PPL = G.MetricSpec(name="ppl", direction="lower", scale="ratio", aggregate=G.agg_exp_ratio)


def _ppl_units(mean_nll, n=400, tokens=64, sd=0.3, seed=0):
  """[n, 2] (nll sum, tokens) windows whose per-token NLL has mean `mean_nll`."""
  rng = np.random.default_rng(seed)
  nll = rng.normal(mean_nll, sd, size=n) * tokens
  return np.stack([nll, np.full(n, tokens, float)], axis=1), rng


def test_candidate_inside_budget_passes_and_outside_fails():
  ref, rng = _ppl_units(3.0)
  noise = G.resample_noise_floor(PPL, ref, seed=1)
  assert 0 < noise < 0.05
  # A candidate whose per-window NLL is shifted by a tiny, consistent amount: inside 3 x noise.
  inside = ref.copy()
  inside[:, 0] += 0.002 * 64 + rng.normal(0, 0.01, size=len(ref))
  d_in = G.decide(PPL, ref, inside, noise=noise)
  assert d_in.passed is True and 0 < d_in.delta < d_in.budget
  # Shifted by ln(1.2) per token: PPL x 1.2, far outside 3 x noise.
  outside = ref.copy()
  outside[:, 0] += math.log(1.2) * 64
  d_out = G.decide(PPL, ref, outside, noise=noise)
  assert d_out.passed is False
  assert d_out.delta == pytest.approx(0.2, rel=1e-9)
  assert d_out.ci_low <= d_out.delta <= d_out.ci_high
  assert G.overall([d_in, d_out]) is False and G.overall([d_in]) is True


def test_direction_is_respected():
  rng = np.random.default_rng(0)
  ref = (rng.random(2000) < 0.6).astype(float)
  better = ref.copy()
  better[np.flatnonzero(ref == 0)[:200]] = 1.0  # +10 points: an improvement, d < 0
  worse = ref.copy()
  worse[np.flatnonzero(ref == 1)[:200]] = 0.0
  noise = G.resample_noise_floor(ACC, ref)
  up = G.decide(ACC, ref, better, noise=noise)
  down = G.decide(ACC, ref, worse, noise=noise)
  assert up.delta == pytest.approx(-0.1) and up.passed is True
  assert down.delta == pytest.approx(0.1) and down.passed is False
  # The same values read as lower-is-better flip the verdicts.
  err = G.MetricSpec(name="err", direction="lower", scale="absolute")
  assert G.decide(err, ref, better, noise=noise).passed is False
  assert G.decide(err, ref, worse, noise=noise).passed is True


def test_user_budget_intersects_noise_budget():
  ref, _ = _ppl_units(3.0, seed=3)
  cand = ref.copy()
  cand[:, 0] += math.log(1.004) * 64  # +0.4% perplexity, exactly consistent
  noise = G.resample_noise_floor(PPL, ref)
  loose = G.decide(PPL, ref, cand, noise=noise)
  assert loose.passed is True  # 3 x noise is far above 0.4%
  tight = G.decide(PPL, ref, cand, noise=noise, user_budget="0.003")
  assert tight.budget == pytest.approx(0.003) and tight.passed is False
  assert G.effective_budget(0.01, 3, "0.5") == Fraction(3) * Fraction(0.01)
  assert G.effective_budget(0.01, 3, "0.02") == Fraction(1, 50)
  assert G.effective_budget(None, 3, None) is None
  assert G.effective_budget(0.0, 3, None) == 0


def test_a_ratio_threshold_cannot_be_passed_by_rounding():
  budget = G.to_fraction("0.01")  # PPL ratio <= 1.01, exactly 1/100
  assert budget == Fraction(1, 100)
  # A candidate strictly above ref * 101/100 whose float ratio c / r rounds to 1.01 exactly:
  # a naive `c / r <= 1.01` passes it.
  ref, cand = 3.966729148937345, 4.006396440426719
  assert Fraction(cand) > Fraction(ref) * Fraction(101, 100)
  assert cand / ref <= 1.01 and f"{cand / ref:.4f}" == "1.0100"
  assert not G.ratio_within(cand, ref, budget, G.Direction.LOWER)
  below = float(np.nextafter(cand, 0.0))
  assert Fraction(below) <= Fraction(ref) * Fraction(101, 100)
  assert G.ratio_within(below, ref, budget, G.Direction.LOWER)
  # Higher-is-better ratios: c >= r * (1 - budget), exactly.
  assert G.ratio_within(0.99, 1.0, budget, G.Direction.HIGHER) == (Fraction(0.99) >= Fraction(99, 100))
  # The printed value shows the difference rather than rounding onto the threshold.
  shown = G.format_against(0.01 + 1e-12, budget)
  assert float(shown) > 0.01 and shown != "0.01"
  assert G.format_against(0.0099, budget) == "0.0099"
  # And `decide` applies it: a consistent +1.0000001% shift fails a stated 1% budget.
  units = np.stack([np.full(50, 64 * 2.0), np.full(50, 64.0)], axis=1)
  cand_units = units.copy()
  cand_units[:, 0] += 64 * math.log1p(0.0100001)
  d = G.decide(PPL, units, cand_units, noise=None, user_budget="0.01")
  assert d.passed is False and "<=" not in d.why


def test_self_referential_metric_is_not_gated_without_a_budget():
  ref = np.zeros(100)
  cand = np.abs(np.random.default_rng(0).normal(0, 0.01, 100))
  d = G.decide(KL, ref, cand, noise=None)
  assert d.passed is None and "not gated" in d.why
  assert G.decide(KL, ref, cand, noise=None, user_budget=0.05).passed is True
  assert G.decide(KL, ref, cand, noise=None, user_budget=0.001).passed is False
  assert G.overall([d]) is None


def test_noise_floor_from_repeats():
  assert G.noise_floor(ACC, [0.5, 0.6, 0.7], 0.6) == pytest.approx(0.1)
  assert G.noise_floor(PPL, [10.0, 11.0, 12.0], 10.0) == pytest.approx(0.1)
  with pytest.raises(ValueError):
    G.noise_floor(ACC, [0.5], 0.5)


def test_flipped_examples_are_sampled_by_direction():
  r = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
  c = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
  f = G.flipped(r, c, n=2, seed=0)
  assert f["n_lost"] == [3] and f["n_gained"] == [1]
  assert len(f["lost"]) == 2 and set(f["lost"]) <= {1, 2, 7} and f["gained"] == [3]


def test_single_axis_variants():
  ax = G.Axes(weights="nvfp4", activations="nvfp4")
  v = G.single_axis_variants(ax)
  assert [n for n, _ in v] == ["weights", "activations"]
  assert v[0][1].turned == ("weights",) and v[1][1].activations == "nvfp4"
  assert G.single_axis_variants(G.Axes(kv="fp8_e4m3")) == []
  three = G.single_axis_variants(G.Axes(weights="a", activations="b", kv="c"))
  assert len(three) == 3


def test_metric_spec_validates():
  with pytest.raises(ValueError):
    G.MetricSpec(name="x", direction="sideways", scale="absolute")
  with pytest.raises(ValueError):
    G.effective_budget(0.1, 3, "-0.1")


def test_every_public_name_imports():
  import mxjax
  from mxjax import eval as mxeval

  assert mxjax.eval is mxeval
  for name in mxeval.__all__:
    assert getattr(mxeval, name) is not None
