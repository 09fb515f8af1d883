"""The kernel benchmark report's sections for sessions 22-33 (the H100 back beside the H200), one
function a session, as in `bench_kernels_sessions.py`: each reads its session's result files
and returns its markdown. Sessions 34 on are in `bench_kernels_sessions_since34.py`.
"""

from __future__ import annotations

from bench_kernels_report import _load
from bench_kernels_report import quant_part
from bench_kernels_report import wo_section


def h100_s22_section() -> list[str]:
  """Session 22: four H100 calls, the first H100 since session 5: the standing table of the
  defaults, and the gated paths and H200-tuned defaults checked on the device the issue's
  targets were set on."""
  quant = [("s22 row-wise", _load("kernels_quant_s22_h100_rows.json")),
           ("s22 column-wise", _load("kernels_quant_s22_h100_columns.json"))]
  md = wo_section(22, (
      "h100_standing", "h100_fp4", "h100_nvfp4_m32", "h100_groups", "h100_int8_s8",
      "h100_fp8_x_m1", "h100_fp8_x_m8", "h100_fused_sum_m32", "h100_fused_sum_m64",
      "h100_tensor_scale_out", "h100_prefill"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first); rows cut off by the "
      "call's limit are not in this table. The defaults tuned on the H200 since session 6, on "
      "the H100 (copy 3.03 TB/s, XLA bf16 GEMV 158 us at M = 1 against the H200's 110): INT4 "
      "M = 1 51.8 us (3.05x XLA bf16, target 3.2x), INT8 87.2 (1.81x, met), FP8 with the bf16 "
      "path 85.2 (1.85x, met). `fp8_x` loses on the H100 (FP8 M = 1 85.2 -> 87.3 us, M = 8 85.7 "
      "-> 88.5; MXFP4 59.0 -> 61.6, 59.0 -> 65.8), where the bf16 path already streams FP8 at "
      "91% of the copy bandwidth: its default since is the H200's only "
      "(`configs.FP8_X_DEVICES`). INT8 on s8 tensor cores correct (rel. err 1.65e-3), 87.2 -> "
      "87.7 us. `fused_sum` INT4 g128 M = 32 60.4 -> 58.5, M = 64 71.9 -> 68.7 (the default "
      "above M = 16 since). NVFP4's prefill with s_t on the sum (`tensor_scale_out`) 750.1 -> "
      "676.6 us, 0.99x XLA bf16 (target 0.9x; the default since).", device="H100",
      quant_runs=quant)
  return md + quant_part(
      " (H100)",
      "The defaults tuned on the H200, bit-exact on the four tensors; the H100's copy "
      "bandwidth (3.03 TB/s read + write) puts the 2.8 TB/s target at 92% of it.",
      quant)


def h200_s23_section() -> list[str]:
  """Session 23: four H200 calls: session 22's H100 findings re-checked on the H200 (INT8 on s8
  tensor cores, `fp8_x` at M = 8, `fused_sum` at M = 32, NVFP4's `tensor_scale_out`), the
  decode's empty-body stream, launch sweeps, the issue's smaller shapes."""
  md = wo_section(23, (
      "int8_s8", "fp8_x_m8", "fused_sum_m32", "tensor_scale_out", "int8_m16",
      "uint4_zero_points_m16", "4096x14336", "4096x4096"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first); rows cut off by the "
      "call's limit keep their configs under `in_progress` and are not in this table. INT8 on "
      "s8 tensor cores (`fp8_x`) M = 1 64.8 -> 62.5 us, in FP8's 128-row tiles with three steps "
      "62.1 (1.76x XLA bf16, target 1.8x); M = 4 66.7 -> 65.4 -> 64.6: the H200's default at "
      "M <= 4 since. `fp8_x` at M = 8: FP8 69.4 -> 65.8 (kept), MXFP4 47.7 -> 49.9 (its default "
      "at M = 1 only since). `fused_sum` INT4 g128 M = 32 51.7 -> 51.2 (the default). NVFP4's "
      "prefill with s_t on the sum (`tensor_scale_out`) 743.7 -> 663.4 us, 0.97x XLA bf16 "
      "(target 0.9x met). INT8 M = 16 with two compute warpgroups 67.2 -> 66.5 (kept); UINT4 "
      "zero-point bytes at M = 16 slower (55.2 -> 56.6, g64 51.6 -> 53.0). The smaller shapes "
      "at M = 1 with today's defaults: 4096 x 14336 INT4 15.5 us (2.72x), NVFP4 16.6 (2.52x), "
      "MXFP4 17.5 (2.43x), INT8 20.2 (2.10x), NF4 g64 20.5 (2.05x). Launch sweeps cut off "
      "(kernels_wo_s23_int4_m32_sweep.json, _uint4_g64_m64_sweep, _int4_m64): each default "
      "the fastest of the configs reached. The decode pipeline with an empty body "
      "(`tma_stream_s23.md`, 25 launches before its limit): 34.0-39.8 us, at best 3.67 TB/s, "
      "82% of XLA's bf16 GEMV's 4.49 TB/s read in the same run; the 3.2x target for INT4 M = 1 "
      "needs 32.7 us, under what the stream alone takes.")
  quant = [("s23 NVFP4 columns sweep", _load("kernels_quant_s23_nvfp4_columns_sweep.json")),
           ("s23 f32 in, launch", _load("kernels_quant_s23_f32_launch.json"))]
  return md + quant_part(
      ": NVFP4 columns and the f32 input's launch",
      "Each row its scheme's fastest config. NVFP4 column-wise over 14 launches "
      "(tile_k, blocks a step, steps): the default (128, 4, 2) the fastest at 159.6 us, "
      "1.08 TB/s. The f32-input quantize (steps, CTAs an SM): INT4 g128 143.3 us for "
      "the default and for 2 steps / 2 CTAs, NVFP4 189.7 for the default, 16-53% "
      "slower for the rest; every config bit-exact on the four tensors.",
      quant)


