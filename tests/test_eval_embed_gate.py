"""Embedding cosine similarity gate on a tiny random BERT."""

import pytest


def test_embedding_gate_on_tiny_bert():
  from flax import nnx

  from experiments.models import BertConfig, BertEncoder
  from mxjax.eval.embed_gate import run_embedding_gate

  enc = BertEncoder(BertConfig.tiny(), rngs=nnx.Rngs(0))
  vocab = BertConfig.tiny().vocab_size
  sentences = [f"sentence number {i} about cats" for i in range(6)]
  out = run_embedding_gate(enc, lambda s: [3 + ord(ch) % (vocab - 3) for ch in s], sentences,
                           ["MXFP4 W4A4", "MXFP8"], budget="0.05",
                           n_resamples=100, bucket=16)
  names = [c.name for c, _, _ in out]
  assert names[0] == "MXFP4 W4A4" and "MXFP4 W4A4 [weights only]" in names
  by = {c.name: d for c, d, _ in out}
  # 4-bit moves embeddings further than 8-bit; every cosine is below 1 and above 0.
  assert by["MXFP4 W4A4"].cand < by["MXFP8"].cand < 1.0
  assert by["MXFP4 W4A4"].cand > 0.5
  assert by["MXFP8"].passed is True
  assert by["MXFP4 W4A4"].delta == pytest.approx(1 - by["MXFP4 W4A4"].cand)


def test_kv_knob_is_refused_on_an_encoder():
  from flax import nnx

  from experiments.models import BertConfig, BertEncoder
  from mxjax.eval.embed_gate import run_embedding_gate

  enc = BertEncoder(BertConfig.tiny(), rngs=nnx.Rngs(0))
  with pytest.raises(NotImplementedError, match="KV cache"):
    run_embedding_gate(enc, lambda s: [5, 6, 7], ["a"], ["FP8 KV"], n_resamples=10)
