"""`dot_general`: a quantized `lax.dot_general` with explicit backends and quantized gradients.

Forward: each operand is a float array (quantized here by its scheme, blocks along its
contraction axis), a QArray, or a float array left in high precision; the backend (`reference`,
`xla`, `pallas`, or `auto`) computes the product with float32 accumulation.

Backward (a `jax.custom_vjp`): in GradMode.QUANTIZED the dgrad `d_lhs = d_out . rhs^T` and the
wgrad `d_rhs = lhs^T . d_out` are quantized matmuls themselves, their operands quantized by the
gradient schemes of `DotSchemes` along their own contraction axes and run on the same backend;
in GradMode.STE the gradient is that of the fake-quantized forward (straight-through). QArray
operands are constants: their cotangent is zero.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mxjax.qarray import QArray, dequantize
from mxjax.schemes import Granularity, Scheme

from mxjax.ops.accumulate import Accumulation
from mxjax.ops.backends import Backend, Case, run, run_reference, select
from mxjax.ops.config import AnyScheme, DotSchemes, GradMode, make_schemes
from mxjax.ops.dims import Dims, check_shapes, normalize, out_shape
from mxjax.ops.operands import OperandInfo, choose_pair, prepare


@dataclasses.dataclass(frozen=True)
class _Static:
  dims: Dims
  schemes: DotSchemes
  backend: Backend
  out_dtype: np.dtype
  accumulation: Accumulation | None
  platform: str
  lhs_const: bool  # a QArray operand: no cotangent
  rhs_const: bool


def _keys(key):
  if key is None:
    return (None,) * 6
  return tuple(jax.random.split(key, 6))


def _forward_operands(st: _Static, lhs, rhs, keys):
  d = st.dims
  pair = choose_pair(d.lc, d.rc, lhs, rhs)
  lq = prepare(lhs, st.schemes.lhs, d.lc, pair, keys[0], "lhs")
  rq = prepare(rhs, st.schemes.rhs, d.rc, pair, keys[1], "rhs")
  return lq, rq


def _case(st: _Static, lq, rq, dims: Dims, out_dtype) -> Case:
  return Case(dims, OperandInfo.of(lq), OperandInfo.of(rq), np.dtype(out_dtype),
              st.accumulation, st.platform)  # fmt: skip


def _matmul(st: _Static, lq, rq, dims: Dims, out_dtype):
  backend, _, _ = select(_case(st, lq, rq, dims, out_dtype), st.backend)
  return run(backend, lq, rq, dims, out_dtype, st.accumulation)


def _fwd_scheme(x, given: Scheme | None) -> Scheme | None:
  if isinstance(x, QArray):
    return x.scheme if isinstance(x.scheme, Scheme) else None
  return given


def _bwd_operand(x, scheme: Scheme | None):
  """The value a backward matmul quantizes, and the scheme to quantize it by.

  A QArray operand is a constant whose value is its dequantized array. Under its own scheme
  ("as forward") a per-tensor QArray is reused as it is (its codes do not depend on the axis)
  and any other is used at its exact dequantized value (quantizing it again along another axis
  would only add error); under a different backward scheme it is quantized again from that
  value, along the new contraction axis."""
  if isinstance(x, QArray):
    if isinstance(x.scheme, Scheme) and x.scheme == scheme:
      if x.scheme.granularity is Granularity.TENSOR:
        return x, None
      return dequantize(x, jnp.float32), None
    return dequantize(x, jnp.float32), scheme
  return x, scheme


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _qdot(st: _Static, lhs, rhs, key):
  return _qdot_fwd(st, lhs, rhs, key)[0]


def _qdot_fwd(st: _Static, lhs, rhs, key):
  keys = _keys(key)
  lq, rq = _forward_operands(st, lhs, rhs, keys)
  out = _matmul(st, lq, rq, st.dims, st.out_dtype)
  if st.schemes.mode is GradMode.STE:
    return out, (None, None, lq, rq, keys)
  return out, (lhs, rhs, None, None, keys)


def _qdot_bwd(st: _Static, res, g):
  lhs, rhs, lq, rq, keys = res
  d = st.dims
  s = st.schemes
  dd, dperm = d.dgrad()
  dw, wperm = d.wgrad()
  d_lhs = d_rhs = None
  if s.mode is GradMode.STE:
    g32 = g.astype(jnp.float32)
    if not st.lhs_const:
      d_lhs = run_reference(g32, rq, dd, jnp.float32, None).transpose(dperm)
      d_lhs = d_lhs.astype(lq.dtype)
    if not st.rhs_const:
      d_rhs = run_reference(lq, g32, dw, jnp.float32, None).transpose(wperm)
      d_rhs = d_rhs.astype(rq.dtype)
    return d_lhs, d_rhs, None
  if not st.lhs_const:
    gq, r = _dgrad_operands(st, g, rhs, keys)
    d_lhs = _matmul(st, gq, r, dd, jnp.float32).transpose(dperm).astype(lhs.dtype)
  if not st.rhs_const:
    a, gq = _wgrad_operands(st, lhs, g, keys)
    d_rhs = _matmul(st, a, gq, dw, jnp.float32).transpose(wperm).astype(rhs.dtype)
  return d_lhs, d_rhs, None


def _dgrad_operands(st: _Static, g, rhs, keys):
  """Operands of d_lhs = d_out . rhs^T: d_out by `grad`, rhs by `grad_rhs`, along N."""
  s, (dd, _) = st.schemes, st.dims.dgrad()
  r, r_scheme = _bwd_operand(rhs, s.backward_scheme("rhs", _fwd_scheme(rhs, s.rhs)))
  pair = choose_pair(dd.lc, dd.rc, g, r)
  gq = prepare(g, s.grad, dd.lc, pair, keys[2], "d_out (dgrad)", strict=False)
  return gq, prepare(r, r_scheme, dd.rc, pair, keys[4], "rhs (dgrad)", strict=False)


def _wgrad_operands(st: _Static, lhs, g, keys):
  """Operands of d_rhs = lhs^T . d_out: lhs by `grad_lhs`, d_out by `grad`, along M."""
  s, (dw, _) = st.schemes, st.dims.wgrad()
  a, a_scheme = _bwd_operand(lhs, s.backward_scheme("lhs", _fwd_scheme(lhs, s.lhs)))
  pair = choose_pair(dw.lc, dw.rc, a, g)
  a = prepare(a, a_scheme, dw.lc, pair, keys[3], "lhs (wgrad)", strict=False)
  return a, prepare(g, s.grad, dw.rc, pair, keys[5], "d_out (wgrad)", strict=False)


_qdot.defvjp(_qdot_fwd, _qdot_bwd)

# One compiled program per configuration and shapes: an eager call compiles once instead of
# dispatching every primitive of the quantizers (inside an outer jit this inlines).
_qdot_jit = jax.jit(_qdot, static_argnums=0)


def _static(lhs, rhs, dimension_numbers, lhs_scheme, rhs_scheme, schemes, backend,
            preferred_element_type, accumulation, platform) -> _Static:  # fmt: skip
  s = make_schemes(lhs_scheme, rhs_scheme, schemes)
  d = normalize(dimension_numbers, len(lhs.shape), len(rhs.shape))
  check_shapes(d, lhs.shape, rhs.shape)
  if preferred_element_type is None:
    out_dtype = np.dtype(jnp.result_type(np.dtype(lhs.dtype), np.dtype(rhs.dtype)))
  else:
    out_dtype = np.dtype(preferred_element_type)
  try:
    backend = Backend(backend)
  except ValueError:
    raise ValueError(
        f"backend={backend!r} is not one of {', '.join(repr(b.value) for b in Backend)}"
    ) from None
  if accumulation is not None and not isinstance(accumulation, Accumulation):
    raise TypeError(f"accumulation= takes an mxjax.ops.Accumulation, got {accumulation!r}")
  return _Static(d, s, backend, out_dtype, accumulation, platform or jax.default_backend(),
                 isinstance(lhs, QArray), isinstance(rhs, QArray))  # fmt: skip


def dot_general(
    lhs: jax.Array | QArray,
    rhs: jax.Array | QArray,
    dimension_numbers,
    *,
    lhs_scheme: AnyScheme = None,
    rhs_scheme: AnyScheme = None,
    schemes: DotSchemes | None = None,
    backend: Backend | str = "auto",
    preferred_element_type=None,
    accumulation: Accumulation | None = None,
    key: jax.Array | None = None,
) -> jax.Array:
  """Quantized `lax.dot_general`.

  Args:
    lhs, rhs: float arrays (any float dtype) or QArrays. A float operand with a scheme is
      quantized along its contraction axis (the last contracting dim of lhs and its partner in
      rhs, or the axis of a QArray partner), zero-padded where a block does not divide it.
    dimension_numbers: `((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))` as in
      `lax.dot_general`.
    lhs_scheme, rhs_scheme: forward schemes (Scheme, preset name, or None / "bf16" / "fp32"
      for high precision); shorthand for `schemes=DotSchemes(lhs=..., rhs=...)`.
    schemes: a DotSchemes with the forward and gradient schemes and the GradMode.
    backend: "auto", "reference", "xla" or "pallas" (see `mxjax.ops.explain`). A named backend
      that cannot run the case raises ValueError with the reason.
    preferred_element_type: output dtype (default: the result type of the operands' logical
      dtypes). Accumulation is float32 (int32 for integer xla dots) in every backend.
    accumulation: an `Accumulation` to emulate a reduced-precision accumulator (reference
      backend).
    key: PRNG key for stochastic rounding (forward and gradient schemes draw from splits of it).

  Returns:
    Array of `lax.dot_general`'s output shape (batch, lhs free, rhs free) and the output dtype.

  Raises:
    ValueError: shapes that do not pair, a QArray blocked along a non-contracted axis, a backend
      that cannot run the case, a stochastic scheme without a key.

  Example:
    >>> x = jnp.ones((4, 64)); w = jnp.ones((64, 8))
    >>> dot_general(x, w, (((1,), (0,)), ((), ())), lhs_scheme="mxfp8_e4m3",
    ...             rhs_scheme="mxfp8_e4m3", backend="reference")[0, 0]
    Array(64., dtype=float32)
  """
  st = _static(lhs, rhs, dimension_numbers, lhs_scheme, rhs_scheme, schemes, backend,
               preferred_element_type, accumulation, None)  # fmt: skip
  if not isinstance(lhs, QArray):
    lhs = jnp.asarray(lhs)
  if not isinstance(rhs, QArray):
    rhs = jnp.asarray(rhs)
  return _qdot_jit(st, lhs, rhs, key)


@dataclasses.dataclass(frozen=True)
class Explanation:
  """Which backend a quantized dot runs on, and why the others would not.

  Attributes:
    backend: the backend that would run ("reference", "xla", "pallas").
    why: why it was picked.
    reasons: {backend name: why it cannot run this case, or None if it can}.
    case: a one-line description of the operands as the backends see them.
    out_shape: the output shape.
    backward: {"dgrad": ..., "wgrad": ...}: the backend each gradient matmul would run on and
      why, or why it cannot run (a float lhs / rhs only; QArray operands get no gradient).
  """

  backend: str
  why: str
  reasons: dict[str, str | None]
  case: str
  out_shape: tuple[int, ...]
  backward: dict[str, str] = dataclasses.field(default_factory=dict)

  def __str__(self) -> str:
    lines = [f"{self.case}", f"-> {self.backend}: {self.why}"]
    for name, r in self.reasons.items():
      if name != self.backend:
        lines.append(f"   {name}: {'could run' if r is None else r}")
    for name, b in self.backward.items():
      lines.append(f"{name}: {b}")
    return "\n".join(lines)


def explain(
    lhs,
    rhs,
    dimension_numbers,
    *,
    lhs_scheme: AnyScheme = None,
    rhs_scheme: AnyScheme = None,
    schemes: DotSchemes | None = None,
    backend: Backend | str = "auto",
    preferred_element_type=None,
    accumulation: Accumulation | None = None,
    platform: str | None = None,
) -> Explanation:
  """What `dot_general` with these arguments would run, without running it.

  Operands may be arrays, QArrays or `jax.ShapeDtypeStruct`s (quantization is traced
  abstractly). `platform` ("cpu", "gpu", "tpu") defaults to jax's default backend.

  Raises:
    ValueError: as `dot_general` would (a named backend that cannot run the case included).
  """
  st = _static(lhs, rhs, dimension_numbers, lhs_scheme, rhs_scheme, schemes, backend,
               preferred_element_type, accumulation, platform)  # fmt: skip
  keys = (jax.random.key(0),) * 6 if st.schemes.stochastic else (None,) * 6
  lq, rq = jax.eval_shape(lambda a, b: _forward_operands(st, a, b, keys), lhs, rhs)
  case = _case(st, lq, rq, st.dims, st.out_dtype)
  chosen, why, reasons = select(case, st.backend)
  # A QArray operand's forward scheme is its own (schemes.lhs / rhs are None for it).
  effective = dataclasses.replace(
      st.schemes, lhs=_fwd_scheme(lhs, st.schemes.lhs), rhs=_fwd_scheme(rhs, st.schemes.rhs)
  )
  return Explanation(
      backward=_explain_backward(st, lhs, rhs, keys),
      backend=chosen.value,
      why=why,
      reasons={b.value: r for b, r in reasons.items()},
      case=case.describe() + f"; gradients: {effective.describe()}",
      out_shape=out_shape(st.dims, lhs.shape, rhs.shape),
  )


def _explain_backward(st: _Static, lhs, rhs, keys) -> dict[str, str]:
  g = jax.ShapeDtypeStruct(out_shape(st.dims, lhs.shape, rhs.shape), st.out_dtype)
  if st.schemes.mode is GradMode.STE:
    return {"backward": "reference (straight-through: float32 matmuls of the dequantized operands)"}
  out = {}
  for name, const, dims, make in (
      ("dgrad", st.lhs_const, st.dims.dgrad()[0], lambda g, l, r: _dgrad_operands(st, g, r, keys)),
      ("wgrad", st.rhs_const, st.dims.wgrad()[0], lambda g, l, r: _wgrad_operands(st, l, g, keys)),
  ):
    if const:
      continue
    try:
      a, b = jax.eval_shape(make, g, lhs, rhs)
      backend, why, _ = select(_case(st, a, b, dims, jnp.float32), st.backend)
      out[name] = f"{backend.value} ({why}): {OperandInfo.of(a).describe()} . {OperandInfo.of(b).describe()}"
    except ValueError as e:
      out[name] = f"cannot run: {e}"
  return out
