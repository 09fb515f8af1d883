"""INT4 / UINT4 / MXFP4 / FP8 decode on FP8 tensor cores, INT8 on s8 ones (`fp8_x`, an option
of the decode kernel, `mosaic_gpu.py`): x split into two 8-bit rows, the weights as 8-bit values
of the same type.

Why: at M <= 4 the decode's wgmma has N = 8 columns whatever M is (`decode_plan`: Mp >= 8),
and at N = 8 its bf16 MMA alone is ~27 us of INT4 g128's ~36 us kernel at 8192 x 28672 (H200,
session 19's floors). An FP8 wgmma takes K = 32 an instruction where bf16 takes 16: the same
columns in half the instructions, and at M <= 4 the columns are free. (Above, the split
doubles them: the same FLOPs at FP8's rate, which at N = 64 -> 128 may run nearer the tensor
cores' peak, and a cheaper decode, against twice the accumulator registers: for the GPU to
say.) Each row of x becomes two,

  x / s_x = hi + lo,   hi = E4M3(x / s_x),   lo = E4M3(x / s_x - hi),

s_x a power of two a row putting its amax in [128, 256) (or 2^-126, for rows under 2^-118). For
a bf16 x the split is exact for |x| >= s_x / 4, which is at most amax 2^-9 (hi keeps 4 of
bf16's 8 significant bits; the remainder is a multiple of x's ulp of magnitude <= 8 ulp, 4
bits, and E4M3 holds it while that ulp is at least E4M3's subnormal step 2^-9 s_x); below
that lo is rounded to the step, an error of at most 2^-10 s_x <= amax 2^-17. The weights
become E4M3 too, each byte built from its nibble with no table: an INT4 code c (-8..7) stands
for the odd value 2 c + 1 times 2^-9 (`decode.int4_odd_e4m3_words`), an E2M1 code for its value
times 2^-6, its bits moved into E4M3's (`decode.e2m1_e4m3_words`). For INT4, per group g and
split row r the kernel's wgmmas give

  P[n, r] = 2^-9 sum_k (2 c_kn + 1) x8_rk,  so  sum_k c_kn x8_rk = 2^8 (P[n, r] - S[g, r]),

with S[g, r] = 2^-9 sum_{k in g} x8_rk, computed here; each group's partial product is folded
as acc += (P - S) s_g in float32 (UINT4, whose codes are stored as INT4's c = q - 8, also
subtracts its offset term off_g sum_g(x) = 2^8 s_x 2 off_g S), and y[m] = 2^8 s_x (acc[:, 2m] +
acc[:, 2m + 1]). MXFP4 owes nothing back: acc += P s_g (s_g = 2^(e - 127); 2^-127 is a float32
subnormal, which a flushing GPU multiply would take as 0) and y[m] = 2^6 s_x (...), its groups
of 32 one K = 32 wgmma each (`group_slices`). FP8 weights are the A operand as stored (no
decode, K in order), each chunk's product folded as P s_channel.

INT8 weights take the s8 wgmma (int32 accumulators, exact), their bytes the A operand as
stored, and x in int8: each chunk of 128 of a row gets a power of two 2^e with its amax <=
127 2^e (`int8_split`), v = RN(x 2^(8 - e)) an integer of at most 15 bits, and

  v = 256 hi + lo,   hi = floor((v + 128) / 256) in [-127, 127],   lo in [-128, 127],

so x = 2^e hi + 2^(e - 8) lo within 2^(e - 9) <= amax_chunk 2^-15 (exact where x is a multiple
of 2^(e - 8)). Each chunk's int32 product is exact and small (|P| < 2^21, exact in float32) and
is folded as acc += P t s_channel, t the column's multiplier (2^e for hi, 2^(e - 8) for lo:
the x operand the INT4 path's S takes), and y[m] = acc[:, 2m] + acc[:, 2m + 1].

Numerics: Hopper's FP8 MMA keeps ~13 mantissa bits while it accumulates (FP22: SageAttention 2;
DeepSeek-V3's report), so each group's product is fresh (one accumulator a group, at most
K = 128: four instructions) and the groups add in float32 (DeepGEMM's promotion). The odd
values are why: offset codes c + 8 (0..15, a byte by masking alone) owe back 8 sum(x), which for x of one sign
is ~20x the result, and the accumulator's error grows with it. Under the project's model of it
(`mxjax.ops.accumulate`; `experiments/fp8_x_accumulation_model.py`, K = 8192, M = 1) the
offset codes give 1.8e-3 of the output's RMS for x of one sign, against the bf16 path's own
rounding error of 3.9e-3; the odd values, centred on 0, owe back sum(x) / 2, which the result
itself contains: 5.6e-5 there, 3.6e-4 for x centred on 0, and the bf16 output's error is the
bf16 path's. So this is not the bf16 path's numerics to the bit but close to them; an option,
checked against the f32 reference.

Non-finite x: a row holding Inf or NaN gives NaN in its output row (E4M3FN has no Inf; for
INT8, the chunk's multipliers are NaN). x's float32 subnormals (|x| < 2^-126, bf16's) count as
zeros where XLA flushes them (the CPU does; so does the reference's float32 dot there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mxjax.formats.rounding import encode
from pallas_kernels.wo_matmul.code_order import storage_order
from pallas_kernels.wo_matmul.code_order import untile_weight
from pallas_kernels.wo_matmul.decode import e2m1_e4m3_words
from pallas_kernels.wo_matmul.decode import FP8_A_ORDER
from pallas_kernels.wo_matmul.decode import int4_odd_e4m3_words
from pallas_kernels.wo_matmul.decode import JNP_WORD_OPS
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat
from pallas_kernels.wo_matmul.scales import group_scales
from pallas_kernels.wo_matmul.scales import uint4_offsets

E4M3 = jnp.float8_e4m3fn
SUM_SCALE = 2.0**-9  # S = 2^-9 sum(x8): the integer codes' 2^-9
INT_FORMATS = (WeightFormat.INT4, WeightFormat.UINT4)
BYTE_FORMATS = (WeightFormat.FP8, WeightFormat.INT8)  # the stored bytes are the A operand
FORMATS = INT_FORMATS + (WeightFormat.MXFP4,) + BYTE_FORMATS
# K elements of an INT8 x chunk sharing one power of two: the decode kernel's register tile
# (`decode_plan.CHUNK`), each chunk's product folded with its multipliers
INT8_CHUNK = 128


def check(pw: PackedWeight) -> None:
  """Raises unless `fp8_x` applies: INT4 / UINT4 (groups of 32, 64 or 128), MXFP4, FP8 or
  INT8 (per-channel) weights. NVFP4's groups of 16 are shorter than one FP8 wgmma's K, 32;
  NF4's table values are no E4M3 values."""
  if pw.fmt not in FORMATS:
    raise NotImplementedError(f"fp8_x is written for INT4 / UINT4 / MXFP4 / FP8 / INT8, not "
                              f"{pw.fmt.value}")
  if pw.fmt is WeightFormat.INT8 and pw.k % INT8_CHUNK:
    raise ValueError(f"fp8_x for INT8 scales x in chunks of {INT8_CHUNK}: K={pw.k} is not a "
                     "multiple")


