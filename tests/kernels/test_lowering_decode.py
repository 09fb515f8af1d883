"""The Mosaic GPU decode kernel (`wo_matmul.mosaic_gpu`, M <= 64) lowers for CUDA in every format
and with every option its plan can take, and reads the blocks its schedule names. What lowering
checks and what it cannot: tests/kernels/lowering.py.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import pytest

import mxjax
from pallas_kernels import _compat
from pallas_kernels import wo_matmul as wm
from pallas_kernels.wo_matmul import decode_plan
from pallas_kernels.wo_matmul import mosaic_gpu
from pallas_kernels.wo_matmul import mosaic_gpu_gemm
from tests.kernels.jaxprs import primitive_counts
from tests.kernels.lowering import FORMATS
from tests.kernels.lowering import record_calls
from tests.kernels.lowering import weight_shape
from tests.kernels.lowering import x_shape


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("m", [1, pytest.param(16, marks=pytest.mark.slow), 64])
def test_decode_kernel_lowers_for_cuda(name, m):
  # The defaults the H100 sweeps chose, at the benchmark's K=8192, N=28672.
  pw = weight_shape(name, 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("m", [1, pytest.param(64, marks=pytest.mark.slow)])
def test_decode_step_wait_lowers(name, m):
  # `step_wait`: prescaled FP4 / NF4 and per-channel weights chain a step's chunks into the
  # carried accumulator (`chain`, a `pl.run_state`) and wait once; group-scaled ones read chunk
  # j's accumulators after issuing chunk j + 1's (`chunk`, nested scopes). The bf16 path:
  # `fp8_x` (FP8 / MXFP4's default at M <= 8) never chains.
  pw = weight_shape(name, 8192, 28672)
  chained = name.startswith(("mxfp4", "nvfp4", "nf4", "int8", "fp8"))
  for step_wait in (True, False):
    fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True,
                                                      step_wait=step_wait, fp8_x=False)
    text = _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()
    assert ("body.<locals>.chain" in text) == (step_wait and chained)
    assert ("body.<locals>.chunk" in text) == (step_wait and not chained)


@pytest.mark.parametrize("preset,group", [("int4_g128", 32), ("int4_g128", 64),
                                          ("int4_g128_asym", 64)])
@pytest.mark.parametrize("m", [1, 64])
def test_decode_group_slices_lower(preset, group, m):
  # `group_slices` (the default for these groups): one wgmma a group on its K slice of the
  # register tile (`lax.slice`) and of x (one copy, swizzled in tiles of one group), with or
  # without the lagged reads; False: a full-width wgmma a group over x copies.
  pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get(preset, block_size=group), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  rows = -(-m // 8) * 8  # x's rows in the kernel: M padded to 8, once (not a copy a group)
  for step_wait in (False, True):
    fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, step_wait=step_wait, tma_pad=False)
    text = _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()
    assert f"tensor<{rows}x8192xbf16>" in text
  copies = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, group_slices=False)
  text = _compat.lower_for("cuda", copies, x_shape(m, 8192), pw).as_text()
  assert f"tensor<{rows * 128 // group}x8192xbf16>" in text
  with pytest.raises(ValueError, match="group_slices is for INT4 / UINT4 groups of 32 or 64"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, group_slices=True), x_shape(m, 8192), weight_shape("int4_g128", 8192, 28672))


@pytest.mark.parametrize("name", ["int4_g128", "int8"])
@pytest.mark.parametrize("m", [1, 5, 9])
def test_decode_tma_pad_lowers(name, m):
  # `tma_pad`: at M < 8 the kernel takes x as it is, (M, K), with no XLA pad before it (the
  # default); at M = 9 it pads to 16 as before (Mosaic's TMA tiling takes a row count under 8
  # or a multiple of 8). tma_pad=False keeps the pad.
  pw = weight_shape(name, 8192, 28672)
  lower = lambda **o: _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, **o), x_shape(m, 8192), pw).as_text()
  text = lower()
  assert ("stablehlo.pad" not in text) == (m < 8)
  assert (m < 8) or "tensor<16x8192xbf16>" in text
  assert "stablehlo.pad" in lower(tma_pad=False)


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("m,cfg", [(1, {"stream_k": 2}),
                                   pytest.param(13, {"stream_k": 2}, marks=pytest.mark.slow),
                                   (64, {"stream_k": 1})])
def test_decode_fused_sum_lowers(name, m, cfg):
  # `fused_sum`: the kernel writes y (M, N) itself, its slot-0 CTAs waiting on semaphores for
  # the tiles' other partial sums: no XLA reduction, transpose, cast or (NVFP4) tensor-scale
  # multiply after the kernel.
  pw = weight_shape(name, 8192, 28672)
  text = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, allow_unverified=True, fused_sum=True, **cfg), x_shape(m, 8192), pw).as_text()
  main = text[text.index("func.func public @main"):].splitlines()
  at = next(i for i, ln in enumerate(main) if "mosaic_gpu" in ln)
  assert "semaphore_wait" in main[at] and "semaphore_signal" in main[at]
  assert "fence.proxy.async.global" in main[at]  # TMA writes / reads against the semaphore
  assert f"tensor<{m}x28672xbf16>" in main[at]  # y, as the kernel writes it
  end = main.index("  }")  # main's body: what XLA runs after the kernel (x's pad and UINT4's
  after = "\n".join(main[at + 1:end])  # group sums come before it)
  assert not any(op in after for op in ("stablehlo.reduce", "stablehlo.transpose",
                                         "stablehlo.multiply", "stablehlo.convert"))


@pytest.mark.parametrize("tile_n", [128, 256])
def test_decode_fused_sum_slot_loads_lowers(tile_n):
  # `slot_loads`: slot 0 reads the other slots' partial sums by plain loads from global memory
  # (one batch at 128 rows, four at 256), in place of a TMA copy and barrier wait each.
  pw = weight_shape("int4_g128", 4096, 4096)
  cfg = dict(tile_n=tile_n, gps=2, steps=3, compute_wgs=2, stream_k=1, fused_sum=True,
             allow_unverified=True)
  lower = lambda **kw: _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, **cfg, **kw), x_shape(64, 4096), pw).as_text()
  plain, tma = lower(slot_loads=True), lower()
  assert "semaphore_wait" in plain and "tensor<64x4096xbf16>" in plain  # y, as the kernel writes
  assert plain != tma and len(plain) < len(tma)  # no copies, barriers or shared-memory reads


def test_decode_fused_sum_slot_stores_lowers():
  # `slot_stores`: slots 1.. store their partial sums from registers to global memory and
  # release them (a warpgroup barrier and `fence.acq_rel.gpu`) before the signal, in place of a
  # TMA store and its completion wait; slot 0 still reads them by TMA copies or plain loads.
  pw = weight_shape("int4_g128", 4096, 4096)
  cfg = dict(tile_n=128, gps=2, steps=3, compute_wgs=2, stream_k=1, fused_sum=True,
             allow_unverified=True)
  lower = lambda **kw: _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, **cfg, **kw), x_shape(32, 4096), pw).as_text()
  tma = lower()
  for loads in (False, True):
    stores = lower(slot_stores=True, slot_loads=loads)
    assert "fence.acq_rel.gpu" in stores and "fence.acq_rel.gpu" not in tma
    assert "semaphore_signal" in stores and "tensor<32x4096xbf16>" in stores
    assert "cta.bulk_group" in tma and "cta.bulk_group" not in stores  # no store to wait on


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3_rowwise"])
def test_decode_per_channel_wgs_on_splits_lowers(name):
  # Two compute warpgroups with one N tile a CTA on a per-channel weight: the channel scales'
  # block is the same every step, and Pallas's warp-specialized pipeline refuses an input whose
  # index map ignores the step unless `mosaic_gpu.channel_block` reads it; one slot a tile, so
  # the CTA writes y with no semaphore.
  pw = weight_shape(name, 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, splits=1, fused_sum=True, compute_wgs=2,
                                                    stream_k=None)
  text = _compat.lower_for("cuda", fn, x_shape(32, 8192), pw).as_text()
  main = text[text.index("func.func public @main"):].splitlines()
  kernel = next(ln for ln in main if "mosaic_gpu" in ln)
  assert "semaphore_wait" not in kernel and "tensor<32x28672xbf16>" in kernel


@pytest.mark.parametrize("m", [1, pytest.param(3, marks=pytest.mark.slow), 64])
@pytest.mark.parametrize("cfg", [{}, {"compute_wgs": 2, "stream_k": 1, "step_wait": True}])
@pytest.mark.parametrize("name", ["int4_g128", "int4_g128_asym", "int4_g128-block_size32",
                                  "int4_g128_asym-block_size64-scalebf16", "mxfp4",
                                  "fp8_e4m3_rowwise", "int8"])
def test_decode_fp8_x_lowers(m, cfg, name):
  # `fp8_x`: INT4 g128 on FP8 tensor cores, x as two E4M3 rows a token (unpadded under 8 rows:
  # the TMA fills the tile), the weights as E4M3 odd values, an m64nNk32 e4m3 wgmma (N = 2 M,
  # at least 8); XLA adds each token's two columns after the kernel. Both storage orders (the
  # CPU's K order, the GPU's register order) only change how x is permuted. UINT4 adds its
  # offset term; groups of 32 / 64 and MXFP4 take one wgmma a group on its K slice
  # (`group_slices`), x in swizzle tiles of one group. MXFP4 also with its bf16 multipliers.
  # FP8 weights are the A operand as stored (loaded in WGMMA_8BIT), folded every chunk; INT8's
  # too, on an s8 wgmma with int32 accumulators, x in int8.
  pws = [weight_shape(name, 8192, 28672)]
  if name == "int8" and cfg:
    cfg = dict(cfg, tile_n=128)  # (INT8's default tile at M <= 16 has 64 rows)
  if name not in ("fp8_e4m3_rowwise", "int8"):  # (bytes have no register order)
    pws.append(jax.eval_shape(wm.code_order.order_for_wgmma, pws[0]))
  if name == "mxfp4":
    pws.append(jax.eval_shape(wm.scales.fp4_scales_bf16, pws[-1]))
  for pw in pws:
    text = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, allow_unverified=True, fp8_x=True, **cfg), x_shape(m, 8192), pw).as_text()
    main = text[text.index("func.func public @main"):].splitlines()
    # the decode: the last Mosaic kernel (INT8 / FP8 split x in one before it, `x_split.py`)
    at = max(i for i, ln in enumerate(main) if "mosaic_gpu" in ln)
    mma, x8 = ("s32.s8.s8", "i8") if name == "int8" else ("f32.e4m3.e4m3", "f8E4M3FN")
    assert f"m64n{max(8, 2 * m)}k32.{mma}" in main[at]
    assert f"tensor<{2 * m}x8192x{x8}>" in main[at]  # padded to 8 rows or not: 2 m


def test_decode_fused_sum_takes_two_warpgroups_one_slot_and_f32():
  pw = weight_shape("int4_g128", 8192, 28672)
  for m, cfg in ((16, {"stream_k": 1, "tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 2}),
                 (16, {"splits": 1, "tile_n": 64}),  # one slot a tile: any schedule
                 (1, {"splits": 1}),
                 (16, {"stream_k": 1, "out_dtype": jnp.float32})):  # y in f32: the whole buffer
    text = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, allow_unverified=True, fused_sum=True, **cfg), x_shape(m, 8192), pw).as_text()
    assert f"tensor<{m}x28672x{'f32' if 'out_dtype' in cfg else 'bf16'}>" in text
    # with one slot a tile each CTA writes y at once: no semaphore, wait or fence
    one_slot = "splits" in cfg
    assert ("semaphore_wait" in text) != one_slot and ("semaphore_signal" in text) != one_slot
    assert ("fence.proxy.async.global" in text) != one_slot


@pytest.mark.parametrize("group", [32, 128])
@pytest.mark.parametrize("m", [1, 64])
def test_decode_uint4_zero_in_weights_lowers(group, m):
  # `zero_in_weights`: UINT4's zero points subtracted from the decoded weights (bf16, from the
  # offsets and scales in shared memory): no x group sums (an XLA reduction before the launch)
  # and no offset * x-sum term. Off by default (slower on the GPU).
  pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128_asym", block_size=group), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  for step_wait in (False, True):
    fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, zero_in_weights=True, step_wait=step_wait)
    text = _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()
    # x in groups, to be summed (its rows padded to the sums' columns first)
    groups = f"tensor<{decode_plan.xsum_cols(max(8, m))}x{8192 // group}x{group}xf32>"
    assert groups not in text and "uint4_zero_bf16" in text
  sums = _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, x_shape(m, 8192), pw).as_text()
  assert groups in sums and "uint4_zero_bf16" not in sums
  with pytest.raises(ValueError, match="zero_in_weights is for UINT4"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, zero_in_weights=True), x_shape(m, 8192),
        weight_shape("int4_g128", 8192, 28672))


@pytest.mark.parametrize("m", [33, 40, 48, 56])
def test_decode_uint4_lowers_at_every_m_above_32(m):
  # UINT4's x group sums (f32, a row a group) go in rows of a multiple of 32 columns: at two
  # groups a step, 40 or 56 columns made TMA copies of 320 / 448 bytes, which Mosaic rejects.
  pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128_asym"), axis=0)), jax.ShapeDtypeStruct((8192, 28672),
                                                                          jnp.float32))
  text = _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, x_shape(m, 8192), pw).as_text()
  assert "tensor<64x64xf32>" in text  # (G, 64) x sums, M = 33 .. 64 padded to 64 columns


@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("m", [1, pytest.param(16, marks=pytest.mark.slow), 64])
def test_decode_uint4_zero_points_lower(group, m):
  # UINT4 zero points stored as bytes (`scales.uint4_zero_points`): the kernel reads a uint8
  # (G, N) operand in place of the f32 offsets and makes each offset f32(s) * (f32(zp) - 8) in
  # registers (`_zero_points_f32`), with the x-sum term and with `zero_in_weights`; checked on
  # the GPU in session 16 (correct; slower than the f32 offsets at M = 1, so not the default).
  pw = jax.eval_shape(lambda w: wm.scales.uint4_zero_points(wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128_asym", block_size=group), axis=0))),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  operands = f"tensor<{8192 // group}x28672xf32>, tensor<{8192 // group}x28672xui8>"
  for opts in ({}, {"zero_in_weights": True}):
    fn = lambda x, p, o=opts: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True, **o)
    text = _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()
    call = next(ln for ln in text.splitlines() if "custom_call" in ln)
    assert operands in call and "_zero_points_f32" in text  # scales, then the zero points
  _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, x_shape(m, 8192), pw)  # ungated


@pytest.mark.parametrize("preset,group", [("int4_g128", 32), ("int4_g128_asym", 64),
                                          ("int8", None)])
def test_decode_bf16_scales_lower(preset, group):
  # A scheme storing its scales in bf16 (`ScaleFormat.BF16`, as GPTQ / AWQ checkpoints keep
  # 16-bit scales): the decode kernel reads 2-byte scale rows and widens them in registers
  # (exact); the cases checked on the GPU (session 16) run ungated, the others (INT4 g64 here)
  # need allow_unverified. The prefill GEMM widens them in XLA, its checked f32-scale path.
  over = {"scale": "bf16"} | ({"block_size": group} if group else {})
  pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get(preset, **over), axis=0)), jax.ShapeDtypeStruct((8192, 28672),
                                                                         jnp.float32))
  assert pw.scale.dtype == jnp.bfloat16 and decode_plan.case(pw)[2:] == ("bf16_scales",)
  rows = 1 if group is None else 8192 // group
  for m in (1, 64):
    fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True)
    text = _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()
    call = next(ln for ln in text.splitlines()
                if "custom_call" in ln)
    assert f"tensor<{rows}x28672xbf16>" in call
  # checked: ungated
  _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, x_shape(1, 8192), pw)
  g64 = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128", block_size=64, scale="bf16"), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  with pytest.raises(NotImplementedError, match=r"\(bf16 scales\) has not matched"):
    _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, x_shape(1, 8192), g64)
  gemm = _compat.lower_for("cuda", mosaic_gpu_gemm.wo_gemm_mosaic_gpu, x_shape(1024, 8192), pw)
  assert f"tensor<{rows}x28672xf32>" in next(ln for ln in gemm.as_text().splitlines()
                                            if "custom_call" in ln)


@pytest.mark.parametrize("name", ["int4_g128-block_size32", "int4_g128-block_size64"])
@pytest.mark.parametrize("m", [1, 16])
def test_decode_chunk_wait_lowers(name, m):
  # `chunk_wait`: a chunk's group wgmmas issued into their own accumulators, then one wait
  # (INT4's default at M <= 16, a different kernel from chunk_wait=False); refused where a
  # chunk has one group or with step_wait.
  pw = weight_shape(name, 8192, 28672)
  lower = lambda **o: _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, step_wait=False, **o), x_shape(m, 8192), pw).as_text()
  assert lower(chunk_wait=True) == lower() != lower(chunk_wait=False)
  with pytest.raises(ValueError, match="chunk_wait waits once a chunk"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, chunk_wait=True), x_shape(m, 8192),
        weight_shape("int4_g128", 8192, 28672))


@pytest.mark.parametrize("m", [1, 64])
def test_nf4_byte_permute_lookup_lowers(m):
  # The decode kernel's and the GEMM's NF4 lookup through inline PTX prmt (plgpu.inline_mgpu).
  pw = weight_shape("nf4_g64", 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, nf4_lut=True)
  assert "prmt.b32" in _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, nf4_lut=True, allow_unverified=True)
  assert "prmt.b32" in _compat.lower_for("cuda", fn, x_shape(1024, 8192), pw).as_text()


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("m", [1, 64])
def test_e2m1_bit_decode_lowers(name, m):
  # The decode kernel's and the GEMM's E2M1 decode (`registers.e2m1_bf16`): integer ops on the
  # int4 registers' 32-bit words and PTX mul.rn.bf16x2, not Mosaic's int4 -> bf16 cast (whose PTX
  # ends in sub.bf16x2). (MXFP4's default at M <= 8 is `fp8_x`, E2M1 bits into E4M3.)
  pw = weight_shape(name, 8192, 28672)
  for fn, m_ in ((lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False), m),
                 (lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True),
                  16 * m)):
    text = _compat.lower_for("cuda", fn, x_shape(m_, 8192), pw).as_text()
    assert "mul.rn.bf16x2" in text and "prmt.b32" in text and "sub.bf16x2" not in text


@pytest.mark.parametrize("name", ["int4_g128", "int4_g128_asym", "mxfp4", "nvfp4"])
def test_wgmma_ordered_weights_lower_without_relayouts(name, monkeypatch):
  # A weight in the kernels' register order (`code_order.order_for_wgmma`) is relabelled from its
  # 32-bit loads (`registers.wgmma_from_upcast_4x`) in the decode kernel (M = 1, and the
  # two-warpgroup M = 64 config) and the GEMM: no int4 relayout through WGMMA_UPCAST_2X, which
  # K order needs.
  plgpu = _compat.plgpu_module()
  casts, layout_cast = [], plgpu.layout_cast
  monkeypatch.setattr(plgpu, "layout_cast",
                      lambda a, lay: casts.append(lay) or layout_cast(a, lay))
  pw = weight_shape(name, 8192, 28672)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True,
                                                        fp8_x=False)
  for fn, m in ((decode, 1), (decode, 64), (gemm, 1024)):
    ordered = lambda x, p, fn=fn: fn(x, wm.code_order.order_for_wgmma(p))
    for f, relayouts in ((fn, True), (ordered, False)):
      jax.clear_caches()  # lower afresh: a cached trace would make no casts at all
      casts.clear()
      _compat.lower_for("cuda", f, x_shape(m, 8192), pw)
      assert (plgpu.Layout.WGMMA_UPCAST_2X in casts) == relayouts


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("m", [1, 64])
def test_fp4_scale_bytes_lower(name, m):
  pw = weight_shape(name, 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp4_scale_bytes=True)
  _compat.lower_for("cuda", fn, x_shape(m, 8192), pw)
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, fp4_scale_bytes=True,
                                                         allow_unverified=True)
  _compat.lower_for("cuda", fn, x_shape(1024, 8192), pw)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_scales_bf16_lower(name, monkeypatch):
  # FP4 scales stored as bf16 multipliers (`scales.fp4_scales_bf16`): the decode kernel (M = 1,
  # and M = 16 / 64, NVFP4's two-warpgroup config from M = 9) loads them as they are, with no
  # scale-byte decode (`scale_bytes_f32`, which the stored bytes take); the GEMM takes the stored
  # bytes back.
  decodes, scale_bytes_f32 = [], mosaic_gpu.scale_bytes_f32
  monkeypatch.setattr(mosaic_gpu, "scale_bytes_f32",
                      lambda *a: decodes.append(1) or scale_bytes_f32(*a))
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, weight_shape(name, 8192, 28672))
  assert pw.scale.dtype == jnp.bfloat16
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False)  # the bf16 path
  for m in (1, 16, 64):
    for p, decoded in ((pw, False), (jax.eval_shape(wm.scales.fp4_scales_stored, pw), True)):
      jax.clear_caches()  # lower afresh: a cached trace would call nothing
      decodes.clear()
      text = _compat.lower_for("cuda", decode, x_shape(m, 8192), p).as_text()
      assert "mul.rn.bf16x2" in text and bool(decodes) == decoded
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  _compat.lower_for("cuda", gemm, x_shape(1024, 8192), pw)


def test_mxfp4_folded_multipliers_lower():
  # MXFP4's multipliers folded with the E2M1 decode's 2^126 (`fp4_scales_bf16(mx_fold=True)`):
  # the decode (M = 1 / 16 / 64) and the GEMM scale the codes in the decode's own multiply,
  # with no bf16 multiply after it, where unfolded multipliers take one; refused unverified,
  # and on FP8 tensor cores (`fp8_x` scales the f32 sums).
  import dataclasses
  import re
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, weight_shape("mxfp4", 8192, 28672))
  fold = dataclasses.replace(pw, mx_fold=True)
  bf16_muls = lambda text: len(re.findall(r"arith.mulf.*bf16", text))
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  for fn, m in [(decode, 1), (decode, 16), (decode, 64), (gemm, 1024)]:
    counts = []
    for p in (pw, fold):
      jax.clear_caches()
      text = _compat.lower_for("cuda", fn, x_shape(m, 8192), p).as_text()
      counts.append((text.count("mul.rn.bf16x2"), bf16_muls(text)))
    assert counts == [(1, 1), (1, 0)], (m, counts)
  with pytest.MonkeyPatch.context() as patch:  # (checked on an H100 since session 37)
    patch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(fold)})
    with pytest.raises(NotImplementedError, match=r"mxfp4 group 32 \(mx fold\)"):
      _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p),
                        x_shape(1, 8192), fold)
  with pytest.raises(ValueError, match="fp8_x scales each group"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, fp8_x=True, allow_unverified=True), x_shape(1, 8192), fold)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_byte_multipliers_lower(name, monkeypatch):
  # FP4 scale bytes marked as each their multiplier up to one IMAD
  # (`scales.fp4_byte_multipliers`): the decode (M = 1 / 16 / 64) and the GEMM make the
  # multiplier pairs from the bytes (`registers._byte_pair_word`) and decode no scale byte in
  # float32 (`scale_bytes_f32`), which the unmarked bytes take; refused where a GPU has not
  # checked it (the decode on an H100 in session 39, the GEMM not yet).
  import dataclasses
  from pallas_kernels.wo_matmul import registers
  calls = record_calls(monkeypatch, [(mosaic_gpu, "scale_bytes_f32"),
                                      (mosaic_gpu_gemm, "scale_bytes_f32"),
                                      (registers, "_byte_pair_word")])
  pw = jax.eval_shape(wm.scales.fp4_scales_stored, weight_shape(name, 8192, 28672))
  marked = dataclasses.replace(pw, byte_multipliers=True)
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  for fn, m in [(decode, 1), (decode, 16), (decode, 64), (gemm, 1024)]:
    for p in (marked, pw):
      calls.clear()
      jax.clear_caches()
      _compat.lower_for("cuda", fn, x_shape(m, 8192), p)
      want = "_byte_pair_word" if p.byte_multipliers else "scale_bytes_f32"
      assert set(calls) == {want}, (m, p.byte_multipliers, set(calls))
  # the decode checked on an H100 (session 39), the GEMM not yet
  _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False),
                    x_shape(1, 8192), marked)
  monkeypatch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(marked)})
  for fn, m in ((lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False), 1),
                (lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p), 1024)):
    with pytest.raises(NotImplementedError, match=f"{name} group .. .*byte multipliers"):
      _compat.lower_for("cuda", fn, x_shape(m, 8192), marked)


@pytest.mark.parametrize("group", [32, pytest.param(64, marks=pytest.mark.slow), 128])
def test_int4_amax_scales_lower(group, monkeypatch):
  # INT4 scales stored as bf16 amaxes (`scales.int4_amax_scales`): the decode (M = 1 / 16 / 64,
  # on 8-bit tensor cores, `fp8_x`, and by plain loads) computes each scale from its amax in
  # the kernel (`scales.amax_scale_f32`, by `fma.rn.f32`), where float32 scales take none; the
  # GEMM rebuilds them too (`amax_in_kernel`, session 40) where a GPU has checked it, else
  # takes the float32 scales XLA computes (`int4_scales_f32`); the decode is refused where a
  # GPU has not checked it (an H100 has since session 39).
  import dataclasses
  calls = record_calls(monkeypatch, [(mosaic_gpu, "amax_scale_f32"),
                                      (mosaic_gpu_gemm, "amax_scale_f32")])
  pw = weight_shape(f"int4_g128-block_size{group}" if group != 128 else "int4_g128", 8192,
                     28672)
  marked = dataclasses.replace(pw, scale=jax.ShapeDtypeStruct(pw.scale.shape, jnp.bfloat16),
                               amax_scales=True)
  decode = lambda x, p, **o: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True, **o)
  gemm = lambda x, p, **o: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **o)
  threads = jax.eval_shape(wm.code_order.thread_major, marked)  # the decode by plain loads
  for fn, m, opts in [(decode, 1, {}), (decode, 16, {}), (decode, 64, {}),
                      (decode, 1, {"fp8_x": True})]:
    for p in (marked, pw) + ((threads,) if m == 1 and not opts else ()):
      calls.clear()
      jax.clear_caches()
      text = _compat.lower_for("cuda", lambda x, p: fn(x, p, **opts), x_shape(m, 8192), p).as_text()
      assert bool(calls) == p.amax_scales and ("fma.rn.f32" in text) == p.amax_scales, (m, opts)
  # the GEMM rebuilds the amaxes itself (checked on an H100 for g32 / g64 / g128, session 40)
  for p, opts, rebuilt in [(marked, {}, True), (marked, {"amax_in_kernel": False}, False),
                           (pw, {}, False)]:
    calls.clear()
    jax.clear_caches()
    text = _compat.lower_for("cuda", lambda x, p: gemm(x, p, **opts), x_shape(1024, 8192),
                             p).as_text()
    assert bool(calls) == rebuilt and ("fma.rn.f32" in text) == rebuilt, (p.amax_scales, opts)
  with pytest.raises(ValueError, match="not"):
    _compat.lower_for("cuda", lambda x, p: gemm(x, p, amax_in_kernel=True), x_shape(1024, 8192), pw)
  # where no GPU has checked it, XLA widens them, and asking for it is refused
  monkeypatch.setattr(mosaic_gpu_gemm, "VERIFIED",
                      mosaic_gpu_gemm.VERIFIED - {decode_plan.case(marked)})
  calls.clear()
  jax.clear_caches()
  _compat.lower_for("cuda", gemm, x_shape(1024, 8192), marked)
  assert not calls
  with pytest.raises(NotImplementedError, match=f"int4 group {group} .amax scales."):
    _compat.lower_for("cuda", lambda x, p: gemm(x, p, amax_in_kernel=True), x_shape(1024, 8192),
                      marked)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # what `wo_matmul` picks there
  assert wm.api.default_implementation(x_shape(1024, 8192), marked) == "mosaic_gpu_gemm"
  assert wm.api.default_implementation(x_shape(1, 8192), marked) == "mosaic_gpu"  # (session 39)
  monkeypatch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(marked)})
  assert wm.api.default_implementation(x_shape(1, 8192), marked) == "xla"
  assert wm.api.default_implementation(x_shape(1, 8192), pw) == "mosaic_gpu"
  with pytest.raises(NotImplementedError, match=f"int4 group {group} .amax scales."):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p), x_shape(1, 8192),
                      marked)


@pytest.mark.parametrize("group", [32, 128])
@pytest.mark.parametrize("m", [1, 64])
def test_int4_weights_bf16_lowers(group, m, monkeypatch):
  # `weights_bf16`: INT4 prescaled, RN_bf16(q * s) (float32 scales, or rebuilt from bf16 amaxes)
  # and one wgmma a chunk chained into the carried sum (no group slices, one x copy, one
  # accumulator a chunk), a step's wait once; refused for other formats and, until a GPU has
  # checked it, without allow_unverified.
  import dataclasses
  name = f"int4_g128-block_size{group}" if group != 128 else "int4_g128"
  pw = weight_shape(name, 8192, 28672)
  marked = dataclasses.replace(pw, scale=jax.ShapeDtypeStruct(pw.scale.shape, jnp.bfloat16),
                               amax_scales=True)
  plan = decode_plan.plan_decode(m, 8192, pw, weights_bf16=True, allow_unverified=True)
  assert plan.prescale and plan.chain and plan.per_chunk == 1 and plan.xsub == 1
  assert not plan.group_slices and not plan.chunk_wait
  default = decode_plan.plan_decode(m, 8192, pw, allow_unverified=True)
  assert not default.prescale and default.per_chunk == 128 // group
  calls = record_calls(monkeypatch, [(mosaic_gpu, "amax_scale_f32")])
  for p in (pw, marked):
    calls.clear()
    jax.clear_caches()
    fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, weights_bf16=True,
                                                      allow_unverified=True)
    text = _compat.lower_for("cuda", fn, x_shape(m, 8192), p).as_text()
    assert "body.<locals>.chain" in text and "body.<locals>.chunk" not in text
    assert bool(calls) == p.amax_scales
  # a scheme's bf16 scales: q * s is exact in f32, so one bf16 multiply a pair, no f32 round
  # trip (two widenings and a narrowing a weight fewer)
  b16 = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128", block_size=group, scale="bf16"), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, weights_bf16=True, allow_unverified=True)
  converts = [primitive_counts(jax.make_jaxpr(fn)(x_shape(m, 8192), w).jaxpr)[
      "convert_element_type"] for w in (pw, b16)]
  assert converts[1] < converts[0]
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x_shape(m, 8192), b16).as_text()
  with pytest.raises(NotImplementedError, match="weights_bf16 for int4 group"):
    decode_plan.plan_decode(m, 8192, pw, weights_bf16=True)
  for other in ("mxfp4", "int8", "nf4_g64"):
    with pytest.raises(ValueError, match="weights_bf16 rounds INT4 / UINT4's"):
      decode_plan.plan_decode(m, 8192, weight_shape(other, 8192, 28672), weights_bf16=True,
                              allow_unverified=True)


@pytest.mark.parametrize("group", [32, 128])
@pytest.mark.parametrize("m", [1, 64])
def test_uint4_weights_bf16_lowers(group, m, monkeypatch):
  # UINT4's `weights_bf16`: RN_bf16(q * s - offset), the offsets from shared memory as stored
  # or made from zero-point bytes, chained as INT4's: no x group sums (XLA's reduction before
  # the launch) and no offset * x-sum term; refused with zero_in_weights.
  pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128_asym", block_size=group), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  zp = jax.eval_shape(wm.scales.uint4_zero_points, pw)
  plan = decode_plan.plan_decode(m, 8192, pw, weights_bf16=True, allow_unverified=True)
  assert plan.prescale and plan.chain and not plan.xsum_in
  assert decode_plan.plan_decode(m, 8192, pw, allow_unverified=True).xsum_in
  groups = f"tensor<{decode_plan.xsum_cols(max(8, m))}x{8192 // group}x{group}xf32>"
  calls = record_calls(monkeypatch, [(mosaic_gpu, "_zero_points_f32")])
  for p in (pw, zp):
    calls.clear()
    jax.clear_caches()
    fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, weights_bf16=True,
                                                      allow_unverified=True)
    text = _compat.lower_for("cuda", fn, x_shape(m, 8192), p).as_text()
    assert "body.<locals>.chain" in text and groups not in text
    assert bool(calls) == p.zero_points
  with pytest.raises(ValueError, match="with zero_in_weights"):
    decode_plan.plan_decode(m, 8192, pw, weights_bf16=True, zero_in_weights=True,
                            allow_unverified=True)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_e2m1_halves_order_lowers(name, monkeypatch):
  # E2M1 codes in the halves order (`code_order.HALVES_ORDER`): the decode (M = 1 / 16, by TMA and
  # by plain loads) and the GEMM build their pairs with `decode.e2m1_halves_words`, not the
  # byte-pair order's `e2m1_pair_bits`; refused where a GPU has not checked it.
  import dataclasses
  from pallas_kernels.wo_matmul import registers
  calls = record_calls(monkeypatch, [(registers, "e2m1_halves_words"),
                                      (registers, "e2m1_pair_bits")])
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, weight_shape(name, 8192, 28672))
  halves = dataclasses.replace(pw, halves_order=True)
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  threads = jax.eval_shape(wm.code_order.thread_major, halves)
  for fn, m, p in [(decode, 1, halves), (decode, 16, halves), (decode, 1, threads),
                   (gemm, 1024, halves), (decode, 1, pw)]:
    calls.clear()
    jax.clear_caches()
    _compat.lower_for("cuda", fn, x_shape(m, 8192), p)
    assert set(calls) == {"e2m1_halves_words" if p.halves_order else "e2m1_pair_bits"}, (m, p)
  monkeypatch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(halves)})
  with pytest.raises(NotImplementedError, match="halves"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p), x_shape(1, 8192),
                      halves)


@pytest.mark.parametrize("m", [1, 16, 64])
def test_nf4_slots_lower(m):
  # NF4 slot codes (`scales.nf4_slots`, register order as `repack` stores them on a GPU): the
  # decode kernel's byte-permute decode and bf16 absmax multiply, and the GEMM's decode.
  pw = jax.eval_shape(lambda p: wm.code_order.order_for_wgmma(wm.scales.nf4_slots(p)),
                      weight_shape("nf4_g64", 8192, 28672))
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  for fn, m_, mul in ((decode, m, True), (gemm, 16 * m, False)):
    text = _compat.lower_for("cuda", fn, x_shape(m_, 8192), pw).as_text()
    assert "prmt.b32" in text and ("mul.rn.bf16x2" in text) == mul
    assert "sub.bf16x2" not in text


def test_register_split_fits_two_compute_warpgroups_not_four():
  # setmaxnreg.inc waits for registers the CTA's pool holds: two compute warpgroups (232 a
  # thread) and the memory one (40) take the 64512 a 384-thread CTA launches with; four (112)
  # ask 62464 of 61440 (96 a thread at 640 threads), a launch that never returns
  assert decode_plan.register_split(2) == (64512, 64512)
  assert decode_plan.register_split(4) == (62464, 61440)
  for mem in range(24, 257, 8):  # no memory warpgroup's share makes four fit
    asked, pool = decode_plan.register_split(4, mem)
    assert asked > pool


def test_decode_refuses_compute_warpgroups_that_hang():
  pw = weight_shape("int4_g128", 8192, 28672)
  with pytest.raises(ValueError, match="compute_wgs=4 would hang the GPU.*62464 registers of "
                                       "the 61440"):
    decode_plan.plan_decode(64, 8192, pw, tile_n=256, compute_wgs=4, stream_k=1)
  with pytest.raises(ValueError, match="compute_wgs must be 1 or 2"):
    decode_plan.plan_decode(64, 8192, pw, tile_n=256, compute_wgs=3)
  with pytest.raises(NotImplementedError, match="tile_n a multiple of 128"):
    decode_plan.plan_decode(64, 8192, pw, tile_n=64, compute_wgs=2)


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3_rowwise"])
@pytest.mark.parametrize("m", [32, 64])
def test_decode_per_channel_warp_specialized_lowers(name, m):
  # INT8 / FP8 with two compute warpgroups (session 17): each applies its own rows' channel
  # scales at the flush (with step_wait) or on each partial product (without).
  pw = weight_shape(name, 8192, 28672)
  for cfg in (dict(tile_n=256, gps=1, steps=3), dict(tile_n=128, gps=2, steps=3),
              dict(tile_n=256, gps=1, steps=3, step_wait=False)):
    fn = lambda x, p, c=cfg: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, compute_wgs=2, stream_k=1,
                                                              allow_unverified=True, **c)
    assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()


def test_decode_load_only_diagnostic_lowers():
  pw = weight_shape("int4_g128", 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, load_only=True)
  text = _compat.lower_for("cuda", fn, x_shape(1, 8192), pw).as_text()
  full = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p),
                           x_shape(1, 8192), pw).as_text()
  assert "wgmma" in full and "wgmma" not in text  # the pipeline without the math


@pytest.mark.parametrize("n", [8, 64, 256])
def test_wgmma_rate_benchmark_lowers(n):
  # experiments/bench_wgmma_rate.py: register-A wgmmas against x^T from shared memory, the
  # decode kernel's operands, `chain` of them a wait.
  from experiments import bench_wgmma_rate
  f = bench_wgmma_rate.wgmma_rate_kernel(n, rows=128, chain=8, reps=4, ctas=264)
  text = _compat.lower_for("cuda", f, jax.ShapeDtypeStruct((n, 128), jnp.bfloat16)).as_text()
  assert "mosaic_gpu" in text and text.count("wgmma") >= 8


def test_benchmarks_count_shared_memory_and_ctas_an_sm():
  # bench_kernels records each config's shared memory as Mosaic sizes it: INT4 g128 at M = 1
  # (stream-K, two CTAs an SM) fits two; UINT4 g32 given the same launch does not (its group
  # scales, offsets and x sums: one CTA an SM). Counted again on a second call (no cached
  # lowering hides it).
  from experiments import bench_kernels_common as C
  x = x_shape(1, 8192)
  int4 = weight_shape("int4_g128", 8192, 28672)
  sizes = [C.mosaic_smem_bytes(mosaic_gpu.wo_matmul_mosaic_gpu, x, int4) for _ in range(2)]
  assert sizes[0] == sizes[1] and C.ctas_per_sm(sizes[0]) == 2
  uint4 = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128_asym", block_size=32), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, gps=4, steps=2, stream_k=2,
                                                     allow_unverified=True)
  assert C.ctas_per_sm(C.mosaic_smem_bytes(fn, x, uint4)) == 1


def _captured_pipeline(monkeypatch, fn, *args):
  """Lowers fn(*args) for CUDA and returns the decode kernel's pipeline: (in_specs, the GMEM
  operands' shapes), as `emit_pipeline(_warp_specialized)` received them."""
  plgpu = _compat.plgpu_module()
  got = {}

  def capturing(emit):
    def emit_and_capture(body, **kwargs):
      inner = emit(body, **kwargs)

      def call(*gmem):
        got.update(specs=kwargs["in_specs"], shapes=[tuple(g.shape) for g in gmem])
        return inner(*gmem)
      return call
    return emit_and_capture

  for name in ("emit_pipeline", "emit_pipeline_warp_specialized"):
    monkeypatch.setattr(plgpu, name, capturing(getattr(plgpu, name)))
  _compat.lower_for("cuda", fn, *args)
  return got["specs"], got["shapes"]


