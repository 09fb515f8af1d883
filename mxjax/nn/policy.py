"""Policies: which modules of a model are quantized, how, and why.

A `Policy` is an ordered tuple of `Rule`s; for each module the first rule whose regex
`re.search`es the module's path ("layers/0/self_attn/q_proj") and whose optional module type
matches wins. A rule maps the module to weight, activation and gradient schemes, a backend and
a mode. A rule with neither a weight nor an activation scheme keeps its modules in high
precision: that is how the default policy protects embeddings, the output head, norms,
attention scores and MoE routers.

`plan` applies a policy to a framework-neutral list of modules (the NNX and Linen front ends
build that list) and `Report` prints it as a table, ending with the rules that matched nothing
(qwix's `get_unused_rules()`), so no module stays in high precision without saying so.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mxjax import schemes as schemes_lib
from mxjax.schemes import Identity, Scheme

VERSION = 1
AnyScheme = Scheme | Identity | str | None
BACKENDS = ("auto", "reference", "xla", "pallas")


class Mode(enum.Enum):
  """How a matched module is quantized.

  SERVE: weights stored as QArray (real memory saved); activations quantized on the fly.
  QAT: weights kept in float; both operands fake-quantized, straight-through gradients.
  TRAIN: quantized forward and backward (the gradient scheme quantizes d_out), per the ops layer.
  """

  SERVE = "serve"
  QAT = "qat"
  TRAIN = "train"


def _scheme(value: AnyScheme, field: str) -> Scheme | None:
  """A Scheme, or None for 'high precision' (None, an Identity, or a bf16/fp32 preset)."""
  if value is None:
    return None
  try:
    s = schemes_lib.get(value)
  except ValueError as e:
    raise ValueError(f"Rule {field}: {e}") from None
  return None if isinstance(s, Identity) else s


def _label(s: Scheme | None) -> str:
  return "-" if s is None else (s.name or s.describe())


@dataclasses.dataclass(frozen=True)
class Rule:
  """Maps modules whose path matches `pattern` to schemes, a backend and a mode.

  Attributes:
    pattern: regex, `re.search`ed against the module path ("layers/0/mlp/up_proj"; Linen:
      "layers_0/mlp/up_proj"). Anchor it ("(^|/)lm_head$") to match one name exactly.
    module_type: optional type, class name, or tuple of them; a class name matches any class
      in the module's MRO ("Linear" matches `nnx.Linear`, "Dense" matches `nn.Dense`).
    weight: scheme (or preset name) of the weight; None / "bf16" / "fp32" keep it.
    activation: scheme of the module's input activation; None keeps it.
    gradient: scheme of the output gradient in the backward matmuls (mode "train" only).
    backend: "auto", "reference", "xla" or "pallas" (passed to the ops layer).
    mode: "serve", "qat" or "train" (see `Mode`).
    name: a label for reports (defaults to the pattern).
    version: serialisation version.

  Example:
    >>> r = Rule(r"(^|/)(q|k|v|o)_proj$", weight="int4_g128")
    >>> r.matches("layers/0/self_attn/q_proj"), r.keeps
    (True, False)
  """

  pattern: str
  _: dataclasses.KW_ONLY
  module_type: type | str | tuple[type | str, ...] | None = None
  weight: AnyScheme = None
  activation: AnyScheme = None
  gradient: AnyScheme = None
  backend: str = "auto"
  mode: Mode | str = Mode.SERVE
  name: str = ""
  version: int = VERSION

  def __post_init__(self):
    try:
      re.compile(self.pattern)
    except re.error as e:
      raise ValueError(f"Rule pattern {self.pattern!r} is not a valid regex: {e}") from None
    if isinstance(self.module_type, list):
      object.__setattr__(self, "module_type", tuple(self.module_type))
    types = self.module_type if isinstance(self.module_type, tuple) else (self.module_type,)
    for t in types:
      if t is not None and not isinstance(t, (type, str)):
        raise TypeError(f"Rule module_type must be a type or a class name, got {t!r}")
    for f in ("weight", "activation", "gradient"):
      object.__setattr__(self, f, _scheme(getattr(self, f), f))
    if not isinstance(self.mode, Mode):
      try:
        object.__setattr__(self, "mode", Mode(self.mode))
      except ValueError:
        raise ValueError(f"Rule mode={self.mode!r} is not one of 'serve', 'qat', 'train'") from None
    if self.backend not in BACKENDS:
      raise ValueError(f"Rule backend={self.backend!r} is not one of {', '.join(BACKENDS)}")
    if self.gradient is not None and self.mode is not Mode.TRAIN:
      # A gradient scheme outside mode "train" would be ignored: say so instead.
      raise ValueError(
          f"Rule {self.pattern!r}: a gradient scheme acts only in mode 'train' (got mode"
          f" {self.mode.value!r})"
      )
    if not self.name:
      object.__setattr__(self, "name", self.pattern)

  @property
  def keeps(self) -> bool:
    """True when the rule keeps its modules in high precision (no weight, no activation)."""
    return self.weight is None and self.activation is None and self.gradient is None

  def matches(self, path: str, module: Any = None) -> bool:
    """True when `pattern` searches `path` and `module` (an instance or a class) is of the type."""
    if not re.search(self.pattern, path):
      return False
    if self.module_type is None:
      return True
    cls = module if isinstance(module, type) else type(module)
    names = {c.__name__ for c in cls.__mro__}
    types = self.module_type if isinstance(self.module_type, tuple) else (self.module_type,)
    return any(t in names if isinstance(t, str) else issubclass(cls, t) for t in types)

  def describe(self) -> str:
    """'W int4_g128, A -, G -, serve, backend auto' (or 'keep (high precision)')."""
    if self.keeps:
      return "keep (high precision)"
    return (
        f"W {_label(self.weight)}, A {_label(self.activation)}, G {_label(self.gradient)},"
        f" {self.mode.value}, backend {self.backend}"
    )


@dataclasses.dataclass(frozen=True)
class Policy:
  """An ordered tuple of rules; first match wins; an unmatched module stays high precision.

  Attributes:
    rules: the rules, in priority order (a list is accepted).
    name: a label for reports (the recipe string it was parsed from, if any).
    version: serialisation version.
  """

  rules: tuple[Rule, ...]
  name: str = ""
  version: int = VERSION

  def __post_init__(self):
    if isinstance(self.rules, Rule):
      object.__setattr__(self, "rules", (self.rules,))
    object.__setattr__(self, "rules", tuple(self.rules))
    for r in self.rules:
      if not isinstance(r, Rule):
        raise TypeError(f"Policy rules must be mxjax.nn.Rule, got {type(r).__name__}: {r!r}")

  def match(self, path: str, module: Any = None) -> tuple[int, Rule] | None:
    """(index, rule) of the first rule matching the module at `path`, or None."""
    for i, r in enumerate(self.rules):
      if r.matches(path, module):
        return i, r
    return None


# Default keep rules, in order. Each names what it protects, for the explain table.
_EMBED = r"(?i)(^|/)(embed\w*|\w*_embed(ding)?s?|wte|wpe|tok_embeddings|word_embeddings|shared)$"
_HEAD = r"(?i)(^|/)(lm_head|unembed(ding)?|output_projection|logits?)$"
_NORM = r"(?i)(^|/)([^/]*norm[^/]*|ln(_\w+)?)$"
_SCORES = r"(?i)(^|/)[^/]*(attn_scores|attention_scores|attn_weights|scores|softmax)[^/]*$"
_ROUTER = r"(?i)(^|/)(router|gate|moe_gate|routing|gating)$"


def default_keep_rules() -> tuple[Rule, ...]:
  """The high-precision rules the default policy starts with (embeddings first)."""
  return (
      Rule(_EMBED, name="keep: embeddings"),
      Rule(r"", module_type=("Embed",), name="keep: embeddings (by type)"),
      Rule(_HEAD, name="keep: lm_head / unembedding"),
      Rule(_NORM, name="keep: norms"),
      Rule(_SCORES, name="keep: softmax / attention scores"),
      Rule(_ROUTER, name="keep: MoE routers"),
  )


def default_policy(
    weight: AnyScheme = "int8",
    activation: AnyScheme = None,
    gradient: AnyScheme = None,
    *,
    backend: str = "auto",
    mode: Mode | str = Mode.SERVE,
    name: str = "",
) -> Policy:
  """The keep rules of `default_keep_rules()`, then one rule quantizing every other matmul.

  Embeddings, the output head (lm_head / unembedding), norms, softmax / attention scores and
  MoE routers stay in high precision. Attention scores and softmax are not module matmuls:
  mxjax never intercepts them (it does not patch `jax.lax`); the rule is there so a model
  that wraps them in a module (an `attn_scores` Einsum) keeps them too.

  Args:
    weight, activation, gradient: schemes (or preset names) for every other matmul.
    backend: ops backend.
    mode: "serve", "qat" or "train".
    name: label for reports.

  Example:
    >>> p = default_policy("int4_g128")
    >>> p.match("layers/0/mlp/up_proj")[1].weight.name, p.match("lm_head")[1].keeps
    ('int4_g128', True)
  """
  main = Rule(r".*", weight=weight, activation=activation, gradient=gradient, backend=backend,
              mode=mode, name="default: every other matmul")
  return Policy(default_keep_rules() + (main,), name=name or f"default({main.describe()})")


def as_policy(policy: Policy | Rule | Sequence[Rule] | str) -> Policy:
  """A Policy from a Policy, a Rule, a sequence of Rules, or a recipe string."""
  if isinstance(policy, Policy):
    return policy
  if isinstance(policy, str):
    from mxjax.nn import recipes  # recipes builds on this module

    return recipes.parse(policy)
  if isinstance(policy, Rule):
    return Policy((policy,))
  if isinstance(policy, Sequence):
    return Policy(tuple(policy))
  raise TypeError(f"expected a Policy, Rule(s) or recipe string, got {type(policy).__name__}")


# -- Plans and the explain report --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModuleInfo:
  """One module as a front end (NNX, Linen) sees it.

  Attributes:
    path: "layers/0/mlp/up_proj".
    module: the module instance (or its class), for type rules.
    kind: "linear", "linear_general" or "einsum" for modules mxjax can quantize, else None.
    container: True when the module has submodules (containers are listed, never quantized).
    weight_shape: the kernel's shape, when known.
    weight_axis: the kernel's contraction axis blocks run along (negative), when known.
    quantized_as: for a module mxjax already quantized, how (it is never quantized twice).
    note: anything the quantized twin changes beyond the matmul (a custom dot_general it
      replaces), appended to the explain row.
  """

  path: str
  module: Any
  kind: str | None
  container: bool = False
  weight_shape: tuple[int, ...] | None = None
  weight_axis: int | None = None
  quantized_as: str | None = None
  note: str = ""


@dataclasses.dataclass(frozen=True)
class Row:
  """What a policy does with one module."""

  info: ModuleInfo
  rule_index: int | None
  rule: Rule | None
  quantized: bool
  action: str

  @property
  def path(self) -> str:
    return self.info.path


def _padding_note(info: ModuleInfo, s: Scheme | None) -> str:
  if s is None or info.weight_shape is None or info.weight_axis is None:
    return ""
  if s.block_size is None:
    return ""
  n = info.weight_shape[info.weight_axis]
  if n % s.block_size:
    padded = -(-n // s.block_size) * s.block_size
    return f"; weight axis padded {n}->{padded} (block {s.block_size})"
  return ""


@functools.lru_cache(maxsize=256)
def backend_note(weight_shape: tuple[int, ...], weight_axis: int, rule: Rule) -> str:
  """Which ops backend a quantized module's matmul runs on, and why (or why it cannot).

  Asked of `mxjax.ops.explain` for a one-token activation against the weight (the choice
  depends on the schemes, the contraction length and the device, not on the token count).
  """
  from mxjax import ops  # pylint: disable=import-outside-toplevel

  ndim = len(weight_shape)
  k = weight_axis % ndim
  lhs = jax.ShapeDtypeStruct((1, weight_shape[k]), jnp.float32)
  rhs = jax.ShapeDtypeStruct(weight_shape, jnp.float32)
  schemes = ops.DotSchemes(lhs=rule.activation, rhs=rule.weight, mode=ops.GradMode.STE)
  try:
    e = ops.explain(lhs, rhs, (((1,), (k,)), ((), ())), schemes=schemes, backend=rule.backend)
  except ValueError as err:
    return f"; backend {rule.backend!r} cannot run it: {err}"
  return f"; runs on {e.backend} ({e.why})"


def plan(modules: Sequence[ModuleInfo], policy: Policy, *, backends: bool = False) -> list[Row]:
  """Applies `policy` to `modules`: one Row each, saying what happens and why.

  With `backends`, each quantized row also says which ops backend runs it (`backend_note`).
  """
  rows = []
  for info in modules:
    m = policy.match(info.path, info.module)
    idx, rule = m if m else (None, None)
    tname = type(info.module).__name__ if not isinstance(info.module, type) else info.module.__name__
    if info.container:
      rows.append(Row(info, None, None, False, "container"))
      continue
    if info.quantized_as is not None:
      rows.append(Row(info, None, None, False, f"already quantized ({info.quantized_as}): left"
                      " as it is"))
      continue
    if rule is None:
      rows.append(Row(info, None, None, False, "kept: no rule matched"))
    elif rule.keeps:
      rows.append(Row(info, idx, rule, False, f"kept: rule {idx} '{rule.name}'"))
    elif info.kind is None:
      rows.append(Row(info, idx, rule, False,
                      f"kept: {tname} has no matmul mxjax quantizes (rule {idx} '{rule.name}')"))
    else:
      note = _padding_note(info, rule.weight) + (f"; {info.note}" if info.note else "")
      if backends and info.weight_shape is not None and info.weight_axis is not None:
        note += backend_note(info.weight_shape, info.weight_axis, rule)
      rows.append(Row(info, idx, rule, True,
                      f"quantized: {rule.describe()} (rule {idx} '{rule.name}'){note}"))
  return rows


@dataclasses.dataclass(frozen=True)
class Report:
  """The explain table: every module, the rule it matched, its schemes; unused rules."""

  rows: tuple[Row, ...]
  policy: Policy

  @property
  def unused_rules(self) -> tuple[tuple[int, Rule], ...]:
    """(index, rule) of every rule that was the first match of no module."""
    used = {r.rule_index for r in self.rows if r.rule_index is not None}
    return tuple((i, r) for i, r in enumerate(self.policy.rules) if i not in used)

  @property
  def quantized(self) -> tuple[str, ...]:
    return tuple(r.path for r in self.rows if r.quantized)

  def __str__(self) -> str:
    lines = [f"policy: {self.policy.name or '(unnamed)'}"]
    rows = [r for r in self.rows if r.action != "container"]
    w = max([len(r.path) for r in rows] + [6])
    tw = max([len(_tname(r.info.module)) for r in rows] + [4])
    lines.append(f"{'module':<{w}}  {'type':<{tw}}  action")
    for r in rows:
      lines.append(f"{r.path or '(root)':<{w}}  {_tname(r.info.module):<{tw}}  {r.action}")
    n_q = sum(r.quantized for r in rows)
    lines.append(f"{n_q} of {len(rows)} modules quantized")
    unused = self.unused_rules
    if unused:
      lines.append("rules that matched nothing:")
      lines += [f"  {i}: '{r.name}' ({r.describe()})" for i, r in unused]
    else:
      lines.append("every rule matched at least one module")
    return "\n".join(lines)


def _tname(module: Any) -> str:
  return module.__name__ if isinstance(module, type) else type(module).__name__
