"""mxjax.nn on Flax NNX: surgery on the Llama zoo model, numerics, memory, gradients, save/restore."""

import ml_dtypes  # noqa: F401  (registers the float8 / int4 dtype names numpy needs on load)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mxjax
from mxjax import nn as mnn
from mxjax.nn import recipes
from mxjax.nn.nnx import QuantizedEinsum, QuantizedLinear, QuantizedLinearGeneral
from experiments.models.llama import Llama, LlamaConfig

# Model-level SNR floors (dB) on the tiny Llama below, about 3 dB under the measured values
# (measured: W8A16 41.7, W8A8 38.9, int4 17.3, nf4 17.7, FP8 26.4, MXFP8 25.8, MXFP6 26.0,
# MXFP4 15.0, NVFP4 15.5).
SNR_FLOOR_DB = {
    "W8A16 int8": 38.0,
    "W8A8": 35.0,
    "W4A16 int4_g128": 14.0,
    "W4A16 nf4_g64": 14.0,
    "FP8 weights and activations": 23.0,
    "MXFP8": 22.5,
    "MXFP6": 22.5,
    "MXFP4 W4A4": 12.0,
    "NVFP4 W4A4": 12.0,
}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_config(**kw):
  # Contraction dims of 128 so every preset's blocks divide them (no padding: exact bytes).
  base = dict(hidden_size=128, intermediate_size=128, num_heads=4, num_kv_heads=2, num_layers=1)
  base.update(kw)
  return LlamaConfig.tiny(**base)


@pytest.fixture(scope="module")
def model():
  return Llama(tiny_config(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def ids():
  return jax.random.randint(jax.random.key(1), (2, 8), 0, 97)


def snr_db(ref, out):
  ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
  return 10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2))


def forward(m, x):
  return m(x)


def expected_nbytes(shape, axis, scheme) -> int:
  """Bytes a QArray of `scheme` must hold: codes at the format's bit count plus scales."""
  n = int(np.prod(shape))
  codes = n * scheme.format.bits // 8
  g = scheme.granularity.value
  n_scales = 1 if g == "tensor" else n // (shape[axis] if g == "axis" else scheme.block_size)
  scale_bytes = {"e8m0": 1, "e4m3": 1, "fp32": 4, "bf16": 2}[scheme.scale.value]
  extra = 4 if scheme.tensor_scale else 0
  zp = n_scales if not scheme.symmetric else 0
  return codes + n_scales * scale_bytes + extra + zp


@pytest.mark.parametrize("recipe", recipes.PRESETS)
def test_preset_under_jit_snr_and_serve_bytes(model, ids, recipe):
  """Every preset: quantize, run under jax.jit, output SNR above the format's floor, and the
  serve-mode parameter bytes equal the formats' bit counts (codes + scales)."""
  ref = model(ids)
  q = mnn.quantize(model, recipe)
  graphdef, state = nnx.split(q)
  out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, ids)
  assert out.shape == ref.shape and bool(jnp.all(jnp.isfinite(out)))
  assert snr_db(ref, out) > SNR_FLOOR_DB[recipe], recipe
  scheme = mnn.parse_recipe(recipe).weight
  n_values = total = 0
  for layer in q.layers:
    for name in LINEARS:
      mod = getattr(layer.self_attn if name in LINEARS[:4] else layer.mlp, name)
      assert isinstance(mod, QuantizedLinear) and isinstance(mod, nnx.Linear)
      k = mod.kernel.get_value()
      assert isinstance(k, mxjax.QArray) and k.scheme == scheme
      assert k.nbytes == expected_nbytes(k.shape, 0, scheme), (name, recipe)
      n_values += int(np.prod(k.shape))
      total += k.nbytes
  b = mnn.param_bytes(q)
  assert b["quantized"] == total and b["quantized_values"] == n_values
  # The embedding, the head and the norms stay float32: 4 bytes a value.
  float_values = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nnx.state(model)))
  assert b["float"] == 4 * (float_values - n_values)


