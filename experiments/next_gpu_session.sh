#!/usr/bin/env bash
# The runs the next GPU session owes, packed into calls of under 10 minutes each, most needed
# first: the paths written without a GPU and gated until one checks them (docs/kernels.md, "Next
# steps"), then the sweeps. On the GPU machine, from the repository root, one part a call:
#
#   OUT=... bash experiments/next_gpu_session.sh 2        # on an H200 (kind nvidia-h200)
#   OUT=... bash experiments/next_gpu_session.sh h100-1   # on an H100 (kind nvidia-h100-x1)
#
# Part 2 first on an H200: the fused pair sum on 8-bit tensor cores timed where `fp8_x` is the
# default (verified on the H100 in session 25, slower there, where fp8_x is off), MXFP4's
# checked, the plain-load read of INT4's codes with its trip count read at run time (session
# 25's H100 run read 3.04 TB/s), XLA's bf16 GEMV profiled as the kernel it is (cut off at 110 s
# on the H100). Then 3, 4, 5 on an H200, and h100-1, h100-2 wherever an H100 is lent (issue 8
# sets its targets on one). 1 ran in session 16 (rerun only to re-check);
# docs/kernels_sessions.md has each session's runs.
#
# Walls, to size the limits (sessions 22-25): a one-config row at 8192 x 28672 takes ~25 s at
# M = 1 and 40-50 s at M >= 16; each further config 3-27 s (INT8 22-27, MXFP4 8-23, FP8 2-4);
# a prefill row 12-25 s; each run's header (copy bandwidth, GEMM rate) ~10 s; an empty-body
# launch of bench_tma_stream.py ~6.5 s; an ncu profile of two cases 100-160 s (XLA's GEMV
# alone more than 110 s on the H100), three SASS profiles ~100 s.
#
# Each benchmark writes its JSON and table into its own folder under $OUT (a .. d, two files
# each: the device tool brings back at most 8) and is cut off by `timeout` so that one slow run
# cannot cost the rest of the call; after a cut-off the next run waits for the GPU to be free
# (session 25: a profile's children, cut off, still held it, and the next run found no device).
# A run cut off keeps the rows it finished (the JSON is rewritten after each) and the row it was
# in under "in_progress" (its baselines and each config finished); a wo row times all of its
# configs before it is written, each compiled and checked first: give such a run room.
# Afterwards: copy the JSON into experiments/results/ under the session's names, read each
# config against its row's first with experiments/bench_configs_table.py, open the gates
# the checks allow (the `*VERIFIED` sets: decode_plan.VERIFIED, mosaic_gpu_gemm's
# MULTIPLIERS_VERIFIED, ...), set the defaults in pallas_kernels/wo_matmul/configs.py, run
# bench_kernels_report.py, and rewrite this file with what is still owed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.:experiments PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder the results go to}"
part="${1:?which part: 1, 2, 3, 4, 5, h100-1 or h100-2}"
B="python3 experiments/bench_kernels.py"
S=8192x28672

# The decode launch configs swept with groups of 32 / 64 at M = 32 / 64 (docs/kernels.md; four
# compute warpgroups are refused since session 25: `decode_plan.register_split`)
sweep='[{}, {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 2, "stream_k": 1},
        {"tile_n": 128, "gps": 1, "steps": 6, "compute_wgs": 2, "stream_k": 1},
        {"tile_n": 128, "gps": 2, "steps": 3, "compute_wgs": 2, "stream_k": 1}]'

gpu_free() {  # up to 30 s until no process holds the GPU (none: at once)
  for _ in $(seq 30); do
    [ -z "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null)" ] && return
    sleep 1
  done
}

