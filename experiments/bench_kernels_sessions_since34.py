"""The kernel benchmark report's sections for sessions 34 on (H100s only), one function a
session, as in `bench_kernels_sessions_since22.py`: each reads its session's result files and
returns its markdown. A new session adds its function here and to `SECTIONS`.
"""

from __future__ import annotations

from bench_kernels_report import _load
from bench_kernels_report import quant_part
from bench_kernels_report import wo_section


def h100_s34_section() -> list[str]:
  """Session 34: quantize on the H100 in four calls (the queue's `q` part, asked of an H200, ran
  on an H100): `cast_nan` and `pair_amax` against each off on rows, columns and f32 rows; the
  column kernel's `pair_cast` launches and `pair_signs`; the row kernel's `state_once` on every
  scheme; the column kernel's `quad_pack` and SASS; the row kernel's `pair_e2m1`."""
  quant = [("s34 cast_nan / pair_amax rows",
            _load("kernels_quant_s34_h100_cast_nan_pair_amax_rows.json")),
           ("s34 cast_nan / pair_amax columns",
            _load("kernels_quant_s34_h100_cast_nan_pair_amax_columns.json")),
           ("s34 cast_nan f32 rows", _load("kernels_quant_s34_h100_cast_nan_f32.json")),
           ("s34 MXFP8 pair_cast launch",
            _load("kernels_quant_s34_h100_mxfp8_pair_cast_launch.json")),
           ("s34 FP8 columns launch", _load("kernels_quant_s34_h100_fp8_columns_launch.json")),
           ("s34 columns pair_signs", _load("kernels_quant_s34_h100_pair_signs_columns.json")),
           ("s34 state_once rows", _load("kernels_quant_s34_h100_state_once_rows.json")),
           ("s34 quad_pack columns", _load("kernels_quant_s34_h100_quad_pack_mxfp4.json")),
           ("s34 quad_pack columns", _load("kernels_quant_s34_h100_quad_pack_int4.json")),
           ("s34 INT4 columns launch",
            _load("kernels_quant_s34_h100_int4_columns_launch.json")),
           ("s34 columns defaults", _load("kernels_quant_s34_h100_columns_defaults.json")),
           ("s34 pair_e2m1 rows", _load("kernels_quant_s34_h100_pair_e2m1_rows.json"))]
  return ["", "# Session 34: H100", "", "Fused quantization only; no weight-only runs."] + (
      quant_part(
          ": re-checks, launches and gated paths (H100)",
          "Every config bit-exact on the four tensors. The defaults against each option off, "
          "us a call (NVFP4's with its XLA amax pass; columns: the Mosaic kernel) at 8192 x "
          "8192 / 4096 x 14336: rows FP8 1x128 without `cast_nan` "
          "74.8 -> 87.7 / 66.5 -> 78.4, MXFP4 without `pair_amax` 70.8 -> 73.9 / 62.8 -> 65.4, "
          "INT4 62.8 -> 64.4, NVFP4 135.9 -> 138.3, the E4M3 schemes' `pair_amax` level; columns "
          "FP8 1x128 without `cast_nan` 91.7 -> 124.6, without `pair_amax` -> 99.4; f32 rows "
          "MXFP8 level (117.0 / 117.4), FP8 1x128 without `cast_nan` 119.0 -> 124.6. FP8 "
          "1x128 columns' launch: tile_k 128 93.0 -> 91.0 / 82.9 -> 81.5 (its default with `pair_cast` since), three "
          "steps or three CTAs an SM level; MXFP8's `pair_cast` slower at every launch tried "
          "(82.6 without; 83.1-93.2 with). The columns' `pair_signs` (written in session 33): "
          "bit-exact and slower, FP8 1x128 93.0 -> 101.4, MXFP8 84.6 -> 86.1 (checked, off). "
          "The row kernel's `state_once`, first timed on the H100: NVFP4 147.4 -> 135.3 (its "
          "default), the others level or up to 2% slower (FP8 1x128 74.8 -> 76.0); INT4 g128 "
          "matched too (every scheme checked since). Written during the session and checked in "
          "a third call: the column kernel's 4-bit codes four along M (`quad_pack`: x viewed "
          "(M / 4, 4 K), two packed bytes a uint16 word), bit-exact; INT4 g128 86.5 -> 84.0 / "
          "76.8 -> 74.7 (its default since; three steps 85.3, tile_k 128 93.8), MXFP4 90.5 -> "
          "96.9 / 80.3 -> 85.6 and slower at every launch tried (off). SASS by opcode of the "
          "column kernels at their defaults then (`profile_quant_t_*_sass_s34_h100.md`), thread "
          "instructions an element: MXFP8 15.7 (PRMT 19%, 23% of the stall samples; SHFL 13% "
          "of them), INT4 g128 19.8 (LOP3 13%, FFMA 12%, FMUL 10%, FMNMX 10%; PRMT 19% of the "
          "stalls), MXFP4 23.8 (LOP3 17%, IMAD 12%, SHF 10%, FMUL 8%, VIMNMX 8%): the E2M1 "
          "encode, as in the rows. Written next and checked in a fourth call: MXFP4's row codes "
          "two elements an operation on the bf16 pair words (`pair_e2m1`, `_ptx.e2m1_pairs`: "
          "the MX factors by `mul.rn.bf16x2`, the clamp, NaN and binade by 16x2 integer SIMD, "
          "the rounding by one `fma.rn.bf16x2`), bit-exact, 70.4 -> 64.4 us (2.64 TB/s) / 62.5 "
          "-> 56.7 (its default since); INT4 g128's column launch with `quad_pack`: the default "
          "the fastest (two blocks a step 98.6, one CTA an SM 88.0, three 84.0 against 84.1); "
          "every column scheme at the defaults: MXFP8 2.47 / 2.41 TB/s, FP8 1x128 2.24 / "
          "2.19, INT4 2.02 / 1.99, MXFP4 1.88 / 1.83, NVFP4 1.01 / 1.00.", quant))



