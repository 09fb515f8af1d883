"""`_ptx.e2m1_pairs` and `_ptx.e2m1_scaled_pairs`: the quantize kernels' E2M1 codes two elements
an operation (`pair_e2m1`), MXFP4's on x's bf16 pair words and NVFP4's on the scaled elements
rounded to odd into bf16 pairs.

The kernels' instructions only lower on the CPU, so their algorithms run here through numpy
models of each PTX instruction (`e2m1_pairs_model`, `e2m1_scaled_pairs_model`, step for step as
the asm strings): on every bf16 value at every MX block scale (at many NVFP4 factors) against
the E2M1 grid in float64, and end to end against `mxjax.quantize` on ties, special values and
NaN / Inf blocks, row-wise and through the column kernel's twin. The GPU benchmark checks the
kernels themselves bit for bit (`mosaic_gpu.PAIR_E2M1_VERIFIED`, `mosaic_gpu_columns.
PAIR_E2M1_COLUMNS_VERIFIED`: matched on the H100 in sessions 34-35).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import mxjax
from pallas_kernels import _ptx
from pallas_kernels.quantize import schemes as S
from pallas_kernels.quantize.portable import bf16_pairs
from pallas_kernels.quantize.portable import unpair_bf16
from pallas_kernels.quantize.testdata import rounding_midpoints
from pallas_kernels.quantize.testdata import special_values

M16 = np.uint32(0xFFFF)


def _halves(u):
  return (u & M16).astype(np.uint16), (u >> 16).astype(np.uint16)


def _join(lo, hi):
  return lo.astype(np.uint32) | (hi.astype(np.uint32) << np.uint32(16))


def _bf16_rn(f64):
  """Round-half-even of float64 values to bf16 bit patterns, subnormals kept (the f32 step is
  exact for every value these instructions make: products of a bf16 and a power of two, and
  192 + 2e plus such a product below 4)."""
  return f64.astype(np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


def _bf16(h):
  with np.errstate(invalid="ignore"):  # NaN halves
    return h.view(ml_dtypes.bfloat16).astype(np.float64)


def _simd(op, *words):
  """A bf16x2 or 16x2 instruction: `op` on the low halves and on the high halves."""
  return _join(*(op(*hs) for hs in zip(*(_halves(w) for w in words))))


@np.errstate(invalid="ignore", over="ignore")  # NaN and Inf halves are cast quietly
def _core_model(v, signs):
  """numpy model of `_ptx._e2m1_core`, one line an instruction group: uint32 pair words v and
  the words whose bits 15 / 31 give the codes' signs -> int32 packed code bytes."""
  u = lambda c: np.uint32(c)
  fma = lambda a, b, c: _simd(lambda x, y, z: _bf16_rn(_bf16(x) * _bf16(y) + _bf16(z)), a, b, c)
  s16max = lambda a, b: _simd(lambda x, y: np.maximum(x.view(np.int16), y.view(np.int16))
                              .view(np.uint16), a, b)
  u16min = lambda a, b: _simd(np.minimum, a, b)
  u16max = lambda a, b: _simd(np.maximum, a, b)
  full = lambda c: np.full_like(v, c)
  a = (v & u(0x7FFF7FFF)) + u(0x007F007F)
  a = s16max(a, full(0x007F007F))
  a = u16min(a, full(0x413F413F))
  a = a - u(0x007F007F)
  t = u16max((a >> u(7)) & u(0x00FF00FF), full(0x007F007F))
  k = (u(0x00FF00FF) - t) << u(7)
  m = (t << u(1)) + u(0x42424242)
  a = fma(a, k, m) & u(0x00070007)
  a = a | ((signs >> u(12)) & u(0x00080008))
  a = a | (a >> u(12))
  return (a & u(0xFF)).astype(np.int32)


@np.errstate(invalid="ignore", over="ignore")
def e2m1_pairs_model(words, k1, k2):
  """numpy model of `_ptx.E2M1_PAIRS_ASM`: uint32 (n,) pair words and scale words -> int32
  packed code bytes (the two bf16x2 multiplies, then the core with x's signs)."""
  mul = lambda a, b: _simd(lambda x, y: _bf16_rn(_bf16(x) * _bf16(y)), a, b)
  w = words.astype(np.uint32)
  v = mul(mul(w, k1.astype(np.uint32)), k2.astype(np.uint32))
  return _core_model(v, w)


