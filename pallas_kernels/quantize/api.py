"""One entry point for fused block quantization: `quantize(x, scheme, implementation=...)`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.quantize.portable import quantize_portable
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.reference import quantize_reference
from pallas_kernels.quantize.schemes import get_scheme
from pallas_kernels.quantize.tpu import tpu_unsupported

IMPLEMENTATIONS = ("xla", "mosaic_gpu", "portable", "mosaic_tpu")

# What the GPU benchmark (experiments/results/kernels_quant*.json) established for the Mosaic GPU
# kernel, scheme by scheme: "bit_exact" (and faster than XLA: picked by default), "bit_exact_slow"
# (runs when named, not picked: no faster than XLA), anything else needs allow_inexact.
# Every scheme: 0 / 0 / 0 mismatches on random, special and tie data. Since session 6 the
# divisions are PTX div.rn and FMA-corrected quotients (`schemes.div_fma`), where integer
# arithmetic had made FP8 1x128, INT4 and NVFP4 ALU-bound at XLA's speed. H200, 2026-12-03,
# 8192 x 8192 (kernels_quant_s6_sweep.md): MXFP8 3.19 TB/s (2.6x XLA), MXFP4 2.14 (3.1x), FP8
# 1x128 2.27 (6.4x), INT4 g128 2.63 (9.8x), NVFP4 1.12 (2.4x, two passes). Session 7 added a
# NaN / Inf tensor to the check: 0 mismatches except FP8 1x128, whose NaN blocks' f32 scale had
# another NaN payload than XLA's GPU division gives (2 scales; codes equal): both now store the
# canonical NaN (CPU-tested; the GPU re-check is the next GPU session's first run).
GPU_STATUS = {
    "mxfp8_e4m3": "bit_exact",
    "mxfp4": "bit_exact",
    "fp8_e4m3_block128": "bit_exact",
    "int4_g128": "bit_exact",
    "nvfp4": "bit_exact",
}


# The column-wise (transposed-output) kernel, `mosaic_gpu_columns.py`: bit-exact for every
# scheme (0 / 0 / 0 mismatches). H200, 8192 x 8192 (kernels_quant_s6_amax_columns.md,
# kernels_quant_s6_nvfp4_columns.md): MXFP8 2.28 TB/s (5.1x XLA's quantize(x.T)), MXFP4 1.74
# (5.4x), FP8 1x128 1.36 (15x), INT4 g128 1.39 (20x), NVFP4 1.01 (3.4x).
GPU_STATUS_COLUMNS = {"mxfp8_e4m3": "bit_exact", "mxfp4": "bit_exact", "nvfp4": "bit_exact",
                      "fp8_e4m3_block128": "bit_exact", "int4_g128": "bit_exact"}


def gpu_unsupported(x: jax.Array, scheme: str, transpose: bool = False) -> str | None:
  """Why the Mosaic GPU kernel cannot take x (None: it can, given the scheme)."""
  from pallas_kernels.quantize.mosaic_gpu import F32_VERIFIED  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize.mosaic_gpu import default_tile_rows  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize.mosaic_gpu_columns import column_blocks  # pylint: disable=g-import-not-at-top
  block = get_scheme(scheme).block
  f32_ok = x.dtype == jnp.float32 and scheme in F32_VERIFIED and not transpose
  if x.ndim != 2 or not (x.dtype == jnp.bfloat16 or f32_ok):
    return (f"the GPU kernels take 2-D bf16 (f32 row-wise for {sorted(F32_VERIFIED)}, checked "
            f"on a GPU), got {x.dtype}{x.shape}")
  m, k = x.shape
  tr = default_tile_rows(block, f32_ok)
  if transpose:
    _, nb, _, _ = column_blocks(scheme, None)
    if m % (block * nb) or k % 128:
      return f"column-wise: M={m} is not a multiple of {block * nb} or K={k} of 128"
  elif k % block or (m * k // block) % tr:
    return f"M * K / B = {m * k // block} blocks do not tile by {tr}"
  return None


def default_implementation(scheme: str | None = None, transpose: bool = False,
                           x: jax.Array | None = None) -> str:
  """mosaic_gpu on a GPU for schemes whose GPU kernel is bit-exact (and, given x, for inputs it
  takes: `gpu_unsupported`), mosaic_tpu on a TPU (given x, for shapes it tiles:
  `tpu_unsupported`), else the XLA reference. Inspectable: call it to see what `quantize` will
  run."""
  backend = jax.default_backend()
  if backend in ("gpu", "cuda"):
    status = (GPU_STATUS_COLUMNS if transpose else GPU_STATUS).get(scheme)
    fits = x is None or gpu_unsupported(x, scheme, transpose) is None
    return "mosaic_gpu" if status == "bit_exact" and fits else "xla"
  if backend == "tpu":
    fits = x is None or tpu_unsupported(x, scheme, transpose) is None
    return "mosaic_tpu" if fits else "xla"
  return "xla"


def quantize(x: jax.Array, scheme: str, *, transpose: bool = False,
             implementation: str | None = None, interpret: bool = False,
             allow_inexact: bool = False, tensor_amax: jax.Array | None = None,
             **tuning) -> Quantized:
  """Fused block quantization of a 2-D array along its last axis (of x.T if `transpose`).

  Bit-identical to `mxjax.quantize(x, scheme)` (`mxjax.quantize(x.T, scheme)` with transpose).

  Args:
    x: (M, K) float array (bf16 for the GPU kernel).
    scheme: "mxfp8_e4m3", "fp8_e4m3_block128", "mxfp4", "nvfp4" or "int4_g128".
    transpose: quantize x.T (column-wise output for the backward pass).
    implementation: "xla" (pure jnp), "mosaic_gpu", "portable", "mosaic_tpu"; None picks by
      backend, scheme and x (`default_implementation`: on a GPU, f32 input or a shape the
      kernel does not tile runs the XLA reference, with the same result; on a TPU, a shape
      the TPU kernel does not tile).
    interpret: run Pallas kernels in interpret mode (CPU).
    allow_inexact: accept a GPU kernel that is not bit-exact or not verified on a GPU for this
      scheme (`GPU_STATUS`); without it such a request raises.
    tensor_amax: NVFP4 only: the tensor's amax (float32 scalar), e.g. kept from an earlier step
      or computed by the op that produced x, used instead of a pass over x; the result is then
      `mxjax.quantize`'s with that amax as the scheme's static amax (values beyond it
      saturate). Other schemes raise if it is given.
    **tuning: passed to the kernel.

  Returns:
    Quantized(codes, scale, tensor_scale) in mxjax's QArray layout. An implementation that
    cannot take a case raises with the reason.
  """
  impl = implementation or default_implementation(scheme, transpose, x)
  if impl == "xla":
    return quantize_reference(x, scheme, transpose=transpose, tensor_amax=tensor_amax)
  if impl == "portable":
    if transpose:  # the column-wise kernel's twin
      from pallas_kernels.quantize.portable_columns import quantize_columns_portable
      return quantize_columns_portable(x, scheme, interpret=interpret, tensor_amax=tensor_amax,
                                       **tuning)
    return quantize_portable(x, scheme, transpose=transpose, interpret=interpret,
                             tensor_amax=tensor_amax, **tuning)
  if impl == "mosaic_gpu":
    if interpret:
      raise NotImplementedError(
          "mosaic_gpu uses TMA and register layouts the CPU interpreter cannot run: test its "
          "twin, implementation='portable'")
    kind = "column-wise (transposed) " if transpose else ""
    table = GPU_STATUS_COLUMNS if transpose else GPU_STATUS
    status = table.get(scheme)
    if status is None:
      raise NotImplementedError(
          f"mosaic_gpu {kind}quantization takes {sorted(table)}, not {scheme!r} (not written "
          "yet; use implementation='xla')")
    if not status.startswith("bit_exact") and not allow_inexact:
      raise NotImplementedError(
          f"the mosaic_gpu {kind}kernel for {scheme} is {status} on the GPU (see "
          "docs/kernels.md); pass allow_inexact=True to run it anyway, or use "
          "implementation='xla'")
    if transpose:
      from pallas_kernels.quantize.mosaic_gpu_columns import quantize_columns_mosaic_gpu
      return quantize_columns_mosaic_gpu(x, scheme, tensor_amax=tensor_amax, **tuning)
    from pallas_kernels.quantize.mosaic_gpu import quantize_mosaic_gpu
    return quantize_mosaic_gpu(x, scheme, tensor_amax=tensor_amax, **tuning)
  if impl == "mosaic_tpu":
    from pallas_kernels.quantize.tpu import quantize_tpu
    return quantize_tpu(x, scheme, transpose=transpose, interpret=interpret,
                        tensor_amax=tensor_amax, **tuning)
  raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