def h100_s35_section() -> list[str]:
  """Session 35: quantize on the H100 in three calls: the E2M1 codes two elements an operation
  (`pair_e2m1`) in MXFP4's column kernel (written in session 34) and NVFP4's row and column
  kernels (written this session), the launches with them, and the SASS of the three."""
  quant = [("s35 pair_e2m1 MXFP4 columns",
            _load("kernels_quant_s35_h100_pair_e2m1_mxfp4_columns.json")),
           ("s35 pair_e2m1 NVFP4 rows", _load("kernels_quant_s35_h100_pair_e2m1_nvfp4_rows.json")),
           ("s35 pair_e2m1 NVFP4 columns",
            _load("kernels_quant_s35_h100_pair_e2m1_nvfp4_columns.json")),
           ("s35 MXFP4 rows launch", _load("kernels_quant_s35_h100_mxfp4_rows_launch.json")),
           ("s35 MXFP4 columns launch",
            _load("kernels_quant_s35_h100_mxfp4_columns_launch.json")),
           ("s35 NVFP4 columns launch",
            _load("kernels_quant_s35_h100_nvfp4_columns_launch.json")),
           ("s35 NVFP4 rows launch", _load("kernels_quant_s35_h100_nvfp4_rows_launch.json"))]
  return ["", "# Session 35: H100", "", "Fused quantization only; no weight-only runs."] + (
      quant_part(
          ": E2M1 pairs in the column kernel and for NVFP4 (H100)",
          "Every config bit-exact on the four tensors. us a call (NVFP4's with its XLA amax "
          "pass; columns: the Mosaic kernel) at 8192 x 8192 / 4096 x 14336. MXFP4's column "
          "codes two elements an operation (`pair_e2m1`: the even and odd row tiles made into "
          "bf16 pair words by one `prmt`, then the row kernel's `_ptx.e2m1_pairs`): 90.5 -> "
          "78.2 / 80.4 -> 69.9 (2.17 / 2.13 TB/s; with the bf16 block amax 84.7 / 76.1, tile_k "
          "64 87.7 / 77.8), its default since. NVFP4's (`_ptx.e2m1_scaled_pairs`: each element "
          "times the block's float32 factor as the reference rounds it, the two products "
          "rounded to odd into one bf16 pair word, then the same encode): rows 135.6 -> 130.1 "
          "/ 121.1 -> 116.1 (given the amax 83.0 / 74.0, 2.07 TB/s, against 88.0 / 78.5), "
          "columns 170.5 -> 165.3 / 151.2 -> 147.0 (given the amax 117.2, 1.47 TB/s, against "
          "122.1); the default for both since. Launches with them: MXFP4 rows (2, 3) 62.0 / "
          "55.1 against (2, 4) 66.7 / 58.1 (the H100's default since; (2, 2) 62.0 / 55.2, three "
          "steps slower); MXFP4 and NVFP4 columns and NVFP4 rows: the defaults the fastest "
          "(NVFP4 columns' 4096 x 14336 row cut off by the call's limit after its configs: "
          "level). SASS by opcode at the defaults (`profile_quant_{nvfp4,t_nvfp4,t_mxfp4}"
          "_sass_s35_h100.md`), thread instructions an element: MXFP4 columns 19.4 (23.8 in "
          "session 34; VIMNMX 19% and PRMT 16% of the stall samples, SHFL 12%), NVFP4 rows 24.3 "
          "(LOP3 18%, VIMNMX 12%), NVFP4 columns 29.6.", quant))


