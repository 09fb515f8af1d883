"""Capture the activations that enter a Flax NNX model's linear layers (for the ladder).

This is wiring, not numerics: while the context is open, `nnx.Linear.__call__` records its
input under the module's path. Run the model eagerly inside it (under `jit` the recorded values
would be tracers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import numpy as np


def _path(p) -> str:
  return "/".join(str(k) for k in p)


@contextlib.contextmanager
def record_linear_inputs(model, *, max_rows: int | None = None) -> Iterator[dict[str, list]]:
  """Records, per `nnx.Linear` of `model`, the inputs it sees (flattened to [rows, in]).

  Args:
    model: an NNX module.
    max_rows: keep at most this many rows (tokens) per layer and call.

  Yields:
    {module path: [float32 numpy arrays of shape (rows, in_features)]}, filled as the model
    runs inside the context.
  """
  from flax import nnx

  paths = {id(m): _path(p) for p, m in nnx.iter_modules(model) if isinstance(m, nnx.Linear)}
  store: dict[str, list] = {}
  orig = nnx.Linear.__call__

  def recording_call(self, x, *args, **kwargs):
    p = paths.get(id(self))
    if p is not None and not isinstance(x, jax.core.Tracer):
      rows = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
      store.setdefault(p, []).append(rows if max_rows is None else rows[:max_rows])
    return orig(self, x, *args, **kwargs)

  nnx.Linear.__call__ = recording_call
  try:
    yield store
  finally:
    nnx.Linear.__call__ = orig
