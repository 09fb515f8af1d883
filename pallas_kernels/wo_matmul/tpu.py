"""Weight-only matmul on TPU (Mosaic TPU), testable in TPU interpret mode on the CPU.

The kernel body is the portable twin's (`portable.py`): a (N tile, K step) grid, the K axis
sequential ("arbitrary") and accumulated in the resident output block, each quantization
group's partial product scaled in float32. Weights are decoded in VMEM (int4 / int8 / fp8 by
casts, E2M1 and NF4 by select trees), so every format of `layout.WeightFormat` runs.

.. warning:: Untimed and unchecked on real TPU hardware: this project has no TPU. CI runs it in
   TPU interpret mode (`pltpu.InterpretParams`) against the reference.
"""

from __future__ import annotations

import jax

from pallas_kernels import _compat
from pallas_kernels.wo_matmul.layout import PackedWeight
from pallas_kernels.wo_matmul.portable import wo_matmul_portable


def wo_matmul_tpu(x: jax.Array, pw: PackedWeight, *, interpret: bool = False, out_dtype=None,
                  tile_n: int = 128, tile_k: int = 256) -> jax.Array:
  """`x @ dequant(W)` with Mosaic TPU (see `api.wo_matmul` for the contract)."""
  pltpu = _compat.pltpu_module()
  params = pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))
  interp = _compat.tpu_interpret_params() if interpret else False
  return wo_matmul_portable(x, pw, tile_n=tile_n, tile_k=tile_k, out_dtype=out_dtype,
                            interpret=interp, compiler_params=params)
