"""Flax Linen: quantize an existing model by policy, through the modules' own injection points.

Linen modules are built inside `apply`, so mxjax cannot swap them ahead of time as it does for
NNX. Instead:

- `quantize(model, params, policy, *example_args)` traces the model once (abstractly) to list
  its modules, applies the policy, and returns `(qmodel, qparams)`: in mode "serve" the matched
  kernels in `qparams` are `QArray`s.
- `qmodel.apply(qparams, *args)` runs `model.apply` under a method interceptor
  (`nn.intercept_methods`) that acts only on the `__call__` of the matched `nn.Dense`,
  `nn.DenseGeneral` and `nn.Einsum`: Dense and DenseGeneral run their own `__call__` with
  `dot_general` injected (their own injection point; a serve-mode QArray kernel rides along in
  the injected function, the module sees a placeholder of its shape); `nn.Einsum` has no
  `einsum` injection point in flax 0.12, so its two-operand einsum is computed here.
  The interceptor is active only inside `qmodel.apply` and only touches Linen module methods:
  it cannot reach `jax.lax` or a Pallas kernel.
- `QuantizedDotGeneral` (in `mxjax.nn`) is the injection point for models you write yourself:
  `nn.Dense(..., dot_general=QuantizedDotGeneral.of(weight="int8", mode="qat"))`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta as flax_meta

from mxjax.formats import Rounding
from mxjax.qarray import QArray
from mxjax.nn import _matmul
from mxjax.nn._matmul import MatmulSpec, QuantizedDotGeneral
from mxjax.nn.policy import Mode, ModuleInfo, Policy, Report, as_policy, plan

_KINDS: tuple[tuple[type, str], ...] = (
    (nn.Dense, "linear"),
    (nn.DenseGeneral, "linear_general"),
    (nn.Einsum, "einsum"),
)


def _kind(m: nn.Module) -> str | None:
  for cls, kind in _KINDS:
    if isinstance(m, cls):
      return kind
  return None


def _path(m: nn.Module) -> str:
  return "/".join(str(k) for k in m.path)


def _lookup(tree: Any, path: str) -> Any:
  node = tree
  for k in [k for k in path.split("/") if k]:
    node = node[k]
  return node


def _kernel(params: Any, path: str) -> Any:
  # Partitioned / boxed params (sharding annotations): quantize the array inside the box.
  return flax_meta.unbox(_lookup(params, path)["kernel"])


def _einsum_str(m: nn.Einsum, args: tuple, kwargs: dict) -> str | None:
  eq = kwargs.get("einsum_str", args[1] if len(args) > 1 else None) or m.einsum_str
  return None if eq is None else eq.replace(" ", "")


def _weight_axis(m: nn.Module, kind: str, kernel_ndim: int, args: tuple, kwargs: dict) -> int:
  if kind == "linear_general":
    batch = _matmul.tuple_axes(m.batch_dims)
    return _matmul.layer_axes(kind, kernel_ndim, n_batch=len(batch),
                              n_in=len(_matmul.tuple_axes(m.axis)))
  if kind == "einsum":
    return _matmul.layer_axes(kind, kernel_ndim, subscripts=_einsum_str(m, args, kwargs),
                              lhs_ndim=args[0].ndim)
  return -2


def module_infos(model: nn.Module, variables: Any | None, *args, **kwargs) -> list[ModuleInfo]:
  """Every Linen module that runs in `model.apply(variables, *args)` (or `init` when no
  variables), in call order, as the policy sees it. Traced abstractly (`jax.eval_shape`)."""
  calls: dict[str, tuple[nn.Module, tuple, dict]] = {}

  def record(next_fun, a, kw, context):
    if context.method_name == "__call__":
      calls.setdefault(_path(context.module), (context.module.clone(parent=None), a, kw))
    return next_fun(*a, **kw)

  with nn.intercept_methods(record):
    if variables is None:
      variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    else:
      jax.eval_shape(lambda v: model.apply(v, *args, **kwargs), variables)
  params = variables.get("params", {})
  paths = list(calls)
  infos = []
  for p, (m, a, kw) in calls.items():
    container = p == "" or any(q.startswith(p + "/") for q in paths)
    kind = _kind(m)
    shape = axis = None
    if kind is not None:
      shape = tuple(_kernel(params, p).shape)
      axis = _weight_axis(m, kind, len(shape), a, kw)
    infos.append(ModuleInfo(p, m, kind, container and kind is None, shape, axis))
  return infos


def explain(model: nn.Module, policy: Policy | str, *example_args, params=None, print_fn=print,
            backends: bool = True, **example_kwargs) -> Report:
  """Prints (and returns) the explain table of a Linen model run on `example_args` (with the
  ops backend of each quantized matmul, with `backends`)."""
  policy = as_policy(policy)
  infos = module_infos(model, params, *example_args, **example_kwargs)
  report = Report(tuple(plan(infos, policy, backends=backends)), policy)
  if print_fn is not None:
    print_fn(str(report))
  return report


def _kernel_ndim(m: nn.Module, kind: str) -> int:
  """The rank of one layer's kernel (more axes in the params are stacked layers: nn.scan)."""
  if kind == "linear_general":
    return (len(_matmul.tuple_axes(m.batch_dims)) + len(_matmul.tuple_axes(m.axis))
            + len(_matmul.tuple_axes(m.features)))
  if kind == "einsum":
    return len(m.shape)
  return 2


