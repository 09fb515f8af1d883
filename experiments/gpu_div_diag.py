"""Checks mxjax.formats.div_rn against numpy's IEEE float32 division on the device."""
import jax
import numpy as np

from mxjax.formats import div_rn

rng = np.random.default_rng(0)
n = 200_000
a = (rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n))).astype(np.float32)
b = (rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n))).astype(np.float32)
a[:1000] = 1.0
with np.errstate(all="ignore"):
  want = a / b
for name, fn in [("div_rn", jax.jit(div_rn)), ("xla /", jax.jit(lambda a, b: a / b))]:
  got = np.asarray(fn(a, b))
  bad = ~((got == want) | (np.isnan(got) & np.isnan(want)))
  print(name, int(bad.sum()), "of", n, "differ;", a[bad][:3], b[bad][:3], got[bad][:3], want[bad][:3])
got1 = np.asarray(jax.jit(lambda b: div_rn(1.0, b))(b))
print("div_rn(1.0, b) scalar:", int(np.sum(got1 != np.float32(1) / b)))
