"""mxjax.nn on Flax Linen: the Llama twin, the interceptor, serve-mode params, qat gradients."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import pallas as pl

import mxjax
from mxjax import nn as mnn
from mxjax.nn import recipes
from experiments.models.llama import Llama, LlamaConfig
from experiments.models.llama_linen import LlamaLinen, params_from_nnx

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_config(**kw):
  base = dict(hidden_size=128, intermediate_size=128, num_heads=4, num_kv_heads=2, num_layers=1)
  base.update(kw)
  return LlamaConfig.tiny(**base)


def snr_db(ref, out):
  ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
  return 10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2))


@pytest.fixture(scope="module")
def models():
  cfg = tiny_config()
  nnx_model = Llama(cfg, rngs=nnx.Rngs(0))
  return nnx_model, LlamaLinen(cfg), params_from_nnx(nnx.state(nnx_model))


@pytest.fixture(scope="module")
def ids():
  return jax.random.randint(jax.random.key(1), (2, 8), 0, 97)


def _kernels(params):
  layer = params["params"]["layers_0"]
  return {n: layer["self_attn" if n in LINEARS[:4] else "mlp"][n]["kernel"] for n in LINEARS}


def test_linen_twin_has_no_mxjax_import():
  import experiments.models.llama_linen as mod  # pylint: disable=import-outside-toplevel

  with open(mod.__file__) as f:
    assert not re.search(r"^\s*(import|from)\s+mxjax", f.read(), re.M)


@pytest.mark.parametrize("tied", [False, True])
def test_linen_and_nnx_llama_give_the_same_logits(ids, tied):
  cfg = tiny_config(tie_word_embeddings=tied, num_layers=2)
  m = Llama(cfg, rngs=nnx.Rngs(5))
  lm = LlamaLinen(cfg)
  variables = params_from_nnx(nnx.state(m))
  init = lm.init(jax.random.key(0), ids)
  assert jax.tree_util.tree_structure(init) == jax.tree_util.tree_structure(variables)
  np.testing.assert_allclose(lm.apply(variables, ids), m(ids), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe", ["W8A8", "W4A16 int4_g128"])  # all presets: slow sweep
def test_quantized_linen_equals_quantized_nnx(models, ids, recipe):
  m, lm, variables = models
  qmodel, qvars = mnn.quantize(lm, recipe, params=variables, example_args=(ids,))
  out = jax.jit(qmodel.apply)(qvars, ids)
  ref_q = mnn.quantize(m, recipe)(ids)
  np.testing.assert_allclose(out, ref_q, rtol=1e-4, atol=1e-5)
  scheme = mnn.parse_recipe(recipe).weight
  for name, k in _kernels(qvars).items():
    assert isinstance(k, mxjax.QArray) and k.scheme == scheme, name
  assert mnn.param_bytes(qvars) == mnn.param_bytes(mnn.quantize(m, recipe))
  # The original variables are untouched, and the plain model ignores the interceptor.
  assert not any(isinstance(k, mxjax.QArray) for k in _kernels(variables).values())
  np.testing.assert_array_equal(lm.apply(variables, ids), m(ids))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", recipes.PRESETS)
def test_every_preset_under_jit_linen(models, ids, recipe):
  m, lm, variables = models
  qmodel, qvars = mnn.quantize(lm, recipe, params=variables, example_args=(ids,))
  out = jax.jit(qmodel.apply)(qvars, ids)
  np.testing.assert_allclose(out, mnn.quantize(m, recipe)(ids), rtol=1e-4, atol=1e-5)


def test_linen_default_policy_keeps_sensitive_modules(models, ids):
  _, lm, variables = models
  qmodel, qvars = mnn.quantize(lm, "NVFP4 W4A4", params=variables, example_args=(ids,))
  p = qvars["params"]
  assert not isinstance(p["lm_head"]["kernel"], mxjax.QArray)
  np.testing.assert_array_equal(p["lm_head"]["kernel"], variables["params"]["lm_head"]["kernel"])
  np.testing.assert_array_equal(p["embed_tokens"]["embedding"],
                                variables["params"]["embed_tokens"]["embedding"])
  assert set(qmodel.report.quantized) == {
      f"layers_0/{'self_attn' if n in LINEARS[:4] else 'mlp'}/{n}" for n in LINEARS}


def test_linen_explain_without_params(models, ids, capsys):
  _, lm, _ = models
  report = mnn.explain(lm, "W4A16 int4_g128", ids)
  out = capsys.readouterr().out
  assert "layers_0/mlp/down_proj" in out and "Dense" in out and "keep: lm_head" in out
  assert len(report.quantized) == 7


def test_linen_qat_gradients(models, ids):
  _, lm, variables = models
  policy = mnn.default_policy("int4_g128", "int8", mode="qat")
  qmodel, qvars = mnn.quantize(lm, policy, params=variables, example_args=(ids,))
  assert not any(isinstance(k, mxjax.QArray) for k in _kernels(qvars).values())

  def loss(v, model_apply):
    return jnp.mean(jnp.square(model_apply(v, ids)))

  g = jax.grad(loss)(qvars, qmodel.apply)
  gf = jax.grad(loss)(variables, lm.apply)
  for name in LINEARS:
    a, b = _kernels(g)[name], _kernels(gf)[name]
    assert bool(jnp.all(jnp.isfinite(a))) and not np.allclose(a, b), name
    assert snr_db(b, a) > 5, name


class _Small(nn.Module):
  """Dense, DenseGeneral, Einsum and Linen attention (DenseGeneral projections)."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(64, name="dense")(x)
    h = h + nn.DenseGeneral((2, 32), name="dense_general")(x).reshape(h.shape)
    h = h + nn.Einsum((64, 2, 32), "btd,dnh->btnh", name="einsum")(x).reshape(h.shape)
    return h + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=64, name="attn")(h)