@dataclasses.dataclass(frozen=True)
class _Entry:
  spec: MatmulSpec
  kind: str


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedLinen:
  """A Linen model with a policy bound: `apply` runs it with the matched layers quantized.

  Attributes:
    model: the original Linen module (unchanged).
    policy: the policy it was quantized by.
    report: the explain report of that quantization.
  """

  model: nn.Module
  policy: Policy
  report: Report
  entries: dict[str, _Entry]

  def apply(self, variables: Any, *args, **kwargs) -> Any:
    """`model.apply(variables, *args, **kwargs)` with the matched layers quantized."""
    with nn.intercept_methods(self._intercept):
      return self.model.apply(variables, *args, **kwargs)

  def _intercept(self, next_fun, args, kwargs, context):
    m = context.module
    if context.method_name != "__call__" or _kind(m) is None or m.is_initializing():
      return next_fun(*args, **kwargs)
    if isinstance(getattr(m, "dot_general", None), QuantizedDotGeneral):
      return next_fun(*args, **kwargs)  # our own re-entrant call below
    entry = self.entries.get(_path(m))
    if entry is None:
      return next_fun(*args, **kwargs)
    # Stochastic schemes draw a fresh key per call from the "quant" rng collection.
    key = m.make_rng("quant") if entry.spec.stochastic else None
    if entry.kind == "einsum":
      return _einsum_call(m, entry.spec, args, kwargs, key)
    params = dict(m.variables["params"])
    kernel = params["kernel"]
    weight = None
    if isinstance(kernel, QArray):
      # Linen checks a param's shape against its initializer before __call__ uses it: hand the
      # module a placeholder of the logical shape (a broadcast zero, removed by XLA as unused)
      # and the QArray to the injected dot_general.
      weight = kernel
      params["kernel"] = jnp.broadcast_to(jnp.zeros((), kernel.dtype), kernel.shape)
    clone = m.clone(parent=None, dot_general=QuantizedDotGeneral(entry.spec, weight, key),
                    dot_general_cls=None)
    return clone.apply({"params": params}, *args, **kwargs)


def _einsum_call(m: nn.Einsum, spec: MatmulSpec, args: tuple, kwargs: dict,
                 key: jax.Array | None) -> jax.Array:
  eq = _einsum_str(m, args, kwargs)
  kernel = flax_meta.unbox(m.get_variable("params", "kernel"))
  bias = flax_meta.unbox(m.get_variable("params", "bias")) if m.use_bias else None
  inputs, kernel, bias = _matmul.promote(args[0], kernel, bias, m.dtype)
  y = _matmul.einsum(eq, inputs, kernel, spec, precision=m.precision,
                     preferred_element_type=m.preferred_element_type, key=key)
  if m.preferred_element_type is None:
    y = y.astype(inputs.dtype)
  if bias is not None:
    shape_only = jax.ShapeDtypeStruct(tuple(kernel.shape), jnp.float32)
    _, bshape = m._get_bias_shape(eq, inputs, shape_only)  # pylint: disable=protected-access
    y = y + jnp.reshape(bias, bshape)
  return y


def _set(tree: dict, path: str, leaf: str, value: Any) -> dict:
  """A copy of nested dict `tree` with tree[path...][leaf] = value (other nodes shared)."""
  keys = [k for k in path.split("/") if k] + [leaf]

  def go(node, i):
    node = dict(node)
    node[keys[i]] = value if i == len(keys) - 1 else go(node[keys[i]], i + 1)
    return node

  return go(tree, 0)


def quantize(model: nn.Module, variables: Any, policy: Policy | str, *example_args,
             key: jax.Array | None = None, **example_kwargs) -> tuple[QuantizedLinen, Any]:
  """Quantizes a Linen model by `policy`.

  Args:
    model: any Linen module (it need not know about mxjax).
    variables: its variables, {"params": ...} as returned by `model.init`.
    policy: a Policy, rules, or a recipe string.
    *example_args, **example_kwargs: inputs to trace which modules run (shapes matter only).
    key: PRNG key for serve-mode weights with a stochastic-rounding scheme. At apply time,
      stochastic layers draw from the "quant" rng collection:
      `qmodel.apply(qvars, x, rngs={"quant": key})`.

  Returns:
    (qmodel, qvariables): `qmodel.apply(qvariables, *args)` runs the quantized model; in mode
    "serve" the matched kernels of `qvariables["params"]` are QArrays.

  Example:
    >>> qmodel, qvars = quantize(model, variables, "W8A8", ids)  # doctest: +SKIP
    >>> logits = jax.jit(qmodel.apply)(qvars, ids)  # doctest: +SKIP
  """
  policy = as_policy(policy)
  infos = module_infos(model, variables, *example_args, **example_kwargs)
  report = Report(tuple(plan(infos, policy)), policy)
  entries, params = {}, dict(variables["params"])
  for i, row in enumerate(report.rows):
    if not row.quantized:
      continue
    entries[row.path] = _Entry(MatmulSpec.from_rule(row.rule), row.info.kind)
    if row.rule.mode is Mode.SERVE and row.rule.weight is not None:
      kernel = _kernel(params, row.path)
      wkey = None if key is None else jax.random.fold_in(key, i)
      if wkey is None and row.rule.weight.rounding is Rounding.STOCHASTIC:
        raise ValueError(f"rule {row.rule.name!r} rounds weights stochastically: pass key=")
      n_lead = max(0, kernel.ndim - _kernel_ndim(row.info.module, row.info.kind))
      q = _matmul.quantize_weight(kernel, row.rule.weight, row.info.weight_axis, wkey, n_lead)
      params = _set(params, row.path, "kernel", q)
  qvars = dict(variables)
  qvars["params"] = params
  return QuantizedLinen(model, policy, report, entries), qvars
