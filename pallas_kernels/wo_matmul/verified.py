"""Which decode paths have matched the reference on a GPU, and the runs that showed it.

Each set holds `decode_plan.case(pw)` keys (format, group or "channel", variant); `plan_decode`
runs a path outside its set only with `allow_unverified=True` (`gates.require_checked`), which
the benchmark passes, checking every config it times. A path joins its set when a benchmark run
on a GPU matched the reference; the comment beside each set names the runs
(`experiments/results/`), their device and date, and what they timed.
"""

from __future__ import annotations

from pallas_kernels.wo_matmul.packed_weight import WeightFormat

# What has run and matched the reference on an H100 (experiments/results/kernels_wo*.json):
# `case(pw)` keys. Others need allow_unverified.
VERIFIED = {(WeightFormat.INT4, 32), (WeightFormat.INT4, 64), (WeightFormat.INT4, 128),
            (WeightFormat.UINT4, 32), (WeightFormat.UINT4, 64), (WeightFormat.UINT4, 128),
            (WeightFormat.MXFP4, 32), (WeightFormat.NVFP4, 16), (WeightFormat.NF4, 64),
            (WeightFormat.INT8, "channel"), (WeightFormat.FP8, "channel"),
            # H200, 2026-12-04: M = 1 / 16 / 64, rel. err 2.8-2.9e-3, one-hot rows exact
            (WeightFormat.NF4, 64, "slots"),
            # H100, 2026-12-06 (sessions 29-32), 4096 x 14336 M = 1 / 16 and 8192 x 28672
            # M = 1, rel. err 2.32-2.37e-3 in nine runs (kernels_wo_s29_h100_one_slot_4096x14336,
            # s30_h100_plain_m1, s31_h100_int4_nf4_4096x14336, s32_h100_nf4_launch and
            # s32_h100_one_slot64_*.json)
            (WeightFormat.NF4, 128, "slots"),
            # H200, 2026-12-05, 8192 x 28672, M = 1, rel. err 1.6-1.7e-3
            # (kernels_wo_s16_bf16_scales.json, kernels_wo_s16_zero_points*.json): a scheme's
            # bf16 scales (INT4 g32 44.3 -> 40.9 us, g128 38.1, UINT4 g64 45.1, INT8 64.8), and
            # UINT4 zero points as bytes (correct, one-hot rows exact at g128, but slower: g128
            # 44.4 -> 45.8, g64 46.5 -> 47.5, g32 60.3 -> 61.4 us; not `repack`'s default)
            (WeightFormat.INT4, 32, "bf16_scales"), (WeightFormat.INT4, 128, "bf16_scales"),
            (WeightFormat.UINT4, 64, "bf16_scales"), (WeightFormat.INT8, "channel", "bf16_scales"),
            (WeightFormat.UINT4, 32, "zero_points"), (WeightFormat.UINT4, 64, "zero_points"),
            (WeightFormat.UINT4, 128, "zero_points"),
            # H100, 2026-12-07 (session 37), jax 0.11.2, 8192 x 28672, rel. err as the
            # default's (1.65-1.67e-3) in every row (kernels_wo_s37_h100_fp4_decode*.json,
            # kernels_wo_s37_h100_nvfp4_halves*.json), us default -> variant: MXFP4's
            # multipliers folded with the E2M1 decode's 2^126 (`scales.fp4_scales_bf16(
            # mx_fold=True)`) M = 1 59.5 -> 58.8, M = 16 61.8 -> 60.6; E2M1 codes in the halves
            # order (`code_order.HALVES_ORDER`) M = 1 59.5 -> 58.4, M = 16 61.8 -> 60.6; both M = 1
            # 59.5 -> 57.5 and 59.1 -> 56.9 (two calls), M = 8 58.7 -> 57.1, M = 16 61.8 ->
            # 59.1, 4096 x 14336 M = 1 17.6 -> 16.4 (the GPU default for MXFP4 since,
            # `layout.HALVES_BY_DEFAULT`, `MX_FOLD_BY_DEFAULT`); NVFP4 in the halves order M = 1
            # 63.7 -> 62.3 and 63.2 -> 62.5, M = 16 63.7 -> 64.4 and 4096 x 14336 M = 1 17.4 ->
            # 18.6, those two without the fused sum the default had (the full key then closed
            # its gate; `decode_plan.base_case` since): not a default.
            (WeightFormat.MXFP4, 32, "mx_fold"), (WeightFormat.MXFP4, 32, "halves"),
            (WeightFormat.MXFP4, 32, "mx_fold", "halves"), (WeightFormat.NVFP4, 16, "halves"),
            # H100, 2026-12-07 (session 39), jax 0.11.2, 8192 x 28672, rel. err as the
            # default's in every row (kernels_wo_s39_h100_*.json), us default -> variant: FP4
            # scale bytes each their multiplier by one IMAD (`scales.fp4_byte_multipliers`)
            # MXFP4 M = 1 56.4 -> 55.0 (byte-pair order), with the halves order M = 1 56.3 ->
            # 53.4, M = 16 58.5 -> 56.2; NVFP4 M = 1 61.1 -> 58.5, M = 16 60.0 -> 57.7; INT4
            # scales as bf16 amaxes (`scales.int4_amax_scales`) g32 M = 1 57.5 -> 54.3 and
            # 57.7 -> 53.8, M = 16 61.7 -> 58.0; g64 M = 1 52.5 -> 51.4; g128 M = 1 48.2 ->
            # 47.5, M = 16 50.5 -> 49.0; at 4096 x 14336 M = 1 g32 17.4 -> 18.0, g128 15.0 ->
            # 15.1.
            (WeightFormat.MXFP4, 32, "byte_multipliers"),
            (WeightFormat.MXFP4, 32, "halves", "byte_multipliers"),
            (WeightFormat.NVFP4, 16, "byte_multipliers"),
            (WeightFormat.INT4, 32, "amax_scales"), (WeightFormat.INT4, 64, "amax_scales"),
            (WeightFormat.INT4, 128, "amax_scales"),
            # H100, 2026-12-07 (session 40), jax 0.11.2, rel. err as the default's in every row
            # (kernels_wo_s40_h100_*.json), us bf16 multipliers in the byte-pair order (MXFP4's
            # folded) -> byte multipliers in the halves order: 4096 x 14336 M = 1 MXFP4 16.6 ->
            # 15.1, NVFP4 17.4 -> 16.1, M = 16 17.5 -> 15.7 / 17.7 -> 16.8; 8192 x 28672 NVFP4
            # M = 1 61.3 -> 55.7, M = 16 60.0 -> 54.2, M = 64 MXFP4 72.4 -> 68.1, NVFP4 73.9 ->
            # 70.7: `repack`'s GPU default for both since (`layout.default_byte_multipliers`,
            # `HALVES_BY_DEFAULT`). INT4's amax scales there: 4096 x 14336 g32 M = 1 / 16 17.4 ->
            # 17.9 / 18.1 -> 18.7, g128 15.1 -> 15.1 / 15.7 -> 16.1; 8192 x 28672 M = 64 g32
            # 89.7 -> 90.7, g128 67.2 -> 67.9: not a default (opt-in, `scales.int4_amax_scales`).
            (WeightFormat.NVFP4, 16, "halves", "byte_multipliers")}
