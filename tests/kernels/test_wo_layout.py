"""The weight layouts the GPU kernels read (`layout.py`, `code_order.py`, `scales.py`): register
order, plain-load blocks (`thread_major`), block-contiguous tiles, FP4 scale multipliers and NF4
slot codes, each checked against Mosaic GPU's own register layouts or against `mxjax.dequantize`.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mxjax
from pallas_kernels import wo_matmul as wm
from tests.kernels.wo_formats import FORMATS
from tests.kernels.wo_formats import IDS
from tests.kernels.wo_formats import rel
from tests.kernels.wo_formats import weight
from tests.reference import fma_f32


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
  order = wm.code_order.WGMMA_ORDER
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
  # `WGStridedFragLayout.linear_thread_idxs`), and `code_order.THREAD_WORDS` stores there the word
  # that register (c, h) of thread t holds in the layout a shared-memory load gives (4-bit:
  # WGMMA_UPCAST_4X, 8-bit: WGMMA_UPCAST_2X), 2 c + h = 4 i + l, each word 32 / bits codes
  # along K of one row
  from jax.experimental.mosaic.gpu import fragmented_array as fa
  layout = {4: fa.WGMMA_LAYOUT_UPCAST_4X, 8: fa.WGMMA_LAYOUT_UPCAST_2X}[bits]
  per, row_words = 32 // bits, 128 * bits // 32
  shape = layout.registers_shape((64, 128))
  assert shape[1:5] == (row_words // 4, 1, 1, 2) and set(shape[5:]) == {1} and shape[0] == 1
  assert layout.registers_shape((128, 128))[0] == 2  # a row block of 64 a register tile
  order = wm.code_order.THREAD_WORDS[bits]
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
  _, pw = weight(preset, overrides, k=512, n=256)
  bits = wm.code_order.code_bits(pw)
  tm = wm.code_order.thread_major(pw)
  assert tm.w_threads and tm.wgmma_order == (bits == 4)
  assert tm.w_tile == wm.code_order.THREAD_BLOCK
  assert wm.code_order.thread_major(tm) is tm and tm.w.shape == (256 * 512 // 128, 128)
  ordered = wm.code_order.order_for_wgmma(pw) if bits == 4 else pw
  back = wm.code_order.untile_weight(tm)
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
  np.testing.assert_array_equal(blk, rows.reshape(-1)[wm.code_order.THREAD_WORDS[bits]])
  np.testing.assert_array_equal(np.asarray(wm.dequantize(tm)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(6), (3, 512), jnp.float32).astype(jnp.bfloat16)
  y = wm.wo_matmul(x, tm, implementation="portable", interpret=True, out_dtype=jnp.float32)
  assert rel(y, wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)) < 1e-5
  with pytest.raises(ValueError, match="nf4_slots"):
    wm.code_order.thread_major(weight(*FORMATS[IDS.index("nf4_g64")], k=512, n=256)[1])


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
  pw = jax.eval_shape(lambda w: wm.code_order.thread_major(wm.repack_qarray(mxjax.quantize(
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
  _, pw = weight(preset, overrides, k=512, n=256)
  ow = wm.code_order.order_for_wgmma(pw)
  assert ow.wgmma_order and wm.code_order.order_for_wgmma(ow) is ow
  nib = lambda p: np.asarray(p.w.astype(jnp.int8)).reshape(256, 16, 32)
  np.testing.assert_array_equal(nib(ow), nib(pw)[:, :, wm.code_order.WGMMA_ORDER])
  back = wm.code_order.logical_order(ow)
  assert not back.wgmma_order
  np.testing.assert_array_equal(nib(back), nib(pw))
  tiled = wm.code_order.tile_weight(ow, 128, 256)
  assert tiled.wgmma_order and tiled.w_tile == (128, 256)
  for p in (ow, tiled):
    np.testing.assert_array_equal(np.asarray(wm.dequantize(p)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(5), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)
  y = wm.wo_matmul(x, tiled, implementation="portable", interpret=True, out_dtype=jnp.float32)
  assert rel(y, ref) < 1e-5
  # The prefill path dequantizes in storage order (no int4 permutation) and permutes x to match.
  stored = wm.layout.dequantize_nk(tiled, stored_order=True)
  in_k_order = wm.layout.dequantize_nk(pw)
  np.testing.assert_array_equal(np.asarray(stored),
                                np.asarray(wm.code_order.storage_order(in_k_order, ow)))
  y = wm.wo_matmul(x, ow, implementation="dequant_gemm", out_dtype=jnp.float32)
  assert rel(y, wm.wo_matmul(x, pw, implementation="dequant_gemm", out_dtype=jnp.float32)) < 1e-6
  nf4 = weight(*FORMATS[IDS.index("nf4_g64")], k=512, n=256)[1]
  with pytest.raises(ValueError, match="int4-stored"):
    wm.code_order.order_for_wgmma(nf4)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_repack_stores_fp4_for_its_decode(name, monkeypatch):
  # On a GPU backend `repack` stores MXFP4 / NVFP4 for the decode the device runs at small M:
  # where it runs on bf16 tensor cores (the H100), the scale bytes as byte multipliers and the
  # codes in the halves order (session 40: 1-9% faster than the storages before); where it runs
  # on FP8 tensor cores (`configs.FP8_X_DEVICES`: the H200, whose `fp8_x` reads neither), bf16
  # multipliers (MXFP4's unfolded) in the byte-pair order. Every reader sees the same weight.
  from pallas_kernels.wo_matmul import configs
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  q, _ = weight(name, {}, k=512, n=256)
  for kind, fast in (("NVIDIA H100 80GB HBM3", True), ("NVIDIA H200", False)):
    monkeypatch.setattr(configs, "device_kind", lambda kind=kind: kind)
    pw = wm.repack_qarray(q)
    assert (pw.wgmma_order, pw.byte_multipliers, pw.scale_bf16, pw.halves_order,
            pw.mx_fold) == (True, fast, not fast, fast, False), kind
    np.testing.assert_array_equal(np.asarray(wm.dequantize(pw)), np.asarray(mxjax.dequantize(q)))


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_halves_ordered_weight(name):
  # E2M1 codes in the halves order (`order_for_wgmma(halves=True)`: `HALVES_ORDER`, register j's
  # pair in nibbles j and 4 + j of each word; what the kernels' decode reads from it:
  # test_wo_matmul.test_e2m1_register_words_hold_their_k_offsets): the permutation of each
  # aligned 32 of K the table says, undone by every reader in K order (NVFP4's groups of 16
  # index their scales through it), kept by `thread_major` and block tiles, and refused for
  # other formats and for the FP8 tensor-core decode (which reads the byte-pair order).
  from pallas_kernels.wo_matmul import decode_plan
  _, pw = weight(name, {}, k=512, n=256)
  pw = wm.code_order.logical_order(pw)
  order = wm.code_order.HALVES_ORDER
  assert sorted(order) == list(range(32))
  hw = wm.code_order.order_for_wgmma(pw, halves=True)
  assert hw.wgmma_order and hw.halves_order and wm.code_order.order_for_wgmma(hw) is hw
  nib = lambda p: np.asarray(p.w.astype(jnp.int8)).reshape(256, 16, 32)
  np.testing.assert_array_equal(nib(hw), nib(pw)[:, :, order])
  for other in (wm.code_order.order_for_wgmma(hw, halves=False),
                wm.code_order.order_for_wgmma(wm.code_order.order_for_wgmma(pw), halves=True)):
    want = nib(pw)[:, :, order if other.halves_order else wm.code_order.WGMMA_ORDER]
    np.testing.assert_array_equal(nib(other), want)
  back = wm.code_order.logical_order(hw)
  assert not back.wgmma_order and not back.halves_order
  np.testing.assert_array_equal(nib(back), nib(pw))
  x = jax.random.normal(jax.random.key(6), (3, 512), jnp.float32).astype(jnp.bfloat16)
  threads = wm.code_order.thread_major(hw)
  assert threads.halves_order and threads.w_threads
  for p in (hw, wm.code_order.tile_weight(hw, 128, 256), threads):
    np.testing.assert_array_equal(np.asarray(wm.dequantize(p)), np.asarray(wm.dequantize(pw)))
    for impl in ("portable", "dequant_gemm"):
      run = lambda q: np.asarray(wm.wo_matmul(x, q, implementation=impl, out_dtype=jnp.float32,
                                              interpret=impl == "portable"))
      assert rel(run(p), run(pw)) < 1e-6
  np.testing.assert_array_equal(
      np.asarray(wm.layout.dequantize_nk(hw, stored_order=True)),
      np.asarray(wm.code_order.storage_order(wm.layout.dequantize_nk(pw), hw)))
  int4 = weight("int4_g128", {}, k=512, n=256)[1]
  with pytest.raises(ValueError, match="E2M1"):
    wm.code_order.order_for_wgmma(int4, halves=True)
  with pytest.raises(ValueError, match="halves=False"):
    decode_plan.plan_decode(1, 512, hw, fp8_x=True, allow_unverified=True)


def test_repack_stores_register_order_on_a_gpu(monkeypatch):
  # On a GPU backend `repack` stores int4-stored weights in WGMMA_ORDER (the decode kernel
  # then skips a relayout: checked on an H200, 2026-12-04), K order elsewhere and for NF4 and
  # the 8-bit formats; `wgmma_order=` overrides. The GPU default runs the kernels either way.
  q, pw = weight("int4_g128", {}, k=512, n=256)
  assert not pw.wgmma_order  # this CPU backend
  assert wm.repack_qarray(q, wgmma_order=True).wgmma_order
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  ow = wm.repack_qarray(q)
  assert ow.wgmma_order
  np.testing.assert_array_equal(np.asarray(ow.w.astype(jnp.int8)),
                                np.asarray(wm.code_order.order_for_wgmma(pw).w.astype(jnp.int8)))
  assert not wm.repack_qarray(q, wgmma_order=False).wgmma_order
  for name in ("int8", "fp8_e4m3_rowwise"):
    assert not wm.repack_qarray(weight(*FORMATS[IDS.index(name)], k=512, n=256)[0]).wgmma_order
  nf4 = wm.repack_qarray(weight("nf4_g64", {}, k=512, n=256)[0])  # as slot codes
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
  _, pw = weight(preset, overrides, k=512, n=256)
  tw = wm.code_order.tile_weight(pw, 128, 256)
  assert tw.w_tile == (128, 256) and tw.w.shape == (256 * 512 // 256, 256 * pw.w.shape[1] // 512)
  first = np.asarray(tw.w[:128].astype(jnp.float32))  # block (0, 0) comes first, whole
  np.testing.assert_array_equal(first, np.asarray(pw.w[:128, :tw.w.shape[1]].astype(jnp.float32)))
  back = wm.code_order.untile_weight(tw)
  np.testing.assert_array_equal(np.asarray(back.w.astype(jnp.float32)),
                                np.asarray(pw.w.astype(jnp.float32)))
  np.testing.assert_array_equal(np.asarray(wm.dequantize(tw)), np.asarray(wm.dequantize(pw)))
  x = jax.random.normal(jax.random.key(4), (3, 512), jnp.float32).astype(jnp.bfloat16)
  ref = wm.wo_matmul_reference(x, pw, out_dtype=jnp.float32)
  y = wm.wo_matmul(x, tw, implementation="portable", interpret=True, out_dtype=jnp.float32)
  assert rel(y, ref) < 1e-5
  with pytest.raises(ValueError, match="does not tile"):
    wm.code_order.tile_weight(pw, 96, 256)


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
