"""An independent float64 reference for the element formats and scale rules.

Written from the specifications (OCP OFP8 v1.0, OCP MX v1.0), not from mxjax's code: each
format's values are enumerated here from its bit fields, and rounding picks the nearest value
by exact float64 comparison, ties to the code with an even mantissa (even integer).
"""

from __future__ import annotations

import math

import numpy as np

# name: (kind, bits, ebits, mbits, bias, specials)  specials: "ieee" (Inf + NaN), "fn" (NaN only
# at all-ones), None (all codes finite).
SPECS = {
    "e4m3": ("float", 8, 4, 3, 7, "fn"),
    "e5m2": ("float", 8, 5, 2, 15, "ieee"),
    "e3m2": ("float", 6, 3, 2, 3, None),
    "e2m3": ("float", 6, 2, 3, 1, None),
    "e2m1": ("float", 4, 2, 1, 1, None),
    "int8": ("int", 8, 0, 0, 0, None),
    "int4": ("int", 4, 0, 0, 0, None),
    "uint4": ("uint", 4, 0, 0, 0, None),
    "int2": ("int", 2, 0, 0, 0, None),
    "mxint8": ("mxint", 8, 0, 0, 0, None),
}

NF4 = np.array(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0],
    np.float32,
)  # fmt: skip


def values(name: str) -> np.ndarray:
  """float64 value of every code of a format (NaN for NaN codes)."""
  kind, bits, eb, mb, bias, specials = SPECS[name]
  out = []
  for c in range(2**bits):
    if kind in ("int", "mxint"):
      v = c - 2**bits if c >= 2 ** (bits - 1) else c
      out.append(v / 64.0 if kind == "mxint" else float(v))
      continue
    if kind == "uint":
      out.append(float(c))
      continue
    s = -1.0 if c >> (bits - 1) else 1.0
    e, m = (c >> mb) & (2**eb - 1), c & (2**mb - 1)
    if specials == "ieee" and e == 2**eb - 1:
      out.append(s * math.inf if m == 0 else math.nan)
    elif specials == "fn" and e == 2**eb - 1 and m == 2**mb - 1:
      out.append(math.nan)
    elif e == 0:
      out.append(s * m * 2.0 ** (1 - bias - mb))
    else:
      out.append(s * (1 + m / 2**mb) * 2.0 ** (e - bias))
  return np.array(out, np.float64)


def _magnitude_grid(name):
  """(sorted non-negative finite values, their codes)."""
  v = values(name)
  kind = SPECS[name][0]
  codes = np.arange(len(v))
  keep = np.isfinite(v) & (v >= 0)
  if kind in ("float",):
    keep &= codes < 2 ** (SPECS[name][1] - 1)  # positive-sign codes only (drops -0)
  order = np.argsort(v[keep], kind="stable")
  return v[keep][order], codes[keep][order]


def round_codes(x, name: str) -> np.ndarray:
  """Reference encode: nearest (ties to even code), saturating, NaN to the NaN code or 0."""
  x = np.asarray(x, np.float64)
  kind, bits = SPECS[name][:2]
  if kind in ("int", "uint", "mxint"):
    scale = 64.0 if kind == "mxint" else 1.0
    lo, hi = {"int": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1), "uint": (0, 2**bits - 1),
              "mxint": (-127, 127)}[kind]  # fmt: skip
    with np.errstate(over="ignore"):  # +-Inf becomes +-max float, then clips
      y = np.clip(np.nan_to_num(x, nan=0.0) * scale, lo, hi)
    r = np.where(y >= 0, 1.0, -1.0) * np.round(np.abs(y))  # np.round: half to even
    return (r.astype(np.int64) & (2**bits - 1)).astype(np.uint8)
  grid, gcodes = _magnitude_grid(name)
  a = np.minimum(np.abs(np.nan_to_num(x, nan=0.0)), grid[-1])
  hi = np.clip(np.searchsorted(grid, a, side="left"), 0, len(grid) - 1)
  lo = np.clip(hi - 1, 0, None)
  dlo, dhi = a - grid[lo], grid[hi] - a
  pick_hi = (dhi < dlo) | ((dhi == dlo) & (gcodes[hi] % 2 == 0))
  idx = np.where(pick_hi, hi, lo)
  code = gcodes[idx].astype(np.int64)
  code |= np.signbit(x).astype(np.int64) << (bits - 1)
  specials = SPECS[name][5]
  nan_code = {"fn": 2 ** (bits - 1) - 1, "ieee": 0b0_11111_10}.get(specials, 0)
  code = np.where(np.isnan(x), nan_code, code)
  return code.astype(np.uint8)


