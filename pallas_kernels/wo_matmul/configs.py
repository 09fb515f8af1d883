"""The weight-only decode kernel's default launch configs, as measured on the GPU.

`decode_config` maps (format, N, M) to `mosaic_gpu.wo_matmul_mosaic_gpu`'s tile, pipeline,
schedule and wait settings; the measurements behind each choice are cited beside it
(`experiments/results/kernels_wo_*.json`).
"""

from __future__ import annotations

from pallas_kernels.devices import device_kind
from pallas_kernels.wo_matmul.packed_weight import FP4
from pallas_kernels.wo_matmul.packed_weight import WeightFormat

# Devices whose 8-bit and MXFP4 decode at small M runs faster on 8-bit tensor cores (`fp8_x`),
# by the start of `device_kind` (a GH200 is not an H200 here: unmeasured). On the H200 (4.8 TB/s)
# the bf16 path's decode, not HBM, bounds M = 1: FP8 69.3 -> 61.0 us, MXFP4 47.9 -> 46.1
# (kernels_wo_s21_fp8_x_*.json), INT8 on s8 tensor cores 64.8 -> 62.1 (kernels_wo_s23_int8_s8.json).
# On the H100 (3.35 TB/s) the bf16 path already streams FP8 at 91% of the copy bandwidth and
# fp8_x loses: M = 1 FP8 85.2 -> 87.3 us, MXFP4 59.0 -> 61.6, INT8 87.2 -> 87.7; M = 8 85.7 ->
# 88.5, 59.0 -> 65.8 (kernels_wo_s22_h100_fp8_x_m{1,8}.json, kernels_wo_s22_h100_int8_s8.json).
# H100 session 25 again: FP8 M = 1 84.9 -> 85.8 us with the fused pair sum too, 14336 x 4096 27.0
# -> 28.4, 4096 x 4096 9.8 -> 11.4 (kernels_wo_s25_h100_{fused_sum_fp8_x,fp8_x_small}.json).
# Other devices: unmeasured, the bf16 path.
FP8_X_DEVICES = ("NVIDIA H200",)
# Devices where INT8 adds its stream-K partial sums in the kernel (`fused_sum`) at M = 17-32 as
# well as above: H100 M = 32 91.8 -> 89.3 us (kernels_wo_s25_h100_fused_sum_m32.json); on the
# H200 it lost there (68.7 -> 74.1, kernels_wo_s24_fused_sum_8bit.json)
INT8_FUSED_SUM_M32_DEVICES = ("NVIDIA H100",)
# Devices where the decode runs one CTA a 128-row tile (224 on 132 SMs at N = 28672) that writes its
# tile of y itself (`splits=1` with `fused_sum`: no float32 slots, no XLA kernel after the decode),
# where N's tiles fill the SMs (N >= `ONE_SLOT_MIN_N`): INT4 at M <= 16 (at N >= 16384 groups of
# 128, and of 32 at M <= 8; at 14336 <= N < 16384 every group), INT8 and FP8 at M <= 32 (two compute
# warpgroups above M = 16), UINT4 g128 at M <= 8 when stored for plain loads
# (`code_order.thread_major`; below). H100, 2026-12-06, jax 0.11.2, 8192 x 28672, us the previous
# default (INT4 stream-K over 256 CTAs, INT8 at M > 4 stream-K in 64-row tiles, FP8 and INT8 at M <=
# 4 one CTA a tile, all with XLA's sum after) -> this (kernels_wo_s29_h100_*.json): INT4 g128 M = 1
# 50.3 -> 48.1 / 48.3 / 47.7 (three runs), 50.6 -> 47.5 (a fourth, the new default), M = 8 50.7 ->
# 48.3, M = 16 53.0 -> 50.2; g32 M = 1 59.2 -> 57.1 / 58.6 -> 56.8 / 59.0 -> 56.7, M = 8 57.7 ->
# 56.5; INT8 M = 1 84.8 -> 82.6, M = 4 85.4 -> 83.2 / 85.0 -> 82.9, M = 8 85.7 -> 82.9 / 87.7 ->
# 84.8, M = 16 87.5 -> 84.3 / 89.7 -> 86.2; FP8 M = 1 82.3 -> 79.7 / 85.0 -> 82.5, M = 8 82.8 ->
# 80.5 / 85.4 -> 83.1, M = 16 (one compute warpgroup) 86.2 -> 84.5 against the wide config with its
# fused stream-K sum (session 27: 88.1 -> 86.2 over XLA's sum). At M = 32 on two compute warpgroups
# against the wide config (stream-K, fused sum), three runs (sessions 29-30,
# kernels_wo_s30_h100_8bit_m32*.json): INT8 87.3 -> 85.8 / 89.5 -> 87.5 / 87.3 -> 85.6, FP8 86.8 ->
# 83.7 / 88.9 -> 85.8 / 87.1 -> 83.8; at M = 64 not (INT8 90.9 -> 94.5, FP8 90.9 -> 90.7). At 4096 x
# 14336 (112 tiles; session 30, kernels_wo_s30_h100_small_shapes*.json): INT8 M = 1 25.7 -> 22.3, M
# = 16 26.7 -> 23.0, FP8 26.5 -> 22.3 / 26.3 -> 22.9 against stream-K; INT4 g128 M = 1 17.2 -> 16.7
# / 17.3 -> 16.8, M = 16 (64-row tiles) 17.3 -> 15.7 / 17.1 -> 15.7; g32 M = 1 / 16 19.9 -> 18.0 /
# 20.0 -> 18.4, g64 (64-row tiles) 16.9 -> 16.0 / 17.9 -> 15.9 (one run). At 4096 x 4096 (32 tiles)
# it halves the speed: INT8 M = 1 9.5 -> 19.2, FP8 9.7 -> 17.9, INT4 g128 7.5 -> 15.8. Not taken
# (TMA decode): UINT4 g128 / NVFP4 / INT4 g64 M = 1 (ties: 54.5 -> 53.6 / 54.6 -> 54.5, 62.9 -> 61.4
# / 61.6 -> 61.0, 52.3 -> 52.0), MXFP4 (56.5 -> 58.1). INT8's 128-row tiles alone at M <= 4 (session
# 25): 88.7 -> 86.6 us. The H200 unmeasured (its INT4 M = 1 took stream-K over 224 tiles, 48.1 ->
# 47.2 us, with XLA's sum: kernels_wo_s7_int4_stream_k.json).
ONE_SLOT_DEVICES = ("NVIDIA H100",)
ONE_SLOT = dict(splits=1, fused_sum=True)
ONE_SLOT_MIN_N = 14336  # the smallest N measured to gain; 4096 < N < 14336 unmeasured
# `fp8_x` on `FP8_X_DEVICES` takes a weight of at least this many elements (K x N), by format: the
# split's XLA kernels cost ~4.5-6 us a call whatever the shape (`kernel_us`), the decode they save
# grows with the weight. H200, M = 1, at 8192 x 28672 (2.3e8) the saving net of them was 2.7 us
# for INT8, 8.3 FP8, 1.8 MXFP4; at 4096 x 14336 (5.9e7) INT8 lost (20.1 -> 21.5 us) and MXFP4
# (16.3 -> 17.2), FP8 gained (22.8 -> 20.2: FP8's bf16 path decodes more than its bytes suggest;
# kernels_wo_s24_fp8_x_4096x14336.json); at 4096 x 4096 MXFP4 took 9.5 us with fp8_x, its Mosaic
# kernel 5.4, where INT4's bf16 path took 6.6 in all (kernels_wo_s23_4096x4096.json). 2^27: the
# even point the 8-bit formats' and MXFP4's measurements bracket; FP8's the smallest weight it was
# measured to gain at (below, unmeasured).
FP8_X_MIN_WEIGHT = {WeightFormat.INT8: 1 << 27, WeightFormat.MXFP4: 1 << 27,
                    WeightFormat.FP8: 4096 * 14336}