def test_original_model_is_left_intact(model, ids):
  before = jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  ref = model(ids)
  q = mnn.quantize(model, "W4A16 int4_g128")
  assert isinstance(q.layers[0].mlp.up_proj, QuantizedLinear)
  assert type(model.layers[0].mlp.up_proj) is nnx.Linear
  after = nnx.to_pure_dict(nnx.state(model))
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)
  np.testing.assert_array_equal(model(ids), ref)


def test_default_policy_leaves_sensitive_modules_untouched(model):
  q = mnn.quantize(model, mnn.default_policy("mxfp4", "mxfp4"))
  assert type(q.embed_tokens) is nnx.Embed and type(q.lm_head) is nnx.Linear
  assert type(q.norm) is type(model.norm)
  for name in ("input_layernorm", "post_attention_layernorm"):
    assert type(getattr(q.layers[0], name)) is type(getattr(model.layers[0], name))
  np.testing.assert_array_equal(q.lm_head.kernel[...], model.lm_head.kernel[...])
  np.testing.assert_array_equal(q.embed_tokens.embedding[...], model.embed_tokens.embedding[...])
  report = mnn.explain(model, mnn.default_policy("mxfp4"), print_fn=None)
  quantized = set(report.quantized)
  assert quantized == {f"layers/0/{'self_attn' if n in LINEARS[:4] else 'mlp'}/{n}"
                       for n in LINEARS}


class _MoE(nnx.Module):
  """A router, two experts and an attention-score einsum module, for the default policy."""

  def __init__(self, rngs):
    self.router = nnx.Linear(32, 2, rngs=rngs)
    self.experts = nnx.List([nnx.Linear(32, 32, rngs=rngs) for _ in range(2)])
    self.attn_scores = nnx.Einsum("bqd,dk->bqk", (32, 32), rngs=rngs)

  def __call__(self, x):
    w = jax.nn.softmax(self.router(x), -1)
    y = sum(w[..., i : i + 1] * e(x) for i, e in enumerate(self.experts))
    return y + self.attn_scores(x)


def test_default_policy_keeps_routers_and_attention_scores():
  m = _MoE(nnx.Rngs(0))
  q = mnn.quantize(m, "W8A8")
  assert type(q.router) is nnx.Linear and type(q.attn_scores) is nnx.Einsum
  assert all(isinstance(e, QuantizedLinear) for e in q.experts)
  x = jnp.ones((2, 3, 32))
  assert snr_db(m(x), q(x)) > 30


def test_explain_prints_every_module_and_unused_rules(model, capsys):
  policy = mnn.Policy([
      mnn.Rule(r"(^|/)lm_head$", name="keep head"),
      mnn.Rule(r"q_proj$", weight="nvfp4", name="q"),
      mnn.Rule(r"no_such_module", weight="int8", name="never"),
      mnn.Rule(r"mlp/", weight="int4_g128", name="mlp"),
  ])
  report = mnn.explain(model, policy)
  out = capsys.readouterr().out
  for path in ("embed_tokens", "layers/0/self_attn/q_proj", "layers/0/mlp/down_proj", "norm"):
    assert path in out
  assert "kept: no rule matched" in out  # k_proj etc.
  assert "rules that matched nothing:" in out and "'never'" in out
  assert [r.name for _, r in report.unused_rules] == ["never"]
  q = mnn.quantize(model, policy)
  assert isinstance(q.layers[0].self_attn.q_proj, QuantizedLinear)
  assert type(q.layers[0].self_attn.k_proj) is nnx.Linear


def test_twin_matches_fake_quant_reference():
  lin = nnx.Linear(64, 16, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (3, 5, 64))
  rule = mnn.Rule("", weight="mxfp4", activation="mxfp8_e4m3")
  q = mnn.quantize(lin, mnn.Policy([rule]))
  w = lin.kernel[...]
  ref = mxjax.fake_quant(x, "mxfp8_e4m3") @ mxjax.fake_quant(w, "mxfp4", axis=0) + lin.bias[...]
  np.testing.assert_allclose(q(x), ref, rtol=1e-5, atol=1e-5)


