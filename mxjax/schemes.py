"""Quantization schemes: an element format, how values are grouped into blocks, and how each
block's scale is chosen and stored. Named presets cover the formats the field uses.

A scheme is a frozen, validated dataclass. Wherever mxjax takes a scheme it also takes a preset
name: `mxjax.schemes.get("mxfp4")`, varied with overrides: `get("mxfp8_e4m3", scale_rule="rceil")`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum

from mxjax.formats import ElementFormat, Rounding, ScaleFormat, ScaleRule, get_format
from mxjax.formats.element import Kind

VERSION = 1


class Granularity(enum.Enum):
  """Which values share one scale.

  TENSOR: the whole array.
  AXIS: every slice along `axis` (per-channel for a weight whose contraction axis is `axis`,
    per-token / row-wise for activations with axis=-1).
  BLOCK: runs of `block_size` consecutive values along `axis`; with `block_size_2d` also
    `block_size_2d` along the other of the last two axes (DeepSeek's 128x128 weight tiles).
  """

  TENSOR = "tensor"
  AXIS = "axis"
  BLOCK = "block"


class ScaleChoice(enum.Enum):
  """How the amax that sets a scale is found."""

  AMAX = "amax"  # the block's max |x|
  STATIC = "static"  # a fixed, calibrated amax (`static_amax`) for every block
  MSE = "mse"  # the clip ratio of `mse_ratios` with the least block MSE, times the block amax


class ScaleApply(enum.Enum):
  """How a float32 scale is applied when encoding (DeepSeek's reference divides; DeepGEMM and
  Transformer Engine multiply by a reciprocal, which changes the last bit of ~0.05% of codes)."""

  DIVIDE = "divide"
  RECIPROCAL = "reciprocal"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scheme:
  """How an array is quantized.

  Attributes:
    element: element format name (see `mxjax.formats.all_formats()`).
    granularity: TENSOR, AXIS or BLOCK (see `Granularity`).
    block_size: BLOCK only: block length along the quantized axis.
    block_size_2d: BLOCK only, optional: block length along the other of the last two axes.
    scale: scale storage format (FP32, BF16, E8M0, E4M3).
    scale_rule: E8M0 only: FLOOR (OCP), RCEIL (TE / cuBLAS), CEIL or EVEN.
    tensor_scale: two-level scaling: an fp32 per-tensor scale above E4M3 block scales (NVFP4).
    block_scale_floor: two-level only: E4M3 block scales are raised to at least this before
      rounding (torchao's `nvfp4_quantize` uses 2^-6, the smallest E4M3 normal; NVIDIA and
      Transformer Engine use 0, keeping subnormal block scales).
    scale_choice: AMAX, STATIC or MSE.
    static_amax: STATIC only: the calibrated amax every block is scaled for.
    mse_ratios: MSE only: clip ratios searched per block.
    amax_floor: amax is raised to at least this before the scale is computed (DeepSeek: 1e-4).
    scale_apply: DIVIDE (x / s) or RECIPROCAL (x * (1 / s)) for float scales.
    rounding: NEAREST (ties to even) or STOCHASTIC (needs a key).
    symmetric: False for asymmetric integer quantization with a zero point (unsigned codes).
    double_quant: NF4 only: quantize the fp32 absmax scales again with bitsandbytes' 8-bit
      dynamic map in blocks of 256 (QLoRA double quantization).
    name: the preset name this scheme came from, for reports ("" if custom).
    version: serialisation version of this dataclass.
  """

  element: str
  granularity: Granularity = Granularity.BLOCK
  block_size: int | None = None
  block_size_2d: int | None = None
  scale: ScaleFormat = ScaleFormat.FP32
  scale_rule: ScaleRule = ScaleRule.FLOOR
  tensor_scale: bool = False
  block_scale_floor: float = 0.0
  scale_choice: ScaleChoice = ScaleChoice.AMAX
  static_amax: float | None = None
  mse_ratios: tuple[float, ...] = tuple(1.0 - 0.025 * i for i in range(21))
  amax_floor: float = 0.0
  scale_apply: ScaleApply = ScaleApply.DIVIDE
  rounding: Rounding = Rounding.NEAREST
  symmetric: bool = True
  double_quant: bool = False
  name: str = ""
  version: int = VERSION

  def __post_init__(self):
    # Accept strings for enum fields so overrides read naturally: scale_rule="rceil".
    for field, enum_type in _ENUM_FIELDS.items():
      value = getattr(self, field)
      if not isinstance(value, enum_type):
        try:
          object.__setattr__(self, field, enum_type(value))
        except ValueError:
          choices = ", ".join(repr(e.value) for e in enum_type)
          raise ValueError(f"{field}={value!r} is not one of {choices}") from None
    object.__setattr__(self, "mse_ratios", tuple(float(r) for r in self.mse_ratios))
    fmt = get_format(self.element)  # raises on an unknown element
    g = self.granularity
    if g is Granularity.BLOCK:
      if not self.block_size or self.block_size < 1:
        raise ValueError("granularity BLOCK needs block_size >= 1")
      if self.block_size_2d is not None and self.block_size_2d < 1:
        raise ValueError("block_size_2d must be >= 1")
    elif self.block_size is not None or self.block_size_2d is not None:
      raise ValueError(f"block_size is only meaningful with granularity BLOCK, not {g.value}")
    if self.scale is ScaleFormat.E8M0 and fmt.kind is Kind.LOOKUP:
      raise ValueError("E8M0 scales are defined for float and integer elements, not NF4")
    if self.tensor_scale and self.scale is not ScaleFormat.E4M3:
      raise ValueError("tensor_scale (two-level scaling) is defined for E4M3 block scales")
    if self.scale is ScaleFormat.E4M3 and not self.tensor_scale:
      raise ValueError("E4M3 block scales need tensor_scale=True (NVFP4's fp32 tensor scale)")
    if self.scale_choice is ScaleChoice.STATIC and not (self.static_amax or 0) > 0:
      raise ValueError("scale_choice STATIC needs static_amax > 0")
    if self.scale_choice is ScaleChoice.MSE and not all(0 < r <= 1 for r in self.mse_ratios):
      raise ValueError("mse_ratios must lie in (0, 1]")
    if not self.symmetric and not (fmt.kind is Kind.INT and not fmt.signed):
      raise ValueError("asymmetric schemes need an unsigned integer element (e.g. 'uint4')")
    if self.symmetric and fmt.kind is Kind.INT and not fmt.signed:
      raise ValueError(f"{self.element} is unsigned: use symmetric=False (with a zero point)")
    if not self.symmetric and self.scale not in (ScaleFormat.FP32, ScaleFormat.BF16):
      raise ValueError("asymmetric schemes take fp32 or bf16 scales")
    if self.double_quant and fmt.kind is not Kind.LOOKUP:
      raise ValueError("double_quant is defined for NF4 (bitsandbytes' scheme)")
    if self.block_scale_floor and not self.tensor_scale:
      raise ValueError("block_scale_floor applies to two-level (E4M3 block scale) schemes")
    if self.amax_floor < 0:
      raise ValueError("amax_floor must be >= 0")

  @property
  def format(self) -> ElementFormat:
    return get_format(self.element)

  def replace(self, **overrides) -> Scheme:
    """A copy with fields replaced (validated again); the name is kept only if nothing changed."""
    if not overrides:
      return self
    overrides.setdefault("name", "")
    return dataclasses.replace(self, **overrides)

  def describe(self) -> str:
    """A one-line human description, e.g. 'e2m1, block 32 along axis, e8m0 scale (floor)'."""
    g = self.granularity
    where = {
        Granularity.TENSOR: "per tensor",
        Granularity.AXIS: "per slice along axis",
        Granularity.BLOCK: f"block {self.block_size}"
        + (f"x{self.block_size_2d}" if self.block_size_2d else "")
        + " along axis",
    }[g]
    sc = self.scale.value + (f" ({self.scale_rule.value})" if self.scale is ScaleFormat.E8M0 else "")
    extra = [
        "fp32 tensor scale" if self.tensor_scale else "",
        "asymmetric" if not self.symmetric else "",
        "double-quant" if self.double_quant else "",
        "stochastic" if self.rounding is Rounding.STOCHASTIC else "",
        f"{self.scale_choice.value} scale" if self.scale_choice is not ScaleChoice.AMAX else "",
    ]
    return ", ".join([self.element, where, f"{sc} scale"] + [e for e in extra if e])


_ENUM_FIELDS = {
    "granularity": Granularity,
    "scale": ScaleFormat,
    "scale_rule": ScaleRule,
    "scale_choice": ScaleChoice,
    "scale_apply": ScaleApply,
    "rounding": Rounding,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Identity:
  """A pass-through "scheme": keep the array in `dtype` (the bf16 / fp32 presets)."""

  dtype: str = "bfloat16"
  name: str = ""
  version: int = VERSION

  def __post_init__(self):
    if self.dtype not in ("bfloat16", "float32", "float16"):
      raise ValueError(f"Identity dtype must be bfloat16, float16 or float32, got {self.dtype!r}")

  def describe(self) -> str:
    return f"{self.dtype} (not quantized)"

  def replace(self, **overrides) -> Identity:
    overrides.setdefault("name", "")
    return dataclasses.replace(self, **overrides)


def _mx(element: str, name: str) -> Scheme:
  return Scheme(element=element, block_size=32, scale=ScaleFormat.E8M0, name=name)


_PRESETS: dict[str, Scheme | Identity] = {
    "mxfp8_e4m3": _mx("e4m3", "mxfp8_e4m3"),
    "mxfp8_e5m2": _mx("e5m2", "mxfp8_e5m2"),
    "mxfp6_e3m2": _mx("e3m2", "mxfp6_e3m2"),
    "mxfp6_e2m3": _mx("e2m3", "mxfp6_e2m3"),
    "mxfp4": _mx("e2m1", "mxfp4"),
    "mxint8": _mx("mxint8", "mxint8"),
    "nvfp4": Scheme(element="e2m1", block_size=16, scale=ScaleFormat.E4M3, tensor_scale=True,
                    name="nvfp4"),
    "fp8_e4m3": Scheme(element="e4m3", granularity=Granularity.TENSOR, name="fp8_e4m3"),
    "fp8_e5m2": Scheme(element="e5m2", granularity=Granularity.TENSOR, name="fp8_e5m2"),
    "fp8_e4m3_rowwise": Scheme(element="e4m3", granularity=Granularity.AXIS,
                               name="fp8_e4m3_rowwise"),
    "fp8_e4m3_block128": Scheme(element="e4m3", block_size=128, amax_floor=1e-4,
                                name="fp8_e4m3_block128"),
    "fp8_e4m3_block128x128": Scheme(element="e4m3", block_size=128, block_size_2d=128,
                                    amax_floor=1e-4, name="fp8_e4m3_block128x128"),
    "int8": Scheme(element="int8", granularity=Granularity.AXIS, name="int8"),
    "int4_g128": Scheme(element="int4", block_size=128, name="int4_g128"),
    "int4_g128_asym": Scheme(element="uint4", block_size=128, symmetric=False,
                             name="int4_g128_asym"),
    # bitsandbytes multiplies by the reciprocal of the absmax.
    "nf4_g64": Scheme(element="nf4", block_size=64, scale_apply=ScaleApply.RECIPROCAL,
                      name="nf4_g64"),
    "nf4_g64_dq": Scheme(element="nf4", block_size=64, scale_apply=ScaleApply.RECIPROCAL,
                         double_quant=True, name="nf4_g64_dq"),
    "bf16": Identity(dtype="bfloat16", name="bf16"),
    "fp32": Identity(dtype="float32", name="fp32"),
}  # fmt: skip


def names() -> tuple[str, ...]:
  """Every preset name."""
  return tuple(_PRESETS)


def get(name: str | Scheme | Identity, **overrides) -> Scheme | Identity:
  """Returns the preset `name` (or a scheme passed through), varied by `overrides`.

  Example:
    >>> get("mxfp8_e4m3", scale_rule="rceil").describe()
    'e4m3, block 32 along axis, e8m0 (rceil) scale'
  """
  if isinstance(name, (Scheme, Identity)):
    return name.replace(**overrides)
  try:
    preset = _PRESETS[name]
  except KeyError:
    close = difflib.get_close_matches(str(name), _PRESETS, n=4, cutoff=0.4)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown scheme preset {name!r}.{hint} Presets: {', '.join(_PRESETS)}"
    ) from None
  if not overrides:
    return preset
  # A varied preset keeps its name with the overrides spelled out, for reports.
  label = name + "(" + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) + ")"
  return dataclasses.replace(preset, **overrides, name=label)
