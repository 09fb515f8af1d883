"""The weight formats the wo_matmul kernel tests run, as (mxjax preset, overrides), with test ids,
and the helpers that make their weights: shared by test_wo_matmul.py, test_wo_layout.py,
test_wo_scales.py (real weights), test_wo_plan.py and the lowering tests (shapes only)."""

import jax
import jax.numpy as jnp
import numpy as np

import mxjax
from pallas_kernels import wo_matmul as wm

FORMATS = [
    ("int4_g128", {}),
    ("int4_g128", {"block_size": 32}),
    ("int4_g128", {"block_size": 64}),
    ("int4_g128_asym", {}),
    ("int4_g128_asym", {"block_size": 64, "scale": "bf16"}),  # a scheme's bf16 scales
    ("mxfp4", {}),
    ("nvfp4", {}),
    ("nf4_g64", {}),
    ("int8", {}),
    ("fp8_e4m3_rowwise", {}),
]
IDS = [p + "".join(f"-{k}{v}" for k, v in o.items()) for p, o in FORMATS]

PER_CHANNEL = ("int8", "fp8_e4m3_rowwise")  # presets stored as bytes, in K order


def weight(preset, overrides, k=256, n=128, seed=0):
  """(QArray, PackedWeight) of a (k, n) N(0, 1) weight quantized along K by `preset`."""
  w = jax.random.normal(jax.random.key(seed), (k, n), jnp.float32)
  q = mxjax.quantize(w, mxjax.schemes.get(preset, **overrides), axis=0)
  return q, wm.repack_qarray(q)


def rel(y, ref):
  """Relative Frobenius error of y against ref, in float64; y must be finite."""
  y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
  assert np.all(np.isfinite(y)), "non-finite output"
  return np.linalg.norm(y - ref) / np.linalg.norm(ref)
