"""GGUF files (llama.cpp) -> NNX modules, through Hugging Face tensor names.

The ``gguf`` package parses the file and dequantizes every block format (Q4_0/1, Q5_0/1,
Q8_0, K-quants ...) in numpy; this module renames tensors to Hugging Face's names, undoes
llama.cpp's conversion-time edits, and hands them to ``hf_loader``:

- llama architecture: llama.cpp permutes the rows of ``attn_q`` and ``attn_k`` so that
  rotary pairs are interleaved (GPT-J style) instead of split in halves (``rotate_half``).
  ``unpermute_qk`` undoes it; ``permute_qk`` is llama.cpp's own permutation (for writing).
- gemma3: every ``*norm.weight`` is stored as ``1 + w``; Hugging Face stores ``w``.

.. warning:: The linear weights of a quantized GGUF were already rounded to 4-8 bits by
  llama.cpp. The float32 model built here is the *dequantized* model; error measured
  against it favours schemes whose grid matches the file's (Q4_1 is INT4 asymmetric,
  block 32 along the input axis).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from flax import nnx

from experiments.models import gemma3, hf_loader, llama

StateDict = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class GGUFContents:
  """A parsed GGUF file.

  Attributes:
    metadata: key -> Python value (ints, floats, strings, lists).
    tensors: GGUF tensor name -> float32 array in Hugging Face orientation ``(out, in)``.
    tensor_types: GGUF tensor name -> quantization type name ("Q4_1", "F32", ...).
  """

  metadata: dict[str, Any]
  tensors: dict[str, np.ndarray]
  tensor_types: dict[str, str]

  @property
  def architecture(self) -> str:
    return self.metadata["general.architecture"]


def read_metadata(path: str | os.PathLike, skip_large_arrays: bool = False) -> dict[str, Any]:
  """GGUF key/value metadata (vocabularies included unless ``skip_large_arrays``)."""
  import gguf

  reader = gguf.GGUFReader(os.fspath(path))
  meta = {}
  for key, field in reader.fields.items():
    if skip_large_arrays and len(field.data) > 1024:
      continue
    meta[key] = field.contents()
  return meta


def read_gguf(path: str | os.PathLike, dequantize: bool = True) -> GGUFContents:
  """Reads metadata and all tensors, dequantized to float32.

  Args:
    path: a ``.gguf`` file.
    dequantize: if False, tensors keep the raw bytes/arrays gguf hands out.

  Returns:
    ``GGUFContents``; tensor arrays are numpy shape ``(out, in)`` for matrices (GGUF lists
    dimensions innermost first; numpy order is the reverse, which is Hugging Face's).
  """
  import gguf

  path = os.fspath(path)
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # a truncated or foreign file fails deep inside numpy memmap
    raise ValueError(f"{path} is not a readable GGUF file ({e}); delete it and fetch it again "
                     "(experiments.data.registry verifies sha256 on fetch)") from e
  meta = {k: f.contents() for k, f in reader.fields.items()}
  tensors, types = {}, {}
  for t in reader.tensors:
    types[t.name] = t.tensor_type.name
    if not dequantize:
      tensors[t.name] = np.asarray(t.data)
      continue
    arr = gguf.quants.dequantize(t.data, t.tensor_type)
    shape = tuple(int(d) for d in reversed(t.shape))
    tensors[t.name] = np.asarray(arr, np.float32).reshape(shape)
  return GGUFContents(meta, tensors, types)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's permutation of Q/K rows: halves -> interleaved pairs, per head.

  Args:
    w: ``(n_head * head_dim, in)`` Hugging Face weight (or a ``(n_head * head_dim,)`` bias).
    n_head: heads of this projection (``num_kv_heads`` for K).
  """
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of ``permute_qk``: GGUF rows back to Hugging Face's ``rotate_half`` order."""
  return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _get(meta: dict[str, Any], arch: str, key: str, default: Any = None) -> Any:
  v = meta.get(f"{arch}.{key}", default)
  if v is None:
    raise KeyError(f"GGUF metadata lacks {arch}.{key}")
  return v


_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_LLAMA_LAYER = {**_LAYER_NAMES, "ffn_norm": "post_attention_layernorm"}
_GEMMA3_LAYER = {**_LAYER_NAMES, "post_attention_norm": "post_attention_layernorm",
                 "ffn_norm": "pre_feedforward_layernorm",
                 "post_ffw_norm": "post_feedforward_layernorm"}


def _rename(tensors: dict[str, np.ndarray], layer_map: dict[str, str]) -> StateDict:
  sd = {}
  for name, arr in tensors.items():
    if name == "token_embd.weight":
      sd["model.embed_tokens.weight"] = arr
    elif name == "output_norm.weight":
      sd["model.norm.weight"] = arr
    elif name == "output.weight":
      sd["lm_head.weight"] = arr
    elif name.startswith("blk."):
      _, i, rest = name.split(".", 2)
      base, suffix = rest.rsplit(".", 1)
      if base not in layer_map:
        raise ValueError(f"GGUF tensor {name!r} has no mapping for this architecture")
      sd[f"model.layers.{i}.{layer_map[base]}.{suffix}"] = arr
    elif name == "rope_freqs.weight":
      raise NotImplementedError("GGUF carries rope_freqs (llama-3 rope scaling): not supported")
    else:
      raise ValueError(f"unexpected GGUF tensor {name!r}")
  return sd


def llama_from_gguf(g: GGUFContents) -> tuple[llama.LlamaConfig, StateDict]:
  """Config and Hugging Face state dict of a llama-architecture GGUF (Q/K unpermuted)."""
  m, a = g.metadata, "llama"
  n_head = int(_get(m, a, "attention.head_count"))
  n_kv = int(m.get(f"{a}.attention.head_count_kv", n_head))
  d = int(_get(m, a, "embedding_length"))
  head_dim = int(m.get(f"{a}.rope.dimension_count", d // n_head))
  tokens = m.get("tokenizer.ggml.tokens")
  vocab = int(m.get(f"{a}.vocab_size", len(tokens) if tokens else 0))
  if m.get(f"{a}.rope.scaling.type") not in (None, "none"):
    raise NotImplementedError(f"rope scaling {m[f'{a}.rope.scaling.type']} is not supported")
  cfg = llama.LlamaConfig(
      vocab_size=vocab, hidden_size=d,
      intermediate_size=int(_get(m, a, "feed_forward_length")),
      num_layers=int(_get(m, a, "block_count")), num_heads=n_head, num_kv_heads=n_kv,
      head_dim=head_dim, rope_theta=float(m.get(f"{a}.rope.freq_base", 10000.0)),
      rms_norm_eps=float(_get(m, a, "attention.layer_norm_rms_epsilon")),
      max_position_embeddings=int(m.get(f"{a}.context_length", 2048)),
      tie_word_embeddings="output.weight" not in g.tensors,
      bos_token_id=m.get("tokenizer.ggml.bos_token_id"),
      eos_token_id=m.get("tokenizer.ggml.eos_token_id"))
  sd = _rename(g.tensors, _LLAMA_LAYER)
  for k in list(sd):
    if k.endswith("self_attn.q_proj.weight"):
      sd[k] = unpermute_qk(sd[k], n_head)
    elif k.endswith("self_attn.k_proj.weight"):
      sd[k] = unpermute_qk(sd[k], n_kv)
  return cfg, sd


def gemma3_from_gguf(g: GGUFContents) -> tuple[gemma3.Gemma3Config, StateDict]:
  """Config and Hugging Face state dict of a gemma3 GGUF (norms stored as 1+w undone)."""
  m, a = g.metadata, "gemma3"
  head_dim = int(_get(m, a, "attention.key_length"))
  cfg = gemma3.Gemma3Config(
      vocab_size=g.tensors["token_embd.weight"].shape[0],
      hidden_size=int(_get(m, a, "embedding_length")),
      intermediate_size=int(_get(m, a, "feed_forward_length")),
      num_layers=int(_get(m, a, "block_count")),
      num_heads=int(_get(m, a, "attention.head_count")),
      num_kv_heads=int(_get(m, a, "attention.head_count_kv")), head_dim=head_dim,
      # llama.cpp stores neither of these for gemma3; they are the architecture's constants.
      query_pre_attn_scalar=float(head_dim), sliding_window_pattern=6,
      rope_theta=float(m.get(f"{a}.rope.freq_base", 1e6)), rope_local_theta=10000.0,
      sliding_window=int(_get(m, a, "attention.sliding_window")),
      rms_norm_eps=float(_get(m, a, "attention.layer_norm_rms_epsilon")),
      max_position_embeddings=int(m.get(f"{a}.context_length", 32768)),
      bos_token_id=m.get("tokenizer.ggml.bos_token_id"),
      eos_token_id=m.get("tokenizer.ggml.eos_token_id"))
  sd = _rename(g.tensors, _GEMMA3_LAYER)
  for k in list(sd):
    if k.endswith("norm.weight"):
      sd[k] = sd[k] - 1.0
  return cfg, sd


def load_gguf(path: str | os.PathLike) -> tuple[nnx.Module, Any, GGUFContents]:
  """Loads a GGUF file into an NNX module with float32 (dequantized) parameters.

  Returns:
    ``(model, config, contents)``; ``contents.metadata`` also feeds ``tokenizer.py``.
  """
  g = read_gguf(path)
  if g.architecture == "llama":
    cfg, sd = llama_from_gguf(g)
    return hf_loader.llama_from_state_dict(cfg, sd), cfg, g
  if g.architecture == "gemma3":
    cfg, sd = gemma3_from_gguf(g)
    return hf_loader.gemma3_from_state_dict(cfg, sd), cfg, g
  raise NotImplementedError(f"GGUF architecture {g.architecture!r} is not in the zoo")


def write_llama_gguf(path: str | os.PathLike, cfg: llama.LlamaConfig, sd: StateDict,
                     tokenizer_meta: dict[str, Any] | None = None) -> None:
  """Writes a float32 llama GGUF as llama.cpp's converter would (Q/K permuted).

  Used by the tests to make fixtures; ``tokenizer_meta`` holds ``tokens`` (list[str]),
  ``merges`` (list[str]) and optionally ``pre`` for a byte-level BPE vocabulary.
  """
  import gguf

  w = gguf.GGUFWriter(os.fspath(path), "llama")
  w.add_block_count(cfg.num_layers)
  w.add_context_length(cfg.max_position_embeddings)
  w.add_embedding_length(cfg.hidden_size)
  w.add_feed_forward_length(cfg.intermediate_size)
  w.add_head_count(cfg.num_heads)
  w.add_head_count_kv(cfg.num_kv_heads)
  w.add_rope_dimension_count(cfg.head_dim)
  w.add_rope_freq_base(cfg.rope_theta)
  w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
  w.add_vocab_size(cfg.vocab_size)
  if tokenizer_meta:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tokenizer_meta.get("pre", "default"))
    w.add_token_list(tokenizer_meta["tokens"])
    w.add_token_merges(tokenizer_meta["merges"])
  if cfg.bos_token_id is not None:
    w.add_bos_token_id(cfg.bos_token_id)
  if cfg.eos_token_id is not None:
    w.add_eos_token_id(cfg.eos_token_id)
  inv = {v: k for k, v in _LLAMA_LAYER.items()}
  for name, arr in sd.items():
    arr = np.ascontiguousarray(arr, np.float32)
    if name == "model.embed_tokens.weight":
      gname = "token_embd.weight"
    elif name == "model.norm.weight":
      gname = "output_norm.weight"
    elif name == "lm_head.weight":
      if cfg.tie_word_embeddings:
        continue
      gname = "output.weight"
    else:
      _, _, i, rest = name.split(".", 3)
      base, suffix = rest.rsplit(".", 1)
      if base == "self_attn.q_proj":
        arr = permute_qk(arr, cfg.num_heads)
      elif base == "self_attn.k_proj":
        arr = permute_qk(arr, cfg.num_kv_heads)
      gname = f"blk.{i}.{inv[base]}.{suffix}"
    w.add_tensor(gname, np.ascontiguousarray(arr))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
