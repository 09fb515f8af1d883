"""The kernel benchmark report's sections for sessions 6-21, one function a session: each reads
its session's result files and returns its markdown (tables, a roofline plot written beside
them). `bench_kernels_report.main` puts them after sessions 1-5's, in `SECTIONS` order, and
`bench_kernels_sessions_since22.py`'s after them.
"""

from __future__ import annotations

import os

from bench_kernels_report import _load
from bench_kernels_report import quant_part
from bench_kernels_report import quant_table
from bench_kernels_report import RES
from bench_kernels_report import roofline
from bench_kernels_report import wo_section
from bench_kernels_report import wo_table


def h200_section() -> list[str]:
  """Session 6 on the H200 (its own ceilings), with its roofline plot."""
  quant6 = [("s6 session-5 code", _load("kernels_quant_s6_h200.json")),
            ("s6 PTX div + FMA", _load("kernels_quant_s6_fma.json")),
            ("s6 + integer amax", _load("kernels_quant_s6_amax.json")),
            ("s6 + NVFP4 FMA, sweep", _load("kernels_quant_s6_sweep.json")),
            ("s6 column-wise, PTX", _load("kernels_quant_s6_fma_columns.json")),
            ("s6 column-wise + amax", _load("kernels_quant_s6_amax_columns.json")),
            ("s6 column-wise NVFP4 FMA", _load("kernels_quant_s6_nvfp4_columns.json")),
            ("s6 column-wise sweep", _load("kernels_quant_s6_columns_sweep.json"))]
  wo6 = [("s6", _load(f"kernels_wo_s6_{n}.json")) for n in (
      "h200_defaults", "e2m1_lut", "gemm_e2m1_lut", "int4_sweep")]
  head = wo6[0][1]
  copy_bps, gemm = head["copy_Bps"], head["bf16_gemm_flops"]
  roofline(wo6, quant6, copy_bps, gemm, os.path.join(RES, "kernels_roofline_h200.png"))
  return [
      "",
      "# Session 6: H200",
      "",
      f"Device {head['device']}, jax {head['jax_version']}, {head['date'][:10]}; ceilings in the "
      f"same runs: copy {copy_bps/1e12:.2f} TB/s, XLA bf16 GEMM {gemm/1e12:.0f} TFLOP/s. The "
      "targets marked are the issue's (set on an H100): on the H200 XLA's memory-bound baselines "
      "are 1.4x faster, so the ratios are harder, and 85% of HBM is 3.65 TB/s.",
      "",
      "## Fused block quantization: PTX division and FMA-corrected quotients",
      "",
      quant_table(quant6),
      "",
      "## Weight-only matmul: defaults on the H200, the E2M1 byte-permute decode, INT4 sweep",
      "",
      wo_table(wo6, copy_bps),
      "",
      "![roofline H200](kernels_roofline_h200.png)",
  ]


def h200_s7_section() -> list[str]:
  """Session 7 on the H200: the non-finite quantize check, stream-K INT4 decode, other shapes."""
  quant7 = [("s7 with NaN/Inf check", _load("kernels_quant_s7_nonfinite.json")),
            ("s7 copysign", _load("kernels_quant_s7_copysign.json"))]
  wo7 = [("s7", _load(f"kernels_wo_s7_{n}.json")) for n in (
      "int4_stream_k", "int4_default", "fp4_nf4_spread", "fp4_e2m1_lut_m1", "gemm_spread",
      "4096x14336", "gemm_4096x14336")]
  copy_bps = wo7[0][1]["copy_Bps"]
  return [
      "",
      "# Session 7: H200",
      "",
      "Same machine kind as session 6; each run's own ceilings in its JSON. The FP8 1x128 rows "
      "show 2 mismatches in the NaN/Inf check: the NaN scale's payload (the kernel stored "
      "0x7FC00000, XLA's division on the GPU 0x7FFFFFFF); fixed after these runs (mxjax and the "
      "kernels store the canonical NaN), not yet re-run on a GPU.",
      "",
      "## Fused block quantization",
      "",
      quant_table(quant7),
      "",
      "## Weight-only matmul",
      "",
      wo_table(wo7, copy_bps),
  ]


