"""Flax NNX surgery: quantize a model you did not write for mxjax, without editing it.

`quantize(model, policy)` clones the model and replaces every `nnx.Linear`, `nnx.LinearGeneral`
and `nnx.Einsum` a policy rule quantizes by a quantized twin: a subclass of the original
(so `isinstance` checks still hold) with the same attribute names (so `nnx.state` paths are
unchanged: ".../q_proj/kernel") whose forward calls `mxjax.nn._matmul`. In mode "serve" the
twin's `kernel` Param holds a `QArray` (codes + scales: the memory is really saved); in modes
"qat" and "train" it holds the float kernel, quantized on the fly.

Nothing is patched globally: the twins compute their own matmul, so no interception can reach a
Pallas kernel or any matmul outside the matched modules (attention scores stay untouched).

Why twins rather than the modules' own `dot_general` / `einsum_op` injection points (which the
Linen front end and `QuantizedDotGeneral` do use): `nnx.Linear.__call__` reads
`self.kernel[...]`, which a QArray kernel does not support, so serve mode needs its own forward;
one forward for all three modes keeps them numerically identical. A module with a custom
`dot_general` of its own is reported by `explain` ("replaces the module's own dot_general").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mxjax.qarray import QArray
from mxjax.nn import _matmul
from mxjax.nn._matmul import MatmulSpec
from mxjax.nn.policy import Mode, ModuleInfo, Policy, Report, Row, Rule, as_policy, plan


class Quantized:
  """Marker base of the quantized twins (their `spec` says how they quantize)."""

  spec: MatmulSpec
  rule_name: str


def _adopt(twin: nnx.Module, src: nnx.Module, rule: Rule, kernel_axis: int,
           key: jax.Array | None, kernel_ndim: int) -> None:
  """Copies src's attributes into twin (no re-initialisation) and quantizes the kernel."""
  for k, v in vars(src).items():
    if not k.startswith("_"):
      setattr(twin, k, v)
  twin.spec = MatmulSpec.from_rule(rule)
  twin.rule_name = rule.name
  twin.kernel_axis = kernel_axis
  if twin.spec.stochastic and key is None:
    raise ValueError(
        f"rule {rule.name!r} has a stochastic-rounding scheme: pass rngs= to"
        " mxjax.nn.quantize (e.g. rngs=nnx.Rngs(quant=0)) so each layer gets a PRNG stream")
  # A stochastic layer draws a fresh key per call from its own stream (state, like dropout's).
  twin.quant_rngs = nnx.Rngs(quant=key) if twin.spec.stochastic else None
  kernel = src.kernel.get_value()
  if rule.mode is Mode.SERVE and rule.weight is not None:
    wkey = None if key is None else jax.random.fold_in(key, 1 << 20)
    # A new Param: metadata of the float kernel (sharding names) does not describe a QArray.
    # Axes beyond the layer's own kernel rank are stacked layers (nnx.vmap / nnx.scan).
    n_lead = max(0, kernel.ndim - kernel_ndim)
    twin.kernel = nnx.Param(
        _matmul.quantize_weight(kernel, rule.weight, kernel_axis, wkey, n_lead))
  # Otherwise the adopted kernel Param (with its metadata) stays as it is.


def _call_key(twin) -> jax.Array | None:
  return None if twin.quant_rngs is None else twin.quant_rngs.quant()


def _finish(y: jax.Array, inputs: jax.Array, preferred) -> jax.Array:
  return y if preferred is not None else y.astype(inputs.dtype)


class QuantizedLinear(nnx.Linear, Quantized):
  """`nnx.Linear` whose matmul is quantized by a rule; kernel (in, out), blocked along `in`."""

  def __init__(self, src: nnx.Linear, rule: Rule,
               key: jax.Array | None = None):  # pylint: disable=super-init-not-called
    # nnx.Linear.__init__ would draw new weights: adopt src's instead.
    _adopt(self, src, rule, -2, key, 2)

  def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
    bias = self.bias.get_value() if self.bias is not None else None
    inputs, kernel, bias = _matmul.promote(inputs, self.kernel.get_value(), bias, self.dtype)
    y = _matmul.dot_general(
        inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), self.spec,
        precision=self.precision, preferred_element_type=self.preferred_element_type,
        key=_call_key(self))
    y = _finish(y, inputs, self.preferred_element_type)
    if bias is not None:
      y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y


