"""QArray as a pytree, its packed size, the public API surface and its error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import mxjax
from mxjax import schemes

QUANTIZED = [n for n in schemes.names() if n not in ("bf16", "fp32")]


def test_public_names_import():
  for name in mxjax.__all__:
    assert getattr(mxjax, name) is not None
  for name in mxjax.formats.__all__:
    assert getattr(mxjax.formats, name) is not None


@pytest.mark.parametrize("preset", schemes.names())
def test_every_preset_roundtrips_under_jit_and_eagerly(preset):
  x = jax.random.normal(jax.random.key(0), (256, 256), jnp.bfloat16)
  q = mxjax.quantize(x, preset)
  y = mxjax.dequantize(q, jnp.bfloat16)
  assert y.shape == x.shape and y.dtype == jnp.bfloat16
  yj = jax.jit(lambda x: mxjax.dequantize(mxjax.quantize(x, preset), jnp.bfloat16))(x)
  assert np.array_equal(np.asarray(y, np.float32), np.asarray(yj, np.float32))
  floors = {"mxfp4": 16, "nvfp4": 18, "int4_g128": 16, "int4_g128_asym": 17, "nf4_g64": 18,
            "nf4_g64_dq": 18}  # fmt: skip
  x32, y32 = np.asarray(x, np.float64), np.asarray(y, np.float64)
  snr = 10 * np.log10(np.sum(x32**2) / max(np.sum((x32 - y32) ** 2), 1e-30))
  assert snr > floors.get(preset, 24), f"{preset}: SNR {snr:.1f} dB"


@pytest.mark.parametrize(
    "preset, bits",
    [("mxfp4", 4.25), ("mxfp8_e4m3", 8.25), ("mxfp6_e2m3", 6.25), ("nvfp4", 4.5),
     ("int4_g128", 4.25), ("nf4_g64", 4.5), ("fp8_e4m3", 8.0), ("bf16", 16.0)],
)  # fmt: skip
def test_nbytes_is_the_packed_size(preset, bits):
  q = mxjax.quantize(jnp.ones((1024, 1024)), preset)
  # The per-tensor fp32 scales (NVFP4's tensor scale, FP8's scale) add 4 bytes in total.
  assert abs(q.bits_per_value - bits) < 1e-4, q.bits_per_value


def test_pytree_passes_jit_vmap_scan_device_put():
  x = jax.random.normal(jax.random.key(1), (4, 8, 64))
  q = mxjax.quantize(x, "mxfp4")
  assert len(jax.tree_util.tree_leaves(q)) == 2  # codes and scales; the rest is static
  y = jax.jit(lambda q: mxjax.dequantize(q))(q)
  assert np.array_equal(y, mxjax.dequantize(q))
  qv = jax.vmap(lambda x: mxjax.quantize(x, "mxfp4"))(x)
  assert qv.shape == x.shape and np.array_equal(mxjax.dequantize(qv), y)
  assert np.array_equal(jax.vmap(mxjax.dequantize)(qv), y)

  def body(c, xi):
    qi = mxjax.quantize(xi, "nvfp4")
    return c + mxjax.dequantize(qi).sum(), qi

  total, qs = jax.lax.scan(body, 0.0, x)
  assert qs.codes.shape == (4, 8, 32) and np.isfinite(float(total))
  qd = jax.device_put(q, jax.devices()[0])
  assert np.array_equal(mxjax.dequantize(qd), y)


def test_named_sharding():
  mesh = Mesh(np.array(jax.devices()[:1]), ("x",))
  q = mxjax.quantize(jnp.ones((8, 64)), "mxfp8_e4m3")
  sh = jax.tree_util.tree_map(lambda _: NamedSharding(mesh, PartitionSpec("x")), q)
  qs = jax.device_put(q, sh)
  assert np.array_equal(mxjax.dequantize(qs), mxjax.dequantize(q))


def test_jit_does_not_recompile():
  f = jax.jit(lambda x: mxjax.dequantize(mxjax.quantize(x, "mxfp4")))
  f(jnp.ones((4, 32)))
  n = f._cache_size()
  f(jnp.ones((4, 32)) * 2)  # same shape and dtype, new values
  assert f._cache_size() == n


def test_fake_quant_value_and_straight_through_gradient():
  x = jax.random.normal(jax.random.key(2), (8, 32), jnp.bfloat16)
  y = mxjax.fake_quant(x, "mxfp4")
  assert y.dtype == jnp.bfloat16
  assert np.array_equal(np.asarray(y), np.asarray(mxjax.dequantize(mxjax.quantize(x, "mxfp4"),
                                                                   jnp.bfloat16)))  # fmt: skip
  g = jax.grad(lambda x: (mxjax.fake_quant(x, "nvfp4").astype(jnp.float32) * 3).sum())(x)
  assert np.all(np.asarray(g, np.float32) == 3)


def test_tree_versions_and_plan():
  params = {"dense": {"kernel": jnp.ones((64, 32)), "bias": jnp.ones(32)}, "step": jnp.int32(0)}
  qt = mxjax.quantize_tree(params, "int8", axis=0)
  assert isinstance(qt["dense"]["kernel"], mxjax.QArray)
  assert not isinstance(qt["dense"]["bias"], mxjax.QArray)
  back = mxjax.dequantize_tree(qt)
  assert np.allclose(back["dense"]["kernel"], 1.0)
  plan = {p.path: p for p in mxjax.plan_tree(params, {"kernel": "mxfp4", "bias": None})}
  assert plan["dense/kernel"].scheme.name == "mxfp4"
  assert plan["dense/bias"].scheme is None and "keeps" in plan["dense/bias"].reason
  assert plan["step"].reason == "not floating point"


# Errors: each names the problem and the fix.


def test_block_not_dividing_names_axis_length_block_and_pad():
  with pytest.raises(ValueError, match=r"block size 32 does not divide axis 1 of length 48.*pad=True"):
    mxjax.quantize(jnp.ones((2, 48)), "mxfp4")


def test_unknown_preset_lists_close_names():
  with pytest.raises(ValueError, match="Did you mean 'mxfp4'"):
    mxjax.quantize(jnp.ones((2, 32)), "mxfp_4")


def test_integer_input_is_refused():
  with pytest.raises(TypeError, match=r"floating-point.*astype"):
    mxjax.quantize(jnp.ones((2, 32), jnp.int32), "mxfp4")


def test_stochastic_scheme_without_key():
  with pytest.raises(ValueError, match="PRNG key"):
    mxjax.quantize(jnp.ones((2, 32)), schemes.get("mxfp4", rounding="stochastic"))


def test_scheme_validation():
  with pytest.raises(ValueError, match="block_size"):
    mxjax.Scheme(element="e4m3", granularity="block")
  with pytest.raises(ValueError, match="scale_rule"):
    schemes.get("mxfp4", scale_rule="round")
  with pytest.raises(ValueError, match="unsigned"):
    mxjax.Scheme(element="uint4", block_size=32)
  with pytest.raises(ValueError, match="tensor_scale"):
    mxjax.Scheme(element="e2m1", block_size=16, scale="e4m3")
  with pytest.raises(ValueError, match="2-D blocks"):
    mxjax.quantize(jnp.ones(256), "fp8_e4m3_block128x128")


def test_preset_variation_keeps_a_readable_name():
  s = schemes.get("mxfp4", block_size=16)
  assert s.block_size == 16 and s.name == "mxfp4(block_size=16)"
  assert schemes.get("mxfp8_e4m3", scale_rule="rceil").describe().startswith("e4m3, block 32")


@pytest.mark.parametrize("module", ["mxjax.schemes", "mxjax.quantize"])
def test_docstring_examples_run(module):
  import doctest  # noqa: PLC0415
  import importlib  # noqa: PLC0415

  result = doctest.testmod(importlib.import_module(module))
  assert result.attempted > 0 and result.failed == 0
