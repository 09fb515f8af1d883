"""One entry point for the weight-only matmul: `wo_matmul(x, pw, implementation=...)`."""

from __future__ import annotations

import jax

from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.portable import wo_matmul_portable
from pallas_kernels.wo_matmul.prefill import wo_matmul_dequant_gemm
from pallas_kernels.wo_matmul.reference import wo_matmul_reference

IMPLEMENTATIONS = ("xla", "mosaic_gpu", "mosaic_gpu_gemm", "dequant_gemm", "portable",
                   "mosaic_tpu")
PREFILL_M = 64  # above this M the GPU default is dequant_gemm (compute-bound shapes)


def default_implementation(x: jax.Array | None = None, pw: PackedWeight | None = None) -> str:
  """What `wo_matmul` runs when no implementation is named (call it to see the choice).

  On a GPU: mosaic_gpu for the (format, group) cases its kernel matched the reference on an
  H100 (`decode_plan.VERIFIED`) with bf16 x and M <= 64; for M > 64 (prefill) mosaic_gpu_gemm
  where `mosaic_gpu_gemm.VERIFIED` lists the case (correct and faster than dequant_gemm on an
  H100), else dequant_gemm; else the XLA reference. On a TPU: mosaic_tpu. Elsewhere: xla.
  """
  backend = jax.default_backend()
  if backend in ("gpu", "cuda"):
    from pallas_kernels.wo_matmul import decode_plan, mosaic_gpu_gemm
    key = None if pw is None else decode_plan.case(pw)
    bf16 = x is not None and x.dtype == jax.numpy.bfloat16
    if x is not None and x.shape[0] > PREFILL_M:  # (XLA widens INT4's amax scales for the GEMM
      # where its in-kernel rebuild, `amax_in_kernel`, is unchecked)
      key = key and tuple(c for c in key if c != "amax_scales")
      return "mosaic_gpu_gemm" if bf16 and key in mosaic_gpu_gemm.VERIFIED else "dequant_gemm"
    return "mosaic_gpu" if bf16 and key in decode_plan.VERIFIED else "xla"
  return {"tpu": "mosaic_tpu"}.get(backend, "xla")


def wo_matmul(x: jax.Array, pw: PackedWeight, *, implementation: str | None = None,
              interpret: bool = False, out_dtype=None, **tuning) -> jax.Array:
  """`y = x @ dequant(W)` for a weight in the kernels' layout (see `layout.repack`).

  Args:
    x: (M, K) activations (bf16 for the GPU kernel).
    pw: PackedWeight of logical shape (K, N).
    implementation: "xla" (pure-jnp reference), "mosaic_gpu" (decode kernel, M <= 64),
      "mosaic_gpu_gemm" (prefill: W dequantized in registers inside a Hopper GEMM),
      "dequant_gemm" (prefill: bf16 dequantization pass + XLA bf16 GEMM), "portable" (plain
      Pallas, the GPU kernels' CPU-testable twin), "mosaic_tpu"; None picks by backend.
    interpret: run Pallas kernels in interpret mode (CPU).
    out_dtype: default x.dtype.
    **tuning: passed to the kernel (tile sizes, pipeline depth, splits).

  Returns:
    (M, N) array. An implementation that cannot take a case raises (never a silent fallback).
  """
  impl = implementation or default_implementation(x, pw)
  if impl == "xla":
    return wo_matmul_reference(x, pw, out_dtype=out_dtype)
  if impl == "dequant_gemm":
    return wo_matmul_dequant_gemm(x, pw, out_dtype=out_dtype)
  if impl == "portable":
    return wo_matmul_portable(x, pw, out_dtype=out_dtype, interpret=interpret, **tuning)
  if impl in ("mosaic_gpu", "mosaic_gpu_gemm"):
    gemm = impl == "mosaic_gpu_gemm"
    if interpret:
      raise NotImplementedError(
          f"{impl} uses TMA/wgmma, which the CPU interpreter cannot run: test its twin, "
          "implementation='portable'"
          + (" with weights_bf16=True" if gemm or tuning.get("weights_bf16") else ""))
    if gemm:
      from pallas_kernels.wo_matmul.mosaic_gpu_gemm import wo_gemm_mosaic_gpu
      return wo_gemm_mosaic_gpu(x, pw, out_dtype=out_dtype, **tuning)
    from pallas_kernels.wo_matmul.mosaic_gpu import wo_matmul_mosaic_gpu
    return wo_matmul_mosaic_gpu(x, pw, out_dtype=out_dtype, **tuning)
  if impl == "mosaic_tpu":
    from pallas_kernels.wo_matmul.tpu import wo_matmul_tpu
    return wo_matmul_tpu(x, pw, out_dtype=out_dtype, interpret=interpret, **tuning)
  raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
