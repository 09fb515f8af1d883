"""The `fp8_x` split of x as one kernel (`pallas_kernels/wo_matmul/x_split.py`): for INT8 bit
for bit `fp8_x.int8_split` in the Pallas interpreter, over random rows and the edges (zero,
tiny, Inf and NaN chunks, amax at and around 127 2^e, ties); for FP8 bit for bit
`fp8_x.split_x` on finite rows, NaN codes in a row holding Inf or NaN; the refusals; and the
lowering for the GPU, alone and in front of the decode, with nothing of XLA's left between x
and the decode kernel."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mxjax
from pallas_kernels import _compat
from pallas_kernels import wo_matmul as wm
from pallas_kernels.wo_matmul import decode_plan
from pallas_kernels.wo_matmul import fp8_x as F8
from pallas_kernels.wo_matmul import mosaic_gpu
from pallas_kernels.wo_matmul import x_split as XS


def _assert_same(x, cols):
  got = XS.int8_split_kernel(jnp.asarray(x), cols, interpret=True)
  want = F8.int8_split(jnp.asarray(x), cols)
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))  # NaN == NaN here


def _edge_rows(m: int, k: int) -> np.ndarray:
  """(m, k) float32 rows of bf16 values, each chunk of 128 one kind of edge."""
  rng = np.random.default_rng(m)
  x = rng.standard_normal((m, k)).astype(np.float32)
  x *= np.exp2(rng.integers(-30, 30, (m, k // 128, 1))).repeat(128, -1).reshape(m, k)
  x[0, 0:128] = 0.0  # an all-zero chunk: e = -7
  x[0, 128:256] = 127.0 * 2.0**-3  # amax 127 2^e exactly: hi = 127, lo = 0
  x[0, 256:384] = 2.0**-120  # a tiny chunk: e held at -118
  x[0, 384:512] = np.float32(ml_dtypes.bfloat16(127.5 * 2.0**5))  # amax just above 127 2^e
  x[-1, 512:640] = 2.0**5 * (np.arange(128) % 4 + 0.5) / 256  # ties of x 2^(8 - e): to even
  x[-1, 700] = np.inf
  x[-1, 900] = np.nan
  x[-1, 1000] = -np.inf
  return np.asarray(x.astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("m,cols", [(1, 32), pytest.param(2, 32, marks=pytest.mark.slow),
                                    pytest.param(3, 32, marks=pytest.mark.slow), (4, 32),
                                    (16, 32), (5, 64)])
def test_matches_int8_split_on_the_edges(m, cols):
  _assert_same(_edge_rows(m, 2048), cols)


_BF16 = st.integers(0, 0xFFFF).filter(lambda b: (b >> 7) & 0xFF != 0xFF).map(
    lambda b: np.uint16(b).view(ml_dtypes.bfloat16))


def _bf16_rows(vals, rows: int, shift: int) -> np.ndarray:
  """Any finite bf16 values as `rows` rows, the second scaled by 2^-shift (so that whole
  chunks sit at one small magnitude too); float32 subnormals zero, as XLA's CPU flushes them."""
  x = np.asarray(vals, ml_dtypes.bfloat16).reshape(rows, -1).astype(np.float32)
  x = np.where(np.abs(x) < 2.0**-126, 0.0, x)
  x[1] = x[1] * 2.0**-shift
  return x.astype(ml_dtypes.bfloat16)


@pytest.mark.slow  # ~15-30 s on 2 cores: CI's slow step (the edge cases run by default)
@settings(max_examples=25, deadline=None)
@given(st.lists(_BF16, min_size=2 * 512, max_size=2 * 512), st.integers(0, 40))
def test_matches_int8_split_on_any_bf16_rows(vals, shift):
  _assert_same(_bf16_rows(vals, 2, shift), 32)


def _weight(scheme: str, k: int = 8192, n: int = 28672):
  """A PackedWeight of `scheme` (shapes only)."""
  return jax.eval_shape(lambda w: wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get(scheme), axis=0)), jax.ShapeDtypeStruct((k, n), jnp.float32))


def _fp8(k=8192, n=28672):
  return _weight("fp8_e4m3_rowwise", k, n)


