"""Diagnose where the numerics core differs between the device and the float64 reference.

Prints, for the MX and NVFP4 cases, the first mismatching elements with their inputs, and the
device's subnormal behaviour. Run on the GPU machine: python3 experiments/gpu_numerics_diag.py
"""

import jax
import jax.numpy as jnp
import numpy as np

import mxjax
from tests import reference as ref
from tests.test_quantize import _edge_blocks, nvfp4_reference


def report(name, got, want, x):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  bad = ~((got == want) | (np.isnan(got) & np.isnan(want)))
  print(f"{name}: {int(bad.sum())} of {bad.size} differ")
  for i in np.argwhere(bad)[:6]:
    i = tuple(i)
    print(f"   at {i}: x={x[i]!r} got={got[i]!r} want={want[i]!r}")


print(jax.__version__, jax.devices())
tiny = jnp.float32(2.0**-130)
print("subnormal kept by x*1.5:", float(jax.jit(lambda a, b: a * b)(tiny, jnp.float32(1.5))), "by 2^-63*2^-64:",
      float(jax.jit(lambda a: a * jnp.float32(2.0**-64))(jnp.float32(2.0**-63))))
print("x/448 exact fraction:", float(np.mean(np.asarray(jax.jit(lambda a: a / 448.0)(
    jnp.arange(1, 100001, dtype=jnp.float32) * 1.37)) == (np.arange(1, 100001, dtype=np.float32)
    * np.float32(1.37)) / np.float32(448))))
rng = np.random.default_rng(0)
x = np.concatenate([_edge_blocks(rng), rng.standard_normal((9, 32)).astype(np.float32)]).reshape(-1, 64)
for preset, elem in [("mxfp8_e4m3", "e4m3"), ("mxfp6_e2m3", "e2m3"), ("mxfp4", "e2m1")]:
  got = mxjax.dequantize(mxjax.quantize(jnp.asarray(x), preset))
  report(preset, got, ref.mx_dequant(x, elem, 32), x)
rng = np.random.default_rng(1)
x = (rng.standard_normal((16, 64)) * rng.choice([1e-3, 1, 50], (16, 1))).astype(np.float32)
q = mxjax.quantize(jnp.asarray(x), "nvfp4")
report("nvfp4", mxjax.dequantize(q), nvfp4_reference(x), x)
print("s_t", np.asarray(q.tensor_scale).ravel(), np.float32(np.max(np.abs(x)) / np.float32(2688)))
e = jnp.asarray(np.array([0.001, 0.0123, 0.5, 3.3e-3, 300.1, 449.0], np.float32))
print("to e4m3 device:", np.asarray(e.astype(jnp.float8_e4m3fn).astype(jnp.float32)),
      "reference:", ref.round_values(np.clip(np.asarray(e), -448, 448), "e4m3"))
