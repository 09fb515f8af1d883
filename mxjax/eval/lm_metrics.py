"""Metric functions over logits and embeddings, and the protocols that make them reproducible.

Everything here is pure: logits in, per-token or per-item values out. The gate aggregates
them with `gate_core` (units, bootstrap, budgets).

- Perplexity: exp(sum NLL / N), N the scored tokens (token perplexity) or the words of the
  scored text (word perplexity, comparable across tokenizers). The protocol (corpus, window,
  stride, joiner, unit, dtype, BOS) is a `PerplexityProtocol` and is written into every report.
- KL(P_ref || P_cand) per token, in nats, from the two models' logits at the same positions.
- Top-1 agreement: argmax of the candidate equals argmax of the reference.
- Multiple choice by log-likelihood: the choice whose continuation tokens have the highest
  summed log-probability given the question (optionally per token: length-normalized).
- Passkey retrieval: a number hidden at a depth of a long filler text (Paul Graham's essays);
  retrieved iff every answer token is the argmax under teacher forcing, which is exactly when
  greedy decoding would produce the key.
- Embedding cosine similarity between the reference's and the candidate's sentence vectors.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

VERSION = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerplexityProtocol:
  """How a perplexity was measured.

  Attributes:
    corpus: corpus name and split ("ptb/test").
    joiner: how lines or documents were joined into one stream (a Python repr, "' '").
    window: tokens per forward pass (context length).
    stride: tokens the window advances; == window is non-overlapping; smaller slides and scores
      only the new tokens of each window (every scored token then sees >= window - stride
      tokens of context).
    unit: "token" (per scored token) or "word" (per whitespace word of the scored text).
    dtype: dtype the logits and log-softmax are computed in.
    bos: a BOS token is put in front of each window (not scored).
    max_tokens: the stream was cut to this many tokens (None: whole corpus).
    version: of this dataclass.
  """

  corpus: str
  joiner: str
  window: int
  stride: int
  unit: str = "token"
  dtype: str = "float32"
  bos: bool = False
  max_tokens: int | None = None
  version: int = VERSION

  def __post_init__(self):
    if self.window < 2 or not 1 <= self.stride <= self.window:
      raise ValueError(f"need window >= 2 and 1 <= stride <= window, got {self.window}, "
                       f"{self.stride}")
    if self.unit not in ("token", "word"):
      raise ValueError(f"unit must be 'token' or 'word', got {self.unit!r}")

  def describe(self) -> str:
    cut = "whole corpus" if self.max_tokens is None else f"first {self.max_tokens} tokens"
    return (f"{self.corpus}: joined by {self.joiner}, {cut}, window {self.window}, stride "
            f"{self.stride}{', BOS per window' if self.bos else ''}, {self.unit} perplexity, "
            f"{self.dtype} logits")


def window_plan(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
  """Windows over a stream of `n_tokens`: (begin, end, first scored target index).

  Targets are stream positions >= 1 (position 0 has no context). A window scores the targets
  no earlier window scored (Hugging Face's strided perplexity); a trailing window shorter than
  `window` is kept when stride < window and dropped when the windows do not overlap (so that
  every non-overlapping window has the same length and compiles once).
  """
  if n_tokens < 2:
    raise ValueError("need at least two tokens")
  out, prev_end = [], 0
  for begin in range(0, n_tokens - 1, stride):
    end = min(begin + window, n_tokens)
    if end - begin < window and stride == window and out:
      break
    first = max(prev_end, begin + 1)
    if first < end:
      out.append((begin, end, first))
    prev_end = end
    if end == n_tokens:
      break
  return out


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(target) per position.

  Args:
    logits: [..., T, V], any float dtype (computed in float32).
    targets: [..., T] int ids.

  Returns:
    [..., T] float32 nats.
  """
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]


def kl_per_token(ref_logits: jax.Array, cand_logits: jax.Array) -> jax.Array:
  """KL(P_ref || P_cand) = sum_v p_ref (log p_ref - log p_cand), nats, [..., T, V] -> [..., T]."""
  lr = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
  lc = jax.nn.log_softmax(cand_logits.astype(jnp.float32), axis=-1)
  return jnp.maximum(jnp.sum(jnp.exp(lr) * (lr - lc), axis=-1), 0.0)


def top1_agreement(ref_logits: jax.Array, cand_logits: jax.Array) -> jax.Array:
  """argmax(cand) == argmax(ref) per position, [..., T, V] -> [..., T] bool."""
  return jnp.argmax(ref_logits, axis=-1) == jnp.argmax(cand_logits, axis=-1)