def _assert_e4m3_same(x):
  """The kernel against `split_x` row by row: finite rows bit for bit (codes and s_x); a row
  holding Inf or NaN with a NaN code in its hi row (the NaN that reaches its output)."""
  x8, sx = XS.e4m3_split_kernel(jnp.asarray(x), interpret=True)
  want8, wantsx, _ = F8.split_x(jnp.asarray(x), _fp8(k=x.shape[1], n=128), 32)
  got = np.asarray(x8).view(np.uint8).reshape(-1, 2, x.shape[1])
  want = np.asarray(want8).view(np.uint8).reshape(-1, 2, x.shape[1])
  finite = np.all(np.isfinite(np.asarray(x, np.float32)), axis=1)
  np.testing.assert_array_equal(got[finite], want[finite])
  np.testing.assert_array_equal(np.asarray(sx)[finite], np.asarray(wantsx)[finite])
  assert np.all(np.any((got[~finite, 0] & 0x7F) == 0x7F, axis=-1))  # E4M3FN's NaN codes


def test_e4m3_split_matches_split_x_on_the_edges():
  x = _edge_rows(6, 2048)
  x[1] = 0.0  # a zero row: s_x = 2^-8
  x[2] = np.float32(ml_dtypes.bfloat16(2.0**-120)) * (np.arange(2048) % 3)  # s_x held at 2^-126
  x[3, 7] = np.float32(ml_dtypes.bfloat16(2.0**100))  # amax a power of two: s_x 2^93
  x[4, :128] = 255.75 * 2.0**-4  # amax / s_x just under 256
  _assert_e4m3_same(x.astype(ml_dtypes.bfloat16))


@pytest.mark.slow  # ~15-30 s on 2 cores: CI's slow step (the edge cases run by default)
@settings(max_examples=25, deadline=None)
@given(st.lists(_BF16, min_size=3 * 256, max_size=3 * 256), st.integers(0, 40))
def test_e4m3_split_matches_split_x_on_any_bf16_rows(vals, shift):
  _assert_e4m3_same(_bf16_rows(vals, 3, shift))


def test_refuses_what_it_does_not_take():
  x = jnp.zeros((2, 1024), jnp.bfloat16)
  with pytest.raises(ValueError, match="K=640 is not a multiple"):
    XS.int8_split_kernel(jnp.zeros((2, 640), jnp.bfloat16), 32)
  with pytest.raises(ValueError, match="multiple of 32"):
    XS.int8_split_kernel(x, 16)
  with pytest.raises(NotImplementedError, match="M=17"):
    XS.int8_split_kernel(jnp.zeros((17, 1024), jnp.bfloat16), 64)
  with pytest.raises(ValueError, match="K=640"):
    XS.e4m3_split_kernel(jnp.zeros((2, 640), jnp.bfloat16))
  with pytest.raises(ValueError, match="got int4, M=1"):
    XS.split(jnp.zeros((1, 1024), jnp.bfloat16), _weight("int4_g128", k=1024), 32)


def _int8(k=8192, n=28672):
  return _weight("int8", k, n)


def _mxfp4(k=8192, n=28672):  # in the GPU's register order, as `repack` stores it there
  return jax.eval_shape(wm.code_order.order_for_wgmma, _weight("mxfp4", k, n))


def test_plan_gates_split_kernel(monkeypatch):
  pw = _int8()
  plan = lambda m=1, **o: decode_plan.plan_decode(m, 8192, pw, fp8_x=True, **o)
  assert plan().split_kernel and plan(16).split_kernel  # verified (H100, session 27): default
  assert not plan(17).split_kernel  # past the kernel's rows: XLA's split
  assert not plan(split_kernel=False).split_kernel
  assert not decode_plan.plan_decode(1, 8192, pw, fp8_x=False).split_kernel
  monkeypatch.setattr(decode_plan, "SPLIT_KERNEL_VERIFIED", frozenset())
  assert not plan().split_kernel  # unverified: off by default, refused unless allowed
  with pytest.raises(NotImplementedError, match="split_kernel for int8"):
    plan(split_kernel=True)
  assert plan(split_kernel=True, allow_unverified=True).split_kernel
  monkeypatch.undo()
  with pytest.raises(ValueError, match="split_kernel splits x for fp8_x"):
    decode_plan.plan_decode(1, 8192, pw, fp8_x=False, split_kernel=True, allow_unverified=True)
  with pytest.raises(ValueError, match="M=17"):
    plan(17, split_kernel=True, allow_unverified=True)
  fp8 = decode_plan.plan_decode(17, 8192, _fp8(), fp8_x=True, split_kernel=True,
                                allow_unverified=True)
  assert fp8.split_kernel  # FP8's kernel takes a row a program: any M
  mx = lambda **o: decode_plan.plan_decode(1, 8192, _mxfp4(), fp8_x=True, **o)
  assert not mx().split_kernel  # MXFP4: unchecked on a GPU
  with pytest.raises(NotImplementedError, match="split_kernel for mxfp4"):
    mx(split_kernel=True)
  assert mx(split_kernel=True, allow_unverified=True).split_kernel