def h200_s24_section() -> list[str]:
  """Session 24: four H200 calls: the `fp8_x` thresholds between measured M and below the
  weight size, `fused_sum` for the 8-bit and FP4 formats at M = 32 / 64, UINT4's stream-K,
  the smaller shapes' launch, the 8-bit prefill, the rest of the empty-body stream sweep."""
  return wo_section(24, (
      "mxfp4_fp8_x_m2_4", "int8_m1_8", "fp8_x_4096x14336", "fused_sum_8bit", "fused_sum_fp4",
      "uint4_stream_k", "int4_4096x14336_m1", "int4_4096x14336_m16", "4096x4096",
      "prefill_8bit"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first); rows cut off by the "
      "call's limit keep their configs under `in_progress` and are not in this table. `fp8_x` "
      "for MXFP4 at M = 2 / 4: 47.9 -> 46.9, 48.0 -> 46.4 us (the default at M <= 4 since); "
      "INT8 at M = 8 in 128-row tiles: 64.9 -> 69.9 (kept at M <= 4); INT8 M = 1 62.4 us with "
      "its multipliers built at the x operand's width (62.1 in session 23: the pad kernel gone, "
      "two others in its place). Below `FP8_X_MIN_WEIGHT`, at 4096 x 14336: MXFP4 16.3 -> "
      "17.2, INT8 20.1 -> 21.5 (bf16 path kept), FP8 22.8 -> 20.2 (its own threshold since). "
      "`fused_sum`: INT8 M = 32 68.7 -> 74.1, M = 64 84.8 -> 83.3 (the default above M = 32); "
      "FP8 66.8 -> 66.6, 82.5 -> 82.2 (kept off); MXFP4 58.7 -> 58.9, 74.6 -> 73.6; NVFP4 "
      "M = 32 59.8 -> 58.8 (the FP4 formats' default above M = 16). UINT4 g32 M = 1 stream-K "
      "57.6 -> 53.7 us (52.7 with zero-point bytes, a layout choice); UINT4 g128 42.9 "
      "(its default the fastest). INT4 g128 at 4096 x 14336: M = 1 15.3 -> 14.3 us (2.95x), "
      "M = 16 16.1 -> 15.3, stream-K. 4096 x 4096 M = 1: NF4 g64 8.4 us, NVFP4 7.7. Prefill "
      "M = 1024 on the H200: INT8 0.85x XLA bf16, FP8 0.92x. INT4 g128 M = 64 with four compute "
      "warpgroups cut off a third time, 186 s after the default's row "
      "(kernels_wo_s24_int4_m64_4wg.json; `probe_config.py` says in which phase next). The "
      "empty-body decode pipeline over the 26 launches session 23 did not reach "
      "(`tma_stream_s24.md`): 34.6-38.6 us, at best 3.60 TB/s, against XLA reading the same "
      "124.8 MB in 31.2 us (4.00 TB/s): plain loads reach the 3.2x target's 32.7 us, the TMA "
      "pipeline does not.")


def h100_s25_section() -> list[str]:
  """Session 25: seven H100 calls (an H200 was asked for; an H100 came): the gated fused pair
  sum on 8-bit tensor cores, where the four-warpgroup configs hang, the plain-load read, the
  H100's share of the standing table, launch sweeps, the quantize kernels by SASS opcode."""
  quant = [("s25 row-wise", _load("kernels_quant_s25_h100_rows.json")),
           ("s25 column-wise", _load("kernels_quant_s25_h100_columns.json"))]
  md = wo_section(25, (
      "h100_fused_sum_fp8_x", "h100_fused_sum_m32", "h100_int8_m1_4", "h100_groups_m16_m64",
      "h100_uint4_nf4", "h100_int4_g32_m64", "h100_nvfp4_m64", "h100_int4_m1_launch",
      "h100_load_split", "h100_4096x14336", "h100_groups_4096x14336", "h100_fp8_x_small",
      "h100_prefill_8192", "h100_prefill_small"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first). The fused pair sum on "
      "8-bit tensor cores (`fused_sum` with `fp8_x`, written in session 24) matches the "
      "reference as fp8_x with XLA's sum does (rel. err 1.64-1.67e-3): INT8 M = 1 / 8 86.7 -> "
      "86.9 / 87.8 -> 89.9 us against the bf16 path, FP8 84.9 -> 85.8 / 85.2 -> 87.6 (the "
      "Mosaic kernel 2.1-2.6 us faster, the x split's XLA kernels 3.5-5 us); verified, a "
      "default nowhere yet (fp8_x is the H200's only). `fused_sum` at M = 32: INT8 91.8 -> "
      "89.3 us, FP8 92.5 -> 89.4, both 1.80x XLA bf16 (target 1.8x, met; the default above "
      "M = 16 since, INT8's on the H100 only, where it lost on the H200). INT8 M = 4 in "
      "128-row tiles without stream-K 88.7 -> 86.6 (M = 1 86.9 -> 86.8; the H100's default at "
      "M <= 4). M = 16 / 64: INT4 g32 63.7 / 89.9 us (2.50x / 1.72x), g64 56.5 / 77.4 "
      "(2.82x / 1.99x), UINT4 g128 60.5 / 84.3 (2.63x / 1.83x), NF4 g64 59.4 / 81.4 (2.68x / "
      "1.89x); INT4 g32 M = 64's default the fastest of four launches (90.2 us); NVFP4 M = 64 "
      "with the fused sum 79.0 -> 76.0. INT4 g128 M = 1 51.7 us (3.05x), its default the "
      "fastest of four launches. 4096 x 14336 M = 1: INT4 17.2 us (2.74x), MXFP4 19.3, NVFP4 "
      "20.1; INT4 g32 22.1 -> 19.9 in 64-row stream-K tiles (the default since). FP8's fp8_x "
      "loses at 14336 x 4096 (27.0 -> 28.4) and 4096 x 4096 (9.8 -> 11.4). Prefill M = 1024: "
      "8192 x 28672 INT8 0.86x XLA bf16, UINT4 0.93x, INT4 g32 0.93x; 4096 x 14336 INT4 0.97x, "
      "MXFP4 1.05x, NVFP4 1.02x, INT8 0.90x. INT4 g128 M = 64 with four compute warpgroups "
      "(`probe_int4_m64_s25_h100.jsonl`): each config lowered in 4-6 s and compiled in 0.5, "
      "then never returned: the pipeline's register split asks 62464 registers of the 61440 a "
      "640-thread CTA holds (`decode_plan.register_split`; refused since). The codes read by "
      "plain loads (`tma_stream_s25_h100.md`): 38.7 us, 3.04 TB/s, against XLA's read of codes "
      "and scales at 2.89 TB/s and the whole default kernel's 2.39.", device="H100",
      quant_runs=quant)
  return md + quant_part(
      " (H100)",
      "Each row its scheme's fastest launch of the sweep, bit-exact on the four tensors. "
      "Row-wise MXFP8 takes 75.5 us at (2 steps, 3 CTAs an SM) against the default (2, 4)'s "
      "81.2 (chosen on the H200 in session 6; the H100's default since); the others' defaults "
      "are their fastest. By SASS "
      "opcode (`profile_quant_*_sass_s25_h100.md`): FP8 1x128 LOP3 30%, FFMA 12%, FMNMX and "
      "FMUL 10% each (41.7 M warp instructions for 67 M elements); INT4 LOP3 17%, FFMA 13%, "
      "FMUL and FMNMX 11%, IMAD 9% (37.0 M; IMAD 21% of the stall samples); MXFP4 LOP3 20%, "
      "VIMNMX 11%, SHF 10%, IMAD 10% (46.7 M).",
      quant)