def h100_s36_section() -> list[str]:
  """Session 36: quantize on the H100 in four calls: the row kernel's tile orders
  (`tile_order.py`) for NVFP4 after its amax pass (XLA's, and a Mosaic GPU amax pass written that
  session, then dropped) and for MXFP4 / INT4 g128, the NVFP4 order re-timed, the column kernel's
  `state_once` (written in session 35) and MXFP4's row tile."""
  quant = [("s36 NVFP4 rows tile order", _load("kernels_quant_s36_h100_nvfp4_order.json")),
           ("s36 MXFP4 / INT4 rows tile order", _load("kernels_quant_s36_h100_rows_order.json")),
           ("s36 NVFP4 rows tile order again", _load("kernels_quant_s36_h100_nvfp4_order2.json")),
           ("s36 state_once NVFP4 columns",
            _load("kernels_quant_s36_h100_state_once_nvfp4_columns.json")),
           ("s36 state_once columns", _load("kernels_quant_s36_h100_state_once_columns.json")),
           ("s36 state_once INT4 columns",
            _load("kernels_quant_s36_h100_state_once_int4_columns.json")),
           ("s36 MXFP4 rows tile", _load("kernels_quant_s36_h100_mxfp4_rows_tile.json"))]
  return ["", "# Session 36: H100", "", "Fused quantization only; no weight-only runs."] + (
      quant_part(
          ": tile orders, a Mosaic amax pass, the column state once a block (H100)",
          "Every config bit-exact on the four tensors. us a call at 8192 x 8192 / 4096 x 14336 "
          "(NVFP4 with its amax pass). NVFP4, the block pass in bands from x's end after XLA's "
          "amax pass (`tile_order=\"bands_reversed\"`: step i of every CTA reads band per - 1 - "
          "i) 129.4 -> 127.9 / 115.5 -> 113.5, from x's start 129.7 / 115.4 (level): the "
          "default since. The amax pass as a Mosaic GPU kernel (bf16 pair words' row maxima "
          "carried through each CTA's pipeline, bands from x's start) 131.4 / 117.1 in slabs, "
          "130.3 / 115.5 in reversed bands: 2 us slower than XLA's reduction, which reads x at "
          "3.0-3.1 TB/s (43-45 us at 8192 x 8192): dropped. One-pass schemes at 8192 x 8192, "
          "slabs / bands / reversed bands: MXFP4 60.5 / 60.3 / 60.2 (level, within the noise; "
          "the table's best), INT4 g128 62.3 / 65.1 / 64.5 (slabs kept). Re-timed, each order "
          "twice: reversed bands 128.4 / 128.3 and 113.9 / 114.1 against slabs 130.4 / 130.2 and "
          "115.9 / 116.1. The column kernel's block state once a block through shared memory "
          "(`state_once`, a step's blocks in one round trip): bit-exact for every scheme; NVFP4 "
          "165.3 -> 158.4 / 146.9 -> 141.0 (its default since), MXFP8 82.4 -> 90.1, FP8 1x128 "
          "91.1 -> 91.2, MXFP4 78.3 -> 86.1, INT4 g128 at tile_k 128 93.1 -> 94.7 (84.3 at its "
          "default tile_k): off there. MXFP4 rows in 128-row tiles: 1-13% slower than the "
          "default's 256 at every launch tried (default 62.1 / 55.3 in this call: 2.5% of "
          "run-to-run spread against the first call's 60.5).", quant))


