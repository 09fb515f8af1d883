"""The `pallas` backend: the kernels of `pallas_kernels/`, for the cases they cover.

Covered: the weight-only matmul `pallas_kernels.wo_matmul` (issue 8): a high-precision lhs of
any rank contracted on its last axis, times a quantized 2-D rhs (K, N) contracted on axis 0 (its
quantization axis), no batch dims, in one of the kernel layouts: INT4 / UINT4 (asymmetric) per
group, MXFP4, NVFP4, NF4 (without double quantization), per-channel INT8 / FP8 E4M3. The
QArray is repacked into the kernel layout (`repack_qarray`, a transpose) inside the call; for
serving, repack once outside.

On a GPU `wo_matmul`'s default runs: the Mosaic GPU decode kernel for M <= 64 in the formats it
was verified on, for M > 64 the fused prefill GEMM `mosaic_gpu_gemm` where verified and the
`dequant_gemm` path otherwise (`pallas_kernels.wo_matmul.api.default_implementation`; every
default re-checked on an H200, 2026-12-03: rel. err 1.6-2.4e-3, the bf16 roundings); a case with
neither raises. Elsewhere the portable Pallas twin runs in interpret mode (slow: for tests).
Every other case reports why, and `backend="pallas"` raises with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mxjax.qarray import QArray
from mxjax.schemes import Granularity, Scheme

_MODULES: dict = {}


def _load():
  """(api, layout) modules of pallas_kernels.wo_matmul, or (None, error); imported on first use
  (pallas_kernels is a sibling package: mxjax imports without it)."""
  if not _MODULES:
    try:
      from pallas_kernels.wo_matmul import api, layout

      _MODULES.update(api=api, layout=layout, error=None)
    except Exception as e:  # noqa: BLE001 - any failure to import means "not available"
      _MODULES.update(api=None, layout=None, error=f"{type(e).__name__}: {e}")
  return _MODULES["api"], _MODULES["layout"], _MODULES["error"]


def _layout_reason(s: Scheme) -> str | None:
  """Why the weight-only kernel has no layout for scheme `s` (None: it has one)."""
  g = s.granularity
  if s.double_quant or s.block_size_2d is not None:
    return f"no weight-only kernel layout for {s.describe()} (double quant / 2-D blocks)"
  if s.element in ("int4", "uint4", "nf4") and g is Granularity.BLOCK:
    return None
  if s.element == "e2m1" and g is Granularity.BLOCK and (s.scale.value == "e8m0" or s.tensor_scale):
    return None
  if s.element in ("int8", "e4m3") and g is Granularity.AXIS:
    return None
  return (
      f"no Pallas kernel for this case yet: the weight-only kernel takes INT4/UINT4/NF4 groups,"
      f" MXFP4, NVFP4 or per-channel INT8/FP8 weights, not {s.name or s.describe()}"
  )


def reason(case) -> str | None:
  """Why the pallas backend cannot run `case` (None: it can)."""
  api, layout, error = _load()
  if api is None or not hasattr(layout, "repack_qarray"):
    return f"no Pallas kernel for this case yet (pallas_kernels.wo_matmul unavailable: {error})"
  d, lhs, rhs = case.dims, case.lhs, case.rhs
  if case.accumulation is not None:
    return "accumulation emulation runs on the reference backend only"
  if lhs.scheme is not None:
    return "no Pallas kernel for this case yet: only weight-only (high-precision lhs) is covered"
  if rhs.scheme is None:
    return "no Pallas kernel for this case yet: no operand is quantized"
  if d.lb or len(rhs.shape) != 2 or d.rc != (0,) or d.lc != (lhs.shape.__len__() - 1,):
    return (
        "no Pallas kernel for this case yet: the weight-only kernel computes x[..., K] @ W[K, N]"
        " (rhs 2-D, contracted on axis 0, no batch dims)"
    )
  if rhs.axis != 0:
    return "the weight-only kernel wants the weight quantized along K (axis 0)"
  if case.platform == "gpu" and lhs.dtype.name != "bfloat16":
    return f"the Mosaic GPU weight-only kernel takes bfloat16 activations, not {lhs.dtype.name}"
  if rhs.padded:
    return "the weight-only kernel needs the group size to divide K (the weight is padded)"
  return _layout_reason(rhs.scheme)


def run(lhs: jax.Array, rhs: QArray, dims, out_dtype, acc):
  """x[..., K] @ dequant(W)[K, N] through `pallas_kernels.wo_matmul`."""
  del dims, acc
  platform = jax.default_backend()
  api, layout, _ = _load()
  pw = layout.repack_qarray(rhs)
  x2 = lhs.reshape(-1, lhs.shape[-1])
  impl = "portable"
  if platform in ("gpu", "cuda"):
    # The GPU kernel where it was verified (M <= 64), the dequant_gemm path for prefill; the
    # XLA reference is not a Pallas kernel, so a case without one raises instead.
    impl = api.default_implementation(x2, pw)
    if impl == "xla":
      raise NotImplementedError(
          f"no GPU Pallas kernel for {pw.fmt.value} weights (group {pw.group}) at M = "
          f"{x2.shape[0]}; use backend='xla' or 'reference'")
  out = api.wo_matmul(x2, pw, implementation=impl, interpret=impl == "portable",
                          out_dtype=jnp.float32)  # fmt: skip
  return out.reshape(lhs.shape[:-1] + (out.shape[-1],)).astype(out_dtype)
