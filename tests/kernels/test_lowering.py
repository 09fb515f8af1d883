"""Every GPU and TPU kernel lowers for its platform, on this CPU (`_compat.lower_for`).

The CPU interpreter cannot run Mosaic GPU kernels (TMA, wgmma), and TPU interpret mode skips
Mosaic TPU's block-shape rules, so without these tests a kernel's first lowering happens on the
hardware. Lowering runs Pallas' whole Mosaic GPU / TPU lowering (register layouts, casts,
operand shapes, swizzles, TPU tiling rules) on shapes only, at the benchmark's sizes; it does
not run ptxas or libtpu, so it cannot say a kernel compiles or is correct: the GPU benchmark
checks that (docs/kernels.md).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import pytest

import mxjax
from pallas_kernels import _compat
from pallas_kernels import _ptx
from pallas_kernels import wo_matmul as wm
from pallas_kernels.quantize import api as qapi
from pallas_kernels.quantize import mosaic_gpu as mosaic_gpu_quantize
from pallas_kernels.quantize.schemes import SCHEMES
from pallas_kernels.wo_matmul import decode_plan
from pallas_kernels.wo_matmul import mosaic_gpu
from pallas_kernels.wo_matmul import mosaic_gpu_gemm
from tests.kernels.jaxprs import primitive_counts
from tests.kernels.wo_formats import FORMATS as WO_FORMATS
from tests.kernels.wo_formats import IDS

FORMATS = dict(zip(IDS, WO_FORMATS))  # test id -> (preset, overrides)


def _weight_shape(name, k, n):
  """The PackedWeight of a (K, N) weight in format `name`, as shapes only."""
  preset, overrides = FORMATS[name]
  return jax.eval_shape(lambda w: wm.repack_qarray(
      mxjax.quantize(w, mxjax.schemes.get(preset, **overrides), axis=0)),
      jax.ShapeDtypeStruct((k, n), jnp.float32))


def _x(m, k):
  return jax.ShapeDtypeStruct((m, k), jnp.bfloat16)


def _record_calls(monkeypatch, targets) -> list[str]:
  """The names of `targets`' functions ((module, name) pairs), appended each time one is
  called while the test lowers a kernel (the functions still run)."""
  calls = []
  for mod, fn_name in targets:
    real = getattr(mod, fn_name)
    monkeypatch.setattr(mod, fn_name,
                        lambda *a, real=real, fn_name=fn_name: calls.append(fn_name) or real(*a))
  return calls


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("m", [1, 16, 64])
def test_decode_kernel_lowers_for_cuda(name, m):
  # The defaults the H100 sweeps chose, at the benchmark's K=8192, N=28672.
  pw = _weight_shape(name, 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("m", [1, 64])
def test_decode_step_wait_lowers(name, m):
  # `step_wait`: prescaled FP4 / NF4 and per-channel weights chain a step's chunks into the
  # carried accumulator (`chain`, a `pl.run_state`) and wait once; group-scaled ones read chunk
  # j's accumulators after issuing chunk j + 1's (`chunk`, nested scopes). The bf16 path:
  # `fp8_x` (FP8 / MXFP4's default at M <= 8) never chains.
  pw = _weight_shape(name, 8192, 28672)
  chained = name.startswith(("mxfp4", "nvfp4", "nf4", "int8", "fp8"))
  for step_wait in (True, False):
    fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True,
                                                      step_wait=step_wait, fp8_x=False)
    text = _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()
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
    assert f"tensor<{rows}x8192xbf16>" in _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()
  copies = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, group_slices=False)
  text = _compat.lower_for("cuda", copies, _x(m, 8192), pw).as_text()
  assert f"tensor<{rows * 128 // group}x8192xbf16>" in text
  with pytest.raises(ValueError, match="group_slices is for INT4 / UINT4 groups of 32 or 64"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, group_slices=True), _x(m, 8192), _weight_shape("int4_g128", 8192, 28672))


@pytest.mark.parametrize("name", ["int4_g128", "int8"])
@pytest.mark.parametrize("m", [1, 5, 9])
def test_decode_tma_pad_lowers(name, m):
  # `tma_pad`: at M < 8 the kernel takes x as it is, (M, K), with no XLA pad before it (the
  # default); at M = 9 it pads to 16 as before (Mosaic's TMA tiling takes a row count under 8
  # or a multiple of 8). tma_pad=False keeps the pad.
  pw = _weight_shape(name, 8192, 28672)
  lower = lambda **o: _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, **o), _x(m, 8192), pw).as_text()
  text = lower()
  assert ("stablehlo.pad" not in text) == (m < 8)
  assert (m < 8) or "tensor<16x8192xbf16>" in text
  assert "stablehlo.pad" in lower(tma_pad=False)


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("m,cfg", [(1, {"stream_k": 2}), (13, {"stream_k": 2}),
                                   (64, {"stream_k": 1})])
def test_decode_fused_sum_lowers(name, m, cfg):
  # `fused_sum`: the kernel writes y (M, N) itself, its slot-0 CTAs waiting on semaphores for
  # the tiles' other partial sums: no XLA reduction, transpose, cast or (NVFP4) tensor-scale
  # multiply after the kernel.
  pw = _weight_shape(name, 8192, 28672)
  text = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, allow_unverified=True, fused_sum=True, **cfg), _x(m, 8192), pw).as_text()
  main = text[text.index("func.func public @main"):].splitlines()
  at = next(i for i, ln in enumerate(main) if "mosaic_gpu" in ln)
  assert "semaphore_wait" in main[at] and "semaphore_signal" in main[at]
  assert "fence.proxy.async.global" in main[at]  # TMA writes / reads against the semaphore
  assert f"tensor<{m}x28672xbf16>" in main[at]  # y, as the kernel writes it
  end = main.index("  }")  # main's body: what XLA runs after the kernel (x's pad and UINT4's
  after = "\n".join(main[at + 1:end])  # group sums come before it)
  assert not any(op in after for op in ("stablehlo.reduce", "stablehlo.transpose",
                                         "stablehlo.multiply", "stablehlo.convert"))


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3_rowwise"])
def test_decode_per_channel_wgs_on_splits_lowers(name):
  # Two compute warpgroups with one N tile a CTA on a per-channel weight: the channel scales'
  # block is the same every step, and Pallas's warp-specialized pipeline refuses an input whose
  # index map ignores the step unless `mosaic_gpu.channel_block` reads it; one slot a tile, so
  # the CTA writes y with no semaphore.
  pw = _weight_shape(name, 8192, 28672)
  text = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, splits=1, fused_sum=True, compute_wgs=2, stream_k=None), _x(32, 8192), pw).as_text()
  main = text[text.index("func.func public @main"):].splitlines()
  kernel = next(ln for ln in main if "mosaic_gpu" in ln)
  assert "semaphore_wait" not in kernel and "tensor<32x28672xbf16>" in kernel


@pytest.mark.parametrize("m", [1, 3, 64])
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
  pws = [_weight_shape(name, 8192, 28672)]
  if name == "int8" and cfg:
    cfg = dict(cfg, tile_n=128)  # (INT8's default tile at M <= 16 has 64 rows)
  if name not in ("fp8_e4m3_rowwise", "int8"):  # (bytes have no register order)
    pws.append(jax.eval_shape(wm.code_order.order_for_wgmma, pws[0]))
  if name == "mxfp4":
    pws.append(jax.eval_shape(wm.scales.fp4_scales_bf16, pws[-1]))
  for pw in pws:
    text = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, allow_unverified=True, fp8_x=True, **cfg), _x(m, 8192), pw).as_text()
    main = text[text.index("func.func public @main"):].splitlines()
    # the decode: the last Mosaic kernel (INT8 / FP8 split x in one before it, `x_split.py`)
    at = max(i for i, ln in enumerate(main) if "mosaic_gpu" in ln)
    mma, x8 = ("s32.s8.s8", "i8") if name == "int8" else ("f32.e4m3.e4m3", "f8E4M3FN")
    assert f"m64n{max(8, 2 * m)}k32.{mma}" in main[at]
    assert f"tensor<{2 * m}x8192x{x8}>" in main[at]  # padded to 8 rows or not: 2 m


def test_decode_fused_sum_takes_two_warpgroups_one_slot_and_f32():
  pw = _weight_shape("int4_g128", 8192, 28672)
  for m, cfg in ((16, {"stream_k": 1, "tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 2}),
                 (16, {"splits": 1, "tile_n": 64}),  # one slot a tile: any schedule
                 (1, {"splits": 1}),
                 (16, {"stream_k": 1, "out_dtype": jnp.float32})):  # y in f32: the whole buffer
    text = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, allow_unverified=True, fused_sum=True, **cfg), _x(m, 8192), pw).as_text()
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
    text = _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()
    # x in groups, to be summed (its rows padded to the sums' columns first)
    groups = f"tensor<{decode_plan.xsum_cols(max(8, m))}x{8192 // group}x{group}xf32>"
    assert groups not in text and "uint4_zero_bf16" in text
  sums = _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, _x(m, 8192), pw).as_text()
  assert groups in sums and "uint4_zero_bf16" not in sums
  with pytest.raises(ValueError, match="zero_in_weights is for UINT4"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, zero_in_weights=True), _x(m, 8192),
        _weight_shape("int4_g128", 8192, 28672))


@pytest.mark.parametrize("m", [33, 40, 48, 56])
def test_decode_uint4_lowers_at_every_m_above_32(m):
  # UINT4's x group sums (f32, a row a group) go in rows of a multiple of 32 columns: at two
  # groups a step, 40 or 56 columns made TMA copies of 320 / 448 bytes, which Mosaic rejects.
  pw = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128_asym"), axis=0)), jax.ShapeDtypeStruct((8192, 28672),
                                                                          jnp.float32))
  text = _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, _x(m, 8192), pw).as_text()
  assert "tensor<64x64xf32>" in text  # (G, 64) x sums, M = 33 .. 64 padded to 64 columns


@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("m", [1, 16, 64])
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
    text = _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()
    call = next(ln for ln in text.splitlines() if "custom_call" in ln)
    assert operands in call and "_zero_points_f32" in text  # scales, then the zero points
  _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, _x(m, 8192), pw)  # ungated


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
    call = next(ln for ln in _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text().splitlines()
                if "custom_call" in ln)
    assert f"tensor<{rows}x28672xbf16>" in call
  _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, _x(1, 8192), pw)  # checked: ungated
  g64 = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128", block_size=64, scale="bf16"), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  with pytest.raises(NotImplementedError, match=r"\(bf16 scales\) has not matched"):
    _compat.lower_for("cuda", mosaic_gpu.wo_matmul_mosaic_gpu, _x(1, 8192), g64)
  gemm = _compat.lower_for("cuda", mosaic_gpu_gemm.wo_gemm_mosaic_gpu, _x(1024, 8192), pw)
  assert f"tensor<{rows}x28672xf32>" in next(ln for ln in gemm.as_text().splitlines()
                                            if "custom_call" in ln)


@pytest.mark.parametrize("name", ["int4_g128-block_size32", "int4_g128-block_size64"])
@pytest.mark.parametrize("m", [1, 16])
def test_decode_chunk_wait_lowers(name, m):
  # `chunk_wait`: a chunk's group wgmmas issued into their own accumulators, then one wait
  # (INT4's default at M <= 16, a different kernel from chunk_wait=False); refused where a
  # chunk has one group or with step_wait.
  pw = _weight_shape(name, 8192, 28672)
  lower = lambda **o: _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
      x, p, step_wait=False, **o), _x(m, 8192), pw).as_text()
  assert lower(chunk_wait=True) == lower() != lower(chunk_wait=False)
  with pytest.raises(ValueError, match="chunk_wait waits once a chunk"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, chunk_wait=True), _x(m, 8192),
        _weight_shape("int4_g128", 8192, 28672))


@pytest.mark.parametrize("m", [1, 64])
def test_nf4_byte_permute_lookup_lowers(m):
  # The decode kernel's and the GEMM's NF4 lookup through inline PTX prmt (plgpu.inline_mgpu).
  pw = _weight_shape("nf4_g64", 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, nf4_lut=True)
  assert "prmt.b32" in _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, nf4_lut=True, allow_unverified=True)
  assert "prmt.b32" in _compat.lower_for("cuda", fn, _x(1024, 8192), pw).as_text()


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("m", [1, 64])
def test_e2m1_bit_decode_lowers(name, m):
  # The decode kernel's and the GEMM's E2M1 decode (`registers.e2m1_bf16`): integer ops on the
  # int4 registers' 32-bit words and PTX mul.rn.bf16x2, not Mosaic's int4 -> bf16 cast (whose PTX
  # ends in sub.bf16x2). (MXFP4's default at M <= 8 is `fp8_x`, E2M1 bits into E4M3.)
  pw = _weight_shape(name, 8192, 28672)
  for fn, m_ in ((lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False), m),
                 (lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True),
                  16 * m)):
    text = _compat.lower_for("cuda", fn, _x(m_, 8192), pw).as_text()
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
  pw = _weight_shape(name, 8192, 28672)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True,
                                                        fp8_x=False)
  for fn, m in ((decode, 1), (decode, 64), (gemm, 1024)):
    ordered = lambda x, p, fn=fn: fn(x, wm.code_order.order_for_wgmma(p))
    for f, relayouts in ((fn, True), (ordered, False)):
      jax.clear_caches()  # lower afresh: a cached trace would make no casts at all
      casts.clear()
      _compat.lower_for("cuda", f, _x(m, 8192), pw)
      assert (plgpu.Layout.WGMMA_UPCAST_2X in casts) == relayouts


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("m", [1, 64])
def test_fp4_scale_bytes_lower(name, m):
  pw = _weight_shape(name, 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp4_scale_bytes=True)
  _compat.lower_for("cuda", fn, _x(m, 8192), pw)
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, fp4_scale_bytes=True,
                                                         allow_unverified=True)
  _compat.lower_for("cuda", fn, _x(1024, 8192), pw)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_scales_bf16_lower(name, monkeypatch):
  # FP4 scales stored as bf16 multipliers (`scales.fp4_scales_bf16`): the decode kernel (M = 1,
  # and M = 16 / 64, NVFP4's two-warpgroup config from M = 9) loads them as they are, with no
  # scale-byte decode (`scale_bytes_f32`, which the stored bytes take); the GEMM takes the stored
  # bytes back.
  decodes, scale_bytes_f32 = [], mosaic_gpu.scale_bytes_f32
  monkeypatch.setattr(mosaic_gpu, "scale_bytes_f32",
                      lambda *a: decodes.append(1) or scale_bytes_f32(*a))
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, _weight_shape(name, 8192, 28672))
  assert pw.scale.dtype == jnp.bfloat16
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False)  # the bf16 path
  for m in (1, 16, 64):
    for p, decoded in ((pw, False), (jax.eval_shape(wm.scales.fp4_scales_stored, pw), True)):
      jax.clear_caches()  # lower afresh: a cached trace would call nothing
      decodes.clear()
      text = _compat.lower_for("cuda", decode, _x(m, 8192), p).as_text()
      assert "mul.rn.bf16x2" in text and bool(decodes) == decoded
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  _compat.lower_for("cuda", gemm, _x(1024, 8192), pw)


def test_mxfp4_folded_multipliers_lower():
  # MXFP4's multipliers folded with the E2M1 decode's 2^126 (`fp4_scales_bf16(mx_fold=True)`):
  # the decode (M = 1 / 16 / 64) and the GEMM scale the codes in the decode's own multiply,
  # with no bf16 multiply after it, where unfolded multipliers take one; refused unverified,
  # and on FP8 tensor cores (`fp8_x` scales the f32 sums).
  import dataclasses
  import re
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, _weight_shape("mxfp4", 8192, 28672))
  fold = dataclasses.replace(pw, mx_fold=True)
  bf16_muls = lambda text: len(re.findall(r"arith.mulf.*bf16", text))
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  for fn, m in [(decode, 1), (decode, 16), (decode, 64), (gemm, 1024)]:
    counts = []
    for p in (pw, fold):
      jax.clear_caches()
      text = _compat.lower_for("cuda", fn, _x(m, 8192), p).as_text()
      counts.append((text.count("mul.rn.bf16x2"), bf16_muls(text)))
    assert counts == [(1, 1), (1, 0)], (m, counts)
  with pytest.MonkeyPatch.context() as patch:  # (checked on an H100 since session 37)
    patch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(fold)})
    with pytest.raises(NotImplementedError, match=r"mxfp4 group 32 \(mx fold\)"):
      _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p),
                        _x(1, 8192), fold)
  with pytest.raises(ValueError, match="fp8_x scales each group"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(
        x, p, fp8_x=True, allow_unverified=True), _x(1, 8192), fold)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_fp4_byte_multipliers_lower(name, monkeypatch):
  # FP4 scale bytes marked as each their multiplier up to one IMAD
  # (`scales.fp4_byte_multipliers`): the decode (M = 1 / 16 / 64) and the GEMM make the
  # multiplier pairs from the bytes (`registers._byte_pair_word`) and decode no scale byte in
  # float32 (`scale_bytes_f32`), which the unmarked bytes take; refused where a GPU has not
  # checked it (the decode on an H100 in session 39, the GEMM not yet).
  import dataclasses
  from pallas_kernels.wo_matmul import registers
  calls = _record_calls(monkeypatch, [(mosaic_gpu, "scale_bytes_f32"),
                                      (mosaic_gpu_gemm, "scale_bytes_f32"),
                                      (registers, "_byte_pair_word")])
  pw = jax.eval_shape(wm.scales.fp4_scales_stored, _weight_shape(name, 8192, 28672))
  marked = dataclasses.replace(pw, byte_multipliers=True)
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  for fn, m in [(decode, 1), (decode, 16), (decode, 64), (gemm, 1024)]:
    for p in (marked, pw):
      calls.clear()
      jax.clear_caches()
      _compat.lower_for("cuda", fn, _x(m, 8192), p)
      want = "_byte_pair_word" if p.byte_multipliers else "scale_bytes_f32"
      assert set(calls) == {want}, (m, p.byte_multipliers, set(calls))
  # the decode checked on an H100 (session 39), the GEMM not yet
  _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False),
                    _x(1, 8192), marked)
  monkeypatch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(marked)})
  for fn, m in ((lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False), 1),
                (lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p), 1024)):
    with pytest.raises(NotImplementedError, match=f"{name} group .. .*byte multipliers"):
      _compat.lower_for("cuda", fn, _x(m, 8192), marked)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_amax_scales_lower(group, monkeypatch):
  # INT4 scales stored as bf16 amaxes (`scales.int4_amax_scales`): the decode (M = 1 / 16 / 64,
  # on 8-bit tensor cores, `fp8_x`, and by plain loads) computes each scale from its amax in
  # the kernel (`scales.amax_scale_f32`, by `fma.rn.f32`), where float32 scales take none; the
  # GEMM rebuilds them too (`amax_in_kernel`, session 40) where a GPU has checked it, else
  # takes the float32 scales XLA computes (`int4_scales_f32`); the decode is refused where a
  # GPU has not checked it (an H100 has since session 39).
  import dataclasses
  calls = _record_calls(monkeypatch, [(mosaic_gpu, "amax_scale_f32"),
                                      (mosaic_gpu_gemm, "amax_scale_f32")])
  pw = _weight_shape(f"int4_g128-block_size{group}" if group != 128 else "int4_g128", 8192,
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
      text = _compat.lower_for("cuda", lambda x, p: fn(x, p, **opts), _x(m, 8192), p).as_text()
      assert bool(calls) == p.amax_scales and ("fma.rn.f32" in text) == p.amax_scales, (m, opts)
  # the GEMM rebuilds the amaxes itself (checked on an H100 for g32 / g64 / g128, session 40)
  for p, opts, rebuilt in [(marked, {}, True), (marked, {"amax_in_kernel": False}, False),
                           (pw, {}, False)]:
    calls.clear()
    jax.clear_caches()
    text = _compat.lower_for("cuda", lambda x, p: gemm(x, p, **opts), _x(1024, 8192),
                             p).as_text()
    assert bool(calls) == rebuilt and ("fma.rn.f32" in text) == rebuilt, (p.amax_scales, opts)
  with pytest.raises(ValueError, match="not"):
    _compat.lower_for("cuda", lambda x, p: gemm(x, p, amax_in_kernel=True), _x(1024, 8192), pw)
  # where no GPU has checked it, XLA widens them, and asking for it is refused
  monkeypatch.setattr(mosaic_gpu_gemm, "VERIFIED",
                      mosaic_gpu_gemm.VERIFIED - {decode_plan.case(marked)})
  calls.clear()
  jax.clear_caches()
  _compat.lower_for("cuda", gemm, _x(1024, 8192), marked)
  assert not calls
  with pytest.raises(NotImplementedError, match=f"int4 group {group} .amax scales."):
    _compat.lower_for("cuda", lambda x, p: gemm(x, p, amax_in_kernel=True), _x(1024, 8192),
                      marked)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # what `wo_matmul` picks there
  assert wm.api.default_implementation(_x(1024, 8192), marked) == "mosaic_gpu_gemm"
  assert wm.api.default_implementation(_x(1, 8192), marked) == "mosaic_gpu"  # (session 39)
  monkeypatch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(marked)})
  assert wm.api.default_implementation(_x(1, 8192), marked) == "xla"
  assert wm.api.default_implementation(_x(1, 8192), pw) == "mosaic_gpu"
  with pytest.raises(NotImplementedError, match=f"int4 group {group} .amax scales."):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p), _x(1, 8192),
                      marked)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_e2m1_halves_order_lowers(name, monkeypatch):
  # E2M1 codes in the halves order (`code_order.HALVES_ORDER`): the decode (M = 1 / 16, by TMA and
  # by plain loads) and the GEMM build their pairs with `decode.e2m1_halves_words`, not the
  # byte-pair order's `e2m1_pair_bits`; refused where a GPU has not checked it.
  import dataclasses
  from pallas_kernels.wo_matmul import registers
  calls = _record_calls(monkeypatch, [(registers, "e2m1_halves_words"),
                                      (registers, "e2m1_pair_bits")])
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, _weight_shape(name, 8192, 28672))
  halves = dataclasses.replace(pw, halves_order=True)
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fp8_x=False, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  threads = jax.eval_shape(wm.code_order.thread_major, halves)
  for fn, m, p in [(decode, 1, halves), (decode, 16, halves), (decode, 1, threads),
                   (gemm, 1024, halves), (decode, 1, pw)]:
    calls.clear()
    jax.clear_caches()
    _compat.lower_for("cuda", fn, _x(m, 8192), p)
    assert set(calls) == {"e2m1_halves_words" if p.halves_order else "e2m1_pair_bits"}, (m, p)
  monkeypatch.setattr(decode_plan, "VERIFIED", decode_plan.VERIFIED - {decode_plan.case(halves)})
  with pytest.raises(NotImplementedError, match="halves"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p), _x(1, 8192),
                      halves)


def test_gemm_nvfp4_tensor_scale_out_lowers(monkeypatch):
  # NVFP4's s_t on the GEMM's float32 sum (`tensor_scale_out`): the weights are q * s_b in bf16
  # (no float32 widening of the multipliers) and s_t goes to the kernel as a scalar operand,
  # where without it a broadcast (1, N) row is read every K step. The default since an H100
  # checked it (session 22); the gate still refuses it where a GPU has not.
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, _weight_shape("nvfp4", 8192, 28672))
  widened, real = [], mosaic_gpu_gemm.nvfp4_multiplier_f32
  monkeypatch.setattr(mosaic_gpu_gemm, "nvfp4_multiplier_f32",
                      lambda *a: widened.append(1) or real(*a))

  def lower(**options):  # the module, and whether the multipliers were widened
    widened.clear()
    jax.clear_caches()  # lower afresh: a cached trace would call nothing
    fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **options)
    return _compat.lower_for("cuda", fn, _x(1024, 8192), pw).as_text(), bool(widened)

  out, out_widened = lower(tensor_scale_out=True)
  rows, rows_widened = lower(tensor_scale_out=False)
  assert not out_widened and rows_widened
  assert "broadcast_in_dim" in rows and "broadcast_in_dim" not in out  # s_t's (1, N) row
  assert lower()[0] == out  # verified: the default
  with pytest.raises(ValueError, match="NVFP4 read from its bf16 multipliers"):
    lower(tensor_scale_out=True, scale_multipliers=False, allow_unverified=True)
  monkeypatch.setattr(mosaic_gpu_gemm, "TENSOR_SCALE_OUT_VERIFIED", False)
  assert lower()[0] == rows  # unverified: off by default, and asked for, refused
  with pytest.raises(NotImplementedError, match="tensor_scale_out has not matched"):
    lower(tensor_scale_out=True)


def test_gemm_int8_bf16_lowers(monkeypatch):
  # INT8's codes to float32 through Mosaic's int8 -> bf16 cast (`int8_bf16`: a byte permute,
  # two ANDs and a bf16x2 subtract a pair) in place of one integer-to-float conversion a code.
  # Written without a GPU (session 31), refused unasked-for until a GPU matched it
  # (`INT8_BF16_VERIFIED`: H100, session 32), the default since.
  pw = _weight_shape("int8", 8192, 28672)

  def lower(**options):
    jax.clear_caches()  # lower afresh
    fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **options)
    return _compat.lower_for("cuda", fn, _x(1024, 8192), pw).as_text()

  via_bf16 = lower(int8_bf16=True)
  direct = lower(int8_bf16=False)
  assert "sub.bf16x2" in via_bf16 and "sitofp" not in via_bf16
  assert "sitofp" in direct and "sub.bf16x2" not in direct
  assert mosaic_gpu_gemm.INT8_BF16_VERIFIED and lower() == via_bf16  # verified: the default
  with pytest.raises(ValueError, match="int8_bf16 converts INT8 codes"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
        x, p, int8_bf16=True, allow_unverified=True), _x(1024, 8192),
        _weight_shape("fp8_e4m3_rowwise", 8192, 28672))
  monkeypatch.setattr(mosaic_gpu_gemm, "INT8_BF16_VERIFIED", False)
  with pytest.raises(NotImplementedError, match="int8_bf16 has not matched"):
    lower(int8_bf16=True)
  assert lower() == direct  # unverified: off


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_gemm_scale_multipliers_lower(name, monkeypatch):
  # The GEMM reading FP4 bf16 multipliers as they are (`scale_multipliers`): the scales (the
  # jitted function's third argument) go to the kernel with no XLA op on them, where without it
  # an XLA pass turns them back into bytes. Gated until checked on a GPU; the default once its
  # format is in MULTIPLIERS_VERIFIED (both, since session 20).
  assert wm.WeightFormat(name) in mosaic_gpu_gemm.MULTIPLIERS_VERIFIED
  monkeypatch.setattr(mosaic_gpu_gemm, "MULTIPLIERS_VERIFIED", frozenset())  # as if unchecked
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, _weight_shape(name, 8192, 28672))

  def operands(**options):  # the kernel call's operands, and the module
    fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **options)
    text = _compat.lower_for("cuda", fn, _x(1024, 8192), pw).as_text()
    call = next(ln for ln in text.splitlines() if "custom_call" in ln)
    return call[:call.index("{")], text

  outer = lambda text: "\n".join(ln for ln in text.splitlines() if "custom_call" not in ln)
  direct, text = operands(scale_multipliers=True, allow_unverified=True)
  assert "%arg2" in direct and "convert" not in outer(text)
  back, text = operands(allow_unverified=True)  # turned back into bytes by XLA first
  assert "%arg2" not in back and "convert" in outer(text)
  with pytest.raises(NotImplementedError, match="scale_multipliers has not matched"):
    operands(scale_multipliers=True)
  with pytest.raises(ValueError, match="pick one"):
    operands(scale_multipliers=True, fp4_scale_bytes=True, allow_unverified=True)
  with pytest.raises(ValueError, match="stored as bf16 multipliers"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
        x, p, scale_multipliers=True, allow_unverified=True), _x(1024, 8192),
        _weight_shape(name, 8192, 28672))
  monkeypatch.setattr(mosaic_gpu_gemm, "MULTIPLIERS_VERIFIED", frozenset({pw.fmt}))
  assert operands()[0] == direct  # verified: the default, ungated
  # MXFP4's multipliers multiply the bf16 E2M1 values (exact); NVFP4's are widened to f32
  # unless s_t goes on the sum (`tensor_scale_out`, NVFP4's default since session 22)
  widened, real = [], mosaic_gpu_gemm.nvfp4_multiplier_f32
  monkeypatch.setattr(mosaic_gpu_gemm, "nvfp4_multiplier_f32",
                      lambda *a: widened.append(1) or real(*a))
  jax.clear_caches()  # trace afresh
  operands(tensor_scale_out=False)
  assert bool(widened) == (name == "nvfp4")


@pytest.mark.parametrize("m", [1, 16, 64])
def test_nf4_slots_lower(m):
  # NF4 slot codes (`scales.nf4_slots`, register order as `repack` stores them on a GPU): the
  # decode kernel's byte-permute decode and bf16 absmax multiply, and the GEMM's decode.
  pw = jax.eval_shape(lambda p: wm.code_order.order_for_wgmma(wm.scales.nf4_slots(p)),
                      _weight_shape("nf4_g64", 8192, 28672))
  decode = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True)
  gemm = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True)
  for fn, m_, mul in ((decode, m, True), (gemm, 16 * m, False)):
    text = _compat.lower_for("cuda", fn, _x(m_, 8192), pw).as_text()
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
  pw = _weight_shape("int4_g128", 8192, 28672)
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
  pw = _weight_shape(name, 8192, 28672)
  for cfg in (dict(tile_n=256, gps=1, steps=3), dict(tile_n=128, gps=2, steps=3),
              dict(tile_n=256, gps=1, steps=3, step_wait=False)):
    fn = lambda x, p, c=cfg: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, compute_wgs=2, stream_k=1,
                                                              allow_unverified=True, **c)
    assert "mosaic_gpu" in _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()


def test_decode_load_only_diagnostic_lowers():
  pw = _weight_shape("int4_g128", 8192, 28672)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, load_only=True)
  text = _compat.lower_for("cuda", fn, _x(1, 8192), pw).as_text()
  full = _compat.lower_for("cuda", lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p),
                           _x(1, 8192), pw).as_text()
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
  x = _x(1, 8192)
  int4 = _weight_shape("int4_g128", 8192, 28672)
  sizes = [C.mosaic_smem_bytes(mosaic_gpu.wo_matmul_mosaic_gpu, x, int4) for _ in range(2)]
  assert sizes[0] == sizes[1] and C.ctas_per_sm(sizes[0]) == 2
  uint4 = jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get("int4_g128_asym", block_size=32), axis=0)),
      jax.ShapeDtypeStruct((8192, 28672), jnp.float32))
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, gps=4, steps=2, stream_k=2,
                                                     allow_unverified=True)
  assert C.ctas_per_sm(C.mosaic_smem_bytes(fn, x, uint4)) == 1


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("cfg", [{}, {"tile_k": 256, "tile_m": 128}, {"tile_m": 192, "steps": 3}],
                         ids=["default", "k256", "m192"])
def test_gemm_kernel_lowers_for_cuda(name, cfg):
  pw = _weight_shape(name, 8192, 28672)
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True, **cfg)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, _x(1024, 8192), pw).as_text()


def test_gemm_kernel_lowers_with_tile_k_64_and_f32_out():
  pw = _weight_shape("int4_g128", 4096, 4096)
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True, tile_k=64,
                                                         out_dtype=jnp.float32)
  _compat.lower_for("cuda", fn, _x(200, 4096), pw)  # M = 200: padded to 256


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_tpu_wo_matmul_lowers_for_tpu(name):
  pw = _weight_shape(name, 8192, 4096)
  fn = lambda x, p: wm.wo_matmul(x, p, implementation="mosaic_tpu")
  assert "tpu_custom_call" in _compat.lower_for("tpu", fn, _x(8, 8192), pw).as_text()


@pytest.mark.parametrize("name", ["int4_g128", "nf4_g64", "mxfp4"])
def test_tpu_wo_matmul_lowers_at_prefill_m(name):
  # M = 1000: x taken 512 rows a step (padded to 1024), the (M tile, N tile, K step) grid.
  pw = _weight_shape(name, 8192, 4096)
  fn = lambda x, p: wm.wo_matmul(x, p, implementation="mosaic_tpu")
  assert "tpu_custom_call" in _compat.lower_for("tpu", fn, _x(1000, 8192), pw).as_text()


@pytest.mark.parametrize("transpose", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_quantize_kernels_lower(scheme, transpose):
  x = _x(4096, 4096)
  tpu = lambda x: qapi.quantize(x, scheme, implementation="mosaic_tpu", transpose=transpose)
  assert "tpu_custom_call" in _compat.lower_for("tpu", tpu, x).as_text()
  table = qapi.GPU_STATUS_COLUMNS if transpose else qapi.GPU_STATUS
  if scheme in table:
    gpu = lambda x: qapi.quantize(x, scheme, implementation="mosaic_gpu", transpose=transpose,
                                  allow_inexact=True)
    text = _compat.lower_for("cuda", gpu, x).as_text()
    assert "mosaic_gpu" in text
    # Divisions are PTX div.rn or FMA-corrected (_ptx.py): none of Mosaic's approximate `/`.
    divides = scheme in ("fp8_e4m3_block128", "int4_g128", "nvfp4")
    assert ("div.rn.f32" in text) == divides and ("fma.rn.f32" in text) == divides


@pytest.mark.parametrize("order", ["slabs", "bands", "bands_reversed"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("scheme", sorted(qapi.GPU_STATUS))
def test_quantize_ctas_write_the_rows_they_read(scheme, dtype, order, monkeypatch):
  # "slabs": each CTA's pipeline gets slices of x, the codes and the scales; all must be the
  # same share of their arrays, or a CTA writes other rows than it read (the f32 NVFP4 kernel
  # once sliced its (rows, 16) code bytes as if they were the bf16 kernel's flat output: 8x too
  # far). The band orders (`tile_order.py`) index all three whole, by one `tile_index`.
  plgpu = _compat.plgpu_module()
  shares = []
  emit = plgpu.emit_pipeline

  def recording(*args, **kwargs):
    inner = emit(*args, **kwargs)

    def call(*refs):
      big = [r for r in refs if r.shape != (32,)]  # NVFP4's tensor terms: whole, every CTA
      shares.append([math.prod(r.shape) / math.prod(getattr(r, "ref", r).shape) for r in big])
      return inner(*refs)
    return call

  monkeypatch.setattr(plgpu, "emit_pipeline", recording)
  x = jax.ShapeDtypeStruct((1024, 512), dtype)
  _compat.lower_for("cuda", lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(
      x, scheme, allow_unverified=True, tile_order=order), x)
  if order == "slabs":
    assert shares and all(len(s) == 3 and len(set(s)) == 1 and s[0] < 1 for s in shares), shares
  else:
    assert shares == [[1.0, 1.0, 1.0]], shares


@pytest.mark.parametrize("scheme", sorted(qapi.GPU_STATUS))
def test_quantize_f32_input_lowers(scheme):
  # The row-wise kernel on float32 x (`f32_body`): (tile_rows, B) f32 tiles in, one code byte an
  # element out, no pair split (4-bit codes packed by XLA after it, unless `pack_nibbles`);
  # bit-exact on the GPU for every scheme (session 16), so ungated.
  x = jax.ShapeDtypeStruct((4096, 4096), jnp.float32)
  kern = mosaic_gpu_quantize.quantize_mosaic_gpu
  for opts in ({}, {"encode_cols": 8}):
    text = _compat.lower_for("cuda", lambda x, o=opts: kern(
        x, scheme, allow_unverified=True, pack_nibbles=False, **o), x).as_text()
    block = mxjax.schemes.get(scheme).block_size
    call = next(ln for ln in text.splitlines() if "custom_call" in ln)
    assert f"tensor<{4096 * 4096 // block}x{block}xf32>" in call  # rows of one f32 block
    assert f"tensor<{4096 * 4096 // block}x{block}xui8>" in call  # a code byte an element
  _compat.lower_for("cuda", lambda x: kern(x, scheme), x)  # F32_VERIFIED: no gate
  with pytest.raises(NotImplementedError, match="takes bf16 or f32, got float16"):
    _compat.lower_for("cuda", lambda x: kern(x.astype(jnp.float16), scheme), x)
  f32 = jnp.zeros((4096, 4096), jnp.float32)
  assert qapi.gpu_unsupported(f32, scheme) is None  # the GPU default takes f32 row-wise
  assert "f32 row-wise" in qapi.gpu_unsupported(f32, scheme, transpose=True)
  if block == 128:  # 64 f32 rows a tile: too few for the state's one-thread-a-block layout
    with pytest.raises(ValueError, match="tile_rows=64 must be a multiple of 128"):
      _compat.lower_for("cuda", lambda x: kern(x, scheme, allow_unverified=True,
                                               state_once=True), x)


@pytest.mark.parametrize("scheme", ["mxfp4", "nvfp4", "int4_g128"])
def test_quantize_f32_pack_nibbles_lowers(scheme, monkeypatch):
  # `pack_nibbles` (session 17, the default since its GPU check): the f32 kernel's 4-bit code
  # bytes go to a shared-memory scratch and leave packed two a byte, (rows, B / 2) uint8 as
  # from bf16 x (NVFP4's 8-byte rows flat), with no XLA pass after the kernel; with and without
  # state_once and column slices. A scheme off `F32_PACK_VERIFIED` needs allow_unverified.
  x = jax.ShapeDtypeStruct((4096, 4096), jnp.float32)
  kern = mosaic_gpu_quantize.quantize_mosaic_gpu
  block = mxjax.schemes.get(scheme).block_size
  rows = 4096 * 4096 // block
  out = f"tensor<{rows * block // 2}xui8>" if block == 16 else f"tensor<{rows}x{block // 2}xui8>"
  for opts in ({}, {"encode_cols": 8},
               {"state_once": True, "tile_rows": 128, "allow_unverified": True}):
    lowered = _compat.lower_for("cuda", lambda x, o=opts: kern(x, scheme, **o), x)
    call = next(ln for ln in lowered.as_text().splitlines() if "custom_call" in ln)
    assert f"tensor<{rows}x{block}xf32>" in call and out in call, call
    assert f"{block}xui8>" not in call  # no code bytes leave the kernel
    # the kernel is the whole computation: nothing but reshapes and bitcasts after it
    after = lowered.as_text().split("custom_call", 1)[1]
    assert not any(op in after for op in ("stablehlo.or", "stablehlo.shift", "stablehlo.and"))
  # bf16 pairs are packed anyway: the option is moot there
  _compat.lower_for("cuda", lambda x: kern(x.astype(jnp.bfloat16), scheme, pack_nibbles=True), x)
  monkeypatch.setattr(mosaic_gpu_quantize, "F32_PACK_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="pack_nibbles has not matched"):
    _compat.lower_for("cuda", lambda x: kern(x, scheme, pack_nibbles=True), x)
  text = _compat.lower_for("cuda", lambda x: kern(x, scheme), x).as_text()  # off: byte codes
  assert f"tensor<{rows}x{block}xui8>" in next(ln for ln in text.splitlines() if "custom_call" in ln)


@pytest.mark.parametrize("scheme", sorted(qapi.GPU_STATUS))
def test_quantize_state_once_lowers(scheme):
  # `state_once`: the block state computed one row a thread (WG_STRIDED, through shared memory),
  # its divisions still PTX div.rn / fma.rn in that layout.
  gpu = lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(x, scheme, state_once=True)
  if scheme not in mosaic_gpu_quantize.STATE_ONCE_VERIFIED:
    with pytest.raises(NotImplementedError, match="allow_unverified"):
      _compat.lower_for("cuda", gpu, _x(4096, 4096))
    gpu = lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(x, scheme, state_once=True,
                                                            allow_unverified=True)
  text = _compat.lower_for("cuda", gpu, _x(4096, 4096)).as_text()
  assert "quantize_mosaic_gpu.<locals>.body" in text and "block_state_once" in text
  divides = scheme in ("fp8_e4m3_block128", "int4_g128", "nvfp4")
  assert ("div.rn.f32" in text) == divides and ("fma.rn.f32" in text) == divides
  dflt = _compat.lower_for("cuda", lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(x, scheme),
                           _x(4096, 4096)).as_text()  # on by default where it was faster
  assert ("block_state_once" in dflt) == (scheme in mosaic_gpu_quantize.STATE_ONCE_DEFAULT)


@pytest.mark.parametrize("scheme", sorted(qapi.GPU_STATUS))
def test_quantize_columns_state_once_lowers(scheme):
  # The column kernel's `state_once` (session 35; bit-exact for every scheme on the H100 in
  # session 36, NVFP4's default since): each block's state in one thread through shared memory,
  # a step's blocks in one round trip (two barriers a step, where the encode alone has none);
  # the scales stored by it
  from pallas_kernels.quantize import mosaic_gpu_columns as cols
  x = _x(1024, 1024)
  tile_k = 128
  gpu = lambda x: cols.quantize_columns_mosaic_gpu(x, scheme, tile_k=tile_k, state_once=True)
  if scheme not in cols.STATE_ONCE_COLUMNS_VERIFIED:
    with pytest.raises(NotImplementedError, match="allow_unverified"):
      _compat.lower_for("cuda", gpu, x)
    gpu = lambda x: cols.quantize_columns_mosaic_gpu(x, scheme, tile_k=tile_k, state_once=True,
                                                     allow_unverified=True)
  assert jax.eval_shape(gpu, x).codes.shape == jax.eval_shape(
      lambda x: cols.quantize_columns_mosaic_gpu(x, scheme, tile_k=tile_k), x).codes.shape
  text = _compat.lower_for("cuda", gpu, x).as_text()
  assert "block_states_once" in text
  off = lambda x: cols.quantize_columns_mosaic_gpu(x, scheme, tile_k=tile_k, state_once=False)
  on_c, off_c = (primitive_counts(jax.make_jaxpr(f)(x).jaxpr).get("commit_smem", 0)
                 for f in (gpu, off))
  assert on_c == off_c + 2, (on_c, off_c)  # two a step, whatever the blocks a step
  dflt = _compat.lower_for("cuda", lambda x: cols.quantize_columns_mosaic_gpu(x, scheme),
                           x).as_text()
  assert ("block_states_once" in dflt) == (scheme in cols.STATE_ONCE_COLUMNS_DEFAULT)
  with pytest.raises(ValueError, match="multiple of 128"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), scheme, tile_k=64,
                                     nb=1, state_once=True,
                                     allow_unverified=True)


@pytest.mark.parametrize("scheme", ["fp8_e4m3_block128", "int4_g128"])
def test_quantize_columns_piece_sizes_lower(scheme):
  # The column-wise kernel with larger pieces of a block (`piece=`, session 17's GPU sweep): it
  # lowers at each, with the smaller tile_k a whole block's registers call for.
  from pallas_kernels.quantize.mosaic_gpu_columns import quantize_columns_mosaic_gpu
  x = jax.ShapeDtypeStruct((4096, 4096), jnp.bfloat16)
  for cfg in ({"piece": 32}, {"piece": 64}, {"piece": 128, "tile_k": 64}):
    text = _compat.lower_for("cuda", lambda x, c=cfg: quantize_columns_mosaic_gpu(
        x, scheme, **c), x).as_text()
    assert "custom_call" in text
  with pytest.raises(ValueError, match="piece=48 must divide B"):
    _compat.lower_for("cuda", lambda x: quantize_columns_mosaic_gpu(x, scheme, piece=48), x)


@pytest.mark.parametrize("transpose", [False, True], ids=["rows", "columns"])
def test_nvfp4_given_tensor_amax_skips_the_pass_over_x(transpose):
  # With `tensor_amax` the GPU NVFP4 kernels (row- and column-wise) run alone: no XLA reduction
  # over x before them.
  amax = jax.ShapeDtypeStruct((), jnp.float32)
  for given, fn in ((False, lambda x, a: qapi.quantize(x, "nvfp4", implementation="mosaic_gpu",
                                                       transpose=transpose)),
                    (True, lambda x, a: qapi.quantize(x, "nvfp4", implementation="mosaic_gpu",
                                                      transpose=transpose, tensor_amax=a))):
    text = _compat.lower_for("cuda", fn, _x(4096, 4096), amax).as_text()
    assert "mosaic_gpu" in text and ("stablehlo.reduce" in text) == (not given)


@pytest.mark.parametrize("transpose", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_tpu_lane_dense_quantize_lowers(scheme, transpose, monkeypatch, capsys):
  # The lane-dense TPU quantize kernel (quantize/tpu.py) at 4096 x 8192 bf16, 2048 elements a
  # step. Its Mosaic module holds only the ops its design relies on: 128 x 128 transposes (the
  # input's only row-wise: the column path reads x as stored), sublane-strided loads and
  # stores, elementwise math; no reshape, reduction, roll or matmul.
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import tpu  # pylint: disable=g-import-not-at-top
  pallas_call = pl.pallas_call
  monkeypatch.setattr(pl, "pallas_call", lambda *a, **k: pallas_call(*a, debug=True, **k))
  x = _x(4096, 8192)
  fn = lambda x: tpu.quantize_tpu(x, scheme, transpose=transpose)
  assert "tpu_custom_call" in _compat.lower_for("tpu", fn, x).as_text()
  mosaic = capsys.readouterr().out.split("The Mosaic module")[-1]
  assert "tpu.strided_load" in mosaic and "tpu.strided_store" in mosaic
  for op in ("vector.shape_cast", "vector.multi_reduction", "tpu.dynamic_rotate", "tpu.matmul"):
    assert op not in mosaic, op
  tq = tpu.tile_plan(scheme, (4096, 8192), transpose)
  code_chunks = tq * SCHEMES[scheme].bits // 8 // 128
  assert mosaic.count("tpu.transpose") == code_chunks + (0 if transpose else tq // 128)


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
  specs, shapes = _captured_pipeline(monkeypatch, fn, _x(m, k), pw)
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
  pw = _weight_shape(name, 8192, 28672)
  tm = jax.eval_shape(wm.code_order.thread_major, pw)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True,
                                                     prefetch_codes=False)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, _x(m, 8192), tm).as_text()
  eight = wm.code_order.code_bits(pw) == 8
  base = pw if eight else jax.eval_shape(wm.code_order.order_for_wgmma, pw)
  counts = [primitive_counts(jax.make_jaxpr(fn)(_x(m, 8192), w).jaxpr) for w in (base, tm)]
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
  assert "mosaic_gpu" in _compat.lower_for("cuda", pf, _x(m, 8192), tm).as_text()
  assert primitive_counts(jax.make_jaxpr(pf)(_x(m, 8192), tm).jaxpr)["load"] == (
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
  tm = jax.eval_shape(wm.code_order.thread_major, _weight_shape(name, 8192, 28672))
  bits = wm.code_order.code_bits(tm)
  loads = {}
  for d in (0, 1, 2):
    fn = lambda x, p, d=d: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, prefetch_codes=d, gps=2,
                                                            allow_unverified=True)
    assert "mosaic_gpu" in _compat.lower_for("cuda", fn, _x(1, 8192), tm).as_text()
    loads[d] = primitive_counts(jax.make_jaxpr(fn)(_x(1, 8192), tm).jaxpr)["load"]
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
  pw = _weight_shape(name, 8192, 28672)
  seen = []
  real = mosaic_gpu.pair_sums
  monkeypatch.setattr(mosaic_gpu, "pair_sums", lambda a: seen.append(a.shape) or real(a))
  launch = dict(tile_n=128, gps=2, steps=3, stream_k=2, fp8_x=True)
  fn = lambda x, p: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, fused_sum=True, allow_unverified=True,
                                                     **launch)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, _x(m, 8192), pw).as_text()
  assert seen == [(128, max(8, 2 * m))]  # the tile's rows, 2 M columns padded to 8
  assert jax.eval_shape(fn, _x(m, 8192), pw).shape == (m, 28672)
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


def test_quantize_launch_by_device(monkeypatch):
  # (steps, CTAs an SM): the H200's sweep for every device, but the H100's own where its sweep
  # differed (MXFP8 rows from bf16, session 25; MXFP4's with `pair_e2m1`, session 35), and the
  # default launch is the one the kernel takes (its grid: the fewest CTAs, at most CTAs an SM x
  # 132 SMs, that share the tiles evenly)
  launch = mosaic_gpu_quantize.default_launch
  h100, h200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
  assert launch("mxfp8_e4m3", device=h100) == (2, 3)
  assert launch("mxfp8_e4m3", device=h200) == launch("mxfp8_e4m3", True, h100) == (2, 4)
  assert launch("mxfp4", device=h100) == (2, 3)
  assert launch("mxfp4", device=h200) == launch("mxfp4", True, h100) == (2, 4)
  for scheme in ("nvfp4", "fp8_e4m3_block128", "int4_g128"):
    assert launch(scheme, device=h100) == launch(scheme, device=h200), scheme
  x = jax.ShapeDtypeStruct((8192, 8192), jnp.bfloat16)
  grids, real = {}, _compat.mgpu_kernel

  def recording(*a, **kw):
    grids[mosaic_gpu_quantize.device_kind()] = kw["grid"]
    return real(*a, **kw)

  monkeypatch.setattr(_compat, "mgpu_kernel", recording)
  for kind in (h100, h200):
    monkeypatch.setattr(mosaic_gpu_quantize, "device_kind", lambda k=kind: k)
    _compat.lower_for("cuda", lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(
        x, "mxfp8_e4m3"), x)
  # 8192 tiles of 256 blocks: 32 a CTA within 3 x 132 CTAs, 16 within 4 x 132
  assert grids == {h100: (256,), h200: (512,)}, grids


def test_quantize_columns_int4_nan_test():
  # The column kernel's INT4 quotients keep their NaN test by default (`INT4_NAN_TEST`: 86.5
  # us with it on the H100, 96.2 without): one NaN compare and select an element more, in each
  # encoder call (a pair's two; four with `quad_pack`); the row kernel has none; other schemes
  # refuse the option
  from pallas_kernels.quantize import mosaic_gpu_columns as cols
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  count = lambda **o: primitive_counts(jax.make_jaxpr(
      lambda x: cols.quantize_columns_mosaic_gpu(x, "int4_g128", **o))(x).jaxpr)
  for quads, calls in ((False, 2), (True, 4)):
    on, off = (count(int4_nan_test=t, quad_pack=quads) for t in (True, False))
    assert on["ne"] - off.get("ne", 0) == on["select_n"] - off["select_n"] == calls, (on, off)
    if quads == ("int4_g128" in cols.QUAD_PACK_DEFAULT):
      assert count() == (on if cols.INT4_NAN_TEST else off)
  fn = lambda x: cols.quantize_columns_mosaic_gpu(x, "int4_g128", int4_nan_test=False)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x).as_text()
  with pytest.raises(ValueError, match="int4_nan_test is an int4_g128 option"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp4",
                                     int4_nan_test=True)


@pytest.mark.parametrize("scheme", sorted(mosaic_gpu_quantize.SATFINITE_SCHEMES))
def test_quantize_satfinite_drops_the_clip(scheme, monkeypatch):
  # `satfinite`: the E4M3 codes from Mosaic's cast alone (cvt.rn.satfinite.e4m3x2.f32, which
  # saturates finite overflow and infinities itself): the clip's float max and min go, one of
  # each a call of the encoder (the even and the odd elements of a pair, a column piece), in the
  # row and the column kernel; on by default for MXFP8 (bit-exact and faster on an H200,
  # session 26), off for FP8 1x128 (bit-exact, no faster)
  from pallas_kernels.quantize.mosaic_gpu_columns import quantize_columns_mosaic_gpu
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  for kern in (mosaic_gpu_quantize.quantize_mosaic_gpu, quantize_columns_mosaic_gpu):
    counts = []
    for sat in (False, True):
      fn = lambda x, k=kern, s=sat: k(x, scheme, satfinite=s, cast_nan=False)
      counts.append(primitive_counts(jax.make_jaxpr(fn)(x).jaxpr))
      assert "cvt.rn.satfinite.e4m3x2.f32" in _compat.lower_for("cuda", fn, x).as_text()
    fewer = [counts[0].get(p, 0) - counts[1].get(p, 0) for p in ("max", "min")]
    assert fewer[0] == fewer[1] >= 1, counts
    default = counts[scheme in mosaic_gpu_quantize.SATFINITE_DEFAULT]
    assert primitive_counts(jax.make_jaxpr(lambda x, k=kern: k(x, scheme, cast_nan=False))(
        x).jaxpr) == default
  assert mosaic_gpu_quantize.SATFINITE_DEFAULT == {"mxfp8_e4m3"}
  # a scheme no GPU has checked it for is refused unless the caller allows it
  monkeypatch.setattr(mosaic_gpu_quantize, "SATFINITE_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="satfinite has not matched mxjax.quantize"):
    mosaic_gpu_quantize.quantize_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), scheme,
                                            satfinite=True)
  with pytest.raises(ValueError, match="mxfp4 has no E4M3 codes"):
    mosaic_gpu_quantize.quantize_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp4",
                                            satfinite=True)


@pytest.mark.parametrize("scheme", sorted(mosaic_gpu_quantize.SATFINITE_SCHEMES))
def test_quantize_cast_nan_lowers_without_the_nan_test(scheme, monkeypatch):
  # `cast_nan`: the E4M3 codes by the saturating cast alone, NaN included (no NaN compare and
  # select an element); row-wise from bf16 a pair per PTX cvt (`_ptx.e4m3_pair`) in place of
  # Mosaic's cast (and column-wise where `pair_cast` is the default). Rows (bf16, f32) and
  # columns lower; bit-exact and faster on the H100 (session 32), the default since; refused
  # unasked-for where no GPU has matched it.
  from pallas_kernels.quantize.mosaic_gpu_columns import quantize_columns_mosaic_gpu
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  x32 = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)
  rows = mosaic_gpu_quantize.quantize_mosaic_gpu
  from pallas_kernels.quantize.mosaic_gpu_columns import PAIR_CAST_COLUMNS_DEFAULT
  for kern, xx, paired in ((rows, x, True), (rows, x32, False),
                           (quantize_columns_mosaic_gpu, x, scheme in PAIR_CAST_COLUMNS_DEFAULT)):
    on = lambda x, k=kern: k(x, scheme, cast_nan=True, allow_unverified=True)
    off = lambda x, k=kern: k(x, scheme, satfinite=True, cast_nan=False)
    c_on, c_off = (primitive_counts(jax.make_jaxpr(f)(xx).jaxpr) for f in (on, off))
    assert c_on.get("ne", 0) < c_off["ne"], (c_on, c_off)
    text = _compat.lower_for("cuda", on, xx).as_text()
    assert ("cvt.rn.satfinite.e4m3x2.f32 t, $2, $1" in text) == paired
    assert "cvt.rn.satfinite.e4m3x2.f32" in text
    default = c_on if scheme in mosaic_gpu_quantize.CAST_NAN_DEFAULT else primitive_counts(
        jax.make_jaxpr(lambda x, k=kern: k(x, scheme, cast_nan=False))(xx).jaxpr)
    assert primitive_counts(jax.make_jaxpr(lambda x, k=kern: k(x, scheme))(xx).jaxpr) == default
  monkeypatch.setattr(mosaic_gpu_quantize, "CAST_NAN_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="cast_nan has not matched mxjax.quantize"):
    rows(jnp.zeros((1024, 1024), jnp.bfloat16), scheme, cast_nan=True)
  with pytest.raises(ValueError, match="leave one of them unset"):
    rows(jnp.zeros((1024, 1024), jnp.bfloat16), scheme, cast_nan=True, satfinite=False,
         allow_unverified=True)
  with pytest.raises(ValueError, match="int4_g128 has no E4M3 codes"):
    quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "int4_g128",
                                cast_nan=True, allow_unverified=True)


def test_quantize_columns_pair_cast_lowers(monkeypatch):
  # `pair_cast` (session 33): the column kernel's E4M3 codes two along M a
  # `cvt.rn.satfinite.e4m3x2.f32` (`_ptx.e4m3_pair`, where Mosaic's cast unpacks its pair),
  # left as uint16 words; FP8 1x128's default, only with cast_nan's codes, gated by the GPU's
  # check
  from pallas_kernels.quantize import mosaic_gpu_columns as cols
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  for scheme in ("mxfp8_e4m3", "fp8_e4m3_block128"):
    on = lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s, pair_cast=True,
                                                              allow_unverified=True)
    assert jax.eval_shape(on, x).codes.shape == (1024, 1024)
    text = _compat.lower_for("cuda", on, x).as_text()
    pair_asm = "cvt.rn.satfinite.e4m3x2.f32 t, $2, $1; cvt.u32.u16 $0, t;"  # `_ptx.e4m3_pair`
    assert pair_asm in text, scheme
    assert pair_asm not in _compat.lower_for("cuda", lambda x, s=scheme: (
        cols.quantize_columns_mosaic_gpu(x, s, pair_cast=False)), x).as_text()
    dflt = _compat.lower_for("cuda", lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s),
                             x).as_text()
    assert (pair_asm in dflt) == (scheme == "fp8_e4m3_block128"), scheme
  monkeypatch.setattr(cols, "PAIR_CAST_COLUMNS_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="pair_cast has not matched mxjax.quantize"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp8_e4m3",
                                     pair_cast=True)
  for scheme, opts in (("mxfp8_e4m3", dict(cast_nan=False)), ("int4_g128", {})):
    with pytest.raises(ValueError, match="leave pair_cast off"):
      cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), scheme,
                                       pair_cast=True, allow_unverified=True, **opts)
  # with it, the pairs' sign bits from x's own by one `prmt` (`pair_signs`; checked, off by
  # default)
  monkeypatch.undo()
  for scheme in ("mxfp8_e4m3", "fp8_e4m3_block128"):
    on = lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s, pair_cast=True,
                                                              pair_signs=True,
                                                              allow_unverified=True)
    assert "prmt.b32 $0, $1, $2, 0x73;" in _compat.lower_for("cuda", on, x).as_text(), scheme
  monkeypatch.setattr(cols, "PAIR_SIGNS_COLUMNS_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="pair_signs has not matched mxjax.quantize"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "fp8_e4m3_block128",
                                     pair_signs=True)
  with pytest.raises(ValueError, match="it needs pair_cast"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "fp8_e4m3_block128",
                                     pair_cast=False, pair_signs=True, allow_unverified=True)


def test_quantize_columns_quad_pack_lowers(monkeypatch):
  # `quad_pack` (session 34): MXFP4 / INT4 g128 codes four along M from four input tiles of the
  # (M / 4, 4 K) view, left as uint16 words (two packed bytes); INT4's default since the H100's
  # check, gated by it
  from pallas_kernels.quantize import mosaic_gpu_columns as cols
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  for scheme in cols.QUAD_PACK_SCHEMES:
    on = lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s, quad_pack=True,
                                                              allow_unverified=True)
    assert jax.eval_shape(on, x).codes.shape == (1024, 512)
    call = next(ln for ln in _compat.lower_for("cuda", on, x).as_text().splitlines()
                if "custom_call" in ln)
    assert "tensor<256x4096xbf16>" in call and "tensor<1024x256xui16>" in call, call
    off = next(ln for ln in _compat.lower_for("cuda", lambda x, s=scheme: (
        cols.quantize_columns_mosaic_gpu(x, s, quad_pack=False)), x).as_text().splitlines()
        if "custom_call" in ln)
    assert "tensor<512x2048xbf16>" in off and "ui16" not in off, off
    dflt = _compat.lower_for("cuda", lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s),
                             x).as_text()
    assert ("tensor<1024x256xui16>" in dflt) == (scheme in cols.QUAD_PACK_DEFAULT), scheme
  monkeypatch.setattr(cols, "QUAD_PACK_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="quad_pack has not matched mxjax.quantize"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp4",
                                     quad_pack=True)
  with pytest.raises(ValueError, match="leave it off"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "nvfp4",
                                     quad_pack=True, allow_unverified=True)


def test_quantize_pair_e2m1_lowers(monkeypatch):
  # `pair_e2m1` (session 34): MXFP4's row codes two elements an operation on the bf16 pair
  # words (`_ptx.e2m1_pairs`, whose algorithm tests/kernels/test_e2m1_pairs.py runs on the CPU):
  # the asm in the kernel, one code byte a word out as before; bf16 MXFP4's default since the
  # H100's check, gated by it
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  rows = mosaic_gpu_quantize.quantize_mosaic_gpu
  on = lambda x: rows(x, "mxfp4", pair_e2m1=True, allow_unverified=True)
  assert jax.eval_shape(on, x).codes.shape == (1024, 512)
  text = _compat.lower_for("cuda", on, x).as_text()
  assert _ptx.E2M1_PAIRS_ASM in text
  call = next(ln for ln in text.splitlines() if "custom_call" in ln)
  assert "tensor<32768x16xui8>" in call, call
  assert _ptx.E2M1_PAIRS_ASM not in _compat.lower_for(
      "cuda", lambda x: rows(x, "mxfp4", pair_e2m1=False), x).as_text()
  dflt = _compat.lower_for("cuda", lambda x: rows(x, "mxfp4"), x).as_text()
  assert (_ptx.E2M1_PAIRS_ASM in dflt) == ("mxfp4" in mosaic_gpu_quantize.PAIR_E2M1_DEFAULT)
  f32 = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)  # f32 x: the float32 encoder
  assert _ptx.E2M1_PAIRS_ASM not in _compat.lower_for(
      "cuda", lambda x: rows(x, "mxfp4", allow_unverified=True), f32).as_text()
  # NVFP4's (session 35): the scaled pairs' asm, the float32 encoder's gone, codes as before
  nv = lambda x: rows(x, "nvfp4", pair_e2m1=True, allow_unverified=True)
  text = _compat.lower_for("cuda", nv, x).as_text()
  assert _ptx.E2M1_SCALED_PAIRS_ASM in text and _ptx.E2M1_PAIRS_ASM not in text
  assert jax.eval_shape(nv, x).codes.shape == (1024, 512)
  nv_dflt = _compat.lower_for("cuda", lambda x: rows(x, "nvfp4"), x).as_text()
  assert ((_ptx.E2M1_SCALED_PAIRS_ASM in nv_dflt)
          == ("nvfp4" in mosaic_gpu_quantize.PAIR_E2M1_DEFAULT))
  monkeypatch.setattr(mosaic_gpu_quantize, "PAIR_E2M1_VERIFIED", frozenset())
  for scheme in mosaic_gpu_quantize.PAIR_E2M1_SCHEMES:
    with pytest.raises(NotImplementedError, match="pair_e2m1 has not matched mxjax.quantize"):
      rows(jnp.zeros((1024, 1024), jnp.bfloat16), scheme, pair_e2m1=True)
  for scheme, dtype in (("mxfp8_e4m3", jnp.bfloat16), ("mxfp4", jnp.float32)):
    with pytest.raises(ValueError, match="leave it off"):
      rows(jnp.zeros((1024, 1024), dtype), scheme, pair_e2m1=True, allow_unverified=True)


def test_quantize_columns_pair_e2m1_lowers():
  # The column kernel's `pair_e2m1` (session 34, gated): the even and odd row tiles made into
  # bf16 pair words by one `prmt`, then the row kernel's E2M1 pair asm; codes out as before
  from pallas_kernels.quantize import mosaic_gpu_columns as cols
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  on = lambda x: cols.quantize_columns_mosaic_gpu(x, "mxfp4", pair_e2m1=True,
                                                  allow_unverified=True)
  assert jax.eval_shape(on, x).codes.shape == (1024, 512)
  text = _compat.lower_for("cuda", on, x).as_text()
  assert _ptx.E2M1_PAIRS_ASM in text and "prmt.b32 $0, $1, $2, 0x7632;" in text
  dflt = _compat.lower_for("cuda", lambda x: cols.quantize_columns_mosaic_gpu(x, "mxfp4"),
                           x).as_text()
  assert (_ptx.E2M1_PAIRS_ASM in dflt) == ("mxfp4" in cols.PAIR_E2M1_COLUMNS_DEFAULT)
  if "mxfp4" not in cols.PAIR_E2M1_COLUMNS_VERIFIED:
    with pytest.raises(NotImplementedError, match="pair_e2m1 has not matched mxjax.quantize"):
      cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp4",
                                       pair_e2m1=True)
  # NVFP4's (session 35): the even and odd row tiles straight into the scaled pairs' asm
  nv = cols.quantize_columns_mosaic_gpu
  text = _compat.lower_for("cuda", lambda x: nv(x, "nvfp4", pair_e2m1=True,
                                                allow_unverified=True), x).as_text()
  assert _ptx.E2M1_SCALED_PAIRS_ASM in text and "0x7632;" not in text.replace(
      _ptx.E2M1_SCALED_PAIRS_ASM, "")
  with pytest.raises(ValueError, match="leave it off"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "int4_g128",
                                     pair_e2m1=True, allow_unverified=True)
  with pytest.raises(ValueError, match="leave one of them off"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp4",
                                     pair_e2m1=True, quad_pack=True, allow_unverified=True)


def test_quantize_pair_amax_lowers(monkeypatch):
  # `pair_amax` (session 32; the default since session 33's H100 check): the row kernel's block
  # amax of bf16 x from its pair words, two halves a `max.u16x2` (`_ptx.bf16_pairs_amax_bits`),
  # one quad reduction a row where `block_amax` takes two; f32 x goes without and refuses it.
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  rows = mosaic_gpu_quantize.quantize_mosaic_gpu
  for scheme in ("mxfp8_e4m3", "int4_g128", "nvfp4"):
    off = lambda x, s=scheme: rows(x, s, pair_amax=False)
    c_on, c_off = (primitive_counts(jax.make_jaxpr(f)(x).jaxpr)
                   for f in (lambda x, s=scheme: rows(x, s), off))
    assert c_on.get("reduce_max", 0) == c_off["reduce_max"] - 2, (scheme, c_on, c_off)
    assert "max.u16x2 $0, $1, $2;" in _compat.lower_for("cuda", lambda x, s=scheme: rows(x, s),
                                                         x).as_text()
    assert "max.u16x2 $0, $1, $2;" not in _compat.lower_for("cuda", off, x).as_text()
  x32 = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)
  assert "max.u16x2 $0, $1, $2;" not in _compat.lower_for(
      "cuda", lambda x: rows(x, "mxfp4", allow_unverified=True), x32).as_text()
  # the column kernel's: |x| and its max on the bf16 tile (max.NaN.bf16x2), one AND and one
  # integer max an element fewer on the widened tile; the default for FP8 1x128 alone
  from pallas_kernels.quantize import mosaic_gpu_columns as cols
  for scheme in ("mxfp8_e4m3", "int4_g128", "fp8_e4m3_block128"):
    on = lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s, pair_amax=True)
    dflt = lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s)
    c_on, c_off = (primitive_counts(jax.make_jaxpr(f)(x).jaxpr) for f in (
        on, lambda x, s=scheme: cols.quantize_columns_mosaic_gpu(x, s, pair_amax=False)))
    assert c_on["abs"] > c_off.get("abs", 0) and c_on["and"] < c_off["and"], (scheme, c_on, c_off)
    assert "max.NaN.bf16x2" in _compat.lower_for("cuda", on, x).as_text()
    assert (primitive_counts(jax.make_jaxpr(dflt)(x).jaxpr)
            == (c_on if scheme == "fp8_e4m3_block128" else c_off)), scheme
  monkeypatch.setattr(mosaic_gpu_quantize, "PAIR_AMAX_VERIFIED", frozenset())
  monkeypatch.setattr(cols, "PAIR_AMAX_COLUMNS_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="pair_amax has not matched mxjax.quantize"):
    cols.quantize_columns_mosaic_gpu(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp4",
                                     pair_amax=True)
  with pytest.raises(NotImplementedError, match="pair_amax has not matched mxjax.quantize"):
    rows(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp4", pair_amax=True)
  with pytest.raises(ValueError, match="pair_amax reads bf16 pair words"):
    rows(jnp.zeros((1024, 1024), jnp.float32), "mxfp4", pair_amax=True, allow_unverified=True)


def test_quantize_pair_signs_lowers(monkeypatch):
  # `pair_signs` (session 33): cast_nan's code pairs take their sign bits from x's bf16 pair
  # words, one `prmt` and one AND a word; FP8 1x128's default, gated by the GPU's check
  x = jax.ShapeDtypeStruct((1024, 1024), jnp.bfloat16)
  rows = mosaic_gpu_quantize.quantize_mosaic_gpu
  for scheme in ("mxfp8_e4m3", "fp8_e4m3_block128"):
    for opts in ({}, {"encode_cols": 8}):
      on = lambda x, s=scheme, o=opts: rows(x, s, pair_signs=True, allow_unverified=True, **o)
      assert "prmt.b32 $0, $1, $1, 0x31;" in _compat.lower_for("cuda", on, x).as_text()
      off = lambda x, s=scheme, o=opts: rows(x, s, pair_signs=False, **o)
      assert "prmt.b32" not in _compat.lower_for("cuda", off, x).as_text()
      dflt = _compat.lower_for("cuda", lambda x, s=scheme, o=opts: rows(x, s, **o), x)
      assert ("prmt.b32" in dflt.as_text()) == (scheme == "fp8_e4m3_block128"), scheme
      c_on, c_off = (primitive_counts(jax.make_jaxpr(f)(x).jaxpr) for f in (on, off))
      shifts = lambda c: c.get("shift_right_logical", 0) + c.get("shift_right_arithmetic", 0)
      assert shifts(c_on) < shifts(c_off), (c_on, c_off)
  monkeypatch.setattr(mosaic_gpu_quantize, "PAIR_SIGNS_VERIFIED", frozenset())
  with pytest.raises(NotImplementedError, match="pair_signs has not matched mxjax.quantize"):
    rows(jnp.zeros((1024, 1024), jnp.bfloat16), "mxfp8_e4m3", pair_signs=True)
  for scheme, dt, opts in (("mxfp4", jnp.bfloat16, {}), ("mxfp8_e4m3", jnp.float32, {}),
                           ("mxfp8_e4m3", jnp.bfloat16, {"cast_nan": False})):
    with pytest.raises(ValueError, match="it needs bf16 x and cast_nan"):
      rows(jnp.zeros((1024, 1024), dt), scheme, pair_signs=True, allow_unverified=True, **opts)