def h100_s37_section() -> list[str]:
  """Session 37: three H100 calls (after nine starts failed or were refused): the FP4
  decode's two session-37 paths (MXFP4's multipliers folded with the E2M1 decode's 2^126, E2M1
  codes in the halves order) against the defaults, decode and prefill; the FP4 decode and
  NVFP4's column quantize by SASS opcode; NVFP4's column launch with its block state once a
  block; the E4M3 row schemes in the band orders."""
  quant = [("s37 E4M3 rows tile order", _load("kernels_quant_s37_h100_e4m3_rows_order.json")),
           ("s37 NVFP4 columns launch",
            _load("kernels_quant_s37_h100_nvfp4_columns_launch.json"))]
  md = wo_section(37, (
      "h100_fp4_decode", "h100_fp4_decode2", "h100_fp4_decode3", "h100_nvfp4_halves",
      "h100_nvfp4_halves2", "h100_nvfp4_halves3"),
      "Every config checked against the f32 reference in the same run, rel. err as the "
      "default's in every row (1.65-1.67e-3). us a call at 8192 x 28672. MXFP4's bf16 "
      "multipliers folded with the E2M1 bit decode's 2^126 (`mx_fold`: 2^(e - 1), so the "
      "decode's one `mul.rn.bf16x2` scales too; E8M0 codes <= 128) and its codes in the halves "
      "order (`halves`: each register's pair in a word's two 16-bit halves, an AND and an IMAD "
      "a pair, no `prmt`): M = 1 59.5 -> 58.8 (fold) / 58.4 (halves) / 57.5 (both), again 59.1 "
      "-> 56.9; M = 8 58.7 -> 57.1; M = 16 61.8 -> 60.6 / 60.6 / 59.1; 4096 x 14336 M = 1 17.6 "
      "-> 16.4 (both, without the fused sum the default had: the variant's gate left it off, "
      "`decode_plan.base_case` since); prefill M = 1024 at 4096 x 14336 187.7 -> 181.2. Both "
      "the GPU default for MXFP4 since where its decode runs on bf16 tensor cores (not the "
      "H200, where `fp8_x` reads neither). NVFP4 in the halves order M = 1 63.7 -> 62.3 and "
      "63.2 -> 62.5; M = 16 63.7 -> 64.4 and 4096 x 14336 M = 1 17.4 -> 18.6 without the fused "
      "sum its default had: not a default. SASS at M = 1 (`profile_wo_{mxfp4,nvfp4}_m1_sass_"
      "s37_h100.md`, the defaults before this session): MXFP4 29.5 M warp instructions, LOP3 "
      "25%, HMUL2 25% (two a pair: the bit decode's 2^126 and the scale), IMAD 14%, PRMT 12%, "
      "HGMMA 3%; NVFP4 26.7 M, one HMUL2 a pair (13.7%). Folding and the halves order take out "
      "one HMUL2 and one PRMT a pair, a quarter of MXFP4's instructions, for 3-4% of its time: "
      "the decode is not bound by issue alone.", device="H100", quant_runs=quant)
  return md + quant_part(
      ": E4M3 rows in bands, NVFP4's column launch (H100)",
      "Every config bit-exact on the four tensors. us a call at 8192 x 8192 / 4096 x 14336. "
      "Row tile orders slabs / bands / reversed bands: MXFP8 73.5 / 71.7 / 71.8 and 65.1 / "
      "63.0 / 63.1 (2.84 / 2.83 TB/s in bands: the 2.8 target met at both shapes), FP8 1x128 "
      "74.7 / 74.4 / 74.4 and 66.6 / 65.2 / 65.2 (2.74 / 2.73): bands the default for both "
      "since. NVFP4's columns with the block state once a block (the default since session "
      "36): 158.2 at its default launch, 158.5-169.6 at five others (nb 8, tile_k 256 or 64, "
      "three steps, three CTAs an SM): the default kept; SASS "
      "(`profile_quant_t_nvfp4_sass_s37_h100.md`) 24.9 thread instructions an element "
      "(29.6 before `state_once`), VIMNMX 13% and PRMT 9% of them, PRMT 16% of the stall "
      "samples.", quant)


