"""experiments/bench_tma_stream.py on the CPU: its sweep plans and lowers, and a run end to end
with only the GPU replaced (CUPTI timing, copy bandwidth, and the kernel, by its plan)."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")


@pytest.fixture(name="sweep")
def _sweep(monkeypatch):
  monkeypatch.syspath_prepend(EXPERIMENTS)
  import bench_tma_stream  # pylint: disable=g-import-not-at-top
  return bench_tma_stream


def test_the_sweep_resolves_distinct_launches_today_s_among_them(sweep):
  from pallas_kernels import _compat  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import decode_plan  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import mosaic_gpu  # pylint: disable=g-import-not-at-top
  pw = jax.eval_shape(sweep.weight, jax.random.key(0))
  configs = sweep.distinct_configs(pw)
  launches = [r for _, r in configs]
  assert len(configs) >= 20 and len(set(launches)) == len(launches)
  p = decode_plan.plan_decode(1, sweep.K, pw)  # today's default launch is one of them
  assert (p.tile_n, p.gps, p.steps, p.schedule.grid) in launches
  x = jax.ShapeDtypeStruct((1, sweep.K), jnp.bfloat16)
  for cfg, _ in configs[:: len(configs) // 3]:  # a few, whole: the empty-body kernel lowers
    fn = lambda x, q, c=cfg: mosaic_gpu.wo_matmul_mosaic_gpu(x, q, load_only=True,
                                                              allow_unverified=True, **c)
    assert "mosaic_gpu" in _compat.lower_for("cuda", fn, x, pw).as_text()


def test_a_run_writes_every_row_and_the_table(sweep, monkeypatch, tmp_path):
  import bench_kernels_common as C  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import decode_plan  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import mosaic_gpu  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sweep, "K", 1024)
  monkeypatch.setattr(sweep, "N", 2048)
  monkeypatch.setattr(C, "copy_bandwidth", lambda: 4e12)
  monkeypatch.setattr(C, "rotations", lambda nbytes: 2)
  calls = []

  def time_op(fn, sets, iters=30):
    jax.block_until_ready(jax.jit(fn)(*sets[0]))
    calls.append(1)
    return dict(time_s=1e-5 * (1 + len(calls) % 3), spread_s=1e-7)

  def kernel(x, pw, **options):  # the plan (so a config the GPU would refuse fails here)
    p = decode_plan.plan_decode(x.shape[0], x.shape[1], pw, **options)
    assert options.get("load_only", False) == p.load_only
    return jnp.zeros((x.shape[0], pw.n), x.dtype)

  monkeypatch.setattr(C, "time_op", time_op)
  monkeypatch.setattr(mosaic_gpu, "wo_matmul_mosaic_gpu", kernel)
  _plain_loads_on_the_cpu(sweep, monkeypatch)
  monkeypatch.setattr("sys.argv", ["bench_tma_stream.py", "--out", str(tmp_path)])
  sweep.main()
  res = json.loads((tmp_path / "tma_stream.json").read_text())
  want = sweep.distinct_configs(sweep.weight(jax.random.key(0)))
  assert [r["config"] for r in res["rows"]] == [c for c, _ in want]
  assert res["default_full_s"] > 0 and res["xla_bf16_gemv_TBps"] > 0 and res["xla_read_TBps"] > 0
  assert all(0 < r["TBps"] and 0 < r["frac_copy"] for r in res["rows"])
  assert [(r["rows"], r["ctas"]) for r in res["ld_rows"]] == sweep.LD_CONFIGS
  assert all(r["code_bytes"] == 1024 * 2048 // 2 and r["TBps"] > 0 and r["folds_match"]
             for r in res["ld_rows"])
  table = (tmp_path / "tma_stream.md").read_text()
  # a row each, under the two tables' headers
  assert table.count("\n| ") == len(res["rows"]) + len(res["ld_rows"]) + 2
  monkeypatch.setattr("sys.argv", ["bench_tma_stream.py", "--out", str(tmp_path), "--ld-only"])
  monkeypatch.setattr(sweep, "LD_CONFIGS", [(8, 128), (8, 300), (4, 256)])  # 300: no tiling
  sweep.main()  # the plain loads and the baselines, no sweep; a failed launch recorded
  res = json.loads((tmp_path / "tma_stream.json").read_text())
  assert res["rows"] == [] and len(res["ld_rows"]) == 3
  assert "do not tile N" in res["ld_rows"][1]["error"] and res["ld_rows"][2]["folds_match"]
  assert "do not tile N" in (tmp_path / "tma_stream.md").read_text()


def _plain_loads_on_the_cpu(sweep, monkeypatch):
  """`ld_read` is a Mosaic GPU kernel: on the CPU, configs that tile the small weight and an
  XLA fold of the same words in its place, after the kernel itself is lowered for the GPU."""
  from pallas_kernels import _compat  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sweep, "LD_CONFIGS", [(8, 128), (4, 256)])
  real = sweep.ld_read

  def ld_read(pw, rows, ctas, write=False):
    _compat.lower_for("cuda", lambda p: real(p, rows, ctas, write=write), pw)
    return sweep.ld_fold(pw, rows, ctas)

  monkeypatch.setattr(sweep, "ld_read", ld_read)


def test_a_run_after_a_cut_off_one_times_only_the_rest(sweep, monkeypatch, tmp_path):
  # `--skip-done`: a second call finishes the sweep a first one's limit cut off, without
  # spending its minutes on the configs that already have rows.
  import bench_kernels_common as C  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import mosaic_gpu  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sweep, "K", 1024)
  monkeypatch.setattr(sweep, "N", 2048)
  monkeypatch.setattr(C, "copy_bandwidth", lambda: 4e12)
  monkeypatch.setattr(C, "rotations", lambda nbytes: 2)
  monkeypatch.setattr(C, "time_op", lambda fn, sets, iters=30: dict(time_s=1e-5, spread_s=0.0))
  monkeypatch.setattr(mosaic_gpu, "wo_matmul_mosaic_gpu",
                      lambda x, pw, **o: jnp.zeros((x.shape[0], pw.n), x.dtype))
  monkeypatch.setattr(sweep, "LD_CONFIGS", [])
  want = [c for c, _ in sweep.distinct_configs(sweep.weight(jax.random.key(0)))]
  first = tmp_path / "first.json"
  first.write_text(json.dumps(dict(rows=[dict(config=c) for c in want[:5]])))
  monkeypatch.setattr("sys.argv", ["bench_tma_stream.py", "--out", str(tmp_path),
                                   "--skip-done", str(first)])
  sweep.main()
  res = json.loads((tmp_path / "tma_stream.json").read_text())
  assert [r["config"] for r in res["rows"]] == want[5:]
  assert "were not run" in (tmp_path / "tma_stream.md").read_text()


def test_xla_read_reads_every_byte_of_the_weight(sweep, monkeypatch):
  # XLA's read of the decode's bytes (its ceiling beside the TMA pipeline's): a row's result
  # moves with any one of its codes, the last included, and a column's with any scale.
  monkeypatch.setattr(sweep, "K", 256)
  monkeypatch.setattr(sweep, "N", 128)
  pw = sweep.weight(jax.random.key(0))
  words, scales = sweep.xla_read(pw)
  assert words.shape == (128,) and scales.shape == (pw.scale.shape[1],)
  codes = pw.w.astype(jnp.int32)
  for row, col in ((5, 255), (6, 0), (127, 100)):
    flipped = codes.at[row, col].set(jnp.where(codes[row, col] == 7, -8, 7)).astype(jnp.int4)
    moved, _ = sweep.xla_read(dataclasses.replace(pw, w=flipped))
    assert [int(r) for r in np.flatnonzero(np.asarray(moved != words))] == [row]
  _, moved = sweep.xla_read(dataclasses.replace(pw, scale=pw.scale.at[0, 3].add(1.0)))
  assert [int(c) for c in np.flatnonzero(np.asarray(moved != scales))] == [3]


def test_ld_read_lowers_for_every_launch_and_refuses_an_untiled_one(sweep):
  # The plain-load read (no TMA) at the benchmark's size: each launch lowers for the GPU (its
  # strided loads from global memory, the fold, the store), and one whose blocks do not tile N
  # says so instead of reading part of the weight.
  from pallas_kernels import _compat  # pylint: disable=g-import-not-at-top
  pw = jax.eval_shape(sweep.weight, jax.random.key(0))
  for rows, ctas in sweep.LD_CONFIGS:
    assert sweep.N % (rows * ctas) == 0
    out = jax.eval_shape(lambda p, r=rows, c=ctas: sweep.ld_read(p, r, c), pw)
    assert out.shape == (ctas, rows, sweep.K // 8) and out.dtype == jnp.uint32
    text = _compat.lower_for("cuda", lambda p, r=rows, c=ctas: sweep.ld_read(p, r, c),
                             pw).as_text()
    assert "mosaic_gpu" in text
  with pytest.raises(ValueError, match="do not tile N"):
    sweep.ld_read(pw, 8, 300)


def test_ld_fold_folds_every_word_once(sweep, monkeypatch):
  # The folds `ld_read` is checked against: CTA c's fold of row block r is the XOR of words
  # (i * ctas + c) * rows + r over i; flipping one code moves exactly that one.
  monkeypatch.setattr(sweep, "K", 256)
  monkeypatch.setattr(sweep, "N", 128)
  pw = sweep.weight(jax.random.key(0))
  folds = sweep.ld_fold(pw, 4, 8)  # 128 rows: 4 blocks of 4 rows for each of 8 CTAs
  assert folds.shape == (8, 4, 32)
  codes = pw.w.astype(jnp.int32)
  row = (2 * 8 + 5) * 4 + 3  # block i = 2 of CTA 5, its row 3
  flipped = codes.at[row, 17].set(jnp.where(codes[row, 17] == 7, -8, 7)).astype(jnp.int4)
  moved = np.argwhere(np.asarray(sweep.ld_fold(dataclasses.replace(pw, w=flipped), 4, 8)
                                 != folds))
  assert [tuple(int(v) for v in m) for m in moved] == [(5, 3, 17 // 8)]


def test_a_read_faster_than_hbm_is_called_out(sweep):
  # Session 25's H100 run: at 4 rows and 1024 CTAs the loop's known trip count let the compiler
  # sink the loads under the write flag, and the launch read nothing in 2.0 us; the table says
  # so rather than quote 57.8 TB/s.
  path = os.path.join(EXPERIMENTS, "results", "tma_stream_s25_h100.json")
  with open(path) as f:
    res = json.load(f)
  rows = [ln for ln in sweep.to_markdown(res).splitlines() if ln.startswith("| 4 | 1024 |")
          or ln.startswith("| 8 | 256 |")]
  assert len(rows) == 2
  assert all(("not read" in ln) == ln.startswith("| 4 | 1024 |") for ln in rows)
