"""Gemma 3 text decoder in plain Flax NNX (no mxjax imports).

Follows Hugging Face's ``Gemma3ForCausalLM``: embeddings scaled by ``sqrt(d)``, RMSNorm
computing ``x * (1 + w)``, per-head RMSNorm on queries and keys, four norms a block
(pre/post attention, pre/post MLP), GELU-tanh gated MLP, grouped-query attention with
logit scale ``query_pre_attn_scalar ** -0.5``, and a 5:1 pattern of sliding-window
(local, rope base 10k) and global (rope base 1M) layers. The head is tied to the
embedding. Module names match Hugging Face's for policy regexes and checkpoint mapping.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.models.llama import apply_rope, attention, causal_mask, rope_tables


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gemma3Config:
  """Architecture of a Gemma 3 text decoder (fields as in Hugging Face's config)."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  query_pre_attn_scalar: float
  sliding_window: int
  sliding_window_pattern: int = 6
  rope_theta: float = 1_000_000.0
  rope_local_theta: float = 10_000.0
  rms_norm_eps: float = 1e-6
  max_position_embeddings: int = 32768
  bos_token_id: int | None = 2
  eos_token_id: int | None = 1
  dtype: str = "float32"
  version: int = 1

  def is_sliding(self, i: int) -> bool:
    """Layer ``i`` is local (sliding window) unless it is every ``pattern``-th layer."""
    return (i + 1) % self.sliding_window_pattern != 0

  @classmethod
  def tiny(cls, **overrides: Any) -> "Gemma3Config":
    """A small config for unit tests; window 4 so sliding layers differ from global ones."""
    kw = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4,
              num_kv_heads=2, head_dim=16, query_pre_attn_scalar=16.0, sliding_window=4,
              sliding_window_pattern=3, max_position_embeddings=64)
    kw.update(overrides)
    return cls(**kw)

  def to_hf_dict(self) -> dict[str, Any]:
    types = ["sliding_attention" if self.is_sliding(i) else "full_attention"
             for i in range(self.num_layers)]
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        # transformers validates this field as an int (it is 256 for every Gemma 3 size).
        "query_pre_attn_scalar": (int(self.query_pre_attn_scalar)
                                  if float(self.query_pre_attn_scalar).is_integer()
                                  else self.query_pre_attn_scalar),
        "sliding_window": self.sliding_window, "sliding_window_pattern":
        self.sliding_window_pattern, "layer_types": types, "rope_theta": self.rope_theta,
        "rope_local_base_freq": self.rope_local_theta, "rms_norm_eps": self.rms_norm_eps,
        "max_position_embeddings": self.max_position_embeddings, "rope_scaling": None,
        "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": None,
        "attn_logit_softcapping": None, "tie_word_embeddings": True,
        "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
        "pad_token_id": 0, "torch_dtype": "float32",
    }

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any]) -> "Gemma3Config":
    d = d.get("text_config", d)
    rope = d.get("rope_parameters") or {}  # transformers >= 5: one entry per layer type
    full = rope.get("full_attention", {"rope_theta": d.get("rope_theta", 1e6)})
    local = rope.get("sliding_attention", {"rope_theta": d.get("rope_local_base_freq", 1e4)})
    scaling = d.get("rope_scaling") or next(
        (r for r in (full, local) if r.get("rope_type", "default") != "default"), None)
    if scaling:
      raise NotImplementedError(f"rope scaling {scaling} is not implemented")
    for k in ("final_logit_softcapping", "attn_logit_softcapping"):
      if d.get(k):
        raise NotImplementedError(f"{k}={d[k]} is not implemented")
    pattern = d.get("sliding_window_pattern", 6)
    types = d.get("layer_types")
    if types:  # newer configs list layer types; the period is where the first global sits
      globs = [i for i, t in enumerate(types) if t == "full_attention"]
      pattern = globs[0] + 1 if globs else len(types) + 1
      expect = [(i + 1) % pattern != 0 for i in range(len(types))]
      if [t == "sliding_attention" for t in types] != expect:
        raise NotImplementedError(f"layer_types {types} is not a 1-in-{pattern} global pattern")
    eos = d.get("eos_token_id", 1)
    return cls(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"], num_kv_heads=d["num_key_value_heads"],
        head_dim=d["head_dim"], query_pre_attn_scalar=float(d["query_pre_attn_scalar"]),
        sliding_window=d["sliding_window"], sliding_window_pattern=pattern,
        rope_theta=float(full["rope_theta"]), rope_local_theta=float(local["rope_theta"]),
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=d.get("max_position_embeddings", 32768),
        bos_token_id=d.get("bos_token_id", 2),
        eos_token_id=eos[0] if isinstance(eos, list) else eos)


