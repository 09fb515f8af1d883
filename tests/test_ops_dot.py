"""mxjax.ops.dot_general / einsum: backends against the reference, dispatch, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import mxjax
from mxjax import ops
from mxjax.ops.dims import plan_einsum


def _rand(seed, shape, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, dtype)


def _rel(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


# ------------------------------------------------------------------ einsum -> dot_general plans

_PLAIN = pytest.mark.slow  # translations the other specs and the xla tests already exercise
SPECS = [
    pytest.param("mk,kn->mn", (5, 7), (7, 3), marks=_PLAIN),
    pytest.param("mk,nk->mn", (5, 7), (3, 7), marks=_PLAIN),
    pytest.param("btd,df->btf", (2, 3, 8), (8, 5), marks=_PLAIN),
    ("btd,fd->bft", (2, 3, 8), (5, 8)),  # output transposed
    ("bhd,hdf->bf", (3, 4, 6), (4, 6, 5)),  # two contracting dims
    pytest.param("bmk,bkn->bmn", (2, 3, 4), (2, 4, 5), marks=_PLAIN),  # batch dim
    ("mk,bkn->bnm", (3, 4), (2, 4, 5)),
    ("...d,df->...f", (2, 3, 4, 8), (8, 5)),
    ("...d,...d->...", (2, 3, 8), (2, 3, 8)),
    ("k,k->", (9,), (9,)),
]


@pytest.mark.parametrize("spec,ls,rs", SPECS)
def test_einsum_plan_matches_jnp_einsum(spec, ls, rs):
  a, b = _rand(0, ls), _rand(1, rs)
  got = mxjax.einsum(spec, a, b, backend="reference")
  want = jnp.einsum(spec, a, b, precision=lax.Precision.HIGHEST)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", ["mk,kn", "mk,kn,np->mp", "mk,kn->mq", "mkk,kn->mn", "mk,n->mn"])
def test_einsum_bad_specs_raise(spec):
  with pytest.raises(ValueError):
    plan_einsum(spec, 3 if "kk" in spec else 2, 1 if spec.startswith("mk,n-") else 2)


def test_dimension_numbers_validated():
  a, b = _rand(0, (4, 6)), _rand(1, (5, 3))
  with pytest.raises(ValueError, match="paired"):
    mxjax.dot_general(a, b, (((1,), (0,)), ((), ())))
  with pytest.raises(ValueError, match="out of range"):
    mxjax.dot_general(a, b, (((2,), (0,)), ((), ())))


# ------------------------------------------------------------------ reference backend


def test_reference_without_schemes_is_f32_dot():
  a, b = _rand(0, (9, 33)), _rand(1, (33, 11))
  got = mxjax.dot_general(a, b, (((1,), (0,)), ((), ())), backend="reference")
  want = lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=lax.Precision.HIGHEST)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "scheme", ["fp8_e4m3", "mxfp4", pytest.param("nf4_g64_dq", marks=pytest.mark.slow)]
)
def test_reference_is_dequantize_then_dot(scheme):
  a, b = _rand(0, (6, 256)), _rand(1, (256, 10))
  got = mxjax.dot_general(a, b, (((1,), (0,)), ((), ())), lhs_scheme=scheme, rhs_scheme=scheme,
                          backend="reference")  # fmt: skip
  da = mxjax.dequantize(mxjax.quantize(a, scheme, axis=1))
  db = mxjax.dequantize(mxjax.quantize(b, scheme, axis=0))
  want = lax.dot_general(da, db, (((1,), (0,)), ((), ())), precision=lax.Precision.HIGHEST)
  np.testing.assert_array_equal(got, want)


def test_reference_pads_blocks_along_k():
  # K = 100 is no multiple of 32: operands are zero-padded along K, which adds nothing.
  a, b = _rand(0, (3, 100)), _rand(1, (100, 4))
  got = mxjax.einsum("mk,kn->mn", a, b, schemes=("mxfp8_e4m3", None), backend="reference")
  qa = mxjax.quantize(a, "mxfp8_e4m3", axis=1, pad=True)
  want = mxjax.dequantize(qa) @ b
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_output_dtype():
  a, b = _rand(0, (4, 64), jnp.bfloat16), _rand(1, (64, 8), jnp.bfloat16)
  out = mxjax.einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", "fp8_e4m3"))
  assert out.dtype == jnp.bfloat16
  out = mxjax.einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", "fp8_e4m3"),
                     preferred_element_type=jnp.float32)  # fmt: skip
  assert out.dtype == jnp.float32


# ------------------------------------------------------------------ xla against reference

# (scheme lhs, scheme rhs): per-tensor, per-channel, block-scaled, two-level, integer.
XLA_CASES = [
    ("fp8_e4m3", "fp8_e4m3"),
    ("fp8_e5m2", "fp8_e4m3"),
    ("fp8_e4m3_rowwise", "fp8_e4m3_rowwise"),
    ("fp8_e4m3_rowwise", "fp8_e4m3"),
    ("mxfp8_e4m3", "mxfp8_e4m3"),
    ("mxfp6_e3m2", "mxfp6_e2m3"),
    ("mxfp4", "mxfp4"),
    ("nvfp4", "nvfp4"),
    ("fp8_e4m3_block128", "fp8_e4m3_block128x128"),
    ("fp8_e4m3_block128", "fp8_e4m3"),  # blocks on one side only
    ("mxfp8_e4m3", "nvfp4"),  # blocks of 32 and 16
    ("int8", "int8"),
    ("int4_g128", "int8"),
    ("int4_g128_asym", "int4_g128"),
    ("mxint8", "mxint8"),
]
# Covered by their neighbours' code paths; run in the slow suite only.
_SLOW_XLA = {("fp8_e4m3_rowwise", "fp8_e4m3"), ("fp8_e4m3_block128", "fp8_e4m3"),
             ("int4_g128", "int8"), ("mxint8", "mxint8"), ("fp8_e5m2", "fp8_e4m3")}  # fmt: skip

# (spec, lhs shape, rhs shape): odd free sizes, batch dims, weights N x K, two contracting dims.
XLA_SHAPES = [
    ("mk,kn->mn", (7, 256), (256, 5)),  # 5 columns: 2-D 128x128 blocks pad N
    ("btk,nk->btn", (2, 3, 256), (9, 256)),
    ("bmk,bkn->bnm", (3, 5, 128), (3, 128, 7)),
]


# Each scheme pair runs on one of the shapes (cycling), to keep the suite's compiles few.
@pytest.mark.parametrize(
    "ls,rs,spec,lshape,rshape",
    [pytest.param(*c, *XLA_SHAPES[0 if "128x128" in c[1] else i % len(XLA_SHAPES)],
                  marks=[pytest.mark.slow] if c in _SLOW_XLA else [])
     for i, c in enumerate(XLA_CASES)],  # fmt: skip
)
def test_xla_matches_reference(ls, rs, spec, lshape, rshape):
  a, b = _rand(2, lshape), _rand(3, rshape) * 0.01
  ref = mxjax.einsum(spec, a, b, schemes=(ls, rs), backend="reference")
  got = mxjax.einsum(spec, a, b, schemes=(ls, rs), backend="xla")
  assert got.shape == ref.shape and got.dtype == ref.dtype
  assert np.isfinite(np.asarray(got)).all()
  assert _rel(got, ref) < 2e-6, _rel(got, ref)


def test_xla_two_contracting_dims_blocked():
  a, b = _rand(4, (5, 3, 64)), _rand(5, (3, 64, 6))
  for sch in ("mxfp8_e4m3",):  # per-K-block chunks along one of two contracting dims
    ref = mxjax.einsum("bhd,hdf->bf", a, b, schemes=(sch, sch), backend="reference")
    got = mxjax.einsum("bhd,hdf->bf", a, b, schemes=(sch, sch), backend="xla")
    assert _rel(got, ref) < 2e-6, (sch, _rel(got, ref))


def test_xla_exact_on_integer_valued_mx():
  # Small integers under power-of-two (E8M0) scales: every element, product and partial sum is
  # exact in float32, so xla and reference agree bit for bit.
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.integers(-6, 7, (5, 3, 64)).astype(np.float32))
  b = jnp.asarray(rng.integers(-6, 7, (11, 64)).astype(np.float32))
  for sch in ("mxfp8_e4m3", "mxfp4"):
    ref = mxjax.einsum("btk,nk->btn", a, b, schemes=(sch, sch), backend="reference")
    got = mxjax.einsum("btk,nk->btn", a, b, schemes=(sch, sch), backend="xla")
    np.testing.assert_array_equal(got, ref)


def test_xla_mx_scale_two_to_the_minus_127():
  # Blocks with amax near 2^-119 get the E8M0 scale 2^-127 (b = 0), an f32 subnormal that the
  # CPU flushes: the xla backend must apply it as two normal factors, like dequantize does.
  rng = np.random.default_rng(1)
  b = jnp.asarray(rng.integers(-6, 7, (64, 5)).astype(np.float32) * 2.0**100)
  for sch, emax in (("mxfp8_e4m3", 8), ("mxfp4", 2)):
    e = emax - 127  # floor(log2(amax)) that gives b = 0
    a = jnp.asarray(rng.choice([-1.5, -1.0, -0.5, 0.5, 1.0], (3, 64)).astype(np.float32))
    a = a.at[:, ::32].set(1.5) * jnp.float32(2.0**e)
    qa = mxjax.quantize(a, sch, axis=-1)
    assert int(qa.scale.min()) == 0, (sch, qa.scale)
    ref = mxjax.einsum("mk,kn->mn", a, b, schemes=(sch, sch), backend="reference")
    got = mxjax.einsum("mk,kn->mn", a, b, schemes=(sch, sch), backend="xla")
    assert np.abs(np.asarray(ref)).min() > 0
    np.testing.assert_array_equal(got, ref)


def test_xla_weight_only_dequantize_then_dot():
  a = _rand(6, (4, 256), jnp.bfloat16)
  b = _rand(7, (256, 12))
  ref = mxjax.einsum("mk,kn->mn", a, b, schemes=(None, "int4_g128"), backend="reference")
  got = mxjax.einsum("mk,kn->mn", a, b, schemes=(None, "int4_g128"), backend="xla")
  # The xla path rounds the dequantized weight to bf16 (documented); bf16-level agreement.
  assert _rel(got.astype(jnp.float32), ref.astype(jnp.float32)) < 1e-2


def test_xla_under_jit_and_vmap():
  a, b = _rand(8, (4, 6, 128)), _rand(9, (128, 10))
  wq = mxjax.quantize(b, "mxfp8_e4m3", axis=0)

  def f(x):
    return mxjax.einsum("tk,kn->tn", x, wq, schemes=("mxfp8_e4m3", None), backend="xla")

  jf = jax.jit(f)
  eager = jnp.stack([jf(a[i]) for i in range(4)])
  np.testing.assert_allclose(jax.jit(jax.vmap(f))(a), eager, rtol=1e-6, atol=1e-6)
  # vmap over a stack of QArray weights too.
  wqs = jax.vmap(lambda w: mxjax.quantize(w, "fp8_e4m3_rowwise", axis=0))(jnp.stack([b, -b]))
  out = jax.vmap(lambda w: mxjax.einsum("tk,kn->tn", a[0], w, schemes=("fp8_e4m3", None),
                                        backend="xla"))(wqs)  # fmt: skip
  np.testing.assert_allclose(out[0], -out[1], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ QArray operands


def test_qarray_operand_equals_on_the_fly():
  a, b = _rand(10, (5, 64)), _rand(11, (7, 64))  # weight stored N x K
  wq = mxjax.quantize(b, "mxfp4", axis=1)
  for backend in ("reference", "xla"):
    got = mxjax.einsum("mk,nk->mn", a, wq, schemes=("mxfp4", None), backend=backend)
    want = mxjax.einsum("mk,nk->mn", a, b, schemes=("mxfp4", "mxfp4"), backend=backend)
    np.testing.assert_array_equal(got, want)


def test_qarray_blocked_along_wrong_axis_raises():
  a, b = _rand(12, (5, 64)), _rand(13, (64, 32))
  wq = mxjax.quantize(b, "mxfp4", axis=1)  # blocks along N, but the dot contracts K
  with pytest.raises(ValueError, match="contraction axis"):
    mxjax.einsum("mk,kn->mn", a, wq)
  # A per-tensor QArray has no axis to honour.
  wt = mxjax.quantize(b, "fp8_e4m3", axis=1)
  mxjax.einsum("mk,kn->mn", a, wt)


def test_qarray_with_different_scheme_raises():
  wq = mxjax.quantize(_rand(14, (64, 8)), "mxfp4", axis=0)
  with pytest.raises(ValueError, match="already a QArray"):
    mxjax.einsum("mk,kn->mn", _rand(15, (2, 64)), wq, schemes=(None, "nvfp4"))


def test_block_scheme_without_contraction_raises():
  with pytest.raises(ValueError, match="no contraction axis"):
    mxjax.einsum("m,n->mn", _rand(0, (64,)), _rand(1, (32,)), schemes=("mxfp4", None))


# ------------------------------------------------------------------ dispatch


def test_named_backend_that_cannot_run_raises_with_reason():
  a, b = _rand(0, (4, 64)), _rand(1, (64, 8))
  with pytest.raises(ValueError, match="lookup table"):
    mxjax.einsum("mk,kn->mn", a, b, schemes=("nf4_g64", "nf4_g64"), backend="xla")
  with pytest.raises(ValueError, match="integer operand times a float"):
    mxjax.einsum("mk,kn->mn", a, b, schemes=("int8", "fp8_e4m3"), backend="xla")
  with pytest.raises(ValueError, match="no Pallas kernel"):
    mxjax.einsum("mk,kn->mn", a, b, schemes=("mxfp8_e4m3", "mxfp8_e4m3"), backend="pallas")
  with pytest.raises(ValueError, match="accumulation"):
    mxjax.einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", "fp8_e4m3"), backend="xla",
                 accumulation=ops.Accumulation(mantissa_bits=13))  # fmt: skip
  with pytest.raises(ValueError, match="not one of"):
    mxjax.einsum("mk,kn->mn", a, b, backend="cublas")


def test_explain():
  a, b = jax.ShapeDtypeStruct((4, 64), jnp.bfloat16), jax.ShapeDtypeStruct((64, 8), jnp.float32)
  e = ops.explain_einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", "fp8_e4m3"), platform="gpu")
  assert e.backend == "xla" and e.reasons["xla"] is None and e.out_shape == (4, 8)
  assert "no Pallas kernel" in e.reasons["pallas"]
  e = ops.explain_einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", "fp8_e4m3"), platform="cpu")
  assert e.backend == "reference" and "cpu" in e.why
  e = ops.explain_einsum("mk,kn->mn", a, b, schemes=("nf4_g64", "nf4_g64"), platform="gpu")
  assert e.backend == "reference" and "lookup" in e.reasons["xla"]
  assert "reference" in str(e) and "lookup" in str(e)
  e = ops.explain_einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", "fp8_e4m3"), platform="gpu",
                         accumulation=ops.Accumulation(mantissa_bits=13))  # fmt: skip
  assert e.backend == "reference"
  with pytest.raises(ValueError, match="no Pallas kernel"):
    ops.explain_einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", None), backend="pallas")


def test_public_names_import():
  for name in ops.__all__:
    assert getattr(ops, name) is not None
  assert mxjax.einsum is ops.einsum and mxjax.dot_general is ops.dot_general


# ------------------------------------------------------------------ pallas (weight-only kernel)


@pytest.mark.parametrize(
    "scheme", ["int4_g128", pytest.param("nvfp4", marks=pytest.mark.slow),
               pytest.param("int4_g128_asym", marks=pytest.mark.slow)],
)  # fmt: skip
def test_pallas_weight_only_matches_reference(scheme):
  pytest.importorskip("pallas_kernels.wo_matmul")
  x, w = _rand(20, (2, 3, 256)), _rand(21, (256, 128))
  wq = mxjax.quantize(w, scheme, axis=0)
  ref = mxjax.einsum("btk,kn->btn", x, wq, backend="reference")
  got = mxjax.einsum("btk,kn->btn", x, wq, backend="pallas")  # interpret mode on the CPU
  assert _rel(got, ref) < 1e-5


def test_pallas_reasons():
  a = jax.ShapeDtypeStruct((4, 256), jnp.bfloat16)
  w = mxjax.quantize(_rand(22, (256, 64)), "int4_g128", axis=0)
  e = ops.explain_einsum("mk,kn->mn", a, w, platform="gpu")
  if "unavailable" in (e.reasons["pallas"] or ""):
    pytest.skip(e.reasons["pallas"])
  assert e.backend == "pallas"
  e = ops.explain_einsum("mk,kn->mn", jax.ShapeDtypeStruct((4, 256), jnp.float32), w,
                         platform="gpu")  # fmt: skip
  assert "bfloat16" in e.reasons["pallas"] and e.backend == "xla"
  wt = mxjax.quantize(_rand(22, (64, 256)), "int4_g128", axis=1)
  e = ops.explain_einsum("mk,nk->mn", a, wt, platform="gpu")
  assert "W[K, N]" in e.reasons["pallas"]
  e = ops.explain_einsum("mk,kn->mn", a, _rand(23, (256, 64)), schemes=("fp8_e4m3", "fp8_e4m3"),
                         platform="gpu")  # fmt: skip
  assert "weight-only" in e.reasons["pallas"] and e.backend == "xla"


# ------------------------------------------------------------------ random shapes, native dots


def _dot_operand_dtypes(fn, *args):
  """dtypes of the operands of every dot_general in fn's jaxpr (nested jaxprs included)."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
      for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
        walk(sub)
      for p in eqn.params.values():
        if hasattr(p, "jaxpr"):
          walk(p.jaxpr if hasattr(p.jaxpr, "eqns") else p.jaxpr.jaxpr)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_xla_backend_runs_native_low_precision_dots():
  a, b = _rand(30, (4, 64)), _rand(31, (64, 8))
  fp8 = _dot_operand_dtypes(
      lambda a, b: mxjax.einsum("mk,kn->mn", a, b, schemes=("mxfp4", "fp8_e5m2"), backend="xla"),
      a, b)  # fmt: skip
  assert fp8 == [("float8_e4m3fn", "float8_e5m2")], fp8
  i8 = _dot_operand_dtypes(
      lambda a, b: mxjax.einsum("mk,kn->mn", a, b, schemes=("int8", "int4_g128_asym"),
                                backend="xla"), a, _rand(32, (64, 128)))  # fmt: skip
  assert i8 == [("int8", "int8")], i8
  ref = _dot_operand_dtypes(
      lambda a, b: mxjax.einsum("mk,kn->mn", a, b, schemes=("mxfp4", "fp8_e5m2"),
                                backend="reference"), a, b)  # fmt: skip
  assert ref == [("float32", "float32")], ref


