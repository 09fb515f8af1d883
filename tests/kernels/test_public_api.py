"""Every public name of pallas_kernels imports; the Mosaic GPU modules import on CPU too."""

import importlib

import pytest


@pytest.mark.parametrize("mod", ["pallas_kernels.quantize", "pallas_kernels.wo_matmul"])
def test_all_names_import(mod):
  m = importlib.import_module(mod)
  for name in m.__all__:
    assert getattr(m, name) is not None


@pytest.mark.parametrize("mod", ["pallas_kernels.quantize.mosaic_gpu",
                                 "pallas_kernels.wo_matmul.mosaic_gpu",
                                 "pallas_kernels._compat"])
def test_gpu_modules_import_on_cpu(mod):
  importlib.import_module(mod)
