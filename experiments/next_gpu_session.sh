#!/usr/bin/env bash
# The runs the next GPU session owes, packed into calls of under 10 minutes each, most needed
# first: the paths written without a GPU and gated until one checks them (docs/kernels.md, "Next
# steps"), then the sweeps. On the GPU machine, from the repository root, one part a call:
#
#   OUT=... bash experiments/next_gpu_session.sh 2        # on an H200 (kind nvidia-h200)
#   OUT=... bash experiments/next_gpu_session.sh h100-1   # on an H100 (kind nvidia-h100-x1)
#
# Part 2 first on an H200: it finishes what session 23's limits cut off (the empty-body stream
# sweep, XLA's GEMV profile) and the `fp8_x` thresholds session 23 set between measured M.
# Then 3, 4, 5, 6, 7 on an H200, and h100-1, h100-2, h100-3 wherever an H100 is lent (issue 8 sets
# its targets on one). 1 ran in session 16 (rerun only to re-check); docs/kernels_sessions.md
# has each session's runs.
#
# Walls, to size the limits (sessions 22-23): a one-config row at 8192 x 28672 takes ~25 s at
# M = 1 and 40-50 s at M >= 16; each further config 3-27 s (INT8 22-27, MXFP4 8-23, FP8 2-4),
# four compute warpgroups more (session 23: two such configs at M = 64 did not finish in the
# 90 s left after the default's 28 s); a prefill row 12-25 s; each run's header (copy
# bandwidth, GEMM rate) ~10 s; an empty-body launch of bench_tma_stream.py ~6.5 s; an ncu
# profile of two cases more than 90 s. Each config's first timed call cost its check's compile
# times the input rotations until session 23's `rotated` (traced once since): walls may drop.
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
part="${1:?which part: 1, 2, 3, 4, 5, 6, 7, h100-1, h100-2 or h100-3}"
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
  2)  # On an H200, what session 23's limits cut off: the decode pipeline with an empty body
      # over the launches it did not reach (tile_n 128 with 4 / 8 chunks a step, tile_n 256:
      # its 25 took 34.0-39.8 us, at best 3.67 TB/s, 82% of XLA's bf16 GEMV's read rate, where
      # the 3.2x target for INT4 M = 1 needs 32.7 us), beside XLA's own read of the same 124.8
      # MB (`xla_read`, new: what plain loads reach on them at this size); XLA's bf16 GEMV's
      # memory section beside INT4 M = 1's empty-body pipeline (cut off at 90 s). And the
      # `fp8_x` thresholds session 23 set between the M it measured: MXFP4 gained at M = 1
      # (47.9 -> 46.1 us) and lost at M = 8 (47.7 -> 49.9), so its default is M = 1 only; INT8
      # gained at M = 1 / 4 (64.8 -> 62.1, 66.7 -> 64.6 in 128-row tiles), M = 8 untimed. INT8
      # M = 1 again: its multipliers are built at the x operand's width since
      # (`fp8_x.int8_split`), where session 23's run had a pad kernel of 1.2 us after them
      # (`kernel_us`; 1.8x XLA bf16 needs ~60.9 of its 62.1)
    run 200 a python3 experiments/bench_tma_stream.py --limit-s 160 \
      --skip-done experiments/results/tma_stream_s23.json
    run 160 b python3 experiments/profile_kernels.py --case xla_bf16_m1,wo_int4_m1_load_only
    run 100 c $B --what wo --formats mxfp4 --m 2,4 --shapes $S --configs '[{}, {"fp8_x": true}]'
    run 100 d $B --what wo --formats int8 --m 1,8 --shapes $S \
      --configs '[{}, {"fp8_x": true, "tile_n": 128, "steps": 3}]'
    ;;
  3)  # On an H200: INT4 g128 M = 64 (1.59x XLA bf16, target 2.2x, MMA-bound) with four compute
      # warpgroups (64 rows each, so that two decode while two wait on their wgmmas; 112
      # registers a thread): cut off twice before them (sessions 21, 23). `fused_sum` for
      # the 8-bit formats at M = 32 / 64 (INT8's checked at M = 1 in session 20, FP8's never):
      # XLA's kernel after the decode that adds the stream-K slots and transposes y takes 3.3-3.6
      # us of INT8 / FP8's ~68 at M = 32 and 5.0-5.5 of ~84 at M = 64 (`kernel_us`, sessions
      # 20-22), where INT4 g128's fused sum gained 1.9 / 3.2 us on the H100
    run 200 a $B --what wo --formats int4 --m 64 --shapes $S --configs '[{},
      {"tile_n": 256, "gps": 2, "steps": 3, "compute_wgs": 4, "stream_k": 1},
      {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 4, "stream_k": 1}]'
    run 240 b $B --what wo --formats int8,fp8_e4m3 --m 32,64 --shapes $S \
      --configs '[{}, {"fused_sum": true}]'
    # `configs.FP8_X_MIN_WEIGHT` (2^27 elements, session 23, from each format's saving at 8192 x
    # 28672 against the split's ~5 us; MXFP4 4096 x 4096 M = 1 took 9.5 us with fp8_x, its Mosaic
    # kernel 5.4): fp8_x against the bf16 path at 4096 x 14336 (5.9e7 elements), below it
    run 130 c $B --what wo --formats mxfp4,int8,fp8_e4m3 --m 1 --shapes 4096x14336 \
      --configs '[{}, {"fp8_x": true}]'
    ;;
  4)  # UINT4's stream-K configs; FP4 / NF4 decode by SASS opcode; the FP4 formats' fused sum
    # Stream-K with two CTAs an SM for UINT4 g32 / g128 at M = 1 (explicit configs are timed at
    # each M). Spelled out: merged into UINT4's own defaults, INT4's {"gps": 4, "steps": 2,
    # "stream_k": 2} takes 116-215 KB of shared memory there (Mosaic's count on the CPU, session
    # 16), one CTA an SM. gps 2 / steps 3 takes 89-110 KB, two an SM; gps 4 with zero-point
    # bytes fits two for g32 at M = 1 only (111 KB); step_wait as UINT4 takes it.
    # configs_timed records each config's resolved plan and CTAs an SM.
    run 140 a $B --what wo --formats uint4_g32,uint4 --m 1 --shapes $S \
      --configs '[{}, {"tile_n": 128, "compute_wgs": 1, "gps": 2, "steps": 3, "stream_k": 2,
                   "step_wait": true},
                  {"tile_n": 128, "compute_wgs": 1, "gps": 4, "steps": 2, "stream_k": 2,
                   "step_wait": true, "zero_points": true}]'
    # FP4 / NF4 decode at M = 1 (2.36x / 1.89x XLA bf16, target 3.2x) by SASS opcode, with
    # today's one wgmma wait a step: what the decode spends its issue slots on (never profiled
    # since step_wait, session 12)
    run 200 b python3 experiments/profile_kernels.py --sass --case wo_mxfp4_m1,wo_nf4_m1
    # `fused_sum` for the FP4 formats at M = 32 / 64 (XLA's sum-and-transpose after the decode:
    # 3.1 us of MXFP4's 61 at M = 32, 5.1 of 75 at M = 64, H100 session 22)
    run 200 c $B --what wo --formats mxfp4,nvfp4 --m 32,64 --shapes $S \
      --configs '[{}, {"fused_sum": true}]'
    ;;
  5)  # the smaller shapes' launch configs (N < 16384 takes INT4's 64-row tiles without
      # stream-K: never swept on the H200; stream_k 2 alone took 15.5 -> 14.9 us in session 21,
      # and session 23's default ran 15.5 again) and prefill there (INT4 4096 x 14336 M = 1024:
      # 0.83x XLA bf16 on the H200 in session 7, target 0.9x; 0.94x on the H100 in session 5)
    run 250 a $B --what wo --formats int4 --m 1,16 --shapes 4096x14336 \
      --configs '[{}, {"tile_n": 64, "gps": 2, "steps": 4, "stream_k": 2},
                  {"tile_n": 64, "gps": 2, "steps": 4, "stream_k": 3},
                  {"tile_n": 128, "gps": 2, "steps": 4, "stream_k": 2}]'
    run 250 b $B --what wo --formats int4,mxfp4,nvfp4,int8 --m 1024 --shapes 4096x14336,4096x4096
    # NF4 / NVFP4 at 4096 x 4096 (NF4's last time there is session 11's)
    run 70 c $B --what wo --formats nf4_g64,nvfp4 --m 1 --shapes 4096x4096
    ;;
  6)  # INT4 g32's M = 64 group-slice sweep (session 21 reached g128's only); the row-wise
      # quantize kernels by SASS opcode: FP8 1x128 / INT4 / MXFP4 take the same time on the
      # H100 and the H200 (session 22), so they are bound by their instructions (MXFP4's last
      # profile, session 12, predates the E2M1 encode by the exponent field; FP8 1x128 never)
    run 220 a $B --what wo --formats int4_g32 --m 64 --shapes $S --configs "$sweep"
    run 300 b python3 experiments/profile_kernels.py --sass \
      --case quant_fp8_1x128,quant_int4,quant_mxfp4
    ;;
  7)  # INT4 g128 M = 32 (2.20x, target 2.5x) with four compute warpgroups (session 23's sweep
      # reached four of six configs, the default 51.5 us the fastest); UINT4 g64 M = 64's launch
      # sweep past its first two configs (93.6 / 93.9 us, session 23); the 8-bit prefill on the
      # H200, never timed there (H100, session 5: INT8 0.85x XLA bf16, FP8 0.93x)
    run 230 a $B --what wo --formats int4 --m 32 --shapes $S --configs '[{},
      {"tile_n": 256, "gps": 2, "steps": 3, "compute_wgs": 4, "stream_k": 1},
      {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 4, "stream_k": 1}]'
    run 260 b $B --what wo --formats uint4_g64 --m 64 --shapes $S --configs '[{},
      {"tile_n": 128, "gps": 1, "steps": 6, "compute_wgs": 2, "stream_k": 1},
      {"tile_n": 128, "gps": 2, "steps": 3, "compute_wgs": 2, "stream_k": 1},
      {"tile_n": 256, "gps": 2, "steps": 3, "compute_wgs": 4, "stream_k": 1}]'
    run 80 c $B --what wo --formats int8,fp8_e4m3 --m 1024 --shapes $S
    ;;
  h100-1)  # On an H100 (`run` with kind nvidia-h100-x1): `fused_sum` for INT8 / FP8 at M = 32,
      # where the Mosaic kernel alone is inside 1.8x XLA bf16 (88.5 / 88.3 us against 89.4 /
      # 89.5) and XLA's sum-and-transpose after it (3.6 / 3.7 us) misses it
      # (`kernels_time_split_h100.png`); the rest of the standing table session 22 began:
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
  *) echo "part must be 1, 2, 3, 4, 5, 6, 7, h100-1, h100-2 or h100-3" >&2; exit 2 ;;
esac
ls -R "$OUT"
