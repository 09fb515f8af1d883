"""The tensor amax pass (`quantize/tensor_amax.py`) and the tile orders (`quantize/tile_order.py`)
against independent references: numpy's max |x| in float64, and every tile read once."""

import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from pallas_kernels import _compat
from pallas_kernels.quantize import mosaic_gpu
from pallas_kernels.quantize import tensor_amax as ta
from pallas_kernels.quantize import tile_order


@pytest.mark.parametrize("order", tile_order.TILE_ORDERS)
@pytest.mark.parametrize("per,ctas", [(1, 1), (1, 7), (5, 1), (3, 4), (6, 264)])
def test_every_tile_read_once(order, per, ctas):
  seen = [tile_order.tile_index(order, i, c, per, ctas)
          for c, i in itertools.product(range(ctas), range(per))]
  assert sorted(seen) == list(range(per * ctas))


def test_band_orders_sweep_x_from_either_end():
  per, ctas = 4, 3
  band = lambda order, i: sorted(tile_order.tile_index(order, i, c, per, ctas)
                                 for c in range(ctas))
  assert band("bands", 0) == [0, 1, 2] and band("bands", 3) == [9, 10, 11]
  assert band("bands_reversed", 0) == [9, 10, 11] and band("bands_reversed", 3) == [0, 1, 2]
  # slabs: CTA 1 reads 4..7 in order
  assert [tile_order.tile_index("slabs", i, 1, per, ctas) for i in range(per)] == [4, 5, 6, 7]


