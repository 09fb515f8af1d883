"""The row kernel's tile orders (`quantize/tile_order.py`): every tile read once, bands in
address order, the default order (the kernel indexing x, codes and scales with one order:
`test_lowering_quantize.test_quantize_ctas_write_the_rows_they_read`)."""

import itertools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import _compat
from pallas_kernels.quantize import mosaic_gpu
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


def test_orders_refused_clearly():
  with pytest.raises(ValueError, match="tile_order must be one of"):
    tile_order.check_order("backwards")
  with pytest.raises(ValueError, match="at least one tile"):
    tile_order.split_tiles(0, 4)
  x = jax.ShapeDtypeStruct((1024, 512), jnp.bfloat16)
  with pytest.raises(ValueError, match="tile_order must be one of"):
    _compat.lower_for("cuda", lambda a: mosaic_gpu.quantize_mosaic_gpu(
        a, "nvfp4", tile_order="backwards"), x)


def test_default_orders():
  # NVFP4 after its amax pass sweeps x from its end (session 36), the E4M3 schemes in bands
  # (session 37), the rest and f32 x (untimed) in slabs.
  get = mosaic_gpu.get_scheme
  assert mosaic_gpu.default_tile_order(get("nvfp4"), None) == "bands_reversed"
  assert mosaic_gpu.default_tile_order(get("nvfp4"), jnp.float32(2.0)) == "slabs"  # no pass
  for scheme in ("mxfp8_e4m3", "fp8_e4m3_block128"):
    assert mosaic_gpu.default_tile_order(get(scheme), None) == "bands"
  for scheme in ("mxfp4", "int4_g128"):
    assert mosaic_gpu.default_tile_order(get(scheme), None) == "slabs"
  for scheme in ("nvfp4", "mxfp8_e4m3", "fp8_e4m3_block128"):
    assert mosaic_gpu.default_tile_order(get(scheme), None, f32_in=True) == "slabs"
