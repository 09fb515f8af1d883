"""`quantize` and `fake_quant`: float arrays to QArrays by a scheme.

The rules follow DESIGN.md's numerics contract:
- MX (E8M0 scales): the block exponent from the float32 bits of the block amax (`floor` per
  OCP MX v1.0, or `rceil` / `ceil` / `even`); elements x * 2^(127 - b), clamped to +-max,
  rounded to nearest even. A NaN in a block makes its scale 0xFF (the block decodes to NaN).
- NVFP4: s_t = amax / (448 * 6) in fp32; block scale s_b = e4m3(amax_b / 6 / s_t); elements
  e2m1(clip(x * ((1 / s_t) / s_b), +-6)); dequantization q * (s_t * s_b).
- float scales: s = max(amax, amax_floor) / max_elem; elements fmt(x / s) (or x * (1 / s)).
Every division is IEEE round-to-nearest-even (`div_rn`): XLA's own f32 division is not.
- asymmetric integers: the range [min(x, 0), max(x, 0)] over 2^bits - 1 steps, zero point
  round(-min / s); q = clip(round(x / s) + zp, 0, 2^bits - 1).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mxjax import schemes as schemes_lib
from mxjax.blocking import Layout, make_layout, pad_to
from mxjax.formats import (
    Rounding,
    ScaleFormat,
    decode,
    e8m0_from_amax,
    e8m0_split,
    encode,
    pack,
    to_e4m3,
)
from mxjax.formats.exact import div_rn
from mxjax.formats.rounding import exp2i, round_integer
from mxjax.formats.scales import E8M0_NAN
from mxjax.qarray import QArray, dequantize
from mxjax.schemes import Identity, ScaleApply, ScaleChoice, Scheme

_NVFP4_TENSOR_DIV = 448.0 * 6.0
# The second level of NF4 double quantization: bitsandbytes' 8-bit dynamic map, blocks of 256.
DOUBLE_QUANT_SCHEME = Scheme(element="dynamic8", block_size=256, name="dynamic8_b256")


class _Encoded(NamedTuple):
  codes: jax.Array  # uint8 codes, blocked view
  scale: jax.Array  # stored scale, broadcastable against the blocked view
  tensor_scale: jax.Array | None
  zero_point: jax.Array | None
  values: jax.Array  # float32 dequantized values, blocked view (for the MSE search)


def _encode_e8m0(xb, amax, scheme: Scheme, key) -> _Encoded:
  fmt = scheme.format
  b = e8m0_from_amax(amax, fmt, scheme.scale_rule)
  # x / 2^(b - 127) as x * 2^(127 - b), applied as two normal factors (b = 0 would need the
  # subnormal 2^-127 or its reciprocal's split; XLA flushes subnormal operands).
  e = 127 - b.astype(jnp.int32)
  y = xb * exp2i(e // 2) * exp2i(e - e // 2)
  codes = encode(y, fmt, rounding=scheme.rounding, key=key)
  f1, f2 = e8m0_split(b)
  values = jnp.where(b == E8M0_NAN, jnp.nan, decode(codes, fmt) * f1 * f2)
  return _Encoded(codes, b, None, None, values)


def _encode_two_level(xb, amax, amax_t, scheme: Scheme, key) -> _Encoded:
  fmt = scheme.format
  s_t = div_rn(amax_t, _NVFP4_TENSOR_DIV)
  ok_t = s_t > 0
  safe_t = jnp.where(ok_t, s_t, 1.0)
  block = div_rn(div_rn(amax, fmt.max), safe_t)
  s_b = to_e4m3(jnp.where(ok_t, block, 0.0), min_value=scheme.block_scale_floor)
  sbf = s_b.astype(jnp.float32)
  y = xb * div_rn(div_rn(1.0, safe_t), jnp.where(sbf > 0, sbf, 1.0))
  y = jnp.where(ok_t & (sbf > 0), y, jnp.where(jnp.isnan(xb), jnp.nan, 0.0))
  codes = encode(y, fmt, rounding=scheme.rounding, key=key)
  values = decode(codes, fmt) * (s_t * sbf)
  return _Encoded(codes, s_b, s_t, None, values)


def _float_scale(s, scheme: Scheme):
  # A NaN block's scale is the one quiet NaN 0x7FC00000: the NaN that division returns differs
  # by backend (x86 keeps the operand's payload, NVIDIA GPUs give 0x7FFFFFFF).
  s = jnp.where(jnp.isnan(s), jnp.float32(jnp.nan), s)
  if scheme.scale is ScaleFormat.BF16:
    return s.astype(jnp.bfloat16).astype(jnp.float32)
  return s


def _apply_scale(xb, s, scheme: Scheme):
  """x / s (or x * (1 / s)), with x's sign; 0 where s is 0 (all-zero block) or NaN.

  s > 0, so the sign is the quotient's anyway, except for the NaN of +-Inf / Inf (a block
  whose amax is Inf): IEEE leaves that NaN's sign unspecified, and x86 and NVIDIA GPUs differ,
  so without `copysign` the E4M3 code of an infinite element would depend on the backend.
  """
  ok = s > 0
  sd = jnp.where(ok, s, 1.0)
  if scheme.scale_apply is ScaleApply.RECIPROCAL:
    q = xb * div_rn(1.0, sd)
  else:
    q = div_rn(xb, sd)
  return jnp.where(ok, jnp.copysign(q, xb), 0.0)


def _encode_float_scale(xb, amax, scheme: Scheme, key) -> _Encoded:
  fmt = scheme.format
  amax = jnp.maximum(amax, jnp.float32(scheme.amax_floor))
  s = _float_scale(div_rn(amax, fmt.max), scheme)
  codes = encode(_apply_scale(xb, s, scheme), fmt, rounding=scheme.rounding, key=key)
  return _Encoded(codes, s, None, None, decode(codes, fmt) * s)


def _encode_asymmetric(xb, lo, hi, scheme: Scheme, key) -> _Encoded:
  fmt = scheme.format
  qmax = float(2**fmt.bits - 1)
  s = _float_scale(div_rn(hi - lo, qmax), scheme)
  ok = s > 0
  zp = jnp.where(ok, jnp.clip(jnp.round(div_rn(-lo, jnp.where(ok, s, 1.0))), 0.0, qmax), 0.0)
  q = round_integer(_apply_scale(xb, s, scheme), scheme.rounding, key) + zp
  codes = encode(q, fmt)
  values = (decode(codes, fmt) - zp) * s
  return _Encoded(codes, s, None, zp.astype(jnp.uint8), values)


def _encode(xb, stats, amax_t, scheme: Scheme, key) -> _Encoded:
  if not scheme.symmetric:
    return _encode_asymmetric(xb, *stats, scheme, key)
  if scheme.scale is ScaleFormat.E8M0:
    return _encode_e8m0(xb, stats, scheme, key)
  if scheme.tensor_scale:
    return _encode_two_level(xb, stats, amax_t, scheme, key)
  return _encode_float_scale(xb, stats, scheme, key)


def _max_abs(xb, axis=None):
  """max |x| over `axis` (keepdims), NaN if any element is NaN.

  XLA's CPU max-reduction drops NaN in vectorized reductions (a NaN in a (64, 512) array gave
  a finite amax), so NaN is detected explicitly.
  """
  m = jnp.max(jnp.abs(xb), axis=axis, keepdims=True)
  return jnp.where(jnp.any(jnp.isnan(xb), axis=axis, keepdims=True), jnp.nan, m)


def _block_stats(xb, red, scheme: Scheme):
  """Block amax (symmetric) or (min(x, 0), max(x, 0)) (asymmetric), keepdims; NaN blocks NaN."""
  if scheme.symmetric:
    return _max_abs(xb, red)
  nan = jnp.any(jnp.isnan(xb), axis=red, keepdims=True)
  lo = jnp.minimum(jnp.min(xb, axis=red, keepdims=True), 0.0)
  hi = jnp.maximum(jnp.max(xb, axis=red, keepdims=True), 0.0)
  return jnp.where(nan, jnp.nan, lo), jnp.where(nan, jnp.nan, hi)


def _scaled_stats(stats, r):
  return tuple(s * r for s in stats) if isinstance(stats, tuple) else stats * r


def _encode_mse(xb, stats, amax_t, red, scheme: Scheme, key) -> _Encoded:
  """Per block, the clip ratio of scheme.mse_ratios whose dequantized MSE is least.

  The ratios run in a `lax.scan` so the encode is traced once, not once per ratio.
  """

  def run(r):
    enc = _encode(xb, _scaled_stats(stats, r), amax_t, scheme, key)
    return enc, jnp.sum(jnp.square(enc.values - xb), axis=red, keepdims=True)

  first, first_err = run(jnp.float32(scheme.mse_ratios[0]))

  def step(carry, r):
    best, best_err = carry
    cand, err = run(r)
    take = err < best_err
    best = jax.tree_util.tree_map(lambda b, c: jnp.where(take, c, b), best, cand)
    # The tensor scale does not depend on the ratio: keep the first.
    best = best._replace(tensor_scale=first.tensor_scale)
    return (best, jnp.minimum(err, best_err)), None

  ratios = jnp.asarray(scheme.mse_ratios[1:], jnp.float32)
  (best, _), _ = jax.lax.scan(step, (first, first_err), ratios)
  return best


def _check_input(x: jax.Array, key, scheme) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"quantize takes a floating-point array, got {x.dtype}. Cast it first, e.g."
        " x.astype(jnp.float32): integers are never rescaled implicitly."
    )
  if isinstance(scheme, Scheme) and scheme.rounding is Rounding.STOCHASTIC and key is None:
    raise ValueError(
        f"scheme {scheme.name or scheme.describe()!r} rounds stochastically and needs a PRNG"
        " key: quantize(x, scheme, key=jax.random.key(0))"
    )


def _store_codes(codes: jax.Array, scheme: Scheme, layout: Layout) -> jax.Array:
  fmt = scheme.format
  if fmt.bits == 8:
    return codes if fmt.dtype is None else jax.lax.bitcast_convert_type(codes, fmt.dtype)
  return pack(codes, fmt.bits, axis=layout.axis)


def quantize(
    x: jax.Array,
    scheme: Scheme | Identity | str,
    *,
    axis: int = -1,
    key: jax.Array | None = None,
    pad: bool = False,
) -> QArray:
  """Quantizes `x` by `scheme`.

  Args:
    x: floating array (float32, bfloat16, float16, ...), at least 1-D. Computed in float32.
    scheme: a Scheme, an Identity (bf16 / fp32 pass-through) or a preset name
      (`mxjax.schemes.names()`).
    axis: the axis that blocks run along and 4/6/2-bit codes are packed along (the
      contraction axis of a matmul operand). Per-channel schemes keep one scale per slice
      along it.
    key: PRNG key, required by schemes with stochastic rounding.
    pad: zero-pad blocked axes to a multiple of their block instead of raising.

  Returns:
    A QArray; `dequantize(q)` gives back an array of x's shape.

  Raises:
    TypeError: x is not floating point.
    ValueError: a block does not divide its axis (and pad=False), an unknown preset, a
      stochastic scheme without a key.

  Example:
    >>> q = quantize(jnp.linspace(-1, 1, 64).reshape(2, 32), "mxfp4")
    >>> q.codes.shape, q.scale.shape, q.bits_per_value
    ((2, 16), (2, 1), 4.25)
  """
  scheme = schemes_lib.get(scheme)
  x = jnp.asarray(x)
  _check_input(x, key, scheme)
  if isinstance(scheme, Identity):
    layout = Layout(shape=x.shape, padded=x.shape, axis=axis % max(1, x.ndim) - x.ndim, blocks=())
    return QArray(x.astype(scheme.dtype), None, None, None, None, scheme, layout, x.dtype)
  layout = make_layout(x.shape, scheme, axis, pad)  # validates eagerly, with a clear message
  return _quantize(x, key, scheme, layout)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _quantize(x: jax.Array, key, scheme: Scheme, layout: Layout) -> QArray:
  xb = layout.to_blocks(pad_to(x.astype(jnp.float32), layout))
  red = layout.reduce_axes()
  stats = _block_stats(xb, red, scheme)
  amax_t = None
  if scheme.tensor_scale:
    amax_t = _max_abs(xb)
    if scheme.scale_choice is ScaleChoice.STATIC:
      amax_t = jnp.full_like(amax_t, scheme.static_amax)
  elif scheme.scale_choice is ScaleChoice.STATIC:
    stats = jnp.full_like(stats, scheme.static_amax)
  if scheme.scale_choice is ScaleChoice.MSE:
    enc = _encode_mse(xb, stats, amax_t, red, scheme, key)
  else:
    enc = _encode(xb, stats, amax_t, scheme, key)
  codes = _store_codes(layout.from_blocks(enc.codes, 0), scheme, layout)
  scale = enc.scale.reshape(layout.scale_shape)
  if scheme.scale is ScaleFormat.BF16:
    scale = scale.astype(jnp.bfloat16)
  ones = (1,) * layout.ndim
  tensor_scale = None if enc.tensor_scale is None else enc.tensor_scale.reshape(ones)
  zero_point = None if enc.zero_point is None else enc.zero_point.reshape(layout.scale_shape)
  offset = None
  if scheme.double_quant:
    offset = jnp.mean(scale).reshape(ones)
    scale = quantize((scale - offset).reshape(-1), DOUBLE_QUANT_SCHEME, pad=True)
  return QArray(codes, scale, tensor_scale, zero_point, offset, scheme, layout, np.dtype(x.dtype))


def fake_quant(
    x: jax.Array,
    scheme: Scheme | Identity | str,
    *,
    axis: int = -1,
    key: jax.Array | None = None,
    pad: bool = False,
) -> jax.Array:
  """dequantize(quantize(x)) in x's dtype, with a straight-through gradient (d/dx = 1).

  The forward value is exactly the dequantized array (not x + (y - x), which rounds again in
  low-precision dtypes).
  """

  @jax.custom_jvp
  def _fq(x):
    return dequantize(quantize(x, scheme, axis=axis, key=key, pad=pad), x.dtype)

  @_fq.defjvp
  def _fq_jvp(primals, tangents):
    return _fq(primals[0]), tangents[0]

  return _fq(x)
