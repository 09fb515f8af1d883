"""Published memory and peak-rate figures of the accelerators the planner knows.

Every number is a vendor's published spec-sheet figure: HBM capacity, HBM bandwidth and the
DENSE peak matrix rate per compute format (structured-sparsity figures are halved where the
sheet quotes only those). A format an accelerator has no matrix unit for is absent; the
planner then falls back to the next wider format and says so.

.. warning:: Spec-sheet peaks are ceilings, not measurements: DESIGN.md's H100 measurements
  (about 810 TFLOP/s bf16 GEMM, about 3.0 TB/s device copy) are 80-90% of them.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

TERA = 1e12
PETA = 1e15
GB = 1e9

# Fallback when an accelerator has no matrix unit for a compute format: the next wider format.
FALLBACK: dict[str, str] = {"fp4": "fp6", "fp6": "fp8", "fp8": "bf16", "int4": "int8",
                            "int8": "bf16"}
COMPUTE_FORMATS = ("bf16", "fp8", "fp6", "fp4", "int8", "int4")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accelerator:
  """One accelerator (a single GPU or TPU chip).

  Attributes:
    name: short name ("H100").
    long_name: the SKU the numbers are for.
    memory_bytes: HBM capacity, bytes.
    bandwidth: HBM bandwidth, bytes/s.
    peak: {compute format: dense peak matrix rate, FLOP/s (OP/s for int)}.
    source: where the numbers come from.
    note: how they were read (sparsity halved, per-GPU share of a system sheet, ...).
  """

  name: str
  long_name: str
  memory_bytes: float
  bandwidth: float
  peak: Mapping[str, float]
  source: str
  note: str = ""

  def __post_init__(self):
    if self.memory_bytes <= 0 or self.bandwidth <= 0:
      raise ValueError(f"{self.name}: memory and bandwidth must be positive")
    if "bf16" not in self.peak:
      raise ValueError(f"{self.name}: a bf16 peak is required (the fallback of every format)")
    unknown = set(self.peak) - set(COMPUTE_FORMATS)
    if unknown:
      raise ValueError(f"{self.name}: unknown compute formats {sorted(unknown)}")
    object.__setattr__(self, "peak", types.MappingProxyType(dict(self.peak)))

  def peak_for(self, compute: str) -> tuple[float, str]:
    """(dense peak FLOP/s, the format actually used) for a compute format, falling back to the
    next wider format the accelerator has matrix units for."""
    if compute not in COMPUTE_FORMATS:
      raise ValueError(f"unknown compute format {compute!r}; known: {COMPUTE_FORMATS}")
    fmt = compute
    while fmt not in self.peak:
      fmt = FALLBACK[fmt]
    return self.peak[fmt], fmt

  def ridge(self, compute: str) -> float:
    """Arithmetic intensity (FLOP/byte) where the roofline turns from memory- to compute-bound."""
    return self.peak_for(compute)[0] / self.bandwidth


ACCELERATORS: dict[str, Accelerator] = {a.name: a for a in [
    Accelerator(
        name="H100", long_name="NVIDIA H100 SXM5 80GB",
        memory_bytes=80 * GB, bandwidth=3.35 * TERA,
        peak={"bf16": 989.5 * TERA, "fp8": 1979 * TERA, "int8": 1979 * TERA},
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM): BF16 1,979 TFLOPS*, FP8 3,958 "
               "TFLOPS*, INT8 3,958 TOPS* (*with sparsity); 80 GB HBM3, 3.35 TB/s",
        note="dense = sheet's sparsity figure / 2; no FP4/FP6 tensor cores (Hopper)"),
    Accelerator(
        name="H200", long_name="NVIDIA H200 SXM 141GB",
        memory_bytes=141 * GB, bandwidth=4.8 * TERA,
        peak={"bf16": 989.5 * TERA, "fp8": 1979 * TERA, "int8": 1979 * TERA},
        source="NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 1,979 TFLOPS*, FP8 3,958 "
               "TFLOPS*, INT8 3,958 TOPS* (*with sparsity); 141 GB HBM3e, 4.8 TB/s",
        note="dense = sparsity figure / 2; same compute as H100, 1.43x the bandwidth"),
    Accelerator(
        name="B200", long_name="NVIDIA B200 (HGX B200, per GPU)",
        memory_bytes=180 * GB, bandwidth=8.0 * TERA,
        peak={"bf16": 2.25 * PETA, "fp8": 4.5 * PETA, "fp6": 4.5 * PETA, "fp4": 9.0 * PETA,
              "int8": 4.5 * PETA},
        source="NVIDIA HGX B200 datasheet (8 GPUs): FP4 144 PFLOPS*, FP8/FP6 72 PFLOPS*, INT8 "
               "72 POPS*, FP16/BF16 36 PFLOPS* (*with sparsity); 1.44 TB HBM3e, 64 TB/s; "
               "NVIDIA NVFP4 blog (2025-06-24): B200 9/18 PFLOPS dense/sparse FP4",
        note="per GPU = system / 8, dense = sparsity figure / 2; FP6 runs at the FP8 rate"),
    Accelerator(
        name="MI355X", long_name="AMD Instinct MI355X",
        memory_bytes=288 * GB, bandwidth=8.0 * TERA,
        peak={"bf16": 2.5166 * PETA, "fp8": 5.0332 * PETA, "fp6": 10.0663 * PETA,
              "fp4": 10.0663 * PETA, "int8": 5.0332 * PETA},
        source="AMD Instinct MI355X product page / CDNA 4 whitepaper: peak dense FP16/BF16 "
               "2.5 PF, FP8 5.0 PF, MXFP6 and MXFP4 10.1 PF, INT8 5.0 POPS; 288 GB HBM3E, "
               "8 TB/s (256 CUs x 8,192 FP8 FLOP/clk x 2.4 GHz = 5.03 PF)",
        note="dense figures (the 20.1 PF FP4 headline counts sparsity); MXFP6 at the FP4 rate"),
    Accelerator(
        name="TPUv5p", long_name="Google Cloud TPU v5p (per chip)",
        memory_bytes=95 * GB, bandwidth=2.765 * TERA,
        peak={"bf16": 459 * TERA, "int8": 918 * TERA},
        source="Google Cloud TPU v5p documentation: peak compute per chip 459 TFLOPS (bf16), "
               "918 TOPS (int8); 95 GB HBM2e, 2,765 GB/s",
        note="no FP8 matrix unit (the docs list FP8 at the bf16 rate)"),
]}


def get_accelerator(name: str | Accelerator) -> Accelerator:
  """The accelerator called `name` (case-insensitive, '-' and ' ' ignored)."""
  if isinstance(name, Accelerator):
    return name
  key = name.replace("-", "").replace(" ", "").lower()
  for k, a in ACCELERATORS.items():
    if k.lower() == key:
      return a
  raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)}")
