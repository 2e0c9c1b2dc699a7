"""The task suite as data: teachers and tasks declared in YAML, checked before anything is trained.

A task is one objective on one corpus with one teacher. The suite is what the
shipped meta-predictor learns from and what the transfer benchmark holds out, so
its checks guard the protocol: every family and teacher named exists, objectives
match their family, and no task is built on a held-out corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from metanas._options import check_options

# Family -> the objective its tasks train and are scored with.
FAMILY_OBJECTIVES = {"kd": "kd", "mlm": "mlm", "contrastive": "contrastive", "topic": "task", "label": "task"}
LABEL_SETS = ("package-family",)  # labels derived from the builtin corpus (see metanas.tasks.derived)
TASK_FIELDS = ("name", "family", "teacher", "corpus", "objective", "options", "labels", "steps", "lr", "max_documents")
TEACHER_FIELDS = ("path", "cut", "space", "bf16")
SUITE_FIELDS = ("version", "seq_len", "teachers", "defaults", "tasks")
CUT_KEYS = ("depth", "hidden", "heads", "ffn")


SUITE_ENV_VAR = "METANAS_TASK_SUITE"


def suite_path() -> Path:
    """`$METANAS_TASK_SUITE`, else the suite shipped with metanas (`metanas/tasks/suite.yaml`)."""
    env = os.environ.get(SUITE_ENV_VAR)
    return Path(env).expanduser() if env else Path(str(resources.files("metanas.tasks") / "suite.yaml"))


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher and its search space: a model directory (`path`, default the bundled all-MiniLM-L6-v2),
    optionally cut to one uniform subnet (`cut`), searched in its default space or `space`'s overrides."""

    name: str
    path: str | None = None
    cut: dict[str, int] | None = None
    space: dict[str, Any] = field(default_factory=dict)
    bf16: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """One task: `objective` on `corpus` with `teacher`; `labels` true for a labelled packaged corpus."""

    name: str
    family: str
    teacher: str
    corpus: str
    objective: str
    options: dict[str, Any] = field(default_factory=dict)
    labels: bool | str = False
    steps: int = 60
    lr: float = 3e-4
    batch_size: int = 16
    max_documents: int | None = 1500

    @property
    def seed(self) -> int:
        """A per-task seed from the name, so reordering the YAML changes nothing."""
        return zlib.crc32(self.name.encode()) % 10_000

    @property
    def corpus_name(self) -> str:
        """The corpus without its source prefix (`packaged:20newsgroups` -> `20newsgroups`)."""
        return self.corpus.split(":", 1)[-1]

    @property
    def classification(self) -> bool:
        return self.objective == "task"

    def digest(self, teacher: TeacherSpec, seq_len: int) -> str:
        """Identifies what the task's supernet and table depend on: a changed spec gets a new directory."""
        blob = json.dumps([asdict(self), asdict(teacher), seq_len], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class TaskSuite:
    """The checked suite: teachers by name and tasks in file order."""

    seq_len: int
    teachers: dict[str, TeacherSpec]
    tasks: tuple[TaskSpec, ...]

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(t.name for t in self.tasks)}")

    def select(self, names: list[str] | None) -> list[TaskSpec]:
        """The named tasks (all when None), in suite order; an unknown name is an error."""
        if names is None:
            return list(self.tasks)
        chosen = {self.task(n).name for n in names}
        return [t for t in self.tasks if t.name in chosen]

    @property
    def families(self) -> list[str]:
        return sorted({t.family for t in self.tasks})

    @property
    def corpora(self) -> list[str]:
        return sorted({t.corpus_name for t in self.tasks})


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
        )
    return out


def _teacher(name: str, raw: Any) -> TeacherSpec:
    if not isinstance(raw, Mapping):
        raise ValueError(f"suite teachers.{name} must be a mapping with {', '.join(TEACHER_FIELDS)}")
    check_options(f"suite teacher {name!r}", raw, TEACHER_FIELDS)
    cut = raw.get("cut")
    if cut is not None:
        if not isinstance(cut, Mapping) or sorted(cut) != sorted(CUT_KEYS):
            raise ValueError(f"suite teachers.{name}.cut must give exactly {', '.join(CUT_KEYS)}, got {cut!r}")
        cut = {k: int(v) for k, v in cut.items()}
    path = raw.get("path")
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise ValueError(f"suite teachers.{name}.path must be a model directory or hub id, got {path!r}")
    return TeacherSpec(name, path, cut, dict(raw.get("space") or {}), bool(raw.get("bf16", False)))


