"""The one-time repacking of mxjax's quantized weights into the kernels' layout (`repack`), its
defaults, and the oracle every kernel is tested against (`dequantize`).

`repack` turns mxjax's (K, N)-logical codes and scales into a `PackedWeight` (`packed_weight`:
the storage, W^T (N, K), its fields and flags) and applies the re-storings a GPU's kernels read
fastest, each one-time and undone by every other reader:

- of the codes (`code_order`): `order_for_wgmma` (int4 codes in the GPU kernels' register order
  within each 32 of K: the decode kernel then skips a shuffle, 6-16% faster on an H200; E2M1 in
  `HALVES_ORDER` where it decodes on bf16 tensor cores), `tile_weight` (block-contiguous tiles)
  and `thread_major` (64 x 128 blocks, each block's words in the order a warpgroup's plain
  16-byte loads hand them to its registers: the GPU decode reads such a weight without TMA);
- of the scales (`scales`): `fp4_scales_bf16` (FP4 block scales as the bf16 multipliers
  the GPU decode applies, so it decodes no scale bytes), `fp4_byte_multipliers` (the bytes,
  each its multiplier by one IMAD), `uint4_zero_points` (UINT4's zero points as bytes, 1 a group
  in place of a 4-byte offset), `int4_amax_scales` (INT4's scales as bf16 amaxes) and
  `nf4_slots`, which stores NF4 as int4 slot codes (`decode.nf4_slot_word_bits`: byte permutes
  give their bf16 table values) with bf16 absmax: the numerics of bitsandbytes' GEMV kernel
  (table and absmax in bf16), which every reader then takes (no inverse: the absmax was
  rounded).

On a GPU backend `repack` stores int4-stored weights in register order, FP4 scales as byte
multipliers (or bf16 multipliers) and NF4 as slot codes; in K order with the stored scales
elsewhere (`default_*`; its arguments override).

E2M1 keeps its OCP bits because they are already almost a bf16: the GPU kernels move the sign to
bit 15 and the magnitude to bits 6-8 of a 16-bit half and multiply by 2^126
(`decode.e2m1_pair_bits`), four integer ops and one bf16 multiply for two codes; a multiplier
that carries the 2^126 (NVFP4's always, MXFP4's folded ones) makes that multiply the scaling too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.wo_matmul.code_order import k32_order
from pallas_kernels.wo_matmul.code_order import logical_order
from pallas_kernels.wo_matmul.code_order import order_for_wgmma
from pallas_kernels.wo_matmul.code_order import untile_weight
from pallas_kernels.wo_matmul.decode import e2m1_f32
from pallas_kernels.wo_matmul.decode import nf4_slot_f32
from pallas_kernels.wo_matmul.decode import NF4_TABLE
from pallas_kernels.wo_matmul.packed_weight import FOUR_BIT
from pallas_kernels.wo_matmul.packed_weight import FP4
from pallas_kernels.wo_matmul.packed_weight import int4_stored
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import unpack_k
from pallas_kernels.wo_matmul.packed_weight import WeightFormat
from pallas_kernels.wo_matmul.scales import byte_multipliers_fit
from pallas_kernels.wo_matmul.scales import e2m1_decode_on_bf16
from pallas_kernels.wo_matmul.scales import fp4_byte_multipliers
from pallas_kernels.wo_matmul.scales import fp4_scales_bf16
from pallas_kernels.wo_matmul.scales import group_scales
from pallas_kernels.wo_matmul.scales import mark_byte_multipliers
from pallas_kernels.wo_matmul.scales import nf4_slots
from pallas_kernels.wo_matmul.scales import uint4_offsets


def repack(codes: jax.Array, scale: jax.Array, *, fmt: WeightFormat | str, group: int,
           zero_point: jax.Array | None = None,
           tensor_scale: jax.Array | None = None,
           wgmma_order: bool | None = None,
           scale_bf16: bool | None = None,
           byte_multipliers: bool | None = None) -> PackedWeight:
  """Repacks mxjax's (K, N)-logical quantized weight into the kernels' layout.

  Args:
    codes: (K // 2, N) uint8 (4-bit formats, packed along K, even k low nibble), or (K, N)
      int8 / float8_e4m3fn (8-bit formats).
    scale: (K // group, N): float32 (INT4, UINT4, NF4, per-channel: (1, N)), uint8 E8M0 (MXFP4),
      float8_e4m3fn (NVFP4).
    fmt: the WeightFormat.
    group: block size along K (K for per-channel).
    zero_point: (K // group, N) uint8, UINT4 only.
    tensor_scale: float32 scalar, NVFP4 only.
    wgmma_order: store the codes in the GPU kernels' register order (`order_for_wgmma`; MXFP4
      in its halves order, `HALVES_BY_DEFAULT`); None: on a GPU backend for the int4-stored
      formats with 32 | K (`default_wgmma_order`).
    scale_bf16: MXFP4 / NVFP4: store the block scales as the GPU decode's bf16 multipliers
      (`fp4_scales_bf16`, same values; MXFP4's folded where its scales allow and are concrete,
      `MX_FOLD_BY_DEFAULT`); NF4: int4 slot codes and bf16 absmax (`nf4_slots`,
      bitsandbytes' GEMV numerics); None: on a GPU backend (`default_scale_bf16`) unless the
      scale bytes are stored as byte multipliers.
    byte_multipliers: MXFP4 / NVFP4: keep the scale bytes, marked as each its GPU multiplier by
      one integer multiply-add (`fp4_byte_multipliers`; raises for scales outside its range or
      with scale_bf16=True); None: where `default_byte_multipliers` holds and scale_bf16 is
      None.

  Returns:
    PackedWeight.
  """
  fmt = WeightFormat(fmt)
  if fmt in FOUR_BIT:
    k, n = codes.shape[0] * 2, codes.shape[1]
  else:
    k, n = codes.shape
  if k % group or scale.shape != (k // group, n):
    raise ValueError(f"scale shape {scale.shape} does not match K={k}, N={n}, group={group}")
  if (zero_point is not None) != (fmt is WeightFormat.UINT4):
    raise ValueError(f"zero_point is required for UINT4 and only for it (fmt={fmt})")
  if (tensor_scale is not None) != (fmt is WeightFormat.NVFP4):
    raise ValueError(f"tensor_scale is required for NVFP4 and only for it (fmt={fmt})")
  offset = None
  if fmt in (WeightFormat.INT4, WeightFormat.MXFP4, WeightFormat.NVFP4):  # the nibbles' bits
    q = unpack_k(codes).astype(jnp.int8)
    w = jnp.where(q >= 8, q - 16, q).astype(jnp.int4).T
  elif fmt is WeightFormat.UINT4:
    q = unpack_k(codes).astype(jnp.int8)
    w = (q - 8).astype(jnp.int4).T
    offset = scale.astype(jnp.float32) * (zero_point.astype(jnp.float32) - 8.0)
  elif fmt is WeightFormat.NF4:  # nibble codes, kept packed two a byte, now along K of (N, K)
    q = unpack_k(codes).T
    w = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(jnp.uint8)
  else:
    w = codes.T
  ts = None if tensor_scale is None else jnp.asarray(tensor_scale, jnp.float32)
  pw = PackedWeight(w=w, scale=scale, offset=offset, tensor_scale=ts, fmt=fmt, group=group,
                    k=k, n=n)
  if byte_multipliers and scale_bf16:
    raise ValueError("byte_multipliers keeps the scale bytes; scale_bf16=True stores bf16 "
                     "multipliers: pass one of them")
  if byte_multipliers is None and scale_bf16 is None and default_byte_multipliers(pw):
    pw = mark_byte_multipliers(pw)  # (their fit checked once, by the default)
  elif byte_multipliers:
    pw = fp4_byte_multipliers(pw)
  elif scale_bf16 or scale_bf16 is None and default_scale_bf16(fmt):
    pw = scales_bf16(pw)
  if wgmma_order is None:
    wgmma_order = default_wgmma_order(pw)
  return order_for_wgmma(pw, halves=default_halves(fmt)) if wgmma_order else pw


def default_wgmma_order(pw: PackedWeight) -> bool:
  """Whether `repack` stores a weight in `WGMMA_ORDER` by default: on a GPU backend (whose
  kernels read it without a shuffle), for int4-stored codes (`int4_stored`: NF4 once
  `nf4_slots` made it so), when 32 divides K. The portable and TPU kernels read K order (a
  register-order weight costs them a permutation)."""
  return jax.default_backend() in ("gpu", "cuda") and int4_stored(pw) and pw.k % 32 == 0


def scales_bf16(pw: PackedWeight) -> PackedWeight:
  """The block scales as the GPU decode's bf16 multipliers: `fp4_scales_bf16` (MXFP4 / NVFP4)
  or `nf4_slots` (NF4, with its codes)."""
  return nf4_slots(pw) if pw.fmt is WeightFormat.NF4 else fp4_scales_bf16(pw)


def default_scale_bf16(fmt: WeightFormat) -> bool:
  """Whether `repack` stores block scales as bf16 multipliers by default: for MXFP4 / NVFP4
  (`fp4_scales_bf16`) and NF4 (`nf4_slots`) on a GPU backend, whose decode kernel then reads
  them with no scale decode (H200, 8192 x 28672: MXFP4 17-22% faster at M = 1..64, NVFP4 7-10%
  at M = 1..32 and 2% slower at M = 64; the prefill GEMM converts FP4's back per call, +1% /
  +3%) and decodes NF4 by byte permutes. Elsewhere the stored bytes are smaller and as fast."""
  return jax.default_backend() in ("gpu", "cuda") and fmt in (
      WeightFormat.MXFP4, WeightFormat.NVFP4, WeightFormat.NF4)


def default_byte_multipliers(pw: PackedWeight) -> bool:
  """Whether `repack` stores FP4 block scales as byte multipliers (`fp4_byte_multipliers`) by
  default: for MXFP4 / NVFP4 on a GPU backend whose decode runs on bf16 tensor cores
  (`e2m1_decode_on_bf16`), where every scale fits (`byte_multipliers_fit`: concrete scales
  only, so under jit the bf16 multipliers stay). H100, session 40, 8192 x 28672, against the
  defaults before (MXFP4's folded multipliers in the halves order, NVFP4's bf16 multipliers in
  the byte-pair order): MXFP4 M = 1 54.8 -> 54.1 us, M = 16 57.7 -> 56.6; NVFP4 61.4 -> 56.6,
  59.2 -> 53.8; 2-6% at M = 64 .. 256 and 2-3% in the prefill GEMM (`verified.py`); 4096 x
  14336 (session 41) MXFP4 M = 32 24.2 -> 23.0, NVFP4 M = 64 30.8 -> 29.3; the weight 5% / 10%
  smaller."""
  return (jax.default_backend() in ("gpu", "cuda") and pw.fmt in FP4
          and e2m1_decode_on_bf16() and byte_multipliers_fit(pw) is None)


# Formats `repack` stores in the halves order when it stores register order (`default_halves`):
# MXFP4, whose decode it made 2-4% faster on an H100 with folded multipliers (session 37: M = 1
# 59.5 -> 57.5 us, M = 16 61.8 -> 59.1), and NVFP4 (session 40, H100, bf16 multipliers: 8192 x
# 28672 M = 1 61.2 -> 60.2, M = 16 60.5 -> 59.0; 4096 x 14336 M = 1 17.4 -> 16.1, M = 16 17.6 ->
# 16.4; `verified.py`).
HALVES_BY_DEFAULT = (WeightFormat.MXFP4, WeightFormat.NVFP4)


def default_halves(fmt: WeightFormat) -> bool:
  """Whether `repack` stores a weight it puts in register order in `HALVES_ORDER`: the
  `HALVES_BY_DEFAULT` formats where `e2m1_decode_on_bf16()`."""
  return fmt in HALVES_BY_DEFAULT and e2m1_decode_on_bf16()


def dequantize_nk(pw: PackedWeight, *, stored_order: bool = False) -> jax.Array:
  """W^T, the (N, K) float32 weight a PackedWeight stands for, in the storage orientation.

  With `stored_order`, K stays in the order the codes are stored in (`WGMMA_ORDER` within each
  32 for a weight in register order; pair it with `storage_order(x, pw)`): reading such a
  weight back in K order (int4 codes widened, permuted and narrowed again) made XLA's
  dequantize-then-GEMM prefill 5.5x slower on an H200 (725 against 131 us, M = 1024, N = 4096),
  where permuting x costs ~11 us.
  """
  pw = untile_weight(pw)
  if not stored_order:
    pw = logical_order(pw)
  fmt = pw.fmt
  if fmt is WeightFormat.NF4 and pw.scale_bf16:
    q = nf4_slot_f32(pw.w.astype(jnp.int32) & 15)
  elif fmt is WeightFormat.NF4:
    lo, hi = (jnp.asarray(NF4_TABLE)[v.astype(jnp.int32)] for v in (pw.w & 15, pw.w >> 4))
    q = jnp.stack([lo, hi], axis=-1).reshape(pw.n, pw.k)
  elif fmt in FP4:
    q = e2m1_f32(pw.w.astype(jnp.int32) & 15)  # selects, not a gather (prefill.py)
  else:
    q = pw.w.astype(jnp.float32)
  w = q * _per_element(group_scales(pw), pw)
  if fmt is WeightFormat.UINT4:
    w = w - _per_element(uint4_offsets(pw).offset, pw)
  return w


def _per_element(v: jax.Array, pw: PackedWeight) -> jax.Array:
  """Per-group values (G, N) -> (N, K), each element's group's, in `pw`'s storage order."""
  order = k32_order(pw)
  if order is None or pw.group % 32 == 0:  # groups of whole 32s: the order stays inside
    return jnp.repeat(v.T, pw.group, axis=1)
  k = 32 * (np.arange(pw.k) // 32) + order[np.arange(pw.k) % 32]
  return v.T[:, k // pw.group]


def dequantize(pw: PackedWeight) -> jax.Array:
  """The (K, N) float32 weight a PackedWeight stands for (pure jnp; the kernels' oracle)."""
  return dequantize_nk(pw).T


def repack_qarray(q, *, wgmma_order: bool | None = None, scale_bf16: bool | None = None,
                  byte_multipliers: bool | None = None) -> PackedWeight:
  """Repacks an `mxjax.QArray` weight (logical (K, N), quantized along K = axis 0); `wgmma_order`,
  `scale_bf16` and `byte_multipliers` as in `repack`.

  Read through its fields only (this package imports nothing of mxjax beyond its formats).

  Raises:
    NotImplementedError: a scheme with no kernel layout (NF4 double quantization, 2-D blocks,
      FP6, ...), or a weight not quantized along axis 0.
  """
  sch = q.scheme
  if len(q.shape) != 2 or q.axis % 2 != 0:
    raise NotImplementedError(
        f"weight-only matmul wants a (K, N) weight quantized along K (axis 0); got shape "
        f"{q.shape}, axis {q.axis}")
  if getattr(sch, "double_quant", False) or getattr(sch, "block_size_2d", None):
    raise NotImplementedError(f"no kernel layout for {sch.describe()}")
  k, _ = q.shape
  element = sch.element
  gran = getattr(sch.granularity, "value", sch.granularity)
  group = sch.block_size if gran == "block" else k
  scale_fmt = getattr(sch.scale, "value", sch.scale)
  if element == "int4":
    fmt = WeightFormat.INT4
  elif element == "uint4":
    fmt = WeightFormat.UINT4
  elif element == "e2m1" and scale_fmt == "e8m0":
    fmt = WeightFormat.MXFP4
  elif element == "e2m1" and sch.tensor_scale:
    fmt = WeightFormat.NVFP4
  elif element == "nf4":
    fmt = WeightFormat.NF4
  elif element == "int8" and gran == "axis":
    fmt = WeightFormat.INT8
  elif element == "e4m3" and gran == "axis":
    fmt = WeightFormat.FP8
  else:
    raise NotImplementedError(f"no weight-only kernel layout for {sch.describe()}")
  ts = None if q.tensor_scale is None else q.tensor_scale.reshape(())
  return repack(q.codes, q.scale, fmt=fmt, group=group, zero_point=q.zero_point,
                tensor_scale=ts, wgmma_order=wgmma_order, scale_bf16=scale_bf16,
                byte_multipliers=byte_multipliers)