@pytest.mark.parametrize("preset,group,m,opts", [
    ("int4_g128", 128, 1, {}),  # stream-K, two CTAs an SM
    ("int4_g128", 32, 16, {}),  # group slices, gps 2
    ("int4_g128_asym", 32, 1, {}),  # UINT4: scales, offsets and x sums a group
    ("int4_g128_asym", 64, 48, {}),  # two compute warpgroups, stream-K one an SM
    ("int4_g128_asym", 128, 1, {"splits": 2}),  # a K split
    ("int8", None, 1, {}),  # per-channel scales
], ids=["int4-sk", "int4-g32", "uint4-g32", "uint4-wide", "uint4-split", "int8"])
def test_decode_pipeline_reads_the_blocks_of_its_schedule(preset, group, m, opts, monkeypatch):
  # Every CTA's every pipeline step, its index maps evaluated: each operand's block lies inside
  # its array, the blocks cover the array, and one step's x, weight, scale, offset and x-sum
  # blocks are the same K range (the groups of the weight's columns) of the same N tile. On
  # the GPU a block out of bounds is clipped by the TMA, silently (a review's class of bug).
  k, n = 2048, 4096
  scheme = mxjax.schemes.get(preset, **({"block_size": group} if group else {}))
  pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(w, scheme, axis=0)),
                      jax.ShapeDtypeStruct((k, n), jnp.float32))
  opts = dict(opts, num_sms=12)  # few SMs: unequal stream-K shares that cross N tiles
  plan = decode_plan.plan_decode(m, k, pw, **opts)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, **opts)
  specs, shapes = _captured_pipeline(monkeypatch, fn, x_shape(m, k), pw)
  names = ["x", "w", "scale"] + (["offset"] + (["xsum"] if plan.xsum_in else []) if plan.asym
                                 else [])
  assert len(specs) == len(shapes) == len(names)
  g = k if plan.per_channel else pw.group
  covered = {name: set() for name in names}
  sched = plan.schedule
  for ids in itertools.product(*map(range, sched.grid)):
    at = dict(zip(sched.grid_names, ids))
    with monkeypatch.context() as mp:
      mp.setattr(jax.lax, "axis_index", lambda name, at=at: at[name])
      for i in range(sched.iters):
        tile, kk, _ = sched.place_at(ids, i)
        rows = {}  # operand -> per-dimension [start, stop) of its block
        for name, spec, shape in zip(names, specs, shapes):
          idx = spec.index_map(i)
          block = spec.block_shape
          rng = [(int(b) * s, (int(b) + 1) * s) for b, s in zip(idx, block)]
          inside = [0 <= a and e <= d for (a, e), d in zip(rng, shape)]
          if name == "x" and plan.tma_pad:  # by design: M < 8 rows fill an 8-row tile
            inside[0] = rng[0] == (0, 8)
          assert all(inside), (name, rng, shape)
          rows[name] = rng
          covered[name].add(tuple(idx))
        k_cols = rows["w"][1]  # the weight's K range (int4 / int8 elements)
        assert rows["w"][0] == (tile * plan.tile_n, (tile + 1) * plan.tile_n)
        assert rows["x"][1] == k_cols
        if plan.per_channel:
          assert rows["scale"][1] == rows["w"][0]
        else:
          groups = (k_cols[0] // g, k_cols[1] // g)
          for name in ("scale", "offset"):
            if name in rows:
              assert rows[name] == [groups, rows["w"][0]], name
          if "xsum" in rows:
            assert rows["xsum"][0] == groups
  for name, spec, shape in zip(names, specs, shapes):
    blocks = [-(-d // s) for d, s in zip(shape, spec.block_shape)]
    assert len(covered[name]) == math.prod(blocks), name  # every block of the array read


@pytest.mark.parametrize("name", ["int4_g128", "int4_g128-block_size32", "int4_g128-block_size64",
                                  "int4_g128_asym", "mxfp4", "nvfp4", "int8", "fp8_e4m3_rowwise"])
@pytest.mark.parametrize("m", [1, 64])
def test_decode_plain_loads_lower(name, m):
  # A `code_order.thread_major` weight: each warpgroup reads its chunks' codes from global memory
  # as 16-byte vectors (two or four a thread a 64 x 128 block, `registers.registers_from_words`),
  # so the pipeline copies x and the scales only (two TMA copies traced a spec); gated until a
  # GPU checks it (`decode_plan.PLAIN_LOADS_VERIFIED`: all of these but INT4 g64, H100,
  # sessions 27-28)
  pw = weight_shape(name, 8192, 28672)
  tm = jax.eval_shape(wm.code_order.thread_major, pw)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True,
                                                     prefetch_codes=False)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x_shape(m, 8192), tm).as_text()
  eight = wm.code_order.code_bits(pw) == 8
  base = pw if eight else jax.eval_shape(wm.code_order.order_for_wgmma, pw)
  counts = [primitive_counts(jax.make_jaxpr(fn)(x_shape(m, 8192), w).jaxpr) for w in (base, tm)]
  assert counts[0]["copy_gmem_to_smem"] - counts[1]["copy_gmem_to_smem"] == 2
  plan = decode_plan.plan_decode(m, 8192, tm, allow_unverified=True)
  assert plan.plain_loads and not decode_plan.plan_decode(m, 8192, pw,
                                                          allow_unverified=True).plain_loads
  chunks = plan.gps * (plan.wg_rows // 64)  # one relabel a chunk, one load a 64-row block
  assert counts[1]["inline_mgpu_p"] - counts[0].get("inline_mgpu_p", 0) == plan.gps
  assert counts[1]["load"] - counts[0]["load"] == chunks - plan.gps
  if decode_plan.case(pw) in decode_plan.PLAIN_LOADS_VERIFIED:
    assert decode_plan.plan_decode(m, 8192, tm).prefetch_codes  # the default with plain loads
  else:
    with pytest.raises(NotImplementedError, match="plain loads"):
      decode_plan.plan_decode(m, 8192, tm)
  # `prefetch_codes` (the default): the first step's codes loaded before the pipeline, each
  # next step's in the step before (carried), none in the step itself
  pf = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True)
  assert "mosaic_gpu" in _compat.lower_for("cuda", pf, x_shape(m, 8192), tm).as_text()
  assert primitive_counts(jax.make_jaxpr(pf)(x_shape(m, 8192), tm).jaxpr)["load"] == (
      counts[1]["load"] + chunks)
  with pytest.raises(ValueError, match="thread_major"):
    decode_plan.plan_decode(m, 8192, pw, prefetch_codes=True, allow_unverified=True)
  if eight:  # 8-bit tensor cores take the WGMMA_8BIT layout, not the plain loads' UPCAST_2X
    with pytest.raises(NotImplementedError, match="leave fp8_x off"):
      decode_plan.plan_decode(m, 8192, tm, fp8_x=True, allow_unverified=True)


@pytest.mark.parametrize("name", ["int4_g128", "int8"])
def test_decode_prefetch_steps_ahead(name):
  # `prefetch_codes=d`: the first d steps' codes loaded before the pipeline, each step's loads
  # d steps ahead of their decode (one set a step, as with d = 1); more than two steps ahead is
  # gated until a GPU checks it, and a carry past `PREFETCH_MAX_REGISTERS` is refused
  tm = jax.eval_shape(wm.code_order.thread_major, weight_shape(name, 8192, 28672))
  bits = wm.code_order.code_bits(tm)
  loads = {}
  for d in (0, 1, 2):
    fn = lambda x, p, d=d: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, prefetch_codes=d, gps=2,
                                                            allow_unverified=True)
    assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x_shape(1, 8192), tm).as_text()
    loads[d] = primitive_counts(jax.make_jaxpr(fn)(x_shape(1, 8192), tm).jaxpr)["load"]
  plan = decode_plan.plan_decode(1, 8192, tm, gps=2, prefetch_codes=2, allow_unverified=True)
  chunks = plan.gps * (plan.wg_rows // 64)
  assert plan.prefetch_codes == 2 and loads[2] - loads[1] == loads[1] - loads[0] == chunks
  assert decode_plan.plan_decode(1, 8192, tm, prefetch_codes=True).prefetch_codes == 1
  assert decode_plan.plan_decode(1, 8192, tm, gps=2, prefetch_codes=2).prefetch_codes == 2
  with pytest.raises(NotImplementedError, match="plain loads 3 steps ahead"):
    decode_plan.plan_decode(1, 8192, tm, gps=2, prefetch_codes=3)
  # registers a thread: a 64 x 128 block is 8 (4-bit) or 16 (8-bit) words over 128 threads
  assert decode_plan.prefetch_registers(1, 4, 128, 4) == 64  # INT4's default launch
  per = decode_plan.prefetch_registers(1, plan.gps, plan.wg_rows, bits)
  assert per == plan.gps * (plan.wg_rows // 64) * (8 if bits == 4 else 16)
  too_many = decode_plan.PREFETCH_MAX_REGISTERS // per + 1
  with pytest.raises(ValueError, match="registers a thread of codes"):
    decode_plan.plan_decode(1, 8192, tm, gps=2, prefetch_codes=too_many, allow_unverified=True)
  for bad in (-1, 1.5):
    with pytest.raises(ValueError, match="count of steps ahead"):
      decode_plan.plan_decode(1, 8192, tm, prefetch_codes=bad)


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3_rowwise", "mxfp4", "int4_g128"])
@pytest.mark.parametrize("m", [1, 4, 8])
def test_decode_fp8_x_fused_sum_lowers(name, m, monkeypatch):
  # 8-bit tensor cores with `fused_sum` (session 24): the kernel adds each token's hi and lo
  # columns in registers (`registers.pair_sums`), scales them by out_scale s_x (a vector read
  # from global memory) and writes y (M, N) itself, no XLA kernel after it; gated until a GPU
  # checks it (INT8 and FP8: session 25, on an H100; MXFP4: session 26, on an H200).
  pw = weight_shape(name, 8192, 28672)
  seen = []
  real = mosaic_gpu.pair_sums
  monkeypatch.setattr(mosaic_gpu, "pair_sums", lambda a: seen.append(a.shape) or real(a))
  launch = dict(tile_n=128, gps=2, steps=3, stream_k=2, fp8_x=True)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fused_sum=True, allow_unverified=True,
                                                     **launch)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x_shape(m, 8192), pw).as_text()
  assert seen == [(128, max(8, 2 * m))]  # the tile's rows, 2 M columns padded to 8
  assert jax.eval_shape(fn, x_shape(m, 8192), pw).shape == (m, 28672)
  checked = name in ("int8", "fp8_e4m3_rowwise", "mxfp4")  # `FP8_X_FUSED_SUM_VERIFIED`
  if checked:
    assert decode_plan.plan_decode(m, 8192, pw, fused_sum=True, **launch).fused_sum
  else:
    with pytest.raises(NotImplementedError, match="fused_sum with fp8_x"):
      decode_plan.plan_decode(m, 8192, pw, fused_sum=True, **launch)
  # on the H200, where fp8_x is a default: the fused sum asked for alone keeps it where a GPU
  # checked the pair, and leaves it off elsewhere
  from pallas_kernels.wo_matmul import configs  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(configs, "device_kind", lambda: "NVIDIA H200")
  default = name != "int4_g128" and m <= (8 if name.startswith("fp8") else 4)
  assert decode_plan.plan_decode(m, 8192, pw, stream_k=2).fp8_x == default
  assert decode_plan.plan_decode(m, 8192, pw, fused_sum=True, stream_k=2,
                                 allow_unverified=True).fp8_x == (default and checked)