def h100_s39_section() -> list[str]:
  """Session 39: three short H100 calls (after thirteen starts failed): the two smaller scale
  storages, FP4 scale bytes each their multiplier by one IMAD (session 38) and INT4 scales as
  the bf16 amaxes they are RN(a / 7) of (session 39), against the defaults."""
  return wo_section(39, (
      "h100_mxfp4_bytes_m1", "h100_mxfp4_bytes_halves", "h100_nvfp4_bytes_m1",
      "h100_nvfp4_bytes_m16", "h100_int4_g32_amax_m1", "h100_int4_amax", "h100_int4_g64_amax",
      "h100_int4_amax_4096x14336"),
      "Every config checked against the f32 reference in the same run, rel. err as the "
      "default's in every row. us a call at 8192 x 28672. FP4 scale bytes each their bf16 "
      "multiplier by one IMAD (`byte_multipliers`: 1 byte a group read in place of 2): MXFP4 "
      "M = 1 56.4 -> 55.0 in the byte-pair order, 56.3 -> 53.4 in the halves order (2.88x XLA "
      "bf16), M = 16 58.5 -> 56.2; NVFP4 M = 1 61.1 -> 58.5, M = 16 60.0 -> 57.7. INT4 scales "
      "as bf16 amaxes (`amax_scales`: 2 bytes a group in place of 4, each scale rebuilt by a "
      "multiply and two FMAs): g32 M = 1 57.5 -> 54.3 and 57.7 -> 53.8 (2.85x), M = 16 61.7 -> "
      "58.0; g64 M = 1 52.5 -> 51.4; g128 M = 1 48.2 -> 47.5, M = 16 50.5 -> 49.0; at 4096 x "
      "14336 M = 1 g32 17.4 -> 18.0, g128 15.0 -> 15.1. Both storages' decode gates opened; "
      "neither is `repack`'s default yet (the small shape, the other M and the prefill GEMM's "
      "byte path are unmeasured: `next_gpu_session.sh h100b`, run in session 40).", device="H100")


