"""A task's fitness table: arch -> fitness on its trained supernet, NAS-Bench style, cached on disk.

Each line of `table.jsonl` is one arch's fitness and raw metric on the task's fixed
validation batches. Lines are appended and flushed as they are made (an interrupted
tabulation loses at most one arch) and a lookup that misses evaluates the arch on
the supernet and appends it, so a benchmark's every fitness is a real subnet
evaluation. `table.meta.json` keeps the task metadata, metric and space, so a table
can serve as meta-training data without loading its supernet.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metanas._io import atomic_write_json
from metanas.space import ArchConfig, SearchSpace
from metanas.tasks.build import task_dir
from metanas.tasks.suite import TaskSpec, TaskSuite

TABLE_FORMAT = 1  # bump when what a row means changes: old tables are then refused, not mixed in
VAL_DOCS = 16  # validation documents scoring kd / mlm / contrastive
VAL_DOCS_CLASSIFICATION = 64  # classification needs more documents to rank archs
CLASSIFICATION_METRIC = "cross_entropy"  # a table ranks classifiers by validation loss: accuracy ties


class TaskTable:
    """Fitness of archs on one task's trained supernet, loaded from and appended to `table.jsonl`."""

    def __init__(self, suite: TaskSuite, task: TaskSpec, cache: Path, directory: Path | None = None) -> None:
        """`directory`: where the supernet and table live (default: the task's own, under `cache`)."""
        self.suite = suite
        self.task = task
        self.dir = directory if directory is not None else task_dir(suite, task, cache)
        self.run_dir = self.dir / "supernet"
        self.path = self.dir / "table.jsonl"
        self.info_path = self.dir / "table.meta.json"
        self.val_docs = VAL_DOCS_CLASSIFICATION if task.classification else VAL_DOCS
        self.bf16 = suite.teachers[task.teacher].bf16
        self.rows: dict[ArchConfig, tuple[float, float]] = {}
        self._info: dict[str, Any] | None = None
        if self.info_path.is_file():
            self._info = json.loads(self.info_path.read_text(encoding="utf-8"))
            if self._info.get("format") != TABLE_FORMAT:
                raise ValueError(
                    f"table {self.path} has format {self._info.get('format')}, this metanas writes {TABLE_FORMAT}; "
                    f"delete {self.dir.name}/table.* to tabulate again"
                )
            if self.task.classification and self._info.get("metric_name") != CLASSIFICATION_METRIC:
                raise ValueError(
                    f"table {self.path} scores {self._info.get('metric_name')}, classification tables score "
                    f"{CLASSIFICATION_METRIC}; delete {self.dir.name}/table.* to tabulate again"
                )
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a torn last line
                    continue
                self.rows[ArchConfig.from_dict(row["arch"])] = (float(row["fitness"]), float(row["metric"]))
        self._evaluator: Any = None
        self.new_evaluations = 0

    def _load(self) -> None:
        """Load the trained supernet and its fixed validation batch, and record the task's metadata."""
        from transformers import AutoTokenizer

        from metanas.config import load_recipe
        from metanas.data import Collator, build_datasets
        from metanas.evaluate import Evaluator
        from metanas.supernet.convert import load_teacher_config
        from metanas.training import RECIPE_FILE, load_trained_supernet

        trained = load_trained_supernet(self.run_dir)
        recipe = load_recipe(self.run_dir / RECIPE_FILE)
        tokenizer = AutoTokenizer.from_pretrained(str(trained.tokenizer_path))
        teacher = recipe.teacher.resolved_path()
        bundle = build_datasets(recipe.data, tokenizer, load_teacher_config(teacher), self.run_dir / "cache")
        n = min(self.val_docs, len(bundle.validation))
        rows = bundle.validation[:n]
        batch = Collator(tokenizer)([{k: rows[k][i] for k in rows} for i in range(n)])
        objective = trained.objective()
        if self.task.classification:  # accuracy on VAL_DOCS_CLASSIFICATION documents ties too many archs
            objective.metric_name, objective.higher_is_better = CLASSIFICATION_METRIC, False
        self._evaluator = Evaluator(trained.supernet, objective, [batch])
        info = {
            "format": TABLE_FORMAT,
            "task": self.task.name,
            "family": self.task.family,
            "teacher": self.task.teacher,
            "corpus": self.task.corpus_name,
            "task_meta": {
                "objective": self.task.objective,
                "higher_is_better": self._evaluator.higher_is_better,
                "seq_len": self.suite.seq_len,
                "corpus_size": bundle.num_documents,
            },
            "metric_name": self._evaluator.metric_name,
            "space": trained.supernet.space.to_dict(),
            "validation_documents": n,
        }
        if self._info is None:
            atomic_write_json(info, self.info_path, indent=1)
        self._info = info

    @property
    def evaluator(self) -> Any:
        if self._evaluator is None:
            self._load()
        return self._evaluator

    @property
    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._load()
        assert self._info is not None
        return self._info

    @property
    def task_meta(self) -> dict[str, Any]:
        return dict(self.info["task_meta"])

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.info["space"])

    def fitness(self, arch: ArchConfig) -> float:
        """Cached fitness of `arch`, evaluating (and appending to the table) on a miss."""
        row = self.rows.get(arch)
        if row is None:
            import torch

            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
            with autocast:
                metric = self.evaluator.metric(arch)
            row = (self.evaluator.to_fitness(metric), metric)
            self.rows[arch] = row
            self.new_evaluations += 1
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"arch": arch.to_dict(), "fitness": row[0], "metric": row[1]}) + "\n")
        return row[0]

    def tabulate(self, archs: Sequence[ArchConfig], desc: str) -> None:
        """Score every arch not yet in the table (a progress bar; resumable)."""
        missing = [a for a in dict.fromkeys(archs) if a not in self.rows]
        for a in tqdm(missing, desc=desc, unit="arch", dynamic_ncols=True, mininterval=2.0):
            self.fitness(a)


