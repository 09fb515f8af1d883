"""Fused block quantization: every CPU-runnable implementation is bit-identical to mxjax.quantize.

The Mosaic GPU kernel cannot run in the CPU interpreter (TMA, register layouts); its portable
twin runs here, and experiments/bench_kernels.py checks the GPU kernel on the GPU. The TPU
kernel's tests (TPU interpret mode) are in test_quantize_tpu.py.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mxjax
from pallas_kernels import quantize as pq
from pallas_kernels.quantize import api as qapi
from pallas_kernels.quantize import schemes as S
from pallas_kernels.quantize.testdata import rounding_midpoints
from tests.kernels.jaxprs import primitive_counts
from tests.reference import fma_f32

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
  # along M, in the GPU kernel's pieces (`PIECE`; whole blocks now); special values (zero block,
  # f32 subnormals, -0) sit in the first columns, a NaN in one block of column 5.
  x = _data(6, (128, 256), jnp.bfloat16).T  # (256, 128): every block runs down a column
  x = x.at[40, 5].set(jnp.nan)
  got = pq.quantize(x, scheme, transpose=True, implementation="portable", interpret=True)
  assert_same(got, _mx(x.T, scheme))
  assert_same(pq.quantize(x.T, scheme, implementation="xla"), _mx(x.T, scheme))  # NaN: NVFP4


@pytest.mark.parametrize("scheme", [pytest.param("fp8_e4m3_block128", marks=pytest.mark.slow),
                                    "int4_g128", "mxfp8_e4m3"])
def test_column_twin_piece_sizes(scheme):
  # `piece=`, the elements of a block encoded at once (the GPU sweep's knob): every size gives
  # mxjax's codes (the amax merged over the pieces first), on ties and special values; a piece
  # that does not split B into 8-row parts of each input tile is refused.
  from pallas_kernels.quantize.portable_columns import quantize_columns_portable
  from pallas_kernels.quantize.testdata import special_values
  sch = S.get_scheme(scheme)
  x = jnp.concatenate([rounding_midpoints(8, 64, 256), special_values(
      2, 64, 256, nonfinite=True).astype(jnp.bfloat16)]).T  # (256, 128): x.T's rows are these
  want = _mx(x.T, scheme)
  nx = 2 if sch.bits == 4 else 1  # 4-bit: a piece is split over the even and odd row tiles
  sizes = [p for p in (8, 16, 32, 64, 128) if p <= sch.block and (p // nx) % 8 == 0]
  assert len(sizes) >= 3
  for piece in sizes:
    assert_same(quantize_columns_portable(x, scheme, piece=piece, interpret=True), want)
  with pytest.raises(ValueError, match="piece=24 must divide B"):
    quantize_columns_portable(x, scheme, piece=24, interpret=True)


@pytest.mark.parametrize("scheme", ["mxfp8_e4m3", "fp8_e4m3_block128"])
def test_column_twin_pair_cast(scheme):
  # The column kernel's `pair_cast` decomposition: x viewed (M / 2, 2 K), the even and odd
  # rows' E4M3 codes cast a pair at a time and left as uint16 words (even m in the low byte):
  # mxjax's codes of x.T on ties and special values, with the GPU's cast modelled (its NaN
  # positive, as the GPU's arithmetic makes it; x86's default NaN is negative, which the
  # NaN-sign model would carry: `test_cast_nan_codes_are_mxjax_codes` covers the NaN models)
  # and an exact FMA called back from numpy.
  from pallas_kernels.quantize.portable_columns import quantize_columns_portable
  from pallas_kernels.quantize.testdata import special_values
  x = jnp.concatenate([rounding_midpoints(8, 64, 256), special_values(
      2, 64, 256, nonfinite=True).astype(jnp.bfloat16)]).T  # (256, 128): x.T's rows are these
  cast = _e4m3_satfinite_model(False)
  fma = lambda a, b, c: jax.pure_callback(
      fma_f32, jax.ShapeDtypeStruct(jnp.broadcast_shapes(a.shape, b.shape, c.shape),
                                       jnp.float32), a, b, c, vmap_method="broadcast_all")
  got = quantize_columns_portable(x, scheme, interpret=True, fma=fma,
                                  cast_pair=lambda lo, hi: cast(lo) | cast(hi) << 8)
  assert_same(got, _mx(x.T, scheme))


@pytest.mark.parametrize("scheme", ["mxfp4", "int4_g128"])
def test_column_twin_quad_pack(scheme):
  # The column kernel's `quad_pack` decomposition: x viewed (M / 4, 4 K), rows 4i .. 4i + 3 in
  # four tiles, two packed bytes one uint16 word: mxjax's codes of x.T on ties, special values
  # and a NaN block, whole blocks and (INT4 g128) in pieces; NVFP4's blocks of 16 are refused.
  from pallas_kernels.quantize.portable_columns import quantize_columns_portable
  from pallas_kernels.quantize.testdata import special_values
  x = jnp.concatenate([rounding_midpoints(8, 64, 256), special_values(
      2, 64, 256, nonfinite=True).astype(jnp.bfloat16)]).T  # (256, 128): x.T's rows are these
  x = x.at[77, 9].set(jnp.nan)
  want = _mx(x.T, scheme)
  for piece in (None, 32, 64) if scheme == "int4_g128" else (None,):
    got = quantize_columns_portable(x, scheme, piece=piece, quad_pack=True, interpret=True)
    assert_same(got, want)
  with pytest.raises(ValueError, match="piece=16 must divide B"):
    quantize_columns_portable(x, "int4_g128", piece=16, quad_pack=True, interpret=True)
  with pytest.raises(ValueError, match="leave it off"):
    quantize_columns_portable(x, "nvfp4", quad_pack=True, interpret=True)


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


@pytest.mark.parametrize("scheme", SCHEMES)
def test_infinite_elements_every_implementation(scheme):
  # A block whose amax is Inf has an infinite scale and +-Inf / Inf is NaN, whose sign IEEE
  # leaves open (x86 sets it, NVIDIA GPUs do not): mxjax.quantize gives every quotient x's sign,
  # so FP8 1x128 codes +Inf as 0x7F and -Inf as 0xFF on any backend, and the kernels agree.
  x = _data(5, (16, 1024), jnp.bfloat16)
  x = x.at[4, 7].set(jnp.nan).at[6, 300].set(-jnp.nan).at[8, 5].set(jnp.inf) \
      .at[9, 1000].set(-jnp.inf)
  want = _mx(x, scheme)
  if scheme == "fp8_e4m3_block128":
    codes = np.asarray(want.codes).view(np.uint8)
    assert (codes[8, 5], codes[9, 1000]) == (0x7F, 0xFF)
  if scheme in ("fp8_e4m3_block128", "int4_g128"):
    # NaN blocks store the one quiet NaN, whatever NaN the backend's division returns (a GPU
    # gives 0x7FFFFFFF): the GPU check found the kernel and mxjax storing different payloads.
    scale = np.asarray(want.scale, np.float32).view(np.uint32)
    assert scale[np.isnan(np.asarray(want.scale))].tolist() == [0x7FC00000] * 2
  for impl in CPU_IMPLS:
    assert_same(_run(impl, x, scheme), want)


def test_quotient_fma_gives_infinite_elements_their_sign():
  # The GPU's element encoder (an FMA quotient) on a block with an infinite scale (r = 0).
  x = jnp.array([[np.inf, -np.inf, 3.0, -3.0, 0.0, -0.0]], jnp.float32)
  s, r = jnp.array([np.inf], jnp.float32), jnp.array([0.0], jnp.float32)
  codes = np.asarray(S.quotient_fma(x, s, r, fma_f32, fp8=True))
  assert codes.tolist() == [[0x7F, 0xFF, 0x00, 0x80, 0x00, 0x80]]
  np.testing.assert_array_equal(codes, np.asarray(S.quotient_code(x, s, r, fp8=True)))


def test_default_implementation_is_inspectable(monkeypatch):
  # On this CPU backend every scheme defaults to the XLA reference.
  assert all(pq.api.default_implementation(s) == "xla" for s in SCHEMES)
  # On a GPU (patched in): the kernel for bf16 inputs it tiles and f32 row-wise (bit-exact on
  # the GPU since session 16), the reference otherwise (f32 column-wise).
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  x = jnp.ones((256, 256), jnp.bfloat16)
  for s in SCHEMES:
    for t in (False, True):
      assert pq.api.default_implementation(s, t, x) == "mosaic_gpu", (s, t)
      want = "xla" if t else "mosaic_gpu"
      assert pq.api.default_implementation(s, t, x.astype(jnp.float32)) == want, (s, t)
  assert pq.api.default_implementation("mxfp8_e4m3", False, x[:2, :64]) == "xla"  # 4 blocks
  assert "do not tile" in pq.api.gpu_unsupported(x[:2, :64], "mxfp8_e4m3")
  assert pq.api.default_implementation("int4_g128", True, x[:64]) == "xla"  # M < 128
  assert pq.api.default_implementation("mxfp8_e4m3", True, x[:64]) == "mosaic_gpu"


def _quotient_cases():
  """(x (rows, n), s (rows,)) float32: bf16 blocks with their real scales, midpoint ties, random
  float32 over a wide range, and zeros, -0, NaN and an infinite scale."""
  rng = np.random.default_rng(3)
  xs, ss = [], []
  for scheme in ("int4_g128", "fp8_e4m3_block128"):
    x = rounding_midpoints(11, 96, 512)
    xs.append(np.asarray(x, np.float32).reshape(-1, 128))
    ss.append(np.asarray(_mx(x, scheme).scale, np.float32).reshape(-1))
  x = (rng.standard_normal((512, 128)) * np.exp(6 * rng.standard_normal((512, 1))))
  x = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))  # bf16 values
  amax = np.abs(x).max(axis=1)
  for d in (7.0, 448.0):
    xs.append(x)
    ss.append((amax.astype(np.float64) / d).astype(np.float32))
  s = np.exp(rng.uniform(-60, 60, 2048)).astype(np.float32)  # random float32 quotients
  xs.append((s[:, None] * rng.uniform(-450, 450, (2048, 128))).astype(np.float32))
  ss.append(s)
  sp = np.full((4, 128), 3.0, np.float32)
  sp[0, :4] = [0.0, -0.0, np.nan, -np.nan]
  sp[1, :3] = [-0.0, -1.0, 2.0]
  xs.append(sp)
  ss.append(np.array([0.75, np.inf, 1e-30, 3.0], np.float32))
  return np.concatenate(xs), np.concatenate(ss)


_F32 = dict(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=60, deadline=None)
@given(a=hnp.arrays(np.float32, 256, elements=st.floats(-2.0**127, 2.0**127, **_F32)),
       b=st.floats(2.0**-100, 2.0**100, **_F32))
def test_div_fma_is_correctly_rounded(a, b):
  # Markstein's correction, with an exact FMA: RN(a / b) for any a with |a| >= 2^-100 (and
  # zeros), b in [2^-100, 2^100]; float64 division rounded to float32 is the oracle (exact: 53
  # bits >= 2 * 24 + 2).
  a = np.where(np.abs(a) < 2.0**-100, np.float32(0), a).astype(np.float32)
  b = np.float32(b)
  rb = np.float32(1.0 / np.float64(b))
  got = np.asarray(S.div_fma(jnp.asarray(a), b, rb, fma_f32))
  with np.errstate(over="ignore"):
    want = (a.astype(np.float64) / np.float64(b)).astype(np.float32)
  finite = np.isfinite(want)
  np.testing.assert_array_equal(got[finite].view(np.uint32) & 0x7FFFFFFF,
                                want[finite].view(np.uint32) & 0x7FFFFFFF)
  np.testing.assert_array_equal(np.signbit(got[finite & (want != 0)]),
                                np.signbit(want[finite & (want != 0)]))


@pytest.mark.parametrize("fp8", [True, False], ids=["e4m3", "int4"])
def test_quotient_fma_is_the_correctly_rounded_quotient(fp8):
  # The GPU kernels encode RN(x / s) with two FMAs (`quotient_fma`); with an exact FMA it must
  # give the codes of the correctly rounded quotient, as the integer midpoint test does.
  x, s = _quotient_cases()
  r = (1.0 / s.astype(np.float64)).astype(np.float32)
  xj, sj, rj = jnp.asarray(x), jnp.asarray(s), jnp.asarray(r)
  got = np.asarray(S.quotient_fma(xj, sj, rj, fma_f32, fp8=fp8))
  want = np.asarray(S.quotient_code(xj, sj, rj, fp8=fp8))
  bad = np.argwhere(got != want)
  assert bad.size == 0, [(x[i, j], s[i], got[i, j], want[i, j]) for i, j in bad[:5]]
  with np.errstate(invalid="ignore", divide="ignore"):
    q = (x.astype(np.float64) / s.astype(np.float64)[:, None]).astype(np.float32)
  code = S._e4m3_code if fp8 else S._int4_code
  finite = np.isfinite(s)[:, None] & ~np.isnan(x)
  np.testing.assert_array_equal(got[np.broadcast_to(finite, x.shape)],
                                np.asarray(code(jnp.asarray(q)))[np.broadcast_to(finite, x.shape)])
  # The cases are hard: x * RN(1 / s) alone gives other codes for many of them.
  assert (np.asarray(code(xj * rj[:, None])) != want).sum() > 100


def _fma_path(xs, scheme, **options):
  """(codes, state, mxjax's Quantized) of bf16 xs by the GPU kernels' element path
  (block_state + an exact-FMA quotient, `element_encoder`'s `options`) on 128-element rows,
  mxjax's codes unpacked alike."""
  from mxjax.formats.exact import div_rn
  sch = S.get_scheme(scheme)
  want = _mx(xs, scheme)
  b = jnp.asarray(np.asarray(xs, np.float32).reshape(-1, 128))
  state = S.block_state(sch, S.block_amax(b[:, 0::2], b[:, 1::2]), div=div_rn)
  got = np.asarray(S.element_encoder(sch, state, fma=fma_f32, **options)(b))
  codes = np.asarray(want.codes).view(np.uint8)
  if scheme == "int4_g128":
    codes = np.stack([codes & 15, codes >> 4], axis=-1)
  return got, codes.reshape(got.shape), state, want


@pytest.mark.parametrize("scheme", ["int4_g128", "fp8_e4m3_block128"])
def test_fma_element_path_on_tiny_blocks(scheme):
  # The GPU kernels' element path (block_state + an FMA quotient) on midpoint-tie blocks of
  # amax 2^-90 .. 2^-122: Markstein's correction fails for |x| below ~2^-100 (and 1 / s
  # overflows for the subnormal scales a GPU keeps), unless block_state lifts tiny blocks.
  x = np.asarray(rounding_midpoints(11, 96, 512), np.float32)
  for e in (-90, -100, -110, -118, -122):
    xs = jnp.asarray(x * np.float32(2.0**e) / np.abs(x).max()).astype(jnp.bfloat16)
    got, codes, state, want = _fma_path(xs, scheme)
    assert (codes != 0).sum() > 200, e  # the blocks are not all flushed to zero
    np.testing.assert_array_equal(got, codes, err_msg=f"amax 2^{e}")
    np.testing.assert_array_equal(_bits(np.asarray(state[0])),
                                  _bits(np.asarray(want.scale).reshape(-1)))


@pytest.mark.parametrize("scheme", ["int4_g128", "fp8_e4m3_block128"])
def test_fma_element_path_on_special_and_nonfinite_blocks(scheme):
  # The GPU kernels' element path (block_state + an FMA quotient) on the benchmark's special
  # and non-finite tensors (zero and subnormal blocks, +-max, NaN of either sign, +-Inf, Inf
  # beside NaN): mxjax.quantize's codes. INT4 masks the rows of an infinite scale with the zero
  # and NaN ones (their codes are all 0), so its quotients skip the NaN test, unless asked to
  # keep it (`int4_nan_test`, the column kernel's default): the same codes either way.
  from pallas_kernels.quantize.testdata import special_values
  for nonfinite, nan_test in itertools.product((False, True), (False, True)):
    got, codes, _, _ = _fma_path(special_values(5, 16, 512, nonfinite=nonfinite), scheme,
                                 int4_nan_test=nan_test)
    np.testing.assert_array_equal(got, codes, err_msg=f"{nonfinite=} {nan_test=}")
  if scheme == "int4_g128":  # one NaN test and its select an element fewer
    count = lambda fin: primitive_counts(jax.make_jaxpr(
        lambda x, s, r: S.quotient_fma(x, s, r, _fma_traceable, fp8=False, finite=fin))(
            jnp.ones((2, 4)), jnp.ones((2,)), jnp.ones((2,))).jaxpr)
    full, fin = count(False), count(True)
    assert full["ne"] - fin.get("ne", 0) == full["select_n"] - fin.get("select_n", 0) == 1


def _fma_traceable(a, b, c):
  return a * b + c  # a stand-in FMA, for tracing only


def test_nvfp4_block_state_with_fma_is_the_same():
  # The GPU kernels pass an FMA, and NVFP4's block divisions become `div_fma`s: the same state.
  from mxjax.formats.exact import div_rn
  rng = np.random.default_rng(5)
  amax_t = np.float32(np.exp(rng.uniform(-40, 40)))
  amax = np.concatenate([
      amax_t * rng.uniform(0, 1, 4096), amax_t * 2.0 ** -rng.uniform(0, 30, 4096),
      [0.0, amax_t, np.nan]]).astype(np.float32)
  amax = np.asarray(jnp.asarray(amax, jnp.bfloat16).astype(jnp.float32))  # bf16 amaxes
  for t in (amax_t, np.float32(np.inf), np.float32(0.0), np.float32(np.nan)):
    a = np.where(np.isfinite(t) & (amax > t), t, amax).astype(np.float32)
    _, *ts = S.tensor_scale_terms(jnp.float32(t), div=div_rn)
    nvfp4 = S.get_scheme("nvfp4")
    want = S.block_state(nvfp4, jnp.asarray(a), ts, div=div_rn)
    got = S.block_state(nvfp4, jnp.asarray(a), ts, div=div_rn, fma=fma_f32)
    for g, w in zip(got, want):
      np.testing.assert_array_equal(_bits(np.asarray(g)), _bits(np.asarray(w)), err_msg=str(t))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_nvfp4_tensor_amax_keeps_nan_and_inf(dtype):
  # The kernels' tensor amax is one integer max-reduction: it must equal max |x| and keep NaN.
  from mxjax.formats.exact import div_rn
  from pallas_kernels.quantize.reference import nvfp4_tensor_terms

  def check(x, want):
    got = np.float32(nvfp4_tensor_terms(x.astype(dtype))[0])
    ref = np.float32(S.tensor_scale_terms(jnp.float32(want), div=div_rn)[0])
    assert got.view(np.uint32) == ref.view(np.uint32) or (np.isnan(got) and np.isnan(ref))

  x = jax.random.normal(jax.random.key(4), (512, 1024)) * 3
  check(x, np.abs(np.asarray(x.astype(dtype), np.float32)).max())
  check(x.at[7, 9].set(-1e6), np.float32(np.asarray(jnp.asarray(1e6, dtype), np.float32)))
  check(x.at[300, 1000].set(-jnp.nan), np.nan)  # one NaN among 2^19, negative
  check(x.at[3, 4].set(jnp.nan).at[5, 6].set(jnp.inf), np.nan)
  check(x.at[3, 4].set(-jnp.inf), np.inf)


@pytest.mark.parametrize("impl,transpose", [
    ("xla", False), ("xla", True),
    # NVFP4's Pallas twins take ~30 s each to compile here: in the slow run.
    pytest.param("portable", False, marks=pytest.mark.slow),
    pytest.param("portable", True, marks=pytest.mark.slow),
    pytest.param("mosaic_tpu", False, marks=pytest.mark.slow)])
def test_given_tensor_amax_is_mxjax_static_amax(impl, transpose):
  # NVFP4 with a given tensor amax (no pass over x) is mxjax.quantize with that amax as the
  # scheme's static amax: the true amax gives the usual result, a smaller one saturates.
  import dataclasses
  x = _data(3, (256, 256), jnp.bfloat16)
  amax = float(jnp.max(jnp.abs(x.astype(jnp.float32))))
  xq = x.T if transpose else x
  for a in (amax, amax / 3, amax * 8):
    static = dataclasses.replace(mxjax.schemes.get("nvfp4"),
                                 scale_choice=mxjax.schemes.ScaleChoice.STATIC, static_amax=a)
    got = jax.jit(lambda x, a: pq.quantize(
        x, "nvfp4", transpose=transpose, implementation=impl, tensor_amax=a,
        interpret=impl != "xla"))(x, jnp.float32(a))
    assert_same(got, _mx(xq, static))
    if a == amax:
      assert_same(got, _mx(xq, "nvfp4"))


def test_tensor_amax_errors():
  x = jnp.ones((16, 256), jnp.bfloat16)
  with pytest.raises(ValueError, match="mxfp4 has no tensor scale: tensor_amax is NVFP4's"):
    pq.quantize(x, "mxfp4", implementation="xla", tensor_amax=jnp.float32(1.0))
  with pytest.raises(ValueError, match="tensor_amax must be one value"):
    pq.quantize(x, "nvfp4", implementation="xla", tensor_amax=jnp.ones((2,), jnp.float32))


def test_small_encoders_exhaustive_over_bf16():
  # `_e2m1_code` and `_int4_code` round by one magic-number addition: every bf16 value (and
  # its midpoints) against the float64 reference of the format.
  from tests import reference as R
  v = np.arange(2**16, dtype=np.uint32) << 16
  v = np.concatenate([v, v + (1 << 15)]).view(np.float32)  # bf16 values and their midpoints
  v = v[np.isfinite(v)]
  for code, name, lo, hi in ((S._e2m1_code, "e2m1", -6, 6), (_e2m1_code_by_compares, "e2m1", -6, 6),
                             (S._int4_code, "int4", -8, 7)):
    got = np.asarray(code(jnp.asarray(v)))
    want = R.round_codes(np.clip(v, lo, hi), name)
    np.testing.assert_array_equal(got & 15, want & 15, err_msg=code.__name__)


def test_e4m3_code_satfinite_is_the_clip_on_every_bf16_in_range():
  # `satfinite` (the GPU's saturating cast, no clip) changes nothing where the clip is the
  # identity: every bf16 value and midpoint in [-448, 448], and NaN of either sign (its code
  # keeps the sign either way). Out of range the cast saturates on the GPU and gives NaN on the
  # CPU: the GPU benchmark checks that part (`quantize.mosaic_gpu.SATFINITE_VERIFIED`).
  from tests import reference as R
  v = np.arange(2**16, dtype=np.uint32) << 16
  v = np.concatenate([v, v + (1 << 15)]).view(np.float32)
  v = v[np.isnan(v) | (np.abs(v) <= S.E4M3_MAX)]
  clip = np.asarray(S._e4m3_code(jnp.asarray(v)))
  np.testing.assert_array_equal(np.asarray(S._e4m3_code(jnp.asarray(v), satfinite=True)), clip)
  finite = ~np.isnan(v)
  np.testing.assert_array_equal(clip[finite], R.round_codes(v[finite], "e4m3") & 0xFF)


def _e2m1_code_by_compares(y):
  # An independent E2M1 encode for the test below: the piece of the grid picked by range
  # compares (spacing 1/2 on [0, 2), 1 on [2, 4), 2 on [4, 6]), not from the exponent field as
  # `_e2m1_code` does; checked itself against float64 on every bf16 above.
  a = jnp.abs(y)
  a = jnp.minimum(jnp.where(jnp.isnan(a), jnp.float32(0.0), a), jnp.float32(6.0))
  lo, hi = a < 2.0, a >= 4.0
  k = jnp.where(lo, jnp.float32(2.0), jnp.where(hi, jnp.float32(0.5), jnp.float32(1.0)))
  off = jnp.where(lo, jnp.int32(0), jnp.where(hi, jnp.int32(4), jnp.int32(2)))
  return ((S._rne_bits(a * k) & 7) + off) | (S._signbit(y) << 3)


def _e4m3_satfinite_model(nan_sign: bool):
  """The GPU's saturating E4M3 cast (cvt.rn.satfinite.e4m3x2.f32) as a CPU model: RNE, +-Inf
  and finite overflow to +-448, a NaN to 0x7F, or with `nan_sign` 0x7F with its sign (which
  one the hardware gives the GPU check says: `CAST_NAN_VERIFIED`)."""
  def cast(v):
    c = S._e4m3_code(v)  # clip, then the cast: satfinite's codes off NaN
    sign = S._sign_at(v, 7) if nan_sign else jnp.int32(0)
    return jnp.where(v != v, jnp.int32(0x7F) | sign, c)
  return cast


def _prmt(a, b, selector: int):
  """PTX `prmt.b32 d, a, b, selector` (default mode) on uint32 numpy arrays: d's byte i is byte
  (selector >> 4 i) & 7 of the eight bytes {b, a} (a's bytes 0-3, b's 4-7), its sign
  replicated where bit 3 of that nibble is set."""
  data = np.asarray(a, np.uint64) | np.asarray(b, np.uint64) << np.uint64(32)
  d = np.zeros(np.shape(a), np.uint64)
  for i in range(4):
    nib = (selector >> (4 * i)) & 15
    byte = (data >> np.uint64(8 * (nib & 7))) & np.uint64(0xFF)
    if nib & 8:
      byte = np.where(byte & np.uint64(0x80), np.uint64(0xFF), np.uint64(0))
    d |= byte << np.uint64(8 * i)
  return d.astype(np.uint32)


def test_pair_signs_selectors():
  # `_ptx.bf16_pair_signs`' permute (bytes 1 and 3 of the word to 0 and 1) and mask leave the
  # two bf16 halves' sign bits at bits 7 and 15, on every sign and byte pattern; and
  # `_ptx.f32_pair_signs`' (byte 3 of each of two float32 words) the two floats' signs there
  rng = np.random.default_rng(3)
  w, v = (rng.integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32) for _ in range(2))
  want = ((w >> 8) & 0x80) | ((w >> 16) & 0x8000)
  np.testing.assert_array_equal(_prmt(w, w, 0x31) & 0x8080, want)
  assert _prmt(np.uint32(0x80008000), np.uint32(0), 0x31) & 0x8080 == 0x8080
  np.testing.assert_array_equal(_prmt(w, v, 0x73) & 0x8080,
                                ((w >> 24) & 0x80) | ((v >> 16) & 0x8000))
  # `_ptx.bf16_pair_word`'s (bytes 2, 3 of each float32 word; test_lowering_quantize checks the kernel
  # holds that selector): the two bf16 values' pair word
  np.testing.assert_array_equal(_prmt(w, v, 0x7632), (w >> 16) | (v & 0xFFFF0000))


@pytest.mark.parametrize("scheme", ["mxfp8_e4m3", "fp8_e4m3_block128"])
def test_cast_nan_codes_are_mxjax_codes(scheme, monkeypatch):
  # `cast_nan`: E4M3 codes by the saturating cast alone, NaN included, the sign OR'd in from the
  # value (FP8 1x128: from x, as `quotient_fma`'s copysign gives it), one element at a time (the
  # column kernel) or a pair per cast (`cast_pair`, the row kernel's `_ptx.e4m3_pair`): with
  # the cast modelled either way a NaN may come out, every code is mxjax.quantize's, on ties,
  # special and non-finite blocks (the rows of an infinite FP8 1x128 scale give Inf / Inf).
  from mxjax.formats.exact import div_rn
  from pallas_kernels.quantize.testdata import special_values
  sch = S.get_scheme(scheme)
  xs = [rounding_midpoints(11, 48, 512), special_values(5, 16, 512),
        special_values(6, 16, 512, nonfinite=True)]
  for x, nan_sign in itertools.product(xs, (False, True)):
    cast = _e4m3_satfinite_model(nan_sign)
    b = jnp.asarray(np.asarray(x, np.float32).reshape(-1, sch.block))
    xe, xo = b[:, 0::2], b[:, 1::2]
    state = S.block_state(sch, S.block_amax(xe, xo), div=div_rn)
    codes = np.asarray(_mx(x, scheme).codes).view(np.uint8).reshape(b.shape).astype(np.int32)
    want = codes[:, 0::2] | codes[:, 1::2] << 8
    np.testing.assert_array_equal(np.asarray(S.block_encode(sch, state, xe, xo, fma=fma_f32)),
                                  want)
    pair = lambda lo, hi, c=cast: c(lo) | c(hi) << 8
    got = S.block_encode(sch, state, xe, xo, fma=fma_f32, cast_pair=pair)
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"pairs, {nan_sign=}")
    # `pair_signs`: the signs from x's bf16 pair words (mxjax's code takes x's sign whatever
    # the scale), by `_ptx.bf16_pair_signs`' byte permute modelled on the words
    words = np.asarray(xe.view(jnp.uint32) >> 16 | (xo.view(jnp.uint32) >> 16) << 16)
    signs = jnp.asarray(_prmt(words, words, 0x31) & 0x8080, jnp.int32)
    got = S.block_encode(sch, state, xe, xo, fma=fma_f32, cast_pair=pair, signs=signs)
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"pair signs, {nan_sign=}")
    with monkeypatch.context() as m:
      m.setattr(S, "_e4m3_cast", cast)
      enc = S.element_encoder(sch, state, fma=fma_f32, cast_nan=True)
      np.testing.assert_array_equal(np.asarray(enc(b)), codes, err_msg=f"elements, {nan_sign=}")
  # no NaN test and no select of it an element (MXFP8), no copysign (FP8 1x128)
  count = lambda **o: primitive_counts(jax.make_jaxpr(
      lambda b: S.element_encoder(sch, state, fma=_fma_traceable, **o)(b))(b).jaxpr)
  plain, cast = count(satfinite=True), count(cast_nan=True)
  assert cast.get("ne", 0) < plain["ne"], (plain, cast)
  assert cast.get("select_n", 0) < plain["select_n"], (plain, cast)
  with pytest.raises(ValueError, match="cast_nan is for E4M3 codes"):
    S.element_encoder(S.get_scheme("mxfp4"), state, cast_nan=True)
  with pytest.raises(ValueError, match="cast_pair is for E4M3 codes"):
    S.block_encode(S.get_scheme("int4_g128"), state, xe, xo, cast_pair=pair)


