"""`einsum`: a two-operand quantized einsum, translated to `mxjax.ops.dot_general`."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mxjax.qarray import QArray

from mxjax.ops.accumulate import Accumulation
from mxjax.ops.backends import Backend
from mxjax.ops.config import AnyScheme, DotSchemes
from mxjax.ops.dims import plan_einsum
from mxjax.ops.dot import Explanation, dot_general, explain


def _split_schemes(schemes) -> tuple[AnyScheme, AnyScheme, DotSchemes | None]:
  if schemes is None or isinstance(schemes, DotSchemes):
    return None, None, schemes
  if isinstance(schemes, Sequence) and not isinstance(schemes, str) and len(schemes) == 2:
    return schemes[0], schemes[1], None
  raise TypeError(
      "schemes= takes a DotSchemes or a pair (lhs_scheme, rhs_scheme), got" f" {schemes!r}"
  )


def einsum(
    spec: str,
    lhs: jax.Array | QArray,
    rhs: jax.Array | QArray,
    *,
    schemes: DotSchemes | Sequence[AnyScheme] | None = None,
    backend: Backend | str = "auto",
    preferred_element_type=None,
    accumulation: Accumulation | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
  """Quantized two-operand einsum, e.g. `einsum("btd,df->btf", x, w_q)`.

  Args:
    spec: an einsum spec with an explicit output, two operands, ellipses allowed
      ("...d,fd->...f"). Labels in both operands and the output are batch dims; in both
      operands only, contracted; in one operand and the output, free.
    lhs, rhs: float arrays or QArrays (see `dot_general`).
    schemes: a DotSchemes, or a pair (lhs_scheme, rhs_scheme), or None (no quantization of
      float operands).
    backend, preferred_element_type, accumulation, key: as in `dot_general`.

  Returns:
    The einsum's output, float32 accumulation, in `preferred_element_type` (default the
    operands' result type).

  Example:
    >>> x = jnp.ones((2, 3, 64)); w = jnp.ones((64, 8))
    >>> einsum("btd,df->btf", x, w, schemes=("fp8_e4m3", "fp8_e4m3")).shape
    (2, 3, 8)
  """
  plan = plan_einsum(spec, len(lhs.shape), len(rhs.shape))
  ls, rs, ds = _split_schemes(schemes)
  out = dot_general(
      lhs, rhs, plan.dims.nums, lhs_scheme=ls, rhs_scheme=rs, schemes=ds, backend=backend,
      preferred_element_type=preferred_element_type, accumulation=accumulation, key=key,
  )  # fmt: skip
  return jnp.transpose(out, plan.out_perm)


def explain_einsum(
    spec: str,
    lhs,
    rhs,
    *,
    schemes: DotSchemes | Sequence[AnyScheme] | None = None,
    backend: Backend | str = "auto",
    preferred_element_type=None,
    accumulation: Accumulation | None = None,
    platform: str | None = None,
) -> Explanation:
  """`explain` for an einsum (see `mxjax.ops.explain`)."""
  plan = plan_einsum(spec, len(lhs.shape), len(rhs.shape))
  ls, rs, ds = _split_schemes(schemes)
  return explain(
      lhs, rhs, plan.dims.nums, lhs_scheme=ls, rhs_scheme=rs, schemes=ds, backend=backend,
      preferred_element_type=preferred_element_type, accumulation=accumulation,
      platform=platform,
  )  # fmt: skip