def test_linen_dense_general_einsum_and_attention():
  m = _Small()
  x = jax.random.normal(jax.random.key(0), (2, 4, 64))
  variables = m.init(jax.random.key(1), x)
  qmodel, qvars = mnn.quantize(m, mnn.Policy([mnn.Rule("", weight="int8", activation="int8")]),
                               params=variables, example_args=(x,))
  assert set(qmodel.report.quantized) == {"dense", "dense_general", "einsum", "attn/query",
                                          "attn/key", "attn/value", "attn/out"}
  p = qvars["params"]
  assert p["einsum"]["kernel"].axis == -3 and p["attn"]["out"]["kernel"].axis == -2
  out = jax.jit(qmodel.apply)(qvars, x)
  assert snr_db(m.apply(variables, x), out) > 30


@pytest.mark.parametrize("module,eq", [
    (nn.Dense(16), None),
    (nn.DenseGeneral((2, 8), axis=(-2, -1)), None),
    (nn.Einsum((16, 4, 8), "btk,kdh->btdh"), "btk,kdh->btdh"),
])  # fmt: skip
def test_linen_layers_equal_fake_quant_reference(module, eq):
  """Dense / DenseGeneral run their own __call__ with the injected dot_general; Einsum is
  computed by mxjax: each equals dot(fake_quant(x), fake_quant(w)) + b."""
  x = jax.random.normal(jax.random.key(0), (3, 4, 16))
  v = module.init(jax.random.key(1), x)
  policy = mnn.Policy([mnn.Rule("", weight="mxfp8_e4m3", activation="int8")])
  qmodel, qv = mnn.quantize(module, policy, params=v, example_args=(x,))
  assert qmodel.report.quantized == ("",)
  b = v["params"]["bias"]
  kq = qv["params"]["kernel"]
  assert isinstance(kq, mxjax.QArray)
  w = mxjax.dequantize(kq)
  if isinstance(module, nn.Einsum):
    ref = jnp.einsum(eq, mxjax.fake_quant(x, "int8"), w) + b
  elif isinstance(module, nn.DenseGeneral):
    ref = jnp.einsum("btk,tkfg->bfg", mxjax.fake_quant(x, "int8"), w) + b
  else:
    ref = mxjax.fake_quant(x, "int8") @ w + b
  np.testing.assert_allclose(jax.jit(qmodel.apply)(qv, x), ref, rtol=1e-5, atol=1e-5)


def _pallas_matmul(x, w):
  def kernel(x_ref, w_ref, o_ref):
    o_ref[...] = jnp.dot(x_ref[...], w_ref[...], preferred_element_type=jnp.float32)

  return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((x.shape[0], w.shape[1]),
                                                               jnp.float32), interpret=True)(x, w)


class _WithPallas(nn.Module):
  @nn.compact
  def __call__(self, x):
    w = self.param("w", nn.initializers.normal(1.0), (64, 64))
    return nn.Dense(64, name="dense")(x), _pallas_matmul(x, w)


def test_interceptor_never_reaches_a_pallas_kernel():
  m = _WithPallas()
  x = jax.random.normal(jax.random.key(0), (8, 64))
  variables = m.init(jax.random.key(1), x)
  qmodel, qvars = mnn.quantize(m, "MXFP4 W4A4", params=variables, example_args=(x,))
  assert qmodel.report.quantized == ("dense",)
  dense_q, pallas_q = qmodel.apply(qvars, x)
  dense_f, pallas_f = m.apply(variables, x)
  np.testing.assert_array_equal(pallas_q, pallas_f)  # untouched
  assert not np.allclose(dense_q, dense_f)  # the Dense is quantized
  np.testing.assert_allclose(pallas_f, x @ variables["params"]["w"], rtol=1e-5, atol=1e-4)


