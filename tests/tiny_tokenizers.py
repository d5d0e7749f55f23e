"""Tiny tokenizers built locally (no downloads), saved beside tiny models like hub checkpoints.

* :func:`clip_tokenizer`: CLIP's byte-level BPE (used by CLIP, OWLv2 and SAM 3) with every
  byte as a token, the word-final variants, a few merges for the words tests use, and CLIP's
  special tokens. Any text tokenizes (unknown words fall back to bytes).
* :func:`bert_tokenizer`: BERT WordPiece (Grounding DINO's text encoder) with single letters,
  ``##`` continuations, a few whole words, ``.`` and BERT's special tokens.
"""

from __future__ import annotations

from pathlib import Path

#: words that get their own tokens (so prompts map to a handful of ids, like real vocabularies)
WORDS = ("a", "the", "photo", "of", "cat", "dog", "red", "car", "person", "pedestrian", "sky", "road", "tree",
         "building", "on", "left", "in", "scene", "there", "is", "this", "blue", "square", "disc", "background")


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build ``word</w>`` from its characters."""
    merges, cur = [], word[0]
    for i, ch in enumerate(word[1:], start=1):
        nxt = ch + "</w>" if i == len(word) - 1 else ch
        merges.append((cur, nxt))
        cur = cur + nxt
    return merges


def clip_tokenizer(max_length: int = 16):
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for w in WORDS:
        if len(w) < 2:
            continue
        for a, b in _word_merges(w):
            if (a, b) not in merges:
                merges.append((a, b))
                vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def bert_tokenizer(max_length: int = 32):
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "|"]
    tokens += list(WORDS) + [c for c in "abcdefghijklmnopqrstuvwxyz0123456789" if c not in WORDS]
    tokens += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return BertTokenizer(vocab=vocab, model_max_length=max_length)


def save(tokenizer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return folder
