"""Tokenizers rebuilt from a GGUF file's embedded vocabulary, through ``tokenizers``.

Two vocabulary kinds occur in the zoo:

- ``tokenizer.ggml.model == "gpt2"`` (SmolLM2): byte-level BPE from ``tokens`` and
  ``merges``; the pre-tokenizer follows ``tokenizer.ggml.pre`` ("smollm" splits digits
  one by one before the GPT-2 regex, as SmolLM2's own ``tokenizer.json`` does).
- ``tokenizer.ggml.model == "llama"`` (Gemma 3): SentencePiece BPE with byte fallback,
  stored as pieces and scores. The merges are rebuilt from the scores (a pair merges with
  the rank of the piece it makes), which is how SentencePiece's BPE picks merges and how
  ``transformers`` converts the same files.

Control and user-defined tokens (``<|im_start|>``, ``<start_of_turn>``) become special
tokens so they are never split. An unknown pre-tokenizer raises rather than guessing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

# GGUF token types (llama.cpp's llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


@dataclasses.dataclass
class Tokenizer:
  """A ``tokenizers.Tokenizer`` plus the BOS/EOS conventions of its model.

  Attributes:
    hf: the underlying ``tokenizers.Tokenizer``.
    bos_id: beginning-of-sequence id or None.
    eos_id: end-of-sequence id or None.
    add_bos: whether the model expects BOS in front of every text (Gemma: yes).
    post_process: apply the tokenizer's own post-processor (BERT's [CLS] ... [SEP]).
  """

  hf: Any
  bos_id: int | None = None
  eos_id: int | None = None
  add_bos: bool = False
  post_process: bool = False

  @property
  def vocab_size(self) -> int:
    return self.hf.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    """Token ids of ``text``; BOS prepended if ``add_bos`` (default: the model's rule)."""
    ids = self.hf.encode(text, add_special_tokens=self.post_process).ids
    if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table, the alphabet of byte-level BPE vocabularies."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  cs, n = bs[:], 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def tiny_byte_level_vocab(merges: Sequence[str] = ("h e", "l l", "he ll", "hell o", "Ġ hello",
                                                   "1 2")) -> tuple[list[str], list[str]]:
  """A test vocabulary: two specials, the 256 byte symbols, one token per merge."""
  b2u = bytes_to_unicode()
  tokens = ["<|endoftext|>", "<|im_start|>"] + [b2u[b] for b in range(256)]
  tokens += [m.replace(" ", "") for m in merges]
  return tokens, list(merges)


def _specials(tokens: list[str], types: list[int] | None) -> list[str]:
  if types is None:
    return []
  return [t for t, ty in zip(tokens, types) if ty in (_CONTROL, _USER_DEFINED)]


def _byte_level_bpe(meta: dict[str, Any]):
  from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

  tokens = list(meta["tokenizer.ggml.tokens"])
  merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
  pre = meta.get("tokenizer.ggml.pre", "default")
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in ("default", "gpt2", "gpt-2"):
    tok.pre_tokenizer = byte_level
  elif pre == "smollm":
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  else:
    raise NotImplementedError(f"GGUF pre-tokenizer {pre!r} is not implemented")
  tok.decoder = decoders.ByteLevel()
  return tok, tokens


def _spm_merges(tokens: list[str], scores: list[float],
                mergeable: list[bool]) -> list[tuple[str, str]]:
  """Merges of a SentencePiece BPE vocabulary, best (highest-scored result) first."""
  vocab = {t: i for i, t in enumerate(tokens) if mergeable[i]}
  cands = []
  for piece, pid in vocab.items():
    for k in range(1, len(piece)):
      left, right = piece[:k], piece[k:]
      if left in vocab and right in vocab:
        cands.append((-scores[pid], vocab[left], vocab[right], left, right))
  cands.sort()
  return [(c[3], c[4]) for c in cands]


def _spm_bpe(meta: dict[str, Any]):
  from tokenizers import Tokenizer as HFTokenizer, decoders, models, normalizers

  tokens = list(meta["tokenizer.ggml.tokens"])
  scores = [float(s) for s in meta["tokenizer.ggml.scores"]]
  types = list(meta.get("tokenizer.ggml.token_type", [_NORMAL] * len(tokens)))
  unk = meta.get("tokenizer.ggml.unknown_token_id")
  # Only normal pieces (and bytes, used by fallback) take part in merging.
  merges = _spm_merges(tokens, scores, [ty in (_NORMAL, _UNKNOWN, _BYTE) for ty in types])
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=tokens[unk]
                               if unk is not None else None, fuse_unk=True, byte_fallback=True))
  norm = [normalizers.Replace(" ", "\u2581")]
  if meta.get("tokenizer.ggml.add_space_prefix", False):
    norm.insert(0, normalizers.Prepend("\u2581"))
  tok.normalizer = normalizers.Sequence(norm)
  tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                   decoders.Fuse()])
  return tok, tokens


def tokenizer_from_gguf_metadata(meta: dict[str, Any]) -> Tokenizer:
  """Builds the tokenizer a GGUF file describes.

  Args:
    meta: GGUF metadata (``gguf_loader.read_metadata``), including ``tokenizer.ggml.*``.

  Returns:
    A ``Tokenizer`` whose ``encode`` matches the model's reference tokenizer.
  """
  from tokenizers import AddedToken

  kind = meta.get("tokenizer.ggml.model")
  if kind == "gpt2":
    tok, tokens = _byte_level_bpe(meta)
    default_bos = False
  elif kind == "llama":
    tok, tokens = _spm_bpe(meta)
    default_bos = True
  else:
    raise NotImplementedError(f"GGUF tokenizer model {kind!r} is not implemented")
  specials = _specials(tokens, meta.get("tokenizer.ggml.token_type"))
  if specials:
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
  return Tokenizer(tok, bos_id=meta.get("tokenizer.ggml.bos_token_id"),
                   eos_id=meta.get("tokenizer.ggml.eos_token_id"),
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", default_bos)))


def tokenizer_from_gguf(path: str | os.PathLike) -> Tokenizer:
  """Reads a GGUF file's vocabulary and builds its tokenizer."""
  from experiments.models.gguf_loader import read_metadata

  return tokenizer_from_gguf_metadata(read_metadata(path))


def tokenizer_from_json(path: str | os.PathLike, bos_id: int | None = None,
                        eos_id: int | None = None) -> Tokenizer:
  """Wraps a Hugging Face ``tokenizer.json``; its post-processor adds BERT's [CLS]/[SEP].

  Fixed-length padding stored in the file is switched off (``encode`` returns the real
  tokens only); truncation stays as the file sets it.
  """
  from tokenizers import Tokenizer as HFTokenizer

  hf = HFTokenizer.from_file(os.fspath(path))
  hf.no_padding()
  return Tokenizer(hf, bos_id=bos_id, eos_id=eos_id, post_process=True)
