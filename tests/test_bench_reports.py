"""The kernel benchmarks' bookkeeping, which runs without a GPU: which measurement stands for a
case and whether it meets issue 8's targets (experiments/bench_kernels_standing.py), and the
wgmma-rate benchmark's occupancy and tables (experiments/bench_wgmma_rate.py)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")


@pytest.fixture(name="standing")
def _standing(monkeypatch):
  monkeypatch.syspath_prepend(EXPERIMENTS)  # the experiments import each other as scripts do
  import bench_kernels_standing  # pylint: disable=g-import-not-at-top
  return bench_kernels_standing


def _wo(fmt="int4", m=1, us=40.0, tbps=3.3, x_bf16=2.9, x_deq=20.0, correct=True):
  return dict(fmt=fmt, M=m, K=8192, N=28672, kernel_s=us * 1e-6, kernel_TBps=tbps,
              x_vs_xla_bf16=x_bf16, x_vs_xla_dequant_dot=x_deq, correct=correct, config={})


def _quant(scheme="mxfp4", us=70.0, tbps=2.4, x=3.0, random=0, **extra):
  return dict(scheme=scheme, M=8192, K=8192, orientation="row-wise", kernel_s=us * 1e-6,
              kernel_TBps=tbps, x_vs_xla=x, mismatch_random=random, mismatch_special=0,
              mismatch_ties=0, mismatch_nonfinite=0, bit_exact=random == 0, xla_s=2e-4, **extra)


def test_wo_targets_by_regime(standing):
  t = standing.wo_targets
  assert [(n, ok) for n, ok, _ in t(_wo())] == [("2.6 TB/s", True), ("3.2x XLA bf16", False)]
  assert [n for n, _, _ in t(_wo(m=32))] == ["2.5x XLA bf16"]  # no bandwidth target above 16
  assert [n for n, _, _ in t(_wo(m=64))] == ["2.2x XLA bf16"]
  eight = t(_wo(fmt="int8-bf16", m=64, tbps=2.8, x_bf16=1.7))  # a bf16-scale spec is INT8 too
  assert [(n, ok) for n, ok, _ in eight] == [("2.7 TB/s", True), ("1.8x XLA bf16", False)]
  prefill = t(_wo(m=1024, x_bf16=0.91, x_deq=0.99))
  assert [(n, ok) for n, ok, _ in prefill] == [("0.9x XLA bf16", True),
                                               ("1x XLA dequant+dot", False)]
  assert t(_wo(x_bf16=1.6))[1][2] == pytest.approx(0.5)


def test_best_rows_keeps_the_fastest_checked_run(standing):
  runs = [("a.json", {"wo_matmul": [_wo(us=40.0), _wo(us=30.0, correct=False)],
                      "fused_quantize": [_quant(us=70.0), _quant(us=50.0, random=3)]}),
          ("b.json", {"wo_matmul": [_wo(us=38.0), _wo(m=16, us=45.0)],
                      "fused_quantize": [_quant(scheme="nvfp4", us=130.0, given_amax_s=9.6e-5,
                                                given_amax_TBps=1.8, mismatch_given_amax=0)]})]
  wo = standing.best_rows(runs, "wo_matmul")
  assert {k: (round(r["kernel_s"] * 1e6, 6), name) for k, (r, name) in wo.items()} == {
      ("int4", 8192, 28672, 1): (38.0, "b.json"), ("int4", 8192, 28672, 16): (45.0, "b.json")}
  quant = standing.best_rows(runs, "fused_quantize")
  assert quant[("mxfp4", "row-wise", 8192, 8192)][0]["kernel_s"] == pytest.approx(70e-6)  # 50: inexact
  given = quant[("nvfp4 given amax", "row-wise", 8192, 8192)][0]
  assert given["kernel_s"] == 9.6e-5 and given["kernel_TBps"] == 1.8
  assert given["x_vs_xla"] == pytest.approx(2e-4 / 9.6e-5)


def test_around_us_sums_the_xla_kernels_beside_the_mosaic_one(standing):
  r = dict(kernel_us={"input_reduce_fusion": 1.25, "kernel_mosaic_gpu_kernel": 56.8,
                      "loop_slice_fusion_1": 2.0})
  assert standing.around_us(r) == pytest.approx(3.25)
  assert standing.around_us(dict(kernel_us={"kernel_mosaic_gpu_kernel": 50.0})) == 0.0
  assert standing.around_us({}) is None


def test_time_split_adds_up_to_each_case_s_time(standing, tmp_path):
  # The committed H200 runs: each decode case with a profile, split into its load floor, the
  # kernel above it and the XLA kernels around it, which add up to its time; the target tick
  # is the time its XLA bf16 ratio asks for.
  rows = standing.time_split("H200")
  cases = {r["case"]: r for r in rows}
  assert "int4 M=1" in cases and "int8 M=64" in cases
  for r in rows:
    assert r["kernel_us"] + r["around_us"] == pytest.approx(r["us"])
    assert 0 < r["load_us"] <= r["kernel_us"]
  int4 = cases["int4 M=1"]  # 3.2x XLA bf16 at M = 1, missed: the target is under its time
  assert int4["target_us"] < int4["us"] and int4["around_us"] > 0
  path = tmp_path / "split.png"
  standing.time_split_png(rows, "test", str(path))
  assert path.stat().st_size > 1000


def test_wo_floors_load_and_mma(standing):
  # The decode's floors: its bytes at the copy rate, and its wgmma with N = M padded to 8 at
  # the rate measured for that N (two warpgroups an SM); prefill: the GEMM at XLA's bf16 rate.
  run = dict(copy_Bps=4.0e12, bf16_gemm_flops=8.0e14)
  rates = {8: 140.0, 64: 700.0}
  r = dict(_wo(m=1), weight_bytes=120e6)
  load, mma = standing.wo_floors_us(r, run, rates)
  assert load == pytest.approx(30.0) and mma == pytest.approx(2 * 8 * 8192 * 28672 / 140e6)
  assert standing.wo_floors_us(dict(r, M=5), run, rates)[1] == pytest.approx(mma)  # N = 8 too
  assert standing.wo_floors_us(dict(r, M=16), run, rates)[1] is None  # N = 16 unmeasured
  assert standing.wo_floors_us(dict(r, M=64), run, rates)[1] == pytest.approx(
      2 * 64 * 8192 * 28672 / 700e6)
  assert standing.wo_floors_us(dict(r, M=1024), run, rates)[1] == pytest.approx(
      2 * 1024 * 8192 * 28672 / 8e8)
  rates = standing.mma_rates("H200")  # session 16's table: N = 8 .. 256, two warpgroups an SM
  assert 130 < rates[8] < 150 and 700 < rates[64] < 760


def test_column_wise_has_its_own_target(standing):
  col = dict(_quant(tbps=2.3), orientation="column-wise")
  assert [(n, ok) for n, ok, _ in standing.quant_targets(col, "column-wise")] == [
      ("2.4 TB/s", False)]
  import bench_kernels_report  # pylint: disable=g-import-not-at-top  (on the path: `standing`)
  rows = [dict(col, frac_copy_bw=0.7, xla_TBps=1.0),
          dict(_quant(tbps=2.5), frac_copy_bw=0.8, xla_TBps=1.0)]
  table = bench_kernels_report.quant_table([("t", {"fused_quantize": rows})]).splitlines()
  assert [ln.split(" | ")[-2] for ln in table[2:]] == ["BW MISSED (96%)",
                                                        "BW MISSED (89%), ratio met"]


def test_bandwidth_share_splits_time_by_what_scales(standing):
  # t = stream + rest on the fast device, stream * bw + rest on the slow one
  for stream, rest in ((30.0, 0.0), (0.0, 40.0), (25.0, 15.0)):
    share = standing.bandwidth_share(stream * 1.42 + rest, stream + rest, 1.42)
    assert share == pytest.approx(stream / (stream + rest))


def test_page_from_the_committed_results(standing):
  page = standing.page()
  assert "## NVIDIA H200" in page and "## NVIDIA H100" in page
  rows = [ln for ln in page.splitlines() if ln.startswith("| int4 | 8192x28672 | 1 |")]
  assert len(rows) == 2  # one a device
  scaling = standing.device_scaling()  # session 22's H100 runs against the H200's
  assert scaling[0].startswith("## H100 against H200") and any(
      "| wo_matmul | int4 8192 28672 1 |" in ln for ln in scaling)
  assert standing.device_scaling(since="2100-01-01") == []


def test_stream_asks_counts_the_stored_bytes(standing):
  # What 3.2x asks of the stream: a storage's bytes as the decode reads them (FP4's bf16
  # multipliers 2 bytes a group, their bytes 1; INT4's float32 scales 4), against the H100's
  # committed runs (copy ~3.03 TB/s, XLA bf16 GEMV ~158 us at 8192 x 28672).
  codes = 8192 * 28672 // 2
  groups = lambda g: 8192 // g * 28672
  for preset, storage, want in [("nvfp4", "bf16", codes + 2 * groups(16)),
                                ("nvfp4", "bytes", codes + groups(16)),
                                ("mxfp4", "bf16", codes + 2 * groups(32)),
                                ("int4_g128", "bytes", codes + 4 * groups(128))]:
    assert standing.stored_bytes(preset, {}, storage, 8192, 28672) == want, (preset, storage)
  md = standing.stream_asks()
  assert md[0] == "## What 3.2x asks of the 4-bit decode's stream (H100, M = 1)"
  row = next(ln for ln in md if ln.startswith("| NVFP4 (bf16 multipliers) |"))
  cell = row.split("|")[2].strip()  # 8192 x 28672: the stream alone takes ~98%
  share = int(cell.rsplit("(", 1)[1].rstrip("%)"))
  assert cell.startswith("146.8, 48.") and 95 <= share <= 101, cell
  assert standing.stream_asks(since="2100-01-01") == []


def test_every_session_section_builds_from_the_committed_results(standing, monkeypatch):
  # Each session's report section reads its result files (a missing or renamed one fails here,
  # not at the next report); the roofline plots are left alone.
  del standing  # (puts experiments/ on the path)
  import bench_kernels_report  # pylint: disable=g-import-not-at-top
  import bench_kernels_sessions  # pylint: disable=g-import-not-at-top
  for module in (bench_kernels_report, bench_kernels_sessions):
    monkeypatch.setattr(module, "roofline", lambda *a, **k: None)
  heads = [section()[1] for section in bench_kernels_report.session_sections()]
  assert heads[0] == "# Session 6: H200" and heads[-1] == "# Session 45: H100"
  assert len(set(heads)) == len(heads)


def test_wgmma_rate_counts_resident_ctas_and_writes_as_it_goes(monkeypatch, tmp_path):
  monkeypatch.syspath_prepend(EXPERIMENTS)
  import bench_kernels_common as C  # pylint: disable=g-import-not-at-top
  import bench_wgmma_rate as W  # pylint: disable=g-import-not-at-top
  x = lambda n: jax.ShapeDtypeStruct((n, W.K_TILE), jnp.bfloat16)
  f = lambda n, rows: W.wgmma_rate_kernel(n, rows, chain=8, reps=2, ctas=264)
  wide = C.mosaic_smem_bytes(f(256, 64), x(256))  # x^T 64 KiB + the f32 output tile 64 KiB
  assert wide >= 256 * 128 * 2 + 64 * 256 * 4 and C.ctas_per_sm(wide) == 1
  assert C.ctas_per_sm(C.mosaic_smem_bytes(f(64, 128), x(64))) >= 2
  res = dict(device="test", jax_version="0", date="today", bf16_gemm_flops=8e14)
  rows = [dict(n=256, rows=64, ctas_per_sm=2, resident=1, tflops=500.0, frac_xla_gemm=0.625,
               correct=True),
          dict(n=8, rows=64, ctas_per_sm=1, resident=1, error="ValueError: x")]
  W.write(res, rows, str(tmp_path), chain=8)
  md = (tmp_path / "wgmma_rate.md").read_text()
  assert "| 2 / 1 | 64 | 256 | 500 | 62% | True |" in md and "failed: ValueError" in md
  assert (tmp_path / "wgmma_rate.json").exists()


def test_configs_table_compares_each_config_with_the_first(monkeypatch):
  # The table a gate is opened from: each timed config of a row against the row's first, its
  # check as its run recorded it, a failed config's error, and a row cut off mid-way.
  monkeypatch.syspath_prepend(EXPERIMENTS)
  import bench_configs_table  # pylint: disable=g-import-not-at-top
  wo = dict(fmt="int4", K=8192, N=28672, M=1, rel_err=1.6e-3, configs_timed=[
      dict(config={}, time_s=40e-6, rel_err=1.6e-3),
      dict(config={"fused_sum": True}, time_s=38e-6, rel_err=1.6e-3,
           kernel_us={"kernel_mosaic_gpu_kernel": 37.2, "loop_broadcast_fusion": 0.3}),
      dict(config={"fused_sum": True, "splits": 2}, error="ValueError: fused_sum needs"),
      dict(config={"w_tile": [128, 512]}, time_s=39e-6, rel_err=float("nan"))])
  quant = dict(scheme="nvfp4 (column-wise)", M=8192, K=8192, kernel_s=150e-6, config={},
               mismatch_by_config=[dict(config={}, mismatches=[0, 0, 0, 0]),
                                   dict(config={"state_once": True}, mismatches=[0, 3, 0, 0])],
               configs_timed=[dict(config={}, time_s=150e-6),
                              dict(config={"state_once": True}, time_s=140e-6)])
  cut = dict(fmt="mxfp4", K=8192, N=28672, M=1,
             configs_timed=[dict(config={}, time_s=48e-6, rel_err=1.7e-3)])
  res = dict(device="NVIDIA H200", wo_matmul=[wo], fused_quantize=[quant], in_progress=cut)
  rows = bench_configs_table.config_rows(res)
  assert rows[1] == ("int4 8192x28672 M=1", '{"fused_sum": true}', "38.0", "0.950x", "0.3",
                     "-", "rel err 0.0016")
  assert rows[0][4] == "-"  # no profile recorded for the first config
  assert rows[2][6].startswith("error: ValueError") and rows[2][2] == "-"
  assert rows[3][6].endswith("WRONG")  # NaN never passes
  assert rows[5] == ("nvfp4 (column-wise) 8192x8192", '{"state_once": true}', "140.0",
                     "0.933x", "-", "-", "[0, 3, 0, 0] mismatches WRONG")
  assert rows[6][0] == "mxfp4 8192x28672 M=1 (cut off)" and rows[6][3] == "1.000x"
  text = bench_configs_table.markdown("kernels_wo_x.json", res)
  assert text.count("\n| ") == 7 + 1  # the header and one line a config
  # runs before session 24 profiled only the row's fastest config: its XLA time, the rest -
  old = dict(fmt="int8", K=8192, N=28672, M=1, config={"fp8_x": True}, kernel_s=62e-6,
             kernel_us={"kernel_mosaic_gpu_kernel": 56.2, "input_reduce_fusion": 1.25},
             configs_timed=[dict(config={}, time_s=64e-6, rel_err=1.7e-3),
                            dict(config={"fp8_x": True}, time_s=62e-6, rel_err=1.7e-3)])
  assert [r[4] for r in bench_configs_table.config_rows(dict(wo_matmul=[old]))] == ["-", "1.2"]
  # `--load-split`: each config's pipeline with an empty body, or a one-config row's own
  split = dict(old, load_only_s=50e-6, configs_timed=[
      dict(config={}, time_s=64e-6, rel_err=1.7e-3, load_only_s=51e-6),
      dict(config={"fp8_x": True}, time_s=62e-6, rel_err=1.7e-3, load_only_s=50e-6)])
  alone = {k: v for k, v in old.items() if k != "configs_timed"} | dict(load_only_s=5.3e-6,
                                                                        rel_err=1.7e-3)
  assert [r[5] for r in bench_configs_table.config_rows(dict(wo_matmul=[split, alone]))] == [
      "51.0", "50.0", "5.3"]
