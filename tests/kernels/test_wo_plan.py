"""The GPU decode kernel's launch, resolved without a GPU: `configs.decode_config`'s measured
defaults, `decode_plan.plan_decode` on them for every format, M and shape, and the `schedule`
of which CTA runs which (N tile, K step) iterations (stream-K covers each once, and its fused
sum cannot deadlock).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mxjax
from pallas_kernels import wo_matmul as wm
from tests.kernels.lowering import weight_shape
from tests.kernels.wo_formats import FORMATS
from tests.kernels.wo_formats import IDS
from tests.kernels.wo_formats import PER_CHANNEL


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
  # the SMs (`configs.ONE_SLOT_MIN_N`), groups of 128 in 64-row tiles (session 31)
  h100 = lambda n, m, group: decode_config(wm.WeightFormat.INT4, n, m, group=group,
                                           device="NVIDIA H100 80GB HBM3")
  assert h100(14336, 1, 128) == h100(14336, 8, 128) == dict(
      tile_n=64, gps=2, steps=4) | configs.ONE_SLOT
  assert h100(14336, 1, 32) == dict(tile_n=128, gps=2, steps=4) | configs.ONE_SLOT
  assert h100(14336, 16, 128) == dict(tile_n=64, gps=2, steps=4) | configs.ONE_SLOT
  assert h100(14336, 1, 64) == dict(tile_n=64, gps=2, steps=4) | configs.ONE_SLOT
  assert h100(4096, 1, 32) == int4(1, 32)
  # ... and at N <= 4096 (session 45) groups of 128 at M <= 32 take M = 16's launch, 64-row
  # tiles on one compute warpgroup with XLA's sum
  for m in (1, 8, 16, 17, 32):
    assert h100(4096, m, 128) == int4(16, 128), m
  assert h100(4096, 64, 128)["tile_n"] == 128 and h100(4096, 32, 32)["compute_wgs"] == 2
  # ... and the other 4-bit formats at M <= 16 (session 32): one slot in 64-row tiles on one
  # compute warpgroup (NVFP4 / NF4 g128 at M = 16 too, where the wide config had two); NF4 at
  # M <= 8 stream-K over two chunks, four deep; N >= 16384 and other devices unchanged
  dev = dict(device="NVIDIA H100 80GB HBM3")
  one64 = lambda steps, **kw: dict(tile_n=64, gps=2, steps=steps, step_wait=True, **kw) | (
      configs.ONE_SLOT)
  cfg = lambda fmt, m, group, n=14336, **kw: decode_config(fmt, n, m, **kw, group=group)
  for m in (1, 8, 16):
    assert cfg(wm.WeightFormat.MXFP4, m, 32, scale_bf16=True, **dev) == one64(4)
    assert cfg(wm.WeightFormat.UINT4, m, 128, **dev) == one64(3)
    assert cfg(wm.WeightFormat.NVFP4, m, 16, scale_bf16=True, **dev) == one64(4 if m <= 8 else 3)
  assert cfg(wm.WeightFormat.NF4, 1, 128, scale_bf16=True, **dev) == dict(
      tile_n=128, gps=2, steps=4, stream_k=2)
  assert cfg(wm.WeightFormat.NF4, 16, 128, scale_bf16=True, **dev) == one64(3)
  # groups of 64 at M <= 8 (session 33): UINT4 as its g128, NF4 as its g128 (stream-K)
  assert cfg(wm.WeightFormat.UINT4, 1, 64, **dev) == one64(3)
  assert cfg(wm.WeightFormat.NF4, 8, 64, scale_bf16=True, **dev) == dict(
      tile_n=128, gps=2, steps=4, stream_k=2)
  for fmt, group in ((wm.WeightFormat.NF4, 64), (wm.WeightFormat.UINT4, 64)):
    assert cfg(fmt, 16, group, scale_bf16=fmt is wm.WeightFormat.NF4, **dev) == cfg(
        fmt, 16, group, scale_bf16=fmt is wm.WeightFormat.NF4)  # unmeasured: as elsewhere
  # 8192 x 28672 at M = 9-16 (session 33): NVFP4 (bf16 multipliers, the wide config elsewhere)
  # and UINT4 g128 one slot a 128-row tile on one compute warpgroup; MXFP4 and M <= 8 unchanged
  one128 = dict(tile_n=128, gps=2, steps=3, step_wait=True) | configs.ONE_SLOT
  for m in (9, 16):
    assert cfg(wm.WeightFormat.NVFP4, m, 16, n=28672, scale_bf16=True, **dev) == one128
    assert cfg(wm.WeightFormat.UINT4, m, 128, n=28672, **dev) == one128
    assert cfg(wm.WeightFormat.NVFP4, m, 16, n=28672, scale_bf16=True)["compute_wgs"] == 2
  for m in (1, 16):
    assert cfg(wm.WeightFormat.MXFP4, m, 32, n=28672, scale_bf16=True, **dev) == cfg(
        wm.WeightFormat.MXFP4, m, 32, n=28672, scale_bf16=True)
  assert cfg(wm.WeightFormat.UINT4, 8, 128, n=28672, **dev)["stream_k"] == 2
  assert cfg(wm.WeightFormat.UINT4, 17, 128, n=28672, **dev)["compute_wgs"] == 2
  for fmt, group in ((wm.WeightFormat.MXFP4, 32), (wm.WeightFormat.NVFP4, 16)):
    assert cfg(fmt, 1, group, n=28672, scale_bf16=True, **dev) == cfg(
        fmt, 1, group, n=28672, scale_bf16=True)
    assert cfg(fmt, 1, group, scale_bf16=True, device="NVIDIA H200")["tile_n"] == 128
  # Below N = 16384 above M = 16 (sessions 41-45): the wide config in 128-row tiles on an H100,
  # every 4-bit format, its fused sum (where it has one) left to XLA at N <= 4096; 256 rows at N
  # >= 16384 and on other devices
  unfused = lambda c: {k: v for k, v in c.items() if k != "fused_sum"}
  wides = ((wm.WeightFormat.INT4, 32, False), (wm.WeightFormat.INT4, 64, False),
           (wm.WeightFormat.UINT4, 32, False), (wm.WeightFormat.UINT4, 128, False),
           (wm.WeightFormat.NF4, 64, True), (wm.WeightFormat.MXFP4, 32, True),
           (wm.WeightFormat.NVFP4, 16, True))
  for m in (17, 32, 64):
    for n in (4096, 11008, 14336):
      for fmt, group, sb in wides:
        h = cfg(fmt, m, group, n=n, scale_bf16=sb, **dev)
        assert (h["tile_n"], h["compute_wgs"], h["stream_k"]) == (128, 2, 1), (fmt, group, m, n)
        elsewhere = cfg(fmt, m, group, n=n, scale_bf16=sb)
        assert unfused(h) == unfused(elsewhere) | dict(tile_n=128), (fmt, group, m, n)
        assert h.get("fused_sum", False) == (n > 4096 and elsewhere.get("fused_sum", False))
        g64 = fmt is wm.WeightFormat.INT4 and group == 64 and m > 32  # 128 rows everywhere
        assert cfg(fmt, m, group, n=28672, scale_bf16=sb, **dev)["tile_n"] == (
            128 if g64 else 256)
        assert elsewhere["tile_n"] == (128 if g64 else 256)
  # 4096 x 4096 above M = 16 (sessions 42-45): XLA's sum on an H100 where the wide config fuses
  # it elsewhere; the fused sum from N = 8192 and on other devices
  for m in (17, 32, 64):
    for fmt, group in ((wm.WeightFormat.INT4, 128), (wm.WeightFormat.MXFP4, 32),
                       (wm.WeightFormat.NVFP4, 16)):
      h = cfg(fmt, m, group, n=4096, scale_bf16=True, **dev)
      assert "fused_sum" not in h and h.get("compute_wgs", 1) == (
          1 if m <= 32 and group == 128 else 2)
      assert cfg(fmt, m, group, n=4096, scale_bf16=True)["fused_sum"]
      assert cfg(fmt, m, group, n=8192, scale_bf16=True, **dev)["fused_sum"]
      assert cfg(fmt, m, group, scale_bf16=True, **dev)["fused_sum"]
    for fmt in (wm.WeightFormat.INT8, wm.WeightFormat.FP8):
      h = cfg(fmt, m, None, n=4096, **dev)
      assert "fused_sum" not in h and h["tile_n"] == 128 and h["compute_wgs"] == 2
      assert cfg(fmt, m, None, n=8192, **dev)["fused_sum"]
      fused_elsewhere = fmt is wm.WeightFormat.FP8 or m > 32  # INT8 off the H100: above 32
      assert cfg(fmt, m, None, n=4096) == (h | dict(fused_sum=True) if fused_elsewhere else h)
  with monkeypatch.context() as patch:  # the plan: three steps of 128 rows, two warpgroups
    patch.setattr(configs, "device_kind", lambda: "NVIDIA H100 80GB HBM3")
    for preset in ("int4_g128", "int4_g128_asym", "nf4_g64"):
      q = mxjax.quantize(jnp.ones((4096, 14336)), preset, axis=0)
      w = wm.repack_qarray(q, scale_bf16=True if preset == "nf4_g64" else None)
      p64 = decode_plan.plan_decode(64, 4096, w)
      assert (p64.tile_n, p64.compute_wgs, p64.steps, p64.schedule.grid) == (
          128, 2, 3, (128,)), (preset, p64)
  with monkeypatch.context() as patch:  # the plan: one CTA a 64-row tile, fused, one warpgroup
    patch.setattr(configs, "device_kind", lambda: "NVIDIA H100 80GB HBM3")
    for preset in ("nvfp4", "mxfp4"):
      w = wm.repack_qarray(mxjax.quantize(jnp.ones((4096, 14336)), preset, axis=0))
      p16 = decode_plan.plan_decode(16, 4096, w)
      assert (p16.tile_n, p16.compute_wgs, p16.fused_sum, p16.schedule.grid) == (
          64, 1, True, (224, 1)), p16
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
  # ... and UINT4 g128 at M <= 8 when stored for plain loads (session 30), at M = 9-16 either
  # way (session 33), NVFP4 there too
  u128_plain = jax.eval_shape(wm.code_order.thread_major, u128)
  assert [one_slot(m, u128_plain) for m in (1, 8, 9, 17)] == [True, True, True, False]
  assert [one_slot(m, u128) for m in (8, 9, 16, 17)] == [False, True, True, False]
  assert [one_slot(m, nvfp4) for m in (8, 16, 17)] == [False, True, False]
  for fmt in (wm.WeightFormat.INT8, wm.WeightFormat.FP8):
    assert "splits" not in decode_config(fmt, 4096, 1) | decode_config(fmt, 4096, 32)
  monkeypatch.undo()
  assert not any(one_slot(1, w) for w in (g128, g32, shape("int8")))  # elsewhere: stream-K
  assert not decode_plan.plan_decode(32, 8192, g32).fused_sum  # g32 above M = 16: XLA's sum
  # 8-bit tensor cores (`fp8_x`) on the devices where that paid (the H200, not the H100): FP8
  # at M <= 8, INT8 at M <= 4 (in 128-row tiles), MXFP4 at M <= 4, unless an option it excludes
  # is asked for; FP8 above M = 8 and INT8 above 16 with two compute warpgroups
  monkeypatch.setattr(configs, "device_kind", lambda: "NVIDIA H200")
  # (MXFP4 stored as `repack` stores it there: byte-pair order, unfolded multipliers)
  fp8, mxfp4, int8 = shape("fp8_e4m3_rowwise"), shape("mxfp4"), shape("int8")
  assert not mxfp4.halves_order and not mxfp4.mx_fold
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
  # tile took the 8-bit decode at 4096 x 4096 to 32 CTAs and twice the time (session 30), and
  # until session 45 the split configs ran 11008 x 4096 (43 K steps) on 32, one a tile.
  from pallas_kernels.wo_matmul import configs
  from pallas_kernels.wo_matmul import decode_plan
  for k, n in [(4096, 4096), (4096, 14336), (8192, 28672), (14336, 4096), (2048, 8192),
               (4096, 11008), (11008, 4096), (4096, 6144), (5120, 13824)]:
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
  # the default split: the smallest power of two dividing the K steps that covers the SMs
  assert S.pick_splits(32, 16, 132) == 8 and S.pick_splits(224, 32, 132) == 1
  assert S.pick_splits(4, 16, 132) == 16  # fewer than two steps a CTA past it
  # none where no such divisor reaches the SMs: K = 11008 (43 steps of 256) over 32 tiles,
  # 13824 (54) over 40; the plan then runs stream-K (test_decode_defaults_plan_...)
  assert S.pick_splits(32, 43, 132) is None and S.pick_splits(40, 54, 132) is None


def test_default_tile_and_step_halve_to_fit_the_weight():
  # A default measured on multiples of 256 rows and 512 K columns halves where the weight is
  # not one (INT4 g128 at N >= 16384 steps four chunks, 512 K columns: K = 11008 takes two);
  # one the caller names is refused instead
  from pallas_kernels.wo_matmul import configs
  from pallas_kernels.wo_matmul import decode_plan
  pw = weight_shape("int4_g128", 11008, 16384)
  assert configs.decode_config(pw.fmt, 16384, 1, group=128, device="cpu")["gps"] == 4
  p = decode_plan.plan_decode(1, 11008, pw, allow_unverified=True)
  assert p.tile_k == 256 and 11008 % p.tile_k == 0
  with pytest.raises(ValueError, match="K=11008 must be a multiple of 4 chunks"):
    decode_plan.plan_decode(1, 11008, pw, gps=4, allow_unverified=True)
  odd = weight_shape("mxfp4", 4096, 4224)  # 33 tiles of 128 rows, under a 256-row default
  assert decode_plan.plan_decode(32, 4096, odd, allow_unverified=True).tile_n == 128
  with pytest.raises(ValueError, match="N=4224 must be a multiple of tile_n=256"):
    decode_plan.plan_decode(32, 4096, odd, tile_n=256, allow_unverified=True)


def test_slot_loads_plan_and_errors():
  # `slot_loads` (session 42, checked on the H100 in 43): slot 0 reads the other slots by plain
  # loads, as many in flight as SLOT_LOAD_REGISTERS allows; only for a fused sum of several slots
  from pallas_kernels.wo_matmul import decode_plan
  pw = weight_shape("int4_g128", 4096, 4096)
  wide = dict(gps=2, steps=3, compute_wgs=2, stream_k=1, fused_sum=True, allow_unverified=True)
  p128 = decode_plan.plan_decode(64, 4096, pw, tile_n=128, slot_loads=True, **wide)
  p256 = decode_plan.plan_decode(64, 4096, pw, tile_n=256, slot_loads=True, **wide)
  assert p128.slot_loads and p256.slot_loads
  # a slot's partial sum takes wg_rows * mp / 128 registers a thread: 32 at 64 rows, 64 at 128
  assert (p128.slot_batch, p256.slot_batch) == (4, 2)
  # 4096 x 4096 on 128 CTAs: four slots a 128-row tile (one batch), eight a 256-row one (four)
  assert (p128.schedule.slots, p256.schedule.slots) == (4, 8)
  assert not decode_plan.plan_decode(64, 4096, pw, tile_n=128, **wide).slot_loads
  # INT4 g128 matched the reference on the H100 (session 43); MXFP4 has not
  assert decode_plan.plan_decode(64, 4096, pw, tile_n=128, slot_loads=True,
                                 **(wide | dict(allow_unverified=False))).slot_loads
  with pytest.raises(NotImplementedError, match="slot_loads .* allow_unverified"):
    decode_plan.plan_decode(64, 4096, weight_shape("mxfp4", 4096, 4096), tile_n=128,
                            slot_loads=True, **(wide | dict(allow_unverified=False)))
  with pytest.raises(ValueError, match="needs fused_sum=True"):
    decode_plan.plan_decode(64, 4096, pw, tile_n=128, slot_loads=True,
                            **(wide | dict(fused_sum=False)))
  with pytest.raises(ValueError, match="1 slot"):  # one slot a tile: nothing to load
    decode_plan.plan_decode(1, 4096, pw, tile_n=128, gps=2, steps=4, splits=1, fused_sum=True,
                            slot_loads=True, allow_unverified=True)


def test_slot_stores_plan_and_errors():
  # `slot_stores` (session 44; INT4 g128 checked on a GPU in session 45): slots 1.. go out by
  # plain stores and a release; only for a fused sum of several slots, off by default, and
  # gated per case until a GPU has checked it
  from pallas_kernels.wo_matmul import decode_plan
  pw = weight_shape("int4_g128", 4096, 4096)
  wide = dict(tile_n=128, gps=2, steps=3, compute_wgs=2, stream_k=1, fused_sum=True)
  plan = decode_plan.plan_decode(64, 4096, pw, slot_stores=True, slot_loads=True, **wide)
  assert plan.slot_stores and plan.slot_loads
  assert not decode_plan.plan_decode(64, 4096, pw, **wide).slot_stores
  unchecked = weight_shape("mxfp4", 4096, 4096)
  assert (unchecked.fmt, 32) not in decode_plan.SLOT_STORES_VERIFIED
  with pytest.raises(NotImplementedError, match="slot_stores for mxfp4 group 32 .*"
                                                "allow_unverified"):
    decode_plan.plan_decode(64, 4096, unchecked, slot_stores=True, **wide)
  with pytest.raises(ValueError, match="slot_stores moves .* needs fused_sum=True"):
    decode_plan.plan_decode(64, 4096, pw, slot_stores=True, allow_unverified=True,
                            **(wide | dict(fused_sum=False)))
  with pytest.raises(ValueError, match="1 slot"):  # one slot a tile: nothing to store
    decode_plan.plan_decode(1, 4096, pw, tile_n=128, gps=2, steps=4, splits=1, fused_sum=True,
                            slot_stores=True, allow_unverified=True)


def test_nf4_byte_codes_split_to_fill_the_sms():
  # NF4 stored as bitsandbytes' byte codes takes four K splits, measured at N = 28672 (session
  # 5); where N's 128-row tiles are fewer than 32 four splits would leave SMs idle (N = 3072: 96
  # CTAs on 132), and the plan's split that fills them runs instead
  from pallas_kernels.wo_matmul import decode_plan
  for n, want in [(28672, 4), (4096, 4), (3072, 8), (1024, 16)]:
    pw = weight_shape("nf4_g64", 4096, n)
    assert not pw.scale_bf16  # the byte layout, not the slot codes
    p = decode_plan.plan_decode(1, 4096, pw, allow_unverified=True)
    assert p.schedule.slots == want and math.prod(p.schedule.grid) >= 112, n
