"""Shared test helpers that need no network access."""

from __future__ import annotations

import string
from pathlib import Path

from transformers import BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Frequent English words plus the vocabulary of Python docstrings, so the builtin corpus
# tokenizes into mostly whole words; everything else falls back to letter pieces.
_WORDS = """
the of and to a in is it that for as with was on be by this are or from an at which not have
has had but if can will would should may must all any each every other some such no more most
than then there these those they them their its we you your he she his her one two three four
first last new old same different only also into over under after before between through about
up down out off again further once here when where why how what who whom both few many much very
just now do does did done make makes made use used uses using get gets set sets see call called
calls return returns returned value values default defaults true false none object objects type
types class classes function functions method methods module modules name names string strings
str int float bool list lists dict tuple bytes file files path paths line lines data number
numbers argument arguments parameter parameters keyword optional error errors exception raise
raised raises instance instances attribute attributes given new create created read write open
close closed mode text character characters item items key keys element elements sequence index
length size time date format result results case cases output input current called first last
new start end stop begin process thread lock queue socket server client request response message
header headers address host port url code encoding decode encode byte buffer stream iterator
iterable generator context manager handler event events signal state status option options
config configuration test tests check checks valid invalid empty single multiple whether true
""".split()


def tiny_tokenizer(tmp_dir: Path) -> BertTokenizerFast:
    """A WordPiece BERT tokenizer of a few hundred tokens, written to ``tmp_dir/vocab.txt``.

    Loaded with ``from_pretrained(dir)`` because transformers 5 ignores ``vocab_file=`` in the
    constructor and would silently build a 5-token tokenizer.
    """
    pieces = list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    suffixes = ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + pieces + suffixes + _WORDS))
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    (Path(tmp_dir) / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(tmp_dir))
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tiny tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    return tokenizer


def tiny_teacher_dir(tmp_dir: Path, layers: int = 3, seed: int = 0, max_positions: int = 64) -> Path:
    """A random tiny BERT (hidden 32, 4 heads, FFN 64) saved with ``tiny_tokenizer`` beside it.

    The vocabulary matches the tokenizer, so the directory works as a teacher path for
    ``metanas train-supernet`` and ``AutoTokenizer.from_pretrained`` in a fresh process.
    """
    import torch
    from transformers import BertConfig, BertModel

    tmp_dir = Path(tmp_dir)
    tokenizer = tiny_tokenizer(tmp_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(str(tmp_dir))
    tokenizer.save_pretrained(str(tmp_dir))
    return tmp_dir