def test_pair_amax_arithmetic_is_block_amax():
  # `_ptx.bf16_pairs_amax_bits` (the row kernel's `pair_amax`) in numpy: each pair word's two
  # sign bits cleared, the halves maxed as unsigned 16-bit numbers (any order: `max.u16x2`
  # across a thread's words, then a quad's), the two halves folded, << 16. Integer order of the
  # cleared bf16 bits is the order of |x|, NaN of either sign above +Inf: `block_amax`'s bits
  # for blocks of every bf16 value, special ones packed in.
  from pallas_kernels.quantize.portable import bf16_pairs, unpair_bf16
  rng = np.random.default_rng(7)
  specials = np.array([0x7FC0, 0xFFC0, 0x7F81, 0x7F80, 0xFF80, 0x0001, 0x8001, 0x8000, 0x0000,
                       0x7F7F, 0xFF7F], np.uint16)
  bits = rng.integers(0, 2**16, (512, 64), dtype=np.uint16)
  sprinkled = rng.random(bits.shape) < 0.02
  bits[sprinkled] = rng.choice(specials, int(sprinkled.sum()))
  for i, v in enumerate(specials):  # rows holding one special among small values, or only it
    bits[i, :] = 0x0001 if i % 2 else 0x8000
    bits[i, (i * 7) % 64] = v
  bits[len(specials):len(specials) + 8] = 0  # all-zero blocks
  x = jnp.asarray(bits.view(jnp.bfloat16))
  words = np.asarray(bf16_pairs(x, 64))
  m = (words & np.uint32(0x7FFF7FFF)).reshape(words.shape[0], -1, 4)  # 4 threads share a row
  hi, lo = (m >> 16).max(axis=1), (m & 0xFFFF).max(axis=1)  # each thread's u16x2 max ...
  acc = np.maximum(hi, lo).max(axis=1)  # ... its halves folded, then the quad's max
  got = S.amax_from_bits(jnp.asarray((acc << 16).astype(np.int32)))
  want = S.block_amax(*unpair_bf16(jnp.asarray(words)))
  np.testing.assert_array_equal(np.asarray(got).view(np.uint32), np.asarray(want).view(np.uint32))
  assert np.isnan(np.asarray(want)).sum() >= 3 and np.isinf(np.asarray(want)).sum() >= 2


