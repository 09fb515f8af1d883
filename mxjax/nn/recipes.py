"""Recipe strings, parsed in one place into policies.

Grammar (case-insensitive; parts separated by "," or ";"; words by spaces or "-"):

  part    := word+
  word    := WxAy             bit widths: "W4A16", "W8A8", "W4A4" (16/32 keep high precision)
           | format           a preset name ("int4_g128", "mxfp8_e4m3", ...) or a family:
                              FP8 (e4m3, per-channel weights / per-token activations; as a
                              gradient format: e5m2 per tensor), E5M2, MXFP8, MXFP6, MXFP4,
                              MXINT8, NVFP4, INT8 (per channel / per token), INT4 (group 128),
                              NF4 (group 64), BF16, FP16, FP32
           | target           weights | activations | gradients | KV (cache)
           | method           RTN (what mxjax.nn does) | AWQ | GPTQ | SmoothQuant
           | mode             serve | qat | train
           | backend          auto | reference | xla | pallas
           | filler           and, with, only, for, cache

Meaning of a part: with WxAy, each format goes to the operand of its bit width and an operand
with no format gets the default of its width (8: INT8; W4: INT4 group 128; 16/32: kept);
with targets, the part's one format goes to each target; a bare format means weights and
activations. A gradient scheme implies mode "train" unless a mode is named.

Examples: "W4A16 int4_g128", "FP8 weights and activations", "NVFP4 W4A4", "W8A8",
"AWQ-INT4 weights, BF16 activations, FP8 KV" (AWQ and the KV cache are not yet available: the
parser says so rather than silently doing something else).
"""

from __future__ import annotations

import dataclasses
import re

from mxjax import schemes as schemes_lib
from mxjax.schemes import Identity, Scheme

from mxjax.nn.policy import BACKENDS, Mode, Policy, default_policy

FAMILIES: dict[str, str] = {
    "fp8": "fp8_e4m3_rowwise", "e4m3": "fp8_e4m3_rowwise", "e5m2": "fp8_e5m2",
    "mxfp8": "mxfp8_e4m3", "mxfp6": "mxfp6_e2m3", "mxfp4": "mxfp4", "mxint8": "mxint8",
    "nvfp4": "nvfp4", "int8": "int8", "int4": "int4_g128", "nf4": "nf4_g64",
    "bf16": "bf16", "fp32": "fp32",
}  # fmt: skip
_GRADIENT_FAMILIES = {"fp8": "fp8_e5m2"}  # FP8 training: E4M3 forward, E5M2 backward (TE hybrid)
TARGETS = {
    "weights": "W", "weight": "W", "activations": "A", "activation": "A", "acts": "A",
    "inputs": "A", "gradients": "G", "gradient": "G", "grads": "G", "kv": "KV",
}  # fmt: skip
METHODS = ("rtn", "awq", "gptq", "smoothquant")
# Capabilities a recipe can name that mxjax.nn cannot bind yet, and where they will live.
_UNAVAILABLE_METHODS = {"awq": "mxjax.ptq (AWQ)", "gptq": "mxjax.ptq (GPTQ)",
                        "smoothquant": "mxjax.ptq (SmoothQuant)"}
FILLERS = ("and", "with", "only", "for", "cache", "quantization", "quantized")
_WA = re.compile(r"^w(\d+)a(\d+)$")


class RecipeError(ValueError):
  """A recipe string mxjax does not understand."""


