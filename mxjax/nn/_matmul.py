"""The one adapter between `mxjax.nn` layers and the quantized matmul.

Every quantized layer (NNX twins, the Linen interceptor, injected `dot_general`s) computes its
matmul through `dot_general` / `einsum` here, so that switching from the reference path to the
ops layer (`mxjax.dot_general`, issue 4) is a change to this file only.

Semantics (the reference the ops layer must reproduce):
  forward   out = deq(q(lhs)) . deq(q(rhs)) in float32; a QArray rhs is used as stored.
  backward  mode "qat": straight-through (d/dx of the quantizers is 1).
            mode "train": d_out is quantized by the gradient scheme, then both backward
            matmuls run on the dequantized forward operands (straight-through for them).
Blocks run along the contraction axis of each operand (the last one when there are several).
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from mxjax.formats import Rounding
from mxjax.qarray import QArray, dequantize
from mxjax.quantize import fake_quant, quantize
from mxjax.schemes import Scheme

from mxjax.nn.policy import Mode, Rule


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatmulSpec:
  """The static quantization config of one layer's matmul (derived from its Rule).

  Attributes:
    lhs: activation scheme, or None (high precision).
    rhs: weight scheme, or None.
    grad: output-gradient scheme (mode TRAIN), or None.
    backend: ops backend name.
    mode: SERVE, QAT or TRAIN.
  """

  lhs: Scheme | None = None
  rhs: Scheme | None = None
  grad: Scheme | None = None
  backend: str = "auto"
  mode: Mode = Mode.SERVE

  def __post_init__(self):
    for s in (self.lhs, self.rhs, self.grad):
      if s is not None and s.rounding is Rounding.STOCHASTIC:
        # Stochastic rounding needs a PRNG key per call; mxjax.nn layers do not thread one yet.
        raise NotImplementedError(
            f"scheme {s.name or s.describe()!r} rounds stochastically; mxjax.nn layers do not"
            " carry PRNG keys yet: use a round-to-nearest scheme"
        )

  @classmethod
  def from_rule(cls, rule: Rule) -> MatmulSpec:
    return cls(lhs=rule.activation, rhs=rule.weight, grad=rule.gradient, backend=rule.backend,
               mode=rule.mode)


@functools.partial(jax.jit, static_argnames=("scheme", "axis"))
def quantize_weight(w: jax.Array, scheme: Scheme, axis: int) -> QArray:
  """`mxjax.quantize(w, scheme, axis=axis, pad=True)`, jitted: model surgery quantizes many
  weights of few shapes, and op-by-op dispatch of the encoders is slow."""
  return quantize(w, scheme, axis=axis, pad=True)


def _fq(x: jax.Array, s: Scheme | None, axis: int) -> jax.Array:
  if s is None:
    return x
  return fake_quant(x, s, axis=axis, pad=True)


def _operand(x, s: Scheme | None, axis: int) -> jax.Array:
  """The float32 value the matmul sees: a QArray dequantized, an array fake-quantized."""
  if isinstance(x, QArray):
    return dequantize(x, jnp.float32)
  return _fq(jnp.asarray(x), s, axis).astype(jnp.float32)


def _with_grad_quant(fn: Callable, grad: Scheme | None) -> Callable:
  """fn(lhs, rhs) whose backward sees d_out quantized by `grad` (straight-through otherwise)."""
  if grad is None:
    return fn

  @jax.custom_vjp
  def f(lhs, rhs):
    return fn(lhs, rhs)

  def fwd(lhs, rhs):
    out, vjp = jax.vjp(fn, lhs, rhs)
    return out, vjp

  def bwd(vjp, g):
    return vjp(_fq(g, grad, -1).astype(g.dtype))

  f.defvjp(fwd, bwd)
  return f


def dot_general(
    lhs: jax.Array,
    rhs: jax.Array | QArray,
    dimension_numbers,
    spec: MatmulSpec,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """`lax.dot_general` with operands quantized by `spec`; float32 result unless told otherwise.

  Args:
    lhs: activations, any float dtype.
    rhs: weights: an array (quantized on the fly by spec.rhs) or a QArray (used as stored).
    dimension_numbers: as `jax.lax.dot_general`.
    spec: the layer's schemes and mode.
    precision: passed to the float dot.
    preferred_element_type: result dtype (default float32).
  """
  (lc, rc), _ = dimension_numbers
  l_axis = max(lc) - lhs.ndim if lc else -1
  r_axis = max(rc) - len(rhs.shape) if rc else -1
  out_t = preferred_element_type or jnp.float32

  def fn(a, b):
    return jax.lax.dot_general(
        _operand(a, spec.lhs, l_axis), _operand(b, spec.rhs, r_axis), dimension_numbers,
        precision=precision, preferred_element_type=jnp.float32,
    ).astype(out_t)

  grad = spec.grad if spec.mode is Mode.TRAIN else None
  return _with_grad_quant(fn, grad)(lhs, rhs)


def einsum_contraction(subscripts: str, lhs_ndim: int | None, rhs_ndim: int) -> tuple[int, int]:
  """The (negative) axes of lhs and rhs that blocks run along: their last contracted letter.

  Example:
    >>> einsum_contraction("btd,dnh->btnh", 3, 3)
    (-1, -3)
  """
  ins, out = subscripts.replace(" ", "").split("->")
  a, b = ins.split(",")
  a, b = _expand(a, lhs_ndim), _expand(b, rhs_ndim)
  shared = [c for c in b if c in a and c not in out]
  if not shared:
    raise ValueError(f"einsum {subscripts!r} contracts no axis between its operands")
  c = shared[-1]
  return a.index(c) - len(a), b.index(c) - len(b)


def _expand(sub: str, ndim: int | None) -> str:
  if "..." not in sub:
    return sub
  if ndim is None:  # only the named letters matter
    return sub.replace("...", "")
  free = [c for c in string.ascii_letters if c not in sub][: ndim - (len(sub) - 3)]
  return sub.replace("...", "".join(free))


def einsum(
    subscripts: str,
    lhs: jax.Array,
    rhs: jax.Array | QArray,
    spec: MatmulSpec,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """`jnp.einsum` of two operands quantized by `spec` (see `dot_general`)."""
  l_axis, r_axis = einsum_contraction(subscripts, lhs.ndim, len(rhs.shape))
  out_t = preferred_element_type or jnp.float32

  def fn(a, b):
    return jnp.einsum(
        subscripts, _operand(a, spec.lhs, l_axis), _operand(b, spec.rhs, r_axis),
        precision=precision, preferred_element_type=jnp.float32,
    ).astype(out_t)

  grad = spec.grad if spec.mode is Mode.TRAIN else None
  return _with_grad_quant(fn, grad)(lhs, rhs)


@dataclasses.dataclass(frozen=True)
class QuantizedDotGeneral:
  """A drop-in `dot_general` for a module's own injection point (`nn.Dense(dot_general=...)`,
  `nnx.Linear(dot_general=...)`): quantizes both operands by `spec` (modes qat / train).

  Example:
    >>> import flax.linen as nn
    >>> dense = nn.Dense(8, dot_general=QuantizedDotGeneral.of(weight="int8"))
  """

  spec: MatmulSpec

  @classmethod
  def of(cls, *, weight=None, activation=None, gradient=None, backend="auto",
         mode: Mode | str = Mode.QAT) -> QuantizedDotGeneral:
    rule = Rule("", weight=weight, activation=activation, gradient=gradient, backend=backend,
                mode=mode)
    return cls(MatmulSpec.from_rule(rule))

  def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
               out_sharding=None, **_unused):
    out = dot_general(lhs, rhs, dimension_numbers, self.spec, precision=precision,
                      preferred_element_type=preferred_element_type)
    if preferred_element_type is None:
      out = out.astype(jnp.result_type(lhs.dtype, _dtype(rhs)))
    return out


def _dtype(x) -> jnp.dtype:
  return jnp.dtype(x.dtype)


def promote(inputs: jax.Array, kernel, bias, dtype) -> tuple[jax.Array, object, jax.Array | None]:
  """Flax's promote_dtype for (inputs, kernel, bias), leaving a QArray kernel as it is."""
  kdt = _dtype(kernel)
  ts = [inputs.dtype, kdt] + ([bias.dtype] if bias is not None else [])
  dt = jnp.dtype(dtype) if dtype is not None else jnp.result_type(*ts)
  k = kernel if isinstance(kernel, QArray) else jnp.asarray(kernel, dt)
  return jnp.asarray(inputs, dt), k, None if bias is None else jnp.asarray(bias, dt)


def layer_axes(kind: str, kernel_ndim: int, **info) -> int:
  """The kernel's contraction axis (negative) that a weight is blocked along, by layer kind.

  linear: kernel (in, out) -> -2. linear_general: (batch..., in..., out...) -> the last in
  axis. einsum: from the subscripts.
  """
  if kind == "linear":
    return -2
  if kind == "linear_general":
    n_batch, n_in = info["n_batch"], info["n_in"]
    return n_batch + n_in - 1 - kernel_ndim
  if kind == "einsum":
    return einsum_contraction(info["subscripts"], info["lhs_ndim"], kernel_ndim)[1]
  raise ValueError(f"unknown layer kind {kind!r}")


def tuple_axes(x: int | Sequence[int]) -> tuple[int, ...]:
  return tuple(x) if isinstance(x, Sequence) else (x,)
