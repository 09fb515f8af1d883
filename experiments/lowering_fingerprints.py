"""Fingerprints of the Mosaic GPU kernels' lowering over many configs, on the CPU.

A kernel built on Mosaic GPU-only primitives cannot run here, but its lowering can
(`_compat.lower_for`). This hashes, for each config, the outer StableHLO and the kernel's
Mosaic module printed without debug info (so moved code and renamed locals do not count), or
the error the config raises: the decode kernel over (format, M, options), the prefill GEMM over
formats and tiles, and the row- and column-wise quantize kernels over schemes and options. Run
it before and after a change meant to keep behaviour (a refactor), and compare:

  python experiments/lowering_fingerprints.py before.json   # at the old commit
  python experiments/lowering_fingerprints.py after.json    # at the new one
  python experiments/lowering_fingerprints.py --compare before.json after.json

`--kernels decode,gemm,quantize` picks a subset. All three: about 5 minutes on 2 cores.
"""
import argparse
import hashlib
import json
import re

import jax
import jax.numpy as jnp
from jax._src.lib.mlir import ir

import mxjax
import pallas_kernels.wo_matmul as wm
from pallas_kernels import _compat
from pallas_kernels.quantize import mosaic_gpu as quantize_gpu
from pallas_kernels.quantize import mosaic_gpu_columns as quantize_columns_gpu
from pallas_kernels.wo_matmul import mosaic_gpu
from pallas_kernels.wo_matmul import mosaic_gpu_gemm

FORMATS = [("int4_g128", {}), ("int4_g128", {"block_size": 32}),
           ("int4_g128", {"block_size": 64}), ("int4_g128_asym", {}),
           ("int4_g128_asym", {"block_size": 32}), ("mxfp4", {}), ("nvfp4", {}), ("nf4_g64", {}),
           ("int8", {}), ("fp8_e4m3_rowwise", {}),
           # session 15's storages: a scheme's bf16 scales, UINT4 zero points as bytes
           ("int4_g128_asym", {"block_size": 64, "scale": "bf16"}), ("int8", {"scale": "bf16"}),
           ("int4_g128_asym", {"block_size": 32, "zero_points": True})]
OPTIONS = [{}, {"step_wait": True}, {"step_wait": False}, {"tma_pad": False}, {"tma_pad": True},
           {"group_slices": False}, {"zero_in_weights": True}, {"prescale": False},
           {"stream_k": 3}, {"splits": 4, "stream_k": None}, {"compute_wgs": 2, "tile_n": 256},
           {"load_only": True}, {"nf4_lut": False}, {"fp4_scale_bytes": True},
           {"steps": 3, "gps": 2}, {"chunk_wait": True, "step_wait": False},
           {"fused_sum": True, "stream_k": 2}, {"fp8_x": True},
           {"fp8_x": True, "compute_wgs": 2, "tile_n": 256}]


def fingerprint(lowered) -> str:
  """sha256 (16 hex digits) of the outer StableHLO and every Mosaic GPU module in it."""
  mod = lowered.compiler_ir("stablehlo")
  kernels = []

  def walk(op):
    for region in op.regions:
      for block in region.blocks:
        for o in block.operations:
          if o.name == "stablehlo.custom_call" and "mhlo.backend_config" in o.attributes:
            raw = ir.StringAttr(o.attributes["mhlo.backend_config"]["module"]).value_bytes
            with mod.context:
              mod.context.allow_unregistered_dialects = True
              kernels.append(ir.Module.parse(raw).operation.get_asm(enable_debug_info=False))
          walk(o)

  walk(mod.operation)
  outer = re.sub(r"mhlo.backend_config = \{[^\n]*", "", lowered.as_text())
  return hashlib.sha256((outer + "".join(kernels)).encode()).hexdigest()[:16]


GEMM_OPTIONS = [{}, {"tile_m": 256, "tile_k": 64}, {"steps": 2}, {"nf4_lut": False}]
QUANT_SCHEMES = ["mxfp8_e4m3", "mxfp4", "nvfp4", "fp8_e4m3_block128", "int4_g128"]
QUANT_OPTIONS = [{}, {"state_once": True}, {"state_once": False}, {"encode_cols": None},
                 {"steps": 3, "ctas_per_sm": 2}, {"tensor_amax": True}, {"cast_nan": True},
                 {"pair_amax": True}, {"pair_amax": False}, {"pair_signs": True}]


def _record(res: dict, key: str, fn, *args) -> None:
  """res[key]: the fingerprint of `fn`'s lowering, or the error it raises."""
  try:
    res[key] = fingerprint(_compat.lower_for("cuda", fn, *args))
  except (ValueError, NotImplementedError, TypeError) as e:
    res[key] = f"{type(e).__name__}: {str(e)[:150]}"


def _weight(preset, overrides, scale_bf16=None):
  overrides = dict(overrides)
  store = wm.scales.uint4_zero_points if overrides.pop("zero_points", False) else lambda p: p
  return jax.eval_shape(lambda w: store(wm.repack_qarray(mxjax.quantize(
      w, mxjax.schemes.get(preset, **overrides), axis=0), scale_bf16=scale_bf16)),
      jax.ShapeDtypeStruct((4096, 4096), jnp.float32))


