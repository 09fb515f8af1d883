"""GPU benchmark of pallas_kernels: weight-only matmul (and fused quantization, see --what).

Run on the GPU machine:  python3 experiments/bench_kernels.py --what wo --out $OUT
Writes kernels_<what>.json and a markdown table; prints the table last.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_kernels_common as C  # noqa: E402
from bench_kernels_report import worst_err  # noqa: E402
from mxjax.formats.exact import div_rn  # noqa: E402
from pallas_kernels.wo_matmul import code_order as CO  # noqa: E402
from pallas_kernels.wo_matmul import decode as D  # noqa: E402
from pallas_kernels.wo_matmul import decode_plan as DP  # noqa: E402
from pallas_kernels.wo_matmul import layout as L  # noqa: E402
from pallas_kernels.wo_matmul import mosaic_gpu as WG  # noqa: E402
from pallas_kernels.wo_matmul import mosaic_gpu_gemm as WGG  # noqa: E402
from pallas_kernels.wo_matmul import packed_weight as PK  # noqa: E402
from pallas_kernels.wo_matmul import prefill as PF  # noqa: E402
from pallas_kernels.wo_matmul import reference as WR  # noqa: E402
from pallas_kernels.wo_matmul import scales as SS  # noqa: E402

SHAPES = [(8192, 28672), (4096, 4096), (4096, 14336)]
DECODE_M = [1, 2, 4, 8, 16, 32, 64]


def parse_format(spec: str) -> tuple[str, int | None]:
  """"int4" / "uint4_g64" / "int8" / "fp8_e4m3" -> (WeightFormat value, group or None for
  per-channel); a "-bf16" suffix (scales stored in bf16, `bf16_scales`) is ignored here."""
  fmt, _, g = spec.removesuffix("-bf16").partition("_g")
  if fmt in ("int8", "fp8_e4m3"):
    return fmt, None
  default = {"mxfp4": 32, "nvfp4": 16}.get(fmt, 128)
  return fmt, int(g) if g else default


def bf16_scales(spec: str) -> bool:
  """Whether a format spec ("int4_g32-bf16") asks for INT4 / UINT4 / INT8 / FP8 scales stored in
  bf16, as a scheme with `ScaleFormat.BF16` stores them (GPTQ / AWQ checkpoints keep 16-bit
  scales)."""
  return spec.endswith("-bf16")


def make_int4(key, k, n, fmt="int4", group=128, scale_bf16=False):
  """Random mxjax-layout weight: (codes, scale, extra); INT8 / FP8 are per-channel; extra is the
  zero point (UINT4) or the tensor scale (NVFP4); `scale_bf16`: INT4 / UINT4 / INT8 / FP8
  scales as bf16."""
  codes, scale, extra = _make_int4(key, k, n, fmt, group)
  if scale_bf16:
    if fmt not in ("int4", "uint4", "int8", "fp8_e4m3"):
      raise ValueError(f"bf16 scales are for INT4 / UINT4 / INT8 / FP8, not {fmt}")
    scale = scale.astype(jnp.bfloat16)
  return codes, scale, extra


def _make_int4(key, k, n, fmt, group):
  k1, k2, k3 = jax.random.split(key, 3)
  if fmt in ("mxfp4", "nvfp4"):
    codes = jax.random.randint(k1, (k // 2, n), 0, 256, jnp.int32).astype(jnp.uint8)
    if fmt == "mxfp4":
      return codes, jax.random.randint(k2, (k // group, n), 118, 124).astype(jnp.uint8), None
    sb = jax.random.uniform(k2, (k // group, n), jnp.float32, 1, 448).astype(jnp.float8_e4m3fn)
    return codes, sb, jnp.float32(1 / 2688)
  if fmt == "int8":
    codes = jax.random.randint(k1, (k, n), -127, 128, jnp.int32).astype(jnp.int8)
    return codes, jax.random.uniform(k2, (1, n), jnp.float32, 0.5, 1.5) / 64, None
  if fmt == "fp8_e4m3":
    codes = (jax.random.normal(k1, (k, n), jnp.float32) * 100).clip(-448, 448)
    return codes.astype(jnp.float8_e4m3fn), jax.random.uniform(k2, (1, n), jnp.float32, 0.5,
                                                                 1.5) / 64, None
  codes = jax.random.randint(k1, (k // 2, n), 0, 256, jnp.int32).astype(jnp.uint8)
  scale = jax.random.uniform(k2, (k // group, n), jnp.float32, 0.5, 1.5) / 64
  if fmt == "int4":  # as mxjax scales a bf16 weight: RN(a / 7) of a bf16 amax a
    scale = div_rn((scale * SS.INT4_MAX).astype(jnp.bfloat16).astype(jnp.float32),
                   SS.INT4_MAX)
  zp = None
  if fmt == "uint4":
    zp = jax.random.randint(k3, (k // group, n), 0, 16, jnp.int32).astype(jnp.uint8)
  return codes, scale, zp


def repack_kw(fmt, extra) -> dict:
  return {"uint4": {"zero_point": extra}, "nvfp4": {"tensor_scale": extra}}.get(fmt, {})


def k_order_weight(key, k, n, spec: str):
  """(codes, scale, zero points or tensor scale, PackedWeight) of a random (K, N) weight in the
  format `spec` ("int4", "uint4_g64", "int8-bf16", ...), packed in K order with its scales as
  stored: the baselines' storage, from which each config's own is made (`_stored`)."""
  fmt, grp = parse_format(spec)
  grp = grp or k
  codes, scale, extra = make_int4(key, k, n, fmt, grp, bf16_scales(spec))
  pw = L.repack(codes, scale, fmt=fmt, group=grp, wgmma_order=False, scale_bf16=False,
                **repack_kw(fmt, extra))
  return codes, scale, extra, pw


def xla_int4_dequant_dot(x, codes, scale, zp, group=128, fmt="int4"):
  """XLA's own path from mxjax's storage ((K/2, N) packed uint8, f32 scales): dequant, bf16 dot."""
  if fmt in ("mxfp4", "nvfp4"):
    v = jnp.asarray(D.E2M1_TABLE)[PK.unpack_k(codes).astype(jnp.int32)]
    if fmt == "mxfp4":
      s = jnp.ldexp(jnp.float32(1), scale.astype(jnp.int32) - 127)
    else:
      s = zp * scale.astype(jnp.float32)
    w = v * jnp.repeat(s, group, axis=0)
    return jnp.dot(x, w.astype(jnp.bfloat16), preferred_element_type=jnp.float32).astype(x.dtype)
  if fmt == "nf4":  # the table lookup (a gather), as mxjax.dequantize does
    w = jnp.asarray(D.NF4_TABLE)[PK.unpack_k(codes).astype(jnp.int32)] * jnp.repeat(
        scale, group, axis=0)
    return jnp.dot(x, w.astype(jnp.bfloat16), preferred_element_type=jnp.float32).astype(x.dtype)
  if codes.dtype in (jnp.int8, jnp.float8_e4m3fn):  # per-channel INT8 / FP8
    w = codes.astype(jnp.float32) * scale
    return jnp.dot(x, w.astype(jnp.bfloat16), preferred_element_type=jnp.float32).astype(x.dtype)
  q = PK.unpack_k(codes).astype(jnp.int32)
  if zp is None:
    q = jnp.where(q >= 8, q - 16, q).astype(jnp.float32)
    w = q * jnp.repeat(scale, group, axis=0)
  else:
    w = (q.astype(jnp.float32) - jnp.repeat(zp, group, axis=0)) * jnp.repeat(scale, group, 0)
  return jnp.dot(x, w.astype(jnp.bfloat16), preferred_element_type=jnp.float32).astype(x.dtype)


WO_SWEEP = [dict(tile_n=t, gps=g, steps=st, splits=sp) for t, g, st, sp in (
    (128, 2, 4, None), (128, 2, 3, None), (128, 4, 3, None), (64, 2, 4, None),
    (64, 4, 4, None), (256, 1, 4, None), (128, 2, 4, 2), (128, 2, 4, 4))]


PREFILL_M = [128, 256, 512, 1024, 4096]
GEMM_SWEEP = [dict(tile_m=tm, tile_k=tk, **st) for tm, tk, st in (
    (256, 128, {}), (256, 64, {}), (128, 128, {}), (128, 256, {}), (192, 128, {}),
    (256, 64, dict(steps=3)), (256, 256, {}), (64, 128, {}))]


def fastest_config(fn, configs, sets, log=None, prepare=None, check=None, describe=None,
                   on_config=None):
  """(config, timing) of the fastest config of `fn(*inputs, cfg)` over the input sets, or None
  if every config failed (each failure is printed and skipped: the table says what ran).
  `log`, a list, receives every config's median time (or its error); `prepare(cfg, inputs)`,
  if given, turns each input set into what that config runs on, before (outside) the timing.
  `check(cfg)`, if given, is the config's relative error on the correctness inputs: a config
  at 1e-2 or above (or NaN) is logged as wrong and never picked, however fast.
  `describe(cfg, inputs)`, if given, adds what the config resolves to (a dict) to its log entry.
  `on_config()`, if given, runs after each config (`in_progress`: the results file then holds
  the configs finished so far, so a run cut off mid-row keeps them)."""
  best = None
  for cfg in configs:
    t0 = time.perf_counter()
    try:
      err = check(cfg) if check else None
      if err is not None and not err < 1e-2:
        raise ArithmeticError(f"wrong result: rel err {err:.3g}")
      t1 = time.perf_counter()
      cfg_sets = [prepare(cfg, s) for s in sets] if prepare else sets
      jax.block_until_ready(cfg_sets)
      t_prep = time.perf_counter() - t1
      t = C.time_op(lambda *a, cfg=cfg: fn(*a, cfg), cfg_sets)
    except Exception as e:  # record and go on
      print("config failed", cfg, type(e).__name__, str(e)[:120])
      if log is not None:
        log.append(dict(config=cfg, error=f"{type(e).__name__}: {e}"[:300]))
      if on_config:
        on_config()
      continue
    if log is not None:
      # Wall-clock seconds of the check (its compile included) and of the timing (compile,
      # warm-up, CUPTI runs): where a device call's minutes go, to size the next one's limits.
      # time_wall_s splits into the re-storing (`prepare_wall_s`) and time_op's first call
      # (compile) and measurements.
      entry = dict(config=cfg, time_s=t["time_s"], rel_err=err,
                   check_wall_s=round(t1 - t0, 2), time_wall_s=round(time.perf_counter() - t1, 2),
                   prepare_wall_s=round(t_prep, 2),
                   **{k: t[k] for k in ("first_call_wall_s", "measure_wall_s") if k in t})
      # each config's own kernels by name (us, one call), not only the best's: what a config
      # moved between the Mosaic kernel and XLA's around it
      if "kernel_us" in t:
        entry["kernel_us"] = t["kernel_us"]
      # A re-storing (zero points, bf16 scales, ...) changes the bytes the kernel reads.
      pws = [a for a in cfg_sets[0] if isinstance(a, PK.PackedWeight)]
      if pws:
        entry["weight_bytes"] = pws[0].nbytes
      # Shared memory as Mosaic sizes it, and so the CTAs an SM can hold: a stream-K config
      # asking for two an SM that does not fit them runs in more waves (session 16).
      try:  # a diagnostic: its failure is recorded, never fatal to the run
        smem = C.mosaic_smem_bytes(lambda *a, cfg=cfg: fn(*a, cfg), *cfg_sets[0])
        if smem is not None:
          entry.update(smem_bytes=smem, ctas_per_sm=C.ctas_per_sm(smem))
        if describe:
          entry.update(describe(cfg, cfg_sets[0]))
      except Exception as e:  # pylint: disable=broad-except
        entry["describe_error"] = f"{type(e).__name__}: {e}"[:200]
      log.append(entry)
    # Each config as it finishes: a run cut off before its row is written still shows these.
    print(f"config {cfg}: {t['time_s'] * 1e6:.1f} us, rel err {err}, "
          f"{time.perf_counter() - t0:.0f} s wall", flush=True)
    if on_config:
      on_config()
    if best is None or t["time_s"] < best[1]["time_s"]:
      best = (cfg, t)
  return best


def _stored(cfg, inputs):
  """A config's weight storage: {"w_tile": [tile_n, tile_k]} stores it block-contiguous
  (`code_order.tile_weight`); {"wgmma_order": false} in K order (`code_order.logical_order`),
  true in the kernels' register order (`code_order.order_for_wgmma`); {"scale_bf16": true} FP4
  scales as bf16 multipliers (`scales.fp4_scales_bf16`), NF4 as slot codes (`scales.nf4_slots`),
  false as stored (the inputs' storage); {"mx_fold": true} MXFP4's multipliers folded with the E2M1
  decode's 2^126 (`fp4_scales_bf16(mx_fold=True)`; false: not, whatever the default);
  {"halves": true} E2M1 codes in register order with each pair split over a word's halves
  (`order_for_wgmma(halves=True)`, `code_order.HALVES_ORDER`); {"byte_multipliers": true} FP4
  scales as their bytes, each its multiplier by one IMAD in the kernels
  (`scales.fp4_byte_multipliers`; false: bf16 multipliers, as {"scale_bf16": true}; a
  "scale_bf16" or "mx_fold" key alone turns the default bytes off too); {"amax_scales": true}
  INT4 scales as the bf16 amaxes they are RN(a / 7) of (`scales.int4_amax_scales`);
  {"zero_points": true} UINT4's zero points as bytes
  (`scales.uint4_zero_points`); {"w_threads": true} for the decode's plain loads
  (`code_order.thread_major`); absent: as `repack` stores it on a GPU.
  One-time repackings, done here outside the timing."""
  x, p = inputs
  explicit_scales = "scale_bf16" in cfg or "mx_fold" in cfg
  if cfg.get("byte_multipliers", not explicit_scales and L.default_byte_multipliers(p)):
    p = SS.fp4_byte_multipliers(p)
  elif "mx_fold" in cfg:
    p = SS.fp4_scales_bf16(p, mx_fold=cfg["mx_fold"])
  elif cfg.get("scale_bf16", L.default_scale_bf16(p.fmt)):
    p = L.scales_bf16(p)
  else:
    p = SS.fp4_scales_stored(p)
  if cfg.get("wgmma_order", L.default_wgmma_order(p)):
    p = CO.order_for_wgmma(p, halves=cfg.get("halves", L.default_halves(p.fmt)))
  else:
    p = CO.logical_order(p)
  if "w_tile" in cfg:
    p = CO.tile_weight(p, *cfg["w_tile"])
  if cfg.get("zero_points"):
    p = SS.uint4_zero_points(p)
  if cfg.get("amax_scales"):
    p = SS.int4_amax_scales(p)
  if cfg.get("w_threads"):
    p = CO.thread_major(p)
  return x, p


def resolved_plan(cfg, inputs) -> dict:
  """What a decode config resolves to with the stored weight it runs on (`plan_decode` lowers
  `steps` to what fits, fills what the config leaves to the defaults): recorded beside it."""
  x, p = inputs
  plan = DP.plan_decode(x.shape[0], x.shape[1], p, **_knobs(cfg), allow_unverified=True)
  return dict(plan=dict(tile_n=plan.tile_n, gps=plan.gps, steps=plan.steps,
                        compute_wgs=plan.compute_wgs, step_wait=plan.step_wait,
                        fused_sum=plan.fused_sum, fp8_x=plan.fp8_x,
                        grid=list(plan.schedule.grid)))


# A decode config's keys that choose the weight's storage (`_stored`), not a kernel option
STORAGE_KEYS = ("w_tile", "wgmma_order", "halves", "scale_bf16", "mx_fold", "byte_multipliers",
                "zero_points", "amax_scales", "w_threads")


def _knobs(cfg):
  return {k: v for k, v in cfg.items() if k not in STORAGE_KEYS}


def onehot_check(fn, pw, m: int) -> dict:
  """Runs `fn(x, pw)` (f32 out) with one-hot rows of x: row i = e_k picks W's row k, so the
  output is the kernel's dequantized weight, which is compared with `layout.dequantize`'s
  float32 weight element by element (+-0 equal). K rows covered: the first 128 (every place in
  a register tile; in calls of M rows), M random ones and the last M. Returns the rows checked,
  the mismatching elements and the worst |difference| / max |W|. NF4 slot codes: the kernel's
  weight is that weight rounded to bf16 once (bitsandbytes' GEMV weight), compared as such."""
  want = np.asarray(L.dequantize(pw))
  if pw.fmt is PK.WeightFormat.NF4 and pw.scale_bf16:
    want = want.astype(jnp.bfloat16).astype(np.float32)
  k = want.shape[0]
  rng = np.random.default_rng(0)
  calls = [np.arange(i, i + m) % k for i in range(0, 128, m)]
  calls += [rng.choice(k, m, replace=False), np.arange(k - m, k)]
  f = jax.jit(fn)
  scale = np.abs(want).max()
  bad, worst = 0, 0.0
  C.poison()
  for ks in calls:
    x = jnp.zeros((m, k), jnp.bfloat16).at[jnp.arange(m), ks].set(1)
    y, r = np.asarray(f(x, pw), np.float32), want[ks]
    bad += int(np.sum((y != r) | np.isnan(y)))
    d = np.abs(y - r)
    worst = max(worst, float(np.inf if np.isnan(d).any() else d.max() / scale))
  return dict(onehot_rows=int(sum(len(c) for c in calls)), onehot_mismatches=bad,
              onehot_max_err=worst)


def _dump(args, res):
  """Writes what is measured so far (a timed-out run still leaves its rows, and under
  "in_progress" the row it was in: its baselines and the configs it had timed)."""
  with open(os.path.join(args.out, f"kernels_{args.what}.json"), "w") as f:
    json.dump(res, f, indent=1)


def bench_wo(args, res):
  fmts = args.formats.split(",")
  ms = [int(m) for m in args.m.split(",")] if args.m else DECODE_M
  shapes = SHAPES if not args.shapes else [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
  tuned = {}  # (K, N, format, M bucket) -> best config
  rows = res.setdefault("wo_matmul", [])
  for (k, n) in shapes:
    for spec in fmts:
      fmt, grp = parse_format(spec)
      grp = grp or k
      key = jax.random.key(hash((k, n, spec)) % 2**31)
      # K order here (the baselines' storage); each config's own is `_stored`'s.
      *_, pw = k_order_weight(key, k, n, spec)
      # The smaller of a weight's two storages (FP4's stored scale bytes, NF4's bf16 absmax),
      # so that TB/s never counts bytes a layout choice added.
      wbytes = SS.nf4_slots(pw).nbytes if fmt == "nf4" else pw.nbytes
      r_q = C.rotations(wbytes)
      q_sets = [k_order_weight(jax.random.fold_in(key, i), k, n, spec) for i in range(r_q)]
      r_b = C.rotations(k * n * 2)
      wb_sets = [jax.random.normal(jax.random.fold_in(key, 100 + i), (k, n), jnp.bfloat16)
                 for i in range(r_b)]
      shape_ms = ms + (PREFILL_M if (k, n) == (8192, 28672) and args.prefill else [])
      for m in shape_ms:
        x = jax.random.normal(jax.random.fold_in(key, 1000 + m), (m, k), jnp.bfloat16)
        row = dict(kernel="wo_matmul", fmt=spec, group=grp, M=m, K=k, N=n, weight_bytes=wbytes)
        t_row = time.perf_counter()
        unv = dict(allow_unverified=True)  # every path is checked right here
        kfun = WG.wo_matmul_mosaic_gpu
        if m > 64:  # prefill: the fused GEMM kernel, against the dequantize-then-GEMM path too
          kfun = WGG.wo_gemm_mosaic_gpu
          row["implementation"] = "mosaic_gpu_gemm"
        # Baselines in the same run.
        tb = C.time_op(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32
                                            ).astype(jnp.bfloat16),
                       [(x, w) for w in wb_sets])
        tq = C.time_op(lambda x, c, s, z: xla_int4_dequant_dot(x, c, s, z, grp, fmt),
                       [(x, c, s, z) for c, s, z, _ in q_sets])
        flops = 2 * m * k * n
        if m > 64:
          td = C.time_op(PF.wo_matmul_dequant_gemm, [(x, p) for *_, p in q_sets])
          row.update(dequant_gemm_s=td["time_s"], dequant_gemm_TFLOPs=flops / td["time_s"] / 1e12)
        # wall-clock s of the baselines and of the first check (where a row's minutes go)
        row["baselines_wall_s"] = round(time.perf_counter() - t_row, 2)
        row.update(xla_bf16_s=tb["time_s"], xla_bf16_TBps=k * n * 2 / tb["time_s"] / 1e12,
                   xla_bf16_TFLOPs=flops / tb["time_s"] / 1e12,
                   xla_dequant_dot_s=tq["time_s"], xla_dequant_dot_kernels=tq["n_kernels"],
                   xla_dequant_dot_TFLOPs=flops / tq["time_s"] / 1e12)
        # Correctness: fresh inputs, poisoned memory.
        try:
          xc = jax.random.normal(jax.random.fold_in(key, 5000 + m), (m, k), jnp.bfloat16)
          ref = WR.wo_matmul_reference(xc, pw, out_dtype=jnp.float32)
          C.poison()
          out = jax.jit(lambda x, p: kfun(x, p, **unv))(xc, pw)
          row["rel_err"] = C.rel_err(out, ref)
          row["correct"] = bool(row["rel_err"] < 1e-2)
          row["check_wall_s"] = round(time.perf_counter() - t_row - row["baselines_wall_s"], 2)
        except Exception as e:  # record and go on: the table says what failed
          row["error"] = f"{type(e).__name__}: {e}"[:300]
          print("wo", m, k, n, fmt, row["error"][:200])
          rows.append(row)
          continue
        bucket = (k, n, spec, "small" if m <= 32 else "64" if m <= 64 else f"M{m}")
        if args.configs:  # explicit configs, e.g. '[{}, {"fp4_prescale": true}]': at every M
          configs = json.loads(args.configs)
        elif bucket in tuned:  # a sweep's winner, reused at the other M of its bucket
          configs = [tuned[bucket]]
        elif args.sweep and m <= 64:
          configs = [c for c in WO_SWEEP if not (m > 32 and c["tile_n"] == 256)]
        elif args.sweep:
          configs = GEMM_SWEEP
        else:
          configs = [dict()]
        timed = []
        res["in_progress"] = dict(row, configs_timed=timed)  # filled as each config ends
        def check(cfg):
          C.poison()
          return C.rel_err(jax.jit(lambda x, p: kfun(x, p, **_knobs(cfg), **unv))(
              *_stored(cfg, (xc, pw))), ref)
        best = fastest_config(lambda x, p, cfg: kfun(x, p, **_knobs(cfg), **unv), configs,
                              [(x, p) for *_, p in q_sets], log=timed, prepare=_stored,
                              check=check if len(configs) > 1 else None,
                              describe=resolved_plan if m <= 64 else None,
                              on_config=lambda: _dump(args, res))
        if len(configs) > 1:
          row["configs_timed"] = timed
        if best is None:
          row["error"] = "every config failed"
          rows.append(row)
          res.pop("in_progress")
          continue
        cfg, tk = best
        tuned[bucket] = cfg
        C.poison()
        row["rel_err_best_config"] = C.rel_err(
            jax.jit(lambda x, p: kfun(x, p, **_knobs(cfg), **unv))(*_stored(cfg, (xc, pw))), ref)
        row["correct"] = bool(row["correct"] and row["rel_err_best_config"] < 1e-2)
        if args.onehot:  # the timed config's dequantized weights, element by element
          row.update(onehot_check(
              lambda x, p: kfun(x, p, out_dtype=jnp.float32, **_knobs(cfg), **unv),
              _stored(cfg, (xc, pw))[1], min(m, k)))
        # The bytes the timed storage reads, never more than the baseline storage's: a
        # re-storing that adds bytes (FP4's bf16 multipliers) does not count them, one that
        # removes some (UINT4's zero-point bytes) counts the fewer.
        tbytes = min(wbytes, _stored(cfg, (xc, pw))[1].nbytes)
        row["weight_bytes"] = tbytes
        row.update(kernel_s=tk["time_s"], kernel_spread_s=tk["spread_s"], config=cfg,
                   kernel_launches=tk["n_kernels"], kernel_us=tk["kernel_us"],
                   rotations=tk["rotations"], swept=len(configs))
        if args.load_split and m <= 64:  # the same pipeline with an empty body
          load_only = lambda c: C.time_op(
              lambda x, p: kfun(x, p, **_knobs(c), **unv, load_only=True),
              [_stored(c, (x, p)) for *_, p in q_sets])["time_s"]
          tl = load_only(cfg)
          row.update(load_only_s=tl, load_only_TBps=tbytes / tl / 1e12)
          for t in timed if len(configs) > 1 else []:  # each config's pipeline alone
            if "time_s" in t:
              t["load_only_s"] = load_only(t["config"])
        row["kernel_TBps"] = tbytes / tk["time_s"] / 1e12
        row["kernel_TFLOPs"] = flops / tk["time_s"] / 1e12
        row["frac_copy_bw"] = tbytes / tk["time_s"] / res["copy_Bps"]
        row["x_vs_xla_bf16"] = tb["time_s"] / tk["time_s"]
        row["x_vs_xla_dequant_dot"] = tq["time_s"] / tk["time_s"]
        if m > 64:
          row["x_vs_dequant_gemm"] = row["dequant_gemm_s"] / tk["time_s"]
        row["row_wall_s"] = round(time.perf_counter() - t_row, 1)
        rows.append(row)
        res.pop("in_progress")
        _dump(args, res)
        print(json.dumps(row), flush=True)
  return rows


QUANT_SCHEMES = ["mxfp8_e4m3", "fp8_e4m3_block128", "mxfp4", "nvfp4", "int4_g128"]


def _bits(a):
  a = np.asarray(a)
  return a.view(np.uint8) if a.dtype.itemsize == 1 else a.view(np.uint32)


def _mismatch(q, r) -> int:
  bad = 0
  for a, b in ((q.codes, r.codes), (q.scale, r.scale)):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
      return -1
    bad += int((_bits(a) != _bits(b)).sum())
  if q.tensor_scale is not None:
    bad += int((_bits(np.asarray(q.tensor_scale, np.float32))
                != _bits(np.asarray(r.tensor_scale, np.float32))).sum())
  return bad


def bench_quant(args, res):
  import mxjax  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import mosaic_gpu as QG  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import mosaic_gpu_columns as QC  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize import schemes as QS  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize.testdata import rounding_midpoints  # pylint: disable=g-import-not-at-top
  from pallas_kernels.quantize.testdata import special_values  # pylint: disable=g-import-not-at-top
  if args.f32 and args.transpose:
    raise SystemExit("--f32 times the row-wise kernel only (the column-wise one takes bf16)")
  shapes = [(8192, 8192), (4096, 14336)] if not args.qshapes else [
      tuple(map(int, s.split("x"))) for s in args.qshapes.split(",")]
  if any(m % 512 for m, _ in shapes):  # the rounding-tie tensor is tiled in 512-row blocks
    raise SystemExit(f"--qshapes: M must be a multiple of 512, got {args.qshapes}")
  rows = res.setdefault("fused_quantize", [])
  qtuned = {}
  for (m, k) in shapes:
    for sch in args.schemes.split(","):
      key = jax.random.key(hash((m, k, sch)) % 2**31)
      row = dict(kernel="fused_quantize", scheme=sch, M=m, K=k,
                 orientation="column-wise" if args.transpose else "row-wise")
      t_row = time.perf_counter()
      dt = jnp.float32 if args.f32 else jnp.bfloat16
      if args.transpose:  # codes of x.T, from the column-wise kernel
        mx = jax.jit(lambda x, sch=sch: mxjax.quantize(x.T, sch))
        row["scheme"] = sch + " (column-wise)"
      else:
        mx = jax.jit(lambda x, sch=sch: mxjax.quantize(x, sch))
      qfun = QC.quantize_columns_mosaic_gpu if args.transpose else QG.quantize_mosaic_gpu
      if args.f32:  # the f32-input kernel, checked bit for bit right here before it is timed
        qfun = functools.partial(QG.quantize_mosaic_gpu, allow_unverified=True)
        row["scheme"] = sch + " (f32 in)"
      check_cfgs = json.loads(args.configs) if args.configs else [dict()]
      try:
        # Correctness: random data with a wide per-row range, a special-values tensor, rounding
        # ties, and non-finite values (NaN of either sign in some blocks, +-Inf in others).
        xc = (jax.random.normal(jax.random.fold_in(key, 1), (m, k), jnp.float32)
              * jnp.exp(3 * jax.random.normal(jax.random.fold_in(key, 2), (m, 1)))
              ).astype(dt)
        xs = special_values(3, m, k).astype(dt)  # the tests' special values (testdata.py)
        xt = jnp.tile(rounding_midpoints(9, 512, k), (m // 512, 1)).astype(dt)  # ties of x / s
        xn = special_values(4, m, k, nonfinite=True).astype(dt)
        refs = [(xin, mx(xin)) for xin in (xc, xs, xt, xn)]
        by_cfg = []
        for cfg in check_cfgs:  # every config given, bit for bit on all four tensors
          kern = jax.jit(lambda x, sch=sch, cfg=cfg: qfun(x, sch, **cfg))
          mism = []
          for xin, ref in refs:
            C.poison()
            mism.append(_mismatch(kern(xin), ref))
          by_cfg.append(dict(config=cfg, mismatches=mism))
        (row["mismatch_random"], row["mismatch_special"], row["mismatch_ties"],
         row["mismatch_nonfinite"]) = by_cfg[0]["mismatches"]
        if args.configs:
          row["mismatch_by_config"] = by_cfg
        row["bit_exact"] = all(c["mismatches"] == [0, 0, 0, 0] for c in by_cfg)
      except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"[:400]
        traceback.print_exc()
        rows.append(row)
        continue
      q = jax.jit(lambda x, sch=sch: qfun(x, sch))(xc)
      out_bytes = sum(int(a.size) * a.dtype.itemsize for a in (q.codes, q.scale))
      in_bytes = m * k * jnp.dtype(dt).itemsize
      r = C.rotations(in_bytes + out_bytes)
      sets = [((jax.random.normal(jax.random.fold_in(key, 10 + i), (m, k), jnp.float32))
               .astype(dt),) for i in range(r)]
      cfgs = [dict()]
      if args.configs:  # e.g. '[{}, {"state_once": true}]', each checked above
        cfgs = check_cfgs
      elif args.cols:  # columns encoded at once (see quantize.mosaic_gpu.ENCODE_COLS)
        cfgs = [dict(encode_cols=None if c == "all" else int(c)) for c in args.cols.split(",")]
      elif args.sweep and args.transpose and sch not in qtuned:
        blk = QS.get_scheme(sch).block  # x rows a step: B * nb, 64..256
        cfgs = [dict(tile_k=tk, nb=nb, steps=st) for tk in (64, 128, 256) for nb in (1, 2, 4, 8, 16)
                for st in (2, 3) if 64 <= blk * nb <= 256 and tk * nb * blk * 2 * st <= 160 * 1024]
      elif args.sweep and sch not in qtuned:
        cfgs = [dict(steps=st, ctas_per_sm=c) for st in (2, 3, 4) for c in (1, 2, 3, 4)]
      elif sch in qtuned:
        cfgs = [qtuned[sch]]
      else:
        cfgs = [dict()]
      timed = []
      res["in_progress"] = dict(row, configs_timed=timed)  # filled as each config ends
      best = fastest_config(lambda x, cfg, sch=sch: qfun(x, sch, **cfg), cfgs, sets, log=timed,
                            on_config=lambda: _dump(args, res))
      if len(cfgs) > 1:
        row["configs_timed"] = timed
      if best is None:
        row["error"] = "every config failed"
        rows.append(row)
        res.pop("in_progress")
        continue
      qtuned[sch], tk = best
      row["config"] = best[0]
      C.poison()
      row["mismatch_random_best_config"] = _mismatch(
          jax.jit(lambda x: qfun(x, sch, **best[0]))(xc), mx(xc))
      tx = C.time_op(lambda x, sch=sch: mx(x), sets)
      eff = in_bytes + out_bytes
      row.update(bytes=eff, kernel_s=tk["time_s"], kernel_launches=tk["n_kernels"],
                 kernel_names=tk["kernels"], kernel_us=tk["kernel_us"], xla_s=tx["time_s"],
                 xla_launches=tx["n_kernels"],
                 kernel_TBps=eff / tk["time_s"] / 1e12, xla_TBps=eff / tx["time_s"] / 1e12,
                 frac_copy_bw=eff / tk["time_s"] / res["copy_Bps"],
                 x_vs_xla=tx["time_s"] / tk["time_s"], rotations=r)
      if QS.get_scheme(sch).two_level:  # NVFP4 given its tensor amax: the kernel, no pass over x
        amax = lambda x: jnp.max(jnp.abs(x.astype(jnp.float32)))
        given = lambda x, a, sch=sch: qfun(x, sch, tensor_amax=a, **best[0])
        C.poison()
        row["mismatch_given_amax"] = _mismatch(jax.jit(given)(xc, amax(xc)), mx(xc))
        tg = C.time_op(given, [(x, amax(x)) for (x,) in sets])
        row.update(given_amax_s=tg["time_s"], given_amax_TBps=eff / tg["time_s"] / 1e12,
                   given_amax_kernel_us=tg["kernel_us"])
      row["row_wall_s"] = round(time.perf_counter() - t_row, 1)
      rows.append(row)
      res.pop("in_progress")
      _dump(args, res)
      print(json.dumps(row), flush=True)
  return rows


def table_quant(rows):
  out = ["| scheme | M | K | kernel us | TB/s (read+write) | % copy BW | XLA mxjax.quantize TB/s "
         "| vs XLA | launches (kernel / XLA) | bit-exact (random / special / ties / NaN-Inf) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "kernel_s" not in r:
      out.append(f"| {r['scheme']} | {r['M']} | {r['K']} | FAILED: {r.get('error', '')[:90]} "
                 f"| | | | | | {r.get('mismatch_random', '')} / {r.get('mismatch_special', '')} / {r.get('mismatch_ties', '-')} |")
      continue
    out.append(f"| {r['scheme']} | {r['M']} | {r['K']} | {r['kernel_s']*1e6:.1f} | "
               f"{r['kernel_TBps']:.2f} | {100*r['frac_copy_bw']:.0f}% | {r['xla_TBps']:.2f} | "
               f"{r['x_vs_xla']:.2f}x | {r['kernel_launches']:.0f} / {r['xla_launches']:.0f} | "
               f"{r['mismatch_random']} / {r['mismatch_special']} / "
               f"{r.get('mismatch_ties', '-')} / {r.get('mismatch_nonfinite', '-')} mismatches |")
  return "\n".join(out)


def table_wo(rows):
  out = ["| fmt | M | K | N | kernel us | TB/s (w+s) | % copy BW | vs XLA bf16 | vs XLA dequant+dot "
         "| rel err | config |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "kernel_s" not in r:
      base = (f"XLA bf16 {r['xla_bf16_TFLOPs']:.0f} TFLOP/s, XLA dequant+dot "
              f"{r['xla_dequant_dot_TFLOPs']:.0f} TFLOP/s" if "xla_bf16_s" in r else "")
      out.append(f"| {r['fmt']} | {r['M']} | {r['K']} | {r['N']} | no kernel: "
                 f"{r.get('error', '')[:70]} | | | | | | {base} |")
      continue
    out.append(f"| {r['fmt']} | {r['M']} | {r['K']} | {r['N']} | {r['kernel_s']*1e6:.1f} | "
               f"{r['kernel_TBps']:.2f} | {100*r['frac_copy_bw']:.0f}% | {r['x_vs_xla_bf16']:.2f}x | "
               f"{r['x_vs_xla_dequant_dot']:.2f}x | {worst_err(r):.1e} | {r['config']} |")
  return "\n".join(out)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--what", default="wo")
  ap.add_argument("--out", default=os.environ.get("OUT", "."))
  ap.add_argument("--formats", default="int4,uint4")
  ap.add_argument("--m", default="")
  ap.add_argument("--shapes", default="")
  ap.add_argument("--sweep", action="store_true")
  ap.add_argument("--schemes", default=",".join(QUANT_SCHEMES))
  ap.add_argument("--qshapes", default="")
  ap.add_argument("--prefill", action="store_true")
  ap.add_argument("--cols", default="", help="quant: encode_cols to try, e.g. 8,16,all")
  ap.add_argument("--transpose", action="store_true", help="quant: the column-wise kernel")
  ap.add_argument("--f32", action="store_true",
                  help="quant: float32 input (the row-wise kernel's f32 path)")
  ap.add_argument("--configs", default="",
                  help="JSON list of kernel configs to time (quant: each checked bit for bit)")
  ap.add_argument("--onehot", action="store_true",
                  help="wo: also check the timed config's dequantized weights (`onehot_check`)")
  ap.add_argument("--load-split", action="store_true",
                  help="wo: also time the best config's pipeline with an empty body (and, "
                  "with several configs, each one's: `load_only_s` in `configs_timed`)")
  args = ap.parse_args()
  t0 = time.time()
  res = C.header()
  res["copy_Bps"] = C.copy_bandwidth()
  res["bf16_gemm_flops"] = C.bf16_gemm_rate()
  print(f"copy {res['copy_Bps']/1e12:.2f} TB/s, bf16 GEMM {res['bf16_gemm_flops']/1e12:.0f} TFLOP/s",
        flush=True)
  md = [f"device {res['device']}, jax {res['jax_version']}, {res['date']}",
        f"copy bandwidth {res['copy_Bps']/1e12:.2f} TB/s; XLA bf16 GEMM 8192^3 "
        f"{res['bf16_gemm_flops']/1e12:.0f} TFLOP/s"]
  if "quant" in args.what:
    res["fused_quantize"] = bench_quant(args, res)
    md.append(table_quant(res["fused_quantize"]))
  if "wo" in args.what:
    res["wo_matmul"] = bench_wo(args, res)
    md.append(table_wo(res["wo_matmul"]))
  res["wall_s"] = time.time() - t0
  with open(os.path.join(args.out, f"kernels_{args.what}.json"), "w") as f:
    json.dump(res, f, indent=1)
  text = "\n\n".join(md)
  with open(os.path.join(args.out, f"kernels_{args.what}.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