def _task(raw: Any, defaults: Mapping[str, Any], teachers: Mapping[str, TeacherSpec]) -> TaskSpec:
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ValueError(f"every suite task must be a mapping with a name, got {raw!r}")
    name = str(raw["name"])
    check_options(f"suite task {name!r}", raw, TASK_FIELDS)
    family = raw.get("family")
    if family not in FAMILY_OBJECTIVES:
        raise ValueError(f"suite task {name!r}: family must be one of {', '.join(FAMILY_OBJECTIVES)}, got {family!r}")
    objective = raw.get("objective")
    if objective != FAMILY_OBJECTIVES[family]:
        raise ValueError(
            f"suite task {name!r}: family {family!r} trains objective {FAMILY_OBJECTIVES[family]!r}, got {objective!r}"
        )
    if raw.get("teacher") not in teachers:
        raise ValueError(
            f"suite task {name!r}: teacher must be one of {', '.join(teachers)}, got {raw.get('teacher')!r}"
        )
    labels = raw.get("labels", False)
    if (objective == "task") != bool(labels):
        raise ValueError(f"suite task {name!r}: labels are needed by, and only by, the classification objective 'task'")
    if isinstance(labels, str) and labels not in LABEL_SETS:
        raise ValueError(f"suite task {name!r}: labels must be true or one of {', '.join(LABEL_SETS)}, got {labels!r}")
    _check_corpus(name, str(raw.get("corpus")), labels)
    kind = _merge(defaults, defaults.get("classification", {})) if objective == "task" else defaults
    training, data = kind.get("training", {}), kind.get("data", {})
    return TaskSpec(
        name=name,
        family=family,
        teacher=str(raw["teacher"]),
        corpus=str(raw["corpus"]),
        objective=objective,
        options=dict(raw.get("options") or {}),
        labels=labels if isinstance(labels, str) else bool(labels),
        steps=int(raw.get("steps", training.get("steps", 60))),
        lr=float(raw.get("lr", training.get("lr", 3e-4))),
        batch_size=int(training.get("batch_size", 16)),
        max_documents=raw.get("max_documents", data.get("max_documents")),
    )


def _check_corpus(task: str, corpus: str, labels: bool | str) -> None:
    """A corpus is `builtin`, a `packaged:` name or a local file, and never a held-out one.

    `is_heldout` also refuses an unknown packaged name, listing the valid ones; a local
    file is checked by `metanas.data` when the task is built.
    """
    from metanas.data.packaged import is_heldout

    if corpus == "builtin":
        if labels is True:
            raise ValueError(
                f"suite task {task!r}: the builtin corpus has derived labels only ({', '.join(LABEL_SETS)})"
            )
        return
    if is_heldout(corpus):
        raise ValueError(f"suite task {task!r}: {corpus!r} is held out for evaluating metanas; no task may use it")


def load_suite(path: str | Path | None = None) -> TaskSuite:
    """Read and check a suite file (default: the shipped `suite.yaml`)."""
    path = Path(path) if path is not None else suite_path()
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, Mapping):
        raise ValueError(f"task suite {path.name}: expected a mapping with {', '.join(SUITE_FIELDS)}")
    check_options(f"task suite {path.name}", raw, SUITE_FIELDS)
    if raw.get("version") != 1:
        raise ValueError(f"task suite {path.name}: version must be 1, got {raw.get('version')!r}")
    teachers = {name: _teacher(name, spec) for name, spec in (raw.get("teachers") or {}).items()}
    if not teachers:
        raise ValueError(f"task suite {path.name}: no teachers")
    tasks = tuple(_task(t, raw.get("defaults") or {}, teachers) for t in raw.get("tasks") or ())
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"task suite {path.name}: task names repeat: {', '.join(duplicates)}")
    if not tasks:
        raise ValueError(f"task suite {path.name}: no tasks")
    return TaskSuite(int(raw.get("seq_len", 64)), teachers, tasks)
