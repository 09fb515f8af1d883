"""Backends of the quantized dot and the dispatch between them.

- `reference`: dequantize both operands to float32, one float32 dot at HIGHEST precision (or
  the emulated accumulator of `mxjax.ops.accumulate`). The definition of correct.
- `xla`: native low-precision dots. Both operands quantized: their elements as float8 (FP8
  codes as stored; FP4 / FP6 elements converted exactly to E4M3) or int8 (INT8 / INT4 / MXINT8
  codes, zero point subtracted), one `lax.dot_general` with float32 (int32) accumulation, and the
  scales applied to its output: per-tensor and per-row / per-column scales after the dot, block
  scales per K-block (the K axis is split into blocks, which become a batch axis of the dot, and
  the scaled block products are summed). Weight-only (one operand in high precision): the
  quantized operand is dequantized to the other's dtype and a plain dot follows.
- `pallas`: the kernels of `pallas_kernels/` for the cases they cover (see `pallas.py`).

`select` picks a backend for a case and says why each other backend would not run; a backend
that was asked for by name and cannot run raises with that reason (never a silent fallback).
"""

from __future__ import annotations

import dataclasses
import enum
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mxjax.formats import Kind, ScaleFormat
from mxjax.formats.rounding import exp2i
from mxjax.qarray import dequantize, element_values, scale_values
from mxjax.schemes import Granularity, Scheme

from mxjax.ops import pallas as pallas_backend
from mxjax.ops.accumulate import Accumulation, emulated_dot_general
from mxjax.ops.dims import Dims
from mxjax.ops.operands import Operand, OperandInfo, is_quantized


class Backend(enum.Enum):
  AUTO = "auto"
  REFERENCE = "reference"
  XLA = "xla"
  PALLAS = "pallas"


@dataclasses.dataclass(frozen=True)
class Case:
  """Everything dispatch looks at (static)."""

  dims: Dims
  lhs: OperandInfo
  rhs: OperandInfo
  out_dtype: np.dtype
  accumulation: Accumulation | None
  platform: str  # "cpu", "gpu", "tpu"

  def describe(self) -> str:
    return (
        f"lhs {self.lhs.describe()} . rhs {self.rhs.describe()}, contracting"
        f" {self.dims.lc}x{self.dims.rc}, batch {self.dims.lb}x{self.dims.rb}, out"
        f" {self.out_dtype.name}, on {self.platform}"
        + (f", {self.accumulation.describe()}" if self.accumulation else "")
    )


# --------------------------------------------------------------------------------------------
# reference


def run_reference(lhs: Operand, rhs: Operand, dims: Dims, out_dtype, acc: Accumulation | None):
  """dequantize(lhs) . dequantize(rhs) in float32 (HIGHEST precision), cast to out_dtype."""
  a = dequantize(lhs, jnp.float32)
  b = dequantize(rhs, jnp.float32)
  if acc is not None:
    return emulated_dot_general(a, b, dims, acc).astype(out_dtype)
  out = lax.dot_general(
      a, b, dims.nums, precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32
  )
  return out.astype(out_dtype)


# --------------------------------------------------------------------------------------------
# xla


def _element_kind(s: Scheme) -> str | None:
  """'float' (exact in float8), 'int' (exact in int8), or None (no native dot type)."""
  f = s.format
  if f.kind is Kind.FLOAT:
    # Every E2M1 / E3M2 / E2M3 value is an E4M3 value (fewer exponent and mantissa bits).
    return "float"
  if f.kind is Kind.INT:
    return "int"
  return None


def xla_reason(case: Case) -> str | None:
  """Why the xla backend cannot run `case` (None: it can)."""
  if case.accumulation is not None:
    return "the xla backend accumulates natively; accumulation emulation runs on reference only"
  q = [o for o in (case.lhs, case.rhs) if o.scheme is not None]
  for role, o, batch in (("lhs", case.lhs, case.dims.lb), ("rhs", case.rhs, case.dims.rb)):
    if o.scheme is not None and o.padded and any(o.padded_shape[d] != o.shape[d] for d in batch):
      return f"{role} ({o.describe()}) is zero-padded along a batch axis"
  if len(q) == 2:
    kinds = {_element_kind(o.scheme) for o in q}
    if None in kinds:
      names = ", ".join(o.scheme.element for o in q if _element_kind(o.scheme) is None)
      return f"element format {names} (a lookup table) has no native dot type"
    if len(kinds) == 2:
      return "an integer operand times a float operand has no native dot (int8 x fp8)"
    nbytes = _partials_bytes(case)
    if nbytes > PARTIALS_BUDGET:
      return (
          f"block scales along K: the xla path sums per-K-block partial products and would hold"
          f" {nbytes / 2**30:.1f} GiB of float32 partials (budget {PARTIALS_BUDGET / 2**30:.0f}"
          " GiB); no Pallas kernel for block-scaled FP8 x FP8 yet"
      )
  return None


