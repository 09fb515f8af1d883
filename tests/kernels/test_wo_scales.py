"""The scale storages the GPU kernels read (`scales.py`): FP4 scales as bf16 multipliers (MXFP4's
folded) and as byte multipliers, INT4's bf16 amax scales, NF4 slot codes with bf16 absmax: each
exhaustive over the codes or values it maps, and checked against `mxjax.dequantize`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mxjax
from pallas_kernels import wo_matmul as wm
from tests.kernels.wo_formats import rel
from tests.kernels.wo_formats import weight
from tests.reference import fma_f32


def test_nvfp4_multipliers_decode_every_byte():
  # The GEMM's read of NVFP4's bf16 scale multipliers (scale_multipliers) against the stored
  # bytes' decode, bit for bit, for all 256 E4M3 codes: subnormals, zeros, negatives and NaNs.
  b = jnp.arange(256, dtype=jnp.int32).astype(jnp.uint8)
  _, pw = weight("nvfp4", {}, k=512, n=256)
  stored = jax.lax.bitcast_convert_type(b, jnp.float8_e4m3fn)[None]
  mult = wm.scales.fp4_scales_bf16(dataclasses.replace(pw, scale=stored)).scale
  got = np.asarray(wm.scales.nvfp4_multiplier_f32(mult), np.float32)[0]
  want = np.asarray(wm.scales.scale_bytes_f32(b, wm.WeightFormat.NVFP4), np.float32)
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


def test_mxfp4_folded_multipliers(monkeypatch):
  # MXFP4's multipliers folded with the E2M1 decode's 2^126 (`fp4_scales_bf16(mx_fold=True)`):
  # 2^(e - 1) for every code e <= MX_FOLD_MAX_CODE (column c holds code c, 2^-127 included),
  # the stored codes back from them, every reader's weight and product unchanged; refused for
  # larger codes (2^(e - 1) is no bf16 past 2^127; 255 is NaN) and for traced scales.
  top = wm.scales.MX_FOLD_MAX_CODE
  _, pw = weight("mxfp4", {}, k=512, n=256)  # every code in the first 129 columns
  codes = jnp.broadcast_to(jnp.arange(pw.n, dtype=jnp.int32) % (top + 1), pw.scale.shape)
  pw = dataclasses.replace(pw, scale=codes.astype(jnp.uint8))
  f = wm.scales.fp4_scales_bf16(pw, mx_fold=True)
  assert f.mx_fold and f.scale_bf16 and f.scale.dtype == jnp.bfloat16
  from pallas_kernels.wo_matmul.decode_plan import case
  assert case(f) == (wm.WeightFormat.MXFP4, 32, "mx_fold")
  np.testing.assert_array_equal(np.asarray(f.scale).view(np.uint16),
                                (np.asarray(codes) + 126) << 7)
  for back in (wm.scales.fp4_scales_stored(f),
               wm.scales.fp4_scales_stored(wm.scales.fp4_scales_bf16(f, mx_fold=False))):
    assert not back.mx_fold and not back.scale_bf16
    np.testing.assert_array_equal(np.asarray(back.scale), np.asarray(pw.scale))
  plain = wm.scales.fp4_scales_bf16(f, mx_fold=False)  # refolding goes through the codes
  assert not plain.mx_fold and wm.scales.fp4_scales_bf16(plain, mx_fold=True).mx_fold
  np.testing.assert_array_equal(np.asarray(wm.dequantize(f)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(3), (3, 512), jnp.float32).astype(jnp.bfloat16)
  for impl in ("portable", "dequant_gemm"):
    run = lambda p: np.asarray(wm.wo_matmul(x, p, implementation=impl, out_dtype=jnp.float32,
                                            interpret=impl == "portable"))
    np.testing.assert_array_equal(run(f), run(pw))
  for code in (top + 1, 254, 255):
    big = dataclasses.replace(pw, scale=pw.scale.at[0, 0].set(code))
    with pytest.raises(ValueError, match=f"<= {top}.*the largest is {code}"):
      wm.scales.fp4_scales_bf16(big, mx_fold=True)
    assert not wm.scales.fp4_scales_bf16(big).mx_fold
  with pytest.raises(ValueError, match="traced"):
    jax.jit(lambda p: wm.scales.fp4_scales_bf16(p, mx_fold=True))(pw)
  _, nv = weight("nvfp4", {}, k=512, n=256)
  with pytest.raises(ValueError, match="always"):
    wm.scales.fp4_scales_bf16(nv, mx_fold=True)
  # The default folds concrete scales that fit (checked on an H100, session 37), not others.
  assert wm.scales.fp4_scales_bf16(pw).mx_fold
  assert not jax.eval_shape(wm.scales.fp4_scales_bf16, pw).mx_fold
  monkeypatch.setattr(wm.scales, "MX_FOLD_BY_DEFAULT", False)
  assert not wm.scales.fp4_scales_bf16(pw).mx_fold


def test_byte_multiplier_bits_every_code():
  # `scales.BYTE_MULTIPLIERS`: one integer multiply-add turns a stored scale byte into its bf16
  # multiplier's bits, `fp4_scales_bf16`'s own (MXFP4's folded 2^(e - 1)), for every code in
  # range: E8M0 0 .. 128, E4M3's normals 0x08 .. 0x7E (s_b 2^118 exactly, in float64); and
  # the pair word of a byte, b * (mul * 0x10001) + add * 0x10001, is those bits in both halves
  # for every byte (no carry between them).
  import ml_dtypes
  e = jnp.arange(wm.scales.MX_FOLD_MAX_CODE + 1, dtype=jnp.uint8)[:, None]
  pw = wm.PackedWeight(w=jnp.zeros((1, 32), jnp.int4), scale=e, offset=None, tensor_scale=None,
                       fmt=wm.WeightFormat.MXFP4, group=32, k=32, n=1)
  mult = wm.scales.fp4_scales_bf16(pw, mx_fold=True).scale
  np.testing.assert_array_equal(
      np.asarray(wm.scales.byte_multiplier_bits(e, pw.fmt)), np.asarray(mult).view(np.uint16))
  b = np.arange(0x08, 0x7F, dtype=np.uint8)
  sb = b.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
  bits = np.asarray(wm.scales.byte_multiplier_bits(jnp.asarray(b), wm.WeightFormat.NVFP4))
  np.testing.assert_array_equal(bits.view(ml_dtypes.bfloat16).astype(np.float64), sb * 2.0**118)
  nv = dataclasses.replace(pw, scale=jnp.asarray(b.view(ml_dtypes.float8_e4m3fn))[:, None],
                           tensor_scale=jnp.float32(1.0), fmt=wm.WeightFormat.NVFP4, group=16,
                           k=16, w=jnp.zeros((1, 16), jnp.int4))
  np.testing.assert_array_equal(np.asarray(wm.scales.fp4_scales_bf16(nv).scale).view(np.uint16)
                                [:, 0], bits)
  every = np.arange(256, dtype=np.uint32)
  for fmt, (mul, add) in wm.scales.BYTE_MULTIPLIERS.items():
    word = every * (mul * 0x10001) + add * 0x10001
    low = np.asarray(wm.scales.byte_multiplier_bits(jnp.asarray(every.astype(np.uint8)), fmt))
    np.testing.assert_array_equal(word, low.astype(np.uint32) * 0x10001, err_msg=fmt.value)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_byte_multipliers(name):
  # Scale bytes marked as each their multiplier up to one IMAD (`fp4_byte_multipliers`): a
  # weight quantized by mxjax fits (NVFP4's all-zero blocks included: zero scales over zero
  # codes), in either code order; every reader sees the stored weight; the bf16 multipliers
  # drop the mark; codes out of range, a zero scale over a nonzero code
  # (in the halves order, so the check reads K order) and traced scales are refused.
  w = jax.random.normal(jax.random.key(5), (512, 256), jnp.float32).at[:32, :3].set(0.0)
  pw = wm.repack_qarray(mxjax.quantize(w, mxjax.schemes.get(name), axis=0), scale_bf16=False)
  pw = wm.code_order.order_for_wgmma(pw, halves=True)
  b = wm.scales.fp4_byte_multipliers(pw)
  assert b.byte_multipliers and not b.scale_bf16 and b.scale.dtype == pw.scale.dtype
  from pallas_kernels.wo_matmul.decode_plan import base_case, case
  assert case(b)[-1] == "byte_multipliers" and base_case(b) == base_case(pw)
  np.testing.assert_array_equal(np.asarray(wm.dequantize(b)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(3), (3, 512), jnp.float32).astype(jnp.bfloat16)
  for impl in ("portable", "dequant_gemm", "xla"):
    run = lambda p: np.asarray(wm.wo_matmul(x, p, implementation=impl, out_dtype=jnp.float32,
                                            interpret=impl == "portable"))
    np.testing.assert_array_equal(run(b), run(pw))
  assert not wm.scales.fp4_scales_bf16(b).byte_multipliers
  assert wm.scales.fp4_scales_stored(b).byte_multipliers  # still the stored bytes
  assert wm.scales.fp4_byte_multipliers(wm.scales.fp4_scales_bf16(pw)).byte_multipliers
  bad = ((129, 255) if name == "mxfp4" else (0x05, 0x7F, 0x88))
  for code in bad:
    scale = jax.lax.bitcast_convert_type(pw.scale, jnp.uint8).at[3, 7].set(code)
    off = dataclasses.replace(pw, scale=jax.lax.bitcast_convert_type(scale, pw.scale.dtype))
    with pytest.raises(ValueError, match="in range: an E8M0 code above 128|subnormal, NaN"):
      wm.scales.fp4_byte_multipliers(off)
  if name == "nvfp4":  # a nonzero code where the scale is 0: K 16 of column 1, block 1
    assert float(pw.scale.astype(jnp.float32)[1, 1]) == 0.0
    codes = wm.code_order.logical_order(pw).w.astype(jnp.int8).at[1, 16].set(2).astype(jnp.int4)
    live = wm.code_order.order_for_wgmma(dataclasses.replace(wm.code_order.logical_order(pw),
                                                         w=codes), halves=True)
    with pytest.raises(ValueError, match="1 zero scales have nonzero codes"):
      wm.scales.fp4_byte_multipliers(live)
    neg0 = codes.astype(jnp.int8).at[1, 16].set(-8).astype(jnp.int4)  # -0: fits
    wm.scales.fp4_byte_multipliers(dataclasses.replace(wm.code_order.logical_order(pw), w=neg0))
  with pytest.raises(ValueError, match="traced"):
    jax.jit(wm.scales.fp4_byte_multipliers)(pw)


def test_amax_scale_f32_every_bf16():
  # The decode's INT4 scale from a bf16 amax, `div_fma` by RN(1 / 7) with an exact FMA: RN(a / 7)
  # (float64 division rounded once to float32: exact, 53 >= 2 * 24 + 2) for every finite bf16
  # a with |a| >= AMAX_MIN and for +-0; NaN for NaN; and AMAX_MIN is tight (a smaller a fails).
  from fractions import Fraction
  r = wm.scales.INV_INT4_MAX
  near = [r, *np.nextafter(r, np.array([0, 1], np.float32))]
  assert min(near, key=lambda v: abs(Fraction(float(v)) - Fraction(1, 7))) == r
  bits = np.arange(0, 0x10000, dtype=np.uint32)
  a = (bits << 16).view(np.float32)
  got = np.asarray(wm.scales.amax_scale_f32(jnp.asarray(a).astype(jnp.bfloat16), fma_f32))
  with np.errstate(invalid="ignore"):
    want = (a.astype(np.float64) / 7.0).astype(np.float32)
  fits = np.isfinite(a) & ((np.abs(a) >= wm.scales.AMAX_MIN) | (a == 0))
  np.testing.assert_array_equal(got[fits].view(np.uint32) & 0x7FFFFFFF,
                                want[fits].view(np.uint32) & 0x7FFFFFFF)
  assert np.isnan(got[np.isnan(a)]).all()
  off = got.view(np.uint32) != want.view(np.uint32)
  assert off[~fits & np.isfinite(a)].any()
  assert np.abs(a[off & np.isfinite(a)]).max() >= wm.scales.AMAX_MIN / 2


def _int4_bf16_weight(group, k=512, n=256):
  """(w (K, N) bf16, PackedWeight) of an INT4 weight quantized from bf16, with an all-zero
  block, a block whose amax is a power of two, and one of tiny (normal) values."""
  w = jax.random.normal(jax.random.key(7), (k, n), jnp.float32)
  w = w.at[:group, 0].set(0.0).at[group:2 * group, 1].set(0.25).at[0, 2].set(-4.0)
  w = w.at[:group, 3].multiply(2.0**-100).astype(jnp.bfloat16)
  scheme = mxjax.schemes.get("int4_g128", block_size=group)
  return w, wm.repack_qarray(mxjax.quantize(w, scheme, axis=0))


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_amax_scales(group):
  # INT4 scales stored as the bf16 amaxes they are RN(a / 7) of (`int4_amax_scales`): each is
  # the group's max |w| in bf16 (numpy), the float32 scales come back bit for bit, 2 bytes a
  # group go, and every reader sees the same weight, in K order or register order.
  w, pw = _int4_bf16_weight(group)
  a = wm.scales.int4_amax_scales(pw)
  assert a.amax_scales and a.scale.dtype == jnp.bfloat16
  amax = np.abs(np.asarray(w, np.float32)).reshape(-1, group, w.shape[1]).max(axis=1)
  np.testing.assert_array_equal(np.asarray(a.scale, np.float32), amax)
  np.testing.assert_array_equal(np.asarray(wm.scales.int4_scales_f32(a).scale).view(np.uint32),
                                np.asarray(pw.scale).view(np.uint32))
  assert pw.nbytes - a.nbytes == 2 * pw.scale.size
  from pallas_kernels.wo_matmul.decode_plan import base_case, case
  assert case(a)[-1] == "amax_scales" and base_case(a) == base_case(pw)
  assert "bf16_scales" not in case(a)
  np.testing.assert_array_equal(np.asarray(wm.dequantize(a)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(3), (3, w.shape[0]), jnp.float32).astype(jnp.bfloat16)
  for p0 in (pw, wm.code_order.order_for_wgmma(pw)):
    p1 = wm.scales.int4_amax_scales(p0)
    for impl in ("portable", "dequant_gemm", "xla"):
      run = lambda p: np.asarray(wm.wo_matmul(x, p, implementation=impl, out_dtype=jnp.float32,
                                              interpret=impl == "portable"))
      np.testing.assert_array_equal(run(p1), run(p0))
  assert wm.scales.int4_amax_scales(a) is a


def test_int4_amax_scales_refused():
  # What cannot be stored as bf16 amaxes says why: scales quantized from float32, an amax floor,
  # an Inf block, amaxes below AMAX_MIN, a scheme's bf16 scales, other formats, traced scales.
  w, pw = _int4_bf16_weight(32)
  def refused(p, match):
    assert wm.scales.amax_scales_fit(p) is not None
    with pytest.raises(ValueError, match=match):
      wm.scales.int4_amax_scales(p)
  f32 = jax.random.normal(jax.random.key(1), (256, 128), jnp.float32)
  int4 = lambda v, **o: wm.repack_qarray(mxjax.quantize(
      v, mxjax.schemes.get("int4_g128", block_size=32, **o), axis=0))
  refused(int4(f32), "no RN.a / 7. of a bf16 amax")
  zero = f32.astype(jnp.bfloat16).at[:32, 0].set(0.0)
  refused(int4(zero, amax_floor=1e-4), "1 scales are no RN")
  assert wm.scales.amax_scales_fit(int4(zero)) is None
  refused(int4(zero.at[5, 5].set(jnp.inf)), "infinite scale")
  sub = np.asarray(int4(zero).scale).copy()
  sub[0, 6] = np.float32(2.0**-126 / 7)  # a subnormal RN(a / 7), as a GPU's division keeps it
  refused(dataclasses.replace(pw, scale=jnp.asarray(sub)), "1 subnormal scales")
  # the smallest amax that fits (its scale 2^-126); a scale flushed to 0 is a = 0's
  assert wm.scales.amax_scales_fit(int4(zero.at[:32, 6].set(7 * 2.0**-126))) is None
  assert wm.scales.amax_scales_fit(int4(zero.at[:32, 6].set(2.0**-126))) is None
  nan = int4(zero.at[3, 4].set(jnp.nan))
  np.testing.assert_array_equal(np.asarray(wm.dequantize(wm.scales.int4_amax_scales(nan))),
                                np.asarray(wm.dequantize(nan)))
  refused(int4(zero, scale="bf16"), "the scales are bfloat16")
  refused(weight("mxfp4", {})[1], "INT4's")
  with pytest.raises(ValueError, match="traced"):
    jax.jit(wm.scales.int4_amax_scales)(pw)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_scales_bf16(name, monkeypatch):
  # FP4 block scales stored as the bf16 multipliers the GPU decode applies: exact both ways
  # for every one of the 256 scale codes (column c of the scales holds code c: E8M0's 0 =
  # 2^-127, a bf16 subnormal, and 255 = NaN; E4M3's subnormals, negatives and NaNs), and every
  # other reader sees the same weight.
  from pallas_kernels.wo_matmul import configs
  from pallas_kernels.wo_matmul import mosaic_gpu
  _, pw = weight(name, {}, k=512, n=256)
  codes = jnp.broadcast_to(jnp.arange(256, dtype=jnp.uint8), pw.scale.shape)
  pw = dataclasses.replace(pw, scale=codes if name == "mxfp4" else jax.lax.bitcast_convert_type(
      codes, jnp.float8_e4m3fn))
  b = wm.scales.fp4_scales_bf16(pw)
  assert b.scale_bf16 and b.scale.dtype == jnp.bfloat16 and b.nbytes > pw.nbytes
  want = np.asarray(wm.scales.group_scales(pw, tensor_scale=False), np.float64)
  if name == "nvfp4":
    want = want * 2.0**mosaic_gpu.NVFP4_PRESCALE_LOG2
  got = np.asarray(b.scale.astype(jnp.float32), np.float64)
  if name == "mxfp4":  # the CPU flushes f32 subnormals: compare 2^-127's bf16 bits instead
    assert (np.asarray(b.scale).view(np.uint16)[:, 0] == 0x0040).all()
    want[:, 0] = got[:, 0]
  np.testing.assert_array_equal(got, want)
  back = wm.scales.fp4_scales_stored(b)
  np.testing.assert_array_equal(np.asarray(back.scale).view(np.uint8),
                                np.asarray(pw.scale).view(np.uint8))
  np.testing.assert_array_equal(np.asarray(wm.dequantize(b)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(2), (3, 512), jnp.float32).astype(jnp.bfloat16)
  for impl in ("portable", "dequant_gemm"):
    y = wm.wo_matmul(x, wm.code_order.tile_weight(b, 128, 256), implementation=impl,
                     interpret=impl == "portable", out_dtype=jnp.float32)
    ref = wm.wo_matmul(x, pw, implementation=impl, interpret=impl == "portable",
                       out_dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref))
  _, int4 = weight("int4_g128", {}, k=512, n=256)
  with pytest.raises(ValueError, match="MXFP4 / NVFP4"):
    wm.scales.fp4_scales_bf16(int4)
  # The GPU's default storage, which the GPU kernels read there: where the decode runs on bf16
  # tensor cores, the scale bytes as byte multipliers in the halves order (H100, session 40;
  # test_repack_stores_fp4_for_its_decode), both kernels' paths open; bf16 multipliers where
  # the bytes do not fit (traced, out of range) or are asked for. On the CPU `repack` keeps the
  # stored bytes.
  from pallas_kernels.wo_matmul import decode_plan, mosaic_gpu_gemm
  q, _ = weight(name, {}, k=512, n=256)
  cpu = wm.repack_qarray(q)
  assert not (cpu.scale_bf16 or cpu.byte_multipliers or cpu.wgmma_order)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  gpu = wm.repack_qarray(q)
  assert gpu.byte_multipliers and gpu.halves_order and gpu.wgmma_order and not gpu.scale_bf16
  assert decode_plan.case(gpu) in decode_plan.VERIFIED
  assert decode_plan.case(gpu) in mosaic_gpu_gemm.VERIFIED
  np.testing.assert_array_equal(np.asarray(wm.dequantize(gpu)), np.asarray(wm.dequantize(cpu)))
  assert wm.api.default_implementation(x, gpu) == "mosaic_gpu"
  assert wm.api.default_implementation(jnp.zeros((256, 512), jnp.bfloat16),
                                       gpu) == "mosaic_gpu_gemm"
  assert jax.eval_shape(wm.repack_qarray, q).scale_bf16  # traced scales: multipliers
  asked = wm.repack_qarray(q, scale_bf16=True)
  assert asked.scale_bf16 and not asked.byte_multipliers
  kept = wm.repack_qarray(q, scale_bf16=False)
  assert not (kept.scale_bf16 or kept.byte_multipliers)
  with pytest.raises(ValueError, match="pass one of them"):
    wm.repack_qarray(q, scale_bf16=True, byte_multipliers=True)
  bad = pw.scale.at[0, 0].set(200 if name == "mxfp4" else jnp.float8_e4m3fn(2.0**-9))
  assert wm.scales.byte_multipliers_fit(dataclasses.replace(pw, scale=bad)) is not None
  assert not wm.layout.default_byte_multipliers(dataclasses.replace(pw, scale=bad))
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
  # NF4 as slot codes with bf16 absmax (`scales.nf4_slots`): the weight is bf16(table) *
  # bf16(absmax) (float64 check from the codes), rounded once to bf16 by the kernels that round
  # (bitsandbytes' GEMV weight); register order, tiling and every CPU kernel read it.
  import ml_dtypes
  q, pw = weight("nf4_g64", {}, k=512, n=256)
  sl = wm.scales.nf4_slots(pw)
  assert sl.scale_bf16 and sl.w.dtype == jnp.int4 and sl.w.shape == (256, 512)
  assert sl.nbytes == pw.nbytes - pw.scale.size * 2
  codes = np.asarray(wm.packed_weight.unpack_k(q.codes))  # (K, N) NF4 codes
  table = wm.decode.NF4_TABLE.astype(ml_dtypes.bfloat16).astype(np.float64)
  absmax = np.asarray(q.scale, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
  want = table[codes] * np.repeat(absmax, 64, axis=0)
  np.testing.assert_array_equal(np.asarray(wm.dequantize(sl), np.float64), want)
  ordered = wm.code_order.order_for_wgmma(sl)
  np.testing.assert_array_equal(np.asarray(wm.dequantize(ordered), np.float64), want)
  x = jax.random.normal(jax.random.key(3), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, sl, out_dtype=jnp.float32)
  assert rel(ref, x.astype(jnp.float32) @ mxjax.dequantize(q)) < 1e-2  # bf16 rounding only
  for p in (sl, ordered, wm.code_order.tile_weight(ordered, 128, 256)):
    y = wm.wo_matmul(x, p, implementation="portable", interpret=True, out_dtype=jnp.float32)
    assert rel(y, ref) < 1e-5
  y = wm.wo_matmul(x, ordered, implementation="mosaic_tpu", interpret=True, out_dtype=jnp.float32)
  assert rel(y, ref) < 1e-5
  # The rounding kernels' weight, through one-hot rows: RN_bf16 of the exact product.
  eye = jnp.eye(512, dtype=jnp.bfloat16)[:8]
  for impl, kw in (("portable", dict(interpret=True, weights_bf16=True)), ("dequant_gemm", {})):
    rows = np.asarray(wm.wo_matmul(eye, ordered, implementation=impl, out_dtype=jnp.float32,
                                   **kw))
    np.testing.assert_array_equal(rows, want[:8].astype(ml_dtypes.bfloat16).astype(np.float32))
  with pytest.raises(ValueError, match="slot codes are for NF4"):
    wm.scales.nf4_slots(weight("int4_g128", {}, k=512, n=256)[1])
  with pytest.raises(ValueError, match="slot codes"):
    wm.code_order.order_for_wgmma(pw)
  assert wm.scales.fp4_scales_stored(sl) is sl
  # The GPU's default storage; the kernels take it only where checked on a GPU.
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  g = wm.repack_qarray(q)
  assert g.scale_bf16 and g.wgmma_order
  assert not wm.repack_qarray(q, scale_bf16=False).scale_bf16
  from pallas_kernels.wo_matmul import decode_plan
  assert decode_plan.case(g) == (wm.WeightFormat.NF4, 64, "slots")
  want_impl = "mosaic_gpu" if decode_plan.case(g) in decode_plan.VERIFIED else "xla"
  assert wm.api.default_implementation(x, g) == want_impl
