"""Llama-style decoder in plain Flax NNX (no mxjax imports).

Covers the Llama family as Hugging Face's ``LlamaForCausalLM`` computes it: RMSNorm,
rotary position embeddings (the ``rotate_half`` convention), grouped-query attention,
a SwiGLU MLP and an optionally tied output head. Module attribute names follow Hugging
Face's (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``,
``down_proj``, ``embed_tokens``, ``lm_head``, ``input_layernorm``,
``post_attention_layernorm``) so a quantization policy can match module paths by regex,
and so checkpoints map one-to-one (see ``hf_loader.py``).

Every linear layer is an ``nnx.Linear`` with ``kernel`` of shape ``(in, out)``; a
Hugging Face ``weight`` of shape ``(out, in)`` is its transpose.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaConfig:
  """Architecture of a Llama-style decoder.

  Attributes:
    vocab_size: number of token ids.
    hidden_size: model width ``d``.
    intermediate_size: SwiGLU hidden width.
    num_layers: decoder blocks.
    num_heads: query heads.
    num_kv_heads: key/value heads (GQA); must divide ``num_heads``.
    head_dim: per-head width; defaults to ``hidden_size // num_heads``.
    rope_theta: rotary base frequency.
    rms_norm_eps: epsilon inside RMSNorm.
    max_position_embeddings: longest context the checkpoint was trained for.
    tie_word_embeddings: output head reuses the embedding matrix.
    bos_token_id: beginning-of-sequence id, or None.
    eos_token_id: end-of-sequence id, or None.
    dtype: compute dtype of activations (parameters stay float32).
    version: serialization version of this config.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = False
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  dtype: str = "float32"
  version: int = 1

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise ValueError("hidden_size must be a multiple of num_heads when head_dim is unset")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

  @classmethod
  def tiny(cls, **overrides: Any) -> "LlamaConfig":
    """A few-thousand-parameter config for unit tests (GQA on, untied head)."""
    kw = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
              num_kv_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
              max_position_embeddings=128, tie_word_embeddings=False, bos_token_id=1,
              eos_token_id=2)
    kw.update(overrides)
    return cls(**kw)

  def to_hf_dict(self) -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields of this architecture."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim, "rope_theta": self.rope_theta,
        "rms_norm_eps": self.rms_norm_eps,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings, "hidden_act": "silu",
        "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
    }

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
    """Reads a Hugging Face llama ``config.json`` (rope scaling is not supported)."""
    rope = dict(d.get("rope_parameters") or {})  # transformers >= 5 nests rope fields here
    scaling = d.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default"
                                        else None)
    if scaling:
      raise NotImplementedError(f"rope scaling {scaling} is not implemented")
    theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
    eos = d.get("eos_token_id")
    return cls(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"],
        num_kv_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
        head_dim=d.get("head_dim"), rope_theta=float(theta),
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=d.get("max_position_embeddings", 2048),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=eos[0] if isinstance(eos, list) else eos)


