"""Scheme-level numerics: quantize/dequantize against float64 / float32 references."""

import importlib

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mxjax
from mxjax import schemes
from tests import reference as ref

MX = {"mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2", "mxfp6_e3m2": "e3m2", "mxfp6_e2m3": "e2m3",
      "mxfp4": "e2m1", "mxint8": "mxint8"}  # fmt: skip


def _same(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(
      np.nan_to_num(a, nan=0.0), np.nan_to_num(b, nan=0.0)
  )


def _edge_blocks(rng, block=32):
  """Rows that stress the scale rule: zeros, NaN, Inf, amax at and around powers of two, tiny."""
  rows = [rng.standard_normal(block) * s for s in (1e-3, 1.0, 300.0)]
  rows.append(np.zeros(block))
  r = rng.standard_normal(block)
  r[3] = np.nan
  rows.append(r)
  r = rng.standard_normal(block)
  r[5] = np.inf
  rows.append(r)
  for k in (-120, -3, 0, 7, 100):  # amax = 2^k and 2^k (1 +- ulp)
    for m in (1.0, 1 + 2.0**-23, 1 - 2.0**-24):
      r = rng.uniform(-1, 1, block) * 2.0**k
      r[0] = m * 2.0**k
      rows.append(r)
  return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("preset", list(MX))
@pytest.mark.parametrize("rule", ["floor", "rceil"])
def test_mx_matches_ocp_and_te_rules(preset, rule):
  rng = np.random.default_rng(0)
  x = np.concatenate([_edge_blocks(rng), rng.standard_normal((9, 32)).astype(np.float32)])
  x = x.reshape(-1, 64)  # two blocks a row
  scheme = schemes.get(preset, scale_rule=rule)
  got = np.asarray(mxjax.dequantize(mxjax.quantize(jnp.asarray(x), scheme)))
  want = ref.mx_dequant(x, MX[preset], 32, rule)
  assert _same(got, want)


@pytest.mark.parametrize("preset", ["mxfp8_e4m3", "mxfp4", "mxfp6_e2m3"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-30, 30))
def test_mx_random_bf16_inputs(preset, seed, log_scale):
  rng = np.random.default_rng(seed)
  x = (rng.standard_normal((4, 64)) * 2.0**log_scale).astype(ml_dtypes.bfloat16)
  got = np.asarray(mxjax.dequantize(mxjax.quantize(jnp.asarray(x), preset)))
  assert _same(got, ref.mx_dequant(x.astype(np.float32), MX[preset], 32))


@pytest.mark.parametrize("preset", ["mxfp8_e4m3", "nvfp4", "int4_g128", "int4_g128_asym", "int8",
                                    "fp8_e4m3", "nf4_g64"])
def test_nan_propagates_in_large_arrays(preset):
  # XLA's vectorized CPU max-reduction drops NaN; a NaN must still poison its block.
  x = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
  x[10, 40] = np.nan
  y = np.asarray(mxjax.dequantize(mxjax.quantize(jnp.asarray(x), preset)))
  assert np.isnan(y[10, 40])
  if preset in ("nvfp4", "fp8_e4m3"):  # a NaN tensor scale: the whole tensor is NaN
    assert np.isnan(y).all()
  else:
    assert np.isfinite(y[20]).all()


def test_mx_nan_block_and_zero_block_scales():
  x = np.zeros((1, 64), np.float32)
  x[0, 40] = np.nan
  q = mxjax.quantize(jnp.asarray(x), "mxfp8_e4m3")
  assert np.asarray(q.scale).tolist() == [[0, 0xFF]]
  y = np.asarray(mxjax.dequantize(q))
  assert np.all(y[0, :32] == 0) and np.all(np.isnan(y[0, 32:]))


def _e4m3(x):
  x = np.asarray(x, np.float32)
  return ref.round_values(np.clip(x, -448, 448), "e4m3").astype(np.float32)


def nvfp4_reference(x):
  """NVIDIA's two-level NVFP4 in float32 operation order (DESIGN.md numerics contract)."""
  x = np.asarray(x, np.float32)
  xb = x.reshape(x.shape[0], -1, 16)
  f32 = np.float32
  s_t = f32(np.max(np.abs(x)) / f32(2688.0))
  amax_b = np.max(np.abs(xb), axis=-1, keepdims=True).astype(np.float32)
  s_b = _e4m3((amax_b / f32(6.0)).astype(f32) / s_t) if s_t > 0 else np.zeros_like(amax_b)
  with np.errstate(divide="ignore", invalid="ignore"):
    y = (xb * ((f32(1.0) / s_t) / s_b).astype(f32)).astype(f32)
  y = np.where(s_b > 0, y, 0).astype(f32)
  q = ref.round_values(y, "e2m1").astype(f32)
  return (q * (s_t * s_b).astype(f32)).astype(f32).reshape(x.shape)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_nvfp4_matches_two_level_rule(dtype):
  rng = np.random.default_rng(1)
  x = (rng.standard_normal((16, 64)) * rng.choice([1e-3, 1, 50], (16, 1))).astype(dtype)
  x[3] = 0  # an all-zero row of blocks
  got = np.asarray(mxjax.dequantize(mxjax.quantize(jnp.asarray(x), "nvfp4")))
  assert _same(got, nvfp4_reference(x.astype(np.float32)))


def test_nvfp4_all_zero_tensor_decodes_to_zero():
  y = mxjax.dequantize(mxjax.quantize(jnp.zeros((2, 32)), "nvfp4"))
  assert np.all(np.asarray(y) == 0)


def test_deepseek_block128():
  rng = np.random.default_rng(2)
  x = (rng.standard_normal((4, 256)) * rng.choice([1e-6, 1, 100], (4, 1))).astype(np.float32)
  x[1, :128] = 0
  q = mxjax.quantize(jnp.asarray(x), "fp8_e4m3_block128")
  amax = np.max(np.abs(x.reshape(4, 2, 128)), -1, keepdims=True)
  s = (np.maximum(amax, np.float32(1e-4)) / np.float32(448)).astype(np.float32)
  want = (_e4m3((x.reshape(4, 2, 128) / s).astype(np.float32)) * s).reshape(4, 256)
  assert np.array_equal(np.asarray(q.scale), s[..., 0])
  assert _same(mxjax.dequantize(q), want)


def test_deepseek_block128x128_weights():
  rng = np.random.default_rng(3)
  w = rng.standard_normal((256, 384)).astype(np.float32)
  q = mxjax.quantize(jnp.asarray(w), "fp8_e4m3_block128x128")
  assert q.scale.shape == (2, 3)
  wb = w.reshape(2, 128, 3, 128)
  s = (np.maximum(np.max(np.abs(wb), (1, 3), keepdims=True), np.float32(1e-4)) / np.float32(448))
  want = (_e4m3((wb / s).astype(np.float32)) * s).reshape(w.shape)
  assert _same(mxjax.dequantize(q), want)


@pytest.mark.parametrize("preset, qmax", [("int8", 127), ("int4_g128", 7)])
def test_symmetric_int(preset, qmax):
  rng = np.random.default_rng(4)
  x = rng.standard_normal((8, 256)).astype(np.float32)
  q = mxjax.quantize(jnp.asarray(x), preset)
  block = 256 if preset == "int8" else 128
  xb = x.reshape(8, -1, block)
  s = (np.max(np.abs(xb), -1, keepdims=True) / np.float32(qmax)).astype(np.float32)
  want = (np.clip(np.round(xb / s), -qmax - 1, qmax) * s).reshape(x.shape)
  assert np.array_equal(np.asarray(mxjax.dequantize(q)), want)


def test_asymmetric_int4():
  rng = np.random.default_rng(5)
  x = (rng.standard_normal((8, 256)) + 1.5).astype(np.float32)
  x[0] = 0.0
  q = mxjax.quantize(jnp.asarray(x), "int4_g128_asym")
  xb = x.reshape(8, 2, 128)
  lo = np.minimum(xb.min(-1, keepdims=True), 0)
  hi = np.maximum(xb.max(-1, keepdims=True), 0)
  s = ((hi - lo) / np.float32(15)).astype(np.float32)
  with np.errstate(divide="ignore", invalid="ignore"):
    zp = np.where(s > 0, np.clip(np.round(-lo / s), 0, 15), 0)
    codes = np.clip(np.round(np.where(s > 0, xb / s, 0)) + zp, 0, 15)
  want = ((codes - zp) * s).reshape(x.shape)
  assert np.array_equal(np.asarray(q.zero_point), zp[..., 0].astype(np.uint8))
  assert np.array_equal(np.asarray(mxjax.dequantize(q)), want)


def test_mse_scale_choice_never_worse_than_amax():
  x = jax.random.t(jax.random.key(0), 3.0, (32, 256))
  base = schemes.get("int4_g128")
  mse = base.replace(scale_choice="mse")
  e_amax = jnp.mean((mxjax.fake_quant(x, base) - x) ** 2, axis=-1)
  e_mse = jnp.mean((mxjax.fake_quant(x, mse) - x) ** 2, axis=-1)
  assert bool(jnp.all(e_mse <= e_amax)) and float(e_mse.mean()) < float(e_amax.mean())


def test_static_scale_clips_and_reports_through_values():
  s = schemes.get("fp8_e4m3", scale_choice="static", static_amax=1.0)
  y = mxjax.fake_quant(jnp.array([[0.5, 2.0, -3.0, 1.0]]), s)
  assert np.asarray(y).tolist() == [[0.5, 1.0, -1.0, 1.0]]


def test_stochastic_scheme_is_unbiased_in_expectation():
  s = schemes.get("mxfp4", rounding="stochastic")
  x = jax.random.normal(jax.random.key(1), (1, 64))
  keys = jax.random.split(jax.random.key(2), 4000)
  ys = jax.vmap(lambda k: mxjax.fake_quant(x, s, key=k))(keys)
  err = np.abs(np.asarray(ys.mean(0) - x))
  spread = np.asarray(ys.std(0)) / np.sqrt(4000)
  assert np.all(err <= 5 * spread + 1e-7)


@pytest.mark.parametrize("preset", [n for n in schemes.names() if n not in ("bf16", "fp32")])
def test_odd_shapes_with_padding(preset):
  x = jax.random.normal(jax.random.key(3), (3, 129))
  if preset == "fp8_e4m3_block128x128":
    x = jax.random.normal(jax.random.key(3), (130, 129))
  q = mxjax.quantize(x, preset, pad=True)
  y = mxjax.dequantize(q)
  assert y.shape == x.shape
  # Padding with zeros leaves the scale of every block unchanged: same as quantizing the
  # explicitly padded array and cropping.
  pad = [(0, p - s) for s, p in zip(q.layout.shape, q.layout.padded)]
  y2 = mxjax.dequantize(mxjax.quantize(jnp.pad(x, pad), preset))[: x.shape[0], : x.shape[1]]
  assert _same(y, y2)


def test_nan_float_scale_is_the_canonical_nan():
  # A GPU's division returns the NaN 0x7FFFFFFF where x86 keeps the operand's payload: stored
  # float scales of NaN blocks are always 0x7FC00000, so every backend writes the same bytes.
  Q = importlib.import_module("mxjax.quantize")  # the module (mxjax.quantize is the function)
  gpu_nan = jax.lax.bitcast_convert_type(jnp.array([0x7FFFFFFF, -1], jnp.int32), jnp.float32)
  s = Q._float_scale(gpu_nan, schemes.get("fp8_e4m3_block128"))
  assert np.asarray(s).view(np.uint32).tolist() == [0x7FC00000] * 2
