"""The one place where Pallas API differences between jax 0.10.2 (CPU CI) and 0.11.2 (GPU) live.

Differences handled here:
- `plgpu.kernel`: 0.11 drops the positional `out_shape`; both accept `out_type=`.
- `plgpu.CompilerParams.lowering_semantics`: the default moved from `Lane` (0.10) to `Warpgroup`
  (0.11). Our Mosaic GPU kernels are written with explicit register layouts, i.e. `Lane`
  semantics, so we always pass it.
- `plgpu.kernel` scratch: 0.11 rejects `scratch_shapes=` (a TypeError from its Mesh); both take
  `scratch_types=`, which the kernels use.
- `plgpu.transpose_ref`: deprecated in 0.11 in favour of `ref.transpose(...)`.
- `plgpu.load(ref, (), layout=...)`: 0.11 warns that a separate index is deprecated (index the
  ref instead); still accepted, left as is until it can be re-checked on a GPU.
- TPU interpret mode: `pltpu.InterpretParams` (both versions); older spellings raise clearly.
- `lower_for`: lowering a kernel for a platform this host does not have (CI checks of the GPU
  and TPU kernels on a CPU).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
from jax.experimental import pallas as pl

JAX_VERSION: tuple[int, ...] = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())


def plgpu_module():
  """Imports `jax.experimental.pallas.mosaic_gpu` lazily (it pulls in the Mosaic GPU dialect)."""
  from jax.experimental.pallas import mosaic_gpu as plgpu  # pylint: disable=g-import-not-at-top
  return plgpu


def pltpu_module():
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
  return pltpu


def mgpu_kernel(body: Callable[..., None], *, out_type: Any, **kwargs: Any) -> Callable[..., Any]:
  """`plgpu.kernel` with Lane lowering semantics on either jax version."""
  plgpu = plgpu_module()
  params = plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Lane)
  return plgpu.kernel(body, out_type=out_type, compiler_params=params, **kwargs)


def wgmma_accumulator_load(acc_ref: Any, wait_n: int) -> Any:
  """The value of a wgmma accumulator once at most `wait_n` wgmma groups are in flight
  (`acc_ref[...]` waits for all of them); not exported by `plgpu` on these jax versions."""
  from jax._src.pallas.mosaic_gpu import primitives  # pylint: disable=g-import-not-at-top
  return primitives.wgmma_accumulator_load(acc_ref, wait_n=wait_n)


def transpose_ref(ref: Any, perm: tuple[int, ...]) -> Any:
  """Transposed view of a Mosaic GPU SMEM ref (no data movement)."""
  plgpu = plgpu_module()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    return plgpu.transpose_ref(ref, perm)


def tpu_interpret_params() -> Any:
  """The object to pass as `interpret=` to run a `pltpu` kernel in TPU interpret mode on CPU."""
  pltpu = pltpu_module()
  if not hasattr(pltpu, "InterpretParams"):
    raise NotImplementedError(
        f"jax {jax.__version__} has no pltpu.InterpretParams: TPU interpret mode is unavailable")
  return pltpu.InterpretParams()


def pallas_call(*args: Any, **kwargs: Any) -> Callable[..., Any]:
  """`pl.pallas_call` (kept here so a future signature change has one place to land)."""
  return pl.pallas_call(*args, **kwargs)


def lower_for(platform: str, fn: Callable[..., Any], *args: Any,
              tpu_kind: str = "TPU v5 lite") -> Any:
  """`jax.jit(fn).trace(*args).lower(...)` for `platform` ("cuda" or "tpu"), on any host.

  This runs everything up to the hardware compiler: for a Mosaic GPU kernel, Pallas' lowering to
  Mosaic GPU IR (register layouts, casts, TMA / wgmma operand shapes and swizzles, shared-memory
  transforms); for a Mosaic TPU kernel, Pallas' TPU lowering rules and block-shape checks (with
  the TPU generation `tpu_kind`, given through an abstract device since the host has none). It
  does not run ptxas or libtpu, so a kernel that lowers can still fail to compile, and nothing
  is executed. `args` may be arrays or `jax.ShapeDtypeStruct`s.
  """
  if platform == "tpu":
    device = jax.sharding.AbstractDevice(device_kind=tpu_kind, num_cores=1, platform="tpu")
    mesh = jax.sharding.AbstractMesh((1,), ("_lower_for",), abstract_device=device)
    with jax.sharding.use_abstract_mesh(mesh):
      return jax.jit(fn).trace(*args).lower(lowering_platforms=("tpu",))
  return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,))