def test_injected_dot_general_in_a_linen_model():
  dense = nn.Dense(8, dot_general=mnn.QuantizedDotGeneral.of(weight="mxfp8_e4m3"))
  x = jax.random.normal(jax.random.key(0), (4, 32))
  v = dense.init(jax.random.key(1), x)
  k, b = v["params"]["kernel"], v["params"]["bias"]
  np.testing.assert_allclose(dense.apply(v, x), x @ mxjax.fake_quant(k, "mxfp8_e4m3", axis=0) + b,
                             rtol=1e-5, atol=1e-5)
  g = jax.grad(lambda p: dense.apply(p, x).sum())(v)["params"]["kernel"]
  np.testing.assert_allclose(g, x.T @ jnp.ones((4, 8)), rtol=1e-5, atol=1e-5)  # STE


def test_linen_partitioned_params_are_unboxed_and_quantized():
  init = nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
  dense = nn.Dense(16, kernel_init=init)
  x = jax.random.normal(jax.random.key(0), (4, 32))
  v = dense.init(jax.random.key(1), x)
  assert isinstance(v["params"]["kernel"], nn.Partitioned)
  qmodel, qv = mnn.quantize(dense, "W8A8", params=v, example_args=(x,))
  assert isinstance(qv["params"]["kernel"], mxjax.QArray)
  k = nn.unbox(v["params"]["kernel"])
  ref = mxjax.fake_quant(x, "int8") @ mxjax.fake_quant(k, "int8", axis=0) + v["params"]["bias"]
  np.testing.assert_allclose(qmodel.apply(qv, x), ref, rtol=1e-5, atol=1e-5)


def test_linen_stochastic_layers_draw_from_the_quant_collection():
  dense = nn.Dense(16)
  x = jax.random.normal(jax.random.key(0), (4, 32))
  v = dense.init(jax.random.key(1), x)
  sr = mxjax.schemes.get("mxfp4", rounding="stochastic")
  qmodel, qv = mnn.quantize(dense, mnn.Policy([mnn.Rule("", activation=sr, mode="qat")]),
                            params=v, example_args=(x,))
  with pytest.raises(Exception, match="quant"):
    qmodel.apply(qv, x)  # no "quant" rng given
  a = qmodel.apply(qv, x, rngs={"quant": jax.random.key(0)})
  b = qmodel.apply(qv, x, rngs={"quant": jax.random.key(1)})
  assert not np.allclose(a, b)
  # Unbiased on average: the mean over keys approaches the float output.
  outs = [qmodel.apply(qv, x, rngs={"quant": jax.random.key(i)}) for i in range(16)]
  ref = dense.apply(v, x)
  assert snr_db(ref, jnp.mean(jnp.stack(outs), 0)) > snr_db(ref, a) + 3


class _ScanBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return x + jax.nn.silu(nn.Dense(64, name="up_proj")(x)), None


class _ScanStack(nn.Module):
  @nn.compact
  def __call__(self, x):
    stack = nn.scan(_ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                    length=3)
    return stack(name="blocks")(x, None)[0]


def test_linen_scanned_layers_get_one_qarray_per_layer():
  m = _ScanStack()
  x = jax.random.normal(jax.random.key(0), (4, 64))
  v = m.init(jax.random.key(1), x)
  qmodel, qv = mnn.quantize(m, "W4A16 mxfp4", params=v, example_args=(x,))
  k = qv["params"]["blocks"]["up_proj"]["kernel"]
  assert k.shape == (3, 64, 64) and k.layout.shape == (64, 64)
  assert snr_db(m.apply(v, x), jax.jit(qmodel.apply)(qv, x)) > 15


@pytest.mark.slow  # ~30 s of compiles; the NNX train-mode test covers the default run
def test_linen_train_mode_quantizes_gradients():
  m = _Small()
  x = jax.random.normal(jax.random.key(0), (2, 4, 64))
  v = m.init(jax.random.key(1), x)
  fp8 = "fp8_e4m3_rowwise"  # the recipe's forward schemes: only the gradients differ
  qat, qv = mnn.quantize(m, mnn.default_policy(fp8, fp8, mode="qat"), params=v,
                         example_args=(x,))
  train, tv = mnn.quantize(m, "FP8 weights and activations, FP8 gradients", params=v,
                           example_args=(x,))
  assert train.entries["dense"].spec.grad.name == "fp8_e5m2"

  def loss(p, apply):
    return jnp.mean(jnp.square(apply(p, x)))

  g_qat = jax.jit(jax.grad(loss), static_argnums=1)(qv, qat.apply)["params"]
  g_train = jax.jit(jax.grad(loss), static_argnums=1)(tv, train.apply)["params"]
  for name in ("dense", "dense_general", "einsum"):
    a, b = g_qat[name]["kernel"], g_train[name]["kernel"]
    assert not np.allclose(a, b) and snr_db(a, b) > 10, name
