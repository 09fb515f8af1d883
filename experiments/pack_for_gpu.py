"""Pack zoo models and corpora into folders a registry-less GPU machine can be sent.

The GPU machine reaches no registry and accepts at most 64 MiB per call (the working
tree included), so a study's inputs travel as numbered *loads*, each under a budget:

  # here (registry reachable): fetch, verify, split into loads of <= 56 MiB
  python -m experiments.pack_for_gpu pack --models smollm2-135m-instruct \\
      --corpora ptb_test wikipedia --out .carry/zoo

  # there, one call per load, all in one warm lease (carry: [".carry/zoo/load0"], ...):
  python3 -m experiments.pack_for_gpu unpack .carry/zoo/load0 --dest /tmp/mxjax_zoo
  ...
  # the last call unpacks the last load and runs the study:
  python3 -m experiments.pack_for_gpu unpack .carry/zoo/load3 --dest /tmp/mxjax_zoo && \\
      PYTHONPATH=/tmp/mxjax_zoo/site MXJAX_ZOO_DIR=/tmp/mxjax_zoo python3 -m experiments.zoo_eval

A file larger than one load is cut into pieces; ``unpack`` appends each piece, and when
the last arrives it checks the whole file's sha256 (a missing or altered piece is
reported by name). ``/tmp`` on the GPU machine survives between calls only while the
lease stays warm (30 s idle), so send the loads back to back. The ``gguf`` package
(pure Python, absent there) travels as its wheel in load 0 and is unpacked into
``<dest>/site``. ``.carry/`` is git-ignored: nothing packed is ever committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

MIB = 1 << 20


def _sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(MIB), b""):
      h.update(block)
  return h.hexdigest()


def _collect(models: list[str], corpora_names: list[str], work: pathlib.Path
             ) -> list[tuple[str, pathlib.Path]]:
  """(destination relative path, local file) for everything the GPU job needs."""
  from experiments.data import corpora
  from experiments.models import zoo

  items: list[tuple[str, pathlib.Path]] = []
  for m in models:
    p = zoo.model_path(m)
    if p.is_dir():
      for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".txt"):
          items.append((f"models/{zoo.MODELS[m].filename}/{f.relative_to(p)}", f))
    else:
      items.append((f"models/{zoo.MODELS[m].filename}", p))
  readers = {"ptb_test": lambda: corpora.ptb_text("test"),
             "ptb_valid": lambda: corpora.ptb_text("valid"),
             "wikipedia": corpora.wikipedia_text}
  for c in corpora_names:
    f = work / f"{c}.txt"
    f.write_text(readers[c](), encoding="utf-8")
    items.append((f"corpora/{c}.txt", f))
  try:
    import gguf  # noqa: F401  (only its version is needed)
    from importlib.metadata import version

    ver = version("gguf")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "--only-binary=:all:", "-d", str(work), f"gguf=={ver}"],
                       capture_output=True, text=True)
    if r.returncode == 0:
      whl = next(work.glob("gguf-*.whl"))
      items.insert(0, (f"whl/{whl.name}", whl))
    else:
      print(f"warning: could not download the gguf wheel:\n{r.stderr[-500:]}", file=sys.stderr)
  except ImportError:
    print("warning: gguf is not installed here; GGUF models cannot be read there",
          file=sys.stderr)
  return items


def pack(models: list[str], corpora_names: list[str], out: pathlib.Path,
         budget_mib: float) -> list[pathlib.Path]:
  """Writes ``out/load0 .. loadN``, each at most ``budget_mib``; returns the load folders."""
  budget = int(budget_mib * MIB)
  if out.exists():
    shutil.rmtree(out)
  work = out / "_work"
  work.mkdir(parents=True)
  items = _collect(models, corpora_names, work)
  files = {dest: {"sha256": _sha256(src), "size": src.stat().st_size} for dest, src in items}
  loads: list[list[dict]] = [[]]
  room = budget
  for dest, src in items:
    size, offset, index = src.stat().st_size, 0, 0
    while offset < size or size == 0:
      if room <= 0:
        loads.append([])
        room = budget
      n = min(room, size - offset)
      loads[-1].append({"file": dest, "index": index, "offset": offset, "length": n,
                        "src": str(src)})
      offset, index, room = offset + n, index + 1, room - n
      if size == 0:
        break
    files[dest]["pieces"] = index
  dirs = []
  for k, pieces in enumerate(loads):
    d = out / f"load{k}"
    d.mkdir()
    for p in pieces:
      name = f"{p['file'].replace('/', '__')}.piece{p['index']:03d}"
      with open(p.pop("src"), "rb") as fi, open(d / name, "wb") as fo:
        fi.seek(p["offset"])
        fo.write(fi.read(p["length"]))
      p["name"] = name
    (d / "manifest.json").write_text(json.dumps(
        {"load": k, "of": len(loads), "files": files, "pieces": pieces}, indent=1))
    dirs.append(d)
  shutil.rmtree(work)
  return dirs


def unpack(load_dir: pathlib.Path, dest: pathlib.Path) -> bool:
  """Adds one load's pieces under ``dest``; assembles and verifies completed files.

  Returns:
    True when every file of the pack is complete and verified.
  """
  man = json.loads((load_dir / "manifest.json").read_text())
  stage = dest / ".pieces"
  stage.mkdir(parents=True, exist_ok=True)
  for p in man["pieces"]:
    shutil.copyfile(load_dir / p["name"], stage / p["name"])
  complete = True
  for rel, info in man["files"].items():
    target = dest / rel
    if target.exists() and target.stat().st_size == info["size"]:
      continue
    names = [f"{rel.replace('/', '__')}.piece{i:03d}" for i in range(info["pieces"])]
    missing = [n for n in names if not (stage / n).exists()]
    if missing:
      complete = False
      print(f"waiting for {len(missing)} piece(s) of {rel}")
      continue
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    with open(tmp, "wb") as fo:
      for n in names:
        with open(stage / n, "rb") as fi:
          shutil.copyfileobj(fi, fo)
    got = _sha256(tmp)
    if got != info["sha256"]:
      raise RuntimeError(f"{rel}: assembled sha256 {got} != packed {info['sha256']}; a piece "
                         "was altered or belongs to another pack: pack again and resend")
    os.replace(tmp, target)
    for n in names:
      (stage / n).unlink()
    print(f"complete and verified: {rel}")
    if rel.startswith("whl/"):
      subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                      "--target", str(dest / "site"), str(target)], check=True)
      print(f"installed {target.name} into {dest / 'site'} (add it to PYTHONPATH)")
  return complete


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = ap.add_subparsers(dest="cmd", required=True)
  p = sub.add_parser("pack")
  p.add_argument("--models", nargs="*", default=["smollm2-135m-instruct"])
  p.add_argument("--corpora", nargs="*", default=["ptb_test", "wikipedia"])
  p.add_argument("--out", default=".carry/zoo")
  p.add_argument("--budget-mib", type=float, default=56.0,
                 help="per load; leave room under 64 MiB for the working tree")
  u = sub.add_parser("unpack")
  u.add_argument("load_dir")
  u.add_argument("--dest", default="/tmp/mxjax_zoo")
  args = ap.parse_args(argv)
  if args.cmd == "pack":
    dirs = pack(args.models, args.corpora, pathlib.Path(args.out), args.budget_mib)
    for d in dirs:
      mb = sum(f.stat().st_size for f in d.iterdir()) / MIB
      print(f"{d}  {mb:.1f} MiB  -> carry [\"{d}\"], run: python3 -m experiments.pack_for_gpu "
            f"unpack {d} --dest /tmp/mxjax_zoo")
  else:
    done = unpack(pathlib.Path(args.load_dir), pathlib.Path(args.dest))
    print("all files present" if done else "more loads to send")


if __name__ == "__main__":
  main()
