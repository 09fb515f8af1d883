"""`pallas_kernels.gates`: a GPU path runs once checked on a GPU, or when the caller allows it."""

import pytest

from pallas_kernels.gates import require_checked


def test_require_checked():
  kw = dict(reference="mxjax.quantize", instead="leave state_once off")
  require_checked("nvfp4's state_once", True, False, **kw)  # checked: runs
  require_checked("nvfp4's state_once", False, True, **kw)  # allowed: runs (and is checked)
  with pytest.raises(NotImplementedError) as e:
    require_checked("nvfp4's state_once", False, False, **kw)
  msg = str(e.value)
  assert msg.startswith("nvfp4's state_once has not matched mxjax.quantize on a GPU yet")
  assert "allow_unverified=True" in msg and msg.endswith("or leave state_once off")