class RMSNorm(nnx.Module):
  """``y = x / sqrt(mean(x^2) + eps) * weight``, computed in float32."""

  def __init__(self, dim: int, eps: float):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (xf * self.weight[...]).astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables, shape ``positions.shape + (head_dim,)``, float32."""
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  ang = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  ang = jnp.concatenate([ang, ang], axis=-1)
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates ``x`` [B, T, H, D] by position; halves (not interleaved pairs), as HF does."""
  half = x.shape[-1] // 2
  rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return (x * cos[:, :, None, :] + rot * sin[:, :, None, :]).astype(x.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
              scale: float) -> jax.Array:
  """Grouped-query softmax attention.

  Args:
    q: [B, T, H, D] queries.
    k, v: [B, S, Hkv, D] keys and values; ``H`` is a multiple of ``Hkv``.
    mask: [B or 1, T, S] boolean, True where a query may attend.
    scale: logit multiplier (``D ** -0.5`` for Llama).

  Returns:
    [B, T, H, D] in q's dtype; softmax in float32.
  """
  b, t, h, d = q.shape
  hkv = k.shape[2]
  qg = q.reshape(b, t, hkv, h // hkv, d)
  logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


def causal_mask(t: int, window: int | None = None) -> jax.Array:
  """[1, T, T] boolean: key ``s`` visible to query ``t`` iff ``s <= t`` (and ``t - s < window``)."""
  qi = jnp.arange(t)[:, None]
  ki = jnp.arange(t)[None, :]
  m = ki <= qi
  if window is not None:
    m = m & (qi - ki < window)
  return m[None]


def _linear(din: int, dout: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(din, dout, use_bias=False, param_dtype=jnp.float32,
                    kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


class LlamaAttention(nnx.Module):
  """GQA self-attention with rotary embeddings."""

  def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d, hd = cfg.hidden_size, cfg.head_dim
    self.q_proj = _linear(d, cfg.num_heads * hd, rngs)
    self.k_proj = _linear(d, cfg.num_kv_heads * hd, rngs)
    self.v_proj = _linear(d, cfg.num_kv_heads * hd, rngs)
    self.o_proj = _linear(cfg.num_heads * hd, d, rngs)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    c = self.cfg
    q = self.q_proj(x).reshape(b, t, c.num_heads, c.head_dim)
    k = self.k_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    v = self.v_proj(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    o = attention(q, k, v, mask, c.head_dim ** -0.5)
    return self.o_proj(o.reshape(b, t, c.num_heads * c.head_dim))


class LlamaMLP(nnx.Module):
  """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

  def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
    self.gate_proj = _linear(cfg.hidden_size, cfg.intermediate_size, rngs)
    self.up_proj = _linear(cfg.hidden_size, cfg.intermediate_size, rngs)
    self.down_proj = _linear(cfg.intermediate_size, cfg.hidden_size, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nnx.Module):
  """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

  def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.self_attn = LlamaAttention(cfg, rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    self.mlp = LlamaMLP(cfg, rngs)

  def __call__(self, x, cos, sin, mask):
    x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
    return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nnx.Module):
  """Llama causal LM: token ids [B, T] int32 -> logits [B, T, vocab] float32."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=jnp.float32,
                                  embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.layers = nnx.List([LlamaDecoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
    # A tied head has no module of its own: it reads embed_tokens (policies see one matrix).
    self.lm_head = None if cfg.tie_word_embeddings else _linear(cfg.hidden_size, cfg.vocab_size,
                                                                rngs)

  def __call__(self, input_ids: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """Forward pass.

    Args:
      input_ids: [B, T] int token ids.
      positions: [B, T] int positions; defaults to ``arange(T)``.

    Returns:
      [B, T, vocab_size] float32 logits.
    """
    b, t = input_ids.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x = self.embed_tokens(input_ids).astype(self.cfg.dtype)
    cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta)
    mask = causal_mask(t)
    for layer in self.layers:
      x = layer(x, cos, sin, mask)
    x = self.norm(x)
    if self.lm_head is None:
      return self.embed_tokens.attend(x).astype(jnp.float32)
    return self.lm_head(x).astype(jnp.float32)


def greedy_generate(model: nnx.Module, prompt_ids: list[int] | np.ndarray, max_new_tokens: int,
                    eos_token_id: int | None = None) -> list[int]:
  """Greedy decoding without a KV cache (recomputes the prefix each step).

  The token buffer has a fixed length so the jitted forward compiles once; causal
  attention makes the padding after the current position irrelevant.

  Args:
    model: any module mapping [1, T] int32 ids to [1, T, V] logits.
    prompt_ids: the prompt's token ids.
    max_new_tokens: tokens to append.
    eos_token_id: stop early when this id is produced.

  Returns:
    The new token ids (prompt excluded).
  """
  prompt = [int(i) for i in prompt_ids]
  n = len(prompt)
  buf = np.zeros((1, n + max_new_tokens), np.int32)
  buf[0, :n] = prompt
  graphdef, state = nnx.split(model)

  @jax.jit
  def next_token(state, ids, pos):
    logits = nnx.merge(graphdef, state)(ids)
    return jnp.argmax(logits[0, pos - 1])

  out = []
  for step in range(max_new_tokens):
    tok = int(next_token(state, jnp.asarray(buf), n + step))
    out.append(tok)
    buf[0, n + step] = tok
    if eos_token_id is not None and tok == eos_token_id:
      break
  return out
