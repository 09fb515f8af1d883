"""`experiments/next_gpu_session.sh`, run with a stand-in python3 that records each benchmark
call: every part fits one device call and every config it asks for names real options.

A device call is scarce (30 minutes a session, often fewer machines than asked): a part whose
time limits overrun the call's 600 s loses its last rows, one with more than four output
folders loses files (8 come back), and a config with a misspelt option fails on the GPU after
the minutes spent building its inputs. These are caught here instead.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "next_gpu_session.sh")
PARTS = ["q", "1", "2", "3", "4", "5", "6", "7", "8", "h100", "h100b", "h100c", "h100d", "wb"]
CALL_S = 600  # the device tool's limit on one command
MARGIN_S = 30  # start-up, the header's ceilings (copy bandwidth, GEMM rate), `ls`

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["GPU_SCRIPT_LOG"], "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def _run_part(part: str, tmp_path) -> tuple[list[list[str]], list[int], str]:
  """(each benchmark's argv, each run's time limit in s, $OUT) of one part of the script."""
  bin_dir, out, log = tmp_path / "bin", tmp_path / "out", tmp_path / "calls.jsonl"
  bin_dir.mkdir()
  fake = bin_dir / "python3"
  fake.write_text(RECORDER.format(python=sys.executable))
  fake.chmod(0o755)
  env = dict(os.environ, OUT=str(out), GPU_SCRIPT_LOG=str(log),
             PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  proc = subprocess.run(["bash", SCRIPT, part], env=env, capture_output=True, text=True,
                        check=False, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "exit" not in proc.stdout, proc.stdout  # no benchmark failed or was cut off
  calls = [json.loads(ln) for ln in log.read_text().splitlines()]
  limits = [int(s) for s in re.findall(r"\(limit (\d+)s\)", proc.stdout)]
  return calls, limits, str(out)


def _arg(argv: list[str], name: str, default: str = "") -> str:
  return argv[argv.index(name) + 1] if name in argv else default


def _options(fn) -> set[str]:
  return {p.name for p in inspect.signature(fn).parameters.values()
          if p.kind is p.KEYWORD_ONLY}


@pytest.fixture(scope="module")
def kernel_options():
  """The keyword options each benchmarked entry point takes, and the storage keys the
  benchmark applies to the weight itself (`bench_kernels._knobs` drops them)."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import bench_kernels  # pylint: disable=g-import-not-at-top
  import profile_kernels  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import mosaic_gpu as QG  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import mosaic_gpu_columns as QC  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import decode_plan  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import mosaic_gpu_gemm  # pylint: disable=g-import-not-at-top
  storage = set(bench_kernels.STORAGE_KEYS)
  assert bench_kernels._knobs(dict.fromkeys(storage)) == {}  # pylint: disable=protected-access
  decode = {p for p in inspect.signature(decode_plan.plan_decode).parameters
            if p not in ("m", "k", "pw")}
  return dict(decode=decode | storage, gemm=_options(mosaic_gpu_gemm.wo_gemm_mosaic_gpu) | storage,
              rows=_options(QG.quantize_mosaic_gpu),
              columns=_options(QC.quantize_columns_mosaic_gpu), parse=bench_kernels.parse_format,
              profile_cases=profile_kernels.CASES)


@pytest.mark.parametrize("part", PARTS)
def test_part_fits_a_call_and_names_real_options(part, tmp_path, kernel_options):
  from pallas_kernels.quantize.schemes import SCHEMES  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import WeightFormat  # pylint: disable=g-import-not-at-top
  calls, limits, out = _run_part(part, tmp_path)
  assert calls and len(limits) == len(calls)
  assert sum(limits) + MARGIN_S <= CALL_S, f"part {part}: limits {limits} overrun the call"
  dirs = {_arg(argv, "--out") for argv in calls}
  assert len(dirs) == len(calls) <= 4 and all(d.startswith(out) for d in dirs)
  for argv in calls:
    script = os.path.basename(argv[0])
    assert script in ("bench_kernels.py", "bench_wgmma_rate.py", "profile_kernels.py",
                      "bench_tma_stream.py", "probe_config.py"), argv
    if script == "probe_config.py":  # each config's cut-off inside the part's limit
      configs = json.loads(_arg(argv, "--configs", "[{}]"))
      assert float(_arg(argv, "--limit-s", "60")) * len(configs) + 20 <= limits[
          calls.index(argv)], argv
      WeightFormat(kernel_options["parse"](_arg(argv, "--format", "int4"))[0])
      for cfg in configs:
        assert set(cfg) <= kernel_options["decode"], f"part {part}: {cfg}"
    if script == "bench_tma_stream.py":  # its own limit ends it inside the part's
      assert float(_arg(argv, "--limit-s", "220")) + 40 <= limits[calls.index(argv)], argv
      done = _arg(argv, "--skip-done")  # an earlier run's rows, committed
      assert not done or os.path.isfile(os.path.join(ROOT, done)), argv
    if script == "profile_kernels.py":  # at most 4 cases: 2 files each come back
      cases = _arg(argv, "--case").split(",")
      assert len(cases) <= 4 and set(cases) <= set(kernel_options["profile_cases"]), argv
    if script != "bench_kernels.py":
      continue
    what, configs = _arg(argv, "--what", "wo"), json.loads(_arg(argv, "--configs", "[{}]"))
    assert isinstance(configs, list) and all(isinstance(c, dict) for c in configs), argv
    if what == "wo":
      for spec in _arg(argv, "--formats").split(","):
        WeightFormat(kernel_options["parse"](spec)[0])  # a format the benchmark builds
      ms = [int(m) for m in _arg(argv, "--m").split(",")]
      allowed = set.intersection(*(kernel_options["decode" if m <= 64 else "gemm"]
                                   for m in ms))
    else:
      assert set(_arg(argv, "--schemes", "mxfp4").split(",")) <= set(SCHEMES), argv
      allowed = kernel_options["columns" if "--transpose" in argv else "rows"]
    for cfg in configs:
      assert set(cfg) <= allowed, f"part {part}: {sorted(set(cfg) - allowed)} in {cfg}"