@np.errstate(invalid="ignore", over="ignore")
def e2m1_scaled_pairs_model(lo, hi, r):
  """numpy model of `_ptx.E2M1_SCALED_PAIRS_ASM`: float32 lo, hi, r -> int32 packed code bytes
  (the float32 products, their high halves by `prmt`, each half's last bit set where its low
  half is not 0 by `min.u16x2` with 1, then the core with the products' signs)."""
  u = lambda c: np.uint32(c)
  e, o = ((np.asarray(a, np.float32) * np.asarray(r, np.float32)).view(np.uint32)
          for a in (lo, hi))
  v = (e >> u(16)) | (o & u(0xFFFF0000))  # prmt 0x7632
  t = (e & u(0xFFFF)) | (o << u(16))  # prmt 0x5410
  v = v | _simd(np.minimum, t, np.full_like(t, 0x00010001))
  return _core_model(v, v)


def _split(e):
  """e -> (e1, e2), e1 = floor(e / 2): `schemes.block_state`'s two factors' exponents."""
  e1 = e >> 1
  return e1, e - e1


def _scale_words(b: int):
  """The MX block state's factors 2^e1, 2^e2 (e = 127 - b) as the kernel's scale words."""
  return tuple(np.asarray(S.pair_scale_word(S._exp2i(e))) for e in _split(jnp.int32(127 - b)))


E2M1_GRID = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])


def _e2m1_reference(y, sign):
  """E2M1 codes of float64 y by the grid itself: nearest point of min(|y|, 6), a tie to the
  even code, a NaN 0; `sign` (0 / 1) the code's sign bit."""
  a = np.minimum(np.abs(y), 6.0)
  hi = np.clip(np.searchsorted(E2M1_GRID, np.nan_to_num(a)), 0, 7)
  lo = np.clip(hi - 1, 0, 7)
  dlo, dhi = a - E2M1_GRID[lo], E2M1_GRID[hi] - a
  code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
  return np.where(np.isnan(a), 0, code) | (sign << 3)


def test_every_bf16_value_at_every_block_scale():
  # 2^16 values (each the even and the odd half of some word) at each of the 256 E8M0 scales,
  # subnormals, infinities and NaNs of both signs included, against the grid in float64 (the
  # GPU's semantics: subnormals kept, where XLA's CPU arithmetic flushes them; design.md)
  lo = np.arange(1 << 16, dtype=np.uint32)
  hi = (lo * np.uint32(40503) + np.uint32(7)) & M16  # every value once, in another order
  words = lo | (hi << np.uint32(16))
  xs = [_bf16(h.astype(np.uint16)) for h in (lo, hi)]
  signs = [(h >> 15).astype(np.int64) for h in (lo, hi)]
  bad = 0
  for b in range(256):
    k1, k2 = _scale_words(b)
    got = e2m1_pairs_model(words, np.broadcast_to(k1, words.shape),
                           np.broadcast_to(k2, words.shape))
    want = [_e2m1_reference(x * 2.0 ** (127 - b), s) for x, s in zip(xs, signs)]
    bad += int(np.sum(got != (want[0] | (want[1] << 4))))
  assert bad == 0


@pytest.mark.parametrize("data", ["ties", "special"])
def test_matches_mxjax_quantize(data):
  # End to end: each block's factors from its amax (`block_state`), the model's codes against
  # mxjax's MXFP4 codes; special values hold zeros, max normals, infinities and NaNs of both
  # signs (NaN and Inf blocks: MXFP4 keeps an Inf as +-6 beside a NaN). Subnormals go to +-0
  # here: XLA's CPU flushes them where the GPU keeps them (the test above covers them).
  x = (rounding_midpoints(3, 64, 256) if data == "ties"
       else special_values(4, 64, 256, nonfinite=True).astype(jnp.bfloat16))
  x = x.at[5, 7].set(-jnp.nan).at[5, 9].set(-jnp.inf).at[9, 40].set(jnp.inf)
  x = jnp.where(jnp.abs(x.astype(jnp.float32)) < np.finfo(np.float32).tiny, x * 0, x)
  sch = S.get_scheme("mxfp4")
  words = bf16_pairs(x, sch.block)  # (blocks, 16)
  state = S.block_state(sch, S.block_amax(*unpair_bf16(words)), None, div=jnp.divide)
  k1, k2 = (np.asarray(S.pair_scale_word(f))[:, None] for f in state[1:])
  w = np.asarray(words)
  got = e2m1_pairs_model(w, np.broadcast_to(k1, w.shape), np.broadcast_to(k2, w.shape))
  want = mxjax.quantize(x, "mxfp4")
  np.testing.assert_array_equal(got.astype(np.uint8).reshape(want.codes.shape),
                                np.asarray(want.codes))


CORE_OPS = ["and.b32", "add.u32", "mov.b32", "max.s16x2", "mov.b32", "min.u16x2", "sub.u32",
            "shr.u32", "and.b32", "mov.b32", "max.u16x2", "mov.b32", "sub.u32", "shl.b32",
            "shl.b32", "add.u32", "fma.rn.bf16x2", "and.b32", "shr.u32", "and.b32", "or.b32",
            "shr.u32", "or.b32", "and.b32"]


