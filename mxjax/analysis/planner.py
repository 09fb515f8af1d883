"""Memory and roofline planner: bytes, concurrent sequences and the bound of each phase.

For a decoder with L layers, width d, MLP width f (SwiGLU: three matrices), H query heads,
H_kv key/value heads of width h and a vocabulary V:

- matmul weights per layer: d*H*h (q) + 2*d*H_kv*h (k, v) + H*h*d (o) + 3*d*f (MLP);
  embedding V*d, and an untied head another V*d; N_mm = L * per-layer + V*d (the head's
  matmul runs whether or not it is tied);
- weight bytes: each linear stored by the recipe's weight scheme (blocks along its input axis;
  scale bytes and padding included, exactly as `QArray.nbytes` counts them); embedding and head
  in bf16 unless the recipe says otherwise;
- KV bytes per token: 2 * L * H_kv * h * bits_kv / 8 (scales amortized along h);
- sequences that fit: floor((memory * (1 - reserve) - weight bytes) / (KV bytes/token * T));
- prefill of T tokens: FLOPs = 2 N_mm T + 2 L H h T^2 (causal attention, QK^T and PV over
  half the square); bytes = weights + KV written (T * KV bytes/token);
- decode at batch b, context T: FLOPs = b (2 N_mm + 4 L H h T); bytes = weights + b T KV
  bytes/token (activations are ignored in both: they are small beside weights and cache);
- intensity I = FLOPs / bytes; ridge R = peak(compute format) / bandwidth; memory-bound when
  I < R; time = max(FLOPs / peak, bytes / bandwidth).

The compute format of a phase is the wider of the weight and activation formats (a weight-only
recipe computes in bf16; FP8 x FP4 runs at the FP8 rate); an accelerator without matrix units
for it falls back to the next wider format (see `accelerators.FALLBACK`), and the row says so.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mxjax import schemes as schemes_lib
from mxjax.analysis.accelerators import Accelerator, get_accelerator
from mxjax.quantize import quantize
from mxjax.schemes import Granularity, Identity, Scheme


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelShape:
  """The shape of a Llama-style decoder (see the module docstring for the symbols)."""

  name: str
  n_layers: int
  d_model: int
  d_ff: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  vocab: int
  tied: bool

  def __post_init__(self):
    for f in ("n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "head_dim", "vocab"):
      if getattr(self, f) < 1:
        raise ValueError(f"{f} must be >= 1")
    if self.n_heads % self.n_kv_heads:
      raise ValueError("n_heads must be a multiple of n_kv_heads")

  @classmethod
  def from_llama_config(cls, cfg, name: str = "") -> ModelShape:
    """From an `experiments.models.LlamaConfig` (or anything with its field names)."""
    return cls(name=name, n_layers=cfg.num_layers, d_model=cfg.hidden_size,
               d_ff=cfg.intermediate_size, n_heads=cfg.num_heads, n_kv_heads=cfg.num_kv_heads,
               head_dim=cfg.head_dim, vocab=cfg.vocab_size, tied=cfg.tie_word_embeddings)

  def layer_linears(self) -> list[tuple[str, tuple[int, int]]]:
    """(name, (in, out)) of one layer's matmul weights."""
    d, h = self.d_model, self.head_dim
    return [("q_proj", (d, self.n_heads * h)), ("k_proj", (d, self.n_kv_heads * h)),
            ("v_proj", (d, self.n_kv_heads * h)), ("o_proj", (self.n_heads * h, d)),
            ("gate_proj", (d, self.d_ff)), ("up_proj", (d, self.d_ff)),
            ("down_proj", (self.d_ff, d))]

  @property
  def n_linear_params(self) -> int:
    return self.n_layers * sum(i * o for _, (i, o) in self.layer_linears())

  @property
  def n_matmul_params(self) -> int:
    """Parameters that take part in a matmul per token (linears plus the output head)."""
    return self.n_linear_params + self.vocab * self.d_model

  @property
  def n_params(self) -> int:
    """Stored parameters (norm weights excluded)."""
    return self.n_linear_params + self.vocab * self.d_model * (1 if self.tied else 2)


MODELS: dict[str, ModelShape] = {m.name: m for m in [
    ModelShape(name="smollm2-135m", n_layers=30, d_model=576, d_ff=1536, n_heads=9,
               n_kv_heads=3, head_dim=64, vocab=49152, tied=True),
    ModelShape(name="llama-3.1-8b", n_layers=32, d_model=4096, d_ff=14336, n_heads=32,
               n_kv_heads=8, head_dim=128, vocab=128256, tied=False),
    ModelShape(name="llama-3.1-70b", n_layers=80, d_model=8192, d_ff=28672, n_heads=64,
               n_kv_heads=8, head_dim=128, vocab=128256, tied=False),
]}


