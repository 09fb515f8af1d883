"""pack_for_gpu: loads under a budget, reassembled and verified piece by piece."""

from __future__ import annotations

import json
import os

import pytest

from experiments import pack_for_gpu


@pytest.fixture
def packed(tmp_path, monkeypatch):
  src = tmp_path / "src"
  src.mkdir()
  big = src / "model.gguf"
  big.write_bytes(os.urandom(5000))
  small = src / "ptb_test.txt"
  small.write_text("no it was n't black monday")
  empty = src / "empty.txt"
  empty.write_text("")
  items = [("models/model.gguf", big), ("corpora/ptb_test.txt", small),
           ("corpora/empty.txt", empty)]
  monkeypatch.setattr(pack_for_gpu, "_collect", lambda m, c, w: items)
  budget_mib = 2048 / pack_for_gpu.MIB  # 2 KiB loads force a split file
  dirs = pack_for_gpu.pack([], [], tmp_path / "carry", budget_mib)
  return dirs, items, tmp_path


def test_pack_respects_budget_and_unpacks_exactly(packed):
  dirs, items, tmp = packed
  assert len(dirs) == 3
  for d in dirs:
    payload = sum(f.stat().st_size for f in d.iterdir() if f.name != "manifest.json")
    assert payload <= 2048
  dest = tmp / "dest"
  done = [pack_for_gpu.unpack(d, dest) for d in dirs]
  assert done == [False, False, True]
  for rel, src in items:
    assert (dest / rel).read_bytes() == src.read_bytes()


def test_altered_piece_is_detected(packed):
  dirs, _, tmp = packed
  man = json.loads((dirs[1] / "manifest.json").read_text())
  victim = dirs[1] / man["pieces"][0]["name"]
  data = bytearray(victim.read_bytes())
  data[0] ^= 0xFF
  victim.write_bytes(bytes(data))
  with pytest.raises(RuntimeError, match="sha256"):
    for d in dirs:
      pack_for_gpu.unpack(d, tmp / "dest")
