"""The tiny teacher: a random 3-layer BERT and a WordPiece tokenizer, written into a run directory.

CI smoke runs (`recipes/tiny.yaml`) compress it end to end in about a minute with
no download and no model package.
"""

from __future__ import annotations

import collections
import re
import string
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, PretrainedConfig

from metanas._io import atomic_dir
from metanas.data import builtin_corpus

TINY_DIMS = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
TINY_WORDS = 600  # most frequent builtin-corpus words added to the character-level WordPiece vocabulary
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary: special tokens, characters, `##` suffix characters and frequent corpus words.

    Built from the builtin corpus, so it needs no download and no model package, and
    tokenizes that corpus into mostly whole words.
    """
    counts = collections.Counter(w for text in builtin_corpus()["text"] for w in re.findall(r"[a-z]{2,}", text.lower()))
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TINY_WORDS]]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    suffixes = ["##" + c for c in string.ascii_lowercase + string.digits]
    return list(dict.fromkeys([*SPECIAL_TOKENS, *chars, *suffixes, *words]))


def tiny_teacher_config(vocab_size: int) -> PretrainedConfig:
    return BertConfig(vocab_size=vocab_size, **TINY_DIMS)


def write_tiny_teacher(out_dir: Path, seed: int = 0) -> Path:
    """A random tiny BERT (hidden 32, 3 layers) and its tokenizer in `out_dir`, written atomically.

    Deterministic for a seed, so an existing directory is reused as is.
    """
    if (out_dir / "config.json").is_file():
        return out_dir
    with atomic_dir(out_dir, overwrite=True) as tmp:
        vocab = tiny_vocab()
        (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        # from_pretrained: transformers 5 ignores a vocab_file= given to the constructor.
        tokenizer = BertTokenizerFast.from_pretrained(str(tmp))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertModel(tiny_teacher_config(len(vocab)))
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return out_dir