def test_quantizing_twice_does_not_requantize(model):
  q1 = mnn.quantize(model, "W4A16 int4_g128")
  q2 = mnn.quantize(q1, "W8A8")
  assert q2.layers[0].mlp.up_proj.kernel.get_value().scheme.name == "int4_g128"
  report = mnn.explain(q1, "W8A8", print_fn=None)
  assert not report.quantized
  row = [r for r in report.rows if r.path == "layers/0/mlp/up_proj"][0]
  assert row.action.startswith("already quantized") and "int4_g128" in row.action


def test_einsum_and_linear_general_twins():
  class Block(nnx.Module):
    def __init__(self, rngs):
      self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=64, qkv_features=64,
                                         decode=False, rngs=rngs)
      self.proj = nnx.Einsum("btd,dnh->btnh", (64, 2, 32), rngs=rngs)

    def __call__(self, x):
      return self.attn(x) + self.proj(x).reshape(x.shape)

  m = Block(nnx.Rngs(0))
  q = mnn.quantize(m, "W8A8")
  for name in ("query", "key", "value", "out"):
    assert isinstance(getattr(q.attn, name), QuantizedLinearGeneral), name
  assert isinstance(q.proj, QuantizedEinsum)
  assert q.proj.kernel.get_value().axis == -3  # blocked along d, the contracted axis
  assert q.attn.out.kernel.get_value().axis == -2  # out: (heads, head_dim, features): head_dim
  x = jax.random.normal(jax.random.key(3), (2, 4, 64))
  out = nnx.jit(forward)(q, x)
  assert snr_db(m(x), out) > 30
  # The einsum twin equals the fake-quant reference.
  k = m.proj.kernel[...]
  assert m.proj.bias is None
  ref = jnp.einsum("btd,dnh->btnh", mxjax.fake_quant(x, "int8"),
                   mxjax.fake_quant(k, "int8", axis=0))
  got = q.proj(x)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_qat_gradients_are_straight_through(model, ids):
  q = mnn.quantize(model, mnn.default_policy("int4_g128", "int8", mode="qat"))
  k = q.layers[0].mlp.up_proj.kernel.get_value()
  assert not isinstance(k, mxjax.QArray)  # qat keeps float weights

  def loss(m):
    return jnp.mean(jnp.square(m(ids)))

  grads = nnx.grad(loss)(q)
  g = grads.layers[0].mlp.up_proj.kernel.get_value()
  assert g.shape == k.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
  # Straight-through: one layer's kernel gradient is x_q^T . d_y with x_q the fake-quantized
  # input, checked on a single twin.
  lin = q.layers[0].mlp.down_proj
  x = jax.random.normal(jax.random.key(4), (4, 128))
  gw = nnx.grad(lambda m: jnp.sum(m(x)))(lin).kernel.get_value()
  np.testing.assert_allclose(gw, mxjax.fake_quant(x, "int8").T @ jnp.ones((4, 128)),
                             rtol=1e-5, atol=1e-5)
  # and close to the float model's gradient.
  gf = nnx.grad(loss)(model).layers[0].mlp.up_proj.kernel.get_value()
  assert snr_db(gf, g) > 5


def test_train_mode_quantizes_gradients(model, ids):
  qat = mnn.quantize(model, mnn.default_policy("mxfp8_e4m3", "mxfp8_e4m3", mode="qat"))
  train = mnn.quantize(model, "MXFP8 weights and activations, E5M2 gradients")
  assert train.layers[0].mlp.up_proj.spec.mode is mnn.Mode.TRAIN

  def loss(m):
    return jnp.mean(jnp.square(m(ids)))

  np.testing.assert_allclose(loss(qat), loss(train), rtol=1e-6)  # same forward
  g_qat = nnx.grad(loss)(qat).layers[0].self_attn.q_proj.kernel.get_value()
  g_train = nnx.grad(loss)(train).layers[0].self_attn.q_proj.kernel.get_value()
  assert not np.allclose(g_qat, g_train)  # the E5M2 gradient quantization acts
  assert snr_db(g_qat, g_train) > 10


