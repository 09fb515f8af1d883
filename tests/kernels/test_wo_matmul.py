"""Weight-only matmul: reference == x @ mxjax.dequantize(W); every CPU-runnable kernel matches.

The Mosaic GPU kernel runs only on a GPU (TMA, wgmma); its portable twin runs here in
interpret mode, and experiments/bench_kernels.py checks the GPU kernel on the GPU. The decode
kernel's launch (configs, plan, schedule) is tested in test_wo_plan.py, the weight's stored
layouts in test_wo_layout.py and test_wo_scales.py.
"""

from __future__ import annotations

import dataclasses

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
from tests.kernels.wo_formats import rel
from tests.kernels.wo_formats import weight


@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_layout_dequantize_matches_mxjax(preset, overrides):
  q, pw = weight(preset, overrides)
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
  q, pw = weight(preset, overrides)
  x = jax.random.normal(jax.random.key(1), (4, 256), jnp.float32).astype(jnp.bfloat16)
  ref = x.astype(jnp.float32) @ mxjax.dequantize(q)
  y = wm.wo_matmul(x, pw, implementation=impl, interpret=impl != "xla",
                   out_dtype=jnp.float32)
  assert y.shape == (4, 128) and y.dtype == jnp.float32
  assert rel(y, ref) < 1e-5


@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_dequant_gemm_prefill(preset, overrides):
  # The prefill path rounds the dequantized weight to bf16: bf16-level agreement.
  q, pw = weight(preset, overrides)
  x = jax.random.normal(jax.random.key(2), (96, 256), jnp.float32).astype(jnp.bfloat16)
  ref = x.astype(jnp.float32) @ mxjax.dequantize(q)
  y = wm.wo_matmul(x, pw, implementation="dequant_gemm", out_dtype=jnp.float32)
  assert y.shape == (96, 128) and rel(y, ref) < 4e-3
  # Its operand, the layout's W^T (E2M1 decoded by arithmetic), is mxjax's weight transposed.
  want = np.asarray(mxjax.dequantize(q), np.float32).T
  np.testing.assert_allclose(np.asarray(wm.layout.dequantize_nk(pw)), want, rtol=0,
                             atol=1e-6 * np.abs(want).max() if pw.fmt is wm.WeightFormat.UINT4
                             else 0)


@pytest.mark.parametrize("preset,overrides", FORMATS, ids=IDS)
def test_gemm_twin_has_dequant_gemm_numerics(preset, overrides):
  # The prefill GEMM's twin rounds each f32-dequantized weight to bf16 before the dot, exactly
  # as dequant_gemm's operand: the two agree to f32 summation order, far below bf16 rounding.
  q, pw = weight(preset, overrides)
  x = jax.random.normal(jax.random.key(4), (16, 256), jnp.float32).astype(jnp.bfloat16)
  want = wm.wo_matmul(x, pw, implementation="dequant_gemm", out_dtype=jnp.float32)
  got = wm.wo_matmul(x, pw, implementation="portable", interpret=True, weights_bf16=True,
                     tile_k=128, out_dtype=jnp.float32)
  assert rel(got, want) < 1e-6
  # ... and not the decode twin's numerics (codes exact, scale on the f32 partial sum), except
  # where q * s is exact in bf16 anyway (MXFP4: power-of-two scales; INT8 / FP8: per channel,
  # rounded differently but still close).
  decode = wm.wo_matmul(x, pw, implementation="portable", interpret=True, out_dtype=jnp.float32)
  if pw.fmt is not wm.WeightFormat.MXFP4:
    assert rel(decode, want) > 1e-6


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
  _, pw = weight(preset, overrides, k=512, n=256)
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
  _, pw = weight("int4_g128", {}, k=512, n=256)
  x = jax.random.normal(jax.random.key(2), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)
  y = wm.wo_matmul(x, pw, implementation="portable", interpret=True, tile_n=128, tile_k=256)
  assert y.dtype == jnp.bfloat16
  assert rel(y, ref) < 1e-2  # bf16 output rounding


