"""Perplexity of the zoo's language models on PTB test and Wikipedia, plus a greedy answer.

Protocol (stated in the output too):
  - Text: PTB test joined GPTQ-style (``corpora.ptb_text("test")``); Wikipedia = the
    SQuAD v1.1 dev paragraphs joined by blank lines (``corpora.wikipedia_text()``).
  - Tokenized once as a stream with the model's own tokenizer, no special tokens; cut
    into non-overlapping windows of ``--seqlen`` tokens (remainder dropped); all of PTB
    test, and the first ``--wiki-windows`` (default 64) of Wikipedia, for CPU time.
  - Models whose tokenizer adds BOS (Gemma) get BOS in front of every window; the first
    text token of each window is never scored (so both conventions score L-1 tokens a
    window). PPL = exp(mean token NLL), float32 logits.
  - Greedy answer: ``greedy_generate`` on "The capital of France is" (raw text, the
    model's BOS rule), 12 new tokens.

Also ``--reference``: each zoo model against ``transformers`` reading the same file
(needs torch==2.13.0, transformers, accelerate), written to ``results/zoo_reference``.

Usage::

  python -m experiments.zoo_eval --models smollm2-135m-instruct gemma3-270m \\
      --seqlen 1024 --ptb-windows 0 --wiki-windows 64   # 0 = all windows
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.data import corpora
from experiments.models import greedy_generate, zoo

PROMPT = "The capital of France is"
RESULTS = pathlib.Path(__file__).parent / "results"


def load_text(corpus: str) -> str:
  """Corpus text from ``$MXJAX_ZOO_DIR/corpora`` (packed for a GPU machine) or the registry."""
  import os

  packed = pathlib.Path(os.environ.get("MXJAX_ZOO_DIR", "/nonexistent")) / "corpora"
  if (packed / f"{corpus}.txt").exists():
    return (packed / f"{corpus}.txt").read_text(encoding="utf-8")
  return corpora.ptb_text("test") if corpus == "ptb_test" else corpora.wikipedia_text()


def window_nll(model: nnx.Module, windows: np.ndarray, bos: int | None,
               desc: str = "") -> tuple[float, int]:
  """Summed NLL (nats) and scored-token count over [N, L] windows, one window a call."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def nll(state, ids):
    logits = nnx.merge(graphdef, state)(ids)  # [1, T, V]
    off = 0 if bos is None else 1
    lp = jax.nn.log_softmax(logits[0, off:-1], axis=-1)  # predicts ids[off+1:]
    tgt = ids[0, off + 1:]
    return -jnp.take_along_axis(lp, tgt[:, None], axis=-1).sum()

  try:
    from tqdm import tqdm
    it = tqdm(windows, desc=desc, leave=False)
  except ImportError:
    it = windows
  total, count = 0.0, 0
  for w in it:
    ids = w if bos is None else np.concatenate([[bos], w])
    total += float(nll(state, jnp.asarray(ids[None], jnp.int32)))
    count += len(w) - 1
  return total, count


def evaluate(name: str, seqlen: int, max_windows: dict[str, int | None]) -> dict:
  t0 = time.time()
  model, tok, cfg = zoo.load(name)
  load_s = time.time() - t0
  bos = tok.bos_id if tok.add_bos else None
  row = {"model": name, "load_s": round(load_s, 1), "caveat": zoo.caveat(name),
         "file_quantization": zoo.MODELS[name].file_quantization}
  for corpus in ("ptb_test", "wikipedia"):
    text = load_text(corpus)
    ids = tok.encode(text, add_bos=False)
    windows = corpora.token_windows(ids, seqlen, max_windows[corpus])
    t0 = time.time()
    total, count = window_nll(model, windows, bos, desc=f"{name}/{corpus}")
    row[corpus] = {"ppl": math.exp(total / count), "tokens_scored": count,
                   "windows": int(windows.shape[0]), "stream_tokens": len(ids),
                   "seconds": round(time.time() - t0, 1)}
    print(name, corpus, row[corpus], flush=True)
  prompt = tok.encode(PROMPT)
  new = greedy_generate(model, prompt, 12, eos_token_id=cfg.eos_token_id)
  row["greedy"] = {"prompt": PROMPT, "prompt_ids": prompt, "ids": new,
                   "text": tok.decode(new)}
  print(name, row["greedy"], flush=True)
  return row


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The girl is carrying a baby."]


def _errors(got: np.ndarray, want: np.ndarray) -> dict:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return {"rel_err": float(np.linalg.norm(got - want) / np.linalg.norm(want)),
          "max_abs": float(np.abs(got - want).max())}