def h100_s40_section() -> list[str]:
  """Session 40: seven H100 calls (every start succeeded): the smaller scale storages at
  the other shapes and M, and the prefill GEMM's byte path; FP4 byte multipliers in the halves
  order became `repack`'s GPU default, checked through `wo_matmul`'s own default path."""
  return wo_section(40, (
      "h100_fp4_bytes_4096x14336", "h100_nvfp4_bytes_halves", "h100_fp4_bytes_m64_256",
      "h100_fp4_bytes_gemm", "h100_mxfp4_new_default", "h100_nvfp4_new_default",
      "h100_nvfp4_halves", "h100_mxfp4_old_storage", "h100_mxfp4_old_storage_4096x14336",
      "h100_int4_amax_4096x14336", "h100_int4_amax_m64_256", "h100_fp4_default_m8_32",
      "h100_fp4_default_4096x14336", "h100_int4_amax_gemm", "h100_int4_g64_gemm"),
      "Every config checked against the f32 reference in the same run, rel. err as the "
      "default's in every row. us a call. FP4 scale bytes each their multiplier by one IMAD "
      "in the halves order, against the bf16 multipliers in the byte-pair order (MXFP4's "
      "folded; the bench's `{}` until this session: it did not take `repack`'s halves order): "
      "4096 x 14336 M = 1 MXFP4 16.6 -> 15.1, NVFP4 17.4 -> 16.1, M = 16 17.5 -> 15.7 / 17.7 -> "
      "16.8; 8192 x 28672 NVFP4 M = 1 61.3 -> 55.7, M = 16 60.0 -> 54.2; M = 64 MXFP4 72.4 -> "
      "68.1, NVFP4 73.9 -> 70.7; M = 256 (prefill GEMM) 178.4 -> 173.3 / 184.9 -> 179.4; M = "
      "1024 at 4096 x 14336 184.3 -> 181.2 / 191.8 -> 185.9. Against the defaults before "
      "(MXFP4 folded in the halves order, NVFP4 bf16 multipliers in the byte-pair order), the "
      "new default (`{}` in the new_default rows): MXFP4 M = 1 54.8 -> 54.1, M = 16 57.7 -> "
      "56.6; NVFP4 61.4 -> 56.6, 59.2 -> 53.8. NVFP4's halves order alone: 61.2 -> 60.2, "
      "60.5 -> 59.0, at 4096 x 14336 17.4 -> 16.1, 17.6 -> 16.4. INT4's bf16 amax scales "
      "stay opt-in: 4096 x 14336 g32 M = 1 / 16 17.4 -> 17.9 / 18.1 -> 18.7, g128 15.1 -> "
      "15.1 / 15.7 -> 16.1; 8192 x 28672 M = 64 g32 89.7 -> 90.7, g128 67.2 -> 67.9; the "
      "prefill GEMM widens them in XLA first (M = 256 g32 194.1 -> 236.0, g128 194.8 -> "
      "206.1). The new default at the other M (`next_gpu_session.sh h100`, rewritten), against "
      "MXFP4's old default / NVFP4's: 8192 x 28672 M = 8 MXFP4 54.5 -> 53.5, NVFP4 60.8 -> "
      "55.5; M = 32 59.1 -> 56.2 / 64.7 -> 58.9; 4096 x 14336 M = 8 15.0 -> 15.3 (2% slower) "
      "/ 17.0 -> 15.7, M = 64 MXFP4 28.4 -> 28.2 (NVFP4's row cut off). The prefill GEMM "
      "rebuilding INT4's amax scales itself (`amax_in_kernel`, written that session) against "
      "XLA widening them (float32 scales): M = 256 g32 237.9 -> 200.7 (195.5), g128 207.6 -> "
      "195.9 (195.6), M = 1024 g64 733.2 -> 723.2 (707.7; dequant_gemm 951.7, the GEMM's INT4 "
      "g64 gate opened).", device="H100")


def h100_s41_section() -> list[str]:
  """Session 41: four H100 calls and a SASS profile (two starts refused first): the rows at M =
  32 / 64 last timed with older kernels, FP4's new default at 4096 x 14336, and the M = 32 / 64
  launch sweep, which moved INT4 / UINT4 / NF4 there to 128-row tiles."""
  return wo_section(41, (
      "h100_fp4_default_m32_4096x14336", "h100_nvfp4_default_m64_4096x14336",
      "h100_sweep_m32_64_4096x14336", "h100_sweep_m64_4096x14336_b", "h100_m32_4096x14336",
      "h100_8bit_m32_64_4096x14336", "h100_4096x4096", "h100_m32_8192x28672",
      "h100_sweep_m64_8192x28672"),
      "Every config checked against the f32 reference in the same run, rel. err as the "
      "default's in every row. us a call. FP4's default since session 40 (scale bytes each "
      "their multiplier, halves order) against the storages before at 4096 x 14336: MXFP4 M = "
      "32 24.2 (bf16 multipliers, byte-pair order) / 23.8 (halves order) -> 23.0; NVFP4 M = 64 "
      "30.8 / 29.7 -> 29.3 (M = 32 cut off after the default's 24.1). The wide config (M > 16) "
      "in 128-row tiles, `{\"tile_n\": 128, \"gps\": 2, \"steps\": 3, ...}`, against the "
      "default's 256 at 4096 x 14336: INT4 g128 M = 32 22.9 -> 21.0, M = 64 28.8 -> 24.2; g64 "
      "M = 32 23.1 -> 21.3; UINT4 g128 M = 64 32.6 -> 28.4, g32 39.7 -> 37.7; NF4 g64 M = 64 "
      "29.4 -> 26.8 (the H100's default there since, `configs.WIDE_128_DEVICES`); at 8192 x "
      "28672 M = 64 it loses (NVFP4 71.5 -> 77.7, UINT4 85.5 -> 88.1). Rows last timed in "
      "sessions 3-25: 8192 x 28672 M = 32 NF4 g64 67.3 (457.6 in session 3), UINT4 65.9, INT4 "
      "g32 72.9, g64 64.5; 4096 x 14336 FP8 M = 32 / 64 24.3 / 30.3 (37.2 at M = 64 before), "
      "INT8 24.2 / 30.0. 4096 x 4096 M = 64: INT4 and MXFP4 23.7 us, 0.87x XLA bf16 (M = 1 "
      "7.4 / 7.6, 2.16x / 2.11x): the wide config's 16 tiles of 256 rows, unswept there.",
      device="H100")


