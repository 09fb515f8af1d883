"""The GPU defaults end to end: `repack_qarray` (bf16 FP4 scale multipliers, NF4 slot codes,
register order) and `wo_matmul`'s default implementation against x @ dequantize(q), MXFP4 /
NVFP4 / NF4 and INT4 / UINT4 in groups of 32 and 64 (the decode kernel's `group_slices`), M = 1,
16, 64 and 1024 (the prefill GEMM).

The reference is XLA's f32 dot at default precision: on a GPU it runs TF32 for M > 1, exact for
MXFP4's values (a 2-bit significand times a power of two) but not for NVFP4's s_t s_b v, so
NVFP4's error there is the reference's, ~2e-4 (the benchmark's `--onehot` checks the kernel's
weights element by element). NF4's ~3e-3 is the bf16 table, absmax and weight rounding of
its slot codes (bitsandbytes' GEMV numerics). Output: experiments/results/wo_defaults_check_s*.txt.
"""
import jax
import jax.numpy as jnp

import mxjax
import pallas_kernels.wo_matmul as wm


def main():
  for preset, group in (("mxfp4", None), ("nvfp4", None), ("nf4_g64", None), ("int4_g128", 32),
                        ("int4_g128", 64), ("int4_g128_asym", 32), ("int4_g128_asym", 64)):
    w = jax.random.normal(jax.random.key(0), (4096, 2048), jnp.float32)
    sch = mxjax.schemes.get(preset, **({} if group is None else dict(block_size=group)))
    name = preset if group is None else f"{preset} g{group}"
    q = mxjax.quantize(w, sch, axis=0)
    pw = wm.repack_qarray(q)
    for m in (1, 16, 64, 1024):
      x = jax.random.normal(jax.random.key(m), (m, 4096), jnp.float32).astype(jnp.bfloat16)
      impl = wm.api.default_implementation(x, pw)
      y = jax.jit(lambda x, p: wm.wo_matmul(x, p, out_dtype=jnp.float32))(x, pw)
      ref = x.astype(jnp.float32) @ mxjax.dequantize(q)
      err = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
      print(name, m, impl, pw.scale_bf16, pw.wgmma_order, f"rel err {err:.2e}",
            "OK" if err < 1e-2 and bool(jnp.isfinite(y).all()) else "FAIL")


if __name__ == "__main__":
  main()
