"""One entry point for fused block quantization: `quantize(x, scheme, implementation=...)`."""

from __future__ import annotations

import jax

from pallas_kernels.quantize.portable import quantize_portable
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.reference import quantize_reference

IMPLEMENTATIONS = ("xla", "mosaic_gpu", "portable", "mosaic_tpu")


def default_implementation() -> str:
  backend = jax.default_backend()
  return {"gpu": "mosaic_gpu", "cuda": "mosaic_gpu", "tpu": "mosaic_tpu"}.get(backend, "xla")


def quantize(x: jax.Array, scheme: str, *, transpose: bool = False,
             implementation: str | None = None, interpret: bool = False,
             **tuning) -> Quantized:
  """Fused block quantization of a 2-D array along its last axis (of x.T if `transpose`).

  Bit-identical to `mxjax.quantize(x, scheme)` (`mxjax.quantize(x.T, scheme)` with transpose).

  Args:
    x: (M, K) float array (bf16 for the GPU kernel).
    scheme: "mxfp8_e4m3", "fp8_e4m3_block128", "mxfp4", "nvfp4" or "int4_g128".
    transpose: quantize x.T (column-wise output for the backward pass).
    implementation: "xla" (pure jnp), "mosaic_gpu", "portable", "mosaic_tpu"; None picks by
      backend.
    interpret: run Pallas kernels in interpret mode (CPU).
    **tuning: passed to the kernel.

  Returns:
    Quantized(codes, scale, tensor_scale) in mxjax's QArray layout. An implementation that
    cannot take a case raises with the reason.
  """
  impl = implementation or default_implementation()
  if impl == "xla":
    return quantize_reference(x, scheme, transpose=transpose)
  if impl == "portable":
    return quantize_portable(x, scheme, transpose=transpose, interpret=interpret, **tuning)
  if impl == "mosaic_gpu":
    if interpret:
      raise NotImplementedError(
          "mosaic_gpu uses TMA and register layouts the CPU interpreter cannot run: test its "
          "twin, implementation='portable'")
    if transpose:
      raise NotImplementedError(
          "mosaic_gpu has no column-wise (transposed) fused quantization yet; it would need a "
          "register transpose before packing along M")
    from pallas_kernels.quantize.mosaic_gpu import quantize_mosaic_gpu
    return quantize_mosaic_gpu(x, scheme, **tuning)
  if impl == "mosaic_tpu":
    from pallas_kernels.quantize.tpu import quantize_tpu
    return quantize_tpu(x, scheme, transpose=transpose, interpret=interpret, **tuning)
  raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