# `case(pw)` keys whose `fused_sum` kernel has matched the reference on a GPU; a case takes it by
# default where `configs.decode_config` says so (INT4 g128, MXFP4 and NVFP4 at M > 16, INT8 at
# M > 32). Written in session 19 without a GPU. H200, 2026-12-05, 8192 x 28672
# (kernels_wo_s20_fused_sum.json, kernels_wo_s21_int4_m64.json): correct (rel. err as XLA's
# sum); INT4 g128 M = 1 38.5 -> 39.4 us, M = 64 68.6 -> 67.1, INT8 M = 1 65.5 -> 66.4, though
# it drops the 1.6-6 us XLA kernel after the decode. H100, 2026-12-05: INT4 g128 M = 32 60.4
# -> 58.5, M = 64 71.9 -> 68.7 (kernels_wo_s22_h100_fused_sum_m*.json). H200, 2026-12-05,
# M = 32 / 64, rel. err as XLA's sum (kernels_wo_s24_fused_sum_{8bit,fp4}.json): INT8 68.7 ->
# 74.1 / 84.8 -> 83.3 us, FP8 66.8 -> 66.6 / 82.5 -> 82.2, MXFP4 58.7 -> 58.9 / 74.6 -> 73.6,
# NVFP4 (bf16 multipliers) M = 32 59.8 -> 58.8. With one slot a tile (`splits=1`: each CTA
# writes its tile, no semaphore; session 28, written without a GPU), H100, 2026-12-06, jax
# 0.11.2, 8192 x 28672, M = 1, rel. err as XLA's sum (1.65-1.67e-3), us stream-K with XLA's sum
# -> one slot fused (kernels_wo_s29_h100_{int4_m1,one_slot}.json): INT4 g128 50.3 -> 48.3 /
# 50.3 -> 48.1, INT4 g32 58.6 -> 56.8 / 59.2 -> 57.1, INT4 g64 52.3 -> 52.0, UINT4 g128 54.5 ->
# 53.6, NVFP4 62.9 -> 61.4, MXFP4 56.5 -> 58.1; with plain loads (`code_order.thread_major`) INT4
# g32 53.4, UINT4 51.3 (kernels_wo_s29_h100_one_slot_uint4_nvfp4_g64.json for g64). NF4 g128
# slot codes, H100, 2026-12-06, 4096 x 14336, M = 1 / 16, one slot a tile fused, rel. err as
# XLA's sum (2.83-2.89e-3 on the config check) in four runs (kernels_wo_s32_h100_nf4_launch.json,
# kernels_wo_s32_h100_one_slot64_cw1_*.json). UINT4 g64, H100, 2026-12-06, 4096 x 14336, M = 1,
# one slot a 64-row tile, rel. err 1.66e-3 as the default's
# (kernels_wo_s33_h100_nf4_uint4_g64_4096x14336.json).
FUSED_SUM_VERIFIED: frozenset = frozenset({(WeightFormat.INT4, 128), (WeightFormat.INT4, 64),
                                           (WeightFormat.INT4, 32), (WeightFormat.UINT4, 128),
                                           (WeightFormat.UINT4, 64),
                                           (WeightFormat.INT8, "channel"),
                                           (WeightFormat.FP8, "channel"),
                                           (WeightFormat.MXFP4, 32), (WeightFormat.NVFP4, 16),
                                           (WeightFormat.NF4, 128, "slots")})