def test_save_restore_quantized_params(model, ids, tmp_path):
  q = mnn.quantize(model, "NVFP4 W4A4")
  out = q(ids)
  graphdef, state = nnx.split(q)
  leaves, treedef = jax.tree_util.tree_flatten(state)
  # Round trip through bytes on disk (no pickle): dtype names and raw bytes.
  arrays = {f"a{i}": np.asarray(x).view(np.uint8) for i, x in enumerate(leaves)}
  meta = [(str(np.asarray(x).dtype), np.asarray(x).shape) for x in leaves]
  np.savez(tmp_path / "q.npz", **arrays)
  with np.load(tmp_path / "q.npz", allow_pickle=False) as f:
    restored = [f[f"a{i}"].view(np.dtype(dt)).reshape(shape) for i, (dt, shape) in enumerate(meta)]
  state2 = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in restored])
  q2 = nnx.merge(graphdef, state2)
  np.testing.assert_array_equal(q2(ids), out)
  k2 = q2.layers[0].mlp.up_proj.kernel.get_value()
  assert isinstance(k2, mxjax.QArray) and k2.scheme.name == "nvfp4"
  # nnx.state / nnx.update into a fresh quantized copy.
  fresh = mnn.quantize(Llama(tiny_config(), rngs=nnx.Rngs(7)), "NVFP4 W4A4")
  assert not np.allclose(fresh(ids), out)
  nnx.update(fresh, nnx.state(q))
  np.testing.assert_array_equal(fresh(ids), out)


def test_jit_does_not_recompile_for_new_weights(model, ids):
  q1 = mnn.quantize(model, "W8A8")
  q2 = mnn.quantize(Llama(tiny_config(), rngs=nnx.Rngs(3)), "W8A8")
  g1, s1 = nnx.split(q1)
  _, s2 = nnx.split(q2)
  f = jax.jit(lambda s, x: nnx.merge(g1, s)(x))
  a, b = f(s1, ids), f(s2, ids)
  assert not np.allclose(a, b)
  assert f._cache_size() == 1  # pylint: disable=protected-access


def _sr_policy(fmt="fp8_e4m3", grad="fp8_e5m2"):
  sr = mxjax.schemes.get(grad, rounding="stochastic")
  return mnn.default_policy(fmt, fmt, sr, mode="train")


def test_stochastic_schemes_need_rngs(model):
  with pytest.raises(ValueError, match="rngs="):
    mnn.quantize(model, _sr_policy())


class _MLP(nnx.Module):
  def __init__(self, rngs):
    self.up_proj = nnx.Linear(64, 64, rngs=rngs)
    self.down_proj = nnx.Linear(64, 16, rngs=rngs)

  def __call__(self, x):
    return self.down_proj(jax.nn.silu(self.up_proj(x)))


@pytest.mark.parametrize("fmt,grad", [
    ("fp8_e4m3", "fp8_e5m2"),
    pytest.param("nvfp4", "nvfp4", marks=pytest.mark.slow),  # NVFP4 training (slow compile)
])  # fmt: skip
def test_stochastic_gradient_rounding_draws_a_new_key_per_call(fmt, grad):
  """RTN forward, stochastically rounded gradients (as NVFP4 training does); each layer draws
  a fresh key from its own stream on every call."""
  m = _MLP(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (8, 64))
  q = mnn.quantize(m, _sr_policy(fmt, grad), rngs=nnx.Rngs(quant=0))
  assert q.up_proj.quant_rngs is not None

  def loss(mod):
    return jnp.mean(jnp.square(mod(x)))

  grad_fn = nnx.jit(nnx.grad(loss))
  g1 = grad_fn(q).up_proj.kernel.get_value()
  g2 = grad_fn(q).up_proj.kernel.get_value()
  assert bool(jnp.all(jnp.isfinite(g1))) and not np.allclose(g1, g2)
  jloss = nnx.jit(loss)
  np.testing.assert_allclose(jloss(q), jloss(q), rtol=0)  # the forward is round-to-nearest
  g_rtn = grad_fn(mnn.quantize(m, mnn.default_policy(fmt, fmt, mode="qat")))
  assert snr_db(g_rtn.up_proj.kernel.get_value(), g1) > 3


