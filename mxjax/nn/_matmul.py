"""The one adapter between `mxjax.nn` layers and the quantized matmul.

Every quantized layer (NNX twins, the Linen interceptor, injected `dot_general`s) computes its
matmul through `dot_general` / `einsum` here, which call `mxjax.ops.dot_general` /
`mxjax.ops.einsum`: how a layer's rule becomes the ops layer's `DotSchemes` is decided in this
file only.

Semantics (`mxjax.ops`, DotSchemes):
  forward   out = q(lhs) . q(rhs), float32 accumulation; a QArray rhs is used as stored.
  backward  modes "serve" / "qat": straight-through (GradMode.STE): the gradient of the
            fake-quantized forward. Mode "train": GradMode.QUANTIZED: the dgrad and wgrad
            matmuls quantize d_out by the gradient scheme and the forward operands again along
            their backward contraction axes.
Blocks run along the contraction axis of each operand (lhs's last contracting dim and its
partner in rhs).
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mxjax.formats import Rounding
from mxjax.qarray import QArray
from mxjax import ops
from mxjax.ops import DotSchemes, GradMode
from mxjax.quantize import quantize
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

  @property
  def stochastic(self) -> bool:
    """True when a scheme rounds stochastically: each call then needs a PRNG key (NNX twins
    draw it from their `quant_rngs` stream; Linen from the "quant" rng collection)."""
    return any(s is not None and s.rounding is Rounding.STOCHASTIC
               for s in (self.lhs, self.rhs, self.grad))

  @classmethod
  def from_rule(cls, rule: Rule) -> MatmulSpec:
    return cls(lhs=rule.activation, rhs=rule.weight, grad=rule.gradient, backend=rule.backend,
               mode=rule.mode)


@functools.partial(jax.jit, static_argnames=("scheme", "axis", "n_lead"))
def quantize_weight(w: jax.Array, scheme: Scheme, axis: int, key: jax.Array | None = None,
                    n_lead: int = 0) -> QArray:
  """`mxjax.quantize(w, scheme, axis=axis, pad=True, key=key)`, jitted: model surgery
  quantizes many weights of few shapes, and op-by-op dispatch of the encoders is slow.

  `n_lead` leading axes (layers stacked by `nnx.vmap` / `nn.scan`) are vmapped over, so each
  slice is a QArray of the layer's own kernel: `nnx.scan` / `nn.scan` then slice the QArray's
  leaves and every slice is valid (one scale set per layer, never across layers).
  """
  fn = lambda a: quantize(a, scheme, axis=axis, pad=True, key=key)
  for _ in range(n_lead):
    fn = jax.vmap(fn)
  return fn(w)


def _dot_schemes(spec: MatmulSpec, rhs) -> DotSchemes:
  """The ops layer's DotSchemes for a layer: STE gradients except in mode TRAIN."""
  # A QArray weight carries its own scheme; the ops layer reads it from there.
  rhs_scheme = None if isinstance(rhs, QArray) else spec.rhs
  if spec.mode is Mode.TRAIN:
    return DotSchemes(lhs=spec.lhs, rhs=rhs_scheme, grad=spec.grad, mode=GradMode.QUANTIZED)
  return DotSchemes(lhs=spec.lhs, rhs=rhs_scheme, mode=GradMode.STE)


def dot_general(
    lhs: jax.Array,
    rhs: jax.Array | QArray,
    dimension_numbers,
    spec: MatmulSpec,
    *,
    precision=None,
    preferred_element_type=None,
    key: jax.Array | None = None,
) -> jax.Array:
  """`lax.dot_general` with operands quantized by `spec`, through `mxjax.ops.dot_general`.

  Args:
    lhs: activations, any float dtype.
    rhs: weights: an array (quantized on the fly by spec.rhs) or a QArray (used as stored).
    dimension_numbers: as `jax.lax.dot_general`.
    spec: the layer's schemes, backend and mode.
    precision: ignored: every backend accumulates in float32.
    preferred_element_type: result dtype (default float32; the layers cast it back).
    key: PRNG key, required when a scheme rounds stochastically.
  """
  del precision
  _check_key(spec, key)
  return ops.dot_general(
      lhs, rhs, dimension_numbers, schemes=_dot_schemes(spec, rhs), backend=spec.backend,
      preferred_element_type=preferred_element_type or jnp.float32, key=key)


def _check_key(spec: MatmulSpec, key) -> None:
  if spec.stochastic and key is None:
    raise ValueError(
        "a scheme of this layer rounds stochastically and needs a PRNG key: quantize NNX models"
        " with mxjax.nn.quantize(model, policy, rngs=nnx.Rngs(quant=0)); apply Linen models"
        " with qmodel.apply(variables, x, rngs={'quant': key})")


def einsum_contraction(subscripts: str, lhs_ndim: int | None, rhs_ndim: int) -> tuple[int, int]:
  """The (negative) axes of lhs and rhs that blocks run along: their last contracted letter.

  Example:
    >>> einsum_contraction("btd,dnh->btnh", 3, 3)
    (-1, -3)
  """
  ins, out = subscripts.replace(" ", "").split("->")
  a, b = ins.split(",")
  a, b = _expand(a, lhs_ndim), _expand(b, rhs_ndim)
  # The last contracted label in lhs order: the ops layer pairs lhs's last contracting dim.
  shared = [c for c in a if c in b and c not in out]
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
    key: jax.Array | None = None,
) -> jax.Array:
  """Two-operand einsum with operands quantized by `spec`, through `mxjax.ops.einsum`."""
  del precision
  _check_key(spec, key)
  return ops.einsum(
      subscripts, lhs, rhs, schemes=_dot_schemes(spec, rhs), backend=spec.backend,
      preferred_element_type=preferred_element_type or jnp.float32, key=key)


@dataclasses.dataclass(frozen=True)
class QuantizedDotGeneral:
  """A drop-in `dot_general` for a module's own injection point (`nn.Dense(dot_general=...)`,
  `nnx.Linear(dot_general=...)`): quantizes both operands by `spec` (modes qat / train).

  Attributes:
    spec: the schemes, backend and mode.
    weight: optional QArray used in place of the module's kernel (which is then only a
      placeholder of the same logical shape: Linen checks a param's shape before the call).
    key: PRNG key for stochastic schemes (the Linen interceptor draws one per call).

  Example:
    >>> import flax.linen as nn
    >>> dense = nn.Dense(8, dot_general=QuantizedDotGeneral.of(weight="int8"))
  """

  spec: MatmulSpec
  weight: QArray | None = None
  key: jax.Array | None = None

  @classmethod
  def of(cls, *, weight=None, activation=None, gradient=None, backend="auto",
         mode: Mode | str = Mode.QAT) -> QuantizedDotGeneral:
    rule = Rule("", weight=weight, activation=activation, gradient=gradient, backend=backend,
                mode=mode)
    return cls(MatmulSpec.from_rule(rule))

  def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
               out_sharding=None, **_unused):
    if self.weight is not None:
      if tuple(self.weight.shape) != tuple(rhs.shape):
        raise ValueError(f"stored weight {self.weight.shape} does not match {rhs.shape}")
      rhs = self.weight
    out = dot_general(lhs, rhs, dimension_numbers, self.spec, precision=precision,
                      preferred_element_type=preferred_element_type, key=self.key)
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
