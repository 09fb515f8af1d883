"""The codes' stored orders the GPU kernels read (`code_order.py`) and `repack`'s GPU defaults
(`layout.py`): register order, the E2M1 halves order, plain-load blocks (`thread_major`) and
block-contiguous tiles, each checked against Mosaic GPU's own register layouts or against
`mxjax.dequantize`. The scale storages are in test_wo_scales.py.
"""

from __future__ import annotations

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
