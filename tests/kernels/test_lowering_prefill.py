"""The prefill kernels lower for their platforms: the Mosaic GPU GEMM (`wo_matmul.mosaic_gpu_gemm`)
in every format and with its scale paths, and the TPU weight-only matmul. What lowering checks and
what it cannot: tests/kernels/lowering.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import _compat
from pallas_kernels import wo_matmul as wm
from pallas_kernels.wo_matmul import mosaic_gpu_gemm
from tests.kernels.lowering import FORMATS
from tests.kernels.lowering import weight_shape
from tests.kernels.lowering import x_shape


def test_gemm_nvfp4_tensor_scale_out_lowers(monkeypatch):
  # NVFP4's s_t on the GEMM's float32 sum (`tensor_scale_out`): the weights are q * s_b in bf16
  # (no float32 widening of the multipliers) and s_t goes to the kernel as a scalar operand,
  # where without it a broadcast (1, N) row is read every K step. The default since an H100
  # checked it (session 22); the gate still refuses it where a GPU has not.
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, weight_shape("nvfp4", 8192, 28672))
  widened, real = [], mosaic_gpu_gemm.nvfp4_multiplier_f32
  monkeypatch.setattr(mosaic_gpu_gemm, "nvfp4_multiplier_f32",
                      lambda *a: widened.append(1) or real(*a))

  def lower(**options):  # the module, and whether the multipliers were widened
    widened.clear()
    jax.clear_caches()  # lower afresh: a cached trace would call nothing
    fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **options)
    return _compat.lower_for("cuda", fn, x_shape(1024, 8192), pw).as_text(), bool(widened)

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
  pw = weight_shape("int8", 8192, 28672)

  def lower(**options):
    jax.clear_caches()  # lower afresh
    fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **options)
    return _compat.lower_for("cuda", fn, x_shape(1024, 8192), pw).as_text()

  via_bf16 = lower(int8_bf16=True)
  direct = lower(int8_bf16=False)
  assert "sub.bf16x2" in via_bf16 and "sitofp" not in via_bf16
  assert "sitofp" in direct and "sub.bf16x2" not in direct
  assert mosaic_gpu_gemm.INT8_BF16_VERIFIED and lower() == via_bf16  # verified: the default
  with pytest.raises(ValueError, match="int8_bf16 converts INT8 codes"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
        x, p, int8_bf16=True, allow_unverified=True), x_shape(1024, 8192),
        weight_shape("fp8_e4m3_rowwise", 8192, 28672))
  monkeypatch.setattr(mosaic_gpu_gemm, "INT8_BF16_VERIFIED", False)
  with pytest.raises(NotImplementedError, match="int8_bf16 has not matched"):
    lower(int8_bf16=True)
  assert lower() == direct  # unverified: off


@pytest.mark.parametrize("name", ["int8", "fp8_e4m3_rowwise"])
def test_gemm_channel_scale_out_lowers(name, monkeypatch):
  # The per-channel formats' scale on the float32 sum (`channel_scale_out`, session 44, checked
  # on a GPU and the default since session 45): the codes go to bf16 as they are, no scale is
  # spread over the weights (`spread_groups` never called) and INT8's bf16 codes are never
  # widened to float32.
  pw = weight_shape(name, 8192, 28672)
  spread, real = [], mosaic_gpu_gemm.spread_groups
  monkeypatch.setattr(mosaic_gpu_gemm, "spread_groups", lambda *a: spread.append(1) or real(*a))

  def lower(**options):  # the module, and whether a scale was spread over the weights
    spread.clear()
    jax.clear_caches()  # lower afresh: a cached trace would call nothing
    fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **options)
    return _compat.lower_for("cuda", fn, x_shape(1024, 8192), pw).as_text(), bool(spread)

  (out, out_spread), (weights, weights_spread) = (
      lower(channel_scale_out=True), lower(channel_scale_out=False))
  assert weights_spread and not out_spread and out != weights
  if name == "int8":  # with `int8_bf16` (the default) no code reaches float32
    assert "arith.extf" in weights and "arith.extf" not in out
  # verified (session 45): the default, and off by `channel_scale_out=False`
  assert mosaic_gpu_gemm.CHANNEL_SCALE_OUT_VERIFIED and lower()[0] == out
  monkeypatch.setattr(mosaic_gpu_gemm, "CHANNEL_SCALE_OUT_VERIFIED", False)
  with pytest.raises(NotImplementedError, match="channel_scale_out has not matched"):
    lower(channel_scale_out=True)
  with pytest.raises(ValueError, match="channel_scale_out is for INT8 / FP8 per-channel"):
    _compat.lower_for("cuda", lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
        x, p, channel_scale_out=True, allow_unverified=True), x_shape(1024, 8192),
        weight_shape("int4_g128", 8192, 28672))


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_gemm_scale_multipliers_lower(name, monkeypatch):
  # The GEMM reading FP4 bf16 multipliers as they are (`scale_multipliers`): the scales (the
  # jitted function's third argument) go to the kernel with no XLA op on them, where without it
  # an XLA pass turns them back into bytes. Gated until checked on a GPU; the default once its
  # format is in MULTIPLIERS_VERIFIED (both, since session 20).
  assert wm.WeightFormat(name) in mosaic_gpu_gemm.MULTIPLIERS_VERIFIED
  monkeypatch.setattr(mosaic_gpu_gemm, "MULTIPLIERS_VERIFIED", frozenset())  # as if unchecked
  pw = jax.eval_shape(wm.scales.fp4_scales_bf16, weight_shape(name, 8192, 28672))

  def operands(**options):  # the kernel call's operands, and the module
    fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, **options)
    text = _compat.lower_for("cuda", fn, x_shape(1024, 8192), pw).as_text()
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
        x, p, scale_multipliers=True, allow_unverified=True), x_shape(1024, 8192),
        weight_shape(name, 8192, 28672))
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


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("cfg", [{}, {"tile_k": 256, "tile_m": 128}, {"tile_m": 192, "steps": 3}],
                         ids=["default", "k256", "m192"])
def test_gemm_kernel_lowers_for_cuda(name, cfg):
  pw = weight_shape(name, 8192, 28672)
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True, **cfg)
  assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x_shape(1024, 8192), pw).as_text()


def test_gemm_kernel_lowers_with_tile_k_64_and_f32_out():
  pw = weight_shape("int4_g128", 4096, 4096)
  fn = lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(x, p, allow_unverified=True, tile_k=64,
                                                         out_dtype=jnp.float32)
  _compat.lower_for("cuda", fn, x_shape(200, 4096), pw)  # M = 200: padded to 256


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_tpu_wo_matmul_lowers_for_tpu(name):
  pw = weight_shape(name, 8192, 4096)
  fn = lambda x, p: wm.wo_matmul(x, p, implementation="mosaic_tpu")
  assert "tpu_custom_call" in _compat.lower_for("tpu", fn, x_shape(8, 8192), pw).as_text()


@pytest.mark.parametrize("name", ["int4_g128", "nf4_g64", "mxfp4"])
def test_tpu_wo_matmul_lowers_at_prefill_m(name):
  # M = 1000: x taken 512 rows a step (padded to 1024), the (M tile, N tile, K step) grid.
  pw = weight_shape(name, 8192, 4096)
  fn = lambda x, p: wm.wo_matmul(x, p, implementation="mosaic_tpu")
  assert "tpu_custom_call" in _compat.lower_for("tpu", fn, x_shape(1000, 8192), pw).as_text()
