"""Fused block quantization on TPU (Mosaic TPU), testable in TPU interpret mode on the CPU.

The kernel body is the portable twin's (`portable.py`: the shared scheme math on pair-split
tiles, integer long division for every quotient, which TPUs also do not round correctly in
hardware), compiled by Mosaic TPU with a parallel grid over row tiles.

.. warning:: Untimed and unchecked on real TPU hardware: this project has no TPU. CI runs it in
   TPU interpret mode (`pltpu.InterpretParams`) against `mxjax.quantize`. Its tiles keep one
   block a row (lane dimension B / 2 <= 64), which wastes TPU lanes; a tuned TPU kernel would
   lay 128 lanes of several blocks a row and reduce segments.
"""

from __future__ import annotations

import jax

from pallas_kernels import _compat
from pallas_kernels.quantize.portable import quantize_portable
from pallas_kernels.quantize.reference import Quantized


def quantize_tpu(x: jax.Array, scheme: str, *, transpose: bool = False, interpret: bool = False,
                 tile_rows: int = 128) -> Quantized:
  """Fused block quantization with Mosaic TPU (see `api.quantize` for the contract).

  Args:
    x: (M, K) bf16 / f32.
    scheme: one of `schemes.SCHEMES`.
    transpose: quantize x.T.
    interpret: run in TPU interpret mode on the CPU.
    tile_rows: blocks per grid step (a multiple of 128 for the 1-D scale block).
  """
  pltpu = _compat.pltpu_module()
  params = pltpu.CompilerParams(dimension_semantics=("parallel",))
  interp = _compat.tpu_interpret_params() if interpret else False
  return quantize_portable(x, scheme, transpose=transpose, tile_rows=tile_rows,
                           interpret=interp, compiler_params=params)