def h200_s26_section() -> list[str]:
  """Session 26: five H200 calls: the E4M3 codes by the saturating cast alone, the fused pair
  sum where `fp8_x` is the default, the plain-load read of INT4's codes, launch sweeps."""
  quant = [("s26 launch sweep", _load("kernels_quant_s26_sweep.json")),
           ("s26 satfinite rows", _load("kernels_quant_s26_satfinite_rows.json")),
           ("s26 satfinite rows", _load("kernels_quant_s26_satfinite_rows2.json")),
           ("s26 satfinite columns", _load("kernels_quant_s26_satfinite_columns.json")),
           ("s26 satfinite columns", _load("kernels_quant_s26_satfinite_columns2.json"))]
  md = wo_section(26, (
      "fused_sum_fp8_x", "mxfp4_pair", "int4_g32_m64", "uint4_g64_m64", "uint4_g32_m8",
      "nvfp4_m64", "groups_4096x14336", "fp8_x_small", "prefill_small"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first). The fused pair sum on "
      "8-bit tensor cores, where `fp8_x` is the default: INT8 M = 1 63.0 -> 64.0 us, FP8 "
      "M = 1 / 8 61.8 -> 61.2 / 64.8 -> 64.5, MXFP4 g32 M = 1 47.3 -> 49.4 (correct: verified, "
      "a default nowhere). INT4 below N = 16384 (4096 x 14336) with stream-K for every group: "
      "g32 M = 1 17.2 -> 16.0 us in 128-row tiles, g64 M = 1 / 16 15.3 -> 14.4 / 17.1 -> 15.6 "
      "in 64-row ones (the defaults since). Defaults the fastest (within 0.5%) of their "
      "launch sweeps: INT4 g32 M = 64 88.7 us, UINT4 g64 M = 64 93.7, UINT4 g32 M = 8 53.6; "
      "NVFP4 M = 64 with the fused sum 74.8 -> 71.4; FP8's fp8_x threshold holds at 14336 x "
      "4096 (22.2 -> 21.1 with it) and 4096 x 4096 (8.3 -> 9.7). Prefill M = 1024 at "
      "4096 x 14336: INT4 0.87x XLA bf16, MXFP4 0.94x, NVFP4 0.91x, INT8 0.80x; 4096 x 4096: "
      "0.95x / 1.03x / 1.01x / 0.88x. The codes of INT4 g128 M = 1 read by plain loads "
      "(`tma_stream_s26.md`): 27.9 us, 4.20 TB/s, against XLA's read of the same bytes at "
      "4.00 TB/s and the decode's TMA pipeline at 3.60 at best (session 24). XLA's GEMV "
      "profile was cut off at 170 s a second time.",
      quant_runs=quant[1:2])
  return md + quant_part(
      ": the saturating E4M3 cast and the row-wise launch",
      "Each row its scheme's fastest config, every config bit-exact on the four tensors. "
      "`satfinite` (the E4M3 codes by cvt.rn.satfinite alone, the clip before it gone), "
      "Mosaic kernel us without / with: MXFP8 rows 63.8 / 56.5 (8192 x 8192) and 56.0 / 49.6 "
      "(4096 x 14336), columns 87.2 / 81.3 and 76.8 / 71.9; FP8 1x128 rows 89.3 / 90.4, "
      "columns 123.3 / 124.1 and 107.2 / 108.5: verified for both, MXFP8's default since. "
      "The row-wise launch sweep (steps 2-4 x 1-4 CTAs an SM, without satfinite): every "
      "default the fastest or within 0.1%; INT4 g128 62.8 us without its NaN test (64.4 before "
      "it, the standing table's H200 time).",
      quant)


