"""Llama-style decoder in plain Flax Linen (no mxjax imports): the twin of ``llama.py``.

Same architecture, config dataclass and numerics as the NNX model in ``llama.py`` (RMSNorm,
rotary embeddings in the ``rotate_half`` convention, grouped-query attention, SwiGLU, optional
tied head); the pure functions (rope tables, attention, mask) are shared with it. Module names
follow Hugging Face's, with Linen's list naming for the blocks: ``layers_0/self_attn/q_proj``.
``params_from_nnx`` converts the NNX model's state, so both give the same logits from the same
weights.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.models.llama import (
    LlamaConfig,
    apply_rope,
    attention,
    causal_mask,
    rope_tables,
)

__all__ = ["LlamaConfig", "LlamaLinen", "params_from_nnx"]


class RMSNorm(nn.Module):
  """``y = x / sqrt(mean(x^2) + eps) * weight``, computed in float32."""

  dim: int
  eps: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.ones, (self.dim,), jnp.float32)
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (xf * weight).astype(x.dtype)


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, use_bias=False, param_dtype=jnp.float32,
                  kernel_init=nn.initializers.normal(0.02), name=name)


class LlamaAttention(nn.Module):
  """GQA self-attention with rotary embeddings."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask):
    b, t, _ = x.shape
    c = self.cfg
    q = _dense(c.num_heads * c.head_dim, "q_proj")(x).reshape(b, t, c.num_heads, c.head_dim)
    k = _dense(c.num_kv_heads * c.head_dim, "k_proj")(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    v = _dense(c.num_kv_heads * c.head_dim, "v_proj")(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    o = attention(q, k, v, mask, c.head_dim ** -0.5)
    return _dense(c.hidden_size, "o_proj")(o.reshape(b, t, c.num_heads * c.head_dim))


class LlamaMLP(nn.Module):
  """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x):
    c = self.cfg
    h = jax.nn.silu(_dense(c.intermediate_size, "gate_proj")(x))
    h = h * _dense(c.intermediate_size, "up_proj")(x)
    return _dense(c.hidden_size, "down_proj")(h)


class LlamaDecoderLayer(nn.Module):
  """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask):
    c = self.cfg
    h = RMSNorm(c.hidden_size, c.rms_norm_eps, name="input_layernorm")(x)
    x = x + LlamaAttention(c, name="self_attn")(h, cos, sin, mask)
    h = RMSNorm(c.hidden_size, c.rms_norm_eps, name="post_attention_layernorm")(x)
    return x + LlamaMLP(c, name="mlp")(h)


class LlamaLinen(nn.Module):
  """Llama causal LM: token ids [B, T] int32 -> logits [B, T, vocab] float32."""

  cfg: LlamaConfig

  def setup(self):
    c = self.cfg
    self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size, param_dtype=jnp.float32,
                                 embedding_init=nn.initializers.normal(0.02))
    self.layers = [LlamaDecoderLayer(c) for _ in range(c.num_layers)]  # named layers_0, ...
    self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
    # A tied head has no module of its own: it reads embed_tokens.
    self.lm_head = None if c.tie_word_embeddings else _dense(c.vocab_size, "lm_head")

  def __call__(self, input_ids: jax.Array, positions: jax.Array | None = None) -> jax.Array:
    """[B, T] int ids (and optional [B, T] positions) -> [B, T, vocab] float32 logits."""
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


def params_from_nnx(state: Any) -> dict[str, Any]:
  """Linen ``{"params": ...}`` from the NNX model's ``nnx.state(model)`` (or its pure dict).

  Names map one-to-one except the blocks: NNX ``layers/0`` is Linen ``layers_0``.
  """
  if not isinstance(state, dict):
    from flax import nnx  # pylint: disable=import-outside-toplevel

    state = nnx.to_pure_dict(state)
  pure = state

  def conv(node):
    if not isinstance(node, dict):
      return jnp.asarray(node)
    out = {}
    for k, v in node.items():
      if k == "layers":
        out.update({f"layers_{i}": conv(layer) for i, layer in v.items()})
      else:
        out[str(k)] = conv(v)
    return out

  return {"params": conv(dict(pure))}