# `decode_plan.base_case` keys whose fused sum has read the other slots' partial sums by plain
# loads (`slot_loads`, written in session 42 without a GPU) and matched the reference on a GPU.
# H100, 2026-12-07, jax 0.11.2, rel. err equal to the TMA copies' in every row
# (kernels_wo_s43_h100_{fused_sum_4096x4096,fused_sum_m1_4096x4096,slot_loads_8192x28672}.json):
# INT4 g128 at 4096 x 4096 M = 1 / 32 / 64 and 8192 x 28672 M = 64.
SLOT_LOADS_VERIFIED: frozenset = frozenset({(WeightFormat.INT4, 128)})
# `decode_plan.base_case` keys whose fused sum has written slots 1.. by plain stores and a
# release (`slot_stores`, written in session 44 without a GPU) and matched the reference on a
# GPU. H100, 2026-12-07, jax 0.11.2, INT4 g128 at 4096 x 4096 M = 1 / 32, rel. err equal to
# the default's, in 128- and 64-row tiles; slower than plain loads alone there (M = 1 8.2 ->
# 8.7 us, M = 32 10.7 -> 10.8; kernels_wo_s45_h100_slot_stores_64_rows_4096x4096.json): off.
SLOT_STORES_VERIFIED: frozenset = frozenset({(WeightFormat.INT4, 128)})
# INT4 weights rounded to bf16 before the MMA (`plan_decode(weights_bf16=True)`, session 46):
# written without a GPU, lowered on the CPU; none checked yet
WEIGHTS_BF16_VERIFIED: frozenset = frozenset()
# `case(pw)` keys whose `fp8_x` kernel (FP8 tensor cores, `fp8_x.py`) has matched the reference
# on a GPU; a case takes it by default where `configs.decode_config` says so. H200, 2026-12-05,
# 8192 x 28672, rel. err 1.66e-3 against the bf16 path's 1.65-1.67e-3
# (kernels_wo_s20_fp8_x*.json, kernels_wo_s21_fp8_x_*.json), us without -> with: INT4 g128
# M = 1 / 4 38.5 -> 46.4 / 38.9 -> 49.5, M = 64 68.6 -> 264.4 (its kernel 38.3 us at M = 1
# against 36.5-37.0: M = 1 is not MMA-bound; six XLA kernels split x, 8.6 us); INT4 g32 M = 1
# 43.8 -> 52.6, UINT4 g32 59.6 -> 65.3; MXFP4 M = 1 47.9 -> 46.1, M = 8 47.7 -> 49.9 (default
# at M = 1); FP8 M = 1 69.3 -> 61.0, M = 8 69.4 -> 65.8 (default at M <= 8), M = 16 74.4 ->
# 68.2, M = 32 81.3 -> 82.8, M = 64 83.5 -> 106.9; INT8 on s8 tensor cores M = 1 64.8 -> 62.5
# (default at M <= 4, in 128-row tiles: 62.1; kernels_wo_s23_*.json). H100, 2026-12-05
# (kernels_wo_s22_h100_*.json), slower there: FP8 M = 1 / 8 85.2 -> 87.3 / 85.7 -> 88.5, MXFP4
# 59.0 -> 61.6 / 59.0 -> 65.8, INT8 M = 1 87.2 -> 87.7 (rel. err 1.65e-3 both)
# (`configs.FP8_X_DEVICES`).
FP8_X_VERIFIED: frozenset = frozenset({(WeightFormat.INT4, 128), (WeightFormat.INT4, 32),
                                       (WeightFormat.UINT4, 32), (WeightFormat.MXFP4, 32),
                                       (WeightFormat.FP8, "channel"),
                                       (WeightFormat.INT8, "channel")})