def h100_s27_section() -> list[str]:
  """Session 27: six H100 calls (after eleven refused starts): the decode by plain loads
  checked and timed, the 8-bit decode's x split by one kernel, the H100's M = 16 rows, the
  fused sums and the saturating cast there."""
  quant = [("s27 satfinite rows", _load("kernels_quant_s27_h100_satfinite_rows.json")),
           ("s27 satfinite columns", _load("kernels_quant_s27_h100_satfinite_columns.json"))]
  md = wo_section(27, (
      "h100_plain_int4_m1", "h100_plain_m1", "h100_plain_int8", "h100_plain_int4_m16_64",
      "h100_plain_4096x14336", "h100_m16", "h100_fp8_m16_fused_sum", "h100_int8_m64_fused_sum",
      "h100_int4_m1_fused_sum", "h100_split_kernel", "h100_split_vs_default"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first). The decode with its "
      "codes read by plain loads (a `code_order.thread_major` weight, written in session 26 "
      "without a GPU) matches the reference as the TMA decode does for INT4 g128 / g32, "
      "MXFP4, NVFP4, UINT4 and INT8 (rel. err 1.65-1.67e-3; `PLAIN_LOADS_VERIFIED` since), "
      "us TMA -> plain -> plain a step ahead (`prefetch_codes`, its default since): M = 1 "
      "INT4 g128 51.9 -> 64.6 -> 52.3, INT4 g32 60.8 -> 68.9 -> 58.3, MXFP4 58.8 -> 74.3 -> "
      "62.9, NVFP4 64.1 -> 77.1 -> 63.9, UINT4 56.0 -> 67.7 -> 55.6, INT8 86.6 -> 99.1 -> "
      "85.7; M = 16 INT4 54.5 -> 66.4 -> 54.6, INT8 89.9 -> 116.7 -> 97.6; INT4 M = 64 68.5 "
      "-> 87.1 -> 75.6; 4096 x 14336 M = 1 INT4 17.2 -> 20.3 -> 17.3, MXFP4 19.0 -> 22.2 -> "
      "20.4. The plain loads' own read ran at 3.04 TB/s here (session 25), the whole TMA "
      "decode at 2.40: the stream is not what the plain-load decode gains, at least on the "
      "H100. The H100's M = 16 rows: INT4 g128 54.4 us (2.93x XLA bf16), INT8 90.1 (1.76x), "
      "NVFP4 65.5 (2.43x). The fused sum: FP8 M = 16 88.1 -> 86.2 us (the H100's default at "
      "M = 9-16 since), INT8 M = 64 98.1 without it -> 93.2 with (the default, confirmed), "
      "INT4 g128 M = 1 52.1 -> 52.4 (off). The 8-bit decode's x split as one kernel "
      "(`x_split.py`): its first version never lowered (jax 0.11.2 took the plain "
      "`pallas_call` to Pallas-Triton, which has no `round`); as a `plgpu.kernel` it matches "
      "XLA's split, and with fp8_x at M = 1 takes INT8 86.0 -> 84.4 us, FP8 84.2 -> 83.4 (the "
      "default with fp8_x since; fp8_x itself stays off on the H100: INT8 85.0 / FP8 82.4 on "
      "the bf16 path in the same run).", device="H100", quant_runs=quant)
  return md + quant_part(
      ": the saturating E4M3 cast (H100)",
      "`satfinite` (MXFP8's default since session 26, from the H200), bit-exact on the H100 "
      "too, Mosaic kernel us without / with: MXFP8 rows 74.7 / 74.1, columns 90.6 / 84.9; "
      "FP8 1x128 rows 89.4 / 90.8, columns 124.8 / 126.0 (no gain, as on the H200).",
      quant)


def h100_s28_section() -> list[str]:
  """Session 28: six H100 calls: the queue's H100 parts (FP8's plain loads, fp8_x at M = 4 / 8,
  the empty-body stream, the plain loads' launch and SASS), part 2 re-run there, and the H100's
  stale quantize and NF4 / UINT4 g64 rows."""
  quant = [("s28 rows", _load("kernels_quant_s28_h100_rows.json")),
           ("s28 columns", _load("kernels_quant_s28_h100_columns.json"))]
  md = wo_section(28, (
      "h100_plain_int4_m1", "h100_plain_m1", "h100_plain_4096x14336", "h100_plain_launch",
      "h100_int4_m1_fused_sum", "h100_plain_fp8", "h100_fp8_x_m4_m8", "h100_int8_m64_plain",
      "h100_nf4_uint4_g64"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first). FP8 by plain loads "
      "matches the reference (`PLAIN_LOADS_VERIFIED` since): M = 1 82.9 -> 81.2 us (1.89x XLA "
      "bf16), M = 16 84.0 -> 91.6. The other formats, TMA -> plain loads a step ahead, M = 1: "
      "INT4 g128 50.3 -> 50.7 (without the step ahead 63.8; four CTAs an SM 52.3), INT4 g32 "
      "58.2 -> 56.6, MXFP4 56.9 -> 61.4, NVFP4 62.7 -> 62.3, UINT4 55.1 -> 54.0; 4096 x 14336 "
      "INT4 16.6 -> 17.0, MXFP4 18.7 -> 20.0; INT8 M = 64 90.9 -> 108.4. The plain loads' "
      "launch at INT4 g128 M = 1: two chunks a step on three CTAs an SM by stream-K 50.1 us "
      "(3.07x; the Mosaic kernel 47.9 and XLA's slot sum 2.3), 64-row tiles 54.4, stream-K "
      "alone 60.1; the fused sum there 51.1, on the TMA default 50.7 (50.3 without). fp8_x at "
      "M = 4 / 8 (with the split kernel) loses on the H100: INT8 84.8 -> 88.9 / 85.5 -> 94.6, "
      "FP8 82.7 -> 85.2 / 82.9 -> 84.3; the bf16 path's INT8 M = 4 / 8 1.79x / 1.80x XLA bf16 "
      "in this run. The stale rows at today's defaults: NF4 g32 / g128 M = 1 61.5 / 59.9 us "
      "(2.50x / 2.57x; session 3's byte layout took 435-458), M = 64 83.8 / 81.8; UINT4 g64 "
      "M = 1 59.0 (2.61x), M = 64 95.4. The decode pipeline's empty-body stream on the H100 "
      "(`tma_stream_s28_h100.md`): 45.0 us at best (2.77 TB/s, 91% of the copy bandwidth; "
      "64-row tiles, eight groups a step, three steps, 128 CTAs), 46.9 at the INT4 default's "
      "launch, against the whole default kernel at 48.1 (50.2 with XLA around it), XLA's read "
      "of the same bytes 43.4 and the plain loads' read 38.7 (3.03 TB/s): on the H100 too the "
      "TMA pipeline is most of the gap to 3.2x (48.0 us in this run). SASS (`profile_wo_int4_"
      "m1*_sass_s28_h100.md`): the same 16.6-16.7 M warp instructions in both decodes, "
      "LOP3 / PRMT / HADD2 two thirds of them; the plain-load decode's stall samples sit 34% on "
      "IMAD (waiting on its loads), the TMA decode's 10% on the wgmma wait.",
      device="H100", quant_runs=quant)
  return md + quant_part(
      ": every scheme at today's defaults (H100)",
      "Both shapes, rows and columns, all bit-exact on the four tensors. Rows, 8192 x 8192 / "
      "4096 x 14336: MXFP8 72.4 / 64.0 us (2.81 / 2.78 TB/s: the 2.8 TB/s target met at 8192 "
      "x 8192, 99% at the other; 2.53x XLA), FP8 1x128 89.5 / 79.9, MXFP4 73.5 / 65.1, NVFP4 "
      "143.8 / 127.7 (the standing 4096 x 14336 row was session 3's 471.5), INT4 g128 64.2 / "
      "57.0 (2.65 / 2.61 TB/s). Columns: MXFP8 85.0 / 75.6 (2.39 / 2.35 TB/s), FP8 1x128 "
      "124.9 / 110.1, MXFP4 90.7 / 80.8, NVFP4 173.2 / 154.0, INT4 g128 96.2 / 85.8: INT4's "
      "columns 11% slower than sessions 22 and 25 at the same launch (86.8 / 86.5), the one "
      "change between them session 26's INT4 element path without its NaN test; the column "
      "kernel keeps the test since (`mosaic_gpu_columns.INT4_NAN_TEST`), the A/B queued.",
      quant)


