"""Gradients of mxjax.ops: straight-through, quantized dgrad / wgrad, xla against reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import mxjax
from mxjax.ops import DotSchemes, GradMode

HI = lax.Precision.HIGHEST


def _rand(seed, shape, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, dtype)


def _ints(seed, shape, lo=-6, hi=7):
  return jnp.asarray(np.random.default_rng(seed).integers(lo, hi, shape).astype(np.float32))


@functools.partial(jax.jit, static_argnames=("spec", "schemes", "backend"))
def _jit_grads(x, w, c, key, *, spec, schemes, backend):
  def loss(x, w):
    out = mxjax.einsum(spec, x, w, schemes=schemes, backend=backend, key=key)
    return jnp.sum(out.astype(jnp.float32) * c)

  return jax.grad(loss, argnums=(0, 1))(x, w)


def _grads(spec, x, w, c, schemes, backend, key=None):
  # Jitted with static configuration, so repeated configurations compile once.
  return _jit_grads(x, w, c, key, spec=spec, schemes=schemes, backend=backend)


def test_ste_is_gradient_of_fake_quant():
  x, w, c = _rand(0, (8, 64)), _rand(1, (64, 32)), _rand(2, (8, 32))
  s = DotSchemes(lhs="mxfp8_e4m3", rhs="mxfp4", grad="fp8_e5m2", mode=GradMode.STE)
  gx, gw = _grads("mk,kn->mn", x, w, c, s, "reference")

  def fq_loss(x, w):
    xq = mxjax.fake_quant(x, "mxfp8_e4m3", axis=1)
    wq = mxjax.fake_quant(w, "mxfp4", axis=0)
    return jnp.sum(jnp.dot(xq, wq, precision=HI) * c)

  fx, fw = jax.grad(fq_loss, argnums=(0, 1))(x, w)
  np.testing.assert_allclose(gx, fx, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gw, fw, rtol=1e-6, atol=1e-6)
  # The straight-through gradient ignores the gradient scheme: d_out stays in high precision.
  gx2, _ = _grads("mk,kn->mn", x, w, c, s.__class__(lhs="mxfp8_e4m3", rhs="mxfp4",
                                                      mode="ste"), "reference")  # fmt: skip
  np.testing.assert_array_equal(gx, gx2)


def test_quantized_backward_quantizes_along_backward_contraction():
  # dgrad d_x = Q_g(d_out) . Q_rhs(w)^T contracts N; wgrad d_w = Q_lhs(x)^T . Q_g(d_out)
  # contracts M: each operand is blocked along that axis.
  x, w, c = _rand(3, (32, 64)), _rand(4, (64, 96)), _rand(5, (32, 96))
  s = DotSchemes(lhs="mxfp8_e4m3", rhs="mxfp8_e4m3", grad="mxfp8_e5m2")
  gx, gw = _grads("mk,kn->mn", x, w, c, s, "reference")
  dq = lambda a, sch, ax: mxjax.dequantize(mxjax.quantize(a, sch, axis=ax))  # noqa: E731
  want_gx = jnp.dot(dq(c, "mxfp8_e5m2", 1), dq(w, "mxfp8_e4m3", 1).T, precision=HI)
  want_gw = jnp.dot(dq(x, "mxfp8_e4m3", 0).T, dq(c, "mxfp8_e5m2", 0), precision=HI)
  np.testing.assert_allclose(gx, want_gx, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gw, want_gw, rtol=1e-6, atol=1e-6)
  # It differs from the straight-through gradient (the test can fail).
  ste = _grads("mk,kn->mn", x, w, c, DotSchemes(lhs="mxfp8_e4m3", rhs="mxfp8_e4m3", mode="ste"),
               "reference")  # fmt: skip
  assert not np.allclose(gx, ste[0], rtol=1e-3, atol=1e-3)


def test_grad_schemes_default_to_forward_and_high_precision_d_out():
  x, w, c = _rand(6, (16, 64)), _rand(7, (64, 32)), _rand(8, (16, 32))
  s = DotSchemes(lhs="fp8_e4m3", rhs="fp8_e4m3")
  gx, _ = _grads("mk,kn->mn", x, w, c, s, "reference")
  dqw = mxjax.dequantize(mxjax.quantize(w, "fp8_e4m3", axis=1))
  np.testing.assert_allclose(gx, jnp.dot(c, dqw.T, precision=HI), rtol=1e-6, atol=1e-6)
  s = DotSchemes(lhs="fp8_e4m3", rhs="fp8_e4m3", grad_rhs=None)
  gx, _ = _grads("mk,kn->mn", x, w, c, s, "reference")
  np.testing.assert_allclose(gx, jnp.dot(c, w.T, precision=HI), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["quantized", "ste"])
def test_xla_grad_equals_reference_exactly(mode):
  # Integer values under E8M0 scales make every step exact: the two backends agree bit for bit.
  x, w, c = _ints(0, (2, 16, 64)), _ints(1, (64, 32)), _ints(2, (2, 16, 32))
  s = DotSchemes(lhs="mxfp8_e4m3", rhs="mxfp4", grad="mxfp8_e5m2", mode=mode)
  ref = _grads("btk,kn->btn", x, w, c, s, "reference")
  got = _grads("btk,kn->btn", x, w, c, s, "xla")
  for r, g in zip(ref, got):
    np.testing.assert_array_equal(g, r)
  assert np.abs(np.asarray(ref[1])).max() > 0


def test_xla_grad_matches_reference_random():
  x, w, c = _rand(9, (3, 5, 256), jnp.bfloat16), _rand(10, (24, 256)), _rand(11, (3, 5, 24))
  s = DotSchemes(lhs="fp8_e4m3", rhs="fp8_e4m3_rowwise", grad="fp8_e5m2")
  ref = _grads("btk,nk->btn", x, w, c, s, "reference")
  got = _grads("btk,nk->btn", x, w, c, s, "xla")
  assert got[0].dtype == jnp.bfloat16 and got[1].dtype == jnp.float32
  for r, g in zip(ref, got):
    r, g = np.asarray(r, np.float32), np.asarray(g, np.float32)
    assert np.linalg.norm(g - r) <= 1e-2 * np.linalg.norm(r)  # bf16 output of d_x


@pytest.mark.parametrize(
    "fwd,grad",
    [("fp8_e4m3", "fp8_e5m2"), pytest.param("nvfp4", "nvfp4", marks=pytest.mark.slow)],
)
def test_stochastic_gradient_scheme_needs_key(fwd, grad):
  x, w, c = _rand(12, (16, 64)), _rand(13, (64, 32)), _rand(14, (16, 32))
  s = DotSchemes(lhs=fwd, rhs=fwd, grad=mxjax.schemes.get(grad, rounding="stochastic"))
  assert s.stochastic
  with pytest.raises(ValueError, match="key"):
    _grads("mk,kn->mn", x, w, c, s, "reference")
  k1, k2 = jax.random.key(1), jax.random.key(2)
  a = _grads("mk,kn->mn", x, w, c, s, "reference", key=k1)
  b = _grads("mk,kn->mn", x, w, c, s, "reference", key=k1)
  d = _grads("mk,kn->mn", x, w, c, s, "reference", key=k2)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], d[0])
  e = _grads("mk,kn->mn", x, w, c, s, "xla", key=k1)
  np.testing.assert_allclose(e[0], a[0], rtol=1e-5, atol=1e-5)


def test_qarray_operand_is_constant():
  # A QArray weight is a constant: no gradient, and d_x uses its exact dequantized value.
  x, w, c = _rand(15, (4, 64)), _rand(16, (64, 8)), _rand(17, (4, 8))
  wq = mxjax.quantize(w, "int4_g128", axis=0, pad=True)

  def loss(x, wq):
    return jnp.sum(mxjax.einsum("mk,kn->mn", x, wq, schemes=("fp8_e4m3", None)) * c)

  gx = jax.grad(loss)(x, wq)
  dw = mxjax.dequantize(wq)
  np.testing.assert_allclose(gx, jnp.dot(c, dw.T, precision=HI), rtol=1e-6, atol=1e-6)


def test_vmap_of_grad():
  x, w = _rand(18, (3, 4, 64)), _rand(19, (64, 32))
  s = DotSchemes(lhs="mxfp8_e4m3", rhs="mxfp8_e4m3", grad="mxfp8_e5m2")

  def loss(x):
    return jnp.sum(mxjax.einsum("mk,kn->mn", x, w, schemes=s) ** 2)

  g = jax.vmap(jax.grad(loss))(x)
  np.testing.assert_allclose(g[1], jax.grad(loss)(x[1]), rtol=1e-6, atol=1e-6)


_SIMPLE = pytest.mark.slow  # plain cases, covered by the einsum gradient tests
DIM_CASES = [
    pytest.param((5, 7), (7, 3), (((1,), (0,)), ((), ())), marks=_SIMPLE),
    pytest.param((5, 7), (3, 7), (((1,), (1,)), ((), ())), marks=_SIMPLE),
    pytest.param((2, 5, 7), (2, 7, 3), (((2,), (1,)), ((0,), (0,))), marks=_SIMPLE),
    ((4, 2, 6), (6, 3, 4), (((2,), (0,)), ((0,), (2,)))),  # batch dims in different places
    ((3, 4, 6), (4, 6, 5), (((1, 2), (0, 1)), ((), ()))),  # two contracting dims
    ((3, 6, 4), (4, 5, 6), (((2, 1), (0, 2)), ((), ()))),  # contracting pairs out of order
    ((2, 3, 4, 5), (5, 2, 4), (((3, 2), (0, 2)), ((0,), (1,)))),
]


@pytest.mark.parametrize("ls,rs,dims", DIM_CASES)
def test_backward_dimension_numbers_match_jax(ls, rs, dims):
  # With no quantization the custom VJP must be exactly lax.dot_general's gradient.
  x, w = _rand(20, ls), _rand(21, rs)
  c = _rand(22, jax.eval_shape(lambda: lax.dot_general(x, w, dims)).shape)

  def ours(x, w):
    return jnp.sum(mxjax.dot_general(x, w, dims, backend="reference") * c)

  def theirs(x, w):
    return jnp.sum(lax.dot_general(x, w, dims, precision=HI) * c)

  for g, want in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(theirs, (0, 1))(x, w)):
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
