"""mxjax.nn policies and recipes: rules, first-match, the default policy, explain, the grammar."""

import jax.numpy as jnp
import pytest
from flax import nnx

import mxjax
from mxjax import nn as mnn
from mxjax.nn import policy as pol
from mxjax.nn import recipes


def test_public_names_import():
  for name in mnn.__all__:
    assert getattr(mnn, name) is not None, name
  assert mxjax.nn is mnn


# -- Rule and Policy --------------------------------------------------------------------------


def test_rule_resolves_presets_and_validates():
  r = mnn.Rule(r"q_proj", weight="int4_g128", activation="bf16")
  assert r.weight.name == "int4_g128"
  assert r.activation is None  # bf16 means high precision
  assert r.mode is mnn.Mode.SERVE and r.name == "q_proj"
  with pytest.raises(ValueError, match="regex"):
    mnn.Rule("(", weight="int8")
  with pytest.raises(ValueError, match="unknown scheme preset"):
    mnn.Rule("x", weight="int3")
  with pytest.raises(ValueError, match="mode"):
    mnn.Rule("x", weight="int8", mode="fast")
  with pytest.raises(ValueError, match="backend"):
    mnn.Rule("x", weight="int8", backend="cuda")
  with pytest.raises(ValueError, match="only in mode 'train'"):
    mnn.Rule("x", weight="int8", gradient="fp8_e5m2")
  with pytest.raises(TypeError):
    mnn.Rule("x", module_type=3)


def test_rule_is_frozen_and_hashable():
  r = mnn.Rule("x", weight="int8")
  with pytest.raises(AttributeError):
    r.pattern = "y"  # type: ignore[misc]
  assert hash(r) == hash(mnn.Rule("x", weight="int8"))


def test_first_match_wins_and_module_type():
  p = mnn.Policy([
      mnn.Rule(r"(^|/)q_proj$", weight="int8", name="q"),
      mnn.Rule(r"proj$", module_type="Linear", weight="mxfp4", name="linear projs"),
      mnn.Rule(r"proj$", weight="nvfp4", name="other projs"),
  ])
  lin = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
  emb = nnx.Embed(4, 4, rngs=nnx.Rngs(0))
  assert p.match("layers/0/q_proj", lin)[1].name == "q"
  assert p.match("layers/0/k_proj", lin)[1].name == "linear projs"
  assert p.match("layers/0/k_proj", emb)[1].name == "other projs"
  assert p.match("layers/0/k_proj", nnx.Linear)[1].name == "linear projs"  # a class works too
  assert p.match("norm", lin) is None
  r = mnn.Rule("", module_type=nnx.Linear, weight="int8")
  assert r.matches("anything", lin) and not r.matches("anything", emb)


def test_policy_rejects_non_rules():
  with pytest.raises(TypeError, match="mxjax.nn.Rule"):
    mnn.Policy([{"pattern": "x"}])
  assert mnn.as_policy(mnn.Rule("x", weight="int8")).rules[0].pattern == "x"
  assert mnn.as_policy([mnn.Rule("x", weight="int8")]).rules[0].pattern == "x"
  assert isinstance(mnn.as_policy("W8A8"), mnn.Policy)


@pytest.mark.parametrize("path,kept", [
    ("embed_tokens", True), ("model/wte", True), ("token_embedding", True),
    ("lm_head", True), ("unembed", True), ("decoder/logits", True),
    ("layers/0/input_layernorm", True), ("norm", True), ("h/0/ln_1", True), ("ln_f", True),
    ("layers/0/self_attn/attn_scores", True), ("blocks/0/softmax", True),
    ("layers/3/block_sparse_moe/gate", True), ("layers/3/mlp/router", True),
    ("layers/0/mlp/gate_proj", False), ("layers/0/self_attn/q_proj", False),
    ("layers/0/mlp/down_proj", False), ("attention/output/dense", False),
    ("layers/0/mlp/experts/0/w1", False),
])  # fmt: skip
def test_default_policy_keeps_sensitive_paths(path, kept):
  i, rule = mnn.default_policy("int8").match(path)
  assert rule.keeps is kept, (path, rule.name)


def test_default_policy_keeps_embed_by_type():
  emb = nnx.Embed(4, 4, rngs=nnx.Rngs(0))
  assert mnn.default_policy("int8").match("tok", emb)[1].keeps


def test_plan_and_report_say_why_and_list_unused_rules():
  infos = [
      pol.ModuleInfo("embed_tokens", nnx.Embed, None),
      pol.ModuleInfo("layers/0/mlp/up_proj", nnx.Linear, "linear", False, (32, 64), -2),
      pol.ModuleInfo("layers/0/mlp", object, None, container=True),
      pol.ModuleInfo("layers/0/act", object, None),
  ]
  p = mnn.default_policy("int4_g128")
  rows = pol.plan(infos, p)
  assert [r.quantized for r in rows] == [False, True, False, False]
  assert "keep: embeddings" in rows[0].action
  assert "padded 32->128" in rows[1].action  # padding is reported, never silent
  assert rows[2].action == "container"
  assert "no matmul mxjax quantizes" in rows[3].action
  report = pol.Report(tuple(rows), p)
  text = str(report)
  assert "rules that matched nothing" in text and "keep: norms" in text
  assert report.quantized == ("layers/0/mlp/up_proj",)
  unused = {r.name for _, r in report.unused_rules}
  assert "keep: norms" in unused and "keep: embeddings" not in unused


