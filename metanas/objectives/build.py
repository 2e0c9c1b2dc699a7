"""Build a training objective by name, checking its options up front."""

from __future__ import annotations

from typing import Any

from metanas._options import check_options
from metanas.objectives import OBJECTIVES, OPTIONS
from metanas.objectives.base import Objective
from metanas.objectives.contrastive import ContrastiveObjective
from metanas.objectives.kd import KDObjective, make_teacher
from metanas.objectives.mlm import MLMObjective
from metanas.objectives.task import TaskObjective
from metanas.supernet.model import ElasticBert


def build_objective(
    name: str,
    sn: ElasticBert,
    *,
    teacher: ElasticBert | None = None,
    num_labels: int | None = None,
    mask_token_id: int | None = None,
    special_token_ids: list[int] | None = None,
    seed: int = 0,
    **options: Any,
) -> Objective:
    """The objective `name` for supernet `sn`.

    `kd` without `teacher` distils from a frozen deep copy of `sn` (its largest arch,
    i.e. the converted teacher: call this before training changes `sn`). `task`
    needs `num_labels`; `mlm` needs `mask_token_id` (or a `tokenizer` option).
    Options set to None mean "use the default".
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}")
    check_options(f"objective {name!r}", options, OPTIONS[name])
    opts = {k: v for k, v in options.items() if v is not None}
    if name == "kd":
        if teacher is None:
            teacher = make_teacher(sn)
        return KDObjective(teacher, student_hidden=max(sn.space.hidden_choices), **opts)
    if name == "mlm":
        return MLMObjective(sn, seed=seed, mask_token_id=mask_token_id, special_token_ids=special_token_ids, **opts)
    if name == "contrastive":
        return ContrastiveObjective(seed=seed, special_token_ids=special_token_ids, **opts)
    if num_labels is None:
        raise ValueError("objective 'task' needs num_labels (the number of classes in the label column)")
    return TaskObjective(sn, num_labels, **opts)