def chunk_units(values: np.ndarray, counts: np.ndarray | None = None, unit_tokens: int = 32
                ) -> np.ndarray:
  """Per-token values -> [n_units, 2] (sum, count) over consecutive chunks of `unit_tokens`.

  The gate resamples these chunks (a block bootstrap: tokens inside a window are correlated,
  chunks of a few dozen much less so).
  """
  v = np.asarray(values, np.float64).ravel()
  c = np.ones_like(v) if counts is None else np.asarray(counts, np.float64).ravel()
  n = -(-v.size // unit_tokens)
  sums = np.add.reduceat(v, np.arange(0, v.size, unit_tokens)) if v.size else np.zeros(0)
  cnts = np.add.reduceat(c, np.arange(0, v.size, unit_tokens)) if v.size else np.zeros(0)
  return np.stack([sums[:n], cnts[:n]], axis=1)


def word_count(text: str) -> int:
  """Whitespace-separated words (the denominator of word perplexity)."""
  return len(text.split())


def continuation_logprob(logits: jax.Array, ids: jax.Array, start: int,
                         length_normalize: bool = False) -> jax.Array:
  """Summed (or mean) log p of ids[start:] given ids[:start].

  Args:
    logits: [T, V] logits of the forward pass over ids (position t predicts ids[t + 1]).
    ids: [T] token ids: question then choice.
    start: index of the first choice token (>= 1).
    length_normalize: divide by the number of choice tokens.
  """
  nll = token_nll(logits[:-1], ids[1:])
  mask = jnp.arange(ids.shape[0] - 1) >= start - 1
  total = -jnp.sum(jnp.where(mask, nll, 0.0))
  return total / jnp.maximum(jnp.sum(mask), 1) if length_normalize else total


def mc_correct(choice_scores: np.ndarray, answer: int) -> bool:
  """The highest-scored choice is the answer (ties: the first, so a tie is never a win for a
  later choice by accident)."""
  return int(np.argmax(np.asarray(choice_scores))) == int(answer)


PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = " What is the pass key? The pass key is "


@dataclasses.dataclass(frozen=True, kw_only=True)
class PasskeyTrial:
  """One passkey trial: ids = filler with the needle at `depth`, then the question, then the
  key's tokens; `answer_start` indexes the first key token."""

  ids: np.ndarray
  answer_start: int
  key: str
  depth: float
  context: int


def passkey_trial(tokenizer, filler: str, *, context: int, depth: float, key: str
                  ) -> PasskeyTrial:
  """Builds a trial of about `context` tokens (filler cut to fit, needle at `depth`).

  Args:
    tokenizer: has `encode(text, add_bos=...)` -> list[int].
    filler: long text (Paul Graham's essays joined).
    context: target total length in tokens.
    depth: where the needle goes, as a fraction of the filler (0 = start, 1 = end).
    key: the digits to retrieve.
  """
  if not 0 <= depth <= 1:
    raise ValueError("depth must be in [0, 1]")
  needle = tokenizer.encode(" " + PASSKEY_NEEDLE.format(key=key) + " ", add_bos=False)
  question = tokenizer.encode(PASSKEY_QUESTION, add_bos=False)
  answer = tokenizer.encode(key, add_bos=False)
  budget = context - len(needle) - len(question) - len(answer)
  if budget < 16:
    raise ValueError(f"context {context} is too short for a passkey trial")
  # Tokenize only what is needed (a few characters a token; all of it if that falls short).
  hay = tokenizer.encode(filler[: 12 * budget], add_bos=False)
  if len(hay) < budget:
    hay = tokenizer.encode(filler, add_bos=False)
  if len(hay) < budget:
    raise ValueError(f"filler has {len(hay)} tokens, {budget} needed")
  hay = hay[:budget]
  at = int(round(depth * budget))
  ids = np.asarray(hay[:at] + needle + hay[at:] + question + answer, np.int32)
  return PasskeyTrial(ids=ids, answer_start=len(ids) - len(answer), key=key, depth=depth,
                      context=context)


def passkey_retrieved(logits: jax.Array, trial: PasskeyTrial) -> bool:
  """Every key token is the argmax at its position (teacher forcing == greedy decoding here)."""
  pred = np.asarray(jnp.argmax(logits[trial.answer_start - 1:-1], axis=-1))
  return bool(np.array_equal(pred, trial.ids[trial.answer_start:]))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine of [N, D] embeddings -> [N] (float32)."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  num = jnp.sum(a * b, axis=-1)
  den = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return num / jnp.maximum(den, 1e-30)