# Devices where the wide config (M > 16: two compute warpgroups, one stream-K CTA an SM) runs in
# 128-row tiles where N < 16384 (112 tiles at N = 14336, 56 of 256 rows; 16 of 256 at N = 4096,
# eight CTAs a tile). H100, 256 -> 128 rows. Session 41, 4096 x 14336
# (kernels_wo_s41_h100_sweep_m*.json): INT4 g128 M = 32 22.9 -> 21.0 us, M = 64 28.8 -> 24.2
# (two steps fit 256 rows, three 128); INT4 g64 M = 32 23.1 -> 21.3 (M = 64 took 128 rows
# already); UINT4 g128 M = 64 32.6 -> 28.4, g32 39.7 -> 37.7; NF4 g64 M = 64 29.4 -> 26.8.
# Sessions 42-43, 4096 x 4096, with XLA's sum (`_few_tiles`; kernels_wo_s42_h100_*_4096x4096.json,
# kernels_wo_s43_h100_uint4_few_tiles_4096x4096.json): INT4 g128 M = 32 10.2 -> 9.1, M = 64
# 13.2 -> 11.3; MXFP4 10.4 -> 8.8 / 13.6 -> 11.1; NVFP4 10.7 -> 9.3 / 13.6 -> 11.2; UINT4 g128
# 12.1 -> 11.1 / 16.1 -> 13.4. Session 45 (kernels_wo_s45_h100_*.json): 4096 x 4096 NF4 g64 M =
# 32 11.4 -> 10.4, M = 64 14.2 -> 12.3, INT4 g32 M = 32 11.2 -> 9.7; 4096 x 14336 MXFP4 M = 32
# 22.5 -> 20.6, M = 64 28.1 -> 23.2 (fused sum), and 128 rows against 256 where session 41 took
# them unmeasured: INT4 g32 M = 32 21.9 / 26.4, M = 64 30.2 / 33.9, UINT4 g128 M = 32 23.6 /
# 24.3, g32 27.7 / 30.1; between them, LLaMA-7B's MLP (4096 x 11008, 43 tiles of 256 rows) M = 64
# INT4 g128 27.1 -> 22.6, MXFP4 26.8 -> 21.3 (fused sum; XLA's sum in 128 rows 23.1 / 22.7). At
# 8192 x 28672 (224 tiles of 128 rows) 256 rows stay: UINT4 M = 64 85.5 -> 88.1, NVFP4 71.5 ->
# 77.7. NVFP4 below N = 16384 outside 4096 x 4096, NF4 g32 / g128 and INT4 g64 at M = 32 on 4096
# x 4096 take 128 rows unmeasured (the same launch for the same reason; the 8-bit formats' wide
# config has 128 rows everywhere).
WIDE_128_DEVICES = ("NVIDIA H100",)