def test_unknown_part_is_refused(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path))
  proc = subprocess.run(["bash", SCRIPT, "9"], env=env, capture_output=True, text=True,
                        check=False)
  assert proc.returncode == 2 and "part must be" in proc.stderr


def test_decode_configs_plan_with_the_weights_they_run_on(tmp_path, kernel_options, monkeypatch):
  # Every decode config a part names (M <= 64, explicit or the default) resolves to a plan
  # (shared memory, tiles, schedule, fused_sum's need for stream-K) on the weight as the
  # benchmark stores it on a GPU: a config that raised there would spend its minutes recording
  # an error. Deliberate failures are allowed: zero-point bytes on formats without zero points.
  # Each part is planned on the device it names (the defaults a config adds to differ by device:
  # `configs.ONE_SLOT_DEVICES`, `FP8_X_DEVICES`).
  del kernel_options  # (puts experiments/ on the path)
  import bench_kernels as B  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import configs  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import decode_plan  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import layout as L  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the GPU's storage defaults
  weights, planned = {}, 0
  for part in PARTS:
    device = "NVIDIA H100 80GB HBM3" if part.startswith("h100") else "NVIDIA H200"
    monkeypatch.setattr(configs, "device_kind", lambda device=device: device)
    (tmp_path / part).mkdir()
    calls, _, _ = _run_part(part, tmp_path / part)
    for argv in calls:
      if os.path.basename(argv[0]) != "bench_kernels.py" or _arg(argv, "--what", "wo") != "wo":
        continue
      if "--sweep" in argv:  # the benchmark's own sweep lists record their failures
        continue
      ms = [int(m) for m in _arg(argv, "--m").split(",") if int(m) <= 64]
      shapes = [tuple(map(int, s.split("x"))) for s in _arg(argv, "--shapes").split(",")]
      for spec in _arg(argv, "--formats").split(","):
        fmt, grp = B.parse_format(spec)
        for k, n in shapes:
          for cfg in json.loads(_arg(argv, "--configs", "[{}]")):
            storage = json.dumps({c: v for c, v in cfg.items() if c not in B._knobs(cfg)},  # pylint: disable=protected-access
                                 sort_keys=True)
            wkey = (spec, k, n, storage)
            if wkey not in weights:
              def build(spec=spec, fmt=fmt, grp=grp, k=k, n=n, cfg=cfg):
                codes, scale, extra = B.make_int4(jax.random.key(0), k, n, fmt, grp or k,
                                                  B.bf16_scales(spec))
                pw = L.repack(codes, scale, fmt=fmt, group=grp or k, wgmma_order=False,
                              scale_bf16=False, **B.repack_kw(fmt, extra))
                # (folding, byte multipliers and amax scales read the scales' values, which
                # eval_shape does not have: marked after)
                fold = {"mx_fold": False} if cfg.get("mx_fold") else {}
                marks = ({"byte_multipliers": False, "scale_bf16": False}
                         if cfg.get("byte_multipliers") else {})
                amax = {"amax_scales": False} if cfg.get("amax_scales") else {}
                pw = B._stored({**cfg, **fold, **marks, **amax}, (None, pw))[1]  # pylint: disable=protected-access
                if amax:
                  pw = dataclasses.replace(pw, scale=pw.scale.astype(jax.numpy.bfloat16),
                                           amax_scales=True)
                return dataclasses.replace(pw, mx_fold=bool(fold), byte_multipliers=bool(marks))
              try:
                weights[wkey] = jax.eval_shape(build)
              except ValueError:
                assert cfg.get("zero_points") and fmt != "uint4", (part, spec, cfg)
                weights[wkey] = None
            if weights[wkey] is None:
              continue
            for m in ms:
              decode_plan.plan_decode(m, k, weights[wkey], **B._knobs(cfg),  # pylint: disable=protected-access
                                      allow_unverified=True)
              planned += 1
  assert planned > 50  # the parts name ~100 decode configs: the walk reached them