def h100_s29_section() -> list[str]:
  """Session 29: eight H100 calls: the queue's `h100` and `h100-2` parts, then one CTA a tile
  writing y itself (`splits=1` with `fused_sum`) across formats and M, the defaults it became
  checked against the ones they replaced, with plain loads, and on two compute warpgroups."""
  quant = [("s29 columns", _load("kernels_quant_s29_h100_int4_columns_nan_test.json"))]
  md = wo_section(29, (
      "h100_int4_m1", "h100_int8_fused_sum", "h100_int4_m1_tma_launch", "h100_one_slot",
      "h100_one_slot_launch", "h100_one_slot_4096x14336", "h100_one_slot_int4_m1_m8",
      "h100_one_slot_int8_m1_m4", "h100_one_slot_uint4_nvfp4_g64", "h100_one_slot_int4_m16",
      "h100_one_slot_8bit", "h100_defaults_int4", "h100_defaults_int8", "h100_defaults_fp8",
      "h100_plain_one_slot", "h100_one_slot_wgs2_m32_m64"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first). One CTA a 128-row "
      "tile (224 on 132 SMs) that writes its tile of y itself (`splits=1` with `fused_sum`, "
      "written in session 28 without a GPU: no float32 slots, no semaphore, no XLA kernel "
      "after) matches the reference and beats stream-K with XLA's sum for INT4 and the 8-bit "
      "formats, the H100's default for them since (`configs.ONE_SLOT_DEVICES`). INT4 g128 "
      "M = 1 50.3 -> 48.3 / 48.1 / 47.7 us in three runs and 50.6 -> 47.5 (3.30x XLA bf16) "
      "in a fourth, M = 8 48.3, M = 16 53.0 -> 50.2 (3.12x); INT4 g32 M = 1 59.2 -> 57.1 / "
      "58.6 -> 56.8; INT8 M = 1 84.8 -> 82.6 (1.86x), M = 4 85.4 -> 83.2 (1.82x: the 1.8x "
      "target met), M = 8 85.7 -> 82.9, M = 16 87.5 -> 84.3 (1.85x); FP8 M = 1 82.3 -> 79.7 "
      "(1.92x), M = 8 82.8 -> 80.5, M = 16 (one compute warpgroup) 86.2 -> 84.5. The sixth "
      "call (`h100_defaults_*`) ran the new defaults against the old on another H100, ~1% "
      "slower throughout (copy 3.03 TB/s against 3.05): INT4 M = 1 / 16 51.9 -> 49.6 / 54.9 "
      "-> 51.7, INT8 M = 8 / 16 87.7 -> 84.8 / 89.7 -> 86.2, FP8 M = 1 / 8 85.0 -> 82.5 / "
      "85.4 -> 83.1. Not taken: UINT4 g128 (54.5 -> 53.6, 54.6 -> 54.5), NVFP4 (62.9 -> 61.4, "
      "61.6 -> 61.0), INT4 g64 (52.3 -> 52.0), MXFP4 (56.5 -> 58.1), INT4 / NF4 / MXFP4 at "
      "4096 x 14336 (16.6 -> 16.5, 21.0 -> 22.2, 18.4 -> 19.2). With the plain loads "
      "(`code_order.thread_major`) one slot a tile gives INT4 g32 53.4 us (2.87x), UINT4 51.3 "
      "(3.00x), NVFP4 60.9; at M = 1 / 8 in a later call (`h100_plain_one_slot`) against the "
      "TMA default: INT4 g32 62.9 -> 55.7 / 57.8 -> 55.2, UINT4 55.8 -> 52.4 / 56.3 -> 52.6, "
      "NVFP4 64.8 -> 62.3 / 63.6 -> 61.9, INT4 g128 level. Two compute warpgroups on one CTA a "
      "tile failed to lower for FP8 at M = 16 (Mosaic: \"Only inputs with a dependency on the "
      "grid\": a per-channel CTA's scales do not move with the pipeline's steps); with the "
      "scales' index map reading the step it ran correct (`h100_one_slot_wgs2_m32_m64`): INT8 "
      "M = 32 / 64 87.3 -> 85.8 / 90.9 -> 94.5, FP8 86.8 -> 83.7 / 90.9 -> 90.7 against the "
      "wide default, not a default from one run. Codes two "
      "steps ahead (`prefetch_codes: 2`) match the reference but lose (INT4 M = 1 51.4 against "
      "49.9 a step ahead). INT8's fused stream-K sum at M = 16: 87.9 -> 87.5. The TMA decode at "
      "the empty-body stream's best launches loses: 64-row tiles, eight chunks a step, three "
      "steps 55.7 / 59.7 us (one / two CTAs an SM) against 50.4.",
      device="H100", quant_runs=quant)
  return md + quant_part(
      ": INT4 column-wise, the NaN test A/B (H100)",
      "The column-wise INT4 quantize with its NaN test (the default since session 28) and "
      "without (session 26's element path): 86.4 -> 96.1 us at 8192 x 8192, 77.0 -> 85.7 at "
      "4096 x 14336, bit-exact both: the test is what took 11% off session 26's columns, kept.",
      quant)


