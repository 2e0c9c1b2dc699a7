"""The builtin corpus: the Python standard library's docstrings, real English prose with no download.

Tests, demos and smoke runs need text that every machine has; the docstrings are
collected in a fresh isolated interpreter (`_stdlib_collect.py`) so that libraries
imported into this process cannot change them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from datasets import Dataset

from metanas.data import _stdlib_collect

logger = logging.getLogger(__name__)

MIN_DOC_CHARS = _stdlib_collect.MIN_DOC_CHARS


def _collect_stdlib_docstrings() -> list[tuple[str, str]]:
    """(text, top-level package) pairs, collected in a fresh isolated interpreter.

    A subprocess, because the current one may have had stdlib objects patched or
    extended by already-imported libraries, which would change the corpus.
    """
    proc = subprocess.run(
        [sys.executable, "-I", str(Path(_stdlib_collect.__file__))],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"collecting the builtin corpus failed: {proc.stderr.strip()[-500:]}")
    return [(text, module) for text, module in json.loads(proc.stdout)]


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> Dataset:
    """Standard-library docstrings as a download-free corpus (columns ``text`` and ``module``).

    About 4,300 documents on CPython 3.11, identical for a given Python version. ``module`` is the
    top-level package (``email``, ``json``, ...) so it doubles as a classification label. Cached
    per process: collection imports a few hundred modules.
    """
    start = time.perf_counter()
    documents = _collect_stdlib_docstrings()
    corpus = Dataset.from_dict({"text": [text for text, _ in documents], "module": [module for _, module in documents]})
    logger.info(
        "builtin corpus: %d docstrings from %d packages in %.2fs",
        len(documents),
        len({module for _, module in documents}),
        time.perf_counter() - start,
    )
    return corpus
