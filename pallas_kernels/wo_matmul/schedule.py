"""How the decode kernel's CTAs share the (N tile, K step) iterations of a weight-only matmul.

The weight W^T (N, K) is cut into `n_tiles` row tiles, each read in `kst` K steps: `n_tiles * kst`
iterations. A schedule says which iterations each CTA runs (one pipeline, `iters` steps long),
where each step reads, and which output slot its partial sum goes to:

- `split_schedule`: CTA (n, s) runs tile n's K steps [s * iters, (s + 1) * iters) and writes slot s;
  `splits` CTAs a tile, so the grid is `n_tiles * splits` CTAs. When that count is not a multiple
  of what the GPU runs at once, some SMs get one CTA fewer and idle at the end (224 CTAs of
  INT4 g128 at K=8192, N=28672 on 132 SMs: 40 SMs hold one CTA and 92 hold two).
- `stream_k_schedule`: `ctas` CTAs take contiguous ranges of the flattened iterations, equal or
  differing by one step (so that a CTA count that divides no tiling, three an SM, still fills
  every SM); a range may end inside a tile and the next CTA finishes it. Each
  CTA flushes its partial sum when its tile ends or its range does, into slot
  `c - first CTA of the tile`, and XLA adds a tile's slots (which slots hold data is known
  statically: the rest are masked out, never trusted to be zero).

`place` and `last` run inside the kernel (traced scalars); they are `place_at` / `last_at` of the
CTA's grid indices, plain integer arithmetic that the tests also run on Python ints.

The decode kernel can also add a tile's partial sums itself (`fused_sum`): the CTA holding
slot 0 waits on a semaphore for the tile's other `writers(tile) - 1` slots, adds them and
writes y. That needs a schedule in which no CTA can wait on one that cannot run, which
stream-K gives (`chainable`): slot 0 belongs to the lowest-numbered CTA of its tile, so a CTA
only ever waits on higher-numbered ones, and a CTA writes its other slots (the tail of the
tile where its share begins) before it waits (at the head of the tile where its share ends).
If all CTAs do not fit the GPU at once, the lower-numbered ones finish without waiting on any
that has not started, and free their SMs. A split schedule's slot-0 CTAs might fill the GPU
waiting on splits that never start; it is not chainable.
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
  # Steps each CTA's share holds (the rest of its `iters` repeat its last one, unflushed);
  # None: all `iters`.
  lengths: np.ndarray | None = None
  # tile -> how many CTAs write a partial sum of it (slots 0 .. writers - 1); traced or int
  writers_at: Callable[[Any], Any] | None = None
  # Whether the CTAs holding a tile's slots 1.. may be waited on by the one holding slot 0
  # (`fused_sum`): true of stream-K, where slot 0 is the lowest-numbered writer of its tile
  # and every CTA writes its other slots before it waits (module docstring).
  chainable: bool = False

  def place(self, i: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """In the kernel: (N tile, K step, output slot) of this CTA's pipeline step i."""
    return self.place_at(tuple(lax.axis_index(a) for a in self.grid_names), i)

  def last(self, i: jax.Array) -> jax.Array:
    """In the kernel: does step i end this CTA's partial sum (flush it, start afresh)?"""
    return self.last_at(tuple(lax.axis_index(a) for a in self.grid_names), i)

  def writers(self, tile: jax.Array) -> jax.Array:
    """In the kernel: how many CTAs write partial sums of `tile` (its slots 0 .. writers - 1)."""
    return self.writers_at(tile)

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
                  written=np.ones((splits, n_tiles), bool), writers_at=lambda tile: splits)


def pick_splits(n_tiles: int, kst: int, num_sms: int) -> int | None:
  """Smallest power-of-two K split (1-16) that divides the K steps evenly and gives at least
  one CTA per SM (or leaves fewer than two steps a CTA); None where none does: K steps with no
  such divisor (4096 x 11008's 43, LLaMA-2-13B's down projection's 54 over 40 tiles) take a
  stream-K schedule instead of one CTA a tile."""
  for s in (1, 2, 4, 8, 16):
    if kst % s == 0 and (n_tiles * s >= num_sms or s * 2 > kst):
      return s
  return None


def stream_k_ctas(total: int, target: int) -> int:
  """CTAs for a stream-K schedule of `total` iterations aiming at `target`: the largest divisor
  of `total` not above `target` (equal shares) when it is within 5% of it, else `target`
  (shares differing by one step), never more than `total`."""
  target = min(total, target)
  best = max(d for d in range(1, target + 1) if total % d == 0)
  return best if best >= 0.95 * target else target


def stream_k_schedule(n_tiles: int, tile_n: int, kst: int, ctas: int) -> Schedule:
  """`ctas` CTAs, CTA c running the consecutive iterations [c T / C, (c + 1) T / C) (floors; T
  iterations tile-major, C CTAs): equal shares when C divides T, else shares of
  floor(T / C) and one more. The pipeline runs ceil(T / C) steps in every CTA; a shorter
  share's last step re-reads its last iteration (from the L2) into a sum that is never flushed.
  """
  total = n_tiles * kst
  if not 1 <= ctas <= total:
    raise ValueError(f"stream-K takes 1 to {total} CTAs ({n_tiles} tiles x {kst} K steps), "
                     f"not {ctas}")
  iters = -(-total // ctas)

  def start(c):
    return (c * total) // ctas

  def first_cta(f):  # the CTA whose share holds iteration f
    return ((f + 1) * ctas + total - 1) // total - 1

  def length(c):
    return start(c + 1) - start(c)

  def place_at(ids, i):
    (c,) = ids
    f = start(c) + (min if isinstance(i, int) else jnp.minimum)(i, length(c) - 1)
    tile = f // kst
    return tile, f % kst, c - first_cta(tile * kst)

  def last_at(ids, i):
    (c,) = ids
    return ((place_at(ids, i)[1] == kst - 1) & (i < length(c))) | (i == length(c) - 1)

  written = {}
  for c in range(ctas):  # which (slot, tile) each CTA writes, statically
    for i in range(length(c)):
      tile, _, slot = place_at((c,), i)
      written[(slot, tile)] = True
  slots = 1 + max(sl for sl, _ in written)
  mask = np.zeros((slots, n_tiles), bool)
  for sl, t in written:
    mask[sl, t] = True
  lengths = np.array([length(c) for c in range(ctas)])

  def writers_at(tile):  # the CTAs holding the tile's first and last iterations, and between
    return first_cta((tile + 1) * kst - 1) - first_cta(tile * kst) + 1

  return Schedule(grid=(ctas,), grid_names=("c",), iters=iters, slots=slots, n_tiles=n_tiles,
                  tile_n=tile_n, place_at=place_at, last_at=last_at, written=mask,
                  lengths=lengths, writers_at=writers_at, chainable=True)
