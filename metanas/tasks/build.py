"""Building a suite task: its teacher directory, its recipe and its trained supernet, each cached on disk.

A cut teacher (all-MiniLM-L6-v2 rewired on builtin text and cut to one uniform
subnet) is exported once per suite cache; a whole teacher is the bundled MiniLM.
Each task trains in `<cache>/tasks/<name>-<digest>/`, so changing a task's spec
trains a new supernet instead of reusing a stale one, and an interrupted training
resumes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from metanas._io import atomic_write_text
from metanas.tasks.suite import TaskSpec, TaskSuite, TeacherSpec

logger = logging.getLogger(__name__)

# Stdlib package families: the labels of the derived `package-family` label set on the builtin corpus.
PACKAGE_FAMILIES = {
    "concurrency": "asyncio multiprocessing threading concurrent queue sched subprocess",
    "network": "http urllib email smtplib imaplib ftplib xmlrpc wsgiref socketserver ssl socket mailbox poplib "
    "mimetypes",
    "formats": "xml json csv configparser html tarfile zipfile gzip pickle codecs plistlib zipimport shelve base64",
    "devtools": "unittest inspect ast pdb bdb pydoc doctest traceback importlib symtable typing logging dis tokenize "
    "pstats cProfile trace",
    "numbers_time": "decimal math statistics datetime calendar time fractions random numbers cmath zoneinfo",
}


def task_dir(suite: TaskSuite, task: TaskSpec, cache: Path) -> Path:
    """Where the task's supernet and table live; named by the task and a digest of its spec."""
    return cache / "tasks" / f"{task.name}-{task.digest(suite.teachers[task.teacher], suite.seq_len)}"


def teacher_dir(teacher: TeacherSpec, cache: Path) -> str | None:
    """The teacher's model directory: its cut exported into the cache, else its `path` (None: the bundled MiniLM)."""
    if teacher.cut is None:
        return teacher.path
    out = cache / "teachers" / teacher.name
    if (out / "config.json").is_file():
        return str(out)
    from transformers import AutoTokenizer

    from metanas.data import builtin_corpus, train_validation_split
    from metanas.supernet.convert import load_teacher_config
    from metanas.supernet.export import export
    from metanas.supernet.model import ElasticBert
    from metanas.supernet.rewire import rewire
    from metanas.teachers import default_teacher_path

    source = teacher.path or default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    c = teacher.cut
    full = load_teacher_config(source)
    overrides = {"hidden_choices": (c["hidden"], full.hidden_size), "ffn_choices": (c["ffn"], full.intermediate_size)}
    sn = ElasticBert.from_teacher(source, space_overrides=overrides).eval()
    train, _ = train_validation_split(builtin_corpus(), 0.1, 0)
    batch = tokenizer(train["text"][:64], max_length=64, truncation=True, padding=True, return_tensors="pt")
    rewire(sn, dict(batch))
    # all-MiniLM-L6-v2's pooler was never trained (sentence-transformers mean-pools), so its near-constant
    # output gives a classification head nothing to learn from; an identity pooler passes tanh([CLS]) instead.
    with torch.no_grad():
        sn.pooler.dense.weight.copy_(torch.eye(sn.pooler.dense.weight.shape[0]))
        sn.pooler.dense.bias.zero_()
    arch = sn.space.uniform(c["depth"], c["hidden"], c["heads"], c["ffn"])
    export(sn, arch, out, tokenizer=tokenizer, extra_info={"made_by": f"metanas.tasks teacher {teacher.name}"})
    return str(out)


def package_family_source(cache: Path) -> Path:
    """A JSONL file of builtin docstrings labelled by stdlib package family (other packages left out)."""
    from metanas.data import builtin_corpus

    path = cache / "data" / "package-family.jsonl"
    if path.is_file():
        return path
    family_of = {module: family for family, modules in PACKAGE_FAMILIES.items() for module in modules.split()}
    corpus = builtin_corpus()
    lines = [
        json.dumps({"text": text, "label": family_of[module]})
        for text, module in zip(corpus["text"], corpus["module"])
        if module in family_of
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text("\n".join(lines) + "\n", path)
    return path


def data_section(task: TaskSpec, suite: TaskSuite, cache: Path) -> dict[str, Any]:
    """The recipe's `data` section of a task."""
    data: dict[str, Any] = {"max_length": suite.seq_len, "seed": task.seed, "max_documents": task.max_documents}
    if task.labels == "package-family":
        data.update(source=str(package_family_source(cache)), label_column="label")
    else:
        data["source"] = task.corpus
        if task.labels:
            data["label_column"] = "label"
    return data


def task_recipe(suite: TaskSuite, task: TaskSpec, cache: Path) -> Any:
    """The training recipe of a task (W&B off, checkpoints every 50 steps so a long build resumes)."""
    from metanas.config import Recipe

    teacher = suite.teachers[task.teacher]
    return Recipe.from_dict(
        {
            "teacher": {"path": teacher_dir(teacher, cache), "rewire": True},
            "data": data_section(task, suite, cache),
            "objective": {"name": task.objective, "options": dict(task.options)},
            "space": dict(teacher.space),
            "training": {
                "steps": task.steps,
                "batch_size": task.batch_size,
                "lr": task.lr,
                "warmup_ratio": 0.1,
                "seed": task.seed,
                "bf16": teacher.bf16,
                "checkpoint_every": 50,
                "eval_every": 0,
                "eval_batches": 1,
                "log_every": 10,
            },
            "logging": {"wandb": False},
        }
    )


def train_task(suite: TaskSuite, task: TaskSpec, cache: Path) -> Path:
    """The task's trained supernet directory (trained now unless there; an interrupted training resumes)."""
    from metanas.training import CHECKPOINT_FILE, SUPERNET_FILE, train_supernet

    run_dir = task_dir(suite, task, cache) / "supernet"
    if not (run_dir / SUPERNET_FILE).is_file():
        resume = (run_dir / CHECKPOINT_FILE).is_file()
        logger.info("training the supernet of %s (%d steps)%s", task.name, task.steps, " (resuming)" if resume else "")
        train_supernet(task_recipe(suite, task, cache), run_dir, resume=resume)
    return run_dir
