"""Collect the Python standard library's docstrings: the builtin, download-free corpus.

Run as a script in a fresh, isolated interpreter (see `metanas.data.builtin_corpus`):
whatever the calling process imported or patched (transformers adds methods to
`logging.Logger`, wandb and pytest replace `sys` hooks) must not change the corpus.
Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import pkgutil
import re
import sys
import warnings
from collections.abc import Iterator
from importlib import import_module
from types import ModuleType
from typing import Any

MIN_DOC_CHARS = 40
"""Shorter docstrings ("Return self==value.") carry too little prose to be worth a sequence."""

# Modules that open a browser or print on import, need a display, touch the terminal,
# are deprecated shims (setuptools shadows distutils inside a venv), or are test suites.
_SKIPPED_MODULES = frozenset(
    {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "lib2to3",
        "distutils",
        "ensurepip",
        "venv",
        "site",
        "readline",
        "rlcompleter",
    }
)
_TEST_MODULE = re.compile(r"^tests?$|^test_|_test$")
# ~100 generated codec tables whose near-identical boilerplate docstrings would swamp a package.
_NO_SUBMODULES = frozenset({"encodings"})


def _skip_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] in _SKIPPED_MODULES or any(p.startswith("_") or _TEST_MODULE.search(p) for p in parts)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what importing arbitrary stdlib modules may print or warn about."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _stdlib_modules() -> dict[str, ModuleType]:
    """Import every safe stdlib module and (recursively) its public submodules."""
    modules: dict[str, ModuleType] = {}
    pending = sorted((n for n in sys.stdlib_module_names if not _skip_module(n)), reverse=True)
    while pending:
        name = pending.pop()
        try:
            module = import_module(name)
        except (Exception, SystemExit):  # platform-specific or optional (msvcrt, dbm.gnu, ...)
            continue
        modules[name] = module
        if hasattr(module, "__path__") and name not in _NO_SUBMODULES:
            children = (f"{name}.{info.name}" for info in pkgutil.iter_modules(module.__path__))
            pending.extend(sorted((c for c in children if not _skip_module(c)), reverse=True))
    return modules


def _docstrings(module: ModuleType) -> Iterator[tuple[str, Any]]:
    """(qualified name, docstring) of a module, its public classes/functions and their public members.

    Objects count only in the module that defines them, so re-exports are not attributed twice
    and methods that third-party libraries patch onto stdlib classes (transformers adds
    ``logging.Logger.warning_once``) do not leak in.
    """
    yield "", module.__doc__
    namespace = vars(module)
    for attr, obj in namespace.items():
        if attr.startswith("_"):
            continue
        # Hooks that tools replace (pytest swaps sys.unraisablehook) keep their original as __name__.
        original = namespace.get(f"__{attr}__")
        if inspect.isroutine(original):
            obj = original
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        yield attr, obj.__doc__
        if not inspect.isclass(obj):
            continue
        for member_name, member in vars(obj).items():
            if isinstance(member, (classmethod, staticmethod)):
                member = member.__func__
            if member_name.startswith("_") or not (inspect.isroutine(member) or inspect.isdatadescriptor(member)):
                continue
            # C-level members have no __module__; Python ones must come from this module.
            if getattr(getattr(member, "fget", member), "__module__", None) in (None, module.__name__):
                yield f"{attr}.{member_name}", member.__doc__


def _normalize_docstring(doc: str) -> str:
    """Dedent, then collapse whitespace inside each paragraph; paragraphs stay separated by a blank line."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(doc))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def collect_stdlib_docstrings() -> list[tuple[str, str]]:
    """(text, top-level package) pairs, sorted by (module, qualified name), deduplicated on text."""
    with _quiet():
        found = [
            (name, qualname, doc)
            for name, module in _stdlib_modules().items()
            for qualname, doc in _docstrings(module)
            if isinstance(doc, str)
        ]
    found.sort(key=lambda item: (item[0], item[1]))
    seen: set[str] = set()
    documents = []
    for name, _, doc in found:
        text = _normalize_docstring(doc)
        if len(text) >= MIN_DOC_CHARS and text not in seen:
            seen.add(text)
            documents.append((text, name.partition(".")[0]))
    return documents


if __name__ == "__main__":
    json.dump(collect_stdlib_docstrings(), sys.stdout)
