"""Shapes and call recorders shared by the lowering tests (test_lowering_*.py).

Lowering runs Pallas' whole Mosaic GPU / TPU lowering (register layouts, casts, operand shapes,
swizzles, TPU tiling rules) on shapes only, at the benchmark's sizes, on this CPU
(`_compat.lower_for`): the CPU interpreter cannot run Mosaic GPU kernels (TMA, wgmma), and TPU
interpret mode skips Mosaic TPU's block-shape rules, so without these tests a kernel's first
lowering would happen on the hardware. It does not run ptxas or libtpu, so it cannot say a
kernel compiles or is correct: the GPU benchmark checks that (docs/kernels.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mxjax
from pallas_kernels import wo_matmul as wm
from tests.kernels.wo_formats import FORMATS as WO_FORMATS
from tests.kernels.wo_formats import IDS

FORMATS = dict(zip(IDS, WO_FORMATS))  # test id -> (preset, overrides)


def weight_shape(name, k, n):
  """The PackedWeight of a (K, N) weight in format `name`, as shapes only."""
  preset, overrides = FORMATS[name]
  return jax.eval_shape(lambda w: wm.repack_qarray(
      mxjax.quantize(w, mxjax.schemes.get(preset, **overrides), axis=0)),
      jax.ShapeDtypeStruct((k, n), jnp.float32))


def x_shape(m, k):
  return jax.ShapeDtypeStruct((m, k), jnp.bfloat16)


def record_calls(monkeypatch, targets) -> list[str]:
  """The names of `targets`' functions ((module, name) pairs), appended each time one is
  called while the test lowers a kernel (the functions still run)."""
  calls = []
  for mod, fn_name in targets:
    real = getattr(mod, fn_name)
    monkeypatch.setattr(mod, fn_name,
                        lambda *a, real=real, fn_name=fn_name: calls.append(fn_name) or real(*a))
  return calls
