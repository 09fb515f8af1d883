"""IEEE float32 division and fused multiply-add for Mosaic GPU register arrays, packed E4M3 and
E2M1 pair encoders, bf16 pair-word helpers, a proxy fence and a release, as inline PTX.

Mosaic GPU lowers `a / b` on f32 register arrays to an approximate division on this toolchain
(29% of random quotients an ulp off on an H100, 28.5% on an H200, jax 0.11.2) and marks its adds and
multiplies `contract`, so `a * b + c` may or may not become one fused multiply-add. Kernels that
promise bit-exactness need both operations as IEEE 754 defines them; these emit the PTX
instructions directly, one per element (per pair for `e4m3_pair`):

- `div_rn`: `div.rn.f32`, the correctly rounded quotient, subnormal inputs and results kept,
  as XLA's own GPU division keeps them (which mxjax's reference takes for subnormal operands
  and results): an INT4 block of amax below 2^-123 has a subnormal scale, and a flushing
  division (`.ftz`, used until 2026-12-04) zeroed it where the reference did not;
- `fma_rn`: `fma.rn.f32`, `a * b + c` rounded once, subnormals kept (the remainder of a
  division, `x - q * s`, is then exact: see `quantize.schemes.div_fma`);
- `e4m3_pair`: two E4M3 codes from one `cvt.rn.satfinite.e4m3x2.f32`, left packed as the
  instruction gives them (`quantize.schemes.block_encode`'s `cast_pair`), and
  `bf16_pair_signs` / `f32_pair_signs`, the sign bits of a bf16 pair word (of two float32
  arrays) where that pair of codes keeps them;
- `e2m1_pairs` / `e2m1_scaled_pairs`: two E2M1 codes a 32-bit operation, on bf16 pair words
  (MXFP4's power-of-two scales) or on float32 products rounded to odd into them (NVFP4's), with
  `bf16_pair_word` and `bf16_pairs_amax_bits` to make and reduce such words.

They run only inside a Mosaic GPU kernel body, on arrays in a register layout given by `layout`
(`TILE`: Mosaic's WGMMA layout of a 2-D tile, `ROW`: a per-row vector reduced from it, or any
`plgpu.Layout` value; by default, `TILE` for 2-D arrays and `ROW` for 1-D ones, as in the
quantize kernels). The CPU
and TPU paths keep `mxjax.formats.exact.div_rn` and integer arithmetic; the GPU benchmark checks
every kernel that uses these bit for bit against `mxjax.quantize`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import _compat

TILE = "tile"  # plgpu.Layout.WGMMA
ROW = "row"  # plgpu.Layout.WGMMA.reduce(1): one value per tile row


def _layout(name, ndim: int):
  plgpu = _compat.plgpu_module()
  if name is not None and not isinstance(name, str):  # a Mosaic GPU layout, as it is
    return name
  if name is None:
    name = {1: ROW, 2: TILE}.get(ndim)
  if name == TILE:
    return plgpu.Layout.WGMMA
  if name == ROW:
    return plgpu.Layout.WGMMA.reduce(1)
  raise ValueError(f"layout must be {TILE!r} or {ROW!r} (or None for 1-D / 2-D arrays), not "
                   f"{name!r} for a {ndim}-D array")


def _like(v, ref: jax.Array) -> jax.Array:
  """v (an array of ref's shape, or a scalar) as an f32 array of ref's shape and layout."""
  if getattr(v, "shape", ()) == ref.shape:
    return v
  return jnp.where(ref == ref, jnp.float32(v), jnp.float32(v))  # a splat in ref's layout


def _pointwise(instr: str, layout: str | None, *args: jax.Array,
               out_dtype=jnp.float32) -> jax.Array:
  """`instr d, a, b, ...;` on every element of equally shaped f32 or 32-bit integer register
  arrays (an `instr` that names its operands, $0 the result, is emitted as it is); d is f32, or
  int32 (`out_dtype`: a 32-bit integer register)."""
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import llvm  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import vector  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  ref = next(a for a in args if getattr(a, "shape", ()) != ())
  args = tuple(_like(a, ref) for a in args)
  lay = _layout(layout, len(ref.shape))
  integer = jnp.dtype(out_dtype) == jnp.int32
  if not integer and jnp.dtype(out_dtype) != jnp.float32:
    raise ValueError(f"out_dtype must be float32 or int32, not {out_dtype}")
  out = plgpu.ShapeDtypeStruct(ref.shape, out_dtype, layout=lay)
  operands = ", ".join(f"${i}" for i in range(len(args) + 1))
  asm = instr if "$0" in instr else f"{instr} {operands};"
  constraints = ("=r" if integer else "=f") + "".join(
      ",r" if jnp.issubdtype(a.dtype, jnp.integer) else ",f" for a in args)

  @plgpu.inline_mgpu(arg_types=(lay,) * len(args), return_type=out)
  def emit(_, *arrs):
    res_type = ir.IntegerType.get_signless(32) if integer else ir.F32Type.get()

    def scalar(*vals):
      return llvm.inline_asm(res_type, list(vals), asm, constraints)

    def at(reg, i):
      return vector.extract(reg, dynamic_position=[], static_position=ir.DenseI64ArrayAttr.get([i]))

    regs = np.empty_like(arrs[0].registers)
    for idx, reg in np.ndenumerate(arrs[0].registers):
      ins = [a.registers[idx] for a in arrs]
      if not isinstance(reg.type, ir.VectorType):
        regs[idx] = scalar(*ins)
        continue
      vec = ir.VectorType(reg.type)
      res = llvm.mlir_undef(ir.VectorType.get(vec.shape, res_type) if integer else reg.type)
      for i in range(vec.shape[0]):
        res = vector.insert(scalar(*(at(r, i) for r in ins)), res, dynamic_position=[],
                            static_position=ir.DenseI64ArrayAttr.get([i]))
      regs[idx] = res
    return mgpu.FragmentedArray(_registers=regs, _layout=arrs[0].layout,
                                _is_signed=True if integer else None)

  return emit(*args)


def fence_proxy_async_global() -> None:
  """`fence.proxy.async.global`: orders this thread's global-memory accesses through the
  generic proxy (a semaphore's release / acquire) against those through the async proxy (TMA
  copies), both ways. Between a TMA store's completion and the release that publishes it, and
  between the acquire and the TMA loads that read it back, as the PTX memory model asks when
  one location is reached through both proxies (the decode kernel's `fused_sum`)."""
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import llvm  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()

  @plgpu.inline_mgpu(arg_types=(), return_type=None)
  def emit(_):
    llvm.inline_asm(ir.Type.parse("!llvm.void"), [], "fence.proxy.async.global;", "",
                    has_side_effects=True)

  emit()


def release_gpu() -> None:
  """A warpgroup's global-memory stores published at GPU scope before a semaphore's signal:
  `bar.sync` over the warpgroup, so that the one lane whose `red.release` Pallas's
  `semaphore_signal` issues has seen every thread's stores (its release then covers them: the
  pattern CUTLASS's grid barriers use; the signal's own barrier is there only with Mosaic's
  automatic barriers), then `fence.acq_rel.gpu` in each thread, which keeps them ordered
  before the signal even where a jax version lowers it relaxed."""
  from jax.experimental.mosaic.gpu import utils as mgpu_utils  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import llvm  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()

  @plgpu.inline_mgpu(arg_types=(), return_type=None)
  def emit(_):
    mgpu_utils.warpgroup_barrier()
    llvm.inline_asm(ir.Type.parse("!llvm.void"), [], "fence.acq_rel.gpu;", "",
                    has_side_effects=True)

  emit()


def div_rn(a, b, *, layout: str | None = None) -> jax.Array:
  """Correctly rounded float32 a / b (`div.rn.f32`, subnormals kept); either operand may be a
  scalar."""
  return _pointwise("div.rn.f32", layout, a, b)


def e4m3_pair(lo, hi, *, layout: str | None = None) -> jax.Array:
  """int32 `code(lo) | code(hi) << 8` of float32 arrays lo, hi: their E4M3 codes from one
  `cvt.rn.satfinite.e4m3x2.f32` a pair (round to nearest even, finite overflow and infinities
  to +-448 with their sign; a NaN to the instruction's NaN code), the packed b16 widened."""
  return _pointwise("{ .reg .b16 t; cvt.rn.satfinite.e4m3x2.f32 t, $2, $1; cvt.u32.u16 $0, t; }",
                    layout, lo, hi, out_dtype=jnp.int32)


def bf16_pair_signs(words: jax.Array, *, layout: str | None = None) -> jax.Array:
  """int32 of uint32 bf16 pair words (low half the even element): the two halves' sign bits
  at bits 7 and 15, 0 elsewhere, where a packed E4M3 code pair (`e4m3_pair`) keeps its signs:
  one byte permute and one AND a word (`prmt` takes bytes 1 and 3, the halves' high bytes)."""
  return _pointwise("{ prmt.b32 $0, $1, $1, 0x31; and.b32 $0, $0, 0x8080; }", layout, words,
                    out_dtype=jnp.int32)


def f32_pair_signs(lo_bits: jax.Array, hi_bits: jax.Array, *,
                   layout: str | None = None) -> jax.Array:
  """int32 of two int32 arrays of float32 bit patterns: lo's sign bit at bit 7 and hi's at bit
  15, 0 elsewhere (`bf16_pair_signs` for a pair held as two float32 arrays): one byte permute
  (`prmt` takes byte 3 of each, their high bytes) and one AND a pair."""
  return _pointwise("{ prmt.b32 $0, $1, $2, 0x73; and.b32 $0, $0, 0x8080; }", layout, lo_bits,
                    hi_bits, out_dtype=jnp.int32)


def _e2m1_core(signs: str) -> str:
  """The E2M1 encode of the bf16 pair word in register v (comments give each step per half):
  into $0 the packed code byte, each code's sign bit from bit 15 / 31 of register `signs`."""
  return " ".join((
      "and.b32 a, v, 0x7FFF7FFF; add.u32 a, a, 0x007F007F;",  # |v| + 127, no carry out of a half
      "mov.b32 c, 0x007F007F; max.s16x2 a, a, c;",  # a NaN's half is negative as s16: -> 127
      "mov.b32 c, 0x413F413F; min.u16x2 a, a, c;",  # at most 6.0 (0x40C0) + 127
      "sub.u32 a, a, 0x007F007F;",  # min(|v|, 6), a NaN 0
      "shr.u32 t, a, 7; and.b32 t, t, 0x00FF00FF; mov.b32 c, 0x007F007F; max.u16x2 t, t, c;",
      "mov.b32 k, 0x00FF00FF; sub.u32 k, k, t; shl.b32 k, k, 7;",  # t = 127 + e; k = 2^(1 - e)
      "shl.b32 m, t, 1; add.u32 m, m, 0x42424242;",  # bf16 192 + 2e
      "fma.rn.bf16x2 a, a, k, m; and.b32 a, a, 0x00070007;",  # RNE(|v| 2^(1 - e)) + 2e, mod 8
      f"shr.u32 t, {signs}, 12; and.b32 t, t, 0x00080008; or.b32 a, a, t;",  # signs: bits 3, 19
      "shr.u32 t, a, 12; or.b32 a, a, t; and.b32 $0, a, 0xFF;"))  # even | odd << 4


# `e2m1_pairs`' instructions, a pair word at a time: the word scaled by the MX block's two
# powers of two (exact wherever the code is not 0), then the core with x's own signs.
E2M1_PAIRS_ASM = " ".join((
    "{ .reg .b32 v, a, t, k, m, c;",
    "mul.rn.bf16x2 v, $1, $2; mul.rn.bf16x2 v, v, $3;",
    _e2m1_core("$1"), "}"))

# `e2m1_scaled_pairs`' instructions: each float32 element times the factor (float32, as the
# reference rounds it), the two products rounded to odd into one bf16 pair word (their high
# halves by one permute, each half's last bit set where its low half is not 0: `min.u16x2`
# with 1), then the core with the products' signs.
E2M1_SCALED_PAIRS_ASM = " ".join((
    "{ .reg .b32 v, a, t, k, m, c, e, o;",
    "mul.rn.f32 e, $1, $3; mul.rn.f32 o, $2, $3;",
    "prmt.b32 v, e, o, 0x7632; prmt.b32 t, e, o, 0x5410;",  # high halves; low halves
    "mov.b32 c, 0x00010001; min.u16x2 t, t, c; or.b32 v, v, t;",  # round to odd
    _e2m1_core("v"), "}"))


def e2m1_pairs(words: jax.Array, k1: jax.Array, k2: jax.Array, *,
               layout: str | None = None) -> jax.Array:
  """int32 packed E2M1 code byte (even | odd << 4) of each uint32 bf16 pair word (low half the
  even element) scaled by k1 k2, both int32 words of one bf16 power of two in each half (the MX
  block's `2^e1`, `2^e2`): `schemes._e2m1_code` two elements a 32-bit operation.

  Both products are exact wherever the code is not 0 (bf16 has float32's exponent range, and
  a product that leaves the normal range leaves a value far below 1/4); the clamp to 6, a
  NaN's code 0 and the binade e = clip(exponent, 0, 2) are integer SIMD on the halves
  (`max.s16x2`, `min.u16x2`, `max.u16x2`), and one `fma.rn.bf16x2` rounds |v| 2^(1 - e) into
  the last bits of the magic number 192 + 2e (ulp 1 in bf16, as 1.5 * 2^23 in float32); the
  sign bits are x's own, a NaN's included, as mxjax keeps them. `tests/kernels/
  test_e2m1_pairs.py` runs these instructions' numpy model on every bf16 value at every block
  scale; the H100 matched the kernel bit for bit (`quantize.mosaic_gpu.PAIR_E2M1_VERIFIED`)."""
  return _pointwise(E2M1_PAIRS_ASM, layout, words, k1, k2, out_dtype=jnp.int32)


def e2m1_scaled_pairs(lo: jax.Array, hi: jax.Array, r: jax.Array, *,
                      layout: str | None = None) -> jax.Array:
  """int32 packed E2M1 code byte (code(lo r) | code(hi r) << 4) of float32 arrays lo, hi and
  float32 factors r (NVFP4's inv_t / s_b, a block's): `schemes._e2m1_code(RN_f32(x r))` two
  elements a 32-bit operation after the products.

  Each product is rounded to float32 as the reference rounds it, then to bf16 by round to odd
  (truncated, the last bit set where any bit was dropped): every E2M1 grid point and rounding
  midpoint, 6 and the binade edges 1, 2 and 4 have at most 3 significant bits, so a value
  rounded to odd with bf16's 8 lies on the same side of each of them as the float32 product,
  and on one exactly when the product is: `e2m1_pairs`' encode then gives the float32 codes.
  A NaN keeps a NaN (its sticky bit), an infinity stays one. The signs are the products'
  (x's, r > 0). `tests/kernels/test_e2m1_pairs.py` runs a model of these instructions against
  the E2M1 grid in float64 on every bf16 value at many factors and NVFP4 block states."""
  return _pointwise(E2M1_SCALED_PAIRS_ASM, layout, lo, hi, r, out_dtype=jnp.int32)


def bf16_pair_word(lo_bits: jax.Array, hi_bits: jax.Array, *,
                   layout: str | None = None) -> jax.Array:
  """int32 bf16 pair words (lo's bf16 in the low half) of two int32 arrays of float32 bit
  patterns of bf16 values (widened exactly): one byte permute, `(lo >> 16) | (hi & 0xFFFF0000)`;
  the column kernel's even and odd row tiles made into `e2m1_pairs`' words."""
  return _pointwise("prmt.b32 $0, $1, $2, 0x7632;", layout, lo_bits, hi_bits,
                    out_dtype=jnp.int32)


def bf16_pairs_amax_bits(words: jax.Array) -> jax.Array:
  """Each row's max |x| of a (rows, n) uint32 array of bf16 pairs (rows a multiple of 64, n of
  8; Mosaic's WGMMA layout, as the quantize kernel loads them): int32 (rows,) in the ROW
  layout, the float32 bit pattern of that magnitude (its bf16 bits << 16; a NaN stays above
  +Inf, as `quantize.schemes.magnitude_bits` orders them).

  Each thread clears its words' two sign bits (one AND a word) and maxes them two halves at a
  time (`max.u16x2`, one a word) over its columns, folds the two halves of the result once a
  row, and Mosaic reduces across the quad that shares the row. The unpaired halves take two
  ANDs, two maxes and two quad reductions for the same value (`schemes.block_amax`).
  """
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import arith  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import llvm  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import vector  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  rows, n = words.shape
  tile, row = _layout(TILE, 2), _layout(ROW, 1)
  out = plgpu.ShapeDtypeStruct((rows,), jnp.int32, layout=row)

  @plgpu.inline_mgpu(arg_types=(tile,), return_type=out)
  def emit(_, arr):
    i32 = ir.IntegerType.get_signless(32)
    regs = arr.registers
    small_shape = arr.layout.registers_shape((rows, 8))
    # the column tiles of 8 are the registers' second axis; one of them is a (rows, 8) array
    if (regs.shape[:1] + regs.shape[2:] != small_shape[:1] + small_shape[2:]
        or small_shape[1] != 1 or regs.shape[1] * 8 != n):
      raise NotImplementedError(f"bf16_pairs_amax_bits: registers {regs.shape} of a {rows} x {n} "
                                f"array are not laid out as this jax's were written for")
    const = lambda v: arith.constant(i32, v)
    u16x2_max = lambda a, b: llvm.inline_asm(i32, [a, b], "max.u16x2 $0, $1, $2;", "=r,r,r")
    small = np.empty(small_shape, dtype=object)
    for idx in np.ndindex(*small_shape):
      acc = None
      for j in range(regs.shape[1]):
        reg = regs[idx[:1] + (j,) + idx[2:]]
        for lane in range(ir.VectorType(reg.type).shape[0]):
          w = arith.andi(vector.extract(reg, dynamic_position=[],
                                        static_position=ir.DenseI64ArrayAttr.get([lane])),
                         const(0x7FFF7FFF))
          acc = w if acc is None else u16x2_max(acc, w)
      top = arith.maxui(arith.shrui(acc, const(16)), arith.andi(acc, const(0xFFFF)))
      small[idx] = vector.broadcast(regs.flat[0].type, arith.shli(top, const(16)))
    part = mgpu.FragmentedArray(_registers=small, _layout=arr.layout, _is_signed=True)
    return part.reduce("max", axis=1)

  return emit(words)


def fma_rn(a, b, c, *, layout: str | None = None) -> jax.Array:
  """float32 a * b + c rounded once (`fma.rn.f32`); scalars broadcast to the array operand."""
  return _pointwise("fma.rn.f32", layout, a, b, c)