def _wide_128(device: str, n: int) -> bool:
  """Whether the wide config runs in 128-row tiles: on `WIDE_128_DEVICES` where N < 16384."""
  return device.startswith(WIDE_128_DEVICES) and n < 16384


# Devices where, with few tiles (N <= `FEW_TILES_MAX_N`), the wide config leaves its stream-K
# partial sums to XLA (`fused_sum` off; INT4 g128, FP4 and the 8-bit formats fuse it elsewhere):
# at N = 4096 every 128-row tile spreads over four CTAs, and the fused sum's slot-0 CTA waits on
# and adds the others in turn, a chain of latencies (store, signal, wait, load, store). H100,
# 4096 x 4096, us fused -> XLA's sum. Session 42 (kernels_wo_s42_h100_{sweep_m32_64,fp4_m64,
# nvfp4_m32}_4096x4096.json), 128 rows: INT4 g128 M = 32 11.5 -> 9.1, M = 64 13.8 -> 11.3 (256
# rows, the old default: 16.5 / 23.8); MXFP4 and NVFP4 at 256 rows 16.6 -> 10.4 / 17.0 -> 10.7 (M
# = 32), 23.8 -> 13.6 / 23.9 -> 13.6 (M = 64). Session 43: INT8 M = 64 15.5 -> 12.9
# (kernels_wo_s43_h100_int8_few_tiles_4096x4096.json); INT4 g128 M = 32 by plain slot loads
# 10.7 -> 9.2 (the unfused kernel alone 7.5 us, XLA's sum 1.7;
# kernels_wo_s43_h100_fused_sum_4096x4096.json). Session 45: FP8 M = 32 13.5 -> 11.0, M = 64
# 15.7 -> 12.6, INT8 M = 32 13.6 -> 11.1 (kernels_wo_s45_h100_{fp8,int8}_fused_sum_4096x4096.json).
# At 4096 x 14336 (112 tiles of 128 rows, about a CTA a tile) the fused sum stays: INT4 g128 M =
# 32 21.0 -> 20.4 / 20.9 -> 20.8, M = 64 24.2 -> 25.8 / 24.1 -> 25.5 (sessions 42 / 45), NVFP4 M
# = 32 23.1 -> 23.0, MXFP4 at 256 rows 22.4 -> 21.0 / 28.2 -> 28.3 (128 fused: 20.6 / 23.2;
# kernels_wo_s4{2_h100_int4,5_h100}_fused_sum_4096x14336.json). 4096 < N < 14336 other than
# 11008, and other devices, unmeasured.
FEW_TILES_DEVICES = ("NVIDIA H100",)
FEW_TILES_MAX_N = 4096