# `case(pw)` keys whose `fp8_x` kernel with `fused_sum` has matched the reference on a GPU: the
# kernel adds each token's hi and lo columns in registers (`registers.pair_sums`) and scales
# them by out_scale s_x before it writes y, so no XLA kernel follows the decode. H100,
# 2026-12-05, 8192 x 28672, rel. err as fp8_x's with XLA's sum (1.64-1.67e-3), us bf16 path ->
# fp8_x with the fused sum (kernels_wo_s25_h100_fused_sum_fp8_x.json): INT8 M = 1 / 8 86.7 ->
# 86.9 / 87.8 -> 89.9, FP8 84.9 -> 85.8 / 85.2 -> 87.6 (the Mosaic kernel 2.1-2.6 us faster,
# the split's XLA kernels 3.5-5 us; fp8_x alone at INT8 M = 1 87.4,
# kernels_wo_s25_h100_int8_m1_4.json). Not a default on the H100, where fp8_x is off, nor on the
# H200, where it is on at small M and the fused sum gains nothing there: H200, 2026-12-06, fp8_x
# with XLA's sum -> with the fused sum, INT8 M = 1 63.0 -> 64.0 us, FP8 M = 1 / 8 61.8 -> 61.2
# / 64.8 -> 64.5, MXFP4 g32 M = 1 47.3 -> 49.4 (kernels_wo_s26_{fused_sum_fp8_x,mxfp4_pair}.json;
# INT8 M = 8, on the bf16 path there, 65.4 -> 67.3 with the fused stream-K sum).
FP8_X_FUSED_SUM_VERIFIED: frozenset = frozenset({(WeightFormat.INT8, "channel"),
                                                 (WeightFormat.FP8, "channel"),
                                                 (WeightFormat.MXFP4, 32)})
