"""Hugging Face style checkpoints: ``config.json`` + ``model.safetensors`` <-> NNX modules.

The mapping between Hugging Face parameter names and module attributes lives here, once
per architecture; the GGUF loader translates GGUF names into these and reuses it. Nothing
is unpickled: safetensors is a flat header plus raw arrays.

Hugging Face stores a linear ``weight`` as ``(out, in)``; ``nnx.Linear.kernel`` is
``(in, out)``, so every linear weight is transposed on the way in and out.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.models import bert, gemma3, llama

StateDict = dict[str, np.ndarray]


def _abstract(ctor: Callable[[], nnx.Module]) -> nnx.Module:
  """Builds a module whose parameters are shapes only (no random init of real sizes)."""
  return nnx.eval_shape(ctor)


def _set(param: nnx.Variable, value: np.ndarray, name: str) -> None:
  want = tuple(param.get_value().shape)
  if tuple(value.shape) != want:
    raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)} != module shape {want}")
  param.set_value(jnp.asarray(value, dtype=jnp.float32))


class _Consumer:
  """Pops tensors from a state dict and reports any the mapping never used."""

  def __init__(self, sd: StateDict, prefix: str = ""):
    self.sd = dict(sd)
    self.prefix = prefix

  def take(self, name: str, param: nnx.Variable, transpose: bool = False) -> None:
    key = self.prefix + name
    if key not in self.sd:
      raise KeyError(f"checkpoint has no tensor {key!r}")
    v = np.asarray(self.sd.pop(key), dtype=np.float32)
    _set(param, v.T if transpose else v, key)

  def has(self, name: str) -> bool:
    return self.prefix + name in self.sd

  def finish(self, ignore: tuple[str, ...] = ()) -> None:
    left = [k for k in self.sd if not any(s in k for s in ignore)]
    if left:
      raise ValueError(f"checkpoint tensors not mapped to the module: {sorted(left)[:8]} ...")


# ----------------------------------------------------------------------------- llama


def llama_from_state_dict(cfg: llama.LlamaConfig, sd: StateDict) -> llama.Llama:
  """Builds a ``Llama`` from Hugging Face ``LlamaForCausalLM`` tensors (float32 copies)."""
  model = _abstract(lambda: llama.Llama(cfg, rngs=nnx.Rngs(0)))
  c = _Consumer(sd)
  c.take("model.embed_tokens.weight", model.embed_tokens.embedding)
  for i, layer in enumerate(model.layers):
    p = f"model.layers.{i}."
    c.take(p + "input_layernorm.weight", layer.input_layernorm.weight)
    c.take(p + "post_attention_layernorm.weight", layer.post_attention_layernorm.weight)
    for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
      c.take(p + f"self_attn.{n}.weight", getattr(layer.self_attn, n).kernel, transpose=True)
    for n in ("gate_proj", "up_proj", "down_proj"):
      c.take(p + f"mlp.{n}.weight", getattr(layer.mlp, n).kernel, transpose=True)
  c.take("model.norm.weight", model.norm.weight)
  if model.lm_head is not None:
    c.take("lm_head.weight", model.lm_head.kernel, transpose=True)
  # A tied checkpoint may still carry a copy of the head; rotary tables are derived.
  c.finish(ignore=("rotary_emb", "lm_head.weight"))
  return model


def llama_to_state_dict(model: llama.Llama) -> StateDict:
  """The inverse of ``llama_from_state_dict``: Hugging Face names, float32 numpy."""
  g = lambda p: np.asarray(p.get_value(), np.float32)
  sd = {"model.embed_tokens.weight": g(model.embed_tokens.embedding)}
  for i, layer in enumerate(model.layers):
    p = f"model.layers.{i}."
    sd[p + "input_layernorm.weight"] = g(layer.input_layernorm.weight)
    sd[p + "post_attention_layernorm.weight"] = g(layer.post_attention_layernorm.weight)
    for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
      sd[p + f"self_attn.{n}.weight"] = g(getattr(layer.self_attn, n).kernel).T.copy()
    for n in ("gate_proj", "up_proj", "down_proj"):
      sd[p + f"mlp.{n}.weight"] = g(getattr(layer.mlp, n).kernel).T.copy()
  sd["model.norm.weight"] = g(model.norm.weight)
  if model.lm_head is not None:
    sd["lm_head.weight"] = g(model.lm_head.kernel).T.copy()
  return sd


# ----------------------------------------------------------------------------- gemma 3


def gemma3_from_state_dict(cfg: gemma3.Gemma3Config, sd: StateDict) -> gemma3.Gemma3:
  """Builds a ``Gemma3`` from Hugging Face ``Gemma3ForCausalLM`` tensors.

  Norm weights are Hugging Face's ``w`` (the module computes ``x * (1 + w)``).
  """
  model = _abstract(lambda: gemma3.Gemma3(cfg, rngs=nnx.Rngs(0)))
  c = _Consumer(sd)
  # Gemma3ForConditionalGeneration checkpoints nest the text model one level deeper.
  if not c.has("model.embed_tokens.weight") and c.has("model.language_model.embed_tokens.weight"):
    c.sd = {k.replace("model.language_model.", "model.", 1): v for k, v in c.sd.items()}
  c.take("model.embed_tokens.weight", model.embed_tokens.embedding)
  for i, layer in enumerate(model.layers):
    p = f"model.layers.{i}."
    for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
              "post_feedforward_layernorm"):
      c.take(p + n + ".weight", getattr(layer, n).weight)
    c.take(p + "self_attn.q_norm.weight", layer.self_attn.q_norm.weight)
    c.take(p + "self_attn.k_norm.weight", layer.self_attn.k_norm.weight)
    for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
      c.take(p + f"self_attn.{n}.weight", getattr(layer.self_attn, n).kernel, transpose=True)
    for n in ("gate_proj", "up_proj", "down_proj"):
      c.take(p + f"mlp.{n}.weight", getattr(layer.mlp, n).kernel, transpose=True)
  c.take("model.norm.weight", model.norm.weight)
  c.finish(ignore=("rotary_emb", "lm_head.weight", "vision_tower", "multi_modal_projector"))
  return model


def gemma3_to_state_dict(model: gemma3.Gemma3) -> StateDict:
  """The inverse of ``gemma3_from_state_dict`` (norm weights as Hugging Face's ``w``)."""
  g = lambda p: np.asarray(p.get_value(), np.float32)
  sd = {"model.embed_tokens.weight": g(model.embed_tokens.embedding),
        "model.norm.weight": g(model.norm.weight)}
  for i, layer in enumerate(model.layers):
    p = f"model.layers.{i}."
    for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
              "post_feedforward_layernorm"):
      sd[p + n + ".weight"] = g(getattr(layer, n).weight)
    for n in ("q_norm", "k_norm"):
      sd[p + f"self_attn.{n}.weight"] = g(getattr(layer.self_attn, n).weight)
    for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
      sd[p + f"self_attn.{n}.weight"] = g(getattr(layer.self_attn, n).kernel).T.copy()
    for n in ("gate_proj", "up_proj", "down_proj"):
      sd[p + f"mlp.{n}.weight"] = g(getattr(layer.mlp, n).kernel).T.copy()
  return sd