def _few_tiles(device: str, n: int) -> bool:
  """Whether the wide config leaves its partial sums to XLA: on `FEW_TILES_DEVICES` where N <=
  FEW_TILES_MAX_N."""
  return device.startswith(FEW_TILES_DEVICES) and n <= FEW_TILES_MAX_N


def _one_slot_64(device: str, n: int) -> bool:
  """Whether the 4-bit decode at M <= 16 runs one slot a tile in 64-row tiles: on
  `ONE_SLOT_DEVICES` where N's 128-row tiles are too few to fill the SMs with one slot each
  (ONE_SLOT_MIN_N <= N < 16384: 112 tiles on 132 SMs, 224 in 64-row ones)."""
  return device.startswith(ONE_SLOT_DEVICES) and ONE_SLOT_MIN_N <= n < 16384


def decode_config(fmt: WeightFormat, n: int, m: int, scale_bf16: bool = False,
                  group: int | None = None, device: str | None = None,
                  k: int | None = None, w_threads: bool = False) -> dict:
  """The decode kernel's launch config for a weight format, N, M and (INT4 / UINT4) scale
  group: the keyword arguments of `mosaic_gpu.wo_matmul_mosaic_gpu` that its callers leave
  unset. `device`: a `device_kind` (default: `device_kind()`); with the weight's size (`k`
  times N) it decides where `fp8_x` runs (and with it INT8's tile at M <= 4); without `k`,
  never. `w_threads`: the weight is stored for plain loads (`code_order.thread_major`).

  Each value is the best of a GPU sweep at K = 8192, N = 28672 that also matched the reference
  (H100 sessions 1-5 and 22, H200 since session 6; the comments name the runs, whose JSON lists
  every config's time in `configs_timed`).
  """
  device = device_kind() if device is None else device
  fp8_x_pays = (device.startswith(FP8_X_DEVICES)
                and fmt in FP8_X_MIN_WEIGHT and k is not None and k * n >= FP8_X_MIN_WEIGHT[fmt])
  # INT4 / UINT4 at M > 16: two compute warpgroups of 128 rows each and one stream-K CTA an SM
  # (INT4 g128 M = 32: 75 -> 61 us, M = 64: 103 -> 77 us; UINT4 M = 32: 100 -> 69 us).
  wide = dict(tile_n=256, gps=2, steps=3, compute_wgs=2, stream_k=1)
  few_tiles = _few_tiles(device, n)
  if m > 16 and _wide_128(device, n):
    wide = wide | dict(tile_n=128)
  if fmt is WeightFormat.INT4:
    return _int4_config(n, m, group, device, wide, few_tiles)
  if fmt is WeightFormat.UINT4:
    return _uint4_config(n, m, group, device, wide, w_threads)
  if fmt in (WeightFormat.INT8, WeightFormat.FP8):
    return _per_channel_config(fmt, n, m, device, few_tiles, fp8_x_pays)
  if fmt in FP4 or (fmt is WeightFormat.NF4 and scale_bf16):
    return _scaled_4bit_config(fmt, n, m, scale_bf16, group, device, wide, few_tiles,
                               fp8_x_pays)
  if fmt is WeightFormat.NF4:
    # Byte codes (bitsandbytes' layout), with the byte-permute lookup: four K splits at N =
    # 28672, M = 1, 144 us against 154 (session 5); where N has fewer than 32 tiles of 128 rows
    # (four splits of 3072's 24 leave 36 of 132 SMs idle) the plan's split that fills the SMs
    if m > 16:
      return dict(tile_n=64, gps=2, steps=4)
    return dict(tile_n=128, gps=2, steps=4) | (dict(splits=4) if n >= 4096 else {})
  return dict(tile_n=None, gps=1, steps=6)