def check(name: str) -> dict:
  """Relative (Frobenius) and max-abs error of zoo model ``name`` vs transformers."""
  import torch
  import transformers

  path = zoo.model_path(name)
  model, tok, _ = zoo.load_path(path)
  if zoo.MODELS[name].fmt == "gguf":
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = tok.encode(PROMPT)
    with torch.no_grad():
      want = ref(torch.tensor([ids])).logits.numpy()
    row = _errors(model(jnp.asarray([ids])), want)
    row["compared"] = f"logits [1, {len(ids)}, {want.shape[-1]}] on {PROMPT!r}"
  else:
    ref = transformers.BertModel.from_pretrained(path).eval()
    enc = transformers.AutoTokenizer.from_pretrained(path)(SENTENCES, padding=True,
                                                           return_tensors="np")
    with torch.no_grad():
      want = ref(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    got = np.asarray(model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                           jnp.asarray(enc["token_type_ids"])))
    keep = enc["attention_mask"].astype(bool)
    row = _errors(got[keep], want[keep])
    row["compared"] = f"last hidden states of {len(SENTENCES)} sentences (real tokens)"
  row.update(model=name, transformers=transformers.__version__, torch=torch.__version__)
  print(row, flush=True)
  return row


def reference_main(out: pathlib.Path) -> None:
  """Writes ``<out>.json`` / ``.md`` with every zoo model's error vs transformers."""
  rows = [check(n) for n in zoo.MODELS]
  result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "jax": jax.__version__, "device": jax.devices()[0].device_kind, "rows": rows}
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
  md = [f"# Zoo vs transformers ({result['date']}, jax {result['jax']}, {result['device']}, "
        f"transformers {rows[0]['transformers']}, torch {rows[0]['torch']})", "",
        "| model | compared | relative error | max abs |", "|---|---|---|---|"]
  md += [f"| {r['model']} | {r['compared']} | {r['rel_err']:.2e} | {r['max_abs']:.2e} |"
         for r in rows]
  out.with_suffix(".md").write_text("\n".join(md) + "\n")
  print("\n".join(md))


def to_markdown(result: dict) -> str:
  lines = [f"# Zoo perplexities ({result['date']}, jax {result['jax']}, {result['device']})", "",
           result["protocol"], "",
           "| model | weights in file | PTB test PPL | Wikipedia PPL | greedy continuation of "
           f"\"{PROMPT}\" |", "|---|---|---|---|---|"]
  for r in result["rows"]:
    g = r["greedy"]["text"].replace("\n", "\\n").replace("|", "\\|")
    lines.append(f"| {r['model']} | {r['file_quantization']} | {r['ptb_test']['ppl']:.2f} "
                 f"({r['ptb_test']['tokens_scored']} tok) | {r['wikipedia']['ppl']:.2f} "
                 f"({r['wikipedia']['tokens_scored']} tok) | `{g}` |")
  caveats = sorted({r["caveat"] for r in result["rows"] if r["caveat"]})
  if caveats:
    lines += ["", "Caveat: " + " ".join(caveats)]
  return "\n".join(lines) + "\n"


def _n(w: int | None) -> str:
  return "all windows" if w is None else f"first {w} windows"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
  ap.add_argument("--seqlen", type=int, default=1024)
  ap.add_argument("--ptb-windows", type=int, default=0, help="PTB windows, 0 = all")
  ap.add_argument("--wiki-windows", type=int, default=64, help="Wikipedia windows, 0 = all")
  ap.add_argument("--out", default=None, help="output stem (default results/zoo_eval)")
  ap.add_argument("--reference", action="store_true",
                  help="instead: compare every zoo model with transformers (CPU torch), "
                  "writing results/zoo_reference.{json,md}")
  args = ap.parse_args(argv)
  if args.reference:
    reference_main(pathlib.Path(args.out or RESULTS / "zoo_reference"))
    return
  args.out = args.out or str(RESULTS / "zoo_eval")
  mw = {"ptb_test": args.ptb_windows or None, "wikipedia": args.wiki_windows or None}
  rows = [evaluate(m, args.seqlen, mw) for m in args.models]
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "jax": jax.__version__, "device": f"{jax.devices()[0].device_kind} ({platform.node()})",
      "protocol": (f"Non-overlapping windows of {args.seqlen} tokens of the model's own "
                   f"tokenization (PTB test: {_n(mw['ptb_test'])}; "
                   f"Wikipedia: {_n(mw['wikipedia'])}); "
                   "PTB test joined GPTQ-style (lines stripped, joined by spaces); Wikipedia = "
                   "SQuAD v1.1 dev paragraphs joined by blank lines; BOS prepended to each "
                   "window for models that use it; first text token of a window not scored; "
                   "float32 dequantized weights; PPL = exp(mean NLL)."),
      "rows": rows}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
  out.with_suffix(".md").write_text(to_markdown(result))
  print(to_markdown(result))


if __name__ == "__main__":
  main()
