"""The decode kernel's plan: every option of `mosaic_gpu.wo_matmul_mosaic_gpu` resolved to a
value (defaults from `configs.decode_config`, checks against the weight's format and shape)
before the kernel is built, as a frozen `DecodePlan`. What has run correctly on a GPU
(`verified.py`'s sets) gates the paths that have not.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from pallas_kernels.gates import require_checked
from pallas_kernels.wo_matmul import fp8_x as F8
from pallas_kernels.wo_matmul import schedule as S
from pallas_kernels.wo_matmul import x_split as XS
from pallas_kernels.wo_matmul.code_order import block_words
from pallas_kernels.wo_matmul.code_order import code_bits
from pallas_kernels.wo_matmul.code_order import THREAD_BLOCK
from pallas_kernels.wo_matmul.configs import decode_config
from pallas_kernels.wo_matmul.packed_weight import FP4
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat
from pallas_kernels.wo_matmul.verified import FP8_X_FUSED_SUM_VERIFIED
from pallas_kernels.wo_matmul.verified import FP8_X_VERIFIED
from pallas_kernels.wo_matmul.verified import FUSED_SUM_VERIFIED
from pallas_kernels.wo_matmul.verified import PLAIN_LOADS_VERIFIED
from pallas_kernels.wo_matmul.verified import PREFETCH_VERIFIED_STEPS
from pallas_kernels.wo_matmul.verified import SLOT_LOADS_VERIFIED
from pallas_kernels.wo_matmul.verified import SLOT_STORES_VERIFIED
from pallas_kernels.wo_matmul.verified import SPLIT_KERNEL_VERIFIED
from pallas_kernels.wo_matmul.verified import SPLIT_WGS_VERIFIED
from pallas_kernels.wo_matmul.verified import VERIFIED
from pallas_kernels.wo_matmul.verified import WEIGHTS_BF16_VERIFIED

NUM_SMS_H100 = 132
PER_CHANNEL = (WeightFormat.INT8, WeightFormat.FP8)
SMEM_BYTES = 232_448  # Hopper's opt-in shared memory per block
CHUNK = 128  # K elements per register tile (one wgmma operand)
# Registers a thread the warp-specialized pipeline leaves its memory warpgroup
# (`plgpu.emit_pipeline_warp_specialized`'s `memory_registers`)
MEMORY_REGISTERS = 40
REGISTER_FILE = 65_536  # 32-bit registers an SM (and the most one CTA launches with)
# Codes carried a thread beyond which the decode, the accumulator and x would spill: half of
# the 255 a thread may hold (INT4, 128-row tiles of four chunks, one step ahead: 64).
PREFETCH_MAX_REGISTERS = 128
# Registers a thread that `slot_loads` keeps in flight for the other slots' partial sums (the
# accumulator and the running total beside them): a batch of slots is loaded before any is added.
SLOT_LOAD_REGISTERS = 128


def prefetch_registers(steps_ahead: int, gps: int, wg_rows: int, bits: int) -> int:
  """32-bit registers a thread that `steps_ahead` steps of a warpgroup's codes take: a 64 x 128
  block is 4 (4-bit) or 8 (8-bit) KiB over 128 threads, 8 or 16 words each."""
  return steps_ahead * gps * (wg_rows // THREAD_BLOCK[0]) * block_words(bits) // 128


def register_split(compute_wgs: int, memory_registers: int = MEMORY_REGISTERS
                   ) -> tuple[int, int]:
  """(registers the warpgroups ask for, registers the CTA holds) under Pallas's warp-specialized
  pipeline, for `compute_wgs` compute warpgroups and one memory warpgroup of 128 threads each.

  The pipeline lowers the memory warpgroup to `memory_registers` a thread (`setmaxnreg.dec`)
  and raises each compute warpgroup to floor8((512 - memory_registers) / compute_wgs), at most
  256 (`setmaxnreg.inc`, Pallas's `_compute_registers`). The CTA launches with the registers
  its threads were compiled for, at most the register file shared out in 8-a-thread steps
  (floor8(65536 / threads)), and `setmaxnreg.inc` waits until that pool holds what it asks: an
  ask above the pool never returns. Two compute warpgroups ask 64512 of 64512; four ask 62464
  (112 a compute thread) of 61440 (96 a thread at 640 threads): every four-warpgroup launch
  hangs (sessions 21-25, cut off after compiling; the same arithmetic behind tilelang PR 2406's
  and CUTLASS issue 2007's hangs)."""
  threads = 128 * (compute_wgs + 1)
  per_compute = int(min(256, (512 - memory_registers) / compute_wgs) // 8 * 8)
  asked = 128 * (compute_wgs * per_compute + memory_registers)
  return asked, REGISTER_FILE // threads // 8 * 8 * threads


def case(pw: PackedWeight) -> tuple:
  """A weight's key in `VERIFIED` (and the GEMM's): (format, group), the group "channel" for
  per-channel scales, and appended "slots" for NF4 slot codes (`scales.nf4_slots`),
  "bf16_scales" for scales whose scheme stores them in bf16 (`ScaleFormat.BF16`; not FP4's
  bf16 multipliers, `scales.fp4_scales_bf16`), "zero_points" for UINT4 zero points stored as
  bytes (`scales.uint4_zero_points`), "mx_fold" for MXFP4 multipliers that carry the E2M1
  decode's 2^126 (`fp4_scales_bf16(mx_fold=True)`), "halves" for E2M1 codes in
  `code_order.HALVES_ORDER`, "byte_multipliers" for FP4 scale bytes that are each their multiplier
  up to one IMAD (`scales.fp4_byte_multipliers`), "amax_scales" for INT4 scales stored as the
  bf16 amaxes they are RN(a / 7) of (`scales.int4_amax_scales`)."""
  key = (pw.fmt, "channel" if pw.fmt in PER_CHANNEL else pw.group)
  if pw.fmt is WeightFormat.NF4 and pw.scale_bf16:
    return key + ("slots",)
  flags = {"bf16_scales": (pw.scale.dtype == jnp.bfloat16 and not pw.scale_bf16
                          and not pw.amax_scales),
           "zero_points": pw.zero_points, "mx_fold": pw.mx_fold, "halves": pw.halves_order,
           "byte_multipliers": pw.byte_multipliers, "amax_scales": pw.amax_scales}
  return key + tuple(name for name, on in flags.items() if on)


# `case` variants that change only how the decode turns a chunk's codes into bf16 registers, or
# its stored scales into float32 ones, bit for bit the same registers and scales as their base
# case's (tests/kernels/test_wo_matmul.py, test_wo_layout.py and test_wo_scales.py check both on
# the CPU over every code and scale): the gates of what follows the decode (the fused sum, plain
# loads, the schedule) take their base case's (`base_case`); the decode path itself is gated on
# the full key (`VERIFIED`).
DECODE_VARIANTS = ("mx_fold", "halves", "byte_multipliers", "amax_scales")


def base_case(pw: PackedWeight) -> tuple:
  """`case(pw)` without its `DECODE_VARIANTS`."""
  return tuple(c for c in case(pw) if c not in DECODE_VARIANTS)


def xsum_cols(mp: int) -> int:
  """Columns of UINT4's x group sums (f32, one row a group): x's Mp rows padded to a multiple
  of 32, so each row is whole 128-byte units (a TMA copy moves a multiple of 128 bytes; 40 or
  56 columns at two groups a step did not lower)."""
  return -(-mp // 32) * 32


def _smem_per_step(fmt: WeightFormat, tile_n: int, tile_k: int, mp: int, sub: int,
                   scale_rows: int, xsum: bool = True, off_bytes: int = 4,
                   scale_bytes: int = 4, fp8_x: bool = False, plain_loads: bool = False) -> int:
  """Shared-memory bytes one pipeline step holds (x tile, weight tile (none with
  `plain_loads`), scales (`scale_bytes` each: 4 but for a scheme's bf16 scales, counting FP4's
  2-byte multipliers as 4), UINT4's offsets or zero points (`off_bytes` each), and its x group
  sums unless `xsum=False`; with `fp8_x`, x in 8-bit bytes and its x operand: INT4's group
  sums, INT8's chunk multipliers)."""
  wbytes = tile_n * tile_k if fmt in PER_CHANNEL else tile_n * tile_k // 2
  wbytes = 0 if plain_loads else wbytes
  x_bytes = 1 if fp8_x else 2
  total = sub * mp * tile_k * x_bytes + wbytes + scale_rows * tile_n * scale_bytes  # NF4: 2 x
  if fmt is WeightFormat.UINT4:                                                     # halves
    total += scale_rows * tile_n * off_bytes + (scale_rows * xsum_cols(mp) * 4 if xsum else 0)
  if fp8_x and fmt is WeightFormat.INT4:  # (UINT4's are counted above; others have none)
    total += scale_rows * xsum_cols(mp) * 4
  if fp8_x and fmt is WeightFormat.INT8:  # a row of multipliers a chunk
    total += tile_k // CHUNK * xsum_cols(mp) * 4
  return total


@dataclasses.dataclass(frozen=True)
class DecodePlan:
  """The resolved options the decode kernel is built from (`plan_decode`)."""
  fmt: WeightFormat
  per_channel: bool  # INT8 / FP8: one scale a column, applied to the f32 sum
  fp4: bool  # MXFP4 / NVFP4
  slots: bool  # NF4 as int4 slot codes (`scales.nf4_slots`)
  nf4: bool  # NF4 as nibble bytes: even / odd k halves, each with its half of x
  asym: bool  # UINT4: zero points
  sub: int  # groups a 128-wide register tile (chunk)
  per_chunk: int  # partial products (accumulators) a chunk
  xsub: int  # x copies a chunk (one a group, zeroed outside it) or 1
  mp: int  # M padded to a multiple of 8: x's rows in shared memory, the wgmma N
  prescale: bool
  fp4_scale_bytes: bool
  nf4_lut: bool
  step_wait: bool
  chunk_wait: bool  # group-scaled: a chunk's group wgmmas issued, then one wait
  group_slices: bool
  tma_pad: bool  # x unpadded (M < 8), the TMA filling the tile's first M rows
  zero_in_weights: bool  # UINT4's zero points subtracted from the decoded weights
  zero_points: bool  # UINT4's zero points read as bytes, its offsets s (zp - 8) made in-kernel
  tile_n: int
  steps: int
  gps: int
  tile_k: int
  ksteps_total: int  # K steps (of tile_k) in all
  scale_rows: int  # scale rows a pipeline step
  compute_wgs: int
  wg_rows: int  # rows of the tile a compute warpgroup owns
  schedule: S.Schedule
  load_only: bool
  fused_sum: bool  # slot 0's CTA adds the tile's partial sums and writes y (no XLA pass)
  fp8_x: bool  # FP8 tensor cores: x split in two E4M3 rows, the weights as E4M3 (fp8_x.py)
  plain_loads: bool  # the codes by plain loads from a `code_order.thread_major` weight, no TMA
  prefetch_codes: int  # plain loads this many steps ahead, those steps' codes in the carry
  split_kernel: bool  # fp8_x INT8 / FP8 / MXFP4: x split by one kernel (x_split.py), not XLA
  slot_loads: bool  # fused_sum: the other slots by plain loads, a batch in flight
  slot_batch: int  # slots a batch of those loads
  slot_stores: bool  # fused_sum: slots 1.. by plain stores and a release, no TMA store

  @property
  def chain(self) -> bool:
    """A step's wgmmas chained into the carried accumulator, one wait (prescaled FP4 / NF4 and
    per-channel weights with `step_wait`); never with `fp8_x`, whose FP8 MMA must not carry a
    long sum (its products are folded in float32 every chunk or group)."""
    return self.step_wait and (self.prescale or self.per_channel) and not self.fp8_x

  @property
  def xsum_in(self) -> bool:
    """An x operand a group, computed by XLA: UINT4's x group sums (its f32 offset * x-sum),
    `fp8_x`'s S (its weights' odd values owe back half of x's group sum) or INT8's chunk
    multipliers (`fp8_x.x_terms`)."""
    return ((self.asym and not (self.zero_in_weights or self.prescale))
            or (self.fp8_x and F8.x_terms(self.fmt)))

  @property
  def xs_rows(self) -> int:
    """Rows of that x operand a pipeline step: one a group, or for per-channel weights (INT8
    `fp8_x`) one a chunk."""
    return self.gps if self.per_channel else self.scale_rows

  def code_blocks(self, k: int, tile, kstep, wg_row) -> list[list]:
    """With `plain_loads`: the `code_order.thread_major` blocks (rows of the kernel's (N / 64 *
    K / 128, words) view) that a warpgroup owning rows [wg_row, wg_row + wg_rows) of `tile`
    reads at K step `kstep`: for each chunk j of the step, one a 64-row block. Block (row
    block b, chunk c) is b * K / 128 + c. Ints or traced scalars."""
    rows = THREAD_BLOCK[0]
    first = (tile * self.tile_n + wg_row) // rows
    return [[(first + b) * (k // CHUNK) + kstep * self.gps + j
             for b in range(self.wg_rows // rows)] for j in range(self.gps)]


def plan_decode(m: int, k: int, pw: PackedWeight, *, tile_n: int | None = None,
                steps: int | None = None, splits: int | None = None, gps: int | None = None,
                allow_unverified: bool = False, prescale: bool = True,
                compute_wgs: int | None = None, stream_k: int | None = None,
                load_only: bool = False, nf4_lut: bool | None = None,
                fp4_scale_bytes: bool | None = None, step_wait: bool | None = None,
                chunk_wait: bool | None = None, group_slices: bool | None = None,
                tma_pad: bool | None = None, fused_sum: bool | None = None,
                zero_in_weights: bool = False, fp8_x: bool | None = None,
                prefetch_codes: bool | int | None = None, split_kernel: bool | None = None,
                slot_loads: bool = False, slot_stores: bool = False,
                weights_bf16: bool = False, num_sms: int = NUM_SMS_H100) -> DecodePlan:
  """Resolves and checks the decode kernel's options for an (M, K) x and weight `pw`.

  Options (each None takes its default):
    tile_n: rows of W^T (columns of y) per CTA.
    steps: pipeline depth (TMA copies in flight per CTA); lowered to what fits in shared memory.
    gps: chunks of 128 along K per pipeline step.
      Defaults for these three: `configs.decode_config` (the H100 sweep's best for INT4); a
      default tile_n or gps that does not divide N or K halves until it does, a given one is
      refused.
    allow_unverified: run a (format, group) path that has not yet matched the reference on a
      GPU (`VERIFIED`); the benchmark passes it and checks the result.
    splits: K splits (default: the launch config's, else the smallest power of two that
      divides the K steps and covers the SMs; where none does, stream-K two CTAs an SM).
    stream_k: if given, ignore `splits` and run the stream-K schedule with about this many CTAs
      an SM, each taking an equal, contiguous share of the (N tile, K step) iterations
      (`schedule.stream_k_schedule`): no SM idles at the end.
    prescale: MXFP4 / NVFP4 / NF4: multiply the decoded weights by their block scales in
      registers and run one wgmma per chunk (False: one wgmma per group over x copies, the
      scale applied to the f32 partial product). E2M1: exact either way (an E2M1 value times a
      power of two or an E4M3 value fits bf16); NVFP4's tensor scale then multiplies the f32
      output. NF4: True rounds `table * absmax` (f32) to bf16 once, as bitsandbytes' bf16
      dequantization does; False keeps the table in two bf16 terms (to 2^-17) and the scale in
      f32 (closer to the f32 reference, slower).
    weights_bf16: INT4 / UINT4: prescale too, departing from the kernel's exact group-scaled
      numerics for the prefill GEMM's (and XLA's dequantize-then-dot's): each weight
      RN_bf16(q * s) (UINT4: RN_bf16(q * s - offset)) in float32, one wgmma a chunk chained into
      one accumulator (with `step_wait`), in place of a wgmma and an f32 scale-and-add of its
      partial product a group (UINT4: and its offset times x's group sum, which XLA no longer
      computes). At M = 32 / 64 that epilogue is 2 (groups of 32) to 0.5 (of 128) FMAs a
      weight element, UINT4's twice that, where the prescale costs 2.5-3.5 instructions a
      weight element whatever M is. Gated until a GPU has checked it (`WEIGHTS_BF16_VERIFIED`);
      off by default.
    compute_wgs: 1: one warpgroup a CTA runs loads and math (`plgpu.emit_pipeline`); 2 or 4:
      warp specialization, a memory warpgroup issuing the TMA copies and the compute
      warpgroups taking `tile_n / compute_wgs` rows each (`plgpu.emit_pipeline_warp_specialized`).
      Four are refused: their register split cannot fit (`register_split`). INT8 / FP8 take two
      since session 17 (H200, session 20, M = 64: INT8 106.0 -> 84.7 us, FP8 99.5 -> 82.7; the
      default there since).
    nf4_lut: NF4 (with prescale): look the table up with byte permutes (`nf4_lut_halves`, 22
      integer ops for four codes) instead of the 15-select tree; same f32 values, bit for bit.
      Default (None): on for prescaled NF4 (H100, 8192 x 28672, M = 1: 155 us against 463 us).
    fp4_scale_bytes: prescaled MXFP4 / NVFP4: TMA the stored scale bytes (E8M0, E4M3) and
      decode them in registers (`scales.scale_bytes_f32`), instead of XLA widening them to f32 on
      every call (which reads 1 and writes 4 bytes a group before the kernel reads the 4).
      Default (None): on for prescaled FP4 (H100, 8192 x 28672, M = 1: MXFP4 100 us against
      104, NVFP4 103 against 123; M = 16 MXFP4 104 against 131). A weight whose scales are
      stored as bf16 multipliers (`scales.fp4_scales_bf16`, `repack`'s GPU default) has nothing
      to decode: the kernel loads them as they are (H200, M = 1: MXFP4 50.6 us against 65.1,
      NVFP4 53.3 against 59.1; kernels_wo_s10_*.json). Bytes marked as each their multiplier
      up to one IMAD (`scales.fp4_byte_multipliers`) are decoded so, with no float work.
    step_wait: wait on the wgmmas once a pipeline step, not once a chunk, so that decoding chunk
      j + 1 overlaps chunk j's MMA. Prescaled MXFP4 / NVFP4 / NF4 and per-channel INT8 / FP8
      chain every chunk into one accumulator that starts from the carried sum (per-channel
      scales then multiply the f32 sum once, when the tile is written out, not each chunk's
      partial product). Group-scaled formats scale each group's f32 partial product: they read
      chunk j's accumulators once chunk j + 1's wgmmas are issued (`wgmma_accumulator_load`
      with the newer ones in flight), so that two decoded tiles are live, not a step's (an
      accumulator a chunk, all waited on at the step's end, was slower: H200, INT4 g128 M = 1
      40.2 -> 46.2 us, M = 64 68.5 -> 80.2). Default: `configs.decode_config`'s (on for FP4 and
      per-channel weights, NF4 slot codes but at four CTAs an SM, and UINT4 at M <= 16).
      Checked on the GPU for INT4 / UINT4 / MXFP4 / NVFP4 / NF4 slot codes / INT8 / FP8; NF4
      bytes with it only lowered.
    chunk_wait: without step_wait, group-scaled weights with groups of 32 or 64 (two or four
      partial products a chunk): issue all of a chunk's group wgmmas, each into its own
      accumulator, and wait once, instead of a wait after each group's. Costs an accumulator a
      group (at M = 16, 16 registers a thread each); saves three of INT4 g32's four waits a
      chunk. Default (None): on for INT4 at M <= 16 (UINT4 there keeps step_wait). H200,
      2026-12-04, 8192 x 28672, us with / without (same relative error): INT4 g32 M = 1 44.6 /
      44.6, M = 16 47.3 / 48.8 (gps=2, steps=3, stream_k=2), g64 M = 1 40.2 / 40.4, M = 16
      42.5 / 42.8 (kernels_wo_s14_chunk_wait.json).
    group_slices: INT4 / UINT4 groups of 32 or 64 (narrower than a 128-wide register tile):
      one wgmma a group on its K slice of the tile and of x (x in swizzle tiles of one group),
      instead of a full-width wgmma a group over x copies zeroed outside it: a chunk's MMA
      work once, not 128 / group times. Default (None): on for those groups. H200, 2026-12-04,
      K = 8192, N = 28672 (kernels_wo_s13_group_slices*.json), us at M = 1 / 16 / 32 / 64:
      INT4 g32 104.2 -> 45.1 / 115.9 -> 66.3 / 107.0 -> 61.5 / 182.0 -> 90.3, INT4 g64
      50.5 -> 41.8 / 73.2 -> 42.8 / - / 106.4 -> 85.8, UINT4 g64 63.3 -> 50.8 / 98.4 -> 58.2 /
      - / 129.2 -> 93.1, UINT4 g32 130.1 -> 57.4 / 308.0 -> 75.0 / 125.0 -> 78.3 / 217.5 ->
      118.8; the same relative error as the x copies at every point.
    tma_pad: at M < 8, x goes to the kernel as it is, (M, K), and the TMA copies its M rows
      into the 8-row shared-memory tile, instead of an XLA pad kernel before the launch
      (~1.4 us at M = 1). Whatever the tile's other rows hold (TMA's fill or stale data) is
      harmless: row j of x only reaches column j of the (N, 8) product, and columns M.. are
      dropped. One x copy only
      (group slices, prescaled or per-channel weights; not NF4 bytes). Default (None): on
      wherever it applies. H200, 2026-12-04, 8192 x 28672, M = 1, us (same rel. error): INT4
      g128 39.8 -> 38.3, g32 44.6 -> 43.8, UINT4 g64 52.1 -> 50.5, MXFP4 49.4 -> 47.7, NVFP4
      50.4 -> 48.9; M = 4 INT4 39.9 -> 38.5 (kernels_wo_s13_tma_pad.json); INT8 66.5 -> 64.5,
      FP8 71.0 -> 69.2, NF4 slot codes 60.4 -> 58.7 (kernels_wo_s14_tma_pad.json).
    zero_in_weights: UINT4: subtract each group's zero point from the decoded weights in bf16
      (q - zp, exact: an integer of at most 15 in magnitude; zp - 8 = offset / s, exact after
      rounding to bf16) and scale the partial product like INT4, instead of the f32 term
      offset_g * xsum_g a group, whose x group sums XLA computes and pads before the launch.
      One bf16 subtract a weight pair; no x sums. Default False: correct on the GPU (the same
      relative error) but slower at five of six points. H200, 2026-12-04, 8192 x 28672, us without /
      with, M = 1: g128 52.1 / 53.4, g64 51.4 / 56.2, g32 60.6 / 67.2; M = 16: g128 56.8 /
      54.6, g64 58.6 / 59.6, g32 74.9 / 82.3 (kernels_wo_s14_zero_in_weights.json).
    (A UINT4 weight with its zero points stored as bytes, `scales.uint4_zero_points`, has the
    kernel compute each group's offset f32(s) * (f32(zp) - 8) from them: the bytes `repack`'s
    offsets would take, a quarter; not yet run on a GPU, so it needs `allow_unverified`.)
    fused_sum: the kernel adds each tile's partial sums and writes y (M, N) itself, where XLA
      adds the float32 slots, casts and transposes them in a kernel after it (H200, 8192 x
      28672, `kernel_us` of sessions 13-16: 1.6-2.1 us at M = 1, 2.2-2.4 at M = 16, 4.6-6.0
      at M = 64; 4-7% of the call, more at smaller shapes). The CTA holding a tile's slot 0
      waits on a semaphore (`pl.get_global`, left at zero by each call) until the tile's
      other writers have stored theirs and signalled, TMA-loads and adds them in slot order,
      and stores y's tile through a transposed view of shared memory: the float32 terms XLA
      adds (it may associate three or more of them otherwise: a last-bit difference). With
      one slot a tile (`splits=1`) every CTA writes its tile at once: no semaphore.
      Prescaled NVFP4 reads its tensor scale in the kernel (a scalar load) and multiplies
      the sum as XLA does, 2^8 then s_t. Needs a stream-K schedule
      (`schedule.Schedule.chainable`: no CTA waits on one that cannot run) or one slot a
      tile. Default (None): `configs.decode_config`'s where the schedule allows it (INT4 g128,
      MXFP4 and NVFP4 at M > 16, INT8 at M > 32: 1-5% faster; INT4 at M = 1 0.9 us slower,
      INT8 at M = 32 5.4 us, on an H200; on an H100 with one slot a tile for INT4 at M <= 16
      and the 8-bit formats at M <= 32, 2-4% faster: `configs.ONE_SLOT_DEVICES`); a case not in
      `FUSED_SUM_VERIFIED` needs `allow_unverified`.
    fp8_x: INT4 / UINT4 (groups of 32 / 64 by group slices), MXFP4 (one group a K = 32
      slice; not prescaled) and FP8 (per channel; not chained) on FP8 tensor cores
      (`fp8_x.py`): each row of x split into two E4M3 rows (hi, lo; exact to 2^-17 of the
      row's amax), the codes decoded to E4M3 bytes (INT4: their odd values 2 c + 1; E2M1: its
      bits moved; no table; FP8: as stored), one FP8 wgmma (K = 32) where bf16 takes two,
      each group's (chunk's) product folded in float32. At M <= 4 the two rows fill columns
      the wgmma pads anyway; above, they double its N. Not the bf16 path's numerics to the
      bit (the FP8 MMA accumulates a group in ~13 mantissa bits): close to them, checked
      against the f32 reference. INT8 (per channel) likewise on s8 tensor cores: x split into
      int8 hi / lo rows with a power of two a chunk of 128 (exact to 2^-15 of the chunk's
      amax), its bytes the A operand, exact int32 products folded as P t s_channel (t the
      row's multiplier, an x operand a chunk). XLA adds each token's two columns after the
      kernel; with `fused_sum` (`FP8_X_FUSED_SUM_VERIFIED`) the kernel adds them in registers,
      scales them by s_x and writes y itself. Default (None): `configs.decode_config`'s (FP8
      at M <= 8, INT8 and MXFP4 at M <= 4, on the devices where it was faster,
      `configs.FP8_X_DEVICES`: the H200, not the H100; weights of a format's
      `configs.FP8_X_MIN_WEIGHT` elements or more) unless `zero_in_weights` is asked for, or
      `fused_sum` for a case not in `FP8_X_FUSED_SUM_VERIFIED`; a case not in
      `FP8_X_VERIFIED` needs `allow_unverified`.
    load_only: a diagnostic, not a matmul: the same schedule and TMA pipeline with an empty
      body (the output is zeros), so the benchmark can split a config's time into streaming
      the tiles and computing on them (`bench_kernels.py --load-split`).
    prefetch_codes: for a `code_order.thread_major` weight (whose codes the kernel reads by plain
      loads, no TMA: `PLAIN_LOADS_VERIFIED`), load each step's codes this many steps ahead
      (True: one), carried in registers, so that their latency hides behind the steps before.
      Default (None): one for such a weight (without it the plain loads were 13-30% slower in
      every case timed, H100, session 27); more than `PREFETCH_VERIFIED_STEPS` needs
      `allow_unverified`, and the carried codes (`prefetch_registers`) may take at most
      `PREFETCH_MAX_REGISTERS` registers a thread.
    split_kernel: with `fp8_x` on INT8, FP8 or MXFP4 weights, x's 8-bit rows and their
      multipliers or scales made by one Pallas kernel (`x_split.split`: INT8 at M <= 16, K a
      multiple of 512; FP8 and MXFP4 at K a multiple of 256; MXFP4's x permuted by XLA first)
      instead of XLA's several. Default (None): on where
      `SPLIT_KERNEL_VERIFIED` holds the case (INT8 and FP8, H100, session 27: 1.6 / 0.8 us
      faster at M = 1) and the kernel takes the shape; asking for it unverified needs
      `allow_unverified`.
    slot_loads: with `fused_sum` and several slots a tile, the CTA holding slot 0 reads the
      others' partial sums by plain loads from global memory straight into registers, as many
      in flight at once as `SLOT_LOAD_REGISTERS` allows (`slot_batch`), and adds them in slot
      order as before (the same numerics). Without it each slot is a TMA copy into shared
      memory, a barrier wait and a load, one after another: at 4096 x 4096 M = 64 (H100,
      session 42) the fused sum of up to eight slots a tile took the kernel from 10.5 to 23.6
      us, where XLA's sum after it took 2.6. By plain loads (H100, session 43, INT4 g128,
      4096 x 4096, four slots a 128-row tile): M = 32 11.3 -> 10.7 us, M = 64 13.7 -> 12.9,
      M = 1 (eight slots) 10.1 -> 8.2, at 8192 x 28672 M = 64 67.9 -> 68.0; XLA's sum still
      wins at 4096 x 4096 (9.2 / 11.1 / 7.4). Off by default; a case not in
      `SLOT_LOADS_VERIFIED` needs `allow_unverified`.
    slot_stores: with `fused_sum` and several slots a tile, the CTAs holding slots 1.. store
      their partial sums from registers straight to global memory and release them
      (`_ptx.release_gpu`: a warpgroup barrier and `fence.acq_rel.gpu`) before the signal, in
      place of staging them in shared memory for a TMA store and waiting until it is in memory:
      a shorter path from a writer's last MMA to slot 0's wait (session 44). The same
      numerics; no faster (H100, INT4 g128, 4096 x 4096, with `slot_loads`: M = 1 8.2 -> 8.7
      us, M = 32 10.7 -> 10.8). Off by default; a case not in `SLOT_STORES_VERIFIED` needs
      `allow_unverified`.
    num_sms: used to pick the default split.

  Raises:
    ValueError / NotImplementedError: an option that does not fit the format, shape or
      shared memory, or a path not yet checked on a GPU without `allow_unverified`.
  """
  n, g = pw.n, pw.group
  # (byte multipliers make the bf16 multipliers' registers: their launch configs)
  dflt = decode_config(pw.fmt, n, m, pw.scale_bf16 or pw.byte_multipliers, pw.group, k=k,
                       w_threads=pw.w_threads)
  plain_loads = pw.w_threads  # its blocks are read in place, whatever the tile
  if plain_loads:
    require_checked(f"plain loads for {pw.fmt.value} group {g}",
                    base_case(pw) in PLAIN_LOADS_VERIFIED,
                    allow_unverified, reference="the reference",
                    instead="store the weight without `code_order.thread_major`")
  if prefetch_codes is None:
    prefetch_codes = plain_loads and not load_only
  if not isinstance(prefetch_codes, int) or prefetch_codes < 0:  # (a bool is an int: 0 or 1)
    raise ValueError(f"prefetch_codes is a count of steps ahead (0 or more), not "
                     f"{prefetch_codes!r}")
  prefetch_codes = int(prefetch_codes)
  if prefetch_codes > PREFETCH_VERIFIED_STEPS:
    require_checked(f"plain loads {prefetch_codes} steps ahead", False, allow_unverified,
                    reference="the reference",
                    instead=f"use prefetch_codes <= {PREFETCH_VERIFIED_STEPS}")
  if prefetch_codes and not plain_loads:
    raise ValueError("prefetch_codes loads the next step's codes by plain loads: store the weight "
                     "with `code_order.thread_major`")
  if prefetch_codes and load_only:
    raise ValueError("load_only times the TMA pipeline alone; prefetch_codes has none to time")
  if pw.w_tile is not None and not plain_loads:  # a block-contiguous weight fixes the tile
    tn, tk = pw.w_tile
    if tk % CHUNK or tile_n not in (None, tn) or gps not in (None, tk // CHUNK):
      raise ValueError(f"the weight is stored in ({tn}, {tk}) blocks: tile_n={tile_n}, gps={gps} "
                       f"do not match (tile_k must be a multiple of {CHUNK})")
    tile_n, gps = tn, tk // CHUNK
  tile_n_given = tile_n is not None
  tile_n = dflt["tile_n"] if tile_n is None else tile_n
  steps = dflt["steps"] if steps is None else steps
  gps_given = gps is not None
  gps = dflt["gps"] if gps is None else gps
  fmt = pw.fmt
  per_channel = fmt in PER_CHANNEL
  fp4 = fmt in FP4
  slots = fmt is WeightFormat.NF4 and pw.scale_bf16  # int4 slot codes (`scales.nf4_slots`)
  nf4 = fmt is WeightFormat.NF4 and not slots  # nibble bytes: even / odd k halves
  if per_channel and g != pw.k:
    raise NotImplementedError(f"mosaic_gpu {fmt.value} takes per-channel scales, not group {g}")
  if not per_channel and g not in ((32, 16) if fp4 else (32, 64, 128)):
    raise NotImplementedError(f"mosaic_gpu wo_matmul takes groups of 32, 64 or 128, not {g}")
  variant = "".join(f" ({c.replace('_', ' ')})" for c in case(pw)[2:])
  require_checked(f"the mosaic_gpu path for {fmt.value} group {g}{variant}",
                  case(pw) in VERIFIED, allow_unverified, reference="the reference",
                  instead="use 'xla'/'portable'")
  if pw.scale_bf16 and not prescale:
    raise ValueError("bf16 scale multipliers are applied to the weights: prescale=True")
  if fp4_scale_bytes is None:
    fp4_scale_bytes = fp4 and prescale and not pw.scale_bf16
  if fp4_scale_bytes and pw.scale_bf16:
    raise ValueError("fp4_scale_bytes decodes stored scale bytes; these scales are bf16")
  if nf4_lut is None:
    nf4_lut = nf4 and prescale
  if fp4_scale_bytes and not (fp4 and prescale):
    raise ValueError("fp4_scale_bytes is for prescaled MXFP4 / NVFP4 (prescale=True)")
  if nf4_lut and not (nf4 and prescale):
    raise ValueError("nf4_lut is the NF4 table lookup of the prescaled path (prescale=True)")
  if step_wait is None:
    # The FP4 / NF4 defaults were measured prescaled; unprescaled, they keep a wait a chunk.
    step_wait = (dflt.get("step_wait", False) and (prescale or not (fp4 or nf4 or slots))
                 or weights_bf16)  # prescaled INT4: one chain a step, as FP4's
  if m > 64:
    raise NotImplementedError(f"mosaic_gpu wo_matmul is the decode kernel (M <= 64), got M={m}")
  if fp8_x and pw.mx_fold:
    raise ValueError("fp8_x scales each group's f32 sum by its block scale, not by a folded "
                     "multiplier: store the MXFP4 scales with scales.fp4_scales_bf16(pw, "
                     "mx_fold=False), or leave fp8_x off")
  if fp8_x and pw.halves_order:
    raise ValueError("fp8_x rebuilds E4M3 bytes from the byte-pair register order: store the "
                     "weight with code_order.order_for_wgmma(pw, halves=False), or leave fp8_x off")
  if fp8_x is None:
    fp8_x = (dflt.get("fp8_x", False) and case(pw) in FP8_X_VERIFIED
             and not (fused_sum and case(pw) not in FP8_X_FUSED_SUM_VERIFIED)
             and not zero_in_weights and not (plain_loads and per_channel) and not weights_bf16)
  if fp8_x and plain_loads and per_channel:
    raise NotImplementedError("fp8_x reads 8-bit weights in the WGMMA_8BIT layout; plain loads "
                              "(`code_order.thread_major`) hand them over in UPCAST_2X: leave "
                              "fp8_x off")
  if fp8_x:
    F8.check(pw)
    require_checked(f"fp8_x for {fmt.value} group {g}{variant}", case(pw) in FP8_X_VERIFIED,
                    allow_unverified, reference="the reference", instead="leave fp8_x off")
    if fused_sum:  # each token's two columns added (and scaled) in the kernel's flush
      require_checked(f"fused_sum with fp8_x for {fmt.value} group {g}{variant}",
                      case(pw) in FP8_X_FUSED_SUM_VERIFIED, allow_unverified,
                      reference="the reference",
                      instead="leave fused_sum off (XLA adds the slots and the pairs)")
    if zero_in_weights:
      raise ValueError("fp8_x takes UINT4's zero points as its offset term, not in the weights")
    if fused_sum is None:
      fused_sum = dflt.get("fused_sum", False) and case(pw) in FP8_X_FUSED_SUM_VERIFIED
  split_fits = fp8_x and XS.fits(fmt, m, k)
  if split_kernel is None:
    split_kernel = split_fits and case(pw) in SPLIT_KERNEL_VERIFIED
  if split_kernel:
    if not split_fits:
      raise ValueError(f"split_kernel splits x for fp8_x on INT8 (M <= {XS.MAX_ROWS}, K a "
                       f"multiple of {XS.CHUNKS * CHUNK}), FP8 or MXFP4 (K a multiple of 256) "
                       f"weights; got {fmt.value} fp8_x={fp8_x}, M={m}, K={k}")
    require_checked(f"split_kernel for {fmt.value} group {g}{variant}",
                    case(pw) in SPLIT_KERNEL_VERIFIED, allow_unverified,
                    reference="the reference", instead="leave split_kernel off (XLA splits x)")
  x_rows = 2 * m if fp8_x else m  # rows of x in shared memory (fp8_x: two a token)
  if k != pw.k:
    raise ValueError(f"x is (M, {k}) but W has K={pw.k}")
  # Groups smaller than a 128-wide register tile: `sub` groups share one dequantized tile, and
  # each group's wgmma reads a copy of x zeroed outside that group (x is tiny at decode).
  sub = 1 if per_channel else CHUNK // g
  if weights_bf16:
    if fmt not in (WeightFormat.INT4, WeightFormat.UINT4) or fp8_x or zero_in_weights:
      raise ValueError(f"weights_bf16 rounds INT4 / UINT4's q * s (- offset) to bf16 before the "
                       f"MMA; this weight is {fmt.value}{' on fp8_x' if fp8_x else ''}"
                       f"{' with zero_in_weights' if zero_in_weights else ''}: leave it off")
    require_checked(f"weights_bf16 for {fmt.value} group {g}{variant}",
                    base_case(pw) in WEIGHTS_BF16_VERIFIED, allow_unverified,
                    reference="the reference", instead="leave weights_bf16 off")
  prescale = ((fp4 or fmt is WeightFormat.NF4) and prescale and not fp8_x  # fp8_x: group folds
              or weights_bf16)
  compute_wgs = dflt.get("compute_wgs", 1) if compute_wgs is None else compute_wgs
  slices_fit = (fmt in (WeightFormat.INT4, WeightFormat.UINT4) or fp8_x) and sub > 1 and (
      not prescale)
  if group_slices and not slices_fit:
    raise ValueError(f"group_slices is for INT4 / UINT4 groups of 32 or 64, not {fmt.value} "
                     f"group {g}")
  group_slices = slices_fit if group_slices is None else group_slices
  asym = fmt is WeightFormat.UINT4
  if zero_in_weights and not asym:
    raise ValueError(f"zero_in_weights is for UINT4 (zero points), not {fmt.value}")
  xsum_in = asym and not zero_in_weights  # the f32 offset * x-sum term, x sums from XLA
  per_chunk = 1 if prescale else sub  # partial products (accumulators) a chunk
  chunk_fits = per_chunk > 1 and not step_wait
  if chunk_wait and not chunk_fits:
    raise ValueError("chunk_wait waits once a chunk on its groups' wgmmas: for group-scaled "
                     "weights with groups of 32 or 64 (not prescaled), without step_wait")
  if chunk_wait is None:
    chunk_wait = chunk_fits and fmt is WeightFormat.INT4 and m <= 16
  xsub = 1 if prescale or group_slices else sub  # x copies a chunk
  mp = max(8, -(-x_rows // 8) * 8)
  if tile_n is None:
    tile_n = 256 if mp <= 16 else 128
  # A default tile that does not divide N (configs are measured on multiples of 256 rows)
  # halves until it does: N = 4224. (A default step that does not divide K halves below.)
  while not tile_n_given and tile_n > 64 and n % tile_n:
    tile_n //= 2
  if n % tile_n:
    raise ValueError(f"N={n} must be a multiple of tile_n={tile_n}")
  scale_rows = 1 if per_channel else gps * sub
  if xsub * mp > 256:
    raise NotImplementedError(f"mosaic_gpu {fmt.value} group {g}: M={m} needs {xsub} x copies "
                              f"of {mp} rows, over a 256-row TMA box; use M <= {256 // xsub}")

  off_bytes = 1 if pw.zero_points else 4
  scale_bytes = 2 if {"bf16_scales", "amax_scales"} & set(case(pw)) else 4

  def steps_fit():
    return (SMEM_BYTES - 1024 - tile_n * mp * 4) // _smem_per_step(
        fmt, tile_n, CHUNK * gps, mp, xsub, scale_rows, xsum_in, off_bytes, scale_bytes, fp8_x,
        plain_loads)

  # Small groups at large M: the x copies grow, so take fewer chunks a step, then (group 32 at
  # M > 32 under the 256-row default) fewer rows; and fewer chunks where a step does not divide
  # K (configs are measured on multiples of 512 columns: K = 11008 under four chunks).
  while not gps_given and gps > 1 and (k % (CHUNK * gps) or steps_fit() < 2):
    gps //= 2
    scale_rows = 1 if per_channel else gps * sub
  if not tile_n_given and tile_n > 128 and steps_fit() < 2:
    tile_n = 128
  tile_k = CHUNK * gps
  if k % tile_k:
    raise ValueError(f"K={k} must be a multiple of {gps} chunks of {CHUNK}")
  ksteps_total = k // tile_k
  n_tiles = n // tile_n
  stream_k = dflt.get("stream_k") if stream_k is None and splits is None else stream_k
  if stream_k is None and splits is None:
    splits = dflt.get("splits")
    if splits is None or ksteps_total % splits:
      splits = S.pick_splits(n_tiles, ksteps_total, num_sms)
      if splits is None:  # no even split fills the SMs: stream-K two CTAs an SM, the narrow
        stream_k = 2      # configs' count
  if stream_k is not None:
    schedule = S.stream_k_schedule(n_tiles, tile_n, ksteps_total, S.stream_k_ctas(
        n_tiles * ksteps_total, stream_k * num_sms))
  else:
    schedule = S.split_schedule(n_tiles, tile_n, ksteps_total, splits)
  fit = steps_fit()
  if fit < 2:
    per_step = _smem_per_step(fmt, tile_n, tile_k, mp, xsub, scale_rows, xsum_in, off_bytes,
                              scale_bytes, fp8_x, plain_loads)
    raise ValueError(f"tile_n={tile_n}, gps={gps} at M={m} needs {per_step} bytes of shared "
                     "memory a pipeline step: fewer than 2 steps fit; use a smaller tile_n or gps")
  steps = min(steps, fit)
  if compute_wgs not in (1, 2, 4):  # 4 passes here to be refused below, with the arithmetic
    raise ValueError(f"compute_wgs must be 1 or 2, got {compute_wgs}")
  if compute_wgs > 1 and (pool := register_split(compute_wgs))[0] > pool[1]:
    raise ValueError(
        f"compute_wgs={compute_wgs} would hang the GPU: Pallas's warp-specialized pipeline asks "
        f"{pool[0]} registers of the {pool[1]} a CTA of {compute_wgs + 1} warpgroups holds "
        "(`register_split`); use compute_wgs=2")
  if compute_wgs > 1 and tile_n % (64 * compute_wgs):
    raise NotImplementedError(
        f"warp specialization takes tile_n a multiple of {64 * compute_wgs} (64 rows a "
        f"compute warpgroup; got {fmt.value}, tile_n={tile_n})")
  if compute_wgs > 1 and per_channel and stream_k is None:
    # one N tile a CTA: its channel scales' index map reads the step only for Pallas's sake
    # (`mosaic_gpu.channel_block`; without it Mosaic refused FP8 M = 16 with splits=1 on the
    # H100, session 29)
    require_checked(f"compute_wgs={compute_wgs} on K splits for per-channel {fmt.value}",
                    base_case(pw) in SPLIT_WGS_VERIFIED, allow_unverified,
                    reference="the reference",
                    instead="pass stream_k=... instead of splits, or compute_wgs=1")
  wg_rows = tile_n // compute_wgs
  carried = prefetch_registers(prefetch_codes, gps, wg_rows, code_bits(pw)) if prefetch_codes else 0
  if carried > PREFETCH_MAX_REGISTERS:
    raise ValueError(
        f"prefetch_codes={prefetch_codes} carries {carried} registers a thread of codes "
        f"({prefetch_codes} steps x {gps} chunks x {wg_rows // THREAD_BLOCK[0]} 64-row blocks), "
        f"more than {PREFETCH_MAX_REGISTERS}: fewer steps ahead, or a smaller gps or tile_n")

  one_copy = xsub == 1 and not nf4
  if tma_pad and not one_copy:
    raise ValueError("tma_pad loads x as it is: one x copy (group slices, prescaled or "
                     "per-channel weights), not NF4 bytes")
  if tma_pad is None:
    tma_pad = one_copy
  tma_pad = tma_pad and x_rows < 8  # Mosaic's TMA tiling takes a row count under 8 or a multiple
  chainable = schedule.slots == 1 or schedule.chainable
  if fused_sum is None:  # where measured faster, checked and the schedule allows it
    fused_sum = (dflt.get("fused_sum", False) and base_case(pw) in FUSED_SUM_VERIFIED
                 and chainable)
  if fused_sum:
    require_checked(f"fused_sum for {fmt.value} group {g}{variant}",
                    base_case(pw) in FUSED_SUM_VERIFIED, allow_unverified,
                    reference="the reference",
                    instead="leave fused_sum off (XLA adds the partial sums)")
    if not chainable:
      raise ValueError(f"fused_sum needs a stream-K schedule (stream_k=...) or one slot a tile; "
                       f"{schedule.slots} K splits could deadlock (schedule.py)")
  # how the other slots' partial sums travel: each option only within a fused sum of several
  # slots a tile, and gated until a GPU has checked it
  for name, asked, verified, instead in (
      ("slot_loads", slot_loads, SLOT_LOADS_VERIFIED, "TMA copies of the slots into slot 0"),
      ("slot_stores", slot_stores, SLOT_STORES_VERIFIED, "a TMA store from each slot")):
    if not asked:
      continue
    if not (fused_sum and schedule.slots > 1):
      raise ValueError(f"{name} moves the other slots of a fused sum: it needs fused_sum=True "
                       f"and a schedule of several slots a tile (this one: fused_sum={fused_sum}, "
                       f"{schedule.slots} slot(s)); leave {name} off")
    require_checked(f"{name} for {fmt.value} group {g}{variant}",
                    base_case(pw) in verified, allow_unverified, reference="the reference",
                    instead=f"leave {name} off ({instead})")
  # a slot's (wg_rows, mp) float32 partial sum over a warpgroup's 128 threads
  slot_batch = max(1, SLOT_LOAD_REGISTERS // (wg_rows * mp // 128))
  return DecodePlan(fmt=fmt, per_channel=per_channel, fp4=fp4, slots=slots, nf4=nf4, asym=asym,
                    sub=sub, per_chunk=per_chunk, xsub=xsub, mp=mp, prescale=prescale,
                    fp4_scale_bytes=fp4_scale_bytes, nf4_lut=nf4_lut, step_wait=step_wait,
                    chunk_wait=chunk_wait, group_slices=group_slices, tma_pad=tma_pad,
                    zero_in_weights=zero_in_weights, zero_points=pw.zero_points,
                    tile_n=tile_n, steps=steps, gps=gps,
                    tile_k=tile_k, ksteps_total=ksteps_total, scale_rows=scale_rows,
                    compute_wgs=compute_wgs, wg_rows=wg_rows, schedule=schedule,
                    load_only=load_only, fused_sum=fused_sum, fp8_x=fp8_x,
                    plain_loads=plain_loads, prefetch_codes=prefetch_codes,
                    split_kernel=split_kernel, slot_loads=slot_loads, slot_batch=slot_batch,
                    slot_stores=slot_stores)