class RecipeNotAvailableError(NotImplementedError):
  """A recipe names a capability (AWQ, GPTQ, a quantized KV cache, ...) not available yet."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
  """A parsed recipe.

  Attributes:
    text: the recipe string.
    weight, activation, gradient: schemes (None: high precision).
    kv: the KV-cache scheme asked for, or None.
    method: "rtn", "awq", "gptq" or "smoothquant".
    mode: serve, qat or train.
    backend: ops backend.
    unavailable: one line per part that names a capability not available yet.
  """

  text: str
  weight: Scheme | None = None
  activation: Scheme | None = None
  gradient: Scheme | None = None
  kv: Scheme | None = None
  method: str = "rtn"
  mode: Mode = Mode.SERVE
  backend: str = "auto"
  unavailable: tuple[str, ...] = ()

  def to_policy(self, *, ignore_unavailable: bool = False) -> Policy:
    """The default policy (sensitive modules kept) with this recipe's schemes.

    Raises:
      RecipeNotAvailableError: a part names a capability not available yet (unless
        `ignore_unavailable`, which drops those parts: the KV scheme is not applied and a PTQ
        method falls back to round-to-nearest).
    """
    if self.unavailable and not ignore_unavailable:
      raise RecipeNotAvailableError(
          f"recipe {self.text!r}: " + "; ".join(self.unavailable)
          + ". Parse with ignore_unavailable=True to use the rest of the recipe.")
    return default_policy(self.weight, self.activation, self.gradient, backend=self.backend,
                          mode=self.mode, name=self.text)


def _understood() -> str:
  return (
      "WxAy (W4A16, W8A8, W4A4, ...); formats " + ", ".join(k.upper() for k in FAMILIES)
      + " or any preset (" + ", ".join(schemes_lib.names()) + "); targets weights,"
      " activations, gradients, KV; methods " + ", ".join(m.upper() for m in METHODS)
      + "; modes serve, qat, train; backends " + ", ".join(BACKENDS))


def _format(word: str, target: str = "") -> Scheme | Identity | None:
  if target == "G" and word in _GRADIENT_FAMILIES:
    return schemes_lib.get(_GRADIENT_FAMILIES[word])
  if word in FAMILIES:
    return schemes_lib.get(FAMILIES[word])
  if word == "fp16":
    return Identity(dtype="float16", name="fp16")
  if word in schemes_lib.names():
    return schemes_lib.get(word)
  return None


def _bits(s: Scheme | Identity) -> int:
  if isinstance(s, Identity):
    return 32 if s.dtype == "float32" else 16
  return s.format.bits


_DEFAULT_BY_BITS = {("W", 8): "int8", ("A", 8): "int8", ("W", 4): "int4_g128"}


def _words(part: str) -> list[str]:
  return [w for w in re.split(r"[\s\-]+", part.strip().lower()) if w]


def parse_recipe(text: str) -> Recipe:
  """Parses a recipe string (see the module docstring) into a `Recipe`.

  Raises:
    RecipeError: an unknown word or a contradiction, with the words that are understood.

  Example:
    >>> r = parse_recipe("W4A16 int4_g128")
    >>> r.weight.name, r.activation
    ('int4_g128', None)
  """
  if not text or not text.strip():
    raise RecipeError("empty recipe. Understood: " + _understood())
  got: dict[str, Scheme | Identity] = {}
  method, mode, backend, unavailable = "rtn", None, "auto", []

  def assign(target: str, s: Scheme | Identity, part: str) -> None:
    if target in got and got[target] != s:
      raise RecipeError(f"recipe {text!r}: part {part!r} sets {target} again")
    got[target] = s

  for part in re.split(r"[,;]", text):
    words = _words(part)
    if not words:
      continue
    fmts, targets, wa = [], [], None
    for w in words:
      if (m := _WA.match(w)):
        wa = (int(m.group(1)), int(m.group(2)))
      elif w in TARGETS:
        targets.append(TARGETS[w])
      elif w in METHODS:
        method = w
        if w in _UNAVAILABLE_METHODS:
          unavailable.append(f"part {part.strip()!r}: {_UNAVAILABLE_METHODS[w]} is not yet"
                             " available")
      elif w in [m.value for m in Mode]:
        mode = Mode(w)
      elif w in BACKENDS:
        backend = w
      elif w in FILLERS:
        pass
      elif _format(w) is not None:
        fmts.append(w)
      else:
        raise RecipeError(f"recipe {text!r}: unknown word {w!r} in part {part.strip()!r}."
                          f" Understood: {_understood()}")
    if wa is not None:
      if targets:
        raise RecipeError(f"part {part.strip()!r}: use either WxAy or targets, not both")
      widths = {"W": wa[0], "A": wa[1]}
      for f in fmts:
        s = _format(f)
        hits = [t for t, b in widths.items() if b == _bits(s)]
        if not hits:
          raise RecipeError(f"part {part.strip()!r}: {f} has {_bits(s)} bits; W{wa[0]}A{wa[1]}"
                            " has no operand of that width")
        for t in hits:
          assign(t, s, part)
      for t, b in widths.items():
        if t in got:
          continue
        if b >= 16:
          assign(t, Identity(dtype="float32" if b == 32 else "bfloat16"), part)
        elif (t, b) in _DEFAULT_BY_BITS:
          assign(t, schemes_lib.get(_DEFAULT_BY_BITS[(t, b)]), part)
        else:
          raise RecipeError(f"part {part.strip()!r}: name the {b}-bit format for"
                            f" {'weights' if t == 'W' else 'activations'} (e.g. nvfp4, mxfp4,"
                            " int4_g128, mxfp6_e2m3)")
      continue
    if len(fmts) > 1:
      raise RecipeError(f"part {part.strip()!r} names {len(fmts)} formats ({', '.join(fmts)});"
                        " give each its own part: 'FP8 weights, BF16 activations'")
    if not fmts:
      if targets:
        raise RecipeError(f"part {part.strip()!r} names no format for {', '.join(targets)}")
      continue  # a part of only a method / mode / backend
    for t in targets or ["W", "A"]:
      s = _format(fmts[0], t)
      if t == "KV":
        unavailable.append(f"part {part.strip()!r}: a quantized KV cache (mxjax.kv) is not yet"
                           " available")
      assign(t, s, part)

  def scheme(t: str) -> Scheme | None:
    s = got.get(t)
    return None if s is None or isinstance(s, Identity) else s

  if mode is None:
    mode = Mode.TRAIN if scheme("G") is not None else Mode.SERVE
  if scheme("G") is not None and mode is not Mode.TRAIN:
    raise RecipeError(f"recipe {text!r}: a gradient format needs mode 'train', not {mode.value}")
  if scheme("W") is None and scheme("A") is None and scheme("G") is None and not unavailable:
    raise RecipeError(f"recipe {text!r} quantizes nothing. Understood: {_understood()}")
  return Recipe(text=text, weight=scheme("W"), activation=scheme("A"), gradient=scheme("G"),
                kv=scheme("KV"), method=method, mode=mode, backend=backend,
                unavailable=tuple(unavailable))


def parse(text: str, *, ignore_unavailable: bool = False) -> Policy:
  """Parses a recipe string into a Policy (the default policy with the recipe's schemes).

  Example:
    >>> parse("FP8 weights and activations").rules[-1].describe()
    'W fp8_e4m3_rowwise, A fp8_e4m3_rowwise, G -, serve, backend auto'
  """
  return parse_recipe(text).to_policy(ignore_unavailable=ignore_unavailable)


# Recipes every model-zoo test runs (and the SNR / memory tables report).
PRESETS: tuple[str, ...] = (
    "W8A16 int8",
    "W8A8",
    "W4A16 int4_g128",
    "W4A16 nf4_g64",
    "FP8 weights and activations",
    "MXFP8",
    "MXFP6",
    "MXFP4 W4A4",
    "NVFP4 W4A4",
)