def test_column_pair_amax_is_block_amax_off_nan():
  # The column kernel's `pair_amax` (`_bf16_block_amax`: |x| and its max on the bf16 tiles,
  # then widened) is `block_amax` of the widened tiles for every non-NaN bf16, Inf, subnormals,
  # zeros of either sign included; a NaN it keeps through Mosaic's max.NaN.bf16x2, which the
  # GPU check covers (XLA's CPU max may drop one).
  from pallas_kernels.quantize.mosaic_gpu_columns import _bf16_block_amax
  rng = np.random.default_rng(9)
  bits = rng.integers(0, 2**16, (256, 64), dtype=np.uint16)
  bits[:8, :] = rng.choice(np.array([0x0001, 0x8001, 0x8000, 0x0000, 0x7F80, 0xFF80, 0x7F7F],
                                    np.uint16), (8, 64))
  bits[8:16, :] = 0x8000
  x = bits.view(jnp.bfloat16).astype(np.float32)
  x[np.isnan(x)] = 1.0
  t = jnp.asarray(x, jnp.bfloat16)
  for tiles in ([t], [t[:, :32], t[:, 32:]]):
    got = np.asarray(_bf16_block_amax(tiles))
    even, odd = tiles if len(tiles) == 2 else tiles * 2
    want = np.asarray(S.block_amax(even.astype(jnp.float32), odd.astype(jnp.float32)))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_e2m1_code_on_every_float32():
  # The kernels' E2M1 encode (`_e2m1_code`, by the exponent field) against the encode by range
  # compares on all 2^32 float32 bit patterns, NaN payloads, infinities, zeros and subnormals of
  # both signs included: 256 slices of 2^24 (~7 s on 2 CPU cores).
  @jax.jit
  def mismatches(start):
    y = lax.bitcast_convert_type(jnp.arange(1 << 24, dtype=jnp.uint32) + start, jnp.float32)
    return jnp.sum(S._e2m1_code(y) != _e2m1_code_by_compares(y))

  bad = [c for c in range(256) if int(mismatches(jnp.uint32(c << 24)))]
  assert not bad, f"slices (top bytes) with mismatches: {bad}"