def h100_s42_section() -> list[str]:
  """Session 42: four H100 calls (after some dozen refused starts): 4096 x 4096 at M = 32 / 64,
  which moved INT4 g128 / MXFP4 / NVFP4 there to 128-row tiles with XLA's sum, and two checks
  of the fused sum elsewhere."""
  return wo_section(42, (
      "h100_sweep_m32_64_4096x4096", "h100_fp4_m64_4096x4096", "h100_nvfp4_m32_4096x4096",
      "h100_int4_one_slot_4096x4096", "h100_int4_fused_sum_4096x14336"),
      "Every config checked against the f32 reference in the same run, rel. err as the "
      "default's in every row. us a call. At 4096 x 4096 above M = 16 the wide config's 16 "
      "tiles of 256 rows spread over 128 stream-K CTAs, eight a tile, whose partial sums the "
      "slot-0 CTA waited on and added in turn (`fused_sum`): XLA's sum instead, in 256- or "
      "128-row tiles, INT4 g128 M = 32 16.5 -> 10.2 / 9.1, M = 64 23.8 -> 13.2 / 11.3; MXFP4 "
      "16.6 -> 10.4 / 8.8 and 23.8 -> 13.6 / 11.1; NVFP4 17.0 -> 10.7 / 9.3 and 23.9 -> 13.6 / "
      "11.2 (0.87x -> 1.82-1.96x XLA bf16; 128 rows with the fused sum 11.5 / 13.8 for INT4): "
      "the H100's default there since (`configs.FEW_TILES_DEVICES`). At 4096 x 14336 (about a "
      "CTA a tile) the fused sum stays: INT4 g128 M = 32 21.0 -> 20.4 without it, M = 64 24.2 "
      "-> 25.8. INT4 g128 at 4096 x 4096 M = 1 / 16, one CTA a 64-row tile writing y itself: "
      "7.5 -> 11.0, 7.6 -> 11.2 (dropped). The first call was cut off in MXFP4 M = 64's row "
      "after its default (23.6); the second timed that row with three configs.",
      device="H100")


def h100_s43_section() -> list[str]:
  """Session 43: three H100 calls on one machine (after some ten refused starts): the fused sum
  by plain loads (`slot_loads`) and spread over a tile's writers (`spread_sum`) checked and
  timed, and the few-tile config for UINT4 and INT8 at 4096 x 4096."""
  return wo_section(43, (
      "h100_fused_sum_4096x4096", "h100_fused_sum_m1_4096x4096", "h100_slot_loads_8192x28672",
      "h100_uint4_few_tiles_4096x4096", "h100_int8_few_tiles_4096x4096"),
      "Every config checked against the f32 reference in the same run, rel. err as the "
      "default's in every row. us a call. INT4 g128 at 4096 x 4096, the default (128-row tiles, "
      "XLA's sum) against the fused sum by TMA copies, by plain loads (`slot_loads`) and spread "
      "over the tile's four writers (`spread_sum`): M = 32 9.2 / 11.3 / 10.7 / 12.7, M = 64 "
      "11.1 / 13.7 / 12.9 / 14.7; M = 1 7.4 / 10.1 / 8.2. The unfused kernel alone 7.5 us at M = "
      "32, XLA's sum 1.7; the fused sum costs the kernel 3.1 us even by plain loads, a chain of "
      "latencies (store, signal, wait, load, store), and spreading it made every writer wait "
      "(`spread_sum`, commit 0aee41a, removed). At 8192 x 28672 M = 64 slot_loads ties (67.9 -> "
      "68.0). UINT4 g128 in 128-row tiles M = 32 12.1 -> 11.1, M = 64 16.1 -> 13.4; INT8 M = 64 "
      "without its fused sum 15.5 -> 12.9: the defaults since. MXFP4's rows and NF4 / INT4 g32 "
      "were cut off.",
      device="H100")


