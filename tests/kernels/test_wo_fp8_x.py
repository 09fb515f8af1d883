"""`fp8_x` (decode on 8-bit tensor cores, `pallas_kernels/wo_matmul/fp8_x.py`) on the CPU:
the weights' E4M3 bytes over every code, their column order against Mosaic's own register
layouts, the split of x (exact where it claims to be, bounded elsewhere), and the kernel's
arithmetic end to end (`wo_matmul_fp8_x_twin`) against the float32 reference. The kernel itself
lowers in test_lowering_decode.py; the GPU benchmark checks it (experiments/next_gpu_session.sh)."""

from __future__ import annotations

import importlib
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mxjax
from pallas_kernels import wo_matmul as wm
from pallas_kernels.wo_matmul import decode
from pallas_kernels.wo_matmul import decode_plan
from pallas_kernels.wo_matmul import fp8_x as F8
from tests.kernels.test_wo_layout import _owners


def _weight(k=512, n=256, seed=0, preset="int4_g128", **overrides):
  return _weight_like(jax.random.normal(jax.random.key(seed), (k, n), jnp.float32), preset,
                      **overrides)


def _int4_values(nib):  # two's complement nibbles -> the odd values 2 c + 1, times 2^-9
  return (2 * np.where(nib >= 8, nib.astype(np.int64) - 16, nib) + 1) * 2.0**-9


def _e2m1_values(nib):  # E2M1 bits -> the values times 2^-6 (-0 and the subnormal 0.5 kept)
  return np.asarray(decode.e2m1_f32(jnp.asarray(nib.astype(np.int32))), np.float64) * 2.0**-6


@pytest.mark.parametrize("words,values", [(decode.int4_odd_e4m3_words, _int4_values),
                                          (decode.e2m1_e4m3_words, _e2m1_values)],
                         ids=["int4_odd", "e2m1"])
