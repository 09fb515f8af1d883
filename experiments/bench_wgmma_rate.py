"""The decode kernel's MMA ceiling: wgmma throughput with a register A operand, by wgmma N.

The decode kernel (`pallas_kernels/wo_matmul/mosaic_gpu.py`) computes y^T = W^T x^T with the
dequantized W^T tile in registers as wgmma's A operand and x^T (K, M) in shared memory as B, so
wgmma's N is M padded to a multiple of 8. At M = 32 / 64 the kernel is no longer bound by
reading the weight (session 9: INT4 g128 M = 64 in 68.5 us is 440 TFLOP/s); this measures
what the tensor cores give in that orientation at each N, with nothing else running: every CTA
chains `chain` wgmmas of (rows x 128) @ (128 x N) into one accumulator, waits once, `reps`
times. No loads in the loop, so the rate is the MMA's alone (an upper bound for the decode).

Run on the GPU machine:  PYTHONPATH=. python3 experiments/bench_wgmma_rate.py --out $OUT
Writes wgmma_rate.json and wgmma_rate.md (device, date, jax version; XLA's bf16 GEMM rate
measured in the same run as the reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402

import bench_kernels_common as C  # noqa: E402
from pallas_kernels import _compat  # noqa: E402
from pallas_kernels.wo_matmul.decode_plan import NUM_SMS_H100  # noqa: E402

K_TILE = 128  # one 128-wide chunk of K, as the decode kernel issues


def wgmma_rate_kernel(n: int, rows: int, chain: int, reps: int, ctas: int):
  """f(x (n, 128) bf16) -> (ctas, rows, n) f32: each CTA's sum of reps * chain wgmmas of a
  register A = ones (rows, 128) bf16 against x^T from shared memory (the decode's operands)."""
  plgpu = _compat.plgpu_module()
  xw = 64  # the decode kernel's x swizzle tiles
  x_tf = (plgpu.TilingTransform((8, xw)), plgpu.SwizzleTransform(2 * xw))

  def kernel(x_gmem, o_gmem, x_smem, o_smem, bar):
    plgpu.copy_gmem_to_smem(x_gmem, x_smem, bar.at[0])
    plgpu.barrier_wait(bar.at[0])
    xt = _compat.transpose_ref(x_smem, (1, 0))  # (128, n): wgmma's B, as the decode reads x
    a = plgpu.layout_cast(jnp.full((rows, K_TILE), 1.0, jnp.bfloat16), plgpu.Layout.WGMMA)

    def rep(_, acc):
      def issue(acc_ref):
        for _ in range(chain):
          plgpu.wgmma(acc_ref, a, xt)

      return pl.run_state(issue)(plgpu.ACC.init(acc))  # one wait a rep

    acc0 = plgpu.layout_cast(jnp.zeros((rows, n), jnp.float32), plgpu.Layout.WGMMA)
    o_smem[...] = lax.fori_loop(0, reps, rep, acc0)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_smem, o_gmem.at[lax.axis_index("c")])
    plgpu.wait_smem_to_gmem(0)

  return _compat.mgpu_kernel(
      kernel, out_type=jax.ShapeDtypeStruct((ctas, rows, n), jnp.float32),
      grid=(ctas,), grid_names=("c",),
      scratch_types=[plgpu.SMEM((n, K_TILE), jnp.bfloat16, transforms=x_tf),
                     plgpu.SMEM((rows, n), jnp.float32), plgpu.Barrier(num_barriers=1)])


MAX_ACC = 128 * 128  # rows x N f32 accumulators a warpgroup holds without spilling: 128 a thread


def write(res: dict, rows_out: list[dict], out: str, chain: int) -> None:
  """The JSON and the table so far (a run cut off keeps both)."""
  with open(os.path.join(out, "wgmma_rate.json"), "w") as fh:
    json.dump(dict(res, wgmma_rate=rows_out), fh, indent=1)
  md = [f"device {res['device']}, jax {res['jax_version']}, {res['date']}", "",
        f"XLA bf16 GEMM 8192^3 {res['bf16_gemm_flops'] / 1e12:.0f} TFLOP/s. Register-A wgmma "
        f"(rows x 128) @ (128 x N), {chain} a wait, no loads. `resident`: the CTAs an SM that "
        "fit its shared memory (fewer than asked: the CTAs ran in more waves).", "",
        "| CTAs an SM (asked / resident) | rows | N | TFLOP/s | of XLA GEMM | result exact |",
        "|---|---|---|---|---|---|"]
  for r in rows_out:
    ctas = f"{r['ctas_per_sm']} / {r.get('resident', '?')}"
    if "error" in r:
      md.append(f"| {ctas} | {r['rows']} | {r['n']} | failed: {r['error'][:60]} | | |")
    else:
      md.append(f"| {ctas} | {r['rows']} | {r['n']} | {r['tflops']:.0f} | "
                f"{r['frac_xla_gemm']:.0%} | {r['correct']} |")
  with open(os.path.join(out, "wgmma_rate.md"), "w") as fh:
    fh.write("\n".join(md) + "\n")


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--ns", default="8,16,32,64,128,256", help="wgmma N values (M padded)")
  ap.add_argument("--rows", default="64,128", help="A rows a warpgroup (tile rows)")
  ap.add_argument("--ctas-per-sm", default="1,2")
  ap.add_argument("--chain", type=int, default=8, help="wgmmas issued per wait")
  ap.add_argument("--flop", type=float, default=2e12, help="FLOP per timed call (about)")
  ap.add_argument("--spill", action="store_true",
                  help=f"also time rows x N above {MAX_ACC} (accumulators spill: serialized)")
  ap.add_argument("--out", default=".")
  args = ap.parse_args()
  res = C.header()
  res["bf16_gemm_flops"] = C.bf16_gemm_rate()
  print(f"XLA bf16 GEMM 8192^3 {res['bf16_gemm_flops'] / 1e12:.0f} TFLOP/s", flush=True)
  rows_out = []
  for cps in map(int, args.ctas_per_sm.split(",")):
    ctas = NUM_SMS_H100 * cps
    for rows in map(int, args.rows.split(",")):
      for n in map(int, args.ns.split(",")):
        if rows * n > MAX_ACC and not args.spill:
          continue  # 256 accumulator registers a thread: ptxas serializes the wgmmas
        per_rep = 2 * rows * n * K_TILE * args.chain * ctas
        reps = max(1, int(args.flop // per_rep))
        row = dict(n=n, rows=rows, ctas_per_sm=cps, ctas=ctas, chain=args.chain, reps=reps)
        try:
          f = wgmma_rate_kernel(n, rows, args.chain, reps, ctas)
          x = jnp.ones((n, K_TILE), jnp.bfloat16)
          smem = C.mosaic_smem_bytes(f, x)  # x^T and the output tile, as Mosaic lays them out
          row.update(smem_bytes=smem, resident=cps if smem is None else min(
              cps, C.ctas_per_sm(smem)))
          out = jax.block_until_ready(f(x))
          want = float(K_TILE * args.chain * reps)  # ones @ ones, exact in f32 below 2^24
          row["correct"] = bool(jnp.all(out == want)) if want < 2**24 else None
          t = C.time_op(f, [(x,)], iters=10)
          row.update(time_s=t["time_s"], tflops=per_rep * reps / t["time_s"] / 1e12)
          row["frac_xla_gemm"] = row["tflops"] * 1e12 / res["bf16_gemm_flops"]
        except Exception as e:  # pylint: disable=broad-except
          row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(json.dumps(row), flush=True)
        rows_out.append(row)
        write(res, rows_out, args.out, args.chain)


if __name__ == "__main__":
  main()
