"""Quantize and dequantize whole pytrees (model parameters) by a policy.

A policy here is the simple, array-level form; `mxjax.nn` builds module-aware policies on top:
- a scheme or preset name: every floating leaf with ndim >= 2 (matmul weights); 0-D and 1-D
  leaves (biases, norm scales, scalars) stay in high precision;
- a mapping {regex: scheme | None}: the first regex that `re.search`es the leaf's path
  ("params/layer_0/kernel") wins; None keeps the leaf; an unmatched leaf is kept;
- a callable (path, leaf) -> scheme | (scheme, axis) | None.
`plan_tree` lists, for every leaf, what the policy does with it and why, so nothing stays in
high precision without saying so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mxjax import schemes as schemes_lib
from mxjax.qarray import QArray, dequantize
from mxjax.quantize import quantize
from mxjax.schemes import Identity, Scheme

Policy = Scheme | Identity | str | Mapping[str, Any] | Callable[[str, jax.Array], Any]


@dataclasses.dataclass(frozen=True)
class LeafPlan:
  """What a policy does with one leaf."""

  path: str
  shape: tuple[int, ...]
  dtype: str
  scheme: Scheme | Identity | None
  axis: int
  reason: str


def path_str(path) -> str:
  """'a/b/0/kernel' from a jax key path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _resolve(policy: Policy, path: str, leaf, axis: int) -> tuple[Any, int, str]:
  if isinstance(policy, (str, Scheme, Identity)):
    if leaf.ndim < 2:
      return None, axis, "ndim < 2: biases, norm scales and scalars stay high precision"
    return schemes_lib.get(policy), axis, "policy applies to every matrix"
  if isinstance(policy, Mapping):
    for pattern, scheme in policy.items():
      if re.search(pattern, path):
        if scheme is None:
          return None, axis, f"rule {pattern!r} keeps it"
        s, a = scheme if isinstance(scheme, tuple) else (scheme, axis)
        return schemes_lib.get(s), a, f"rule {pattern!r}"
    return None, axis, "no rule matched"
  out = policy(path, leaf)
  if out is None:
    return None, axis, "policy returned None"
  s, a = out if isinstance(out, tuple) else (out, axis)
  return schemes_lib.get(s), a, "policy function"


def plan_tree(tree: Any, policy: Policy, *, axis: int = -1) -> list[LeafPlan]:
  """For each array leaf: the scheme (or None) and axis the policy picks, and why."""
  plans = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    p = path_str(path)
    if not hasattr(leaf, "dtype"):
      plans.append(LeafPlan(p, (), type(leaf).__name__, None, axis, "not an array"))
      continue
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      plans.append(LeafPlan(p, leaf.shape, str(leaf.dtype), None, axis, "not floating point"))
      continue
    scheme, a, why = _resolve(policy, p, leaf, axis)
    plans.append(LeafPlan(p, tuple(leaf.shape), str(leaf.dtype), scheme, a, why))
  return plans


def quantize_tree(
    tree: Any, policy: Policy, *, axis: int = -1, key: jax.Array | None = None
) -> Any:
  """Replaces the leaves the policy selects by QArrays (see the module docstring).

  Args:
    tree: a pytree of arrays (e.g. model parameters).
    policy: a scheme, preset name, {regex: scheme} mapping or callable.
    axis: the quantized axis where the policy does not give one.
    key: PRNG key for stochastic schemes; folded with each leaf's index.

  Returns:
    The tree with QArray leaves where the policy picked a scheme.
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  plans = plan_tree(tree, policy, axis=axis)
  out = []
  for i, (leaf, plan) in enumerate(zip(leaves, plans)):
    if plan.scheme is None:
      out.append(leaf)
      continue
    k = None if key is None else jax.random.fold_in(key, i)
    out.append(quantize(leaf, plan.scheme, axis=plan.axis, key=k))
  return jax.tree_util.tree_unflatten(treedef, out)


def dequantize_tree(tree: Any, dtype=None) -> Any:
  """Replaces every QArray leaf by its dequantized array (in `dtype`, default its own dtype)."""
  return jax.tree_util.tree_map(
      lambda q: dequantize(q, q.dtype if dtype is None else dtype) if isinstance(q, QArray) else q,
      tree,
      is_leaf=lambda x: isinstance(x, QArray),
  )
