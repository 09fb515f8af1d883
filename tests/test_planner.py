"""Planner numbers against hand-computed cases."""

import math

import pytest

from mxjax import analysis
from mxjax.analysis import planner as P

L8 = P.get_model_shape("llama-3.1-8b")


def test_parameter_counts_by_hand():
  # Llama-3.1-8B: per layer 2*4096^2 + 2*4096*1024 + 3*4096*14336 = 218,103,808.
  assert L8.n_linear_params == 32 * 218_103_808
  assert L8.n_params == 32 * 218_103_808 + 2 * 128_256 * 4096 == 8_029_995_008
  # SmolLM2-135M: 30 * (2*576^2 + 2*576*192 + 3*576*1536) + 49152*576 (tied).
  assert P.get_model_shape("smollm2-135m").n_params == 134_479_872


def test_weight_bytes_by_hand():
  bf16 = P.PlanRecipe(name="bf16")
  assert P.weight_bytes(L8, bf16) == 2 * 8_029_995_008
  emb = 2 * 2 * 128_256 * 4096  # bf16 embedding + untied head
  mx = P.PlanRecipe(name="mx", weights="mxfp4")
  assert P.weight_bytes(L8, mx) == 32 * 218_103_808 * 4.25 / 8 + emb
  nv = P.PlanRecipe(name="nv", weights="nvfp4")
  # 4.5 bits per value plus one fp32 tensor scale per matrix (7 a layer).
  assert P.weight_bytes(L8, nv) == 32 * 218_103_808 * 4.5 / 8 + 32 * 7 * 4 + emb


def test_stored_bytes_counts_padding():
  # K = 576 is not a multiple of 128: padded to 640 -> 320 B of codes + 5 fp32 scales a column.
  assert P.stored_bytes((576, 10), P.PlanRecipe(name="x", weights="int4_g128").weights, 0) \
      == 10 * (320 + 5 * 4)


def test_kv_bytes_per_token_by_hand():
  assert P.kv_bytes_per_token(L8, P.PlanRecipe(name="b")) == 2 * 32 * 8 * 128 * 2 == 131072
  assert P.kv_bytes_per_token(L8, P.PlanRecipe(name="f", kv="fp8_e4m3")) == 65536
  # MXFP8 KV: 8 bits + one E8M0 per 32 along head_dim -> 8.25 bits.
  assert P.kv_bytes_per_token(L8, P.PlanRecipe(name="m", kv="mxfp8_e4m3")) == \
      2 * 32 * 8 * 128 * 8.25 / 8


def test_sequences_that_fit_by_hand():
  p = P.plan(L8, P.PlanRecipe(name="bf16"), "H100", context=8192)
  free = 80e9 - 2 * 8_029_995_008
  assert p.max_sequences == math.floor(free / (131072 * 8192)) == 59
  p = P.plan(L8, P.PlanRecipe(name="bf16"), "H100", context=8192, reserve_frac=0.5)
  assert p.max_sequences == math.floor((40e9 - 2 * 8_029_995_008) / (131072 * 8192)) == 22
  big = P.plan("llama-3.1-70b", P.PlanRecipe(name="bf16"), "H100")
  assert big.max_sequences == 0 and "do not fit" in big.note


def test_decode_roofline_by_hand():
  p = P.plan(L8, P.PlanRecipe(name="bf16"), "H100", context=4096, batch=4)
  n_mm = 32 * 218_103_808 + 128_256 * 4096
  flops = 4 * (2 * n_mm + 4 * 32 * 32 * 128 * 4096)
  nbytes = 2 * 8_029_995_008 + 4 * 4096 * 131072
  d = p.decode
  assert d.flops == flops and d.bytes == nbytes
  assert d.intensity == pytest.approx(flops / nbytes)
  assert d.ridge == pytest.approx(989.5e12 / 3.35e12)
  assert d.bound == "memory"
  assert d.seconds == pytest.approx(nbytes / 3.35e12)


def test_prefill_is_compute_bound_and_uses_the_format_rate():
  r = P.PlanRecipe(name="fp8", weights="fp8_e4m3", activations="fp8_e4m3")
  p = P.plan(L8, r, "H100", context=2048)
  pre = p.prefill
  n_mm = 32 * 218_103_808 + 128_256 * 4096
  assert pre.flops == 2 * n_mm * 2048 + 2 * 32 * 32 * 128 * 2048**2
  assert pre.bound == "compute" and pre.used == "fp8"
  assert pre.seconds == pytest.approx(pre.flops / 1979e12)


def test_fallback_when_no_matrix_units():
  r = P.PlanRecipe(name="nv", weights="nvfp4", activations="nvfp4")
  assert P.compute_format(r) == "fp4"
  h = P.plan(L8, r, "H100")
  assert h.prefill.used == "fp8" and "no fp4" in h.note
  b = P.plan(L8, r, "B200")
  assert b.prefill.used == "fp4" and b.note == ""
  assert analysis.get_accelerator("tpu-v5p").peak_for("fp8") == (459e12, "bf16")


@pytest.mark.parametrize("w,a,fmt", [
    ("int4_g128", None, "bf16"), ("fp8_e4m3", "fp8_e4m3", "fp8"), ("nvfp4", "fp8_e4m3", "fp8"),
    ("mxfp6_e2m3", "mxfp4", "fp6"), ("int8", "int8", "int8"), ("int8", "fp8_e4m3", "bf16"),
    ("nf4_g64", "fp8_e4m3", "bf16"),
])
def test_compute_format(w, a, fmt):
  assert P.compute_format(P.PlanRecipe(name="r", weights=w, activations=a)) == fmt


def test_accelerator_table_is_sourced_and_ordered():
  for acc in analysis.ACCELERATORS.values():
    assert acc.source and acc.bandwidth > 0
    rates = [acc.peak_for(f)[0] for f in ("bf16", "fp8", "fp4")]
    assert rates == sorted(rates)
  assert set(analysis.ACCELERATORS) == {"H100", "H200", "B200", "MI355X", "TPUv5p"}
  with pytest.raises(ValueError, match="unknown accelerator"):
    analysis.get_accelerator("A100")


def test_plans_markdown_has_a_row_per_plan():
  plans = P.plan_table("smollm2-135m", accelerators=("H100", "B200"))
  md = P.plans_markdown(plans)
  assert md.count("\n") == 2 + len(plans) == 2 + 2 * len(P.DEFAULT_RECIPES)