run() {  # run LIMIT_S DIR ARGS...: one benchmark into $OUT/DIR
  local limit=$1 dir=$OUT/$2
  shift 2
  mkdir -p "$dir"
  echo "== $(date -u +%H:%M:%S) $* (limit ${limit}s)"
  timeout "$limit" "$@" --out "$dir" || { echo "== exit $? (124: cut off at ${limit}s)"; gpu_free; }
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
  2)  # On an H200: the fused pair sum with `fp8_x` (INT8 / FP8 verified on the H100 in session
      # 25: the Mosaic kernel 2.1-2.6 us faster, the XLA kernel after it gone; fp8_x is the
      # H200's default at INT8 M <= 4 and FP8 M <= 8, where INT8 M = 1 took 62.4 us: kernel 56.2
      # + XLA 5.9, and 1.8x XLA bf16 needs 60.9); INT8 M = 8 with the fused sum (the bf16 path)
    run 170 a $B --what wo --formats int8,fp8_e4m3 --m 1,8 --shapes $S \
      --configs '[{}, {"fused_sum": true}]'
    # MXFP4 g32's pair (fp8_x its default at M <= 4 on the H200; named, since fused_sum alone
    # leaves an unchecked pair for the bf16 path): unchecked, the benchmark
    # checks it against the reference before it times it
    run 80 b $B --what wo --formats mxfp4 --m 1 --shapes $S \
      --configs '[{}, {"fused_sum": true, "fp8_x": true}]'
    # INT4 g128 M = 1's codes by plain loads, the trip count read at run time (session 25's
    # H100: 3.04 TB/s, above XLA's read of the same bytes at 2.89; on the H200 XLA read 4.00
    # and the decode's TMA pipeline 3.60 at best, session 24)
    run 100 c python3 experiments/bench_tma_stream.py --ld-only --limit-s 60
    # XLA's bf16 GEMV at M = 1 (104.7 us, 4.48 TB/s on the H200) as the kernel it is (the
    # longest of its call's launches); cut off at 110 s on the H100 in session 25
    run 170 d python3 experiments/profile_kernels.py --case xla_bf16_m1
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
  4)  # On an H200: INT4 g32's M = 64 group-slice sweep (session 21 reached g128's only; on the
      # H100 the default, 90.2 us, was the fastest of four, session 25); the row-wise quantize
      # launch on today's kernels (the defaults are session 6's H200 sweep; on the H100 MXFP8
      # took 75.5 us at 2 steps and 3 CTAs an SM against the default's 81.2, session 25); the
      # E4M3 codes by the saturating cast alone (`satfinite`, written in session 25, gated: the
      # clip's float min / max were 10% of FP8 1x128's instructions), rows and columns, each
      # config bit for bit on the four tensors; INT4's element path without its NaN test
      # (session 25, ungated: bit-exact on the CPU) is checked and timed in the sweep (66.8 us
      # on the H100 before it)
    run 200 a $B --what wo --formats int4_g32 --m 64 --shapes $S --configs "$sweep"
    run 120 b $B --what quant --sweep --qshapes 8192x8192 \
      --schemes mxfp8_e4m3,int4_g128,mxfp4,fp8_e4m3_block128
    run 100 c $B --what quant --qshapes 8192x8192 --schemes mxfp8_e4m3,fp8_e4m3_block128 \
      --configs '[{}, {"satfinite": true, "allow_unverified": true}]'
    run 100 d $B --what quant --transpose --qshapes 8192x8192 \
      --schemes mxfp8_e4m3,fp8_e4m3_block128 \
      --configs '[{}, {"satfinite": true, "allow_unverified": true}]'
    ;;
  5)  # On an H200, the defaults extended past what it measured: INT4's stream-K below N = 16384
      # for groups of 32 (H100 session 25: M = 1 22.1 -> 19.9 us in 64-row tiles, the default
      # since) and 64 (no gain there); UINT4 g32's stream-K at M <= 8 (M = 1 57.6 -> 53.7) at
      # M = 8, against its old narrow launch; FP8's `fp8_x` threshold; NVFP4's fused sum at
      # M = 64 (H100: 79.0 -> 76.0 us)
    run 250 a $B --what wo --formats int4_g32,int4_g64 --m 1,16 --shapes 4096x14336 \
      --configs '[{}, {"tile_n": 128, "gps": 2, "steps": 4, "stream_k": 2},
                  {"tile_n": 64, "gps": 2, "steps": 4, "stream_k": 2}]'
    run 100 b $B --what wo --formats uint4_g32 --m 8 --shapes $S \
      --configs '[{}, {"tile_n": 128, "gps": 2, "steps": 3, "step_wait": true}]'
    # FP8's own `fp8_x` threshold (session 24: 4096 x 14336 gained, 22.8 -> 20.2 us): on at
    # 14336 x 4096 by it (the same size, N short: unmeasured on the H200; lost on the H100,
    # where fp8_x is off), off at 4096 x 4096
    run 90 c $B --what wo --formats fp8_e4m3 --m 1 --shapes 14336x4096,4096x4096 \
      --configs '[{"fp8_x": false}, {"fp8_x": true}]'
    # NVFP4 M = 64 with the fused sum, its default above M = 16 since session 24 (M = 32 59.8
    # -> 58.8 us, MXFP4 M = 64 74.6 -> 73.6), cut off there in session 24
    run 100 d $B --what wo --formats nvfp4 --m 64 --shapes $S --configs '[{}, {"fused_sum": false}]'
    ;;
  h100-1)  # On an H100 (`run` with kind nvidia-h100-x1): the standing table's M = 16 rows still
      # owed (INT4 g128, INT8, NVFP4), FP8 M = 16 with the fused sum (its default above M = 16
      # since session 25: M = 32 92.5 -> 89.4 us; M = 9-16 unmeasured), INT8 M = 64 with and
      # without it (the default above M = 32 from the H200, never timed on an H100), INT4 g128
      # M = 1 with it (51.7 us, 1.8 of them XLA's sum after the kernel; 3.2x needs 49.4; it lost
      # on the H200 at M = 1, 38.5 -> 39.4)
    run 160 a $B --what wo --formats int4,int8,nvfp4 --m 16 --shapes $S
    run 90 b $B --what wo --formats fp8_e4m3 --m 16 --shapes $S \
      --configs '[{}, {"fused_sum": true}]'
    run 100 c $B --what wo --formats int8 --m 64 --shapes $S --configs '[{}, {"fused_sum": false}]'
    run 90 d $B --what wo --formats int4 --m 1 --shapes $S --configs '[{}, {"fused_sum": true}]'
    ;;
  h100-2)  # On an H100: the decode pipeline's empty-body stream (never run on an H100) beside
      # the plain-load read: INT4 g128 M = 1 takes 51.7 us (3.05x XLA bf16, 95% of the 3.2x
      # target's 49.4), its codes read by plain loads in 38.7 us (session 25): is the TMA
      # pipeline the gap, as on the H200 (34.0 us at best against XLA's read in 31.2)? Then the
      # E4M3 codes by the saturating cast alone (`satfinite`, part 4 on an H200), rows, columns
    run 300 a python3 experiments/bench_tma_stream.py --limit-s 250
    run 100 b $B --what quant --qshapes 8192x8192 --schemes mxfp8_e4m3,fp8_e4m3_block128 \
      --configs '[{}, {"satfinite": true, "allow_unverified": true}]'
    run 100 c $B --what quant --transpose --qshapes 8192x8192 \
      --schemes mxfp8_e4m3,fp8_e4m3_block128 \
      --configs '[{}, {"satfinite": true, "allow_unverified": true}]'
    ;;
  *) echo "part must be 1, 2, 3, 4, 5, h100-1 or h100-2" >&2; exit 2 ;;
esac
ls -R "$OUT"