def word_bytes(fmt: WeightFormat):
  """The word algorithm (`decode.WordOps`) giving the format's codes as E4M3 bytes."""
  return int4_odd_e4m3_words if fmt in INT_FORMATS else e2m1_e4m3_words


def owes_sums(fmt: WeightFormat) -> bool:
  """Whether the format's E4M3 values owe back S (INT4 / UINT4's odd values: half of x's group
  sum); E2M1 values are the codes' own."""
  return fmt in INT_FORMATS


def x_terms(fmt: WeightFormat) -> bool:
  """Whether the kernel reads an x operand a group (chunk) and column from `split_x`: INT4 /
  UINT4's sums S, INT8's chunk multipliers."""
  return owes_sums(fmt) or fmt is WeightFormat.INT8


def out_scale(fmt: WeightFormat) -> float:
  """What the folded sums are multiplied by (with s_x): 2^8 for the odd values (sum c x8 =
  2^8 (P - S)), 2^6 for E2M1 values stored as value 2^-6, 1 for FP8 weights (their own
  bytes) and INT8 (its multipliers folded in the kernel)."""
  return {WeightFormat.MXFP4: 2.0**6, WeightFormat.FP8: 1.0, WeightFormat.INT8: 1.0}.get(
      fmt, 2.0**8)


