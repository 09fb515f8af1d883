"""How the decode kernel's CTAs share the (N tile, K step) iterations of a weight-only matmul.

The weight W^T (N, K) is cut into `n_tiles` row tiles, each read in `kst` K steps: `n_tiles * kst`
iterations. A schedule says which iterations each CTA runs (one pipeline, `iters` steps long),
where each step reads, and which output slot its partial sum goes to:

- `split_schedule`: CTA (n, s) runs tile n's K steps [s * iters, (s + 1) * iters) and writes slot s;
  `splits` CTAs a tile, so the grid is `n_tiles * splits` CTAs. When that count is not a multiple
  of what the GPU runs at once, some SMs get one CTA fewer and idle at the end (224 CTAs of
  INT4 g128 at K=8192, N=28672 on 132 SMs: 40 SMs hold one CTA and 92 hold two).
- `stream_k_schedule`: `ctas` CTAs take equal, contiguous ranges of the flattened iterations, so
  every CTA has the same work; a range may end inside a tile and the next CTA finishes it. Each
  CTA flushes its partial sum when its tile ends or its range does, into slot
  `c - first CTA of the tile`, and XLA adds a tile's slots (which slots hold data is known
  statically: the rest are masked out, never trusted to be zero).

`place` and `last` run inside the kernel (traced scalars); they are `place_at` / `last_at` of the
CTA's grid indices, plain integer arithmetic that the tests also run on Python ints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A CTA grid over (N tile, K step) iterations; see the module docstring."""

  grid: tuple[int, ...]
  grid_names: tuple[str, ...]
  iters: int  # pipeline steps per CTA
  slots: int  # output partial sums per tile
  n_tiles: int
  tile_n: int
  # (CTA grid indices, i) -> (tile, K step, slot), and -> flush after step i?
  place_at: Callable[[tuple, Any], tuple[Any, Any, Any]]
  last_at: Callable[[tuple, Any], Any]
  written: np.ndarray  # (slots, n_tiles) bool: which slots a CTA writes

  def place(self, i: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """In the kernel: (N tile, K step, output slot) of this CTA's pipeline step i."""
    return self.place_at(tuple(lax.axis_index(a) for a in self.grid_names), i)

  def last(self, i: jax.Array) -> jax.Array:
    """In the kernel: does step i end this CTA's partial sum (flush it, start afresh)?"""
    return self.last_at(tuple(lax.axis_index(a) for a in self.grid_names), i)

  def reduce(self, parts: jax.Array) -> jax.Array:
    """(slots, N, Mp) float32 partial sums -> (N, Mp): each tile's written slots added."""
    if self.slots == 1:
      return parts[0]
    if self.written.all():
      return parts.sum(0)
    p = parts.reshape(self.slots, self.n_tiles, self.tile_n, -1)
    p = jnp.where(jnp.asarray(self.written)[:, :, None, None], p, 0.0)  # unwritten: garbage
    return p.sum(0).reshape(self.n_tiles * self.tile_n, -1)


def split_schedule(n_tiles: int, tile_n: int, kst: int, splits: int) -> Schedule:
  """One CTA per (N tile, K split); `splits` must divide `kst`."""
  if kst % splits:
    raise ValueError(f"K steps ({kst}) must divide by splits={splits}")
  iters = kst // splits

  def place_at(ids, i):
    n, s = ids
    return n, s * iters + i, s

  return Schedule(grid=(n_tiles, splits), grid_names=("n", "s"), iters=iters, slots=splits,
                  n_tiles=n_tiles, tile_n=tile_n, place_at=place_at,
                  last_at=lambda ids, i: i == iters - 1,
                  written=np.ones((splits, n_tiles), bool))


def pick_splits(n_tiles: int, kst: int, num_sms: int) -> int:
  """Smallest K split that gives at least one CTA per SM (K steps must divide evenly)."""
  for s in (1, 2, 4, 8, 16):
    if kst % s == 0 and (n_tiles * s >= num_sms or s * 2 > kst):
      return s
  return 1


def stream_k_ctas(total: int, target: int) -> int:
  """The largest divisor of `total` iterations not above `target` CTAs."""
  return max(d for d in range(1, min(total, target) + 1) if total % d == 0)


def stream_k_schedule(n_tiles: int, tile_n: int, kst: int, ctas: int) -> Schedule:
  """`ctas` CTAs, each running `n_tiles * kst / ctas` consecutive iterations (tile-major)."""
  total = n_tiles * kst
  if total % ctas:
    raise ValueError(f"stream-K needs ctas dividing the {total} iterations "
                     f"({n_tiles} tiles x {kst} K steps); {ctas} does not "
                     f"(stream_k_ctas({total}, {ctas}) = {stream_k_ctas(total, ctas)} does)")
  iters = total // ctas
  written = {}
  for c in range(ctas):  # which (slot, tile) each CTA writes, statically
    for t in range(c * iters // kst, ((c + 1) * iters - 1) // kst + 1):
      written[(c - t * kst // iters, t)] = True
  slots = 1 + max(sl for sl, _ in written)
  mask = np.zeros((slots, n_tiles), bool)
  for sl, t in written:
    mask[sl, t] = True

  def place_at(ids, i):
    (c,) = ids
    f = c * iters + i
    tile = f // kst
    return tile, f % kst, c - tile * kst // iters

  def last_at(ids, i):
    return (place_at(ids, i)[1] == kst - 1) | (i == iters - 1)

  return Schedule(grid=(ctas,), grid_names=("c",), iters=iters, slots=slots, n_tiles=n_tiles,
                  tile_n=tile_n, place_at=place_at, last_at=last_at, written=mask)
