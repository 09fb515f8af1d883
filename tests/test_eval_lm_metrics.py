"""Metric functions over logits: hand-checked values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from mxjax.eval import lm_metrics as M


def test_token_nll_and_uniform_perplexity():
  logits = jnp.zeros((5, 8))  # uniform over 8: NLL = ln 8 everywhere
  nll = M.token_nll(logits, jnp.arange(5))
  np.testing.assert_allclose(nll, np.full(5, math.log(8)), rtol=1e-6)
  assert math.exp(float(nll.mean())) == pytest.approx(8.0, rel=1e-5)


def test_kl_is_zero_for_equal_and_matches_hand_value():
  p = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  q = jnp.log(jnp.array([[0.25, 0.5, 0.25]]))
  assert float(M.kl_per_token(p, p)[0]) == pytest.approx(0.0, abs=1e-7)
  want = 0.5 * math.log(2) + 0.25 * math.log(0.5)
  assert float(M.kl_per_token(p, q)[0]) == pytest.approx(want, rel=1e-5)
  assert not bool(M.top1_agreement(p, q)[0]) and bool(M.top1_agreement(p, p + 3.0)[0])


def test_window_plan_non_overlapping_and_strided():
  # Non-overlapping: the first token of a window has no context in it and is not scored;
  # the trailing 2 tokens are dropped.
  assert M.window_plan(10, 4, 4) == [(0, 4, 1), (4, 8, 5)]
  plan = M.window_plan(10, 4, 2)
  assert plan == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
  scored = [t for b, e, f in plan for t in range(f, e)]
  assert scored == list(range(1, 10))  # every target once


def test_chunk_units_sum_and_count():
  u = M.chunk_units(np.arange(10.0), unit_tokens=4)
  np.testing.assert_array_equal(u, [[6, 4], [22, 4], [17, 2]])


def test_continuation_logprob_picks_the_likely_choice():
  v = 6
  ids = jnp.array([1, 2, 3, 4])
  logits = jnp.full((4, v), -10.0)
  logits = logits.at[1, 3].set(10.0).at[2, 4].set(10.0)  # predicts 3 then 4
  good = float(M.continuation_logprob(logits, ids, start=2))
  bad = float(M.continuation_logprob(logits, jnp.array([1, 2, 5, 5]), start=2))
  assert good > -1e-3 and bad < -10
  assert M.mc_correct(np.array([bad, good]), 1) and not M.mc_correct(np.array([good, good]), 1)
  assert float(M.continuation_logprob(logits, ids, 2, length_normalize=True)) == \
      pytest.approx(good / 2, rel=1e-5)


class _CharTok:
  def encode(self, text, add_bos=False):
    return [ord(c) % 251 for c in text]


def test_passkey_trial_layout_and_retrieval():
  filler = "The grass is green. The sky is blue. " * 40
  t = M.passkey_trial(_CharTok(), filler, context=600, depth=0.5, key="4821")
  assert len(t.ids) == 600 and t.ids[t.answer_start:].tolist() == [ord(c) for c in "4821"]
  v = 251
  logits = np.zeros((len(t.ids), v), np.float32)
  logits[np.arange(len(t.ids) - 1), t.ids[1:]] = 5.0  # a perfect next-token predictor
  assert M.passkey_retrieved(jnp.asarray(logits), t)
  logits[t.answer_start + 1, :] = 0.0
  logits[t.answer_start + 1, 7] = 9.0  # third key token wrong
  assert not M.passkey_retrieved(jnp.asarray(logits), t)
  with pytest.raises(ValueError):
    M.passkey_trial(_CharTok(), filler, context=600, depth=1.5, key="1")


def test_cosine_similarity():
  a = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  b = jnp.array([[2.0, 0.0], [-1.0, -1.0]])
  np.testing.assert_allclose(M.cosine_similarity(a, b), [1.0, -1.0], rtol=1e-6)


def test_protocol_validates_and_describes():
  p = M.PerplexityProtocol(corpus="ptb/test", joiner="' '", window=256, stride=256,
                           max_tokens=2048)
  assert "window 256" in p.describe() and "token perplexity" in p.describe()
  with pytest.raises(ValueError):
    M.PerplexityProtocol(corpus="x", joiner="", window=8, stride=9)
  with pytest.raises(ValueError):
    M.PerplexityProtocol(corpus="x", joiner="", window=8, stride=8, unit="byte")