def h200_s8_section() -> list[str]:
  """Session 8 on the H200: the quantize re-check, the E2M1 bit decode, its roofline."""
  quant8 = [("s8 re-check", _load("kernels_quant_s8_recheck.json"))]
  wo8 = [("s8", _load(f"kernels_wo_s8_fp4_{n}.json")) for n in (
      "bits", "bits_prefill", "configs", "defaults", "4096x14336")]
  wo7 = [("s7", _load(f"kernels_wo_s7_{n}.json")) for n in ("int4_default", "4096x14336")]
  head = wo8[0][1]
  copy_bps, gemm = head["copy_Bps"], head["bf16_gemm_flops"]
  roofline(wo7 + wo8[3:], quant8, copy_bps, gemm,
           os.path.join(RES, "kernels_roofline_h200_s8.png"))
  return [
      "",
      "# Session 8: H200",
      "",
      "The quantize benchmark again (FP8 1x128's NaN-scale fix: bit-exact), and MXFP4 / NVFP4 "
      "with the E2M1 bit decode: first the decode alone (`bits`, `bits_prefill`), then configs "
      "(`configs`, NVFP4's rows cut by the run's time limit), then the new defaults with "
      "NVFP4's one-multiply decode (`defaults`; MXFP4 M = 32 cut by the time limit). "
      "'one-hot' counts the elements of the kernel's dequantized weights that differ from "
      "`layout.dequantize` (NVFP4: 1 f32 ulp, s_t's order).",
      "",
      "## Fused block quantization",
      "",
      quant_table(quant8),
      "",
      "## Weight-only matmul",
      "",
      wo_table(wo8, copy_bps),
      "",
      "The H200 now (session 7's INT4 defaults and 4096 x 14336, session 8's FP4 defaults):",
      "",
      "![roofline H200 s8](kernels_roofline_h200_s8.png)",
  ]


def h200_s9_section() -> list[str]:
  """Session 9 on the H200: register-order weights, the quantize fix, its roofline."""
  quant9 = [("s9 before fix", _load("kernels_quant_s9_ftz_div.json")),
            ("s9 div.rn", _load("kernels_quant_s9_div_rn.json"))]
  wo9 = [("s9", _load(f"kernels_wo_s9_{n}.json")) for n in (
      "wgmma_order_int4", "wgmma_order_fp4", "wgmma_order_m32", "wgmma_order_prefill",
      "default_4096x14336", "default_m64")]
  head = wo9[0][1]
  copy_bps, gemm = head["copy_Bps"], head["bf16_gemm_flops"]
  roofline(wo9, quant9[1:], copy_bps, gemm, os.path.join(RES, "kernels_roofline_h200_s9.png"))
  return [
      "",
      "# Session 9: H200",
      "",
      "Weights stored in the kernels' register order (`code_order.WGMMA_ORDER`), each row the "
      "faster of K order ({}) and register order ({'wgmma_order': True}), both checked (the JSON's "
      "`configs_timed` has each time); since then `repack` stores register order on a GPU "
      "(so in the last runs, `default_4096x14336` and `default_m64`, {} is register order). "
      "The quantize check with the tests' special values found INT4's subnormal-scale "
      "block flushed by `div.rn.ftz` (`s9 before fix`: 65 bytes), fixed (`s9 div.rn`).",
      "",
      "## Fused block quantization",
      "",
      quant_table(quant9),
      "",
      "## Weight-only matmul",
      "",
      wo_table(wo9, copy_bps),
      "",
      "![roofline H200 s9](kernels_roofline_h200_s9.png)",
  ]


def h200_s10_section() -> list[str]:
  """Session 10: FP4 scales as bf16 multipliers (the GPU default since)."""
  return wo_section(10, (
      "scale_bf16", "scale_bf16_m16", "scale_bf16_m32", "nvfp4_m8", "nvfp4_m16_sweep",
      "scale_bf16_prefill", "default"),
      "MXFP4 / NVFP4 block scales stored as the decode's bf16 multipliers "
      "(`scales.fp4_scales_bf16`), each row the faster of the stored bytes ({} or "
      "{'scale_bf16': False}) and the multipliers ({'scale_bf16': True}; the JSON's "
      "`configs_timed` has each time); `nvfp4_m16_sweep` tries NVFP4's configs at M = 16 with "
      "them; in `default`, {} is `repack`'s GPU default since (multipliers, register order). "
      "TB/s counts the format's bytes (1 a scale).")


