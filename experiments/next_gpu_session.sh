#!/usr/bin/env bash
# The runs the next GPU session owes, packed into calls of under 10 minutes each, most needed
# first: the paths written without a GPU and gated until one checks them (docs/kernels.md, "Next
# steps"), then the sweeps. On the GPU machine, from the repository root, one part a call:
#
#   OUT=... bash experiments/next_gpu_session.sh wb     # on an H100 (kind nvidia-h100-x1)
#   OUT=... bash experiments/next_gpu_session.sh 8      # on an H200 (or an H100)
#
# The issue's targets are the H100's; only H100s came in sessions 27-45 (none in 38, 44, 46): `wb`
# first where one is lent (session 46's `weights_bf16`, INT4 / UINT4 rounded to bf16 before the
# MMA, gated until checked, against today's decode at M = 64), then `h100`
# (4096 x 4096, where session 45 moved INT4 g128 at M <= 32 to 64-row tiles
# with XLA's sum on one run each: MXFP4 / NVFP4 the same, INT4 g128 again, M = 64, the new default's
# load floor), then `h100b` (14336 x 4096, the down projections' shape, never swept: the few-tile
# configs at 3.5x the K; 11008 x 4096's split configs on stream-K), then `h100c` (the 4096 x 14336
# rows session 45 cut off, INT4 g32's 64-row launch at 4096 x 4096, the prefill rows still under
# 0.9x XLA bf16: UINT4 g128 / NF4 g64 at 4096 x 14336, 0.75x / 0.78x in sessions 1-5, INT8 at 4096 x
# 4096, 0.89x before its channel scales), then `h100d` (the H100's wgmma ceiling, which the
# standing table's MMA floor lacks there; INT4 g32 / g64 M = 32 / 64 at 4096 x 14336; the
# defaults at 4096 x 6144 and 5120 x 13824, never timed). On an H200: 8 (the few-tile config at
# 4096 x 4096 against the H200's default), 7 (sessions 36-37's defaults: NVFP4's row pass
# sweeping x from its end, its column state once a block, the E4M3 rows in bands, MXFP4's new
# storage against the H200's fp8_x),
# then q (the E4M3 codes by the cast alone, `cast_nan`, the block amax from bf16 pair words,
# `pair_amax`, and the E2M1 codes two an operation, `pair_e2m1`, the defaults since sessions 32-35
# from the H100's checks, re-checked there), then 2: the decode with its codes read by plain loads
# (a `code_order.thread_major` weight, `{"w_threads": true}`, a step ahead by default), correct on
# the H100 for seven formats (sessions 27-28) and level there with the TMA decode (INT4 g128 M = 1
# 50.3 -> 50.7 us, session 28): on the H200 the TMA pipeline itself is the gap (34.0 us at best
# against 27.9 by plain loads; the decode takes 38.3, 3.2x asks 34.3); and the column-wise INT4
# quantize with and without its NaN test (`int4_nan_test`; on the H100 the test is worth 11%,
# session 29). Then 3 (the 8-bit decode's x split by one kernel against XLA's where fp8_x is the
# default, INT8 / INT4 by plain loads at M = 16 / 64), 4 (the plain loads' launch sweep and SASS on
# the H200), 5 (FP8 by plain loads, the split at M = 4, INT8's prefill with and without the bf16
# cast) and 6 (one CTA a tile writing y itself, the H100's default for INT4 at M <= 16 and the 8-bit
# formats at M <= 32 where N >= 14336 since sessions 29-30), all on the H200. Session 44's `h100`,
# `h100b`, `h100c` and `h100d` parts ran in session 45 (`h100b`'s three runs and `h100c`'s first two
# each cut off in their last row: the limits there short of the 15-25 s a config compiles at 4096 x
# 14336); 42's `h100d` part ran in session 43 (cut off in MXFP4's rows) with the start of its `h100`
# (UINT4, then INT8 M = 64 alone); 41's `h100` part ran in session 42 (cut off in its last row,
# finished in a second call) with part of its `h100c` (INT4's one-slot launch at 4096 x 4096 M = 1 /
# 16, 46% slower: dropped, as the fused sum there, which lost in session 31); 40's `h100`, `h100c`
# and `h100d` parts in 41, 39's `h100` and `h100b` in 40, 36's `h100` in 37, 35's in 36, 34's in 35,
# 33's and `q` (on an H100) in session 34; 1 ran in session 16 (rerun only to re-check).
# docs/kernels_sessions.md has each session's runs.
#
# Walls, to size the limits (sessions 22-26): a one-config row at 8192 x 28672 takes ~25 s at
# M = 1 and 40-50 s at M >= 16; each further config 3-27 s (INT8 22-27, MXFP4 8-23, FP8 2-4);
# a prefill row 12-25 s; each run's header (copy bandwidth, GEMM rate) ~10 s; an empty-body
# launch of bench_tma_stream.py ~6.5 s; three SASS profiles ~100 s (XLA's bf16 GEMV profiled
# alone did not finish in 110 s on the H100 or 170 s on the H200: dropped). Session 45 (H100):
# a two-config row at 4096 x 4096 ~45 s, five configs 70-100 s; at 4096 x 14336 two configs
# 60-70 s, three 65-80; a prefill row ~20 s, ~11 s after the first.
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
# the checks allow (the `*VERIFIED` sets: decode_plan.VERIFIED, PLAIN_LOADS_VERIFIED, ...), set
# the defaults in pallas_kernels/wo_matmul/configs.py, run bench_kernels_report.py, and rewrite
# this file with what is still owed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.:experiments PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder the results go to}"
part="${1:?which part: q, 1, 2, 3, 4, 5, 6, 7, 8, h100, h100b, h100c, h100d or wb}"
B="python3 experiments/bench_kernels.py"
S=8192x28672
ALL_SCHEMES=mxfp8_e4m3,fp8_e4m3_block128,mxfp4,nvfp4,int4_g128  # the fused quantize schemes

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
  2)  # On the H200 (on an H100, whose rows session 28 took, only to re-check): the plain loads
      # against the default (TMA) decode, a step ahead (the default) and not, and with more
      # CTAs an SM or chunks a step where shared memory no longer holds the weight (the
      # plain-load read's best launch was 256 CTAs)
    pl='{"w_threads": true}'
    run 170 a $B --what wo --formats int4 --m 1 --shapes $S \
      --configs "[{}, $pl, {\"w_threads\": true, \"prefetch_codes\": false},
                  {\"w_threads\": true, \"stream_k\": 4}, {\"w_threads\": true, \"gps\": 2}]"
    # the column-wise INT4 quantize with its NaN test (the default since session 28) and
    # without (session 26's element path): 86.5 -> 96.2 us on the H100 across sessions
    run 60 b $B --what quant --transpose --schemes int4_g128 --qshapes 8192x8192 \
      --configs '[{}, {"int4_nan_test": false}]'
    # the other int4-stored formats at M = 1, the ones bound by their stream (INT4 g32 2.49x,
    # MXFP4 2.36x, NVFP4 2.24x, UINT4 2.55x on the H200 against the 3.2x target)
    run 170 c $B --what wo --formats int4_g32,mxfp4,nvfp4,uint4 --m 1 --shapes $S \
      --configs "[{}, $pl]"
    run 130 d $B --what wo --formats int4,mxfp4 --m 1 --shapes 4096x14336 --configs "[{}, $pl]"
    ;;
  3)  # On the H200: the 8-bit decode's x split by one kernel (`split_kernel`, x_split.py,
      # session 27: correct on the H100 and the default with fp8_x since, INT8 M = 1 86.0 ->
      # 84.4 us there) against XLA's split (5.9 us of INT8 M = 1's 62.1 on the H200, where the
      # Mosaic kernel alone takes 56.2 against the 60.9 that 1.8x asks); INT8 and INT4 by plain
      # loads at M = 16 / 64
    pl='[{}, {"w_threads": true}]'
    run 120 a $B --what wo --formats int8,fp8_e4m3 --m 1 --shapes $S \
      --configs '[{}, {"fp8_x": true, "split_kernel": false}, {"fp8_x": false}]'
    run 180 b $B --what wo --formats int8 --m 1,16 --shapes $S --configs "$pl"
    run 180 c $B --what wo --formats int4 --m 16,64 --shapes $S --configs "$pl"
    # MXFP4's split by the same kernel after XLA's permutation of x (unchecked; fp8_x is the
    # H200's MXFP4 default at M <= 4: 47.3 us at M = 1, 2.36x)
    run 90 d $B --what wo --formats mxfp4 --m 1 --shapes $S \
      --configs '[{}, {"fp8_x": true}, {"fp8_x": true, "split_kernel": true}]'
    ;;
  4)  # On the H200, after part 2: the plain loads' launch (tile rows, chunks a step, CTAs an SM)
      # and both decodes by SASS opcode and stall (on the H100, session 28: two chunks a step on
      # three CTAs an SM the best, 50.1 us; the plain decode's stall samples 34% on the IMAD
      # that waits for its loads)
    run 250 a $B --what wo --formats int4 --m 1 --shapes $S --configs '[
      {"w_threads": true}, {"w_threads": true, "tile_n": 64},
      {"w_threads": true, "gps": 2, "stream_k": 3}, {"w_threads": true, "stream_k": 3},
      {"w_threads": true, "tile_n": 64, "gps": 2}]'
    run 160 c python3 experiments/profile_kernels.py --case wo_int4_m1,wo_int4_m1_plain --sass
    # the codes two steps ahead (`prefetch_codes: 2`: correct on the H100 and slower there,
    # INT4 g128 M = 1 51.4 us against 49.9, session 29)
    run 140 d $B --what wo --formats int4 --m 1 --shapes $S --configs '[
      {"w_threads": true}, {"w_threads": true, "prefetch_codes": 2},
      {"w_threads": true, "gps": 2, "prefetch_codes": 2}]'
    ;;
  5)  # On the H200: FP8 by plain loads (correct on the H100, session 28: M = 1 82.9 -> 81.2 us,
      # M = 16 84.0 -> 91.6) with fp8_x off, and the split kernels at M = 4 (`fp8_x` is the
      # H200's default there for INT8 and FP8)
    run 140 a $B --what wo --formats fp8_e4m3 --m 1,16 --shapes $S \
      --configs '[{"fp8_x": false}, {"w_threads": true}]'
    run 120 c $B --what wo --formats int8,fp8_e4m3 --m 4 --shapes $S \
      --configs '[{}, {"fp8_x": true, "split_kernel": false}]'
    # INT8's prefill with its codes to f32 through the bf16 cast (`int8_bf16`, the default since
    # session 32: H100 814.4 -> 793.1 us) and without (H200 session 24: 753.0 us, 0.85x)
    run 120 d $B --what wo --formats int8 --m 1024 --shapes $S \
      --configs '[{}, {"int8_bf16": false}]'
    ;;
  6)  # On the H200: one CTA a 128-row tile writing its tile of y itself (`splits=1` with
      # `fused_sum`), the H100's default at M <= 16 for INT4 g128 / g32 (M <= 8) and at M <= 32
      # for INT8 and FP8 since sessions 29-30 (INT4 M = 1 50.3 -> 47.5-48.3 us, INT8 M = 16 87.5
      # -> 84.3, M = 32 87.3 -> 85.6, FP8 M = 1 82.3 -> 79.7 there: `configs.ONE_SLOT_DEVICES`),
      # against the H200's defaults (stream-K with XLA's sum; fp8_x for INT8 at M <= 4 and FP8 at
      # M <= 8); FP8 at M = 16 on one compute warpgroup and at M = 32 on two, as on the H100
    one='"splits": 1, "fused_sum": true'
    run 200 a $B --what wo --formats int4,int4_g32 --m 1,16 --shapes $S --configs "[{}, {$one}]"
    run 200 b $B --what wo --formats int8,fp8_e4m3 --m 1,16 --shapes $S --configs "[{},
      {$one, \"tile_n\": 128, \"gps\": 2, \"steps\": 3, \"step_wait\": true,
       \"compute_wgs\": 1, \"fp8_x\": false}]"
    run 150 c $B --what wo --formats int8,fp8_e4m3 --m 32 --shapes $S --configs "[{}, {$one}]"
    ;;
  q)  # On an H200 (a few minutes): the E4M3 quantize codes by the cast alone (`cast_nan`,
      # session 32), the row kernel's block amax from bf16 pair words (`pair_amax`, session 33)
      # and the E2M1 codes two elements an operation (`pair_e2m1`: MXFP4 rows session 34, MXFP4
      # columns and NVFP4 session 35), the defaults since their H100 checks (FP8 1x128 rows 89.4
      # -> 76.6 us, MXFP4 73.4 -> 70.4 -> 64.4, MXFP4 columns 90.5 -> 78.2 there), re-checked
      # bit for bit where they have not run, against each off: rows and columns at both shapes,
      # f32 rows
    qc='[{}, {"cast_nan": false}, {"pair_amax": false}]'
    e4m3=mxfp8_e4m3,fp8_e4m3_block128
    run 150 a $B --what quant --schemes $ALL_SCHEMES --qshapes 8192x8192,4096x14336 \
      --configs '[{}, {"cast_nan": false}, {"pair_amax": false}, {"pair_e2m1": false}]'
    run 120 b $B --what quant --transpose --schemes $e4m3 --qshapes 8192x8192,4096x14336 \
      --configs "$qc"
    run 90 c $B --what quant --f32 --schemes $e4m3 --qshapes 8192x8192 \
      --configs '[{}, {"cast_nan": false}]'
    run 90 d $B --what quant --transpose --schemes mxfp4,nvfp4 --qshapes 8192x8192,4096x14336 \
      --configs '[{}, {"pair_e2m1": false}]'
    ;;
  wb)  # On an H100, ~9.5 minutes, first where one is lent: INT4 / UINT4 rounded to bf16 before
      # the MMA (`weights_bf16`, session 46, written without a GPU: RN_bf16(q * s - offset), one
      # wgmma a chunk chained, the prefill GEMM's numerics) against today's group-scaled decode
      # (a wgmma and an f32 scale-and-add a group, UINT4's offset * x-sum term) where the MMA
      # side bounds it, M = 32 / 64 (INT4 g32 M = 64 1.70x XLA bf16 against 2.2x, UINT4 g64
      # 1.60x, g128 1.83x; INT4 g128 M = 64 1.95x at 4096 x 14336; with a scheme's bf16 scales
      # one bf16 multiply a pair); rel. err against the exact decode's
    wb='[{}, {"weights_bf16": true}]'
    run 160 a $B --what wo --formats int4_g32,uint4_g64 --m 64 --shapes $S --configs "$wb"
    run 150 b $B --what wo --formats int4,uint4 --m 64 --shapes $S --configs "$wb"
    run 120 c $B --what wo --formats int4,int4_g32,uint4 --m 64 --shapes 4096x14336 \
      --configs "$wb"
    run 110 d $B --what wo --formats int4_g32-bf16,int4_g64 --m 64 --shapes $S --configs "$wb"
    ;;
  h100)  # On an H100 (`run` with kind nvidia-h100-x1), ~9 minutes: 4096 x 4096, where session
      # 45 moved INT4 g128 at M <= 32 to M = 16's launch (64-row tiles, stream-K over two CTAs
      # an SM, one compute warpgroup) with XLA's sum (M = 1 7.4 -> 6.9 us, M = 32 9.1 -> 8.2;
      # one run each): the same launch for MXFP4 / NVFP4 at M = 1 / 32 against their defaults;
      # INT4 g128 again against the 128-row tiles before; at M = 64 (unmeasured); and the
      # pipeline with an empty body (`--load-split`) at the new default, and MXFP4's (cut off)
    q64='"tile_n": 64, "gps": 2, "steps": 4, "compute_wgs": 1, "stream_k": 2, "fused_sum": false'
    run 200 a $B --what wo --formats mxfp4,nvfp4 --m 1,32 --shapes 4096x4096 \
      --configs "[{}, {$q64}]"
    run 110 b $B --what wo --formats int4 --m 1,32 --shapes 4096x4096 \
      --configs '[{}, {"tile_n": 128}]'
    run 70 c $B --what wo --formats int4 --m 64 --shapes 4096x4096 --configs "[{}, {$q64}]"
    run 150 d $B --what wo --formats int4,mxfp4 --m 1,32 --shapes 4096x4096 --load-split
    ;;
  h100b)  # On an H100, ~9.5 minutes: the down projections' shape (K > N: 14336 x 4096, LLaMA-3
      # 8B's MLP down), never swept, where N = 4096 now takes the few-tile configs (XLA's sum;
      # INT4 g128 at M <= 32 in 64-row tiles, session 45) with 3.5x the K of 4096 x 4096:
      # each against the other and the 128-row wide config with XLA's sum
    q64='"tile_n": 64, "gps": 2, "steps": 4, "compute_wgs": 1, "stream_k": 2, "fused_sum": false'
    w128='"tile_n": 128, "gps": 2, "steps": 3, "compute_wgs": 2, "stream_k": 1, "fused_sum": false'
    run 320 a $B --what wo --formats int4,mxfp4 --m 32,64 --shapes 14336x4096 \
      --configs "[{}, {$q64}, {$w128}]"
    run 160 b $B --what wo --formats int4,mxfp4 --m 1 --shapes 14336x4096 \
      --configs '[{}, {"tile_n": 128}, {"tile_n": 64}]'
    # LLaMA-7B's down projection (43 K steps of 256, no power-of-two split): UINT4 / FP8's split
    # configs on stream-K two CTAs an SM since session 45 (unmeasured) against one CTA a tile
    run 90 c $B --what wo --formats uint4,fp8_e4m3 --m 1 --shapes 11008x4096 \
      --configs '[{}, {"splits": 1}]'
    ;;
  h100c)  # On an H100, ~8 minutes: the 4096 x 14336 rows session 45 cut off, NVFP4 M = 32 / 64
      # and NF4 g64 M = 32, in 128-row tiles since (unmeasured for NVFP4) against 256; INT4 g32
      # at 4096 x 4096 M = 1 / 32 in INT4 g128's 64-row launch; and the prefill GEMM's rows
      # under 0.9x XLA bf16 at their defaults: UINT4 g128 and NF4 g64 at 4096 x 14336 (0.75x /
      # 0.78x, last timed in sessions 1-5), INT8 at 4096 x 4096 (0.89x, before its channel
      # scales on the sum, `channel_scale_out`)
    run 150 a $B --what wo --formats nvfp4 --m 32,64 --shapes 4096x14336 \
      --configs '[{}, {"tile_n": 256}]'
    run 80 b $B --what wo --formats nf4_g64 --m 32 --shapes 4096x14336 \
      --configs '[{}, {"tile_n": 256}]'
    q64='"tile_n": 64, "gps": 2, "steps": 4, "compute_wgs": 1, "stream_k": 2, "fused_sum": false'
    run 110 c $B --what wo --formats int4_g32 --m 1,32 --shapes 4096x4096 \
      --configs "[{}, {$q64}]"
    run 130 d $B --what wo --formats uint4,nf4_g64,int8 --m 1024 --shapes 4096x14336,4096x4096
    ;;
  h100d)  # On an H100, ~7 minutes: the decode's MMA ceiling there (bench_wgmma_rate.py, run on
      # the H200 only, session 16: the standing table's MMA floor is "-" for every H100 row); the
      # 4096 x 14336 rows at M = 32 / 64 whose best H100 time predates today's defaults (INT4 g64
      # M = 64 48.8 us, 0.98x XLA bf16, from session 5's wide config; 128-row tiles since session
      # 41); and the rule-based defaults between N = 4096 and 14336 at two shapes never timed,
      # LLaMA-3 8B's fused QKV projection (4096 x 6144: 48 tiles, stream-K) and LLaMA-2 13B's MLP
      # (5120 x 13824: 108 tiles, one short of ONE_SLOT_MIN_N)
    run 90 a python3 experiments/bench_wgmma_rate.py
    run 110 b $B --what wo --formats int4_g64,int4_g32 --m 32,64 --shapes 4096x14336
    run 170 c $B --what wo --formats int4,mxfp4,int8 --m 1,32 --shapes 4096x6144
    run 170 d $B --what wo --formats int4,nvfp4 --m 1,64 --shapes 5120x13824
    ;;
  8)  # On the H200, ~5 minutes: 4096 x 4096 at M = 32 / 64, the H100's few-tile config since
      # session 42 (128-row tiles, XLA adding the stream-K partial sums; INT4 g128 M = 64 23.8 ->
      # 11.3 us there) against the H200's default (256-row tiles, the fused sum)
    few='[{}, {"tile_n": 128, "gps": 2, "steps": 3, "compute_wgs": 2, "stream_k": 1,
           "fused_sum": false}]'
    run 270 a $B --what wo --formats int4,mxfp4,nvfp4 --m 32,64 --shapes 4096x4096 \
      --configs "$few"
    ;;
  7)  # On the H200, ~6 minutes: sessions 36-37's H100 defaults re-checked there: NVFP4's row block
      # pass sweeping x from its end after the amax pass (`tile_order`; H100 130.3 -> 128.4 us),
      # its column kernel's state once a block (`state_once`; H100 165.3 -> 158.4), the E4M3 row
      # schemes in bands (H100 MXFP8 73.5 -> 71.7), each against off; and MXFP4's folded
      # multipliers in the halves order (H100 M = 1 59.5 -> 57.5, the default there) against the
      # H200's default, the byte-pair order on FP8 tensor cores (`fp8_x`) at M <= 4, which reads
      # neither (`scales.e2m1_decode_on_bf16`), and the H100's default since session 40 (scale
      # bytes each their multiplier, halves order): whether the H200 should store MXFP4 so too
    run 90 a $B --what quant --schemes nvfp4 --qshapes 8192x8192,4096x14336 \
      --configs '[{}, {"tile_order": "slabs"}]'
    run 90 b $B --what quant --transpose --schemes nvfp4 --qshapes 8192x8192,4096x14336 \
      --configs '[{}, {"state_once": false}]'
    run 60 c $B --what quant --schemes mxfp8_e4m3,fp8_e4m3_block128 --qshapes 8192x8192 \
      --configs '[{}, {"tile_order": "slabs"}]'
    run 190 d $B --what wo --formats mxfp4 --m 1,4,16 --shapes $S \
      --configs '[{}, {"mx_fold": true, "halves": true}, {"byte_multipliers": true, "halves": true}]'
    ;;
  *) echo "part must be q, 1, 2, 3, 4, 5, 6, 7, 8, h100, h100b, h100c, h100d or wb" >&2; exit 2 ;;
esac
ls -R "$OUT"
