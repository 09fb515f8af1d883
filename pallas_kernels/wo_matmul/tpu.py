"""Weight-only matmul on TPU (Mosaic TPU), testable in TPU interpret mode on the CPU.

The kernel body is the portable twin's (`portable.py`): a (M tile, N tile, K step) grid, the K
axis sequential ("arbitrary") and accumulated in the resident output block, each quantization
group's partial product scaled in float32. Weights are decoded in VMEM (int4 / int8 / fp8 by
casts, E2M1 and NF4 by select trees), so every format of `packed_weight.WeightFormat` runs. Up to
`MAX_TILE_M` rows of x form one block; above, x is taken `MAX_TILE_M` rows at a time (its rows
padded with zeros to a multiple, their outputs dropped), so the x and output blocks in VMEM stay
bounded at prefill M.

.. warning:: Untimed and unchecked on real TPU hardware: this project has no TPU. CI runs it in
   TPU interpret mode (`pltpu.InterpretParams`) against the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels import _compat
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.portable import wo_matmul_portable

# Rows of x a step takes at most: at tile_k 256 / tile_n 128, x and y blocks of 256 KiB each.
MAX_TILE_M = 512


def wo_matmul_tpu(x: jax.Array, pw: PackedWeight, *, interpret: bool = False, out_dtype=None,
                  tile_n: int = 128, tile_k: int = 256, tile_m: int | None = None) -> jax.Array:
  """`x @ dequant(W)` with Mosaic TPU (see `api.wo_matmul` for the contract).

  tile_m: rows of x a grid step takes (a multiple of 8); None: all of M up to `MAX_TILE_M`,
  else `MAX_TILE_M`. x's rows are padded with zeros to a multiple of it (those outputs dropped).
  """
  pltpu = _compat.pltpu_module()
  params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
  interp = _compat.tpu_interpret_params() if interpret else False
  m = x.shape[0]
  if tile_m is None:
    tile_m = m if m <= MAX_TILE_M else MAX_TILE_M
  elif tile_m % 8:
    raise ValueError(f"tile_m={tile_m} must be a multiple of 8 (the TPU's sublanes)")
  pad = -m % tile_m
  xp = jnp.pad(x, ((0, pad), (0, 0))) if pad else x
  y = wo_matmul_portable(xp, pw, tile_n=tile_n, tile_k=tile_k, tile_m=tile_m,
                         out_dtype=out_dtype, interpret=interp, compiler_params=params)
  return y[:m] if pad else y