@pytest.mark.parametrize("ntiles,target", [(4096, 264), (1792, 264), (7, 264), (97, 8)])
def test_split_tiles_divides_and_fits(ntiles, target):
  per, ctas = tile_order.split_tiles(ntiles, target)
  assert per * ctas == ntiles and ctas <= target
  assert all(ntiles % p for p in range(-(-ntiles // target), per))  # the fewest tiles a CTA


def test_orders_and_shapes_refused_clearly():
  with pytest.raises(ValueError, match="tile_order must be one of"):
    tile_order.check_order("backwards")
  with pytest.raises(ValueError, match="at least one tile"):
    tile_order.split_tiles(0, 4)
  with pytest.raises(NotImplementedError, match="bf16 pair words, got float32"):
    ta.tensor_amax(jnp.zeros((128, 128), jnp.float32), implementation="portable")
  with pytest.raises(ValueError, match="not a multiple of 16384"):
    ta.tensor_amax(jnp.zeros((100, 128), jnp.bfloat16), implementation="portable")
  with pytest.raises(ValueError, match="do not split over 3 programs"):
    ta.tensor_amax(jnp.zeros((512, 128), jnp.bfloat16), implementation="portable", ctas=3)
  with pytest.raises(NotImplementedError, match="twin, implementation='portable'"):
    ta.tensor_amax(jnp.zeros((512, 128), jnp.bfloat16), implementation="mosaic_gpu",
                   interpret=True)
  with pytest.raises(ValueError, match="implementation must be one of"):
    ta.tensor_amax(jnp.zeros((512, 128), jnp.bfloat16), implementation="cuda")


def _numpy_amax(x: np.ndarray) -> float:
  """float64 max |x|, NaN if any."""
  a = np.abs(x.astype(np.float64))
  return np.nan if np.isnan(a).any() else a.max()


def _tensors(seed: int):
  """bf16 tensors of 4 x 128 x 128 elements: the amax at a power of two and just below, in the
  first / last tile, subnormals only, zeros only, -Inf, NaN, -max."""
  rng = np.random.default_rng(seed)
  bf16 = ml_dtypes.bfloat16
  base = (rng.standard_normal((512, 128)) * 3).astype(bf16)
  out = {"random": base}
  for name, where, v in [("pow2_last", -1, 64.0), ("below_pow2_first", 0, 63.75),
                         ("neg_max", 777, -float(ml_dtypes.finfo(bf16).max)),
                         ("neg_inf", 3000, -np.inf), ("nan", 65535, np.nan)]:
    t = base.copy().reshape(-1)
    t[where] = bf16(v)
    out[name] = t.reshape(512, 128)
  tiny = float(ml_dtypes.finfo(bf16).smallest_subnormal)
  out["subnormals"] = (rng.integers(-3, 4, (512, 128)) * tiny).astype(bf16)
  out["zeros"] = np.zeros((512, 128), bf16)
  out["neg_zero_and_odd_shape"] = np.full((256, 256), -0.0, bf16)
  return out


@pytest.mark.parametrize("order", tile_order.TILE_ORDERS)
@pytest.mark.parametrize("ctas", [1, 2, 4])
def test_portable_twin_matches_numpy(order, ctas):
  for name, x in _tensors(ctas).items():
    want = _numpy_amax(x)
    got = float(ta.tensor_amax(jnp.asarray(x), implementation="portable", interpret=True,
                               tile_rows=128, ctas=ctas, tile_order=order))
    ref = float(ta.tensor_amax(jnp.asarray(x)))
    for v in (got, ref):
      assert (np.isnan(v) and np.isnan(want)) or v == want, (name, v, want)


def test_mosaic_kernel_lowers_and_row_kernel_takes_it():
  # The GPU kernel lowers (its check is the GPU benchmark's), and the row kernel runs it only
  # for NVFP4 over bf16 x, behind its gate, never with a given amax.
  x = jax.ShapeDtypeStruct((1024, 2048), jnp.bfloat16)
  assert "mosaic_gpu" in _compat.lower_for("cuda", ta.tensor_amax_mosaic_gpu, x).as_text()
  kern = mosaic_gpu.quantize_mosaic_gpu
  calls = lambda **o: _compat.lower_for("cuda", lambda a: kern(a, "nvfp4", **o), x).as_text(
      ).count("custom_call @mosaic_gpu")
  base = calls()
  assert base == 1
  assert calls(amax_pass="mosaic_gpu", allow_unverified=True) == base + 1
  with pytest.raises(NotImplementedError, match="tensor amax pass has not matched"):
    calls(amax_pass="mosaic_gpu")
  with pytest.raises(ValueError, match="NVFP4's tensor amax over bf16 x; mxfp4"):
    _compat.lower_for("cuda", lambda a: kern(a, "mxfp4", amax_pass="mosaic_gpu"), x)
  with pytest.raises(ValueError, match="amax_pass must be"):
    _compat.lower_for("cuda", lambda a: kern(a, "nvfp4", amax_pass="triton"), x)
  given = lambda a: kern(a, "nvfp4", amax_pass="mosaic_gpu", allow_unverified=True,
                         tensor_amax=jnp.float32(3.0))
  assert _compat.lower_for("cuda", given, x).as_text().count("custom_call @mosaic_gpu") == base


@pytest.mark.parametrize("order", ["bands", "bands_reversed"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp8_e4m3", "int4_g128"])
def test_row_kernel_band_orders_lower_on_whole_arrays(scheme, dtype, order, monkeypatch):
  # In a band order every CTA's pipeline indexes x, the codes and the scales whole (one
  # `tile_index` for all three); "slabs" keeps its views of each CTA's run (the lowering timed
  # since session 1: `test_lowering.test_quantize_ctas_write_the_rows_they_read`).
  plgpu = _compat.plgpu_module()
  shares, emit = [], plgpu.emit_pipeline

  def recording(*args, **kwargs):
    inner = emit(*args, **kwargs)

    def call(*refs):
      shares.append([r.shape == getattr(r, "ref", r).shape for r in refs if r.shape != (32,)])
      return inner(*refs)
    return call

  monkeypatch.setattr(plgpu, "emit_pipeline", recording)
  x = jax.ShapeDtypeStruct((1024, 512), dtype)
  _compat.lower_for("cuda", lambda a: mosaic_gpu.quantize_mosaic_gpu(
      a, scheme, tile_order=order, allow_unverified=True), x)
  assert shares == [[True, True, True]], shares
