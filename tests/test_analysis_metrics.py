"""Error metrics, the ladder, the scale-format study and activation capture."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mxjax
from mxjax import analysis
from mxjax.analysis import metrics


def _gauss(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_every_public_name_imports():
  for name in analysis.__all__:
    assert getattr(analysis, name) is not None


def test_exact_round_trip_has_zero_error_and_infinite_snr():
  x = jnp.array([1.0, -2.0, 0.5, 0.0, 4.0, -0.25, 8.0, 1.5])  # all exact in bf16
  s = analysis.error_stats(x, "bf16")
  assert s.mse == 0 and s.max_abs_err == 0 and math.isinf(s.snr_db) and math.isinf(s.enob)
  assert s.bits_per_value == 16.0


def test_mse_snr_match_direct_computation():
  x = _gauss((64, 128))
  s = analysis.error_stats(x, "mxfp4")
  xq = np.asarray(jax.jit(lambda x: mxjax.dequantize(mxjax.quantize(x, "mxfp4")))(x), np.float64)
  xd = np.asarray(x, np.float64)
  e = xq - xd
  assert s.mse == pytest.approx(np.mean(e * e), rel=1e-9)
  assert s.snr_db == pytest.approx(10 * np.log10(np.sum(xd**2) / np.sum(e**2)), rel=1e-9)
  assert s.max_abs_err == pytest.approx(np.abs(e).max())
  assert s.enob == pytest.approx((s.snr_db - 1.76) / 6.02)


@pytest.mark.parametrize("scheme,shape,bits", [
    ("mxfp4", (4, 64), 4.25),
    ("mxfp8_e4m3", (4, 64), 8.25),
    ("mxfp6_e2m3", (4, 64), 6.25),
    ("nvfp4", (4, 64), 4.5 + 32 / 256),
    ("fp8_e4m3", (4, 64), 8 + 32 / 256),
    ("int4_g128", (2, 128), 4.25),
    ("int4_g128", (2, 64), (64 + 4) * 8 / 64),  # padded to one block of 128: 64 B + 4 B a row
    ("nf4_g64", (2, 128), 4.5),
])
def test_bits_per_value_include_scales_and_padding(scheme, shape, bits):
  assert analysis.error_stats(_gauss(shape), scheme).bits_per_value == pytest.approx(bits)


def test_clipping_counted_for_mx_floor_but_not_rceil():
  # One block of 32, amax 7.9: floor scale 2^(2 - 2) = 1 leaves 7.9 above E2M1's max of 6.
  x = jnp.concatenate([jnp.array([7.9]), jnp.full((31,), 0.5)])
  floor = analysis.error_stats(x, "mxfp4")
  rceil = analysis.error_stats(x, mxjax.schemes.get("mxfp4", scale_rule="rceil"))
  assert floor.clipped_frac == pytest.approx(1 / 32)
  assert floor.max_abs_err == pytest.approx(1.9)
  assert rceil.clipped_frac == 0.0


def test_fp32_scale_amax_value_is_not_counted_as_clipped():
  x = _gauss((8, 128), 3) * 3.1
  assert analysis.error_stats(x, "int4_g128").clipped_frac == 0.0
  assert analysis.error_stats(x, "fp8_e4m3").clipped_frac == 0.0


def test_underflow_fraction_and_relative_error():
  x = jnp.array([448.0, 1e-6, 1.0, -1e-7])  # per-tensor scale 1: 1e-6 is below 2^-9 / 2
  s = analysis.error_stats(x, "fp8_e4m3")
  assert s.underflow_frac == pytest.approx(0.5)
  assert s.max_rel_err == pytest.approx(1.0)


def test_model_error_stats_pools_sums_and_skips_vectors():
  a, b = _gauss((64, 32), 1), _gauss((32, 64), 2) * 10
  tree = {"dense": {"kernel": a}, "other": {"kernel": b, "bias": jnp.ones((64,))}}
  pooled, per = analysis.model_error_stats(tree, "mxfp8_e4m3")
  assert set(per) == {"dense/kernel", "other/kernel"}
  n = a.size + b.size
  assert pooled.n == n
  mse = (per["dense/kernel"].mse * a.size + per["other/kernel"].mse * b.size) / n
  assert pooled.mse == pytest.approx(mse, rel=1e-12)
  # Kernels are blocked along axis 0 (Flax (in, out)): 32 rows -> one E8M0 per column.
  assert per["other/kernel"].bits_per_value == pytest.approx(8.25)


def test_ladder_orders_formats_by_snr_on_gaussian_data():
  rows = analysis.precision_ladder(
      {"w": {"a": _gauss((64, 256), 4)}},
      ["bf16", "mxfp8_e4m3", "mxfp6_e3m2", "mxfp4"], progress=False)
  snr = [r.stats.snr_db for r in rows]
  assert snr == sorted(snr, reverse=True)
  md = analysis.ladder_markdown(rows)
  assert md.count("\n") == 2 + len(rows) and "mxfp6_e3m2" in md


def test_scale_study_e4m3_beats_e8m0_on_gaussian_blocks():
  r = analysis.scale_format_study("gauss", {"x": _gauss((128, 256), 5)})
  assert r.mse["e4m3_b16"] < r.mse["e8m0_rceil_b16"] < r.mse["e8m0_floor_b16"]
  assert 0.15 < r.reduction_vs_floor < 0.6
  assert r.nmse["e4m3_b16"] == pytest.approx(r.mse["e4m3_b16"] / float(jnp.mean(
      _gauss((128, 256), 5) ** 2)), rel=1e-6)
  assert analysis.NVIDIA_PUBLISHED["reduction"] == pytest.approx(0.8889, abs=1e-4)


def test_record_linear_inputs_captures_each_linear():
  from flax import nnx

  class Two(nnx.Module):
    def __init__(self):
      self.a = nnx.Linear(8, 16, rngs=nnx.Rngs(0))
      self.b = nnx.Linear(16, 4, rngs=nnx.Rngs(1))

    def __call__(self, x):
      return self.b(jax.nn.relu(self.a(x)))

  m = Two()
  x = _gauss((2, 3, 8))
  with analysis.record_linear_inputs(m) as store:
    m(x)
  assert set(store) == {"a", "b"}
  assert store["a"][0].shape == (6, 8) and store["b"][0].shape == (6, 16)
  np.testing.assert_allclose(store["a"][0], np.asarray(x).reshape(6, 8))
  assert nnx.Linear.__call__.__name__ == "__call__"  # restored


def test_metrics_module_reexports_match():
  assert analysis.error_stats is metrics.error_stats
