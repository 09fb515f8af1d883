"""Counting a traced function's primitives, nested jaxprs included: how the kernel tests check
that an option removed the operations it was written to remove."""

from __future__ import annotations


def primitive_counts(jaxpr, counts: dict | None = None) -> dict:
  """Primitive name -> uses in `jaxpr` and in every jaxpr nested in its equations' parameters
  (a `jit`'s, a Pallas kernel's body)."""
  counts = {} if counts is None else counts
  for eqn in jaxpr.eqns:
    counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
    for v in eqn.params.values():
      for sub in v if isinstance(v, (list, tuple)) else [v]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          primitive_counts(inner, counts)
  return counts
