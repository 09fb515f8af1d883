"""The precision ladder: every format's error on the same tensors, one row per (tensor, scheme).

The default ladder walks BF16 -> FP8 -> FP6 -> FP4 and sets the integer and NF4 schemes beside
them, so one table shows what each bit buys on real weights and activations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from mxjax import schemes as schemes_lib
from mxjax.analysis._progress import progress_iter
from mxjax.analysis.metrics import ErrorStats, _combine, _sums, scheme_label
from mxjax.schemes import Identity, Scheme

DEFAULT_LADDER: tuple[str, ...] = (
    "bf16",
    "fp8_e4m3",
    "fp8_e4m3_rowwise",
    "mxfp8_e4m3",
    "fp8_e5m2",
    "mxfp6_e2m3",
    "mxfp6_e3m2",
    "nvfp4",
    "mxfp4",
    "int8",
    "int4_g128",
    "int4_g128_asym",
    "nf4_g64",
)

Tensors = Mapping[str, jax.Array | tuple[jax.Array, int]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LadderRow:
  """One cell of the ladder: `stats` of `scheme` on the tensor group `group`."""

  group: str
  stats: ErrorStats

  def as_dict(self) -> dict[str, Any]:
    return {"group": self.group, **self.stats.as_dict()}


def precision_ladder(
    groups: Mapping[str, Tensors],
    schemes: Sequence[Scheme | Identity | str] = DEFAULT_LADDER,
    *,
    progress: bool = True,
) -> list[LadderRow]:
  """Error of each scheme on each group of tensors (pooled within a group).

  Args:
    groups: {group name: {tensor name: array or (array, axis)}}, e.g. {"weights": ...,
      "activations": ...}; `axis` is the axis blocks run along (default -1).
    schemes: schemes or preset names, in ladder order.
    progress: show a progress bar.

  Returns:
    A LadderRow per (group, scheme), groups outer, schemes in the given order.
  """
  schemes = [schemes_lib.get(s) for s in schemes]
  cells = [(g, s) for g in groups for s in schemes]
  rows = []
  for g, s in progress_iter(cells, desc="ladder", enabled=progress):
    parts = []
    for v in groups[g].values():
      a, ax = v if isinstance(v, tuple) else (v, -1)
      parts.append(_sums(a, s, ax, None))
    rows.append(LadderRow(group=g, stats=ErrorStats._from_sums(scheme_label(s), _combine(parts))))
  return rows


def _fmt(v: float, spec: str) -> str:
  if math.isinf(v):
    return "inf" if v > 0 else "-inf"
  return format(v, spec)


def ladder_markdown(rows: Sequence[LadderRow]) -> str:
  """A markdown table of ladder rows (one line per row, grouped as given)."""
  head = ("| group | scheme | bits/value | SNR dB | ENOB | MSE | max abs err | max rel err |"
          " clipped % | underflow % |")
  lines = [head, "|" + "---|" * 10]
  for r in rows:
    s = r.stats
    lines.append(
        f"| {r.group} | {s.scheme} | {s.bits_per_value:.3f} | {_fmt(s.snr_db, '.2f')} |"
        f" {_fmt(s.enob, '.2f')} | {s.mse:.3e} | {s.max_abs_err:.3e} | {s.max_rel_err:.3g} |"
        f" {100 * s.clipped_frac:.3f} | {100 * s.underflow_frac:.3f} |"
    )
  return "\n".join(lines) + "\n"
