"""The `fp8_x` decode's split of x for INT8, FP8 and MXFP4 weights as one Pallas kernel.

Why: with `fp8_x` on INT8 weights the decode's Mosaic kernel alone is inside the 1.8x target
(H200, 8192 x 28672, M = 1: 56.2 us against 60.9), and what misses it is XLA's split of x before
it, five small kernels of ~5.9 us in all (session 24's profile, docs/kernels.md): fewer kernels,
not smaller ones; FP8's split takes 3-6. Each kernel here is the same arithmetic in one launch,
writing the decode's inputs in their final form: one body over refs, run as a Mosaic GPU kernel
on the GPU and as a plain `pl.pallas_call` in the interpreter on the CPU (`_call`). The byte
formats' weights are the A operand as stored, in K order; the 4-bit ones want x permuted within
each 32 (`fp8_x.a_order`), a gather XLA does before the kernel for MXFP4 (two kernels where
there were 3-6). INT4 / UINT4, whose fold also wants x's group sums, keep XLA's split.

`int8_split_kernel` (`fp8_x.int8_split`): each program takes `CHUNKS` chunks of 128 of every
row (an (M, 2, 256) block): per chunk and row the amax, its power of two 2^e from the float32
bits (no frexp), v = RN(x 2^(8 - e)), hi = floor((v + 128) / 256) by an arithmetic shift, lo = v
- 256 hi. Its t block is CHUNKS x cols float32 (cols a multiple of 32: 128 elements at least,
the fewest a Mosaic GPU store of a WG_STRIDED array takes), assembled by selects against
`slots`, an iota input (Mosaic GPU wants a layout for an in-kernel iota, which the interpreter
has no use for). A reduction's scalar is broadcast before any bit work on it (`_exponent`):
Mosaic GPU's Warpgroup lowering cannot bitcast a scalar, and the body keeps to what both of
its lowerings take.

`e4m3_split_kernel` (`fp8_x.split_x` for FP8 / MXFP4 weights): a program a row, the whole row (1,
K / 256, 256): its amax, s_x = 2^(e - 8) from the bits, hi = E4M3(x / s_x), lo = E4M3(x / s_x
- hi) by the cast (|x / s_x| < 256: no overflow; a non-finite x made NaN first, as the
reference's non-saturating encode makes it), and s_x.

Both bit for bit the XLA split in the interpreter (tests/kernels/test_x_split.py; FP8's rows
holding Inf or NaN aside, where only the NaN that reaches the output is the contract), and the
decode's result unchanged with them on the H100 (session 27: INT8 M = 1 86.0 -> 84.4 us, FP8
84.2 -> 83.4; `decode_plan.SPLIT_KERNEL_VERIFIED`; MXFP4 unchecked).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels.wo_matmul.fp8_x import a_order
from pallas_kernels.wo_matmul.fp8_x import E4M3
from pallas_kernels.wo_matmul.fp8_x import INT8_CHUNK
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat

CHUNKS = 4  # chunks of 128 a program: its t block, CHUNKS x 32 float32, is 128 elements
MAX_ROWS = 16  # the kernel unrolls its rows (M x CHUNKS row-chunks a program)
# x and x8 seen as (rows, K / 256, 256): a TMA copy moves at most 256 elements a dimension
_ROW = 256
_PER_ROW = _ROW // INT8_CHUNK
_MANT = 0x7FFFFF
_ABOVE_127 = 0x7E0000  # amax's mantissa field above 127/64 - 1: amax > 127 2^(e0 - 7)


def _call(body, programs: int, in_specs, out_specs, out_shape, interpret: Any):
  """`body` (refs in, refs out) over `programs` programs of one block each: a plain
  `pl.pallas_call` in the interpreter; on the GPU a Mosaic GPU kernel of a CTA a program, its
  blocks brought in and out by TMA (`plgpu.emit_pipeline` of one step). Not a plain
  `pallas_call` there: jax 0.11.2 lowers that to Triton (session 27, H100), which has no
  `round` and wants power-of-two blocks."""
  if interpret:
    return _compat.pallas_call(body, grid=(programs,), in_specs=in_specs, out_specs=out_specs,
                               out_shape=out_shape, interpret=interpret)
  plgpu = _compat.plgpu_module()

  def kernel(*refs):
    c = lax.axis_index("c")
    spec = lambda s: plgpu.BlockSpec(s.block_shape, lambda _: s.index_map(c))
    plgpu.emit_pipeline(lambda _, *blocks: body(*blocks), grid=(1,),
                        in_specs=[spec(s) for s in in_specs],
                        out_specs=[spec(s) for s in out_specs])(*refs)

  return _compat.mgpu_kernel(kernel, out_type=tuple(out_shape), grid=(programs,),
                             grid_names=("c",))


def _pow2(e: jax.Array) -> jax.Array:
  """2^e as float32 for an int32 e in [-126, 127], from its bits (exact; no exp2)."""
  return lax.bitcast_convert_type((e + 127) << 23, jnp.float32)


def _exponent(amax: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A chunk's amax (float32, >= 0, any shape: elementwise) -> (e, finite): its power of two
  2^e, as `fp8_x.int8_split` finds it (that frexp's exponent e0 is the biased exponent E - 126
  here), and whether the chunk is finite."""
  bits = lax.bitcast_convert_type(amax, jnp.int32)
  biased = bits >> 23  # amax >= 0: the sign bit is clear
  e = biased - 133 + ((bits & _MANT) > _ABOVE_127).astype(jnp.int32)
  e = jnp.where(amax == 0, -7, jnp.clip(e, -118, 127))  # frexp(0) = (0, 0): e0 - 7 = -7
  return e, biased != 255