@pytest.mark.slow
def test_xla_random_shapes():
  rng = np.random.default_rng(7)
  for i, sch in enumerate(("fp8_e4m3_rowwise", "mxfp8_e4m3")):
    m, n, bsz = (int(v) for v in rng.integers(1, 12, 3))
    k = int(rng.choice([32, 96, 160]))
    a, b = _rand(40 + i, (bsz, m, k)), _rand(50 + i, (n, k))
    ref = mxjax.einsum("bmk,nk->bmn", a, b, schemes=(sch, sch), backend="reference")
    got = mxjax.einsum("bmk,nk->bmn", a, b, schemes=(sch, sch), backend="xla")
    assert got.shape == (bsz, m, n) and _rel(got, ref) < 2e-6, (sch, m, n, bsz, k)


def test_xla_refuses_block_partials_over_budget():
  big = (jax.ShapeDtypeStruct((4096, 4096), jnp.bfloat16),
         jax.ShapeDtypeStruct((4096, 4096), jnp.bfloat16))  # fmt: skip
  e = ops.explain_einsum("mk,nk->mn", *big, schemes=("mxfp8_e4m3", "mxfp8_e4m3"), platform="gpu")
  assert e.backend == "reference" and "GiB" in e.reasons["xla"]  # 128 blocks x 4096^2 f32
  e = ops.explain_einsum("mk,nk->mn", *big, schemes=("fp8_e4m3", "fp8_e4m3"), platform="gpu")
  assert e.backend == "xla"
  small = jax.ShapeDtypeStruct((16, 4096), jnp.bfloat16)
  e = ops.explain_einsum("mk,nk->mn", small, big[1], schemes=("mxfp8_e4m3", "mxfp8_e4m3"),
                         platform="gpu")  # fmt: skip
  assert e.backend == "xla"


