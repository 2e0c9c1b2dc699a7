"""The trained supernet as a file: weights, objective heads, and what is needed to rebuild the teacher.

`train_supernet` writes `supernet.pt` and the tokenizer at the end of training;
search, export and the report load it back with `load_trained_supernet`. The file
does not carry a second copy of the teacher: the original (converted, rewired)
teacher is rebuilt from its source checkpoint and the saved permutation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from metanas._io import atomic_write
from metanas.config import Recipe
from metanas.objectives.base import Objective
from metanas.objectives.build import build_objective
from metanas.objectives.kd import make_teacher
from metanas.space import SearchSpace
from metanas.supernet.model import ElasticBert
from metanas.supernet.rewire import restore_permutation
from metanas.training.checkpoint import load_torch_file

SUPERNET_FILE = "supernet.pt"
SUPERNET_FORMAT = "metanas.supernet/1"
SUMMARY_FILE = "train_summary.json"
RECIPE_FILE = "recipe.yaml"
TOKENIZER_DIR = "tokenizer"


def save_trained_supernet(
    path: Path,
    sn: ElasticBert,
    objective: Objective,
    recipe: Recipe,
    tokenizer: Any,
    num_labels: int | None,
    permutation: dict[str, list[list[int]]] | None,
    step: int,
    relaxation: dict[str, Any] | None = None,
) -> None:
    meta = {
        "config": sn.config.to_dict(),
        "space": sn.space.to_dict(),
        "source": sn.source,
        "rewire": permutation,
        "objective": {
            "name": recipe.objective.name,
            "options": recipe.objective.options,
            "num_labels": num_labels,
            "mask_token_id": tokenizer.mask_token_id,
            "special_token_ids": list(tokenizer.all_special_ids),
            "seed": recipe.training.seed,
        },
        "step": step,
        "recipe": recipe.to_dict(),
        "relaxation": relaxation,  # the logits of single-stage training, for the differentiable search
    }
    payload = {
        "format": SUPERNET_FORMAT,
        "meta_json": json.dumps(meta),
        "supernet": sn.state_dict(),
        "objective": objective.state_dict(),
    }
    atomic_write(path, lambda f: torch.save(payload, f))


@dataclass
class TrainedSupernet:
    """A supernet trained by `train_supernet`, loaded back for search or export."""

    supernet: ElasticBert
    objective_state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    run_dir: Path

    @property
    def tokenizer_path(self) -> Path:
        return self.run_dir / TOKENIZER_DIR

    def original_teacher(self) -> ElasticBert:
        """The teacher as the supernet started (converted and rewired): the KD target.

        Rebuilt from the source checkpoint plus the saved rewiring permutation, so the
        trained file does not have to carry a second copy of the weights.
        """
        source = self.meta["source"]
        if not source:
            raise ValueError("the trained supernet records no teacher path to rebuild the teacher from")
        space = SearchSpace.from_dict(self.meta["space"])
        overrides = {k: v for k, v in space.to_dict().items() if k.endswith("_choices")}
        teacher = ElasticBert.from_teacher(source, space_overrides=overrides)
        restore_permutation(teacher, self.meta["rewire"])
        return teacher

    def objective(self) -> Objective:
        """The training objective with its trained heads (KD rebuilds the original teacher)."""
        o = self.meta["objective"]
        teacher = make_teacher(self.original_teacher()) if o["name"] == "kd" else None
        objective = build_objective(
            o["name"],
            self.supernet,
            teacher=teacher,
            num_labels=o["num_labels"],
            mask_token_id=o["mask_token_id"],
            special_token_ids=o["special_token_ids"],
            seed=o["seed"],
            **o["options"],
        )
        objective.load_state_dict(self.objective_state)
        return objective


def load_trained_supernet(run_dir: str | os.PathLike) -> TrainedSupernet:
    """Load `run_dir/supernet.pt` written at the end of `train_supernet` (eval mode, CPU)."""
    run_dir = Path(run_dir)
    path = run_dir / SUPERNET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained supernet at {str(path)!r}; run `metanas train-supernet` first")
    data = load_torch_file(
        path, "train again into another --out (or delete this train/ directory and stages.json to retrain here)"
    )
    if data.get("format") != SUPERNET_FORMAT:
        raise ValueError(f"{str(path)!r} is not a metanas supernet file")
    meta = json.loads(data["meta_json"])
    config_dict = dict(meta["config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    sn = ElasticBert(config, SearchSpace.from_dict(meta["space"]))
    sn.load_state_dict(data["supernet"])
    sn.source = meta["source"]
    sn.hidden_order = (meta.get("rewire") or {}).get("hidden")
    sn.relaxation = meta.get("relaxation")
    return TrainedSupernet(supernet=sn.eval(), objective_state=data["objective"], meta=meta, run_dir=run_dir)