@pytest.mark.parametrize("asm, front, signs", [
    (_ptx.E2M1_PAIRS_ASM, ["mul.rn.bf16x2", "mul.rn.bf16x2"], "$1"),
    (_ptx.E2M1_SCALED_PAIRS_ASM, ["mul.rn.f32", "mul.rn.f32", "prmt.b32", "prmt.b32",
                                  "mov.b32", "min.u16x2", "or.b32"], "v")])
def test_asm_is_the_models_instructions(asm, front, signs):
  # The models above walk these instructions in this order, the signs from the register each
  # model takes them from (a changed asm string fails here until its model is changed with it).
  steps = [s.split() for s in asm.strip("{} ").split(";")[1:] if s.strip()]
  assert [s[0] for s in steps] == front + CORE_OPS, steps
  assert steps[len(front) + 18][2] == f"{signs},", steps  # `shr.u32 t, <signs>, 12`
  if "prmt.b32" in front:  # the high halves, then the low halves: (e >> 16) | (o & ~0xFFFF) ...
    assert [s[-1] for s in steps if s[0] == "prmt.b32"] == ["0x7632", "0x5410"]


def _scaled_pairs_reference(lo, hi, r):
  """The float32 encoder's codes (`schemes._e2m1_code` of RN_f32(x r)), by the grid in float64:
  packed code bytes of float32 lo, hi at float32 factor r."""
  with np.errstate(invalid="ignore", over="ignore"):
    v = [np.asarray(a, np.float32) * np.float32(r) for a in (lo, hi)]
  c = [_e2m1_reference(p.astype(np.float64), np.signbit(p).astype(np.int64)) for p in v]
  return c[0] | (c[1] << 4)