def test_explain_backward():
  x, w = jax.ShapeDtypeStruct((64, 256), jnp.bfloat16), jax.ShapeDtypeStruct((256, 96), jnp.float32)
  s = ops.DotSchemes(lhs="mxfp8_e4m3", rhs="mxfp8_e4m3", grad="mxfp8_e5m2")
  e = ops.explain_einsum("mk,kn->mn", x, w, schemes=s, platform="gpu")
  assert e.backward["dgrad"].startswith("xla") and "mxfp8_e5m2[64, 96] along axis 1" in e.backward["dgrad"]
  assert e.backward["wgrad"].startswith("xla") and "along axis 0" in e.backward["wgrad"]
  s = ops.DotSchemes(lhs="fp8_e4m3", rhs="fp8_e4m3", grad="nf4_g64")
  e = ops.explain_einsum("mk,kn->mn", x, w, schemes=s, platform="gpu", backend="xla")
  assert e.backend == "xla" and "lookup table" in e.backward["dgrad"]
  wq = mxjax.quantize(_rand(0, (256, 96)), "fp8_e4m3", axis=0)
  e = ops.explain_einsum("mk,kn->mn", x, wq, schemes=("fp8_e4m3", None), platform="gpu")
  assert set(e.backward) == {"dgrad"}  # a QArray weight gets no gradient