# Largest float32 partial-product tensor (chunks x batch x M x N) the block-scaled xla path may
# materialise; above it the case is refused (auto then runs reference) rather than risking OOM.
PARTIALS_BUDGET = 2**30


def _block_len(o: OperandInfo, d: int) -> int | None:
  """Length of the runs along dim d over which o's scale is constant (None: all of d)."""
  s, nd = o.scheme, len(o.shape)
  if s is None or s.granularity is Granularity.TENSOR:
    return None
  if d == o.axis:
    return None if s.granularity is Granularity.AXIS else s.block_size
  if s.block_size_2d is not None and o.axis >= nd - 2 and d == 2 * nd - 3 - o.axis:
    return s.block_size_2d
  return 1


def _partials_bytes(case: Case) -> int:
  d = case.dims
  chunks = 1
  for dl, dr in zip(d.lc, d.rc):
    blocks = [b for b in (_block_len(case.lhs, dl), _block_len(case.rhs, dr)) if b is not None]
    if blocks:
      chunks *= -(-case.lhs.padded_shape[dl] // math.gcd(*blocks))
  if chunks == 1:
    return 0
  n = chunks
  for dim in d.lb + d.lhs_free:
    n *= case.lhs.shape[dim]
  for dim in d.rhs_free:
    n *= case.rhs.shape[dim]
  return 4 * n


def _expand(s: jax.Array, dim: int, length: int) -> jax.Array:
  """Repeat a scale along `dim` from its number of blocks up to `length` (no-op if 1 or full)."""
  n = s.shape[dim]
  if n in (1, length):
    return s
  return jnp.repeat(s, length // n, axis=dim)


def _native(q) -> tuple[jax.Array, jax.Array, str, bool]:
  """(elements in float8 / int8 of the padded shape, float32 scale of scale_shape, kind, log2).

  E8M0 scales come back as their exponents (float32 b - 127, NaN for 0xFF; `log2` True) rather
  than as 2^(b - 127): 2^-127 is an f32 subnormal that XLA's CPU flushes to zero, so the scale is
  applied later as two normal factors (`_apply_scale`).
  """
  s = q.scheme
  fmt = s.format
  kind = _element_kind(s)
  if fmt.bits == 8 and fmt.dtype is not None and q.codes.dtype == fmt.dtype and s.symmetric:
    v = q.codes
    frac = 2.0**-fmt.frac_bits
  else:
    vals = element_values(q)  # float32, exact
    frac = 1.0
    if kind == "int":
      vals = vals * 2.0**fmt.frac_bits
      frac = 2.0**-fmt.frac_bits
      if q.zero_point is not None:
        lay = q.layout
        zp = lay.from_blocks(
            jnp.broadcast_to(lay.scale_to_blocks(q.zero_point.astype(jnp.float32)),
                             lay.blocked_shape()), 0)  # fmt: skip
        vals = vals - zp
      v = vals.astype(jnp.int8)
    else:
      v = vals.astype(jnp.float8_e4m3fn)
  if s.scale is ScaleFormat.E8M0:
    b = q.scale.astype(jnp.int32)
    sc = jnp.where(b == 0xFF, jnp.float32(jnp.nan), (b - 127).astype(jnp.float32))
    if frac != 1.0:
      sc = sc + jnp.float32(np.log2(frac))  # exact: frac is a power of two
    return v, sc, kind, True
  if s.tensor_scale:
    sc = q.tensor_scale * q.scale.astype(jnp.float32)  # s_t * s_b, the reference's order
  else:
    sc = scale_values(q)
  if frac != 1.0:
    sc = sc * jnp.float32(frac)
  return v, sc, kind, False


def _apply_scale(out: jax.Array, s: jax.Array, log2: bool) -> jax.Array:
  """out * s, or out * 2^s as two normal power-of-two factors when `log2` (exact, NaN kept)."""
  if not log2:
    return out * s
  e = jnp.where(jnp.isnan(s), 0.0, s).astype(jnp.int32)
  e1 = e // 2
  out = out * exp2i(e1) * exp2i(e - e1)
  return jnp.where(jnp.isnan(s), jnp.float32(jnp.nan), out)


def _split_dim(x: jax.Array, dim: int, n: int) -> jax.Array:
  """Splits axis `dim` of length n*g into (n, g) in place; returns the new array."""
  shp = x.shape
  return x.reshape(shp[:dim] + (n, shp[dim] // n) + shp[dim + 1 :])


def _pad_axis(x: jax.Array, dim: int, length: int, value) -> jax.Array:
  if x.shape[dim] == length:
    return x
  widths = [(0, 0)] * x.ndim
  widths[dim] = (0, length - x.shape[dim])
  return jnp.pad(x, widths, constant_values=value)


def _align_contraction(a, sa, b, sb, dims: Dims):
  """Zero-pads both operands along each contracting pair to one length that every block of the
  pair divides (zeros add nothing to the dot; their padded scales are 1)."""
  for dl, dr in zip(dims.lc, dims.rc):
    blocks = [x.shape[d] // s.shape[d] for x, s, d in ((a, sa, dl), (b, sb, dr)) if s.shape[d] > 1]
    m = math.lcm(*blocks) if blocks else 1
    t = -(-max(a.shape[dl], b.shape[dr]) // m) * m
    for which, d in ((0, dl), (1, dr)):
      x, s = (a, sa) if which == 0 else (b, sb)
      if s.shape[d] > 1:
        s = _pad_axis(s, d, t // (x.shape[d] // s.shape[d]), 1.0)
      x = _pad_axis(x, d, t, 0)
      if which == 0:
        a, sa = x, s
      else:
        b, sb = x, s
  return a, sa, b, sb


# How a per-tensor-scaled FP8 x FP8 dot is written for XLA (both compute f32-accumulated
# products scaled by s_a * s_b):
#   "epilogue": dot(a_f8, b_f8) -> f32, then * s_a * s_b (a separate elementwise pass on GPU);
#   "convert": dot(f32(a_f8) * s_a, f32(b_f8) * s_b), the pattern XLA's GPU GEMM rewriter turns
#     into one cuBLASLt FP8 GEMM with the scales in its epilogue (on the CPU it is the reference's
#     own arithmetic). Measured on an H100 with jax 0.11.2 (experiments/results/
#     ops_bench_h100_fp8_pattern.json): XLA did NOT rewrite it with f32 converts (340 TFLOP/s,
#     a tf32 GEMM), while "epilogue" ran at 1036 TFLOP/s, 88% of a raw float8 dot: the default.
FP8_TENSOR_PATTERN = "epilogue"


def _per_tensor_convert(a, sa, b, sb, dims: Dims, out_dtype):
  a = a.astype(jnp.float32) * sa.reshape(())
  b = b.astype(jnp.float32) * sb.reshape(())
  return lax.dot_general(a, b, dims.nums, preferred_element_type=jnp.float32).astype(out_dtype)


def _xla_both(lhs, rhs, dims: Dims, out_dtype):
  a, sa, kind, a_log2 = _native(lhs)
  b, sb, _, b_log2 = _native(rhs)
  a, sa, b, sb = _align_contraction(a, sa, b, sb, dims)
  if (FP8_TENSOR_PATTERN == "convert" and kind == "float" and sa.size == 1 and sb.size == 1
      and not (a_log2 or b_log2) and a.shape == lhs.shape and b.shape == rhs.shape):  # fmt: skip
    return _per_tensor_convert(a, sa, b, sb, dims, out_dtype)
  # Pairs along which some scale varies are split into chunks of g = gcd(blocks) elements: each
  # chunk has one scale per operand, and becomes a batch axis of the dot.
  lc, rc, lb, rb = list(dims.lc), list(dims.rc), list(dims.lb), list(dims.rb)
  chunk_pairs = []
  for dl, dr in zip(dims.lc, dims.rc):
    length = a.shape[dl]
    nl, nr = sa.shape[dl], sb.shape[dr]
    if nl == 1 and nr == 1:
      continue
    g = math.gcd(length // nl, length // nr)
    chunk_pairs.append((dl, dr, length // g))
  # Split from the highest dim down so lower dim indices stay valid, then renumber.
  def split_all(x, s, which):
    for dl, dr, n in sorted(chunk_pairs, key=lambda p: -p[which]):
      d = (dl, dr)[which]
      s = _expand(s, d, n)
      x = _split_dim(x, d, n)
      s = s.reshape(s.shape[: d + 1] + (1,) + s.shape[d + 1 :])
    return x, s

  def new_index(d, splits):  # position of original dim d (its inner part) after the splits
    return d + sum(1 for e in splits if e <= d)

  l_splits = [p[0] for p in chunk_pairs]
  r_splits = [p[1] for p in chunk_pairs]
  a, sa = split_all(a, sa, 0)
  b, sb = split_all(b, sb, 1)
  chunk_l = [new_index(p[0], l_splits) - 1 for p in chunk_pairs]
  chunk_r = [new_index(p[1], r_splits) - 1 for p in chunk_pairs]
  lc2 = tuple(new_index(d, l_splits) for d in lc)
  rc2 = tuple(new_index(d, r_splits) for d in rc)
  lb2 = tuple(new_index(d, l_splits) for d in lb) + tuple(chunk_l)
  rb2 = tuple(new_index(d, r_splits) for d in rb) + tuple(chunk_r)
  acc_type = jnp.int32 if kind == "int" else jnp.float32
  out = lax.dot_general(a, b, ((lc2, rc2), (lb2, rb2)), preferred_element_type=acc_type)
  out = out.astype(jnp.float32)
  # Scales to the dot's output layout: batch, chunks, lhs free, rhs free.
  l_free = [d for d in range(a.ndim) if d not in lc2 + lb2]
  r_free = [d for d in range(b.ndim) if d not in rc2 + rb2]
  for d in l_free + list(lb2):
    sa = _expand(sa, d, a.shape[d])
  for d in r_free + list(rb2):
    sb = _expand(sb, d, b.shape[d])
  sa = jnp.transpose(sa, lb2 + tuple(l_free) + lc2)
  sa = sa.reshape(sa.shape[: sa.ndim - len(lc2)] + (1,) * len(r_free))
  sb = jnp.transpose(sb, rb2 + tuple(r_free) + rc2)
  sb = sb.reshape(sb.shape[: len(rb2)] + (1,) * len(l_free) + sb.shape[len(rb2) : sb.ndim - len(rc2)])
  out = _apply_scale(_apply_scale(out, sa, a_log2), sb, b_log2)
  nb = len(lb)
  if chunk_pairs:
    out = jnp.sum(out, axis=tuple(range(nb, nb + len(chunk_pairs))))
  # Free axes padded to a multiple of their (2-D) block: drop the padded rows / columns.
  logical = [lhs.shape[d] for d in dims.lb] + [lhs.shape[d] for d in dims.lhs_free]
  logical += [rhs.shape[d] for d in dims.rhs_free]
  out = out[tuple(slice(0, n) for n in logical)]
  return out.astype(out_dtype)


def run_xla(lhs: Operand, rhs: Operand, dims: Dims, out_dtype, acc: Accumulation | None):
  """Native low-precision dot (see the module docstring); raises if the case is not covered."""
  del acc  # xla_reason has refused it
  if is_quantized(lhs) and is_quantized(rhs):
    return _xla_both(lhs, rhs, dims, out_dtype)
  # Weight-only or no quantization: dequantize to the high-precision operand's dtype.
  hp = [x for x in (lhs, rhs) if not is_quantized(x)]
  dt = jnp.result_type(*[x.dtype for x in hp])
  a = dequantize(lhs, dt) if is_quantized(lhs) else lhs.astype(dt)
  b = dequantize(rhs, dt) if is_quantized(rhs) else rhs.astype(dt)
  return lax.dot_general(a, b, dims.nums, preferred_element_type=jnp.float32).astype(out_dtype)


# --------------------------------------------------------------------------------------------
# dispatch

_RUNNERS = {
    Backend.REFERENCE: run_reference,
    Backend.XLA: run_xla,
    Backend.PALLAS: pallas_backend.run,
}


def reasons(case: Case) -> dict[Backend, str | None]:
  """For each backend, why it cannot run `case` (None: it can)."""
  return {
      Backend.REFERENCE: None,
      Backend.XLA: xla_reason(case),
      Backend.PALLAS: pallas_backend.reason(case),
  }


def select(case: Case, requested: Backend | str) -> tuple[Backend, str, dict[Backend, str | None]]:
  """Picks the backend for `case`.

  Returns:
    (backend, why it was picked, {backend: reason it cannot run or None}).

  Raises:
    ValueError: a backend was requested by name and cannot run the case (with the reason).
  """
  try:
    requested = Backend(requested)
  except ValueError:
    raise ValueError(
        f"backend={requested!r} is not one of {', '.join(repr(b.value) for b in Backend)}"
    ) from None
  why = reasons(case)
  if requested is not Backend.AUTO:
    if why[requested] is not None:
      raise ValueError(f"backend {requested.value!r} cannot run {case.describe()}: {why[requested]}")
    return requested, "requested", why
  if case.accumulation is not None:
    return Backend.REFERENCE, "accumulation emulation runs on the reference backend", why
  if case.platform == "cpu":
    return Backend.REFERENCE, (
        "on cpu: no low-precision matrix units (XLA would upcast FP8 dots), so the float32"
        " reference is as fast and exact"
    ), why
  both = case.lhs.scheme is not None and case.rhs.scheme is not None
  if both and why[Backend.XLA] is None:
    return Backend.XLA, "both operands quantized to native dot types", why
  if why[Backend.PALLAS] is None:
    return Backend.PALLAS, "a Pallas kernel covers this case", why
  if not both and why[Backend.XLA] is None:
    return Backend.XLA, "weight-only or unquantized: dequantize-then-dot", why
  return Backend.REFERENCE, "no native backend covers this case", why


def run(backend: Backend, lhs: Operand, rhs: Operand, dims: Dims, out_dtype, acc):
  return _RUNNERS[backend](lhs, rhs, dims, out_dtype, acc)
