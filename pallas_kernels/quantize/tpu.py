"""Fused block quantization on TPU (Mosaic TPU): lane-dense tiles, blocks down the sublanes.

A grid step reads a tile of x in its own dtype and layout: 128 rows of the quantized array by
`tile_q` elements along the quantized axis, i.e. `tile_q / B` blocks side by side in each row
(a lane dimension of `tile_q`, a multiple of 128). Row-wise (x quantized along K) the tile is
(128, tile_q) of x; the kernel widens it to float32 and transposes it on the XLU, 128 x 128 at
a time, into a VMEM scratch (tile_q, 128): each quantization block then runs down B sublanes,
and the 128 lanes hold 128 rows of x. Column-wise (`transpose=True`: x.T quantized, blocks
along M) the tile (tile_q, 128) of x already has that shape: it is widened, not transposed,
and x.T is never formed in HBM.

In the scratch, element i of every block of the tile is one sublane-strided load
`xs[pl.ds(i, nb, stride=B), :]`: an (nb, 128) array, nb = tile_q / B, dense in sublanes and
lanes. The per-block amax is a segmented max done as an elementwise integer max over the B
loads (`schemes.magnitude_bits`; no reduction op, no reshape); the block state
(`schemes.block_state`: the scale and the exact divisions) is computed once a block on
(nb, 128) arrays; the element encoder (`schemes.element_encoder`, `block_encode`) takes each
strided load together with the state, elementwise, with no broadcast. Codes go back through a
second scratch by strided stores, in the output's element order (4-bit: even | odd << 4 a
byte, the even index in the low nibble), are transposed back and leave as uint8 rows of the
QArray layout: (M, K) E4M3 bytes or (M, K / 2) packed bytes. Scales leave as (nb, 128) tiles
of scale^T (K / B, M), which XLA transposes (1 / B of the elements).

Why this shape (Mosaic TPU's layout rules as `apply_vector_layout.cc` states them in the jax
source read for this kernel; a newer libtpu may accept more): `vector.shape_cast` only folds
whole (8, 128) vregs or whole 128-lane rows, so a (rows, K / B, B) view of a lane-dense tile,
which splits lanes by B / 2 <= 64, is not rewritten; `pltpu.roll` butterflies (XOR
partners, log2(B / 2) steps) give every lane its block's amax, but then the block state, two
to four integer long divisions for FP8 1x128, INT4 and NVFP4, runs once a lane instead of once
a block, and the scales must still be compacted across lanes. This kernel needs 32-bit 2-D
transposes of 128 x 128 pieces, sublane-strided 32-bit loads and stores on scratches whose last
dimension is exactly 128 lanes (Mosaic's condition for them), scalar SMEM reads, casts and
elementwise ops.

.. warning:: Untimed and unchecked on real TPU hardware: this project has no TPU. CI runs it in
   TPU interpret mode (`pltpu.InterpretParams`) against `mxjax.quantize` and lowers it with
   Pallas' Mosaic TPU rules for a TPU v5e (`_compat.lower_for`); libtpu's Mosaic compiler,
   which assigns vreg layouts and may still reject an op (the float8_e4m3fn cast of the shared
   encoders, int32 -> uint8 truncation, strided loads of fewer than 8 blocks when a tile is a
   whole small axis), has never seen it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mxjax.formats.exact import div_rn
from pallas_kernels import _compat
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.reference import check_shape
from pallas_kernels.quantize.reference import tensor_terms
from pallas_kernels.quantize.schemes import NVFP4_TERMS
from pallas_kernels.quantize.schemes import FusedScheme
from pallas_kernels.quantize.schemes import amax_from_bits
from pallas_kernels.quantize.schemes import block_encode
from pallas_kernels.quantize.schemes import block_state
from pallas_kernels.quantize.schemes import element_encoder
from pallas_kernels.quantize.schemes import get_scheme
from pallas_kernels.quantize.schemes import magnitude_bits

LANES = 128  # rows of the quantized array a step: the lanes of the transposed tile
TILE_Q = (2048, 1024, 512, 256)  # elements along the quantized axis a step: largest that fits
MAX_WHOLE_AXIS = 4096  # a quantized axis no candidate tiles may be one tile up to this


def _tile_q_error(sch: FusedScheme, q: int, tile_q: int) -> str | None:
  """Why `tile_q` cannot tile a quantized axis of `q` elements (None: it can)."""
  nb, code_bytes = tile_q // sch.block, tile_q * sch.bits // 8
  if q % tile_q or tile_q % sch.block:
    return f"{tile_q} does not divide the axis ({q}) into whole blocks of {sch.block}"
  if code_bytes % 128:
    return f"{tile_q} elements make {code_bytes} code bytes a row, not a multiple of 128"
  if nb % 8 and tile_q != q:
    return f"{tile_q} elements hold {nb} blocks, not a multiple of 8 (nor the whole axis)"
  return None


def tile_plan(scheme: str, shape: tuple[int, int], transpose: bool = False,
              tile_q: int | None = None) -> int:
  """`tile_q` of the TPU kernel for x of `shape` (M, K), or ValueError saying what to do.

  A step takes 128 rows of the quantized array (x's rows, or its columns with `transpose`) and
  `tile_q` elements along the quantized axis: a multiple of 8 blocks and of 128 code bytes a
  row (4-bit: 256 elements), or the whole axis (up to `MAX_WHOLE_AXIS`). The default is the
  largest of `TILE_Q` that tiles the axis.
  """
  sch = get_scheme(scheme)
  m, k = shape
  q, n = (m, k) if transpose else (k, m)
  q_name, n_name = ("M", "K") if transpose else ("K", "M")
  if n % LANES:
    raise ValueError(
        f"the TPU quantize kernel transposes tiles of 128 x 128: {n_name}={n} is not a multiple "
        f"of 128; pad x to a multiple of 128 along {n_name}, or use implementation='xla'")
  if tile_q is not None:
    why = _tile_q_error(sch, q, tile_q)
    if why:
      raise ValueError(f"tile_q={tile_q} for {scheme} along {q_name}={q}: {why}")
    return tile_q
  for t in TILE_Q + ((q,) if q <= MAX_WHOLE_AXIS else ()):
    if _tile_q_error(sch, q, t) is None:
      return t
  unit = max(8 * sch.block, 256 if sch.bits == 4 else 128)
  raise ValueError(
      f"the TPU quantize kernel cannot tile {q_name}={q} for {scheme}: a step takes a multiple "
      f"of 8 blocks of {sch.block} and of 128 code bytes a row (or the whole axis, up to "
      f"{MAX_WHOLE_AXIS}); pad x to a multiple of {unit} along {q_name}, or use "
      "implementation='xla'")


def tpu_unsupported(x: jax.Array, scheme: str, transpose: bool = False) -> str | None:
  """Why the TPU kernel cannot take x (None: it can)."""
  if x.ndim != 2:
    return f"the TPU kernel takes a 2-D array, got shape {x.shape}"
  try:
    tile_plan(scheme, x.shape, transpose)
  except ValueError as e:
    return str(e)
  return None


def _unroll(nb: int, steps: int) -> int:
  """Loop iterations to unroll: enough that an unrolled body loads about 8 vregs (u * nb >= 64
  sublanes) when a tile holds few blocks; a power of two dividing `steps` (B or B / 2). A guess,
  untimed."""
  u = 1
  while u < 8 and u * nb < 64 and steps % (2 * u) == 0:
    u *= 2
  return u


def _kernel(sch: FusedScheme, nb: int, transpose_in: bool, scale_dtype):
  """The kernel body: (ts SMEM, x tile) -> (codes tile, scale^T tile), two VMEM scratches."""
  b = sch.block

  def kernel(ts_ref, x_ref, c_ref, s_ref, xs_ref, cs_ref):
    for c in range(xs_ref.shape[0] // LANES):  # 128 x 128 pieces: no large live values
      rows = pl.ds(c * LANES, LANES)
      if transpose_in:
        xs_ref[rows, :] = x_ref[:, rows].astype(jnp.float32).T
      else:
        xs_ref[rows, :] = x_ref[rows, :].astype(jnp.float32)
    elem = lambda i: xs_ref[pl.ds(i, nb, stride=b), :]  # element i of each block: (nb, 128)

    def amax_step(i, m):
      return jnp.maximum(m, magnitude_bits(elem(i)))

    m = lax.fori_loop(0, b, amax_step, jnp.zeros((nb, LANES), jnp.int32), unroll=_unroll(nb, b))
    t = None
    if sch.two_level:  # vectors, so that no scalar predicate is broadcast
      t = tuple(jnp.full((nb, LANES), ts_ref[i], jnp.float32) for i in range(NVFP4_TERMS))
    state = block_state(sch, amax_from_bits(m), t, div=div_rn)
    s_ref[...] = state[0].astype(scale_dtype)
    if sch.bits == 4:  # code byte j of a block: elements 2j (low nibble) and 2j + 1

      def encode_step(j, carry):
        codes = block_encode(sch, state, elem(2 * j), elem(2 * j + 1))
        cs_ref[pl.ds(j, nb, stride=b // 2), :] = codes
        return carry

      lax.fori_loop(0, b // 2, encode_step, 0, unroll=_unroll(nb, b // 2))
    else:
      enc = element_encoder(sch, state)

      def encode_step(i, carry):
        cs_ref[pl.ds(i, nb, stride=b), :] = enc(elem(i))
        return carry

      lax.fori_loop(0, b, encode_step, 0, unroll=_unroll(nb, b))
    for c in range(cs_ref.shape[0] // LANES):
      cols = pl.ds(c * LANES, LANES)
      c_ref[:, cols] = cs_ref[cols, :].T.astype(jnp.uint8)

  return kernel


def quantize_tpu(x: jax.Array, scheme: str, *, transpose: bool = False, interpret: bool = False,
                 tile_q: int | None = None, tensor_amax: jax.Array | None = None) -> Quantized:
  """Fused block quantization with Mosaic TPU, lane-dense (see the module docstring).

  Bit-identical to `mxjax.quantize(x, scheme)` (of `x.T` with transpose) in TPU interpret mode.

  Args:
    x: (M, K) bf16 or f32 (other float dtypes are widened to f32 by XLA first). Row-wise, M
      must be a multiple of 128 and K must tile as `tile_plan` says (e.g. a multiple of 256
      for MX / NVFP4, 1024 for B = 128, or the whole of a K <= 4096 that holds 128 code bytes
      a row); column-wise the same with M and K swapped.
    scheme: one of `schemes.SCHEMES`.
    transpose: quantize x.T (blocks along M), reading x as it is stored.
    interpret: run in TPU interpret mode on the CPU.
    tile_q: elements along the quantized axis a grid step (default: `tile_plan`'s).
    tensor_amax: NVFP4's tensor amax (float32 scalar) instead of a pass over x
      (`reference.tensor_terms`).

  Returns:
    Quantized in mxjax's QArray layout (of x.T with transpose): codes (N, Q) float8_e4m3fn or
    (N, Q / 2) uint8, scale (N, Q / B) uint8 E8M0 / float32 / float8_e4m3fn, NVFP4 tensor scale
    (1, 1) float32; (N, Q) is (M, K), or (K, M) with transpose.

  Raises:
    ValueError: a shape the tiles do not fit (the message says how to pad x).
  """
  pltpu = _compat.pltpu_module()
  sch = get_scheme(scheme)
  check_shape(jax.ShapeDtypeStruct(x.shape[::-1] if transpose else x.shape, x.dtype), sch)
  if x.dtype not in (jnp.bfloat16, jnp.float32):
    x = x.astype(jnp.float32)  # exact for every narrower float
  m, k = x.shape
  tq = tile_plan(scheme, (m, k), transpose, tile_q)
  q, n = (m, k) if transpose else (k, m)
  nb, cw = tq // sch.block, tq * sch.bits // 8  # blocks and code bytes a tile row
  scale_dtype = jnp.float32 if sch.scale_dtype == jnp.float32 else jnp.uint8
  s_t, terms = tensor_terms(sch, x, tensor_amax)
  ts = jnp.zeros((NVFP4_TERMS,), jnp.float32)
  if terms is not None:
    ts = jnp.stack(terms).astype(jnp.float32)
  # Grid (i, j): 128 rows of the quantized array, tile_q elements along its quantized axis.
  if transpose:
    x_spec = pl.BlockSpec((tq, LANES), lambda i, j: (j, i))
  else:
    x_spec = pl.BlockSpec((LANES, tq), lambda i, j: (i, j))
  codes, scale_t = _compat.pallas_call(
      _kernel(sch, nb, not transpose, scale_dtype),
      out_shape=(jax.ShapeDtypeStruct((n, q * sch.bits // 8), jnp.uint8),
                 jax.ShapeDtypeStruct((q // sch.block, n), scale_dtype)),
      grid=(n // LANES, q // tq),
      in_specs=[pl.BlockSpec(memory_space=pltpu.SMEM), x_spec],
      out_specs=(pl.BlockSpec((LANES, cw), lambda i, j: (i, j)),
                 pl.BlockSpec((nb, LANES), lambda i, j: (j, i))),
      # Mosaic's strided loads and stores want a last dimension of exactly 128 lanes.
      scratch_shapes=[pltpu.VMEM((tq, LANES), jnp.float32), pltpu.VMEM((cw, LANES), jnp.int32)],
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
      interpret=_compat.tpu_interpret_params() if interpret else False,
  )(ts, x)
  if sch.bits == 8:
    codes = lax.bitcast_convert_type(codes, jnp.float8_e4m3fn)
  scale = scale_t.T  # (N, Q / B): XLA's transpose, 1 / B of the elements
  if sch.scale_dtype == jnp.float8_e4m3fn:
    scale = lax.bitcast_convert_type(scale, jnp.float8_e4m3fn)
  ts_out = None if s_t is None else jnp.reshape(s_t, (1, 1)).astype(jnp.float32)
  return Quantized(codes, scale, ts_out)
