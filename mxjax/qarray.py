"""`QArray`: a quantized array as a pytree, and `dequantize`.

A QArray holds packed codes, block scales, an optional fp32 tensor scale and zero point, and
static metadata (scheme, logical shape and dtype, block layout). Its array fields are pytree
leaves, so it passes through `jit`, `vmap`, `lax.scan`, `device_put` and sharding; everything
else is static.

Storage:
- codes: FP8 / INT8 elements in their XLA dtype (float8_e4m3fn, float8_e5m2, int8) with the
  (padded) logical shape; 2-, 4- and 6-bit elements as uint8 packed along the quantized axis
  (see `mxjax.formats.packing`); identity presets (bf16, fp32) as the array itself.
- scale: same rank as the array, each blocked axis reduced to its number of blocks; uint8
  biased exponents for E8M0, float8_e4m3fn for NVFP4 block scales, float32 or bfloat16
  otherwise; for NF4 double quantization, itself a QArray (8-bit dynamic map, blocks of 256)
  with `scale_offset` the mean that was subtracted.
- tensor_scale: float32, all dims 1 (two-level schemes); zero_point: uint8 like scale
  (asymmetric schemes).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mxjax.blocking import Layout, crop
from mxjax.formats import (
    ScaleFormat,
    decode,
    e8m0_split,
    unpack,
)
from mxjax.formats.scales import E8M0_NAN
from mxjax.schemes import Identity, Scheme


@dataclasses.dataclass(frozen=True)
class QArray:
  """A quantized array. Build with `mxjax.quantize`; read with `mxjax.dequantize`."""

  codes: jax.Array
  scale: jax.Array | QArray | None
  tensor_scale: jax.Array | None
  zero_point: jax.Array | None
  scale_offset: jax.Array | None
  scheme: Scheme | Identity
  layout: Layout
  dtype: Any  # numpy dtype of the array that was quantized

  @property
  def shape(self) -> tuple[int, ...]:
    """Logical shape, including any leading axes that vmap added to the leaves."""
    n_lead = self.codes.ndim - self.layout.ndim
    return tuple(self.codes.shape[:n_lead]) + self.layout.shape

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def axis(self) -> int:
    """The quantized (block / packing) axis, as a negative index."""
    return self.layout.axis

  @property
  def nbytes(self) -> int:
    """Bytes actually stored: packed codes plus every scale, zero point and offset."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(self):
      total += int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    return total

  @property
  def bits_per_value(self) -> float:
    """nbytes * 8 / number of logical values (MXFP4: 4.25)."""
    return self.nbytes * 8 / max(1, int(np.prod(self.shape)))

  def dequantize(self, dtype=jnp.float32) -> jax.Array:
    return dequantize(self, dtype)

  def __repr__(self) -> str:
    name = self.scheme.name or self.scheme.describe()
    return (
        f"QArray({name}, shape={self.shape}, dtype={np.dtype(self.dtype).name},"
        f" {self.bits_per_value:.3g} bits/value)"
    )


jax.tree_util.register_dataclass(
    QArray,
    data_fields=["codes", "scale", "tensor_scale", "zero_point", "scale_offset"],
    meta_fields=["scheme", "layout", "dtype"],
)


def element_values(q: QArray) -> jax.Array:
  """Decoded element values (before scaling), float32, padded shape with leading axes."""
  fmt = q.scheme.format
  codes = q.codes
  if codes.dtype != jnp.uint8 or fmt.bits < 8:
    if fmt.dtype is not None and fmt.bits == 8:
      return codes.astype(jnp.float32) * 2.0**-fmt.frac_bits
    codes = unpack(codes, fmt.bits, q.layout.axis)
  return decode(codes, fmt)


def scale_values(q: QArray) -> jax.Array:
  """The float32 scale of each block of a float-scaled (FP32 / BF16) QArray."""
  s = q.scale
  if isinstance(s, QArray):  # NF4 double quantization
    flat = dequantize(s)
    n_lead = flat.ndim - 1
    s = flat.reshape(flat.shape[:n_lead] + q.layout.scale_shape) + q.scale_offset
  return s.astype(jnp.float32)


def dequantize(q: QArray | jax.Array, dtype=jnp.float32) -> jax.Array:
  """Reconstructs the array a QArray holds.

  Args:
    q: a QArray (a plain array is returned cast to `dtype`).
    dtype: output dtype (default float32; the arithmetic is float32 in every case).

  Returns:
    Array of q.shape and `dtype`: element value x block scale (x tensor scale), computed in
    float32 in the order of the scheme's reference (NVFP4: q * (s_t * s_b)); NaN for blocks
    whose scale is NaN; padding dropped.
  """
  if not isinstance(q, QArray):
    return jnp.asarray(q).astype(dtype)
  return _dequantize(q, np.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1,))
def _dequantize(q: QArray, dtype) -> jax.Array:
  if isinstance(q.scheme, Identity):
    return q.codes.astype(dtype)
  lay = q.layout
  v = lay.to_blocks(element_values(q))
  n_lead = v.ndim - len(lay.blocked_shape())
  scheme = q.scheme
  if scheme.scale is ScaleFormat.E8M0:
    b = lay.scale_to_blocks(q.scale)
    f1, f2 = e8m0_split(b)
    out = jnp.where(b == E8M0_NAN, jnp.nan, v * f1 * f2)
  elif scheme.tensor_scale:
    s_b = lay.scale_to_blocks(q.scale.astype(jnp.float32))
    s_t = q.tensor_scale.reshape(q.tensor_scale.shape[:n_lead] + (1,) * (v.ndim - n_lead))
    out = v * (s_t * s_b)
  else:
    s = lay.scale_to_blocks(scale_values(q))
    if q.zero_point is not None:
      v = v - lay.scale_to_blocks(q.zero_point.astype(jnp.float32))
    out = v * s
  return crop(lay.from_blocks(out, n_lead), lay).astype(dtype)
