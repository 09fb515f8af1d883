"""Gates on GPU paths that only a GPU can check.

A Mosaic GPU kernel path written without a GPU (the CPU can lower it, not run it) stays off
until a GPU run has matched it against its reference; each kernel keeps the set of what has
(`VERIFIED`, `F32_VERIFIED`, ...), and `require_checked` refuses the rest unless the caller
passes `allow_unverified=True`, which the GPU benchmark does, checking every result it times.
"""

from __future__ import annotations


def require_checked(path: str, checked: bool, allow_unverified: bool, *, reference: str,
                    instead: str) -> None:
  """Raises NotImplementedError for `path` (e.g. "nvfp4's state_once") unless `checked` (it has
  matched `reference` on a GPU) or `allow_unverified`; `instead` says what to do otherwise."""
  if not checked and not allow_unverified:
    raise NotImplementedError(
        f"{path} has not matched {reference} on a GPU yet: pass allow_unverified=True to run "
        f"it (the benchmark does, and checks it), or {instead}")
