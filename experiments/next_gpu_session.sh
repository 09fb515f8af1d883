#!/usr/bin/env bash
# The runs the next GPU session owes, packed into calls of under 10 minutes each, most needed
# first: the paths written without a GPU and gated until one checks them (docs/kernels.md, "Next
# steps"), then the sweeps. On the GPU machine, from the repository root, one part a call:
#
#   OUT=... bash experiments/next_gpu_session.sh 2        # on an H200 (kind nvidia-h200)
#   OUT=... bash experiments/next_gpu_session.sh h100-1   # on an H100 (kind nvidia-h100-x1)
#
# Part 2 first on an H200: where INT4 g128's four-compute-warpgroup configs hang (cut off in
# sessions 21, 23 and 24 without a trace: `probe_config.py` logs each phase), XLA's bf16 GEMV
# profiled as the kernel it is (session 24's capture took a 3.2 us reduce after it), the fused
# sum on 8-bit tensor cores (written in session 24, gated: INT8 M = 1, FP8 M = 8), and the INT4
# weight read by plain loads in a Mosaic kernel (no TMA: is the pipeline's load shape what XLA's
# read beats?). Then 3, 4, 5 on an H200, and h100-1, h100-2, h100-3 wherever an H100 is lent
# (issue 8 sets its targets on one). 1 ran in session 16 (rerun only to re-check);
# docs/kernels_sessions.md has each session's runs.
#
# Walls, to size the limits (sessions 22-23): a one-config row at 8192 x 28672 takes ~25 s at
# M = 1 and 40-50 s at M >= 16; each further config 3-27 s (INT8 22-27, MXFP4 8-23, FP8 2-4),
# four compute warpgroups more (session 23: two such configs at M = 64 did not finish in the
# 90 s left after the default's 28 s); a prefill row 12-25 s; each run's header (copy
# bandwidth, GEMM rate) ~10 s; an empty-body launch of bench_tma_stream.py ~6.5 s; an ncu
# profile of two cases 100-160 s, two SASS profiles ~120 s. Session 24 (with `rotated`): FP8
# configs 2 s, INT8 / MXFP4 13-18 s, M >= 32 configs 15-24 s.
#
# Each benchmark writes its JSON and table into its own folder under $OUT (a .. d, two files
# each: the device tool brings back at most 8) and is cut off by `timeout` so that one slow run
# cannot cost the rest of the call. A run cut off keeps the rows it finished (the JSON is
# rewritten after each) and, since session 19, the row it was in under "in_progress" (its
# baselines and each config finished); a wo row times all of its configs before it is
# written, each compiled and checked first: give such a run room.
# Afterwards: copy the JSON into experiments/results/ under the session's names, read each
# config against its row's first with experiments/bench_configs_table.py, open the gates
# the checks allow (the `*VERIFIED` sets: decode_plan.VERIFIED, mosaic_gpu_gemm's
# MULTIPLIERS_VERIFIED, ...), set the defaults in pallas_kernels/wo_matmul/configs.py, run
# bench_kernels_report.py, and rewrite this file with what is still owed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.:experiments PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder the results go to}"
part="${1:?which part: 1, 2, 3, 4, 5, h100-1, h100-2 or h100-3}"
B="python3 experiments/bench_kernels.py"
S=8192x28672

# The decode launch configs swept with groups of 32 / 64 at M = 32 / 64 (docs/kernels.md)
sweep='[{}, {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 2, "stream_k": 1},
        {"tile_n": 128, "gps": 1, "steps": 6, "compute_wgs": 2, "stream_k": 1},
        {"tile_n": 128, "gps": 2, "steps": 3, "compute_wgs": 2, "stream_k": 1},
        {"tile_n": 256, "gps": 2, "steps": 3, "compute_wgs": 4, "stream_k": 1},
        {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 4, "stream_k": 1}]'
# (compute_wgs 4, session 17: four compute warpgroups of 64 rows, so that two decode while two
# wait on their wgmmas; 112 registers a thread, where two warpgroups get 232)

run() {  # run LIMIT_S DIR ARGS...: one benchmark into $OUT/DIR
  local limit=$1 dir=$OUT/$2
  shift 2
  mkdir -p "$dir"
  echo "== $(date -u +%H:%M:%S) $* (limit ${limit}s)"
  timeout "$limit" "$@" --out "$dir" || echo "== exit $? (124: cut off at ${limit}s)"
}

