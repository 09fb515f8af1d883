"""Pure-jnp fused block quantization (the "xla" implementation and the kernels' oracle).

Output layout is mxjax's QArray layout for `mxjax.quantize(x, scheme, axis=-1)` on a 2-D x:
  codes: (M, K) float8_e4m3fn (8-bit) or (M, K // 2) uint8, two 4-bit codes a byte along K,
         even index in the low nibble;
  scale: (M, K // B): uint8 E8M0 (MX), float32 (FP8 1x128, INT4 g128), float8_e4m3fn (NVFP4);
  tensor_scale: (1, 1) float32 for NVFP4, else None.
With `transpose=True` the result is that of `x.T` (the column-wise output a backward pass needs).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mxjax.formats.exact import div_rn
from pallas_kernels.quantize.schemes import FusedScheme
from pallas_kernels.quantize.schemes import block_quantize
from pallas_kernels.quantize.schemes import get_scheme
from pallas_kernels.quantize.schemes import tensor_scale_terms


class Quantized(NamedTuple):
  """codes, scale, tensor_scale as mxjax's QArray stores them (see module docstring)."""

  codes: jax.Array
  scale: jax.Array
  tensor_scale: jax.Array | None


def check_shape(x: jax.Array, scheme: FusedScheme) -> tuple[int, int]:
  if x.ndim != 2:
    raise ValueError(f"fused quantization takes a 2-D array, got shape {x.shape}")
  m, k = x.shape
  if k % scheme.block:
    raise ValueError(f"{scheme.name}: K={k} must be a multiple of the block {scheme.block}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"fused quantization takes a floating array, got {x.dtype}")
  return m, k


def split_pairs(x: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
  """(M, K) -> even / odd elements of each block as float32 (M * K // B, B // 2)."""
  xb = x.astype(jnp.float32).reshape(-1, block // 2, 2)
  return xb[..., 0], xb[..., 1]


def pairs_from_bytes(scheme: FusedScheme, codes: jax.Array) -> jax.Array:
  """Codes (R, B) uint8, one a byte in element order -> the (R, B // 2) pairs `assemble` takes
  (even element first): 8-bit codes as uint16 words, a bitcast; 4-bit codes packed two a byte
  (even in the low nibble, `nibbles_from_words`), an XLA pass over the code bytes."""
  r, b = codes.shape
  words = lax.bitcast_convert_type(codes.reshape(r, b // 2, 2), jnp.uint16)
  return words if scheme.bits == 8 else nibbles_from_words(words)


def nibbles_from_words(words: jax.Array) -> jax.Array:
  """uint16 words, each two 4-bit code bytes in element order (even element in the low byte,
  as little-endian memory holds them) -> one uint8 a word, the even code in the low nibble.
  The f32 kernel packs in shared memory this way (its code bytes re-read as words)."""
  return ((words & 0xF) | ((words >> 4) & 0xF0)).astype(jnp.uint8)


def assemble(scheme: FusedScheme, packed: jax.Array, scale: jax.Array, m: int, k: int,
             tensor_scale: jax.Array | None) -> Quantized:
  """Kernel outputs (packed pairs (R, B // 2), per-block scale (R,)) -> QArray-layout arrays."""
  if scheme.bits == 8:
    u16 = packed.astype(jnp.uint16)
    b = lax.bitcast_convert_type(u16, jnp.uint8)  # (..., 2): low byte (even element) first
    codes = lax.bitcast_convert_type(b.reshape(m, k), jnp.float8_e4m3fn)
  else:
    codes = packed.astype(jnp.uint8).reshape(m, k // 2)
  if scheme.scale_dtype == jnp.uint8:
    scale = scale.astype(jnp.uint8)
  elif scheme.scale_dtype == jnp.float8_e4m3fn:
    # E4M3 bit patterns (int32 or uint8) -> float8_e4m3fn.
    scale = lax.bitcast_convert_type(scale.astype(jnp.uint8), jnp.float8_e4m3fn)
  else:
    scale = scale.astype(jnp.float32)
  ts = None if tensor_scale is None else tensor_scale.reshape(1, 1).astype(jnp.float32)
  return Quantized(codes, scale.reshape(m, k // scheme.block), ts)


def nvfp4_tensor_terms(x: jax.Array, tensor_amax: jax.Array | None = None):
  """NVFP4 tensor terms (`schemes.tensor_scale_terms`) from one XLA reduction over |x|, or
  from `tensor_amax` (a float32 scalar) without reading x.

  The reduction is an integer max of the sign-cleared bits (of bf16 x as stored, 2 bytes an
  element): float order for magnitudes, with every NaN above +Inf, so a NaN anywhere makes the
  tensor amax NaN, as in mxjax (XLA's CPU float max-reduction can drop a NaN), in one pass.
  """
  if tensor_amax is not None:
    amax = jnp.asarray(tensor_amax, jnp.float32)
    if amax.size != 1:
      raise ValueError(f"tensor_amax must be one value (the tensor's amax), got shape "
                       f"{amax.shape}")
    amax = amax.reshape(())
  else:
    if x.dtype == jnp.bfloat16:
      bits = lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.int32) & 0x7FFF
      top = jnp.max(bits) << 16
    else:
      top = jnp.max(lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32) & 0x7FFFFFFF)
    amax = lax.bitcast_convert_type(top, jnp.float32)
  amax = jnp.where(amax != amax, jnp.float32(jnp.nan), amax)
  return tensor_scale_terms(amax, div=div_rn)


def tensor_terms(scheme: FusedScheme, x: jax.Array, tensor_amax: jax.Array | None = None):
  """(s_t, [safe_t, inv_t, ok_t]) of a two-level scheme (NVFP4), from x's amax or the given
  `tensor_amax`; (None, None) for the others, which take no tensor amax.

  A given amax (kept from an earlier step, or computed by the op that produced x) spares the
  pass over x; the codes are then `mxjax.quantize`'s with that amax as the scheme's static
  tensor amax (`ScaleChoice.STATIC`): values beyond it saturate.
  """
  if not scheme.two_level:
    if tensor_amax is not None:
      raise ValueError(f"{scheme.name} has no tensor scale: tensor_amax is NVFP4's")
    return None, None
  s_t, *terms = nvfp4_tensor_terms(x, tensor_amax)
  return s_t, terms


def quantize_reference(x: jax.Array, scheme: str, *, transpose: bool = False,
                       tensor_amax: jax.Array | None = None) -> Quantized:
  """Fused block quantization of a 2-D `x` along its last axis (of `x.T` if transpose);
  NVFP4 with the given `tensor_amax` if any (`tensor_terms`)."""
  sch = get_scheme(scheme)
  if transpose:
    x = x.T
  m, k = check_shape(x, sch)
  xe, xo = split_pairs(x, sch.block)
  s_t, ts = tensor_terms(sch, x, tensor_amax)
  packed, scale = block_quantize(sch, xe, xo, ts, div=div_rn)
  return assemble(sch, packed, scale, m, k, s_t)