def h100_s30_section() -> list[str]:
  """Session 30: seven H100 calls (no H200 came): the queue's `h100` and `h100-2` parts, one
  CTA a tile at 4096 x 14336 and 4096 x 4096, plain loads at M = 16 / 64, INT8 / FP8 M = 32."""
  return wo_section(30, (
      "h100_8bit_m32", "h100_uint4_plain_one_slot", "h100_int4_m16_launch",
      "h100_8bit_m64_launch", "h100_small_shapes", "h100_plain_m1", "h100_small_shapes_8bit",
      "h100_plain_m16_m64", "h100_8bit_m32_default", "h100_small_shapes_4096",
      "h100_small_shapes_int4", "h100_small_shapes_int4_groups", "h100_formats_4096x14336"),
      "Every config checked against the f32 reference in the same run. Session 29's default "
      "of one CTA a 128-row tile for INT8 / FP8 took no account of N: at 4096 x 4096 (32 tiles "
      "on 132 SMs) INT8 M = 1 ran 19.2 us, 0.81x XLA bf16 (`h100_small_shapes`, run with "
      "session 29's defaults), against 9.5 by stream-K (1.66x). One slot now needs N >= 14336 "
      "(`configs.ONE_SLOT_MIN_N`), where it wins for every format measured: 4096 x 14336 INT8 "
      "M = 1 25.7 -> 22.3 us (2.09x), M = 16 26.7 -> 23.0, FP8 26.5 -> 22.3 / 26.3 -> 22.9, "
      "INT4 g128 17.2 -> 16.7 / 17.3 -> 16.8 (M = 1, two runs), 17.3 -> 15.7 / 17.1 -> 15.7 "
      "(M = 16), g32 19.9 -> 18.0 / 20.0 -> 18.4, g64 16.9 -> 16.0 / 17.9 -> 15.9 (the INT4 "
      "groups' defaults there since). INT8 / FP8 at M = 32 on two compute warpgroups with one "
      "slot a tile, a second and third run after session 29's: 89.5 -> 87.5 / 87.3 -> 85.6 and "
      "88.9 -> 85.8 / 87.1 -> 83.8 (1.85x / 1.89x: the 1.8x target met), the default since. "
      "M = 64 still misses (93.1 / 93.5 us, 1.66x / 1.65x against 1.8x): four steps asked "
      "(three fit: the default again), two stream-K CTAs an SM and one chunk a step five deep "
      "all tie or lose. Plain loads "
      "(`code_order.thread_major`): UINT4 M = 1 / 8 56.3 -> 55.3 -> 52.5 / 56.4 -> 55.5 -> 53.1 "
      "(TMA, plain, plain with one slot: 3.02x), M = 16 58.8 -> 57.2, M = 64 84.4 -> 86.0; INT4 "
      "g32 M = 1 62.7 -> 55.5 (2.84x), M = 16 61.5 -> 62.6, M = 64 89.9 -> 101.4: a layout that "
      "wins at decode and loses at M = 64, left to the caller (a `thread_major` UINT4 g128 "
      "weight takes one slot a tile at M <= 8 since). MXFP4 / NF4 lose with it (60.1 -> "
      "62.7, 60.2 -> 67.9), NVFP4 ties. INT4 g128 M = 16: plain loads with one slot 50.9 "
      "against 51.9 (3.12x), three steps 58.1, two chunks a step four deep 55.7. At 4096 x "
      "14336 the plain loads lose for UINT4 / MXFP4 / NVFP4 (M = 1 18.8 -> 19.0, 19.1 -> 19.9, "
      "20.0 -> 20.3; M = 16 1-6%).",
      device="H100", quant_runs=[("s29 columns",
                                  _load("kernels_quant_s29_h100_int4_columns_nan_test.json"))])