class GemmaRMSNorm(nnx.Module):
  """``y = x / sqrt(mean(x^2) + eps) * (1 + weight)`` in float32 (weight starts at 0)."""

  def __init__(self, dim: int, eps: float):
    self.weight = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (xf * (1.0 + self.weight[...])).astype(x.dtype)


def _linear(din: int, dout: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(din, dout, use_bias=False, param_dtype=jnp.float32,
                    kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


class Gemma3Attention(nnx.Module):
  """GQA attention with q/k RMSNorm; local layers see ``sliding_window`` keys."""

  def __init__(self, cfg: Gemma3Config, sliding: bool, rngs: nnx.Rngs):
    self.cfg = cfg
    self.sliding = sliding
    d, hd = cfg.hidden_size, cfg.head_dim
    self.q_proj = _linear(d, cfg.num_heads * hd, rngs)
    self.k_proj = _linear(d, cfg.num_kv_heads * hd, rngs)
    self.v_proj = _linear(d, cfg.num_kv_heads * hd, rngs)
    self.o_proj = _linear(cfg.num_heads * hd, d, rngs)
    self.q_norm = GemmaRMSNorm(hd, cfg.rms_norm_eps)
    self.k_norm = GemmaRMSNorm(hd, cfg.rms_norm_eps)

  def __call__(self, x, cos, sin, mask):
    b, t, _ = x.shape
    c = self.cfg
    q = self.q_norm(self.q_proj(x).reshape(b, t, c.num_heads, c.head_dim))
    k = self.k_norm(self.k_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim))
    v = self.v_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    o = attention(q, k, v, mask, c.query_pre_attn_scalar ** -0.5)
    return self.o_proj(o.reshape(b, t, c.num_heads * c.head_dim))


class Gemma3MLP(nnx.Module):
  """``down(gelu_tanh(gate(x)) * up(x))``."""

  def __init__(self, cfg: Gemma3Config, rngs: nnx.Rngs):
    self.gate_proj = _linear(cfg.hidden_size, cfg.intermediate_size, rngs)
    self.up_proj = _linear(cfg.hidden_size, cfg.intermediate_size, rngs)
    self.down_proj = _linear(cfg.intermediate_size, cfg.hidden_size, rngs)

  def __call__(self, x):
    return self.down_proj(jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x))


class Gemma3DecoderLayer(nnx.Module):
  """Sandwich-norm block: norms before and after both attention and MLP."""

  def __init__(self, cfg: Gemma3Config, i: int, rngs: nnx.Rngs):
    self.sliding = cfg.is_sliding(i)
    self.input_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.self_attn = Gemma3Attention(cfg, self.sliding, rngs)
    self.post_attention_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.pre_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.mlp = Gemma3MLP(cfg, rngs)
    self.post_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

  def __call__(self, x, cos, sin, mask):
    x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask))
    return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3(nnx.Module):
  """Gemma 3 causal LM: token ids [B, T] int32 -> logits [B, T, vocab] float32."""

  def __init__(self, cfg: Gemma3Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=jnp.float32,
                                  embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.layers = nnx.List([Gemma3DecoderLayer(cfg, i, rngs) for i in range(cfg.num_layers)])
    self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

  def __call__(self, input_ids: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """Forward pass: [B, T] ids (and optional [B, T] positions) -> [B, T, V] float32 logits."""
    b, t = input_ids.shape
    c = self.cfg
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    dt = jnp.dtype(c.dtype)
    # HF rounds the sqrt(d) multiplier to the compute dtype before scaling.
    x = self.embed_tokens(input_ids).astype(dt) * jnp.asarray(c.hidden_size ** 0.5, dt)
    glob = rope_tables(positions, c.head_dim, c.rope_theta)
    loc = rope_tables(positions, c.head_dim, c.rope_local_theta)
    full_mask, local_mask = causal_mask(t), causal_mask(t, c.sliding_window)
    for layer in self.layers:
      cos, sin = loc if layer.sliding else glob
      x = layer(x, cos, sin, local_mask if layer.sliding else full_mask)
    return self.embed_tokens.attend(self.norm(x)).astype(jnp.float32)
