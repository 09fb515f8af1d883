"""The fused quantize kernels lower for their platforms: Mosaic GPU rows and columns in every
scheme and with each of their options, and the lane-dense TPU kernel. What lowering checks and
what it cannot: tests/kernels/lowering.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest

import mxjax
from pallas_kernels import _compat
from pallas_kernels import _ptx
from pallas_kernels.quantize import api as qapi
from pallas_kernels.quantize import mosaic_gpu as mosaic_gpu_quantize
from pallas_kernels.quantize.schemes import SCHEMES
from tests.kernels.jaxprs import primitive_counts
from tests.kernels.lowering import x_shape


@pytest.mark.parametrize("transpose", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_quantize_kernels_lower(scheme, transpose):
  x = x_shape(4096, 4096)
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
  call = next(ln for ln in text.splitlines() if "custom_call" in ln)
  assert f"tensor<{rows}x{block}xui8>" in call


@pytest.mark.parametrize("scheme", sorted(qapi.GPU_STATUS))
def test_quantize_state_once_lowers(scheme):
  # `state_once`: the block state computed one row a thread (WG_STRIDED, through shared memory),
  # its divisions still PTX div.rn / fma.rn in that layout.
  gpu = lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(x, scheme, state_once=True)
  if scheme not in mosaic_gpu_quantize.STATE_ONCE_VERIFIED:
    with pytest.raises(NotImplementedError, match="allow_unverified"):
      _compat.lower_for("cuda", gpu, x_shape(4096, 4096))
    gpu = lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(x, scheme, state_once=True,
                                                            allow_unverified=True)
  text = _compat.lower_for("cuda", gpu, x_shape(4096, 4096)).as_text()
  assert "quantize_mosaic_gpu.<locals>.body" in text and "block_state_once" in text
  divides = scheme in ("fp8_e4m3_block128", "int4_g128", "nvfp4")
  assert ("div.rn.f32" in text) == divides and ("fma.rn.f32" in text) == divides
  dflt = _compat.lower_for("cuda", lambda x: mosaic_gpu_quantize.quantize_mosaic_gpu(x, scheme),
                           x_shape(4096, 4096)).as_text()  # on by default where it was faster
  assert ("block_state_once" in dflt) == (scheme in mosaic_gpu_quantize.STATE_ONCE_DEFAULT)


@pytest.mark.parametrize("scheme", sorted(qapi.GPU_STATUS))
def test_quantize_columns_state_once_lowers(scheme):
  # The column kernel's `state_once` (session 35; bit-exact for every scheme on the H100 in
  # session 36, NVFP4's default since): each block's state in one thread through shared memory,
  # a step's blocks in one round trip (two barriers a step, where the encode alone has none);
  # the scales stored by it
  from pallas_kernels.quantize import mosaic_gpu_columns as cols
  x = x_shape(1024, 1024)
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
    text = _compat.lower_for("cuda", fn, x_shape(4096, 4096), amax).as_text()
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
  x = x_shape(4096, 8192)
  fn = lambda x: tpu.quantize_tpu(x, scheme, transpose=transpose)
  assert "tpu_custom_call" in _compat.lower_for("tpu", fn, x).as_text()
  mosaic = capsys.readouterr().out.split("The Mosaic module")[-1]
  assert "tpu.strided_load" in mosaic and "tpu.strided_store" in mosaic
  for op in ("vector.shape_cast", "vector.multi_reduction", "tpu.dynamic_rotate", "tpu.matmul"):
    assert op not in mosaic, op
  tq = tpu.tile_plan(scheme, (4096, 8192), transpose)
  code_chunks = tq * SCHEMES[scheme].bits // 8 // 128
  assert mosaic.count("tpu.transpose") == code_chunks + (0 if transpose else tq // 128)


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
