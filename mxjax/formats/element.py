"""Element formats as data: bit layout, range, specials and storage.

Every format mxjax quantizes to is one frozen `ElementFormat`. The numbers here (max normal,
min subnormal, the value of every code) are derived from the bit layout, never typed in, so a
format is defined once: by its exponent bits, mantissa bits, bias and specials (floats), its
bit width and signedness (integers), or its table of values (NF4).

References: OCP Microscaling Formats (MX) v1.0, section 5.3 (E5M2, E4M3, E3M2, E2M3, E2M1,
INT8); OCP 8-bit Floating Point Specification (OFP8) v1.0; Dettmers et al. 2023 (QLoRA) for NF4.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math

import ml_dtypes
import numpy as np

from mxjax.formats._dynamic_map import DYNAMIC_MAP_HEX


class Kind(enum.Enum):
  """How codes map to values."""

  FLOAT = "float"  # sign | exponent | mantissa
  INT = "int"  # two's complement (signed) or plain binary (unsigned), times 2^-frac_bits
  LOOKUP = "lookup"  # index into a table of values (NF4)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElementFormat:
  """A scalar element format.

  Attributes:
    name: registry name, e.g. "e4m3".
    kind: FLOAT, INT or LOOKUP.
    bits: width of one code in bits (2 to 8).
    ebits, mbits, bias: exponent bits, mantissa bits and exponent bias (FLOAT only).
    has_inf: the all-ones exponent with zero mantissa is +-Inf (IEEE style, E5M2).
    has_nan: the format has NaN codes. With `has_inf` they are the all-ones exponent with a
      non-zero mantissa; without it (the "fn" formats, E4M3) only the all-ones code is NaN.
    signed: INT only; two's complement when True.
    frac_bits: INT only; value = integer * 2^-frac_bits (MXINT8 has 6).
    table: LOOKUP only; the value of each code, ascending.
    dtype: the ml_dtypes / numpy dtype XLA can hold codes in, or None when codes are carried
      as uint8 bit patterns (FP6, NF4, INT2: XLA has no such array type).
  """

  name: str
  kind: Kind
  bits: int
  ebits: int = 0
  mbits: int = 0
  bias: int = 0
  has_inf: bool = False
  has_nan: bool = False
  signed: bool = True
  frac_bits: int = 0
  table: tuple[float, ...] = ()
  dtype: np.dtype | None = None

  def __post_init__(self):
    if not 2 <= self.bits <= 8:
      raise ValueError(f"{self.name}: bits must be in [2, 8], got {self.bits}")
    if self.kind is Kind.FLOAT and 1 + self.ebits + self.mbits != self.bits:
      raise ValueError(f"{self.name}: 1 + ebits + mbits must equal bits")
    if self.kind is Kind.LOOKUP and len(self.table) != 2**self.bits:
      raise ValueError(f"{self.name}: table needs {2**self.bits} values")

  # Derived properties. All are Python floats/ints so they can be baked into traced code.

  @property
  def emin(self) -> int:
    """Exponent of the smallest normal (FLOAT)."""
    return 1 - self.bias

  @functools.cached_property
  def values(self) -> np.ndarray:
    """float64 value of every code 0 .. 2^bits - 1 (NaN for NaN codes)."""
    return np.array([self._code_value(c) for c in range(2**self.bits)], np.float64)

  @functools.cached_property
  def max(self) -> float:
    """Largest finite value."""
    return float(np.nanmax(self.values[np.isfinite(self.values)]))

  @functools.cached_property
  def min(self) -> float:
    """Smallest finite value (negative for signed formats)."""
    return float(np.nanmin(self.values[np.isfinite(self.values)]))

  @property
  def min_normal(self) -> float:
    """Smallest positive normal value (FLOAT); the integer step for INT."""
    if self.kind is Kind.FLOAT:
      return 2.0**self.emin
    return self.min_subnormal

  @functools.cached_property
  def min_subnormal(self) -> float:
    """Smallest positive value."""
    v = self.values
    return float(np.min(v[np.isfinite(v) & (v > 0)]))

  @property
  def emax(self) -> int:
    """floor(log2(max)): the MX 'emax_elem' of OCP MX v1.0 table 2."""
    return int(math.floor(math.log2(self.max)))

  @property
  def dynamic_range_db(self) -> float:
    """20 log10(max / min_subnormal)."""
    return 20.0 * math.log10(self.max / self.min_subnormal)

  @property
  def nan_code(self) -> int | None:
    """The canonical positive NaN code, or None."""
    if not self.has_nan:
      return None
    if self.has_inf:
      return ((2**self.ebits - 1) << self.mbits) | (1 << (self.mbits - 1))
    return 2 ** (self.bits - 1) - 1

  @property
  def inf_code(self) -> int | None:
    return ((2**self.ebits - 1) << self.mbits) if self.has_inf else None

  def _code_value(self, code: int) -> float:
    if self.kind is Kind.LOOKUP:
      return float(self.table[code])
    if self.kind is Kind.INT:
      if self.signed and code >= 2 ** (self.bits - 1):
        code -= 2**self.bits
      return code * 2.0**-self.frac_bits
    sign = -1.0 if code >> (self.bits - 1) else 1.0
    e = (code >> self.mbits) & (2**self.ebits - 1)
    m = code & (2**self.mbits - 1)
    top = 2**self.ebits - 1
    if e == top and self.has_inf:
      return sign * math.inf if m == 0 else math.nan
    if e == top and self.has_nan and not self.has_inf and m == 2**self.mbits - 1:
      return math.nan
    if e == 0:
      return sign * m * 2.0 ** (self.emin - self.mbits)
    return sign * (1 + m / 2**self.mbits) * 2.0 ** (e - self.bias)


# NF4 (QLoRA): quantiles of N(0, 1) normalised to [-1, 1], as bitsandbytes ships them (fp32).
_NF4_TABLE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)  # fmt: skip

_FORMATS = {
    f.name: f
    for f in (
        ElementFormat(name="e4m3", kind=Kind.FLOAT, bits=8, ebits=4, mbits=3, bias=7,
                      has_nan=True, dtype=np.dtype(ml_dtypes.float8_e4m3fn)),
        ElementFormat(name="e5m2", kind=Kind.FLOAT, bits=8, ebits=5, mbits=2, bias=15,
                      has_inf=True, has_nan=True, dtype=np.dtype(ml_dtypes.float8_e5m2)),
        ElementFormat(name="e3m2", kind=Kind.FLOAT, bits=6, ebits=3, mbits=2, bias=3),
        ElementFormat(name="e2m3", kind=Kind.FLOAT, bits=6, ebits=2, mbits=3, bias=1),
        ElementFormat(name="e2m1", kind=Kind.FLOAT, bits=4, ebits=2, mbits=1, bias=1,
                      dtype=np.dtype(ml_dtypes.float4_e2m1fn)),
        ElementFormat(name="int8", kind=Kind.INT, bits=8, dtype=np.dtype(np.int8)),
        ElementFormat(name="mxint8", kind=Kind.INT, bits=8, frac_bits=6,
                      dtype=np.dtype(np.int8)),
        ElementFormat(name="int4", kind=Kind.INT, bits=4, dtype=np.dtype(ml_dtypes.int4)),
        ElementFormat(name="uint4", kind=Kind.INT, bits=4, signed=False,
                      dtype=np.dtype(ml_dtypes.uint4)),
        ElementFormat(name="int2", kind=Kind.INT, bits=2),
        ElementFormat(name="nf4", kind=Kind.LOOKUP, bits=4, table=_NF4_TABLE),
        ElementFormat(name="dynamic8", kind=Kind.LOOKUP, bits=8,
                      table=tuple(float.fromhex(h) for h in DYNAMIC_MAP_HEX)),
    )  # fmt: skip
}


def get_format(name: str | ElementFormat) -> ElementFormat:
  """Returns the element format called `name` (or `name` itself if already a format)."""
  if isinstance(name, ElementFormat):
    return name
  try:
    return _FORMATS[name]
  except KeyError:
    raise ValueError(
        f"unknown element format {name!r}; known formats: {', '.join(_FORMATS)}"
    ) from None


def all_formats() -> tuple[ElementFormat, ...]:
  """Every registered element format."""
  return tuple(_FORMATS.values())