class QuantizedLinearGeneral(nnx.LinearGeneral, Quantized):
  """`nnx.LinearGeneral` (attention projections of `nnx.MultiHeadAttention`), quantized."""

  def __init__(self, src: nnx.LinearGeneral, rule: Rule,
               key: jax.Array | None = None):  # pylint: disable=super-init-not-called
    ndim = len(src.batch_axis) + len(src.in_features) + len(src.out_features)
    axis = _matmul.layer_axes("linear_general", ndim, n_batch=len(src.batch_axis),
                              n_in=len(src.in_features))
    _adopt(self, src, rule, axis, key, ndim)

  def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
    ndim = inputs.ndim
    n_batch = len(self.batch_axis)
    axis = tuple(sorted(a % ndim for a in self.axis))
    batch_axis = tuple(sorted(a % ndim for a in self.batch_axis.keys()))
    expanded_batch_shape = tuple(
        inputs.shape[ax] if ax in batch_axis else 1 for ax in range(ndim) if ax not in axis)
    bias = self.bias.get_value() if self.bias is not None else None
    inputs, kernel, bias = _matmul.promote(inputs, self.kernel.get_value(), bias, self.dtype)
    contract = tuple(range(n_batch, len(axis) + n_batch))
    dn = ((axis, contract), (batch_axis, tuple(range(n_batch))))
    out = _matmul.dot_general(inputs, kernel, dn, self.spec, precision=self.precision,
                              preferred_element_type=self.preferred_element_type,
                              key=_call_key(self))
    out = _finish(out, inputs, self.preferred_element_type)
    if bias is not None:
      out = out + jnp.reshape(bias, (*expanded_batch_shape, *self.out_features))
    return out


class QuantizedEinsum(nnx.Einsum, Quantized):
  """`nnx.Einsum` with a quantized kernel; blocks along the kernel's last contracted axis."""

  def __init__(self, src: nnx.Einsum, rule: Rule,
               key: jax.Array | None = None):  # pylint: disable=super-init-not-called
    if src.einsum_str is None:
      raise ValueError(
          "nnx.Einsum without a constructor einsum_str cannot be quantized ahead of time: the"
          " contraction axis of its kernel is unknown")
    ndim = len(src.kernel_shape)
    axis = _matmul.layer_axes("einsum", ndim, subscripts=src.einsum_str, lhs_ndim=None)
    _adopt(self, src, rule, axis, key, ndim)

  def __call__(self, inputs: jax.Array, einsum_str: str | None = None,
               out_sharding=None) -> jax.Array:
    eq = (einsum_str or self.einsum_str).replace(" ", "")
    self._einsum_str_check(eq)
    bias = self.bias.get_value() if self.bias is not None else None
    inputs, kernel, bias = _matmul.promote(inputs, self.kernel.get_value(), bias, self.dtype)
    y = _matmul.einsum(eq, inputs, kernel, self.spec, precision=self.precision,
                       preferred_element_type=self.preferred_element_type, key=_call_key(self))
    y = _finish(y, inputs, self.preferred_element_type)
    if bias is not None:
      shape_only = jax.ShapeDtypeStruct(tuple(kernel.shape), jnp.float32)
      y = y + jnp.reshape(bias, self._infer_broadcasted_bias_shape(eq, inputs, shape_only))
    return y


# Order matters: Linear and Einsum are not LinearGeneral subclasses, but check twins first.
_TWINS: tuple[tuple[type, type, str], ...] = (
    (nnx.Linear, QuantizedLinear, "linear"),
    (nnx.LinearGeneral, QuantizedLinearGeneral, "linear_general"),
    (nnx.Einsum, QuantizedEinsum, "einsum"),
)


def _kind(m: Any) -> str | None:
  if isinstance(m, Quantized):
    return None  # already quantized: never quantize twice
  for cls, _, kind in _TWINS:
    if isinstance(m, cls):
      return kind
  return None


def _label(s) -> str:
  return "-" if s is None else (s.name or s.describe())


def _path(p: tuple) -> str:
  return "/".join(str(k) for k in p)


def module_infos(model: nnx.Module) -> list[ModuleInfo]:
  """Every module of `model` (root last) as the policy sees it."""
  mods = list(nnx.iter_modules(model))
  paths = [p for p, _ in mods]
  infos = []
  for p, m in mods:
    container = any(len(q) > len(p) and q[: len(p)] == p for q in paths)
    kind = _kind(m)
    shape = axis = None
    if kind is not None:
      shape = tuple(m.kernel.get_value().shape)
      if kind == "linear":
        axis = -2
      elif kind == "linear_general":
        ndim = len(m.batch_axis) + len(m.in_features) + len(m.out_features)
        axis = _matmul.layer_axes(kind, ndim, n_batch=len(m.batch_axis), n_in=len(m.in_features))
      elif m.einsum_str is not None:
        axis = _matmul.layer_axes(kind, len(m.kernel_shape), subscripts=m.einsum_str,
                                  lhs_ndim=None)
    done, note = None, ""
    custom = [a for a in ("dot_general", "einsum_op", "dot_general_cls")
              if getattr(m, a, None) not in (None, jax.lax.dot_general, jnp.einsum)]
    if kind is not None and custom:
      note = f"replaces the module's own {', '.join(custom)}"
    if isinstance(m, Quantized):
      done = f"{m.rule_name}: W {_label(m.spec.rhs)}, A {_label(m.spec.lhs)}, {m.spec.mode.value}"
    infos.append(ModuleInfo(_path(p), m, kind, container, shape, axis, done, note))
  return infos


