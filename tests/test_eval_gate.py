"""The gate end to end on a tiny random Llama (wiring, single-axis runs, reports)."""

import csv

import numpy as np
import pytest

from mxjax.eval import gate as gate_lib
from mxjax.eval import report
from mxjax.eval.simulate import candidate_from_recipe, single_axis_runs


class CharTok:
  bos_id = 1
  add_bos = False

  def encode(self, text, add_bos=False):
    return [3 + ord(c) % 90 for c in text]

  def decode(self, ids, skip_special_tokens=False):
    return "".join(chr(i - 3 + 32) for i in ids)


class Item:
  def __init__(self, q, choices, answer):
    self.question, self.choices, self.answer = q, choices, answer


@pytest.fixture(scope="module")
def tiny():
  from flax import nnx

  from experiments.models import Llama, LlamaConfig

  return Llama(LlamaConfig.tiny(vocab_size=97, max_position_embeddings=256), rngs=nnx.Rngs(0))


def test_candidates_and_single_axis_runs():
  c = candidate_from_recipe("NVFP4 W4A4")
  assert c.weights.name == "nvfp4" and c.activations.name == "nvfp4" and c.kv is None
  runs = single_axis_runs(c)
  assert [r.knob for r in runs] == ["weights", "activations"]
  assert runs[0].activations is None and runs[1].weights is None
  assert candidate_from_recipe("FP8 KV").kv is not None
  assert single_axis_runs(candidate_from_recipe("FP8 KV")) == []
  assert candidate_from_recipe("BF16").is_reference


TEXT = "the quick brown fox jumps over the lazy dog. " * 12


def test_gate_end_to_end_on_a_tiny_model(tiny, tmp_path):
  cfg = gate_lib.GateConfig(
      recipes=("BF16", "MXFP4 W4A4", "FP8 KV"), metrics=("ppl", "kl", "top1"),
      window=64, stride=64, max_tokens=256, unit_tokens=8, budgets={"kl": "0.5"},
      n_resamples=200, noise_resamples=50)
  res = gate_lib.run_gate(tiny, CharTok(), {"a": (TEXT, "' '"), "b": (TEXT[::-1], "' '")}, cfg,
                          model_name="tiny")
  names = [c.candidate.name for c in res.candidates]
  assert names == ["MXFP4 W4A4", "MXFP4 W4A4 [weights only]", "MXFP4 W4A4 [activations only]",
                   "FP8 KV"]
  by = {c.candidate.name: {(d.metric, d.category): d for d in c.decisions}
        for c in res.candidates}
  w4a4 = by["MXFP4 W4A4"]
  assert {("ppl", "a"), ("ppl", "b"), ("ppl", ""), ("kl", ""), ("top1", "a")} <= set(w4a4)
  assert w4a4[("kl", "")].passed is not None  # a stated budget gates KL
  assert w4a4[("top1", "")].passed is None  # no budget, no noise floor: reported only
  assert res.noise["ppl/all"] > 0 and res.reference["ppl/a"] > 1
  # 4-bit weights and activations move the logits more than an FP8 KV cache does.
  assert w4a4[("kl", "")].cand > by["FP8 KV"][("kl", "")].cand > 0
  assert len(res.protocols) == 2 and res.protocols[0].window == 64
  # Each single-axis run moves the logits on its own (the weight knob reaches the kernels).
  assert by["MXFP4 W4A4 [weights only]"][("kl", "")].cand > 1e-6  # exactly 0 if untouched
  assert by["MXFP4 W4A4 [activations only]"][("kl", "")].cand > 1e-6

  files = report.write_reports(res, tmp_path)
  assert len(files["csv"]) == 4 and files["plots"] == ["deltas.png"]
  rows = list(csv.DictReader(open(tmp_path / files["csv"][0])))
  assert len(rows) == len(res.candidates[0].decisions)
  md = (tmp_path / "summary.md").read_text()
  assert "| MXFP4 W4A4 [weights only] |" in md and "window 64" in md
  assert (tmp_path / "deltas.png").stat().st_size > 1000
  table = report.summary_table(res)
  assert table.count("\n") == 2 + len(res.candidates)


@pytest.mark.slow
def test_gate_multiple_choice_and_passkey(tiny):
  cfg = gate_lib.GateConfig(
      recipes=("NVFP4 W4A4",), metrics=("mc", "passkey"), single_axis=False, mc_items=6,
      passkey_contexts=(160,), passkey_depths=(0.5,), passkey_trials=2, n_resamples=100,
      noise_resamples=50)
  mc = {"toy": [Item(f"Q{i}: pick", ("yes", "no"), i % 2) for i in range(6)]}
  res = gate_lib.run_gate(tiny, CharTok(), {}, cfg, mc_tasks=mc, passkey_filler=TEXT * 3)
  keys = {(d.metric, d.category) for d in res.candidates[0].decisions}
  assert ("passkey", "160") in keys
  # A random model is at chance on the toy task: reported in the notes, not gated.
  assert ("mc", "toy") in keys or any("not above chance" in n for n in res.notes)


def test_simulator_weight_knob_touches_every_linear_kernel_but_the_head(tiny):
  from mxjax.eval.simulate import Simulator

  sim = Simulator(tiny)
  sim.weights(candidate_from_recipe("W4A16 int4_g128").weights)
  ks = sim.quantized_kernels
  assert len(ks) == 2 * 7 and all(k.endswith("kernel") for k in ks)
  assert not any("head" in k or "embed" in k for k in ks)


def test_config_validation():
  with pytest.raises(ValueError, match="unknown metrics"):
    gate_lib.GateConfig(metrics=("bleu",))
  with pytest.raises(ValueError):
    gate_lib.GateConfig(k=0)
  assert set(gate_lib.PRESETS) == {"quick", "standard"}
  np.testing.assert_equal(gate_lib.GateConfig(**gate_lib.PRESETS["quick"]).window, 256)