def test_unmatched_module_is_kept_and_reported():
  p = mnn.Policy([mnn.Rule(r"q_proj$", weight="int8")])
  rows = pol.plan([pol.ModuleInfo("k_proj", nnx.Linear, "linear")], p)
  assert not rows[0].quantized and rows[0].action == "kept: no rule matched"


# -- Recipes ----------------------------------------------------------------------------------


def _last(policy):
  return policy.rules[-1]


def test_recipe_w4a16():
  r = mnn.parse_recipe("W4A16 int4_g128")
  assert r.weight.name == "int4_g128" and r.activation is None and r.mode is mnn.Mode.SERVE
  p = recipes.parse("W4A16 int4_g128")
  assert p.name == "W4A16 int4_g128" and p.rules[0].keeps  # the keep rules come first
  assert _last(p).weight.name == "int4_g128"


def test_recipe_fp8_weights_and_activations():
  r = mnn.parse_recipe("FP8 weights and activations")
  assert r.weight.name == "fp8_e4m3_rowwise" and r.activation.name == "fp8_e4m3_rowwise"


def test_recipe_nvfp4_w4a4_and_w8a8_defaults():
  r = mnn.parse_recipe("NVFP4 W4A4")
  assert r.weight.name == "nvfp4" and r.activation.name == "nvfp4"
  r = mnn.parse_recipe("W8A8")
  assert r.weight.name == "int8" and r.activation.name == "int8"
  r = mnn.parse_recipe("w4a16")
  assert r.weight.name == "int4_g128" and r.activation is None


def test_recipe_formats_go_to_their_bit_width():
  r = mnn.parse_recipe("W4A8 mxfp4 mxfp8")
  assert r.weight.name == "mxfp4" and r.activation.name == "mxfp8_e4m3"
  with pytest.raises(mnn.RecipeError, match="no operand of that width"):
    mnn.parse_recipe("W4A16 int8")
  with pytest.raises(mnn.RecipeError, match="name the 4-bit format"):
    mnn.parse_recipe("W4A4")


def test_recipe_parts_targets_modes_and_backends():
  r = mnn.parse_recipe("MXFP8 weights, BF16 activations, qat, reference")
  assert r.weight.name == "mxfp8_e4m3" and r.activation is None
  assert r.mode is mnn.Mode.QAT and r.backend == "reference"
  r = mnn.parse_recipe("FP8 weights and activations, FP8 gradients")
  assert r.gradient.name == "fp8_e5m2" and r.mode is mnn.Mode.TRAIN  # E5M2 for gradients
  bare = mnn.parse_recipe("MXFP6")
  assert bare.weight.name == "mxfp6_e2m3" and bare.activation.name == "mxfp6_e2m3"


def test_recipe_unknown_word_lists_what_is_understood():
  with pytest.raises(mnn.RecipeError, match="unknown word 'int3'") as e:
    mnn.parse_recipe("W4A16 int3")
  assert "NVFP4" in str(e.value) and "int4_g128" in str(e.value)
  with pytest.raises(mnn.RecipeError, match="empty"):
    mnn.parse_recipe("  ")
  with pytest.raises(mnn.RecipeError, match="quantizes nothing"):
    mnn.parse_recipe("BF16")
  with pytest.raises(mnn.RecipeError, match="2 formats"):
    mnn.parse_recipe("FP8 NVFP4 weights")
  with pytest.raises(mnn.RecipeError, match="sets W again"):
    mnn.parse_recipe("FP8 weights, INT8 weights")
  with pytest.raises(mnn.RecipeError, match="needs mode 'train'"):
    mnn.parse_recipe("FP8 gradients, serve")


def test_recipe_unavailable_parts_say_which():
  text = "AWQ-INT4 weights, BF16 activations, FP8 KV"
  r = mnn.parse_recipe(text)
  assert r.method == "awq" and r.weight.name == "int4_g128" and r.kv.name == "fp8_e4m3_rowwise"
  assert len(r.unavailable) == 2
  with pytest.raises(mnn.RecipeNotAvailableError) as e:
    mnn.as_policy(text)
  msg = str(e.value)
  assert "'AWQ-INT4 weights'" in msg and "AWQ" in msg and "'FP8 KV'" in msg and "mxjax.kv" in msg
  assert isinstance(e.value, NotImplementedError)
  p = recipes.parse(text, ignore_unavailable=True)
  assert _last(p).weight.name == "int4_g128" and _last(p).activation is None
  with pytest.raises(mnn.RecipeNotAvailableError, match="GPTQ"):
    mnn.as_policy("GPTQ W4A16")


@pytest.mark.parametrize("text", recipes.PRESETS)
def test_every_preset_recipe_parses_to_a_quantizing_policy(text):
  p = mnn.as_policy(text)
  assert not _last(p).keeps and _last(p).pattern == ".*"


def test_quantized_dot_general_injection_points():
  """`QuantizedDotGeneral` is a drop-in for a module's own `dot_general`."""
  qdg = mnn.QuantizedDotGeneral.of(weight="int8", activation="int8")
  lin = nnx.Linear(64, 8, dot_general=qdg, rngs=nnx.Rngs(0))
  x = jnp.linspace(-1, 1, 2 * 64).reshape(2, 64)
  w = lin.kernel[...]
  ref = mxjax.fake_quant(x, "int8") @ mxjax.fake_quant(w, "int8", axis=0)
  assert jnp.allclose(lin(x), ref, rtol=1e-5, atol=1e-6)
