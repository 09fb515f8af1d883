"""Dimension numbers of a dot: normalisation, the backward matmuls' dimension numbers, and the
einsum spec -> dot_general translation.

`lax.dot_general` output order: batch dims (in the order given), then the lhs free dims, then
the rhs free dims (each ascending). Every helper here keeps that convention.
"""

from __future__ import annotations

import dataclasses
import string

import numpy as np

DimNums = tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]]


@dataclasses.dataclass(frozen=True)
class Dims:
  """Normalised dimension numbers of `lhs . rhs` with both ranks.

  Attributes:
    lc, rc: paired contracting dims (non-negative).
    lb, rb: paired batch dims (non-negative).
    lhs_ndim, rhs_ndim: operand ranks.
  """

  lc: tuple[int, ...]
  rc: tuple[int, ...]
  lb: tuple[int, ...]
  rb: tuple[int, ...]
  lhs_ndim: int
  rhs_ndim: int

  @property
  def lhs_free(self) -> tuple[int, ...]:
    return tuple(d for d in range(self.lhs_ndim) if d not in self.lc + self.lb)

  @property
  def rhs_free(self) -> tuple[int, ...]:
    return tuple(d for d in range(self.rhs_ndim) if d not in self.rc + self.rb)

  @property
  def nums(self) -> DimNums:
    return ((self.lc, self.rc), (self.lb, self.rb))

  @property
  def out_ndim(self) -> int:
    return len(self.lb) + len(self.lhs_free) + len(self.rhs_free)

  def dgrad(self) -> tuple[Dims, tuple[int, ...]]:
    """d_lhs = dot(d_out, rhs): its Dims and the permutation that puts its result in lhs order."""
    nb, nlf = len(self.lb), len(self.lhs_free)
    g_rhs_free = tuple(range(nb + nlf, self.out_ndim))
    d = Dims(g_rhs_free, self.rhs_free, tuple(range(nb)), self.rb, self.out_ndim, self.rhs_ndim)
    # Result: batch, lhs free, then rhs's contracting dims ascending -> lhs's paired dims.
    by_rhs = np.argsort(self.rc, kind="stable")
    order = list(self.lb) + list(self.lhs_free) + [self.lc[i] for i in by_rhs]
    return d, tuple(int(i) for i in np.argsort(order))

  def wgrad(self) -> tuple[Dims, tuple[int, ...]]:
    """d_rhs = dot(lhs, d_out): its Dims and the permutation that puts its result in rhs order."""
    nb, nlf = len(self.lb), len(self.lhs_free)
    g_lhs_free = tuple(range(nb, nb + nlf))
    d = Dims(self.lhs_free, g_lhs_free, self.lb, tuple(range(nb)), self.lhs_ndim, self.out_ndim)
    by_lhs = np.argsort(self.lc, kind="stable")
    order = list(self.rb) + [self.rc[i] for i in by_lhs] + list(self.rhs_free)
    return d, tuple(int(i) for i in np.argsort(order))


def normalize(dimension_numbers, lhs_ndim: int, rhs_ndim: int) -> Dims:
  """Validates `((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))` (negative dims allowed)."""
  try:
    (lc, rc), (lb, rb) = dimension_numbers
  except (TypeError, ValueError):
    raise ValueError(
        "dimension_numbers must be ((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch)),"
        f" got {dimension_numbers!r}"
    ) from None

  def norm(ds, n, what):
    ds = tuple(int(d) for d in ds)
    for d in ds:
      if not -n <= d < n:
        raise ValueError(f"{what} dim {d} is out of range for rank {n}")
    ds = tuple(d % n for d in ds)
    return ds

  lc, lb = norm(lc, lhs_ndim, "lhs"), norm(lb, lhs_ndim, "lhs")
  rc, rb = norm(rc, rhs_ndim, "rhs"), norm(rb, rhs_ndim, "rhs")
  if len(lc) != len(rc) or len(lb) != len(rb):
    raise ValueError(f"unpaired dimension numbers {dimension_numbers!r}")
  if len(set(lc + lb)) != len(lc + lb) or len(set(rc + rb)) != len(rc + rb):
    raise ValueError(f"a dim appears twice in {dimension_numbers!r}")
  return Dims(lc, rc, lb, rb, lhs_ndim, rhs_ndim)


