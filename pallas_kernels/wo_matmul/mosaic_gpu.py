"""Weight-only matmul on Hopper with Mosaic GPU: `y = x @ dequant(W)`.

W: INT4 / UINT4 / NF4 with groups of 32, 64 or 128 along K, MXFP4 (E8M0 per 32), NVFP4 (E4M3
per 16 and a tensor scale), or INT8 / FP8 E4M3 with per-channel scales (int8 -> bf16 through the
WGMMA_UPCAST_2X layout; e4m3 bytes bitcast in registers and converted e4m3 -> f16 -> f32 -> bf16,
exact). E2M1 keeps its OCP bits and is decoded from the 32-bit words of int4 registers by four
integer ops and one exact bf16 multiply a pair of codes (`e2m1_bf16`). NF4 stored as int4 slot
codes (`layout.nf4_slots`, `repack`'s GPU default) is decoded the same way, by byte permutes
(`nf4_slots_bf16`: 19 integer ops for eight codes) and one bf16 multiply by the absmax; NF4
bytes are split into nibbles (even / odd k halves, each with its half of x) and looked up by
byte permutes in f32 (`nf4_lut_halves`), a select tree (`decode.nf4_f32`) or as two bf16 terms
(`decode.nf4_hi_lo`). Paths not yet checked on a GPU (`VERIFIED`) need `allow_unverified=True`.

Decode-shaped problems (M <= 64) are bound by reading the packed weight, so the kernel is built
to stream W^T (N, K) int4 through shared memory at HBM speed and keep the tensor cores fed from
registers ("swap AB"): it computes `y^T = W^T x^T`, with the dequantized W^T tile as the
register-resident left operand of wgmma (64 rows of N per instruction) and the tiny x^T tile as
the shared-memory right operand (its N dimension is M, padded to a multiple of 8).

A CTA's warpgroup owns `tile_n` rows of W^T (with `compute_wgs=2`, two compute warpgroups own
half each and a third issues the copies). A `plgpu.emit_pipeline` keeps `steps` TMA copies of
(tile_n x 128 * gps) int4 weight tiles, their scales and the x tile in flight. Per 128-wide chunk of K within a step:

  q      = int4 tile -> bf16          (loaded in WGMMA_UPCAST_4X, relaid out to WGMMA, or for a
                                       weight in register order relabelled:
                                       `wgmma_from_upcast_4x`; Mosaic's fast i4 cast)
  for each group g in the chunk (1, 2 or 4 of them):
    part = wgmma(q, x_g^T)            (fresh f32 accumulator, (tile_n, Mp); x_g is x with every
                                       element outside group g zeroed, so one register tile
                                       serves all its groups)
    acc += part * s_g[:, None]        (scale applied exactly in f32, as the reference does)
    acc -= offset_g[:, None] * xsum_g[None, :]     (UINT4 only: zero point folded into an offset;
                                       with `zero_in_weights`, q - zp in bf16 instead)

MXFP4 / NVFP4 / NF4 (`prescale`, default) instead multiply the decoded weights by their block
scales in registers and run one wgmma per chunk into `acc` directly: exact in bf16 for E2M1
(a power of two or an E4M3 value times an E2M1 value; NVFP4's weights carry s_b / 2^8, its
output 2^8 s_t: `NVFP4_PRESCALE_LOG2`); for NF4 slot codes bf16(table) * bf16(absmax) rounded
once (bitsandbytes' GEMV weight), for NF4 bytes the f32 product rounded once to bf16 (the
weight bitsandbytes' dequantization gives in bf16). These and per-channel INT8 / FP8 (whose
scales then multiply the f32 sum when a tile is written out) chain all of a step's wgmmas into
the carried accumulator and wait on them once a step (`step_wait`), so that decoding a chunk
overlaps the previous chunk's MMA; group-scaled formats can read chunk j's partial products
after issuing chunk j + 1's wgmmas instead (UINT4's default at M <= 16).

Which CTA runs which (N tile, K step) iterations is a `schedule.Schedule`: one CTA per N tile and
K split (`splits`), or stream-K (`stream_k` CTAs an SM, equal shares of the iterations). Partial
sums go to float32 slots (slots, N, Mp) that XLA adds (a few hundred KB to a few MB).

This kernel uses Mosaic GPU-only primitives (TMA, wgmma) and cannot run in the CPU
interpreter; `portable.py` is its twin with the same numerics, and the GPU benchmark checks
this kernel against the reference for every shape it times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels.wo_matmul.decode import nf4_f32
from pallas_kernels.wo_matmul.decode import nf4_hi_lo
from pallas_kernels.wo_matmul.decode import uint4_zero_bf16
from pallas_kernels.wo_matmul.layout import FP4
from pallas_kernels.wo_matmul.layout import PackedWeight
from pallas_kernels.wo_matmul.layout import WeightFormat
from pallas_kernels.wo_matmul.layout import NVFP4_PRESCALE_LOG2
from pallas_kernels.wo_matmul.layout import group_scales
from pallas_kernels.wo_matmul.layout import scale_bytes_f32
from pallas_kernels.wo_matmul import schedule as S
from pallas_kernels.wo_matmul.configs import decode_config
from pallas_kernels.wo_matmul.registers import e2m1_bf16
from pallas_kernels.wo_matmul.registers import nf4_lut_halves
from pallas_kernels.wo_matmul.registers import nf4_slots_bf16
from pallas_kernels.wo_matmul.registers import spread_groups
from pallas_kernels.wo_matmul.registers import wgmma_from_upcast_4x

NUM_SMS_H100 = 132


# What has run and matched the reference on an H100 (experiments/results/kernels_wo*.json):
# `case(pw)` keys. Others need allow_unverified.
VERIFIED = {(WeightFormat.INT4, 32), (WeightFormat.INT4, 64), (WeightFormat.INT4, 128),
            (WeightFormat.UINT4, 32), (WeightFormat.UINT4, 64), (WeightFormat.UINT4, 128),
            (WeightFormat.MXFP4, 32), (WeightFormat.NVFP4, 16), (WeightFormat.NF4, 64),
            (WeightFormat.INT8, "channel"), (WeightFormat.FP8, "channel"),
            # H200, 2026-12-04: M = 1 / 16 / 64, rel. err 2.8-2.9e-3, one-hot rows exact
            (WeightFormat.NF4, 64, "slots")}
# Formats whose decode has matched the reference with x unpadded (`tma_pad`), H200 2026-12-04.
TMA_PAD_VERIFIED = (WeightFormat.INT4, WeightFormat.UINT4, WeightFormat.MXFP4, WeightFormat.NVFP4)
PER_CHANNEL = (WeightFormat.INT8, WeightFormat.FP8)
SMEM_BYTES = 232_448  # Hopper's opt-in shared memory per block
CHUNK = 128  # K elements per register tile (one wgmma operand)


def case(pw: PackedWeight) -> tuple:
  """A weight's key in `VERIFIED` (and the GEMM's): (format, group), the group "channel" for
  per-channel scales, and "slots" appended for NF4 slot codes (`layout.nf4_slots`)."""
  key = (pw.fmt, "channel" if pw.fmt in PER_CHANNEL else pw.group)
  return key + ("slots",) if pw.fmt is WeightFormat.NF4 and pw.scale_bf16 else key


def _smem_per_step(fmt: WeightFormat, tile_n: int, tile_k: int, mp: int, sub: int,
                   scale_rows: int, xsum: bool = True) -> int:
  """Shared-memory bytes one pipeline step holds (x tile, weight tile, scales, offsets, and
  UINT4's x group sums unless `xsum=False`)."""
  wbytes = tile_n * tile_k if fmt in PER_CHANNEL else tile_n * tile_k // 2
  total = sub * mp * tile_k * 2 + wbytes + scale_rows * tile_n * 4  # NF4: even + odd x halves
  if fmt is WeightFormat.UINT4:
    total += scale_rows * tile_n * 4 + (scale_rows * max(32, mp) * 4 if xsum else 0)
  return total


def wo_matmul_mosaic_gpu(x: jax.Array, pw: PackedWeight, *, tile_n: int | None = None,
                         steps: int | None = None, splits: int | None = None,
                         gps: int | None = None,
                         out_dtype=None, allow_unverified: bool = False,
                         prescale: bool = True, compute_wgs: int | None = None,
                         stream_k: int | None = None, load_only: bool = False,
                         nf4_lut: bool | None = None, fp4_scale_bytes: bool | None = None,
                         step_wait: bool | None = None, group_slices: bool | None = None,
                         tma_pad: bool | None = None, zero_in_weights: bool = False,
                         num_sms: int = NUM_SMS_H100) -> jax.Array:
  """`x @ dequant(W)` on a Hopper GPU for INT4 / UINT4 / NF4 (groups 32, 64, 128), MXFP4,
  NVFP4, INT8 and FP8 (per-channel) weights.

  Args:
    x: (M, K) bf16 activations, M <= 64.
    pw: PackedWeight (layout.py).
    tile_n: rows of W^T (columns of y) per CTA.
    steps: pipeline depth (TMA copies in flight per CTA); lowered to what fits in shared memory.
    gps: chunks of 128 along K per pipeline step.
      Defaults for these three: `configs.decode_config` (the H100 sweep's best for INT4).
    allow_unverified: run a (format, group) path that has not yet matched the reference on a
      GPU (`VERIFIED`); the benchmark passes it and checks the result.
    splits: K splits (default: enough CTAs to cover the SMs).
    stream_k: if given, ignore `splits` and run the stream-K schedule with about this many CTAs
      an SM, each taking an equal, contiguous share of the (N tile, K step) iterations
      (`schedule.stream_k_schedule`): no SM idles at the end.
    prescale: MXFP4 / NVFP4 / NF4: multiply the decoded weights by their block scales in
      registers and run one wgmma per chunk (False: one wgmma per group over x copies, the
      scale applied to the f32 partial product). E2M1: exact either way (an E2M1 value times a
      power of two or an E4M3 value fits bf16); NVFP4's tensor scale then multiplies the f32
      output. NF4: True rounds `table * absmax` (f32) to bf16 once, as bitsandbytes' bf16
      dequantization does; False keeps the table in two bf16 terms (to 2^-17) and the scale in
      f32 (closer to the f32 reference, slower).
    compute_wgs: 1: one warpgroup a CTA runs loads and math (`plgpu.emit_pipeline`); 2: warp
      specialization, a memory warpgroup issuing the TMA copies and two compute warpgroups
      taking `tile_n / 2` rows each (`plgpu.emit_pipeline_warp_specialized`; group scales
      only).
    out_dtype: default x.dtype.
    nf4_lut: NF4 (with prescale): look the table up with byte permutes (`nf4_lut_halves`, 22
      integer ops for four codes) instead of the 15-select tree; same f32 values, bit for bit.
      Default (None): on for prescaled NF4 (H100, 8192 x 28672, M = 1: 155 us against 463 us).
    fp4_scale_bytes: prescaled MXFP4 / NVFP4: TMA the stored scale bytes (E8M0, E4M3) and
      decode them in registers (`layout.scale_bytes_f32`), instead of XLA widening them to f32 on
      every call (which reads 1 and writes 4 bytes a group before the kernel reads the 4).
      Default (None): on for prescaled FP4 (H100, 8192 x 28672, M = 1: MXFP4 100 us against
      104, NVFP4 103 against 123; M = 16 MXFP4 104 against 131). A weight whose scales are
      stored as bf16 multipliers (`layout.fp4_scales_bf16`, `repack`'s GPU default) has nothing
      to decode: the kernel loads them as they are (H200, M = 1: MXFP4 50.6 us against 65.1,
      NVFP4 53.3 against 59.1; kernels_wo_s10_*.json).
    step_wait: wait on the wgmmas once a pipeline step, not once a chunk, so that decoding chunk
      j + 1 overlaps chunk j's MMA. Prescaled MXFP4 / NVFP4 / NF4 and per-channel INT8 / FP8
      chain every chunk into one accumulator that starts from the carried sum (per-channel
      scales then multiply the f32 sum once, when the tile is written out, not each chunk's
      partial product). Group-scaled formats scale each group's f32 partial product: they read
      chunk j's accumulators once chunk j + 1's wgmmas are issued (`wgmma_accumulator_load`
      with the newer ones in flight), so that two decoded tiles are live, not a step's (an
      accumulator a chunk, all waited on at the step's end, was slower: H200, INT4 g128 M = 1
      40.2 -> 46.2 us, M = 64 68.5 -> 80.2). Default: `configs.decode_config`'s (on for FP4 and
      per-channel weights, NF4 slot codes but at four CTAs an SM, and UINT4 at M <= 16).
      Checked on the GPU for INT4 / UINT4 / MXFP4 / NVFP4 / NF4 slot codes / INT8 / FP8; NF4
      bytes with it only lowered.
    group_slices: INT4 / UINT4 groups of 32 or 64 (narrower than a 128-wide register tile):
      one wgmma a group on its K slice of the tile and of x (x in swizzle tiles of one group),
      instead of a full-width wgmma a group over x copies zeroed outside it: a chunk's MMA
      work once, not 128 / group times. Default (None): on for those groups. H200, 2026-12-04,
      K = 8192, N = 28672 (kernels_wo_s13_group_slices*.json), us at M = 1 / 16 / 32 / 64:
      INT4 g32 104.2 -> 45.1 / 115.9 -> 66.3 / 107.0 -> 61.5 / 182.0 -> 90.3, INT4 g64
      50.5 -> 41.8 / 73.2 -> 42.8 / - / 106.4 -> 85.8, UINT4 g64 63.3 -> 50.8 / 98.4 -> 58.2 /
      - / 129.2 -> 93.1, UINT4 g32 130.1 -> 57.4 / 308.0 -> 75.0 / 125.0 -> 78.3 / 217.5 ->
      118.8; the same relative error as the x copies at every point.
    tma_pad: at M < 8, x goes to the kernel as it is, (M, K), and the TMA copies its M rows
      into the 8-row shared-memory tile, instead of an XLA pad kernel before the launch
      (~1.4 us at M = 1). Whatever the tile's other rows hold (TMA's fill or stale data) is
      harmless: row j of x only reaches column j of the (N, 8) product, and columns M.. are
      dropped. One x copy only
      (group slices, prescaled or per-channel weights; not NF4 bytes). Default (None): on for
      the formats it has run correctly on a GPU with (`TMA_PAD_VERIFIED`; others need
      `allow_unverified=True`). H200, 2026-12-04, 8192 x 28672, M = 1, us (same rel. error):
      INT4 g128 39.8 -> 38.3, g32 44.6 -> 43.8, UINT4 g64 52.1 -> 50.5, MXFP4 49.4 -> 47.7,
      NVFP4 50.4 -> 48.9; M = 4 INT4 39.9 -> 38.5 (kernels_wo_s13_tma_pad.json).
    zero_in_weights: UINT4: subtract each group's zero point from the decoded weights in bf16
      (q - zp, exact: an integer of at most 15 in magnitude; zp - 8 = offset / s, exact after
      rounding to bf16) and scale the partial product like INT4, instead of the f32 term
      offset_g * xsum_g a group, whose x group sums XLA computes and pads before the launch.
      One bf16 subtract a weight pair; no x sums. Not yet run on a GPU: needs
      `allow_unverified=True`.
    load_only: a diagnostic, not a matmul: the same schedule and TMA pipeline with an empty
      body (the output is zeros), so the benchmark can split a config's time into streaming
      the tiles and computing on them (`bench_kernels.py --load-split`).
    num_sms: used to pick the default split.

  Returns:
    (M, N) array of out_dtype.
  """
  plgpu = _compat.plgpu_module()
  m, k = x.shape
  n, g = pw.n, pw.group
  dflt = decode_config(pw.fmt, n, m, pw.scale_bf16)
  if pw.w_tile is not None:  # a block-contiguous weight fixes the tile (layout.tile_weight)
    tn, tk = pw.w_tile
    if tk % CHUNK or tile_n not in (None, tn) or gps not in (None, tk // CHUNK):
      raise ValueError(f"the weight is stored in ({tn}, {tk}) blocks: tile_n={tile_n}, gps={gps} "
                       f"do not match (tile_k must be a multiple of {CHUNK})")
    tile_n, gps = tn, tk // CHUNK
  tile_n_given = tile_n is not None
  tile_n = dflt["tile_n"] if tile_n is None else tile_n
  steps = dflt["steps"] if steps is None else steps
  gps_given = gps is not None
  gps = dflt["gps"] if gps is None else gps
  fmt = pw.fmt
  per_channel = fmt in PER_CHANNEL
  fp4 = fmt in FP4
  slots = fmt is WeightFormat.NF4 and pw.scale_bf16  # int4 slot codes (`layout.nf4_slots`)
  nf4 = fmt is WeightFormat.NF4 and not slots  # nibble bytes: even / odd k halves
  if per_channel and g != pw.k:
    raise NotImplementedError(f"mosaic_gpu {fmt.value} takes per-channel scales, not group {g}")
  if not per_channel and g not in ((32, 16) if fp4 else (32, 64, 128)):
    raise NotImplementedError(f"mosaic_gpu wo_matmul takes groups of 32, 64 or 128, not {g}")
  if case(pw) not in VERIFIED and not allow_unverified:
    raise NotImplementedError(
        f"the mosaic_gpu path for {fmt.value} group {g} has not matched the reference on a GPU "
        "yet: pass allow_unverified=True (the benchmark does, and checks it), or use "
        "'xla'/'portable'")
  if pw.scale_bf16 and not prescale:
    raise ValueError("bf16 scale multipliers are applied to the weights: prescale=True")
  if fp4_scale_bytes is None:
    fp4_scale_bytes = fp4 and prescale and not pw.scale_bf16
  if fp4_scale_bytes and pw.scale_bf16:
    raise ValueError("fp4_scale_bytes decodes stored scale bytes; these scales are bf16")
  if nf4_lut is None:
    nf4_lut = nf4 and prescale
  if fp4_scale_bytes and not (fp4 and prescale):
    raise ValueError("fp4_scale_bytes is for prescaled MXFP4 / NVFP4 (prescale=True)")
  if nf4_lut and not (nf4 and prescale):
    raise ValueError("nf4_lut is the NF4 table lookup of the prescaled path (prescale=True)")
  if step_wait is None:
    # The FP4 / NF4 defaults were measured prescaled; unprescaled, they keep a wait a chunk.
    step_wait = dflt.get("step_wait", False) and (prescale or not (fp4 or nf4 or slots))
  if m > 64:
    raise NotImplementedError(f"mosaic_gpu wo_matmul is the decode kernel (M <= 64), got M={m}")
  if x.dtype != jnp.bfloat16:
    raise NotImplementedError(f"mosaic_gpu wo_matmul takes bf16 activations, got {x.dtype}")
  if k != pw.k:
    raise ValueError(f"x is (M, {k}) but W has K={pw.k}")
  # Groups smaller than a 128-wide register tile: `sub` groups share one dequantized tile, and
  # each group's wgmma reads a copy of x zeroed outside that group (x is tiny at decode).
  sub = 1 if per_channel else CHUNK // g
  prescale = (fp4 or fmt is WeightFormat.NF4) and prescale
  compute_wgs = dflt.get("compute_wgs", 1) if compute_wgs is None else compute_wgs
  slices_fit = fmt in (WeightFormat.INT4, WeightFormat.UINT4) and sub > 1
  if group_slices and not slices_fit:
    raise ValueError(f"group_slices is for INT4 / UINT4 groups of 32 or 64, not {fmt.value} "
                     f"group {g}")
  group_slices = slices_fit if group_slices is None else group_slices
  asym = fmt is WeightFormat.UINT4
  if zero_in_weights and not asym:
    raise ValueError(f"zero_in_weights is for UINT4 (zero points), not {fmt.value}")
  if zero_in_weights and not allow_unverified:
    raise NotImplementedError("zero_in_weights has not run on a GPU yet: pass "
                              "allow_unverified=True (the benchmark does, and checks it)")
  xsum_in = asym and not zero_in_weights  # the f32 offset * x-sum term, x sums from XLA
  per_chunk = 1 if prescale else sub  # partial products (accumulators) a chunk
  xsub = 1 if prescale or group_slices else sub  # x copies a chunk
  mp = max(8, -(-m // 8) * 8)
  if tile_n is None:
    tile_n = 256 if mp <= 16 else 128
  if n % tile_n:
    raise ValueError(f"N={n} must be a multiple of tile_n={tile_n}")
  scale_rows = 1 if per_channel else gps * sub
  if xsub * mp > 256:
    raise NotImplementedError(f"mosaic_gpu {fmt.value} group {g}: M={m} needs {xsub} x copies "
                              f"of {mp} rows, over a 256-row TMA box; use M <= {256 // xsub}")

  def steps_fit():
    return (SMEM_BYTES - 1024 - tile_n * mp * 4) // _smem_per_step(
        fmt, tile_n, CHUNK * gps, mp, xsub, scale_rows, xsum_in)

  # Small groups at large M: the x copies grow, so take fewer chunks a step, then (group 32 at
  # M > 32 under the 256-row default) fewer rows.
  while not gps_given and gps > 1 and steps_fit() < 2:
    gps //= 2
    scale_rows = 1 if per_channel else gps * sub
  if not tile_n_given and tile_n > 128 and steps_fit() < 2:
    tile_n = 128
  tile_k = CHUNK * gps
  if k % tile_k:
    raise ValueError(f"K={k} must be a multiple of {gps} chunks of {CHUNK}")
  ksteps_total = k // tile_k
  n_tiles = n // tile_n
  stream_k = dflt.get("stream_k") if stream_k is None and splits is None else stream_k
  if stream_k is not None:
    schedule = S.stream_k_schedule(n_tiles, tile_n, ksteps_total, S.stream_k_ctas(
        n_tiles * ksteps_total, stream_k * num_sms))
  else:
    if splits is None:
      splits = dflt.get("splits")
      if splits is None or ksteps_total % splits:
        splits = S.pick_splits(n_tiles, ksteps_total, num_sms)
    schedule = S.split_schedule(n_tiles, tile_n, ksteps_total, splits)
  fit = steps_fit()
  if fit < 2:
    per_step = _smem_per_step(fmt, tile_n, tile_k, mp, xsub, scale_rows, xsum_in)
    raise ValueError(f"tile_n={tile_n}, gps={gps} at M={m} needs {per_step} bytes of shared "
                     "memory a pipeline step: fewer than 2 steps fit; use a smaller tile_n or gps")
  steps = min(steps, fit)
  if compute_wgs not in (1, 2):
    raise ValueError(f"compute_wgs must be 1 or 2, got {compute_wgs}")
  if compute_wgs > 1 and (per_channel or tile_n % (64 * compute_wgs)):
    raise NotImplementedError(
        f"warp specialization takes group-scaled formats and tile_n a multiple of "
        f"{64 * compute_wgs} (got {fmt.value}, tile_n={tile_n})")
  wg_rows = tile_n // compute_wgs

  one_copy = xsub == 1 and not nf4
  if tma_pad and not one_copy:
    raise ValueError("tma_pad loads x as it is: one x copy (group slices, prescaled or "
                     "per-channel weights), not NF4 bytes")
  if tma_pad and fmt not in TMA_PAD_VERIFIED and not allow_unverified:
    raise NotImplementedError(f"tma_pad has not run on a GPU with {fmt.value} yet: pass "
                              "allow_unverified=True (the benchmark does, and checks it)")
  if tma_pad is None:
    tma_pad = one_copy and fmt in TMA_PAD_VERIFIED
  tma_pad = tma_pad and m < 8  # Mosaic's TMA tiling takes a row count under 8 or a multiple
  xp = jnp.pad(x, ((0, mp - m), (0, 0))) if mp != m and not tma_pad else x

  def group_copies(a, chunk_cols, group_cols):
    """(xsub * Mp, C): copy t keeps only the t-th group of every chunk of `a`'s columns."""
    if xsub == 1:
      return a
    grp = (jnp.arange(a.shape[1]) % chunk_cols) // group_cols
    return jnp.concatenate([jnp.where(grp == t, a, jnp.zeros_like(a)) for t in range(xsub)])

  if nf4:  # two x halves, the even and the odd k (the low and high nibbles)
    xg = [group_copies(h, CHUNK // 2, g // 2) for h in (xp[:, 0::2], xp[:, 1::2])]
  else:
    xg = [group_copies(xp, CHUNK, g)]
  w_in = pw.w
  scale_in = pw.scale  # as stored; bf16 multipliers (NVFP4's with 2^118) need no decode
  if fp4 and fp4_scale_bytes:  # stored bytes, decoded in the kernel; NVFP4's E4M3 as uint8
    scale_in = lax.bitcast_convert_type(pw.scale, jnp.uint8)
  elif fp4 and not pw.scale_bf16:  # FP4 scales widened to f32 by XLA per call; prescaled
    # NVFP4 puts s_b on the weights and s_t on the output
    scale_in = group_scales(pw, tensor_scale=not prescale)
  if fmt is WeightFormat.FP8:  # loaded as bytes (the int8 layout path), bitcast in registers
    w_in = lax.bitcast_convert_type(pw.w, jnp.int8)
  extra = []
  if xsum_in:
    # Per-group row sums of x, float32 (G, Mp): the zero-point term is offset_g * xsum_g.
    # Padded to 32 columns: a TMA copy must move a multiple of 128 bytes.
    xsum = x.astype(jnp.float32).reshape(m, k // g, g).sum(-1).T
    xsum = jnp.pad(xsum, ((0, 0), (0, max(32, mp) - m)))
    extra = [pw.offset, xsum]
  elif asym:
    extra = [pw.offset]

  # Swizzle tiles no wider than one group, so each group's slice is whole tiles.
  xw = g if group_slices else 64  # x's swizzle tiles: whole ones in each wgmma's K slice
  x_tf = (plgpu.TilingTransform((8, xw)), plgpu.SwizzleTransform(2 * xw))
  w_tf = (plgpu.TilingTransform((8, 64 if nf4 else 128)),
          plgpu.SwizzleTransform(128 if per_channel else 64))
  wk = CHUNK // 2 if nf4 else CHUNK  # weight columns (bytes or int4) per 128 of K

  nx = len(xg)

  def kernel(*refs):
    x_gmems, (w_gmem, s_gmem), rest = refs[:nx], refs[nx:nx + 2], refs[nx + 2:]
    off_gmem, xs_gmem = (rest[0], rest[1] if xsum_in else None) if asym else (None, None)
    o_gmem, o_smem = rest[-2:]
    def body(_, *refs_and_acc):
      if load_only:
        return refs_and_acc[-1]
      x_smems, (w_smem, s_smem) = refs_and_acc[:nx], refs_and_acc[nx:nx + 2]
      off_smem = refs_and_acc[nx + 2] if asym else None
      xs_smem = refs_and_acc[nx + 3] if xsum_in else None
      acc = refs_and_acc[-1]
      if compute_wgs > 1:  # this compute warpgroup's rows of the tile
        r = pl.ds(lax.axis_index("wg") * wg_rows, wg_rows)
        w_smem, s_smem = w_smem.at[r], s_smem.at[:, r]
        off_smem = off_smem.at[:, r] if asym else None

      def block_scales(j, group_cols, dtype, times=1.0):  # the chunk's scales * times, spread
        rows = []                                        # over its columns
        for t in range(sub):
          st = plgpu.load(s_smem.at[j * sub + t], (), layout=plgpu.Layout.WGMMA.reduce(1))
          if pw.scale_bf16:  # stored as used, `times` included
            rows.append(st)
            continue
          if fp4_scale_bytes:
            st = scale_bytes_f32(st, fmt)
          rows.append((st * times if times != 1.0 else st).astype(dtype))
        return spread_groups(rows, wk, group_cols)

      def weights(j):  # chunk j (128 of K) of W^T as bf16 register tiles
        ks = pl.ds(j * wk, wk)
        if nf4:  # bytes -> low / high nibbles (even / odd k) -> table values
          wb = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_2X)
          wb = plgpu.layout_cast(wb, plgpu.Layout.WGMMA)
          if nf4_lut:
            vals = nf4_lut_halves(wb)
          else:
            # Mosaic GPU does no arithmetic (shifts included) on 8-bit registers: widen first.
            wb = wb.astype(jnp.uint16)
            halves = (wb & 15, wb >> 4)
            if not prescale:
              (ev_hi, ev_lo), (od_hi, od_lo) = map(nf4_hi_lo, halves)
              return [ev_hi, od_hi, ev_lo, od_lo]
            vals = [nf4_f32(h) for h in halves]
          # Byte column c holds k = 2c, 2c + 1: g / 2 byte columns a group.
          s_exp = block_scales(j, g // 2, jnp.float32)
          return [(v * s_exp).astype(jnp.bfloat16) for v in vals]
        if per_channel:
          w = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_2X)
          w = plgpu.layout_cast(w, plgpu.Layout.WGMMA)
          if fmt is WeightFormat.FP8:  # e4m3 -> f16 (cvt) -> f32 -> bf16: every value exact
            w = lax.bitcast_convert_type(w, jnp.float8_e4m3fn).astype(jnp.float32)
          return [w.astype(jnp.bfloat16)]
        w = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_4X)
        if pw.wgmma_order:  # stored in register order: relabel, no data movement
          w = wgmma_from_upcast_4x(w)
        else:  # relayout while still 4-bit (cheaper shuffles), then the decode to bf16
          w = plgpu.layout_cast(w, plgpu.Layout.WGMMA_UPCAST_2X)
          w = plgpu.layout_cast(w, plgpu.Layout.WGMMA)
        if slots:  # bitsandbytes' GEMV weight: RN_bf16(bf16 table * bf16 absmax)
          return [nf4_slots_bf16(w, block_scales(j, g, jnp.bfloat16))]
        if zero_in_weights:  # (q - 8) - (zp - 8), zp - 8 = offset / s rounded to bf16
          rows = lambda ref: [plgpu.load(ref.at[j * sub + t], (),
                                         layout=plgpu.Layout.WGMMA.reduce(1)) for t in range(sub)]
          zs = list(map(uint4_zero_bf16, rows(off_smem), rows(s_smem)))
          return [w.astype(jnp.bfloat16) - spread_groups(zs, wk, g)]
        if not fp4:
          return [w.astype(jnp.bfloat16)]  # Mosaic's fast i4 -> bf16 cast
        if prescale and fmt is WeightFormat.NVFP4:  # one multiply: value * s_b / 2^8, exact
          return [e2m1_bf16(w, block_scales(j, g, jnp.bfloat16, 2.0**NVFP4_PRESCALE_LOG2))]
        w = e2m1_bf16(w)
        if prescale:  # exact in bf16
          w = w * block_scales(j, g, jnp.bfloat16)
        return [w]

      def x_tiles(j, t):  # x^T tiles of chunk j, group copy t (one per x half), or group t
        if group_slices:
          return [_compat.transpose_ref(xs.at[pl.ds(0, mp), pl.ds(j * wk + t * g, g)], (1, 0))
                  for xs in x_smems]
        ks = pl.ds(j * wk, wk)
        return [_compat.transpose_ref(xs.at[pl.ds(t * mp, mp), ks], (1, 0)) for xs in x_smems]

      def epilogue(acc, part, j, t):
        if prescale:
          return acc + part
        gi = j * sub + t
        s = plgpu.load(s_smem.at[0 if per_channel else gi], (),
                       layout=plgpu.Layout.WGMMA.reduce(1))
        acc = acc + part * lax.broadcast_in_dim(s, part.shape, [0])
        if xsum_in:
          off = plgpu.load(off_smem.at[gi], (), layout=plgpu.Layout.WGMMA.reduce(1))
          xs = plgpu.load(xs_smem.at[gi, pl.ds(0, mp)], (), layout=plgpu.Layout.WGMMA.reduce(0))
          acc = acc - (lax.broadcast_in_dim(off, part.shape, [0])
                       * lax.broadcast_in_dim(xs, part.shape, [1]))
        return acc

      def mma(acc_ref, ws, j, t):  # chunk j's weight tiles times x's group copy t
        xts = x_tiles(j, t)
        for i, w_ in enumerate(ws):  # NF4 bytes: (even, odd) x halves, for hi then lo terms
          if group_slices:  # group t's columns of the register tile
            w_ = lax.slice(w_, (0, t * g), (w_.shape[0], (t + 1) * g))
          plgpu.wgmma(acc_ref, w_, xts[i % len(xts)])

      acc_type = plgpu.ACC((wg_rows, mp), jnp.float32)
      if step_wait and (prescale or per_channel):  # one chain from the carried sum, one wait
        def chain(acc_ref):
          for j in range(gps):
            mma(acc_ref, weights(j), j, 0)

        return pl.run_state(chain)(plgpu.ACC.init(acc))
      if step_wait:  # group scales: chunk j's partial products are read (scaled, summed)
        # once chunk j + 1's wgmmas are issued, so two weight tiles are live, not all of them
        def chunk(j, prev, acc_in):
          def scoped(*acc_refs):  # chunk j's accumulators, one a group
            ws, acc = weights(j), acc_in
            for t in range(per_chunk):
              mma(acc_refs[t], ws, j, t)
            for t, r in enumerate(prev):  # chunk j - 1's, with chunk j's still in flight
              part = _compat.wgmma_accumulator_load(r, per_chunk * len(ws))
              acc = epilogue(acc, part, j - 1, t)
            if j + 1 < gps:
              return chunk(j + 1, acc_refs, acc)
            for t, r in enumerate(acc_refs):
              acc = epilogue(acc, r[...], j, t)
            return acc

          return pl.run_scoped(scoped, *[acc_type] * per_chunk)

        return chunk(0, (), acc)
      for j in range(gps):
        ws = weights(j)
        for t in range(per_chunk):
          def wait_chunk(acc_ref, ws=ws, j=j, t=t):
            mma(acc_ref, ws, j, t)
            return acc_ref[...]

          acc = epilogue(acc, pl.run_scoped(wait_chunk, acc_type), j, t)
      return acc

    # Where iteration i of this CTA's pipeline reads: (N tile, K step of the tile, output slot).
    sched_place, sched_last = schedule.place, schedule.last  # traced in the kernel
    in_specs = [plgpu.BlockSpec((xsub * mp, wk * gps), lambda i: (0, sched_place(i)[1]),
                                transforms=x_tf)] * nx
    def w_block(i):  # block-contiguous weights: block (tile, kk) is block row tile * kst + kk
      tile, kk, _ = sched_place(i)
      return (tile * ksteps_total + kk, 0) if pw.w_tile else (tile, kk)

    in_specs += [
        plgpu.BlockSpec((tile_n, wk * gps), w_block, transforms=w_tf),
        (plgpu.BlockSpec((1, tile_n), lambda i: (0, sched_place(i)[0])) if per_channel
         else plgpu.BlockSpec((scale_rows, tile_n), lambda i: sched_place(i)[1::-1])),
    ]
    gmem = [*x_gmems, w_gmem, s_gmem]
    if asym:
      in_specs.append(plgpu.BlockSpec((scale_rows, tile_n), lambda i: sched_place(i)[1::-1]))
      gmem.append(off_gmem)
    if xsum_in:
      in_specs.append(plgpu.BlockSpec((scale_rows, max(32, mp)),
                                      lambda i: (sched_place(i)[1], 0)))
      gmem.append(xs_gmem)
    wg = lax.axis_index("wg") if compute_wgs > 1 else 0

    def body_and_flush(indices, *refs_and_acc):
      (i,) = indices
      acc = body(indices, *refs_and_acc)
      last = sched_last(i)

      @pl.when(last)
      def _flush():  # this warpgroup's rows of the tile's partial sum -> output slot
        tile, _, slot = sched_place(i)
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # o_smem free again
        if per_channel and step_wait:  # the channel scales, once on the f32 sum
          s = plgpu.load(refs_and_acc[nx + 1].at[0], (), layout=plgpu.Layout.WGMMA.reduce(1))
          o_smem.at[wg][...] = acc * lax.broadcast_in_dim(s, acc.shape, [0])
        else:
          o_smem.at[wg][...] = acc
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_smem.at[wg],
                                o_gmem.at[slot, pl.ds(tile * tile_n + wg * wg_rows, wg_rows)])

      return jnp.where(last, 0.0, acc)  # a select: NaN in one tile cannot leak into the next

    acc0 = lambda: plgpu.layout_cast(jnp.zeros((wg_rows, mp), jnp.float32), plgpu.Layout.WGMMA)
    depth = min(steps, schedule.iters)
    if compute_wgs == 1:
      plgpu.emit_pipeline(body_and_flush, grid=(schedule.iters,), in_specs=in_specs,
                          max_concurrent_steps=depth, init_carry=acc0())(*gmem)
    else:
      plgpu.emit_pipeline_warp_specialized(
          body_and_flush, grid=(schedule.iters,), in_specs=in_specs,
          max_concurrent_steps=depth, num_compute_wgs=compute_wgs, wg_axis="wg",
          memory_registers=40, compute_context=lambda pipeline: pipeline(acc0()))(*gmem)
    plgpu.wait_smem_to_gmem(0)

  threads = dict(num_threads=compute_wgs + 1, thread_name="wg") if compute_wgs > 1 else {}
  f = _compat.mgpu_kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((schedule.slots, n, mp), jnp.float32),
      grid=schedule.grid,
      grid_names=schedule.grid_names,
      scratch_types=[plgpu.SMEM((compute_wgs, wg_rows, mp), jnp.float32)],
      **threads,
  )
  y = schedule.reduce(f(*xg, w_in, scale_in, *extra))
  if prescale and fmt is WeightFormat.NVFP4:  # 2^8 back (exact), then s_t
    y = y * 2.0**(126 - NVFP4_PRESCALE_LOG2) * pw.tensor_scale
  return y[:, :m].T.astype(out_dtype or x.dtype)