def _int4_config(n: int, m: int, group: int | None, device: str, wide: dict,
                 few_tiles: bool) -> dict:
  """INT4's launch config (`decode_config`; `wide`: the wide config at this N)."""
  if few_tiles and group in (None, 128) and m <= 32:
    # Few tiles, g128, M <= 32: M = 9-16's launch (64-row tiles, stream-K over two chunks a
    # step four deep, one compute warpgroup) with XLA's sum. H100, session 45, 4096 x 4096:
    # M = 1 7.4 -> 6.9 us (128-row tiles before), M = 32 9.1 -> 8.2 (the wide config in
    # 128-row tiles), its kernel below the 128-row pipeline's own load floor (an empty body,
    # `--load-split`: 5.9 / 7.2 us; kernels_wo_s45_h100_{slot_stores_64_rows,load_split}_
    # 4096x4096.json). M = 64 and the other formats unmeasured.
    return dict(tile_n=64, gps=2, steps=4, stream_k=2)
  if m > 32 and group == 64:
    # 128 rows a CTA: three pipeline steps fit where 256 rows take two (H200, M = 64
    # 83.7 -> 76.9 us; g32 88.7 -> 90.6, kept; kernels_wo_s14_m64.json).
    return wide | dict(tile_n=128)
  if m > 16:
    # INT4 g128: the kernel adds the stream-K partial sums (`fused_sum`): H100 M = 32 60.4 ->
    # 58.5 us, M = 64 71.9 -> 68.7 (kernels_wo_s22_h100_fused_sum_m*.json); H200 M = 64 68.6
    # -> 67.1 (kernels_wo_s21_int4_m64.json). At M = 1 it lost (H200 38.5 -> 39.4).
    return wide | (dict(fused_sum=True) if group in (None, 128) and not few_tiles else {})
  if n >= 16384:
    if group == 32 and m > 8:
      # Groups of 32 at M = 16: two chunks a step, three deep (H200, 65.8 -> 47.3 us with the
      # default chunk_wait; at M = 1 45.2 against 44.6, kernels_wo_s14_chunk_wait.json).
      return dict(tile_n=128, gps=2, steps=3, stream_k=2)
    # stream_k=2 (256 equal CTAs, instead of 224 tiles on 132 SMs, 40 of them holding one):
    # H200, M = 1, 48.1 -> 47.2 us (kernels_wo_s7_int4_stream_k.json); one slot a tile,
    # fused, on `ONE_SLOT_DEVICES` (groups of 32 reach here at M <= 8).
    if group in (None, 32, 128) and device.startswith(ONE_SLOT_DEVICES):
      return dict(tile_n=128, gps=4, steps=2) | ONE_SLOT
    return dict(tile_n=128, gps=4, steps=2, stream_k=2)
  # N < 16384 (4096 x 14336): stream-K over two chunks a step, four deep, for every group
  # (one slot a tile on `ONE_SLOT_DEVICES` from `ONE_SLOT_MIN_N`);
  # g128, H200: at M = 1 in 128-row tiles 15.3 -> 14.3 us (64-row 14.5), at M = 16 in 64-row
  # ones 16.1 -> 15.3 (128-row 15.7; kernels_wo_s24_int4_4096x14336_m{1,16}.json). Groups of
  # 32 the same (H200, M = 1 17.2 -> 16.0 in 128-row tiles, M = 16 16.9 in 64-row ones, 128-row
  # 20.9; H100 M = 1 22.1 -> 20.1, 64-row 19.9, M = 16 21.3 -> 20.0); groups of 64 in 64-row
  # tiles at every M (H200 M = 1 / 16 15.3 -> 14.4 / 17.1 -> 15.6, 128-row 14.5 / 16.1; H100
  # 17.1 -> 17.2 / 17.9 -> 17.9; kernels_wo_s2{5_h100,6}_groups_4096x14336.json).
  cfg = dict(tile_n=128 if m <= 8 and group != 64 else 64, gps=2, steps=4)
  if _one_slot_64(device, n):
    # One slot a tile: 128-row tiles are 112 CTAs on 132 SMs, 64-row ones 224 (four an SM).
    # g128 M = 1 (H100, session 31, kernels_wo_s31_h100_int4_launch_4096x14336.json): 16.5
    # -> 15.1 us, the 128-row tiles 16.5-16.8 in four runs (sessions 30-31); M <= 8 runs
    # the same kernel (x padded to 8 rows). Groups of 32 at M <= 8 unmeasured in 64-row
    # tiles with one slot: 128-row ones still.
    return cfg | ONE_SLOT | (dict(tile_n=64) if group == 128 else {})
  return cfg | dict(stream_k=2)