def h200_s11_section() -> list[str]:
  """Session 11: NF4 as slot codes (the GPU default since), CTAs an SM, and two tries that did
  not pay (NF4 tables from memory, MXFP4's single multiply)."""
  return wo_section(11, (
      "nf4_m1", "nf4_m8", "nf4_m16", "nf4_m64", "nf4_prefill", "ctas_m1", "ctas_m16",
      "nf4_tables_m1", "nf4_tables_m16", "nf4_tables_m64", "mxfp4_fold", "shapes"),
      "NF4 g64 as int4 slot codes with bf16 absmax (`scales.nf4_slots`, {} or "
      "{'scale_bf16': True}) against the byte layout ({'scale_bf16': False}); `ctas_*` try "
      "three and four CTAs an SM (stream-K with shares one step apart); `nf4_tables_*` a "
      "variant since removed that read the decode's table words from memory "
      "({'nf4_tables_in_memory': False} is the kept code); `mxfp4_fold` ({}) a variant since "
      "removed that multiplied each MXFP4 pair once; `shapes` the issue's smaller shapes "
      "(cut short by its time limit). Each row the fastest of its configs (`configs_timed` "
      "has every time). TB/s counts the smaller storage's bytes (NF4: bf16 absmax).")


def h200_s12_section() -> list[str]:
  """Session 12: one wgmma wait a pipeline step (`step_wait`), the default since for FP4, NF4
  slot codes (but at four CTAs an SM), INT8 / FP8, and UINT4 at M <= 16."""
  return wo_section(12, (
      "step_wait_m1_m64", "step_wait_m16", "step_wait_int8_fp8", "step_wait_int4",
      "step_wait_uint4", "onehot"),
      "The decode kernel waiting on its wgmmas once a step ({'step_wait': True}: prescaled "
      "FP4 / NF4 and per-channel weights chain the step's chunks into one accumulator; "
      "group-scaled INT4 / UINT4 read chunk j's accumulators after issuing chunk j + 1's) "
      "against once a chunk ({} before the defaults changed, or {'step_wait': False}); "
      "`onehot` runs the new defaults with every dequantized weight checked. Each row the "
      "fastest of its configs (`configs_timed` has every time). TB/s counts the format's "
      "bytes (FP4 / NF4: bf16 scale multipliers).")


def h200_s13_section() -> list[str]:
  """Session 13: one wgmma a group on its K slice (`group_slices`, the default since for INT4 /
  UINT4 groups of 32 and 64) and quantization's block state once a block (`state_once`,
  the default since for NVFP4)."""
  md = wo_section(13, ("group_slices", "group_slices_default", "tma_pad"),
                  "The decode kernel with INT4 / UINT4 groups of 32 and 64: a full-width wgmma a "
                  "group over x copies zeroed outside it ({} before the default changed, "
                  "{'group_slices': False} after) against one wgmma a group on its K slice "
                  "({'group_slices': True}, {} after), with and without step_wait. Each row the "
                  "fastest of its configs, every config checked (`configs_timed` has each time). "
                  "`tma_pad`: x unpadded at M < 8 ({'tma_pad': True}, the default since for INT4 / "
                  "UINT4 / FP4) against XLA's pad before the launch.")
  quant = [("s13 state_once", _load("kernels_quant_s13_state_once.json")),
           ("s13 NVFP4 default", _load("kernels_quant_s13_nvfp4_default.json"))]
  return md + quant_part(
      ": the block state once a block",
      "Each scheme's fastest of {} and {'state_once': True}, both bit-exact on the four "
      "tensors (`configs_timed` has each time: NVFP4 151.8 / 139.2 us, MXFP4 79.5 / "
      "79.2, MXFP8 63.7 / 62.6, FP8 1x128 87.8 / 93.2); then NVFP4's new default. "
      "NVFP4's time includes XLA's tensor-amax pass (~33 us); given the amax "
      "(`given_amax_s` in the JSON) it takes 104.6 us, 1.64 TB/s.",
      quant)


def h200_s14_section() -> list[str]:
  """Session 14: one wait a chunk for INT4's group wgmmas and g32's launch config at M = 16,
  UINT4 g32 / g64's wide config at M = 16, x unpadded for every format, and UINT4's zero
  points in the weights (correct, slower: off)."""
  return wo_section(14, ("chunk_wait", "uint4_wide", "m64", "tma_pad", "zero_in_weights",
                         "load_split"),
                    "INT4 groups of 32 / 64 with one wgmma wait a chunk ({'chunk_wait': True}, "
                    "the default since at M <= 16) and launch configs; UINT4 groups of 32 / 64 "
                    "at M = 16 in the wide config (the default since); INT4 g64 at M = 64 with "
                    "128 rows a CTA (`m64`, the default since); x unpadded for INT8, FP8 and "
                    "NF4 slot codes ({'tma_pad': True}, the default since); UINT4 zero points "
                    "in the decoded weights ({'zero_in_weights': True}: correct, slower, off); "
                    "INT4 g128's pipeline alone (`load_split`). Each row the fastest of its "
                    "configs, every config checked (`configs_timed` has each time).")