def quantize_fingerprints() -> dict[str, str]:
  res = {}
  x = jax.ShapeDtypeStruct((2048, 4096), jnp.bfloat16)
  for scheme in QUANT_SCHEMES:
    for opts in QUANT_OPTIONS:
      o = dict(opts, allow_unverified=True)
      if o.pop("tensor_amax", False):
        fn = lambda x, s=scheme, o=o: quantize_gpu.quantize_mosaic_gpu(
            x, s, tensor_amax=jnp.max(jnp.abs(x.astype(jnp.float32))), **o)
      else:
        fn = lambda x, s=scheme, o=o: quantize_gpu.quantize_mosaic_gpu(x, s, **o)
      _record(res, f"quantize|{scheme}|{opts}", fn, x)
    for opts in ({}, {"steps": 3}, {"tile_k": 64}, {"tile_k": 128}, {"piece": 32},
                 {"cast_nan": True}, {"pair_amax": True}, {"pair_amax": False},
                 {"pair_cast": True}, {"pair_cast": True, "pair_signs": True}):
      _record(res, f"quantize columns|{scheme}|{opts}",
              lambda x, s=scheme, o=opts: quantize_columns_gpu.quantize_columns_mosaic_gpu(
                  x, s, allow_unverified=True, **o), x)
  x32 = jax.ShapeDtypeStruct((2048, 4096), jnp.float32)
  for scheme in QUANT_SCHEMES:
    for opts in ({}, {"encode_cols": 8}):
      _record(res, f"quantize f32|{scheme}|{opts}",
              lambda x, s=scheme, o=opts: quantize_gpu.quantize_mosaic_gpu(
                  x, s, allow_unverified=True, **o), x32)
  return res


def gemm_fingerprints() -> dict[str, str]:
  res = {}
  for preset, overrides in FORMATS:
    pw = _weight(preset, overrides)
    for opts in GEMM_OPTIONS:
      _record(res, f"gemm|{preset}{overrides}|{opts}",
              lambda x, p, o=opts: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
                  x, p, allow_unverified=True, **o),
              jax.ShapeDtypeStruct((1024, 4096), jnp.bfloat16), pw)
  for preset in ("mxfp4", "nvfp4"):  # the GPU's storage: bf16 multipliers, read as they are
    _record(res, f"gemm|{preset}|scale_bf16|scale_multipliers",
            lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
                x, p, allow_unverified=True, scale_multipliers=True),
            jax.ShapeDtypeStruct((1024, 4096), jnp.bfloat16), _weight(preset, {}, True))
  _record(res, "gemm|nvfp4|scale_bf16|tensor_scale_out",  # s_t on the f32 sum (session 21)
          lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
              x, p, allow_unverified=True, tensor_scale_out=True),
          jax.ShapeDtypeStruct((1024, 4096), jnp.bfloat16), _weight("nvfp4", {}, True))
  _record(res, "gemm|int8|int8_bf16",  # the codes to f32 through bf16 (session 31)
          lambda x, p: mosaic_gpu_gemm.wo_gemm_mosaic_gpu(
              x, p, allow_unverified=True, int8_bf16=True),
          jax.ShapeDtypeStruct((1024, 4096), jnp.bfloat16), _weight("int8", {}))
  return res


def decode_fingerprints() -> dict[str, str]:
  res = {}
  for preset, overrides in FORMATS:
    for scale_bf16 in ((None, False) if preset in ("mxfp4", "nvfp4", "nf4_g64") else (None,)):
      pw = _weight(preset, overrides, scale_bf16)
      for m in (1, 5, 16, 64):
        for opts in OPTIONS:
          _record(res, f"{preset}{overrides}|scale_bf16 {scale_bf16}|M {m}|{opts}",
                  lambda x, p, o=opts: mosaic_gpu.wo_matmul_mosaic_gpu(
                      x, p, allow_unverified=True, **o),
                  jax.ShapeDtypeStruct((m, 4096), jnp.bfloat16), pw)
  return res


KERNELS = {"decode": decode_fingerprints, "gemm": gemm_fingerprints,
           "quantize": quantize_fingerprints}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("out", nargs="?", help="JSON file to write the fingerprints to")
  ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
  ap.add_argument("--kernels", default=",".join(KERNELS), help="which kernels' configs")
  args = ap.parse_args()
  if args.compare:
    a, b = (json.load(open(f)) for f in args.compare)
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    for k in diff:
      print(k, a.get(k), "->", b.get(k))
    print(f"{len(diff)} of {len(a.keys() | b.keys())} configs differ")
    raise SystemExit(1 if diff else 0)
  res = {}
  for name in args.kernels.split(","):
    res.update(KERNELS[name]())
  with open(args.out, "w") as f:
    json.dump(res, f, indent=0, sort_keys=True)
  print(f"{len(res)} configs, {sum(':' not in v for v in res.values())} lowered")


if __name__ == "__main__":
  main()