def table_archs(space: SearchSpace, n_random: int, seed: int = 0) -> tuple[list[ArchConfig], list[ArchConfig]]:
    """The anchors (as the predictor encodes them) and `n_random` distinct uniformly random archs of `space`.

    The same for every task of a space: the random draw is seeded by `seed` and the space's signature.
    """
    from metanas.meta.anchors import anchor_archs

    rng = random.Random(f"table:{seed}:{space.signature()}")
    randoms: dict[ArchConfig, None] = {}
    while len(randoms) < n_random:
        randoms[space.sample(rng)] = None
    return anchor_archs(space), list(randoms)


def rows_to_records(
    task: str,
    info: Mapping[str, Any],
    rows: Mapping[ArchConfig, tuple[float, float]],
    archs: Sequence[ArchConfig],
    origin: str,
) -> list[Any]:
    """History rows of `archs` from one task's (fitness, metric) rows and metadata (`table.meta.json`)."""
    from metanas.cost import CostModel
    from metanas.meta.history import EvalRecord

    space = SearchSpace.from_dict(info["space"])
    costs = CostModel(space, seq_len=int(info["task_meta"]["seq_len"]))
    return [
        EvalRecord(
            run_id=f"table-{task}",
            task_id=task,
            space_signature=space.signature(),
            arch=a,
            fitness=rows[a][0],
            metric_name=info["metric_name"],
            metric_value=rows[a][1],
            origin=origin,
            task_meta=dict(info["task_meta"]),
            timestamp=0.0,
            **costs.costs(a),
        )
        for a in archs
    ]


def table_records(table: TaskTable, archs: Sequence[ArchConfig], origin: str) -> list[Any]:
    """History rows of `archs` from one task's table (each must be tabulated), with `origin`."""
    return rows_to_records(table.task.name, table.info, table.rows, archs, origin)


def suite_tables(suite: TaskSuite, cache: Path, names: Sequence[str] | None = None) -> dict[str, TaskTable]:
    """The tables of the named tasks (all by default), without loading any supernet."""
    return {t.name: TaskTable(suite, t, cache) for t in suite.select(list(names) if names is not None else None)}


def build_task(suite: TaskSuite, task: TaskSpec, cache: Path, n_random: int) -> TaskTable:
    """Train the task's supernet (unless done) and tabulate its anchors and random archs (unless done)."""
    from metanas.tasks.build import train_task

    train_task(suite, task, cache)
    table = TaskTable(suite, task, cache)
    anchors, randoms = table_archs(table.space, n_random)
    table.tabulate(anchors + randoms, f"table {task.name}")
    return table


def cache_size(path: Path) -> int:
    """Bytes under `path` (for the build's summary)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
