"""Weight-only matmul on Hopper with Mosaic GPU: `y = x @ dequant(W)`.

W: INT4 / UINT4 / NF4 with groups of 32, 64 or 128 along K, MXFP4 (E8M0 per 32), NVFP4 (E4M3
per 16 and a tensor scale), or INT8 / FP8 E4M3 with per-channel scales (int8 -> bf16 through the
WGMMA_UPCAST_2X layout; e4m3 bytes bitcast in registers and converted e4m3 -> f16 -> f32 -> bf16,
exact). E2M1 keeps its OCP bits and is decoded from the 32-bit words of int4 registers by four
integer ops and one exact bf16 multiply a pair of codes (`e2m1_bf16`). NF4 stored as int4 slot
codes (`scales.nf4_slots`, `repack`'s GPU default) is decoded the same way, by byte permutes
(`nf4_slots_bf16`: 19 integer ops for eight codes) and one bf16 multiply by the absmax; NF4
bytes are split into nibbles (even / odd k halves, each with its half of x) and looked up by
byte permutes in f32 (`nf4_lut_halves`), a select tree (`decode.nf4_f32`) or as two bf16 terms
(`decode.nf4_hi_lo`). `decode_plan.plan_decode` resolves every option before the kernel is
built; paths not yet checked on a GPU (`decode_plan.VERIFIED`) need `allow_unverified=True`.

Decode-shaped problems (M <= 64) are bound by reading the packed weight, so the kernel is built
to stream W^T (N, K) int4 through shared memory at HBM speed and keep the tensor cores fed from
registers ("swap AB"): it computes `y^T = W^T x^T`, with the dequantized W^T tile as the
register-resident left operand of wgmma (64 rows of N per instruction) and the tiny x^T tile as
the shared-memory right operand (its N dimension is M, padded to a multiple of 8).

A CTA's warpgroup owns `tile_n` rows of W^T (with `compute_wgs=2`, two compute warpgroups own
half each and a third issues the copies). A `plgpu.emit_pipeline` keeps `steps` TMA copies of
(tile_n x 128 * gps) int4 weight tiles, their scales and the x tile in flight. Per 128-wide
chunk of K within a step:

  q      = int4 tile -> bf16          (loaded in WGMMA_UPCAST_4X, relaid out to WGMMA, or for a
                                       weight in register order relabelled:
                                       `wgmma_from_upcast_4x`; Mosaic's fast i4 cast)
  for each group g in the chunk (1, 2 or 4 of them):
    part = wgmma(q, x_g^T)            (fresh f32 accumulator, (tile_n, Mp); x_g is x with every
                                       element outside group g zeroed, so one register tile
                                       serves all its groups)
    acc += part * s_g[:, None]        (scale applied exactly in f32, as the reference does)
    acc -= offset_g[:, None] * xsum_g[None, :]     (UINT4 only: zero point folded into an offset,
                                       read as stored or made here from zero-point bytes,
                                       `scales.uint4_zero_points`; with `zero_in_weights`,
                                       q - zp in bf16 instead)

MXFP4 / NVFP4 / NF4 (`prescale`, default) instead multiply the decoded weights by their block scales
in registers and run one wgmma per chunk into `acc` directly: exact in bf16 for E2M1 (a power of two
or an E4M3 value times an E2M1 value; NVFP4's weights carry s_b / 2^8, its output 2^8 s_t:
`NVFP4_PRESCALE_LOG2`; NVFP4's multiply is the E2M1 decode's own, as MXFP4's is with folded
multipliers, `scales.fp4_scales_bf16(mx_fold=True)`, or scale bytes that are each their multiplier
up to one IMAD, `scales.fp4_byte_multipliers`); for NF4 slot codes bf16(table) * bf16(absmax)
rounded once (bitsandbytes' GEMV weight), for NF4 bytes the f32 product rounded once to bf16 (the
weight bitsandbytes' dequantization gives in bf16). These and per-channel INT8 / FP8 (whose scales
then multiply the f32 sum when a tile is written out) chain all of a step's wgmmas into the carried
accumulator and wait on them once a step (`step_wait`), so that decoding a chunk overlaps the
previous chunk's MMA; group-scaled formats can read chunk j's partial products after issuing
chunk j + 1's wgmmas instead (UINT4's default at M <= 16).

With `fp8_x` the weights reach the tensor cores as 8-bit values instead of bf16 (`fp8_x.py`):
INT4 / UINT4 / MXFP4 codes rebuilt as E4M3 bytes, FP8 and INT8 bytes as stored (INT8 on the s8
wgmma, int32 accumulators), against x split by XLA into two 8-bit rows a token; each group's or
chunk's product is folded in float32 and XLA adds each token's two columns (the H200's default
for FP8 at M <= 8, INT8 and MXFP4 at M <= 4 on large weights, `configs.decode_config`); with
`fused_sum` the kernel adds them in registers (`registers.pair_sums`) and scales them by s_x.

A weight stored by `code_order.thread_major` (int4-stored formats, INT8, FP8) is read without
TMA: each warpgroup loads its chunks' codes from global memory itself, two (4-bit) or four
(8-bit) 16-byte vectors a thread a 64 x 128 block, which `registers.registers_from_words`
relabels as the WGMMA_UPCAST_4X / UPCAST_2X array a shared-memory load gives; only x and the
scales go through the pipeline. With `prefetch_codes` (one by default there) each step's
codes are loaded that many steps before and carried. Checked on the H100 for seven formats
(sessions 27-28, `decode_plan.PLAIN_LOADS_VERIFIED`), one step ahead; two (session 29) were
slower.

Which CTA runs which (N tile, K step) iterations is a `schedule.Schedule`: one CTA per N tile and
K split (`splits`), or stream-K (`stream_k` CTAs an SM, equal shares of the iterations). Partial
sums go to float32 slots (slots, N, Mp) that XLA adds (a few hundred KB to a few MB), or, with
`fused_sum` (stream-K), the CTA holding a tile's first slot waits on a semaphore for the
others, adds them and writes y itself (`schedule.py` says why this cannot deadlock); with one
slot a tile (`splits=1`) each CTA writes its tile of y at once, no semaphore in the kernel. The
other slots go out by a TMA store each, or with `slot_stores` by plain stores and a release, and
come back to slot 0 by TMA copies or with `slot_loads` by plain loads.

This kernel uses Mosaic GPU-only primitives (TMA, wgmma) and cannot run in the CPU
interpreter; `portable.py` is its twin with the same numerics, and the GPU benchmark checks
this kernel against the reference for every shape it times.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels import _ptx
from pallas_kernels.wo_matmul import fp8_x as F8
from pallas_kernels.wo_matmul.code_order import block_words
from pallas_kernels.wo_matmul.code_order import code_bits
from pallas_kernels.wo_matmul.decode import nf4_f32
from pallas_kernels.wo_matmul.decode import nf4_hi_lo
from pallas_kernels.wo_matmul.decode import uint4_zero_bf16
from pallas_kernels.wo_matmul.decode_plan import CHUNK
from pallas_kernels.wo_matmul.decode_plan import MEMORY_REGISTERS
from pallas_kernels.wo_matmul.decode_plan import plan_decode
from pallas_kernels.wo_matmul.decode_plan import xsum_cols
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat
from pallas_kernels.wo_matmul.registers import e2m1_bf16
from pallas_kernels.wo_matmul.registers import int4_e4m3
from pallas_kernels.wo_matmul.registers import nf4_lut_halves
from pallas_kernels.wo_matmul.registers import nf4_slots_bf16
from pallas_kernels.wo_matmul.registers import pair_sums
from pallas_kernels.wo_matmul.registers import registers_from_words
from pallas_kernels.wo_matmul.registers import spread_groups
from pallas_kernels.wo_matmul.registers import wgmma_from_upcast_4x
from pallas_kernels.wo_matmul.registers import words_layout
from pallas_kernels.wo_matmul.scales import amax_scale_f32
from pallas_kernels.wo_matmul.scales import BYTE_MULTIPLIERS
from pallas_kernels.wo_matmul.scales import group_scales
from pallas_kernels.wo_matmul.scales import NVFP4_PRESCALE_LOG2
from pallas_kernels.wo_matmul.scales import scale_bytes_f32
from pallas_kernels.wo_matmul.x_split import split as x_split


def _zero_points_f32(zp: jax.Array) -> jax.Array:
  """UINT4 zero-point bytes (uint8, in registers) as float32, widened to 32 bits first (Mosaic
  does no arithmetic on 8-bit registers), as the FP4 scale bytes are (`scale_bytes_f32`)."""
  return zp.astype(jnp.uint32).astype(jnp.float32)


def wo_matmul_mosaic_gpu(x: jax.Array, pw: PackedWeight, *, out_dtype=None,
                         **options) -> jax.Array:
  """`x @ dequant(W)` on a Hopper GPU for INT4 / UINT4 / NF4 (groups 32, 64, 128), MXFP4,
  NVFP4, INT8 and FP8 (per-channel) weights.

  Args:
    x: (M, K) bf16 activations, M <= 64.
    pw: PackedWeight (`layout.repack`).
    out_dtype: default x.dtype.
    **options: the kernel's tile, pipeline, schedule and decode options, all defaulted
      (`decode_plan.plan_decode` documents each; `configs.decode_config` holds the measured
      defaults); `allow_unverified=True` runs a path not yet checked on a GPU.

  Returns:
    (M, N) array of out_dtype.
  """
  plgpu = _compat.plgpu_module()
  m, k = x.shape
  n, g = pw.n, pw.group
  if x.dtype != jnp.bfloat16:
    raise NotImplementedError(f"mosaic_gpu wo_matmul takes bf16 activations, got {x.dtype}")
  out_dtype = out_dtype or x.dtype
  if jnp.dtype(out_dtype).itemsize > 4:  # `fused_sum` writes y in at most 4 bytes an element
    options.setdefault("fused_sum", False)
  p = plan_decode(m, k, pw, **options)
  xp = jnp.pad(x, ((0, p.mp - m), (0, 0))) if p.mp != m and not p.tma_pad else x

  def group_copies(a, chunk_cols, group_cols):
    """(xsub * Mp, C): copy t keeps only the t-th group of every chunk of `a`'s columns."""
    if p.xsub == 1:
      return a
    grp = (jnp.arange(a.shape[1]) % chunk_cols) // group_cols
    return jnp.concatenate([jnp.where(grp == t, a, jnp.zeros_like(a)) for t in range(p.xsub)])

  if p.split_kernel:  # INT8 / FP8 / MXFP4's rows and multipliers or scales by one kernel
    x8, sx, x8_sums = x_split(x, pw, xsum_cols(p.mp))
  elif p.fp8_x:  # two 8-bit rows a token, in the A tiles' K order, and their x operand
    x8, sx, x8_sums = F8.split_x(x, pw, xsum_cols(p.mp))
  if p.fp8_x:
    pad = 0 if p.tma_pad else p.mp - x8.shape[0]
    xg = [jnp.pad(x8, ((0, pad), (0, 0))) if pad else x8]
  elif p.nf4:  # two x halves, the even and the odd k (the low and high nibbles)
    xg = [group_copies(h, CHUNK // 2, g // 2) for h in (xp[:, 0::2], xp[:, 1::2])]
  else:
    xg = [group_copies(xp, CHUNK, g)]
  w_in = pw.w
  scale_in = pw.scale  # as stored; bf16 multipliers (NVFP4's with 2^118) need no decode
  if p.fp4 and p.fp4_scale_bytes:  # stored bytes, decoded in the kernel; NVFP4's E4M3 as uint8
    scale_in = lax.bitcast_convert_type(pw.scale, jnp.uint8)
  elif p.fp4 and not pw.scale_bf16:  # FP4 scales widened to f32 by XLA per call; prescaled
    # NVFP4 puts s_b on the weights and s_t on the output
    scale_in = group_scales(pw, tensor_scale=not p.prescale)
  if p.fmt is WeightFormat.FP8:  # loaded as bytes (the int8 layout path), bitcast in registers
    w_in = lax.bitcast_convert_type(pw.w, jnp.int8)
  bits = code_bits(pw) if p.plain_loads else None
  if p.plain_loads:  # (N / 64 * K / 128, `block_words`) 32-bit words: a row a block
    w_in = lax.bitcast_convert_type(w_in.reshape(-1, block_words(bits), 32 // bits), jnp.uint32)
  extra = []
  if p.fp8_x:  # INT4 / UINT4's sums S (UINT4: its offsets first), INT8's multipliers
    extra = [pw.offset, x8_sums] if p.asym else [x8_sums] if p.xsum_in else []
  elif p.xsum_in:
    # Per-group row sums of x, float32 (G, xsum_cols): the zero-point term is offset_g *
    # xsum_g. x's rows are padded before the sums, not the sums after: a pad feeding a
    # reduction can fuse into it, where summing then padding took two XLA kernels (1.0 + 1.1 us
    # at M = 1, H200, session 13's `kernel_us`; this order untimed as yet).
    xr = jnp.pad(x, ((0, xsum_cols(p.mp) - m), (0, 0)))
    xsum = xr.astype(jnp.float32).reshape(-1, k // g, g).sum(-1).T
    extra = [pw.offset, xsum]
  elif p.asym:
    extra = [pw.offset]
  # FP4 scale bytes each their multiplier by one IMAD (`scales.fp4_byte_multipliers`)
  byte_pairs = BYTE_MULTIPLIERS[p.fmt] if p.fp4_scale_bytes and pw.byte_multipliers else None
  nvfp4_out = p.prescale and p.fmt is WeightFormat.NVFP4  # y * 2^(126 - 8) * s_t after the sum
  # a scheme's bf16 scales, stored as such (not INT4's bf16 amaxes)
  bf16_scales = pw.scale.dtype == jnp.bfloat16 and not pw.amax_scales and not p.fp4
  row_fma = functools.partial(_ptx.fma_rn, layout=_ptx.ROW)  # on one value a tile row
  if nvfp4_out and p.fused_sum:  # read in the kernel (a scalar load), not by an XLA multiply
    extra = [pw.tensor_scale]
  if p.fp8_x and p.fused_sum:  # each x operand column's out_scale s_x (zero past 2 M): what
    # `F8.combine` multiplies a token's pair sum by, read in the kernel's flush
    col_scale = jnp.repeat(F8.out_scale(p.fmt) * sx, 2)
    extra = extra + [jnp.pad(col_scale, (0, p.mp - 2 * m))[None, :]]

  # Swizzle tiles no wider than one group, so each group's slice is whole tiles.
  xw = g if p.group_slices else 64  # x's swizzle tiles: whole ones in each wgmma's K slice
  x_tf = (plgpu.TilingTransform((8, xw)), plgpu.SwizzleTransform(2 * xw))
  if p.fp8_x:  # 8-bit: a chunk (or with group slices, a group) of K in one swizzle tile, the
    xw = g if p.group_slices else CHUNK  # 8-bit wgmma's K group: a byte an element
    x_tf = (plgpu.TilingTransform((8, xw)), plgpu.SwizzleTransform(xw))
  w_tf = (plgpu.TilingTransform((8, 64 if p.nf4 else 128)),
          plgpu.SwizzleTransform(128 if p.per_channel else 64))
  wk = CHUNK // 2 if p.nf4 else CHUNK  # weight columns (bytes or int4) per 128 of K

  nx = len(xg)

  def kernel(*refs):
    x_gmems, (w_gmem, s_gmem), rest = refs[:nx], refs[nx:nx + 2], refs[nx + 2:]
    off_gmem = rest[0] if p.asym else None  # UINT4's offsets, then any x group sums
    xs_gmem = rest[int(p.asym)] if p.xsum_in else None
    ts_gmem = rest[0] if nvfp4_out and p.fused_sum else None
    cs_gmem = rest[int(p.asym) + int(p.xsum_in)] if p.fp8_x and p.fused_sum else None
    if p.fused_sum:  # y is an output; the slots' buffer doubles as y's transposed tile
      o_gmem, y_gmem, (o_smem, yt_smem), bars = rest[-4:]
    else:
      o_gmem, o_smem = rest[-2:]
    def body(indices, *refs_and_acc, words=None):
      if p.load_only:
        return refs_and_acc[-1]
      x_smems, smems = refs_and_acc[:nx], refs_and_acc[nx:-1]
      if p.plain_loads:  # no weight tile in shared memory: its codes come by plain loads
        smems = (None, *smems)
      (w_smem, s_smem), smems = smems[:2], smems[2:]
      off_smem = smems[0] if p.asym else None
      xs_smem = smems[p.asym] if p.xsum_in else None
      acc = refs_and_acc[-1]
      wg_row = lax.axis_index("wg") * p.wg_rows if p.compute_wgs > 1 else 0
      if p.compute_wgs > 1:  # this compute warpgroup's rows of the tile
        r = pl.ds(wg_row, p.wg_rows)
        w_smem = None if p.plain_loads else w_smem.at[r]
        s_smem = s_smem.at[:, r]
        off_smem = off_smem.at[:, r] if p.asym else None
      if p.plain_loads:  # every chunk's loads issued before any chunk's decode waits on them
        words = plain_words(indices[0], wg_row) if words is None else words
        codes = [registers_from_words(blocks, bits) for blocks in words]

      def block_scales(j, group_cols, dtype, times=1.0):  # the chunk's scales * times, spread
        rows = []                                        # over its columns
        for t in range(p.sub):
          st = plgpu.load(s_smem.at[j * p.sub + t], (), layout=plgpu.Layout.WGMMA.reduce(1))
          # stored as used, or bytes each their multiplier by one IMAD: `times` included
          if pw.scale_bf16 or byte_pairs:
            rows.append(st)
            continue
          if p.fp4_scale_bytes:
            st = scale_bytes_f32(st, p.fmt)
          if pw.amax_scales:  # INT4's bf16 amax a (`weights_bf16`): the scale RN(a / 7)
            st = amax_scale_f32(st, row_fma)
          rows.append((st * times if times != 1.0 else st).astype(dtype))
        return spread_groups(rows, wk, group_cols, byte_pairs)

      def offset_rows(j):  # UINT4: chunk j's group offsets, float32, as `repack` rounds them
        rows = []
        for t in range(p.sub):
          load = lambda ref: plgpu.load(ref.at[j * p.sub + t], (),
                                        layout=plgpu.Layout.WGMMA.reduce(1))
          off = load(off_smem)
          if p.zero_points:  # f32(s) * (f32(zp) - 8), from the zero-point bytes
            off = load(s_smem).astype(jnp.float32) * (_zero_points_f32(off) - 8.0)
          rows.append(off)
        return rows

      def weights(j):  # chunk j (128 of K) of W^T as bf16 register tiles
        ks = pl.ds(j * wk, wk)
        if p.nf4:  # bytes -> low / high nibbles (even / odd k) -> table values
          wb = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_2X)
          wb = plgpu.layout_cast(wb, plgpu.Layout.WGMMA)
          if p.nf4_lut:
            vals = nf4_lut_halves(wb)
          else:
            # Mosaic GPU does no arithmetic (shifts included) on 8-bit registers: widen first.
            wb = wb.astype(jnp.uint16)
            halves = (wb & 15, wb >> 4)
            if not p.prescale:
              (ev_hi, ev_lo), (od_hi, od_lo) = map(nf4_hi_lo, halves)
              return [ev_hi, od_hi, ev_lo, od_lo]
            vals = [nf4_f32(h) for h in halves]
          # Byte column c holds k = 2c, 2c + 1: g / 2 byte columns a group.
          s_exp = block_scales(j, g // 2, jnp.float32)
          return [(v * s_exp).astype(jnp.bfloat16) for v in vals]
        if p.fp8_x and p.per_channel:  # the stored bytes are the A operand: E4M3, or s8
          w = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_8BIT)
          return [lax.bitcast_convert_type(w, jnp.float8_e4m3fn) if p.fmt is WeightFormat.FP8
                  else w]
        if p.per_channel:
          w = (codes[j] if p.plain_loads else
               plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_2X))
          w = plgpu.layout_cast(w, plgpu.Layout.WGMMA)
          if p.fmt is WeightFormat.FP8:  # e4m3 -> f16 (cvt) -> f32 -> bf16: every value exact
            w = lax.bitcast_convert_type(w, jnp.float8_e4m3fn).astype(jnp.float32)
          return [w.astype(jnp.bfloat16)]
        w = (codes[j] if p.plain_loads else
             plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_4X))
        if p.fp8_x:  # E4M3 bytes, relabelled as an 8-bit A tile (x is in its K order)
          return [int4_e4m3(w, F8.word_bytes(p.fmt))]
        if pw.wgmma_order:  # stored in register order: relabel, no data movement
          w = wgmma_from_upcast_4x(w)
        else:  # relayout while still 4-bit (cheaper shuffles), then the decode to bf16
          w = plgpu.layout_cast(w, plgpu.Layout.WGMMA_UPCAST_2X)
          w = plgpu.layout_cast(w, plgpu.Layout.WGMMA)
        if p.slots:  # bitsandbytes' GEMV weight: RN_bf16(bf16 table * bf16 absmax)
          return [nf4_slots_bf16(w, block_scales(j, g, jnp.bfloat16))]
        if p.prescale and not p.fp4:  # `weights_bf16`: RN_bf16(q * s - offset) in float32
          if bf16_scales and not p.asym:  # q * s has at most 12 significant bits: exact in
            # f32, so one bf16 multiply rounds it as the float32 path does
            return [w.astype(jnp.bfloat16) * block_scales(j, g, jnp.bfloat16)]
          w = w.astype(jnp.bfloat16).astype(jnp.float32) * block_scales(j, g, jnp.float32)
          if p.asym:
            w = w - spread_groups(offset_rows(j), wk, g)
          return [w.astype(jnp.bfloat16)]
        if p.zero_in_weights:  # (q - 8) - (zp - 8), zp - 8 = offset / s rounded to bf16
          rows = lambda ref: [plgpu.load(ref.at[j * p.sub + t], (),
                                         layout=plgpu.Layout.WGMMA.reduce(1)) for t in range(p.sub)]
          if p.zero_points:  # the bytes themselves
            zs = [(_zero_points_f32(z) - 8.0).astype(jnp.bfloat16) for z in rows(off_smem)]
          else:
            zs = [uint4_zero_bf16(o, sc.astype(jnp.float32))
                  for o, sc in zip(rows(off_smem), rows(s_smem))]
          return [w.astype(jnp.bfloat16) - spread_groups(zs, wk, g)]
        if not p.fp4:
          return [w.astype(jnp.bfloat16)]  # Mosaic's fast i4 -> bf16 cast
        if p.prescale and (p.fmt is WeightFormat.NVFP4 or pw.mx_fold or byte_pairs):
          # one multiply: value * s_b / 2^8 (NVFP4), value * 2^(e - 127) (folded MXFP4), exact
          times = 2.0**NVFP4_PRESCALE_LOG2 if p.fmt is WeightFormat.NVFP4 else 1.0
          return [e2m1_bf16(w, block_scales(j, g, jnp.bfloat16, times), halves=pw.halves_order)]
        w = e2m1_bf16(w, halves=pw.halves_order)
        if p.prescale:  # exact in bf16
          w = w * block_scales(j, g, jnp.bfloat16)
        return [w]

      def x_tiles(j, t):  # x^T tiles of chunk j, group copy t (one per x half), or group t
        if p.group_slices:
          return [_compat.transpose_ref(xs.at[pl.ds(0, p.mp), pl.ds(j * wk + t * g, g)], (1, 0))
                  for xs in x_smems]
        ks = pl.ds(j * wk, wk)
        return [_compat.transpose_ref(xs.at[pl.ds(t * p.mp, p.mp), ks], (1, 0)) for xs in x_smems]

      def epilogue(acc, part, j, t):
        if p.prescale:
          return acc + part
        gi = j * p.sub + t
        s = plgpu.load(s_smem.at[0 if p.per_channel else gi], (),
                       layout=plgpu.Layout.WGMMA.reduce(1))
        # (scale bytes reach here only with fp8_x: MXFP4 then folds its groups like INT4)
        s = scale_bytes_f32(s, p.fmt) if p.fp4_scale_bytes else s.astype(jnp.float32)  # exact
        if pw.amax_scales:  # INT4's bf16 amax a: the scale RN(a / 7) by a multiply and two FMAs
          s = amax_scale_f32(s, row_fma)
        row = lambda v: lax.broadcast_in_dim(v, part.shape, [1])  # a value a column
        if p.fp8_x and p.xsum_in:  # the x operand, a value a column
          xs = row(plgpu.load(xs_smem.at[gi, pl.ds(0, p.mp)], (),
                              layout=plgpu.Layout.WGMMA.reduce(0)))
        if p.fp8_x and p.fmt is WeightFormat.INT8:  # the exact s8 product times x's multiplier
          acc = acc + part.astype(jnp.float32) * xs * lax.broadcast_in_dim(s, part.shape, [0])
        elif p.fp8_x and p.xsum_in:  # sum c x8 = 2^8 (P - S): 2^8, s_x after (`F8.combine`)
          acc = acc + (part - xs) * lax.broadcast_in_dim(s, part.shape, [0])
        else:
          acc = acc + part * lax.broadcast_in_dim(s, part.shape, [0])
        if p.asym and p.xsum_in:
          off = plgpu.load(off_smem.at[gi], (), layout=plgpu.Layout.WGMMA.reduce(1))
          if p.zero_points:  # the offset as `repack` rounds it: f32(s) * (f32(zp) - 8)
            off = s * (_zero_points_f32(off) - 8.0)
          if p.fp8_x:  # off sum(x) = off s_x 2^9 S: 2 off S in these units
            xterm = 2.0 * xs
          else:
            xterm = row(plgpu.load(xs_smem.at[gi, pl.ds(0, p.mp)], (),
                                   layout=plgpu.Layout.WGMMA.reduce(0)))
          acc = acc - lax.broadcast_in_dim(off, part.shape, [0]) * xterm
        return acc

      def mma(acc_ref, ws, j, t):  # chunk j's weight tiles times x's group copy t
        xts = x_tiles(j, t)
        for i, w_ in enumerate(ws):  # NF4 bytes: (even, odd) x halves, for hi then lo terms
          if p.group_slices:  # group t's columns of the register tile
            w_ = lax.slice(w_, (0, t * g), (w_.shape[0], (t + 1) * g))
          plgpu.wgmma(acc_ref, w_, xts[i % len(xts)])

      s8 = p.fp8_x and p.fmt is WeightFormat.INT8  # the s8 wgmma accumulates in int32
      acc_type = plgpu.ACC((p.wg_rows, p.mp), jnp.int32 if s8 else jnp.float32)
      if p.chain:  # one chain from the carried sum, one wait
        def chain(acc_ref):
          for j in range(p.gps):
            mma(acc_ref, weights(j), j, 0)

        return pl.run_state(chain)(plgpu.ACC.init(acc))
      if p.step_wait:  # group scales: chunk j's partial products are read (scaled, summed)
        # once chunk j + 1's wgmmas are issued, so two weight tiles are live, not all of them
        def chunk(j, prev, acc_in):
          def scoped(*acc_refs):  # chunk j's accumulators, one a group
            ws, acc = weights(j), acc_in
            for t in range(p.per_chunk):
              mma(acc_refs[t], ws, j, t)
            for t, r in enumerate(prev):  # chunk j - 1's, with chunk j's still in flight
              part = _compat.wgmma_accumulator_load(r, p.per_chunk * len(ws))
              acc = epilogue(acc, part, j - 1, t)
            if j + 1 < p.gps:
              return chunk(j + 1, acc_refs, acc)
            for t, r in enumerate(acc_refs):
              acc = epilogue(acc, r[...], j, t)
            return acc

          return pl.run_scoped(scoped, *[acc_type] * p.per_chunk)

        return chunk(0, (), acc)
      if p.chunk_wait:  # a chunk's group wgmmas in flight together, one wait
        for j in range(p.gps):
          def wait_groups(*acc_refs, ws=weights(j), j=j):
            for t, r in enumerate(acc_refs):
              mma(r, ws, j, t)
            return [r[...] for r in acc_refs]  # the first read waits for all

          for t, part in enumerate(pl.run_scoped(wait_groups, *[acc_type] * p.per_chunk)):
            acc = epilogue(acc, part, j, t)
        return acc
      for j in range(p.gps):
        ws = weights(j)
        for t in range(p.per_chunk):
          def wait_chunk(acc_ref, ws=ws, j=j, t=t):
            mma(acc_ref, ws, j, t)
            return acc_ref[...]

          acc = epilogue(acc, pl.run_scoped(wait_chunk, acc_type), j, t)
      return acc

    # Where iteration i of this CTA's pipeline reads: (N tile, K step of the tile, output slot).
    sched_place, sched_last = p.schedule.place, p.schedule.last  # traced in the kernel
    in_specs = [plgpu.BlockSpec((p.xsub * p.mp, wk * p.gps), lambda i: (0, sched_place(i)[1]),
                                transforms=x_tf)] * nx
    def w_block(i):  # block-contiguous weights: block (tile, kk) is block row tile * kst + kk
      tile, kk, _ = sched_place(i)
      return (tile * p.ksteps_total + kk, 0) if pw.w_tile else (tile, kk)

    def plain_words(i, wg_row):
      """Step i's codes for this warpgroup from a `code_order.thread_major` weight, loaded: for
      each chunk j, its 64-row blocks' words, (`block_words`,) uint32 each in `words_layout`
      (16-byte vectors; `registers_from_words` makes them a chunk's codes), from the blocks
      `DecodePlan.code_blocks` names."""
      tile, kk, _ = sched_place(i)
      strided = words_layout(bits)
      return [[plgpu.load(w_gmem.at[blk], (), layout=strided) for blk in chunk]
              for chunk in p.code_blocks(k, tile, kk, wg_row)]

    w_spec = [] if p.plain_loads else [
        plgpu.BlockSpec((p.tile_n, wk * p.gps), w_block, transforms=w_tf)]
    def channel_block(i):
      # + i * 0 with two compute warpgroups: a CTA of the split schedule keeps its tile's
      # channel scales while it walks K, and Pallas's warp-specialized pipeline refuses an
      # input whose index map ignores the step ("Only inputs with a dependency on the grid");
      # read from i, the same block is fetched each step (tile_n * 4 bytes beside the step's
      # weight tile). One warpgroup's pipeline takes the scales once.
      tile = sched_place(i)[0]
      return 0, tile + i * 0 if p.compute_wgs > 1 else tile

    in_specs += w_spec + [
        (plgpu.BlockSpec((1, p.tile_n), channel_block) if p.per_channel
         else plgpu.BlockSpec((p.scale_rows, p.tile_n), lambda i: sched_place(i)[1::-1])),
    ]
    gmem = [*x_gmems, *([] if p.plain_loads else [w_gmem]), s_gmem]
    if p.asym:
      in_specs.append(plgpu.BlockSpec((p.scale_rows, p.tile_n), lambda i: sched_place(i)[1::-1]))
      gmem.append(off_gmem)
    if p.xsum_in:
      in_specs.append(plgpu.BlockSpec((p.xs_rows, xsum_cols(p.mp)),
                                      lambda i: (sched_place(i)[1], 0)))
      gmem.append(xs_gmem)
    wg = lax.axis_index("wg") if p.compute_wgs > 1 else 0

    def tile_rows(tile):  # this warpgroup's rows of the tile, in the slots' buffer
      return pl.ds(tile * p.tile_n + wg * p.wg_rows, p.wg_rows)

    def fused_flush(part, tile, slot):
      """`fused_sum`: slots 1.. store their partial sum and signal the tile's semaphore; slot 0
      waits for them, adds them in slot order (`Schedule.reduce`'s terms) and writes y. With
      one slot a tile (a split schedule of one CTA a tile) slot 0 writes y at once: no
      semaphore, no wait, no fence."""
      shared = p.schedule.slots > 1
      sem = sems.at[tile * p.compute_wgs + wg] if shared else None
      rows = tile_rows(tile)

      if shared:  # with one slot a tile every CTA holds slot 0
        @pl.when(slot > 0)
        def _give():
          if p.slot_stores:  # from registers straight to global memory, then a release
            o_gmem.at[slot, rows][...] = part
            _ptx.release_gpu()
          else:  # staged in shared memory, one TMA store, waited on until it is in memory
            o_smem.at[wg][...] = part
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(o_smem.at[wg], o_gmem.at[slot, rows])
            plgpu.wait_smem_to_gmem(0, wait_read_only=False)  # in memory, not only read out
            _ptx.fence_proxy_async_global()  # the TMA's writes before the release
          pl.semaphore_signal(sem, 1)

      @pl.when(slot == 0)
      def _sum():
        writers = p.schedule.writers(tile)
        if shared:
          pl.semaphore_wait(sem, writers - 1)  # and takes it back to 0 for the next call
          _ptx.fence_proxy_async_global()  # the acquire before the slots' loads
        total = part
        if p.slot_loads:  # a batch of slots loaded from global memory before any is added
          for first in range(1, p.schedule.slots, p.slot_batch):
            batch = range(first, min(first + p.slot_batch, p.schedule.slots))
            others = [plgpu.load(o_gmem.at[sl, rows], (), layout=plgpu.Layout.WGMMA,
                                 optimized=False) for sl in batch]
            for sl, other in zip(batch, others):  # past the tile's writers: stale, selected out
              total = total + jnp.where(sl < writers, other, 0.0)
        else:  # each slot by a TMA copy into shared memory, one after another
          for sl in range(1, p.schedule.slots):
            plgpu.commit_smem()  # the last slot's reads done before the copy overwrites it

            @pl.when(sl < writers)  # a slot past the tile's writers is neither loaded nor added
            def _load(sl=sl):
              plgpu.copy_gmem_to_smem(o_gmem.at[sl, rows], o_smem.at[wg], bars.at[wg])
              plgpu.barrier_wait(bars.at[wg])

            other = plgpu.load(o_smem.at[wg], (), layout=plgpu.Layout.WGMMA, optimized=False)
            total = total + jnp.where(sl < writers, other, 0.0)  # a select: stale data never leaks
        if nvfp4_out:  # as the unfused path's XLA multiplies: 2^8 back (exact), then s_t
          total = total * 2.0**(126 - NVFP4_PRESCALE_LOG2) * ts_gmem[...]
        if p.fp8_x:  # token i's hi + lo in columns 2 i and 2 i + 1, times out_scale s_x
          # (mp,) floats from global memory: a plain load (TMA-free, never on the hot path)
          cs = plgpu.load(cs_gmem.at[0], (), layout=plgpu.Layout.WGMMA.reduce(0),
                          optimized=False)
          total = pair_sums(total) * lax.broadcast_in_dim(cs, total.shape, [1])
        y = total.astype(out_dtype)
        plgpu.commit_smem()  # yt_smem is o_smem's memory
        for r in range(p.wg_rows // 64):  # 64 rows of the tile (columns of y) at a time
          piece = lax.slice(y, (r * 64, 0), ((r + 1) * 64, p.mp))
          piece = plgpu.layout_cast(piece, plgpu.Layout.WGMMA_TRANSPOSED)
          _compat.transpose_ref(yt_smem.at[wg, 0, r], (1, 0))[...] = piece
        plgpu.commit_smem()
        for r in range(p.wg_rows // 64):
          cols = pl.ds(tile * p.tile_n + wg * p.wg_rows + r * 64, 64)
          if p.fp8_x:  # y's row i is the transposed tile's row 2 i (a token's pair sum)
            for i in range(m):
              plgpu.copy_smem_to_gmem(yt_smem.at[wg, 0, r, pl.ds(2 * i, 1)],
                                      y_gmem.at[pl.ds(i, 1), cols])
          else:
            plgpu.copy_smem_to_gmem(yt_smem.at[wg, 0, r, pl.ds(0, m)],
                                    y_gmem.at[pl.ds(0, m), cols])

    def body_and_flush(indices, *refs_and_carry):
      (i,) = indices
      *refs_and_acc, carry = refs_and_carry
      if p.prefetch_codes:  # step i + d's codes loaded first, in flight while this decodes
        acc, ahead = carry  # steps i .. i + d - 1's codes, loaded in the steps before
        nxt = plain_words(jnp.minimum(i + p.prefetch_codes, p.schedule.iters - 1),
                          wg * p.wg_rows)
        acc = body(indices, *refs_and_acc, acc, words=ahead[0])
      else:
        acc = body(indices, *refs_and_acc, carry)
      last = sched_last(i)

      @pl.when(last)
      def _flush():  # this warpgroup's rows of the tile's partial sum -> output slot
        tile, _, slot = sched_place(i)
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # o_smem free again
        part = acc
        if p.per_channel and p.chain:  # the channel scales, once on the f32 sum
          s_row = refs_and_acc[nx + (not p.plain_loads)].at[0]  # past x (and W's tile)
          if p.compute_wgs > 1:  # this warpgroup's channels
            s_row = s_row.at[pl.ds(wg * p.wg_rows, p.wg_rows)]
          s = plgpu.load(s_row, (), layout=plgpu.Layout.WGMMA.reduce(1)).astype(jnp.float32)
          part = acc * lax.broadcast_in_dim(s, acc.shape, [0])
        if p.fused_sum:
          fused_flush(part, tile, slot)
          return
        o_smem.at[wg][...] = part
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_smem.at[wg], o_gmem.at[slot, tile_rows(tile)])

      acc = jnp.where(last, 0.0, acc)  # a select: NaN in one tile cannot leak into the next
      return (acc, (*ahead[1:], nxt)) if p.prefetch_codes else acc

    # `fused_sum`'s semaphores, one a (tile, compute warpgroup); every call leaves them at 0
    sems = (pl.get_global(plgpu.SemaphoreType.REGULAR((p.schedule.n_tiles * p.compute_wgs,)))
            if p.fused_sum and p.schedule.slots > 1 else None)

    def carry0():  # the accumulator, and with `prefetch_codes` = d the first d steps' codes
      acc = plgpu.layout_cast(jnp.zeros((p.wg_rows, p.mp), jnp.float32), plgpu.Layout.WGMMA)
      if not p.prefetch_codes:
        return acc
      last = p.schedule.iters - 1  # a share shorter than d re-reads its last step (the L2's)
      return acc, tuple(plain_words(jnp.int32(min(d, last)), wg * p.wg_rows)
                        for d in range(p.prefetch_codes))

    depth = min(p.steps, p.schedule.iters)
    if p.compute_wgs == 1:
      plgpu.emit_pipeline(body_and_flush, grid=(p.schedule.iters,), in_specs=in_specs,
                          max_concurrent_steps=depth, init_carry=carry0())(*gmem)
    else:
      plgpu.emit_pipeline_warp_specialized(
          body_and_flush, grid=(p.schedule.iters,), in_specs=in_specs,
          max_concurrent_steps=depth, num_compute_wgs=p.compute_wgs, wg_axis="wg",
          memory_registers=MEMORY_REGISTERS,
          compute_context=lambda pipeline: pipeline(carry0()))(*gmem)
    plgpu.wait_smem_to_gmem(0)

  threads = dict(num_threads=p.compute_wgs + 1, thread_name="wg") if p.compute_wgs > 1 else {}
  parts = jax.ShapeDtypeStruct((p.schedule.slots, n, p.mp), jnp.float32)
  o_smem = plgpu.SMEM((p.compute_wgs, p.wg_rows, p.mp), jnp.float32)
  if p.fused_sum:
    # y's tile in a warpgroup's own part of the slots' buffer (view [wg, 0]): a narrower dtype
    # packs `per` of them into one warpgroup's float32 bytes, and [wg, 1..] go unused, so that
    # no warpgroup writes where another's partial sum may still be in flight
    if jnp.dtype(out_dtype).itemsize > 4:
      raise NotImplementedError(f"fused_sum writes y in 4 bytes an element at most, not "
                                f"{jnp.dtype(out_dtype).name}; leave fused_sum off")
    per = 4 // jnp.dtype(out_dtype).itemsize
    f = _compat.mgpu_kernel(
        kernel,
        out_type=(parts, jax.ShapeDtypeStruct((m, n), out_dtype)),
        grid=p.schedule.grid,
        grid_names=p.schedule.grid_names,
        scratch_types=[plgpu.RefUnion(o_smem, plgpu.SMEM(
                           (p.compute_wgs, per, p.wg_rows // 64, p.mp, 64), out_dtype)),
                       plgpu.Barrier(num_arrivals=1, num_barriers=p.compute_wgs)],
        **threads,
    )
    return f(*xg, w_in, scale_in, *extra)[1]
  f = _compat.mgpu_kernel(
      kernel,
      out_type=parts,
      grid=p.schedule.grid,
      grid_names=p.schedule.grid_names,
      scratch_types=[o_smem],
      **threads,
  )
  y = p.schedule.reduce(f(*xg, w_in, scale_in, *extra))
  if p.fp8_x:  # (N, Mp) -> (N, M): each token's two columns, times 2^8 (MXFP4 2^6) s_x
    return F8.combine(y, sx, p.fmt).T.astype(out_dtype)
  if nvfp4_out:  # 2^8 back (exact), then s_t
    y = y * 2.0**(126 - NVFP4_PRESCALE_LOG2) * pw.tensor_scale
  return y[:, :m].T.astype(out_dtype)