def test_errors_are_raised_not_swallowed(monkeypatch):
  x = jnp.ones((4, 256), jnp.bfloat16)
  _, pw4 = weight("int4_g128", {"block_size": 16})
  with pytest.raises(NotImplementedError, match="groups of 32, 64 or 128"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu")
  _, pw4 = weight("int4_g128", {})
  with pytest.raises(NotImplementedError, match="M <= 64"):
    wm.wo_matmul(jnp.ones((65, 256), jnp.bfloat16), pw4, implementation="mosaic_gpu")
  with pytest.raises(NotImplementedError, match="interpreter.*'portable'$"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", interpret=True)
  # the decode's bf16 weights (`weights_bf16`) point at the twin with the same numerics
  with pytest.raises(NotImplementedError, match="'portable' with weights_bf16=True"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", interpret=True, weights_bf16=True)
  with pytest.raises(ValueError, match="fp4_scale_bytes"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", fp4_scale_bytes=True)
  with pytest.raises(ValueError, match="fp4_scale_bytes"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu_gemm", fp4_scale_bytes=True,
                 allow_unverified=True)
  with pytest.raises(ValueError, match="nf4_lut"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", nf4_lut=True)
  with pytest.raises(ValueError, match="compute_wgs must be 1 or 2"):
    wm.wo_matmul(x, pw4, implementation="mosaic_gpu", compute_wgs=3)
  _, pw8 = weight("int8", {})
  with pytest.raises(NotImplementedError, match="warp specialization takes tile_n a multiple"):
    wm.wo_matmul(x, pw8, implementation="mosaic_gpu", compute_wgs=2, tile_n=64)
  with pytest.raises(ValueError, match="do not match"):
    wm.wo_matmul(x, wm.code_order.tile_weight(pw4, 128, 256), implementation="mosaic_gpu",
                 tile_n=64)
  # fused_sum: gated until a GPU checks the case (UINT4 g32 not yet); stream-K (or one slot a
  # tile) only
  _, pw32 = weight("int4_g128_asym", {"block_size": 32})
  with pytest.raises(NotImplementedError, match="fused_sum for uint4 group 32 has not matched"):
    wm.wo_matmul(x, pw32, implementation="mosaic_gpu", fused_sum=True)
  _, pw_k = weight("int4_g128", {}, k=1024)  # four K steps: two splits of two
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
  _, pw = weight("int4_g128", {})
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
  # `scales.uint4_zero_points` stores zp (uint8) for the f32 offsets s (zp - 8); readers make
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
  z = wm.scales.uint4_zero_points(pw)
  assert z.zero_points and z.offset.dtype == jnp.uint8 and z.nbytes < pw.nbytes
  back = wm.scales.uint4_offsets(z)
  assert not back.zero_points and back.offset.dtype == jnp.float32
  np.testing.assert_array_equal(_offsets_bits(back.offset), _offsets_bits(pw.offset))
  ok = (np.abs(s) > 2.0**-100) & (np.abs(s) < 2.0**100)
  np.testing.assert_array_equal(np.asarray(z.offset)[ok], zp[ok])
  assert wm.scales.uint4_zero_points(z) is z and wm.scales.uint4_offsets(pw) is pw
  np.testing.assert_array_equal(np.asarray(wm.dequantize(z)), np.asarray(wm.dequantize(pw)))
  with pytest.raises(ValueError, match="1 UINT4 offsets are not f32"):
    wm.scales.uint4_zero_points(dataclasses.replace(pw, offset=pw.offset.at[20, 20].add(
        pw.scale[20, 20] * 0.25)))
  with pytest.raises(ValueError, match="zero points are UINT4's, not int4's"):
    wm.scales.uint4_zero_points(weight("int4_g128", {})[1])


@pytest.mark.parametrize("group", [32, 128])
def test_uint4_zero_points_in_the_kernels(group):
  # A weight with zero-point bytes gives every CPU-runnable kernel's result bit for bit, and
  # the decode plan reads a quarter of the offsets' bytes.
  from pallas_kernels.wo_matmul import decode_plan
  _, pw = weight("int4_g128_asym", {"block_size": group}, k=512, n=256)
  z = wm.scales.uint4_zero_points(pw)
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
  got = np.asarray(wm.scales.scale_bytes_f32(b, fmt), np.float32)
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


@pytest.mark.parametrize("part", range(4))
def test_e2m1_halves_words_match_the_pair_bits(part):
  # The E2M1 decode of a word in the halves order (`decode.e2m1_halves_words`: pair j in nibbles
  # j and 4 + j) against `e2m1_pair_bits` of the same codes in the byte-pair order (pair j in
  # byte j), bit for bit: every code pair at every place, the other six codes random.
  rng = np.random.default_rng(10 + part)
  pairs = np.arange(256, dtype=np.uint32)
  other = rng.integers(0, 2**32, size=256, dtype=np.uint32) & ~np.uint32(0xFF << (8 * part))
  std = other | (pairs << (8 * part))  # nibble 2 j + e: code e of pair j
  nib = lambda w, i: (w >> (4 * i)) & 15
  halves = sum(nib(std, 2 * j + e) << (4 * (4 * e + j)) for j in range(4) for e in range(2))
  got = wm.decode.e2m1_halves_words(jnp.asarray(halves, jnp.uint32), wm.decode.JNP_WORD_OPS)
  for j in range(4):
    want = wm.decode.e2m1_pair_bits(jnp.asarray(std), j, wm.decode.JNP_WORD_OPS)
    np.testing.assert_array_equal(np.asarray(got[j]), np.asarray(want))


@pytest.mark.parametrize("halves", [False, True])
def test_e2m1_register_words_hold_their_k_offsets(halves):
  # What the GPU kernels' E2M1 decode sees: a weight in register order (`order_for_wgmma`, and
  # with `halves` the halves order), each thread's 32-bit word (storage positions 8 q .. 8 q + 7
  # of each 32 of K, little-endian nibbles), decoded pair by pair; pair j's two halves must be
  # K offsets 8 j + 2 q and 8 j + 2 q + 1, the WGMMA layout's register j
  # (`registers.wgmma_from_upcast_4x`). Checked against the K-order weight's E2M1 values.
  import ml_dtypes
  _, pw = weight("mxfp4", {}, k=128, n=8)
  pw = wm.scales.fp4_scales_stored(wm.code_order.logical_order(pw))
  stored = wm.code_order.order_for_wgmma(pw, halves=halves)
  assert stored.halves_order == halves and stored.wgmma_order
  codes = np.asarray(stored.w.astype(jnp.int8)).astype(np.uint32) & 15  # (N, K) storage order
  words = sum(codes.reshape(8, -1, 8)[..., i] << (4 * i) for i in range(8))  # (N, K / 8)
  ops = wm.decode.JNP_WORD_OPS
  dec = (wm.decode.e2m1_halves_words(jnp.asarray(words), ops) if halves else
         [wm.decode.e2m1_pair_bits(jnp.asarray(words), j, ops) for j in range(4)])
  logical = np.asarray(pw.w.astype(jnp.int8)).astype(np.int64) & 15
  table = wm.decode.E2M1_TABLE
  for j, bits in enumerate(dec):
    bits = np.asarray(bits)
    for e in range(2):
      v = ((bits >> (16 * e)) & 0xFFFF).astype(np.uint16).view(ml_dtypes.bfloat16)
      v = v.astype(np.float64) * 2.0**126
      word = np.arange(words.shape[1])
      k = 32 * (word // 4) + 8 * j + 2 * (word % 4) + e
      np.testing.assert_array_equal(v, table[logical[:, k]].astype(np.float64))


def test_e2m1_pair_bits_times_folded_multiplier_is_value_times_scale():
  # MXFP4's folded multipliers (`fp4_scales_bf16(mx_fold=True)`): the decode's one bf16 multiply
  # of the pair bits (value / 2^126) by 2^(e - 1) gives value * 2^(e - 127) exactly, for every
  # code and every E8M0 code e <= MX_FOLD_MAX_CODE (the product, exact in float64 here, is a
  # bf16, so the GPU's round-to-nearest returns it: subnormals down to 2^-128 included).
  import ml_dtypes
  codes = np.arange(16, dtype=np.uint32)
  bits = np.asarray(wm.decode.e2m1_pair_bits(jnp.asarray(codes | (codes << 4)), 0,
                                             wm.decode.JNP_WORD_OPS))
  val = (bits & 0xFFFF).astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)
  e = np.arange(wm.scales.MX_FOLD_MAX_CODE + 1)
  _, pw = weight("mxfp4", {}, k=64, n=e.size)
  scale = jnp.broadcast_to(jnp.asarray(e, jnp.uint8), pw.scale.shape)
  pw = wm.scales.fp4_scales_stored(dataclasses.replace(pw, scale=scale))
  mult = np.asarray(wm.scales.fp4_scales_bf16(pw, mx_fold=True).scale)[0]
  assert mult.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(mult.astype(np.float64), np.ldexp(1.0, e - 1))
  prod = val[:, None] * mult.astype(np.float64)[None, :]
  want = wm.decode.E2M1_TABLE.astype(np.float64)[:, None] * np.ldexp(1.0, e - 127)[None, :]
  np.testing.assert_array_equal(prod, want)
  np.testing.assert_array_equal(prod.astype(ml_dtypes.bfloat16).astype(np.float64), want)
  assert np.signbit(prod[8]).all()  # -0 stays -0


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