def _ops(text: str) -> list[str]:
  """main's operations in order, each Mosaic GPU kernel as MOSAIC."""
  main = text[text.index("func.func public @main"):].splitlines()
  ops = []
  for line in main:
    if "mosaic_gpu" in line:
      ops.append("MOSAIC")
    elif (op := re.search(r"stablehlo\.\w+|call @\w+", line)):
      ops.append(op.group(0))
  return ops


@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("weight", [_int8, _fp8, _mxfp4])
def test_decode_with_split_kernel_lowers_with_no_xla_kernel_before_it(m, weight):
  x = jax.ShapeDtypeStruct((m, 8192), jnp.bfloat16)
  fmt = weight().fmt
  alone = _compat.lower_for("cuda", lambda x: XS.split(x, weight(), 32), x).as_text()
  assert _ops(alone).count("MOSAIC") == 1
  fn = lambda x, p, sk: mosaic_gpu.wo_matmul_mosaic_gpu(x, p, allow_unverified=True,
                                                        fp8_x=True, split_kernel=sk)
  ops = _ops(_compat.lower_for("cuda", lambda x, p: fn(x, p, True), x, weight()).as_text())
  first, second = [i for i, op in enumerate(ops) if op == "MOSAIC"][:2]
  # before the decode: the split kernel, free reshapes and bitcasts (FP8's weight bytes) and
  # constants; s_x sliced out of its (M, 128) block, which only the sum after the decode reads
  # (a slice XLA fuses into it); for MXFP4 x's permutation to the weights' order (one gather)
  e4m3 = fmt is not wm.WeightFormat.INT8
  assert set(ops[:second]) - {"MOSAIC"} <= {
      "stablehlo.constant", "stablehlo.reshape", "stablehlo.broadcast_in_dim",
      "stablehlo.bitcast_convert", *(["stablehlo.slice"] if e4m3 else []),
      *(["stablehlo.gather", "stablehlo.add", "stablehlo.select"]  # (indices: constants)
        if fmt is wm.WeightFormat.MXFP4 else [])}
  assert first < second
  xla = _ops(_compat.lower_for("cuda", lambda x, p: fn(x, p, False), x, weight()).as_text())
  assert "stablehlo.reduce" in xla[:xla.index("MOSAIC")]  # XLA's split: its amax, then more


def test_gpu_path_is_a_mosaic_kernel_whatever_pallas_call_defaults_to():
  # jax 0.11.2 on the GPU machine lowered a plain `pallas_call` through Pallas-Triton (session
  # 27), as jax_pallas_use_mosaic_gpu=False does here: the split must not depend on that default
  x = jax.ShapeDtypeStruct((1, 8192), jnp.bfloat16)
  with jax._src.config.jax_pallas_use_mosaic_gpu(False):  # pylint: disable=protected-access
    for pw in (_int8(), _fp8(), _mxfp4()):
      text = _compat.lower_for("cuda", lambda x, p=pw: XS.split(x, p, 32), x).as_text()
      assert _ops(text).count("MOSAIC") == 1 and "triton" not in text


@pytest.mark.parametrize("order", [False, True])
def test_mxfp4_split_matches_split_x(order):
  # MXFP4's x permuted to its weights' order (storage order, then FP8_A_ORDER in each 32) before
  # the E4M3 split: the same rows as `split_x`, which splits and then permutes, in the CPU's K
  # order and the GPU's register order
  w = jax.random.normal(jax.random.key(0), (1024, 128), jnp.float32)
  pw = wm.repack_qarray(mxjax.quantize(w, mxjax.schemes.get("mxfp4"), axis=0))
  if order:
    pw = wm.code_order.order_for_wgmma(pw)
  x = jnp.asarray(_edge_rows(3, 1024))
  x = jnp.where(jnp.isfinite(x), x, 1.0)  # finite rows: bit for bit
  x8, sx, none = XS.split(x, pw, 32, interpret=True)
  want8, wantsx, _ = F8.split_x(x, pw, 32)
  assert none is None
  np.testing.assert_array_equal(np.asarray(x8).view(np.uint8), np.asarray(want8).view(np.uint8))
  np.testing.assert_array_equal(np.asarray(sx), np.asarray(wantsx))
