"""The decode kernel's streaming ceiling: its TMA pipeline with an empty body, by launch config.

INT4 g128 at M = 1 (8192 x 28672) runs its full kernel in ~36.5 us and its empty-body pipeline
(`load_only`, the same schedule and TMA copies, no math) in 35.0-36.1 us: 3.3-3.6 TB/s, where
XLA's bf16 GEMV streams ~4.2 TB/s and the 3.2x XLA target needs 3.64 (docs/kernels.md). Session
14 timed the empty pipeline under three configs only. This sweeps it over tile rows, chunks a
step, pipeline depth and stream-K CTAs an SM (each config as `plan_decode` resolves it; a
config whose resolved plan repeats an earlier one is skipped), so the next change to the
kernel's launch knows which shapes of TMA traffic reach the bandwidth, and which cannot. Beside
it, the same bytes read by XLA (`xla_read`) and by plain loads in a Mosaic kernel (`ld_read`, no
TMA; `--ld-only` times these and the baselines alone).

Run on the GPU machine:  PYTHONPATH=.:experiments python3 experiments/bench_tma_stream.py --out $OUT
Writes tma_stream.json (rewritten after every config, so a run cut off keeps its rows) and
tma_stream.md: each config's time, TB/s of weight + scale bytes, and fraction of the copy
bandwidth and of XLA's bf16 GEMV rate measured in the same run (device, date, jax version).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

import bench_kernels_common as C  # noqa: E402
from pallas_kernels.wo_matmul import decode_plan as DP  # noqa: E402

K, N = 8192, 28672
# (tile_n, gps): 16 KiB to 64 KiB of INT4 codes a pipeline step (tile_n x 128 gps / 2 bytes)
TILES = [(64, 4), (64, 8), (128, 2), (128, 4), (128, 8), (256, 2), (256, 4)]
STEPS = [2, 3, 4]
STREAM_K = [1, 2, 3]  # CTAs an SM the stream-K schedule launches


def sweep_configs() -> list[dict]:
  """The swept launch configs, before `plan_decode` resolves them."""
  return [dict(tile_n=t, gps=g, steps=s, stream_k=k)
          for (t, g), s, k in itertools.product(TILES, STEPS, STREAM_K)]


def resolved(cfg: dict, pw) -> tuple | None:
  """The plan's launch (tile_n, gps, steps, grid) for `cfg` at M = 1, or None where the
  config does not plan (it does not fit shared memory, or does not tile N / K)."""
  try:
    p = DP.plan_decode(1, K, pw, load_only=True, allow_unverified=True, **cfg)
  except (ValueError, NotImplementedError):
    return None
  return (p.tile_n, p.gps, p.steps, p.schedule.grid)


def distinct_configs(pw) -> list[tuple[dict, tuple]]:
  """Each swept config with its resolved launch, the first of any that resolve alike."""
  seen, out = set(), []
  for cfg in sweep_configs():
    r = resolved(cfg, pw)
    if r is not None and r not in seen:
      seen.add(r)
      out.append((cfg, r))
  return out


def code_words(pw) -> jax.Array:
  """The INT4 weight's codes (N, K) as (N, K / 8) uint32 words, eight codes a word."""
  n, k = pw.w.shape
  return lax.bitcast_convert_type(pw.w.reshape(n, k // 8, 8), jnp.uint32)


def xla_read(pw) -> list[jax.Array]:
  """The weight's bytes read once by XLA's own kernels: the codes and the scales as uint32
  words, XOR-reduced to one a row of codes and one a column of scales (every bit counts, so
  none can be skipped). What XLA's plain loads reach on these bytes, beside what the decode's
  TMA pipeline does (its bf16 GEMV reads a weight four times larger)."""
  xor = lambda a, axis: lax.reduce(a, jnp.uint32(0), lax.bitwise_xor, (axis,))
  return [xor(code_words(pw), 1), xor(lax.bitcast_convert_type(pw.scale, jnp.uint32), 0)]


# (rows a load block, CTAs): the plain-load read's launches; each CTA reads N / rows / CTAs
# blocks of (rows, K / 8) code words (32 KB at 8 rows), each thread 16 B a load
LD_CONFIGS = [(8, 128), (8, 256), (8, 512), (4, 256), (4, 512), (4, 1024)]


def ld_read(pw, rows: int = 8, ctas: int = 256, vec: int = 4, write: bool = False) -> jax.Array:
  """The weight's codes read by plain loads in a Mosaic GPU kernel: no TMA, no shared memory,
  each thread `vec` uint32 words (16 B) a load (`plgpu.load` from global memory in a strided
  layout), XOR-folded into registers; CTA c reads row blocks c, c + ctas, ... of `rows` rows.
  Returns the folds, (ctas, rows, K / 8) uint32, written only with `write` (a flag the kernel
  reads at run time, so the loads stay live either way): timed without, the kernel moves the
  codes' bytes and nothing else. The loop's trip count is read at run time too: with it known
  (7 blocks a CTA at 4 rows and 1024 CTAs) the compiler unrolled the loop and sank the loads
  under the flag's branch, and the launch read nothing (2.0 us, "57.8 TB/s", H100 session 25).
  What the GPU's loads reach on these bytes without TMA boxes: `xla_read` reads them at 4.00
  TB/s where the decode's TMA pipeline reaches 3.60 (H200, session 24)."""
  from jax.experimental import pallas as pl  # pylint: disable=g-import-not-at-top
  from pallas_kernels import _compat  # pylint: disable=g-import-not-at-top
  plgpu = _compat.plgpu_module()
  n, k = pw.w.shape
  cols = k // 8
  if n % (rows * ctas):
    raise ValueError(f"{ctas} CTAs of {rows}-row blocks do not tile N={n}")
  per = n // rows // ctas
  words = code_words(pw)
  layout = plgpu.Layout.WG_STRIDED((rows, cols), vec_size=vec)

  def kernel(w_gmem, flag_gmem, per_gmem, o_gmem):
    c = lax.axis_index("c")
    fold = lambda i, acc: acc ^ plgpu.load(w_gmem.at[pl.ds((c + i * ctas) * rows, rows)], (),
                                           layout=layout)
    acc = lax.fori_loop(0, per_gmem[...], fold,
                        plgpu.layout_cast(jnp.zeros((rows, cols), jnp.uint32), layout))

    @pl.when(flag_gmem[...] != 0)
    def _write():
      o_gmem.at[c][...] = acc

  return _compat.mgpu_kernel(kernel, out_type=jax.ShapeDtypeStruct((ctas, rows, cols),
                                                                   jnp.uint32),
                             grid=(ctas,), grid_names=("c",))(words, jnp.int32(write),
                                                             jnp.int32(per))


def ld_fold(pw, rows: int, ctas: int) -> jax.Array:
  """`ld_read`'s folds (with `write`) computed by XLA: what the kernel must return."""
  words = code_words(pw)
  return lax.reduce(words.reshape(-1, ctas, rows, words.shape[1]), jnp.uint32(0),
                    lax.bitwise_xor, (0,))


def weight(key):
  """A random INT4 g128 weight in the GPU's storage, as the decode benchmark builds it."""
  import bench_kernels as B  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import layout as L  # pylint: disable=g-import-not-at-top
  codes, scale, extra = B.make_int4(key, K, N, "int4", 128)
  return L.repack(codes, scale, fmt="int4", group=128, **B.repack_kw("int4", extra))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default="experiments/results")
  ap.add_argument("--limit-s", type=float, default=220.0,
                  help="stop starting configs after this many seconds (rows so far are kept)")
  ap.add_argument("--ld-only", action="store_true",
                  help="time the plain-load read (`ld_read`) and the baselines, not the sweep")
  ap.add_argument("--skip-done", default="",
                  help="a tma_stream.json of an earlier run, cut off: time only the configs it "
                       "has no row for")
  args = ap.parse_args()
  done = []
  if args.skip_done:
    with open(args.skip_done) as f:
      done = [r["config"] for r in json.load(f)["rows"]]
  from pallas_kernels.wo_matmul import mosaic_gpu as WG  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  res = C.header()
  res["copy_Bps"] = C.copy_bandwidth()
  pw0 = weight(jax.random.key(0))
  wbytes = pw0.nbytes  # codes, scales (as `bench_kernels.py` counts them)
  nsets = C.rotations(wbytes)
  sets = [(jax.random.normal(jax.random.key(100 + i), (1, K), jnp.bfloat16),
           pw0 if i == 0 else weight(jax.random.key(i))) for i in range(nsets)]
  dense = [(x, jax.random.normal(jax.random.key(200 + i), (K, N), jnp.bfloat16))
           for i, (x, _) in enumerate(sets)]
  gemv = C.time_op(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.bfloat16), dense)
  del dense
  res.update(xla_bf16_gemv_s=gemv["time_s"], xla_bf16_gemv_TBps=K * N * 2 / gemv["time_s"] / 1e12,
             weight_bytes=wbytes, rows=[])
  read = C.time_op(lambda x, p: xla_read(p), sets)
  res.update(xla_read_s=read["time_s"], xla_read_TBps=wbytes / read["time_s"] / 1e12)
  full = C.time_op(lambda x, p: WG.wo_matmul_mosaic_gpu(x, p), sets)  # today's default, whole
  res["default_full_s"] = full["time_s"]
  path = os.path.join(args.out, "tma_stream.json")
  os.makedirs(args.out, exist_ok=True)
  res["skipped_done"] = args.skip_done or None
  res["ld_rows"] = []
  code_bytes = pw0.w.size // 2
  for rows, ctas in LD_CONFIGS:  # the plain loads first: a handful of short launches
    try:  # a launch that fails (a first run on the GPU) is recorded, the rest still run
      # every word read and folded: the folds, written once, against XLA's
      write = jax.jit(lambda p, r=rows, c=ctas: ld_read(p, r, c, write=True))
      ok = bool(jnp.array_equal(write(pw0), ld_fold(pw0, rows, ctas)))
      t = C.time_op(lambda x, p, r=rows, c=ctas: ld_read(p, r, c), sets)
    except Exception as e:  # pylint: disable=broad-except
      res["ld_rows"].append(dict(rows=rows, ctas=ctas, error=f"{type(e).__name__}: {e}"[:300]))
      print(f"ld rows {rows} ctas {ctas} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
      continue
    res["ld_rows"].append(dict(rows=rows, ctas=ctas, time_s=t["time_s"], spread_s=t["spread_s"],
                               code_bytes=code_bytes, TBps=code_bytes / t["time_s"] / 1e12,
                               folds_match=ok))
    print(f"ld rows {rows} ctas {ctas}: {t['time_s'] * 1e6:.1f} us, "
          f"{res['ld_rows'][-1]['TBps']:.2f} TB/s of codes", flush=True)
  todo = [] if args.ld_only else [
      (c, r) for c, r in distinct_configs(sets[0][1]) if c not in done]
  for cfg, (tile_n, gps, steps, grid) in todo:
    if time.perf_counter() - t0 > args.limit_s:
      res["cut_off"] = True
      break
    t = C.time_op(lambda x, p, c=cfg: WG.wo_matmul_mosaic_gpu(x, p, load_only=True,
                                                               allow_unverified=True, **c), sets)
    res["rows"].append(dict(config=cfg, tile_n=tile_n, gps=gps, steps=steps, ctas=grid[0],
                            time_s=t["time_s"], spread_s=t["spread_s"],
                            TBps=wbytes / t["time_s"] / 1e12,
                            frac_copy=wbytes / t["time_s"] / res["copy_Bps"],
                            frac_xla_gemv=(wbytes / t["time_s"]) / (K * N * 2 / gemv["time_s"])))
    print(f"{cfg}: {t['time_s'] * 1e6:.1f} us, {res['rows'][-1]['TBps']:.2f} TB/s", flush=True)
    with open(path, "w") as f:
      json.dump(res, f, indent=1)
  with open(path, "w") as f:
    json.dump(res, f, indent=1)
  with open(os.path.join(args.out, "tma_stream.md"), "w") as f:
    f.write(to_markdown(res))


def to_markdown(res: dict) -> str:
  """The rows, fastest first, under the run's ceilings."""
  lines = [f"# The decode pipeline's streaming ceiling ({res['device']}, {res['date'][:10]}, "
           f"jax {res['jax_version']})", "",
           f"INT4 g128, M = 1, {K} x {N}: {res['weight_bytes'] / 1e6:.1f} MB of codes and "
           f"scales. Copy bandwidth {res['copy_Bps'] / 1e12:.2f} TB/s; XLA's bf16 GEMV "
           f"{res['xla_bf16_gemv_s'] * 1e6:.1f} us ({res['xla_bf16_gemv_TBps']:.2f} TB/s of its "
           f"bf16 weight); "
           + (f"XLA reading these bytes (`xla_read`) {res['xla_read_s'] * 1e6:.1f} us "
              f"({res['xla_read_TBps']:.2f} TB/s); " if "xla_read_s" in res else "")
           + f"today's default kernel, whole, {res['default_full_s'] * 1e6:.1f} us."
           + (" Cut off by --limit-s before every config ran." if res.get("cut_off") else "")
           + (f" The configs {res['skipped_done']} has rows for were not run."
              if res.get("skipped_done") else ""),
           "", "| tile_n | gps | steps | CTAs | empty pipeline us | TB/s | of copy BW "
           "| of XLA GEMV's TB/s |", "|---|---|---|---|---|---|---|---|"]
  for r in sorted(res["rows"], key=lambda r: r["time_s"]):
    lines.append(f"| {r['tile_n']} | {r['gps']} | {r['steps']} | {r['ctas']} | "
                 f"{r['time_s'] * 1e6:.1f} | {r['TBps']:.2f} | {r['frac_copy']:.0%} | "
                 f"{r['frac_xla_gemv']:.0%} |")
  if res.get("ld_rows"):
    lines += ["", "The codes alone read by plain loads in a Mosaic GPU kernel (`ld_read`: 16 B a "
              "thread a load, no TMA, no shared memory; folds checked against XLA's once):", "",
              "| rows a block | CTAs | us | TB/s of codes | folds match |", "|---|---|---|---|---|"]
    # a read faster than the copy's 2x (read and write) moved fewer bytes than it claims: said
    lines += [f"| {r['rows']} | {r['ctas']} | {r['time_s'] * 1e6:.1f} | {r['TBps']:.2f}"
              f"{' (faster than HBM: not read)' if r['TBps'] > 2e-12 * res['copy_Bps'] else ''}"
              f" | {r['folds_match']} |"
              for r in sorted(res["ld_rows"], key=lambda r: r.get("time_s", float("inf")))
              if "time_s" in r]
    lines += [f"| {r['rows']} | {r['ctas']} | - | - | {r['error'][:80]} |"
              for r in res["ld_rows"] if "error" in r]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
