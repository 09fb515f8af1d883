"""GGUF loader and GGUF-vocabulary tokenizers on fixtures the tests write."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("gguf", reason="zoo extra (gguf) not installed")
pytest.importorskip("tokenizers", reason="zoo extra (tokenizers) not installed")

from experiments.models import gguf_loader, hf_loader, llama, tokenizer  # noqa: E402


def _byte_level_vocab():
  return tokenizer.tiny_byte_level_vocab()


def test_permutation_inverts_and_is_not_identity():
  w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  p = gguf_loader.permute_qk(w, n_head=2)
  assert not np.array_equal(p, w)
  np.testing.assert_array_equal(gguf_loader.unpermute_qk(p, 2), w)
  # Per head of 4 rows [a0 a1 b0 b1] (halves) -> [a0 b0 a1 b1] (interleaved pairs).
  np.testing.assert_array_equal(p[:4, 0], w[[0, 2, 1, 3], 0])


@pytest.mark.parametrize("tied", [False, True])
def test_llama_gguf_roundtrip(tmp_path, tied):
  cfg = llama.LlamaConfig.tiny(tie_word_embeddings=tied)
  model = llama.Llama(cfg, rngs=nnx.Rngs(3))
  sd = hf_loader.llama_to_state_dict(model)
  path = tmp_path / "tiny.gguf"
  gguf_loader.write_llama_gguf(path, cfg, sd)
  # The file holds llama.cpp's permuted Q rows, not Hugging Face's.
  raw = gguf_loader.read_gguf(path)
  assert raw.architecture == "llama"
  assert not np.array_equal(raw.tensors["blk.0.attn_q.weight"],
                            sd["model.layers.0.self_attn.q_proj.weight"])
  loaded, cfg2, _ = gguf_loader.load_gguf(path)
  assert cfg2.num_kv_heads == cfg.num_kv_heads and cfg2.tie_word_embeddings == tied
  ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 9)), jnp.int32)
  np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(loaded(ids)))


def test_corrupt_gguf_has_clear_error(tmp_path):
  bad = tmp_path / "bad.gguf"
  bad.write_bytes(b"GGUF" + b"\x00" * 20)
  with pytest.raises(ValueError, match="not a readable GGUF"):
    gguf_loader.read_gguf(bad)


@pytest.mark.parametrize("pre", ["default", "smollm"])
def test_byte_level_tokenizer_from_gguf(tmp_path, pre):
  tokens, merges = _byte_level_vocab()
  cfg = llama.LlamaConfig.tiny(vocab_size=len(tokens), bos_token_id=0, eos_token_id=0)
  model = llama.Llama(cfg, rngs=nnx.Rngs(0))
  path = tmp_path / "tok.gguf"
  gguf_loader.write_llama_gguf(path, cfg, hf_loader.llama_to_state_dict(model),
                               {"tokens": tokens, "merges": merges, "pre": pre})
  tok = tokenizer.tokenizer_from_gguf(path)
  vocab = {t: i for i, t in enumerate(tokens)}
  ids = tok.encode("hello hello 12")
  assert ids[:2] == [vocab["hello"], vocab["Ġhello"]]
  # "smollm" splits digits one by one before BPE, so the "12" merge never applies.
  assert ids[-1] == (vocab["2"] if pre == "smollm" else vocab["12"])
  text = "hello wörld, naïve 12345!"
  assert tok.decode(tok.encode(text)) == text


def test_unknown_pre_tokenizer_raises():
  tokens, merges = _byte_level_vocab()
  meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.merges": merges, "tokenizer.ggml.pre": "qwen2"}
  with pytest.raises(NotImplementedError, match="qwen2"):
    tokenizer.tokenizer_from_gguf_metadata(meta)


def test_sentencepiece_bpe_tokenizer_from_scores():
  # Gemma-style vocabulary: specials, byte fallback pieces, pieces with scores.
  pieces = [("<pad>", 0.0, 3), ("<eos>", 0.0, 3), ("<bos>", 0.0, 3), ("<unk>", 0.0, 2)]
  pieces += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
  words = ["\u2581", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "hell", "hello",
           "\u2581hello", "\u2581w", "or", "\u2581wor", "ld", "\u2581world"]
  # SentencePiece BPE scores: later (rarer) merges score lower.
  pieces += [(w, -float(i), 1) for i, w in enumerate(words)]
  pieces += [("<start_of_turn>", 0.0, 4)]
  meta = {"tokenizer.ggml.model": "llama",
          "tokenizer.ggml.tokens": [p[0] for p in pieces],
          "tokenizer.ggml.scores": [p[1] for p in pieces],
          "tokenizer.ggml.token_type": [p[2] for p in pieces],
          "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
          "tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.add_bos_token": True,
          "tokenizer.ggml.add_space_prefix": False}
  tok = tokenizer.tokenizer_from_gguf_metadata(meta)
  vocab = {p[0]: i for i, p in enumerate(pieces)}
  assert tok.encode("hello world") == [2, vocab["hello"], vocab["\u2581world"]]
  assert tok.encode("hello", add_bos=False) == [vocab["hello"]]
  # Characters outside the vocabulary fall back to their UTF-8 bytes.
  assert tok.encode("é", add_bos=False) == [vocab["<0xC3>"], vocab["<0xA9>"]]
  assert tok.encode("<start_of_turn>hello", add_bos=False) == [vocab["<start_of_turn>"],
                                                              vocab["hello"]]
  assert tok.decode(tok.encode("hello world é", add_bos=False)) == "hello world é"
