"""Sentence-transformers files for an exported student, derived from its teacher's.

A teacher that is a sentence-transformers model (its directory holds `modules.json`,
like all-MiniLM-L6-v2) is used through `SentenceTransformer(...).encode`, so its
student must be one too: the same module list, the teacher's pooling mode and
normalisation, and the student's hidden size where a module records one. The files
are JSON (plus the weights of a Dense module copied as they are), so writing them
needs no sentence-transformers install.

The teacher's files are found from `ElasticBert.source`: a directory, or a hub id whose
snapshot is already in the Hugging Face cache (nothing is downloaded here). A teacher
that is a sentence-transformers model but whose files cannot be read is an error,
never a silently plain export.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metanas._io import atomic_write_json
from metanas._paths import is_hub_id

logger = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
ROOT_FILES = ("config_sentence_transformers.json", "sentence_bert_config.json")  # module 0 ("") and the model's
POOLING_DIM_KEYS = ("word_embedding_dimension", "embedding_dimension")  # sentence-transformers < 6 and >= 6
# Modules that hold no size of their own: copied as they are.
SIZE_FREE = ("Normalize", "Dropout")
SUPPORTED = ("Transformer", "Pooling", "Dense", *SIZE_FREE)


class STFormatError(ValueError):
    """The teacher is a sentence-transformers model whose files cannot be carried over; the message says why."""


@dataclass(frozen=True)
class STTeacher:
    """A sentence-transformers teacher: the folder holding its `modules.json`, and that module list."""

    root: Path
    modules: list[dict[str, Any]]
    name: str  # how the teacher was given (for messages)


def _kind(module: dict[str, Any]) -> str:
    """`Pooling` for both `sentence_transformers.models.Pooling` and `...modules.pooling.Pooling`."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _read_json(path: Path, teacher: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise STFormatError(
            f"the teacher {teacher!r} is a sentence-transformers model, but its file {path.name!r} "
            f"({path.parent.name}) cannot be read; restore the teacher's files"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise STFormatError(
            f"the teacher {teacher!r} is a sentence-transformers model, but {path.name!r} is damaged: {e}"
        ) from None


def _cached_hub_root(repo_id: str) -> Path | None:
    """The cached snapshot folder of `repo_id` when it is a sentence-transformers model, None when it is not.

    Only the local cache is read. Whether the teacher is a sentence-transformers model is
    unknown when the cache has no answer for `modules.json`: that is said (a warning),
    not silently taken as "no".
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    found = try_to_load_from_cache(repo_id, MODULES_FILE)
    if found is _CACHED_NO_EXIST:
        return None
    if isinstance(found, str):
        return Path(found).parent
    logger.warning(
        "export: cannot tell whether the teacher %r is a sentence-transformers model (its %s is not in the "
        "Hugging Face cache), so the student is exported without sentence-transformers files; load the teacher "
        "once with SentenceTransformer(%r), or give it as a local directory, to export them",
        repo_id,
        MODULES_FILE,
        repo_id,
    )
    return None


def find_st_teacher(source: str | None) -> STTeacher | None:
    """The teacher's sentence-transformers layout; None when the teacher is not a sentence-transformers model.

    Raises `STFormatError` when it is one but its files cannot be read or carried over,
    so a caller can check a teacher before any training.
    """
    if not source:
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        root: Path | None = path if (path / MODULES_FILE).is_file() else None
    elif is_hub_id(source):
        root = _cached_hub_root(source)
    else:
        root = None
    if root is None:
        return None
    modules = _read_json(root / MODULES_FILE, source)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise STFormatError(f"the teacher {source!r} has a {MODULES_FILE} that is not a list of modules with a type")
    _check_modules(modules, source)
    return STTeacher(root=root, modules=modules, name=source)


def _check_modules(modules: list[dict[str, Any]], teacher: str) -> None:
    if not modules or _kind(modules[0]) != "Transformer" or modules[0].get("path", "") != "":
        raise STFormatError(
            f"the teacher {teacher!r}: {MODULES_FILE} must start with a Transformer module stored at the "
            'model\'s root (path ""), as sentence-transformers saves it'
        )
    for m in modules[1:]:
        if _kind(m) not in SUPPORTED or _kind(m) == "Transformer":
            raise STFormatError(
                f"the teacher {teacher!r} has a sentence-transformers module {m['type']!r} that the export cannot "
                f"carry over to a smaller student; supported after the Transformer: {', '.join(SUPPORTED[1:])}"
            )
        if not m.get("path"):
            raise STFormatError(f"the teacher {teacher!r}: module {m['type']!r} in {MODULES_FILE} has no path")


def _pooling_config(src: Path, st: STTeacher, hidden: int, teacher_hidden: int) -> dict[str, Any]:
    config = _read_json(src / "config.json", st.name)
    keys = [k for k in POOLING_DIM_KEYS if k in config]
    if not keys:
        raise STFormatError(
            f"the teacher {st.name!r}: {src.name}/config.json names no embedding size ({' or '.join(POOLING_DIM_KEYS)})"
        )
    for k in keys:
        if config[k] != teacher_hidden:
            raise STFormatError(
                f"the teacher {st.name!r}: {src.name}/config.json has {k}={config[k]}, but the teacher's hidden size "
                f"is {teacher_hidden}; its pooling does not read the transformer's output"
            )
        config[k] = hidden
    return config


def write_st_files(st: STTeacher, target: Path, *, hidden: int, teacher_hidden: int) -> list[str]:
    """Write the student's sentence-transformers files into `target`; returns the module types kept.

    A Dense module maps the teacher's hidden size to its own output size, so it is kept
    (weights copied) only when the student's hidden size is the teacher's. Otherwise it,
    and every Dense after it, is dropped with a warning: the student's embeddings are
    then its pooled hidden states, `hidden` wide.
    """
    kept: list[dict[str, Any]] = [st.modules[0]]
    dropped: list[str] = []
    for m in st.modules[1:]:
        kind, src = _kind(m), st.root / m["path"]
        dst = target / m["path"]
        if kind == "Pooling":
            atomic_write_json(_pooling_config(src, st, hidden, teacher_hidden), dst / "config.json")
        elif kind == "Dense" and (hidden != teacher_hidden or dropped):
            dropped.append(m["path"])
            continue
        elif src.is_dir():  # Dense at the teacher's size, Normalize, Dropout (Normalize may have no folder)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
        elif kind == "Dense":
            raise STFormatError(f"the teacher {st.name!r} lists a Dense module at {m['path']!r} but has no such folder")
        kept.append(m)
    if dropped:
        logger.warning(
            "export: the student's hidden size %d differs from the teacher's %d, so the teacher's Dense module(s) "
            "%s cannot apply; the student's sentence embeddings are its pooled hidden states (%d wide) instead",
            hidden,
            teacher_hidden,
            ", ".join(dropped),
            hidden,
        )
    for name in ROOT_FILES:
        if (st.root / name).is_file():
            shutil.copy2(st.root / name, target / name)
    atomic_write_json(kept, target / MODULES_FILE)
    return [str(m["type"]) for m in kept]


def write_student_st_files(source: str | None, target: Path, *, hidden: int, teacher_hidden: int) -> bool:
    """When the teacher at `source` is a sentence-transformers model, make the export in `target` one too."""
    st = find_st_teacher(source)
    if st is None:
        return False
    write_st_files(st, target, hidden=hidden, teacher_hidden=teacher_hidden)
    return True
