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
from pallas_kernels.quantize.schemes import get_scheme


def quantize_tpu(x: jax.Array, scheme: str, *, transpose: bool = False, interpret: bool = False,
                 tile_rows: int | None = None) -> Quantized:
  """Fused block quantization with Mosaic TPU (see `api.quantize` for the contract).

  Args:
    x: (M, K) bf16 / f32.
    scheme: one of `schemes.SCHEMES`.
    transpose: quantize x.T.
    interpret: run in TPU interpret mode on the CPU.
    tile_rows: blocks per grid step. Mosaic TPU takes a 1-D block (the scales) only as a
      multiple of 1024 elements, a power of two of at least 512 for 8-bit scales, or the whole
      array; the default is 1024, or every block at once when there are fewer than 1024.

  Raises:
    ValueError: the default cannot tile the blocks (more than 1024 and not a multiple of it):
      pad x or pass tile_rows.
  """
  pltpu = _compat.pltpu_module()
  params = pltpu.CompilerParams(dimension_semantics=("parallel",))
  interp = _compat.tpu_interpret_params() if interpret else False
  if tile_rows is None:
    rows = x.size // get_scheme(scheme).block
    if rows > 1024 and rows % 1024:
      raise ValueError(f"the TPU kernel tiles {rows} blocks of {scheme} by 1024 (Mosaic TPU's "
                       "1-D block rule): pad x to a multiple of 1024 blocks or pass tile_rows")
    tile_rows = min(rows, 1024)
  return quantize_portable(x, scheme, transpose=transpose, tile_rows=tile_rows,
                           interpret=interp, compiler_params=params)