def explain(model: nnx.Module, policy: Policy | str, *, print_fn=print,
            backends: bool = True) -> Report:
  """Prints (and returns) the table of every module, its rule and schemes (and the ops backend
  each quantized matmul runs on, with `backends`), and the rules that matched nothing."""
  policy = as_policy(policy)
  report = Report(tuple(plan(module_infos(model), policy, backends=backends)), policy)
  if print_fn is not None:
    print_fn(str(report))
  return report


def _twin(m: nnx.Module, rule: Rule, key: jax.Array | None) -> nnx.Module:
  for cls, twin_cls, _ in _TWINS:
    if isinstance(m, cls):
      return twin_cls(m, rule, key)
  raise TypeError(f"no quantized twin for {type(m).__name__}")


def _set_child(parent: Any, key: Any, value: nnx.Module) -> None:
  if isinstance(key, int) or isinstance(parent, (nnx.Dict, dict)):
    parent[key] = value
  else:
    setattr(parent, key, value)


def _child(parent: Any, key: Any) -> Any:
  return parent[key] if isinstance(key, int) or isinstance(parent, (nnx.Dict, dict)) else getattr(
      parent, key)


def _base_key(rngs: nnx.Rngs | int | jax.Array | None) -> jax.Array | None:
  if rngs is None:
    return None
  if isinstance(rngs, nnx.Rngs):
    return rngs.quant()  # the "quant" stream, or the default one
  if isinstance(rngs, int):
    return jax.random.key(rngs)
  return rngs


def quantize(model: nnx.Module, policy: Policy | str, *,
             rngs: nnx.Rngs | int | jax.Array | None = None) -> nnx.Module:
  """Returns a quantized copy of `model`; `model` itself is left intact.

  Args:
    model: any Flax NNX module (it need not know about mxjax).
    policy: a `Policy`, rules, or a recipe string ("W4A16 int4_g128").
    rngs: seeds the PRNG streams of layers with stochastic-rounding schemes (an `nnx.Rngs`,
      whose "quant" stream is used, an int seed, or a key); each such layer then draws a new
      key per call. Required when a matched rule rounds stochastically.

  Returns:
    A clone in which each `nnx.Linear` / `nnx.LinearGeneral` / `nnx.Einsum` the policy
    quantizes is its quantized twin. `explain(model, policy)` says which and why.

  Example:
    >>> qmodel = quantize(model, "W4A16 int4_g128")  # doctest: +SKIP
    >>> logits = nnx.jit(lambda m, x: m(x))(qmodel, ids)  # doctest: +SKIP
  """
  policy = as_policy(policy)
  new = nnx.clone(model)
  rows: list[Row] = plan(module_infos(new), policy)
  paths = {_path(p): p for p, _ in nnx.iter_modules(new)}
  base = _base_key(rngs)
  for i, row in enumerate(rows):
    if not row.quantized:
      continue
    twin = _twin(row.info.module, row.rule, None if base is None else jax.random.fold_in(base, i))
    p = paths[row.path]
    if not p:
      return twin  # the model is itself one quantizable layer
    parent = new
    for k in p[:-1]:
      parent = _child(parent, k)
    _set_child(parent, p[-1], twin)
  return new


def param_bytes(tree: Any) -> dict[str, int]:
  """Bytes of a parameter tree (an `nnx.State`, a Linen params dict, or a module).

  Returns:
    {"quantized": bytes held in QArrays, "float": bytes of other array leaves,
     "quantized_values": logical values held in QArrays}.
  """
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree)
  out = {"quantized": 0, "float": 0, "quantized_values": 0}
  for leaf in jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, QArray)):
    if isinstance(leaf, QArray):
      out["quantized"] += leaf.nbytes
      out["quantized_values"] += int(np.prod(leaf.shape))
    elif hasattr(leaf, "dtype"):
      out["float"] += int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
  return out
