"""Shared timing and correctness helpers for the kernel benchmarks (run on the GPU machine).

Timing: each measured op is jitted over R rotated input sets (R chosen so that the sets total at
least 3x the L2), warmed up, then timed with CUPTI (kernel time only, summed over every kernel
the op launches, `jax.experimental.mosaic.gpu.profiler.measure`) for `iters` iterations; the
reported time is the median iteration divided by R.

Correctness: fresh random inputs, device memory poisoned with NaN just before the run (so an
output element the kernel never writes reads NaN), relative error ||out - ref|| / ||ref|| against
the float32 reference; NaN never passes.
"""

from __future__ import annotations

import datetime
import math
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

L2_BYTES = 50 * 2**20


def rotations(bytes_per_set: int, at_least: int = 2, cap: int = 64) -> int:
  return int(min(cap, max(at_least, math.ceil(3 * L2_BYTES / max(bytes_per_set, 1)))))


def rotated(fn: Callable[..., Any]) -> Callable[[Sequence[tuple]], list]:
  """One jitted call of `fn` on each of a list of like-shaped argument sets, `fn` traced and
  lowered once: its calls share one jaxpr (a nested jit), where tracing `fn` inline took a
  Mosaic kernel through lowering once a set (session 23: a first call cost the check's compile
  times the rotations, 68 s for 18 of MXFP4 at 4096 x 4096)."""
  one = jax.jit(fn)
  return jax.jit(lambda sets: [one(*s) for s in sets])


def time_op(fn: Callable[..., Any], sets: Sequence[tuple], iters: int = 30) -> dict:
  """Median kernel time (s) of one call of fn, rotating over `sets` of arguments."""
  from jax.experimental.mosaic.gpu import profiler  # pylint: disable=g-import-not-at-top

  g = rotated(fn)
  t0 = time.perf_counter()
  jax.block_until_ready(g(sets))  # compile + warm-up
  t1 = time.perf_counter()
  jax.block_until_ready(g(sets))
  _, ms = profiler.measure(g, iterations=iters)(sets)
  _, per_kernel = profiler.measure(g, aggregate=False, iterations=1)(sets)
  t2 = time.perf_counter()
  names = sorted({name for name, _ in per_kernel})
  by_name = {n: sum(t for name, t in per_kernel if name == n) / len(sets) for n in names}
  ms = [m for m in ms if m is not None]
  med = statistics.median(ms) / len(sets)
  spread = (max(ms) - min(ms)) / len(sets)
  return dict(time_s=med * 1e-3, spread_s=spread * 1e-3, rotations=len(sets), iters=len(ms),
              kernels=names, n_kernels=len(per_kernel) / len(sets),
              # one call's kernels by name, us (from a single timed iteration: a breakdown,
              # not a median): which part of `time_s` XLA's small kernels around a Pallas one take
              kernel_us={n: round(t * 1e3, 2) for n, t in by_name.items()},
              # wall-clock s of the first call (trace, compile, one run) and of the rest (a
              # second run and the CUPTI ones): where a device call's minutes go
              first_call_wall_s=round(t1 - t0, 2), measure_wall_s=round(t2 - t1, 2))


def poison(nbytes: int = 4 << 30) -> None:
  """Fills and frees a large device buffer with NaN so that reused memory reads NaN."""
  p = jnp.full((nbytes // 4,), jnp.nan, jnp.float32)
  p.block_until_ready()
  del p


def rel_err(out, ref) -> float:
  out = np.asarray(jnp.asarray(out, jnp.float32), np.float64)
  ref = np.asarray(jnp.asarray(ref, jnp.float32), np.float64)
  if not np.all(np.isfinite(out)) and np.all(np.isfinite(ref)):
    return float("nan")
  return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def copy_bandwidth() -> float:
  """Device copy rate in bytes/s (read + write), 1 GiB f32 elementwise x + 1."""
  n = 1 << 28
  sets = [(jax.random.normal(jax.random.key(i), (n,), jnp.float32),) for i in range(2)]
  r = time_op(lambda a: a + 1.0, sets, iters=20)
  return 2 * n * 4 / r["time_s"]


def bf16_gemm_rate(size: int = 8192) -> float:
  """XLA bf16 GEMM rate in FLOP/s at size^3, random data."""
  ks = jax.random.split(jax.random.key(7), 4)
  sets = [(jax.random.normal(ks[2 * i], (size, size), jnp.bfloat16),
           jax.random.normal(ks[2 * i + 1], (size, size), jnp.bfloat16)) for i in range(2)]
  r = time_op(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.bfloat16), sets, iters=10)
  return 2 * size**3 / r["time_s"]


def header() -> dict:
  d = jax.devices()[0]
  return dict(device=d.device_kind, date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
              jax_version=jax.__version__, jaxlib_version=jax.lib.__version__
              if hasattr(jax.lib, "__version__") else None,
              timing="CUPTI kernel time (mosaic.gpu.profiler.measure), median over iterations, "
              "inputs rotated over >= 3x L2")


SMEM_PER_SM = 233_472  # Hopper: 228 KiB of shared memory an SM, 1 KiB of it reserved a CTA


def mosaic_smem_bytes(fn: Callable[..., Any], *args: Any) -> int | None:
  """Shared memory of the largest Mosaic GPU kernel in `fn(*args)`, as Mosaic sizes it while
  lowering for CUDA (any host); None where this jax does not expose the count.

  Reads Mosaic's private `core._smem_tree_size` (the size of a kernel's shared-memory buffer
  tree, the whole tree being the largest it measures): a diagnostic for how many CTAs of a
  config fit an SM (`ctas_per_sm`), never used to pick one.
  """
  from pallas_kernels import _compat  # pylint: disable=g-import-not-at-top
  try:
    from jax.experimental.mosaic.gpu import core  # pylint: disable=g-import-not-at-top
    real = core._smem_tree_size  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None
  sizes = []

  def counting(*args, **kwargs):
    sizes.append(real(*args, **kwargs))
    return sizes[-1]

  core._smem_tree_size = counting  # pylint: disable=protected-access
  try:
    _compat.lower_for("cuda", lambda *a: fn(*a), *args)  # a new function: never a cached lowering
  finally:
    core._smem_tree_size = real  # pylint: disable=protected-access
  return max(sizes) if sizes else None


def ctas_per_sm(smem_bytes: int) -> int:
  """CTAs of `smem_bytes` shared memory each that fit one SM at once."""
  return SMEM_PER_SM // (smem_bytes + 1024)