def _uint4_config(n: int, m: int, group: int | None, device: str, wide: dict,
                  w_threads: bool) -> dict:
  """UINT4's launch config (`decode_config`; `wide`: the wide config at this N)."""
  # step_wait (chunk j read after chunk j + 1 is issued), H200
  # M = 1: g128 53.7 -> 52.1 us, g64 66.8 -> 63.0 (INT4 g128 39.7 -> 40.1, M = 64 68.0 -> 81.5:
  # off there; kernels_wo_s12_step_wait_{int4,uint4}.json). Groups of 32 / 64 (one wgmma a
  # group, `group_slices`) agree: INT4 g32 M = 1 45.1 -> 63.6 us, M = 16 66.3 -> 79.5, g64
  # M = 64 85.8 -> 253.9; UINT4 M = 1 g64 51.0 -> 50.8, g32 57.7 -> 57.4
  # (kernels_wo_s13_group_slices.json).
  # At M <= 8 (one 8-row x tile), N >= 16384, groups of 64 / 128: INT4's stream-K launch (256
  # equal CTAs, not 224 unequal tiles on 132 SMs; H200, M = 1, g128 52.0 -> 44.3 us, g64
  # 50.6 -> 46.3, step_wait off 44.5 / 46.7; kernels_wo_s15_uint4_stream_k.json).
  # A `code_order.thread_major` weight (groups of 128) takes one slot a tile there on
  # `ONE_SLOT_DEVICES`: H100, 8192 x 28672, M = 1 / 8, plain loads by stream-K -> one slot
  # 55.3 -> 52.5 / 55.5 -> 53.1 us (kernels_wo_s30_h100_uint4_plain_one_slot.json; session 29
  # 52.4 / 52.6 against the TMA decode's 55.8 / 56.3, kernels_wo_s29_h100_plain_one_slot.json).
  if m <= 8 and n >= 16384 and group in (64, 128):
    if w_threads and group == 128 and device.startswith(ONE_SLOT_DEVICES):
      return dict(tile_n=128, gps=4, steps=2, step_wait=True) | ONE_SLOT
    return dict(tile_n=128, gps=4, steps=2, stream_k=2, step_wait=True)
  # Groups of 32 there: stream-K two chunks a step, three deep, where four chunks a step fit
  # one CTA an SM (H200, M = 1, 57.6 -> 53.7 us; with zero points stored as bytes, which fit
  # gps=4 two an SM, 52.7: a layout choice, `scales.uint4_zero_points`;
  # kernels_wo_s24_uint4_stream_k.json).
  if m <= 8 and n >= 16384 and group == 32:
    return dict(tile_n=128, gps=2, steps=3, stream_k=2, step_wait=True)
  # Groups of 32 / 64 at M = 16 take the wide config too (H200, g32 75.6 -> 65.1 us, gps=2,
  # steps=3, stream_k=2 68.2; g64 59.1 -> 53.5; kernels_wo_s14_uint4_wide.json).
  narrow = m <= (8 if group in (32, 64) else 16)
  if narrow and group in (None, 64, 128) and _one_slot_64(device, n):
    # H100, 4096 x 14336, g128 M = 1 / 8 / 16: 18.9 -> 17.3 / 19.3 -> 17.5 / 20.2 -> 18.9 us
    # (kernels_wo_s32_h100_one_slot64_{m1_m8,m16,mxfp4_uint4}.json); g64 M = 1 19.8 -> 17.6
    # (kernels_wo_s33_h100_nf4_uint4_g64_4096x14336.json)
    return dict(tile_n=64, gps=2, steps=3, step_wait=True) | ONE_SLOT
  if 8 < m <= 16 and group in (None, 128) and device.startswith(ONE_SLOT_DEVICES) and (
      n >= 16384):
    # one slot a tile: H100, 8192 x 28672, M = 16, 59.2 -> 56.8 us and 61.0 -> 58.5, XLA's
    # pass over the slot gone (kernels_wo_s33_h100_{fp4_uint4_m16_one_slot,uint4_m16_ab}.json)
    return dict(tile_n=128, gps=2, steps=3, step_wait=True) | ONE_SLOT
  return dict(tile_n=128, gps=2, steps=3, step_wait=True) if narrow else wide


