"""Shared test helpers that need no network access.

transformers is imported only where it is used: the kill-and-resume worker of
`test_search.py` imports this module for `child_env` and should start fast.
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import BertTokenizerFast

REPO = Path(__file__).resolve().parents[1]

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
    from transformers import BertTokenizerFast

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


# --------------------------------------------------------------------------- child processes


def child_env(hf_datasets_cache: Path | None = None, history: Path | None = None) -> dict[str, str]:
    """The environment of a `python -m metanas` (or other test) child process.

    Offline (hub, datasets, W&B), one OpenMP thread, no tokenizer worker threads, and the
    repository root on PYTHONPATH; optionally its own datasets cache and history database.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(REPO),
    }
    if hf_datasets_cache is not None:
        env["HF_DATASETS_CACHE"] = str(hf_datasets_cache)
    if history is not None:
        env["METANAS_HISTORY"] = str(history)
    return env


def wait_until(
    condition: Callable[[], object],
    proc: subprocess.Popen,
    timeout: float = 180,
    what: str = "the condition held",
    interval: float = 0.02,
) -> None:
    """Poll `condition` until it is true; fail if `proc` ends first or `timeout` seconds pass.

    The failure message names `what` was awaited and, when the process's stderr is a pipe,
    ends with its last lines.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read()[-3000:] if proc.stderr is not None else ""
            raise AssertionError(f"process ended (exit code {proc.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)


def torchrun_two(driver: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --nproc_per_node 2 DRIVER ARGS...` in the test environment (offline, one
    thread per process, the datasets cache under `tmp_path`); asserts it exited 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(driver), *args]
    env = child_env(hf_datasets_cache=tmp_path / "hf-cache")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc
