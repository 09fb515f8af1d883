"""`_ptx.e2m1_pairs`, the MXFP4 row kernel's E2M1 codes two elements an operation (`pair_e2m1`).

The kernel's instructions only lower on the CPU, so their algorithm runs here through a numpy
model of each PTX instruction (`e2m1_pairs_model`, step for step as `_ptx.E2M1_PAIRS_ASM`): on
every bf16 value at every MX block scale against the E2M1 grid in float64, and end to end
against `mxjax.quantize` on ties, special values and NaN / Inf blocks, row-wise and through the
column kernel's twin (`pair_e2m1` there, gated). The GPU benchmark checks the kernel itself bit
for bit (`mosaic_gpu.PAIR_E2M1_VERIFIED`: matched on the H100 in session 34).
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
def e2m1_pairs_model(words, k1, k2):
  """numpy model of `_ptx.E2M1_PAIRS_ASM`, one line an instruction group: uint32 (n,) pair
  words and scale words -> int32 packed code bytes."""
  u = lambda c: np.uint32(c)
  mul = lambda a, b: _simd(lambda x, y: _bf16_rn(_bf16(x) * _bf16(y)), a, b)
  fma = lambda a, b, c: _simd(lambda x, y, z: _bf16_rn(_bf16(x) * _bf16(y) + _bf16(z)), a, b, c)
  s16max = lambda a, b: _simd(lambda x, y: np.maximum(x.view(np.int16), y.view(np.int16))
                              .view(np.uint16), a, b)
  u16min = lambda a, b: _simd(np.minimum, a, b)
  u16max = lambda a, b: _simd(np.maximum, a, b)
  w = words.astype(np.uint32)
  full = lambda c: np.full_like(w, c)
  v = mul(mul(w, k1.astype(np.uint32)), k2.astype(np.uint32))
  a = (v & u(0x7FFF7FFF)) + u(0x007F007F)
  a = s16max(a, full(0x007F007F))
  a = u16min(a, full(0x413F413F))
  a = a - u(0x007F007F)
  t = u16max((a >> u(7)) & u(0x00FF00FF), full(0x007F007F))
  k = (u(0x00FF00FF) - t) << u(7)
  m = (t << u(1)) + u(0x42424242)
  a = fma(a, k, m) & u(0x00070007)
  a = a | ((w >> u(12)) & u(0x00080008))
  a = a | (a >> u(12))
  return (a & u(0xFF)).astype(np.int32)


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


def test_asm_is_the_models_instructions():
  # The model above walks these instructions in this order (a changed asm string fails here
  # until the model is changed with it).
  ops = [s.split()[0] for s in _ptx.E2M1_PAIRS_ASM.strip("{} ").split(";")[1:] if s.strip()]
  assert ops == ["mul.rn.bf16x2", "mul.rn.bf16x2", "and.b32", "add.u32", "mov.b32",
                 "max.s16x2", "mov.b32", "min.u16x2", "sub.u32", "shr.u32", "and.b32",
                 "mov.b32", "max.u16x2", "mov.b32", "sub.u32", "shl.b32", "shl.b32", "add.u32",
                 "fma.rn.bf16x2", "and.b32", "shr.u32", "and.b32", "or.b32", "shr.u32",
                 "or.b32", "and.b32"], ops


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
  model = lambda w, a, b: jax.pure_callback(
      lambda *v: e2m1_pairs_model(*(np.asarray(u) for u in v)).reshape(np.shape(v[0])),
      jax.ShapeDtypeStruct(w.shape, jnp.int32), w, a, b, vmap_method="broadcast_all")
  got = quantize_columns_portable(x, "mxfp4", interpret=True, e2m1_pair=model)
  want = mxjax.quantize(x.T, "mxfp4")
  np.testing.assert_array_equal(np.asarray(got.codes), np.asarray(want.codes))
  np.testing.assert_array_equal(np.asarray(got.scale), np.asarray(want.scale))