def test_explain_says_which_backend_runs_and_which_cannot(model):
  report = mnn.explain(model, "W4A16 int4_g128", print_fn=None)
  row = [r for r in report.rows if r.path == "layers/0/mlp/up_proj"][0]
  assert f"runs on {'reference' if jax.default_backend() == 'cpu' else ''}" in row.action
  bad = mnn.Policy([mnn.Rule("q_proj$", weight="mxfp8_e4m3", activation="mxfp8_e4m3",
                             backend="pallas")])
  if jax.default_backend() == "cpu":
    text = str(mnn.explain(model, bad, print_fn=None))
    assert "backend 'pallas' cannot run it" in text
  fast = mnn.explain(model, "W4A16 int4_g128", print_fn=None, backends=False)
  assert "runs on" not in str(fast)


@pytest.mark.parametrize("name", [pytest.param("gemma3", marks=pytest.mark.slow),
                                  pytest.param("bert", marks=pytest.mark.slow)])
def test_other_zoo_models_quantize_without_edits(name):
  """Models written without mxjax in mind: the tiny Gemma 3 (tied head, q/k norms) and BERT
  (capitalised LayerNorm, `output` projections)."""
  if name == "gemma3":
    from experiments.models.gemma3 import Gemma3 as Model, Gemma3Config as Config
  else:
    from experiments.models.bert import BertEncoder as Model, BertConfig as Config
  m = Model(Config.tiny(), rngs=nnx.Rngs(0))
  ids = jnp.arange(16).reshape(2, 8) % 50
  q = mnn.quantize(m, "W8A8")
  assert snr_db(m(ids), nnx.jit(forward)(q, ids)) > 25
  report = mnn.explain(m, "W8A8", print_fn=None, backends=False)
  for row in report.rows:
    if row.info.container:
      continue
    leaf = row.path.rsplit("/", 1)[-1].lower()
    if "norm" in leaf or "embed" in leaf:
      assert not row.quantized and "kept" in row.action, row.path
    if isinstance(row.info.module, nnx.Linear):
      assert row.quantized, row.path


class _ScanBlock(nnx.Module):
  def __init__(self, rngs):
    self.up_proj = nnx.Linear(64, 64, rngs=rngs)

  def __call__(self, x):
    return x + jax.nn.silu(self.up_proj(x))


class _ScanStack(nnx.Module):
  """Three layers stacked by nnx.vmap and run by nnx.scan (kernels (3, 64, 64))."""

  def __init__(self, rngs):
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(r):
      return _ScanBlock(r)

    self.blocks = create(rngs)

  def __call__(self, x):
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def step(h, block):
      return block(h)

    return step(x, self.blocks)


def test_scanned_layers_get_one_qarray_per_layer():
  m = _ScanStack(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (4, 64))
  q = mnn.quantize(m, "W4A16 mxfp4")
  k = q.blocks.up_proj.kernel.get_value()
  assert k.shape == (3, 64, 64) and k.layout.shape == (64, 64)  # the layer axis is a lead axis
  w = m.blocks.up_proj.kernel[...]
  np.testing.assert_array_equal(mxjax.dequantize(k)[1],
                                mxjax.dequantize(mxjax.quantize(w[1], "mxfp4", axis=0)))
  assert snr_db(m(x), nnx.jit(forward)(q, x)) > 15


def test_explain_reports_a_replaced_custom_dot_general():
  custom = lambda *a, **k: jax.lax.dot_general(*a, **k)  # noqa: E731
  lin = nnx.Linear(32, 8, dot_general=custom, rngs=nnx.Rngs(0))
  report = mnn.explain(lin, mnn.Policy([mnn.Rule("", weight="int8")]), print_fn=None,
                       backends=False)
  assert "replaces the module's own dot_general" in report.rows[0].action
  plain = nnx.Linear(32, 8, rngs=nnx.Rngs(0))
  report = mnn.explain(plain, mnn.Policy([mnn.Rule("", weight="int8")]), print_fn=None,
                       backends=False)
  assert "replaces" not in report.rows[0].action