def h100_s31_section() -> list[str]:
  """Session 31: the queue's `h100` and `h100-2` parts on an H100 (no H200 came)."""
  return wo_section(31, (
      "h100_one_slot_fp4_4096x14336", "h100_int4_nf4_4096x14336", "h100_int4_launch_4096x14336",
      "h100_fused_sum_4096x4096", "h100_int8_prefill", "h100_int4_m8_m16"),
      "Every config checked against the f32 reference in the same run. At 4096 x 14336 one "
      "slot a tile loses for UINT4 (M = 1 / 16 18.0 -> 18.8 / 19.3 -> 20.5 us) and NVFP4 "
      "M = 16 (21.1 -> 29.6), wins for NVFP4 M = 1 (19.9 -> 18.1, one run); INT4 g128's "
      "defaults there 16.5 / 15.4 us (2.80x XLA bf16 both), NF4's 21.0 / 21.7 (2.20x / "
      "1.99x). INT4 M = 1's launch there: 64-row tiles 15.1 us (3.07x) against 16.5, four "
      "chunks a step two deep 16.1, three steps 16.7, two splits 16.5 (64-row tiles the "
      "default for g128 at M <= 8 since). At 4096 x 4096 the stream-K sum in the kernel "
      "(`fused_sum`) loses for every format (INT4 7.5 -> 10.0, INT8 9.4 -> 11.0, FP8 9.7 -> "
      "12.7 at M = 1). INT8 prefill M = 1024: 767.9 us (0.87x), 128-row tiles 994.3, three "
      "steps 768.4. INT4 g128 at 8192 x 28672 M = 8 / 16: plain loads 48.3 / 49.8 against "
      "48.6 / 49.8, 64-row tiles 49.1 / 64.6, three steps 50.1 / 50.8: no launch closes 3.2x "
      "there.",
      device="H100", quant_runs=[("s29 columns",
                                  _load("kernels_quant_s29_h100_int4_columns_nan_test.json"))])


def h100_s32_section() -> list[str]:
  """Session 32: seven H100 calls (after three refused starts): the E4M3 codes by the cast
  alone (`cast_nan`, written that session), the queue's `h100` and `h100-2` parts, and one
  slot a tile in 64-row tiles for the other 4-bit formats at 4096 x 14336."""
  quant = [("s32 cast_nan rows", _load("kernels_quant_s32_h100_cast_nan_rows.json")),
           ("s32 cast_nan rows", _load("kernels_quant_s32_h100_cast_nan_rows2.json")),
           ("s32 cast_nan columns", _load("kernels_quant_s32_h100_cast_nan_columns.json")),
           ("s32 cast_nan f32", _load("kernels_quant_s32_h100_cast_nan_f32.json"))]
  md = wo_section(32, (
      "h100_int4_tile64_4096x14336", "h100_nvfp4_uint4_launch", "h100_nf4_launch",
      "h100_8bit_4096x4096", "h100_8bit_tile64_4096x14336", "h100_one_slot64_mxfp4_uint4",
      "h100_one_slot64_m1_m8", "h100_one_slot64_m16", "h100_one_slot64_cw1_m16",
      "h100_one_slot64_cw1_m1_m16", "h100_int8_bf16_prefill", "h100_mxfp4_uint4_g64_m16"),
      "Every config checked against the f32 reference in the same run. At 4096 x 14336, one "
      "slot a tile in 64-row tiles (224 CTAs; on one compute warpgroup where the wide config "
      "had two) against the defaults, us: MXFP4 M = 1 / 8 / 16 18.9 -> 17.5 / 19.1 -> 17.4 / "
      "20.7 -> 18.1, NVFP4 20.0 -> 17.2 / 20.2 -> 17.3 / 21.6 -> 17.8, UINT4 18.9 -> 17.3 / "
      "19.3 -> 17.5 / 20.2 -> 18.9, NF4 g128 M = 16 21.9 -> 20.7 (M = 1 21.1 -> 20.6; "
      "stream-K over two chunks four deep 21.4 -> 20.1): the defaults there since. INT4 g32 "
      "loses in 64-row tiles (M = 1 17.5 -> 19.1), INT8 / FP8 too (22.9 -> 23.6, 22.7 -> "
      "23.2); INT4 g128's 64-row default re-checked at M = 1 / 8 (15.0 / 15.0 against 16.6 / "
      "16.7 in 128-row tiles). 4096 x 4096 INT8 / FP8 M = 1: the defaults 9.5 / 9.6 us "
      "(1.66x), four K chunks 9.7-10.7. INT8 prefill M = 1024 with its codes through the bf16 "
      "cast (`int8_bf16`, session 31): correct, 814.4 -> 793.1 us (the default since). The "
      "H100's MXFP4 / UINT4 g64 M = 16 rows at 8192 x 28672, stale since sessions 3-5: 61.7 / "
      "66.0 us (2.58x / 2.41x), against 103.5 / 107.4.", device="H100", quant_runs=quant)
  return md + quant_part(
      ": the E4M3 codes by the cast alone (H100)",
      "`cast_nan` (written in session 32 before the calls): no NaN test, select or NaN code "
      "an element, the sign OR'd in, and row-wise from bf16 one PTX cvt a pair already packed "
      "as stored; bit-exact on all four tensors (so the H100's cvt gives a NaN 0x7F or keeps "
      "its sign). Mosaic kernel us, today's default -> cast_nan: FP8 1x128 rows 89.4 -> 76.6 "
      "(repeat 89.7 -> 76.6) and 79.6 -> 68.5 at 4096 x 14336, columns 125.2 -> 113.7 and "
      "110.3 -> 100.9, f32 rows 122.0 -> 118.8; MXFP8 rows 74.0 -> 73.8, columns 85.1 -> 82.4 "
      "(2.47 TB/s, the 2.4 target met) and 76.3 -> 74.4, f32 rows 119.2 -> 118.3. The default "
      "for both since.", quant)