def get_model_shape(name: str | ModelShape) -> ModelShape:
  if isinstance(name, ModelShape):
    return name
  try:
    return MODELS[name.lower()]
  except KeyError:
    raise ValueError(f"unknown model shape {name!r}; known: {', '.join(MODELS)}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanRecipe:
  """What a recipe stores and computes in, for planning (None = bf16).

  Attributes:
    name: label.
    weights: scheme of the linear weights.
    activations: scheme of the activations entering the linears (None: weight-only).
    kv: scheme of the KV cache.
    embeddings: scheme of the embedding and output head (default bf16).
  """

  name: str
  weights: Scheme | Identity | str | None = None
  activations: Scheme | Identity | str | None = None
  kv: Scheme | Identity | str | None = None
  embeddings: Scheme | Identity | str | None = None

  def __post_init__(self):
    for f in ("weights", "activations", "kv", "embeddings"):
      v = getattr(self, f)
      object.__setattr__(self, f, schemes_lib.get("bf16" if v is None else v))


DEFAULT_RECIPES: tuple[PlanRecipe, ...] = (
    PlanRecipe(name="bf16"),
    PlanRecipe(name="fp8_w8a8", weights="fp8_e4m3", activations="fp8_e4m3"),
    PlanRecipe(name="int4_g128_w4a16", weights="int4_g128"),
    PlanRecipe(name="nvfp4_w4a4", weights="nvfp4", activations="nvfp4"),
    PlanRecipe(name="mxfp4_w4a4", weights="mxfp4", activations="mxfp4"),
    PlanRecipe(name="fp8_kv", kv="fp8_e4m3"),
    PlanRecipe(name="nvfp4_w4a4_fp8_kv", weights="nvfp4", activations="nvfp4", kv="fp8_e4m3"),
)


@functools.lru_cache(maxsize=4096)
def stored_bytes(shape: tuple[int, ...], scheme: Scheme | Identity, axis: int = 0) -> int:
  """Exact bytes `quantize(x, scheme, axis=axis, pad=True)` stores for an x of `shape`
  (codes, scales, zero points, tensor scale and padding), found without computing."""
  if isinstance(scheme, Identity):
    return math.prod(shape) * jnp.dtype(scheme.dtype).itemsize
  q = jax.eval_shape(lambda x: quantize(x, scheme, axis=axis, pad=True),
                     jax.ShapeDtypeStruct(shape, jnp.float32))
  return q.nbytes


def kv_bits_per_value(scheme: Scheme | Identity, head_dim: int) -> float:
  """Stored bits per cached K or V value; per-tensor scales (one per layer) count as zero."""
  if isinstance(scheme, Identity):
    return 8.0 * jnp.dtype(scheme.dtype).itemsize
  if scheme.granularity is Granularity.TENSOR:
    return float(scheme.format.bits)
  return 8.0 * stored_bytes((head_dim,), scheme, -1) / head_dim


_COMPUTE_CLASS = {"e4m3": "fp8", "e5m2": "fp8", "e3m2": "fp6", "e2m3": "fp6", "e2m1": "fp4",
                  "int8": "int8", "mxint8": "int8", "int4": "int4", "uint4": "int4"}
_WIDTH = {"bf16": 16, "fp8": 8, "int8": 8, "fp6": 6, "fp4": 4, "int4": 4}


def compute_format(recipe: PlanRecipe) -> str:
  """The matmul format of a recipe: bf16 unless both operands are quantized to a format with
  matrix units; then the wider of the two (ints and floats do not mix: bf16)."""
  w, a = recipe.weights, recipe.activations
  if isinstance(w, Identity) or isinstance(a, Identity):
    return "bf16"
  cw, ca = _COMPUTE_CLASS.get(w.element), _COMPUTE_CLASS.get(a.element)
  if cw is None or ca is None or cw.startswith("int") != ca.startswith("int"):
    return "bf16"
  return cw if _WIDTH[cw] >= _WIDTH[ca] else ca


@dataclasses.dataclass(frozen=True, kw_only=True)
class PhaseEstimate:
  """Roofline of one phase on one accelerator.

  Attributes:
    phase: "prefill T=..." or "decode b=... T=...".
    flops: matmul FLOPs of the phase.
    bytes: HBM bytes moved (weights + KV cache).
    intensity: flops / bytes, FLOP/byte.
    ridge: peak / bandwidth of the compute format used, FLOP/byte.
    bound: "memory" or "compute".
    seconds: max(flops / peak, bytes / bandwidth).
    compute: compute format asked for; used: the one the accelerator runs it in.
  """

  phase: str
  flops: float
  bytes: float
  intensity: float
  ridge: float
  bound: str
  seconds: float
  compute: str
  used: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
  """Memory and roofline of one (model, recipe, accelerator)."""

  model: str
  recipe: str
  accelerator: str
  weight_bytes: float
  kv_bytes_per_token: float
  context: int
  max_sequences: int
  prefill: PhaseEstimate
  decode: PhaseEstimate
  note: str


def weight_bytes(model: ModelShape, recipe: PlanRecipe) -> float:
  """Bytes of every stored weight (linears by recipe.weights, embedding/head by embeddings)."""
  per_layer = sum(stored_bytes((i, o), recipe.weights, 0) for _, (i, o) in model.layer_linears())
  emb = stored_bytes((model.vocab, model.d_model), recipe.embeddings, -1)
  return float(model.n_layers * per_layer + emb * (1 if model.tied else 2))


def kv_bytes_per_token(model: ModelShape, recipe: PlanRecipe) -> float:
  """K and V bytes one token adds to the cache, all layers."""
  bits = kv_bits_per_value(recipe.kv, model.head_dim)
  return 2 * model.n_layers * model.n_kv_heads * model.head_dim * bits / 8


def _phase(label: str, flops: float, nbytes: float, acc: Accelerator, compute: str
           ) -> PhaseEstimate:
  peak, used = acc.peak_for(compute)
  ridge = peak / acc.bandwidth
  intensity = flops / nbytes
  return PhaseEstimate(phase=label, flops=flops, bytes=nbytes, intensity=intensity, ridge=ridge,
                       bound="memory" if intensity < ridge else "compute",
                       seconds=max(flops / peak, nbytes / acc.bandwidth), compute=compute,
                       used=used)


def plan(
    model: ModelShape | str,
    recipe: PlanRecipe,
    accelerator: Accelerator | str,
    *,
    context: int = 4096,
    batch: int = 1,
    prefill_tokens: int | None = None,
    reserve_frac: float = 0.0,
) -> Plan:
  """Plans one recipe of one model on one accelerator (formulas in the module docstring).

  Args:
    model: a ModelShape or a name in `MODELS`.
    recipe: a PlanRecipe.
    accelerator: an Accelerator or a name in `accelerators.ACCELERATORS`.
    context: context length T (tokens per sequence) for the KV cache and decode.
    batch: concurrent sequences b in the decode estimate.
    prefill_tokens: prompt length of the prefill estimate (default `context`).
    reserve_frac: fraction of HBM held back (activations, workspace, fragmentation).

  Returns:
    A Plan.
  """
  m = get_model_shape(model)
  acc = get_accelerator(accelerator)
  if context < 1 or batch < 1 or not 0 <= reserve_frac < 1:
    raise ValueError("context and batch must be >= 1 and reserve_frac in [0, 1)")
  wb = weight_bytes(m, recipe)
  kvt = kv_bytes_per_token(m, recipe)
  free = acc.memory_bytes * (1 - reserve_frac) - wb
  fits = max(0, math.floor(free / (kvt * context))) if free > 0 else 0
  comp = compute_format(recipe)
  tp = prefill_tokens or context
  attn = m.n_layers * m.n_heads * m.head_dim
  pre = _phase(f"prefill T={tp}", 2 * m.n_matmul_params * tp + 2 * attn * tp * tp,
               wb + tp * kvt, acc, comp)
  dec = _phase(f"decode b={batch} T={context}",
               batch * (2 * m.n_matmul_params + 4 * attn * context), wb + batch * context * kvt,
               acc, comp)
  notes = []
  if pre.used != comp:
    notes.append(f"{acc.name} has no {comp} matrix units: {pre.used} rate assumed")
  if free <= 0:
    notes.append(f"weights ({wb / 1e9:.1f} GB) do not fit in {acc.memory_bytes / 1e9:.0f} GB")
  if batch > fits:
    notes.append(f"batch {batch} exceeds the {fits} sequences that fit")
  return Plan(model=m.name, recipe=recipe.name, accelerator=acc.name, weight_bytes=wb,
              kv_bytes_per_token=kvt, context=context, max_sequences=fits, prefill=pre,
              decode=dec, note="; ".join(notes))


def plan_table(
    model: ModelShape | str,
    recipes: Sequence[PlanRecipe] = DEFAULT_RECIPES,
    accelerators: Sequence[str] = ("H100", "H200", "B200", "MI355X", "TPUv5p"),
    **kwargs,
) -> list[Plan]:
  """`plan` for every (recipe, accelerator), recipes outer."""
  return [plan(model, r, a, **kwargs) for r in recipes for a in accelerators]


def plans_markdown(plans: Sequence[Plan]) -> str:
  """A markdown table of plans."""
  lines = ["| model | recipe | accel | weights GB | KV KiB/token | seqs @T | prefill I / ridge"
           " (bound) | decode I / ridge (bound) | decode ms/step | compute (used) | note |",
           "|" + "---|" * 11]
  for p in plans:
    pr, de = p.prefill, p.decode
    comp = pr.compute if pr.used == pr.compute else f"{pr.compute} ({pr.used})"
    lines.append(
        f"| {p.model} | {p.recipe} | {p.accelerator} | {p.weight_bytes / 1e9:.3f} |"
        f" {p.kv_bytes_per_token / 1024:.2f} | {p.max_sequences} @{p.context} |"
        f" {pr.intensity:.0f} / {pr.ridge:.0f} ({pr.bound}) |"
        f" {de.intensity:.1f} / {de.ridge:.0f} ({de.bound}) | {1e3 * de.seconds:.3f} |"
        f" {comp} | {p.note} |")
  return "\n".join(lines) + "\n"