def _per_channel_config(fmt: WeightFormat, n: int, m: int, device: str, few_tiles: bool,
                        fp8_x_pays: bool) -> dict:
  """INT8's and FP8's launch config (`decode_config`)."""
  # step_wait (one wgmma wait a step, H200, kernels_wo_s12_step_wait_*.json) at M = 1 / 16 / 64:
  # INT8 68.1 -> 66.2 / 69.5 -> 66.9 / 115.7 -> 106.3 us, FP8 77.6 -> 71.0 / - / 108.8 -> 99.4,
  # MXFP4 50.3 -> 49.8 / 53.4 -> 53.9 / 81.3 -> 74.8, NVFP4 52.1 -> 50.8 / 54.2 -> 54.1 /
  # 81.2 -> 75.3, NF4 slots 61.2 -> 63.8 (four CTAs an SM: off there) / 61.1 -> 59.3 / 86.1 -> 80.1
  # (the FP4 / NF4-slot configs take it too: `_scaled_4bit_config`).
  # M > 16 (FP8 M > 8): two compute warpgroups and one stream-K CTA an SM (H200, M = 64 INT8
  # 106.0 -> 84.7 us, FP8 99.5 -> 82.7, kernels_wo_s20_per_channel_wgs.json; M = 32 INT8 90.7
  # -> 68.9, FP8 81.3 -> 67.6; FP8 M = 16 74.4 -> 63.8, kernels_wo_s21_8bit_m16_m32.json; INT8
  # M = 16: 67.2 -> 66.5, kernels_wo_s23_int8_m16.json, kept). FP8 at M <= 8 on FP8 tensor
  # cores (`fp8_x`: its stored bytes the A operand, no decode) where that pays (`FP8_X_DEVICES`;
  # H200 M = 8 69.4 -> 65.8 us, kernels_wo_s23_fp8_x_m8.json; M = 16 74.4 -> 68.2, behind the
  # wide config; M = 64 83.5 -> 106.9, where the split doubles the wgmma's N). INT8 at M <= 4 on
  # s8 tensor cores there, in FP8's 128-row tiles with three steps (H200 M = 1 64.8 -> 62.5 ->
  # 62.1 us, M = 4 66.7 -> 65.4 -> 64.6: default, fp8_x, and this; kernels_wo_s23_int8_s8.json).
  per_channel_wide = dict(tile_n=128, gps=2, steps=3, compute_wgs=2, stream_k=1, step_wait=True)
  # one slot a tile (`ONE_SLOT_DEVICES`), at M = 17-32 on the wide config's two compute
  # warpgroups (`verified.SPLIT_WGS_VERIFIED`)
  one_slot = device.startswith(ONE_SLOT_DEVICES) and n >= ONE_SLOT_MIN_N and not fp8_x_pays
  wide_one_slot = {k: v for k, v in per_channel_wide.items() if k != "stream_k"} | ONE_SLOT
  if fmt is WeightFormat.INT8:
    if m <= 4 and fp8_x_pays:
      return dict(tile_n=128, gps=2, steps=3, stream_k=2, step_wait=True, fp8_x=True)
    if m <= 16 and one_slot:
      return dict(tile_n=128, gps=2, steps=3, step_wait=True) | ONE_SLOT
    if m <= 16:
      return dict(tile_n=64, gps=2, steps=4, stream_k=2, step_wait=True)
    if m <= 32 and one_slot:
      return wide_one_slot
    # the kernel adds its stream-K partial sums at M > 32 (`fused_sum`; H200 M = 64 84.8 ->
    # 83.3 us, kernels_wo_s24_fused_sum_8bit.json), and at M > 16 on `INT8_FUSED_SUM_M32_DEVICES`
    fuse = m > (16 if device.startswith(INT8_FUSED_SUM_M32_DEVICES) else 32) and not few_tiles
    return per_channel_wide | (dict(fused_sum=True) if fuse else {})
  if fmt is WeightFormat.FP8:
    # above M = 16 with the fused sum: H100 M = 32 92.5 -> 89.4 us
    # (kernels_wo_s25_h100_fused_sum_m32.json); H200 M = 32 66.8 -> 66.6, M = 64 82.5 -> 82.2
    # (kernels_wo_s24_fused_sum_8bit.json); one slot a tile at M <= 32 on `ONE_SLOT_DEVICES`
    if 16 < m <= 32 and one_slot:
      return wide_one_slot
    if m > (16 if one_slot else 8):
      return per_channel_wide | (dict(fused_sum=True) if m > 16 and not few_tiles else {})
    return dict(tile_n=128, gps=2, steps=3, step_wait=True, fp8_x=fp8_x_pays) | (
        ONE_SLOT if one_slot else {})


