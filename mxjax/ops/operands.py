"""Operands of a quantized dot: quantize float operands on the fly along their contraction
axis, check QArray operands, and describe both for dispatch.

An operand is one of
- a float array with no scheme: kept in high precision;
- a float array with a scheme: quantized here, blocks along its contraction axis (zero-padded
  when a block or the 4/6-bit packing does not divide it: zeros add nothing to a dot product);
- a QArray: used as it is. Its scale must be constant along, or blocked along, a contraction
  axis: a per-slice or block-scaled QArray whose axis is not contracted raises.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mxjax.qarray import QArray
from mxjax.quantize import quantize
from mxjax.schemes import Granularity, Identity, Scheme


Operand = jax.Array | QArray


def is_quantized(x) -> bool:
  return isinstance(x, QArray) and not isinstance(x.scheme, Identity)


def logical_dtype(x) -> np.dtype:
  return np.dtype(x.dtype)


def shape_of(x) -> tuple[int, ...]:
  return tuple(x.shape)


def _label(s: Scheme) -> str:
  return s.name or s.describe()


def choose_pair(contract_a: tuple[int, ...], contract_b: tuple[int, ...], a, b) -> int | None:
  """Index of the contracting pair that on-the-fly quantization blocks along.

  A QArray operand's own axis decides (so both operands block along the same K); otherwise the
  pair with the last lhs dim (the contiguous one in row-major storage)."""
  if not contract_a:
    return None
  for x, cs in ((a, contract_a), (b, contract_b)):
    if is_quantized(x) and x.scheme.granularity is not Granularity.TENSOR:
      ax = x.axis % x.ndim
      if ax in cs:
        return cs.index(ax)
  return int(np.argmax(contract_a))


def check_qarray(x: QArray, contract: tuple[int, ...], role: str) -> None:
  """Raises unless x's scale is constant along or blocked along a contraction axis."""
  if x.scheme.granularity is Granularity.TENSOR:
    return
  ax = x.axis % x.ndim
  if ax not in contract:
    raise ValueError(
        f"{role} is a QArray quantized along axis {ax} ({_label(x.scheme)}), but this dot"
        f" contracts axes {contract} of it: a block-scaled or per-slice operand must be blocked"
        " along its contraction axis (its scales would vary inside every dot product). Quantize"
        f" it with axis= one of {contract}, or pass the float array and a scheme."
    )
  # Its other axes carry one scale per index (or per 2-D block), which every backend applies
  # per output element or per contraction slice.


def prepare(
    x,
    scheme: Scheme | None,
    contract: tuple[int, ...],
    pair: int | None,
    key: jax.Array | None,
    role: str,
    strict: bool = True,
) -> Operand:
  """Returns the operand a backend consumes: a QArray, or a float array kept as is.

  Args:
    x: float array or QArray.
    scheme: scheme to quantize a float x by (None: keep x).
    contract: x's contracting dims, in pair order.
    pair: index into `contract` of the axis to block along (see `choose_pair`).
    key: PRNG key for stochastic schemes.
    role: "lhs", "rhs", "d_out", ... for error messages.
    strict: False in the backward matmuls, where an operand with no contraction axis (the
      dgrad of a matrix-vector product) is blocked along its last axis instead of raising.
  """
  if isinstance(x, QArray):
    if scheme is not None and scheme != x.scheme:
      raise ValueError(
          f"{role} is already a QArray ({_label(x.scheme) if isinstance(x.scheme, Scheme) else x.scheme}"
          f") and a different scheme ({_label(scheme)}) was given for it: pass scheme None for"
          " a QArray operand"
      )
    if isinstance(x.scheme, Identity):
      return x.codes
    if strict:
      check_qarray(x, contract, role)
    return x
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{role} must be a floating-point array or a QArray, got dtype {x.dtype}")
  if scheme is None:
    return x
  if pair is None:
    if scheme.granularity is not Granularity.TENSOR and strict:
      raise ValueError(
          f"{role} has no contraction axis in this dot, so its {scheme.granularity.value}-scaled"
          f" scheme {_label(scheme)} has no axis to block along; use a per-tensor scheme"
      )
    axis = -1
  else:
    axis = contract[pair]
  if scheme.block_size_2d is not None and axis % x.ndim < x.ndim - 2:
    raise ValueError(
        f"{role}: 2-D blocks ({_label(scheme)}) tile the last two axes, but the contraction axis"
        f" is axis {axis} of a rank-{x.ndim} operand"
    )
  return quantize(x, scheme, axis=axis, key=key, pad=True)


@dataclasses.dataclass(frozen=True)
class OperandInfo:
  """What dispatch needs to know of a prepared operand (static)."""

  shape: tuple[int, ...]
  dtype: np.dtype
  scheme: Scheme | None  # None: high precision
  axis: int | None  # non-negative quantized axis
  padded: bool  # zero-padded along some axis
  padded_shape: tuple[int, ...] = ()

  @classmethod
  def of(cls, x: Operand) -> OperandInfo:
    if is_quantized(x):
      lay = x.layout
      n_lead = x.ndim - lay.ndim
      return cls(tuple(x.shape), np.dtype(x.dtype), x.scheme, x.axis % x.ndim,
                 lay.padded != lay.shape, tuple(x.shape[:n_lead]) + lay.padded)  # fmt: skip
    return cls(tuple(x.shape), np.dtype(x.dtype), None, None, False, tuple(x.shape))

  def describe(self) -> str:
    if self.scheme is None:
      return f"{self.dtype.name}{list(self.shape)} (high precision)"
    return f"{_label(self.scheme)}{list(self.shape)} along axis {self.axis}"