def _nvfp4_factors():
  """float32 factors r the NVFP4 encoder meets: RN(inv_t / s_b) over every positive E4M3 s_b
  at inv_t = 1 and at random inv_t, and powers of two (exact ties wherever x sits on one)."""
  sb = np.arange(1, 127, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
  rng = np.random.default_rng(35)
  inv_t = np.float32(2.0) ** rng.uniform(-40, 40, 110).astype(np.float32)
  picks = rng.integers(0, sb.size, inv_t.size)
  return np.concatenate([np.float32(1.0) / sb, inv_t / sb[picks],
                         np.float32(2.0) ** np.arange(-30, 31, 3, dtype=np.float32)])


def test_scaled_pairs_every_bf16_value_at_many_factors():
  # NVFP4's pairs (`_ptx.e2m1_scaled_pairs`): the products rounded to odd into bf16 keep their
  # side of every E2M1 midpoint, so the codes are the float32 encoder's. Every bf16 value (as
  # the even and as the odd element) at each factor, subnormals (kept, as on the GPU),
  # infinities and NaNs (their products' signs; NVFP4 masks NaN blocks) included.
  lo = np.arange(1 << 16, dtype=np.uint32)
  hi = (lo * np.uint32(40503) + np.uint32(7)) & M16
  xs = [(h << np.uint32(16)).view(np.float32) for h in (lo, hi)]
  bad = 0
  for r in _nvfp4_factors():
    got = e2m1_scaled_pairs_model(*xs, r)
    bad += int(np.sum(got != _scaled_pairs_reference(*xs, r)))
  assert bad == 0


def test_scaled_pairs_midpoint_neighbours():
  # float32 products one ulp either side of each E2M1 midpoint and grid point (and on them),
  # where rounding to bf16 by nearest would land on the midpoint and tie wrongly
  pts = np.array([0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6], np.float32)
  v = np.concatenate([np.nextafter(pts, np.float32(0)), pts, np.nextafter(pts, np.float32(9))])
  v = np.concatenate([v, -v]).astype(np.float32)
  got = e2m1_scaled_pairs_model(v, v[::-1].copy(), np.float32(1.0))
  np.testing.assert_array_equal(got, _scaled_pairs_reference(v, v[::-1], np.float32(1.0)))


def _model_callback(model):
  """A numpy model as a jnp function of equally shaped arrays (for the jitted twin)."""
  return lambda *a: jax.pure_callback(
      lambda *v: model(*(np.asarray(u) for u in v)).reshape(np.shape(v[0])),
      jax.ShapeDtypeStruct(a[0].shape, jnp.int32), *a, vmap_method="broadcast_all")


def _finite_nvfp4_data():
  """bf16 (64, 256) ties and special values, finite (a NaN or Inf anywhere makes NVFP4's
  tensor scale useless: every code 0), subnormals to +-0 (XLA's CPU flushes them)."""
  x = jnp.concatenate([rounding_midpoints(3, 32, 256),
                       special_values(4, 32, 256).astype(jnp.bfloat16)])
  return jnp.where(jnp.abs(x.astype(jnp.float32)) < np.finfo(np.float32).tiny, x * 0, x)


def test_nvfp4_pairs_match_mxjax_quantize():
  # End to end, row-wise: NVFP4's block states (`block_state` with the tensor terms), the
  # model's codes through `nvfp4_pair_codes` against mxjax's NVFP4 codes
  from mxjax.formats.exact import div_rn
  x = _finite_nvfp4_data()
  sch = S.get_scheme("nvfp4")
  xe, xo = unpair_bf16(bf16_pairs(x, sch.block))  # (blocks, 8) each
  _, *ts = S.tensor_scale_terms(jnp.max(jnp.abs(x.astype(jnp.float32))), div=div_rn)
  state = S.block_state(sch, S.block_amax(xe, xo), tuple(ts), div=div_rn)
  got = S.nvfp4_pair_codes(state, xe, xo, _model_callback(e2m1_scaled_pairs_model))
  want = mxjax.quantize(x, "nvfp4")
  np.testing.assert_array_equal(np.asarray(got).astype(np.uint8).reshape(want.codes.shape),
                                np.asarray(want.codes))



@pytest.mark.parametrize("scale", [1.0, 1 / 3, 1e-3])
def test_nvfp4_pairs_given_tensor_amax(scale):
  # A given tensor amax (mxjax's static amax) keeps NaN / Inf blocks beside finite ones (a NaN
  # block's codes 0, an Inf one's +-6 with its other elements scaled by 448's factor) and, a
  # third or a thousandth of the true amax, saturates scaled values above 6: the pairs' clamp and
  # NaN paths
  import dataclasses
  from mxjax.formats.exact import div_rn
  x = special_values(5, 32, 256, nonfinite=True).astype(jnp.bfloat16)
  x = jnp.where(jnp.abs(x.astype(jnp.float32)) < np.finfo(np.float32).tiny, x * 0, x)
  finite = jnp.where(jnp.isfinite(x), jnp.abs(x.astype(jnp.float32)), 0)
  amax = float(jnp.max(finite)) * scale
  sch = S.get_scheme("nvfp4")
  xe, xo = unpair_bf16(bf16_pairs(x, sch.block))
  _, *ts = S.tensor_scale_terms(jnp.float32(amax), div=div_rn)
  state = S.block_state(sch, S.block_amax(xe, xo), tuple(ts), div=div_rn)
  got = S.nvfp4_pair_codes(state, xe, xo, _model_callback(e2m1_scaled_pairs_model))
  static = dataclasses.replace(mxjax.schemes.get("nvfp4"),
                               scale_choice=mxjax.schemes.ScaleChoice.STATIC, static_amax=amax)
  want = mxjax.quantize(x, static)
  np.testing.assert_array_equal(np.asarray(got).astype(np.uint8).reshape(want.codes.shape),
                                np.asarray(want.codes))


def test_column_twin_pair_e2m1():
  # The column kernel's `pair_e2m1` decomposition: its even and odd row tiles made into pair
  # words (the low half the even row, as `_ptx.bf16_pair_word`'s permute), each row of x.T's
  # factors as scale words, the model's code bytes where the GPU runs the asm: mxjax's codes of
  # x.T on ties, special values and NaN / Inf blocks (subnormals to +-0: XLA's CPU flushes them)
  from pallas_kernels.quantize.portable_columns import quantize_columns_portable
  x = jnp.concatenate([rounding_midpoints(8, 64, 256), special_values(
      2, 64, 256, nonfinite=True).astype(jnp.bfloat16)]).T  # (256, 128): x.T's rows are these
  x = x.at[77, 9].set(-jnp.nan).at[70, 9].set(-jnp.inf)
  x = jnp.where(jnp.abs(x.astype(jnp.float32)) < np.finfo(np.float32).tiny, x * 0, x)
  got = quantize_columns_portable(x, "mxfp4", interpret=True,
                                  e2m1_pair=_model_callback(e2m1_pairs_model))
  want = mxjax.quantize(x.T, "mxfp4")
  np.testing.assert_array_equal(np.asarray(got.codes), np.asarray(want.codes))
  np.testing.assert_array_equal(np.asarray(got.scale), np.asarray(want.scale))


def test_column_twin_pair_e2m1_nvfp4():
  # The column kernel's NVFP4 `pair_e2m1`: the even and odd row tiles and each row of x.T's
  # factor through the scaled pairs' model: mxjax's codes and scales of x.T
  from pallas_kernels.quantize.portable_columns import quantize_columns_portable
  x = _finite_nvfp4_data().T  # (256, 64)
  got = quantize_columns_portable(x, "nvfp4", tile_k=64, interpret=True,
                                  e2m1_pair=_model_callback(e2m1_scaled_pairs_model))
  want = mxjax.quantize(x.T, "nvfp4")
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
