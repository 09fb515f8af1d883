"""The quantized weight the weight-only matmul kernels read: `WeightFormat` and `PackedWeight`.

mxjax stores a quantized weight W of logical shape (K, N) (used as `x @ W`) with its blocks along
K (axis 0): 4-bit codes packed two a byte along K, even k in the low nibble, so `codes` is
(K // 2, N) uint8 (or (K, N) int8 / float8 for 8-bit formats), and `scale` is (K // g, N).

The kernels want each output column's weights contiguous along K, because they compute
`y^T = W^T x^T` with W^T as the (register-resident) left operand of the tensor-core MMA, so
`layout.repack` stores:

  PackedWeight.w      (N, K)   int4 (XLA's packed int4: two a byte along K, even k low)  for
                                INT4 / UINT4 (stored as q - 8) and for FP4 E2M1 (the OCP
                                bit pattern s|e e|m, read as int4 bits);
                                int8 / float8_e4m3fn for the per-channel 8-bit formats;
                                uint8 nibble codes (N, K // 2) for NF4, even k low; or,
                                re-stored by `scales.nf4_slots`, int4 NF4 slot codes (N, K).
  PackedWeight.scale  (G, N)   float32 per group (G = K // group; 1 for per-channel), uint8 E8M0
                                for MXFP4, float8_e4m3fn for NVFP4 block scales; bf16
                                multipliers after `fp4_scales_bf16` / `nf4_slots`.
  PackedWeight.offset (G, N)   float32, UINT4 only: s * (zp - 8), so that
                                dequant = (q - zp) * s = (q - 8) * s - offset; after
                                `uint4_zero_points` the uint8 zero points zp themselves.
  PackedWeight.tensor_scale ()  float32, NVFP4 only.

Its static flags say which re-storings a weight holds: of its codes' order and tiles
(`code_order`) and of its scales (`scales`).
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp

class WeightFormat(enum.Enum):
  INT4 = "int4"  # symmetric, per-group float32 scale
  UINT4 = "uint4"  # asymmetric, per-group float32 scale and uint8 zero point
  MXFP4 = "mxfp4"  # E2M1 elements, E8M0 scale per 32
  NVFP4 = "nvfp4"  # E2M1 elements, E4M3 scale per 16, float32 tensor scale
  NF4 = "nf4"  # NF4 index, float32 absmax per group
  INT8 = "int8"  # per output channel float32 scale
  FP8 = "fp8_e4m3"  # per output channel float32 scale


FOUR_BIT = (WeightFormat.INT4, WeightFormat.UINT4, WeightFormat.MXFP4, WeightFormat.NVFP4,
            WeightFormat.NF4)
FP4 = (WeightFormat.MXFP4, WeightFormat.NVFP4)  # E2M1 bits, stored as int4 nibbles
INT4_STORED = (WeightFormat.INT4, WeightFormat.UINT4, WeightFormat.MXFP4, WeightFormat.NVFP4)

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedWeight:
  """A quantized (K, N) weight in the kernels' layout (see the module docstring)."""

  w: jax.Array
  scale: jax.Array
  offset: jax.Array | None
  tensor_scale: jax.Array | None
  fmt: WeightFormat = dataclasses.field(metadata=dict(static=True))
  group: int = dataclasses.field(metadata=dict(static=True))  # K for per-channel
  k: int = dataclasses.field(metadata=dict(static=True))
  n: int = dataclasses.field(metadata=dict(static=True))
  # (tile_n, tile_k) if `w` is stored block-contiguous (`tile_weight`), else None.
  w_tile: tuple[int, int] | None = dataclasses.field(default=None, metadata=dict(static=True))
  # True if each aligned 32 of K of an int4-stored `w` is in `WGMMA_ORDER` (`order_for_wgmma`).
  wgmma_order: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 / NVFP4 in register order: True if each 32-bit word holds register j's two codes in
  # nibbles j and 4 + j, one in each 16-bit half (`HALVES_ORDER`, `order_for_wgmma(halves=True)`).
  halves_order: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # True if `w` is stored in `THREAD_BLOCK` blocks in `THREAD_WORDS` order (`thread_major`):
  # the GPU decode kernel then reads its codes by plain loads, no TMA.
  w_threads: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 / NVFP4 / NF4: True if `scale` holds bf16 multipliers (`fp4_scales_bf16`), not the
  # stored E8M0 / E4M3 scales; for NF4 (`nf4_slots`) the absmax in bf16, `w` int4 slot codes.
  scale_bf16: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 with bf16 multipliers: True if they carry the E2M1 bit decode's 2^126 (2^(e - 1) for
  # E8M0 code e, every e <= `MX_FOLD_MAX_CODE`: `fp4_scales_bf16`), so that one multiply a pair
  # decodes and scales, as NVFP4's multipliers always do.
  mx_fold: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 / NVFP4 with stored scale bytes: True if each byte's bf16 multiplier (MXFP4's folded,
  # 2^(e - 1); NVFP4's s_b 2^118) is one integer multiply-add of it (`BYTE_MULTIPLIERS`,
  # `fp4_byte_multipliers`), so that the GPU decode reads a byte a group and no scale decode.
  byte_multipliers: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # UINT4: True if `offset` holds the uint8 zero points (`uint4_zero_points`), not the float32
  # offsets s (zp - 8).
  zero_points: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # INT4: True if `scale` holds each group's amax a in bf16 (`int4_amax_scales`), the scale
  # being RN_f32(a / 7), which the readers compute (`int4_scales_f32`, `amax_scale_f32`).
  amax_scales: bool = dataclasses.field(default=False, metadata=dict(static=True))

  @property
  def nbytes(self) -> int:
    """Bytes a kernel must read for the weight: codes, scales and offsets."""
    total = self.w.size * self.w.dtype.itemsize if self.w.dtype != jnp.int4 else self.w.size // 2
    for a in (self.scale, self.offset):
      if a is not None:
        total += a.size * a.dtype.itemsize
    return int(total)


def unpack_k(packed: jax.Array) -> jax.Array:
  """(K // 2, N) uint8, even k low nibble -> (K, N) uint8 nibbles."""
  lo, hi = packed & 15, packed >> 4
  k2, n = packed.shape
  return jnp.stack([lo, hi], axis=1).reshape(2 * k2, n)


def int4_stored(pw: PackedWeight) -> bool:
  """Whether `pw.w` holds int4 codes (N, K): INT4_STORED formats and NF4 slot codes."""
  return pw.fmt in INT4_STORED or (pw.fmt is WeightFormat.NF4 and pw.scale_bf16)