def _codes(xf: jax.Array, amax: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A row-chunk (1, 1, 128) float32 and its amax broadcast to it -> (hi, lo) int32: v = RN(x
  2^(8 - e)), hi = floor((v + 128) / 256) by an arithmetic shift, lo = v - 256 hi; zeros for
  a chunk that holds Inf or NaN."""
  e, finite = _exponent(amax)
  v = lax.round(jnp.where(finite, xf, 0.0) * _pow2(8 - e), lax.RoundingMethod.TO_NEAREST_EVEN)
  vi = v.astype(jnp.int32)  # |v| <= 127 * 256: exact
  hi = (vi + 128) >> 8
  return hi, vi - (hi << 8)


def _multipliers(amax: jax.Array, lo: jax.Array) -> jax.Array:
  """A chunk's amax broadcast to t's block -> its multipliers there: 2^e where `lo` is false
  (the hi row's column), 2^(e - 8) where true; NaN for a chunk that holds Inf or NaN."""
  e, finite = _exponent(amax)
  return jnp.where(finite, _pow2(e - jnp.where(lo, 8, 0)), jnp.float32(jnp.nan))


def _kernel(x_ref, slots_ref, x8_ref, t_ref, *, m: int):
  slots = slots_ref[...]  # (CHUNKS, cols): c * cols + column
  cols = slots.shape[1]
  lo = (slots & 1) == 1  # odd columns: lo rows'
  # columns past 2 M are zero rows': e = -7 there, as `int8_split` pads them
  t = jnp.where(lo, jnp.float32(2.0**-15), jnp.float32(2.0**-7))
  for c in range(CHUNKS):
    at = (c // _PER_ROW, slice(c % _PER_ROW * INT8_CHUNK, (c % _PER_ROW + 1) * INT8_CHUNK))
    for r in range(m):
      xf = x_ref[r:r + 1, at[0]:at[0] + 1, at[1]].astype(jnp.float32)
      # NaN counted as Inf, as `int8_split` does: a max need not propagate NaN
      amax = jnp.max(jnp.where(jnp.isnan(xf), jnp.inf, jnp.abs(xf)))
      hi, lo_codes = _codes(xf, jnp.broadcast_to(amax, xf.shape))
      x8_ref[2 * r:2 * r + 1, at[0]:at[0] + 1, at[1]] = hi.astype(jnp.int8)
      x8_ref[2 * r + 1:2 * r + 2, at[0]:at[0] + 1, at[1]] = lo_codes.astype(jnp.int8)
      t = jnp.where((slots >> 1) == (c * cols + 2 * r) >> 1,
                    _multipliers(jnp.broadcast_to(amax, slots.shape), lo), t)
  t_ref[...] = t


def int8_split_kernel(x: jax.Array, cols: int, *, interpret: Any = False
                      ) -> tuple[jax.Array, jax.Array]:
  """`fp8_x.int8_split(x, cols)` in one kernel: x (M, K) bf16 or f32 -> (x8 (2 M, K) int8,
  rows hi_0, lo_0, hi_1, ...; t (K / 128, cols) float32, the multipliers of each chunk's hi /
  lo row, NaN for a chunk holding Inf or NaN, columns past 2 M those of zero rows).

  Args:
    x: (M, K), M <= `MAX_ROWS`, K a multiple of 128 * `CHUNKS`.
    cols: t's columns: even, at least 2 M, a multiple of 32 (`decode_plan.xsum_cols`).
    interpret: run in the Pallas interpreter (the CPU).
  """
  m, k = x.shape
  span = INT8_CHUNK * CHUNKS
  if m > MAX_ROWS:
    raise NotImplementedError(f"int8_split_kernel unrolls its rows: M={m} > {MAX_ROWS}; use "
                              "fp8_x.int8_split (XLA)")
  if k % span:
    raise ValueError(f"int8_split_kernel takes K in blocks of {span} (chunks of {INT8_CHUNK}, "
                     f"{CHUNKS} a program): K={k} is not a multiple; use fp8_x.int8_split")
  if cols < 2 * m or cols % 32:
    raise ValueError(f"int8_split_kernel: cols={cols} must be a multiple of 32 and at least "
                     f"2 M = {2 * m}")
  slots = np.arange(CHUNKS * cols, dtype=np.int32).reshape(CHUNKS, cols)  # a constant
  rows = (CHUNKS // _PER_ROW, _ROW)  # a program's K as rows of 256 (free reshapes)
  x8, t = _call(
      lambda *refs: _kernel(*refs, m=m),
      k // span,
      [pl.BlockSpec((m, *rows), lambda j: (0, j, 0)),
       pl.BlockSpec((CHUNKS, cols), lambda j: (0, 0))],
      [pl.BlockSpec((2 * m, *rows), lambda j: (0, j, 0)),
       pl.BlockSpec((CHUNKS, cols), lambda j: (j, 0))],
      [jax.ShapeDtypeStruct((2 * m, k // _ROW, _ROW), jnp.int8),
       jax.ShapeDtypeStruct((k // INT8_CHUNK, cols), jnp.float32)],
      interpret,
  )(x.reshape(m, k // _ROW, _ROW), slots)
  return x8.reshape(2 * m, k), t


def _sx_exponent(amax: jax.Array) -> jax.Array:
  """A row's amax (float32 >= 0, broadcast to any shape: elementwise) -> the exponent of its
  s_x: amax in [2^(e - 1), 2^e) for e = E - 126, s_x = 2^(e - 8) held a normal float32, and
  2^-8 for a zero row (frexp(0)'s e = 0, as `fp8_x.split_x` has it)."""
  bits = lax.bitcast_convert_type(amax, jnp.int32)
  return jnp.where(bits == 0, -8, jnp.maximum((bits >> 23) - 134, -126))


def _e4m3_kernel(x_ref, x8_ref, sx_ref):
  xf = x_ref[...].astype(jnp.float32)  # (1, K / 256, 256): one row
  amax = jnp.max(jnp.where(jnp.isnan(xf), jnp.inf, jnp.abs(xf)))
  xs = xf * _pow2(-_sx_exponent(jnp.broadcast_to(amax, xf.shape)))  # exact: |xs| < 256
  finite = jnp.abs(xs) < jnp.inf  # (Mosaic GPU lowers no is_finite)
  hi = jnp.where(finite, xs, jnp.float32(jnp.nan)).astype(E4M3)
  x8_ref[0:1] = hi
  x8_ref[1:2] = (xs - hi.astype(jnp.float32)).astype(E4M3)
  sx_ref[...] = _pow2(_sx_exponent(jnp.broadcast_to(amax, sx_ref.shape)))


def e4m3_split_kernel(x: jax.Array, *, interpret: Any = False) -> tuple[jax.Array, jax.Array]:
  """`fp8_x.split_x`'s rows and scales for FP8 weights in one kernel: x (M, K) bf16 -> (x8
  (2 M, K) float8_e4m3fn, rows hi_0, lo_0, hi_1, ...; s_x (M,) float32, each row's power of two,
  x_m = s_x (hi + lo) within 2^-10 s_x). A row holding Inf or NaN gets NaN codes.

  Args:
    x: (M, K), K a multiple of 256 (at most 65536: a TMA copy's 256 rows of 256).
    interpret: run in the Pallas interpreter (the CPU).
  """
  m, k = x.shape
  if k % _ROW or k // _ROW > 256:
    raise ValueError(f"e4m3_split_kernel takes a row of K = 256 r (r <= 256) in one program: "
                     f"K={k}; use fp8_x.split_x")
  x8, sx = _call(
      _e4m3_kernel,
      m,
      [pl.BlockSpec((1, k // _ROW, _ROW), lambda r: (r, 0, 0))],
      [pl.BlockSpec((2, k // _ROW, _ROW), lambda r: (r, 0, 0)),
       pl.BlockSpec((1, 128), lambda r: (r, 0))],
      [jax.ShapeDtypeStruct((2 * m, k // _ROW, _ROW), E4M3),
       jax.ShapeDtypeStruct((m, 128), jnp.float32)],
      interpret,
  )(x.reshape(m, k // _ROW, _ROW))
  return x8.reshape(2 * m, k), sx[:, 0]


def fits(fmt: WeightFormat, m: int, k: int) -> bool:
  """Whether `split` takes an (M, K) x for `fmt`'s weights: INT8 at M <= `MAX_ROWS`, K a
  multiple of 512; FP8 and MXFP4 at K = 256 r, r <= 256."""
  if fmt is WeightFormat.INT8:
    return m <= MAX_ROWS and k % (INT8_CHUNK * CHUNKS) == 0
  return fmt in (WeightFormat.FP8, WeightFormat.MXFP4) and k % _ROW == 0 and k // _ROW <= 256


def split(x: jax.Array, pw: PackedWeight, cols: int, *, interpret: Any = False
          ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """`fp8_x.split_x(x, pw, cols)` by one kernel for INT8 / FP8 / MXFP4 weights (`fits`): (x8
  (2 M, K) in the weights' K order, s_x (M,) float32 (INT8: ones), INT8's multipliers t
  (K / 128, cols), None for FP8 and MXFP4, which read no x operand). MXFP4's x is put in its
  weights' order first (`fp8_x.a_order`, one XLA gather): the split is elementwise given the
  row's amax, which the permutation keeps, so the rows come out as `split_x` permutes them."""
  m, k = x.shape
  if not fits(pw.fmt, m, k):
    raise ValueError(f"x_split takes INT8 (M <= {MAX_ROWS}, K a multiple of "
                     f"{INT8_CHUNK * CHUNKS}), FP8 or MXFP4 (K a multiple of {_ROW}) weights; got "
                     f"{pw.fmt.value}, M={m}, K={k}: use fp8_x.split_x")
  if pw.fmt is WeightFormat.INT8:
    x8, t = int8_split_kernel(x, cols, interpret=interpret)
    return x8, jnp.ones((m,), jnp.float32), t
  return (*e4m3_split_kernel(a_order(x, pw), interpret=interpret), None)