def a_order(x: jax.Array, pw: PackedWeight) -> jax.Array:
  """x (..., K) in the order the kernel's 8-bit A tiles hold K: for 4-bit codes the weight's
  storage order (`code_order.storage_order`), then `FP8_A_ORDER` within each aligned 32; FP8 and
  INT8 weights load as they are stored, in K order."""
  if pw.fmt in BYTE_FORMATS:
    return x
  xs = storage_order(x, pw)
  return xs.reshape(*xs.shape[:-1], -1, 32)[..., FP8_A_ORDER].reshape(xs.shape)


def int8_split(x: jax.Array, cols: int | None = None) -> tuple[jax.Array, jax.Array]:
  """x (M, K) -> (x8 (2 M, K) int8, rows hi_0, lo_0, hi_1, ...; t (K / INT8_CHUNK, cols) f32,
  the multipliers 2^e / 2^(e - 8) of each chunk's hi / lo row, NaN for a chunk holding Inf or
  NaN): x = t_hi hi + t_lo lo within 2^(e - 9) <= the chunk's amax 2^-15. `cols` (even, >= 2 M;
  default 2 M): t's columns past 2 M are those of zero rows (finite, 2^-7 / 2^-15), for x
  operand columns the kernel multiplies by zero products."""
  m, k = x.shape
  cols = 2 * m if cols is None else cols
  if cols < 2 * m or cols % 2:
    raise ValueError(f"int8_split: cols={cols} must be even and at least 2 M = {2 * m}")
  xf = x.astype(jnp.float32).reshape(m, k // INT8_CHUNK, INT8_CHUNK)
  # NaN counted as Inf: a max reduction need not propagate NaN (XLA's CPU dropped one)
  amax = jnp.max(jnp.where(jnp.isnan(xf), jnp.inf, jnp.abs(xf)), axis=-1, keepdims=True)
  _, e0 = jnp.frexp(amax)  # amax < 2^e0 <= 128 2^(e0 - 7): e = e0 - 7 unless amax > 127 2^(e0-7)
  e = e0 - 7 + (amax > jnp.ldexp(jnp.float32(127.0), e0 - 7)).astype(e0.dtype)
  e = jnp.clip(e, -118, 127)  # t_lo = 2^(e - 8) a normal float32: tiny chunks lose bits < 2^-126
  finite = jnp.isfinite(amax)
  v = jnp.round(jnp.ldexp(jnp.where(finite, xf, 0.0), 8 - e))  # |v| <= 127 * 256 (half-even)
  hi = jnp.floor((v + 128.0) / 256.0)  # exact: v an integer of at most 15 bits
  lo = v - 256.0 * hi
  rows = jnp.stack([hi, lo], axis=1).reshape(2 * m, k).astype(jnp.int8)
  # The multipliers built at their padded width (zero rows' past 2 M) and in their final
  # (K / chunk, cols) orientation, elementwise from the exponents (only those are transposed):
  # column c is token c // 2's hi (c even) or lo multiplier. A pad after the transpose was an
  # XLA kernel of its own (1.2 us of INT8 M = 1's 62.1, H200, kernels_wo_s23_int8_s8.json);
  # a stack of hi / lo, a select and a transpose after it took two (0.64 + 0.74 us of 62.4,
  # kernels_wo_s24_int8_m1_8.json)
  pad = ((0, cols // 2 - m), (0, 0))
  e = jnp.repeat(jnp.pad(e[..., 0], pad, constant_values=-7).T, 2, axis=1)  # (K / chunk, cols)
  finite = jnp.repeat(jnp.pad(finite[..., 0], pad, constant_values=True).T, 2, axis=1)
  lo_shift = 8 * (lax.broadcasted_iota(jnp.int32, e.shape, 1) % 2)  # t_lo = 2^(e - 8)
  t = jnp.where(finite, jnp.ldexp(jnp.ones(e.shape, jnp.float32), e - lo_shift), jnp.nan)
  return rows, t


def split_x(x: jax.Array, pw: PackedWeight, sum_cols: int) -> tuple[jax.Array, jax.Array,
                                                                     jax.Array]:
  """x (M, K) bf16 -> the kernel's inputs: x8 (2 M, K) E4M3 (INT8 weights: int8), rows hi_0,
  lo_0, hi_1, ... in `a_order`; row scales s_x (M,) f32, powers of two (INT8: ones); the x
  operand (rows, sum_cols) f32, columns past 2 M those of zero rows: for INT4 / UINT4 S
  (K / group rows), 2^-9 times each group's sum of each x8 row (zero past 2 M); for INT8 the
  chunks' multipliers (K / 128 rows, `int8_split`); others read none."""
  m, k = x.shape
  if pw.fmt is WeightFormat.INT8:
    x8, t = int8_split(x, sum_cols)
    return x8, jnp.ones((m,), jnp.float32), t
  xf = x.astype(jnp.float32)
  amax = jnp.max(jnp.abs(xf), axis=1)
  _, e = jnp.frexp(amax)  # amax in [2^(e-1), 2^e): amax / s_x in [128, 256) for s_x = 2^(e-8)
  # ... kept a normal float32 (>= 2^-126): XLA may flush a subnormal s_x to zero (the CPU does)
  sx = jnp.ldexp(jnp.ones_like(amax), jnp.maximum(e - 8, -126))
  xs = xf / sx[:, None]  # exact: a power of two, and |xs| < 256 fits E4M3 (max 448)
  # mxjax's own E4M3 rounding, not an XLA cast, which on the GPU has rounded differently
  # inside and outside a fusion (docs/design.md): lo must be x - the hi that is sent. Not
  # saturating: Inf (and NaN) become NaN, and the NaN reaches the row's output
  e4m3 = lambda v: lax.bitcast_convert_type(encode(v, "e4m3", saturate=False), E4M3)
  hi = e4m3(xs)
  lo = e4m3(xs - hi.astype(jnp.float32))
  rows = jnp.stack([hi, lo], axis=1).reshape(2 * m, k)
  # the sums before the permutation (within groups: the same sums), so that XLA need not
  # finish the gather before it reduces
  sums = rows.astype(jnp.float32).reshape(2 * m, k // pw.group, pw.group).sum(-1).T * SUM_SCALE
  x8 = a_order(rows, pw)
  sums = jnp.pad(sums, ((0, 0), (0, sum_cols - 2 * m)))
  return x8, sx, sums


def combine(cols: jax.Array, sx: jax.Array, fmt: WeightFormat) -> jax.Array:
  """The kernel's (N, Mp) float32 sums -> y^T (N, M): each token's two columns added, times
  `out_scale(fmt)` s_x."""
  m = sx.shape[0]
  return (cols[:, 0:2 * m:2] + cols[:, 1:2 * m:2]) * (out_scale(fmt) * sx)[None, :]


def a_values(pw: PackedWeight) -> jax.Array:
  """The weights as the kernel's wgmma reads them: (N, K) float32 E4M3 values (2^-9 (2 c + 1),
  or E2M1 values 2^-6) in `a_order`, decoded with `word_bytes` from the stored 32-bit words
  (the CPU model of the kernel's registers); FP8 and INT8 weights as stored."""
  if pw.fmt in BYTE_FORMATS:
    return untile_weight(pw).w.astype(jnp.float32)
  w = untile_weight(pw).w.astype(jnp.int32) & 15  # (N, K) storage order, nibbles
  n, k = w.shape
  words = (w.reshape(n, k // 8, 8).astype(jnp.uint32)
           << (4 * jnp.arange(8, dtype=jnp.uint32))).sum(-1, dtype=jnp.uint32)
  even, odd = word_bytes(pw.fmt)(words, JNP_WORD_OPS)
  # byte i of `even` is storage position 2 i of the word, at column 4 q + i of the first 16 of
  # the 32 (q: the word within the 32); `odd` likewise in the second 16
  nbytes = lambda v: (v[..., None] >> (8 * jnp.arange(4, dtype=jnp.uint32))) & 0xFF
  e, o = nbytes(even).reshape(n, k // 32, 16), nbytes(odd).reshape(n, k // 32, 16)
  codes = jnp.concatenate([e, o], axis=-1).reshape(n, k).astype(jnp.uint8)
  return jax.lax.bitcast_convert_type(codes, E4M3).astype(jnp.float32)


def wo_matmul_fp8_x_twin(x: jax.Array, pw: PackedWeight) -> jax.Array:
  """The `fp8_x` kernel's arithmetic in jnp (float32, exact products; the GPU's FP8 MMA keeps
  ~13 bits while it accumulates a group, which this does not model): x (M, K) bf16 ->
  y (M, N) float32. Checks the split, the weights' bytes, the K order and the group fold
  together on the CPU."""
  check(pw)
  x8, sx, sums = split_x(x, pw, 2 * x.shape[0])
  a = a_values(pw)  # (N, K)
  n, k = a.shape
  if pw.fmt is WeightFormat.INT8:  # exact chunk products, times the chunk's x multipliers
    parts = jnp.einsum("ngk,rgk->gnr", a.reshape(n, k // INT8_CHUNK, INT8_CHUNK),
                       x8.astype(jnp.float32).reshape(-1, k // INT8_CHUNK, INT8_CHUNK),
                       precision=jax.lax.Precision.HIGHEST)  # (G, N, 2M)
    terms = parts * sums[:, None, :] * group_scales(pw)[0][None, :, None]
    return combine(terms.sum(0), sx, pw.fmt).T
  g = pw.group
  parts = jnp.einsum("ngk,rgk->gnr", a.reshape(n, k // g, g),
                     x8.astype(jnp.float32).reshape(-1, k // g, g),
                     precision=jax.lax.Precision.HIGHEST)  # (G, N, 2M)
  s = group_scales(pw)  # (G, N)
  if owes_sums(pw.fmt):
    parts = parts - sums[:, None, :]
  terms = parts * s[:, :, None]
  if pw.fmt is WeightFormat.UINT4:  # the zero points: off sum(x), 2 off S in these units
    terms = terms - 2.0 * uint4_offsets(pw).offset[:, :, None] * sums[:, None, :]
  return combine(terms.sum(0), sx, pw.fmt).T


def max_exact_error(x: np.ndarray) -> float:
  """The split's error bound for one element of a row of x (float): half of lo's step,
  2^-10 s_x (2^(floor(log2 amax) - 17), or 2^-136 for rows under 2^-118), reached only below
  s_x / 4 <= amax 2^-9; zero for a zero row."""
  amax = float(np.max(np.abs(x)))
  return 0.0 if amax == 0 else 2.0**(max(np.floor(np.log2(amax)) - 7, -126) - 10)
