"""Simulated (fake-quantized) numerics of a recipe on an NNX model, for the gate.

Each knob is simulated where it acts, and everything a candidate does not turn stays at the
reference's precision (bf16), so a single-axis run differs from the reference in one knob only:

- weights: every `nnx.Linear` kernel (not the output head, not embeddings) replaced by
  dequantize(quantize(kernel)), blocks along its input axis (axis 0 of Flax's (in, out));
- activations: the input of every such linear fake-quantized along its last axis (per token);
- KV: keys and values fake-quantized along head_dim (per token and head) before attention
  (Llama-architecture models of `experiments.models`).

This is the standard simulated-quantization protocol (quantize, dequantize, compute in fp32):
it is bit-identical to mxjax's `reference` matmul backend up to fp32 summation order, and it is
what the gate can afford on a CPU. The gate's report says "simulated".

.. warning:: The activation and KV knobs patch `nnx.Linear.__call__` and
  `experiments.models.llama.attention` while a forward pass is traced; call the returned forward
  only through `Simulator.logits`, which holds the patch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from mxjax import schemes as schemes_lib
from mxjax.quantize import fake_quant
from mxjax.schemes import Identity, Scheme

REFERENCE_SCHEME = schemes_lib.get("bf16")
_SKIP = "_mxjax_gate_keep"  # static attribute marking linears the gate keeps (output head)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
  """A configuration the gate evaluates (None: the knob stays at the reference's bf16).

  Attributes:
    name: label ("NVFP4 W4A4", "NVFP4 W4A4 [weights only]").
    weights, activations, kv: schemes for each knob.
    parent: for a single-axis run, the recipe it was split from.
    knob: for a single-axis run, the knob it keeps.
  """

  name: str
  weights: Scheme | Identity | None = None
  activations: Scheme | Identity | None = None
  kv: Scheme | Identity | None = None
  parent: str = ""
  knob: str = ""

  @property
  def is_reference(self) -> bool:
    return self.weights is None and self.activations is None and self.kv is None

  def describe(self) -> str:
    def s(x):
      return "bf16" if x is None else (x.name or x.describe())
    # Commas, not pipes: this string lands in a markdown table cell.
    return f"W {s(self.weights)}, A {s(self.activations)}, KV {s(self.kv)}"


def candidate_from_recipe(text: str) -> Candidate:
  """A Candidate from a recipe string (`mxjax.nn` grammar: "NVFP4 W4A4", "FP8 KV", "BF16")."""
  if text.strip().lower() in ("bf16", "reference", "bf16 reference"):
    return Candidate(name=text)
  from mxjax.nn.recipes import parse_recipe

  r = parse_recipe(text)

  def keep(s):
    return None if s is None or isinstance(s, Identity) else s

  return Candidate(name=text, weights=keep(r.weight), activations=keep(r.activation),
                   kv=keep(r.kv))


def single_axis_runs(c: Candidate) -> list[Candidate]:
  """One run per turned knob when a candidate turns two or more (one knob at a time)."""
  knobs = [k for k in ("weights", "activations", "kv") if getattr(c, k) is not None]
  if len(knobs) < 2:
    return []
  return [Candidate(name=f"{c.name} [{k} only]", parent=c.name, knob=k,
                    **{k: getattr(c, k)}) for k in knobs]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _fq(x, scheme, axis):
  return fake_quant(x, scheme, axis=axis, pad=True)


@functools.partial(jax.jit, static_argnums=(1,))
def _fq_last(x, scheme):
  return fake_quant(x, scheme, axis=-1, pad=True)


def _fq_last_traced(x, scheme):
  return fake_quant(x, scheme, axis=-1, pad=True)


@contextlib.contextmanager
def _patched(act: Scheme | Identity, kv: Scheme | Identity | None, eager: bool = False):
  from flax import nnx

  # Eagerly, each fake quant is its own small compiled call, cached by (shape, scheme) and
  # shared by every layer and candidate; inside one jitted model, 200+ inlined quantizers
  # (each with a correctly rounded long division) take minutes to compile on a CPU.
  fq = _fq_last if eager else _fq_last_traced
  orig_linear = nnx.Linear.__call__

  def linear_call(self, x, *args, **kwargs):
    if not getattr(self, _SKIP, False):
      x = fq(x, act)
    return orig_linear(self, x, *args, **kwargs)

  nnx.Linear.__call__ = linear_call
  llama = orig_attn = None
  if kv is not None:
    from experiments.models import llama

    orig_attn = llama.attention

    def attention(q, k, v, mask, scale):
      return orig_attn(q, fq(k, kv), fq(v, kv), mask, scale)

    llama.attention = attention
  try:
    yield
  finally:
    nnx.Linear.__call__ = orig_linear
    if llama is not None:
      llama.attention = orig_attn


def _path_str(path) -> str:
  """'layers/0/mlp/up_proj/kernel' (the trailing '/value' of NNX state leaves dropped)."""
  from mxjax.tree import path_str

  return path_str(path).removesuffix("/value")


class Simulator:
  """Runs a model under candidates' simulated numerics.

  A candidate whose activations and KV stay at the reference runs the reference's compiled
  forward with its own weights (one compile for all of them); the others run op by op with
  compiled quantizers (`eager_quantized`), or as one compiled forward per (A, KV) pair.

  Args:
    model: an NNX module (a causal LM mapping [B, T] int32 ids to [B, T, V] logits).
    eager_quantized: run activation / KV candidates op by op (fast to start on a CPU).
  """

  def __init__(self, model: Any, *, eager_quantized: bool = True):
    self.eager_quantized = eager_quantized
    # The KV knob patches the attention function of experiments.models.llama: say so rather
    # than silently leave K and V alone on another architecture.
    self.kv_supported = type(model).__module__ == "experiments.models.llama"
    self._model_type = type(model).__name__
    from flax import nnx

    for path, m in nnx.iter_modules(model):
      if isinstance(m, nnx.Linear) and any("head" in str(p) for p in path):
        setattr(m, _SKIP, True)
    self.graphdef, self.state = nnx.split(model)
    self._fwd: dict[tuple, Any] = {}
    self._weights: dict[Any, Any] = {}
    self.quantized_kernels: list[str] = []  # filled by `weights`: what the weight knob touches

  def _is_linear_kernel(self, path: str, leaf) -> bool:
    return (path.endswith("kernel") and "head" not in path and getattr(leaf, "ndim", 0) == 2)

  def weights(self, scheme: Scheme | Identity | None):
    """The parameter state with linear kernels in `scheme` (None: bf16) and every other
    matrix (embeddings, head) in bf16; cached per scheme."""
    key = scheme
    if key not in self._weights:
      w = REFERENCE_SCHEME if scheme is None else scheme

      def f(path, leaf):
        p = _path_str(path)
        if not hasattr(leaf, "ndim") or leaf.ndim < 2 or not jnp.issubdtype(leaf.dtype,
                                                                            jnp.floating):
          return leaf
        if self._is_linear_kernel(p, leaf):
          if p not in self.quantized_kernels:
            self.quantized_kernels.append(p)
          return _fq(leaf, w, 0)
        return _fq(leaf, REFERENCE_SCHEME, -1)

      self._weights[key] = jax.tree_util.tree_map_with_path(f, self.state)
    return self._weights[key]

  def apply(self, c: Candidate, *inputs: jax.Array) -> jax.Array:
    """model(*inputs) under candidate `c` (one compiled forward per activation/KV pair)."""
    from flax import nnx

    if c.kv is not None and not self.kv_supported:
      raise NotImplementedError(
          f"candidate {c.name!r} quantizes the KV cache, which the gate simulates only for "
          f"Llama-architecture models of experiments.models (got {self._model_type})")
    act = REFERENCE_SCHEME if c.activations is None else c.activations
    weights = self.weights(c.weights)
    if self.eager_quantized and (c.activations is not None or c.kv is not None):
      with _patched(act, c.kv, eager=True):
        return nnx.merge(self.graphdef, weights)(*inputs)
    key = (act, c.kv)
    if key not in self._fwd:
      graphdef = self.graphdef
      self._fwd[key] = jax.jit(lambda state, *xs: nnx.merge(graphdef, state)(*xs))
    with _patched(act, c.kv):
      return self._fwd[key](weights, *inputs)

  def logits(self, c: Candidate, ids: jax.Array) -> jax.Array:
    """[B, T] ids -> [B, T, V] float32 logits under candidate `c`."""
    return self.apply(c, ids)
