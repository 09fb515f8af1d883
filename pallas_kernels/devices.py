"""The device the kernels trace for, by kind: where a launch default was measured per device."""

from __future__ import annotations

import jax


def device_kind() -> str:
  """The default device's kind ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "cpu", ...): the
  device the kernels trace for."""
  return jax.devices()[0].device_kind
