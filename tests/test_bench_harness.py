"""A CPU run of the kernel benchmark's harness (experiments/bench_kernels.py) end to end.

A GPU session has minutes; a crash in the harness (config handling, storages, checks, tables)
costs one. Here only what needs a GPU is replaced: CUPTI timing (each op still compiles and
runs once), the device ceilings, the NaN poison, and the Mosaic GPU kernels, by their plan
(`plan_decode`, so a config the GPU would reject is rejected here too) and the dequantized
weight's product.
The shared-memory count lowers the real kernels for CUDA, as on the GPU host.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")


@pytest.fixture(name="bench")
def _bench(monkeypatch):
  monkeypatch.syspath_prepend(EXPERIMENTS)
  import bench_kernels  # pylint: disable=g-import-not-at-top
  import bench_kernels_common as C  # pylint: disable=g-import-not-at-top
  from pallas_kernels import _compat  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import mosaic_gpu as QG  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import reference as QR  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import decode_plan  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import mosaic_gpu as WG  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import layout as L  # pylint: disable=g-import-not-at-top

  def time_op(fn, sets, iters=30):
    g = jax.jit(lambda sets: [fn(*s) for s in sets])
    jax.block_until_ready(g(list(sets[:2])))
    nbytes = sum(a.nbytes for a in jax.tree_util.tree_leaves(sets[0]) if hasattr(a, "nbytes"))
    t = nbytes / 3e12 + 3e-6
    return dict(time_s=t, spread_s=0.0, rotations=len(sets), iters=iters, kernels=["stub"],
                n_kernels=1.0, kernel_us={"stub": t * 1e6})

  lowering = []
  real_lower_for, real_wo, real_q = _compat.lower_for, WG.wo_matmul_mosaic_gpu, QG.quantize_mosaic_gpu

  def lower_for(*args, **kwargs):  # inside it, the real kernels: lowering needs no GPU
    lowering.append(1)
    try:
      return real_lower_for(*args, **kwargs)
    finally:
      lowering.pop()

  def wo(x, pw, *, out_dtype=None, **options):
    if lowering:
      return real_wo(x, pw, out_dtype=out_dtype, **options)
    plan = decode_plan.plan_decode(x.shape[0], x.shape[1], pw, **options)
    if plan.load_only:
      return jnp.zeros((x.shape[0], pw.n), out_dtype or x.dtype)
    # W dequantized op by op, outside jit: XLA:CPU fuses UINT4's q * s - offset with another
    # rounding than the eager `layout.dequantize` the one-hot check compares with (1 ulp).
    w = jax.pure_callback(lambda p: np.asarray(L.dequantize(p), np.float32),
                          jax.ShapeDtypeStruct((pw.k, pw.n), jnp.float32), pw)
    y = jnp.dot(x.astype(jnp.float32), w, precision=jax.lax.Precision.HIGHEST)
    return y.astype(out_dtype or x.dtype)

  def quant(x, scheme, *, tensor_amax=None, **options):
    if lowering:
      return real_q(x, scheme, tensor_amax=tensor_amax, **options)
    return QR.quantize_reference(x, scheme, tensor_amax=tensor_amax)

  for mod, name, value in ((C, "time_op", time_op), (C, "poison", lambda nbytes=0: None),
                           (C, "copy_bandwidth", lambda: 4.3e12),
                           (C, "bf16_gemm_rate", lambda size=8192: 8e14),
                           (_compat, "lower_for", lower_for), (WG, "wo_matmul_mosaic_gpu", wo),
                           (QG, "quantize_mosaic_gpu", quant)):
    monkeypatch.setattr(mod, name, value)
  return bench_kernels


def _run(bench, monkeypatch, tmp_path, *args) -> dict:
  monkeypatch.setattr(sys, "argv", ["bench_kernels.py", *args, "--out", str(tmp_path)])
  bench.main()
  what = args[args.index("--what") + 1]
  assert (tmp_path / f"kernels_{what}.md").exists()
  return json.loads((tmp_path / f"kernels_{what}.json").read_text())


@pytest.mark.slow
def test_wo_configs_checks_and_storages(bench, monkeypatch, tmp_path):
  res = _run(bench, monkeypatch, tmp_path, "--what", "wo", "--formats", "uint4,int8-bf16",
             "--m", "1,16", "--shapes", "512x1024", "--configs",
             '[{}, {"zero_points": true}, {"tile_n": 128, "gps": 2, "steps": 2}]',
             "--onehot", "--load-split")
  rows = res["wo_matmul"]
  assert [(r["fmt"], r["M"]) for r in rows] == [("uint4", 1), ("uint4", 16), ("int8-bf16", 1),
                                                 ("int8-bf16", 16)]
  for r in rows:
    assert r["correct"] and r["onehot_mismatches"] == 0 and "load_only_s" in r
    timed = {json.dumps(t["config"], sort_keys=True): t for t in r["configs_timed"]}
    assert len(timed) == 3  # every config at every M
    ok = [t for t in timed.values() if "time_s" in t]
    assert all("plan" in t and "describe_error" not in t for t in ok)
    assert all(t["kernel_us"] and min(t["kernel_us"].values()) > 0 for t in ok)  # each its own
    assert all(t["ctas_per_sm"] >= 1 for t in ok)  # the real kernels' shared memory
    # where the call's minutes went: each config's check and timing, the row's whole
    assert all(t["check_wall_s"] >= 0 and t["time_wall_s"] > 0 for t in ok)
    assert all(0 <= t["prepare_wall_s"] <= t["time_wall_s"] for t in ok)  # the re-storing's part
    assert r["row_wall_s"] >= sum(t["check_wall_s"] + t["time_wall_s"] for t in ok) - 0.5
    assert r["baselines_wall_s"] >= 0 and r["check_wall_s"] >= 0
    if r["fmt"] == "uint4":
      zp = timed['{"zero_points": true}']
      assert zp["weight_bytes"] < timed["{}"]["weight_bytes"]  # a byte a group, not four
    else:  # zero points are UINT4's: that config fails, the others run
      assert "error" in timed['{"zero_points": true}'] and len(ok) == 2
    # TB/s counts the bytes the timed storage reads, never more than the baseline's
    best = next(t for t in ok if t["config"] == r["config"])
    assert r["weight_bytes"] == min(best["weight_bytes"], timed["{}"]["weight_bytes"])


@pytest.mark.slow
def test_quant_f32_given_amax(bench, monkeypatch, tmp_path):
  res = _run(bench, monkeypatch, tmp_path, "--what", "quant", "--f32", "--schemes",
             "mxfp4,nvfp4", "--qshapes", "512x256")
  rows = res["fused_quantize"]
  assert [r["scheme"] for r in rows] == ["mxfp4 (f32 in)", "nvfp4 (f32 in)"]
  assert all(r["bit_exact"] for r in rows)
  assert all(r["row_wall_s"] > 0 for r in rows)
  assert rows[1]["mismatch_given_amax"] == 0 and "given_amax_s" in rows[1]


def test_a_row_in_progress_is_on_disk_config_by_config(bench, monkeypatch, tmp_path):
  # A device call's time limit can cut a row off between configs: after each config the
  # results file holds the row so far under "in_progress", gone once the row is written.
  seen = []
  real_dump = bench._dump  # pylint: disable=protected-access

  def dump(args, res):
    real_dump(args, res)
    on_disk = json.loads((tmp_path / f"kernels_{args.what}.json").read_text())
    if "in_progress" in on_disk:
      seen.append((args.what, len(on_disk["in_progress"]["configs_timed"])))

  monkeypatch.setattr(bench, "_dump", dump)
  res = _run(bench, monkeypatch, tmp_path, "--what", "wo", "--formats", "int4", "--m", "1",
             "--shapes", "512x1024", "--configs",
             '[{}, {"zero_points": true}, {"tile_n": 128, "gps": 2, "steps": 2}]')
  assert seen == [("wo", 1), ("wo", 2), ("wo", 3)]  # the failing config counts too
  assert "in_progress" not in res and len(res["wo_matmul"][0]["configs_timed"]) == 3
  seen.clear()
  res = _run(bench, monkeypatch, tmp_path, "--what", "quant", "--schemes", "mxfp4",
             "--qshapes", "512x256", "--configs", '[{}, {"steps": 3}]')
  assert seen == [("quant", 1), ("quant", 2)] and "in_progress" not in res


def test_rotated_traces_the_op_once_for_every_input_set(monkeypatch):
  # `time_op` rotates over input sets so that the L2 never holds them; the op is traced and
  # lowered once for all of them (one function, called once a set), not once a set: with a
  # Mosaic kernel inside, each trace cost seconds of a device call.
  monkeypatch.syspath_prepend(EXPERIMENTS)
  import bench_kernels_common as C  # pylint: disable=g-import-not-at-top
  traces = []

  def op(x, w):
    traces.append(1)
    return x @ w

  sets = [(jnp.full((2, 4), float(i)), jnp.ones((4, 3))) for i in range(5)]
  g = C.rotated(op)
  out = g(sets)
  assert len(traces) == 1
  np.testing.assert_array_equal([float(o.sum()) for o in out], [24.0 * i for i in range(5)])
  assert g.lower(sets).as_text().count("call @") == len(sets)  # one function, a call a set


@pytest.mark.parametrize("device", ["NVIDIA H100 80GB HBM3", "NVIDIA H200"])
def test_default_config_stores_the_weight_as_repack_does(bench, monkeypatch, device):
  # A config's absent storage keys mean `repack`'s GPU storage: `{}` times the weight a user
  # gets (sessions 37-39's `{}` kept MXFP4 in the byte-pair order while `repack` stored the
  # halves order). Every kernel format, on a device whose small-M decode runs on bf16 tensor
  # cores and on one that runs it on FP8 ones.
  from pallas_kernels.wo_matmul import configs  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import layout as L  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(configs, "device_kind", lambda: device)
  key = jax.random.key(0)
  for spec in ("int4", "int4_g32", "uint4_g64", "mxfp4", "nvfp4", "nf4_g64", "int8", "fp8_e4m3"):
    codes, scale, extra, base = bench.k_order_weight(key, 256, 256, spec)
    fmt, grp = bench.parse_format(spec)
    want = L.repack(codes, scale, fmt=fmt, group=grp or 256, **bench.repack_kw(fmt, extra))
    _, got = bench._stored({}, (None, base))  # pylint: disable=protected-access
    flags = lambda p: (p.wgmma_order, p.halves_order, p.scale_bf16, p.mx_fold,
                       p.byte_multipliers, p.scale.dtype, p.w.dtype)
    assert flags(got) == flags(want), spec
    for a, b in ((got.w, want.w), (got.scale, want.scale)):  # the stored bits, in storage order
      np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=spec)


def _bits(v: jax.Array) -> np.ndarray:
  """An array's stored bytes (int4: one a value), to compare storages bit for bit."""
  return np.asarray(v.astype(jnp.int8) if v.dtype == jnp.int4 else v).view(np.uint8)
