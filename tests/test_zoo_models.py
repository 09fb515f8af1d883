"""Zoo architectures and loaders on tiny random models the tests make themselves."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.models import bert, gemma3, hf_loader, llama


def _need_safetensors():
  pytest.importorskip("safetensors", reason="zoo extra (safetensors) not installed")


def _tiny_llama(**kw) -> llama.Llama:
  return llama.Llama(llama.LlamaConfig.tiny(**kw), rngs=nnx.Rngs(0))


def _ids(vocab: int, t: int = 12, b: int = 2, seed: int = 0) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, (b, t)), jnp.int32)


def test_public_names_import():
  import experiments.models as m

  for name in m.__all__:
    assert getattr(m, name) is not None


def test_llama_shapes_and_causality():
  model = _tiny_llama()
  ids = _ids(97)
  out = model(ids)
  assert out.shape == (2, 12, 97) and out.dtype == jnp.float32
  # Changing the last token must not change any earlier position's logits.
  ids2 = ids.at[:, -1].set((ids[:, -1] + 1) % 97)
  out2 = model(ids2)
  np.testing.assert_allclose(out[:, :-1], out2[:, :-1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out[:, -1], out2[:, -1])


def test_rope_is_relative():
  # Shifting every position by a constant leaves attention (and logits) unchanged.
  model = _tiny_llama()
  ids = _ids(97, b=1)
  pos = jnp.arange(12)[None]
  np.testing.assert_allclose(model(ids, pos), model(ids, pos + 17), rtol=1e-4, atol=1e-4)


def test_gqa_equals_repeated_kv_heads():
  # A GQA model equals the MHA model whose K/V heads are the GQA heads repeated.
  cfg = llama.LlamaConfig.tiny(num_kv_heads=2)
  gqa = llama.Llama(cfg, rngs=nnx.Rngs(1))
  sd = hf_loader.llama_to_state_dict(gqa)
  hd, rep = cfg.head_dim, cfg.num_heads // cfg.num_kv_heads
  for k in list(sd):
    if k.endswith(("k_proj.weight", "v_proj.weight")):
      w = sd[k].reshape(cfg.num_kv_heads, hd, -1)
      sd[k] = np.repeat(w, rep, axis=0).reshape(cfg.num_heads * hd, -1)
  mha = hf_loader.llama_from_state_dict(llama.LlamaConfig.tiny(num_kv_heads=4), sd)
  ids = _ids(97)
  np.testing.assert_allclose(gqa(ids), mha(ids), rtol=1e-5, atol=1e-5)


def test_greedy_generate_matches_full_forward_argmax():
  model = _tiny_llama(tie_word_embeddings=True)
  prompt = [5, 7, 11]
  out = llama.greedy_generate(model, prompt, 6)
  assert len(out) == 6
  # Causal model: greedy output is a fixed point of teacher forcing on prompt + output.
  logits = model(jnp.asarray([prompt + out]))[0]
  assert [int(t) for t in jnp.argmax(logits[2:-1], axis=-1)] == out
  # And an EOS stops generation right after it is produced.
  eos = out[-1]
  assert llama.greedy_generate(model, prompt, 6, eos_token_id=eos) == out[:out.index(eos) + 1]


def test_tied_head_has_no_lm_head_module():
  model = _tiny_llama(tie_word_embeddings=True)
  assert model.lm_head is None
  paths = {"/".join(map(str, p)) for p, _ in nnx.iter_graph(model)}
  assert any(p.endswith("self_attn/q_proj") for p in paths)
  assert any(p.endswith("mlp/down_proj") for p in paths)


@pytest.mark.parametrize("tied", [False, True])
def test_llama_hf_dir_roundtrip(tmp_path, tied):
  _need_safetensors()
  model = _tiny_llama(tie_word_embeddings=tied)
  cfg = model.cfg
  hf_loader.save_hf_dir(tmp_path, cfg.to_hf_dict(), hf_loader.llama_to_state_dict(model))
  loaded, cfg2 = hf_loader.load_hf_dir(tmp_path)
  assert cfg2 == cfg
  ids = _ids(97)
  np.testing.assert_array_equal(np.asarray(model(ids)), np.asarray(loaded(ids)))


def test_hf_loader_reports_shape_and_missing_tensors(tmp_path):
  model = _tiny_llama()
  sd = hf_loader.llama_to_state_dict(model)
  bad = dict(sd)
  bad["model.norm.weight"] = np.ones(5, np.float32)
  with pytest.raises(ValueError, match="model.norm.weight"):
    hf_loader.llama_from_state_dict(model.cfg, bad)
  missing = {k: v for k, v in sd.items() if "layers.1.mlp.up_proj" not in k}
  with pytest.raises(KeyError, match="layers.1.mlp.up_proj"):
    hf_loader.llama_from_state_dict(model.cfg, missing)
  extra = dict(sd, **{"model.layers.0.self_attn.q_proj.bias": np.zeros(32, np.float32)})
  with pytest.raises(ValueError, match="not mapped"):
    hf_loader.llama_from_state_dict(model.cfg, extra)


def test_hf_dir_never_reads_pickles(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(llama.LlamaConfig.tiny().to_hf_dict()))
  (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(FileNotFoundError, match="never loaded"):
    hf_loader.load_hf_dir(tmp_path)


def test_gemma3_sliding_window_and_roundtrip(tmp_path):
  _need_safetensors()
  cfg = gemma3.Gemma3Config.tiny()
  model = gemma3.Gemma3(cfg, rngs=nnx.Rngs(0))
  # Give the norms non-zero weights so the 1+w convention is exercised.
  for layer in model.layers:
    layer.input_layernorm.weight.set_value(jnp.full((cfg.hidden_size,), 0.3))
  assert [l.sliding for l in model.layers] == [True, True, False]
  ids = _ids(cfg.vocab_size, t=10)
  out = model(ids)
  assert out.shape == (2, 10, cfg.vocab_size)
  # Position 9 of a sliding layer cannot see token 0 (window 4), so with only sliding
  # layers, changing token 0 leaves the last logits unchanged.
  local = gemma3.Gemma3(gemma3.Gemma3Config.tiny(num_layers=2, sliding_window_pattern=6),
                        rngs=nnx.Rngs(0))
  ids2 = ids.at[:, 0].set((ids[:, 0] + 1) % cfg.vocab_size)
  np.testing.assert_allclose(local(ids)[:, -1], local(ids2)[:, -1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(model(ids)[:, -1], model(ids2)[:, -1])
  sd = hf_loader.gemma3_to_state_dict(model)
  hf_loader.save_hf_dir(tmp_path, cfg.to_hf_dict(), sd)
  loaded, cfg2 = hf_loader.load_hf_dir(tmp_path)
  assert cfg2 == cfg
  np.testing.assert_array_equal(np.asarray(out), np.asarray(loaded(ids)))


def test_bert_padding_invariance_and_pooling():
  cfg = bert.BertConfig.tiny()
  model = bert.BertEncoder(cfg, rngs=nnx.Rngs(0))
  ids = _ids(cfg.vocab_size, t=8, b=1)
  mask = jnp.ones_like(ids)
  padded = jnp.concatenate([ids, jnp.zeros((1, 4), jnp.int32)], axis=1)
  pmask = jnp.concatenate([mask, jnp.zeros((1, 4), jnp.int32)], axis=1)
  e1 = bert.mean_pool(model(ids, mask), mask)
  e2 = bert.mean_pool(model(padded, pmask), pmask)
  np.testing.assert_allclose(e1, e2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(e1, axis=-1), 1.0, rtol=1e-6)


def test_model_code_imports_nothing_from_mxjax():
  import ast
  import pathlib

  import experiments.models as pkg

  for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not any(n.split(".")[0] == "mxjax" for n in names), path.name
