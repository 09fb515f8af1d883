"""Configuration of a quantized matmul: the schemes of its operands forward and backward.

`DotSchemes` is the one object that says how each of the three matmuls of a linear layer
(forward, dgrad, wgrad) quantizes its operands:

  forward   out = lhs . rhs          lhs by `lhs`,       rhs by `rhs`
  dgrad     d_lhs = d_out . rhs^T    d_out by `grad`,    rhs by `grad_rhs`
  wgrad     d_rhs = lhs^T . d_out    lhs by `grad_lhs`,  d_out by `grad`

Each backward operand is quantized again from its high-precision value along its backward
contraction axis (what Transformer Engine does for MXFP8 and NVFP4; for per-tensor FP8 the
result equals reusing the forward codes). `grad_lhs` / `grad_rhs` default to the forward
schemes; `grad` defaults to no quantization.
"""

from __future__ import annotations

import dataclasses
import enum

from mxjax import schemes as schemes_lib
from mxjax.formats import Rounding
from mxjax.schemes import Identity, Scheme

AnyScheme = Scheme | Identity | str | None

VERSION = 1
FORWARD = "forward"  # grad_lhs / grad_rhs marker: the scheme the forward used for the operand


class GradMode(enum.Enum):
  """How gradients flow through a quantized matmul.

  QUANTIZED: the dgrad and wgrad matmuls quantize their operands by the gradient schemes of
    `DotSchemes` (FP8 training: forward E4M3, backward E5M2; NVFP4 with stochastic rounding).
  STE: straight-through estimator (fake-quant training): the quantizers pass gradients
    unchanged, so d_lhs = d_out . deq(rhs)^T and d_rhs = deq(lhs)^T . d_out in float32: exactly
    `jax.grad` of `dot(fake_quant(lhs), fake_quant(rhs))`. The gradient schemes are ignored.
  """

  QUANTIZED = "quantized"
  STE = "ste"


def _resolve(s: AnyScheme) -> Scheme | None:
  """A Scheme, or None for 'keep in high precision' (None, an Identity or a bf16/fp32 preset)."""
  if s is None:
    return None
  s = schemes_lib.get(s)
  return None if isinstance(s, Identity) else s


@dataclasses.dataclass(frozen=True, kw_only=True)
class DotSchemes:
  """Schemes of a quantized dot: forward operands and the backward (gradient) matmuls.

  Attributes:
    lhs: scheme of the forward lhs (activations), or None / "bf16" / "fp32" to keep it in
      high precision. Preset names are accepted and resolved.
    rhs: scheme of the forward rhs (weights), likewise.
    grad: scheme of the output gradient d_out in both backward matmuls (e.g. "fp8_e5m2");
      None keeps it in high precision.
    grad_lhs: scheme of lhs in the wgrad matmul; default (the string "forward") is `lhs`.
    grad_rhs: scheme of rhs in the dgrad matmul; default (the string "forward") is `rhs`.
    mode: GradMode.QUANTIZED or GradMode.STE.
    version: serialisation version.

  Example:
    >>> s = DotSchemes(lhs="fp8_e4m3", rhs="fp8_e4m3", grad="fp8_e5m2")
    >>> s.backward_scheme("rhs", s.rhs).name
    'fp8_e4m3'
  """

  lhs: AnyScheme = None
  rhs: AnyScheme = None
  grad: AnyScheme = None
  grad_lhs: AnyScheme = FORWARD
  grad_rhs: AnyScheme = FORWARD
  mode: GradMode = GradMode.QUANTIZED
  version: int = VERSION

  def __post_init__(self):
    if not isinstance(self.mode, GradMode):
      try:
        object.__setattr__(self, "mode", GradMode(self.mode))
      except ValueError:
        raise ValueError(f"mode={self.mode!r} is not one of 'quantized', 'ste'") from None
    for f in ("lhs", "rhs", "grad"):
      object.__setattr__(self, f, _resolve(getattr(self, f)))
    for f in ("grad_lhs", "grad_rhs"):
      v = getattr(self, f)
      # "forward" stays a marker: for an operand passed as a QArray the forward scheme is the
      # QArray's own, known only at call time (see `backward_scheme`).
      if not (isinstance(v, str) and v == FORWARD):
        object.__setattr__(self, f, _resolve(v))

  def backward_scheme(self, which: str, forward: Scheme | None) -> Scheme | None:
    """The scheme of operand `which` ("lhs" or "rhs") in its backward matmul, given the scheme
    the forward actually used for it."""
    v = self.grad_lhs if which == "lhs" else self.grad_rhs
    return forward if isinstance(v, str) else v

  @property
  def stochastic(self) -> bool:
    """True when some scheme rounds stochastically (the dot then needs a `key`)."""
    return any(
        isinstance(s, Scheme) and s.rounding is Rounding.STOCHASTIC
        for s in (self.lhs, self.rhs, self.grad, self.grad_lhs, self.grad_rhs)
    )

  def describe(self) -> str:
    def d(s):
      if isinstance(s, str):
        return "as forward"
      return "high precision" if s is None else (s.name or s.describe())

    return (
        f"forward lhs: {d(self.lhs)}; rhs: {d(self.rhs)}; backward ({self.mode.value}): "
        f"d_out: {d(self.grad)}, lhs: {d(self.grad_lhs)}, rhs: {d(self.grad_rhs)}"
    )


def make_schemes(
    lhs_scheme: AnyScheme, rhs_scheme: AnyScheme, schemes: DotSchemes | None
) -> DotSchemes:
  """Merges the `lhs_scheme=` / `rhs_scheme=` shorthand with a full `schemes=` DotSchemes."""
  if schemes is None:
    return DotSchemes(lhs=lhs_scheme, rhs=rhs_scheme)
  if not isinstance(schemes, DotSchemes):
    raise TypeError(f"schemes= takes a DotSchemes, got {type(schemes).__name__}")
  if lhs_scheme is not None or rhs_scheme is not None:
    raise ValueError("pass either lhs_scheme=/rhs_scheme= or schemes=DotSchemes(...), not both")
  return schemes