def h200_s15_section() -> list[str]:
  """Session 15: E2M1 by the exponent field in the FP4 quantize kernels and UINT4's stream-K
  launch at M <= 8 (the defaults since; the device was withdrawn after one call)."""
  md = wo_section(15, ("uint4_stream_k",),
                  "UINT4 g128 / g64 at M = 1 in INT4's stream-K launch ({'gps': 4, 'steps': 2, "
                  "'stream_k': 2}, the default since at M <= 8) against the default of the time "
                  "({}: 224 unequal CTAs, no K split; 52.0 / 50.6 us). Each row the fastest of "
                  "its configs, every config checked (`configs_timed` has each time).")
  quant = [("s15 E2M1 by exponent", _load("kernels_quant_s15_e2m1_exponent.json"))]
  return md + quant_part(
      ": E2M1 by the exponent field",
      "MXFP4 / NVFP4, row- and column-wise: the E2M1 binade taken from the exponent "
      "field against picked by range compares, both bit-exact on the four tensors; "
      "us by compares / by exponent: MXFP4 rows 79.2 / 72.0, NVFP4 rows 139.1 / 130.9, "
      "MXFP4 columns 97.4 / 90.1, NVFP4 columns 169.4 / 159.7 (the only encode since).",
      quant)


def h200_s17_section() -> list[str]:
  """Session 17: the f32 quantize kernel packing 4-bit codes in the kernel, and the
  column-wise kernel's piece size (the device lent for one call of 342 s; its INT8 / FP8 and
  INT4 M = 64 runs were cut off before they wrote a row)."""
  pack = [("s17 f32 pack_nibbles", _load("kernels_quant_s17_f32_pack.json"))]
  piece = [("s17 columns piece", _load("kernels_quant_s17_columns_piece.json"))]
  return ["", "## Fused block quantization: f32 in, codes packed in the kernel (session 17)", "",
          "f32 x, 8192 x 8192, each config bit-exact on the four tensors; us with codes left "
          "one a byte (XLA packs them) / `pack_nibbles` / `pack_nibbles` with two CTAs an SM: "
          "INT4 164.2 / 143.4 / 143.3, MXFP4 127.9 / 93.2 / 103.8, NVFP4 221.7 / 190.7 / "
          "220.5 (given its tensor amax 126.2). `pack_nibbles` the default since.", "",
          quant_table(pack),
          "", "## Column-wise FP8 1x128: piece size (session 17)", "",
          "8192 x 8192, every config bit-exact; us: pieces of 16 (the default then) 151.1, "
          "32 140.8, 64 136.0, whole blocks with tile_k 64 124.1 (52 KB of shared memory, four "
          "CTAs an SM, against 101 KB and two). INT4 g128's run was cut off.", "",
          quant_table(piece)]


def h200_s20_section() -> list[str]:
  """Session 20: the gated paths' first GPU checks (two device calls after eleven refused
  starts): FP4 multipliers in the prefill GEMM, INT8 / FP8 with two compute warpgroups,
  INT4 on FP8 tensor cores (`fp8_x`), `fused_sum`, block-contiguous weights."""
  return wo_section(20, (
      "gemm_multipliers", "per_channel_wgs", "per_channel_m32_m64", "fp8_x", "fp8_x_kernels",
      "fused_sum"),
      "Every config checked against the f32 reference in the same run (each JSON's "
      "`configs_timed`; `bench_configs_table.py` reads them against their row's first). The "
      "prefill GEMM reading MXFP4 / NVFP4 bf16 multipliers as they are: MXFP4 735.0 -> 648.8 "
      "us (0.98x XLA bf16), NVFP4 756.4 -> 741.3 (the default since). INT8 M = 64 with two "
      "compute warpgroups: 106.0 us -> 88.9 / 84.7 / 95.5 (tile_n 256 gps 1 / 128 gps 2 / 128 "
      "gps 1 six steps), FP8 99.5 -> 86.2 (tile_n 256) and 82.7 (tile_n 128 gps 2, next call); "
      "M = 32 with that config INT8 68.8, FP8 67.5 (no same-run baseline). `fp8_x` INT4 g128: "
      "correct (rel. err 1.66e-3, the bf16 path's 1.65e-3) but slower, M = 1 38.5 -> 46.4 us "
      "(two compute warpgroups 52.3), M = 4 38.9 -> 49.5: its kernel 38.3 us against 36.5-37.0 "
      "and six XLA kernels splitting x, 8.6 us (`fp8_x_kernels`' kernel_us). `fused_sum` at "
      "M = 1: correct but slower, INT4 38.5 -> 39.4, INT8 65.5 -> 66.4. Block-contiguous INT4 "
      "weights (`w_tile` [128, 512], kernels_wo_s20_w_tile.json, its row cut off after both "
      "configs): 38.1 -> 38.3 us, no gain.")