def test_e4m3_bytes_of_every_code_in_every_place(words, values):
  # Each nibble position holds each of the 16 codes (the other nibbles random): byte i of E /
  # O is the E4M3 encoding of code 2 i's / 2 i + 1's value, exact (ml_dtypes' cast, checked).
  rng = np.random.default_rng(0)
  w = rng.integers(0, 2**32, size=(8, 16, 64), dtype=np.uint64).astype(np.uint32)
  for pos in range(8):
    w[pos] = (w[pos] & ~np.uint32(15 << (4 * pos))) | (np.arange(16, dtype=np.uint32)[:, None]
                                                        << (4 * pos))
  even, odd = (np.asarray(v) for v in words(jnp.asarray(w), decode.JNP_WORD_OPS))
  for pos in range(8):
    value = values((w[pos] >> (4 * pos)) & 15)
    want = value.astype(ml_dtypes.float8_e4m3fn)
    assert np.all(want.astype(np.float64) == value)  # exact: no rounding
    word = (even if pos % 2 == 0 else odd)[pos]
    got = ((word >> (8 * (pos // 2))) & 0xFF).astype(np.uint8)
    np.testing.assert_array_equal(got, want.view(np.uint8))


def test_fp8_a_order_matches_the_register_layouts():
  # What `registers.int4_odd_e4m3` relies on, from Mosaic's own layouts: a thread's WGMMA_8BIT
  # register (a, c, ..) element i holds column L of its 32, for L = 16 (c % 2) + 4 q + i, the
  # code its WGMMA_UPCAST_4X register (a, c // 2, ..) holds as element 2 i + c % 2, which is
  # stored at FP8_A_ORDER[L].
  from jax.experimental.mosaic.gpu import fragmented_array as fa
  order = decode.FP8_A_ORDER
  np.testing.assert_array_equal(np.sort(order), np.arange(32))
  for rows in (64, 128):
    a8 = _owners(fa.WGMMA_LAYOUT_8BIT, (rows, 128))
    up4 = _owners(fa.WGMMA_LAYOUT_UPCAST_4X, (rows, 128))
    assert len(a8) == len(up4) == rows * 128
    for (thread, reg, i), (row, col) in a8.items():
      src = (reg[0], reg[1] // 2) + reg[2:]
      row_s, pos = up4[(thread, src, 2 * i + reg[1] % 2)]
      assert (row_s, pos) == (row, 32 * (col // 32) + order[col % 32])


# finite bf16 values by their bits (subnormals, both zeros and the largest normals included)
_BF16 = st.integers(0, 0xFFFF).filter(lambda b: (b >> 7) & 0xFF != 0xFF).map(
    lambda b: float(np.uint16(b).view(ml_dtypes.bfloat16)))


@settings(max_examples=80, deadline=None)
@given(st.lists(_BF16, min_size=32, max_size=32), st.integers(0, 31), st.integers(0, 12))
def test_split_is_exact_down_to_amax_2_to_the_minus_9(row, at, spread):
  # Rows of any bf16 values, and rows whose values lie within 2^spread of one another.
  x = np.asarray(row, np.float64)
  if spread < 12 and x[at] != 0:
    x = np.where(np.abs(x) > 0, np.sign(x) * np.ldexp(np.abs(x[at]), -(np.arange(32) % (spread + 1))),
                 0.0)
  x = x.astype(ml_dtypes.bfloat16).astype(np.float64)
  # f32 subnormals (bf16's, |x| < 2^-126): XLA on the CPU flushes them (so does the reference's
  # f32 dot there); count them as zeros
  x = np.where(np.abs(x) < 2.0**-126, 0.0, x)
  pw = _weight(k=128, n=128)
  x128 = np.tile(x, 4)[None, :]
  x8, sx, sums = F8.split_x(jnp.asarray(x128, jnp.bfloat16), pw, 8)
  x8 = np.asarray(x8.astype(jnp.float32), np.float64)
  assert x8.shape == (2, 128) and sums.shape == (1, 8)
  # `a_order` permuted the columns; undo it to compare element by element.
  inv = np.argsort(np.tile(decode.FP8_A_ORDER, 4) + np.repeat(np.arange(4) * 32, 32))
  back = (x8[0] + x8[1])[inv] * float(sx[0])
  amax = np.abs(x).max()
  big = np.abs(x128[0]) >= float(sx[0]) / 4  # (hi, lo exact from |x / s_x| >= 2^-2)
  assert amax == 0 or np.all(big[np.abs(x128[0]) >= amax * 2.0**-9])
  np.testing.assert_array_equal(back[big], x128[0][big])
  assert np.all(np.abs(back - x128[0]) <= F8.max_exact_error(x))
  if amax >= 2.0**-118:
    assert 128 <= amax / float(sx[0]) < 256
  elif amax > 0:
    assert float(sx[0]) == 2.0**-126
  np.testing.assert_allclose(np.asarray(sums)[0, :2], x8.sum(1) * 2.0**-9, rtol=1e-6)


def test_split_edges():
  pw = _weight(k=128, n=128)
  rows = np.zeros((4, 128), np.float32)
  rows[1, :] = 2.0**-126  # f32's smallest normals: s_x kept at 2^-126, not 2^-133
  rows[2, :3] = [2.0**100, -(2.0**100), 2.0**100 * (1 - 2.0**-8)]  # amax a power of two
  rows[3, :] = np.linspace(-448, 448, 128)
  x = jnp.asarray(rows, jnp.bfloat16)
  x8, sx, _ = F8.split_x(x, pw, 8)
  assert x8.dtype == jnp.float8_e4m3fn
  back = (np.asarray(x8[0::2].astype(jnp.float32)) + np.asarray(x8[1::2].astype(jnp.float32)))
  back = back * np.asarray(sx)[:, None]
  np.testing.assert_array_equal(back[0], 0.0)  # a zero row stays zero
  want = np.asarray(x.astype(jnp.float32))
  inv = np.argsort(np.tile(decode.FP8_A_ORDER, 4) + np.repeat(np.arange(4) * 32, 32))
  np.testing.assert_array_equal(back[:, inv], want)


@pytest.mark.parametrize("m", [1, pytest.param(3, marks=pytest.mark.slow),
                               pytest.param(4, marks=pytest.mark.slow), 16])
@pytest.mark.parametrize("store", ["k_order", "wgmma_order", "tiled", "bf16_scales", "uint4",
                                   "uint4_zero_points", "g32", "uint4_g64", "mxfp4",
                                   "mxfp4_multipliers", "fp8", "int8"])
def test_twin_matches_the_reference(m, store):
  # The kernel's arithmetic in jnp: the split, the E4M3 bytes from the stored words, the K
  # order of A and x, the fold (P - S) s_g (UINT4: - 2 off S; MXFP4: P s_g; FP8: its own
  # bytes, the channel scale; INT8: its bytes, P t s_channel) and the combine, against
  # x @ dequant(W). INT8's x split is exact only to 2^-15 of each chunk's amax (`int8_split`):
  # about 4e-5 of the output for Gaussian x.
  overrides = {"scale": "bf16"} if store == "bf16_scales" else {}
  if store in ("g32", "uint4_g64"):
    overrides["block_size"] = int(store[-2:])
  preset = ("int4_g128_asym" if "uint4" in store else "mxfp4" if "mxfp4" in store
            else "fp8_e4m3_rowwise" if store == "fp8" else "int8" if store == "int8"
            else "int4_g128")
  tol = 2e-4 if store == "int8" else 1e-5
  pw = _weight(k=1024, n=256, preset=preset, **overrides)
  if store == "uint4_zero_points":
    pw = wm.scales.uint4_zero_points(pw)
  if store == "mxfp4_multipliers":
    pw = wm.scales.fp4_scales_bf16(pw)
  if store in ("wgmma_order", "tiled"):
    pw = wm.code_order.order_for_wgmma(pw)
  if store == "tiled":
    pw = wm.code_order.tile_weight(pw, 128, 512)
  x = (jax.random.normal(jax.random.key(m), (m, 1024)) * 7).astype(jnp.bfloat16)
  ref = np.asarray(wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32), np.float64)
  y = np.asarray(F8.wo_matmul_fp8_x_twin(x, pw), np.float64)
  assert y.shape == (m, 256)
  assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < tol
  # x of one sign (the odd values owe back sum(x) / 2, which the result contains)
  xp = jnp.abs(x)
  ref = np.asarray(wm.wo_matmul_reference(xp, pw, out_dtype=jnp.float32), np.float64)
  y = np.asarray(F8.wo_matmul_fp8_x_twin(xp, pw), np.float64)
  assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < tol


@pytest.mark.parametrize("preset", ["int4_g128", "int8"])
def test_non_finite_rows_give_nan_in_their_rows_only(preset):
  pw = _weight(k=256, n=128, preset=preset)
  x = jax.random.normal(jax.random.key(3), (3, 256)).astype(jnp.bfloat16)
  x = x.at[1, 7].set(jnp.inf).at[2, 200].set(jnp.nan)
  y = np.asarray(F8.wo_matmul_fp8_x_twin(x, pw))
  assert np.all(np.isnan(y[1:])) and np.all(np.isfinite(y[0]))


@settings(max_examples=80, deadline=None)
@given(st.lists(_BF16, min_size=128, max_size=128), st.integers(0, 127), st.integers(0, 30))
def test_int8_split_is_within_2_to_the_minus_15_of_the_chunk_amax(row, at, spread):
  # INT8's x in int8 (`int8_split`): for rows of any bf16 values, and rows within 2^spread of
  # one another, hi in [-127, 127], lo in [-128, 127], x = t_hi hi + t_lo lo within half of
  # t_lo = 2^(e - 8), exact where x is a multiple of t_lo, and the chunk's amax in
  # (63.5 t_hi, 127 t_hi] (unless it is zero, or e is held at -118 for a tiny chunk).
  x = np.asarray(row, np.float64)
  if spread < 30 and x[at] != 0:
    x = np.sign(x) * np.ldexp(np.abs(x[at]), -(np.arange(128) % (spread + 1)))
  x = np.where(np.abs(x) < 2.0**-126, 0.0, x)  # f32 subnormals: XLA's CPU flushes them
  x = x.astype(ml_dtypes.bfloat16)
  x8, t = F8.int8_split(jnp.asarray(x[None, :]))
  x, x8, t = x.astype(np.float64), np.asarray(x8, np.int64), np.asarray(t, np.float64)
  assert x8.shape == (2, 128) and t.shape == (1, 2)
  hi, lo = x8
  assert np.all(np.abs(hi) <= 127) and np.all((lo >= -128) & (lo <= 127))
  t_hi, t_lo = t[0]
  assert t_lo == t_hi / 256 and t_lo >= 2.0**-126
  back = t_hi * hi + t_lo * lo
  assert np.all(np.abs(back - x) <= t_lo / 2)
  on_grid = np.mod(x, t_lo) == 0
  np.testing.assert_array_equal(back[on_grid], x[on_grid])
  amax = np.abs(x).max()
  assert amax <= 127 * t_hi
  if t_hi > 2.0**-118 and amax > 0:
    assert amax > 63.5 * t_hi


def test_int8_split_edges():
  rows = np.zeros((4, 256), np.float32)
  rows[1, :128] = 127.0  # amax 127 2^0 exactly: e = 0, hi = 127, lo = 0
  rows[1, 128:] = 2.0**-120  # a tiny chunk: e held at -118, the value 64 t_lo (2^-126)
  rows[2, :3] = [2.0**100, -(2.0**100), 2.0**100 * (1 - 2.0**-8)]  # amax a power of two
  rows[3, 5] = np.inf
  x8, t = F8.int8_split(jnp.asarray(rows, jnp.bfloat16))
  x8, t = np.asarray(x8, np.int64), np.asarray(t, np.float64)
  np.testing.assert_array_equal(x8[0:2], 0)  # a zero row: zero codes
  assert np.all(x8[2, :128] == 127) and np.all(x8[3, :128] == 0) and t[0, 2] == 1.0
  assert t[1, 2] == 2.0**-118 and t[1, 3] == 2.0**-126
  assert np.all(x8[2, 128:] == 0) and np.all(x8[3, 128:] == 64)
  back = t[0, 4] * x8[4, :3] + t[0, 5] * x8[5, :3]
  np.testing.assert_array_equal(back, rows[2, :3])
  assert np.all(np.isnan(t[0, 6:8])) and np.all(np.isfinite(t[1, 6:8]))  # the Inf's chunk
  # padded to the kernel's x operand width: the same columns, then zero rows' finite ones
  x8p, tp = F8.int8_split(jnp.asarray(rows, jnp.bfloat16), 16)
  np.testing.assert_array_equal(np.asarray(x8p, np.int64), x8)
  np.testing.assert_array_equal(np.asarray(tp, np.float64)[:, :8], t)
  np.testing.assert_array_equal(np.asarray(tp)[:, 8:], np.tile([2.0**-7, 2.0**-15], (2, 4)))
  with pytest.raises(ValueError, match="at least 2 M"):
    F8.int8_split(jnp.asarray(rows, jnp.bfloat16), 6)


def test_int8_split_nan_chunk_gets_nan_multipliers():
  # A max reduction need not propagate NaN: XLA's CPU dropped this one (a chunk of ones and
  # one NaN had amax 1), which left the chunk's multipliers finite and its codes garbage.
  rows = np.ones((3, 2048), np.float32)
  rows[1, 300] = np.nan  # token 1, chunk 2
  x8, t = F8.int8_split(jnp.asarray(rows, jnp.bfloat16))
  x8, t = np.asarray(x8, np.int64), np.asarray(t)
  nan = np.zeros(t.shape, bool)
  nan[2, 2:4] = True
  np.testing.assert_array_equal(np.isnan(t), nan)
  np.testing.assert_array_equal(x8[2:4, 256:384], 0)


def test_plan_gates_and_refuses_what_it_does_not_take():
  k, n = 8192, 28672
  int4 = jax.eval_shape(lambda w: _weight_like(w, "int4_g128"), jax.ShapeDtypeStruct((k, n),
                                                                                      jnp.float32))
  assert decode_plan.plan_decode(1, k, int4, fp8_x=True).fp8_x  # checked on an H200
  uint4 = jax.eval_shape(lambda w: _weight_like(w, "int4_g128_asym"),
                         jax.ShapeDtypeStruct((k, n), jnp.float32))
  with pytest.raises(NotImplementedError, match="allow_unverified"):
    decode_plan.plan_decode(1, k, uint4, fp8_x=True)
  p = decode_plan.plan_decode(3, k, int4, fp8_x=True, allow_unverified=True)
  assert p.fp8_x and p.xsum_in and p.mp == 8 and p.tma_pad and not p.fused_sum
  p4 = decode_plan.plan_decode(4, k, int4, fp8_x=True, allow_unverified=True)
  assert p4.mp == 8 and not p4.tma_pad  # eight rows: x8 goes as it is
  assert not decode_plan.plan_decode(1, k, int4, allow_unverified=True).fp8_x  # off by default
  p64 = decode_plan.plan_decode(64, k, int4, fp8_x=True, allow_unverified=True)
  assert p64.mp == 128  # above M = 4 the split doubles the wgmma's N
  # the fused sum with fp8_x (the pairs added and scaled in the kernel, session 24): gated
  with pytest.raises(NotImplementedError, match="fused_sum with fp8_x"):
    decode_plan.plan_decode(1, k, int4, fp8_x=True, fused_sum=True, stream_k=2)
  assert decode_plan.plan_decode(1, k, int4, fp8_x=True, fused_sum=True, stream_k=2,
                                 allow_unverified=True).fused_sum
  mx = jax.eval_shape(lambda w: _weight_like(w, "mxfp4"), jax.ShapeDtypeStruct((k, n),
                                                                               jnp.float32))
  pm = decode_plan.plan_decode(1, k, mx, fp8_x=True, allow_unverified=True)
  assert not pm.prescale and pm.group_slices and pm.per_chunk == 4 and not pm.xsum_in
  f8 = jax.eval_shape(lambda w: _weight_like(w, "fp8_e4m3_rowwise"),
                      jax.ShapeDtypeStruct((k, n), jnp.float32))
  pf = decode_plan.plan_decode(64, k, f8, fp8_x=True, step_wait=True, allow_unverified=True)
  assert pf.step_wait and not pf.chain and not pf.xsum_in  # a fresh product every chunk
  assert decode_plan.plan_decode(64, k, f8, step_wait=True, allow_unverified=True).chain
  i8 = jax.eval_shape(lambda w: _weight_like(w, "int8"), jax.ShapeDtypeStruct((k, n),
                                                                              jnp.float32))
  assert decode_plan.plan_decode(1, k, i8, fp8_x=True).fp8_x  # checked on an H100
  pi = decode_plan.plan_decode(16, k, i8, fp8_x=True)
  assert pi.xsum_in and pi.xs_rows == pi.gps and pi.mp == 32  # a row of multipliers a chunk
  assert F8.INT8_CHUNK == decode_plan.CHUNK  # the chunk the kernel folds is x's scale block
  assert not decode_plan.plan_decode(1, k, i8).fp8_x  # off by default
  for preset, overrides in (("nvfp4", {}), ("nf4_g64", {})):
    other = jax.eval_shape(lambda w, p=preset, o=overrides: _weight_like(w, p, **o),
                           jax.ShapeDtypeStruct((k, n), jnp.float32))
    with pytest.raises(NotImplementedError, match="INT4 / UINT4 / MXFP4"):
      decode_plan.plan_decode(1, k, other, fp8_x=True, allow_unverified=True)


def _weight_like(w, preset, **overrides):
  return wm.repack_qarray(mxjax.quantize(w, mxjax.schemes.get(preset, **overrides), axis=0))


def _small_study(monkeypatch, name: str) -> dict:
  """An error study under experiments/ (`run()`'s max_err_over_rms), at N = 128 and 2 seeds."""
  monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
  study = importlib.import_module(name)
  monkeypatch.setattr(study, "N", 128)
  monkeypatch.setattr(study, "SEEDS", 2)
  return study.run()["max_err_over_rms"]


def test_accumulation_model_ranks_the_encodings(monkeypatch):
  # experiments/fp8_x_accumulation_model.py, the study behind the odd values: under the FP8
  # accumulator model the odd values stay far below the bf16 path's rounding for every x (and
  # leave its bf16 result's error as it was), where the offset codes do not for x of one sign.
  for dist, err in _small_study(monkeypatch, "fp8_x_accumulation_model").items():
    assert err["fp8_x odd, f32"] < err["bf16 path"] / 8, dist
    assert err["fp8_x odd, bf16"] <= err["bf16 path"] * 1.05, dist
    if dist != "normal":
      assert err["fp8_x offset, f32"] > 10 * err["fp8_x odd, f32"], dist


def test_int8_split_stays_under_bf16_rounding_with_outliers(monkeypatch):
  # experiments/int8_x_split_error.py, the study behind INT8's x in int8: with outlier
  # activations (1% x30, fixed channels x300) the split's error stays far below the bf16
  # path's output rounding, and leaves its bf16 result's error as it was.
  for dist, err in _small_study(monkeypatch, "int8_x_split_error").items():
    assert err["int8_x, f32"] < err["bf16 path"] / 8, dist
    assert err["int8_x, bf16"] <= err["bf16 path"] * 1.05, dist
