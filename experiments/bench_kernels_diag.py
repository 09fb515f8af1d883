"""GPU diagnostics for the Mosaic GPU kernels: is Mosaic's `/` correctly rounded, are the PTX
division and the FMA-corrected quotient (`_ptx.py`, `schemes.quotient_fma`'s arithmetic), where
the quantize kernels depart from the reference, and the entry points as a user calls them (no
implementation named: what `default_implementation` picks, checked against the reference).
Run on the GPU machine: PYTHONPATH=. python3 experiments/bench_kernels_diag.py"""

from __future__ import annotations

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402

from pallas_kernels import _compat  # noqa: E402
from pallas_kernels import _ptx  # noqa: E402
from pallas_kernels.quantize import schemes as S  # noqa: E402


def div_kernel(variant):
  plgpu = _compat.plgpu_module()

  def kernel(a_ref, b_ref, o_ref):
    a = plgpu.load(a_ref, (), layout=plgpu.Layout.WGMMA, optimized=False)
    b = plgpu.load(b_ref, (), layout=plgpu.Layout.WGMMA, optimized=False)
    if variant == "f32":  # Mosaic GPU's own division
      o = a / b
    elif variant == "ptx div.rn":
      o = _ptx.div_rn(a, b, layout=_ptx.TILE)
    else:  # RN(a / b) from RN(1 / b) and two FMAs: the kernels' schemes.div_fma
      fma = lambda p, q, r: _ptx.fma_rn(p, q, r, layout=_ptx.TILE)
      o = S.div_fma(a, b, _ptx.div_rn(1.0, b, layout=_ptx.TILE), fma)
    o_ref[...] = o

  return _compat.mgpu_kernel(
      lambda a, b, o: _scoped(kernel, a, b, o),
      out_type=jax.ShapeDtypeStruct((128, 64), jnp.float32))


def _scoped(kernel, a_g, b_g, o_g):
  plgpu = _compat.plgpu_module()

  def body(a_s, b_s, o_s, bar):
    plgpu.copy_gmem_to_smem(a_g, a_s, bar.at[0])
    plgpu.copy_gmem_to_smem(b_g, b_s, bar.at[1])
    plgpu.barrier_wait(bar.at[0])
    plgpu.barrier_wait(bar.at[1])
    kernel(a_s, b_s, o_s)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_s, o_g)
    plgpu.wait_smem_to_gmem(0)

  pl.run_scoped(body, plgpu.SMEM((128, 64), jnp.float32), plgpu.SMEM((128, 64), jnp.float32),
                plgpu.SMEM((128, 64), jnp.float32), plgpu.Barrier(num_barriers=2))


def main():
  rng = np.random.default_rng(0)
  for variant in ("f32", "ptx div.rn", "fma quotient"):
    bad = total = 0
    try:
      f = jax.jit(div_kernel(variant))
      for t in range(20):
        a = (rng.standard_normal((128, 64)) * np.exp(rng.standard_normal((128, 64)) * 4)).astype(np.float32)
        b = (np.abs(rng.standard_normal((128, 64))) * np.exp(rng.standard_normal((128, 64)) * 4) + 1e-3).astype(np.float32)
        o = np.asarray(f(jnp.asarray(a), jnp.asarray(b)))
        ieee = (a.astype(np.float64) / b.astype(np.float64)).astype(np.float32)
        bad += int((o.view(np.uint32) != ieee.view(np.uint32)).sum())
        total += o.size
      print(f"division {variant}: {bad} of {total} differ from IEEE")
    except Exception as e:
      print(f"division {variant}: FAILED {type(e).__name__}: {str(e)[:300]}")
  # NVFP4 kernel vs reference.
  try:
    import mxjax
    from pallas_kernels.quantize import mosaic_gpu as QG
    x = jax.random.normal(jax.random.key(0), (256, 1024), jnp.float32).astype(jnp.bfloat16)
    for sch in ("nvfp4", "int4_g128", "fp8_e4m3_block128"):
      q = jax.jit(lambda x: QG.quantize_mosaic_gpu(x, sch))(x)
      r = jax.jit(lambda x: mxjax.quantize(x, sch))(x)
      for name, a, b in (("codes", q.codes, r.codes), ("scale", q.scale, r.scale)):
        a, b = np.asarray(a), np.asarray(b)
        ai = a.view(np.uint8) if a.dtype.itemsize == 1 else a.view(np.uint32)
        bi = b.view(np.uint8) if b.dtype.itemsize == 1 else b.view(np.uint32)
        d = np.nonzero(ai != bi)
        print(sch, name, a.dtype, a.shape, "mismatch", len(d[0]),
              "first", [(int(i), int(j)) for i, j in zip(*d)][:4],
              "kern", ai[d][:6].tolist(), "ref", bi[d][:6].tolist())
      if q.tensor_scale is not None:
        print(sch, "tensor_scale", np.asarray(q.tensor_scale), np.asarray(r.tensor_scale))
  except Exception:
    traceback.print_exc()


def defaults_check():
  """`quantize` / `wo_matmul` with their default implementation and tuning, on the GPU."""
  import mxjax  # pylint: disable=g-import-not-at-top
  from pallas_kernels import quantize as pq  # pylint: disable=g-import-not-at-top
  from pallas_kernels import wo_matmul as wm  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize.testdata import rounding_midpoints  # pylint: disable=g-import-not-at-top
  x = jnp.concatenate([
      (jax.random.normal(jax.random.key(1), (512, 2048)) * 3).astype(jnp.bfloat16),
      rounding_midpoints(2, 512, 2048)])
  for sch in ("mxfp8_e4m3", "mxfp4", "nvfp4", "fp8_e4m3_block128", "int4_g128"):
    for transpose in (False, True):
      impl = pq.api.default_implementation(sch, transpose, x)
      got = jax.jit(lambda x: pq.quantize(x, sch, transpose=transpose))(x)
      want = jax.jit(lambda x: mxjax.quantize(x.T if transpose else x, sch))(x)
      bad = sum(int((np.asarray(a).view(np.uint8) != np.asarray(b).view(np.uint8)).sum())
                for a, b in ((got.codes, want.codes), (got.scale, want.scale)))
      print(f"default quantize {sch:18s} {'cols' if transpose else 'rows'}: {impl:10s} "
            f"{bad} bytes differ")
  for preset in ("int4_g128", "mxfp4", "nvfp4", "nf4_g64", "int8", "fp8_e4m3_rowwise"):
    w = jax.random.normal(jax.random.key(2), (4096, 4096), jnp.float32)
    pw = wm.repack_qarray(mxjax.quantize(w, preset, axis=0))
    for m in (1, 64, 1024):
      xm = jax.random.normal(jax.random.key(m), (m, 4096), jnp.bfloat16)
      impl = wm.api.default_implementation(xm, pw)
      got = jax.jit(wm.wo_matmul)(xm, pw)
      ref = wm.wo_matmul(xm, pw, implementation="xla", out_dtype=jnp.float32)
      err = np.linalg.norm(np.asarray(got, np.float64) - np.asarray(ref, np.float64)) / \
          np.linalg.norm(np.asarray(ref, np.float64))
      print(f"default wo_matmul {preset:16s} M={m:5d}: {impl:15s} rel err {err:.2e}")


if __name__ == "__main__":
  main()
  defaults_check()
