"""Prefill weight-only GEMM on Hopper with Mosaic GPU: `y = x @ dequant(W)`, W dequantized in
registers, for M from about a hundred up (the decode kernel, `mosaic_gpu.py`, takes M <= 64).

At prefill M the matmul is bound by the tensor cores, not by reading W, so the point is to keep
them as busy as XLA's bf16 GEMM does while the weight stays 4 or 8 bits in HBM: one pass, no bf16
copy of W (`prefill.wo_matmul_dequant_gemm` writes and re-reads one).

Orientation ("swap AB", as in the decode kernel): a CTA computes a (128 of N) x (tile_m of M)
tile of y^T = W^T x^T. Its two compute warpgroups own 64 rows of W^T each; per K chunk a
warpgroup loads its codes from shared memory, dequantizes them to bf16 in registers and issues
`wgmma(acc, w_regs, x_tile^T)`, x being the shared-memory operand (a transposed view of the
(tile_m, chunk) bf16 tile). The dequantized weight never goes back to shared memory. A third
warpgroup issues the TMA copies of x, W and the scales `steps` K steps ahead
(`plgpu.emit_pipeline_warp_specialized`). The (64, tile_m) f32 accumulator is rounded to the
output dtype and stored 64 x 64 at a time through a transposed shared-memory view
(WGMMA_TRANSPOSED register layout), so y is written (M, N) with no transpose pass. Grid
(M / tile_m, N / 128) with the M tiles fastest: the CTAs that read the same W tile run together,
so W comes from HBM about once and x (M x K bf16) from the L2.

Numerics: every weight is dequantized as `layout.dequantize_nk` does, in float32 (q * s; UINT4
q * s - offset; NVFP4 s = s_t * s_b; per-channel INT8 / FP8 q * s) and rounded to bf16 once, then
multiplied in bf16 with float32 accumulation: the numerics of `wo_matmul_dequant_gemm` (and of XLA's
own dequantize-then-dot) up to summation order. (MXFP4 read from bf16 scale multipliers,
`scale_multipliers`, takes q * 2^(e - 127) in one bf16 multiply: the same weight, exactly; with
folded multipliers, `scales.fp4_scales_bf16(mx_fold=True)`, that multiply is the E2M1 decode's.) The
portable twin with the same numerics is `portable.wo_matmul_portable(..., weights_bf16=True)`. NVFP4
with `tensor_scale_out` departs from it: its weights are q * s_b, exact in bf16, and s_t multiplies
the float32 sum (the decode kernel's prescaled numerics: no rounding of the weight, so nearer the
float32 reference than bf16(q * s_b * s_t)). INT8 / FP8 with `channel_scale_out` depart the same
way: the codes are the bf16 weights, and each channel's scale multiplies the float32 sum.

This kernel uses Mosaic GPU-only primitives (TMA, wgmma) and cannot run in the CPU interpreter;
the GPU benchmark (`experiments/bench_kernels.py --prefill`) checks it against the reference for
every shape it times.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels import _ptx
from pallas_kernels.gates import require_checked
from pallas_kernels.wo_matmul.code_order import untile_weight
from pallas_kernels.wo_matmul.decode import nf4_f32
from pallas_kernels.wo_matmul.decode_plan import case
from pallas_kernels.wo_matmul.packed_weight import FP4
from pallas_kernels.wo_matmul.packed_weight import INT4_STORED
from pallas_kernels.wo_matmul.packed_weight import int4_stored
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat
from pallas_kernels.wo_matmul.registers import e2m1_bf16
from pallas_kernels.wo_matmul.registers import nf4_lut_halves
from pallas_kernels.wo_matmul.registers import nf4_slots_bf16
from pallas_kernels.wo_matmul.registers import spread_groups
from pallas_kernels.wo_matmul.registers import wgmma_from_upcast_4x
from pallas_kernels.wo_matmul.scales import amax_scale_f32
from pallas_kernels.wo_matmul.scales import BYTE_MULTIPLIERS
from pallas_kernels.wo_matmul.scales import fp4_scales_stored
from pallas_kernels.wo_matmul.scales import group_scales
from pallas_kernels.wo_matmul.scales import int4_scales_f32
from pallas_kernels.wo_matmul.scales import nvfp4_multiplier_f32
from pallas_kernels.wo_matmul.scales import NVFP4_PRESCALE_LOG2
from pallas_kernels.wo_matmul.scales import scale_bytes_f32
from pallas_kernels.wo_matmul.scales import uint4_offsets

WG_ROWS = 64  # rows of W^T a compute warpgroup owns: one wgmma's M
TILE_N = 2 * WG_ROWS  # two compute warpgroups a CTA
EPI = 64  # output piece stored at a time (rows of M)
SMEM_BYTES = 232_448  # Hopper's opt-in shared memory per block
BYTE_CODES = (WeightFormat.INT8, WeightFormat.FP8)

# (format, group) pairs that have run, matched the reference and beaten dequant_gemm on an H100
# (group "channel" for per-channel scales): `api.default_implementation` picks this kernel for
# them at M > 64; others need allow_unverified=True. H100, 2026-11-23, K = 8192, N = 28672,
# M = 1024 (experiments/results/kernels_wo_s5_gemm_*.md): 0.79-0.94x XLA's bf16 dot, 1.2-1.5x
# dequant_gemm; INT4 g128 also at M = 128-512 and 4096 (tied with dequant_gemm there) and at
# 4096 x 14336. Groups not listed (UINT4 g32 / g128) have not run.
VERIFIED = {(WeightFormat.INT4, 128), (WeightFormat.INT4, 32), (WeightFormat.UINT4, 64),
            (WeightFormat.MXFP4, 32), (WeightFormat.NVFP4, 16), (WeightFormat.NF4, 64),
            (WeightFormat.INT8, "channel"), (WeightFormat.FP8, "channel"),
            # H200, 2026-12-04, M = 1024: NF4 slot codes 722.5 us (0.88x XLA bf16) against
            # the byte path's 840.1, rel. err 2.9e-3
            (WeightFormat.NF4, 64, "slots"),
            # H100, 2026-12-07, M = 1024, 4096 x 14336: MXFP4 with folded multipliers in the
            # halves order (`scales.fp4_scales_bf16(mx_fold=True)`, `code_order.HALVES_ORDER`, the
            # GPU default since) 187.7 -> 181.2 us, rel. err as the default's
            # (kernels_wo_s37_h100_fp4_decode3.json)
            (WeightFormat.MXFP4, 32, "mx_fold", "halves"),
            # H100, 2026-12-07 (session 40), FP4 scale bytes each their multiplier by one IMAD
            # (`scales.fp4_byte_multipliers`) in the halves order, against the bf16 multipliers
            # in the byte-pair order, rel. err as theirs: M = 1024, 4096 x 14336 MXFP4 184.3 ->
            # 181.2 us, NVFP4 191.8 -> 185.9; M = 256, 8192 x 28672 MXFP4 178.4 -> 173.3, NVFP4
            # 184.9 -> 179.4 (kernels_wo_s40_h100_fp4_bytes_gemm.json,
            # kernels_wo_s40_h100_fp4_bytes_m64_256.json)
            (WeightFormat.MXFP4, 32, "halves", "byte_multipliers"),
            (WeightFormat.NVFP4, 16, "halves", "byte_multipliers"),
            # H100, 2026-12-07 (session 40), 8192 x 28672, rel. err as the float32 scales'
            # (2.17e-3): INT4 g64 at M = 1024 707.7 us (0.94x XLA bf16's 664.3; dequant_gemm
            # 951.7); INT4's bf16 amax scales rebuilt in the kernel (`amax_in_kernel`) against
            # XLA widening them first and against float32 scales: M = 256 g32 237.9 -> 200.7
            # (float32 195.5), g128 207.6 -> 195.9 (195.6); M = 1024 g64 733.2 -> 723.2 (707.7)
            # (kernels_wo_s40_h100_int4_amax_gemm.json, kernels_wo_s40_h100_int4_g64_gemm.json)
            (WeightFormat.INT4, 64), (WeightFormat.INT4, 32, "amax_scales"),
            (WeightFormat.INT4, 64, "amax_scales"), (WeightFormat.INT4, 128, "amax_scales")}
# FP4 formats whose bf16 scale multipliers (`scales.fp4_scales_bf16`, `repack`'s GPU storage)
# this kernel has read as they are (`scale_multipliers`) and matched the reference on a GPU; for
# them it is the default (elsewhere the multipliers would go back to bytes in an XLA pass each
# call). H200, 2026-12-05, M = 1024, 8192 x 28672 (kernels_wo_s20_gemm_multipliers.json): MXFP4
# 735.0 -> 648.8 us (0.98x XLA bf16: MXFP4's one bf16 multiply a weight pair in place of the f32
# round trip), NVFP4 756.4 -> 741.3, the same relative error.
MULTIPLIERS_VERIFIED: frozenset[WeightFormat] = frozenset({WeightFormat.MXFP4,
                                                           WeightFormat.NVFP4})
# Whether NVFP4's `tensor_scale_out` (s_t on the f32 sum, the weights q * s_b in one bf16
# multiply a pair, as MXFP4's multipliers: 735.0 -> 648.8 us there) has matched the reference on
# a GPU; it is then the default. Written in session 21 without a GPU; H100, 2026-12-05, M = 1024,
# 8192 x 28672 (kernels_wo_s22_h100_tensor_scale_out.json): 750.1 -> 676.6 us (0.99x XLA bf16,
# target 0.9x), rel. err 2.3e-3 -> 1.7e-3 (no weight rounded to bf16).
TENSOR_SCALE_OUT_VERIFIED = True
# Whether INT8's codes reaching float32 through bf16 (`int8_bf16`: Mosaic's int8 -> bf16 cast,
# a byte permute, two ANDs and a bf16x2 subtract a pair, then bf16 -> f32, both exact) has
# matched the reference on a GPU; it is then the default. Without it each code is converted by
# one integer-to-float conversion (`arith.sitofp`, I2F), once for every (weight, M tile): INT8
# M = 1024 at 8192 x 28672 is 9.4e8 of them, ~250 us of the conversion pipe at the 16 a clock
# an SM that the CUDA guide gives most conversions on compute capability 9.0 (FP32 adds: 128;
# unmeasured here), against the call's 768 us (H100, 0.87x XLA bf16; FP8, whose codes convert
# in pairs, 713). Written in session 31 without a GPU; the decode kernel's INT8 path takes the
# same cast. H100, 2026-12-06, jax 0.11.2, M = 1024, 8192 x 28672
# (kernels_wo_s32_h100_int8_bf16_prefill.json): rel. err 2.37e-3 either way, 814.4 -> 793.1 us
# (0.87x XLA bf16 in that run): the I2F pipe was not the bound, 21 us of it at most.
INT8_BF16_VERIFIED = True
# Whether the per-channel formats' `channel_scale_out` (INT8 / FP8 codes as bf16 weights, exact,
# and the channel scale on the f32 sum, as the decode kernel applies it) has matched the
# reference on a GPU; it is then the default for them. Written in session 44 without a GPU.
# H100, 2026-12-07, jax 0.11.2, M = 1024 (kernels_wo_s45_h100_channel_scale_out_*.json): rel.
# err 1.66e-3 against q * s rounded a weight's 2.35-2.37e-3, us 8192 x 28672 INT8 773.1 ->
# 709.7 (0.87x -> 0.95x XLA bf16), FP8 720.0 -> 686.2 (0.94x -> 0.98x); 4096 x 14336 INT8
# 219.8 -> 200.1 (0.90x -> 0.99x), FP8 203.5 -> 193.2 (0.97x -> 1.02x).
CHANNEL_SCALE_OUT_VERIFIED = True


def chunk_scale_rows(tile_k: int, group: int, chunk: int) -> list[tuple[int, ...]]:
  """Which rows of a K step's scale block each K chunk uses.

  A K step of `tile_k` (a multiple of `chunk`) reads a scale block of max(1, tile_k // group)
  rows (the group containing the step when the group is longer than the step). Entry j lists,
  for chunk j, the block row of each group the chunk touches, in column order: one row when a
  group spans the chunk, `chunk // group` rows when the groups are shorter.
  """
  if tile_k % chunk or (group % chunk and chunk % group):
    raise ValueError(f"tile_k={tile_k}, group={group}, chunk={chunk} do not nest")
  rows = max(1, tile_k // group)
  if group >= chunk:
    return [((j * chunk // group) % rows,) for j in range(tile_k // chunk)]
  sub = chunk // group
  return [tuple(j * sub + t for t in range(sub)) for j in range(tile_k // chunk)]


def _smem_bytes(fmt: WeightFormat, tile_m: int, tile_k: int, steps: int, out_bytes: int,
                group: int) -> int:
  """Shared memory the kernel allocates: `steps` pipeline slots and the output pieces."""
  wbytes = TILE_N * tile_k // 2 if fmt in INT4_STORED or fmt is WeightFormat.NF4 else (
      TILE_N * tile_k)
  srows = max(1, tile_k // group)
  per_step = tile_m * tile_k * 2 + wbytes + srows * TILE_N * 4 * (2 if fmt is
                                                                 WeightFormat.UINT4 else 1)
  return steps * per_step + 2 * 2 * EPI * WG_ROWS * out_bytes + 1024


def wo_gemm_mosaic_gpu(x: jax.Array, pw: PackedWeight, *, tile_m: int | None = None,
                       tile_k: int | None = None, steps: int | None = None,
                       nf4_lut: bool | None = None, fp4_scale_bytes: bool | None = None,
                       scale_multipliers: bool | None = None,
                       tensor_scale_out: bool | None = None, int8_bf16: bool | None = None,
                       channel_scale_out: bool | None = None,
                       amax_in_kernel: bool | None = None, out_dtype=None,
                       allow_unverified: bool = False) -> jax.Array:
  """`x @ dequant(W)` on a Hopper GPU, W dequantized in registers (prefill-shaped M).

  Args:
    x: (M, K) bf16 activations; M is padded up to a multiple of tile_m (the pad is sliced off).
    pw: PackedWeight (`layout.repack`) of any format: INT4 / UINT4 / NF4 groups, MXFP4, NVFP4,
      INT8 / FP8 per channel. N must be a multiple of 128.
    tile_m: rows of x (columns of y^T) per CTA, a multiple of 64 up to 256 (one wgmma's N);
      default min(256, M rounded up to 64).
    tile_k: K per pipeline step: 64 (not NF4) or a multiple of 128, dividing K; default 256
      when tile_m <= 128 (and 256 divides K), else 128 (the H100's best at M = 128 / 1024).
    steps: pipeline slots (TMA copies in flight); default 4; either is lowered to what fits in
      shared memory (at least 2, or a ValueError).
    nf4_lut: NF4: the byte-permute table lookup (`registers.nf4_lut_halves`) instead of the
      select tree; same values. Default (None): on for NF4.
    fp4_scale_bytes: MXFP4 / NVFP4: read the stored scale bytes and decode them in registers
      (`scales.scale_bytes_f32`; NVFP4's s_t comes as one row and multiplies s_b in f32, the
      order `group_scales` uses) instead of an XLA pass widening them to f32; same values.
      Default (None): on for MXFP4 / NVFP4 scales stored as bytes, and for bf16 multipliers
      that `scale_multipliers` leaves (they go back to bytes in XLA first). Bytes marked as each
      their multiplier up to one IMAD (`scales.fp4_byte_multipliers`) become the multipliers
      so (`registers.spread_groups`' byte pairs), as in the decode kernel: one bf16 multiply a
      code pair, and NVFP4's s_t (with the multiplier's 2^8) on the f32 sum.
    scale_multipliers: MXFP4 / NVFP4 scales stored as bf16 multipliers (`scales.fp4_scales_bf16`,
      `repack`'s GPU storage): read them as they are instead of an XLA pass back to the bytes
      each call; same weights. MXFP4's multiply the bf16 E2M1 values directly (exact: a power
      of two, and subnormal products kept, as `mul.rn.bf16x2` keeps them in the E2M1 decode);
      NVFP4's are widened (`scales.nvfp4_multiplier_f32`, exact) for the f32 product with s_t.
      Default (None): on for the formats in `MULTIPLIERS_VERIFIED`; elsewhere True needs
      `allow_unverified`.
    tensor_scale_out: NVFP4 read from its multipliers: the weights q * s_b (s_b = multiplier
      2^-118, exact) in one bf16 multiply a pair, exact (an E2M1 value times an E4M3 one has
      at most 6 significant bits), and s_t multiplying the float32 sum before the output is
      rounded, instead of q * (s_t s_b) in float32 rounded to bf16 a weight. Not the
      dequantize-then-dot numerics: no weight is rounded. Default (None): on once
      `TENSOR_SCALE_OUT_VERIFIED`; before, True needs `allow_unverified`.
    int8_bf16: INT8 codes to float32 through Mosaic's int8 -> bf16 cast (integer ops and a
      bf16x2 subtract) instead of one I2F conversion a code; the same values (every int8 is a
      bf16). Default (None): on for INT8 once `INT8_BF16_VERIFIED`; before, True needs
      `allow_unverified`.
    channel_scale_out: INT8 / FP8 per channel: the codes themselves are the bf16 weights (every
      int8 and every E4M3 value is a bf16) and each channel's scale multiplies the float32 sum
      before the output is rounded, instead of q * s in float32 rounded to bf16 a weight: per
      element only the conversion to bf16 is left in the dequantization (INT8 with `int8_bf16`:
      no float32 at all), and no weight is rounded (the decode kernel's numerics, nearer the
      float32 reference than dequantize-then-dot's). The pipeline still carries the (1, 128)
      scale block a step, unread; the epilogue reads its 64 channels from global memory.
      Default (None): on for INT8 / FP8 once `CHANNEL_SCALE_OUT_VERIFIED`; before, True needs
      `allow_unverified`.
    amax_in_kernel: INT4 scales stored as bf16 amaxes (`scales.int4_amax_scales`): read the 2
      bytes a group and rebuild each scale RN(a / 7) where the kernel spreads the scales
      (`scales.amax_scale_f32`, by `fma.rn.f32`, as the decode kernel does), instead of an XLA
      pass widening them to float32 first (H100, M = 256, 8192 x 28672: 38 us of XLA a call at
      g32, 11 at g128; in the kernel the call takes 200.7 / 195.9 us against float32 scales'
      195.5 / 195.6; session 40). The same scales. Default (None): on where `VERIFIED` holds
      the case (with its "amax_scales": INT4 g32 / g64 / g128); True elsewhere needs
      `allow_unverified`.
    out_dtype: bf16 (default: x.dtype) or float32.
    allow_unverified: run a (format, group) not yet checked on a GPU (`VERIFIED`); the
      benchmark passes it and checks the result.

  Returns:
    (M, N) array of out_dtype.
  """
  plgpu = _compat.plgpu_module()
  multipliers = pw.scale_bf16 and pw.fmt in FP4
  if scale_multipliers is None:
    scale_multipliers = multipliers and pw.fmt in MULTIPLIERS_VERIFIED
  if scale_multipliers and not multipliers:
    raise ValueError(f"scale_multipliers reads MXFP4 / NVFP4 scales stored as bf16 multipliers "
                     f"(scales.fp4_scales_bf16); this {pw.fmt.value} weight has "
                     f"{pw.scale.dtype} scales")
  if scale_multipliers:
    require_checked(f"{pw.fmt.value}'s scale_multipliers", pw.fmt in MULTIPLIERS_VERIFIED,
                    allow_unverified, reference="the reference", instead="leave it to the default")
  if scale_multipliers and fp4_scale_bytes:
    raise ValueError("fp4_scale_bytes decodes stored scale bytes; scale_multipliers reads the "
                     "bf16 multipliers: pick one")
  nvfp4_mult = scale_multipliers and pw.fmt is WeightFormat.NVFP4
  if tensor_scale_out is None:
    tensor_scale_out = nvfp4_mult and TENSOR_SCALE_OUT_VERIFIED
  if tensor_scale_out and not nvfp4_mult:
    raise ValueError("tensor_scale_out is for NVFP4 read from its bf16 multipliers "
                     "(scale_multipliers)")
  if tensor_scale_out:
    require_checked("NVFP4's tensor_scale_out", TENSOR_SCALE_OUT_VERIFIED, allow_unverified,
                    reference="the reference", instead="leave it to the default")
  if int8_bf16 is None:
    int8_bf16 = pw.fmt is WeightFormat.INT8 and INT8_BF16_VERIFIED
  if int8_bf16 and pw.fmt is not WeightFormat.INT8:
    raise ValueError(f"int8_bf16 converts INT8 codes; the weight is {pw.fmt.value}")
  if int8_bf16:
    require_checked("INT8's int8_bf16", INT8_BF16_VERIFIED, allow_unverified,
                    reference="the reference", instead="leave it to the default")
  if channel_scale_out is None:
    channel_scale_out = pw.fmt in BYTE_CODES and CHANNEL_SCALE_OUT_VERIFIED
  if channel_scale_out and pw.fmt not in BYTE_CODES:
    raise ValueError(f"channel_scale_out is for INT8 / FP8 per-channel weights, not "
                     f"{pw.fmt.value}")
  if channel_scale_out:
    require_checked(f"{pw.fmt.value}'s channel_scale_out", CHANNEL_SCALE_OUT_VERIFIED,
                    allow_unverified, reference="the reference",
                    instead="leave it to the default")
  # Row-major W^T (every step reads a (128, tile_k) box); FP4 scales as stored bytes unless the
  # multipliers are read as they are; UINT4's offsets from XLA (prefill: small).
  pw = untile_weight(pw)
  pw = uint4_offsets(pw if scale_multipliers else fp4_scales_stored(pw))
  if amax_in_kernel is None:
    amax_in_kernel = pw.amax_scales and case(pw) in VERIFIED
  if amax_in_kernel and not pw.amax_scales:
    raise ValueError("amax_in_kernel reads INT4 scales stored as bf16 amaxes "
                     "(scales.int4_amax_scales); this weight's scales are not")
  if not amax_in_kernel:  # INT4's amax scales widened by XLA, the case checked without them
    pw = int4_scales_f32(pw)
  if "bf16_scales" in case(pw):  # a scheme's bf16 scales, widened as `group_scales` would
    pw = dataclasses.replace(pw, scale=pw.scale.astype(jnp.float32))
  m, k = x.shape
  n, g, fmt = pw.n, pw.group, pw.fmt
  out_dtype = jnp.dtype(out_dtype or x.dtype)
  per_channel = fmt in BYTE_CODES
  slots = fmt is WeightFormat.NF4 and pw.scale_bf16  # int4 slot codes (`scales.nf4_slots`)
  nf4 = fmt is WeightFormat.NF4 and not slots  # nibble bytes: even / odd k halves
  int4 = int4_stored(pw)
  variant = "".join(f" ({c.replace('_', ' ')})" for c in case(pw)[2:])
  require_checked(f"the mosaic_gpu_gemm path for {fmt.value} group {g}{variant}",
                  case(pw) in VERIFIED,
                  allow_unverified, reference="the reference", instead="use 'dequant_gemm'")
  if x.dtype != jnp.bfloat16:
    raise NotImplementedError(f"mosaic_gpu_gemm takes bf16 activations, got {x.dtype}")
  if k != pw.k:
    raise ValueError(f"x is (M, {k}) but W has K={pw.k}")
  if out_dtype not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
    raise NotImplementedError(f"mosaic_gpu_gemm writes bf16 or float32, not {out_dtype}")
  if n % TILE_N:
    raise ValueError(f"N={n} must be a multiple of {TILE_N}")
  mp64 = -(-m // 64) * 64
  tile_m = min(256, mp64) if tile_m is None else tile_m
  if tile_k is None:  # H100, INT4 M = 128: tile (128, 256) 126 us, (128, 128) 134 us
    tile_k = 256 if tile_m <= 128 and k % 256 == 0 else 128
  if tile_m % 64 or not 64 <= tile_m <= 256:
    raise ValueError(f"tile_m must be a multiple of 64 in [64, 256], got {tile_m}")
  if tile_k != 64 and tile_k % 128 or (nf4 and tile_k == 64):
    raise ValueError(f"tile_k must be 64 (not NF4) or a multiple of 128, got {tile_k}")
  if k % tile_k:
    raise ValueError(f"K={k} must be a multiple of tile_k={tile_k}")
  if fp4_scale_bytes is None:
    fp4_scale_bytes = fmt in FP4 and not scale_multipliers
  if nf4_lut is None:
    nf4_lut = nf4
  if fp4_scale_bytes and fmt not in FP4:
    raise ValueError(f"fp4_scale_bytes is for MXFP4 / NVFP4 scales, not {fmt.value}")
  if nf4_lut and not nf4:
    raise ValueError(f"nf4_lut is the NF4 table lookup; the weight is {fmt.value}")
  chunk = min(tile_k, 128)
  group = k if per_channel else g
  if not per_channel and group % chunk and chunk % group:
    raise NotImplementedError(f"group {g} with tile_k={tile_k}")
  rows_of_chunk = chunk_scale_rows(tile_k, group, chunk)
  srows = max(1, tile_k // group)
  out_bytes = out_dtype.itemsize
  fit = 4 if steps is None else steps
  while fit > 2 and _smem_bytes(fmt, tile_m, tile_k, fit, out_bytes, group) > SMEM_BYTES:
    fit -= 1
  if _smem_bytes(fmt, tile_m, tile_k, fit, out_bytes, group) > SMEM_BYTES:
    raise ValueError(f"tile_m={tile_m}, tile_k={tile_k} with {fit} steps needs more than "
                     f"{SMEM_BYTES} bytes of shared memory: use a smaller tile")
  steps = fit
  m_pad = -(-m // tile_m) * tile_m
  xp = jnp.pad(x, ((0, m_pad - m), (0, 0))) if m_pad != m else x
  m_tiles, n_tiles, ksteps = m_pad // tile_m, n // TILE_N, k // tile_k

  # Inputs: x (NF4: its even and odd k halves, matching the low / high nibbles), W^T codes,
  # float32 scales (G, N) and, for UINT4, offsets (G, N).
  xs = [xp[:, 0::2], xp[:, 1::2]] if nf4 else [xp]
  w_in = lax.bitcast_convert_type(pw.w, jnp.int8) if fmt is WeightFormat.FP8 else pw.w
  if scale_multipliers:
    s_in = pw.scale  # bf16, used as they are (MXFP4) or widened in registers (NVFP4)
  elif fp4_scale_bytes:
    s_in = lax.bitcast_convert_type(pw.scale, jnp.uint8)
  elif amax_in_kernel:
    s_in = pw.scale  # bf16 amaxes, the scales rebuilt as they are spread
  else:
    s_in = group_scales(pw)
  # Per-row inputs beside the scales: UINT4's offsets (G, N), blocked like the scales, and with
  # NVFP4 scale bytes or multipliers its tensor scale as one (1, N) row.
  row_inputs = {}
  if fmt is WeightFormat.UINT4:
    row_inputs["off"] = pw.offset
  # Scale bytes that are each their multiplier up to one IMAD: the one-multiply decode, as for
  # folded multipliers; NVFP4's weights then carry s_b / 2^8 and its output 2^8 s_t
  byte_pairs = BYTE_MULTIPLIERS[fmt] if fp4_scale_bytes and pw.byte_multipliers else None
  s_t_out = tensor_scale_out or (byte_pairs is not None and fmt is WeightFormat.NVFP4)
  nvfp4_ts_rows = (fp4_scale_bytes or scale_multipliers) and not s_t_out
  if nvfp4_ts_rows and fmt is WeightFormat.NVFP4:
    row_inputs["ts"] = jnp.broadcast_to(pw.tensor_scale.astype(jnp.float32), (1, n))
  # With `tensor_scale_out`, NVFP4's s_t, read once by each warpgroup for its output
  ts_out = ([pw.tensor_scale.astype(jnp.float32)
             * (2.0**(126 - NVFP4_PRESCALE_LOG2) if byte_pairs else 1.0)] if s_t_out else [])
  wk = chunk // 2 if nf4 else chunk  # W^T columns a chunk spans (NF4: bytes; also x's halves)
  # MXFP4's multipliers are its scales, powers of two: an E2M1 value times one is a bf16 (the
  # decode kernel's product), so no float32 round trip. NVFP4's s_t s_b is not: f32 there,
  # unless s_t goes on the sum (`tensor_scale_out`), when q * s_b is a bf16 too.
  mx_bf16 = scale_multipliers and (fmt is WeightFormat.MXFP4 or tensor_scale_out)
  # multipliers that carry the E2M1 decode's 2^126 (MXFP4's 2^(e - 1), NVFP4's s_b 2^118: folded
  # ones, read as they are, or byte multipliers): the E2M1 decode's multiply scales too
  one_multiply = pw.mx_fold or byte_pairs is not None

  x_tf = (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))
  if int4:  # wk int4 = wk / 2 bytes a row
    w_tf = (plgpu.TilingTransform((8, wk)), plgpu.SwizzleTransform(wk // 2))
  else:  # bytes
    w_tf = (plgpu.TilingTransform((8, wk)), plgpu.SwizzleTransform(wk))
  o_cols = 128 // out_bytes
  o_tf = (plgpu.TilingTransform((8, o_cols)), plgpu.SwizzleTransform(128))
  nx = len(xs)
  row_fma = functools.partial(_ptx.fma_rn, layout=_ptx.ROW)  # on one value a tile row

  def dequant(w_smem, s_smem, row_smems, j):
    """Chunk j of this warpgroup's (64, tile_k) codes -> bf16 register tiles (NF4: the even and
    the odd k half)."""
    ks = pl.ds(j * wk, wk)
    wgmma_layout = plgpu.Layout.WGMMA
    if int4:
      q = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_4X)
      if pw.wgmma_order:  # stored in register order (`code_order.order_for_wgmma`)
        q = wgmma_from_upcast_4x(q)
      else:
        q = plgpu.layout_cast(q, plgpu.Layout.WGMMA_UPCAST_2X)  # cheaper shuffles while 4-bit
        q = plgpu.layout_cast(q, wgmma_layout)
      if fmt in FP4:  # E2M1 bits -> bf16 values, exact (folded: with the scale, below)
        q = q if one_multiply else e2m1_bf16(q, halves=pw.halves_order)
      elif slots:  # the bf16 table's values; times the bf16 absmax (in f32: exact) below
        q = nf4_slots_bf16(q)
      else:
        q = q.astype(jnp.bfloat16)  # Mosaic's fast i4 cast
      vals = [q if mx_bf16 or one_multiply else q.astype(jnp.float32)]
    else:
      b = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_2X)
      b = plgpu.layout_cast(b, wgmma_layout)
      if nf4 and nf4_lut:
        vals = list(nf4_lut_halves(b))
      elif nf4:  # Mosaic GPU does no arithmetic on 8-bit registers: widen first
        b = b.astype(jnp.uint16)
        vals = [nf4_f32(b & 15), nf4_f32(b >> 4)]
      elif fmt is WeightFormat.FP8:
        vals = [lax.bitcast_convert_type(b, jnp.float8_e4m3fn).astype(jnp.float32)]
      elif int8_bf16:  # with channel_scale_out the bf16 codes are the weights as they are
        vals = [b.astype(jnp.bfloat16) if channel_scale_out
                else b.astype(jnp.bfloat16).astype(jnp.float32)]
      else:
        vals = [b.astype(jnp.float32)]
      if channel_scale_out:  # the codes are the weights (exact); the scale goes on the sum
        return [v.astype(jnp.bfloat16) for v in vals]

    def spread(ref, t_rows, decode=None, byte_pairs=None):  # each group's per-row values,
      vals = []                                               # over the chunk
      for r in t_rows:
        v = plgpu.load(ref.at[r], (), layout=wgmma_layout.reduce(1))
        vals.append(decode(v, fmt) if decode else v)
      return spread_groups(vals, wk, g // 2 if nf4 else g, byte_pairs)  # stored columns a group

    t_rows = (0,) if per_channel else rows_of_chunk[j]
    if one_multiply:  # value / 2^126 * 2^(e - 1) = value * 2^(e - 127) (NVFP4's: value * s_b
      # / 2^8), one bf16 multiply, exact
      return [e2m1_bf16(vals[0], spread(s_smem, t_rows, byte_pairs=byte_pairs),
                        halves=pw.halves_order)]
    if mx_bf16:  # value * 2^(e - 127) (NVFP4: * s_b) in one bf16 multiply, exact
      unbias = ((lambda v, _: v * 2.0**-NVFP4_PRESCALE_LOG2)  # s_b 2^118 -> s_b, exact
                if fmt is WeightFormat.NVFP4 else None)
      return [vals[0] * spread(s_smem, t_rows, unbias)]
    s = spread(s_smem, t_rows, (lambda v, _: nvfp4_multiplier_f32(v)) if scale_multipliers
               else scale_bytes_f32 if fp4_scale_bytes
               else (lambda v, _: amax_scale_f32(v, row_fma)) if amax_in_kernel else None)
    if "ts" in row_smems:
      s = spread(row_smems["ts"], (0,)) * s
    off = spread(row_smems["off"], t_rows) if "off" in row_smems else None
    outs = []
    for v in vals:
      v = v * s
      if off is not None:
        v = v - off
      outs.append(v.astype(jnp.bfloat16))
    return outs

  def kernel(*refs):
    x_gmems, w_gmem, s_gmem = refs[:nx], refs[nx], refs[nx + 1]
    row_gmems = dict(zip(row_inputs, refs[nx + 2:nx + 2 + len(row_inputs)]))
    ts_gmem = refs[nx + 2 + len(row_inputs)] if s_t_out else None
    y_gmem, o_smem = refs[-2:]
    mi, ni = lax.axis_index("m"), lax.axis_index("n")
    wg = lax.axis_index("wg")
    rows = pl.ds(wg * WG_ROWS, WG_ROWS)

    def body(_, *refs_and_acc):
      x_smems = refs_and_acc[:nx]
      w_smem, s_smem = refs_and_acc[nx], refs_and_acc[nx + 1]
      row_smems = {name: r.at[:, rows] for name, r in
                   zip(row_inputs, refs_and_acc[nx + 2:nx + 2 + len(row_inputs)])}
      acc_ref = refs_and_acc[-1]
      for j in range(tile_k // chunk):
        ws = dequant(w_smem.at[rows], s_smem.at[:, rows], row_smems, j)
        for w_, x_smem in zip(ws, x_smems):
          xt = _compat.transpose_ref(x_smem.at[:, pl.ds(j * wk, wk)], (1, 0))
          plgpu.wgmma(acc_ref, w_, xt)
      # All of the step's wgmmas done before the next: their A operand is registers, which
      # PTX forbids touching while a wgmma reads them (a version that left one in flight while
      # the next chunk was dequantized returned garbage on the H100, 2026-11-23); the other
      # warpgroup's MMAs cover this one's dequantization.
      plgpu.wgmma_wait(0)
      return acc_ref

    def compute(pipeline):
      def scoped(acc_ref):
        pipeline(acc_ref)
        out = acc_ref[...]  # (64 of N, tile_m of M)
        if s_t_out:  # NVFP4's s_t on the float32 sum, a scalar load
          out = out * ts_gmem[...]
        if channel_scale_out:  # this warpgroup's 64 channel scales, once on the float32 sum
          cs = plgpu.load(s_gmem.at[0, pl.ds(ni * TILE_N + wg * WG_ROWS, WG_ROWS)], (),
                          layout=plgpu.Layout.WGMMA.reduce(1), optimized=False)
          out = out * lax.broadcast_in_dim(cs, out.shape, [0])
        out = out.astype(out_dtype)
        for e in range(tile_m // EPI):
          piece = lax.slice(out, (0, e * EPI), (WG_ROWS, (e + 1) * EPI))
          piece = plgpu.layout_cast(piece, plgpu.Layout.WGMMA_TRANSPOSED)
          slot = o_smem.at[wg, e % 2]
          plgpu.wait_smem_to_gmem(1, wait_read_only=True)  # this slot's last copy is done
          _compat.transpose_ref(slot, (1, 0))[...] = piece
          plgpu.commit_smem()
          plgpu.copy_smem_to_gmem(
              slot, y_gmem.at[pl.ds(mi * tile_m + e * EPI, EPI),
                              pl.ds(ni * TILE_N + wg * WG_ROWS, WG_ROWS)])
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)

      pl.run_scoped(scoped, plgpu.ACC((WG_ROWS, tile_m), jnp.float32))

    # The scale block holding the step's groups (per channel: always block 0, but written as a
    # function of kk, since the pipeline takes only inputs that move with the grid).
    s_map = lambda kk: (kk * tile_k // group // srows, 0)
    spec = plgpu.BlockSpec
    in_specs = [spec((tile_m, tile_k // nx), lambda kk: (0, kk), transforms=x_tf)] * nx
    in_specs += [spec((TILE_N, wk * (tile_k // chunk)), lambda kk: (0, kk), transforms=w_tf),
                 spec((srows, TILE_N), s_map)]
    gm = [xg.at[pl.ds(mi * tile_m, tile_m)] for xg in x_gmems]
    gm += [w_gmem.at[pl.ds(ni * TILE_N, TILE_N)], s_gmem.at[:, pl.ds(ni * TILE_N, TILE_N)]]
    for name, ref in row_gmems.items():  # s_t: block 0 always, written as a function of kk
      in_specs.append(spec((srows, TILE_N), s_map) if name == "off"
                      else spec((1, TILE_N), lambda kk: (kk * tile_k // k, 0)))
      gm.append(ref.at[:, pl.ds(ni * TILE_N, TILE_N)])
    plgpu.emit_pipeline_warp_specialized(
        body, grid=(ksteps,), in_specs=in_specs, max_concurrent_steps=min(steps, ksteps),
        num_compute_wgs=2, wg_axis="wg", memory_registers=40, compute_context=compute)(*gm)

  f = _compat.mgpu_kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((m_pad, n), out_dtype),
      grid=(m_tiles, n_tiles),
      grid_names=("m", "n"),
      num_threads=3,
      thread_name="wg",
      scratch_types=[plgpu.SMEM((2, 2, EPI, WG_ROWS), out_dtype, transforms=o_tf)],
  )
  y = f(*xs, w_in, s_in, *row_inputs.values(), *ts_out)
  return y[:m] if m_pad != m else y
