"""mxjax.nn: quantize an existing Flax model by policy, without editing it.

  >>> import mxjax
  >>> qmodel = mxjax.nn.quantize(model, "W4A16 int4_g128")        # doctest: +SKIP
  >>> mxjax.nn.explain(model, "W4A16 int4_g128")                  # doctest: +SKIP

Flax NNX: `quantize(model, policy)` returns a quantized clone. Linen:
`quantize(model, policy, params=params, example_args=(x,))` returns `(qmodel, qparams)`, where
`qmodel.apply(qparams, x)` runs the model with its matched `nn.Dense` / `nn.DenseGeneral` /
`nn.Einsum` quantized (see `mxjax.nn.linen`). Wherever a policy is taken, a recipe string is too.
"""

from typing import Any

from mxjax.nn import linen
from mxjax.nn import nnx
from mxjax.nn import recipes
from mxjax.nn._matmul import MatmulSpec
from mxjax.nn._matmul import QuantizedDotGeneral
from mxjax.nn.nnx import param_bytes
from mxjax.nn.policy import Mode
from mxjax.nn.policy import Policy
from mxjax.nn.policy import Report
from mxjax.nn.policy import Rule
from mxjax.nn.policy import as_policy
from mxjax.nn.policy import default_policy
from mxjax.nn.recipes import Recipe
from mxjax.nn.recipes import RecipeError
from mxjax.nn.recipes import RecipeNotAvailableError
from mxjax.nn.recipes import parse_recipe


def _is_linen(model: Any) -> bool:
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  return isinstance(model, nn.Module)


def quantize(model, policy, *, params=None, example_args=(), example_kwargs=None, rngs=None):
  """Quantizes a Flax model by `policy` (a Policy, rules, or a recipe string).

  NNX: returns a quantized clone (the original is left intact); `rngs` seeds the layers whose
  schemes round stochastically. Linen: needs `params` and `example_args` (to trace which
  modules run) and returns `(qmodel, qparams)`; stochastic layers draw from the "quant" rng
  collection at apply time (`rngs` here, a key, is only for stochastic serve-mode weights).
  """
  if _is_linen(model):
    if params is None:
      raise TypeError("quantizing a Linen model needs params=... and example_args=(...)")
    return linen.quantize(model, params, policy, *example_args, key=rngs,
                          **(example_kwargs or {}))
  return nnx.quantize(model, policy, rngs=rngs)


def explain(model, policy, *example_args, params=None, print_fn=print, backends: bool = True,
            **example_kwargs) -> Report:
  """Prints a table of every module, the rule it matched and its schemes (and, with
  `backends`, the ops backend each quantized matmul runs on and why), and unused rules.

  NNX models need nothing else; Linen models need example inputs (and optionally params).
  """
  if _is_linen(model):
    return linen.explain(model, policy, *example_args, params=params, print_fn=print_fn,
                         backends=backends, **example_kwargs)
  return nnx.explain(model, policy, print_fn=print_fn, backends=backends)


__all__ = [
    "MatmulSpec",
    "Mode",
    "Policy",
    "QuantizedDotGeneral",
    "Recipe",
    "RecipeError",
    "RecipeNotAvailableError",
    "Report",
    "Rule",
    "as_policy",
    "default_policy",
    "explain",
    "linen",
    "nnx",
    "param_bytes",
    "parse_recipe",
    "quantize",
    "recipes",
]
