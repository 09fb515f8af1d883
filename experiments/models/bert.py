"""BERT encoder (all-MiniLM-L6-v2 and kin) in plain Flax NNX, with mean pooling.

Post-norm Transformer encoder as Hugging Face's ``BertModel`` computes it: word +
position + token-type embeddings, LayerNorm, then per layer
``LN(x + attn(x))`` and ``LN(h + out(gelu(intermediate(h))))``. Sentence embeddings are
the attention-masked mean of the last hidden states, L2-normalized (the
sentence-transformers ``Pooling(mean) + Normalize`` pipeline of all-MiniLM-L6-v2).
Module names follow Hugging Face's where a policy would match them (``query``, ``key``,
``value``, ``intermediate``, ``output``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertConfig:
  """Architecture of a BERT encoder (fields as in Hugging Face's ``config.json``)."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  version: int = 1

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError("hidden_size must be a multiple of num_heads")
    if self.hidden_act not in ("gelu", "gelu_new", "relu"):
      raise NotImplementedError(f"hidden_act={self.hidden_act!r}")

  @classmethod
  def tiny(cls, **overrides: Any) -> "BertConfig":
    kw = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
              max_position_embeddings=64)
    kw.update(overrides)
    return cls(**kw)

  def to_hf_dict(self) -> dict[str, Any]:
    return {"architectures": ["BertModel"], "model_type": "bert",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size, "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "position_embedding_type": "absolute"}

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any]) -> "BertConfig":
    if d.get("position_embedding_type", "absolute") != "absolute":
      raise NotImplementedError(f"position_embedding_type={d['position_embedding_type']}")
    return cls(vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
               intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
               num_heads=d["num_attention_heads"],
               max_position_embeddings=d.get("max_position_embeddings", 512),
               type_vocab_size=d.get("type_vocab_size", 2),
               layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
               hidden_act=d.get("hidden_act", "gelu"))


def _act(name: str, x: jax.Array) -> jax.Array:
  if name == "gelu":  # BERT's gelu is the exact erf form
    return jax.nn.gelu(x, approximate=False)
  if name == "gelu_new":
    return jax.nn.gelu(x, approximate=True)
  return jax.nn.relu(x)


def _linear(din, dout, rngs):
  return nnx.Linear(din, dout, param_dtype=jnp.float32,
                    kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


def _ln(d, eps, rngs):
  return nnx.LayerNorm(d, epsilon=eps, param_dtype=jnp.float32, rngs=rngs)


class BertEmbeddings(nnx.Module):
  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    mk = lambda n: nnx.Embed(n, cfg.hidden_size, param_dtype=jnp.float32,
                             embedding_init=init, rngs=rngs)
    self.word_embeddings = mk(cfg.vocab_size)
    self.position_embeddings = mk(cfg.max_position_embeddings)
    self.token_type_embeddings = mk(cfg.type_vocab_size)
    self.LayerNorm = _ln(cfg.hidden_size, cfg.layer_norm_eps, rngs)  # pylint: disable=invalid-name

  def __call__(self, ids, token_type_ids):
    pos = jnp.arange(ids.shape[1])[None]
    x = (self.word_embeddings(ids) + self.position_embeddings(pos)
         + self.token_type_embeddings(token_type_ids))
    return self.LayerNorm(x)


class BertLayer(nnx.Module):
  """Post-norm encoder block with bidirectional attention over unmasked tokens."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.cfg = cfg
    self.query, self.key, self.value = (_linear(d, d, rngs) for _ in range(3))
    self.attn_out = _linear(d, d, rngs)
    self.attn_norm = _ln(d, cfg.layer_norm_eps, rngs)
    self.intermediate = _linear(d, cfg.intermediate_size, rngs)
    self.output = _linear(cfg.intermediate_size, d, rngs)
    self.out_norm = _ln(d, cfg.layer_norm_eps, rngs)

  def __call__(self, x, mask):
    b, t, d = x.shape
    h = self.cfg.num_heads
    split = lambda y: y.reshape(b, t, h, d // h)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    logits = jnp.einsum("bthd,bshd->bhts", q, k) * (d // h) ** -0.5
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    a = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, -1), v).reshape(b, t, d)
    x = self.attn_norm(x + self.attn_out(a))
    return self.out_norm(x + self.output(_act(self.cfg.hidden_act, self.intermediate(x))))


class BertEncoder(nnx.Module):
  """BERT encoder: ids [B, T] -> last hidden states [B, T, d] float32 (no pooler)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embeddings = BertEmbeddings(cfg, rngs)
    self.layers = nnx.List([BertLayer(cfg, rngs) for _ in range(cfg.num_layers)])

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    """Args: input_ids [B, T] int; attention_mask [B, T] (1 = real token); token_type_ids."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids)
    mask = attention_mask.astype(bool)
    for layer in self.layers:
      x = layer(x, mask)
    return x


def mean_pool(hidden: jax.Array, attention_mask: jax.Array, normalize: bool = True) -> jax.Array:
  """Masked mean over tokens: [B, T, d], [B, T] -> [B, d] (L2-normalized if asked)."""
  m = attention_mask.astype(hidden.dtype)[..., None]
  pooled = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  if normalize:
    pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
  return pooled