@pytest.mark.parametrize("scheme", sorted(qapi.GPU_STATUS))
def test_f32_input_dataflow_of_the_gpu_kernel(scheme):
  # The GPU kernel's float32 path (`mosaic_gpu.f32_body`, GPU-only) in jnp: rows of one block,
  # the amax a row max of magnitude bits, each element encoded on its own into a code byte,
  # the bytes made `assemble`'s pairs (`reference.pairs_from_bytes`: 8-bit words by a bitcast,
  # 4-bit nibbles packed), against `mxjax.quantize` on f32 data with a wide range, ties of
  # x / s, specials and non-finites (NVFP4 with its tensor terms, as the kernel gets them).
  from mxjax.formats.exact import div_rn
  from pallas_kernels.quantize.reference import assemble, pairs_from_bytes, tensor_terms
  from pallas_kernels.quantize.testdata import special_values
  sch = S.get_scheme(scheme)
  key = jax.random.key(5)
  m, k = 64, 512
  wide = (jax.random.normal(key, (m, k)) * jnp.exp(3 * jax.random.normal(
      jax.random.fold_in(key, 1), (m, 1))))
  for x in (wide, rounding_midpoints(9, m, k).astype(jnp.float32),
            special_values(4, m, k, nonfinite=True).astype(jnp.float32)):
    xb = x.astype(jnp.float32).reshape(-1, sch.block)
    amax = S.amax_from_bits(jnp.max(S.magnitude_bits(xb), axis=1))
    s_t, terms = tensor_terms(sch, x)
    state = S.block_state(sch, amax, None if terms is None else tuple(terms), div=div_rn)
    codes = S.element_encoder(sch, state)(xb).astype(jnp.uint8)
    q = assemble(sch, pairs_from_bytes(sch, codes), state[0], m, k, s_t)
    want = mxjax.quantize(x, scheme)
    for got, ref in ((q.codes, want.codes), (q.scale, want.scale),
                     (q.tensor_scale, want.tensor_scale)):
      if ref is not None:
        np.testing.assert_array_equal(np.asarray(got).view(np.uint8).ravel(),
                                      np.asarray(ref).view(np.uint8).ravel())


