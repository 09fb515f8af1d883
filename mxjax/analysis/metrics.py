"""Quantization error metrics of a scheme on a tensor or a whole model.

For an array x and its quantize-dequantize round trip x_q = dequantize(quantize(x, scheme)),
with e = x_q - x over the n logical values:

- MSE = sum(e^2) / n;  SNR (dB) = 10 log10(sum(x^2) / sum(e^2))  (+inf when e = 0);
- max abs error = max |e|;  max rel error = max |e| / |x| over x != 0;
- clipped fraction: values whose magnitude exceeded the largest value their block can hold
  (the element code sits at the format's top or bottom and x lies beyond x_q);
- underflowed fraction: x != 0 whose x_q is 0 (flushed below the smallest step);
- bits per value: bits actually stored (packed codes + every scale, zero point, tensor scale and
  the padding a block needs) over n, so MXFP4 is 4.25 and NVFP4 4.5 + a tensor-scale term;
- ENOB (effective number of bits) = (SNR_dB - 1.76) / 6.02, the ideal uniform quantizer's
  bit count at that SNR; set it beside bits per value to see what the storage buys.

Sums are accumulated in float64 so that a 28M-value embedding does not lose its small errors.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mxjax import schemes as schemes_lib
from mxjax.blocking import crop
from mxjax.qarray import dequantize, element_values
from mxjax.quantize import quantize
from mxjax.schemes import Identity, Scheme

# |x| must exceed |x_q| by more than this relative margin to count as clipped: a float32 scale
# s = amax / max does not give back amax exactly (amax / s * s is off by an ulp or two).
_CLIP_RTOL = 2.0**-18


class _Sums(NamedTuple):
  """Additive partial statistics, so per-leaf results combine into a per-model one."""

  n: int
  sum_x2: float
  sum_e2: float
  max_abs: float
  max_rel: float
  clipped: int
  underflow: int
  bits: float  # total stored bits


def _combine(parts: Iterable[_Sums]) -> _Sums:
  parts = list(parts)
  if not parts:
    raise ValueError("no tensors to combine")
  return _Sums(
      n=sum(p.n for p in parts),
      sum_x2=math.fsum(p.sum_x2 for p in parts),
      sum_e2=math.fsum(p.sum_e2 for p in parts),
      max_abs=max(p.max_abs for p in parts),
      max_rel=max(p.max_rel for p in parts),
      clipped=sum(p.clipped for p in parts),
      underflow=sum(p.underflow for p in parts),
      bits=math.fsum(p.bits for p in parts),
  )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ErrorStats:
  """Error of one scheme on one tensor (or a set of tensors pooled).

  Attributes:
    scheme: the scheme's preset name or description.
    n: number of logical values.
    mse: mean squared error, in the tensor's units squared.
    snr_db: 10 log10(sum x^2 / sum e^2), dB; +inf for an exact round trip.
    max_abs_err: max |x_q - x|.
    max_rel_err: max |x_q - x| / |x| over x != 0 (1.0 where a value underflowed to 0).
    clipped_frac: fraction of values clipped at the block's largest magnitude.
    underflow_frac: fraction of non-zero values that became 0.
    bits_per_value: stored bits per logical value, scale overhead and padding included.
    enob: (snr_db - 1.76) / 6.02.
  """

  scheme: str
  n: int
  mse: float
  snr_db: float
  max_abs_err: float
  max_rel_err: float
  clipped_frac: float
  underflow_frac: float
  bits_per_value: float
  enob: float

  @classmethod
  def _from_sums(cls, name: str, s: _Sums) -> ErrorStats:
    if s.sum_e2 == 0:
      snr = math.inf
    elif s.sum_x2 == 0:
      snr = -math.inf
    else:
      snr = 10.0 * math.log10(s.sum_x2 / s.sum_e2)
    return cls(
        scheme=name,
        n=s.n,
        mse=s.sum_e2 / max(1, s.n),
        snr_db=snr,
        max_abs_err=s.max_abs,
        max_rel_err=s.max_rel,
        clipped_frac=s.clipped / max(1, s.n),
        underflow_frac=s.underflow / max(1, s.n),
        bits_per_value=s.bits / max(1, s.n),
        enob=(snr - 1.76) / 6.02,
    )

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def scheme_label(scheme: Scheme | Identity | str) -> str:
  s = schemes_lib.get(scheme)
  return s.name or s.describe()


@functools.partial(jax.jit, static_argnums=(1, 2))
def _round_trip(x: jax.Array, scheme: Scheme | Identity, axis: int, key=None):
  """(x_q float32, clipped mask) in one compiled call: eager quantize dispatches op by op."""
  q = quantize(x, scheme, axis=axis, key=key, pad=True)
  xf = x.astype(jnp.float32)
  xq = dequantize(q, jnp.float32)
  if isinstance(scheme, Identity):
    return xq, jnp.zeros(x.shape, bool)
  # Clipped: the element code sits at the format's top (bottom) and x lies above (below) what
  # came back.
  fmt = scheme.format
  v = crop(element_values(q), q.layout)
  tol = _CLIP_RTOL * jnp.abs(xq) + jnp.finfo(jnp.float32).tiny
  hi = (v == fmt.max) & (xf > xq + tol)
  lo = (v == fmt.min) & (xf < xq - tol)
  return xq, hi | lo


def _nbytes(shape, dtype, scheme: Scheme | Identity, axis: int) -> int:
  q = jax.eval_shape(lambda x: quantize(x, scheme, axis=axis, pad=True),
                     jax.ShapeDtypeStruct(shape, dtype))
  return q.nbytes


def _sums(x: jax.Array, scheme: Scheme | Identity, axis: int, key) -> _Sums:
  x = jnp.asarray(x)
  xq, clip = _round_trip(x, scheme, axis, key)
  xd = np.asarray(x.astype(jnp.float32), np.float64).ravel()
  xq = np.asarray(xq).ravel()
  e = xq.astype(np.float64) - xd
  ae = np.abs(e)
  nz = xd != 0
  rel = ae[nz] / np.abs(xd[nz])
  return _Sums(
      n=int(xd.size),
      sum_x2=float(np.sum(xd * xd)),
      sum_e2=float(np.sum(e * e)),
      max_abs=float(ae.max(initial=0.0)),
      max_rel=float(rel.max(initial=0.0)),
      clipped=int(np.asarray(clip).sum()),
      underflow=int(np.sum(nz & (xq == 0))),
      bits=float(_nbytes(x.shape, x.dtype, scheme, axis) * 8),
  )


def error_stats(
    x: jax.Array,
    scheme: Scheme | Identity | str,
    *,
    axis: int = -1,
    key: jax.Array | None = None,
) -> ErrorStats:
  """Quantization error of `scheme` on `x` (see the module docstring for the definitions).

  Args:
    x: floating array, any shape with >= 1 dimension.
    scheme: a Scheme, Identity or preset name.
    axis: the axis blocks run along (the contraction axis of the matmul that reads x).
      Axes a block does not divide are zero-padded; the padding counts in bits_per_value.
    key: PRNG key for stochastically rounded schemes.

  Returns:
    An ErrorStats.

  Example:
    >>> s = error_stats(jnp.linspace(-1.0, 1.0, 64), "mxfp8_e4m3")
    >>> s.bits_per_value, s.clipped_frac
    (8.25, 0.0)
  """
  scheme = schemes_lib.get(scheme)
  return ErrorStats._from_sums(scheme_label(scheme), _sums(x, scheme, axis, key))


def default_weight_axis(path: str, leaf: jax.Array) -> int:
  """Contraction axis of a weight: 0 for Flax (in, out) kernels, -1 for embeddings (rows are
  the vectors a tied head contracts against)."""
  del leaf
  return -1 if "embed" in path.lower() else 0


def model_error_stats(
    params: Any,
    scheme: Scheme | Identity | str,
    *,
    select: Callable[[str, jax.Array], bool] | None = None,
    axis_fn: Callable[[str, jax.Array], int] = default_weight_axis,
    progress: bool = False,
) -> tuple[ErrorStats, dict[str, ErrorStats]]:
  """Error of `scheme` on every selected leaf of a parameter tree, pooled and per leaf.

  Args:
    params: a pytree of arrays (e.g. `nnx.state(model, nnx.Param)`).
    scheme: a Scheme, Identity or preset name.
    select: (path, leaf) -> bool; default: floating leaves with ndim >= 2 (matmul weights).
    axis_fn: (path, leaf) -> the axis to block along (default `default_weight_axis`).
    progress: show a progress bar over leaves.

  Returns:
    (pooled ErrorStats over all selected values, {path: ErrorStats}).
  """
  from mxjax.analysis._progress import progress_iter
  from mxjax.tree import path_str

  scheme = schemes_lib.get(scheme)
  select = select or (lambda p, a: a.ndim >= 2 and jnp.issubdtype(a.dtype, jnp.floating))
  leaves = [(path_str(p), a) for p, a in jax.tree_util.tree_flatten_with_path(params)[0]
            if hasattr(a, "ndim")]
  leaves = [(p, a) for p, a in leaves if select(p, a)]
  if not leaves:
    raise ValueError("no leaf of the tree was selected")
  parts, per = [], {}
  label = scheme_label(scheme)
  for p, a in progress_iter(leaves, desc=f"error {label}", enabled=progress):
    s = _sums(a, scheme, axis_fn(p, a), None)
    parts.append(s)
    per[p] = ErrorStats._from_sums(label, s)
  return ErrorStats._from_sums(label, _combine(parts)), per


def pooled_error_stats(
    tensors: Mapping[str, jax.Array | tuple[jax.Array, int]],
    scheme: Scheme | Identity | str,
) -> ErrorStats:
  """Error of `scheme` pooled over named tensors ({name: array or (array, axis)})."""
  scheme = schemes_lib.get(scheme)
  parts = []
  for v in tensors.values():
    a, ax = v if isinstance(v, tuple) else (v, -1)
    parts.append(_sums(a, scheme, ax, None))
  return ErrorStats._from_sums(scheme_label(scheme), _combine(parts))
