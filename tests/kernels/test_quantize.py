"""Fused block quantization: every CPU-runnable implementation is bit-identical to mxjax.quantize.

The Mosaic GPU kernel cannot run in the CPU interpreter (TMA, register layouts); its portable
twin runs here, and experiments/bench_kernels.py checks the GPU kernel on the GPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mxjax
from pallas_kernels import quantize as pq
from pallas_kernels.quantize import api as qapi
from pallas_kernels.quantize import schemes as S
from pallas_kernels.quantize.testdata import rounding_midpoints

SCHEMES = sorted(S.SCHEMES)
CPU_IMPLS = ["xla", "portable"]


def _bits(a):
  a = np.asarray(a)
  return a.view(np.uint8) if a.dtype.itemsize == 1 else a.view(np.uint32)


def assert_same(got: pq.Quantized, want) -> None:
  for name in ("codes", "scale"):
    g, w = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
    assert g.dtype == w.dtype and g.shape == w.shape, (name, g.dtype, g.shape, w.dtype, w.shape)
    bad = int((_bits(g) != _bits(w)).sum())
    assert bad == 0, f"{name}: {bad} of {g.size} differ"
  if want.tensor_scale is None:
    assert got.tensor_scale is None
  else:
    np.testing.assert_array_equal(_bits(np.asarray(got.tensor_scale, np.float32)),
                                  _bits(np.asarray(want.tensor_scale, np.float32)))


def _data(key, shape, dtype):
  """Random values whose scale varies by ~e^3 between rows, plus special rows."""
  k1, k2 = jax.random.split(jax.random.key(key))
  x = jax.random.normal(k1, shape) * jnp.exp(3 * jax.random.normal(k2, (shape[0], 1)))
  x = x.at[0, : shape[1] // 2].set(0.0)  # all-zero blocks
  x = x.at[1, :7].set(1e-39)  # subnormal in f32
  x = x.at[2, 3].set(-0.0)
  return x.astype(dtype)


def _run(impl, x, scheme, transpose=False):
  # jit: eager dispatch would compile each of the integer long division's ops on its own.
  f = jax.jit(lambda x: pq.quantize(x, scheme, transpose=transpose, implementation=impl,
                                    interpret=impl in ("portable", "mosaic_tpu")))
  return f(x)


def _mx(x, scheme):
  return jax.jit(lambda x: mxjax.quantize(x, scheme))(x)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize(
    "scheme",
    # NVFP4's two passes take ~30 s to compile here: in the slow run (its TPU twin stays default).
    [pytest.param(s, marks=pytest.mark.slow) if s == "nvfp4" else s for s in SCHEMES],
)
def test_bit_exact_bf16(impl, scheme):
  x = _data(0, (16, 256), jnp.bfloat16)
  assert_same(_run(impl, x, scheme), _mx(x, scheme))


@pytest.mark.parametrize("scheme", [
    s if s in ("mxfp8_e4m3", "int4_g128") else pytest.param(s, marks=pytest.mark.slow)
    for s in SCHEMES])
def test_reference_bit_exact_f32(scheme):
  x = _data(1, (8, 512), jnp.float32)
  assert_same(_run("xla", x, scheme), _mx(x, scheme))


@pytest.mark.parametrize("scheme", ["mxfp8_e4m3", "int4_g128"])
def test_portable_f32(scheme):
  x = _data(2, (8, 256), jnp.float32)
  assert_same(_run("portable", x, scheme), _mx(x, scheme))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("scheme", ["mxfp8_e4m3", "mxfp4", "fp8_e4m3_block128"])
def test_transposed_is_quantize_of_transpose(impl, scheme):
  # portable: through the column-wise kernel's twin (x read untransposed).
  x = _data(3, (256, 64), jnp.bfloat16)
  assert_same(_run(impl, x, scheme, transpose=True), _mx(x.T, scheme))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_column_twin_every_scheme(scheme):
  # The column-wise decomposition for every scheme: blocks of B along M, 4-bit codes paired
  # along M, FP8 1x128 / INT4 in pieces (amax merged over pieces); special values (zero block,
  # f32 subnormals, -0) sit in the first columns, a NaN in one block of column 5.
  x = _data(6, (128, 256), jnp.bfloat16).T  # (256, 128): every block runs down a column
  x = x.at[40, 5].set(jnp.nan)
  got = pq.quantize(x, scheme, transpose=True, implementation="portable", interpret=True)
  assert_same(got, _mx(x.T, scheme))
  assert_same(pq.quantize(x.T, scheme, implementation="xla"), _mx(x.T, scheme))  # NaN: NVFP4


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("scheme", ["fp8_e4m3_block128", "int4_g128"])
def test_bit_exact_on_rounding_midpoints(impl, scheme):
  x = rounding_midpoints(7, 64, 256)
  want = _mx(x, scheme)
  assert_same(_run(impl, x, scheme), want)
  # The data must exercise the case: many quotients are exact ties of the element grid, and
  # x * RN(1 / s) alone would give other codes for some elements.
  s = np.asarray(want.scale, np.float32).repeat(128, axis=1)
  q = np.abs(np.asarray(x, np.float64)) / s
  if scheme == "int4_g128":
    ties = q - np.floor(q) == 0.5
    codes = np.asarray(want.codes)
    exact = np.stack([codes & 15, codes >> 4], -1).reshape(x.shape)
    naive = np.asarray(S._int4_code(jnp.asarray(np.asarray(x, np.float32) * (1 / s))))
  else:
    e4m3 = np.asarray(jnp.arange(127, dtype=jnp.uint8).view(jnp.float8_e4m3fn), np.float64)
    ties = np.isin(q, (e4m3[1:] + e4m3[:-1]) / 2)
    exact = np.asarray(want.codes).view(np.uint8)
    naive = np.asarray(S._e4m3_code(jnp.asarray(np.asarray(x, np.float32) * (1 / s))))
  assert ties.sum() > 2000, ties.sum()
  assert (naive != exact).sum() > 0


def test_nan_block_scale_is_nan_code():
  # The contract: a NaN in an MX block makes its scale 0xFF.
  x = jnp.ones((2, 64), jnp.bfloat16).at[0, 5].set(jnp.nan)
  for impl in CPU_IMPLS:
    q = _run(impl, x, "mxfp8_e4m3")
    assert np.asarray(q.scale).tolist() == [[255, 127], [127, 127]] or \
        np.asarray(q.scale)[0, 0] == 255, np.asarray(q.scale)


@pytest.mark.parametrize("scheme", ["mxfp4", "nvfp4"])
def test_tpu_kernel_interpret(scheme):
  x = _data(4, (128, 256), jnp.bfloat16)
  assert_same(_run("mosaic_tpu", x, scheme), _mx(x, scheme))


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["mxfp8_e4m3", "fp8_e4m3_block128", "int4_g128"])
def test_tpu_kernel_interpret_slow(scheme):
  x = _data(5, (128, 256), jnp.bfloat16)
  assert_same(_run("mosaic_tpu", x, scheme), _mx(x, scheme))


def test_e4m3_integer_decode_is_exact():
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  c = np.arange(128, dtype=np.int32)
  want = c.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(S._e4m3_value(jnp.asarray(c))), want)


def test_default_implementation_is_inspectable():
  # On this CPU backend every scheme defaults to the XLA reference.
  assert all(pq.api.default_implementation(s) == "xla" for s in SCHEMES)


def test_div_rn_int_is_correctly_rounded():
  rng = np.random.default_rng(0)
  a = (rng.standard_normal(20000) * np.exp(4 * rng.standard_normal(20000))).astype(np.float32)
  b = (np.abs(rng.standard_normal(20000)) * np.exp(4 * rng.standard_normal(20000)) + 1e-3)
  b = b.astype(np.float32)
  got = np.asarray(S.div_rn_int(jnp.asarray(a), jnp.asarray(b)))
  want = (a.astype(np.float64) / b.astype(np.float64)).astype(np.float32)
  assert (got.view(np.uint32) != want.view(np.uint32)).sum() == 0


def test_errors_are_raised_not_swallowed(monkeypatch):
  x = jnp.ones((4, 80), jnp.bfloat16)
  with pytest.raises(ValueError, match="multiple of the block"):
    pq.quantize(x, "mxfp4", implementation="xla")
  with pytest.raises(ValueError, match="supports"):
    pq.quantize(jnp.ones((4, 64)), "mxfp6_e3m2", implementation="xla")
  with pytest.raises(NotImplementedError, match="interpreter"):
    pq.quantize(jnp.ones((4, 64), jnp.bfloat16), "mxfp4", implementation="mosaic_gpu",
                interpret=True)
  with pytest.raises(NotImplementedError, match="bf16"):
    pq.quantize(jnp.ones((256, 64), jnp.float32), "mxfp4", implementation="mosaic_gpu")
  for scheme in ("int4_g128", "fp8_e4m3_block128", "nvfp4"):  # the fast, inexact variant
    with pytest.raises(NotImplementedError, match="allow_inexact"):
      pq.quantize(jnp.ones((256, 128), jnp.bfloat16), scheme, implementation="mosaic_gpu",
                  exact=False)
  monkeypatch.setitem(qapi.GPU_STATUS_COLUMNS, "nvfp4", "unverified on a GPU")
  with pytest.raises(NotImplementedError, match="unverified on a GPU"):  # a kernel not yet run
    pq.quantize(jnp.ones((256, 64), jnp.bfloat16), "nvfp4", transpose=True,
                implementation="mosaic_gpu")
  with pytest.raises(ValueError, match="implementation"):
    pq.quantize(jnp.ones((4, 64)), "mxfp4", implementation="cuda")
  with pytest.raises(ValueError, match="pad x"):  # 1536 blocks: not Mosaic TPU's 1-D tiling
    pq.quantize(jnp.ones((48, 1024), jnp.bfloat16), "mxfp8_e4m3", implementation="mosaic_tpu",
                interpret=True)
