"""The `pallas` backend: the kernels of `pallas_kernels/`, for the cases they cover.

No Pallas kernel is wired yet: every case reports "no Pallas kernel for this case yet", and
`backend="pallas"` raises with that reason.
"""

from __future__ import annotations


def reason(case) -> str | None:
  """Why the pallas backend cannot run `case` (None: it can)."""
  del case
  return "no Pallas kernel for this case yet"


def run(lhs, rhs, dims, out_dtype, acc):
  raise NotImplementedError("no Pallas kernel for this case yet")
