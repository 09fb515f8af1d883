"""`experiments/probe_config.py`: each config's phases logged, a cut-off or an error named by
the last phase reached (the kernel itself needs the GPU machine: on the CPU lowering fails)."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))

import probe_config as P  # noqa: E402

CFG = {"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 2, "stream_k": 1}


def _log(tmp_path):
  return [json.loads(ln) for ln in (tmp_path / "probe_int4_m64.jsonl").read_text().splitlines()]


def test_probe_names_the_phase_that_failed(tmp_path):
  log = str(tmp_path / "probe_int4_m64.jsonl")
  assert P.probe("int4", 64, "1024x2048", CFG, 120, log) == "inputs"
  start, inputs, end = _log(tmp_path)
  assert start["config"] == CFG and start["device"] == "cpu"
  assert inputs["plan"]["compute_wgs"] == 2 and inputs["plan"]["tile_n"] == 256
  # the CPU cannot run a Mosaic GPU kernel: lowering raises, and the error says so
  assert end["phase"] == "error" and end["after"] == "inputs"
  assert end["error"].startswith("ValueError") and "interpret" in end["error"]


def test_probe_cut_off_is_logged(tmp_path):
  log = str(tmp_path / "probe_int4_m64.jsonl")
  last = P.probe("int4", 64, "1024x2048", CFG, 0.5, log)  # inside jax's import, or just past
  assert last in ("none", "start")
  assert _log(tmp_path)[-1] == dict(phase="cut_off", limit_s=0.5, after=last, config=CFG)
