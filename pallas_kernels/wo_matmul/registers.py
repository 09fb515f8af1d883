"""Register-level building blocks of the Hopper weight-only kernels (the decode kernel,
`mosaic_gpu.py`, and the prefill GEMM, `mosaic_gpu_gemm.py`), each working on a Mosaic GPU
register array's raw registers through `plgpu.inline_mgpu`:

- `wgmma_from_upcast_4x`: int4 codes stored in register order (`code_order.WGMMA_ORDER`), loaded
  in the WGMMA_UPCAST_4X layout, relabelled as a WGMMA-layout array with no data movement;
- `registers_from_words`: a `code_order.thread_major` weight's blocks, loaded from global memory
  as plain 16-byte vectors, relabelled as the WGMMA_UPCAST_4X (4-bit) or UPCAST_2X (8-bit)
  array a shared-memory load gives;
- the 4-bit decodes from those registers' 32-bit words: `e2m1_bf16` (E2M1 bits, in the byte-pair or
  the halves order, one exact bf16 multiply), `nf4_slots_bf16` (NF4 slot codes by byte permutes),
  and for NF4 bytes `nf4_lut_halves` (f32 table values by byte permutes); the word algorithms
  themselves live in `decode.py` (written over `decode.WordOps`, tested on the CPU with a model of
  `prmt`);
- `int4_e4m3`: 4-bit codes as E4M3 bytes (INT4's odd values, E2M1's values: `fp8_x.py`),
  loaded in WGMMA_UPCAST_4X and relabelled as an 8-bit wgmma A operand (WGMMA_8BIT), no data
  movement;
- `spread_groups`: per-group row values (scales) spread over a register tile's columns;
- `pair_sums`: adjacent column pairs of a float32 accumulator added in place (`fp8_x`'s hi and
  lo columns of a token).

They lower only inside a Mosaic GPU kernel; the CPU tests lower them (`test_lowering_*.py`) and
the GPU benchmark checks the kernels that use them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels import _compat
from pallas_kernels.wo_matmul.code_order import block_words
from pallas_kernels.wo_matmul.code_order import THREAD_BLOCK
from pallas_kernels.wo_matmul.decode import BF16_2_POW_126
from pallas_kernels.wo_matmul.decode import e2m1_halves_words
from pallas_kernels.wo_matmul.decode import e2m1_pair_bits
from pallas_kernels.wo_matmul.decode import nf4_prmt_words
from pallas_kernels.wo_matmul.decode import nf4_slot_word_bits
from pallas_kernels.wo_matmul.decode import WordOps


def _mlir_word_ops() -> WordOps:
  """`decode.WordOps` as MLIR ops on i32 values, for the decodes written against it."""
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import arith  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  i32 = ir.IntegerType.get_signless(32)
  return WordOps(const=lambda v: mgpu.utils.c(v, i32), and_=arith.andi, or_=arith.ori,
                 xor=arith.xori, shr=arith.shrui, prmt=mgpu.utils.prmt, mul=arith.muli)


def nf4_lut_halves(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(rows, C) uint8 NF4 byte codes in the WGMMA register layout -> float32 table values of the
  low and the high nibbles (even k, odd k), each (rows, C) in the WGMMA layout.

  Each thread's register holds two adjacent bytes, four codes: `decode.nf4_prmt_words` looks
  them up with PTX `prmt` (through `plgpu.inline_mgpu`), and the low nibbles' words (0, 2) and
  the high nibbles' (1, 3) become the two outputs' registers. Bit-identical to `nf4_f32`; the
  lookup algorithm is tested on the CPU over all 65,536 code pairs with `prmt_reference`.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import arith, vector  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  out = plgpu.ShapeDtypeStruct(codes.shape, jnp.float32, layout=plgpu.Layout.WGMMA)

  @plgpu.inline_mgpu(arg_types=(plgpu.Layout.WGMMA,), return_type=(out, out))
  def lookup(_, arr):
    i16, i32 = ir.IntegerType.get_signless(16), ir.IntegerType.get_signless(32)
    vec2_f32 = ir.VectorType.get((2,), ir.F32Type.get())
    ops = _mlir_word_ops()

    def pair(a, b):  # two i32 words -> a vector<2xf32> register
      one = ir.VectorType.get((1,), i32)
      v = mgpu.utils.vector_concat([vector.broadcast(one, a), vector.broadcast(one, b)])
      return mgpu.utils.bitcast(v, vec2_f32)

    lo, hi = np.empty_like(arr.registers), np.empty_like(arr.registers)
    for idx, reg in np.ndenumerate(arr.registers):  # vector<2xi8>: bytes c, c + 1
      w = arith.extui(i32, mgpu.utils.bitcast(reg, i16))
      w0, w1, w2, w3 = nf4_prmt_words(w, ops)  # codes lo(c), hi(c), lo(c + 1), hi(c + 1)
      lo[idx], hi[idx] = pair(w0, w2), pair(w1, w3)
    return tuple(mgpu.FragmentedArray(_registers=r, _layout=arr.layout, _is_signed=None)
                 for r in (lo, hi))

  return lookup(codes)


def e2m1_bf16(q: jax.Array, mult: jax.Array | None = None, halves: bool = False) -> jax.Array:
  """(rows, C) E2M1 codes (their OCP bits as int4) in the WGMMA register layout -> bf16 values in
  the same layout: the E2M1 values, bit for bit (-0 kept), or, given `mult` ((rows, C) bf16, the
  same layout), the E2M1 values / 2^126 times `mult` (one rounding; exact where the product is a
  bf16).

  `decode.e2m1_pair_bits` turns a register's word and the pair's place in it into the pair's
  bf16 bits / 2^126 (4 integer ops, tested on the CPU over every code pair), or, for a weight
  stored in `code_order.HALVES_ORDER` (`halves`), `decode.e2m1_halves_words` (3), and one PTX
  `mul.rn.bf16x2` by 2^126 (or by `mult`) finishes: it keeps the subnormal that code 1 (0.5)
  passes through.
  """
  words = (e2m1_halves_words if halves else
           lambda w, ops: [e2m1_pair_bits(w, p, ops) for p in range(4)])
  return _int4_pairs_bf16(q, words, mult, BF16_2_POW_126 * 0x10001)


def nf4_slots_bf16(q: jax.Array, mult: jax.Array | None = None) -> jax.Array:
  """(rows, C) NF4 slot codes (`scales.nf4_slots`, as int4) in the WGMMA register layout -> the
  bf16 table values (`decode.nf4_slot_f32`) in the same layout, or, given `mult` ((rows, C)
  bf16, the bf16 absmax spread over its group), RN_bf16(value * mult): bitsandbytes' GEMV
  weight. `decode.nf4_slot_word_bits` (byte permutes, tested on the CPU over every code pair)
  and one PTX `mul.rn.bf16x2`."""
  return _int4_pairs_bf16(q, nf4_slot_word_bits, mult, None)


def _int4_pairs_bf16(q: jax.Array, word_bits, mult: jax.Array | None,
                     const_mult: int | None) -> jax.Array:
  """The register-level body of `e2m1_bf16` / `nf4_slots_bf16`: each register of `q` holds two
  adjacent codes, sliced from a 32-bit word of eight after the int4 load or relayout (as
  Mosaic's own int4 -> bf16 cast finds them); `word_bits(word, ops)` gives the word's four
  pairs as bf16x2 bits (built once a word, so the ops its pairs share are emitted once), each
  then multiplied (`mul.rn.bf16x2`) by `mult`'s register or by the constant bf16x2 bits
  `const_mult` (None: no multiply)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import llvm, vector  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  out = plgpu.ShapeDtypeStruct(q.shape, jnp.bfloat16, layout=plgpu.Layout.WGMMA)
  if mult is not None and (mult.shape != q.shape or mult.dtype != jnp.bfloat16):
    raise ValueError(f"mult must be {q.shape} bf16, got {mult.shape} {mult.dtype}")

  @plgpu.inline_mgpu(arg_types=(plgpu.Layout.WGMMA,) * (1 if mult is None else 2),
                     return_type=out)
  def decode(_, arr, *mult_arr):
    i32 = ir.IntegerType.get_signless(32)
    vec2_bf16 = ir.VectorType.get((2,), ir.BF16Type.get())
    ops = _mlir_word_ops()
    regs = arr.registers
    if any(ir.VectorType(r.type).shape != [2] for r in regs.flat):
      raise NotImplementedError("the int4 pair decode expects two int4 codes a register")
    if mult_arr:
      mults = [mgpu.utils.bitcast(r, i32) for r in mult_arr[0].registers.flat]
    else:
      mults = [None if const_mult is None else ops.const(const_mult)] * regs.size

    def word_slice(reg):  # (the 32-bit word a register was sliced from, pair index)
      op = getattr(reg.owner, "opview", None)
      if not (isinstance(op, vector.ExtractStridedSliceOp)
              and mgpu.utils.bitwidth(op.source.type) == 32 and op.strides[0].value == 1):
        raise NotImplementedError("the int4 pair decode reads int4 registers sliced from 32-bit "
                                  f"words (as the int4 loads and relayouts make them), got {reg}")
      return op.source, op.offsets[0].value // 2

    words = {}  # source word -> its four pairs' bits (MLIR values hash by identity)
    new = np.empty(regs.size, dtype=object)
    for i, reg in enumerate(regs.flat):
      src, part = word_slice(reg)
      if src not in words:
        words[src] = word_bits(mgpu.utils.bitcast(src, i32), ops)
      val = words[src][part]
      if mults[i] is not None:
        val = llvm.inline_asm(i32, [val, mults[i]], "mul.rn.bf16x2 $0, $1, $2;", "=r,r,r")
      new[i] = mgpu.utils.bitcast(val, vec2_bf16)
    return mgpu.FragmentedArray(_registers=new.reshape(regs.shape), _layout=arr.layout,
                                _is_signed=None)

  return decode(q, *(() if mult is None else (mult,)))


def wgmma_from_upcast_4x(w: jax.Array) -> jax.Array:
  """(R, C) int4 loaded in the WGMMA_UPCAST_4X layout from a weight in `code_order.WGMMA_ORDER`
  -> the same values as a WGMMA-layout array, with no data movement.

  Both layouts give a thread the same rows; in each aligned 32 columns of storage, UPCAST_4X
  gives lane q of a row quad one 32-bit word, storage positions 8 q .. 8 q + 7, and WGMMA wants
  it to hold K offsets 8 j + 2 q, 8 j + 2 q + 1 in its register j (j = 0..3, an int4 pair each).
  WGMMA_ORDER stores exactly those K offsets there, so register j is byte j of the word: a
  `vector.extract_strided_slice`, which Mosaic's fast int4 -> bf16 cast and `e2m1_bf16` read
  from the whole word. Replaces the two relayouts (UPCAST_4X -> 2X -> WGMMA, ~1 shuffle or
  permute a register pair)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic.gpu import fragmented_array as fa  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  out = plgpu.ShapeDtypeStruct(w.shape, w.dtype, layout=plgpu.Layout.WGMMA)

  @plgpu.inline_mgpu(arg_types=(plgpu.Layout.WGMMA_UPCAST_4X,), return_type=out)
  def relabel(_, arr):
    src = arr.registers
    shape = fa.WGMMA_LAYOUT.registers_shape(w.shape)
    # (row tiles of 64, column tiles of 8 | 32, 1, 1, 8-row half, 1, ...): see the layouts.
    if (src.shape[1] * 4, *src.shape[2:]) != (shape[1], *shape[2:]) or src.shape[0] != shape[0]:
      raise NotImplementedError(f"unexpected registers {src.shape} -> {shape} for {w.shape}")
    regs = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
      word = src[(idx[0], idx[1] // 4) + idx[2:]]  # vector<8xi4>
      byte = 2 * (idx[1] % 4)
      regs[idx] = mgpu.utils.vector_slice(word, slice(byte, byte + 2))
    return mgpu.FragmentedArray(_registers=regs, _layout=fa.WGMMA_LAYOUT,
                                _is_signed=arr.is_signed)

  return relabel(w)


def words_layout(bits: int):
  """The layout a block of `bits`-bit codes' words is loaded in for `registers_from_words`:
  WG_STRIDED, vectors of four words (16 bytes) a thread."""
  return _compat.plgpu_module().Layout.WG_STRIDED((block_words(bits),), vec_size=4)


def registers_from_words(blocks: list[jax.Array], bits: int) -> jax.Array:
  """`code_order.thread_major` blocks of `bits`-bit codes, each (64 * 128 * bits / 32,) uint32
  loaded in the WG_STRIDED layout with vectors of 4 (a thread's aligned 16-byte vectors), ->
  their (64 x len(blocks), 128) codes, block b rows 64 b .. 64 b + 63, as a shared-memory load
  of the same blocks gives them: int4 in the WGMMA_UPCAST_4X layout, int8 in WGMMA_UPCAST_2X,
  with no data movement. The blocks' storage order (`code_order.THREAD_WORDS`) put the word of
  register (c, h) in vector (2 c + h) // 4, lane (2 c + h) % 4."""
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic.gpu import fragmented_array as fa  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import vector  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  rows, cols = THREAD_BLOCK
  shape = (rows * len(blocks), cols)
  layout, mgpu_layout, dtype = {
      4: (plgpu.Layout.WGMMA_UPCAST_4X, fa.WGMMA_LAYOUT_UPCAST_4X, jnp.int4),
      8: (plgpu.Layout.WGMMA_UPCAST_2X, fa.WGMMA_LAYOUT_UPCAST_2X, jnp.int8)}[bits]
  out = plgpu.ShapeDtypeStruct(shape, dtype, layout=layout)

  @plgpu.inline_mgpu(arg_types=(words_layout(bits),) * len(blocks), return_type=out)
  def relabel(_, *arrs):
    regs_shape = mgpu_layout.registers_shape(shape)
    # (row tiles of 64, column tiles of four words, 1, 1, row half, 1, ...):
    # `test_thread_major_words_match_the_register_layouts`
    tiles = block_words(bits) // rows // 4
    if regs_shape[1:5] != (tiles, 1, 1, 2) or any(d != 1 for d in regs_shape[5:]):
      raise NotImplementedError(f"unexpected {bits}-bit registers {regs_shape}")
    word = ir.VectorType.get((32 // bits,), ir.IntegerType.get_signless(bits))
    regs = np.empty(regs_shape, dtype=object)
    for idx in np.ndindex(regs_shape):
      b, c, h = idx[0], idx[1], idx[4]
      vec, lane = divmod(2 * c + h, 4)
      one = mgpu.utils.vector_slice(arrs[b].registers[vec], slice(lane, lane + 1))
      regs[idx] = vector.bitcast(word, one)
    return mgpu.FragmentedArray(_registers=regs, _layout=mgpu_layout, _is_signed=True)

  return relabel(*blocks)


def int4_e4m3(w: jax.Array, word_bytes) -> jax.Array:
  """(R, C) 4-bit codes loaded in the WGMMA_UPCAST_4X layout -> (R, C) float8_e4m3fn in the
  WGMMA_8BIT layout (an 8-bit wgmma's A operand), each code's E4M3 byte as `word_bytes` makes
  it (`decode.int4_odd_e4m3_words`: 2^-9 (2 c + 1) for INT4; `decode.e2m1_e4m3_words`: the
  E2M1 value times 2^-6), with column L of each aligned 32 holding the code stored at
  `decode.FP8_A_ORDER[L]` (x must be in that order: `fp8_x.a_order`).

  Both layouts give a thread the same rows. UPCAST_4X gives lane q of a row quad storage
  positions 8 q .. 8 q + 7 of each 32 as one 32-bit word; WGMMA_8BIT wants it to hold columns
  4 q .. 4 q + 3 of each 16 in one register. `word_bytes` turns the word into the bytes of its
  even codes (the first 16's register) and of its odd codes (the second's): no shuffles.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic.gpu import fragmented_array as fa  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  out = plgpu.ShapeDtypeStruct(w.shape, jnp.float8_e4m3fn, layout=plgpu.Layout.WGMMA_8BIT)

  @plgpu.inline_mgpu(arg_types=(plgpu.Layout.WGMMA_UPCAST_4X,), return_type=out)
  def decode(_, arr):
    i32 = ir.IntegerType.get_signless(32)
    vec4_f8 = ir.VectorType.get((4,), ir.Float8E4M3FNType.get())
    ops = _mlir_word_ops()
    src = arr.registers
    shape = fa.WGMMA_LAYOUT_8BIT.registers_shape(w.shape)
    # (row tiles of 64, column tiles of 32 | 16, 1, 1, 8-row half, 1, ...): see the layouts.
    if (src.shape[1] * 2, *src.shape[2:]) != (shape[1], *shape[2:]) or src.shape[0] != shape[0]:
      raise NotImplementedError(f"unexpected registers {src.shape} -> {shape} for {w.shape}")
    regs = np.empty(shape, dtype=object)
    for idx in np.ndindex(src.shape):
      words = word_bytes(mgpu.utils.bitcast(src[idx], i32), ops)
      for half, word in enumerate(words):
        regs[(idx[0], 2 * idx[1] + half) + idx[2:]] = mgpu.utils.bitcast(word, vec4_f8)
    return mgpu.FragmentedArray(_registers=regs, _layout=fa.WGMMA_LAYOUT_8BIT, _is_signed=None)

  return decode(w)


def pair_sums(acc: jax.Array) -> jax.Array:
  """(R, C) float32 in the WGMMA layout -> the same shape with columns 2 j and 2 j + 1 both
  holding their sum: `fp8_x`'s hi and lo columns of a token added where they are. A register
  holds two adjacent columns of one 8-column tile (`spread_groups`), so each register's pair
  is added in place: no data moves between threads. The decode's flush then multiplies by
  out_scale s_x, as `fp8_x.combine` does after the kernel."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import arith  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  out = plgpu.ShapeDtypeStruct(acc.shape, jnp.float32, layout=plgpu.Layout.WGMMA)

  @plgpu.inline_mgpu(arg_types=(plgpu.Layout.WGMMA,), return_type=out)
  def add(_, arr):
    vec2_f32 = ir.VectorType.get((2,), ir.F32Type.get())
    regs = np.empty_like(arr.registers)
    for idx, reg in np.ndenumerate(arr.registers):
      if reg.type != vec2_f32:
        raise NotImplementedError(f"pair_sums reads vector<2xf32> registers, got {reg.type}")
      total = arith.addf(mgpu.utils.vector_slice(reg, slice(0, 1)),
                         mgpu.utils.vector_slice(reg, slice(1, 2)))
      regs[idx] = mgpu.utils.vector_concat([total, total])
    return mgpu.FragmentedArray(_registers=regs, _layout=arr.layout, _is_signed=None)

  return add(acc)


def spread_groups(group_rows: list[jax.Array], cols: int, group_cols: int,
                  byte_pairs: tuple[int, int] | None = None) -> jax.Array:
  """A chunk's per-group row values -> one (R, cols) WGMMA register array: group_rows[t], (R,)
  in the WGMMA row layout, fills columns [t * group_cols, (t + 1) * group_cols).

  No arithmetic: in the WGMMA layout each register holds two adjacent columns of one 8-column
  tile, and a thread's registers are indexed (row tile, column tile, ...), so the group of a
  register is known when the kernel is built. The output takes each register from the
  broadcast of its group's row values (`plgpu.inline_mgpu`). It replaced selects on a column
  iota (up to 7 a register for NVFP4's 8 groups of 16), which the compiler had already folded:
  the same time on the H200 (session 7), with the mapping now stated rather than recovered.

  byte_pairs: (mul, add) for uint8 rows of FP4 scale bytes (`scales.BYTE_MULTIPLIERS`): the
  output is bf16, each register the pair word b * (mul * 0x10001) + add * 0x10001 of its
  group's byte b, one integer multiply-add a row value (`scales.byte_multiplier_bits`, twice).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  shape = (group_rows[0].shape[0], cols)
  if byte_pairs is None and len(group_rows) == 1:
    return lax.broadcast_in_dim(group_rows[0], shape, [0])
  if group_cols % 8 or len(group_rows) * group_cols != cols:
    raise ValueError(f"{len(group_rows)} groups of {group_cols} columns (a multiple of 8) must "
                     f"fill the {cols} columns")
  dtype = jnp.bfloat16 if byte_pairs else group_rows[0].dtype
  out = plgpu.ShapeDtypeStruct(shape, dtype, layout=plgpu.Layout.WGMMA)
  row = plgpu.Layout.WGMMA.reduce(1)

  @plgpu.inline_mgpu(arg_types=(row,) * len(group_rows), return_type=out)
  def spread(_, *rows):
    full = [r.broadcast_minor(cols) for r in rows]
    regs = np.empty_like(full[0].registers)
    if regs.shape[1] * 8 != cols:  # (row tiles, column tiles of 8, ...): see WGMMA_LAYOUT
      raise NotImplementedError(f"unexpected WGMMA register array {regs.shape} for {shape}")
    words = {}  # a broadcast repeats each row register: one multiply-add a row value
    for idx in np.ndindex(regs.shape):
      reg = full[idx[1] * 8 // group_cols].registers[idx]
      if byte_pairs is not None:
        if id(reg) not in words:
          words[id(reg)] = _byte_pair_word(reg, *byte_pairs)
        reg = words[id(reg)]
      regs[idx] = reg
    return mgpu.FragmentedArray(_registers=regs, _layout=full[0].layout,
                                _is_signed=None if byte_pairs else full[0].is_signed)

  return spread(*group_rows)


def _byte_pair_word(reg, mul: int, add: int):
  """A vector<2xi8> register holding one byte b twice -> the vector<2xbf16> register whose
  word is b * (mul * 0x10001) + add * 0x10001 (b < 256 and mul * 255 + add < 2^16: no carry
  between the halves)."""
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import arith, vector  # pylint: disable=g-import-not-at-top
  from jax.experimental.mosaic import gpu as mgpu  # pylint: disable=g-import-not-at-top
  i32 = ir.IntegerType.get_signless(32)
  b = arith.extui(i32, vector.extract(reg, [], [0]))
  w = arith.addi(arith.muli(b, mgpu.utils.c(mul * 0x10001, i32)),
                 mgpu.utils.c(add * 0x10001, i32))
  one = vector.broadcast(ir.VectorType.get((1,), i32), w)
  return mgpu.utils.bitcast(one, ir.VectorType.get((2,), ir.BF16Type.get()))
