"""Weight-only matmul on Hopper with Mosaic GPU: `y = x @ dequant(W)`, W INT4 / UINT4 (g128).

INT8 per-channel weights take the same path (int8 -> bf16 through the WGMMA_UPCAST_2X layout,
the channel scale applied per 128-chunk); that path lowers but has not run on a GPU yet, so it
needs `allow_unverified=True`.

Decode-shaped problems (M <= 64) are bound by reading the packed weight, so the kernel is built
to stream W^T (N, K) int4 through shared memory at HBM speed and keep the tensor cores fed from
registers ("swap AB"): it computes `y^T = W^T x^T`, with the dequantized W^T tile as the
register-resident left operand of wgmma (64 rows of N per instruction) and the tiny x^T tile as
the shared-memory right operand (its N dimension is M, padded to a multiple of 8).

One CTA = one warpgroup owns `tile_n` rows of W^T and one K split. A `plgpu.emit_pipeline` keeps
`steps` TMA copies of (tile_n x 128 * gps) int4 weight tiles, their scales and the x tile in
flight. Per quantization group of 128 within a step:

  q      = int4 tile -> bf16          (WGMMA_UPCAST_4X register layout, Mosaic's fast i4 cast)
  part   = wgmma(q, x_tile^T)         (fresh f32 accumulator, (tile_n, Mp))
  acc   += part * s_g[:, None]        (scale applied exactly in f32, as the reference does)
  acc   -= offset_g[:, None] * xsum_g[None, :]     (UINT4 only: zero point folded into an offset)

Splits along K write float32 partials (splits, N, Mp) that XLA sums (a few hundred KB).
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
from pallas_kernels.wo_matmul.layout import PackedWeight
from pallas_kernels.wo_matmul.layout import WeightFormat

NUM_SMS_H100 = 132


def _pick_splits(n_tiles: int, ksteps: int, num_sms: int) -> int:
  """Smallest K split that gives at least one CTA per SM (K steps must divide evenly)."""
  for s in (1, 2, 4, 8, 16):
    if ksteps % s == 0 and (n_tiles * s >= num_sms or s * 2 > ksteps):
      return s
  return 1


def _default_config(fmt: WeightFormat, n: int) -> dict:
  """The H100 sweep's best (and GPU-checked) config for INT4 (experiments/results/kernels_wo.json);
  the formats the sweep did not cover keep the first config that ran on the GPU."""
  if fmt is WeightFormat.INT4:
    return dict(tile_n=128, gps=2, steps=3) if n >= 16384 else dict(tile_n=64, gps=2, steps=4)
  return dict(tile_n=None, gps=1, steps=6)


def wo_matmul_mosaic_gpu(x: jax.Array, pw: PackedWeight, *, tile_n: int | None = None,
                         steps: int | None = None, splits: int | None = None,
                         gps: int | None = None,
                         out_dtype=None, allow_unverified: bool = False,
                         num_sms: int = NUM_SMS_H100) -> jax.Array:
  """`x @ dequant(W)` for INT4 / UINT4 weights, group 128, on a Hopper GPU.

  Args:
    x: (M, K) bf16 activations, M <= 64.
    pw: PackedWeight (layout.py) of INT4 or UINT4 with group 128.
    tile_n: rows of W^T (columns of y) per CTA.
    steps: pipeline depth (TMA copies in flight per CTA).
    gps: quantization groups (of 128 along K) per pipeline step.
      Defaults for these three: `_default_config` (the H100 sweep's best for INT4).
    allow_unverified: run the INT8 per-channel path, which has not yet run on a GPU.
    splits: K splits (default: enough CTAs to cover the SMs).
    out_dtype: default x.dtype.
    num_sms: used to pick the default split.

  Returns:
    (M, N) array of out_dtype.
  """
  plgpu = _compat.plgpu_module()
  m, k = x.shape
  n, g = pw.n, pw.group
  dflt = _default_config(pw.fmt, n)
  tile_n = dflt["tile_n"] if tile_n is None else tile_n
  steps = dflt["steps"] if steps is None else steps
  gps = dflt["gps"] if gps is None else gps
  int8 = pw.fmt is WeightFormat.INT8
  if pw.fmt not in (WeightFormat.INT4, WeightFormat.UINT4) and not int8:
    raise NotImplementedError(
        f"mosaic_gpu wo_matmul takes INT4/UINT4 (and, unverified, INT8) weights, not {pw.fmt}")
  if int8:
    if not allow_unverified:
      raise NotImplementedError(
          "the INT8 per-channel path of the mosaic_gpu wo_matmul has not run on a GPU yet: pass "
          "allow_unverified=True (the benchmark does, and checks it), or use 'xla'/'portable'")
    if g != pw.k:
      raise NotImplementedError(f"mosaic_gpu INT8 takes per-channel scales, not group {g}")
    g = 128  # K chunk of one wgmma group; the scale is per channel, the same for every chunk
  elif g != 128:
    raise NotImplementedError(f"mosaic_gpu wo_matmul takes group 128 (one K step a group), not {g}")
  if m > 64:
    raise NotImplementedError(f"mosaic_gpu wo_matmul is the decode kernel (M <= 64), got M={m}")
  if x.dtype != jnp.bfloat16:
    raise NotImplementedError(f"mosaic_gpu wo_matmul takes bf16 activations, got {x.dtype}")
  if k != pw.k:
    raise ValueError(f"x is (M, {k}) but W has K={pw.k}")
  mp = max(8, -(-m // 8) * 8)
  if tile_n is None:
    tile_n = 256 if mp <= 16 else 128
  if n % tile_n:
    raise ValueError(f"N={n} must be a multiple of tile_n={tile_n}")
  tile_k = g * gps
  if k % tile_k:
    raise ValueError(f"K={k} must be a multiple of {gps} groups of {g}")
  ksteps_total = k // tile_k
  n_tiles = n // tile_n
  if splits is None:
    splits = _pick_splits(n_tiles, ksteps_total, num_sms)
  if ksteps_total % splits:
    raise ValueError(f"K steps ({ksteps_total}) must divide by splits={splits}")
  ksteps = ksteps_total // splits
  kspan = ksteps * tile_k
  asym = pw.fmt is WeightFormat.UINT4

  xp = jnp.pad(x, ((0, mp - m), (0, 0))) if mp != m else x
  extra = []
  if asym:
    # Per-group row sums of x, float32 (G, Mp): the zero-point term is offset_g * xsum_g.
    # Padded to 32 columns: a TMA copy must move a multiple of 128 bytes.
    xsum = xp.astype(jnp.float32).reshape(mp, k // g, g).sum(-1).T
    xsum = jnp.pad(xsum, ((0, 0), (0, max(32, mp) - mp)))
    extra = [pw.offset, xsum]

  # Swizzle tiles no wider than one group, so each group's slice is whole tiles.
  x_tf = (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))
  w_tf = (plgpu.TilingTransform((8, 128)), plgpu.SwizzleTransform(128 if int8 else 64))

  def kernel(x_gmem, w_gmem, s_gmem, *rest):
    if asym:
      off_gmem, xs_gmem, o_gmem, o_smem = rest
    else:
      o_gmem, o_smem = rest
    ni = lax.axis_index("n")
    si = lax.axis_index("s")
    n_sl = pl.ds(ni * tile_n, tile_n)

    def body(_, x_smem, w_smem, s_smem, *refs_and_acc):
      acc = refs_and_acc[-1]
      for j in range(gps):  # one quantization group of 128 at a time
        ks = pl.ds(j * g, g)
        if int8:
          w = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_2X)
        else:
          w = plgpu.load(w_smem.at[:, ks], (), layout=plgpu.Layout.WGMMA_UPCAST_4X)
          # Relayout while still 4-bit (cheaper shuffles), then the fast i4 -> bf16 cast.
          w = plgpu.layout_cast(w, plgpu.Layout.WGMMA_UPCAST_2X)
        w = plgpu.layout_cast(w, plgpu.Layout.WGMMA).astype(jnp.bfloat16)
        xt = _compat.transpose_ref(x_smem.at[:, ks], (1, 0))

        def mma(acc_ref, w=w, xt=xt):
          plgpu.wgmma(acc_ref, w, xt)
          return acc_ref[...]

        part = pl.run_scoped(mma, plgpu.ACC((tile_n, mp), jnp.float32))
        s = plgpu.load(s_smem.at[0 if int8 else j], (), layout=plgpu.Layout.WGMMA.reduce(1))
        acc = acc + part * lax.broadcast_in_dim(s, part.shape, [0])
        if asym:
          off_smem, xs_smem = refs_and_acc[0], refs_and_acc[1]
          off = plgpu.load(off_smem.at[j], (), layout=plgpu.Layout.WGMMA.reduce(1))
          xs = plgpu.load(xs_smem.at[j, pl.ds(0, mp)], (), layout=plgpu.Layout.WGMMA.reduce(0))
          acc = acc - (lax.broadcast_in_dim(off, part.shape, [0])
                       * lax.broadcast_in_dim(xs, part.shape, [1]))
      return acc

    in_specs = [
        plgpu.BlockSpec((mp, tile_k), lambda kk: (0, kk), transforms=x_tf),
        plgpu.BlockSpec((tile_n, tile_k), lambda kk: (0, kk), transforms=w_tf),
        (plgpu.BlockSpec((1, tile_n), lambda kk: (0, 0)) if int8
         else plgpu.BlockSpec((gps, tile_n), lambda kk: (kk, 0))),
    ]
    gmem = [
        x_gmem.at[:, pl.ds(si * kspan, kspan)],
        w_gmem.at[n_sl, pl.ds(si * kspan, kspan)],
        s_gmem.at[:, n_sl] if int8 else s_gmem.at[pl.ds(si * ksteps * gps, ksteps * gps), n_sl],
    ]
    if asym:
      in_specs += [plgpu.BlockSpec((gps, tile_n), lambda kk: (kk, 0)),
                   plgpu.BlockSpec((gps, max(32, mp)), lambda kk: (kk, 0))]
      gmem += [off_gmem.at[pl.ds(si * ksteps * gps, ksteps * gps), n_sl],
               xs_gmem.at[pl.ds(si * ksteps * gps, ksteps * gps), :]]
    acc0 = plgpu.layout_cast(jnp.zeros((tile_n, mp), jnp.float32), plgpu.Layout.WGMMA)
    acc = plgpu.emit_pipeline(body, grid=(ksteps,), in_specs=in_specs,
                              max_concurrent_steps=min(steps, ksteps), init_carry=acc0)(*gmem)
    o_smem[...] = acc
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem.at[si, n_sl])
    plgpu.wait_smem_to_gmem(0)

  f = _compat.mgpu_kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((splits, n, mp), jnp.float32),
      grid=(n_tiles, splits),
      grid_names=("n", "s"),
      scratch_types=[plgpu.SMEM((tile_n, mp), jnp.float32)],
  )
  parts = f(xp, pw.w, pw.scale, *extra)
  y = parts[0] if splits == 1 else parts.sum(0)
  return y[:, :m].T.astype(out_dtype or x.dtype)
