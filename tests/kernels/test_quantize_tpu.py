"""The lane-dense Mosaic TPU quantize kernel (`pallas_kernels/quantize/tpu.py`) in TPU interpret
mode: bit-identical to mxjax.quantize for every scheme, row- and column-wise, on random data,
special values, rounding ties and NaN / Inf; its tiling rules; the TPU default. Its Mosaic TPU
lowering is in test_lowering_quantize.py.

Each scheme and shape compiles once (`_kernel`) and every input of that shape reuses it:
interpret mode spends its time compiling.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

import mxjax
from pallas_kernels import quantize as pq
from pallas_kernels.quantize import tpu
from pallas_kernels.quantize.schemes import SCHEMES
from pallas_kernels.quantize.testdata import rounding_midpoints
from pallas_kernels.quantize.testdata import special_values
from tests.kernels.test_quantize import _data
from tests.kernels.test_quantize import assert_same


@functools.lru_cache(maxsize=None)
def _kernel(scheme, transpose=False, tile_q=None):
  return jax.jit(functools.partial(tpu.quantize_tpu, scheme=scheme, transpose=transpose,
                                   tile_q=tile_q, interpret=True))


@functools.lru_cache(maxsize=None)
def _mx(scheme):
  return jax.jit(lambda x: mxjax.quantize(x, scheme))


def _check_all(kernel, want, inputs, transpose=False):
  for name, x in inputs.items():
    try:
      assert_same(kernel(x.T if transpose else x), want(x))
    except AssertionError as e:
      raise AssertionError(f"{name} input: {e}") from None


def _inputs(rows, cols):
  return {"random": _data(11, (rows, cols), jnp.bfloat16),
          "special": special_values(12, rows, cols),
          "ties": rounding_midpoints(13, rows, cols),
          "nan_inf": special_values(14, rows, cols, nonfinite=True)}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_rows_bit_exact(scheme):
  # (128, 512): 16 to 32 blocks of 16 / 32 a row in one step; B = 128: the whole axis (4 blocks).
  _check_all(_kernel(scheme), _mx(scheme), _inputs(128, 512))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_columns_bit_exact(scheme):
  # Blocks run down x's columns; x.T is never formed (the tile is read as stored).
  # The kernel gets x.T (512, 128) and quantizes its transpose along M.
  _check_all(_kernel(scheme, True), _mx(scheme), _inputs(128, 512), transpose=True)


@pytest.mark.parametrize("scheme,shape,tile_q", [
    ("mxfp8_e4m3", (384, 768), None),  # 3 x 3 steps of (128, 256)
    ("mxfp4", (256, 2560), None),  # K = 2560: 512 a step
    ("nvfp4", (128, 768), None),  # 3 steps of 256
    ("int4_g128", (128, 2048), 1024),  # B = 128: two steps of 8 blocks
    ("fp8_e4m3_block128", (128, 1536), None),  # no 1024-multiple: the whole axis, 12 blocks
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_grids_and_odd_shapes(scheme, shape, tile_q):
  x = _data(15, shape, jnp.bfloat16)
  assert_same(_kernel(scheme, False, tile_q)(x), _mx(scheme)(x))


def test_f32_and_f16_inputs():
  inputs = {d.__name__: _data(16, (128, 256), d) for d in (jnp.float32, jnp.float16)}
  _check_all(_kernel("mxfp8_e4m3"), _mx("mxfp8_e4m3"), inputs)


def test_tile_plan_defaults():
  assert tpu.tile_plan("mxfp8_e4m3", (4096, 8192)) == 2048
  assert tpu.tile_plan("int4_g128", (4096, 8192), transpose=True) == 2048
  assert tpu.tile_plan("nvfp4", (128, 768)) == 256
  assert tpu.tile_plan("fp8_e4m3_block128", (128, 1536)) == 1536  # whole axis


@pytest.mark.parametrize("scheme,shape,transpose,tile_q,match", [
    ("mxfp8_e4m3", (100, 256), False, None, "pad x to a multiple of 128 along M"),
    ("mxfp8_e4m3", (256, 100), True, None, "pad x to a multiple of 128 along K"),
    ("nvfp4", (128, 384), False, None, "pad x to a multiple of 256 along K"),
    ("int4_g128", (128, 4608), False, None, "pad x to a multiple of 1024 along K"),
    ("fp8_e4m3_block128", (4608, 128), True, None, "pad x to a multiple of 1024 along M"),
    ("mxfp4", (128, 1024), False, 128, "not a multiple of 128"),  # 64 code bytes a row
    ("int4_g128", (128, 2048), False, 512, "not a multiple of 8"),  # 4 blocks a step
    ("mxfp4", (128, 80), False, None, "multiple of the block"),
])
def test_bad_shapes_raise(scheme, shape, transpose, tile_q, match):
  x = jnp.ones(shape, jnp.bfloat16)
  with pytest.raises(ValueError, match=match):
    tpu.quantize_tpu(x, scheme, transpose=transpose, tile_q=tile_q, interpret=True)


def test_default_on_tpu_is_the_kernel_where_it_tiles(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  x = jnp.ones((256, 1024), jnp.bfloat16)
  for s in SCHEMES:
    assert pq.api.default_implementation(s, False, x) == "mosaic_tpu", s
    assert pq.api.default_implementation(s, True, x.T) == "mosaic_tpu", s
  assert pq.api.default_implementation("mxfp8_e4m3") == "mosaic_tpu"
  assert pq.api.default_implementation("mxfp8_e4m3", False, x[:64]) == "xla"  # M = 64
  assert "along M" in pq.api.tpu_unsupported(x[:64], "mxfp8_e4m3")
  assert pq.api.tpu_unsupported(x, "mxfp8_e4m3") is None
  y = _data(17, (128, 256), jnp.bfloat16)
  assert_same(pq.quantize(y, "mxfp4", interpret=True), _mx("mxfp4")(y))  # the entry point
