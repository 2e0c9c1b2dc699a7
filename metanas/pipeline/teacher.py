"""The teacher as a compress run sees it: what the user named, where to load it from, and its config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PretrainedConfig

from metanas._paths import is_hub_id
from metanas.config import Recipe
from metanas.pipeline.paths import TEACHER_DIR
from metanas.pipeline.tiny import tiny_teacher_config, tiny_vocab
from metanas.supernet.convert import TeacherLoadError, load_teacher_config


@dataclass
class TeacherInfo:
    """The teacher as the plan and the stages see it; `config` is None when it could not be resolved."""

    source: str  # what the user named (a path, a hub id, "tiny")
    path: str | None  # what to load (None for a tiny teacher before the run dir exists)
    config: PretrainedConfig | None
    problem: str | None = None  # why the config is unknown (dry run without network)


def resolve_teacher(recipe: Recipe, run_dir: Path | None, allow_unresolved: bool = False) -> TeacherInfo:
    """Load and check the teacher's config (no weights).

    A missing local path or an unsupported model type is an error. With
    `allow_unresolved` (dry runs), a hub id whose config cannot be fetched (no
    network) gives a TeacherInfo without config and the reason.
    """
    t = recipe.teacher
    if t.tiny:
        path = str((run_dir / TEACHER_DIR).resolve()) if run_dir is not None else None
        config = tiny_teacher_config(len(tiny_vocab()))
        return TeacherInfo("tiny (random BERT written into the run directory)", path, config)
    source = t.resolved_path()
    try:
        config = load_teacher_config(source)
    except TeacherLoadError as e:
        if not allow_unresolved or Path(source).expanduser().exists() or not is_hub_id(source):
            raise
        return TeacherInfo(source, source, None, str(e))
    return TeacherInfo(source, source, config)