def check_shapes(d: Dims, lhs_shape, rhs_shape) -> None:
  for a, b in zip(d.lc + d.lb, d.rc + d.rb):
    if lhs_shape[a] != rhs_shape[b]:
      raise ValueError(
          f"lhs dim {a} (length {lhs_shape[a]}) is paired with rhs dim {b} (length"
          f" {rhs_shape[b]}); shapes {tuple(lhs_shape)} and {tuple(rhs_shape)}"
      )


def out_shape(d: Dims, lhs_shape, rhs_shape) -> tuple[int, ...]:
  return (
      tuple(lhs_shape[i] for i in d.lb)
      + tuple(lhs_shape[i] for i in d.lhs_free)
      + tuple(rhs_shape[i] for i in d.rhs_free)
  )


@dataclasses.dataclass(frozen=True)
class EinsumPlan:
  """An einsum of two operands as one dot_general plus a transpose of its output."""

  dims: Dims
  out_perm: tuple[int, ...]  # dot_general output -> einsum output order


def _expand_ellipsis(term: str, ndim: int, ell: str) -> str:
  if "..." not in term:
    return term
  n = ndim - (len(term) - 3)
  if n < 0:
    raise ValueError(f"einsum term {term!r} has more labels than its operand has dims ({ndim})")
  return term.replace("...", ell[len(ell) - n :] if n else "")


def plan_einsum(spec: str, lhs_ndim: int, rhs_ndim: int) -> EinsumPlan:
  """Translates a two-operand einsum `spec` ("btd,df->btf", "...d,fd->...f") to a dot_general.

  Raises:
    ValueError: a malformed spec, a label repeated within one operand, or a label that appears
      in one operand only and not in the output (a sum over one operand before the product:
      write it as a separate reduction).
  """
  spec = spec.replace(" ", "")
  if "->" not in spec:
    raise ValueError(f"einsum spec {spec!r} needs an explicit output ('->'), e.g. 'mk,kn->mn'")
  ins, out = spec.split("->")
  terms = ins.split(",")
  if len(terms) != 2:
    raise ValueError(f"mxjax.einsum takes exactly two operands; spec {spec!r} has {len(terms)}")
  used = set(spec) - set(".,->")
  ell = "".join(c for c in string.ascii_letters if c not in used)[-max(lhs_ndim, rhs_ndim) :]
  a = _expand_ellipsis(terms[0], lhs_ndim, ell)
  b = _expand_ellipsis(terms[1], rhs_ndim, ell)
  if "..." in out:
    n_ell = max(
        nd - (len(t) - 3) if "..." in t else 0 for t, nd in ((terms[0], lhs_ndim), (terms[1], rhs_ndim))
    )
    out = out.replace("...", ell[len(ell) - n_ell :] if n_ell else "")
  if len(a) != lhs_ndim or len(b) != rhs_ndim:
    raise ValueError(
        f"einsum spec {spec!r} does not match operand ranks {lhs_ndim} and {rhs_ndim}"
    )
  for t in (a, b, out):
    if len(set(t)) != len(t):
      raise ValueError(f"einsum spec {spec!r}: a label repeats within {t!r} (traces unsupported)")
  for c in out:
    if c not in a and c not in b:
      raise ValueError(f"einsum spec {spec!r}: output label {c!r} is in no operand")
  for c in set(a) ^ set(b):
    if c not in out:
      raise ValueError(
          f"einsum spec {spec!r}: label {c!r} appears in one operand only and is summed; sum it"
          " before the quantized product"
      )
  batch = [c for c in a if c in b and c in out]
  contract = [c for c in a if c in b and c not in out]
  d = Dims(
      tuple(a.index(c) for c in contract),
      tuple(b.index(c) for c in contract),
      tuple(a.index(c) for c in batch),
      tuple(b.index(c) for c in batch),
      lhs_ndim,
      rhs_ndim,
  )
  dot_out = batch + [a[i] for i in d.lhs_free] + [b[i] for i in d.rhs_free]
  return EinsumPlan(d, tuple(dot_out.index(c) for c in out))