def _scaled_4bit_config(fmt: WeightFormat, n: int, m: int, scale_bf16: bool,
                        group: int | None, device: str, wide: dict, few_tiles: bool,
                        fp8_x_pays: bool) -> dict:
  """MXFP4's, NVFP4's and (with bf16 scales: slot codes) NF4's launch config
  (`decode_config`; `wide`: the wide config at this N)."""
  # H200 with the E2M1 bit decode (kernels_wo_s8_fp4_*.json): MXFP4 M = 1
  # 68.6 us, M = 16 70.0 (the wide config: 66.2, 74.1); M = 64 wide 92.1 against 122.0.
  # NVFP4 with bf16 scale multipliers at M = 16 (kernels_wo_s10_nvfp4_m16_sweep.json): wide
  # 55.5 us against 68.0 (at M = 8 the narrow config takes 51.7). NF4 slot codes
  # (kernels_wo_s11_nf4_*.json, kernels_wo_s11_ctas_*.json): M = 1 four CTAs an SM with
  # two steps 61.6 us (two with four steps 64.8, three 63.8), M = 16 wide 61.5 against 65.4.
  narrow = m <= (8 if scale_bf16 and fmt is not WeightFormat.MXFP4 else 16)
  if fmt is WeightFormat.NF4 and narrow and group in (64, 128) and _one_slot_64(device, n):
    # NF4 at M <= 8 there: stream-K over two chunks four deep (H100, 4096 x 14336, g128
    # 21.4 -> 20.1 us, one slot 21.1 -> 20.6 in another run, kernels_wo_s32_h100_nf4_launch;
    # g64 21.7 -> 20.5, kernels_wo_s33_h100_nf4_uint4_g64_4096x14336.json)
    return dict(tile_n=128, gps=2, steps=4, stream_k=2)
  if m <= 16 and _one_slot_64(device, n) and (fmt in FP4 or group == 128):
    # H100, 4096 x 14336 (kernels_wo_s32_h100_one_slot64_*.json, nvfp4_uint4_launch,
    # nf4_launch): one slot a tile in 64-row tiles on one compute warpgroup, where the wide
    # config (M = 16) had two: MXFP4 M = 1 / 8 / 16 18.9 -> 17.5 / 19.1 -> 17.4 / 20.7 ->
    # 18.1 us, NVFP4 20.0 -> 17.2 / 20.2 -> 17.3 / 21.6 -> 17.8 (128-row tiles: M = 1 / 4
    # 20.1 -> 18.3 / 21.3 -> 18.4, M = 16 21.7 -> 29.3), NF4 g128 M = 16 21.9 -> 20.7 and
    # 21.8 -> 20.8 (NF4 at M <= 8 takes the stream-K launch above).
    return dict(tile_n=64, gps=2, steps=4 if narrow else 3, step_wait=True) | ONE_SLOT
  if narrow and fmt is WeightFormat.NF4:
    return dict(tile_n=128, gps=2, steps=2, stream_k=4)
  if fmt is WeightFormat.NVFP4 and not narrow and m <= 16 and (
      device.startswith(ONE_SLOT_DEVICES) and n >= 16384):
    # one slot a tile on one compute warpgroup in place of the wide config: H100, 8192 x
    # 28672, M = 16, 63.4 -> 60.0 us and 65.5 -> 63.3 (MXFP4, narrow there, 59.7 -> 59.5:
    # kept; kernels_wo_s33_h100_{fp4_uint4_m16_one_slot,nvfp4_m16_ab}.json)
    return dict(tile_n=128, gps=2, steps=3, step_wait=True) | ONE_SLOT
  # MXFP4 / NVFP4 above M = 16 add their stream-K partial sums in the kernel (`fused_sum`;
  # H200 MXFP4 M = 64 74.6 -> 73.6 us, M = 32 58.7 -> 58.9; NVFP4 M = 32 59.8 -> 58.8,
  # kernels_wo_s24_fused_sum_fp4.json; H100 NVFP4 M = 64 79.0 -> 76.0,
  # kernels_wo_s25_h100_nvfp4_m64.json)
  cfg = dict(tile_n=128, gps=2, steps=4, stream_k=2) if narrow else wide | (
      dict(fused_sum=True) if fmt in FP4 and m > 16 and not few_tiles else {})
  # MXFP4 at M <= 4 on FP8 tensor cores where that pays (`fp8_x`: E2M1 bits moved into E4M3,
  # no table; `FP8_X_DEVICES`): H200 M = 1 47.9 -> 46.1 us, M = 2 47.9 -> 46.9, M = 4 48.0
  # -> 46.4, M = 8 47.7 -> 49.9 (kernels_wo_s2{3,4}_*fp8_x*.json); M = 5-7 unmeasured.
  x8 = dict(fp8_x=fp8_x_pays) if fmt is WeightFormat.MXFP4 and m <= 4 else {}
  return cfg | dict(step_wait=True) | x8