def h100_s33_section() -> list[str]:
  """Session 33: six H100 calls: the queue's `h100` and `h100-2` parts, a repeat of the block
  amax from bf16 pair words (`pair_amax`, written in session 32), NVFP4's encoder with one
  select an element (written that session) against the tree before it, the new decode defaults
  against the old in one run, and the E4M3 code pairs of `pair_cast` / `pair_signs` (written
  that session)."""
  quant = [("s33 pair_amax rows", _load("kernels_quant_s33_h100_pair_amax_rows.json")),
           ("s33 pair_amax rows", _load("kernels_quant_s33_h100_pair_amax_rows2.json")),
           ("s33 pair_amax columns", _load("kernels_quant_s33_h100_pair_amax_columns.json")),
           ("s33 pair_amax columns", _load("kernels_quant_s33_h100_pair_amax_columns2.json")),
           ("s33 INT4 pair_mask rows", _load("kernels_quant_s33_h100_int4_pair_mask_rows.json")),
           ("s33 INT4 pair_mask columns",
            _load("kernels_quant_s33_h100_int4_pair_mask_columns.json")),
           ("s33 rows launch sweep", _load("kernels_quant_s33_h100_rows_sweep.json")),
           ("s33 NVFP4 one select", _load("kernels_quant_s33_h100_nvfp4_select_rows.json")),
           ("s33 NVFP4 before", _load("kernels_quant_s33_h100_nvfp4_select_rows_before.json")),
           ("s33 NVFP4 one select", _load("kernels_quant_s33_h100_nvfp4_select_rows2.json")),
           ("s33 NVFP4 one select",
            _load("kernels_quant_s33_h100_nvfp4_select_columns.json")),
           ("s33 NVFP4 before", _load("kernels_quant_s33_h100_nvfp4_select_columns_before.json")),
           ("s33 NVFP4 before",
            _load("kernels_quant_s33_h100_nvfp4_select_columns_before2.json")),
           ("s33 pair_cast columns", _load("kernels_quant_s33_h100_pair_cast_columns.json")),
           ("s33 pair_cast columns",
            _load("kernels_quant_s33_h100_pair_cast_amax_columns.json")),
           ("s33 pair_signs rows", _load("kernels_quant_s33_h100_pair_signs_rows.json"))]
  md = wo_section(33, ("h100_nf4_uint4_g64_4096x14336", "h100_fp4_uint4_m16_one_slot",
                      "h100_g64_defaults", "h100_nvfp4_m16_ab", "h100_uint4_m16_ab"),
      "Every config checked against the f32 reference in the same run. 4096 x 14336 M = 1, "
      "groups of 64: UINT4 one slot a 64-row tile 19.8 -> 17.6 us, NF4 stream-K over two "
      "chunks four deep 21.7 -> 20.5 (the launches their groups of 128 take; the defaults "
      "since); NF4 g128's default re-timed 19.7. 8192 x 28672 M = 16, one slot a 128-row tile "
      "on one compute warpgroup: NVFP4 63.4 -> 60.0 (from the wide config), UINT4 g128 59.2 "
      "-> 56.8 (XLA's pass over the slot gone; the defaults since), MXFP4 59.7 -> 59.5 "
      "(kept). The new defaults in a later run: g64 17.7 / 20.4; NVFP4 / UINT4 M = 16 63.3 / "
      "59.0, and against the old defaults in one run 65.5 -> 63.3 / 61.0 -> 58.5 (this "
      "card's times drift a few % from run to run).", device="H100", quant_runs=quant)
  return md + quant_part(
      ": the block amax from bf16 pair words, INT4's pair mask (H100)",
      "`pair_amax` (written in session 32): bit-exact on all four tensors, rows and columns, "
      "every scheme. Rows, Mosaic kernel us without -> with (8192 x 8192 twice, 4096 x 14336): "
      "MXFP4 73.4 -> 70.4, 73.4 -> 70.6, 65.0 -> 62.3; INT4 63.8 -> 62.2, 64.1 -> 62.6, 57.0 -> "
      "55.3; NVFP4 143.4 -> 141.1, 143.5 -> 141.2, 127.5 -> 125.4; FP8 1x128 and MXFP8 level: "
      "the default for every scheme since. Columns: FP8 1x128 113.5 -> 110.8, 113.5 -> 110.9, "
      "100.8 -> 98.2 (its default since); MXFP8 82.4 -> 84.7, 73.9 -> 76.0, MXFP4 90.5 -> "
      "95.4, NVFP4 172.8 -> 180.5 slower, INT4 level (off for them). INT4's masked rows zeroed "
      "a packed pair at a time (`pair_mask`): bit-exact, level alone (rows 63.9 -> 64.1, 56.8 "
      "-> 56.7; columns 86.4 -> 86.0, 76.8 -> 76.7) and slower with `pair_amax` (62.4 -> "
      "64.4, 55.4 -> 57.3): removed. The rows' launch sweep (steps 2-4 x 1-4 CTAs an SM) "
      "finds the defaults the fastest: FP8 1x128 76.9 (2, 4), INT4 63.8 (2, 3), MXFP4 73.5 "
      "(2, 4). NVFP4's encoder with one integer select an element where an unusable block "
      "scale zeroes the codes (in place of a NaN test and two float selects), against the tree "
      "before it in the same call, bit-exact: rows 141.9 -> 135.9 / 136.1 at 8192 x 8192, "
      "126.1 -> 120.9 / 120.8 at 4096 x 14336 (1.27 TB/s); columns 172.8 / 173.6 -> 170.3, "
      "153.6 / 154.2 -> 151.4. Written later that session and timed in a sixth call: the "
      "column kernel's E4M3 codes two along M a PTX cvt (`pair_cast`), bit-exact, FP8 1x128 "
      "110.8 -> 93.2 us at 8192 x 8192, 98.3 -> 83.2 at 4096 x 14336 (2.18 TB/s; its default "
      "since), MXFP8 82.5 -> 83.8 / 73.5 -> 73.5 (off); the row kernel's code pairs signed from "
      "x's bf16 pair words (`pair_signs`), bit-exact, FP8 1x128 76.6 -> 74.8 (2.72 TB/s) / 68.1 "
      "-> 66.4 (its default since), MXFP8 level.", quant)


SECTIONS = (h100_s22_section, h200_s23_section, h200_s24_section, h100_s25_section,
            h200_s26_section, h100_s27_section, h100_s28_section, h100_s29_section,
            h100_s30_section, h100_s31_section, h100_s32_section, h100_s33_section)