def h200_s21_section() -> list[str]:
  """Session 21: four H200 calls (the H100 refused): 8-bit weights with two compute warpgroups
  at M = 16 / 32, FP8 tensor cores (`fp8_x`) for FP8, MXFP4 and groups of 32, INT4 g128's
  column-wise quantize in whole blocks, the column-wise block state once a block row."""
  md = wo_section(21, (
      "8bit_m32", "8bit_m16_m32", "fp8_x_fp8", "fp8_x_mxfp4", "fp8_x_g32", "small_stream_k"),
      "Every config checked against the f32 reference in the same run (`configs_timed`; "
      "`bench_configs_table.py` reads them against their row's first); rows cut off by the "
      "call's limit keep their configs under `in_progress` and are not in this table. Two "
      "compute warpgroups (tile_n 128, gps 2, steps 3, stream_k 1): INT8 M = 32 90.7 -> 68.9 "
      "us, FP8 M = 32 81.3 -> 67.6, FP8 M = 16 74.4 -> 63.8 (the default since: INT8 above "
      "M = 16, FP8 above 8). `fp8_x`: FP8 M = 1 69.3 -> 61.0 us (1.80x XLA bf16), MXFP4 M = 1 "
      "47.9 -> 46.1 (both the default at M <= 8 since); slower for FP8 at M = 16 / 32 / 64 "
      "(behind the wide config; 83.5 -> 106.9 at 64), INT4 g32 M = 1 43.8 -> 52.6, UINT4 g32 "
      "59.6 -> 65.3, INT4 g128 M = 64 68.6 -> 264.4 (kernels_wo_s21_int4_m64.json, cut off); "
      "all correct (rel. err 1.66e-3). `fused_sum` INT4 g128 M = 64 68.6 -> 67.1 (same file), "
      "4096 x 14336 M = 1 with stream_k 2 14.9 -> 15.8; stream_k 2 alone 15.5 -> 14.9 there. "
      "INT4 M = 64 launch sweep (kernels_wo_s21_int4_m64_sweep.json, cut off before "
      "compute_wgs 4): the default 69.9 us stays the fastest of four.")
  cols = [("s21 INT4 pieces", _load("kernels_quant_s21_columns_int4_piece.json")),
          ("s21 tile_k 64", _load("kernels_quant_s21_columns_tile_k.json")),
          ("s21 state_once", _load("kernels_quant_s21_columns_state_once.json")),
          ("s21 64-row tiles", _load("kernels_quant_s21_rows_tile64.json"))]
  return md + quant_part(
      ": column-wise pieces, state once, row tiles",
      "Each row its scheme's fastest config, every config bit-exact on the four "
      "tensors (`configs_timed` and `mismatch_by_config` have each). INT4 g128 "
      "column-wise in pieces of 16 / 32 / 64 / whole blocks with tile_k 64: 125.1 / "
      "109.8 / 101.4 / 85.5 us (the default since: 1.36 -> 1.99 TB/s). tile_k 64 for "
      "NVFP4 / MXFP4 columns: 159.7 -> 165.2, 90.1 -> 98.4. The block state once a "
      "block row (`state_once`, session 18): NVFP4 159.8 -> 160.5, INT4 124.6 -> "
      "126.6, MXFP4 90.1 -> 101.3, MXFP8 89.5 -> 101.5 (removed since). Row-wise "
      "64-row tiles: FP8 1x128 87.6 -> 89.5, INT4 65.7 -> 68.2 (kept at 128).",
      cols)


SECTIONS = (h200_section, h200_s7_section, h200_s8_section, h200_s9_section, h200_s10_section,
            h200_s11_section, h200_s12_section, h200_s13_section, h200_s14_section,
            h200_s15_section, h200_s17_section, h200_s20_section, h200_s21_section)
