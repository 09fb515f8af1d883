"""Block layout: which axes a scheme blocks, by how much, and the reshapes between an array and
its blocked view.

Axes are kept as negative indices (counted from the end) so that a QArray stays valid when
`vmap` adds leading batch axes to its leaves.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from mxjax.formats import packed_length
from mxjax.schemes import Granularity, Scheme


@dataclasses.dataclass(frozen=True)
class Layout:
  """Static block layout of one quantized array.

  Attributes:
    shape: logical shape (before padding).
    padded: shape after zero-padding blocked axes to a multiple of their block.
    axis: the quantized (block / packing) axis, negative.
    blocks: ((negative axis, block length), ...) for every blocked axis, ascending.
  """

  shape: tuple[int, ...]
  padded: tuple[int, ...]
  axis: int
  blocks: tuple[tuple[int, int], ...]

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def scale_shape(self) -> tuple[int, ...]:
    """Shape of the scale array: each blocked axis reduced to its number of blocks."""
    out = list(self.padded)
    for d, b in self.blocks:
      out[d] = self.padded[d] // b
    return tuple(out)

  def blocked_shape(self, lead: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Shape of the blocked view: each blocked axis d split into (n_d, b_d)."""
    out = list(lead)
    bl = dict(self.blocks)
    for i, n in enumerate(self.padded):
      d = i - self.ndim
      out += [n // bl[d], bl[d]] if d in bl else [n]
    return tuple(out)

  def reduce_axes(self, n_lead: int = 0) -> tuple[int, ...]:
    """Positions of the within-block sub-axes in the blocked view."""
    out, pos = [], n_lead
    bl = dict(self.blocks)
    for i in range(self.ndim):
      if i - self.ndim in bl:
        out.append(pos + 1)
        pos += 2
      else:
        pos += 1
    return tuple(out)

  def to_blocks(self, x: jax.Array) -> jax.Array:
    """(lead..., *padded) -> blocked view."""
    lead = x.shape[: x.ndim - self.ndim]
    return x.reshape(self.blocked_shape(lead))

  def from_blocks(self, xb: jax.Array, n_lead: int) -> jax.Array:
    return xb.reshape(xb.shape[:n_lead] + self.padded)

  def scale_to_blocks(self, s: jax.Array) -> jax.Array:
    """(lead..., *scale_shape) -> broadcastable against the blocked view."""
    n_lead = s.ndim - self.ndim
    shape = list(s.shape[:n_lead])
    bl = dict(self.blocks)
    for i, n in enumerate(s.shape[n_lead:]):
      shape += [n, 1] if i - self.ndim in bl else [n]
    return s.reshape(shape)


def make_layout(shape: tuple[int, ...], scheme: Scheme, axis: int, pad: bool) -> Layout:
  """Validates the block layout of `scheme` on an array of `shape` quantized along `axis`.

  Raises:
    ValueError: with the axis, its length and the block, when a block does not divide its axis
      and `pad` is False; when a 2-D block is asked of an array with fewer than two axes.
  """
  ndim = len(shape)
  if ndim == 0:
    raise ValueError("cannot quantize a 0-d array: reshape it to (1,) first")
  if not -ndim <= axis < ndim:
    raise ValueError(f"axis {axis} is out of range for an array of {ndim} dimensions")
  axis = axis % ndim - ndim
  g = scheme.granularity
  if g is Granularity.TENSOR:
    blocks = {d - ndim: shape[d] for d in range(ndim)}
  elif g is Granularity.AXIS:
    blocks = {axis: shape[axis]}
  else:
    blocks = {axis: scheme.block_size}
    if scheme.block_size_2d is not None:
      if ndim < 2 or axis not in (-1, -2):
        raise ValueError(
            f"2-D blocks ({scheme.block_size}x{scheme.block_size_2d}) tile the last two axes:"
            f" the array needs >= 2 dimensions and axis must be -1 or -2 (got axis={axis},"
            f" shape {shape})"
        )
      blocks[-3 - axis] = scheme.block_size_2d
  padded = list(shape)
  for d, b in blocks.items():
    n = shape[d]
    if n % b:
      if not pad:
        raise ValueError(
            f"block size {b} does not divide axis {d % ndim} of length {n} (shape {shape},"
            f" scheme {scheme.name or scheme.describe()}). Pass pad=True to zero-pad the axis"
            f" to {-(-n // b) * b} (the padding is dropped again by dequantize), or choose a"
            " block size that divides it."
        )
      padded[d] = -(-n // b) * b
  bits = scheme.format.bits
  try:
    packed_length(padded[axis], bits)
  except ValueError:
    if not pad:
      raise ValueError(
          f"{bits}-bit codes are packed along axis {axis % ndim}, whose length"
          f" {padded[axis]} is not a multiple of the packing group. Pass pad=True, or quantize"
          " along another axis."
      ) from None
    group = 2 if bits == 4 else 4
    if g is Granularity.BLOCK:
      group = math.lcm(group, blocks[axis])
    padded[axis] = -(-padded[axis] // group) * group
    if g is not Granularity.BLOCK:
      blocks[axis] = padded[axis]
  return Layout(
      shape=tuple(shape), padded=tuple(padded), axis=axis, blocks=tuple(sorted(blocks.items()))
  )


def pad_to(x: jax.Array, layout: Layout) -> jax.Array:
  """Zero-pads the trailing axes of x from layout.shape to layout.padded."""
  if layout.padded == layout.shape:
    return x
  n_lead = x.ndim - layout.ndim
  widths = [(0, 0)] * n_lead + [(0, p - s) for s, p in zip(layout.shape, layout.padded)]
  return jnp.pad(x, widths)


def crop(x: jax.Array, layout: Layout) -> jax.Array:
  """Drops the padding added by `pad_to`."""
  if layout.padded == layout.shape:
    return x
  n_lead = x.ndim - layout.ndim
  return x[(slice(None),) * n_lead + tuple(slice(0, s) for s in layout.shape)]
