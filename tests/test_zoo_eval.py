"""The perplexity protocol of experiments.zoo_eval on a tiny model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import zoo_eval
from experiments.data import corpora
from experiments.models import llama


def _manual_nll(model, batch, first_scored):
  """Sum over rows of -log p(ids[t] | ids[:t]) for t >= first_scored, in one forward."""
  lp = np.asarray(jax.nn.log_softmax(model(jnp.asarray(batch)), axis=-1), np.float64)
  return -sum(lp[b, t - 1, batch[b, t]] for b in range(batch.shape[0])
              for t in range(first_scored, batch.shape[1]))


def test_window_nll_scores_all_but_the_first_text_token():
  model = llama.Llama(llama.LlamaConfig.tiny(), rngs=nnx.Rngs(0))
  ids = np.random.default_rng(0).integers(3, 97, 24)
  windows = corpora.token_windows(ids, 8)
  total, count = zoo_eval.window_nll(model, windows, bos=None)
  assert count == 3 * 7
  want = _manual_nll(model, windows, 1)
  np.testing.assert_allclose(total, want, rtol=1e-5)
  # With BOS in front, the same L-1 text tokens are scored, now with BOS as extra context.
  total_b, count_b = zoo_eval.window_nll(model, windows, bos=1)
  assert count_b == count
  want_b = _manual_nll(model, np.concatenate([np.ones((3, 1), np.int32), windows], 1), 2)
  np.testing.assert_allclose(total_b, want_b, rtol=1e-5)
