"""Weight-only matmul: reference == x @ mxjax.dequantize(W); every CPU-runnable kernel matches.

The Mosaic GPU kernel runs only on a GPU (TMA, wgmma); its portable twin runs here in
interpret mode, and experiments/bench_kernels.py checks the GPU kernel on the GPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mxjax
from pallas_kernels import wo_matmul as wm
from tests.kernels.wo_formats import FORMATS
from tests.kernels.wo_formats import IDS



def _weight(preset, overrides, k=256, n=128, seed=0):
  w = jax.random.normal(jax.random.key(seed), (k, n), jnp.float32)
  q = mxjax.quantize(w, mxjax.schemes.get(preset, **overrides), axis=0)
  return q, wm.repack_qarray(q)


def _rel(y, ref):
  y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
  assert np.all(np.isfinite(y)), "non-finite output"
  return np.linalg.norm(y - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_layout_dequantize_matches_mxjax(preset, overrides):
  q, pw = _weight(preset, overrides)
  want = np.asarray(mxjax.dequantize(q))
  got = np.asarray(wm.dequantize(pw))
  if pw.fmt is wm.WeightFormat.UINT4:  # (q - 8) * s - s * (zp - 8): equal up to rounding
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
  else:
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("impl", ["xla", "portable", "mosaic_tpu"])
@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_matches_x_at_dequant(impl, preset, overrides):
  # every implementation the CPU can run (the TPU kernel in TPU interpret mode) on every format
  q, pw = _weight(preset, overrides)
  x = jax.random.normal(jax.random.key(1), (4, 256), jnp.float32).astype(jnp.bfloat16)
  ref = x.astype(jnp.float32) @ mxjax.dequantize(q)
  y = wm.wo_matmul(x, pw, implementation=impl, interpret=impl != "xla",
                   out_dtype=jnp.float32)
  assert y.shape == (4, 128) and y.dtype == jnp.float32
  assert _rel(y, ref) < 1e-5


@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_dequant_gemm_prefill(preset, overrides):
  # The prefill path rounds the dequantized weight to bf16: bf16-level agreement.
  q, pw = _weight(preset, overrides)
  x = jax.random.normal(jax.random.key(2), (96, 256), jnp.float32).astype(jnp.bfloat16)
  ref = x.astype(jnp.float32) @ mxjax.dequantize(q)
  y = wm.wo_matmul(x, pw, implementation="dequant_gemm", out_dtype=jnp.float32)
  assert y.shape == (96, 128) and _rel(y, ref) < 4e-3
  # Its operand, the layout's W^T (E2M1 decoded by arithmetic), is mxjax's weight transposed.
  want = np.asarray(mxjax.dequantize(q), np.float32).T
  np.testing.assert_allclose(np.asarray(wm.layout.dequantize_nk(pw)), want, rtol=0,
                             atol=1e-6 * np.abs(want).max() if pw.fmt is wm.WeightFormat.UINT4
                             else 0)


@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_gemm_twin_has_dequant_gemm_numerics(preset, overrides):
  # The prefill GEMM's twin rounds each f32-dequantized weight to bf16 before the dot, exactly
  # as dequant_gemm's operand: the two agree to f32 summation order, far below bf16 rounding.
  q, pw = _weight(preset, overrides)
  x = jax.random.normal(jax.random.key(4), (16, 256), jnp.float32).astype(jnp.bfloat16)
  want = wm.wo_matmul(x, pw, implementation="dequant_gemm", out_dtype=jnp.float32)
  got = wm.wo_matmul(x, pw, implementation="portable", interpret=True, weights_bf16=True,
                     tile_k=128, out_dtype=jnp.float32)
  assert _rel(got, want) < 1e-6
  # ... and not the decode twin's numerics (codes exact, scale on the f32 partial sum), except
  # where q * s is exact in bf16 anyway (MXFP4: power-of-two scales; INT8 / FP8: per channel,
  # rounded differently but still close).
  decode = wm.wo_matmul(x, pw, implementation="portable", interpret=True, out_dtype=jnp.float32)
  if pw.fmt is not wm.WeightFormat.MXFP4:
    assert _rel(decode, want) > 1e-6


@settings(max_examples=60, deadline=None)
@given(chunk=st.sampled_from([64, 128]), steps_log=st.integers(0, 3),
       group_log=st.integers(4, 13), k_steps=st.integers(1, 6))
def test_gemm_chunk_scale_rows_property(chunk, steps_log, group_log, k_steps):
  # Any nesting of group, chunk and K step: every column of every chunk of every step reads its
  # own group's scale (the kernel's scale block index and chunk_scale_rows together).
  from pallas_kernels.wo_matmul.mosaic_gpu_gemm import chunk_scale_rows
  tile_k, group = chunk << steps_log, 1 << group_log
  table = chunk_scale_rows(tile_k, group, chunk)
  rows = max(1, tile_k // group)
  for kk in range(k_steps):
    first = (kk * tile_k // group // rows) * rows
    for j, chunk_rows in enumerate(table):
      for c in (0, chunk // 2 - 1, chunk // 2, chunk - 1):  # ends and middle of the chunk
        t = 0 if group >= chunk else c // group
        assert first + chunk_rows[t] == (kk * tile_k + j * chunk + c) // group


@pytest.mark.parametrize("tile_k,group,chunk", [(128, 128, 128), (256, 128, 128), (64, 128, 64),
                                                (128, 32, 128), (256, 64, 128), (64, 32, 64),
                                                (512, 256, 128), (128, 8192, 128)])
def test_gemm_chunk_scale_rows(tile_k, group, chunk):
  # Every column of every chunk reads the scale of its own global group: block row + the
  # block's first group (the GEMM kernel's scale BlockSpec index, kk * tile_k // group // rows).
  from pallas_kernels.wo_matmul.mosaic_gpu_gemm import chunk_scale_rows
  rows = max(1, tile_k // group)
  table = chunk_scale_rows(tile_k, group, chunk)
  assert len(table) == tile_k // chunk
  for kk in range(5):
    first = (kk * tile_k // group // rows) * rows
    for j, chunk_rows in enumerate(table):
      for c in range(chunk):
        t = 0 if group >= chunk else c // group
        assert first + chunk_rows[t] == (kk * tile_k + j * chunk + c) // group
  with pytest.raises(ValueError, match="do not nest"):
    chunk_scale_rows(128, 48, 128)


@pytest.mark.parametrize("preset,overrides", [FORMATS[0], FORMATS[6]], ids=[IDS[0], IDS[6]])
def test_m_tiles_give_the_rows_of_one_block(preset, overrides, monkeypatch):
  # The TPU kernel takes x MAX_TILE_M rows at a time above it, padding M to a multiple; each
  # output row is the same computation as with all of M in one block, bit for bit.
  from pallas_kernels.wo_matmul import tpu
  _, pw = _weight(preset, overrides, k=512, n=256)
  x = jax.random.normal(jax.random.key(4), (20, 512), jnp.float32).astype(jnp.bfloat16)
  whole = wm.wo_matmul(x, pw, implementation="mosaic_tpu", interpret=True, out_dtype=jnp.float32)
  monkeypatch.setattr(tpu, "MAX_TILE_M", 8)  # 20 rows: three tiles of 8, 4 rows of padding
  tiled = wm.wo_matmul(x, pw, implementation="mosaic_tpu", interpret=True, out_dtype=jnp.float32)
  assert tiled.shape == (20, 256)
  np.testing.assert_array_equal(np.asarray(tiled), np.asarray(whole))
  # the portable kernel in one block of M is the same computation; in blocks of 4 rows XLA's
  # CPU dot may sum in another order for the smaller M (4 f32 ulps on 2 of 5120 NVFP4 outputs
  # with jax 0.10.2, ml_dtypes 0.7.0), so those agree to rounding
  one = wm.wo_matmul(x, pw, implementation="portable", interpret=True, tile_m=20,
                     out_dtype=jnp.float32)
  np.testing.assert_array_equal(np.asarray(one), np.asarray(whole))
  portable = wm.wo_matmul(x, pw, implementation="portable", interpret=True, tile_m=4,
                          out_dtype=jnp.float32)
  np.testing.assert_allclose(np.asarray(portable), np.asarray(whole), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="multiple of tile_m=8"):
    wm.wo_matmul(x, pw, implementation="portable", interpret=True, tile_m=8)
  with pytest.raises(ValueError, match="multiple of 8"):
    wm.wo_matmul(x, pw, implementation="mosaic_tpu", interpret=True, tile_m=12)


def test_portable_tiling_and_bf16_out():
  _, pw = _weight("int4_g128", {}, k=512, n=256)
  x = jax.random.normal(jax.random.key(2), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)
  y = wm.wo_matmul(x, pw, implementation="portable", interpret=True, tile_n=128, tile_k=256)
  assert y.dtype == jnp.bfloat16
  assert _rel(y, ref) < 1e-2  # bf16 output rounding


def test_errors_are_raised_not_swallowed(monkeypatch):
  x = jnp.ones((4, 256), jnp.bfloat16)
  _, pw4 = _weight("int4_g128", {"block_size": 16})
  with pytest.raises(NotImplementedError, match="groups of 32, 64 or 128"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu")
  _, pw4 = _weight("int4_g128", {})
  with pytest.raises(NotImplementedError, match="M <= 64"):
    wm.wo_matmul(jnp.ones((65, 256), jnp.bfloat16), pw4, implementation="mosaic_gpu")
  with pytest.raises(NotImplementedError, match="interpreter"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", interpret=True)
  with pytest.raises(ValueError, match="fp4_scale_bytes"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", fp4_scale_bytes=True)
  with pytest.raises(ValueError, match="fp4_scale_bytes"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu_gemm", fp4_scale_bytes=True,
                 allow_unverified=True)
  with pytest.raises(ValueError, match="nf4_lut"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", nf4_lut=True)
  with pytest.raises(ValueError, match="compute_wgs must be 1 or 2"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", compute_wgs=3)
  _, pw8 = _weight("int8", {})
  with pytest.raises(NotImplementedError, match="warp specialization takes tile_n a multiple"):
    wm.wo_matmul(x, pw8, implementation="mosaic_gpu", compute_wgs=2, tile_n=64)
  with pytest.raises(ValueError, match="do not match"):
    wm.wo_matmul(x, wm.layout.tile_weight(pw4, 128, 256), implementation="mosaic_gpu",
                 tile_n=64)
  # fused_sum: gated until a GPU checks the case (UINT4 g32 not yet); stream-K (or one slot a
  # tile) only
  _, pw32 = _weight("int4_g128_asym", {"block_size": 32})
  with pytest.raises(NotImplementedError, match="fused_sum for uint4 group 32 has not matched"):
    wm.wo_matmul(x, pw32, implementation="mosaic_gpu", fused_sum=True)
  _, pw_k = _weight("int4_g128", {}, k=1024)  # four K steps: two splits of two
  with pytest.raises(ValueError, match="stream-K"):
    wm.wo_matmul(jnp.ones((4, 1024), jnp.bfloat16), pw_k, implementation="mosaic_gpu",
                 fused_sum=True, allow_unverified=True, splits=2)
  from pallas_kernels.wo_matmul import decode_plan  # a path not yet checked on a GPU is refused
  monkeypatch.setattr(decode_plan, "VERIFIED", set())
  with pytest.raises(NotImplementedError, match="allow_unverified"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu")
  with pytest.raises(NotImplementedError, match="interpreter"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu_gemm", interpret=True)
  from pallas_kernels.wo_matmul import mosaic_gpu_gemm
  monkeypatch.setattr(mosaic_gpu_gemm, "VERIFIED", set())
  with pytest.raises(NotImplementedError, match="allow_unverified"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu_gemm")
  with pytest.raises(ValueError, match="tile_m must be"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu_gemm", allow_unverified=True, tile_m=96)
  with pytest.raises(ValueError, match="tile_k must be"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu_gemm", allow_unverified=True, tile_k=96)
  with pytest.raises(ValueError, match="x must be"):
    wm.wo_matmul(jnp.ones((4, 128), jnp.bfloat16), pw4, implementation="xla")
  with pytest.raises(ValueError, match="implementation"):
    wm.wo_matmul(x, pw4, implementation="triton")
  with pytest.raises(ValueError, match="zero_point"):
    wm.repack(jnp.zeros((128, 128), jnp.uint8), jnp.ones((2, 128)), fmt="uint4", group=128)


def test_default_implementation_is_inspectable(monkeypatch):
  _, pw = _weight("int4_g128", {})
  x = jnp.ones((4, 256), jnp.bfloat16)
  assert wm.api.default_implementation(x, pw) == "xla"  # this CPU backend
  # On a GPU: the decode kernel for verified cases at M <= 64; at M > 64 the fused GEMM for
  # the cases a GPU session put in its VERIFIED, dequant_gemm for the others.
  from pallas_kernels.wo_matmul import mosaic_gpu_gemm
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  big = jnp.ones((128, 256), jnp.bfloat16)
  assert wm.api.default_implementation(x, pw) == "mosaic_gpu"
  assert wm.api.default_implementation(x.astype(jnp.float32), pw) == "xla"
  assert wm.api.default_implementation(big, pw) == "mosaic_gpu_gemm"
  monkeypatch.setattr(mosaic_gpu_gemm, "VERIFIED", set())
  assert wm.api.default_implementation(big, pw) == "dequant_gemm"
  monkeypatch.setattr(mosaic_gpu_gemm, "VERIFIED", {(wm.WeightFormat.INT4, 128)})
  assert wm.api.default_implementation(big, pw) == "mosaic_gpu_gemm"
  assert wm.api.default_implementation(big.astype(jnp.float32), pw) == "dequant_gemm"


def test_e2m1_select_tree_is_the_table():
  # The portable and TPU kernels' E2M1 decode: every code's f32 bits, -0 included.
  from pallas_kernels.wo_matmul.decode import E2M1_TABLE, e2m1_f32
  got = np.asarray(e2m1_f32(jnp.arange(16, dtype=jnp.int32)))
  np.testing.assert_array_equal(got.view(np.uint32), E2M1_TABLE.view(np.uint32))


PER_CHANNEL = ("int8", "fp8_e4m3_rowwise")  # presets stored as bytes, in K order


def test_decode_plan_resolves_the_defaults(monkeypatch):
  # The decode kernel's options as `plan_decode` resolves them (no lowering): the measured
  # defaults of `configs.decode_config`, and the paths that follow from the format and M.
  from pallas_kernels.wo_matmul import configs
  from pallas_kernels.wo_matmul import decode_plan
  from pallas_kernels.wo_matmul.configs import decode_config
  shape = lambda preset, **o: jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get(preset, **o), axis=0), wgmma_order=preset not in PER_CHANNEL,
      scale_bf16=True if preset == "nvfp4" else None), jax.ShapeDtypeStruct((8192, 28672),
                                                                             jnp.float32))
  g32, u128, nvfp4 = shape("int4_g128", block_size=32), shape("int4_g128_asym"), shape("nvfp4")
  p = decode_plan.plan_decode(1, 8192, g32)
  want = decode_config(wm.WeightFormat.INT4, 28672, 1)
  assert (p.tile_n, p.gps, p.steps) == (want["tile_n"], want["gps"], want["steps"])
  assert p.group_slices and p.xsub == 1 and p.per_chunk == 4 and p.tma_pad and p.mp == 8
  assert p.chunk_wait and not p.step_wait  # one wait a chunk for INT4's groups at M <= 16
  p16 = decode_plan.plan_decode(16, 8192, g32)  # g32's own config at M = 16 (session 14)
  assert (p16.tile_n, p16.gps, p16.steps, p16.chunk_wait) == (128, 2, 3, True)
  assert not decode_plan.plan_decode(64, 8192, g32).chunk_wait  # slower at M = 64
  g64, u32 = shape("int4_g128", block_size=64), shape("int4_g128_asym", block_size=32)
  p64 = decode_plan.plan_decode(64, 8192, g64)  # 128 rows a CTA: three steps fit
  assert (p64.tile_n, p64.steps, p64.compute_wgs) == (128, 3, 2)
  assert decode_plan.plan_decode(16, 8192, u32).compute_wgs == 2
  assert decode_plan.plan_decode(8, 8192, u32).step_wait
  assert not decode_plan.plan_decode(9, 8192, g32).tma_pad  # 9 rows: padded to 16 by XLA
  copies = decode_plan.plan_decode(16, 8192, g32, group_slices=False)
  assert copies.xsub == 4 and not copies.tma_pad
  u = decode_plan.plan_decode(1, 8192, u128)
  assert u.asym and u.xsum_in and u.step_wait and not u.zero_in_weights
  # INT4's stream-K launch at M <= 8 (session 15): 256 equal CTAs, not 224 one-tile CTAs.
  assert (u.tile_n, u.gps, u.steps, u.schedule.grid) == (128, 4, 2, (256,))
  assert decode_plan.plan_decode(9, 8192, u128).schedule.grid == (224, 1)
  u32_1 = decode_plan.plan_decode(1, 8192, u32)  # g32: two chunks a step fit two CTAs an SM
  assert (u32_1.tile_n, u32_1.gps, u32_1.steps, u32_1.schedule.grid) == (128, 2, 3, (256,))
  # INT4 below N = 16384 (4096 x 14336): stream-K, 128-row tiles at M <= 8 for groups of 128
  # (session 24) and 32 (session 26), 64-row ones for groups of 64 (session 26) and at M = 16
  int4 = lambda m, group: decode_config(wm.WeightFormat.INT4, 14336, m, group=group)
  assert int4(1, 128) == int4(8, 32) == dict(tile_n=128, gps=2, steps=4, stream_k=2)
  assert int4(16, 128) == int4(16, 32) == int4(1, 64) == int4(16, 64) == dict(
      tile_n=64, gps=2, steps=4, stream_k=2)
  assert decode_config(wm.WeightFormat.INT4, 28672, 16, group=32) == dict(
      tile_n=128, gps=2, steps=3, stream_k=2)  # N >= 16384: session 14's
  # ... on an H100 every group takes one slot a tile there (session 30), where N's tiles fill
  # the SMs (`configs.ONE_SLOT_MIN_N`)
  h100 = lambda n, m, group: decode_config(wm.WeightFormat.INT4, n, m, group=group,
                                           device="NVIDIA H100 80GB HBM3")
  assert h100(14336, 1, 128) == dict(tile_n=128, gps=2, steps=4) | configs.ONE_SLOT
  assert h100(14336, 16, 128) == dict(tile_n=64, gps=2, steps=4) | configs.ONE_SLOT
  assert h100(14336, 1, 64) == dict(tile_n=64, gps=2, steps=4) | configs.ONE_SLOT
  assert h100(4096, 1, 128) == int4(1, 128) and h100(4096, 1, 32) == int4(1, 32)
  uz = decode_plan.plan_decode(1, 8192, u128, zero_in_weights=True)
  assert uz.zero_in_weights and not uz.xsum_in
  f = decode_plan.plan_decode(64, 8192, nvfp4)
  assert f.prescale and f.per_chunk == 1 and f.step_wait and f.compute_wgs == 2
  assert dataclasses.is_dataclass(f) and f.schedule.iters > 0
  with pytest.raises(dataclasses.FrozenInstanceError):
    f.steps = 2
  # fused_sum: by default where the config asks for it, a GPU checked the case and the schedule
  # lets slot 0 wait (stream-K, or one slot a tile), never an error on a default path
  assert not decode_plan.plan_decode(1, 8192, g32).fused_sum
  asks = lambda *a, **kw: decode_config(*a, **kw) | dict(fused_sum=True)
  monkeypatch.setattr(decode_plan, "decode_config", asks)
  monkeypatch.setattr(decode_plan, "FUSED_SUM_VERIFIED", frozenset())
  assert not decode_plan.plan_decode(1, 8192, u128).fused_sum  # not checked on a GPU
  monkeypatch.setattr(decode_plan, "FUSED_SUM_VERIFIED", frozenset({decode_plan.case(u128)}))
  assert decode_plan.plan_decode(1, 8192, u128).fused_sum  # stream-K at M <= 8
  split = decode_plan.plan_decode(9, 8192, u128)  # (224, 1): one CTA a tile, no K split
  assert split.fused_sum == (split.schedule.slots == 1)
  assert not decode_plan.plan_decode(1, 8192, u128, splits=2, stream_k=None).fused_sum
  monkeypatch.undo()
  # INT4 g128, MXFP4, NVFP4 and FP8 above M = 16 (FP8 above 8 on an H100), INT8 above 32
  # (above 16 on an H100), add their partial sums in the kernel (faster on an H100 and an H200)
  g128 = shape("int4_g128")
  fs = lambda w, ms: [decode_plan.plan_decode(m, 8192, w).fused_sum for m in ms]
  assert fs(g128, (16, 17, 64)) == [False, True, True]
  assert fs(nvfp4, (16, 17, 64)) == fs(shape("mxfp4"), (16, 17, 64)) == [False, True, True]
  assert fs(shape("int8"), (17, 32, 33, 64)) == [False, False, True, True]
  assert fs(shape("fp8_e4m3_rowwise"), (16, 17, 64)) == [False, True, True]
  monkeypatch.setattr(configs, "device_kind", lambda: "NVIDIA H100 80GB HBM3")
  assert fs(shape("int8"), (16, 17, 32)) == [True, True, True]
  assert fs(shape("fp8_e4m3_rowwise"), (8, 9, 16)) == [True, True, True]
  # ... where at small M one CTA a 128-row tile writes y itself (`configs.ONE_SLOT_DEVICES`):
  # INT4 g128 at M <= 16, INT4 g32 at M <= 8, INT8 and FP8 at M <= 32 (on two compute
  # warpgroups above 16); not UINT4 or MXFP4 (no gain), nor where N's tiles leave SMs idle
  def one_slot(m, w):
    p = decode_plan.plan_decode(m, 8192, w)
    return p.schedule.grid == (224, 1) and p.tile_n == 128 and p.fused_sum
  int8, fp8 = shape("int8"), shape("fp8_e4m3_rowwise")
  assert [one_slot(m, g128) for m in (1, 16, 17)] == [True, True, False]
  assert [one_slot(m, g32) for m in (1, 8, 9)] == [True, True, False]
  assert [one_slot(m, int8) for m in (1, 16, 17, 32, 33)] == [True, True, True, True, False]
  assert [one_slot(m, fp8) for m in (16, 17, 32, 33)] == [True, True, True, False]
  assert [decode_plan.plan_decode(m, 8192, w).compute_wgs
          for m in (16, 17) for w in (int8, fp8)] == [1, 1, 2, 2]
  assert not one_slot(1, u128) and not one_slot(1, shape("mxfp4"))
  # ... and UINT4 g128 at M <= 8 when stored for plain loads (session 30)
  u128_plain = jax.eval_shape(wm.layout.thread_major, u128)
  assert [one_slot(m, u128_plain) for m in (1, 8, 9)] == [True, True, False]
  for fmt in (wm.WeightFormat.INT8, wm.WeightFormat.FP8):
    assert "splits" not in decode_config(fmt, 4096, 1) | decode_config(fmt, 4096, 32)
  monkeypatch.undo()
  assert not any(one_slot(1, w) for w in (g128, g32, shape("int8")))  # elsewhere: stream-K
  assert not decode_plan.plan_decode(32, 8192, g32).fused_sum  # g32 above M = 16: XLA's sum
  # 8-bit tensor cores (`fp8_x`) on the devices where that paid (the H200, not the H100): FP8
  # at M <= 8, INT8 at M <= 4 (in 128-row tiles), MXFP4 at M <= 4, unless an option it excludes
  # is asked for; FP8 above M = 8 and INT8 above 16 with two compute warpgroups
  fp8, mxfp4, int8 = shape("fp8_e4m3_rowwise"), shape("mxfp4"), shape("int8")
  monkeypatch.setattr(configs, "device_kind", lambda: "NVIDIA H200")
  x8 = lambda m, w: decode_plan.plan_decode(m, 8192, w).fp8_x
  assert [x8(m, fp8) for m in (8, 9)] == [True, False]
  assert [x8(m, int8) for m in (1, 4, 5)] == [True, True, False]
  assert [x8(m, mxfp4) for m in (1, 4, 5, 8)] == [True, True, False, False]
  assert decode_plan.plan_decode(4, 8192, int8).tile_n == 128
  assert decode_plan.plan_decode(5, 8192, int8).tile_n == 64
  assert decode_plan.plan_decode(9, 8192, fp8).compute_wgs == 2
  # fused_sum asked with fp8_x: where a GPU checked the pair (INT8, FP8, MXFP4) both, else the
  # bf16 path
  assert decode_plan.plan_decode(1, 8192, fp8, fused_sum=True).fp8_x
  assert decode_plan.plan_decode(1, 8192, mxfp4, fused_sum=True).fp8_x
  with monkeypatch.context() as patch:
    patch.setattr(decode_plan, "FP8_X_FUSED_SUM_VERIFIED", frozenset())
    assert not decode_plan.plan_decode(1, 8192, mxfp4, fused_sum=True,
                                       allow_unverified=True).fp8_x
  for kind in ("NVIDIA H100 80GB HBM3", "NVIDIA GH200 480GB", "cpu"):
    monkeypatch.setattr(configs, "device_kind", lambda kind=kind: kind)
    assert not any(x8(1, w) for w in (fp8, mxfp4, int8)), kind
    # INT8 at M <= 4 on the H100: FP8's 128-row tiles, one CTA a tile (session 25)
    i8 = decode_plan.plan_decode(4, 8192, int8)
    h100 = kind.startswith("NVIDIA H100")
    assert (i8.tile_n, i8.schedule.grid) == ((128, (224, 1)) if h100 else (64, (256,))), kind
  h200 = lambda fmt, k, n: configs.decode_config(fmt, n, 1, device="NVIDIA H200", k=k)
  assert h200(wm.WeightFormat.FP8, 8192, 28672)["fp8_x"]
  # below a format's `FP8_X_MIN_WEIGHT` the split's XLA kernels cost more than the decode they
  # save (INT8 / MXFP4 at 4096 x 14336; FP8 gains there), and without K the size is unknown:
  # the bf16 path
  for fmt in (wm.WeightFormat.FP8, wm.WeightFormat.MXFP4, wm.WeightFormat.INT8):
    for k, n in ((4096, 4096), (4096, 14336), (14336, 4096), (None, 28672)):
      want = fmt is wm.WeightFormat.FP8 and k is not None and k * n >= 4096 * 14336
      assert h200(fmt, k, n).get("fp8_x", False) == want, (fmt, k, n)
  assert h200(wm.WeightFormat.INT8, 4096, 14336)["tile_n"] == 64
  short_k = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int8"), axis=0), wgmma_order=False),
      jax.ShapeDtypeStruct((4096, 28672), jnp.float32))  # N as above, K halved: 1.2e8 elements
  monkeypatch.setattr(configs, "device_kind", lambda: "NVIDIA H200")
  assert x8(1, int8) and not decode_plan.plan_decode(1, 4096, short_k).fp8_x
  assert not decode_plan.plan_decode(1, 8192, g32).fp8_x  # INT4 checked, slower: off
  assert [decode_plan.plan_decode(m, 8192, int8).compute_wgs for m in (16, 17)] == [1, 2]
  # two compute warpgroups on a per-channel weight's split schedule: gated until a GPU checks
  # the case (INT8 and FP8 since session 29)
  assert decode_plan.plan_decode(16, 8192, fp8, splits=1).schedule.grid == (224, 1)
  with monkeypatch.context() as patch:
    patch.setattr(decode_plan, "SPLIT_WGS_VERIFIED", frozenset())
    with pytest.raises(NotImplementedError, match="compute_wgs=2 on K splits for per-channel"):
      decode_plan.plan_decode(16, 8192, fp8, splits=1)
    assert decode_plan.plan_decode(16, 8192, fp8, splits=1,
                                   allow_unverified=True).compute_wgs == 2
  assert decode_plan.plan_decode(16, 8192, fp8, splits=1, compute_wgs=1).schedule.grid == (
      224, 1)
  with pytest.raises(NotImplementedError, match="M <= 64"):
    decode_plan.plan_decode(65, 8192, nvfp4)
  with pytest.raises(ValueError, match="x is \\(M, 4096\\) but W has K=8192"):
    decode_plan.plan_decode(1, 4096, nvfp4)


@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_decode_defaults_plan_for_every_m_and_shape(preset, overrides, monkeypatch):
  # The measured defaults (`configs.decode_config`, tuned at 8192 x 28672) resolve to a plan that
  # fits shared memory and tiles N and K for every M <= 64 at the model shapes around them, with
  # the GPU's storage (register order, bf16 scale multipliers) and without, on each device's
  # defaults (the H200's `fp8_x`, the H100's one slot a tile): a default that raised for some
  # shape would take that shape off the GPU kernel. Each launches at least 112 CTAs (85% of an
  # H100's 132 SMs; 4096 x 14336's 128-row tiles, measured to gain): session 29's one slot a
  # tile took the 8-bit decode at 4096 x 4096 to 32 CTAs and twice the time (session 30).
  from pallas_kernels.wo_matmul import configs
  from pallas_kernels.wo_matmul import decode_plan
  for k, n in [(4096, 4096), (4096, 14336), (8192, 28672), (14336, 4096), (2048, 8192)]:
    for gpu in (False, True):
      gpu_store = dict(wgmma_order=gpu and preset not in PER_CHANNEL,
                       scale_bf16=gpu and preset in ("mxfp4", "nvfp4", "nf4_g64"))
      pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
          w, mxjax.schemes.get(preset, **overrides), axis=0), **gpu_store),
          jax.ShapeDtypeStruct((k, n), jnp.float32))
      for device in ("cpu", "NVIDIA H200", "NVIDIA H100 80GB HBM3"):
        monkeypatch.setattr(configs, "device_kind", lambda device=device: device)
        for m in range(1, 65):
          p = decode_plan.plan_decode(m, k, pw, allow_unverified=True)
          where = (k, n, gpu, m, device, p.schedule.grid)
          assert p.steps >= 2 and n % p.tile_n == 0 and k % p.tile_k == 0, where
          assert math.prod(p.schedule.grid) >= 112, where


@settings(max_examples=300, deadline=None)
@given(st.floats(2.0**-126, 2.0**100, width=32), st.integers(0, 15), st.integers(-4, 4))
def test_uint4_zero_points_back_from_offsets(scale, zp, ulps):
  # The decode kernel's `zero_in_weights`: zp - 8 recovered in bf16 from the stored offset
  # RN_f32(s * (zp - 8)) and s, exactly, even with the quotient a few ulps off (an approximate
  # GPU division); then (q - 8) - (zp - 8) is q - zp for every code q.
  from pallas_kernels.wo_matmul.decode import uint4_zero_bf16
  s = np.float32(scale)
  off = np.float32(s * np.float32(zp - 8))
  quot = np.array([off / s], np.float32)
  if quot[0] != 0:  # a few ulps either way
    quot = (quot.view(np.int32) + np.int32(ulps)).view(np.float32)
  z = uint4_zero_bf16(jnp.asarray(off), jnp.asarray(s))
  assert z.dtype == jnp.bfloat16 and float(z) == zp - 8
  assert float(jnp.asarray(quot[0]).astype(jnp.bfloat16)) == zp - 8  # the perturbed quotient
  q = jnp.arange(16, dtype=jnp.int32)
  np.testing.assert_array_equal(
      np.asarray((q - 8).astype(jnp.bfloat16) - z, np.float32), np.arange(16) - zp)


def test_uint4_zero_points_of_a_quantized_weight():
  # ... on mxjax's own UINT4 weights: blocks from 2^-60 to 2^60, and all-zero blocks (s = 0,
  # offset 0: the zero point read as 0, harmless since the block's values are all s * ... = 0).
  from pallas_kernels.wo_matmul.decode import uint4_zero_bf16
  key = jax.random.key(3)
  w = jax.random.normal(key, (512, 256)) * jnp.exp2(
      jax.random.randint(jax.random.fold_in(key, 1), (4, 256), -60, 60)).repeat(128, 0)
  w = w.at[:128, :8].set(0.0)  # all-zero blocks
  q = mxjax.quantize(w, mxjax.schemes.get("int4_g128_asym"), axis=0)
  pw = wm.repack_qarray(q, wgmma_order=False, scale_bf16=False)
  z = np.asarray(uint4_zero_bf16(pw.offset, pw.scale), np.float32)
  want = np.asarray(q.zero_point, np.float32) - 8
  zero = np.asarray(pw.scale) == 0
  assert zero[0, :8].all()
  np.testing.assert_array_equal(z[~zero], want[~zero])
  np.testing.assert_array_equal(z[zero], 0)


def _offsets_bits(off):
  b = np.asarray(off, np.float32).view(np.uint32)
  return np.where(np.isnan(np.asarray(off)), np.uint32(0x7FC00000), b)  # one NaN


def test_uint4_zero_points_round_trip():
  # `layout.uint4_zero_points` stores zp (uint8) for the f32 offsets s (zp - 8); readers make
  # the offsets again with `uint4_offsets`: bit for bit, over scales of every binade (random
  # positive bit patterns), subnormals, +-0, +-inf, NaN, scales whose offsets overflow, and every
  # zero point; the zero points themselves come back wherever the 16 offsets differ (not where
  # s (zp - 8) overflows, or underflows to a flushed zero).
  rng = np.random.default_rng(0)
  g, n = 32, 128
  bits = rng.integers(0, 0x7F800000, (g, n), dtype=np.uint32)  # finite, positive
  special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 2.0**-149, 2.0**-127, 3e38,
                      np.finfo(np.float32).max, 1.0], np.float32)
  s = bits.view(np.float32)
  s[:len(special), :16] = special[:, None]
  zp = rng.integers(0, 16, (g, n)).astype(np.uint8)
  zp[:len(special), :16] = np.arange(16, dtype=np.uint8)[None, :]  # every zp with every special
  pw = wm.repack(jnp.zeros((g * 64 // 2, n), jnp.uint8), jnp.asarray(s), fmt="uint4", group=64,
                 zero_point=jnp.asarray(zp), wgmma_order=False)
  z = wm.layout.uint4_zero_points(pw)
  assert z.zero_points and z.offset.dtype == jnp.uint8 and z.nbytes < pw.nbytes
  back = wm.layout.uint4_offsets(z)
  assert not back.zero_points and back.offset.dtype == jnp.float32
  np.testing.assert_array_equal(_offsets_bits(back.offset), _offsets_bits(pw.offset))
  ok = (np.abs(s) > 2.0**-100) & (np.abs(s) < 2.0**100)
  np.testing.assert_array_equal(np.asarray(z.offset)[ok], zp[ok])
  assert wm.layout.uint4_zero_points(z) is z and wm.layout.uint4_offsets(pw) is pw
  np.testing.assert_array_equal(np.asarray(wm.dequantize(z)), np.asarray(wm.dequantize(pw)))
  with pytest.raises(ValueError, match="1 UINT4 offsets are not f32"):
    wm.layout.uint4_zero_points(dataclasses.replace(pw, offset=pw.offset.at[20, 20].add(
        pw.scale[20, 20] * 0.25)))
  with pytest.raises(ValueError, match="zero points are UINT4's, not int4's"):
    wm.layout.uint4_zero_points(_weight("int4_g128", {})[1])


@pytest.mark.parametrize("group", [32, 128])
def test_uint4_zero_points_in_the_kernels(group):
  # A weight with zero-point bytes gives every CPU-runnable kernel's result bit for bit, and
  # the decode plan reads a quarter of the offsets' bytes.
  from pallas_kernels.wo_matmul import decode_plan
  _, pw = _weight("int4_g128_asym", {"block_size": group}, k=512, n=256)
  z = wm.layout.uint4_zero_points(pw)
  x = jax.random.normal(jax.random.key(1), (4, 512), jnp.bfloat16)
  for impl in ("xla", "portable"):
    f = lambda w: wm.wo_matmul(x, w, implementation=impl, interpret=impl == "portable")
    np.testing.assert_array_equal(np.asarray(f(z)), np.asarray(f(pw)), impl)
  assert decode_plan.case(z) == (wm.WeightFormat.UINT4, group, "zero_points")
  assert decode_plan.plan_decode(1, 512, z).zero_points  # checked on the GPU: ungated
  assert decode_plan._smem_per_step(wm.WeightFormat.UINT4, 128, 512, 8, 1, 4, off_bytes=1) == (
      decode_plan._smem_per_step(wm.WeightFormat.UINT4, 128, 512, 8, 1, 4) - 3 * 4 * 128)


@pytest.mark.parametrize("fmt", [wm.WeightFormat.MXFP4, wm.WeightFormat.NVFP4])
def test_scale_bytes_decode_every_byte(fmt):
  # The decode kernel's in-register scale decode (fp4_scale_bytes) against the stored dtype's
  # own value, for all 256 bytes: E8M0 2^(b - 127) (b = 0: 2^-127, a subnormal; 255: NaN), E4M3.
  b = jnp.arange(256, dtype=jnp.int32).astype(jnp.uint8)
  got = np.asarray(wm.layout.scale_bytes_f32(b, fmt), np.float32)
  if fmt is wm.WeightFormat.MXFP4:
    want = np.append(np.ldexp(np.float32(1), np.arange(255) - 127), np.nan).astype(np.float32)
  else:
    want = np.asarray(jax.lax.bitcast_convert_type(b, jnp.float8_e4m3fn), np.float32)
  np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(want)],
                                want.view(np.uint32)[~np.isnan(want)])
  assert np.array_equal(np.isnan(got), np.isnan(want))


def test_nf4_byte_permute_lookup_is_the_table():
  # The GPU kernels' NF4 lookup algorithm (`nf4_prmt_words`), run with a CPU model of PTX prmt,
  # on every 16-bit word (all four-code combinations): each word is the table's f32 bits.
  w = jnp.arange(2**16, dtype=jnp.uint32)
  words = wm.decode.nf4_prmt_words(w, wm.decode.JNP_WORD_OPS)
  table = wm.decode.NF4_TABLE.view(np.uint32)
  for k, got in enumerate(words):
    np.testing.assert_array_equal(np.asarray(got), table[(np.arange(2**16) >> (4 * k)) & 15])
  # The prmt model itself, on the byte-selection cases the algorithm relies on.
  a, b = jnp.uint32(0x03020100), jnp.uint32(0x07060504)
  assert int(wm.decode.prmt_reference(a, b, jnp.uint32(0x3210))) == 0x03020100
  assert int(wm.decode.prmt_reference(a, b, jnp.uint32(0x7654))) == 0x07060504
  assert int(wm.decode.prmt_reference(a, b, jnp.uint32(0x5140))) == 0x05010400
  # Bit 3 of a selector nibble: the selected byte's top bit over all 8 bits; high 16 bits ignored.
  a, b = jnp.uint32(0x80017F00), jnp.uint32(0xFF00FE01)
  assert int(wm.decode.prmt_reference(a, b, jnp.uint32(0xABCD3F8E))) == 0x80FF0000


@pytest.mark.parametrize("part", range(4))
def test_e2m1_pair_bits_times_2_126_is_the_table(part):
  # The GPU kernels' E2M1 decode (`e2m1_pair_bits`, prmt modelled on the CPU, then the exact
  # bf16 multiply by 2^126, here in float64): every code pair at every place in the word, the
  # other six codes random; each half's value bit for bit the table's (-0 included).
  import ml_dtypes
  rng = np.random.default_rng(part)
  pairs = np.arange(256, dtype=np.uint32)  # low nibble: code 2 part, high: code 2 part + 1
  other = rng.integers(0, 2**32, size=256, dtype=np.uint32) & ~np.uint32(0xFF << (8 * part))
  w = other | (pairs << (8 * part))
  bits = np.asarray(wm.decode.e2m1_pair_bits(jnp.asarray(w), part, wm.decode.JNP_WORD_OPS))
  assert int(wm.decode.BF16_2_POW_126) == int(np.float32(2.0**126).view(np.uint32) >> 16)
  for half, codes in ((bits & 0xFFFF, pairs & 15), (bits >> 16, pairs >> 4)):
    val = half.astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float64) * 2.0**126
    np.testing.assert_array_equal(val.astype(np.float32).view(np.uint32),
                                  wm.decode.E2M1_TABLE[codes].view(np.uint32))


def test_nf4_lookups():
  # The GPU kernel's NF4 lookups (select trees); unprescaled: two bf16 terms per code from one select tree; hi is the table
  # rounded to bf16, hi + lo within 2^-17 of the f32 table (float64 check, every code).
  from pallas_kernels.wo_matmul.decode import NF4_TABLE, nf4_f32, nf4_hi_lo
  codes = jnp.arange(16, dtype=jnp.uint16)
  exact = np.asarray(nf4_f32(codes))  # the prescaled path's f32 lookup: bit for bit
  np.testing.assert_array_equal(exact.view(np.uint32), NF4_TABLE.view(np.uint32))
  hi, lo = nf4_hi_lo(codes)
  assert hi.dtype == lo.dtype == jnp.bfloat16
  hi64, lo64 = (np.asarray(v.astype(jnp.float32), np.float64) for v in (hi, lo))
  np.testing.assert_array_equal(hi64, NF4_TABLE.astype(jnp.bfloat16).astype(np.float64))
  t = NF4_TABLE.astype(np.float64)
  assert np.all(np.abs(hi64 + lo64 - t) <= 2.0**-17 * np.abs(t))
  assert np.any(lo64 != 0)  # the second term carries bits the first cannot


def _simulate(sched, kst):
  """Runs a schedule's CTAs on the CPU with Python ints: every (tile, K step) gets a value, each
  CTA accumulates and flushes to its slot as the kernel does, unwritten slots hold NaN."""
  rng = np.random.default_rng(0)
  vals = rng.standard_normal((sched.n_tiles, kst))
  parts = np.full((sched.slots, sched.n_tiles * sched.tile_n, 1), np.nan)
  seen = np.zeros((sched.n_tiles, kst), int)
  flushed = set()
  for ids in np.ndindex(*sched.grid):
    acc, last_place = 0.0, None
    length = sched.iters if sched.lengths is None else int(sched.lengths[ids[0]])
    for i in range(sched.iters):
      tile, kk, slot = (int(v) for v in sched.place_at(ids, i))
      if i >= length:  # a shorter share's padding: its last step again, never flushed
        assert (tile, kk) == last_place and not sched.last_at(ids, i)
        continue
      last_place = (tile, kk)
      seen[tile, kk] += 1
      acc += vals[tile, kk]
      if sched.last_at(ids, i):
        assert (slot, tile) not in flushed and sched.written[slot, tile]
        flushed.add((slot, tile))
        parts[slot, tile * sched.tile_n:(tile + 1) * sched.tile_n] = acc
        acc = 0.0
  assert (seen == 1).all(), "every iteration exactly once"
  assert flushed == {tuple(ix) for ix in np.argwhere(sched.written)}
  got = np.asarray(sched.reduce(jnp.asarray(parts, jnp.float32)))[::sched.tile_n, 0]
  np.testing.assert_allclose(got, vals.sum(1), rtol=1e-5)


@pytest.mark.parametrize("n_tiles,kst,ctas", [(224, 32, 256), (224, 32, 224), (7, 8, 8),
                                              (112, 16, 256), (3, 5, 15), (5, 3, 5),
                                              (224, 32, 396), (7, 8, 5), (3, 5, 14), (5, 3, 2)])
def test_stream_k_schedule_covers_every_iteration_once(n_tiles, kst, ctas):
  # Equal shares where the CTAs divide the iterations, else shares one step apart.
  from pallas_kernels.wo_matmul import schedule as S
  sched = S.stream_k_schedule(n_tiles, 2, kst, ctas)
  total = n_tiles * kst
  assert sched.iters == -(-total // ctas) and sched.grid == (ctas,)
  assert sched.lengths.sum() == total and set(sched.lengths) <= {total // ctas, sched.iters}
  _simulate(sched, kst)


def _fused_sum_events(sched):
  """`fused_sum` on a schedule, run on the CPU: per CTA, its flushes in pipeline order as
  ("give", tile) (slots 1..: store, then signal) or ("sum", tile, [CTAs waited on]) (slot 0)."""
  events = {}
  for ids in np.ndindex(*sched.grid):
    length = sched.iters if sched.lengths is None else int(sched.lengths[ids[0]])
    out = events.setdefault(ids, [])
    for i in range(length):
      if not sched.last_at(ids, i):
        continue
      tile, _, slot = (int(v) for v in sched.place_at(ids, i))
      writers = int(sched.writers_at(tile))
      assert writers == sched.written[:, tile].sum(), "the slots the kernel waits on"
      out.append(("give", tile) if slot else
                 ("sum", tile, [ids[0] + s for s in range(1, writers)]))
  return events


@pytest.mark.parametrize("n_tiles,kst,ctas", [(224, 32, 256), (224, 16, 264), (7, 8, 8),
                                              (112, 16, 256), (3, 5, 15), (5, 3, 2),
                                              (224, 32, 396), (7, 8, 5), (56, 64, 132)])
def test_stream_k_fused_sum_cannot_deadlock(n_tiles, kst, ctas):
  # The protocol `fused_sum` relies on (schedule.py): a tile's slot-0 CTA is its lowest-numbered
  # writer, so waits point only to higher CTAs, and in each CTA every store-and-signal comes
  # before its one wait, at its last flush. Then, with the CTAs started in order, the one
  # waiting on a CTA that has not started is never the lowest waiting: no cycle, no stall.
  from pallas_kernels.wo_matmul import schedule as S
  sched = S.stream_k_schedule(n_tiles, 2, kst, ctas)
  assert sched.chainable
  givers = {}
  for (c,), evs in _fused_sum_events(sched).items():
    waits = [e for e in evs if e[0] == "sum" and e[2]]
    assert len(waits) <= 1 and (not waits or evs[-1] is waits[0]), evs
    for e in evs:
      if e[0] == "give":
        givers.setdefault(e[1], []).append(c)
      elif e[2]:
        assert min(e[2]) == c + 1 and all(w > c for w in e[2])
  for (c,), evs in _fused_sum_events(sched).items():  # each wait is on exactly the givers
    for e in evs:
      if e[0] == "sum":
        assert sorted(givers.get(e[1], [])) == e[2]
  assert S.split_schedule(6, 2, 8, 4).writers(3) == 4 and not S.split_schedule(6, 2, 8, 4).chainable


def test_split_schedule_and_errors():
  from pallas_kernels.wo_matmul import schedule as S
  _simulate(S.split_schedule(6, 2, 8, 4), 8)
  assert S.stream_k_ctas(7168, 264) == 256  # a divisor within 5%: equal shares
  assert S.stream_k_ctas(7168, 396) == 396  # three an SM: shares of 18 and 19 steps
  assert S.stream_k_ctas(12, 20) == 12
  with pytest.raises(ValueError, match="1 to 7168 CTAs"):
    S.stream_k_schedule(224, 128, 32, 7169)
  with pytest.raises(ValueError, match="splits"):
    S.split_schedule(6, 2, 8, 3)


def _owners(layout, shape):
  """{(thread, register index, vector element): (row, col)} of a Mosaic GPU TiledLayout, from
  its own tiling (`Tiling.untile_indices`) and its warp / lane / vector dims, delinearized
  first-major as `TiledLayout._delinearize_index` does."""
  tiled = layout.tiling.tile_shape(shape)
  nd = len(tiled)
  warp, lane = [d % nd for d in layout.warp_dims], [d % nd for d in layout.lane_dims]
  vec = layout.vector_dim % nd
  linear = lambda t, ds: int(np.ravel_multi_index([t[d] for d in ds], [tiled[d] for d in ds]))
  out = {}
  for t in np.ndindex(tiled):
    reg = tuple(0 if i in warp + lane + [vec] else t[i] for i in range(nd))
    out[(32 * linear(t, warp) + linear(t, lane), reg, t[vec])] = layout.tiling.untile_indices(t)
  return out


def test_wgmma_order_matches_the_register_layouts():
  # What `registers.wgmma_from_upcast_4x` relies on, from Mosaic's own layout definitions:
  # a thread's WGMMA_UPCAST_4X register (a, j // 4, ..) element 2 (j % 4) + e holds, for a
  # weight stored in WGMMA_ORDER, the (row, K) that its WGMMA register (a, j, ..) holds as
  # element e. The layout model is first checked against the thread maps Mosaic's source draws.
  from jax.experimental.mosaic.gpu import fragmented_array as fa
  wgmma = _owners(fa.WGMMA_LAYOUT, (64, 128))
  row0 = {c: t for (t, _, _), (r, c) in wgmma.items() if r == 0 and c < 8}
  assert [row0[c] for c in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
  row1 = {c: t for (t, _, _), (r, c) in wgmma.items() if r == 1 and c < 8}
  assert [row1[c] for c in range(8)] == [4, 4, 5, 5, 6, 6, 7, 7]
  up2 = _owners(fa.WGMMA_LAYOUT_UPCAST_2X, (64, 128))
  row0 = {c: t for (t, _, _), (r, c) in up2.items() if r == 0 and c < 16}
  assert [row0[c] for c in range(16)] == [0] * 4 + [2] * 4 + [1] * 4 + [3] * 4
  order = wm.layout.WGMMA_ORDER
  np.testing.assert_array_equal(order[order], np.arange(32))  # a permutation, its own inverse
  for rows in (64, 128):
    wgmma = _owners(fa.WGMMA_LAYOUT, (rows, 128))
    up4 = _owners(fa.WGMMA_LAYOUT_UPCAST_4X, (rows, 128))
    for (thread, reg, e), (row, k) in wgmma.items():
      src = (reg[0], reg[1] // 4) + reg[2:]
      row_s, m = up4[(thread, src, 2 * (reg[1] % 4) + e)]
      assert (row_s, 32 * (m // 32) + order[m % 32]) == (row, k)


@pytest.mark.parametrize("bits", [4, 8])
def test_thread_major_words_match_the_register_layouts(bits):
  # What `registers.registers_from_words` relies on: a WG_STRIDED load of a block's words with
  # vectors of 4 hands thread t storage positions 512 i + 4 t + l (Mosaic's
  # `WGStridedFragLayout.linear_thread_idxs`), and `layout.THREAD_WORDS` stores there the word
  # that register (c, h) of thread t holds in the layout a shared-memory load gives (4-bit:
  # WGMMA_UPCAST_4X, 8-bit: WGMMA_UPCAST_2X), 2 c + h = 4 i + l, each word 32 / bits codes
  # along K of one row
  from jax.experimental.mosaic.gpu import fragmented_array as fa
  layout = {4: fa.WGMMA_LAYOUT_UPCAST_4X, 8: fa.WGMMA_LAYOUT_UPCAST_2X}[bits]
  per, row_words = 32 // bits, 128 * bits // 32
  shape = layout.registers_shape((64, 128))
  assert shape[1:5] == (row_words // 4, 1, 1, 2) and set(shape[5:]) == {1} and shape[0] == 1
  assert layout.registers_shape((128, 128))[0] == 2  # a row block of 64 a register tile
  order = wm.layout.THREAD_WORDS[bits]
  np.testing.assert_array_equal(np.sort(order), np.arange(64 * row_words))
  seen = 0
  for (thread, reg, e), (row, k) in _owners(layout, (64, 128)).items():
    c, h = reg[1], reg[4]
    vec, lane = divmod(2 * c + h, 4)
    pos = 512 * vec + 4 * thread + lane
    assert divmod(order[pos], row_words) == (row, k // per) and k % per == e
    seen += 1
  assert seen == 64 * 128


@pytest.mark.parametrize("name", ["int4_g128", "int4_g128_asym", "mxfp4", "nvfp4", "int8",
                                  "fp8_e4m3_rowwise"])
def test_thread_major_weight(name):
  # `thread_major`: 64 x 128 blocks (int4 codes in register order), each block's words
  # permuted; every reader undoes it (`untile_weight`), the round trip is exact, and a second
  # call is a no-op
  preset, overrides = FORMATS[IDS.index(name)]
  _, pw = _weight(preset, overrides, k=512, n=256)
  bits = wm.layout.code_bits(pw)
  tm = wm.layout.thread_major(pw)
  assert tm.w_threads and tm.wgmma_order == (bits == 4)
  assert tm.w_tile == wm.layout.THREAD_BLOCK
  assert wm.layout.thread_major(tm) is tm and tm.w.shape == (256 * 512 // 128, 128)
  ordered = wm.layout.order_for_wgmma(pw) if bits == 4 else pw
  back = wm.layout.untile_weight(tm)
  assert not back.w_threads and back.w_tile is None
  as_int = lambda p: np.asarray(jax.lax.bitcast_convert_type(p.w, jnp.int8) if bits == 8
                                else p.w.astype(jnp.int8))
  np.testing.assert_array_equal(as_int(back), as_int(ordered))
  # block (row block 1, chunk 2) holds the rows' words of that chunk in THREAD_WORDS order
  per, row_words = 32 // bits, 128 * bits // 32
  words = lambda p: np.asarray(jax.lax.bitcast_convert_type(
      as_int(p).reshape(-1, per) if bits == 8 else p.w.reshape(-1, per), jnp.uint32)).reshape(-1)
  size = 64 * row_words
  blk = words(tm)[(1 * 4 + 2) * size:(1 * 4 + 3) * size]
  rows = words(ordered).reshape(256, 4 * row_words)[64:128, 2 * row_words:3 * row_words]
  np.testing.assert_array_equal(blk, rows.reshape(-1)[wm.layout.THREAD_WORDS[bits]])
  np.testing.assert_array_equal(np.asarray(wm.dequantize(tm)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(6), (3, 512), jnp.float32).astype(jnp.bfloat16)
  y = wm.wo_matmul(x, tm, implementation="portable", interpret=True, out_dtype=jnp.float32)
  assert _rel(y, wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)) < 1e-5
  with pytest.raises(ValueError, match="nf4_slots"):
    wm.layout.thread_major(_weight(*FORMATS[IDS.index("nf4_g64")], k=512, n=256)[1])


@pytest.mark.parametrize("name,m,opts", [
    ("int4_g128", 1, {}),  # stream-K, unequal shares that cross N tiles (12 SMs)
    ("int4_g128-block_size32", 16, {}),  # gps 2
    ("int4_g128", 64, {}),  # two compute warpgroups of 128 rows: two blocks a chunk
    ("int8", 1, {"splits": 2}),  # K splits
    ("mxfp4", 48, {})])
def test_plain_loads_read_each_block_once(name, m, opts):
  # The blocks a plain-load decode reads (`DecodePlan.code_blocks`), over every CTA's share of
  # its schedule and every compute warpgroup: each block of the weight exactly once, at the
  # step whose tile rows and K chunks it holds; the step a prefetch loads past a share's end
  # (its index clamped) stays inside the weight (on the GPU a plain load out of bounds reads
  # another buffer, or faults)
  from pallas_kernels.wo_matmul import decode_plan
  k, n = 2048, 4096
  preset, overrides = FORMATS[IDS.index(name)]
  pw = jax.eval_shape(lambda w: wm.layout.thread_major(wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get(preset, **overrides), axis=0))), jax.ShapeDtypeStruct((k, n),
                                                                          jnp.float32))
  plan = decode_plan.plan_decode(m, k, pw, allow_unverified=True, num_sms=12, **opts)
  sched, chunks, blocks = plan.schedule, k // 128, n // 64 * k // 128
  seen = np.zeros(blocks, int)
  for ids in itertools.product(*map(range, sched.grid)):
    length = sched.iters if sched.lengths is None else sched.lengths[ids[0]]
    for i in range(sched.iters + 1):
      tile, kk, _ = sched.place_at(ids, min(i, sched.iters - 1))
      for wg in range(plan.compute_wgs):
        for j, chunk in enumerate(plan.code_blocks(k, tile, kk, wg * plan.wg_rows)):
          for b, blk in enumerate(chunk):
            assert 0 <= blk < blocks
            if i < length:
              assert divmod(blk, chunks) == (
                  (tile * plan.tile_n + wg * plan.wg_rows) // 64 + b, kk * plan.gps + j)
              seen[blk] += 1
  np.testing.assert_array_equal(seen, np.ones(blocks, int))


@pytest.mark.parametrize("name", ["int4_g128-block_size32", "int4_g128_asym", "mxfp4", "nvfp4"])
def test_wgmma_ordered_weight(name):
  # order_for_wgmma permutes each aligned 32 of K of an int4-stored weight; every path that
  # reads W^T in K order undoes it, with or without block tiles, and the round trip is exact.
  preset, overrides = FORMATS[IDS.index(name)]
  _, pw = _weight(preset, overrides, k=512, n=256)
  ow = wm.layout.order_for_wgmma(pw)
  assert ow.wgmma_order and wm.layout.order_for_wgmma(ow) is ow
  nib = lambda p: np.asarray(p.w.astype(jnp.int8)).reshape(256, 16, 32)
  np.testing.assert_array_equal(nib(ow), nib(pw)[:, :, wm.layout.WGMMA_ORDER])
  back = wm.layout.logical_order(ow)
  assert not back.wgmma_order
  np.testing.assert_array_equal(nib(back), nib(pw))
  tiled = wm.layout.tile_weight(ow, 128, 256)
  assert tiled.wgmma_order and tiled.w_tile == (128, 256)
  for p in (ow, tiled):
    np.testing.assert_array_equal(np.asarray(wm.dequantize(p)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(5), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)
  y = wm.wo_matmul(x, tiled, implementation="portable", interpret=True, out_dtype=jnp.float32)
  assert _rel(y, ref) < 1e-5
  # The prefill path dequantizes in storage order (no int4 permutation) and permutes x to match.
  stored = wm.layout.dequantize_nk(tiled, stored_order=True)
  in_k_order = wm.layout.dequantize_nk(pw)
  np.testing.assert_array_equal(np.asarray(stored),
                                np.asarray(wm.layout.storage_order(in_k_order, ow)))
  y = wm.wo_matmul(x, ow, implementation="dequant_gemm", out_dtype=jnp.float32)
  assert _rel(y, wm.wo_matmul(x, pw, implementation="dequant_gemm", out_dtype=jnp.float32)) < 1e-6
  nf4 = _weight(*FORMATS[IDS.index("nf4_g64")], k=512, n=256)[1]
  with pytest.raises(ValueError, match="int4-stored"):
    wm.layout.order_for_wgmma(nf4)


def test_repack_stores_register_order_on_a_gpu(monkeypatch):
  # On a GPU backend `repack` stores int4-stored weights in WGMMA_ORDER (the decode kernel
  # then skips a relayout: checked on an H200, 2026-12-04), K order elsewhere and for NF4 and
  # the 8-bit formats; `wgmma_order=` overrides. The GPU default runs the kernels either way.
  q, pw = _weight("int4_g128", {}, k=512, n=256)
  assert not pw.wgmma_order  # this CPU backend
  assert wm.repack_qarray(q, wgmma_order=True).wgmma_order
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  ow = wm.repack_qarray(q)
  assert ow.wgmma_order
  np.testing.assert_array_equal(np.asarray(ow.w.astype(jnp.int8)),
                                np.asarray(wm.layout.order_for_wgmma(pw).w.astype(jnp.int8)))
  assert not wm.repack_qarray(q, wgmma_order=False).wgmma_order
  for name in ("int8", "fp8_e4m3_rowwise"):
    assert not wm.repack_qarray(_weight(*FORMATS[IDS.index(name)], k=512, n=256)[0]).wgmma_order
  nf4 = wm.repack_qarray(_weight("nf4_g64", {}, k=512, n=256)[0])  # as slot codes
  assert nf4.wgmma_order and nf4.scale_bf16
  x = jnp.ones((1, 512), jnp.bfloat16)
  assert wm.api.default_implementation(x, ow) == "mosaic_gpu"
  assert wm.api.default_implementation(jnp.ones((128, 512), jnp.bfloat16), ow) == \
      wm.api.default_implementation(jnp.ones((128, 512), jnp.bfloat16), pw)


@pytest.mark.parametrize("preset,overrides", [FORMATS[0], FORMATS[4], FORMATS[6], FORMATS[7]],
                         ids=[IDS[0], IDS[4], IDS[6], IDS[7]])
def test_block_contiguous_weight(preset, overrides):
  # tile_weight stores each (tile_n, tile_k) block of W^T as one run of memory; every path
  # that reads W^T row-major untiles it, and the round trip is exact.
  _, pw = _weight(preset, overrides, k=512, n=256)
  tw = wm.layout.tile_weight(pw, 128, 256)
  assert tw.w_tile == (128, 256) and tw.w.shape == (256 * 512 // 256, 256 * pw.w.shape[1] // 512)
  first = np.asarray(tw.w[:128].astype(jnp.float32))  # block (0, 0) comes first, whole
  np.testing.assert_array_equal(first, np.asarray(pw.w[:128, :tw.w.shape[1]].astype(jnp.float32)))
  back = wm.layout.untile_weight(tw)
  np.testing.assert_array_equal(np.asarray(back.w.astype(jnp.float32)),
                                np.asarray(pw.w.astype(jnp.float32)))
  np.testing.assert_array_equal(np.asarray(wm.dequantize(tw)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(4), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)
  y = wm.wo_matmul(x, tw, implementation="portable", interpret=True, out_dtype=jnp.float32)
  assert _rel(y, ref) < 1e-5
  with pytest.raises(ValueError, match="does not tile"):
    wm.layout.tile_weight(pw, 96, 256)


def test_nvfp4_multipliers_decode_every_byte():
  # The GEMM's read of NVFP4's bf16 scale multipliers (scale_multipliers) against the stored
  # bytes' decode, bit for bit, for all 256 E4M3 codes: subnormals, zeros, negatives and NaNs.
  b = jnp.arange(256, dtype=jnp.int32).astype(jnp.uint8)
  _, pw = _weight("nvfp4", {}, k=512, n=256)
  stored = jax.lax.bitcast_convert_type(b, jnp.float8_e4m3fn)[None]
  mult = wm.layout.fp4_scales_bf16(dataclasses.replace(pw, scale=stored)).scale
  got = np.asarray(wm.layout.nvfp4_multiplier_f32(mult), np.float32)[0]
  want = np.asarray(wm.layout.scale_bytes_f32(b, wm.WeightFormat.NVFP4), np.float32)
  nan = np.isnan(want)
  assert np.array_equal(np.isnan(got), nan) and nan.sum() == 2
  np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
  assert (want[1:8] > 0).all() and (want[1:8] < 2.0**-6).all()  # the subnormals came through


def test_mxfp4_value_times_multiplier_is_a_bf16():
  # The prefill GEMM multiplies MXFP4's bf16 E2M1 values by the bf16 multipliers 2^(e - 127)
  # directly (scale_multipliers), where the byte path rounds q * s from float32: the same weight
  # when every product is a bf16 (or overflows both ways), for all 16 codes x 255 exponents.
  import ml_dtypes
  q = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)
  e = np.arange(255)
  v = q[:, None] * np.ldexp(1.0, e - 127)[None, :]
  with np.errstate(over="ignore"):  # the overflows are the point of `big` below
    b = v.astype(ml_dtypes.bfloat16).astype(np.float64)
  big = np.abs(v) >= 2.0**128  # past bf16's (and float32's) largest: inf either way
  np.testing.assert_array_equal(b[~big], v[~big])
  assert np.isinf(b[big]).all() and big.sum() == 2 * (4 + 2)  # +-2, 3, 4, 6 at e = 254; 4, 6 at 253


def test_nvfp4_value_times_block_scale_is_a_bf16():
  # The prefill GEMM's `tensor_scale_out` multiplies NVFP4's bf16 E2M1 values by s_b in bf16 and
  # puts s_t on the float32 sum: exact when every q * s_b is a bf16, and s_b comes back from its
  # multiplier s_b 2^118 by a bf16 multiply by 2^-118, for all 16 codes x 254 finite E4M3 codes.
  import ml_dtypes
  q = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)
  sb = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
  sb = sb[np.isfinite(sb)]
  assert sb.size == 254
  mult = (sb * 2.0**118).astype(ml_dtypes.bfloat16)
  back = (mult * np.asarray(2.0**-118, ml_dtypes.bfloat16)).astype(np.float64)
  np.testing.assert_array_equal(back, sb)
  v = q[:, None] * sb[None, :]
  np.testing.assert_array_equal(v.astype(ml_dtypes.bfloat16).astype(np.float64), v)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_scales_bf16(name, monkeypatch):
  # FP4 block scales stored as the bf16 multipliers the GPU decode applies: exact both ways
  # for every one of the 256 scale codes (column c of the scales holds code c: E8M0's 0 =
  # 2^-127, a bf16 subnormal, and 255 = NaN; E4M3's subnormals, negatives and NaNs), and every
  # other reader sees the same weight.
  from pallas_kernels.wo_matmul import configs
  from pallas_kernels.wo_matmul import mosaic_gpu
  _, pw = _weight(name, {}, k=512, n=256)
  codes = jnp.broadcast_to(jnp.arange(256, dtype=jnp.uint8), pw.scale.shape)
  pw = dataclasses.replace(pw, scale=codes if name == "mxfp4" else jax.lax.bitcast_convert_type(
      codes, jnp.float8_e4m3fn))
  b = wm.layout.fp4_scales_bf16(pw)
  assert b.scale_bf16 and b.scale.dtype == jnp.bfloat16 and b.nbytes > pw.nbytes
  want = np.asarray(wm.layout.group_scales(pw, tensor_scale=False), np.float64)
  if name == "nvfp4":
    want = want * 2.0**mosaic_gpu.NVFP4_PRESCALE_LOG2
  got = np.asarray(b.scale.astype(jnp.float32), np.float64)
  if name == "mxfp4":  # the CPU flushes f32 subnormals: compare 2^-127's bf16 bits instead
    assert (np.asarray(b.scale).view(np.uint16)[:, 0] == 0x0040).all()
    want[:, 0] = got[:, 0]
  np.testing.assert_array_equal(got, want)
  back = wm.layout.fp4_scales_stored(b)
  np.testing.assert_array_equal(np.asarray(back.scale).view(np.uint8),
                                np.asarray(pw.scale).view(np.uint8))
  np.testing.assert_array_equal(np.asarray(wm.dequantize(b)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(2), (3, 512), jnp.float32).astype(jnp.bfloat16)
  for impl in ("portable", "dequant_gemm"):
    y = wm.wo_matmul(x, wm.layout.tile_weight(b, 128, 256), implementation=impl,
                     interpret=impl == "portable", out_dtype=jnp.float32)
    ref = wm.wo_matmul(x, pw, implementation=impl, interpret=impl == "portable",
                       out_dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref))
  _, int4 = _weight("int4_g128", {}, k=512, n=256)
  with pytest.raises(ValueError, match="MXFP4 / NVFP4"):
    wm.layout.fp4_scales_bf16(int4)
  # The GPU's default storage (checked on an H200), which the GPU kernel reads there; on the
  # CPU `repack` keeps the stored bytes.
  q, _ = _weight(name, {}, k=512, n=256)
  assert not wm.repack_qarray(q).scale_bf16
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert wm.repack_qarray(q).scale_bf16 and wm.repack_qarray(q).wgmma_order
  assert not wm.repack_qarray(q, scale_bf16=False).scale_bf16
  assert not wm.layout.default_scale_bf16(int4.fmt)
  assert wm.api.default_implementation(x, b) == "mosaic_gpu"
  # NVFP4's bf16 multipliers take the two-warpgroup config from M = 9 (H200: 55.5 us against
  # 68.0 at M = 16); MXFP4's, and stored bytes, from M = 17.
  wide = [configs.decode_config(pw.fmt, 28672, 16, sb).get("compute_wgs") == 2
          for sb in (True, False)]
  assert wide == [name == "nvfp4", False]


def test_nf4_slot_words_are_the_bf16_table():
  # The GPU kernels' NF4 decode (`nf4_slot_word_bits`, prmt modelled on the CPU): every
  # combination of four codes in each half of the word, the other half random; every output
  # pair is the slots' bf16 bits, which are the NF4 table rounded to bf16 (zero as -0).
  import ml_dtypes
  d = wm.decode
  np.testing.assert_array_equal(
      d.NF4_SLOT_BF16_BITS[d.NF4_SLOT_OF_CODE].view(ml_dtypes.bfloat16).astype(np.float32),
      d.NF4_TABLE.astype(ml_dtypes.bfloat16).astype(np.float32))
  assert sorted(d.NF4_SLOT_OF_CODE) == list(range(16))
  rng = np.random.default_rng(0)
  every = np.arange(2**16, dtype=np.uint32)
  other = rng.integers(0, 2**16, 2**16, dtype=np.uint32)
  for w in (every | other << 16, other | every << 16):
    pairs = d.nf4_slot_word_bits(jnp.asarray(w), d.JNP_WORD_OPS)
    for p, got in enumerate(pairs):
      lo, hi = (d.NF4_SLOT_BF16_BITS[(w >> (8 * p + 4 * h)) & 15].astype(np.uint32)
                for h in (0, 1))
      np.testing.assert_array_equal(np.asarray(got), lo | hi << 16)
  slots = jnp.arange(16, dtype=jnp.uint32)
  np.testing.assert_array_equal(np.asarray(d.nf4_slot_f32(slots)).view(np.uint32),
                                d.NF4_SLOT_BF16_BITS.astype(np.uint32) << 16)


def test_nf4_slots(monkeypatch):
  # NF4 as slot codes with bf16 absmax (`layout.nf4_slots`): the weight is bf16(table) *
  # bf16(absmax) (float64 check from the codes), rounded once to bf16 by the kernels that round
  # (bitsandbytes' GEMV weight); register order, tiling and every CPU kernel read it.
  import ml_dtypes
  q, pw = _weight("nf4_g64", {}, k=512, n=256)
  sl = wm.layout.nf4_slots(pw)
  assert sl.scale_bf16 and sl.w.dtype == jnp.int4 and sl.w.shape == (256, 512)
  assert sl.nbytes == pw.nbytes - pw.scale.size * 2
  codes = np.asarray(wm.layout.unpack_k(q.codes))  # (K, N) NF4 codes
  table = wm.decode.NF4_TABLE.astype(ml_dtypes.bfloat16).astype(np.float64)
  absmax = np.asarray(q.scale, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
  want = table[codes] * np.repeat(absmax, 64, axis=0)
  np.testing.assert_array_equal(np.asarray(wm.dequantize(sl), np.float64), want)
  ordered = wm.layout.order_for_wgmma(sl)
  np.testing.assert_array_equal(np.asarray(wm.dequantize(ordered), np.float64), want)
  x = jax.random.normal(jax.random.key(3), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, sl, out_dtype=jnp.float32)
  assert _rel(ref, x.astype(jnp.float32) @ mxjax.dequantize(q)) < 1e-2  # bf16 rounding only
  for p in (sl, ordered, wm.layout.tile_weight(ordered, 128, 256)):
    y = wm.wo_matmul(x, p, implementation="portable", interpret=True, out_dtype=jnp.float32)
    assert _rel(y, ref) < 1e-5
  y = wm.wo_matmul(x, ordered, implementation="mosaic_tpu", interpret=True, out_dtype=jnp.float32)
  assert _rel(y, ref) < 1e-5
  # The rounding kernels' weight, through one-hot rows: RN_bf16 of the exact product.
  eye = jnp.eye(512, dtype=jnp.bfloat16)[:8]
  for impl, kw in (("portable", dict(interpret=True, weights_bf16=True)), ("dequant_gemm", {})):
    rows = np.asarray(wm.wo_matmul(eye, ordered, implementation=impl, out_dtype=jnp.float32,
                                   **kw))
    np.testing.assert_array_equal(rows, want[:8].astype(ml_dtypes.bfloat16).astype(np.float32))
  with pytest.raises(ValueError, match="slot codes are for NF4"):
    wm.layout.nf4_slots(_weight("int4_g128", {}, k=512, n=256)[1])
  with pytest.raises(ValueError, match="slot codes"):
    wm.layout.order_for_wgmma(pw)
  assert wm.layout.fp4_scales_stored(sl) is sl
  # The GPU's default storage; the kernels take it only where checked on a GPU.
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  g = wm.repack_qarray(q)
  assert g.scale_bf16 and g.wgmma_order
  assert not wm.repack_qarray(q, scale_bf16=False).scale_bf16
  from pallas_kernels.wo_matmul import decode_plan
  assert decode_plan.case(g) == (wm.WeightFormat.NF4, 64, "slots")
  want_impl = "mosaic_gpu" if decode_plan.case(g) in decode_plan.VERIFIED else "xla"
  assert wm.api.default_implementation(x, g) == want_impl