# `case(pw)` keys whose decode with the codes read by plain loads (a `code_order.thread_major`
# weight: each warpgroup loads its chunk's codes from global memory as 16-byte vectors, no TMA
# and no shared memory for them) has matched the reference on a GPU. Written in session 26
# without one; H100, 2026-12-06, jax 0.11.2, 8192 x 28672, rel. err as the TMA decode's
# (1.65-1.67e-3), us TMA -> plain loads -> plain loads a step ahead (`prefetch_codes`;
# kernels_wo_s27_h100_plain_*.json): M = 1 INT4 g128 51.9 -> 64.6 -> 52.3, INT4 g32 60.8 ->
# 68.9 -> 58.3, MXFP4 58.8 -> 74.3 -> 62.9, NVFP4 64.1 -> 77.1 -> 63.9, UINT4 56.0 -> 67.7 ->
# 55.6, INT8 86.6 -> 99.1 -> 85.7; M = 16 INT4 54.5 -> 66.4 -> 54.6, INT8 89.9 -> 116.7 ->
# 97.6; INT4 M = 64 68.5 -> 87.1 -> 75.6. FP8 (session 28, H100, kernels_wo_s28_h100_plain_fp8
# .json): rel. err as the TMA decode's, M = 1 82.9 -> 81.2 us, M = 16 84.0 -> 91.6. A layout the
# caller picks (`code_order.thread_major`), not a default: it pays for INT4 g32 at M = 1 (-3 to -4%)
# and FP8 at M = 1 (-2%), and ties or loses elsewhere on the H100.
PLAIN_LOADS_VERIFIED: frozenset = frozenset({(WeightFormat.INT4, 128), (WeightFormat.INT4, 32),
                                             (WeightFormat.MXFP4, 32), (WeightFormat.NVFP4, 16),
                                             (WeightFormat.UINT4, 128),
                                             (WeightFormat.INT8, "channel"),
                                             (WeightFormat.FP8, "channel")})
# Steps ahead that `prefetch_codes` has been checked at on a GPU: one (sessions 27-28, H100);
# two (session 29, H100, 2026-12-06, jax 0.11.2, 8192 x 28672, M = 1, INT4 g128 / g32, rel.
# err as a step ahead's, kernels_wo_s29_h100_{int4_m1,one_slot_launch}.json): written for the
# stall the plain decode left (its samples 34% on the instruction that consumes its loads,
# profile_wo_int4_m1_plain_sass_s28_h100.md), and slower: INT4 g128 51.4 us against 49.9 a step
# ahead (two chunks a step, three CTAs an SM: 63.6 against 49.9), g32 59.4 against 58.6 (TMA).
PREFETCH_VERIFIED_STEPS = 2
# `case(pw)` keys whose `fp8_x` decode with x split by one kernel (`x_split.py`, in place of
# XLA's several small kernels, ~5.9 us of INT8 M = 1's 62.1 on the H200) has matched the
# reference on a GPU, and where it is the default with fp8_x. H100, 2026-12-06, jax 0.11.2,
# 8192 x 28672, M = 1, rel. err as XLA's split's (1.66-1.67e-3), us fp8_x with XLA's split ->
# with the kernel (kernels_wo_s27_h100_split_kernel.json): INT8 86.0 -> 84.4, FP8 84.2 -> 83.4
# (the XLA time around the decode 5.4 / 4.7 -> 1.8). Not enough to turn fp8_x on for the H100
# (INT8 85.0 on the bf16 path against 84.7, FP8 82.4 against 83.4, same run:
# kernels_wo_s27_h100_split_vs_default.json); on the H200, where fp8_x is the default at small
# M, the kernel's gain is still to be timed.
SPLIT_KERNEL_VERIFIED: frozenset = frozenset({(WeightFormat.INT8, "channel"),
                                              (WeightFormat.FP8, "channel")})
# `case(pw)` keys (per-channel INT8 / FP8) whose decode with two compute warpgroups on the split
# schedule (one N tile a CTA, `splits`; `fused_sum` with one slot a tile) has matched the
# reference on a GPU. Mosaic refused it until the channel scales' index map read the step
# (`mosaic_gpu.channel_block`, session 29). H100, 2026-12-06, jax 0.11.2, 8192 x 28672, rel.
# err as stream-K's (1.66e-3), us the wide default (stream-K, one CTA an SM, fused sum) -> one
# slot a tile (kernels_wo_s29_h100_one_slot_wgs2_m32_m64.json): INT8 M = 32 87.3 -> 85.8, M =
# 64 90.9 -> 94.5; FP8 M = 32 86.8 -> 83.7, M = 64 90.9 -> 90.7. The H100's default at M = 32
# since session 30, after two more runs at M = 32 agreed (INT8 89.5 -> 87.5 / 87.3 -> 85.6, FP8
# 88.9 -> 85.8 / 87.1 -> 83.8: `configs.ONE_SLOT_DEVICES`).
SPLIT_WGS_VERIFIED: frozenset = frozenset({(WeightFormat.INT8, "channel"),
                                           (WeightFormat.FP8, "channel")})
