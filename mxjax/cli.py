"""The `mxjax` command line.

  mxjax formats          table of every element format and the measured SNR of every preset
  mxjax gate             the parity gate (mxjax.eval): recipes vs a BF16 reference, per metric
  mxjax ladder           the precision ladder on a zoo model's weights and activations
  mxjax plan             bytes, fit and roofline of a recipe on named accelerators
  mxjax <cmd> --help     help for each subcommand
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mxjax import formats as formats_lib
from mxjax import schemes as schemes_lib
from mxjax.qarray import dequantize
from mxjax.quantize import quantize


def format_table() -> list[dict]:
  """One row per element format: bits, max, min subnormal, dynamic range (dB)."""
  rows = []
  for f in formats_lib.all_formats():
    rows.append({
        "format": f.name,
        "kind": f.kind.value,
        "bits": f.bits,
        "max": f.max,
        "min_subnormal": f.min_subnormal,
        "range_db": f.dynamic_range_db,
        "inf/nan": ("inf+nan" if f.has_inf else "nan") if f.has_nan else "-",
        "xla_dtype": str(f.dtype) if f.dtype is not None else "none (uint8 codes)",
    })
  return rows


def snr_db(x: jax.Array, y: jax.Array) -> float:
  """10 log10(sum x^2 / sum (x - y)^2) in dB (inf when y == x)."""
  x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
  err = np.sum((x64 - y64) ** 2)
  return float("inf") if err == 0 else float(10 * np.log10(np.sum(x64**2) / err))


def preset_snr_table(n: int = 1 << 16, seed: int = 0) -> list[dict]:
  """Measured SNR of every preset on Gaussian and Student-t (3 dof, heavy-tailed) data.

  Data: (n / 256, 256) float32 arrays, quantized along the last axis.
  """
  kg, kt = jax.random.split(jax.random.key(seed))
  shape = (n // 256, 256)
  data = {
      "gaussian": jax.random.normal(kg, shape),
      "student_t3": jax.random.t(kt, 3.0, shape),
  }
  rows = []
  for name in schemes_lib.names():
    scheme = schemes_lib.get(name)
    row = {"preset": name, "scheme": scheme.describe()}
    roundtrip = jax.jit(lambda x, s=scheme: dequantize(quantize(x, s), jnp.float32))
    for dname, x in data.items():
      row[f"snr_{dname}_db"] = snr_db(x, roundtrip(x))
    row["bits_per_value"] = quantize(data["gaussian"], scheme).bits_per_value
    rows.append(row)
  return rows


def print_table(rows: list[dict], floatfmt: str = ".4g", file=None) -> None:
  """Prints rows (dicts with the same keys) as an aligned text table."""
  file = file or sys.stdout
  if not rows:
    return
  keys = list(rows[0])

  def fmt(v):
    return format(v, floatfmt) if isinstance(v, float) else str(v)

  cells = [[fmt(r[k]) for k in keys] for r in rows]
  widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
  print("  ".join(k.ljust(w) for k, w in zip(keys, widths)), file=file)
  print("  ".join("-" * w for w in widths), file=file)
  for c in cells:
    print("  ".join(v.ljust(w) for v, w in zip(c, widths)), file=file)


def _cmd_formats(args: argparse.Namespace) -> int:
  print("Element formats\n")
  print_table(format_table())
  print(f"\nPresets: SNR of quantize -> dequantize on {args.n} values (dB, higher is better)\n")
  print_table(preset_snr_table(args.n, args.seed), floatfmt=".2f")
  print(f"\njax {jax.__version__} on {jax.devices()[0].platform}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="mxjax", description="Low-precision numerics for JAX: formats, schemes, studies."
  )
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("formats", help="table of formats and the measured SNR of every preset")
  p.add_argument("--n", type=int, default=1 << 16, help="values per SNR measurement")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed of the test data")
  p.set_defaults(func=_cmd_formats)
  from mxjax.eval import cli as eval_cli  # noqa: PLC0415  (imports the zoo only when run)

  eval_cli.add_gate_parser(sub)
  eval_cli.add_ladder_parser(sub)
  eval_cli.add_plan_parser(sub)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