# ----------------------------------------------------------------------------- bert


def bert_from_state_dict(cfg: bert.BertConfig, sd: StateDict) -> bert.BertEncoder:
  """Builds a ``BertEncoder`` from Hugging Face ``BertModel`` tensors (pooler ignored)."""
  model = _abstract(lambda: bert.BertEncoder(cfg, rngs=nnx.Rngs(0)))
  prefix = "bert." if any(k.startswith("bert.") for k in sd) else ""
  c = _Consumer(sd, prefix)
  e = model.embeddings
  c.take("embeddings.word_embeddings.weight", e.word_embeddings.embedding)
  c.take("embeddings.position_embeddings.weight", e.position_embeddings.embedding)
  c.take("embeddings.token_type_embeddings.weight", e.token_type_embeddings.embedding)
  c.take("embeddings.LayerNorm.weight", e.LayerNorm.scale)
  c.take("embeddings.LayerNorm.bias", e.LayerNorm.bias)
  for i, layer in enumerate(model.layers):
    p = f"encoder.layer.{i}."
    lin = {"attention.self.query": layer.query, "attention.self.key": layer.key,
           "attention.self.value": layer.value, "attention.output.dense": layer.attn_out,
           "intermediate.dense": layer.intermediate, "output.dense": layer.output}
    for n, mod in lin.items():
      c.take(p + n + ".weight", mod.kernel, transpose=True)
      c.take(p + n + ".bias", mod.bias)
    for n, mod in {"attention.output.LayerNorm": layer.attn_norm,
                   "output.LayerNorm": layer.out_norm}.items():
      c.take(p + n + ".weight", mod.scale)
      c.take(p + n + ".bias", mod.bias)
  c.finish(ignore=("pooler.", "position_ids"))
  return model


