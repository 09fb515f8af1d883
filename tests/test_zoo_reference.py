"""The zoo's architectures against an independent implementation (Hugging Face transformers).

Tiny random models: transformers builds and saves them, mxjax's loaders read the files,
and logits must agree to a relative error under 1e-4. Skipped, with the reason, when
``torch`` / ``transformers`` are not installed (``pip install torch==2.13.0 transformers
accelerate``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="reference check needs torch==2.13.0 (CPU build)")
transformers = pytest.importorskip("transformers", reason="reference check needs transformers")
pytest.importorskip("safetensors", reason="zoo extra (safetensors) not installed")

import jax.numpy as jnp  # noqa: E402

from experiments.models import bert, gguf_loader, hf_loader, llama  # noqa: E402

RTOL = 1e-4


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _ids(vocab, t=11, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (2, t))


@pytest.mark.parametrize("tied", [False, True])
def test_llama_matches_transformers(tmp_path, tied):
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, rope_theta=5000.0, rms_norm_eps=1e-5,
      max_position_embeddings=64, tie_word_embeddings=tied)
  ref = transformers.LlamaForCausalLM(cfg).eval()
  ref.save_pretrained(tmp_path, safe_serialization=True)
  model, mcfg = hf_loader.load_hf_dir(tmp_path)
  assert mcfg.tie_word_embeddings == tied and mcfg.rope_theta == 5000.0
  ids = _ids(97)
  with torch.no_grad():
    want = ref(torch.tensor(ids)).logits.numpy()
  assert _rel(model(jnp.asarray(ids)), want) < RTOL


def test_gguf_written_with_llamacpp_permutation_reads_the_same_in_transformers(tmp_path):
  """transformers' GGUF reader undoes llama.cpp's Q/K permutation on its own: agreeing
  with it checks that ``permute_qk`` is llama.cpp's permutation, not merely invertible."""
  pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF")
  pytest.importorskip("gguf", reason="zoo extra (gguf) not installed")
  from experiments.models.tokenizer import tiny_byte_level_vocab

  tokens, merges = tiny_byte_level_vocab()
  cfg = llama.LlamaConfig.tiny(vocab_size=len(tokens), bos_token_id=0, eos_token_id=0)
  from flax import nnx

  ours = llama.Llama(cfg, rngs=nnx.Rngs(5))
  path = tmp_path / "tiny.gguf"
  gguf_loader.write_llama_gguf(path, cfg, hf_loader.llama_to_state_dict(ours),
                               {"tokens": tokens, "merges": merges})
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
  ids = _ids(len(tokens))
  with torch.no_grad():
    want = ref(torch.tensor(ids)).logits.numpy()
  assert _rel(ours(jnp.asarray(ids)), want) < RTOL


def test_gemma3_matches_transformers(tmp_path):
  torch.manual_seed(0)
  cfg = transformers.Gemma3TextConfig(
      vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
      num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
      sliding_window=4, layer_types=["sliding_attention", "sliding_attention",
                                     "full_attention"],
      max_position_embeddings=64, rms_norm_eps=1e-6)
  ref = transformers.Gemma3ForCausalLM(cfg).eval()
  with torch.no_grad():  # random norm weights, so the 1+w convention matters
    for name, p in ref.named_parameters():
      if "norm" in name:
        p.normal_(0.0, 0.5)
  ref.save_pretrained(tmp_path, safe_serialization=True)
  model, mcfg = hf_loader.load_hf_dir(tmp_path)
  assert [l.sliding for l in model.layers] == [True, True, False]
  ids = _ids(101, t=13)  # longer than the window, so sliding layers differ from global
  with torch.no_grad():
    want = ref(torch.tensor(ids)).logits.numpy()
  assert _rel(model(jnp.asarray(ids)), want) < RTOL


def test_bert_matches_transformers(tmp_path):
  torch.manual_seed(0)
  cfg = transformers.BertConfig(
      vocab_size=99, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=32)
  ref = transformers.BertModel(cfg).eval()
  ref.save_pretrained(tmp_path, safe_serialization=True)
  model, _ = hf_loader.load_hf_dir(tmp_path)
  ids = _ids(99, t=9)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  with torch.no_grad():
    want = ref(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
  got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
  keep = mask.astype(bool)  # padded positions are undefined in both
  assert _rel(got[keep], want[keep]) < RTOL
  pooled = bert.mean_pool(jnp.asarray(got), jnp.asarray(mask))
  ref_pooled = (want * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  ref_pooled /= np.linalg.norm(ref_pooled, axis=-1, keepdims=True)
  assert _rel(pooled, ref_pooled) < RTOL


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_exported_hf_dir_reads_the_same_in_transformers(tmp_path, arch):
  """``export_hf_dir`` writes configs transformers understands (rope, windows, ties)."""
  from flax import nnx

  from experiments.models import gemma3

  if arch == "llama":
    cfg = llama.LlamaConfig.tiny(rope_theta=5000.0, tie_word_embeddings=True)
    ours = llama.Llama(cfg, rngs=nnx.Rngs(2))
  else:
    cfg = gemma3.Gemma3Config.tiny()
    ours = gemma3.Gemma3(cfg, rngs=nnx.Rngs(2))
    for layer in ours.layers:
      layer.post_attention_layernorm.weight.set_value(jnp.full((cfg.hidden_size,), -0.4))
  hf_loader.export_hf_dir(tmp_path, ours, cfg)
  ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
  ids = _ids(cfg.vocab_size, t=10)
  with torch.no_grad():
    want = ref(torch.tensor(ids)).logits.numpy()
  assert _rel(ours(jnp.asarray(ids)), want) < RTOL