def test_quantize_f32_pack_nibbles_dataflow():
  # The packing `pack_nibbles` does, in jnp: code bytes stored in element order, read back as
  # little-endian uint16 words, a word's two nibbles made one byte (`nibbles_from_words`),
  # against numpy's packing of every pair of 4-bit codes.
  from pallas_kernels.quantize.reference import nibbles_from_words, pairs_from_bytes
  lo, hi = np.meshgrid(np.arange(16, dtype=np.uint8), np.arange(16, dtype=np.uint8))
  codes = np.stack([lo.ravel(), hi.ravel()], axis=1).reshape(16, 32)  # every pair, 16 a row
  words = codes.view("<u2")  # as the kernel's scratch holds them
  want = codes[:, 0::2] | (codes[:, 1::2] << 4)
  np.testing.assert_array_equal(np.asarray(nibbles_from_words(jnp.asarray(words))), want)
  np.testing.assert_array_equal(
      np.asarray(pairs_from_bytes(S.get_scheme("mxfp4"), jnp.asarray(codes))), want)


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
    pq.quantize(jnp.ones((256, 64), jnp.float16), "mxfp4", implementation="mosaic_gpu")
  with pytest.raises(NotImplementedError, match="column-wise quantization takes 2-D bf16"):
    pq.quantize(jnp.ones((256, 256), jnp.float32), "mxfp4", implementation="mosaic_gpu",
                transpose=True)  # f32 runs row-wise only
  monkeypatch.setitem(qapi.GPU_STATUS_COLUMNS, "nvfp4", "unverified on a GPU")
  with pytest.raises(NotImplementedError, match="unverified on a GPU"):  # a kernel not yet run
    pq.quantize(jnp.ones((256, 64), jnp.bfloat16), "nvfp4", transpose=True,
                implementation="mosaic_gpu")
  with pytest.raises(ValueError, match="implementation"):
    pq.quantize(jnp.ones((4, 64)), "mxfp4", implementation="cuda")
  with pytest.raises(ValueError, match="pad x"):  # M = 48: the TPU kernel takes 128 rows a step
    pq.quantize(jnp.ones((48, 1024), jnp.bfloat16), "mxfp8_e4m3", implementation="mosaic_tpu",
                interpret=True)