def h100_s45_section() -> list[str]:
  """Session 45: four H100 calls on one machine (the first start taken): the queue's parts
  `h100`, `h100d`, `h100b` and `h100c`, which checked `slot_stores` and `channel_scale_out`,
  made the prefill GEMM's channel scale on the sum the INT8 / FP8 default, and moved the wide
  config to 128-row tiles below N = 16384 for every 4-bit format."""
  return wo_section(45, (
      "h100_few_tiles_nf4_int4_g32_4096x4096", "h100_fp8_fused_sum_4096x4096",
      "h100_int8_fused_sum_4096x4096", "h100_slot_stores_64_rows_4096x4096",
      "h100_load_split_4096x4096", "h100_channel_scale_out_8192x28672",
      "h100_channel_scale_out_4096x14336", "h100_fp4_128_rows_4096x14336",
      "h100_256_rows_m32_4096x14336", "h100_256_rows_m64_4096x14336",
      "h100_fused_sum_4096x14336", "h100_4096x11008"),
      "Every config checked against the f32 reference in the same run, rel. err as the "
      "default's in every row but the prefill's. us a call. The INT8 / FP8 prefill GEMM with "
      "each channel's scale on the float32 sum (`channel_scale_out`, session 44) at M = 1024: "
      "rel. err 1.66e-3 against 2.35-2.37e-3 (no weight rounded to bf16), 8192 x 28672 INT8 "
      "773.1 -> 709.7 (0.87x -> 0.95x XLA bf16), FP8 720.0 -> 686.2 (0.94x -> 0.98x); 4096 x "
      "14336 INT8 219.8 -> 200.1 (0.99x), FP8 203.5 -> 193.2 (1.02x): the default since. The "
      "fused sum's writers by plain stores (`slot_stores`, session 44), INT4 g128 at 4096 x "
      "4096: correct, slower than plain loads alone (M = 1 8.2 -> 8.7, M = 32 10.7 -> 10.8; XLA's "
      "sum 7.4 / 9.1): checked, off. 64-row tiles on two stream-K CTAs an SM with XLA's sum "
      "there: M = 1 7.4 -> 6.9, M = 32 9.1 -> 8.2, the INT4 g128 default at M <= 32 since; the "
      "128-row pipeline with an empty body (`--load-split`) takes 5.9 / 7.2 us, above the "
      "64-row kernel's 5.7 / 6.5. 128-row tiles at 4096 x 4096 for NF4 g64 (M = 32 11.4 -> "
      "10.4, M = 64 14.2 -> 12.3) and INT4 g32 (11.2 -> 9.7); the 8-bit fused sum there loses "
      "(FP8 M = 32 11.0 -> 13.5, M = 64 12.6 -> 15.7, INT8 M = 32 11.1 -> 13.6). At 4096 x "
      "14336 MXFP4 in 128-row tiles M = 32 22.5 -> 20.6, M = 64 28.1 -> 23.2; 128 rows against "
      "256 INT4 g32 21.9 / 26.4 (M = 32), 30.2 / 33.9 (M = 64), UINT4 g128 23.6 / 24.3, g32 27.7 / "
      "30.1; XLA's sum against the fused INT4 g128 M = 32 20.9 -> 20.8, M = 64 24.1 -> 25.5, "
      "NVFP4 M = 32 23.1 -> 23.0 (the fused sum stays). 4096 x 11008 M = 64 in 128-row tiles: "
      "INT4 g128 27.1 -> 22.6, MXFP4 26.8 -> 21.3 (XLA's sum 23.1 / 22.7): the wide config in "
      "128 rows below N = 16384 for every 4-bit format since. NVFP4 at 4096 x 14336 M = 32 / 64, "
      "NF4 g64 M = 32 and INT4 g64 M = 64 there were cut off after their defaults (the parts' "
      "time limits short of the compile times).",
      device="H100")


SECTIONS = (h100_s34_section, h100_s35_section, h100_s36_section, h100_s37_section,
            h100_s39_section, h100_s40_section, h100_s41_section, h100_s42_section,
            h100_s43_section, h100_s45_section)