def round_values(x, name: str) -> np.ndarray:
  return values(name)[round_codes(x, name)]


def e8m0_floor(amax, emax: int) -> np.ndarray:
  """OCP MX: b = clamp(floor(log2(amax)) - emax, -127, 127) + 127 (exact via frexp)."""
  out = []
  for a in np.asarray(amax, np.float64).ravel():
    if math.isnan(a):
      out.append(255)
    elif a == 0:
      out.append(0)
    else:
      e = math.frexp(a)[1] - 1 if math.isfinite(a) else 128
      out.append(min(max(e - emax, -127), 127) + 127)
  return np.array(out, np.int64).reshape(np.shape(amax))


def e8m0_rceil(amax, max_elem: float) -> np.ndarray:
  """Transformer Engine: round log2(f32(amax * f32(1 / max))) up to an integer, exactly."""
  q = (np.asarray(amax, np.float32) * np.float32(1.0 / max_elem)).astype(np.float32)
  out = []
  for a in q.astype(np.float64).ravel():
    if math.isnan(a):
      out.append(255)
    elif a == 0:
      out.append(0)
    elif math.isinf(a):
      out.append(254)
    else:
      m, e = math.frexp(a)  # a = m * 2^e, m in [0.5, 1)
      c = e - 1 if m == 0.5 else e  # ceil(log2(a))
      out.append(min(max(c, -127), 127) + 127)
  return np.array(out, np.int64).reshape(np.shape(amax))


def _device_flushes_subnormals() -> bool:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  # A runtime multiplier, so XLA cannot simplify the product away.
  return float(jax.jit(lambda a, b: a * b)(jnp.float32(2.0**-130), jnp.float32(1.5))) == 0.0


DEVICE_FTZ = _device_flushes_subnormals()  # XLA on the CPU flushes; on the GPU (H100) it does not


def flush_subnormals(x) -> np.ndarray:
  """float32 subnormals to (signed) zero where the default device flushes them (DESIGN.md)."""
  x = np.asarray(x, np.float32)
  if not DEVICE_FTZ:
    return x
  return np.where(np.abs(x) < np.finfo(np.float32).tiny, np.float32(0) * np.sign(x), x)


def mx_dequant(x, name: str, block: int, rule: str = "floor") -> np.ndarray:
  """Reference MX quantize+dequantize of a 2-D float32 array along its last axis.

  Inputs and outputs are flushed to zero where float32-subnormal, as XLA does.
  """
  x = flush_subnormals(x)
  emax = {"e4m3": 8, "e5m2": 15, "e3m2": 4, "e2m3": 2, "e2m1": 2, "mxint8": 0}[name]
  vals = values(name)
  max_elem = float(np.nanmax(vals[np.isfinite(vals)]))
  x = np.asarray(x, np.float64)
  xb = x.reshape(x.shape[0], -1, block)
  amax = np.max(np.abs(xb), axis=-1)  # NaN propagates
  b = e8m0_floor(amax, emax) if rule == "floor" else e8m0_rceil(amax, max_elem)
  scale = np.where(b == 255, np.nan, 2.0 ** (b.astype(np.float64) - 127))
  with np.errstate(invalid="ignore"):
    elems = round_values(xb / np.where(np.isnan(scale), 1.0, scale)[..., None], name)
  with np.errstate(over="ignore"):
    return flush_subnormals((elems * scale[..., None]).reshape(x.shape).astype(np.float32))


def fma_f32(a, b, c):
  """float32 a * b + c rounded once, in numpy: the product is exact in float64, the sum is
  rounded to odd there (TwoSum error, then the odd neighbour), and rounding that to float32 is
  correct (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums", 2008)."""
  a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
  with np.errstate(invalid="ignore", over="ignore"):
    p = a * b
    t = p + c
    bb = t - p
    err = (p - (t - bb)) + (c - bb)
    inexact = (err != 0) & ((t.view(np.int64) & 1) == 0) & np.isfinite(err)
    t = np.where(inexact, np.nextafter(t, np.where(err > 0, np.inf, -np.inf)), t)
    return t.astype(np.float32)
