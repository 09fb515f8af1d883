"""Which tile of x a persistent CTA reads at each pipeline step, and how the tiles split over CTAs.

The row-wise quantize kernel (`mosaic_gpu.py`) runs `ctas` CTAs, each a pipeline of `per` steps
over `per * ctas` tiles of rows. Three orders:

- "slabs": CTA c reads tiles c * per .. (c + 1) * per - 1, a contiguous run of x (the row
  kernel's order since session 1);
- "bands": step i of every CTA reads band i, tiles i * ctas .. (i + 1) * ctas - 1, so the grid
  sweeps x from its start to its end;
- "bands_reversed": the same sweep from x's end to its start.

NVFP4 reads x twice, its tensor amax first (an XLA reduction): a block pass sweeping from x's end
reads first what that pass read last, which may still sit in the L2 (50 MB on an H100 against
134 MB of x at 8192 x 8192). On an H100 (session 36) that order took 1.2-1.8% off NVFP4's two
passes, the forward sweep none (`mosaic_gpu.default_tile_order`). A Mosaic GPU amax pass sweeping
x forwards was written and timed beside it, and dropped: 2 us slower than XLA's reduction, which
reads x at 3.1 TB/s, as fast as the device copies.
"""

from __future__ import annotations

TILE_ORDERS = ("slabs", "bands", "bands_reversed")


def split_tiles(ntiles: int, target_ctas: int) -> tuple[int, int]:
  """(tiles per CTA, CTAs): the fewest tiles per CTA that divide `ntiles` and keep the CTAs
  within `target_ctas`, so that the CTAs fill the SMs evenly (4096 x 14336 had 224 CTAs on 132
  SMs with powers of two)."""
  if ntiles < 1 or target_ctas < 1:
    raise ValueError(f"need at least one tile and one CTA, got {ntiles} tiles, {target_ctas} CTAs")
  per = next(p for p in range(-(-ntiles // target_ctas), ntiles + 1) if ntiles % p == 0)
  return per, ntiles // per


def check_order(order: str) -> str:
  if order not in TILE_ORDERS:
    raise ValueError(f"tile_order must be one of {TILE_ORDERS}, got {order!r}")
  return order


def tile_index(order: str, step, cta, per: int, ctas: int):
  """The tile CTA `cta` reads at pipeline step `step` (ints or traced int32 scalars)."""
  if order == "slabs":
    return cta * per + step
  if order == "bands":
    return step * ctas + cta
  if order == "bands_reversed":
    return (per - 1 - step) * ctas + cta
  raise ValueError(f"tile_order must be one of {TILE_ORDERS}, got {order!r}")