# ----------------------------------------------------------------------------- files

_ARCH = {
    "llama": (llama.LlamaConfig.from_hf_dict, llama_from_state_dict),
    "gemma3_text": (gemma3.Gemma3Config.from_hf_dict, gemma3_from_state_dict),
    "gemma3": (gemma3.Gemma3Config.from_hf_dict, gemma3_from_state_dict),
    "bert": (bert.BertConfig.from_hf_dict, bert_from_state_dict),
}


def read_safetensors(path: str | os.PathLike) -> StateDict:
  """All tensors of a ``.safetensors`` file (or of every shard named by an index json)."""
  from safetensors.numpy import load_file

  path = os.fspath(path)
  if path.endswith(".index.json"):
    with open(path) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    sd: StateDict = {}
    for s in shards:
      sd.update(load_file(os.path.join(os.path.dirname(path), s)))
    return sd
  return load_file(path)


def load_hf_dir(directory: str | os.PathLike) -> tuple[nnx.Module, Any]:
  """Loads a Hugging Face directory (``config.json`` + ``model.safetensors``).

  Args:
    directory: holds ``config.json`` and ``model.safetensors`` (or
      ``model.safetensors.index.json`` with its shards).

  Returns:
    ``(model, config)``: an NNX module with float32 parameters and its frozen config.
  """
  directory = os.fspath(directory)
  with open(os.path.join(directory, "config.json")) as f:
    hf_cfg = json.load(f)
  mtype = hf_cfg.get("model_type")
  if mtype not in _ARCH:
    raise NotImplementedError(f"model_type {mtype!r} is not in the zoo (have {sorted(_ARCH)})")
  single = os.path.join(directory, "model.safetensors")
  path = single if os.path.exists(single) else single + ".index.json"
  if not os.path.exists(path):
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor its index "
                            "(pickled pytorch_model.bin files are never loaded)")
  make_cfg, build = _ARCH[mtype]
  cfg = make_cfg(hf_cfg)
  return build(cfg, read_safetensors(path)), cfg


def save_hf_dir(directory: str | os.PathLike, hf_config: dict[str, Any], sd: StateDict) -> None:
  """Writes ``config.json`` and ``model.safetensors`` (float32)."""
  from safetensors.numpy import save_file

  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  save_file({k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()},
            os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def export_hf_dir(directory: str | os.PathLike, model: nnx.Module, cfg: Any,
                  tokenizer: Any = None) -> None:
  """Writes a zoo decoder as a Hugging Face directory (float32 safetensors).

  Converts a GGUF model into what ``transformers`` and ``load_hf_dir`` read
  (``config.json``, ``model.safetensors`` and, given a tokenizer, ``tokenizer.json``).
  The weights are the dequantized GGUF values, so the GGUF caveat travels with them.
  """
  if isinstance(model, llama.Llama):
    sd = llama_to_state_dict(model)
  elif isinstance(model, gemma3.Gemma3):
    sd = gemma3_to_state_dict(model)
  else:
    raise NotImplementedError(f"no exporter for {type(model).__name__}")
  save_hf_dir(directory, cfg.to_hf_dict(), sd)
  if tokenizer is not None:
    tokenizer.hf.save(os.path.join(os.fspath(directory), "tokenizer.json"))
