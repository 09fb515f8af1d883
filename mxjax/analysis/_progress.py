"""A progress bar on long loops (tqdm when installed, otherwise a plain iterator)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_iter(items: Iterable[T], *, desc: str = "", total: int | None = None,
                  enabled: bool = True) -> Iterator[T]:
  """Iterates `items` with a tqdm bar on stderr when tqdm is installed and `enabled`."""
  if not enabled:
    yield from items
    return
  try:
    from tqdm.auto import tqdm
  except ImportError:  # the `report` extra is optional; a loop still runs without it
    yield from items
    return
  yield from tqdm(items, desc=desc, total=total, leave=False, file=sys.stderr,
                  dynamic_ncols=True)