case "$part" in
  1)  # the gated paths' correctness, each timed against what it replaces (ran in session 16:
      # f32 quantize, bf16 scales and zero-point bytes checked and gated open; rerun only to
      # re-check)
    run 170 a $B --what quant --f32 --qshapes 8192x8192
    run 130 b $B --what wo --formats uint4,uint4_g64,uint4_g32 --m 1 --shapes $S \
      --configs '[{}, {"zero_points": true}]' --onehot
    run 130 c $B --what wo --formats int4_g32,int4_g32-bf16,int4-bf16,uint4_g64-bf16,int8-bf16 \
      --m 1 --shapes $S
    run 90 d python3 experiments/bench_wgmma_rate.py
    ;;
  2)  # On an H200: INT4 g128 with four compute warpgroups (64 rows each, so that two decode
      # while two wait on their wgmmas) never finished a row at M = 32 or 64: cut off 90-190 s
      # after the default's (sessions 21, 23, 24), where two warpgroups compile and check in 5 s.
      # Each config alone, cut off at 55 s, its phases logged (lowered / compiled / ran /
      # checked), with the fused sum (the default above M = 16, written after session 17's
      # four-warpgroup kernel) and without
    run 200 a python3 experiments/probe_config.py --format int4 --m 64 --limit-s 55 --configs '[
      {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 4, "stream_k": 1, "fused_sum": false},
      {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 4, "stream_k": 1},
      {"tile_n": 256, "gps": 2, "steps": 3, "compute_wgs": 4, "stream_k": 1, "fused_sum": false}]'
    # XLA's bf16 GEMV at M = 1 (104.7 us, 4.48 TB/s) beside the decode's empty-body pipeline
    # (34.9 us, DRAM 76%, session 24): its call is more than one kernel, the longest kept now
    run 110 b python3 experiments/profile_kernels.py --case xla_bf16_m1
    # 8-bit tensor cores with the fused sum (written in session 24, gated): the kernel adds each
    # token's hi and lo columns in registers, scales them by s_x and writes y, where XLA's
    # kernel after it took ~2 us of INT8 M = 1's 62.4 (the Mosaic kernel 56.2, the split's
    # kernels the rest; 1.8x XLA bf16 needs 60.9) and FP8 M = 8's
    run 150 c $B --what wo --formats int8,fp8_e4m3 --m 1,8 --shapes $S \
      --configs '[{}, {"fused_sum": true, "fp8_x": true}]'
    # INT4 g128 M = 1's bytes read by plain loads in a Mosaic kernel (`ld_read`, written in
    # session 24: 16 B a thread a load, no TMA): XLA's read reached 4.00 TB/s, the decode's TMA
    # pipeline 3.60 at best over 51 launches; if plain loads reach XLA's rate, the decode's
    # producer has a load shape to move to
    run 100 d python3 experiments/bench_tma_stream.py --ld-only --limit-s 60
    ;;
  3)  # On an H200: prefill at the smaller shapes (INT4 4096 x 14336 M = 1024: 0.83x XLA bf16 in
      # session 7, target 0.9x; 0.94x on the H100 in session 5); UINT4 g64 M = 64's launch sweep
      # past its first two configs (93.6 / 93.9 us, session 23)
    run 250 a $B --what wo --formats int4,mxfp4,nvfp4,int8 --m 1024 --shapes 4096x14336,4096x4096
    run 260 b $B --what wo --formats uint4_g64 --m 64 --shapes $S --configs '[{},
      {"tile_n": 128, "gps": 1, "steps": 6, "compute_wgs": 2, "stream_k": 1},
      {"tile_n": 128, "gps": 2, "steps": 3, "compute_wgs": 2, "stream_k": 1},
      {"tile_n": 256, "gps": 2, "steps": 3, "compute_wgs": 2, "stream_k": 1}]'
    ;;
  4)  # INT4 g32's M = 64 group-slice sweep (session 21 reached g128's only); the row-wise
      # quantize kernels by SASS opcode: FP8 1x128 / INT4 / MXFP4 take the same time on the
      # H100 and the H200 (session 22), so they are bound by their instructions (MXFP4's last
      # profile, session 12, predates the E2M1 encode by the exponent field; FP8 1x128 never)
    run 220 a $B --what wo --formats int4_g32 --m 64 --shapes $S --configs "$sweep"
    run 300 b python3 experiments/profile_kernels.py --sass \
      --case quant_fp8_1x128,quant_int4,quant_mxfp4
    ;;
  5)  # Session 24's defaults where they were extended past what was measured: INT4 g128's
      # stream-K below N = 16384 (M = 1 15.3 -> 14.3 us in 128-row tiles, M = 16 16.1 -> 15.3
      # in 64-row ones) for groups of 32 / 64, which keep the old launch; UINT4 g32's stream-K
      # at M <= 8 (M = 1 57.6 -> 53.7) at M = 8, against its old narrow launch; FP8's `fp8_x`
      # threshold; NVFP4's fused sum at M = 64
    run 250 a $B --what wo --formats int4_g32,int4_g64 --m 1,16 --shapes 4096x14336 \
      --configs '[{}, {"tile_n": 128, "gps": 2, "steps": 4, "stream_k": 2},
                  {"tile_n": 64, "gps": 2, "steps": 4, "stream_k": 2}]'
    run 100 b $B --what wo --formats uint4_g32 --m 8 --shapes $S \
      --configs '[{}, {"tile_n": 128, "gps": 2, "steps": 3, "step_wait": true}]'
    # FP8's own `fp8_x` threshold (session 24: 4096 x 14336 gained, 22.8 -> 20.2 us): on at
    # 14336 x 4096 by it (the same size, N short: unmeasured), off at 4096 x 4096
    run 90 c $B --what wo --formats fp8_e4m3 --m 1 --shapes 14336x4096,4096x4096 \
      --configs '[{"fp8_x": false}, {"fp8_x": true}]'
    # NVFP4 M = 64 with the fused sum, its default above M = 16 since session 24 (M = 32 59.8
    # -> 58.8 us, MXFP4 M = 64 74.6 -> 73.6), cut off there
    run 100 d $B --what wo --formats nvfp4 --m 64 --shapes $S --configs '[{}, {"fused_sum": false}]'
    ;;
  h100-1)  # On an H100 (`run` with kind nvidia-h100-x1): `fused_sum` for INT8 / FP8 at M = 32,
      # where the Mosaic kernel alone is inside 1.8x XLA bf16 (88.5 / 88.3 us against 89.4 /
      # 89.5) and XLA's sum-and-transpose after it (3.6 / 3.7 us) misses it
      # (`kernels_time_split_h100.png`; on the H200 INT8's lost there, 68.7 -> 74.1 us, FP8's
      # 66.8 -> 66.6, session 24); the rest of the standing table session 22 began:
      # groups, UINT4 and NF4 at M = 16 / 64 (M = 16 of INT4 / INT8 / NVFP4 still owed)
    run 170 a $B --what wo --formats int8,fp8_e4m3 --m 32 --shapes $S \
      --configs '[{}, {"fused_sum": true}]'
    run 200 b $B --what wo --formats int4_g32,int4_g64 --m 16,64 --shapes $S
    run 200 c $B --what wo --formats uint4,nf4_g64 --m 16,64 --shapes $S
    ;;
  h100-2)  # On an H100: INT8 at M = 1 / 4 on s8 tensor cores (M = 4 cut off in session 22) and
      # in FP8's 128-row tiles without stream-K (FP8 85.2 us there, INT8 87.2: 2.69 TB/s, 0.4%
      # short of 2.7; the INT8 default was tuned on the H200, where INT8 is the faster); the smaller
      # shapes (last timed on an H100 in session 3); the prefill formats last timed in sessions
      # 2-5 (INT8 0.85x, UINT4 g128 0.69x at M = 1024); INT4 g128 M = 1's launch on the H100
      # (51.8 us, 3.05x XLA bf16, 95% of the 3.2x target, with the launch tuned on the H200:
      # stream-K two CTAs an SM, four chunks a step, two deep)
    run 160 a $B --what wo --formats int8 --m 1,4 --shapes $S --configs '[{}, {"fp8_x": true},
      {"tile_n": 128, "gps": 2, "steps": 3, "splits": 1}]'
    run 200 b $B --what wo --formats int4,mxfp4,nvfp4 --m 1,64 --shapes 4096x14336
    run 100 c $B --what wo --formats int8,uint4,int4_g32 --m 1024 --shapes $S
    run 110 d $B --what wo --formats int4 --m 1 --shapes $S --configs '[{}, {"stream_k": 3},
      {"gps": 2, "steps": 4}, {"gps": 2, "steps": 3, "stream_k": 3}]'
    ;;
  h100-3)  # On an H100: the quantize launch (every default was swept on the H200; session 2's
      # H100 sweep had MXFP8 rows at 2.65 TB/s with 3 steps, 3 CTAs an SM, against today's
      # 2.59; the target 2.8 is 92% of the H100's copy), rows and columns, each config timed and
      # the best checked bit for bit; INT4 M = 1's weight stream alone on the H100 (the empty-body
      # pipeline, `load_only_s`: is 51.8 us the stream or the decode?)
    run 220 a $B --what quant --sweep --qshapes 8192x8192 \
      --schemes mxfp8_e4m3,int4_g128,mxfp4,fp8_e4m3_block128
    run 220 b $B --what quant --transpose --sweep --qshapes 8192x8192 \
      --schemes mxfp8_e4m3,int4_g128,mxfp4
    run 100 c $B --what wo --formats int4,mxfp4 --m 1 --load-split --shapes $S
    ;;
  *) echo "part must be 1, 2, 3, 4, 5, h100-1, h100-2 or h100-3" >&2; exit 2 ;;
esac
ls -R "$OUT"
